import DepotAPI
import DepotCore
import DepotRegistry
import DepotTestSupport
import Foundation
import Testing

@testable import DepotClient

func pythonHas(_ module: String) -> Bool {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
    p.arguments = ["python3", "-c", "import \(module)"]
    p.standardOutput = FileHandle.nullDevice
    p.standardError = FileHandle.nullDevice
    guard (try? p.run()) != nil else { return false }
    p.waitUntilExit()
    return p.terminationStatus == 0
}

/// Format metadata extracted by the registry at push, from real files: ONNX models written by
/// the onnx library, PyTorch-style zips with safe and malicious pickles, a Triton bundle, and
/// a safetensors file whose header lies.
@Suite("Format metadata at push")
struct FormatMetadataTests {
    static func metadata(_ registry: Registry, _ repo: String, _ tag: String) throws -> [String: Any] {
        let bytes = try registry.metadata(try RepositoryName(repo), .tag(tag))
        return try #require(try JSONSerialization.jsonObject(with: Data(bytes)) as? [String: Any])
    }

    static func file(_ meta: [String: Any], _ path: String) throws -> [String: Any] {
        let files = meta["files"] as? [[String: Any]] ?? []
        return try #require(files.first { $0["path"] as? String == path }, "no metadata for \(path)")
    }

    @Test(.enabled(if: pythonHas("onnx") && pythonHas("numpy")))
    func realONNXAndPickleFilesAreDescribed() async throws {
        let dir = TempDir("depot-formats")
        let made = try await run("/usr/bin/env", ["python3", repoRoot + "/Tests/interop/make_format_samples.py", dir.path + "/s"])
        #expect(made.status == 0, "\(made.output)")
        let expected = try #require(try JSONSerialization.jsonObject(with: Data(made.output.utf8)) as? [String: Any])
        let onnxExpected = try #require(expected["onnx"] as? [String: Any])
        let opset = onnxExpected["opset"] as? Int
        let inputs = onnxExpected["inputs"] as? [String]
        let outputs = onnxExpected["outputs"] as? [String]
        let initializers = onnxExpected["initializers"] as? Int
        let initializerBytes = onnxExpected["initializer_bytes"] as? Int
        try await withRegistry { _, registry, port in
            let s = dir.path + "/s/"
            _ = try await push(
                port, "fmt/models", "v1", [s + "model.onnx", s + "external.onnx", s + "weights.bin", s + "safe.pt", s + "evil.pt"])
            let meta = try Self.metadata(registry, "fmt/models", "v1")

            let onnx = try Self.file(meta, "model.onnx")
            #expect(onnx["format"] as? String == "onnx")
            #expect(onnx["ir_version"] as? Int == 8)
            #expect(onnx["producer"] as? String == "depot-tests")
            let opsets = onnx["opsets"] as? [[String: Any]] ?? []
            #expect(opsets.contains { ($0["version"] as? Int) == opset })
            #expect((onnx["inputs"] as? [[String: Any]])?.compactMap { $0["name"] as? String } == inputs)
            #expect((onnx["outputs"] as? [[String: Any]])?.compactMap { $0["name"] as? String } == outputs)
            let input = (onnx["inputs"] as? [[String: Any]])?.first
            #expect(input?["elem_type"] as? String == "FLOAT")
            #expect((input?["shape"] as? [Any])?.first as? String == "batch")
            #expect(onnx["initializer_count"] as? Int == initializers)
            #expect(onnx["initializer_bytes"] as? Int == initializerBytes)

            let external = try Self.file(meta, "external.onnx")
            #expect((external["external_locations"] as? [String]) == ["weights.bin"])

            let safe = try Self.file(meta, "safe.pt")
            #expect(safe["format"] as? String == "pytorch")
            #expect(safe["unsafe"] as? Bool == false)
            let evil = try Self.file(meta, "evil.pt")
            #expect(evil["unsafe"] as? Bool == true)
            #expect((evil["dangerous_imports"] as? [String] ?? []).contains { $0.hasSuffix(".system") })
        }
    }

    @Test func aTritonBundleIsCheckedAndALyingSafetensorsHeaderIsRefused() async throws {
        let dir = TempDir("depot-formats")
        let model = dir.path + "/bundle"
        try FileManager.default.createDirectory(atPath: model + "/1", withIntermediateDirectories: true)
        try FileManager.default.createDirectory(atPath: model + "/2", withIntermediateDirectories: true)
        try """
        name: "classifier"
        platform: "onnxruntime_onnx"
        max_batch_size: 8
        input [ { name: "input", data_type: TYPE_FP32, dims: [ 16 ] } ]
        output [ { name: "logits", data_type: TYPE_FP32, dims: [ 4 ] } ]
        instance_group [ { count: 2, kind: KIND_CPU } ]
        version_policy: { latest: { num_versions: 2 } }
        """.write(toFile: model + "/config.pbtxt", atomically: true, encoding: .utf8)
        try Data(fastRandom(4096, seed: 1)).write(to: URL(fileURLWithPath: model + "/1/model.onnx"))
        try Data(fastRandom(4096, seed: 2)).write(to: URL(fileURLWithPath: model + "/2/model.bin"))
        // 8-byte length, then a header whose tensor claims bytes the file does not have.
        let header = Array(#"{"w":{"dtype":"F32","shape":[1000],"data_offsets":[0,4000]}}"#.utf8)
        var lying = [UInt8]()
        withUnsafeBytes(of: UInt64(header.count).littleEndian) { lying += $0 }
        lying += header + [UInt8](repeating: 1, count: 100)
        try Data(lying).write(to: URL(fileURLWithPath: dir.path + "/lies.safetensors"))
        let lyingBytes = lying

        try await withRegistry { client, registry, port in
            _ = try await push(port, "fmt/triton", "v1", [model])
            let meta = try Self.metadata(registry, "fmt/triton", "v1")
            let triton = try #require(meta["triton"] as? [String: Any])
            #expect(triton["name"] as? String == "classifier")
            #expect(triton["platform"] as? String == "onnxruntime_onnx")
            #expect(triton["max_batch_size"] as? Int == 8)
            #expect(triton["versions"] as? [Int] == [1, 2])
            let problems = triton["problems"] as? [String] ?? []
            #expect(problems.contains { $0.contains("2") && $0.contains("model.onnx") }, "\(problems)")
            // Random bytes named model.onnx are not refused, but described as not parsing.
            let notONNX = try Self.file(meta, "1/model.onnx")
            #expect((notONNX["error"] as? String)?.contains("ONNX") == true)

            // The client runs the same readers before uploading anything...
            do {
                _ = try await push(port, "fmt/bad", "v1", [dir.path + "/lies.safetensors"])
                Issue.record("the client pushed a safetensors file whose header lies")
            } catch let e as ClientError {
                #expect(e.message.contains("not a valid safetensors file"), "\(e)")
            }
            // ...and the registry refuses a manifest naming such a file, whoever pushes it.
            let blob = try await client.pushBlob("fmt/bad", lyingBytes)
            let config = try await client.pushBlob("fmt/bad", emptyConfig)
            let manifest: [String: Any] = [
                "schemaVersion": 2, "mediaType": MediaType.ociManifest, "artifactType": ModelMediaType.manifest,
                "config": ["mediaType": ModelMediaType.config, "digest": config.description, "size": emptyConfig.count],
                "layers": [
                    [
                        "mediaType": ModelMediaType.weight, "digest": blob.description, "size": lyingBytes.count,
                        "annotations": [ModelMediaType.filepath: "lies.safetensors"],
                    ]
                ],
            ]
            let bytes = Array(try JSONSerialization.data(withJSONObject: manifest))
            let r = try await client.req(.put, "/v2/fmt/bad/manifests/v1", headers: [.contentType: MediaType.ociManifest], body: bytes)
            #expect(r.status.code == 400)
            #expect(r.errorCode == "MANIFEST_INVALID")
            #expect(r.text.contains("lies.safetensors"))
        }
    }
}
