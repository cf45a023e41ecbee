import DepotCatalog
import DepotCore
import DepotFormats
import DepotStore
import Foundation

/// Random access to a stored blob for the format readers: each read maps onto the recipe.
struct StoreByteSource: ByteSource {
    let store: ChunkStore
    let digest: Digest
    let size: Int64

    func read(at offset: Int64, count: Int) throws -> [UInt8] {
        let end = min(size, offset + Int64(max(0, count)))
        guard offset >= 0, offset < end else { return [] }
        let reader = try store.reader(digest, range: offset..<end)
        var out = [UInt8]()
        out.reserveCapacity(Int(end - offset))
        while let batch = try reader.next() { out += batch }
        return out
    }
}

extension Registry {
    /// Annotation keys naming a layer's file path (ModelPack's first, then OCI's title).
    static let filePathKeys = ["org.cncf.model.filepath", "org.opencontainers.image.title"]

    /// Detects the format of every named file of an image manifest and extracts its metadata
    /// (DepotFormats). A safetensors file whose header lies (offsets that do not fit) rejects
    /// the manifest; another file that does not parse as its name says gets an `error` entry. Returns the JSON document, or nil when no
    /// file was recognised. Blobs not stored yet are skipped (the manifest then fails anyway).
    func extractMetadata(_ parsed: ParsedManifest) throws -> String? {
        guard MediaType.imageManifests.contains(parsed.mediaType) else { return nil }
        let platform = parsed.annotations?["dev.depot.platform"]
        var named: [(path: String, blob: Descriptor)] = []
        for blob in parsed.blobs {
            guard let path = Self.filePathKeys.lazy.compactMap({ blob.annotations?[$0] }).first else { continue }
            named.append((path, blob))
        }
        guard !named.isEmpty else { return nil }
        var files: [[String: Any]] = []
        var document: [String: Any] = [:]
        for (path, blob) in named {
            guard let stored = try store.blob(blob.digest), stored.size == blob.size else { continue }
            let source = StoreByteSource(store: store, digest: blob.digest, size: stored.size)
            do {
                if var meta = try FormatInspector.inspect(path: path, source: source, platform: platform) {
                    meta["path"] = path
                    meta["digest"] = blob.digest.description
                    meta["size"] = blob.size
                    files.append(meta)
                }
                if path == "config.pbtxt", stored.size <= 1 << 20 {
                    let text = String(decoding: try source.read(at: 0, count: Int(stored.size)), as: UTF8.self)
                    document["triton"] = try FormatInspector.triton(config: text, files: named.map(\.path))
                }
            } catch let e as DepotError {
                guard case .invalidArgument(let m) = e else { throw e }
                // A safetensors header that lies would make every reader misread the weights:
                // refuse it. Other files that do not parse as their name says are recorded.
                if path.lowercased().hasSuffix(".safetensors") { throw RegistryError(.manifestInvalid, "\(path): \(m)") }
                files.append(["path": path, "digest": blob.digest.description, "size": blob.size, "error": m])
            }
        }
        guard !files.isEmpty || document["triton"] != nil else { return nil }
        document["files"] = files
        guard JSONSerialization.isValidJSONObject(document),
              let data = try? JSONSerialization.data(withJSONObject: document, options: [.sortedKeys, .withoutEscapingSlashes]) else {
            return nil
        }
        return String(decoding: data, as: UTF8.self)
    }

    /// The extracted metadata of a manifest (JSON), `{"files": []}` when none was recognised.
    public func metadata(_ repository: RepositoryName, _ reference: Reference) throws -> [UInt8] {
        let m = try manifest(repository, reference)
        let json = try db.read { try $0.manifestMetadata(m.digest) }
        return Array((json ?? "{\"files\":[]}").utf8)
    }
}
