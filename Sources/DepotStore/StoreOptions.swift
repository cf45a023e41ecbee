import DepotCatalog
import DepotCore

/// Tunables of a chunk store. Defaults match `config/depot.yaml`.
public struct StoreOptions: Sendable {
    public var chunker: ChunkerParameters = .v1
    public var compression = CompressionPolicy()
    /// A pack is sealed and a new one started once it reaches this size.
    public var packTargetSize: Int64 = 64 << 20
    /// Pending (appended, not yet indexed) bytes that trigger a group commit.
    public var flushBytes: Int = 32 << 20
    /// Appended pack bytes after which their writeback to the device starts, without waiting
    /// (`sync_file_range`), so the group commit's fsync finds them mostly written; 0: never
    /// (the fsync then writes all `flushBytes` while the appender's lock is held).
    public var writebackBytes: Int = 4 << 20
    /// Unfinished writes untouched for longer than this are garbage.
    public var writeGraceSeconds: Int64 = 24 * 3600
    /// Packs whose live fraction is below this are compacted by GC.
    public var compactBelow: Double = 0.5
    /// Whether registry GC first scans new blobs for fp16/bf16 tensors that are exact casts of
    /// stored fp32 ones and stores those chunks as casts (`CastChunks.swift`, `storage.cast_dedup`).
    public var castDedup = true
    /// Chunks handed to the hashing/storing stage of one writer before it blocks (bounds memory).
    public var writerQueueDepth: Int = 8

    /// What every read of a chunk checks. `.checksum`: the record's CRC-32C (memory speed;
    /// detects media damage). `.sha256`: also re-hash the chunk (its identity was verified on
    /// write; fsck always does this).
    public var readVerification: ReadVerification = .checksum

    /// How long a catalog statement waits for a lock held by another connection or process
    /// before the operation fails with a clear "retry" error (nothing half-done is kept).
    public var catalogBusyTimeoutMilliseconds = 10_000

    /// Where the catalog lives; nil: `catalog.db` (SQLite) in the storage root.
    public var catalog: CatalogLocation?

    /// S3 mode only: bytes of pack records kept in memory once fetched (hot chunks), so repeated
    /// reads do not go back to the object store (`storage.s3.cache_mib`).
    public var recordCacheBytes = 256 << 20

    /// Threads that prepare blob read batches, shared by all readers (`ReadWorkers`); nil: 4 a
    /// core, 8 to 64, or 64 in S3 mode (`storage.read_threads`).
    public var readThreads: Int?

    public init() {}
}

/// How reads verify chunks (see `StoreOptions.readVerification`).
public enum ReadVerification: String, Sendable, Codable {
    case checksum
    case sha256
}
