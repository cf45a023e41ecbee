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
/// recipe and only the chunks the local chunk cache lacks; from any other registry it streams
/// whole blobs (resuming a partial download with a Range request). Files are written under
/// `<dir>/.depot-partial/` (this user's, mode 0700), checked against their digest and size,
/// then renamed into place.
public final class Puller: Sendable {
    let connection: RegistryConnection
    let progress: TransferProgress
    let cache: ChunkCache
    private let index = Locked<ChunkCache.Index?>(nil)

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
        index.withLock { $0 = nil } // entries added since the last pull
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
            try FileManager.default.createDirectory(atPath: request.outputDirectory, withIntermediateDirectories: true)
        } catch {
            throw ClientError("cannot create \(request.outputDirectory): \(error.localizedDescription)")
        }
        let lock = try await lockPartialDirectory(partialDir)
        defer { withExtendedLifetime(lock) {} }
        var total: Int64 = 0
        for l in wanted {
            let (sum, overflow) = total.addingReportingOverflow(l.size)
            guard !overflow, sum <= Int64.max / 2 else { throw ClientError("the manifest's layer sizes do not add up") }
            total = sum
        }
        progress.begin(files: wanted.count, work: 2 * total)
        let results = try await forEachConcurrently(wanted, limit: request.fileJobs) { layer -> FileResult in
            let target = request.outputDirectory + "/" + layer.path
            if Self.alreadyThere(target, layer) {
                self.progress.advance(2 * layer.size, saved: layer.size)
                self.progress.finish("\(layer.path): \(TransferProgress.bytes(layer.size)) already there")
                return FileResult(deduplicated: layer.size, chunks: 0, fetched: 0)
            }
            self.progress.working(on: layer.path)
            // Named by content and path (not by position), so a rerun with other --file or
            // --include options still finds what a killed pull left.
            let partial = partialDir + "/" + layer.digest.hex + "-" + Digest.of(Array(layer.path.utf8)).hex.prefix(16)
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
        rmdir(partialDir) // when empty: what a killed pull of other files left stays, to resume
        cache.trim()
        return TransferSummary(
            reference: "\(request.repository):\(request.reference)", digest: manifest.digest.description,
            files: wanted.count, logicalBytes: logical, bytesSent: connection.counters.sent,
            bytesReceived: connection.counters.received, deduplicatedBytes: deduplicated, chunksTotal: chunks,
            chunksTransferred: fetched, mode: info != nil ? "chunked" : "oci", seconds: Date().timeIntervalSince(started))
    }

    /// Opens `<dir>/.depot-partial` (created 0700; it must be this user's directory, not a
    /// link, and is made 0700) and locks it (`flock`) for the whole pull: partial files are
    /// created, resumed, unlinked and renamed into place by path, so a second pull into the
    /// same directory waits until the first is done (and then finds its files there).
    func lockPartialDirectory(_ partialDir: String) async throws -> PosixFile {
        if mkdir(partialDir, 0o700) != 0, errno != EEXIST {
            throw ClientError("cannot create \(partialDir): \(String(cString: strerror(errno)))")
        }
        let fd = open(partialDir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
        guard fd >= 0 else {
            throw ClientError("\(partialDir) is not a directory (\(String(cString: strerror(errno)))); remove it and pull again")
        }
        let directory = PosixFile(adopting: fd, path: partialDir)
        var st = stat()
        guard fstat(fd, &st) == 0, st.st_uid == geteuid(), fchmod(fd, 0o700) == 0 else {
            throw ClientError("\(partialDir) is not a directory of this user; remove it and pull again")
        }
        while flock(fd, LOCK_EX | LOCK_NB) != 0 {
            guard errno == EWOULDBLOCK || errno == EINTR else {
                throw ClientError("cannot lock \(partialDir): \(String(cString: strerror(errno)))")
            }
            try await Task.sleep(nanoseconds: 100_000_000) // another pull into this directory
        }
        return directory
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

    /// Writes each byte once: chunks the cache has are copied from its files (in the kernel, in
    /// runs), the others fetched and written where they go, each checked against its length
    /// in the recipe. Chunks are not hashed one by one: the file's digest is checked over the
    /// whole (one SHA-256 pass), and only when it fails are chunks hashed to find the bad ones
    /// (a cache entry edited since, a registry sending wrong bytes), which are fetched again
    /// before a second check.
    func pullChunked(_ layer: Layer, _ request: PullRequest, partial: String) async throws -> FileResult {
        let repo = request.repository
        let recipe = try await connection.recipe(repo, layer.digest)
        guard recipe.reduce(Int64(0), { $0 + Int64($1.length) }) == layer.size else {
            throw ClientError("the registry's recipe for \(layer.path) does not add up to \(layer.size) bytes")
        }
        // Where each distinct chunk goes in the file: its first place, and any repeats.
        var first: [SHA256.Value: (length: Int, offset: Int64)] = [:]
        var repeats: [SHA256.Value: [Int64]] = [:]
        var distinct: [ChunkRef] = []
        var offset: Int64 = 0
        for c in recipe {
            if let f = first[c.hash] {
                guard f.length == c.length else {
                    throw ClientError("the registry's recipe for \(layer.path) gives chunk sha256:\(c.hash.hex) two lengths")
                }
                repeats[c.hash, default: []].append(offset)
            } else {
                first[c.hash] = (c.length, offset)
                distinct.append(c)
            }
            offset += Int64(c.length)
        }
        let (out, inPlace) = try openPartial(partial, layer, recipe)
        // An interrupted pull (killed, the registry unreachable) keeps the partial file: a rerun
        // keeps what is in place. One that cannot write (a full disk) removes it.
        // Writes into the file one at a time: concurrent writes to one file serialize on its
        // inode lock in the kernel anyway, where a waiting writer spins on a core (a profile of
        // a 4 GiB pull had a quarter of its samples in rwsem_spin_on_owner); here it sleeps.
        let writing = Locked(())
        let write: @Sendable (SHA256.Value, UnsafeRawBufferPointer) throws -> Void = { [first, repeats] hash, raw in
            guard let f = first[hash], raw.count == f.length else {
                throw ClientError(
                    "the registry sent chunk sha256:\(hash.hex) with \(raw.count) bytes; the recipe says \(first[hash]?.length ?? 0)")
            }
            func put(_ at: Int64) throws {
                do { try writing.withLock { _ in try out.write(raw, at: at) } } catch {
                    unlink(partial)
                    throw ClientError("cannot write \(layer.path): \(error)")
                }
            }
            try put(f.offset)
            for at in repeats[hash] ?? [] { try put(at) }
        }
        let needed = distinct.filter { !inPlace.contains($0.hash) }
        let located = needed.isEmpty ? [:] : cacheIndex().locate(needed.map(\.hash))
        let (failed, used) = copyFromCache(recipe, skipping: inPlace, located, into: out)
        var toFetch = needed.filter { located[$0.hash]?.length != $0.length || failed.contains($0.hash) }
        let firstFetch = toFetch.reduce(Int64(0)) { $0 + Int64($1.length) }
        progress.advance(layer.size - firstFetch, saved: layer.size - firstFetch)
        try await fetch(toFetch, repo: repo, digest: layer.digest, request, progressing: true, write)
        if try digest(of: out, layer, progressing: true) != layer.digest {
            let bad = try badChunks(recipe, out, layer)
            for entry in Set(bad.compactMap { located[$0]?.entry }) { cache.drop(entry) }
            let again = distinct.filter { bad.contains($0.hash) }
            try await fetch(again, repo: repo, digest: layer.digest, request, progressing: false, write)
            let fetchedFirst = Set(toFetch.map(\.hash))
            toFetch += again.filter { !fetchedFirst.contains($0.hash) }
            let second = try digest(of: out, layer, progressing: false)
            guard second == layer.digest else {
                unlink(partial)
                throw ClientError("\(layer.path) assembled to \(second), not \(layer.digest); nothing was written")
            }
        }
        do {
            try out.sync()
            guard try out.size() == layer.size else { throw ClientError("it is not \(layer.size) bytes") }
        } catch {
            unlink(partial)
            throw ClientError("cannot write \(layer.path): \(error)")
        }
        cache.touch(used)
        if cache.add(file: out, digest: layer.digest, recipe: recipe) {
            cacheIndex().add(entry: layer.digest.hex, recipe: recipe) // later files of this pull may share chunks
        }
        let fetchedBytes = toFetch.reduce(Int64(0)) { $0 + Int64($1.length) }
        progress.finish(
            "\(layer.path): \(TransferProgress.bytes(layer.size)), fetched \(toFetch.count) of \(recipe.count) chunks (\(TransferProgress.bytes(fetchedBytes))), \(TransferProgress.bytes(layer.size - fetchedBytes)) from cache, repeats or a pull resumed"
        )
        return FileResult(deduplicated: layer.size - fetchedBytes, chunks: recipe.count, fetched: toFetch.count)
    }

    /// The cache's index, read once per pull (on the first chunked file).
    func cacheIndex() -> ChunkCache.Index {
        index.withLock { i in
            if let i { return i }
            let built = cache.index()
            i = built
            return built
        }
    }

    /// The partial file, at the layer's size, locked (`flock`; under the directory's lock this
    /// only guards against a writer that does not take that lock). One that a killed pull left (a regular
    /// file of this user, not a link, not linked elsewhere) is kept, and the distinct chunks
    /// already in place at every one of their places (hashed where they lie: one pass) are not
    /// fetched again; anything else at its path is replaced.
    func openPartial(_ partial: String, _ layer: Layer, _ recipe: [ChunkRef]) throws -> (PosixFile, Set<SHA256.Value>) {
        func lock(_ file: PosixFile) throws {
            guard flock(file.fd, LOCK_EX | LOCK_NB) == 0 else {
                throw ClientError("another pull is writing \(partial); wait for it, or stop it")
            }
        }
        if let (out, id) = try? PosixFile.openRegular(path: partial, writable: true), id.size == layer.size, id.links == 1,
            id.owner == geteuid()
        {
            try lock(out)
            let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: ChunkerParameters.v1.maxSize, alignment: 64)
            defer { buffer.deallocate() }
            var good = Set<SHA256.Value>()
            var bad = Set<SHA256.Value>()
            var offset: Int64 = 0
            for c in recipe {
                let slot = UnsafeMutableRawBufferPointer(rebasing: buffer[0..<c.length])
                if (try? out.read(into: slot, at: offset)) != nil, SHA256.hash(UnsafeRawBufferPointer(slot)) == c.hash {
                    good.insert(c.hash)
                } else {
                    bad.insert(c.hash)
                }
                offset += Int64(c.length)
            }
            return (out, good.subtracting(bad))
        }
        unlink(partial)
        do {
            let out = try PosixFile(path: partial, mode: .createExclusive)
            try lock(out)
            try out.truncate(to: layer.size)
            return (out, [])
        } catch {
            unlink(partial)
            throw error as? ClientError ?? ClientError("cannot write \(partial): \(error)")
        }
    }

    /// Copies every chunk of the recipe the cache holds into place, joining neighbours into
    /// runs. Returns the chunks that could not be copied (an entry gone or short since: a short
    /// one is dropped) and the entries copied from.
    func copyFromCache(
        _ recipe: [ChunkRef], skipping inPlace: Set<SHA256.Value>, _ located: [SHA256.Value: ChunkCache.Location], into out: PosixFile
    ) -> (failed: Set<SHA256.Value>, used: Set<String>) {
        guard !located.isEmpty else { return ([], []) }
        var files: [String: PosixFile?] = [:]
        var failed = Set<SHA256.Value>()
        var used = Set<String>()
        var run: (entry: String, from: Int64, to: Int64, length: Int64, hashes: [SHA256.Value])?
        func flush() {
            guard let r = run else { return }
            run = nil
            if files[r.entry] == nil { files[r.entry] = .some(cache.open(r.entry)) }
            guard let file = files[r.entry] ?? nil, PosixFile.copyRange(from: file, offset: r.from, to: out, at: r.to, length: r.length)
            else {
                failed.formUnion(r.hashes)
                // Truncated since (not a failed write here): it would fail every later pull too.
                if let file = files[r.entry] ?? nil, let size = try? file.size(), size < r.from + r.length {
                    cache.drop(r.entry)
                    files[r.entry] = .some(nil)
                }
                return
            }
            used.insert(r.entry)
        }
        var offset: Int64 = 0
        for c in recipe {
            defer { offset += Int64(c.length) }
            guard !inPlace.contains(c.hash), let at = located[c.hash], at.length == c.length else { continue }
            if let r = run, r.entry == at.entry, r.from + r.length == at.offset, r.to + r.length == offset, r.length < 64 << 20 {
                run!.length += Int64(c.length)
                run!.hashes.append(c.hash)
            } else {
                flush()
                run = (at.entry, at.offset, offset, Int64(c.length), [c.hash])
            }
        }
        flush()
        return (failed, used)
    }

    /// The SHA-256 of the written file, read front to back.
    func digest(of out: PosixFile, _ layer: Layer, progressing: Bool) throws -> Digest {
        var whole = SHA256()
        let blockSize = 8 << 20
        let block = UnsafeMutableRawBufferPointer.allocate(byteCount: blockSize, alignment: 64)
        defer { block.deallocate() }
        var done: Int64 = 0
        while done < layer.size {
            let slot = UnsafeMutableRawBufferPointer(rebasing: block[0..<Int(min(Int64(blockSize), layer.size - done))])
            do { try out.read(into: slot, at: done) } catch { throw ClientError("cannot read back \(layer.path): \(error)") }
            whole.update(UnsafeRawBufferPointer(slot))
            done += Int64(slot.count)
            if progressing { progress.advance(Int64(slot.count)) }
        }
        return Digest(bytes: whole.finalize())
    }

    /// The chunks that are not what the recipe says at one of their places.
    func badChunks(_ recipe: [ChunkRef], _ out: PosixFile, _ layer: Layer) throws -> Set<SHA256.Value> {
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: ChunkerParameters.v1.maxSize, alignment: 64)
        defer { buffer.deallocate() }
        var bad = Set<SHA256.Value>()
        var offset: Int64 = 0
        for c in recipe {
            let slot = UnsafeMutableRawBufferPointer(rebasing: buffer[0..<c.length])
            do { try out.read(into: slot, at: offset) } catch { throw ClientError("cannot read back \(layer.path): \(error)") }
            if SHA256.hash(UnsafeRawBufferPointer(slot)) != c.hash { bad.insert(c.hash) }
            offset += Int64(c.length)
        }
        return bad
    }

    /// Fetches chunks in batches, `jobs` at a time, and writes each where it goes.
    func fetch(
        _ chunks: [ChunkRef], repo: String, digest: Digest, _ request: PullRequest, progressing: Bool,
        _ write: @escaping @Sendable (SHA256.Value, UnsafeRawBufferPointer) throws -> Void
    ) async throws {
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
        let progress = self.progress
        _ = try await forEachConcurrently(batches.filter { !$0.isEmpty }, limit: request.jobs) { batch in
            try await Self.fetch(batch, repo: repo, digest: digest, connection: connection) { hash, raw in
                try write(hash, raw)
                if progressing { progress.advance(Int64(raw.count)) }
            }
        }
    }

    /// Fetches records of `hashes` and hands each chunk to `body` in order, its CRC-32C checked
    /// but not its hash: the caller checks a digest over what it assembles.
    static func fetch(
        _ chunks: [ChunkRef], repo: String, digest: Digest, connection: RegistryConnection,
        _ body: @escaping (SHA256.Value, UnsafeRawBufferPointer) throws -> Void
    ) async throws {
        let hashes = chunks.map(\.hash)
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
                    guard header.rawLength == chunks[index].length else {
                        throw ClientError(
                            "the registry sent chunk sha256:\(header.hash.hex) with \(header.rawLength) bytes; its recipe says \(chunks[index].length)"
                        )
                    }
                    do {
                        try codec.unhashed(header, payload: UnsafeRawBufferPointer(rebasing: p[ChunkRecords.headerSize..<end])) { raw in
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

    // MARK: plain OCI

    func pullWhole(_ layer: Layer, _ request: PullRequest, partial: String) async throws -> FileResult {
        var hash = SHA256()
        var have: Int64 = 0
        let out: PosixFile
        // Resume: hash what an interrupted run left (a regular file of this user, not a link),
        // then ask for the rest.
        if let (file, id) = try? PosixFile.openRegular(path: partial, writable: true), id.size <= layer.size, id.links == 1,
            id.owner == geteuid()
        {
            out = file
            guard flock(out.fd, LOCK_EX | LOCK_NB) == 0 else {
                throw ClientError("another pull is writing \(partial); wait for it, or stop it")
            }
            let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 4 << 20, alignment: 64)
            defer { buffer.deallocate() }
            while have < id.size {
                let n = try out.read(into: buffer, at: have, upTo: Int(min(Int64(buffer.count), id.size - have)))
                guard n > 0 else { break }
                hash.update(UnsafeRawBufferPointer(rebasing: buffer[0..<n]))
                have += Int64(n)
            }
        } else {
            unlink(partial)
            do { out = try PosixFile(path: partial, mode: .createExclusive) } catch {
                throw ClientError("cannot write \(partial): \(error)")
            }
            guard flock(out.fd, LOCK_EX | LOCK_NB) == 0 else {
                throw ClientError("another pull is writing \(partial); wait for it, or stop it")
            }
        }
        progress.advance(have, saved: have)
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
