import DepotCatalog
import DepotCore
import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// A content-addressed, chunked, deduplicated blob store under one storage root:
/// `catalog.db` (SQLite, WAL) holds the chunk index and blob recipes, `packs/` the chunk
/// bytes. Opening a store for writing takes an exclusive lock on the root and repairs what
/// a crash left behind (see `Recovery`).
public final class ChunkStore: Sendable {
    public let root: String
    public let options: StoreOptions
    public let catalog: Database
    public let readOnly: Bool
    let files: PackFiles
    let appender: PackAppender
    /// Stage times of the blob writes this process completed (`/metrics`).
    public let pushStages = PushStageMetrics()
    /// Bytes read out of this store for clients since it opened (`depot_store_read_bytes_total`):
    /// what `BlobReader`s returned (blob GETs and range reads, decoded) and the chunk records
    /// `records` returned (`depot pull`, `depot copy`; as stored). With
    /// `depot_http_sent_bytes_total`, how far reads run ahead of the sockets.
    public var readBytes: Int64 { readCounter.withLock { $0 } }
    let readCounter = Locked<Int64>(0)
    let compressors: CompressorPool
    /// The threads that prepare read batches for all of this store's `BlobReader`s.
    let readWorkers: ReadWorkers
    /// fp32 chunks decoded lately for cast chunks (`CastChunks.swift`): neighbouring casts share
    /// their boundary sources, which would otherwise be read and decompressed twice.
    let castSources = CastSourceCache(capacityBytes: 8 << 20)
    private let lockFD: Int32
    /// What opening repaired (pack tails cut, unknown pack files quarantined, ...), for logs.
    public let recovery: RecoveryReport
    /// S3 mode: packs whose object was found missing or short on open (`.report`), with why.
    let damagedObjects: [Int64: String]
    /// Where sealed packs live in S3 mode (nil: local files under `packs/`).
    public var objectStore: (any PackObjectStore)? { files.objects?.store }

    /// Format version of the storage root (`FORMAT` file).
    public static let formatVersion = 1

    /// Opens the store at `root`. With `create`, a missing root is created; otherwise it must
    /// exist and hold a store. Read-only opens take no lock and repair nothing.
    /// `ifDamaged` says what a writable open does when acknowledged data is missing or
    /// unreadable: refuse (the default, what serving needs), report it (`depot fsck`) or drop the
    /// lost index rows (`depot fsck --repair`); see `DamagePolicy`.
    /// `objects`: keep sealed packs in an object store (S3 mode) instead of under `packs/`; the
    /// root then holds the catalog (SQLite), the lock and staging copies of packs being written.
    public init(
        root: String, options: StoreOptions = StoreOptions(), create: Bool = false, readOnly: Bool = false,
        ifDamaged: DamagePolicy = .refuse, objects: (any PackObjectStore)? = nil
    ) throws {
        self.root = root
        self.options = options
        self.readOnly = readOnly
        let formatPath = root + "/FORMAT"
        if FileSystem.probe(root + "/" + StoreBackup.incompleteMarker) != .missing {
            throw DepotError.storage(
                "\(root) is an unfinished `depot backup` (it has \(StoreBackup.incompleteMarker)), not a store: delete it, "
                    + "and back up again")
        }
        if !FileSystem.isDirectory(root) {
            guard create, !readOnly else { throw DepotError.storage("storage root \(root) does not exist") }
            try FileSystem.createDirectory(root)
        }
        if readOnly {
            guard FileSystem.exists(formatPath) else { throw DepotError.storage("\(root) is not a Depot store (no FORMAT file)") }
        } else {
            guard FileSystem.isWritable(root) else { throw DepotError.storage("storage root \(root) is not writable") }
        }
        switch FileSystem.probe(formatPath) {
        case .missing:
            if !create { throw DepotError.storage("\(root) is not a Depot store (no FORMAT file); `depot serve` creates one") }
        case .failed(let code):
            // Not "missing": a store whose volume misbehaves must not be re-created over.
            throw DepotError.storage(
                "\(formatPath) is unreadable (\(FileSystem.Probe.errnoName(code))); "
                    + "if its volume is not mounted (or not readable), mount it (or fix its permissions) and restart")
        case .file, .directory, .other:
            try Self.checkFormat(formatPath)
        }
        if readOnly {
            lockFD = -1
        } else {
            lockFD = try Self.lock(root)
        }
        do {
            if !readOnly && FileSystem.probe(formatPath) == .missing {
                try FileSystem.createDirectory(root + "/packs")
                let file = try PosixFile(path: formatPath + ".tmp", mode: .createReadWrite)
                try file.truncate(to: 0)
                try Array("depot-store \(Self.formatVersion)\n".utf8).withUnsafeBytes { try file.write($0, at: 0) }
                try file.sync()
                try FileSystem.rename(formatPath + ".tmp", formatPath)
                try FileSystem.syncDirectory(root)
            }
            let location = options.catalog ?? Database.location(forPath: root + "/catalog.db")
            // A catalog file that vanished next to packs is refused before SQLite creates an empty
            // one; a PostgreSQL catalog without tables is caught by Recovery (no packs recorded).
            if !readOnly, case .sqlite = location { try Recovery.checkCatalogPresent(root: root) }
            catalog = try Database(location: location, readOnly: readOnly, busyTimeoutMilliseconds: options.catalogBusyTimeoutMilliseconds)
            files = PackFiles(root: root, objects: objects.map { ObjectPacks(store: $0, cacheBytes: options.recordCacheBytes) })
            appender = PackAppender(db: catalog, files: files, options: options)
            compressors = CompressorPool(maxChunk: options.chunker.maxSize)
            readWorkers = ReadWorkers(limit: max(1, options.readThreads ?? ReadWorkers.defaultLimit(objectStore: objects != nil)))
            if readOnly {
                (recovery, damagedObjects) = (RecoveryReport(), [:])
            } else if let packObjects = files.objects {
                (recovery, damagedObjects) = try Recovery.runObjects(
                    catalog: catalog, files: files, objects: packObjects, policy: ifDamaged)
            } else {
                (recovery, damagedObjects) = (try Recovery.run(catalog: catalog, files: files, policy: ifDamaged), [:])
            }
        } catch {
            if lockFD >= 0 { close(lockFD) }
            throw error
        }
    }

    deinit {
        if !readOnly { try? appender.close() }
        if lockFD >= 0 { close(lockFD) }
    }

    private static func checkFormat(_ path: String) throws {
        let file = try PosixFile(path: path, mode: .read)
        var buf = [UInt8](repeating: 0, count: 64)
        let n = try buf.withUnsafeMutableBytes { try file.readSome(into: $0) }
        let text = String(decoding: buf[0..<n], as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        guard text.hasPrefix("depot-store "), let v = Int(text.dropFirst("depot-store ".count)) else {
            throw DepotError.storage("\(path) is not a Depot store format file")
        }
        guard v <= formatVersion else {
            throw DepotError.storage("store format \(v) is newer than this build supports (\(formatVersion)); upgrade depot")
        }
    }

    private static func lock(_ root: String) throws -> Int32 {
        let path = root + "/LOCK"
        let fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw PosixFile.error("open", path) }
        if flock(fd, LOCK_EX | LOCK_NB) != 0 {
            var buf = [UInt8](repeating: 0, count: 32)
            let n = read(fd, &buf, 32)
            close(fd)
            let holder = n > 0 ? String(decoding: buf[0..<n], as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines) : "?"
            throw DepotError.storage("store \(root) is in use by another process (pid \(holder))")
        }
        let pid = Array("\(getpid())\n".utf8)
        _ = ftruncate(fd, 0)
        _ = pid.withUnsafeBytes { pwrite(fd, $0.baseAddress, $0.count, 0) }
        return fd
    }

    // MARK: blobs

    /// Starts writing a new blob. `planner` supplies format-aware boundaries (e.g. safetensors).
    public func makeWriter(planner: (any BoundaryPlanner)? = nil) throws -> BlobWriter {
        guard !readOnly else { throw DepotError.storage("store \(root) is open read-only") }
        return try BlobWriter(store: self, planner: planner)
    }

    /// A writer that goes on where another one (maybe in another process) checkpointed; see
    /// `WriterCheckpoint`.
    public func resumeWriter(planner: (any BoundaryPlanner)?, from checkpoint: WriterCheckpoint, after segments: [PriorSegment]) throws
        -> BlobWriter
    {
        guard !readOnly else { throw DepotError.storage("store \(root) is open read-only") }
        return try BlobWriter(store: self, planner: planner, resuming: checkpoint, after: segments)
    }

    /// The complete blob with `digest`, if stored.
    public func blob(_ digest: Digest) throws -> BlobRecord? {
        try catalog.read { try $0.blob(digest) }
    }

    public func contains(_ digest: Digest) throws -> Bool { try blob(digest) != nil }

    /// A streaming reader over `range` of a blob (the whole blob by default).
    public func reader(_ digest: Digest, range: Range<Int64>? = nil) throws -> BlobReader<[UInt8]> {
        try reader(digest, range: range, as: [UInt8].self)
    }

    /// A streaming reader whose batches are of type `Batch` (e.g. a network buffer).
    public func reader<Batch: ReadBatch>(_ digest: Digest, range: Range<Int64>? = nil, as: Batch.Type) throws -> BlobReader<Batch> {
        guard let record = try blob(digest) else { throw DepotError.blobUnknown("\(digest) is not stored") }
        let r = range ?? 0..<record.size
        guard r.lowerBound >= 0, r.upperBound <= record.size else {
            throw DepotError.rangeInvalid("range \(r.lowerBound)-\(r.upperBound - 1) is outside the blob (size \(record.size))")
        }
        return BlobReader(store: self, blob: record, range: r)
    }

    /// Declares a blob live: garbage collection keeps it (and its chunks).
    public func retain(_ digest: Digest, reason: String) throws {
        try catalog.write { try $0.addRoot(digest, reason: reason, now: PackAppender.now()) }
    }

    /// Withdraws a live declaration; the next GC may collect the blob.
    public func release(_ digest: Digest) throws {
        try catalog.write { try $0.removeRoot(digest) }
    }

    /// Store-wide counts.
    /// Sizes of the store. `exact` scans the index (`depot stats`); otherwise the counters kept
    /// by the catalog's triggers are read, in constant time (`/metrics`).
    public func stats(exact: Bool = true) throws -> StoreStats {
        let c = try catalog.read { exact ? try $0.storeCounts() : try $0.storeCounters() }
        return StoreStats(
            blobs: c.blobs, logicalBytes: c.logicalBytes, storedBytes: c.packBytes,
            chunks: c.chunks, chunkBytes: c.chunkRawBytes, chunkStoredBytes: c.chunkStoredBytes,
            packs: c.packs, unfinishedWrites: c.writing)
    }

    /// Chunks stored as casts of fp32 chunks (`CastChunks.swift`; not in `stats().chunks`) and
    /// the raw bytes they stand for, by scanning `chunk_casts` (`depot stats`).
    public func castStats() throws -> (chunks: Int, bytes: Int64) {
        let counts = try catalog.read { try $0.castCounts() }
        return (counts.chunks, counts.rawBytes)
    }
}

/// Sizes of a store, as printed by `depot stats --json`.
public struct StoreStats: Sendable, Codable, Equatable {
    /// Complete blobs, and the sum of their sizes (what clients see).
    public var blobs: Int
    public var logicalBytes: Int64
    /// Bytes of pack files on disk (what the store costs).
    public var storedBytes: Int64
    /// Unique chunks, their raw bytes and their bytes after compression.
    public var chunks: Int
    public var chunkBytes: Int64
    public var chunkStoredBytes: Int64
    public var packs: Int
    public var unfinishedWrites: Int

    enum CodingKeys: String, CodingKey {
        case blobs
        case logicalBytes = "logical_bytes"
        case storedBytes = "stored_bytes"
        case chunks
        case chunkBytes = "chunk_bytes"
        case chunkStoredBytes = "chunk_stored_bytes"
        case packs
        case unfinishedWrites = "unfinished_writes"
    }
}
