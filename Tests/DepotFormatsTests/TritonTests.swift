import DepotAPI
import DepotCore
import DepotFormats
import Testing

let tritonConfig = """
    # ResNet served by ONNX Runtime
    name: "resnet50"
    platform: "onnxruntime_onnx"
    max_batch_size: 8
    input [
      {
        name: "input__0"   # NCHW
        data_type: TYPE_FP32
        format: FORMAT_NCHW
        dims: [ 3, 224, 224 ]
      }
    ]
    output: [
      { name: 'logits', data_type: TYPE_FP32, dims: [ -1 ] },
      { name: "probs\\t\\"x\\"" data_type: TYPE_FP16 dims: [ 1000 ] reshape { shape: [ 1, 1000 ] } }
    ]
    instance_group [ { count: 2 kind: KIND_GPU gpus: [ 0 ] } ]
    version_policy { latest { num_versions: 2 } }
    dynamic_batching { preferred_batch_size: [ 4, 8 ] max_queue_delay_microseconds: 100 }
    parameters { key: "threads" value: { string_value: "4" } }
    parameters { key: "scale" value: { string_value: "0.5" } }
    optimization { execution_accelerators { gpu_execution_accelerator : [ { name : "tensorrt" } ] } }
    """

@Suite struct TritonTests {
    @Test func parsesConfigAndChecksVersions() throws {
        let out = try FormatInspector.triton(config: tritonConfig, files: ["config.pbtxt", "1/model.onnx", "2/other.bin"])
        #expect(out["name"] == "resnet50")
        #expect(out["platform"] == "onnxruntime_onnx")
        #expect(out["max_batch_size"] == 8)
        let inputs = try #require(out["inputs"]?.array)
        #expect(inputs.count == 1)
        #expect(inputs[0]["name"] == "input__0")
        #expect(inputs[0]["data_type"] == "TYPE_FP32")
        #expect(inputs[0]["dims"] == [3, 224, 224])
        let outputs = try #require(out["outputs"]?.array)
        #expect(outputs.map { $0["name"]?.string } == ["logits", "probs\t\"x\""])
        #expect(outputs[0]["dims"] == [-1])
        #expect(outputs[1]["data_type"] == "TYPE_FP16")
        #expect(outputs[1]["reshape"] == [1, 1000])
        let groups = try #require(out["instance_group"]?.array)
        #expect(groups.count == 1)
        #expect(groups[0]["count"] == 2)
        #expect(groups[0]["kind"] == "KIND_GPU")
        #expect(groups[0]["gpus"] == [0])
        let policy = try #require(out["version_policy"]?.object)
        #expect(policy["latest"]?["num_versions"] == 2)
        #expect(out["versions"] == [1, 2])
        #expect(out["problems"] == ["version directory 2 lacks model.onnx expected by platform onnxruntime_onnx"])
    }

    @Test func defaultsAndOverrides() throws {
        let config = "name: 'p' backend: \"python\" version_policy: { specific { versions: [1, 3] } }"
        let out = try FormatInspector.triton(config: config, files: ["p/config.pbtxt", "p/1/model.py", "p/3/model.py"])
        #expect(out["versions"] == [1, 3])
        #expect(out["problems"] == [])
        #expect(out["max_batch_size"] == 0)
        let plan = try FormatInspector.triton(
            config: "platform: \"tensorrt_plan\" default_model_filename: \"engine.bin\"",
            files: ["config.pbtxt", "1/engine.bin", "2/model.plan"])
        #expect(plan["problems"] == ["version directory 2 lacks engine.bin expected by platform tensorrt_plan"])
        let saved = try FormatInspector.triton(
            config: "platform: \"tensorflow_savedmodel\"",
            files: ["config.pbtxt", "1/model.savedmodel/saved_model.pb"])
        #expect(saved["problems"] == [])
        let policy = try #require(saved["version_policy"]?.object)
        #expect(policy["latest"]?["num_versions"] == 1)
    }

    @Test func malformedConfigNamesLine() {
        let bad = "name: \"m\"\nplatform: \"onnxruntime_onnx\"\nmax_batch_size 8\n"
        let message = errorMessage { try FormatInspector.triton(config: bad, files: []) }
        #expect(message.contains("line 3, column"))
        #expect(errorMessage { try FormatInspector.triton(config: "input [ { name: \"a\" ", files: []) }.contains("line 1"))
        #expect(errorMessage { try FormatInspector.triton(config: "name: \"open\n", files: []) }.contains("unterminated string"))
    }

    @Test func inspectRecognisesConfigFiles() throws {
        let out = try #require(try inspect("resnet50/config.pbtxt", Array(tritonConfig.utf8)))
        #expect(out["format"] == "triton-config")
        #expect(out["name"] == "resnet50")
        #expect(out["versions"] == nil)
    }
}
