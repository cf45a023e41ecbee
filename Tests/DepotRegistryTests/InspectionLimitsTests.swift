import DepotAPI
import DepotCore
import DepotFormats
import DepotRegistry
import DepotStore
import DepotTestSupport
import Foundation
import Testing

/// Format inspection at manifest PUT under `InspectionLimits`, and the range-header parsing the
/// blob routes use. (The `formats:` config section is tested in DepotServerTests/ConfigTests.)
@Suite struct InspectionLimitsTests {
    /// A minimal ONNX model: ir_version, then `nodes` graph nodes and a doc string.
    static func onnx(nodes: Int, doc: String = "") -> [UInt8] {
        func varint(_ v: Int) -> [UInt8] {
            var v = UInt64(v)
            var out: [UInt8] = []
            while v >= 0x80 {
                out.append(UInt8(v & 0x7f) | 0x80)
                v >>= 7
            }
            return out + [UInt8(v)]
        }
        func field(_ n: Int, _ payload: [UInt8]) -> [UInt8] { varint(n << 3 | 2) + varint(payload.count) + payload }
        var graph: [UInt8] = []
        for _ in 0..<nodes { graph += field(1, field(4, Array("Relu".utf8))) }
        return [0x08, 0x08] + field(6, Array(doc.utf8)) + field(7, graph)
    }

    /// Stores `blobs` and puts a manifest naming them by path; returns the stored metadata document.
    static func push(_ registry: Registry, _ layers: [(path: String, bytes: [UInt8])]) throws -> [String: JSONValue] {
        let repo = try RepositoryName("limits/m")
        var stored: [Digest: Int] = [:]
        var descriptors: [[String: Any]] = []
        for l in layers {
            let digest = Digest.of(l.bytes)
            if stored[digest] == nil {
                let w = try registry.store.makeWriter()
                try w.write(l.bytes)
                _ = try w.finish()
                try registry.link(repo, digest)
                stored[digest] = l.bytes.count
            }
            descriptors.append([
                "mediaType": "application/octet-stream", "digest": digest.description, "size": l.bytes.count,
                "annotations": ["org.cncf.model.filepath": l.path],
            ])
        }
        let config = Array("{}".utf8)
        let w = try registry.store.makeWriter()
        try w.write(config)
        _ = try w.finish()
        try registry.link(repo, Digest.of(config))
        let manifest: [String: Any] = [
            "schemaVersion": 2, "mediaType": MediaType.ociManifest,
            "config": ["mediaType": "application/vnd.oci.image.config.v1+json", "digest": Digest.of(config).description, "size": 2],
            "layers": descriptors,
        ]
        let bytes = Array(try JSONSerialization.data(withJSONObject: manifest, options: [.sortedKeys]))
        _ = try registry.putManifest(repo, .tag("v1"), contentType: MediaType.ociManifest, bytes: bytes)
        let json = try registry.metadata(repo, .tag("v1"))
        return try #require(try WireJSON.decode(JSONValue.self, from: json, what: "metadata").object)
    }

    @Test func aLayerOverBudgetIsMarkedAndThePushSucceeds() throws {
        var limits = InspectionLimits()
        limits.maxBytesPerBlob = 64 << 10
        let t = try TestRegistry("limits", inspectionLimits: limits)
        // One large model under 300 names (inspected once), and a small one that fits.
        let big = Self.onnx(nodes: 40_000)
        let layers = (0..<300).map { ("m\($0).onnx", big) } + [("small.onnx", Self.onnx(nodes: 3))]
        let meta = try Self.push(t.registry, layers)
        // Two inspections in all: the big blob once for its 300 names, and the small one.
        #expect(t.registry.inspection.inspectionsRun == 2)
        let files = try #require(meta["files"]?.array)
        #expect(files.count == 301)
        let over = files.filter { $0["budget_exceeded"] == true }
        #expect(over.count == 300)
        #expect(over.allSatisfy { $0["error"]?.string?.contains("budget") == true && $0["truncated"] == true })
        let small = try #require(files.first { $0["path"] == "small.onnx" })
        #expect(small["format"] == "onnx")
        #expect(small["node_count"] == 3)
    }

    @Test func theDocumentIsCappedAndMarked() throws {
        var limits = InspectionLimits()
        limits.maxDocumentBytes = 16 << 10
        let t = try TestRegistry("limits", inspectionLimits: limits)
        let doc = String(repeating: "d", count: 4000)
        let meta = try Self.push(t.registry, (0..<20).map { ("m\($0).onnx", Self.onnx(nodes: $0 + 1, doc: doc)) })
        let json = try WireJSON.encode(JSONValue.object(meta))
        #expect(json.count <= 16 << 10)
        #expect(meta["truncated"] == true)
        let files = try #require(meta["files"]?.array)
        #expect(files.first?["doc_string"]?.string == doc)
        #expect(files.contains { $0["truncated"] == true && $0["doc_string"] == nil })
    }

    @Test func rangeHeaders() throws {
        #expect(try HTTPRanges.byteRange("bytes=0-99", size: 1000) == 0..<100)
        #expect(try HTTPRanges.byteRange("bytes=900-", size: 1000) == 900..<1000)
        #expect(try HTTPRanges.byteRange("bytes=-100", size: 1000) == 900..<1000)
        #expect(try HTTPRanges.byteRange("bytes=-5000", size: 1000) == 0..<1000)
        #expect(try HTTPRanges.byteRange("bytes=990-5000", size: 1000) == 990..<1000)
        for bad in [
            "bytes=1000-", "bytes=5-4", "bytes=0-1,5-6", "items=0-1", "bytes=-0", "bytes=a-b", "bytes=--1",
            "bytes=0-9223372036854775807999",
        ] {
            #expect(throws: RegistryError.self, "\(bad)") { try HTTPRanges.byteRange(bad, size: 1000) }
        }
        #expect(throws: RegistryError.self) { try HTTPRanges.byteRange("bytes=0-", size: 0) }
        #expect(try HTTPRanges.byteRange("bytes=0-9223372036854775806", size: Int64.max) == 0..<Int64.max)
        #expect(try HTTPRanges.contentRange("0-99") == 0...99)
        #expect(try HTTPRanges.contentRange("bytes 100-199/1000") == 100...199)
        for bad in ["99-0", "-1-5", "0-", "", "a-b", "0-1-2"] {
            #expect(throws: RegistryError.self, "\(bad)") { try HTTPRanges.contentRange(bad) }
        }
    }
}
