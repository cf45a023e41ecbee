import CDepotSupport
import DepotCatalog
import DepotCore
import Foundation

/// The single place where chunks enter pack files. Every writer of the store shares it.
///
/// Chunks are appended to the current pack and remembered as *pending* until a group commit
/// (`flush`): the pack is fsynced first, then one catalog transaction inserts the chunk index
/// rows, the recipe rows and any blob completions. So an index row never names bytes that are
/// not durable, and a blob is acknowledged only after everything it needs is.
///
/// The lock also makes "is this chunk stored?" and "reference it from a recipe" one atomic step
/// with respect to garbage collection, which runs its sweep while holding the same lock.
///
/// The periodic group commit (every `flushBytes`, a full pack, 8192 recipe rows) runs outside
/// that lock, on a committer queue: the pending rows are *handed off* (lookups still see their
/// chunks), and while the committer fsyncs and commits them, writers go on appending behind
/// them. Held under the lock, that fsync stalled every writer of the store for its duration
/// (issue #19: `dedup` and `write` were mostly waiting). A failed hand-off fails its blobs
/// (their writers get the error at their next step) and abandons the pack as before.
///
/// Two locks, always taken in this order: `committing` (whoever fsyncs and commits: the
/// committer, a synchronous flush, an abort) and then `state`. Code holding `state` never
/// takes `committing`.
final class PackAppender: Sendable {
    struct State {
        var pack: PosixFile?
        var packID: Int64 = 0
        var packSize: Int64 = 0
        /// The current pack's `committed_size`: bytes fsynced and recorded in the catalog.
        var committedSize: Int64 = 0
        /// Where the current pack's bytes not yet handed to writeback start.
        var writebackFrom: Int64 = 0
        var pendingChunks: [SHA256.Value: ChunkLocation] = [:]
        var pendingOrder: [SHA256.Value] = []
        var pendingRecipes: [(blob: Int64, entry: RecipeEntry)] = []
        var pendingBytes = 0
        var activeBlobs: Set<Int64> = []
        /// Blobs failed because a chunk they reused was deleted by another replica's GC.
        var lost: Set<Int64> = []
        /// The batch the committer is making durable, and its chunks for lookups.
        var handedOff: Batch?
        var handedOffChunks: [SHA256.Value: ChunkLocation] = [:]
        /// Why a blob failed in a handed-off batch, until its writer hears it.
        var failed: [Int64: DepotError] = [:]
        /// GC sweeps so far (`exclusive`): a chunk row found before the latest sweep may be gone.
        var sweeps = 0
    }

    /// Pending rows handed to the committer, with the pack bytes they name.
    struct Batch {
        var chunks: [(SHA256.Value, ChunkLocation)]
        var recipes: [(blob: Int64, entry: RecipeEntry)]
        var pack: PosixFile?
        var packID: Int64
        /// The pack's size when handed off: every chunk of the batch lies below it.
        var packSize: Int64
        /// The pack's committed size before the batch (an abandoned pack is cut back to it).
        var committedBefore: Int64
        /// The pack reached its target size: writers moved to a new one, and it is sealed once
        /// the batch is committed.
        var seal: Bool
    }

    enum Outcome {
        case stored(storedBytes: Int, codec: ChunkCodec)
        case reused
    }

    private let state = Locked(State())
    /// Taken before `state`: serializes fsync-and-commit (see the type's comment).
    private let committing = Locked(())
    /// Runs handed-off commits, one at a time, so no writer waits for an fsync it did not need.
    private let committer = DispatchQueue(label: "depot.packappender.commit")
    let db: Database
    let files: PackFiles
    let options: StoreOptions

    init(db: Database, files: PackFiles, options: StoreOptions) {
        self.db = db
        self.files = files
        self.options = options
    }

    /// Catalog times are milliseconds since 1970 (catalog migration 9).
    static func now() -> Int64 { Int64(Date().timeIntervalSince1970 * 1000) }

    // MARK: blobs

    /// The row is created and the blob marked active under one lock, the lock GC's sweep holds:
    /// with the two steps apart, a sweep in between saw a writing blob that was not active yet
    /// and, with a short grace, deleted its row; the writer's recipe rows then failed their
    /// foreign key (`gcInALoopWhileWritingAndReadingLosesNothing`, about 1 run in 5 under load).
    func beginBlob(chunker: String) throws -> Int64 {
        try state.withLock { s in
            let id = try db.write { try $0.beginBlob(chunker: chunker, now: Self.now()) }
            s.activeBlobs.insert(id)
            return id
        }
    }

    /// Durably completes a blob; returns its record (an existing one if the digest was already stored).
    /// `adopting`: unfinished blobs (a resumed upload's committed parts) whose recipe rows become
    /// this blob's, in the same transaction, which runs `commit` before that.
    func completeBlob(
        _ id: Int64, digest: Digest, size: Int64, retain: String?, adopting: [Int64] = [],
        commit: ((any CatalogConnection) throws -> Void)? = nil
    ) throws -> BlobRecord {
        try committing.withLock { _ in
            // A failure of the batch is recorded against its blobs: `checkActive` says whether this was one.
            _ = drainHandedOff()
            return try state.withLock { s in
                try checkActive(id, &s)
                let record = try flushLocked(&s, owner: id) { conn in
                    // `commit` first: an upload's compare-and-swap on its session row decides whether this
                    // request may take the parts at all.
                    try commit?(conn)
                    if !adopting.isEmpty { try conn.adoptRecipes(of: adopting, into: id) }
                    let record = try conn.completeBlob(id, digest: digest, size: size, now: Self.now())
                    if let retain { try conn.addRoot(digest, reason: retain, now: Self.now()) }
                    return record
                }
                s.activeBlobs.remove(id)
                return record
            }
        }
    }

    /// Throws why blob `id` can no longer be completed, if it cannot.
    private func checkActive(_ id: Int64, _ s: inout State) throws {
        guard s.activeBlobs.contains(id) else {
            if s.lost.remove(id) != nil { throw Self.lostError(id) }
            if let error = s.failed.removeValue(forKey: id) { throw error }
            throw DepotError.storage("blob write \(id) failed: its data could not be made durable")
        }
    }

    /// Forgets an unfinished blob and its recipe rows. Its new chunks become garbage for GC.
    /// Holds `committing`: a handed-off batch with rows of this blob must not be committing while
    /// the blob's row is deleted (its recipe rows would fail their foreign key).
    func abortBlob(_ id: Int64) {
        committing.withLock { _ in
            state.withLock { s in
                s.pendingRecipes.removeAll { $0.blob == id }
                s.handedOff?.recipes.removeAll { $0.blob == id }
                s.activeBlobs.remove(id)
                s.lost.remove(id)
                s.failed.removeValue(forKey: id)
            }
            _ = try? db.write { try $0.deleteBlob(id: id) }
        }
    }

    /// Commits everything pending now (compaction does it before deleting packs; tests use it).
    func checkpoint() throws {
        try committing.withLock { _ in
            try drainHandedOff()?.get()
            try state.withLock { s in try flushLocked(&s) { _ in () } }
        }
    }

    // MARK: chunks

    /// Adds `entry` (whose bytes are `bytes`) to blob `blob`'s recipe, storing the chunk if the
    /// store lacks it. Compression runs outside the lock.
    func store(
        _ entry: RecipeEntry, of blob: Int64, bytes: UnsafeRawBufferPointer, elementWidth: Int,
        compressor: ChunkCompressor, tryCompression: Bool = true, timer: PushStageTimer? = nil
    ) throws -> Outcome {
        let looked = ContinuousClock.now
        // Most chunks of new data are not stored: ask the catalog without the lock every writer
        // waits on (a lookup under it cost pushes a tenth of their time, #19). The lock is only
        // needed to take a reference atomically with GC's sweep, so a hit is checked again under it.
        let (pending, sweeps) = state.withLock { s in (s.pendingChunks[entry.hash] != nil || s.handedOffChunks[entry.hash] != nil, s.sweeps)
        }
        if try pending || db.read({ try $0.chunkLength(entry.hash) }) != nil,
            try withState({ s in try referenceIfKnown(entry, blob, &s, foundBeforeSweep: pending ? nil : sweeps) })
        {
            timer?.add(.dedup, since: looked)
            return .reused
        }
        let compressing = ContinuousClock.now
        timer?.add(.dedup, compressing - looked)
        var outcome = Outcome.reused
        var policy = options.compression
        if !tryCompression { policy.mode = .off }
        try compressor.encode(bytes, policy: policy, elementWidth: elementWidth) { codec, payload in
            let writing = ContinuousClock.now
            timer?.add(.compress, writing - compressing)
            defer { timer?.add(.write, since: writing) }
            outcome = try withState { s in
                // Pending chunks only: the catalog was asked just before. A chunk another writer
                // committed in between is at worst stored twice (its row then names the newer copy).
                if try referenceIfKnown(entry, blob, &s, askCatalog: false) { return .reused } // also checks the blob is still active
                try append(entry.hash, codec: codec, rawLength: bytes.count, payload: payload, &s)
                s.pendingRecipes.append((blob, entry))
                return .stored(storedBytes: payload.count, codec: codec)
            }
        }
        return outcome
    }

    /// Adds an already encoded, verified chunk (received from a client) to blob `blob`, storing
    /// the payload as is unless the store has the chunk.
    func storeEncoded(_ entry: RecipeEntry, of blob: Int64, codec: ChunkCodec, payload: UnsafeRawBufferPointer) throws -> Outcome {
        try withState { s in
            if try referenceIfKnown(entry, blob, &s) { return .reused }
            try append(entry.hash, codec: codec, rawLength: entry.length, payload: payload, &s)
            s.pendingRecipes.append((blob, entry))
            return .stored(storedBytes: payload.count, codec: codec)
        }
    }

    /// Adds a stored chunk to blob `blob`'s recipe without its bytes. False when the store lacks
    /// the chunk; throws when the stored chunk's length differs from the entry's.
    func reference(_ entry: RecipeEntry, of blob: Int64) throws -> Bool {
        try withState { s in
            try checkWriting(blob, &s)
            let known = s.pendingChunks[entry.hash] ?? s.handedOffChunks[entry.hash]
            let length = try known?.rawLength ?? db.read({ try $0.chunkLength(entry.hash) })
            guard let length else { return false }
            guard length == entry.length else {
                throw DepotError.invalidArgument("chunk sha256:\(entry.hash.hex) has \(length) bytes, not \(entry.length)")
            }
            return try referenceIfKnown(entry, blob, &s)
        }
    }

    /// Makes a blob's rows durable and leaves it unfinished but no longer written by this
    /// process: its chunks stay rooted for the grace period (chunks uploaded ahead of a commit).
    /// `commit` runs in the same transaction.
    func park(_ blob: Int64, commit: (any CatalogConnection) throws -> Void = { _ in }) throws {
        try committing.withLock { _ in
            _ = drainHandedOff()
            try state.withLock { s in
                try checkActive(blob, &s)
                try flushLocked(&s, owner: blob) { conn in
                    try conn.touchBlob(blob, now: Self.now())
                    try commit(conn)
                }
                s.activeBlobs.remove(blob)
            }
        }
    }

    /// Appends an encoded record for a chunk that recipes name but that has no record (GC making a
    /// cast chunk plain again), unless it has one by now; the row commits with the next flush.
    func appendUnrecorded(_ hash: SHA256.Value, codec: ChunkCodec, rawLength: Int, payload: UnsafeRawBufferPointer) throws {
        try withState { s in
            guard s.pendingChunks[hash] == nil, s.handedOffChunks[hash] == nil, try db.read({ try $0.chunkLocation(hash) }) == nil
            else { return }
            try append(hash, codec: codec, rawLength: rawLength, payload: payload, &s)
        }
    }

    /// Re-appends an already encoded record (GC compaction). The caller read the chunk's index
    /// row moments before (256 at a time, `chunkLocations`) and found it at `old`. A writer
    /// storing the same bytes anew meanwhile is caught by the pending maps. Another replica's GC
    /// (a leadership handover, or `depot gc` against a live cluster) may sweep the chunk in that
    /// window: the relocated row then names an unreferenced chunk again, which the next sweep
    /// deletes; no chunk a recipe names is ever moved wrongly (each copy is verified first, and the
    /// old pack goes only when no row names it).
    func relocate(_ hash: SHA256.Value, from old: ChunkLocation, codec: ChunkCodec, payload: UnsafeRawBufferPointer) throws {
        try withState { s in
            guard s.pendingChunks[hash] == nil, s.handedOffChunks[hash] == nil else { return }
            try append(hash, codec: codec, rawLength: old.rawLength, payload: payload, &s)
        }
    }

    ///
    /// `foundBeforeSweep`: the catalog had the chunk when `s.sweeps` had this value; with no
    /// local sweep since, it still has it (only a sweep deletes chunk rows here; another replica's
    /// sweep is caught at commit, `LostChunks`), so the lookup under the lock is skipped.
    private func referenceIfKnown(
        _ entry: RecipeEntry, _ blob: Int64, _ s: inout State, askCatalog: Bool = true, foundBeforeSweep: Int? = nil
    ) throws -> Bool {
        try checkWriting(blob, &s)
        if s.pendingChunks[entry.hash] == nil && s.handedOffChunks[entry.hash] == nil {
            let stillThere = foundBeforeSweep != nil && foundBeforeSweep == s.sweeps
            guard try stillThere || askCatalog && (db.read({ try $0.chunkLength(entry.hash) }) != nil) else { return false }
        }
        s.pendingRecipes.append((blob, entry))
        return true
    }

    /// Throws why blob `blob` can no longer be written to, if it cannot (the failure stays recorded
    /// for `checkActive` at its completion).
    private func checkWriting(_ blob: Int64, _ s: inout State) throws {
        guard s.activeBlobs.contains(blob) else {
            if s.lost.contains(blob) { throw Self.lostError(blob) }
            throw s.failed[blob] ?? DepotError.storage("blob write \(blob) was aborted")
        }
    }

    /// Runs `body` under the state lock, then hands pending rows to the committer if they are due.
    /// Writers that get a whole batch ahead of the committer (pending rows past twice the flush
    /// size, or a pack a flush past its target) wait for it instead: that bounds the rows held in
    /// memory and how far a pack outgrows its target when fsyncs are slow.
    ///
    /// The check comes before `body`, in the same critical section, so no writer appends past the
    /// bound while another waits: a pack outgrows its target by at most a flush and one record.
    private func withState<T>(_ body: (inout State) throws -> T) throws -> T {
        while true {
            var handedOff = false
            let result = try state.withLock { s -> T? in
                if s.handedOff != nil && isBehind(s) { return nil }
                let r = try body(&s)
                handedOff = try flushIfNeeded(&s)
                return r
            }
            if handedOff { committer.async { [self] in commitHandedOff() } }
            if let result { return result }
            // A failure is recorded against the batch's blobs; this writer learns in `body`.
            committing.withLock { _ in _ = drainHandedOff() }
            if try state.withLock({ s in try flushIfNeeded(&s) }) { committer.async { [self] in commitHandedOff() } }
        }
    }

    private func isBehind(_ s: State) -> Bool {
        s.pendingBytes >= 2 * options.flushBytes || (s.pack != nil && s.packSize >= options.packTargetSize + Int64(options.flushBytes))
    }

    private func append(_ hash: SHA256.Value, codec: ChunkCodec, rawLength: Int, payload: UnsafeRawBufferPointer, _ s: inout State) throws {
        if s.pack == nil { try openPack(&s) }
        let total = PackFormat.recordHeaderSize + payload.count
        let offset = s.packSize
        var header = (UInt64(0), UInt64(0), UInt64(0), UInt64(0), UInt64(0), UInt64(0), UInt64(0))
        try withUnsafeMutableBytes(of: &header) { h in
            PackFormat.encode(
                .init(
                    codec: codec, rawLength: rawLength, storedLength: payload.count, hash: hash,
                    checksum: PackFormat.checksum(payload)), into: h)
            do {
                try s.pack!.write(UnsafeRawBufferPointer(h), payload, at: offset)
            } catch {
                // A short write (disk full) must not leave bytes that later records would follow.
                try? s.pack!.truncate(to: offset)
                throw error
            }
        }
        s.packSize += Int64(total)
        s.pendingChunks[hash] = ChunkLocation(
            pack: s.packID, offset: offset, storedLength: payload.count, rawLength: rawLength, codec: codec.rawValue)
        s.pendingOrder.append(hash)
        s.pendingBytes += total
        startWriteback(&s)
    }

    /// Starts writing the pack's newest bytes to the device every `writebackBytes`, so they go
    /// out while the writers hash and chunk instead of all at once in the group commit's fsync
    /// (measured on this disk: a 1 GiB HTTP push went from 7.9–9.2 s to 5.2–5.4 s).
    /// Best effort and never waited for: the fsync stays the durability point, and an error here
    /// is reported again by it (see `depot_start_writeback`). Not in S3 mode, whose staging
    /// files are never fsynced.
    private func startWriteback(_ s: inout State) {
        let from = max(s.writebackFrom, s.committedSize)
        guard options.writebackBytes > 0, files.objects == nil, let pack = s.pack,
            s.packSize - from >= Int64(options.writebackBytes)
        else { return }
        _ = depot_start_writeback(pack.fd, from, s.packSize - from)
        s.writebackFrom = s.packSize
    }

    /// Commits pending rows once they are due; returns true when it handed them off (the caller
    /// starts the committer once it has let go of the lock).
    private func flushIfNeeded(_ s: inout State) throws -> Bool {
        // S3 mode commits once per pack: a commit uploads the pack and seals it (objects are
        // immutable), so committing every `flushBytes` would halve the packs' size. Pending bytes
        // are on the local staging file, not in memory, so waiting costs no memory. Its commits
        // stay synchronous (no hand-off), so they need no `committing` lock either.
        let full = s.pack != nil && s.packSize >= options.packTargetSize
        let byRows = s.pendingRecipes.count >= 8192
        if files.objects != nil {
            if full || byRows { try flushLocked(&s) { _ in () } }
            return false
        }
        // One batch at a time: rows due meanwhile wait for the next step after it is committed
        // (the bytes are in the pack file, only their small index entries in memory).
        guard s.handedOff == nil, full || byRows || s.pendingBytes >= options.flushBytes else { return false }
        guard !s.pendingRecipes.isEmpty || !s.pendingChunks.isEmpty else {
            if full { try sealPack(&s) }
            return false
        }
        s.handedOff = Batch(
            chunks: s.pendingOrder.map { ($0, s.pendingChunks[$0]!) }, recipes: s.pendingRecipes, pack: s.pack, packID: s.packID,
            packSize: s.packSize, committedBefore: s.committedSize, seal: full)
        s.handedOffChunks = s.pendingChunks
        s.pendingChunks.removeAll(keepingCapacity: true)
        s.pendingOrder.removeAll(keepingCapacity: true)
        s.pendingRecipes.removeAll(keepingCapacity: true)
        s.pendingBytes = 0
        if full { s.pack = nil } // the next append opens a new pack
        return true
    }

    /// The committer: makes the handed-off batch durable, unless a synchronous flush took it first.
    private func commitHandedOff() {
        committing.withLock { _ in _ = drainHandedOff() }
    }

    /// Commits the handed-off batch, if there is one, holding `committing` (the caller's) but not
    /// the state lock, so writers go on appending meanwhile. nil: there was none. A failure is
    /// recorded against the batch's blobs (see `settle`) and returned.
    private func drainHandedOff() -> Result<Void, any Error>? {
        guard let (batch, active) = state.withLock({ s in s.handedOff.map { ($0, s.activeBlobs) } }) else { return nil }
        let outcome = persist(batch, active: active)
        state.withLock { s in settle(batch, outcome, &s) }
        switch outcome {
        case .committed: return .success(())
        case .syncFailed(let error), .commitFailed(let error): return .failure(error)
        }
    }

    enum BatchOutcome {
        /// Committed; the blobs that lost a reused chunk to another replica's GC were left out.
        case committed(lost: Set<Int64>)
        /// The fsync failed: the bytes may be gone, and nothing may follow them in the pack.
        case syncFailed(any Error)
        /// The bytes are durable but the transaction failed (it may even have committed: a
        /// connection lost in COMMIT), so the pack stays as it is.
        case commitFailed(any Error)
    }

    /// fsync, then the batch's transaction.
    private func persist(_ batch: Batch, active: Set<Int64>) -> BatchOutcome {
        do {
            if !batch.chunks.isEmpty { try batch.pack?.sync() }
        } catch {
            return .syncFailed(error)
        }
        var recipes = batch.recipes
        var lost = Set<Int64>()
        while true {
            do {
                try commit(batch.chunks, recipes, batch.packID, batch.packSize, active, false, .shared) { _ in () }
                return .committed(lost: lost)
            } catch let l as LostChunks {
                recipes.removeAll { l.blobs.contains($0.blob) }
                lost.formUnion(l.blobs)
            } catch {
                return .commitFailed(error)
            }
        }
    }

    /// Records a handed-off batch's outcome. On failure its blobs fail with the error, as do
    /// blobs whose rows behind the batch reuse one of its chunks (they would name bytes no row
    /// records); their rows are dropped. After a failed fsync the pack is also abandoned, as
    /// `abandonPending` describes, failing every row behind the batch in it: nothing may follow
    /// bytes whose fsync failed.
    private func settle(_ batch: Batch, _ outcome: BatchOutcome, _ s: inout State) {
        s.handedOff = nil
        s.handedOffChunks.removeAll(keepingCapacity: true)
        let error: any Error
        switch outcome {
        case .committed(let lost):
            for id in lost {
                s.activeBlobs.remove(id)
                s.lost.insert(id)
            }
            s.pendingRecipes.removeAll { lost.contains($0.blob) }
            if !batch.chunks.isEmpty, s.pack != nil, s.packID == batch.packID { s.committedSize = batch.packSize }
            // Bookkeeping: a pack left unsealed is sealed at the next open.
            if batch.seal { _ = try? db.write { try $0.sealPack(batch.packID) } }
            return
        case .syncFailed(let e), .commitFailed(let e):
            error = e
        }
        let reason = error as? DepotError ?? DepotError.storage("committing chunks failed: \(error)")
        var failing = Set(batch.recipes.map(\.blob))
        let gone = Set(batch.chunks.map(\.0))
        for r in s.pendingRecipes where gone.contains(r.entry.hash) { failing.insert(r.blob) }
        for id in failing where s.activeBlobs.remove(id) != nil { s.failed[id] = reason }
        s.pendingRecipes.removeAll { failing.contains($0.blob) }
        guard case .syncFailed = outcome else {
            if batch.seal { _ = try? db.write { try $0.sealPack(batch.packID) } }
            return
        }
        if s.pack != nil, s.packID == batch.packID {
            abandonPending(&s, reason: reason)
        } else {
            // The batch's pack was full and writers had moved on to a new one, which stays.
            if let pack = batch.pack { try? pack.truncate(to: batch.committedBefore) }
            _ = try? db.write { try $0.sealPack(batch.packID) }
        }
    }

    /// How a commit takes the chunk-sweep lock (see `CatalogLock.chunkSweep`).
    enum SweepLock {
        case shared
        case exclusive
    }

    /// Chunks that other replicas' garbage collection deleted after a writer found them stored
    /// and before it committed rows naming them: the blobs whose rows name them.
    struct LostChunks: Error {
        var blobs: Set<Int64>
    }

    /// Group commit: fsync the pack, then one transaction for all pending rows plus `extra`.
    ///
    /// In S3 mode the durability point is the object store instead of the disk: the pack is
    /// uploaded (conditional create; `upload`) before the transaction, which also seals it, so an
    /// acknowledged blob never depends on bytes that exist only on this machine.
    ///
    /// With replicas (PostgreSQL), a recipe row may name a chunk that was stored when the writer
    /// looked and deleted by another replica's GC since: the commit checks under the sweep lock
    /// and, if so, fails those blobs (their writers report it; their clients retry) and commits
    /// the rest. `owner`: the blob the caller is committing; if it is among them, the caller fails.
    private func flushLocked<T>(
        _ s: inout State, owner: Int64? = nil, sweep: SweepLock = .shared, extra: (any CatalogConnection) throws -> T
    ) throws -> T {
        var uploaded = false
        if !s.pendingChunks.isEmpty {
            do {
                if let objects = files.objects {
                    try upload(&s, to: objects.store)
                    uploaded = true
                } else {
                    try s.pack?.sync()
                }
            } catch {
                abandonPending(&s, reason: error as? DepotError ?? DepotError.storage("\(error)"))
                if let owner { s.failed.removeValue(forKey: owner) } // it hears the error now
                throw error
            }
        }
        let chunks = s.pendingOrder.map { ($0, s.pendingChunks[$0]!) }
        let packID = s.packID
        let packSize = s.packSize
        var result: T
        while true {
            let recipes = s.pendingRecipes
            let active = s.activeBlobs
            do {
                result = try commit(chunks, recipes, packID, packSize, active, uploaded, sweep, extra)
                break
            } catch let lost as LostChunks {
                s.pendingRecipes.removeAll { lost.blobs.contains($0.blob) }
                for id in lost.blobs {
                    s.activeBlobs.remove(id)
                    s.lost.insert(id)
                }
                if let owner, lost.blobs.contains(owner) { throw Self.lostError(owner) }
            } catch  where uploaded {
                // The object is up but no row names it: abandon the batch (its blobs fail) and let GC
                // delete row and object, rather than retrying, which would find the key taken by our
                // own upload and leave that object behind.
                abandonPending(&s, reason: error as? DepotError ?? DepotError.storage("\(error)"))
                if let owner { s.failed.removeValue(forKey: owner) }
                throw error
            }
        }
        s.pendingChunks.removeAll(keepingCapacity: true)
        s.pendingOrder.removeAll(keepingCapacity: true)
        s.pendingRecipes.removeAll(keepingCapacity: true)
        s.pendingBytes = 0
        if !chunks.isEmpty { s.committedSize = packSize }
        if uploaded {
            // Sealed in the transaction; the staging copy is not needed any more.
            try? FileSystem.remove(files.path(packID))
            s.pack = nil
        } else if s.packSize >= options.packTargetSize {
            // Sealing is bookkeeping: the batch is committed whatever happens to it (a pack left
            // unsealed is sealed at the next open).
            try? sealPack(&s)
        }
        return result
    }

    static func lostError(_ id: Int64) -> DepotError {
        DepotError.storage(
            "blob write \(id) failed: a stored chunk it reused was deleted by garbage collection on another replica meanwhile; retry")
    }

    /// The group commit's transaction: the chunk and recipe rows, the pack's size (and in S3 mode
    /// its seal), the writers' touches and `extra`.
    private func commit<T>(
        _ chunks: [(SHA256.Value, ChunkLocation)], _ recipes: [(blob: Int64, entry: RecipeEntry)], _ packID: Int64, _ packSize: Int64,
        _ active: Set<Int64>, _ uploaded: Bool, _ sweep: SweepLock, _ extra: (any CatalogConnection) throws -> T
    ) throws -> T {
        try db.write { conn -> T in
            if conn.dialect == .postgres {
                // First, before any row lock, so a sweep and a commit never wait on each other's rows.
                switch sweep {
                case .exclusive: try conn.lock(.chunkSweep)
                case .shared: if !recipes.isEmpty { try conn.lockShared(.chunkSweep) }
                }
                var reused = Set(recipes.map(\.entry.hash))
                for (hash, _) in chunks { reused.remove(hash) }
                if !reused.isEmpty {
                    let missing = try conn.missingChunks(reused)
                    if !missing.isEmpty { throw LostChunks(blobs: Set(recipes.filter { missing.contains($0.entry.hash) }.map(\.blob))) }
                }
            }
            try conn.insertChunks(chunks)
            if !chunks.isEmpty { try conn.setPack(packID, committedSize: packSize) }
            if uploaded, try !conn.sealUploadedPack(packID) {
                throw DepotError.storage("pack \(packID) was reclaimed by GC as an abandoned upload before its rows committed; retry")
            }
            try conn.appendRecipes(recipes)
            let touched = Set(recipes.map(\.blob))
            let now = Self.now()
            for id in touched where active.contains(id) { try conn.touchBlob(id, now: now) }
            return try extra(conn)
        }
    }

    /// After a failed fsync the kernel may have dropped the pending bytes (Linux marks the dirty
    /// pages clean and reports the error once), and a retried fsync can report success anyway:
    /// the PostgreSQL "fsyncgate" lesson. So nothing pending may ever be committed, and nothing
    /// may be appended after those bytes either. The pack is abandoned: sealed in the catalog (no
    /// writer returns to it; compaction may reclaim it), its unacknowledged tail cut back to the
    /// committed size now if possible (else at the next open), and the next append starts a new
    /// pack. Every blob with pending recipe rows fails; its writer's client gets the error.
    private func abandonPending(_ s: inout State, reason: DepotError) {
        for r in s.pendingRecipes where s.activeBlobs.remove(r.blob) != nil { s.failed[r.blob] = reason }
        s.pendingChunks.removeAll()
        s.pendingOrder.removeAll()
        s.pendingRecipes.removeAll()
        s.pendingBytes = 0
        if let pack = s.pack {
            let id = s.packID
            if files.objects != nil {
                // Nothing of it was committed; GC deletes the row (and an object, should the upload
                // have completed after all).
                try? FileSystem.remove(files.path(id))
            } else {
                try? pack.truncate(to: s.committedSize)
            }
            // Best effort: a pack left unsealed is sealed at the next open, and `currentPack`
            // no longer names it, so compaction and this appender leave it alone until then.
            _ = try? db.write { try $0.sealPack(id) }
        }
        s.pack = nil
    }

    private func openPack(_ s: inout State) throws {
        let id = try db.write { try $0.createPack(committedSize: 0, now: Self.now()) }
        if files.objects != nil {
            // A staging file: scratch until uploaded, so nothing is fsynced.
            try FileSystem.createDirectory(files.root + "/staging")
            let file = try PosixFile(path: files.path(id), mode: .createExclusive)
            try PackFormat.fileMagic.withUnsafeBytes { try file.write($0) }
            try db.write { try $0.setPack(id, committedSize: Int64(PackFormat.fileHeaderSize)) }
            s.pack = file
            s.packID = id
            s.packSize = Int64(PackFormat.fileHeaderSize)
            s.committedSize = s.packSize
            s.writebackFrom = s.packSize
            return
        }
        let path = files.path(id)
        let dir = String(path[..<path.lastIndex(of: "/")!])
        let newDirectory = !FileSystem.isDirectory(dir)
        try FileSystem.createDirectory(dir)
        if newDirectory { try FileSystem.syncDirectory(files.root + "/packs") }
        let file = try PosixFile(path: path, mode: .createExclusive)
        try PackFormat.fileMagic.withUnsafeBytes { try file.write($0) }
        try file.sync()
        try FileSystem.syncDirectory(dir)
        try db.write { try $0.setPack(id, committedSize: Int64(PackFormat.fileHeaderSize)) }
        s.pack = file
        s.packID = id
        s.packSize = Int64(PackFormat.fileHeaderSize)
        s.committedSize = s.packSize
        s.writebackFrom = s.packSize
    }

    /// Times in a row a pack may find its object key taken before the commit gives up.
    static let maxKeyConflicts = 16

    /// Uploads the current pack as an object that must not exist yet (S3 mode). A key another
    /// writer took (a second catalog on the same prefix, a catalog restored from a backup) is never
    /// overwritten: the pack moves to a fresh id, its pending locations with it, and goes up again.
    private func upload(_ s: inout State, to store: any PackObjectStore) throws {
        guard let file = s.pack else { return }
        for _ in 0..<Self.maxKeyConflicts {
            do {
                try store.create(key: ObjectPacks.key(s.packID), from: file, size: s.packSize)
                return
            } catch is PackObjectConflict {
                let old = s.packID
                let new = try db.write { try $0.createPack(committedSize: Int64(PackFormat.fileHeaderSize), now: Self.now()) }
                try FileSystem.rename(files.path(old), files.path(new))
                for (hash, location) in s.pendingChunks {
                    var moved = location
                    moved.pack = new
                    s.pendingChunks[hash] = moved
                }
                s.packID = new
                try db.write { try $0.deletePack(old) }
            }
        }
        throw DepotError.storage(
            """
            \(Self.maxKeyConflicts) pack keys in a row were already taken in \(store.location) (nothing was overwritten): another \
            catalog writes under the same prefix (give each store its own storage.s3.prefix), or this catalog was restored from \
            a backup older than the bucket's contents
            """)
    }

    private func sealPack(_ s: inout State) throws {
        guard s.pack != nil else { return }
        let id = s.packID
        try db.write { try $0.sealPack(id) }
        s.pack = nil
    }

    // MARK: garbage collection

    /// The current pack id (never compacted), or nil.
    var currentPack: Int64? { state.withLock { $0.pack == nil ? nil : $0.packID } }

    /// Flushes, then runs `body` with the catalog while no chunk can be referenced or stored.
    func exclusive<T>(_ body: (any CatalogConnection, _ activeBlobs: Set<Int64>) throws -> T) throws -> T {
        try committing.withLock { _ in
            try drainHandedOff()?.get()
            return try state.withLock { s in
                let active = s.activeBlobs
                s.sweeps += 1
                return try flushLocked(&s, sweep: .exclusive) { conn in try body(conn, active) }
            }
        }
    }

    /// Seals the current pack if fewer than `liveBytes` of its bytes are live, so compaction
    /// can reclaim it. Returns whether it sealed.
    func sealCurrent(ifLiveBelow fraction: Double, usage: [Int64: (bytes: Int64, chunks: Int)]) throws -> Bool {
        try state.withLock { s in
            guard s.pack != nil, s.pendingChunks.isEmpty, s.handedOff == nil else { return false }
            let live = usage[s.packID]?.bytes ?? 0
            let payload = max(s.packSize - Int64(PackFormat.fileHeaderSize), 1)
            guard Double(live) / Double(payload) < fraction else { return false }
            try sealPack(&s)
            return true
        }
    }

    /// Seals the current pack (used on close).
    func close() throws {
        try committing.withLock { _ in
            try drainHandedOff()?.get()
            try state.withLock { s in
                try flushLocked(&s) { _ in () }
                try sealPack(&s)
            }
        }
    }
}
