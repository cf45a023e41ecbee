import DepotAPI
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
    public static let filePathKeys = ["org.cncf.model.filepath", "org.opencontainers.image.title"]

    /// Detects the format of every named file of an image manifest and extracts its metadata
    /// (DepotFormats). A safetensors file whose header lies (offsets that do not fit) rejects
    /// the manifest; another file that does not parse as its name says gets an `error` entry. Returns the JSON document, or nil when no
    /// file was recognised. Blobs not stored yet are skipped (the manifest then fails anyway).
    ///
    /// Inspection is bounded (`InspectionLimits`): each distinct blob (and reader) is inspected
    /// once per manifest, under a byte and time budget, in the service's bounded worker pool; a
    /// layer over budget gets an entry marked `budget_exceeded`, and once the manifest's own time
    /// limit is spent the remaining layers do too. The document is capped in size.
    func extractMetadata(_ parsed: ParsedManifest) throws -> String? {
        guard MediaType.imageManifests.contains(parsed.mediaType) else { return nil }
        let platform = parsed.annotations?["dev.depot.platform"]
        var named: [(path: String, blob: Descriptor)] = []
        for blob in parsed.blobs {
            guard let path = Self.filePathKeys.lazy.compactMap({ blob.annotations?[$0] }).first else { continue }
            named.append((path, blob))
        }
        guard !named.isEmpty else { return nil }
        let limits = inspection.limits
        let manifestDeadline = ContinuousClock.now.advanced(by: .milliseconds(Int64(max(0, limits.maxSecondsPerManifest) * 1000)))
        var outcomes: [String: InspectionOutcome] = [:]
        var files: [[String: JSONValue]] = []
        var triton: [String: JSONValue]?
        for (path, blob) in named {
            guard let stored = try store.blob(blob.digest), stored.size == blob.size else { continue }
            let source = StoreByteSource(store: store, digest: blob.digest, size: stored.size)
            let key = "\(blob.digest)|\(FormatInspector.readerKey(path))"
            let outcome: InspectionOutcome
            if let seen = outcomes[key] {
                outcome = seen
            } else if ContinuousClock.now >= manifestDeadline {
                outcome = .budgetExceeded(
                    "inspection budget exceeded: the manifest's \(limits.maxSecondsPerManifest) s were spent on other layers")
            } else {
                outcome = inspection.inspect(path: path, digest: blob.digest.description, source: source, platform: platform)
            }
            outcomes[key] = outcome
            let base: [String: JSONValue] = ["path": .string(path), "digest": .string(blob.digest.description), "size": .int(blob.size)]
            switch outcome {
            case .recognized(let meta):
                files.append(meta.merging(base) { _, new in new })
            case .unrecognized:
                break
            case .invalid(let m):
                // A safetensors header that lies would make every reader misread the weights:
                // refuse it. Other files that do not parse as their name says are recorded.
                if path.lowercased().hasSuffix(".safetensors") { throw RegistryError(.manifestInvalid, "\(path): \(m)") }
                files.append(base.merging(["error": .string(m)]) { _, new in new })
            case .budgetExceeded(let m):
                files.append(base.merging(["error": .string(m), "budget_exceeded": true, "truncated": true]) { _, new in new })
            }
            if path == "config.pbtxt", stored.size <= 1 << 20, case .recognized = outcome {
                let text = String(decoding: try source.read(at: 0, count: Int(stored.size)), as: UTF8.self)
                do {
                    triton = try inspection.triton(config: text, files: named.map(\.path))
                } catch let e as InspectionBudgetExceeded {
                    triton = ["error": .string(e.description), "budget_exceeded": true, "truncated": true]
                } catch DepotError.invalidArgument(let m) {
                    files.append(base.merging(["error": .string(m)]) { _, new in new })
                }
            }
        }
        guard !files.isEmpty || triton != nil else { return nil }
        return MetadataDocument.encode(files: files, triton: triton, maxBytes: limits.maxDocumentBytes)
    }

    /// The extracted metadata of a manifest (JSON), `{"files": []}` when none was recognised.
    public func metadata(_ repository: RepositoryName, _ reference: Reference) throws -> [UInt8] {
        let m = try manifest(repository, reference)
        let json = try db.read { try $0.manifestMetadata(m.digest) }
        return Array((json ?? "{\"files\":[]}").utf8)
    }
}
