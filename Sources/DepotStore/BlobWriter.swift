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
    /// Seconds per push stage of this writer (summed over its threads; see `PushStage`), for a
    /// request's trace span. Not part of equality: two writes of the same bytes are equal.
    public var stageSeconds: [PushStage: Double] = [:]

    public static func == (a: WriteResult, b: WriteResult) -> Bool {
        a.digest == b.digest && a.size == b.size && a.chunks == b.chunks && a.newChunks == b.newChunks && a.newBytes == b.newBytes
            && a.reusedBytes == b.reusedBytes && a.storedBytes == b.storedBytes && a.chunker == b.chunker
    }
}

/// Streams one blob into the store in a single pass with bounded memory.
///
/// Three stages overlap on the machine's cores: the caller's thread cuts the bytes into chunks
/// (gear CDC, with forced boundaries from a `BoundaryPlanner`) and copies each out; a serial
/// hashing queue computes each chunk's SHA-256 and advances the whole blob's with the same
/// bytes, the two streams together (`SHA256Lanes`: about the cost of one); one of two worker
/// queues then deduplicates, compresses and appends the chunk to a pack. At most
/// `writerQueueDepth` chunks are in flight, so memory stays at a few MiB whatever the blob's
/// size. Not thread-safe: one producer calls `write` and then `finish` (or `abort`).
public final class BlobWriter: @unchecked Sendable {
    private let store: ChunkStore
    private let blobID: Int64
    private var cutter: ChunkCutter
    /// The whole-blob hash, advanced chunk by chunk on the hashing queue (a box the queue's
    /// tasks hold, not the writer: a writer dropped mid-stream must be able to go away).
    private let hashState: HashState
    /// Resumable (a checkpoint carries its midstate to another process); the same block
    /// function as `SHA256`. Covers the chunks emitted, not the bytes still being accumulated
    /// into the next one. Read or set only with the hashing queue idle (after `hashingDone.wait()`).
    private var wholeHash: ResumableSHA256 {
        get { hashState.whole }
        set { hashState.whole = newValue }
    }

    final class HashState: @unchecked Sendable {
        var whole: ResumableSHA256
        init(_ whole: ResumableSHA256) { self.whole = whole }
        /// The worker for the next chunk.
        var nextWorker = 0
    }
    /// Bytes at the start of this writer's chunks that `wholeHash` already covers: a resumed
    /// checkpoint's tail (its saved state includes the tail, which is cut again here).
    private var alreadyHashed = 0
    private var accumulator: UnsafeMutableRawBufferPointer
    private var accumulated = 0
    /// Absolute offset of the first byte of the chunk being accumulated.
    private var chunkStart: Int64 = 0
    /// Where this writer's own recipe starts: 0, or where the checkpoint it resumed committed up to.
    private let segmentStart: Int64
    public private(set) var bytesWritten: Int64 = 0
    private var finished = false
    /// Where this write spends its time (`/metrics`, `depot bench ingest`).
    private let timer = PushStageTimer()
    /// The writer's thread's time waiting for a worker slot so far (kept apart from chunking).
    private var waited: Duration = .zero

    /// Seconds per stage so far (complete after `finish`).
    public var stageSeconds: [PushStage: Double] { timer.seconds }

    private let hashing = DispatchQueue(label: "depot.blobwriter.hash")
    private let hashingDone = DispatchGroup()
    /// Chunk workers: serial queues, so they over-commit — a writer's chunks always get
    /// threads, even when every thread of GCD's fixed-width global pool is blocked (callers of
    /// `write` may themselves run there). Two of them keep both cores busy.
    private let workerQueues = [DispatchQueue(label: "depot.blobwriter.worker.0"), DispatchQueue(label: "depot.blobwriter.worker.1")]
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
        hashState = HashState(ResumableSHA256())
        segmentStart = 0
        accumulator = UnsafeMutableRawBufferPointer(start: nil, count: 0) // allocated on first use
        slots = DispatchSemaphore(value: store.options.writerQueueDepth)
        blobID = try store.appender.beginBlob(chunker: store.options.chunker.version)
    }

    /// A writer that goes on where `checkpoint` left off. `segments` are the committed parts
    /// before it, in order; a planner replays their first bytes (the header it reads), and the
    /// checkpoint's tail goes through the chunker again, so chunks are cut as in one stream.
    /// This writer's own rows go into a new unfinished blob: a writer that lost its claim on an
    /// upload can never touch the rows another writer resumed from.
    init(store: ChunkStore, planner: (any BoundaryPlanner)?, resuming checkpoint: WriterCheckpoint, after segments: [PriorSegment]) throws {
        let parameters = store.options.chunker
        guard checkpoint.chunker == parameters.version else {
            throw DepotError.invalidArgument(
                "this upload was started with chunker \(checkpoint.chunker) but this store cuts with \(parameters.version); start it over")
        }
        guard checkpoint.tail.count < parameters.maxSize, let hash = ResumableSHA256(saved: checkpoint.hash),
            hash.count == checkpoint.position
        else { throw DepotError.integrity("the upload's saved writer state is inconsistent; start it over") }
        var expected: Int64 = 0
        for s in segments {
            guard s.range.lowerBound == expected else {
                throw DepotError.integrity("the upload's committed parts are not contiguous; start it over")
            }
            expected = s.range.upperBound
        }
        guard expected == checkpoint.committed else {
            throw DepotError.integrity("the upload's committed parts end at \(expected), not at \(checkpoint.committed); start it over")
        }
        var planner = planner
        if planner != nil {
            // The planner's saved state first (what it has seen, up to the checkpoint's position),
            // then the stored bytes for as long as it still wants them (a header).
            // A state it refuses is `invalidArgument`, not damage: the client starts over.
            if !checkpoint.plannerState.isEmpty { try planner!.restore(checkpoint.plannerState) }
            try Self.replay(into: &planner!, from: segments, store: store)
        }
        self.store = store
        cutter = ChunkCutter(parameters, planner: planner, position: checkpoint.committed)
        chunkStart = checkpoint.committed
        segmentStart = checkpoint.committed
        hashState = HashState(hash)
        alreadyHashed = checkpoint.tail.count
        accumulator = UnsafeMutableRawBufferPointer(start: nil, count: 0)
        slots = DispatchSemaphore(value: store.options.writerQueueDepth)
        blobID = try store.appender.beginBlob(chunker: parameters.version)
        stageState.withLock { s in
            s.chunks = checkpoint.chunks
            s.newChunks = checkpoint.newChunks
            s.newBytes = checkpoint.newBytes
            s.reusedBytes = checkpoint.reusedBytes
            s.storedBytes = checkpoint.storedBytes
        }
        bytesWritten = checkpoint.committed
        do {
            try checkpoint.tail.withUnsafeBytes { try cut($0) }
            bytesWritten = cutter.position
        } catch {
            abort()
            throw error
        }
    }

    /// Shows a fresh planner the stored first bytes of the blob, as long as it wants them.
    private static func replay(into planner: inout any BoundaryPlanner, from segments: [PriorSegment], store: ChunkStore) throws {
        for segment in segments where planner.wantsBytes && !segment.range.isEmpty {
            // The digest is a placeholder: an unfinished blob has none, and the reader only names it in errors.
            let record = BlobRecord(
                id: segment.blobID, digest: Digest(bytes: SHA256.Value(a: 0, b: 0, c: 0, d: 0)), size: segment.range.upperBound, chunker: ""
            )
            let reader = BlobReader<[UInt8]>(store: store, blob: record, range: segment.range)
            var at = segment.range.lowerBound
            while planner.wantsBytes, let batch = try reader.next() {
                batch.withUnsafeBytes { planner.observe($0, at: at) }
                at += Int64(batch.count)
            }
        }
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
        // Every chunk is copied out before it is handed on, so `bytes` is not used after this returns.
        try cut(bytes)
    }

    /// Cuts bytes into chunks and hands them to the hashing stage.
    private func cut(_ bytes: UnsafeRawBufferPointer) throws {
        let started = ContinuousClock.now
        let waitedBefore = waited
        defer { timer.add(.chunk, ContinuousClock.now - started - (waited - waitedBefore)) }
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
        let skip = min(alreadyHashed, bytes.count)
        alreadyHashed -= skip
        let waiting = ContinuousClock.now
        slots.wait()
        let waitedNow = ContinuousClock.now - waiting
        waited += waitedNow
        timer.add(.backpressure, waitedNow)
        let stageState = self.stageState
        let slots = self.slots
        let state = hashState
        let timer = self.timer
        let storing = Storing(
            store: store, timer: timer, blobID: blobID, stageState: stageState, slots: slots, workers: workers, queues: workerQueues)
        hashing.async(group: hashingDone) {
            if stageState.withLock({ $0.error != nil }) {
                slots.signal()
                return
            }
            let hashing = ContinuousClock.now
            let hash = chunk.withUnsafeBytes { b in
                var c = ResumableSHA256()
                c.update(UnsafeRawBufferPointer(rebasing: b[..<skip]))
                let rest = UnsafeRawBufferPointer(rebasing: b[skip...])
                SHA256Lanes.update(&state.whole, rest, &c, rest)
                return c.finalize()
            }
            // One pass computed both: its time goes half to each stage.
            let half = (ContinuousClock.now - hashing) / 2
            timer.add(.hash, half)
            timer.add(.chunkHash, half)
            state.nextWorker = (state.nextWorker + 1) % storing.queues.count
            storing.store(RecipeEntry(offset: offset, length: chunk.count, hash: hash), chunk, width: width, on: state.nextWorker)
        }
        if let error = stageState.withLock({ $0.error }) { throw error }
    }
}

/// The storing stage's shared parts, for the hashing queue's tasks to hand chunks on with.
private struct Storing: Sendable {
    let store: ChunkStore
    let timer: PushStageTimer
    let blobID: Int64
    let stageState: Locked<BlobWriter.StageState>
    let slots: DispatchSemaphore
    let workers: DispatchGroup
    let queues: [DispatchQueue]

    /// Deduplicates, compresses and appends a hashed chunk on worker `worker`; frees its slot when done.
    func store(_ entry: RecipeEntry, _ chunk: [UInt8], width: Int, on worker: Int) {
        let store = self.store
        let timer = self.timer
        let blobID = self.blobID
        let stageState = self.stageState
        let slots = self.slots
        queues[worker].async(group: workers) {
            defer { slots.signal() }
            if stageState.withLock({ $0.error != nil }) { return }
            do {
                let tryCompression = stageState.withLock { $0.shouldTryCompression() }
                let outcome = try chunk.withUnsafeBytes { bytes in
                    try store.compressors.with { c in
                        try store.appender.store(
                            entry, of: blobID, bytes: bytes, elementWidth: width, compressor: c,
                            tryCompression: tryCompression, timer: timer)
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
    }
}

extension BlobWriter {
    /// Ends the blob; verifies `expected` if given. The blob is durable and readable when this
    /// returns. With `retain`, it is declared live in the same transaction (no GC window).
    /// A resumed writer names the committed `segments` before it: their recipe rows become this
    /// blob's in the completing transaction, which also runs `commit` (an upload session's row
    /// is deleted there; a `commit` that throws leaves everything as it was).
    public func finish(
        expecting expected: Digest? = nil, retain: String? = nil, adopting segments: [PriorSegment] = [],
        commit: ((any CatalogConnection) throws -> Void)? = nil
    ) throws -> WriteResult {
        precondition(!finished, "finish called twice")
        let record: BlobRecord
        do {
            if let width = cutter.finish() { try emitChunk(width: width) }
            hashingDone.wait()
            workers.wait()
            if let error = stageState.withLock({ $0.error }) { throw error }
            let digest = Digest(bytes: wholeHash.finalize())
            if let expected, expected != digest {
                throw DepotError.digestInvalid("content has digest \(digest), expected \(expected)")
            }
            let committing = ContinuousClock.now
            record = try store.appender.completeBlob(
                blobID, digest: digest, size: bytesWritten, retain: retain, adopting: segments.map(\.blobID), commit: commit)
            timer.add(.commit, since: committing)
            finished = true
            store.pushStages.record(timer)
        } catch {
            abort()
            throw error
        }
        let s = stageState.withLock { $0 }
        let chunkerVersion = cutter.version
        return WriteResult(
            digest: record.digest, size: record.size, chunks: s.chunks, newChunks: s.newChunks,
            newBytes: s.newBytes, reusedBytes: s.reusedBytes, storedBytes: s.storedBytes,
            chunker: chunkerVersion, stageSeconds: timer.seconds)
    }

    /// Stops here for another writer to go on later, maybe in another process: every chunk cut
    /// so far is made durable and committed as the recipe of this writer's unfinished blob, in
    /// one transaction with `commit` (which records the returned checkpoint and the segment; if
    /// it throws, nothing is recorded and the writer is aborted). The writer is done afterwards.
    public func checkpoint(commit: (any CatalogConnection, WriterCheckpoint, PriorSegment) throws -> Void) throws -> WriterCheckpoint {
        precondition(!finished, "checkpoint after finish/abort")
        do {
            hashingDone.wait()
            workers.wait()
            if let error = stageState.withLock({ $0.error }) { throw error }
            // The saved state covers every byte written (the layout checkpoints have always had):
            // the emitted chunks, and the accumulated tail, less what it already covers.
            var whole = wholeHash
            if accumulated > alreadyHashed { whole.update(UnsafeRawBufferPointer(rebasing: accumulator[alreadyHashed..<accumulated])) }
            var c = WriterCheckpoint(
                position: bytesWritten, chunker: store.options.chunker.version, hash: whole.saved,
                tail: accumulated > 0 ? [UInt8](UnsafeRawBufferPointer(rebasing: accumulator[0..<accumulated])) : [])
            let s = stageState.withLock { $0 }
            c.chunks = s.chunks
            c.newChunks = s.newChunks
            c.newBytes = s.newBytes
            c.reusedBytes = s.reusedBytes
            c.storedBytes = s.storedBytes
            // Its state after every byte written, for chunks that start again at `committed`.
            if let state = cutter.planner?.savedState(committed: c.committed), state.count <= WriterCheckpoint.maxPlannerState {
                c.plannerState = state
            }
            let segment = PriorSegment(blobID: blobID, range: segmentStart..<c.committed)
            let checkpoint = c
            let committing = ContinuousClock.now
            try store.appender.park(blobID) { conn in try commit(conn, checkpoint, segment) }
            timer.add(.commit, since: committing)
            finished = true
            store.pushStages.record(timer)
            return checkpoint
        } catch {
            abort()
            throw error
        }
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
