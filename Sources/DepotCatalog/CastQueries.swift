import DepotCore

/// A chunk stored as the cast of stored fp32 bytes (`chunk_casts`, migration 15): its bytes are
/// `kind.cast(sources[0..]…)` starting `sourceOffset` bytes into the first source, `skip` bytes
/// of the first cast value dropped, `rawLength` bytes in all.
public struct CastRecord: Sendable, Equatable {
    public var kind: UInt8
    public var rawLength: Int
    public var skip: Int
    public var sourceOffset: Int
    /// Chunks in `chunks`, in order.
    public var sources: [SHA256.Value]

    public init(kind: UInt8, rawLength: Int, skip: Int, sourceOffset: Int, sources: [SHA256.Value]) {
        self.kind = kind
        self.rawLength = rawLength
        self.skip = skip
        self.sourceOffset = sourceOffset
        self.sources = sources
    }
}

/// Where an fp32 tensor whose print matched lies: in blob `blob` (complete), from `offset`.
public struct TensorSource: Sendable, Equatable {
    public var blob: BlobRecord
    public var offset: Int64

    public init(blob: BlobRecord, offset: Int64) {
        self.blob = blob
        self.offset = offset
    }
}

/// Why a cast was not recorded.
public enum CastRefusal: Sendable, Equatable {
    /// The chunk is neither in `chunks` nor a cast any more (GC deleted it meanwhile).
    case gone
    /// The chunk is itself the source of a cast (a cast of a cast is never stored).
    case isSource
    /// A source is not a plain chunk (missing or a cast).
    case sourceUnusable
}

/// The queries of cast-aware deduplication (`DepotStore/CastChunks.swift`).
extension CatalogConnection {
    /// The raw length of a stored chunk, plain or cast; nil when the store lacks it. What writers
    /// ask before storing a chunk: a cast chunk is as present as any other.
    public func chunkLength(_ hash: SHA256.Value) throws -> Int? {
        try first(
            "SELECT raw_length FROM chunks WHERE hash = ? UNION ALL SELECT raw_length FROM chunk_casts WHERE hash = ? LIMIT 1", .hash(hash),
            .hash(hash)
        ) { Int($0.int(0)) }
    }

    /// The cast record of `hash`, if it is stored as a cast.
    public func chunkCast(_ hash: SHA256.Value) throws -> CastRecord? {
        let found = try first("SELECT kind, raw_length, skip, source_offset FROM chunk_casts WHERE hash = ?", .hash(hash)) {
            CastRecord(
                kind: UInt8(truncatingIfNeeded: $0.int(0)), rawLength: Int($0.int(1)), skip: Int($0.int(2)), sourceOffset: Int($0.int(3)),
                sources: [])
        }
        guard var record = found else { return nil }
        try query("SELECT source_hash FROM chunk_cast_sources WHERE hash = ? ORDER BY seq", .hash(hash)) {
            if let h = $0.hash(0) { record.sources.append(h) }
        }
        return record
    }

    /// Records chunk `hash` as a cast and drops its plain row (whose record becomes dead space
    /// in its pack, for compaction). Refused when the chunk is gone, is a cast's source, or a
    /// source is not a plain chunk (a plain row and no cast row). A chunk that is already a cast
    /// only loses a plain row it may have gained since (stored twice by writers racing), unless
    /// that row is some cast's source. The caller holds `CatalogLock.chunkSweep` on PostgreSQL
    /// (`lockCasts`), so sweeps and other casts' checks see this transaction whole.
    public func recordCast(_ hash: SHA256.Value, _ record: CastRecord, now: Int64) throws -> CastRefusal? {
        let isSource = try first("SELECT 1 FROM chunk_cast_sources WHERE source_hash = ? LIMIT 1", .hash(hash), map: { _ in true }) == true
        if try first("SELECT 1 FROM chunk_casts WHERE hash = ?", .hash(hash), map: { _ in true }) == true {
            if isSource { return .isSource }
            try run("DELETE FROM chunks WHERE hash = ?", .hash(hash))
            return nil
        }
        guard try chunkLocation(hash) != nil else { return .gone }
        if isSource { return .isSource }
        for s in Set(record.sources) {
            if try s == hash || chunkLocation(s) == nil
                || first("SELECT 1 FROM chunk_casts WHERE hash = ?", .hash(s), map: { _ in true }) == true
            {
                return .sourceUnusable
            }
        }
        try run(
            "INSERT INTO chunk_casts(hash, raw_length, kind, skip, source_offset, created_at) VALUES(?,?,?,?,?,?)", .hash(hash),
            .int(Int64(record.rawLength)), .int(Int64(record.kind)), .int(Int64(record.skip)), .int(Int64(record.sourceOffset)), .int(now))
        for (i, s) in record.sources.enumerated() {
            try run("INSERT INTO chunk_cast_sources(hash, seq, source_hash) VALUES(?,?,?)", .hash(hash), .int(Int64(i)), .hash(s))
        }
        try run("DELETE FROM chunks WHERE hash = ?", .hash(hash))
        return nil
    }

    /// Takes the lock that orders cast changes with GC's sweep and with each other (PostgreSQL;
    /// SQLite's writers are serialized anyway). Call first in the transaction.
    public func lockCasts() throws {
        if dialect == .postgres { try lock(.chunkSweep) }
    }

    /// Deletes cast chunks no recipe names, and cast rows made redundant by a plain row of the
    /// same chunk (a writer stored it again; the plain record serves it), with their source rows;
    /// returns how many. Runs in GC's sweep before `deleteUnreferencedChunks`, so their sources
    /// are free in the same sweep.
    public func deleteUnreferencedCasts() throws -> Int {
        let doomed = """
            SELECT c.hash FROM chunk_casts c WHERE NOT EXISTS (SELECT 1 FROM recipes r WHERE r.chunk_hash = c.hash)
                OR (EXISTS (SELECT 1 FROM chunks p WHERE p.hash = c.hash)
                    AND NOT EXISTS (SELECT 1 FROM chunk_cast_sources s WHERE s.source_hash = c.hash))
            """
        try run("DELETE FROM chunk_cast_sources WHERE hash IN (\(doomed))")
        try run("DELETE FROM chunk_casts WHERE hash IN (\(doomed))")
        let count = changes
        // Source rows whose cast is gone (none should be; they would keep their sources forever).
        try run("DELETE FROM chunk_cast_sources WHERE NOT EXISTS (SELECT 1 FROM chunk_casts c WHERE c.hash = chunk_cast_sources.hash)")
        return count
    }

    /// Casts that a chunk no recipe names is a source of (its fp32 file was deleted): GC stores
    /// them as plain chunks again (`ChunkStore.materializeCasts`), so that the source can go.
    /// In hash order after `after` (pages that skip what could not be made plain).
    public func castsWithUnreferencedSources(after: SHA256.Value?, limit: Int) throws -> [SHA256.Value] {
        var out: [SHA256.Value] = []
        let start = after ?? SHA256.Value(a: 0, b: 0, c: 0, d: 0)
        try query(
            """
            SELECT DISTINCT s.hash FROM chunk_cast_sources s
            WHERE s.hash > ? AND NOT EXISTS (SELECT 1 FROM recipes r WHERE r.chunk_hash = s.source_hash) ORDER BY s.hash LIMIT ?
            """, .hash(start), .int(Int64(limit))
        ) { if let h = $0.hash(0) { out.append(h) } }
        return out
    }

    /// Drops cast `hash` (and its source rows) once it has a plain row again; false otherwise.
    public func dropCastNowPlain(_ hash: SHA256.Value) throws -> Bool {
        guard try chunkLocation(hash) != nil else { return false }
        try run("DELETE FROM chunk_cast_sources WHERE hash = ?", .hash(hash))
        try run("DELETE FROM chunk_casts WHERE hash = ?", .hash(hash))
        return true
    }

    /// `depot fsck --repair` after lost chunk rows were dropped: drops the casts one of whose
    /// sources has no plain row any more (they can never be decoded) and returns how many, with
    /// the complete blobs that named them (now damaged: their bytes must be pushed again).
    public func dropCastsWithMissingSources() throws -> (count: Int, blobs: Set<Digest>) {
        var hashes: [SHA256.Value] = []
        // A cast that has a plain row again is served by it: not lost (its cast rows go at GC).
        try query(
            """
            SELECT DISTINCT s.hash FROM chunk_cast_sources s WHERE NOT EXISTS (SELECT 1 FROM chunks c WHERE c.hash = s.source_hash)
                AND NOT EXISTS (SELECT 1 FROM chunks p WHERE p.hash = s.hash)
            """
        ) { if let h = $0.hash(0) { hashes.append(h) } }
        var blobs = Set<Digest>()
        for h in hashes {
            blobs.formUnion(try self.blobs(containing: h))
            try run("DELETE FROM chunk_cast_sources WHERE hash = ?", .hash(h))
            try run("DELETE FROM chunk_casts WHERE hash = ?", .hash(h))
        }
        return (hashes.count, blobs)
    }

    /// Every cast chunk's hash, in hash order (`depot fsck`).
    public func castHashes() throws -> [SHA256.Value] {
        var out: [SHA256.Value] = []
        try query("SELECT hash FROM chunk_casts ORDER BY hash") { if let h = $0.hash(0) { out.append(h) } }
        return out
    }

    /// Number of cast chunks and the bytes they stand for (`depot stats`).
    public func castCounts() throws -> (chunks: Int, rawBytes: Int64) {
        try first("SELECT COUNT(*), COALESCE(SUM(raw_length), 0) FROM chunk_casts") { (Int($0.int(0)), $0.int(1)) } ?? (0, 0)
    }

    // MARK: scanning blobs

    /// The newest blob id (0 when there is none): a scan goes no further than the blobs that
    /// existed when it started.
    public func newestBlobID() throws -> Int64 {
        try first("SELECT COALESCE(MAX(id), 0) FROM blobs") { $0.int(0) } ?? 0
    }

    /// Complete blobs not yet scanned for casts with ids in `(after, through]`, oldest first.
    public func blobsToScanForCasts(after: Int64, through: Int64, limit: Int) throws -> [BlobRecord] {
        var out: [BlobRecord] = []
        try query(
            """
            SELECT id, digest, size, chunker FROM blobs WHERE casts_scanned = 0 AND state = 1 AND id > ? AND id <= ?
            ORDER BY id LIMIT ?
            """, .int(after), .int(through), .int(Int64(limit))
        ) {
            guard let h = $0.hash(1) else { return }
            out.append(BlobRecord(id: $0.int(0), digest: Digest(bytes: h), size: $0.int(2), chunker: $0.text(3)))
        }
        return out
    }

    public func markScannedForCasts(blob id: Int64) throws {
        try run("UPDATE blobs SET casts_scanned = 1 WHERE id = ?", .int(id))
    }

    /// Records that blob `blob` has a tensor at `offset` with print `print`: an fp32 tensor whose
    /// cast has it (`source`), or a 16-bit tensor.
    public func addTensorPrint(_ print: [UInt8], blob: Int64, offset: Int64, source: Bool) throws {
        try run(
            "INSERT INTO tensor_prints(print, blob_id, data_offset, source) VALUES(?,?,?,?) ON CONFLICT DO NOTHING", .blob(print),
            .int(blob), .int(offset), .int(source ? 1 : 0))
    }

    /// fp32 tensors (in other complete blobs) whose cast has print `print`, at most `limit`.
    public func tensorSources(print: [UInt8], excluding blob: Int64, limit: Int) throws -> [TensorSource] {
        try tensors(print: print, source: true, excluding: blob, limit: limit)
    }

    /// 16-bit tensors with print `print` in other blobs scanned already (which found no source
    /// then, or not for every chunk), at most `limit`.
    public func tensorTargets(print: [UInt8], excluding blob: Int64, limit: Int) throws -> [TensorSource] {
        try tensors(print: print, source: false, excluding: blob, limit: limit)
    }

    private func tensors(print: [UInt8], source: Bool, excluding blob: Int64, limit: Int) throws -> [TensorSource] {
        var out: [TensorSource] = []
        try query(
            """
            SELECT b.id, b.digest, b.size, b.chunker, p.data_offset FROM tensor_prints p JOIN blobs b ON b.id = p.blob_id
            WHERE p.print = ? AND p.source = ? AND p.blob_id <> ? AND b.state = 1 AND (p.source = 1 OR b.casts_scanned = 1)
            ORDER BY p.blob_id, p.data_offset LIMIT ?
            """, .blob(print), .int(source ? 1 : 0), .int(blob), .int(Int64(limit))
        ) {
            guard let h = $0.hash(1) else { return }
            out.append(
                TensorSource(
                    blob: BlobRecord(id: $0.int(0), digest: Digest(bytes: h), size: $0.int(2), chunker: $0.text(3)), offset: $0.int(4)))
        }
        return out
    }
}
