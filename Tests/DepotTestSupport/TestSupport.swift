import DepotCore
import DepotFormats
import DepotRegistry
import DepotStore
import Foundation

/// A fresh temporary directory, removed when the value goes away.
public final class TempDir: Sendable {
    public let path: String
    public init(_ name: String = "depot-test") {
        path = NSTemporaryDirectory() + "/\(name)-\(UUID().uuidString.prefix(8))"
        try! FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    }
    deinit { try? FileManager.default.removeItem(atPath: path) }
}

/// Deterministic pseudo-random bytes (SplitMix64): the same seed gives the same bytes.
public func randomBytes(_ count: Int, seed: UInt64) -> [UInt8] {
    var s = seed
    var out = [UInt8](repeating: 0, count: count)
    out.withUnsafeMutableBytes { raw in
        let words = count / 8
        guard let p = raw.baseAddress else { return }
        for i in 0..<words { p.storeBytes(of: SyntheticContent.next(&s), toByteOffset: i * 8, as: UInt64.self) }
        for i in (words * 8)..<count { raw[i] = UInt8(truncatingIfNeeded: i &* 131 &+ Int(truncatingIfNeeded: seed)) }
    }
    return out
}

/// The config blob of most test manifests.
public let emptyConfig: [UInt8] = Array("{}".utf8)

/// An image manifest over the given blobs (`config` is (digest, size, media type)), as JSON with sorted keys.
public func manifestJSON(
    config: (Digest, Int, String), layers: [(Digest, Int)], subject: (Digest, Int)? = nil,
    artifactType: String? = nil, annotations: [String: String]? = nil, mediaType: String = MediaType.ociManifest,
    layerAnnotations: [[String: String]?]? = nil
) -> [UInt8] {
    var o: [String: Any] = [
        "schemaVersion": 2, "mediaType": mediaType,
        "config": ["mediaType": config.2, "digest": config.0.description, "size": config.1],
        "layers": layers.enumerated().map { i, l -> [String: Any] in
            var d: [String: Any] = ["mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": l.0.description, "size": l.1]
            if let a = layerAnnotations?[i] { d["annotations"] = a }
            return d
        },
    ]
    if let subject { o["subject"] = ["mediaType": MediaType.ociManifest, "digest": subject.0.description, "size": subject.1] }
    if let artifactType { o["artifactType"] = artifactType }
    if let annotations { o["annotations"] = annotations }
    return Array(try! JSONSerialization.data(withJSONObject: o, options: [.sortedKeys]))
}

/// A Registry over a chunk store in a fresh temporary directory, with direct (no HTTP) push helpers.
public struct TestRegistry: Sendable {
    public let dir: TempDir
    public let registry: Registry

    public init(
        _ name: String = "depot-registry", uploads: UploadLimits = UploadLimits(), policy: TagPolicy = TagPolicy(),
        inspectionLimits: InspectionLimits = InspectionLimits()
    ) throws {
        dir = TempDir(name)
        let store = try ChunkStore(root: dir.path + "/store", create: true)
        registry = Registry(store: store, uploads: uploads, policy: policy, inspectionLimits: inspectionLimits)
    }

    /// Stores `bytes` and makes the blob visible in `repository`; returns its digest.
    @discardableResult
    public func pushBlob(_ repository: String, _ bytes: [UInt8]) throws -> Digest {
        let w = try registry.store.makeWriter()
        try w.write(bytes)
        let digest = try w.finish().digest
        try registry.link(try RepositoryName(repository), digest)
        return digest
    }

    /// Pushes the config and layer blobs and an image manifest over them under `reference`
    /// (a tag, or nil for by digest); returns the manifest's digest.
    @discardableResult
    public func pushManifest(
        _ repository: String, _ tag: String?, layers: [[UInt8]] = [], config: [UInt8] = emptyConfig,
        configMediaType: String = "application/vnd.oci.image.config.v1+json", subject: Digest? = nil,
        artifactType: String? = nil, annotations: [String: String]? = nil, layerAnnotations: [[String: String]?]? = nil,
        actor: Actor = .oci, expect: Digest? = nil
    ) throws -> Digest {
        let c = try pushBlob(repository, config)
        let ls = try layers.map { (try pushBlob(repository, $0), $0.count) }
        var subjectRef: (Digest, Int)?
        if let subject {
            let record = try registry.manifest(try RepositoryName(repository), .digest(subject))
            subjectRef = (subject, record.content.count)
        }
        let bytes = manifestJSON(
            config: (c, config.count, configMediaType), layers: ls, subject: subjectRef, artifactType: artifactType,
            annotations: annotations, layerAnnotations: layerAnnotations)
        let digest = Digest.of(bytes)
        _ = try registry.putManifest(
            try RepositoryName(repository), tag.map { .tag($0) } ?? .digest(digest), contentType: MediaType.ociManifest, bytes: bytes,
            actor: actor, expect: expect)
        return digest
    }
}

/// The `RegistryError` code `body` throws; nil when it returns, "other: …" for any other error.
public func registryErrorCode(_ body: () throws -> Any?) -> String? {
    do {
        _ = try body()
        return nil
    } catch let e as RegistryError {
        return e.code.rawValue
    } catch {
        return "other: \(error)"
    }
}

/// The raw text of a state that is a `String` today and may become a `RawRepresentable` enum
/// (job and rollout states), so tests read the same either way.
public func rawText(_ value: Any?) -> String? {
    guard let value else { return nil }
    if let r = value as? any RawRepresentable, let s = r.rawValue as? String { return s }
    return "\(value)"
}

/// Builds a safetensors file: header JSON + concatenated tensor data.
public func makeSafetensors(_ tensors: [(String, String, [Int], [UInt8])], metadata: [String: String] = [:]) -> [UInt8] {
    var entries: [String] = []
    if !metadata.isEmpty {
        let m = metadata.sorted { $0.key < $1.key }.map { "\"\($0.key)\":\"\($0.value)\"" }.joined(separator: ",")
        entries.append("\"__metadata__\":{\(m)}")
    }
    var offset = 0
    var data: [UInt8] = []
    for (name, dtype, shape, bytes) in tensors {
        entries.append(
            "\"\(name)\":{\"dtype\":\"\(dtype)\",\"shape\":[\(shape.map(String.init).joined(separator: ","))],\"data_offsets\":[\(offset),\(offset + bytes.count)]}"
        )
        offset += bytes.count
        data += bytes
    }
    let header = Array(("{" + entries.joined(separator: ",") + "}").utf8)
    let n = UInt64(header.count).littleEndian
    return withUnsafeBytes(of: n) { Array($0) } + header + data
}

/// A tiny protobuf wire-format encoder for building test inputs.
public struct PB {
    public init() {}
    public var bytes: [UInt8] = []

    public mutating func varint(_ value: UInt64) {
        var v = value
        while v >= 0x80 {
            bytes.append(UInt8(v & 0x7f) | 0x80)
            v >>= 7
        }
        bytes.append(UInt8(v))
    }
    public mutating func tag(_ field: Int, _ wire: Int) { varint(UInt64(field << 3 | wire)) }
    public mutating func int(_ field: Int, _ v: Int) {
        tag(field, 0)
        varint(UInt64(bitPattern: Int64(v)))
    }
    public mutating func data(_ field: Int, _ b: [UInt8]) {
        tag(field, 2)
        varint(UInt64(b.count))
        bytes += b
    }
    public mutating func string(_ field: Int, _ s: String) { data(field, Array(s.utf8)) }
    public mutating func message(_ field: Int, _ build: (inout PB) -> Void) {
        var m = PB()
        build(&m)
        data(field, m.bytes)
    }
}

/// An ONNX ModelProto whose graph holds `initializers` (name, TensorProto data type, dims, raw
/// bytes) as `raw_data`, the way exporters write weights, plus a node, the way they lay it out
/// (ir_version first, the graph's nodes before its initializers).
public func makeONNX(initializers: [(String, Int, [Int], [UInt8])]) -> [UInt8] {
    var m = PB()
    m.int(1, 8)
    m.string(2, "depot-tests")
    m.message(7) { g in
        g.message(1) { n in
            n.string(1, "x")
            n.string(2, "y")
            n.string(4, "Identity")
        }
        g.string(2, "main_graph")
        for (name, dataType, dims, raw) in initializers {
            g.message(5) { t in
                for d in dims { t.int(1, d) }
                t.int(2, dataType)
                t.string(8, name)
                t.data(9, raw)
            }
        }
    }
    m.message(8) { o in o.int(2, 13) }
    return m.bytes
}
