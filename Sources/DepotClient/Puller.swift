import AsyncHTTPClient
import DepotAPI
import DepotCore
import DepotStore
import Foundation
import NIOCore

#if canImport(Glibc)
    import Glibc
#endif

/// Settings of a pull.
public struct PullRequest: Sendable {
    public var repository: String
    public var reference: String
    public var outputDirectory: String
    /// Only these files of the artifact (relative paths); all when empty.
    public var files: [String] = []
    /// Only files matching one of these (all when empty), then none matching `exclude`.
    public var include: [PathPattern] = []
    public var exclude: [PathPattern] = []
    public var jobs = 4
    /// Files pulled at the same time.
    public var fileJobs = 2
    public var plainOCI = false
    /// Raw bytes per chunk fetch request.
    public var batchBytes = 8 << 20

    public init(repository: String, reference: String, outputDirectory: String) {
        self.repository = repository
        self.reference = reference
        self.outputDirectory = outputDirectory
    }
}

/// Pulls an artifact's files into a directory. From a Depot registry it fetches each file's
/// recipe and only the chunks missing from the local chunk cache; from any other registry it
/// streams whole blobs (resuming a partial download with a Range request). Files are written
/// under `<dir>/.depot-partial/`, verified against their digest, then renamed into place.
public final class Puller: Sendable {
    let connection: RegistryConnection
    let progress: TransferProgress
    let cache: ChunkCache

    public init(connection: RegistryConnection, progress: TransferProgress, cache: ChunkCache) {
        self.connection = connection
        self.progress = progress
        self.cache = cache
    }

    struct Layer: Sendable {
        var path: String
        var digest: Digest
        var size: Int64
    }

    public func pull(_ request: PullRequest) async throws -> TransferSummary {
        let started = Date()
        let manifest = try await connection.manifest(request.repository, request.reference)
        let layers = try Self.layers(manifest)
        var wanted = layers
        if !request.files.isEmpty {
            for f in request.files where !layers.contains(where: { $0.path == f }) {
                throw ClientError(
                    "\(request.repository):\(request.reference) has no file '\(f)' (it has: \(layers.map(\.path).joined(separator: ", ")))")
            }
            wanted = layers.filter { request.files.contains($0.path) }
        }
        if !request.include.isEmpty || !request.exclude.isEmpty {
            wanted = wanted.filter { l in
                (request.include.isEmpty || request.include.contains { $0.matches(l.path) })
                    && !request.exclude.contains { $0.matches(l.path) }
            }
            guard !wanted.isEmpty else {
                throw ClientError(
                    "no file of \(request.repository):\(request.reference) matches --include \(request.include.map(\.text)) --exclude \(request.exclude.map(\.text)) (it has: \(layers.prefix(50).map(\.path).joined(separator: ", ")))"
                )
            }
        }
        let info = request.plainOCI ? nil : try await connection.extensionInfo()
        let partialDir = request.outputDirectory + "/.depot-partial"
        do {
            try FileManager.default.createDirectory(atPath: partialDir, withIntermediateDirectories: true)
        } catch {
            throw ClientError("cannot create \(request.outputDirectory): \(error.localizedDescription)")
        }
        progress.begin(files: wanted.count, work: 2 * wanted.reduce(Int64(0)) { $0 + $1.size })
        let indexed = Array(wanted.enumerated())
        let results = try await forEachConcurrently(indexed, limit: request.fileJobs) { (index, layer) -> FileResult in
            let target = request.outputDirectory + "/" + layer.path
            if Self.alreadyThere(target, layer) {
                self.progress.advance(2 * layer.size, saved: layer.size)
                self.progress.finish("\(layer.path): \(TransferProgress.bytes(layer.size)) already there")
                return FileResult(deduplicated: layer.size, chunks: 0, fetched: 0)
            }
            self.progress.working(on: layer.path)
            let partial = partialDir + "/\(index)-" + layer.digest.hex
            let r =
                info != nil
                ? try await self.pullChunked(layer, request, partial: partial)
                : try await self.pullWhole(layer, request, partial: partial)
            do {
                try FileManager.default.createDirectory(
                    atPath: (target as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
            } catch {
                throw ClientError("cannot create the directory of \(layer.path): \(error.localizedDescription)")
            }
            guard rename(partial, target) == 0 else {
                throw ClientError("cannot move \(layer.path) into place: \(String(cString: strerror(errno)))")
            }
            return r
        }
        let logical = wanted.reduce(Int64(0)) { $0 + $1.size }
        let deduplicated = results.reduce(Int64(0)) { $0 + $1.deduplicated }
        let chunks = results.reduce(0) { $0 + $1.chunks }
        let fetched = results.reduce(0) { $0 + $1.fetched }
        try? FileManager.default.removeItem(atPath: partialDir)
        cache.trim()
        return TransferSummary(
            reference: "\(request.repository):\(request.reference)", digest: manifest.digest.description,
            files: wanted.count, logicalBytes: logical, bytesSent: connection.counters.sent,
            bytesReceived: connection.counters.received, deduplicatedBytes: deduplicated, chunksTotal: chunks,
            chunksTransferred: fetched, mode: info != nil ? "chunked" : "oci", seconds: Date().timeIntervalSince(started))
    }

    /// The files of an image manifest: path from `org.cncf.model.filepath` or the title
    /// annotation, else `blobs/sha256-<hex>`.
    static func layers(_ manifest: FetchedManifest) throws -> [Layer] {
        let document: OCIManifestDocument
        do { document = try WireJSON.decode(OCIManifestDocument.self, from: manifest.bytes, what: "manifest \(manifest.digest)") } catch {
            throw ClientError("\(error)")
        }
        if document.manifests != nil {
            throw ClientError("\(manifest.digest) is an index of several manifests; pull one of them by digest")
        }
        guard let layers = document.layers else { throw ClientError("manifest \(manifest.digest) has no layers") }
        var seen = Set<String>()
        return try layers.map { l in
            let (digest, size) = (l.digest, l.size)
            guard size >= 0 else { throw ClientError("manifest \(manifest.digest) has a layer of negative size") }
            let annotations = l.annotations ?? [:]
            let name = annotations[ModelMediaType.filepath] ?? annotations[ModelMediaType.title] ?? "blobs/sha256-\(digest.hex)"
            let path = try ArtifactFiles.safeRelativePath(name)
            guard seen.insert(path).inserted else { throw ClientError("manifest \(manifest.digest) names '\(path)' twice") }
            return Layer(path: path, digest: digest, size: size)
        }
    }

    static func alreadyThere(_ path: String, _ layer: Layer) -> Bool {
        guard let stamp = try? FileStamp(path), stamp.size == layer.size, let file = try? PosixFile(path: path, mode: .read) else {
            return false
        }
        var hash = SHA256()
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 4 << 20, alignment: 64)
        defer { buffer.deallocate() }
        while let n = try? file.readSome(into: buffer), n > 0 { hash.update(UnsafeRawBufferPointer(rebasing: buffer[0..<n])) }
        return Digest(bytes: hash.finalize()) == layer.digest
    }

    // MARK: chunked

    struct FileResult: Sendable {
        var deduplicated: Int64
        var chunks: Int
        var fetched: Int
    }

    func pullChunked(_ layer: Layer, _ request: PullRequest, partial: String) async throws -> FileResult {
        let repo = request.repository
        let recipe = try await connection.recipe(repo, layer.digest)
        guard recipe.reduce(Int64(0), { $0 + Int64($1.length) }) == layer.size else {
            throw ClientError("the registry's recipe for \(layer.path) does not add up to \(layer.size) bytes")
        }
        var seen = Set<SHA256.Value>()
        var toFetch: [ChunkRef] = []
        for c in recipe where seen.insert(c.hash).inserted {
            if !cache.contains(c.hash) { toFetch.append(c) }
        }
        let fetchedBytes = toFetch.reduce(Int64(0)) { $0 + Int64($1.length) }
        progress.advance(layer.size - fetchedBytes, saved: layer.size - fetchedBytes)
        try await fetchIntoCache(toFetch, repo: repo, digest: layer.digest, request)
        try await assemble(layer, recipe: recipe, repo: repo, partial: partial)
        progress.finish(
            "\(layer.path): \(TransferProgress.bytes(layer.size)), fetched \(toFetch.count) of \(recipe.count) chunks (\(TransferProgress.bytes(fetchedBytes))), \(TransferProgress.bytes(layer.size - fetchedBytes)) from cache or repeats"
        )
        return FileResult(deduplicated: layer.size - fetchedBytes, chunks: recipe.count, fetched: toFetch.count)
    }

    /// Fetches chunks in batches, `jobs` at a time; each record is verified, then cached.
    func fetchIntoCache(_ chunks: [ChunkRef], repo: String, digest: Digest, _ request: PullRequest) async throws {
        var batches: [[ChunkRef]] = [[]]
        var bytes = 0
        for c in chunks {
            if bytes + c.length > request.batchBytes || batches[batches.count - 1].count >= 4096, !batches[batches.count - 1].isEmpty {
                batches.append([])
                bytes = 0
            }
            batches[batches.count - 1].append(c)
            bytes += c.length
        }
        let connection = self.connection
        let cache = self.cache
        let progress = self.progress
        _ = try await forEachConcurrently(batches.filter { !$0.isEmpty }, limit: request.jobs) { batch in
            try await Self.fetch(batch.map(\.hash), repo: repo, digest: digest, connection: connection) { hash, raw in
                cache.write(hash, raw)
                progress.advance(Int64(raw.count))
            }
        }
    }

    /// Fetches records of `hashes` and hands each verified chunk to `body` in order.
    static func fetch(
        _ hashes: [SHA256.Value], repo: String, digest: Digest, connection: RegistryConnection,
        _ body: @escaping (SHA256.Value, UnsafeRawBufferPointer) throws -> Void
    ) async throws {
        let response = try await connection.fetchChunks(repo, digest, hashes)
        let codec = ChunkRecordCodec()
        var pending = ByteBuffer()
        var index = 0
        let maxChunk = ChunkerParameters.v1.maxSize
        for try await part in response.body {
            connection.counters.add(received: part.readableBytes)
            pending.writeImmutableBuffer(part)
            while pending.readableBytes >= ChunkRecords.headerSize {
                let consumed = try pending.withUnsafeReadableBytes { p -> Int? in
                    let header = try ChunkRecords.header(p, maxChunk: maxChunk)
                    let end = ChunkRecords.headerSize + header.storedLength
                    guard end <= p.count else { return nil }
                    guard index < hashes.count, header.hash == hashes[index] else {
                        throw ClientError("the registry sent chunk sha256:\(header.hash.hex) out of order")
                    }
                    do {
                        try codec.verify(header, payload: UnsafeRawBufferPointer(rebasing: p[ChunkRecords.headerSize..<end])) { raw in
                            try body(header.hash, raw)
                        }
                    } catch let e as DepotError {
                        throw ClientError("chunk from the registry failed verification: \(e)")
                    }
                    index += 1
                    return end
                }
                guard let consumed else { break }
                pending.moveReaderIndex(forwardBy: consumed)
            }
            pending.discardReadBytes()
        }
        guard index == hashes.count, pending.readableBytes == 0 else {
            throw ClientError("the registry's chunk stream ended early (\(index) of \(hashes.count) chunks)")
        }
    }

    /// Writes the file in recipe order from the cache (fetching any chunk the cache lost),
    /// hashing as it goes; the digest must match before the file is accepted.
    func assemble(_ layer: Layer, recipe: [ChunkRef], repo: String, partial: String) async throws {
        unlink(partial)
        let out: PosixFile
        do { out = try PosixFile(path: partial, mode: .createExclusive) } catch {
            throw ClientError("cannot write \(partial): \(error)")
        }
        var whole = SHA256()
        let blockSize = 8 << 20
        let block = UnsafeMutableRawBufferPointer.allocate(byteCount: blockSize, alignment: 64)
        defer { block.deallocate() }
        var filled = 0
        var written: Int64 = 0
        func flush() throws {
            guard filled > 0 else { return }
            let bytes = UnsafeRawBufferPointer(rebasing: block[0..<filled])
            whole.update(bytes)
            do {
                try out.write(bytes, at: written)
            } catch {
                unlink(partial)
                throw ClientError("cannot write \(layer.path): \(error)")
            }
            written += Int64(filled)
            progress.advance(Int64(filled))
            filled = 0
        }
        for c in recipe {
            if filled + c.length > blockSize { try flush() }
            let slot = UnsafeMutableRawBufferPointer(rebasing: block[filled..<(filled + c.length)])
            if !cache.read(c.hash, into: slot) {
                // Evicted or damaged since: fetch just this chunk.
                var got = false
                try await Self.fetch([c.hash], repo: repo, digest: layer.digest, connection: connection) { [cache] hash, raw in
                    guard raw.count == slot.count else { throw ClientError("chunk sha256:\(hash.hex) has the wrong length") }
                    slot.copyMemory(from: raw)
                    cache.write(hash, raw)
                    got = true
                }
                guard got else { throw ClientError("chunk sha256:\(c.hash.hex) could not be fetched") }
            }
            filled += c.length
        }
        try flush()
        let digest = Digest(bytes: whole.finalize())
        guard digest == layer.digest else {
            unlink(partial)
            throw ClientError("\(layer.path) assembled to \(digest), not \(layer.digest); nothing was written")
        }
        do { try out.sync() } catch { throw ClientError("cannot write \(layer.path): \(error)") }
    }

    // MARK: plain OCI

    func pullWhole(_ layer: Layer, _ request: PullRequest, partial: String) async throws -> FileResult {
        var hash = SHA256()
        var have: Int64 = 0
        // Resume: hash what an interrupted run left, then ask for the rest.
        if let stamp = try? FileStamp(partial), stamp.size <= layer.size, let file = try? PosixFile(path: partial, mode: .read) {
            let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 4 << 20, alignment: 64)
            defer { buffer.deallocate() }
            while have < stamp.size, let n = try? file.readSome(into: buffer), n > 0 {
                hash.update(UnsafeRawBufferPointer(rebasing: buffer[0..<n]))
                have += Int64(n)
            }
        } else {
            unlink(partial)
        }
        progress.advance(have, saved: have)
        let out: PosixFile
        do { out = try PosixFile(path: partial, mode: have > 0 ? .readWrite : .createReadWrite) } catch {
            throw ClientError("cannot write \(partial): \(error)")
        }
        if have < layer.size {
            let response = try await connection.blob(request.repository, layer.digest, from: have)
            for try await part in response.body {
                connection.counters.add(received: part.readableBytes)
                guard have + Int64(part.readableBytes) <= layer.size else {
                    unlink(partial)
                    throw ClientError("the registry sent more than \(layer.size) bytes for \(layer.path)")
                }
                do {
                    try part.withUnsafeReadableBytes { p in
                        hash.update(p)
                        try out.write(p, at: have)
                    }
                } catch {
                    unlink(partial)
                    throw ClientError("cannot write \(layer.path): \(error)")
                }
                have += Int64(part.readableBytes)
                progress.advance(Int64(part.readableBytes))
            }
        }
        let digest = Digest(bytes: hash.finalize())
        guard have == layer.size, digest == layer.digest else {
            unlink(partial)
            throw ClientError("\(layer.path) arrived with digest \(digest) (\(have) bytes), not \(layer.digest); nothing was written")
        }
        try out.sync()
        progress.advance(layer.size)
        progress.finish("\(layer.path): \(TransferProgress.bytes(layer.size)) (standard OCI API)")
        return FileResult(deduplicated: 0, chunks: 0, fetched: 0)
    }
}
