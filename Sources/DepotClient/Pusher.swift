import DepotAPI
import DepotCore
import DepotStore
import Foundation
import NIOCore

/// What a push or pull did, for people (`finish` lines) and machines (`--json`).
public struct TransferSummary: Codable, Sendable {
    public var reference: String
    public var digest: String
    public var files: Int
    /// Sum of the artifact's file sizes.
    public var logicalBytes: Int64
    /// Payload bytes over the wire (request bodies sent, response bodies received).
    public var bytesSent: Int64
    public var bytesReceived: Int64
    /// Logical bytes that did not move because the other side had them.
    public var deduplicatedBytes: Int64
    public var chunksTotal: Int
    public var chunksTransferred: Int
    /// `chunked` (Depot's extension) or `oci` (standard API, whole blobs).
    public var mode: String
    public var seconds: Double

    enum CodingKeys: String, CodingKey {
        case reference, digest, files, mode, seconds
        case logicalBytes = "logical_bytes"
        case bytesSent = "bytes_sent"
        case bytesReceived = "bytes_received"
        case deduplicatedBytes = "deduplicated_bytes"
        case chunksTotal = "chunks_total"
        case chunksTransferred = "chunks_transferred"
    }
}

/// Settings of a push.
public struct PushRequest: Sendable {
    public var repository: String
    public var tag: String
    public var paths: [String]
    public var annotations: [String: String] = [:]
    /// The manifest this artifact refers to (OCI `subject`; lineage `subject` edge).
    public var subject: FetchedManifest?
    /// Overrides the artifactType detected from the files.
    public var artifactType: String?
    /// Concurrent chunk batches (per file).
    public var jobs = 4
    /// Files pushed at the same time.
    public var fileJobs = 2
    /// Raw bytes per uploaded chunk batch.
    public var batchBytes = 8 << 20
    /// Use only the standard OCI API even when the registry offers chunk negotiation.
    public var plainOCI = false

    public init(repository: String, tag: String, paths: [String]) {
        self.repository = repository
        self.tag = tag
        self.paths = paths
    }
}

/// Pushes files as one model artifact: each file is negotiated chunk by chunk with a Depot
/// registry (only missing chunks move) or uploaded whole to any other OCI registry; then a
/// ModelPack-style manifest ties them together under the tag.
public final class Pusher: Sendable {
    let connection: RegistryConnection
    let progress: TransferProgress

    public init(connection: RegistryConnection, progress: TransferProgress) {
        self.connection = connection
        self.progress = progress
    }

    struct FileResult: Sendable {
        var descriptor: OCIDescriptor
        var digest: Digest
        var size: Int64
        var deduplicated: Int64
        var chunks: Int
        var sent: Int
    }

    public func push(_ request: PushRequest) async throws -> TransferSummary {
        let started = Date()
        let files = try ArtifactFiles.collect(request.paths)
        let info = request.plainOCI ? nil : try await connection.extensionInfo()
        if let info, info.chunkerVersion != ChunkerParameters.v1.version {
            throw ClientError(
                "the registry chunks with \(info.chunkerVersion); this client knows \(ChunkerParameters.v1.version) (upgrade the client)")
        }
        let formats = try ArtifactFiles.detectFormats(files, platform: request.annotations[Annotation.platform])
        var sizes: [Int64] = []
        for f in files { sizes.append(try FileStamp(f.localPath).size) }
        progress.begin(files: files.count, work: 2 * sizes.reduce(0, +))
        let results = try await forEachConcurrently(files, limit: request.fileJobs) { file in
            info != nil ? try await self.pushChunked(file, request) : try await self.pushWhole(file, request)
        }
        var layers: [OCIDescriptor] = []
        var logical: Int64 = 0
        var deduplicated: Int64 = 0
        var chunks = 0
        var sent = 0
        for r in results {
            layers.append(r.descriptor)
            logical += r.size
            deduplicated += r.deduplicated
            chunks += r.chunks
            sent += r.sent
        }
        // The ModelPack config: what the model is, and the layers' digests.
        let weightFormats = Set(formats.compactMap { $0 }.filter { $0 != "triton-config" })
        let config = ModelConfig(
            createdAt: ISO8601DateFormatter().string(from: Date()), name: request.repository, version: request.tag,
            format: weightFormats.sorted().joined(separator: ","), layers: layers.map(\.digest))
        let configBytes = try Self.json(config)
        let configDigest = Digest.of(configBytes)
        if try await !connection.blobExists(request.repository, configDigest) {
            try await connection.uploadBlob(request.repository, configDigest, body: .bytes(configBytes))
        }
        var annotations = request.annotations
        annotations["org.opencontainers.image.created"] =
            annotations["org.opencontainers.image.created"] ?? ISO8601DateFormatter().string(from: started)
        let subject = request.subject.map { OCIDescriptor(mediaType: $0.mediaType, digest: $0.digest, size: Int64($0.bytes.count)) }
        let manifest = OCIManifestDocument.image(
            config: OCIDescriptor(mediaType: ModelMediaType.config, digest: configDigest, size: Int64(configBytes.count)),
            layers: layers, artifactType: request.artifactType ?? ArtifactFiles.artifactType(files, formats: formats),
            subject: subject, annotations: annotations)
        let bytes = try Self.json(manifest)
        // Without a tag the manifest is pushed by digest (untagged).
        let reference = request.tag.isEmpty ? Digest.of(bytes).description : request.tag
        let digest = try await connection.putManifest(request.repository, reference, bytes: bytes, mediaType: MediaType.ociManifest)
        let shown = request.tag.isEmpty ? "\(request.repository)@\(digest)" : "\(request.repository):\(request.tag)"
        return TransferSummary(
            reference: shown, digest: digest.description, files: files.count,
            logicalBytes: logical, bytesSent: connection.counters.sent, bytesReceived: connection.counters.received,
            deduplicatedBytes: deduplicated, chunksTotal: chunks, chunksTransferred: sent,
            mode: info != nil ? "chunked" : "oci", seconds: Date().timeIntervalSince(started))
    }

    static func json<T: Encodable>(_ value: T) throws -> [UInt8] { try WireJSON.encode(value) }

    func descriptor(_ file: ArtifactFile, _ digest: Digest, _ size: Int64) -> OCIDescriptor {
        OCIDescriptor(
            mediaType: ModelMediaType.layer(for: file.relativePath), digest: digest, size: size,
            annotations: [ModelMediaType.filepath: file.relativePath, ModelMediaType.title: file.relativePath])
    }

    // MARK: chunk negotiation

    func pushChunked(_ file: ArtifactFile, _ request: PushRequest) async throws -> FileResult {
        let repo = request.repository
        progress.working(on: file.relativePath)
        // The file is read once: its chunks are negotiated and the missing ones uploaded, a group
        // at a time, while the rest is still being cut and hashed.
        let first = try await computeAndUpload(file, request)
        let recipe = first.recipe
        if first.alreadyThere {
            progress.finish("\(file.relativePath): \(TransferProgress.bytes(recipe.size)) already there")
            return FileResult(
                descriptor: descriptor(file, recipe.digest, recipe.size), digest: recipe.digest, size: recipe.size,
                deduplicated: recipe.size, chunks: recipe.chunks.count, sent: 0)
        }
        var sentChunks = 0
        var attempt = 0
        while true {
            attempt += 1
            // The first attempt's chunks went up while the file was read; a retry negotiates the
            // whole recipe again (chunks collected by GC in between are sent again).
            let missing = attempt == 1 ? [] : try await missingChunks(repo, recipe)
            let sentNow = attempt == 1 ? first.sent : missing.count
            sentChunks += sentNow
            let missingBytes = attempt == 1 ? first.sentBytes : try await upload(missing, of: recipe, repo: repo, request)
            let saved = recipe.size - missingBytes
            do {
                try await connection.commitRecipe(
                    repo, recipe.digest, chunks: recipe.chunks, chunker: recipe.chunker, states: recipe.hashStates)
                progress.finish(
                    "\(file.relativePath): \(TransferProgress.bytes(recipe.size)), sent \(sentNow) of \(recipe.chunks.count) chunks (\(TransferProgress.bytes(missingBytes))), \(TransferProgress.bytes(saved)) deduplicated"
                )
                return FileResult(
                    descriptor: descriptor(file, recipe.digest, recipe.size), digest: recipe.digest, size: recipe.size,
                    deduplicated: saved, chunks: recipe.chunks.count, sent: sentChunks)
            } catch let e as ClientError where e.code == "CHUNK_UNKNOWN" && attempt < 3 {
                continue // collected between the query and the commit: negotiate again
            } catch let e as ClientError where e.code == "DIGEST_INVALID" {
                throw ClientError("\(file.localPath) changed while it was being pushed (\(e.message))")
            }
        }
    }

    struct ReadAndSent {
        var recipe: LocalRecipe
        /// Chunks and raw bytes uploaded.
        var sent: Int
        var sentBytes: Int64
        /// The registry had the whole file in the repository already (nothing was uploaded).
        var alreadyThere: Bool
    }

    /// Computes the file's recipe on a thread of its own and, as its chunks are cut
    /// (`LocalRecipe.compute`'s groups), asks which the registry lacks and uploads those, `jobs`
    /// batches at a time. When nothing of the first group (~64 MiB) is missing the file may be
    /// stored already (a re-push): the rest waits for the digest and one HEAD settles it, as
    /// before uploads overlapped reading (negotiating every chunk of a stored file costs the
    /// registry more than one HEAD), or else is negotiated then.
    func computeAndUpload(_ file: ArtifactFile, _ request: PushRequest) async throws -> ReadAndSent {
        let repo = request.repository
        let path = file.localPath
        let progress = self.progress
        let connection = self.connection
        let (groups, feed) = AsyncStream<RecipeGroup>.makeStream()
        let stop = Locked(false)
        // A thread, not a task: reading and hashing block for the whole file, and the uploads
        // need the concurrency pool's threads meanwhile (two on a 2-core machine).
        let computing = Task<LocalRecipe, any Error> {
            try await withCheckedThrowingContinuation { continuation in
                let thread = Thread {
                    defer { feed.finish() }
                    continuation.resume(
                        with: Result {
                            try LocalRecipe.compute(
                                path: path, parameters: .v1, onGroup: { feed.yield($0) }, isCancelled: { stop.withLock { $0 } },
                                progress: { progress.advance(Int64($0)) })
                        })
                }
                thread.name = "depot-push-read"
                thread.start()
            }
        }
        var seen = Set<SHA256.Value>()
        var sent = 0
        var sentBytes: Int64 = 0
        var alreadyThere = false
        do {
            try await withTaskCancellationHandler {
                try await withThrowingTaskGroup(of: Void.self) { uploads in
                    var running = 0
                    func negotiate(_ group: RecipeGroup) async throws -> Int {
                        // First occurrences only: a chunk repeated in the file goes up once.
                        let fresh = group.chunks.indices.filter { seen.insert(group.chunks[$0].hash).inserted }
                        let asked = Set(fresh.map { group.chunks[$0].hash })
                        var lacking = Set<SHA256.Value>()
                        var at = 0
                        while at < fresh.count {
                            let slice = fresh[at..<min(at + 16_384, fresh.count)].map { group.chunks[$0].hash }
                            for h in try await connection.missingChunks(repo, slice[...]) {
                                guard asked.contains(h) else { throw ClientError("the registry reported a chunk this file does not have") }
                                lacking.insert(h)
                            }
                            at += slice.count
                        }
                        let missing = fresh.filter { lacking.contains(group.chunks[$0].hash) }
                        let groupBytes = group.chunks.reduce(Int64(0)) { $0 + Int64($1.length) }
                        let missingBytes = missing.reduce(Int64(0)) { $0 + Int64(group.chunks[$1].length) }
                        progress.advance(groupBytes - missingBytes, saved: groupBytes - missingBytes)
                        sent += missing.count
                        sentBytes += missingBytes
                        let offsets = group.offsets
                        var batch: [Int] = []
                        var batchBytes = 0
                        func flush() async throws {
                            guard !batch.isEmpty else { return }
                            if running >= max(1, request.jobs) {
                                try await uploads.next()
                                running -= 1
                            }
                            let items = batch.map { (offset: offsets[$0], ref: group.chunks[$0], width: group.widths[$0]) }
                            uploads.addTask {
                                let records = try Self.encode(items, path: path)
                                try await Self.send(records, repo: repo, path: path, connection: connection)
                                progress.advance(items.reduce(Int64(0)) { $0 + Int64($1.ref.length) })
                            }
                            running += 1
                            batch = []
                            batchBytes = 0
                        }
                        for k in missing {
                            if batchBytes + group.chunks[k].length > request.batchBytes { try await flush() }
                            batch.append(k)
                            batchBytes += group.chunks[k].length
                        }
                        try await flush()
                        return missing.count
                    }
                    var deferring = false
                    var deferred: [RecipeGroup] = []
                    var firstGroup = true
                    for await group in groups {
                        if deferring {
                            deferred.append(group)
                            continue
                        }
                        let missing = try await negotiate(group)
                        // Nothing of the first group missing: maybe the whole file is stored.
                        if firstGroup && missing == 0 { deferring = true }
                        firstGroup = false
                    }
                    try Task.checkCancellation()
                    if deferring {
                        // One HEAD once the digest is known, else the negotiation that waited.
                        let recipe = try await computing.value
                        if sent == 0, try await connection.blobExists(repo, recipe.digest) {
                            alreadyThere = true
                            let rest = deferred.reduce(Int64(0)) { t, g in g.chunks.reduce(t) { $0 + Int64($1.length) } }
                            progress.advance(rest, saved: rest)
                        } else {
                            for g in deferred { _ = try await negotiate(g) }
                        }
                    }
                    try await uploads.waitForAll()
                }
            } onCancel: {
                stop.withLock { $0 = true }
            }
        } catch {
            stop.withLock { $0 = true }
            _ = try? await computing.value
            throw error
        }
        return ReadAndSent(recipe: try await computing.value, sent: sent, sentBytes: sentBytes, alreadyThere: alreadyThere)
    }

    /// Uploads encoded chunk records.
    static func send(_ records: ByteBuffer, repo: String, path: String, connection: RegistryConnection) async throws {
        do {
            try await connection.uploadChunkRecords(repo, records)
        } catch let e as ClientError where e.code == "DIGEST_INVALID" {
            // The server hashes every chunk: bytes that differ from the recipe's hash mean
            // the file was rewritten after it was read.
            throw ClientError("\(path) changed while it was being pushed (\(e.message))")
        }
    }

    /// Indices of the recipe's chunks the registry lacks (first occurrence of each hash).
    func missingChunks(_ repo: String, _ recipe: LocalRecipe) async throws -> [Int] {
        var firstIndex: [SHA256.Value: Int] = [:]
        var unique: [SHA256.Value] = []
        for (i, c) in recipe.chunks.enumerated() where firstIndex[c.hash] == nil {
            firstIndex[c.hash] = i
            unique.append(c.hash)
        }
        var missing: [Int] = []
        var at = 0
        while at < unique.count {
            let group = unique[at..<min(at + 16_384, unique.count)]
            for h in try await connection.missingChunks(repo, group) {
                guard let i = firstIndex[h] else { throw ClientError("the registry reported a chunk this file does not have") }
                missing.append(i)
            }
            at += group.count
        }
        return missing.sorted()
    }

    /// Uploads the chunks at `indices` in batches, `jobs` at a time. Returns their raw bytes.
    func upload(_ indices: [Int], of recipe: LocalRecipe, repo: String, _ request: PushRequest) async throws -> Int64 {
        let offsets = recipe.offsets
        var batches: [[Int]] = [[]]
        var batchBytes = 0
        for i in indices {
            if batchBytes + recipe.chunks[i].length > request.batchBytes, !batches[batches.count - 1].isEmpty {
                batches.append([])
                batchBytes = 0
            }
            batches[batches.count - 1].append(i)
            batchBytes += recipe.chunks[i].length
        }
        let total = indices.reduce(Int64(0)) { $0 + Int64(recipe.chunks[$1].length) }
        progress.advance(recipe.size - total, saved: recipe.size - total)
        let connection = self.connection
        let progress = self.progress
        let path = recipe.path
        _ = try await forEachConcurrently(batches.filter { !$0.isEmpty }, limit: request.jobs) { batch in
            let records = try Self.encode(batch.map { (offset: offsets[$0], ref: recipe.chunks[$0], width: recipe.widths[$0]) }, path: path)
            try await Self.send(records, repo: repo, path: path, connection: connection)
            progress.advance(batch.reduce(Int64(0)) { $0 + Int64(recipe.chunks[$1].length) })
        }
        return total
    }

    /// Reads and encodes a batch of chunks. Records carry the hashes of the first read; the
    /// server verifies each against the bytes, which catches a file rewritten in between.
    static func encode(_ batch: [(offset: Int64, ref: ChunkRef, width: UInt8)], path: String) throws -> ByteBuffer {
        let file = try PosixFile(path: path, mode: .read)
        let codec = ChunkRecordCodec()
        // Records go straight into the buffer that is sent (no array copied into it after).
        var out = ByteBufferAllocator().buffer(capacity: batch.reduce(0) { $0 + $1.ref.length + ChunkRecords.headerSize })
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: ChunkerParameters.v1.maxSize, alignment: 64)
        defer { buffer.deallocate() }
        for item in batch {
            let c = item.ref
            let chunk = UnsafeMutableRawBufferPointer(rebasing: buffer[0..<c.length])
            do {
                try file.read(into: chunk, at: item.offset)
            } catch {
                throw ClientError("\(path) changed while it was being pushed (it is shorter now)")
            }
            try codec.encode(UnsafeRawBufferPointer(chunk), hash: c.hash, elementWidth: Int(item.width)) { header, payload in
                out.writeBytes(header)
                out.writeBytes(payload)
            }
        }
        return out
    }

    // MARK: plain OCI

    func pushWhole(_ file: ArtifactFile, _ request: PushRequest) async throws -> FileResult {
        progress.working(on: file.relativePath)
        let progress = self.progress
        let recipe = try LocalRecipe.compute(path: file.localPath, parameters: .v1, progress: { progress.advance(Int64($0)) })
        if try await connection.blobExists(request.repository, recipe.digest) {
            progress.advance(recipe.size, saved: recipe.size)
            progress.finish("\(file.relativePath): \(TransferProgress.bytes(recipe.size)) already there")
            return FileResult(
                descriptor: descriptor(file, recipe.digest, recipe.size), digest: recipe.digest, size: recipe.size,
                deduplicated: recipe.size, chunks: 0, sent: 0)
        }
        do {
            try await connection.uploadBlob(request.repository, recipe.digest, body: .file(path: file.localPath, range: 0..<recipe.size))
        } catch let e as ClientError where e.code == "DIGEST_INVALID" || e.code == "SIZE_INVALID" {
            throw ClientError("\(file.localPath) changed while it was being pushed (\(e.message))")
        }
        guard try FileStamp(file.localPath) == recipe.stamp else {
            throw ClientError("\(file.localPath) changed while it was being pushed")
        }
        progress.advance(recipe.size)
        progress.finish("\(file.relativePath): \(TransferProgress.bytes(recipe.size)) sent whole (standard OCI API)")
        return FileResult(
            descriptor: descriptor(file, recipe.digest, recipe.size), digest: recipe.digest, size: recipe.size,
            deduplicated: 0, chunks: 0, sent: 0)
    }
}

/// Runs `body` for each element, at most `limit` at a time; results in the elements' order.
func forEachConcurrently<T: Sendable, R: Sendable>(
    _ items: [T], limit: Int,
    _ body: @escaping @Sendable (T) async throws -> R
) async throws -> [R] {
    try await withThrowingTaskGroup(of: (Int, R).self) { group in
        var results = [R?](repeating: nil, count: items.count)
        var next = 0
        while next < items.count && next < max(1, limit) {
            let i = next
            let item = items[i]
            group.addTask { (i, try await body(item)) }
            next += 1
        }
        while let (i, r) = try await group.next() {
            results[i] = r
            if next < items.count {
                let j = next
                let item = items[j]
                group.addTask { (j, try await body(item)) }
                next += 1
            }
        }
        return results.map { $0! }
    }
}
