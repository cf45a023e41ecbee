import DepotCatalog
import DepotCore
import Dispatch


/// What a completed write stored.
public struct WriteResult: Sendable, Equatable {
    public var digest: Digest
    public var size: Int64
    public var chunks: Int
    /// Chunks (and their raw bytes) this write added to the store.
    public var newChunks: Int
    public var newBytes: Int64
    /// Bytes of this blob that were already stored (deduplicated).
    public var reusedBytes: Int64
    /// Bytes the new chunks take in packs after compression (record headers excluded).
    public var storedBytes: Int64
    /// The chunker version that cut the recipe.
    public var chunker: String
}

/// Streams one blob into the store in a single pass with bounded memory.
///
/// The caller's thread hashes the whole blob (SHA-256) and cuts chunks (gear CDC, with forced
/// boundaries from a `BoundaryPlanner`); a second stage on another core hashes each chunk,
/// deduplicates, compresses and appends it to a pack. At most `writerQueueDepth` chunks are in
/// flight, so memory stays at a few MiB whatever the blob's size. Not thread-safe: one
/// producer calls `write` and then `finish` (or `abort`).
public final class BlobWriter: @unchecked Sendable {
    private let store: ChunkStore
    private let blobID: Int64
    private var chunker: Chunker
    private var planner: (any BoundaryPlanner)?
    private var wholeHash = SHA256()
    private var accumulator: UnsafeMutableRawBufferPointer
    private var accumulated = 0
    private var cuts: [Int] = []
    /// Absolute offset of the first byte of the chunk being accumulated.
    private var chunkStart: Int64 = 0
    public private(set) var bytesWritten: Int64 = 0
    private var nextForced: Int64?
    private var finished = false

    private let stage = DispatchQueue(label: "depot.blobwriter")
    private let slots: DispatchSemaphore
    private let stageState = Locked(StageState())

    struct StageState {
        var error: (any Error)?
        var chunks = 0, newChunks = 0
        var newBytes: Int64 = 0, reusedBytes: Int64 = 0, storedBytes: Int64 = 0
    }

    init(store: ChunkStore, planner: (any BoundaryPlanner)?) throws {
        self.store = store
        self.planner = planner
        chunker = Chunker(store.options.chunker)
        accumulator = .allocate(byteCount: store.options.chunker.maxSize, alignment: 64)
        slots = DispatchSemaphore(value: store.options.writerQueueDepth)
        blobID = try store.appender.beginBlob(chunker: store.options.chunker.version)
    }

    deinit {
        accumulator.deallocate()
        if !finished { store.appender.abortBlob(blobID) }
    }

    /// Feeds the next bytes of the blob.
    public func write(_ bytes: UnsafeRawBufferPointer) throws {
        precondition(!finished, "write after finish/abort")
        if let error = stageState.withLock({ $0.error }) { throw error }
        guard bytes.count > 0 else { return }
        wholeHash.update(bytes)
        if planner != nil {
            planner!.observe(bytes, at: bytesWritten)
            nextForced = planner!.nextBoundary(atOrAfter: bytesWritten)
        }
        var rest = bytes
        var position = bytesWritten
        while !rest.isEmpty {
            // A forced boundary at the current position ends the chunk being cut.
            if let f = nextForced, f == position {
                if chunker.cut() { try emitChunk() }
                nextForced = planner?.nextBoundary(atOrAfter: position + 1)
                continue
            }
            var take = rest.count
            if let f = nextForced, f > position, f - position < Int64(take) { take = Int(f - position) }
            let segment = UnsafeRawBufferPointer(rebasing: rest[0..<take])
            try chunkSegment(segment)
            position += Int64(take)
            rest = UnsafeRawBufferPointer(rebasing: rest[take...])
        }
        bytesWritten = position
        if let f = nextForced, f == position {
            if chunker.cut() { try emitChunk() }
            nextForced = planner?.nextBoundary(atOrAfter: position + 1)
        }
    }

    /// Convenience for arrays.
    public func write(_ bytes: [UInt8]) throws {
        try bytes.withUnsafeBytes { try write($0) }
    }

    private func chunkSegment(_ segment: UnsafeRawBufferPointer) throws {
        cuts.removeAll(keepingCapacity: true)
        chunker.scan(segment, cuts: &cuts)
        var previous = 0
        for cut in cuts {
            accumulate(UnsafeRawBufferPointer(rebasing: segment[previous..<cut]))
            try emitChunk()
            previous = cut
        }
        accumulate(UnsafeRawBufferPointer(rebasing: segment[previous...]))
    }

    private func accumulate(_ bytes: UnsafeRawBufferPointer) {
        guard bytes.count > 0 else { return }
        UnsafeMutableRawBufferPointer(rebasing: accumulator[accumulated..<(accumulated + bytes.count)]).copyMemory(from: bytes)
        accumulated += bytes.count
    }

    /// Hands the accumulated chunk to the storing stage.
    private func emitChunk() throws {
        guard accumulated > 0 else { return }
        let chunk = [UInt8](UnsafeRawBufferPointer(rebasing: accumulator[0..<accumulated]))
        let offset = chunkStart
        let width = planner?.elementWidth(at: offset) ?? 1
        chunkStart += Int64(accumulated)
        accumulated = 0
        slots.wait()
        let store = self.store, blobID = self.blobID, stageState = self.stageState, slots = self.slots
        stage.async {
            defer { slots.signal() }
            if stageState.withLock({ $0.error != nil }) { return }
            do {
                let outcome = try chunk.withUnsafeBytes { bytes in
                    let entry = RecipeEntry(offset: offset, length: bytes.count, hash: SHA256.hash(bytes))
                    return try store.compressors.with { c in
                        try store.appender.store(entry, of: blobID, bytes: bytes, elementWidth: width, compressor: c)
                    }
                }
                stageState.withLock { s in
                    s.chunks += 1
                    switch outcome {
                    case .reused: s.reusedBytes += Int64(chunk.count)
                    case .stored(let stored):
                        s.newChunks += 1; s.newBytes += Int64(chunk.count); s.storedBytes += Int64(stored)
                    }
                }
            } catch {
                stageState.withLock { $0.error = error }
            }
        }
        if let error = stageState.withLock({ $0.error }) { throw error }
    }

    /// Ends the blob; verifies `expected` if given. The blob is durable and readable when this
    /// returns. With `retain`, it is declared live in the same transaction (no GC window).
    public func finish(expecting expected: Digest? = nil, retain: String? = nil) throws -> WriteResult {
        precondition(!finished, "finish called twice")
        if chunker.cut() { try emitChunk() }
        stage.sync {}
        finished = true
        if let error = stageState.withLock({ $0.error }) {
            store.appender.abortBlob(blobID)
            throw error
        }
        let digest = Digest(bytes: wholeHash.finalize())
        if let expected, expected != digest {
            store.appender.abortBlob(blobID)
            throw DepotError.digestInvalid("content has digest \(digest), expected \(expected)")
        }
        let record = try store.appender.completeBlob(blobID, digest: digest, size: bytesWritten, retain: retain)
        let s = stageState.withLock { $0 }
        var chunkerVersion = store.options.chunker.version
        if let tag = planner?.tag { chunkerVersion += "+" + tag }
        return WriteResult(digest: record.digest, size: record.size, chunks: s.chunks, newChunks: s.newChunks,
                           newBytes: s.newBytes, reusedBytes: s.reusedBytes, storedBytes: s.storedBytes,
                           chunker: chunkerVersion)
    }

    /// Abandons the blob. Chunks it stored become garbage unless another blob uses them.
    public func abort() {
        guard !finished else { return }
        finished = true
        stage.sync {}
        store.appender.abortBlob(blobID)
    }
}
