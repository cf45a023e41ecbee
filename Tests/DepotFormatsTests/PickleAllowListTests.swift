import DepotAPI
import DepotCore
import Foundation
import Testing

@testable import DepotFormats

/// The pickle policy's server half (docs/SECURITY.md): the allow-list is the one convert.py
/// reads, and every file of the malicious corpus is refused by the scan without running anything.
@Suite struct PickleAllowListTests {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    @Test func theSwiftListIsTheHooksList() throws {
        let text = try String(contentsOf: Self.root.appendingPathComponent("hooks/builtin/pickle_allowlist.txt"), encoding: .utf8)
        let lines = text.split(separator: "\n").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty && !$0.hasPrefix("#") }
        #expect(lines.allSatisfy { $0.split(separator: " ").count == 2 })
        let differ = Set(lines).symmetricDifference(PickleAllowList.pairs).sorted()
        #expect(differ == [], "hooks/builtin/pickle_allowlist.txt and PickleAllowList.swift differ")
        #expect(PickleAllowList.pairs.count == Set(PickleAllowList.pairs).count)
    }

    @Test func exactPairsOnly() throws {
        #expect(PickleAllowList.allows(module: "numpy", name: "dtype"))
        #expect(!PickleAllowList.allows(module: "numpy", name: "load"))
        #expect(!PickleAllowList.allows(module: "numpy.dtype", name: ""))
        // The same dotted text split another way is another pair.
        #expect(!PickleAllowList.allows(module: "sklearn", name: "pipeline.Pipeline"))
        #expect(!PickleAllowList.allows(module: "torch.storage", name: "_load_from_bytes"))
    }

    /// Runs scripts/security/make_pickle_corpus.py (python3) into a temporary directory.
    static func corpus() throws -> (dir: URL, marker: URL, files: [String]) {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("depot-pickle-corpus-\(UUID().uuidString)")
        let marker = dir.appendingPathComponent("MARKER")
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = [
            "python3", Self.root.appendingPathComponent("scripts/security/make_pickle_corpus.py").path,
            dir.appendingPathComponent("corpus").path, marker.path,
        ]
        let out = Pipe()
        p.standardOutput = out
        try p.run()
        let data = out.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        guard p.terminationStatus == 0 else { throw DepotError.invalidArgument("make_pickle_corpus.py exited \(p.terminationStatus)") }
        return (dir.appendingPathComponent("corpus"), marker, String(decoding: data, as: UTF8.self).split(separator: "\n").map(String.init))
    }

    /// What the pipeline gate sees of one file: refused when the scan throws, finds an import
    /// outside the list, or was not whole (PickleGate in DepotPipelines reads these fields).
    static func refused(_ path: String, _ bytes: [UInt8]) -> Bool {
        guard let meta = try? inspect(path, bytes) else { return true } // invalid: never handed to a stage
        if meta["unsafe"] == .bool(true) { return true }
        return meta["scan_complete"] != .bool(true)
    }

    @Test func everyMaliciousFileIsRefusedAndNothingRuns() throws {
        let (dir, marker, files) = try Self.corpus()
        defer { try? FileManager.default.removeItem(at: dir.deletingLastPathComponent()) }
        let evil = files.filter { $0.hasPrefix("evil/") }
        #expect(evil.count >= 45)
        for rel in files {
            let bytes = [UInt8](try Data(contentsOf: dir.appendingPathComponent(rel)))
            let name = String(rel.split(separator: "/").last!)
            if rel.hasPrefix("evil/") {
                #expect(Self.refused(name, bytes), "\(rel) was not refused")
            } else {
                #expect(!Self.refused(name, bytes), "\(rel) (safe) was refused")
            }
        }
        #expect(!FileManager.default.fileExists(atPath: marker.path))
    }

    @Test func joblibArraysAndCompressionAreNotScannable() throws {
        // joblib writes raw array bytes inside the pickle stream: the scan stops at the wrapper.
        let p: [UInt8] = [0x80, 0x02] + P.global("joblib.numpy_pickle", "NumpyArrayWrapper") + [0xff, 0xfe, 0x00]
        let meta = try #require(try inspect("m.joblib", p))
        #expect(meta["format"] == "pickle")
        #expect(meta["unsafe"] == true)
        #expect(meta["unsafe_imports"]?.array?.contains(.string(Pickle.joblibArrays)) == true)
        #expect(errorMessage { try inspect("m.joblib", [0x78, 0x9c, 0x01, 0x02]) }.contains("zlib-compressed"))
        // Protocol 0 pickles (no PROTO opcode) are scanned by name.
        let p0 = Array("cos\nsystem\n(Vid\ntR.".utf8)
        #expect(try inspect("m.pkl", p0)?["dangerous_imports"] == ["os.system"])
    }

    @Test func skopsFilesAreListedNotRun() throws {
        let schema = Array(
            #"{"__class__": "LogisticRegression", "__module__": "sklearn.linear_model._logistic", "protocol": 2, "content": {"__class__": "dict", "__module__": "builtins", "content": {}}}"#
                .utf8)
        let zip = makeZip([("schema.json", schema, 0), ("1.npy", [1, 2, 3], 0)], zip64: false)
        let meta = try #require(try inspect("model.skops", zip))
        #expect(meta["format"] == "skops")
        #expect(meta["model"] == "sklearn.linear_model._logistic.LogisticRegression")
        #expect(meta["types"] == ["builtins.dict", "sklearn.linear_model._logistic.LogisticRegression"])
        #expect(errorMessage { try inspect("model.skops", makeZip([("a.npy", [1], 0)], zip64: false)) }.contains("no schema.json"))
    }

    /// A hostile schema nests as deep as the JSON parser allows (its limit is 512), or deeper:
    /// the first is read to the bottom, the second is a clear error; neither exhausts the stack.
    @Test func deeplyNestedSkopsSchemasAreReadOrRefused() throws {
        func nested(_ depth: Int) -> [UInt8] {
            let open = String(repeating: #"{"content": "#, count: depth)
            return Array((open + #"{"__class__": "Evil", "__module__": "os"}"# + String(repeating: "}", count: depth)).utf8)
        }
        let deep = try #require(try inspect("model.skops", makeZip([("schema.json", nested(500), 0)], zip64: false)))
        #expect(deep["types"] == ["os.Evil"])
        let tooDeep = makeZip([("schema.json", nested(100_000), 0)], zip64: false)
        #expect(errorMessage { try inspect("model.skops", tooDeep) }.contains("schema.json is not valid JSON"))
    }
}
