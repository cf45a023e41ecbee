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
final class PackAppender: Sendable {
    struct State {
        var pack: PosixFile?
        var packID: Int64 = 0
        var packSize: Int64 = 0
        /// The current pack's `committed_size`: bytes fsynced and recorded in the catalog.
        var committedSize: Int64 = 0
        var pendingChunks: [SHA256.Value: ChunkLocation] = [:]
        var pendingOrder: [SHA256.Value] = []
        var pendingRecipes: [(blob: Int64, entry: RecipeEntry)] = []
        var pendingBytes = 0
        var activeBlobs: Set<Int64> = []
        /// Blobs failed because a chunk they reused was deleted by another replica's GC.
        var lost: Set<Int64> = []
    }

    enum Outcome {
        case stored(storedBytes: Int, codec: ChunkCodec)
        case reused
    }

    private let state = Locked(State())
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
        try state.withLock { s in
            guard s.activeBlobs.contains(id) else {
                if s.lost.remove(id) != nil { throw Self.lostError(id) }
                throw DepotError.storage("blob write \(id) failed: its data could not be made durable")
            }
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

    /// Forgets an unfinished blob and its recipe rows. Its new chunks become garbage for GC.
    func abortBlob(_ id: Int64) {
        state.withLock { s in
            s.pendingRecipes.removeAll { $0.blob == id }
            s.activeBlobs.remove(id)
            s.lost.remove(id)
        }
        _ = try? db.write { try $0.deleteBlob(id: id) }
    }

    /// Commits everything pending now (compaction does it before deleting packs; tests use it).
    func checkpoint() throws {
        try state.withLock { s in try flushLocked(&s) { _ in () } }
    }

    // MARK: chunks

    /// Adds `entry` (whose bytes are `bytes`) to blob `blob`'s recipe, storing the chunk if the
    /// store lacks it. Compression runs outside the lock.
    func store(
        _ entry: RecipeEntry, of blob: Int64, bytes: UnsafeRawBufferPointer, elementWidth: Int,
        compressor: ChunkCompressor, tryCompression: Bool = true, timer: PushStageTimer? = nil
    ) throws -> Outcome {
        let looked = ContinuousClock.now
        if try state.withLock({ s in try referenceIfKnown(entry, blob, &s) }) {
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
            outcome = try state.withLock { s in
                if try referenceIfKnown(entry, blob, &s) { return .reused } // also checks the blob is still active
                try append(entry.hash, codec: codec, rawLength: bytes.count, payload: payload, &s)
                s.pendingRecipes.append((blob, entry))
                try flushIfNeeded(&s)
                return .stored(storedBytes: payload.count, codec: codec)
            }
        }
        return outcome
    }

    /// Adds an already encoded, verified chunk (received from a client) to blob `blob`, storing
    /// the payload as is unless the store has the chunk.
    func storeEncoded(_ entry: RecipeEntry, of blob: Int64, codec: ChunkCodec, payload: UnsafeRawBufferPointer) throws -> Outcome {
        try state.withLock { s in
            if try referenceIfKnown(entry, blob, &s) { return .reused }
            try append(entry.hash, codec: codec, rawLength: entry.length, payload: payload, &s)
            s.pendingRecipes.append((blob, entry))
            try flushIfNeeded(&s)
            return .stored(storedBytes: payload.count, codec: codec)
        }
    }

    /// Adds a stored chunk to blob `blob`'s recipe without its bytes. False when the store lacks
    /// the chunk; throws when the stored chunk's length differs from the entry's.
    func reference(_ entry: RecipeEntry, of blob: Int64) throws -> Bool {
        try state.withLock { s in
            guard s.activeBlobs.contains(blob) else { throw DepotError.storage("blob write \(blob) was aborted") }
            let length = try s.pendingChunks[entry.hash]?.rawLength ?? db.read({ try $0.chunkLocation(entry.hash) })?.rawLength
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
        try state.withLock { s in
            guard s.activeBlobs.contains(blob) else {
                if s.lost.remove(blob) != nil { throw Self.lostError(blob) }
                throw DepotError.storage("blob write \(blob) failed: its data could not be made durable")
            }
            try flushLocked(&s, owner: blob) { conn in
                try conn.touchBlob(blob, now: Self.now())
                try commit(conn)
            }
            s.activeBlobs.remove(blob)
        }
    }

    /// Re-appends an already encoded record (GC compaction) if the chunk is still indexed at `old`.
    func relocate(_ hash: SHA256.Value, from old: ChunkLocation, codec: ChunkCodec, payload: UnsafeRawBufferPointer) throws {
        try state.withLock { s in
            guard s.pendingChunks[hash] == nil, try db.read({ try $0.chunkLocation(hash) }) == old else { return }
            try append(hash, codec: codec, rawLength: old.rawLength, payload: payload, &s)
            try flushIfNeeded(&s)
        }
    }

    private func referenceIfKnown(_ entry: RecipeEntry, _ blob: Int64, _ s: inout State) throws -> Bool {
        guard s.activeBlobs.contains(blob) else {
            throw s.lost.contains(blob) ? Self.lostError(blob) : DepotError.storage("blob write \(blob) was aborted")
        }
        if s.pendingChunks[entry.hash] == nil {
            guard try db.read({ try $0.chunkLocation(entry.hash) }) != nil else { return false }
        }
        s.pendingRecipes.append((blob, entry))
        if s.pendingRecipes.count >= 8192 { try flushLocked(&s) { _ in () } }
        return true
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
    }

    private func flushIfNeeded(_ s: inout State) throws {
        // S3 mode commits once per pack: a commit uploads the pack and seals it (objects are
        // immutable), so committing every `flushBytes` would halve the packs' size. Pending bytes
        // are on the local staging file, not in memory, so waiting costs no memory.
        let byBytes = files.objects == nil && s.pendingBytes >= options.flushBytes
        if byBytes || s.packSize >= options.packTargetSize {
            try flushLocked(&s) { _ in () }
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
                abandonPending(&s)
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
                abandonPending(&s)
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
            for (hash, loc) in chunks { try conn.insertChunk(hash, at: loc) }
            if !chunks.isEmpty { try conn.setPack(packID, committedSize: packSize) }
            if uploaded, try !conn.sealUploadedPack(packID) {
                throw DepotError.storage("pack \(packID) was reclaimed by GC as an abandoned upload before its rows committed; retry")
            }
            var touched = Set<Int64>()
            for r in recipes {
                try conn.appendRecipe(blob: r.blob, r.entry)
                touched.insert(r.blob)
            }
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
    private func abandonPending(_ s: inout State) {
        for r in s.pendingRecipes { s.activeBlobs.remove(r.blob) }
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
        try state.withLock { s in
            let active = s.activeBlobs
            return try flushLocked(&s, sweep: .exclusive) { conn in try body(conn, active) }
        }
    }

    /// Seals the current pack if fewer than `liveBytes` of its bytes are live, so compaction
    /// can reclaim it. Returns whether it sealed.
    func sealCurrent(ifLiveBelow fraction: Double, usage: [Int64: (bytes: Int64, chunks: Int)]) throws -> Bool {
        try state.withLock { s in
            guard s.pack != nil, s.pendingChunks.isEmpty else { return false }
            let live = usage[s.packID]?.bytes ?? 0
            let payload = max(s.packSize - Int64(PackFormat.fileHeaderSize), 1)
            guard Double(live) / Double(payload) < fraction else { return false }
            try sealPack(&s)
            return true
        }
    }

    /// Seals the current pack (used on close).
    func close() throws {
        try state.withLock { s in
            try flushLocked(&s) { _ in () }
            try sealPack(&s)
        }
    }
}
