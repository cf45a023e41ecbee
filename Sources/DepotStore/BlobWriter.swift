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
/// Three kinds of work overlap on the machine's cores: the whole-blob SHA-256 of each buffer
/// runs on a serial hashing queue while the caller's thread cuts the same buffer into chunks
/// (gear CDC, with forced boundaries from a `BoundaryPlanner`); each cut chunk is then hashed,
/// deduplicated, compressed and appended to a pack by one of two worker queues. At most
/// `writerQueueDepth` chunks are in flight, so memory stays at a few MiB whatever the blob's
/// size. Not thread-safe: one producer calls `write` and then `finish` (or `abort`).
public final class BlobWriter: @unchecked Sendable {
    private let store: ChunkStore
    private let blobID: Int64
    private var cutter: ChunkCutter
    private var wholeHash = SHA256()
    private var accumulator: UnsafeMutableRawBufferPointer
    private var accumulated = 0
    /// Absolute offset of the first byte of the chunk being accumulated.
    private var chunkStart: Int64 = 0
    public private(set) var bytesWritten: Int64 = 0
    private var finished = false

    private let hashing = DispatchQueue(label: "depot.blobwriter.hash")
    private let hashingDone = DispatchGroup()
    /// Chunk workers: serial queues, so they over-commit — a writer's chunks always get
    /// threads, even when every thread of GCD's fixed-width global pool is blocked (callers of
    /// `write` may themselves run there). Two of them keep both cores busy.
    private let workerQueues = [DispatchQueue(label: "depot.blobwriter.worker.0"), DispatchQueue(label: "depot.blobwriter.worker.1")]
    private var nextWorker = 0
    private let workers = DispatchGroup()
    private let slots: DispatchSemaphore
    private let stageState = Locked(StageState())

    struct StageState {
        var error: (any Error)?
        var chunks = 0, newChunks = 0
        var newBytes: Int64 = 0, reusedBytes: Int64 = 0, storedBytes: Int64 = 0
        /// Consecutive new chunks that compression did not help, and a probe counter: after a
        /// streak of incompressible chunks only every 16th chunk is tried (random or already
        /// compressed data costs no zstd time), until one compresses again.
        var rawStreak = 0, probe = 0

        mutating func shouldTryCompression() -> Bool {
            probe &+= 1
            return rawStreak < 8 || probe % 16 == 0
        }
    }

    init(store: ChunkStore, planner: (any BoundaryPlanner)?) throws {
        self.store = store
        cutter = ChunkCutter(store.options.chunker, planner: planner)
        accumulator = UnsafeMutableRawBufferPointer(start: nil, count: 0) // allocated on first use
        slots = DispatchSemaphore(value: store.options.writerQueueDepth)
        blobID = try store.appender.beginBlob(chunker: store.options.chunker.version)
    }

    deinit {
        if !finished {
            // Never forget a blob while its workers may still add recipe rows for it.
            hashingDone.wait()
            workers.wait()
            store.appender.abortBlob(blobID)
        }
        if accumulator.baseAddress != nil { accumulator.deallocate() }
    }

    /// Feeds the next bytes of the blob.
    public func write(_ bytes: UnsafeRawBufferPointer) throws {
        precondition(!finished, "write after finish/abort")
        if let error = stageState.withLock({ $0.error }) { throw error }
        guard bytes.count > 0 else { return }
        // Hash the whole blob on another core while this thread chunks the same bytes; wait
        // for it before returning, because the caller owns `bytes`.
        let shared = UnsafeSendableBytes(bytes)
        if bytes.count >= 64 << 10 {
            hashing.async(group: hashingDone) { [self] in wholeHash.update(shared.bytes) }
        } else {
            wholeHash.update(bytes)
        }
        defer { hashingDone.wait() }
        try cutter.feed(bytes) { piece, width in
            if let width, accumulated == 0 {
                if piece.count > 0 { try emitChunk(piece, width: width) } // the whole chunk is in this buffer: one copy, not two
            } else {
                accumulate(piece)
                if let width { try emitChunk(width: width) }
            }
        }
        bytesWritten = cutter.position
    }

    /// Convenience for arrays.
    public func write(_ bytes: [UInt8]) throws {
        try bytes.withUnsafeBytes { try write($0) }
    }

    private func accumulate(_ bytes: UnsafeRawBufferPointer) {
        guard bytes.count > 0 else { return }
        if accumulator.baseAddress == nil {
            accumulator = .allocate(byteCount: store.options.chunker.maxSize, alignment: 64)
        }
        UnsafeMutableRawBufferPointer(rebasing: accumulator[accumulated..<(accumulated + bytes.count)]).copyMemory(from: bytes)
        accumulated += bytes.count
    }

    /// Hands the accumulated chunk to the storing stage.
    private func emitChunk(width: Int) throws {
        guard accumulated > 0 else { return }
        let n = accumulated
        accumulated = 0
        try emitChunk(UnsafeRawBufferPointer(rebasing: accumulator[0..<n]), width: width)
    }

    private func emitChunk(_ bytes: UnsafeRawBufferPointer, width: Int) throws {
        let chunk = [UInt8](bytes)
        let offset = chunkStart
        chunkStart += Int64(bytes.count)
        slots.wait()
        let store = self.store
        let blobID = self.blobID
        let stageState = self.stageState
        let slots = self.slots
        nextWorker = (nextWorker + 1) % workerQueues.count
        workerQueues[nextWorker].async(group: workers) {
            defer { slots.signal() }
            if stageState.withLock({ $0.error != nil }) { return }
            do {
                let tryCompression = stageState.withLock { $0.shouldTryCompression() }
                let outcome = try chunk.withUnsafeBytes { bytes in
                    let entry = RecipeEntry(offset: offset, length: bytes.count, hash: SHA256.hash(bytes))
                    return try store.compressors.with { c in
                        try store.appender.store(
                            entry, of: blobID, bytes: bytes, elementWidth: width, compressor: c,
                            tryCompression: tryCompression)
                    }
                }
                stageState.withLock { s in
                    s.chunks += 1
                    switch outcome {
                    case .reused: s.reusedBytes += Int64(chunk.count)
                    case .stored(let stored, let codec):
                        s.newChunks += 1
                        s.newBytes += Int64(chunk.count)
                        s.storedBytes += Int64(stored)
                        if tryCompression { s.rawStreak = codec == .raw ? s.rawStreak + 1 : 0 }
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
        let record: BlobRecord
        do {
            if let width = cutter.finish() { try emitChunk(width: width) }
            workers.wait()
            if let error = stageState.withLock({ $0.error }) { throw error }
            let digest = Digest(bytes: wholeHash.finalize())
            if let expected, expected != digest {
                throw DepotError.digestInvalid("content has digest \(digest), expected \(expected)")
            }
            record = try store.appender.completeBlob(blobID, digest: digest, size: bytesWritten, retain: retain)
            finished = true
        } catch {
            abort()
            throw error
        }
        let s = stageState.withLock { $0 }
        let chunkerVersion = cutter.version
        return WriteResult(
            digest: record.digest, size: record.size, chunks: s.chunks, newChunks: s.newChunks,
            newBytes: s.newBytes, reusedBytes: s.reusedBytes, storedBytes: s.storedBytes,
            chunker: chunkerVersion)
    }

    /// Abandons the blob. Chunks it stored become garbage unless another blob uses them.
    public func abort() {
        guard !finished else { return }
        finished = true
        hashingDone.wait()
        workers.wait()
        store.appender.abortBlob(blobID)
    }
}
