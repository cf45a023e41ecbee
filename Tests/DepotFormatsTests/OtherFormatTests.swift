import DepotAPI
import DepotCore
import DepotFormats
import DepotTestSupport
import Testing

func safetensorsFile(_ header: String, dataBytes: Int) -> [UInt8] {
    let h = Array(header.utf8)
    return le(UInt64(h.count), 8) + h + [UInt8](repeating: 0, count: dataBytes)
}

@Suite struct OtherFormatTests {
    @Test func safetensorsTableAndParameters() throws {
        let header =
            #"{"__metadata__":{"format":"pt"},"b":{"dtype":"F16","shape":[4,8],"data_offsets":[40,104]},"a":{"dtype":"F32","shape":[10],"data_offsets":[0,40]}}"#
        let file = safetensorsFile(header, dataBytes: 104)
        let out = try #require(try inspect("model.safetensors", file))
        #expect(out["format"] == "safetensors")
        #expect(out["parameters"] == 42)
        #expect(out["tensor_count"] == 2)
        #expect(out["dtypes"] == ["F32": 1, "F16": 1])
        #expect(out["metadata"] == ["format": "pt"])
        let tensors = try #require(out["tensors"]?.array)
        #expect(tensors.map { $0["name"]?.string } == ["a", "b"])
        let start = 8 + header.utf8.count
        #expect(tensors[1]["offsets"] == JSONValue([start + 40, start + 104]))
        #expect(tensors[1]["shape"] == [4, 8])
        // Recognised by its header alone.
        #expect((try inspect("weights", file))?["format"] == "safetensors")
    }

    @Test func lyingSafetensorsThrows() {
        let header = #"{"a":{"dtype":"F32","shape":[10],"data_offsets":[0,40]}}"#
        #expect(errorMessage { try inspect("m.safetensors", safetensorsFile(header, dataBytes: 30)) }.contains("file has"))
        let sizes = #"{"a":{"dtype":"F32","shape":[10],"data_offsets":[0,39]}}"#
        #expect(errorMessage { try inspect("m.safetensors", safetensorsFile(sizes, dataBytes: 39)) }.contains("needs 40 bytes"))
        #expect(errorMessage { try inspect("m.safetensors", le(1 << 20, 8) + Array("{}".utf8)) }.contains("exceeds"))
    }

    @Test func tensorRTPlan() throws {
        let engine = Array("ftrt".utf8) + [UInt8](repeating: 7, count: 60)
        let out = try #require(try inspect("1/model.plan", engine, platform: "sm_90,trt10.3"))
        #expect(out["format"] == "tensorrt-plan")
        #expect(out["magic"] == "ftrt")
        #expect(out["size"] == 64)
        #expect(out["compute_capability"] == "9.0")
        #expect(out["tensorrt_version"] == "10.3")
        #expect(out["source"] == "push")
        #expect(out["problems"] == [])
        let noMagic = try #require(try inspect("x.engine", [1, 2, 3, 4, 5], platform: nil))
        #expect(noMagic["problems"] == ["no TensorRT engine magic"])
        #expect(noMagic["compute_capability"] == nil && noMagic["source"] == nil)
        let byMagic = try #require(try inspect("blob", Array("ptrt".utf8) + [0, 0], platform: "sm_100"))
        #expect(byMagic["compute_capability"] == "10.0")
    }

    @Test func tensorFlowSavedModelAndGraphDef() throws {
        var sm = PB()
        sm.int(1, 1)
        sm.message(2) { mg in
            mg.message(1) { info in
                info.string(4, "serve")
                info.string(4, "gpu")
                info.string(5, "2.15.0")
                info.string(6, "v2.15.0-rc1")
            }
            mg.data(2, [UInt8](repeating: 0, count: 5000)) // graph_def, skipped
        }
        let out = try #require(try inspect("m/1/model.savedmodel/saved_model.pb", sm.bytes))
        #expect(out["format"] == "tensorflow-savedmodel")
        #expect(out["tags"] == ["serve", "gpu"])
        #expect(out["tensorflow_version"] == "2.15.0")
        #expect(out["meta_graph_count"] == 1)
        #expect(errorMessage { try inspect("saved_model.pb", Array(sm.bytes.dropLast(10))) }.contains("SavedModel"))

        var gd = PB()
        gd.message(1) { n in
            n.string(1, "x")
            n.string(2, "Placeholder")
        }
        gd.message(1) { n in
            n.string(1, "y")
            n.string(2, "Identity")
        }
        gd.message(1) { n in
            n.string(1, "z")
            n.string(2, "Identity")
        }
        gd.message(4) { v in v.int(1, 1234) }
        let graph = try #require(try inspect("frozen.pb", gd.bytes))
        #expect(graph["format"] == "tensorflow-graphdef")
        #expect(graph["node_count"] == 3)
        #expect(graph["op_types"] == ["Identity": 2, "Placeholder": 1])
        #expect(graph["producer"] == 1234)
        let junk = try inspect("junk.pb", [0x0f, 0xff, 0x00])
        #expect(junk == nil)
    }
}
