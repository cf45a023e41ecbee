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
    /// Resumable (a checkpoint carries its midstate to another process); the same block
    /// function as `SHA256`.
    private var wholeHash = ResumableSHA256()
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
        if planner != nil { try Self.replay(into: &planner!, from: segments, store: store) }
        self.store = store
        cutter = ChunkCutter(parameters, planner: planner, position: checkpoint.committed)
        chunkStart = checkpoint.committed
        segmentStart = checkpoint.committed
        wholeHash = hash
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
        // Hash the whole blob on another core while this thread chunks the same bytes; wait
        // for it before returning, because the caller owns `bytes`.
        let shared = UnsafeSendableBytes(bytes)
        if bytes.count >= 64 << 10 {
            hashing.async(group: hashingDone) { [self] in
                let started = ContinuousClock.now
                wholeHash.update(shared.bytes)
                timer.add(.hash, since: started)
            }
        } else {
            let started = ContinuousClock.now
            wholeHash.update(bytes)
            timer.add(.hash, since: started)
        }
        defer { hashingDone.wait() }
        try cut(bytes)
    }

    /// Cuts bytes (already hashed) into chunks and hands them to the storing stage.
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
        let waiting = ContinuousClock.now
        slots.wait()
        let waitedNow = ContinuousClock.now - waiting
        waited += waitedNow
        timer.add(.backpressure, waitedNow)
        let store = self.store
        let timer = self.timer
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
                    let hashing = ContinuousClock.now
                    let entry = RecipeEntry(offset: offset, length: bytes.count, hash: SHA256.hash(bytes))
                    timer.add(.chunkHash, since: hashing)
                    return try store.compressors.with { c in
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
        if let error = stageState.withLock({ $0.error }) { throw error }
    }

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
            workers.wait()
            if let error = stageState.withLock({ $0.error }) { throw error }
            var c = WriterCheckpoint(
                position: bytesWritten, chunker: store.options.chunker.version, hash: wholeHash.saved,
                tail: accumulated > 0 ? [UInt8](UnsafeRawBufferPointer(rebasing: accumulator[0..<accumulated])) : [])
            let s = stageState.withLock { $0 }
            c.chunks = s.chunks
            c.newChunks = s.newChunks
            c.newBytes = s.newBytes
            c.reusedBytes = s.reusedBytes
            c.storedBytes = s.storedBytes
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
