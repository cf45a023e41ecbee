import DepotCatalog
import DepotCore
import Dispatch

/// The store's side of chunk negotiation (`/depot/v1`): which chunks are missing, receiving
/// verified chunk records, committing a blob from a recipe, and serving recipes and records.
extension ChunkStore {
    /// The hashes among `hashes` the store does not have, in their order (duplicates once).
    public func missingChunks(_ hashes: [SHA256.Value]) throws -> [SHA256.Value] {
        try catalog.read { conn in
            var seen = Set<SHA256.Value>()
            var missing: [SHA256.Value] = []
            for h in hashes where seen.insert(h).inserted {
                if try conn.chunkLength(h) == nil { missing.append(h) }
            }
            return missing
        }
    }

    /// Starts receiving chunk records ahead of a recipe commit.
    public func makeChunkReceiver() throws -> ChunkReceiver {
        guard !readOnly else { throw DepotError.storage("store \(root) is open read-only") }
        return try ChunkReceiver(store: self)
    }

    /// Starts committing a blob by recipe; `chunker` names the chunker that cut it.
    public func makeRecipeCommitter(chunker: String, maxBytes: Int64 = Int64.max) throws -> RecipeCommitter {
        guard !readOnly else { throw DepotError.storage("store \(root) is open read-only") }
        return try RecipeCommitter(store: self, chunker: chunker, maxBytes: maxBytes)
    }

    /// Recipe entries of a stored blob, `limit` at a time from `offset`.
    public func recipe(of blob: BlobRecord, from offset: Int64, limit: Int) throws -> [RecipeEntry] {
        try catalog.read { try $0.recipe(blob: blob.id, from: offset, limit: limit) }
    }

    /// The stored record (header and payload, as in the pack) of each hash, concatenated into
    /// one batch. Every hash must belong to `blob`'s recipe (`chunkUnknown` otherwise). Throws
    /// `integrity` for a record whose header does not match the index (it is never sent).
    public func records<Batch: ReadBatch>(_ hashes: some Collection<SHA256.Value>, of blob: BlobRecord, as: Batch.Type) throws -> Batch {
        let found = try catalog.read { conn in
            try hashes.map { h -> (SHA256.Value, ChunkLocation?, CastRecord?) in
                guard try conn.recipeContains(blob: blob.id, h) else {
                    throw DepotError.chunkUnknown("chunk sha256:\(h.hex) is not part of blob \(blob.digest)")
                }
                if let loc = try conn.chunkLocation(h) { return (h, loc, nil) }
                guard let cast = try conn.chunkCast(h) else {
                    throw DepotError.chunkUnknown("chunk sha256:\(h.hex) is not part of blob \(blob.digest)")
                }
                return (h, nil, cast)
            }
        }
        var decoded: [SHA256.Value: [UInt8]] = [:] // a hash asked for twice is decoded once
        let locations = try found.map { (h, loc, cast) -> (SHA256.Value, TransferSource) in
            if let loc { return (h, .pack(loc)) }
            if let bytes = decoded[h] { return (h, .cast(bytes)) }
            do {
                let bytes = try decodeCast(h, cast!)
                decoded[h] = bytes
                return (h, .cast(bytes))
            } catch DepotError.integrity(let why) {
                // GC may have made it a plain chunk again and swept its sources meanwhile.
                guard let plain = try catalog.read({ try $0.chunkLocation(h) }) else { throw DepotError.integrity(why) }
                return (h, .pack(plain))
            }
        }
        let total = locations.reduce(0) { sum, item in
            switch item.1 {
            case .pack(let loc): return sum + PackFormat.recordHeaderSize + loc.storedLength
            case .cast(let bytes): return sum + PackFormat.recordHeaderSize + bytes.count
            }
        }
        var failure: (any Error)?
        let batch = Batch(count: total) { out in
            var at = 0
            for (hash, source) in locations where failure == nil {
                guard case .pack(let loc) = source else {
                    guard case .cast(let bytes) = source else { continue }
                    let n = PackFormat.recordHeaderSize + bytes.count
                    bytes.withUnsafeBytes { payload in
                        let header = PackFormat.RecordHeader(
                            codec: .raw, rawLength: bytes.count, storedLength: bytes.count, hash: hash,
                            checksum: PackFormat.checksum(payload))
                        PackFormat.encode(
                            header, into: UnsafeMutableRawBufferPointer(rebasing: out[at..<(at + PackFormat.recordHeaderSize)]))
                        UnsafeMutableRawBufferPointer(rebasing: out[(at + PackFormat.recordHeaderSize)..<(at + n)]).copyMemory(
                            from: payload)
                    }
                    at += n
                    continue
                }
                let n = PackFormat.recordHeaderSize + loc.storedLength
                let record = UnsafeMutableRawBufferPointer(rebasing: out[at..<(at + n)])
                func readAt(_ loc: ChunkLocation) -> Bool {
                    guard (try? files.readRecord(pack: loc.pack, at: loc.offset, into: record)) != nil,
                        let h = PackFormat.decode(UnsafeRawBufferPointer(record))
                    else { return false }
                    return h.hash == hash && h.storedLength == loc.storedLength && h.rawLength == loc.rawLength
                }
                if !readAt(loc) {
                    // Compaction may have moved the record since the lookup (same bytes, new place).
                    let moved = try? catalog.read { try $0.chunkLocation(hash) }
                    if let moved, moved != loc, moved.storedLength == loc.storedLength, readAt(moved) {
                        // Found it where compaction put it.
                    } else if moved == nil, (try? catalog.read { try $0.chunkCast(hash) }) != nil {
                        // GC made it a cast and compacted its record away meanwhile: not damage.
                        failure = DepotError.storage("chunk sha256:\(hash.hex) was reorganized by GC while it was read; retry")
                    } else {
                        failure = DepotError.integrity(
                            "chunk sha256:\(hash.hex) in pack \(loc.pack): record header does not match the index; run `depot fsck`")
                    }
                }
                at += n
            }
        }
        if let failure { throw failure }
        readCounter.withLock { $0 += Int64(total) }
        return batch
    }
}

/// A chunk `records` sends: a record in a pack, or a cast chunk's bytes (decoded, sent as a raw record).
private enum TransferSource {
    case pack(ChunkLocation)
    case cast([UInt8])
}

/// Receives chunk records from a client. Each record is checked (header, CRC-32C, decoding,
/// SHA-256) before it is stored; its payload is stored as the client encoded it. Received
/// chunks belong to an unfinished "staging" blob, so garbage collection keeps them for the
/// grace period (`write_grace_hours`) while the client goes on to commit its recipe.
public final class ChunkReceiver: @unchecked Sendable {
    private let store: ChunkStore
    private let blobID: Int64
    private let codec: ChunkRecordCodec
    private var offset: Int64 = 0
    private var done = false
    public private(set) var received = 0
    public private(set) var stored = 0

    init(store: ChunkStore) throws {
        self.store = store
        codec = ChunkRecordCodec(maxChunk: store.options.chunker.maxSize)
        blobID = try store.appender.beginBlob(chunker: "staged-chunks")
    }

    deinit { if !done { store.appender.abortBlob(blobID) } }

    public var maxChunk: Int { store.options.chunker.maxSize }

    /// Verifies and stores records, in order (their SHA-256s two at a time: `ChunkRecordCodec.verifyEach`).
    /// At the first bad record it throws; the records before it may have been stored.
    public func add(_ records: [ChunkRecordCodec.Record]) throws {
        precondition(!done)
        try codec.verifyEach(records) { i in
            let (header, payload) = records[i]
            let entry = RecipeEntry(offset: offset, length: header.rawLength, hash: header.hash)
            if case .stored = try store.appender.storeEncoded(entry, of: blobID, codec: header.codec, payload: payload) { stored += 1 }
            offset += Int64(header.rawLength)
            received += 1
        }
    }

    /// Makes every received chunk durable. Nothing is acknowledged before this returns.
    public func finish() throws {
        precondition(!done)
        done = true
        if received == 0 {
            store.appender.abortBlob(blobID)
        } else {
            try store.appender.park(blobID)
        }
    }
}

/// Builds a blob from a recipe of chunks the store already has, then re-reads every chunk
/// and checks the whole blob's SHA-256 before the blob exists.
public final class RecipeCommitter: @unchecked Sendable {
    private let store: ChunkStore
    private let blobID: Int64
    private let chunker: String
    private var done = false
    public private(set) var size: Int64 = 0
    /// Chunks of the recipe the store does not have (the commit then fails), first few kept.
    public private(set) var missing: [SHA256.Value] = []
    public private(set) var missingCount = 0
    private var entries = 0
    /// The largest blob a recipe may describe (the registry's maximum blob size): the commit
    /// re-reads and hashes every byte, so this bounds its cost, not only the entry count.
    private let maxBytes: Int64

    init(store: ChunkStore, chunker: String, maxBytes: Int64) throws {
        self.store = store
        self.chunker = chunker
        self.maxBytes = maxBytes
        blobID = try store.appender.beginBlob(chunker: chunker)
    }

    deinit { abort() }

    /// The most entries one recipe may have (with 64 KiB chunks, 64 GiB; at most 256 GiB). It
    /// bounds the read-back a commit costs the server.
    public static let maxEntries = 1 << 20

    /// Adds the next chunk of the recipe.
    public func append(_ hash: SHA256.Value, length: Int) throws {
        precondition(!done)
        guard entries < Self.maxEntries else {
            throw DepotError.invalidArgument("a recipe has at most \(Self.maxEntries) chunks")
        }
        entries += 1
        guard length > 0, length <= store.options.chunker.maxSize else {
            throw DepotError.invalidArgument(
                "recipe entry \(hash.hex) has length \(length); chunks are 1...\(store.options.chunker.maxSize) bytes")
        }
        guard size <= maxBytes - Int64(length) else {
            throw DepotError.sizeInvalid("the recipe describes more than the maximum blob size of \(maxBytes) bytes")
        }
        if try !store.appender.reference(RecipeEntry(offset: size, length: length, hash: hash), of: blobID) {
            if missing.count < 16 { missing.append(hash) }
            missingCount += 1
        }
        size += Int64(length)
    }

    /// Verifies the blob's digest against `expected` and completes it (declared live with
    /// `retain`, as `BlobWriter.finish` does). With `states` (the client's SHA-256 states at
    /// every stride, `BlobHashStates`), the digest is checked in segments: two threads, each
    /// hashing two segments at a time (`SHA256Lanes`), every segment required to end exactly in
    /// the state claimed there; without, in one pass front to back.
    public func finish(expecting expected: Digest, states: BlobHashStates? = nil, retain: String? = nil) throws -> BlobRecord {
        precondition(!done)
        defer { abort() }
        guard missingCount == 0 else {
            throw DepotError.chunkUnknown("\(missingCount) chunk(s) of the recipe are not stored, e.g. sha256:\(missing[0].hex)")
        }
        try store.appender.checkpoint()
        let blob = BlobRecord(id: blobID, digest: expected, size: size, chunker: chunker)
        if let states, !states.states.isEmpty {
            try verifySegments(blob, states)
        } else {
            let reader = BlobReader<[UInt8]>(store: store, blob: blob, range: 0..<size)
            var hash = SHA256()
            while let batch = try reader.next() { batch.withUnsafeBytes { hash.update($0) } }
            let digest = Digest(bytes: hash.finalize())
            guard digest == expected else {
                throw DepotError.digestInvalid("the recipe's chunks have digest \(digest), not \(expected)")
            }
        }
        let record = try store.appender.completeBlob(blobID, digest: expected, size: size, retain: retain)
        done = true
        return record
    }

    /// Segments verified in parallel this way so far (for tests: the path was taken).
    public private(set) var segmentsVerified = 0

    private func verifySegments(_ blob: BlobRecord, _ claimed: BlobHashStates) throws {
        let stride = claimed.stride
        // The caller parsed the header against this recipe's size; checked again, it is cheap.
        guard stride >= BlobHashStates.minStride, stride % 64 == 0, Int64(claimed.states.count) == (size - 1) / stride else {
            throw DepotError.invalidArgument("\(BlobHashStates.header) does not fit a \(size)-byte blob")
        }
        let count = claimed.states.count + 1
        // Segment k: bytes k·stride ..< min((k+1)·stride, size), from the state claimed at its
        // start (the initial state for the first) to the one claimed at its end (for the last, the
        // digest after padding).
        @Sendable func start(_ k: Int) -> ResumableSHA256? {
            k == 0 ? ResumableSHA256() : ResumableSHA256(midstate: claimed.states[k - 1], count: Int64(k) * stride)
        }
        @Sendable func check(_ k: Int, _ hash: ResumableSHA256) -> Bool {
            guard hash.count == min(Int64(k + 1) * stride, size) else { return false }
            return k == count - 1 ? Digest(bytes: hash.finalize()) == blob.digest : hash.midstate == claimed.states[k]
        }
        let failures = Locked<[Int]>([])
        let errors = Locked<(any Error)?>(nil)
        let store = self.store
        let size = self.size
        // Two threads; thread t takes the pairs of segments t, t+2, ... and hashes each pair's
        // two segments together, a batch of each at a time.
        let pairs = (count + 1) / 2
        DispatchQueue.concurrentPerform(iterations: 2) { t in
            for pair in Swift.stride(from: t, to: pairs, by: 2) {
                if errors.withLock({ $0 != nil }) { return }
                let a = 2 * pair
                let b = a + 1
                do {
                    guard var ha = start(a), var hb = b < count ? start(b) : ResumableSHA256() else {
                        throw DepotError.invalidArgument("\(BlobHashStates.header) has a state that cannot be resumed")
                    }
                    let ra = BlobReader<[UInt8]>(store: store, blob: blob, range: (Int64(a) * stride)..<min(Int64(a + 1) * stride, size))
                    let rb =
                        b < count
                        ? BlobReader<[UInt8]>(store: store, blob: blob, range: (Int64(b) * stride)..<min(Int64(b + 1) * stride, size)) : nil
                    var ba = try ra.next()
                    var bb = try rb?.next()
                    while ba != nil || bb != nil {
                        (ba ?? []).withUnsafeBytes { pa in (bb ?? []).withUnsafeBytes { pb in SHA256Lanes.update(&ha, pa, &hb, pb) } }
                        if ba != nil { ba = try ra.next() }
                        if bb != nil { bb = try rb?.next() }
                    }
                    if !check(a, ha) { failures.withLock { $0.append(a) } }
                    if b < count, !check(b, hb) { failures.withLock { $0.append(b) } }
                } catch {
                    errors.withLock { $0 = $0 ?? error }
                }
            }
        }
        if let error = errors.withLock({ $0 }) { throw error }
        if let first = failures.withLock({ $0.min() }) {
            throw DepotError.digestInvalid(
                "the recipe's chunks do not have digest \(blob.digest): the SHA-256 state after byte \(min(Int64(first + 1) * stride, size)) is not the one the client sent"
            )
        }
        segmentsVerified += count
    }

    /// Abandons the commit.
    public func abort() {
        guard !done else { return }
        done = true
        store.appender.abortBlob(blobID)
    }
}
