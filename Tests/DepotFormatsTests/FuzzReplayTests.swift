import DepotCore
import DepotFormats
import Foundation
import Testing

/// Replays the committed fuzz inputs of the format harnesses (fuzz/corpus: seeds, and
/// fuzz/regressions: inputs that once crashed a reader) through the inspector, as the harnesses
/// do, so that a regression fails `swift test` without a fuzzer build.
@Suite struct FuzzReplayTests {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("fuzz")

    /// The file names each format harness inspects its input as (fuzz/Sources/DepotFuzz/Harnesses.swift).
    static let paths: [String: [String]] = [
        "safetensors": ["model.safetensors"], "onnx": ["model.onnx"], "pickle": ["model.pt"], "zip": ["model.pt"],
        "tensorflow": ["saved_model.pb", "frozen.pb"], "tensorrt": ["model.plan"], "textproto": ["config.pbtxt"],
    ]

    static func inputs(_ harness: String) -> [URL] {
        ["corpus", "regressions"].flatMap { folder -> [URL] in
            let dir = root.appendingPathComponent(folder).appendingPathComponent(harness)
            return (try? FileManager.default.contentsOfDirectory(at: dir, includingPropertiesForKeys: nil)) ?? []
        }
    }

    @Test(arguments: paths.keys.sorted())
    func committedInputsInspectWithinBudget(_ harness: String) throws {
        let files = Self.inputs(harness)
        #expect(!files.isEmpty, "no seed corpus for \(harness)")
        let service = InspectionService()
        for url in files {
            let bytes = Array(try Data(contentsOf: url))
            for path in Self.paths[harness]! {
                _ = try? FormatInspector.inspect(path: path, source: BytesSource(bytes), platform: "sm_90,trt10.3")
                let outcome = service.inspect(
                    path: path, digest: "sha256:\(url.lastPathComponent)", source: BytesSource(bytes), platform: nil)
                if case .budgetExceeded(let m) = outcome { Issue.record("\(harness)/\(url.lastPathComponent): \(m)") }
            }
        }
    }
}
