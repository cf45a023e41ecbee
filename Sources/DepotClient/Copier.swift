import DepotAPI
import DepotCore
import Foundation

/// What to copy: `source` (repository and tag or digest) to `destination` (repository and a tag,
/// or the same digest).
public struct CopyRequest: Sendable {
    public var sourceRepository: String
    public var sourceReference: String
    public var destinationRepository: String
    /// A tag; nil: by digest (untagged).
    public var destinationTag: String?
    /// Also copy the artifact's referrers (signatures, SBOMs, reports), and theirs.
    public var referrers = false
    /// Chunk batches in flight per blob.
    public var jobs = 4
    /// Raw bytes per chunk batch.
    public var batchBytes = 8 << 20
    /// Use only the standard OCI API even between two Depot registries.
    public var plainOCI = false

    public init(sourceRepository: String, sourceReference: String, destinationRepository: String, destinationTag: String?) {
        self.sourceRepository = sourceRepository
        self.sourceReference = sourceReference
        self.destinationRepository = destinationRepository
        self.destinationTag = destinationTag
    }
}

/// Copies an artifact between two registries, keeping its manifest bytes (so its digest, and
/// every signature over it, stay valid): an index's children first, then each manifest's blobs,
/// then the manifest. Between two Depot registries with the same chunker a blob moves chunk by
/// chunk: the destination names the chunks it lacks and only those cross, as the records the
/// source stores (not decompressed on the way). Otherwise a blob streams whole through a
/// temporary file, verified against its digest. Blobs and chunks already at the destination do
/// not move, so running a copy again after a failure resumes it.
public final class Copier: Sendable {
    let source: RegistryConnection
    let destination: RegistryConnection

    /// At most this many manifests in one copy (an index, its children, referrers and theirs).
    public static let maxManifests = 10_000
    /// How deep referrers of referrers are followed.
    public static let maxReferrerDepth = 8

    public init(source: RegistryConnection, destination: RegistryConnection) {
        self.source = source
        self.destination = destination
    }

    final class Tally: @unchecked Sendable {
        let lock = NSLock()
        var manifests = 0
        var blobs = 0
        var logical: Int64 = 0
        var deduplicated: Int64 = 0
        var chunks = 0
        var chunksMoved = 0
        func add(_ body: (Tally) -> Void) { lock.withLock { body(self) } }
    }

    struct Plan {
        var chunker: String?
        var maxQuery: Int
        var maxFetch: Int
    }

    public func copy(_ request: CopyRequest) async throws -> TransferSummary {
        let started = Date()
        var plan = Plan(chunker: nil, maxQuery: 4096, maxFetch: 4096)
        if !request.plainOCI, let s = try await source.extensionInfo(), let d = try await destination.extensionInfo(),
            s.chunker == d.chunker, s.recordFormat == d.recordFormat
        {
            plan = Plan(
                chunker: s.chunker.version, maxQuery: max(1, min(s.maxHashesPerQuery, d.maxHashesPerQuery, 4096)),
                maxFetch: max(1, min(s.maxHashesPerFetch, d.maxHashesPerFetch, 4096)))
        }
        let tally = Tally()
        let root = try await source.manifest(request.sourceRepository, request.sourceReference)
        var seen: Set<Digest> = []
        try await copyManifest(root, request, tag: request.destinationTag, plan: plan, tally: tally, seen: &seen)
        if request.referrers {
            try await copyReferrers(of: root.digest, request, plan: plan, tally: tally, seen: &seen, depth: 1)
        }
        let shown =
            request.destinationTag.map { "\(request.destinationRepository):\($0)" } ?? "\(request.destinationRepository)@\(root.digest)"
        return TransferSummary(
            reference: shown, digest: root.digest.description, files: tally.blobs, logicalBytes: tally.logical,
            bytesSent: destination.counters.sent, bytesReceived: source.counters.received, deduplicatedBytes: tally.deduplicated,
            chunksTotal: tally.chunks, chunksTransferred: tally.chunksMoved, mode: plan.chunker == nil ? "oci" : "chunked",
            seconds: Date().timeIntervalSince(started))
    }

    func copyManifest(
        _ m: FetchedManifest, _ request: CopyRequest, tag: String?, plan: Plan, tally: Tally, seen: inout Set<Digest>
    ) async throws {
        guard seen.insert(m.digest).inserted else { return }
        guard seen.count <= Self.maxManifests else {
            throw ClientError("the copy names more than \(Self.maxManifests) manifests: refused")
        }
        let doc = try WireJSON.decode(OCIManifestDocument.self, from: m.bytes, what: "manifest \(m.digest)")
        for child in doc.manifests ?? [] {
            let fetched = try await source.manifest(request.sourceRepository, child.digest.description)
            try await copyManifest(fetched, request, tag: nil, plan: plan, tally: tally, seen: &seen)
        }
        var blobs: [OCIDescriptor] = []
        if let config = doc.config { blobs.append(config) }
        blobs += doc.layers ?? []
        for b in blobs where !(b.urls?.isEmpty == false) { // foreign layers stay where their URLs say
            try await copyBlob(b, request, plan: plan, tally: tally)
        }
        let reference = tag ?? m.digest.description
        let put = try await destination.putManifest(request.destinationRepository, reference, bytes: m.bytes, mediaType: m.mediaType)
        guard put == m.digest else {
            throw ClientError("the destination stored \(m.digest) as \(put): it rewrote the manifest")
        }
        tally.add { $0.manifests += 1 }
    }

    func copyReferrers(
        of digest: Digest, _ request: CopyRequest, plan: Plan, tally: Tally, seen: inout Set<Digest>, depth: Int
    ) async throws {
        guard depth <= Self.maxReferrerDepth else { return }
        guard let index = try await source.referrers(request.sourceRepository, digest) else { return } // no referrers API
        guard index.manifests.count <= 1000 else {
            throw ClientError("\(digest) has \(index.manifests.count) referrers, more than 1000: refused")
        }
        for d in index.manifests where !seen.contains(d.digest) {
            let fetched = try await source.manifest(request.sourceRepository, d.digest.description)
            try await copyManifest(fetched, request, tag: nil, plan: plan, tally: tally, seen: &seen)
            try await copyReferrers(of: d.digest, request, plan: plan, tally: tally, seen: &seen, depth: depth + 1)
        }
    }

    func copyBlob(_ blob: OCIDescriptor, _ request: CopyRequest, plan: Plan, tally: Tally) async throws {
        let size = max(0, blob.size)
        tally.add {
            $0.blobs += 1
            $0.logical &+= size
        }
        if try await destination.blobExists(request.destinationRepository, blob.digest) {
            tally.add { $0.deduplicated &+= size }
            return
        }
        if let chunker = plan.chunker {
            let recipe: [ChunkRef]?
            do {
                recipe = try await source.recipe(request.sourceRepository, blob.digest)
            } catch let e as ClientError where e.status == 404 {
                recipe = nil // stored whole at the source: copy it whole
            }
            if let recipe {
                try await copyChunks(blob.digest, recipe: recipe, chunker: chunker, request, plan: plan, tally: tally)
                return
            }
        }
        try await copyWhole(blob, request)
    }

    func copyChunks(
        _ digest: Digest, recipe: [ChunkRef], chunker: String, _ request: CopyRequest, plan: Plan, tally: Tally
    ) async throws {
        var attempt = 0
        while true {
            attempt += 1
            // The distinct hashes, in recipe order, and their lengths.
            var lengths: [SHA256.Value: Int] = [:]
            var unique: [SHA256.Value] = []
            for c in recipe where lengths[c.hash] == nil {
                lengths[c.hash] = c.length
                unique.append(c.hash)
            }
            var missing: [SHA256.Value] = []
            var start = 0
            while start < unique.count {
                let end = min(unique.count, start + plan.maxQuery)
                missing += try await destination.missingChunks(request.destinationRepository, unique[start..<end])
                start = end
            }
            // Only hashes this blob has (a hostile answer cannot make the source send others).
            missing = missing.filter { lengths[$0] != nil }
            var batches: [[SHA256.Value]] = [[]]
            var batchBytes = 0
            for h in missing {
                let n = lengths[h] ?? 0
                if !batches[batches.count - 1].isEmpty
                    && (batchBytes + n > request.batchBytes || batches[batches.count - 1].count >= plan.maxFetch)
                {
                    batches.append([])
                    batchBytes = 0
                }
                batches[batches.count - 1].append(h)
                batchBytes += n
            }
            let source = self.source
            let destination = self.destination
            let sizes = lengths
            _ = try await forEachConcurrently(batches.filter { !$0.isEmpty }, limit: request.jobs) { batch in
                let raw = batch.reduce(0) { $0 + (sizes[$1] ?? 0) }
                let response = try await source.fetchChunks(request.sourceRepository, digest, batch)
                // A record is a 56-byte header and at most its raw bytes (stored raw when it does not compress).
                let records = try await source.collect(response, limit: raw + 56 * batch.count + (64 << 10))
                try await destination.uploadChunkRecords(request.destinationRepository, records)
            }
            do {
                try await destination.commitRecipe(request.destinationRepository, digest, chunks: recipe, chunker: chunker)
                let moved = missing.reduce(Int64(0)) { $0 + Int64(lengths[$1] ?? 0) }
                let total = recipe.reduce(Int64(0)) { $0 + Int64($1.length) }
                tally.add {
                    $0.chunks += recipe.count
                    $0.chunksMoved += missing.count
                    $0.deduplicated &+= total - moved
                }
                return
            } catch let e as ClientError where e.code == "CHUNK_UNKNOWN" && attempt < 3 {
                continue // collected between the query and the commit: negotiate again
            }
        }
    }

    func copyWhole(_ blob: OCIDescriptor, _ request: CopyRequest) async throws {
        let dir = NSTemporaryDirectory() + "depot-cp-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let path = dir + "/blob"
        // Streamed to the file and verified (size and digest) before anything is uploaded.
        try await Self.download(source, request.sourceRepository, blob, to: path)
        try await destination.uploadBlob(request.destinationRepository, blob.digest, body: .file(path: path, range: 0..<blob.size))
    }
}
