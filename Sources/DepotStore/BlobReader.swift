import DepotCatalog
import DepotCore
import Dispatch

/// Streams a byte range of a blob out of the store, verifying every chunk's hash.
///
/// Recipe entries are fetched from the catalog a page at a time; each batch of chunks
/// (up to ~1 MiB, 4 in S3 mode) is read, decompressed and verified in parallel on all cores,
/// then returned in order. The next batch is prepared, on the store's read pool, while the
/// caller consumes the current one (read-ahead of one batch), so memory stays at two batches
/// whatever the blob's size, and threads at the pool's bound whatever the number of readers.
public final class BlobReader<Batch: ReadBatch>: @unchecked Sendable {
    public let blob: BlobRecord
    public let range: Range<Int64>
    private let store: ChunkStore
    private var position: Int64
    private var page: [(RecipeEntry, ChunkLocation?)] = []
    private var pageIndex = 0
    private var recipeCursor: Int64
    private var recipeDone = false
    /// Target bytes per batch returned by `next()`.
    public var batchBytes = 1 << 20

    init(store: ChunkStore, blob: BlobRecord, range: Range<Int64>) {
        self.store = store
        self.blob = blob
        self.range = range
        position = range.lowerBound
        // S3 mode: a batch's records are fetched with coalesced GETs while the caller consumes the
        // previous batch; 4 MiB batches make those GETs large enough to hide an object store's
        // first-byte latency (tens of ms) at the cost of 8 MiB per reader instead of 2.
        if store.files.objects != nil { batchBytes = 4 << 20 }
        recipeCursor = 0
        if !range.isEmpty {
            recipeCursor = (try? store.catalog.read { try $0.recipeStart(blob: blob.id, containing: range.lowerBound) } ?? 0) ?? 0
        }
    }

    /// Bytes left to read.
    public var remaining: Int64 { range.upperBound - position }

    /// The next recipe entry, without consuming it (`pageIndex += 1` does).
    private func peekEntry() throws -> (RecipeEntry, ChunkLocation?)? {
        if pageIndex == page.count {
            guard !recipeDone else { return nil }
            let cursor = recipeCursor
            let id = blob.id
            page = try store.catalog.read { try $0.recipeWithLocations(blob: id, from: cursor, limit: 512) }
            pageIndex = 0
            if page.count < 512 { recipeDone = true }
            guard let last = page.last else { return nil }
            recipeCursor = last.0.offset + 1
        }
        return page[pageIndex]
    }

    /// The batch being read ahead. At most one is in flight, so batches load one at a time
    /// and in order, on the store's read pool (`ReadWorkers`).
    private var ahead: (done: DispatchGroup, result: Locked<Result<Batch?, any Error>>)?

    /// The next bytes of the range in order, or nil at the end.
    public func next() throws -> Batch? {
        let batch = ahead ?? startBatch()
        batch.done.wait()
        let result = try batch.result.withLock { $0 }.get()
        ahead = (result != nil && position < range.upperBound) ? startBatch() : nil
        return result
    }

    /// `next()` for async callers: returns at once when the batch read ahead is ready (the
    /// usual case while a GET streams), and otherwise suspends until the store's read pool has
    /// read it, without holding a thread. A GET used to wait in the blocking pool for every
    /// batch, so many slow pulls at once (a rollout's nodes, a cold disk) held as many of its
    /// threads; throughput on loopback was the same either way.
    public func nextAsync() async throws -> Batch? {
        if ahead == nil { ahead = startBatch() }
        let batch = ahead!
        if batch.done.wait(timeout: .now()) != .success {
            await withCheckedContinuation { (resumed: CheckedContinuation<Void, Never>) in
                batch.done.notify(queue: store.readWorkers.resumeQueue) { resumed.resume() }
            }
        }
        return try next()
    }

    private func startBatch() -> (done: DispatchGroup, result: Locked<Result<Batch?, any Error>>) {
        let done = DispatchGroup()
        let result = Locked<Result<Batch?, any Error>>(.success(nil))
        if ReadWorkers.onWorkerThread {
            // A job of the read pool reading a blob: queueing behind itself could wait forever.
            let r = Result { try loadBatch() }
            result.withLock { $0 = r }
            return (done, result)
        }
        done.enter()
        // Weak: a reader dropped mid-stream (the client went away) does not read on for nobody.
        store.readWorkers.submit { [weak self] in
            if let self {
                let r = Result { try self.loadBatch() }
                result.withLock { $0 = r }
            }
            done.leave()
        }
        return (done, result)
    }

    /// Reads, decodes and verifies the next batch. Runs on one thread at a time.
    private func loadBatch() throws -> Batch? {
        guard position < range.upperBound else { return nil }
        // Collect a batch of entries overlapping [position, end).
        var batch: [(entry: RecipeEntry, loc: ChunkLocation?, outOffset: Int, skip: Int, take: Int)] = []
        var total = 0
        while total < batchBytes, position + Int64(total) < range.upperBound {
            guard let (entry, loc) = try peekEntry() else { break }
            let start = position + Int64(total)
            let entryEnd = entry.offset + Int64(entry.length)
            guard entryEnd > start else {
                pageIndex += 1
                continue
            }
            guard entry.offset <= start else {
                throw DepotError.integrity("blob \(blob.digest): recipe has a gap at offset \(start)")
            }
            let skip = Int(start - entry.offset)
            // Only the first chunk of a range read starts before the position; anywhere else
            // an earlier start means overlapping recipe entries, which must never be served.
            guard skip == 0 || start == range.lowerBound else {
                throw DepotError.integrity("blob \(blob.digest): recipe entries overlap at offset \(start)")
            }
            let take = Int(min(entryEnd, range.upperBound) - start)
            // A batch stops before the chunk that would take it past `batchBytes` (a chunk larger
            // than that is a batch of its own): NIO rounds a buffer's capacity up to a power of
            // two, so a batch of 1 MiB and a bit cost 2 MiB of memory, held by every GET.
            if total > 0 && take > batchBytes - total { break }
            pageIndex += 1
            batch.append((entry, loc, total, skip, take))
            total += take
        }
        guard total > 0 else {
            throw DepotError.integrity("blob \(blob.digest): recipe ends at \(position) before size \(range.upperBound)")
        }
        let failures = FailureBox()
        let digest = blob.digest
        let items = batch
        if let objects = store.files.objects {
            // Cast chunks have no record: fetch their fp32 sources' records with the batch's.
            let casts = Set(items.filter { $0.loc == nil }.map(\.entry.hash))
            let sources =
                casts.isEmpty
                ? []
                : try store.catalog.read { conn in
                    try Set(casts.flatMap { try conn.chunkCast($0)?.sources ?? [] }).compactMap { try conn.chunkLocation($0) }
                }
            objects.prefetch(items.compactMap(\.loc) + sources)
        }
        let output = Batch(count: total) { out in
            let shared = UnsafeSendableBuffer(out)
            DispatchQueue.concurrentPerform(iterations: items.count) { i in
                let item = items[i]
                do {
                    try store.readChunk(
                        item.entry, item.loc, skip: item.skip,
                        into: UnsafeMutableRawBufferPointer(rebasing: shared.buffer[item.outOffset..<(item.outOffset + item.take)]))
                } catch {
                    failures.record(error, blob: digest)
                }
            }
        }
        if let error = failures.first { throw error }
        store.readCounter.withLock { $0 += Int64(total) }
        position += Int64(total)
        return output
    }

    /// Reads the whole range, handing each batch to `body`.
    public func forEach(_ body: (Batch) throws -> Void) throws {
        while let bytes = try next() { try body(bytes) }
    }
}

private final class FailureBox: Sendable {
    private let error = Locked<(any Error)?>(nil)
    func record(_ e: any Error, blob: Digest) {
        error.withLock {
            if $0 == nil {
                if case DepotError.integrity(let m) = e { $0 = DepotError.integrity("\(m); blob \(blob) is damaged") } else { $0 = e }
            }
        }
    }
    var first: (any Error)? { error.withLock { $0 } }
}

extension ChunkStore {
    /// Reads chunk `entry` and copies `output.count` bytes starting `skip` bytes into it.
    /// A stale location (pack compacted meanwhile) is looked up again once. A chunk without a
    /// record may be a cast (`CastChunks.swift`), decoded from its sources unless `castAllowed`
    /// is false (reading a cast's sources: a cast never names another cast).
    func readChunk(
        _ entry: RecipeEntry, _ location: ChunkLocation?, skip: Int, into output: UnsafeMutableRawBufferPointer, castAllowed: Bool = true
    ) throws {
        var loc = location
        for attempt in 0..<2 {
            if loc == nil || attempt == 1 {
                loc = try catalog.read { try $0.chunkLocation(entry.hash) }
            }
            guard let l = loc else {
                if castAllowed, let cast = try catalog.read({ try $0.chunkCast(entry.hash) }) {
                    let bytes: [UInt8]
                    do {
                        bytes = try decodeCast(entry.hash, cast)
                    } catch DepotError.integrity(let why) {
                        // GC may have made it a plain chunk again and swept its sources meanwhile.
                        guard let plain = try catalog.read({ try $0.chunkLocation(entry.hash) }) else { throw DepotError.integrity(why) }
                        return try readChunk(entry, plain, skip: skip, into: output, castAllowed: false)
                    }
                    guard skip >= 0, skip + output.count <= bytes.count else {
                        throw DepotError.integrity(
                            "cast chunk sha256:\(entry.hash.hex) has \(bytes.count) bytes, fewer than its recipe entry")
                    }
                    bytes.withUnsafeBytes { output.copyMemory(from: UnsafeRawBufferPointer(rebasing: $0[skip..<(skip + output.count)])) }
                    return
                }
                throw DepotError.integrity("chunk sha256:\(entry.hash.hex) at blob offset \(entry.offset) is missing from the store")
            }
            do {
                try compressors.with { c in
                    if skip == 0 && output.count == l.rawLength {
                        try files.readChunk(
                            entry.hash, at: l, into: output, compressor: c, scratch: &c.recordScratch,
                            verify: options.readVerification)
                    } else {
                        var full = [UInt8](repeating: 0, count: l.rawLength)
                        try full.withUnsafeMutableBytes {
                            try files.readChunk(
                                entry.hash, at: l, into: $0, compressor: c, scratch: &c.recordScratch,
                                verify: options.readVerification)
                        }
                        full.withUnsafeBytes { output.copyMemory(from: UnsafeRawBufferPointer(rebasing: $0[skip..<(skip + output.count)])) }
                    }
                }
                return
            } catch DepotError.io(let message) where attempt == 0 {
                // The pack may have been compacted away between lookup and read: retry with a fresh location.
                files.evict(l.pack)
                _ = message
                continue
            }
        }
    }
}

/// Storage a `BlobReader` fills with one batch of bytes: `[UInt8]` by default; the HTTP layer
/// uses its own buffer type so that batches go to the socket without another copy.
public protocol ReadBatch: Sendable {
    /// A buffer of exactly `count` bytes, written by `fill` before it is returned.
    init(count: Int, fill: (UnsafeMutableRawBufferPointer) -> Void)
    var count: Int { get }
}

extension Array: ReadBatch where Element == UInt8 {
    public init(count: Int, fill: (UnsafeMutableRawBufferPointer) -> Void) {
        self.init(unsafeUninitializedCapacity: count) { buffer, initialized in
            fill(UnsafeMutableRawBufferPointer(buffer))
            initialized = count
        }
    }
}
