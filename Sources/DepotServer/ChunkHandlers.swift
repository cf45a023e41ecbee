import DepotAPI
import DepotCore
import DepotRegistry
import DepotStore
import HTTPTypes
import Hummingbird
import NIOCore
import Tracing

extension HTTPField.Name {
    static let depotChunker = Self("Depot-Chunker")!
    static let depotChunksStored = Self("Depot-Chunks-Stored")!
    static let depotHashStates = Self(BlobHashStates.header)!
}

/// Handlers of the chunk negotiation API (`/depot/v1`). Bodies are binary and streamed:
/// hash lists are concatenated 32-byte SHA-256 values; recipes are `[hash 32][length u32 LE]`
/// entries; chunks travel as pack records (`ChunkRecords`). See docs/EXTENSION-API.md.
struct ChunkHandlers: RouteHandlers {
    let registry: Registry
    let metrics: ServerMetrics
    /// Recipe commits in progress (each re-reads every chunk it names).
    let recipeCommits: ConcurrencyGate
    /// Set with authentication on: what a caller may know of stored chunks.
    var visibility: ChunkVisibility?
    static let maxHashesPerQuery = 65_536
    static let maxHashesPerFetch = 4096
    static let recipeEntrySize = 36

    func info(_ match: RouteMatch, _ request: Request) async throws -> Response {
        let p = registry.store.options.chunker
        return Reply.encoded(
            ExtensionInfo(
                chunker: .init(
                    version: p.version, minSize: p.minSize, averageSize: p.averageSize, maxSize: p.maxSize, boundaries: ["safetensors-v1"]),
                recordFormat: "dpkr-v1", maxHashesPerQuery: Self.maxHashesPerQuery, maxHashesPerFetch: Self.maxHashesPerFetch))
    }

    func missingChunks(_ match: RouteMatch, _ request: Request) async throws -> Response {
        _ = try Self.name(match)
        let hashes = try await readHashes(request, limit: Self.maxHashesPerQuery)
        let store = registry.store
        var missing = try await offload { try store.missingChunks(hashes) }
        if let visibility, let p = Caller.principal {
            // Stored chunks the caller may not know of are answered as missing, in request order.
            let absent = Set(missing)
            let hidden = Set(try await offload { try visibility.hidden(p, hashes.filter { !absent.contains($0) }) })
            if !hidden.isEmpty {
                var seen = Set<SHA256.Value>()
                missing = hashes.filter { (absent.contains($0) || hidden.contains($0)) && seen.insert($0).inserted }
            }
        }
        RequestTrace.annotate { a in
            a["depot.chunks.asked"] = hashes.count
            a["depot.chunks.missing"] = missing.count
        }
        var out = ByteBuffer()
        out.reserveCapacity(missing.count * 32)
        for h in missing { out.writeBytes(h.byteArray) }
        metrics.sent(out.readableBytes)
        return Response(
            status: .ok, headers: [.contentType: "application/octet-stream", .contentLength: String(out.readableBytes)],
            body: ResponseBody(byteBuffer: out))
    }

    func uploadChunks(_ match: RouteMatch, _ request: Request) async throws -> Response {
        _ = try Self.name(match)
        return try await receiveChunks(request)
    }

    func recipeGet(_ match: RouteMatch, _ request: Request, _ context: DepotRequestContext) async throws -> Response {
        let digest = match["digest"]
        return try await getRecipe(try Self.name(match), try RequestParsing.digest(digest), loop: context.channel.eventLoop)
    }

    func recipePut(_ match: RouteMatch, _ request: Request) async throws -> Response {
        let digest = match["digest"]
        return try await commitRecipe(try Self.name(match), try RequestParsing.digest(digest), request)
    }

    func fetchChunks(_ match: RouteMatch, _ request: Request, _ context: DepotRequestContext) async throws -> Response {
        let digest = match["digest"]
        return try await fetchChunks(
            try Self.name(match), try RequestParsing.digest(digest), request, loop: context.channel.eventLoop)
    }

    func metadata(_ match: RouteMatch, _ request: Request) async throws -> Response {
        let ref = match["reference"]
        return try await getMetadata(try Self.name(match), try RequestParsing.reference(ref))
    }

    /// Reads a body of concatenated 32-byte hashes (at most `limit`).
    func readHashes(_ request: Request, limit: Int) async throws -> [SHA256.Value] {
        let body = try await RequestParsing.collect(
            request, limit: limit * 32, what: "hash list (at most \(limit) hashes)",
            rate: RateFloor(limits: registry.uploads.limits, start: .now))
        metrics.received(body.readableBytes)
        guard body.readableBytes % 32 == 0 else {
            throw RegistryError(.sizeInvalid, "body is not a list of 32-byte SHA-256 hashes (\(body.readableBytes) bytes)")
        }
        return body.withUnsafeReadableBytes { p in
            stride(from: 0, to: p.count, by: 32).map { SHA256.Value(bytes: UnsafeRawBufferPointer(rebasing: p[$0..<($0 + 32)])) }
        }
    }

    /// Streams a body and hands `consume` about 1 MiB at a time (off the event loop); `consume`
    /// returns how many bytes it used, the rest waits for more. Leftover bytes at the end are an error.
    func streamBody(_ request: Request, what: String, _ consume: @escaping @Sendable (ByteBuffer, _ last: Bool) throws -> Int) async throws
    {
        var pending = ByteBuffer()
        var iterator = request.body.makeAsyncIterator()
        let rate = RateFloor(limits: registry.uploads.limits, start: .now)
        var received: Int64 = 0
        while true {
            let next: ByteBuffer?
            do { next = try await iterator.next() } catch {
                // The client went away mid-body: its error, not the server's.
                throw RegistryError(.blobUploadInvalid, "\(what) body ended early: \(error)")
            }
            guard let part = next else { break }
            metrics.received(part.readableBytes)
            received += Int64(part.readableBytes)
            if !rate.isMet(received: received, now: .now) { throw rate.error(received: received) }
            pending.writeImmutableBuffer(part)
            if pending.readableBytes >= 1 << 20 {
                let view = pending
                let used = try await offload { try consume(view, false) }
                pending.moveReaderIndex(forwardBy: used)
                pending.discardReadBytes()
            }
        }
        let view = pending
        let used = try await offload { try consume(view, true) }
        guard used == pending.readableBytes else {
            throw RegistryError(.sizeInvalid, "\(what) ends with \(pending.readableBytes - used) bytes of an incomplete entry")
        }
    }

    func receiveChunks(_ request: Request) async throws -> Response {
        let store = registry.store
        let receiver = try await offload { try store.makeChunkReceiver() }
        let maxChunk = receiver.maxChunk
        // Hashes whose bytes this request sent (verified by the receiver): proof of possession.
        let proofs = Locked<[SHA256.Value]>([])
        try await streamBody(request, what: "chunk upload") { buffer, _ in
            try buffer.withUnsafeReadableBytes { p in
                // The complete records of this part of the body, verified and stored together
                // (their hashes two at a time); an incomplete last one waits for more bytes.
                var at = 0
                var records: [ChunkRecordCodec.Record] = []
                while p.count - at >= ChunkRecords.headerSize {
                    let header: ChunkRecords.Header
                    do {
                        header = try ChunkRecords.header(UnsafeRawBufferPointer(rebasing: p[at...]), maxChunk: maxChunk)
                    } catch {
                        throw RegistryError(.blobUploadInvalid, "record at body offset \(at): \(error)")
                    }
                    let end = at + ChunkRecords.headerSize + header.storedLength
                    guard end <= p.count else { break }
                    records.append((header, UnsafeRawBufferPointer(rebasing: p[(at + ChunkRecords.headerSize)..<end])))
                    at = end
                }
                do {
                    try receiver.add(records)
                } catch let e as DepotError {
                    if case .integrity(let m) = e { throw RegistryError(.digestInvalid, m) }
                    throw e
                }
                proofs.withLock { $0.append(contentsOf: records.map(\.header.hash)) }
                return at
            }
        }
        try await offload { try receiver.finish() }
        if let visibility, let p = Caller.principal {
            let hashes = proofs.withLock { $0 }
            try await offload { try visibility.recordProof(p, hashes) }
        }
        let stored = receiver.stored
        RequestTrace.annotate { a in
            a["depot.chunks.received"] = receiver.received
            a["depot.chunks.stored"] = stored
        }
        return Reply.encoded(ChunkUploadAnswer(received: receiver.received, stored: stored), status: 201)
    }

    func commitRecipe(_ name: RepositoryName, _ digest: Digest, _ request: Request) async throws -> Response {
        let store = registry.store
        let registry = self.registry
        let chunker = request.headers[.depotChunker] ?? store.options.chunker.version
        guard chunker.count <= 200, chunker.allSatisfy({ $0.isASCII && !$0.isWhitespace }) else {
            throw RegistryError(.blobUploadInvalid, "Depot-Chunker must be a short printable token")
        }
        if try await offload({ try registry.blob(name, digest) }) != nil {
            return Reply.empty(201, [.location: "/v2/\(name)/blobs/\(digest)", .dockerContentDigest: digest.description])
        }
        let maxBytes = registry.uploads.limits.maxBlobBytes
        let committer = try await offload { try store.makeRecipeCommitter(chunker: chunker, maxBytes: maxBytes) }
        let named = Locked<[SHA256.Value]>([])
        let checking = visibility != nil && Caller.principal != nil
        try await streamBody(request, what: "recipe") { buffer, _ in
            try buffer.withUnsafeReadableBytes { p in
                try RecipeBody.decode(p) { hash, length in
                    if checking { named.withLock { $0.append(hash) } }
                    do { try committer.append(hash, length: length) } catch DepotError.sizeInvalid(let m) {
                        throw RegistryError(.sizeInvalid, m, kind: .tooLarge)
                    }
                }
            }
        }
        // Verifying re-reads and hashes every byte the recipe names: bound how many verifications
        // run at once (the rest are told to retry; the slot is taken only once the whole body is
        // in, so slow senders cannot hold one) and how many bytes one may name (the maximum blob size).
        guard recipeCommits.tryEnter() else {
            throw RegistryError(.tooManyRequests, "\(recipeCommits.limit) recipe commits are being verified; retry shortly")
        }
        defer { recipeCommits.leave() }
        if let visibility, let p = Caller.principal {
            let hashes = named.withLock { $0 }
            let hidden = try await offload { try visibility.hidden(p, hashes) }
            if let first = hidden.first {
                // Word for word the answer for chunks the store does not have (ChunkTransfer): no oracle.
                throw RegistryError(
                    .chunkUnknown, "\(hidden.count) chunk(s) of the recipe are not stored, e.g. sha256:\(first.hex)", kind: .invalid)
            }
        }
        // The client's SHA-256 states at every stride, if it sent them: the check then runs in
        // segments, in parallel (BlobHashStates). Checked against the recipe's size here.
        let states: BlobHashStates?
        do {
            states = try request.headers[.depotHashStates].map { try BlobHashStates(headerValue: $0, size: committer.size) }
        } catch DepotError.invalidArgument(let m) {
            throw RegistryError(.blobUploadInvalid, m)
        }
        // Re-reading and hashing every byte the recipe names, then the commit.
        try await RequestTrace.child("depot.recipe.verify") { span in
            span.attributes["depot.blob.digest"] = digest.description
            span.attributes["depot.recipe.segments"] = (states?.states.count ?? 0) + 1
            _ = try await offload { try registry.finishRecipeCommit(name, committer, expecting: digest, states: states) }
        }
        return Reply.empty(201, [.location: "/v2/\(name)/blobs/\(digest)", .dockerContentDigest: digest.description])
    }

    func getRecipe(_ name: RepositoryName, _ digest: Digest, loop: (any EventLoop)?) async throws -> Response {
        let registry = self.registry
        let blob = try await offload { try registry.visibleBlob(name, digest) }
        let metrics = self.metrics
        let headers: HTTPFields = [
            .contentType: "application/octet-stream", .depotChunker: blob.chunker,
            .dockerContentDigest: digest.description,
        ]
        let body = ResponseBody { writer in
            var offset: Int64 = 0
            while true {
                let from = offset
                let page = try await offload { try registry.store.recipe(of: blob, from: from, limit: 8192) }
                guard let last = page.last else { break }
                var out = ByteBufferAllocator().buffer(capacity: page.count * Self.recipeEntrySize)
                for e in page {
                    out.writeBytes(e.hash.byteArray)
                    out.writeInteger(UInt32(e.length), endianness: .little)
                }
                metrics.sent(out.readableBytes)
                try await writer.write(out, pacedBy: loop)
                offset = last.offset + 1
            }
            try await writer.finish(nil)
        }
        return Response(status: .ok, headers: headers, body: body)
    }

    func fetchChunks(_ name: RepositoryName, _ digest: Digest, _ request: Request, loop: (any EventLoop)?) async throws -> Response {
        let registry = self.registry
        let blob = try await offload { try registry.visibleBlob(name, digest) }
        let hashes = try await readHashes(request, limit: Self.maxHashesPerFetch)
        // The first group is read before answering, so an unknown chunk is a clean 404.
        let groupSize = 16
        let first = try await offload { try registry.store.records(hashes.prefix(groupSize), of: blob, as: ByteBuffer.self) }
        let metrics = self.metrics
        let body = ResponseBody { writer in
            metrics.sent(first.readableBytes)
            try await writer.write(first, pacedBy: loop)
            var index = min(groupSize, hashes.count)
            while index < hashes.count {
                let group = hashes[index..<min(index + groupSize, hashes.count)]
                let batch = try await offload { try registry.store.records(group, of: blob, as: ByteBuffer.self) }
                metrics.sent(batch.readableBytes)
                try await writer.write(batch, pacedBy: loop)
                index += group.count
            }
            try await writer.finish(nil)
        }
        return Response(status: .ok, headers: [.contentType: "application/octet-stream"], body: body)
    }

    func getMetadata(_ name: RepositoryName, _ reference: Reference) async throws -> Response {
        let registry = self.registry
        let json = try await offload { try registry.metadata(name, reference) }
        return Reply.bytes(json, contentType: "application/json")
    }
}
