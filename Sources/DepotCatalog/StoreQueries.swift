import DepotCore

// The store's queries read rows by position, unlike the feature queries (`ResultRow.row`): they
// run once per chunk on every push, pull and fsck, where a name lookup per column is measurable,
// and each SELECT sits right above the code that reads it.

/// Where a chunk's record lives in the pack files.
public struct ChunkLocation: Sendable, Equatable {
    public var pack: Int64
    public var offset: Int64 // of the record header
    public var storedLength: Int // payload bytes after the header
    public var rawLength: Int
    public var codec: UInt8

    public init(pack: Int64, offset: Int64, storedLength: Int, rawLength: Int, codec: UInt8) {
        self.pack = pack
        self.offset = offset
        self.storedLength = storedLength
        self.rawLength = rawLength
        self.codec = codec
    }
}

/// One chunk of a blob's recipe: the bytes `[offset, offset+length)` of the blob are the chunk `hash`.
public struct RecipeEntry: Sendable, Equatable {
    public var offset: Int64
    public var length: Int
    public var hash: SHA256.Value

    public init(offset: Int64, length: Int, hash: SHA256.Value) {
        self.offset = offset
        self.length = length
        self.hash = hash
    }
}

/// A complete blob as the catalog knows it.
public struct BlobRecord: Sendable, Equatable {
    public var id: Int64
    public var digest: Digest
    public var size: Int64
    public var chunker: String

    public init(id: Int64, digest: Digest, size: Int64, chunker: String) {
        self.id = id
        self.digest = digest
        self.size = size
        self.chunker = chunker
    }
}

/// A pack file as the catalog knows it.
public struct PackRecord: Sendable, Equatable {
    public var id: Int64
    public var committedSize: Int64
    public var sealed: Bool
    /// GC decided to delete it (no index row names it) and may have unlinked the file already:
    /// `sealed = 2` in the catalog. Recovery finishes such a deletion; it is not an unknown pack.
    public var deleting: Bool
}

/// Typed queries over the chunk-store tables. All SQL of the store lives here.
extension CatalogConnection {
    // MARK: packs

    public func createPack(committedSize: Int64, now: Int64) throws -> Int64 {
        try first("INSERT INTO packs(committed_size, sealed, created_at) VALUES(?, 0, ?) RETURNING id", .int(committedSize), .int(now)) {
            $0.int(0)
        }!
    }

    public func setPack(_ id: Int64, committedSize: Int64) throws {
        try run("UPDATE packs SET committed_size = ? WHERE id = ?", .int(committedSize), .int(id))
    }

    public func sealPack(_ id: Int64) throws {
        try run("UPDATE packs SET sealed = 1 WHERE id = ?", .int(id))
    }

    /// GC's first step in deleting a pack (see `PackRecord.deleting`); only for a pack that no
    /// chunk row names, checked in the same transaction.
    public func markPackDeleting(_ id: Int64) throws {
        try run("UPDATE packs SET sealed = 2 WHERE id = ?", .int(id))
    }

    public func sealAllPacks() throws {
        try run("UPDATE packs SET sealed = 1 WHERE sealed = 0")
    }

    public func deletePack(_ id: Int64) throws {
        try run("DELETE FROM packs WHERE id = ?", .int(id))
    }

    public func packs() throws -> [PackRecord] {
        var out: [PackRecord] = []
        try query("SELECT id, committed_size, sealed FROM packs ORDER BY id") {
            out.append(PackRecord(id: $0.int(0), committedSize: $0.int(1), sealed: $0.int(2) != 0, deleting: $0.int(2) == 2))
        }
        return out
    }

    /// Live (indexed) bytes and chunk count of each pack, including record headers.
    public func packUsage(headerSize: Int) throws -> [Int64: (bytes: Int64, chunks: Int)] {
        var out: [Int64: (bytes: Int64, chunks: Int)] = [:]
        try query("SELECT pack_id, SUM(stored_length) + COUNT(*) * ?, COUNT(*) FROM chunks GROUP BY pack_id", .int(Int64(headerSize))) {
            out[$0.int(0)] = ($0.int(1), Int($0.int(2)))
        }
        return out
    }

    // MARK: chunks

    public func chunkLocation(_ hash: SHA256.Value) throws -> ChunkLocation? {
        try first("SELECT pack_id, offset, stored_length, raw_length, codec FROM chunks WHERE hash = ?", .hash(hash)) {
            ChunkLocation(
                pack: $0.int(0), offset: $0.int(1), storedLength: Int($0.int(2)), rawLength: Int($0.int(3)), codec: UInt8($0.int(4)))
        }
    }

    /// `chunkLocation` for many chunks, 256 per statement (one round trip each on PostgreSQL);
    /// a hash without a chunk row is absent from the result.
    public func chunkLocations(_ hashes: [SHA256.Value]) throws -> [SHA256.Value: ChunkLocation] {
        var out: [SHA256.Value: ChunkLocation] = [:]
        for start in stride(from: 0, to: hashes.count, by: 256) {
            let group = hashes[start..<min(hashes.count, start + 256)]
            let marks = Array(repeating: "?", count: group.count).joined(separator: ",")
            try queryArgs(
                "SELECT hash, pack_id, offset, stored_length, raw_length, codec FROM chunks WHERE hash IN (\(marks))",
                group.map { .hash($0) }
            ) {
                guard let h = $0.hash(0) else { return }
                out[h] = ChunkLocation(
                    pack: $0.int(1), offset: $0.int(2), storedLength: Int($0.int(3)), rawLength: Int($0.int(4)), codec: UInt8($0.int(5)))
            }
        }
        return out
    }

    /// Which of `hashes` have no chunk row, plain or cast.
    public func missingChunks(_ hashes: Set<SHA256.Value>) throws -> Set<SHA256.Value> {
        var missing = hashes
        let all = Array(hashes)
        for start in stride(from: 0, to: all.count, by: 256) {
            let group = all[start..<min(all.count, start + 256)]
            let marks = Array(repeating: "?", count: group.count).joined(separator: ",")
            // A cast chunk (`chunk_casts`) is as present as a plain one.
            try queryArgs(
                "SELECT hash FROM chunks WHERE hash IN (\(marks)) UNION ALL SELECT hash FROM chunk_casts WHERE hash IN (\(marks))",
                group.map { .hash($0) } + group.map { .hash($0) }
            ) {
                if let h = $0.hash(0) { missing.remove(h) }
            }
        }
        return missing
    }

    public func insertChunk(_ hash: SHA256.Value, at loc: ChunkLocation) throws {
        try run(
            """
            INSERT INTO chunks(hash, pack_id, offset, stored_length, raw_length, codec) VALUES(?,?,?,?,?,?)
            ON CONFLICT(hash) DO UPDATE SET pack_id = excluded.pack_id, offset = excluded.offset,
                stored_length = excluded.stored_length, raw_length = excluded.raw_length, codec = excluded.codec
            """,
            .hash(hash), .int(loc.pack), .int(loc.offset), .int(Int64(loc.storedLength)), .int(Int64(loc.rawLength)), .int(Int64(loc.codec))
        )
    }

    /// `insertChunk` for many chunks: the same rows, in multi-row statements. A hash given twice
    /// keeps its last location, as one statement per row would (PostgreSQL refuses a statement
    /// that updates one row twice).
    public func insertChunks(_ rows: [(SHA256.Value, ChunkLocation)]) throws {
        var last: [SHA256.Value: Int] = [:]
        for (i, row) in rows.enumerated() { last[row.0] = i }
        let unique = last.count == rows.count ? rows : rows.indices.filter { last[rows[$0].0] == $0 }.map { rows[$0] }
        var at = 0
        while unique.count - at >= StoreSQL.insertBatch {
            let group = unique[at..<(at + StoreSQL.insertBatch)]
            var args: [SQLValue] = []
            args.reserveCapacity(group.count * 6)
            for (hash, loc) in group {
                args += [
                    .hash(hash), .int(loc.pack), .int(loc.offset), .int(Int64(loc.storedLength)), .int(Int64(loc.rawLength)),
                    .int(Int64(loc.codec)),
                ]
            }
            try runArgs(StoreSQL.insertChunks, args)
            at += StoreSQL.insertBatch
        }
        for (hash, loc) in unique[at...] { try insertChunk(hash, at: loc) }
    }

    /// Chunks stored in `pack`, in file order.
    public func chunks(inPack pack: Int64) throws -> [(SHA256.Value, ChunkLocation)] {
        var out: [(SHA256.Value, ChunkLocation)] = []
        try query("SELECT hash, offset, stored_length, raw_length, codec FROM chunks WHERE pack_id = ? ORDER BY offset", .int(pack)) {
            guard let h = $0.hash(0) else { return }
            out.append(
                (
                    h,
                    ChunkLocation(
                        pack: pack, offset: $0.int(1), storedLength: Int($0.int(2)), rawLength: Int($0.int(3)), codec: UInt8($0.int(4)))
                ))
        }
        return out
    }

    /// Calls `body` for every chunk, in pack order (for fsck).
    public func forEachChunk(_ body: (SHA256.Value, ChunkLocation) throws -> Void) throws {
        try query("SELECT hash, pack_id, offset, stored_length, raw_length, codec FROM chunks ORDER BY pack_id, offset") {
            guard let h = $0.hash(0) else { return }
            try body(
                h,
                ChunkLocation(
                    pack: $0.int(1), offset: $0.int(2), storedLength: Int($0.int(3)), rawLength: Int($0.int(4)), codec: UInt8($0.int(5))))
        }
    }

    /// Removes index rows of chunks that lie (partly) beyond `size` in `pack`; returns how many.
    public func dropChunks(inPack pack: Int64, beyond size: Int64, headerSize: Int) throws -> Int {
        try run("DELETE FROM chunks WHERE pack_id = ? AND offset + ? + stored_length > ?", .int(pack), .int(Int64(headerSize)), .int(size))
        return changes
    }

    /// Complete blobs whose recipe names a chunk of `pack` that lies (partly) beyond `size`
    /// (0: any chunk of the pack). What `dropChunks` would break, for `fsck --repair` to list.
    public func blobs(usingPack pack: Int64, beyond size: Int64, headerSize: Int) throws -> [Digest] {
        var out: [Digest] = []
        try query(
            """
            SELECT DISTINCT b.digest FROM chunks c JOIN recipes r ON r.chunk_hash = c.hash JOIN blobs b ON b.id = r.blob_id
            WHERE c.pack_id = ? AND c.offset + ? + c.stored_length > ? AND b.state = 1
            """, .int(pack), .int(Int64(headerSize)), .int(size)
        ) {
            if let h = $0.hash(0) { out.append(Digest(bytes: h)) }
        }
        return out
    }

    public func dropChunks(inPack pack: Int64) throws -> Int {
        try run("DELETE FROM chunks WHERE pack_id = ?", .int(pack))
        return changes
    }

    /// Deletes index rows of chunks that no recipe and no cast chunk (`chunk_cast_sources`) names;
    /// returns (count, stored bytes).
    public func deleteUnreferencedChunks() throws -> (count: Int, bytes: Int64) {
        let unreferenced = """
            NOT EXISTS (SELECT 1 FROM recipes r WHERE r.chunk_hash = chunks.hash)
            AND NOT EXISTS (SELECT 1 FROM chunk_cast_sources s WHERE s.source_hash = chunks.hash)
            """
        let stats =
            try first("SELECT COUNT(*), COALESCE(SUM(stored_length), 0) FROM chunks WHERE " + unreferenced) { (Int($0.int(0)), $0.int(1)) }
            ?? (0, 0)
        try run("DELETE FROM chunks WHERE " + unreferenced)
        return stats
    }

    // MARK: blobs and recipes

    public func beginBlob(chunker: String, now: Int64) throws -> Int64 {
        try first(
            "INSERT INTO blobs(digest, size, chunker, state, created_at, updated_at) VALUES(NULL, 0, ?, 0, ?, ?) RETURNING id",
            .text(chunker), .int(now), .int(now)
        ) { $0.int(0) }!
    }

    public func touchBlob(_ id: Int64, now: Int64) throws {
        try run("UPDATE blobs SET updated_at = ? WHERE id = ?", .int(now), .int(id))
    }

    /// `touchBlob` of complete blob `id` that says whether the row was there to touch. Its row
    /// lock orders the caller against a sweep deleting the blob (`deleteGarbageBlobs`): the
    /// sweep waits and then finds the blob fresh, or it deleted the blob first and this is false.
    public func touchCompleteBlob(_ id: Int64, now: Int64) throws -> Bool {
        try run("UPDATE blobs SET updated_at = ? WHERE id = ? AND state = 1", .int(now), .int(id))
        return changes == 1
    }

    /// Restarts a complete blob's grace period (it was just pushed again, linked or mounted).
    public func touchBlob(_ digest: Digest, now: Int64) throws {
        try run("UPDATE blobs SET updated_at = ? WHERE digest = ? AND state = 1", .int(now), .hash(digest.bytes))
    }

    public func appendRecipe(blob id: Int64, _ entry: RecipeEntry) throws {
        try run(
            """
            INSERT INTO recipes(blob_id, offset, length, chunk_hash) VALUES(?,?,?,?)
            ON CONFLICT(blob_id, offset) DO UPDATE SET length = excluded.length, chunk_hash = excluded.chunk_hash
            """,
            .int(id), .int(entry.offset), .int(Int64(entry.length)), .hash(entry.hash))
    }

    /// `appendRecipe` for many entries, in multi-row statements (an entry given twice for the
    /// same blob and offset keeps the last, as one statement per row would).
    public func appendRecipes(_ rows: [(blob: Int64, entry: RecipeEntry)]) throws {
        var last: [StoreSQL.RecipeKey: Int] = [:]
        for (i, r) in rows.enumerated() { last[StoreSQL.RecipeKey(blob: r.blob, offset: r.entry.offset)] = i }
        let unique =
            last.count == rows.count
            ? rows
            : rows.indices.filter { last[StoreSQL.RecipeKey(blob: rows[$0].blob, offset: rows[$0].entry.offset)] == $0 }.map { rows[$0] }
        var at = 0
        while unique.count - at >= StoreSQL.insertBatch {
            var args: [SQLValue] = []
            args.reserveCapacity(StoreSQL.insertBatch * 4)
            for r in unique[at..<(at + StoreSQL.insertBatch)] {
                args += [.int(r.blob), .int(r.entry.offset), .int(Int64(r.entry.length)), .hash(r.entry.hash)]
            }
            try runArgs(StoreSQL.appendRecipes, args)
            at += StoreSQL.insertBatch
        }
        for r in unique[at...] { try appendRecipe(blob: r.blob, r.entry) }
    }

    /// Marks a written blob complete. If a complete blob with the same digest already exists,
    /// the new rows are discarded and the existing record returned.
    public func completeBlob(_ id: Int64, digest: Digest, size: Int64, now: Int64) throws -> BlobRecord {
        // The same blob finished on two replicas at once: the second waits, then finds the first.
        try lock(.counter("blob:\(digest)"))
        if let existing = try blob(digest) {
            try deleteBlob(id: id)
            try touchBlob(digest, now: now) // pushed again: a fresh grace period
            return existing
        }
        try run(
            "UPDATE blobs SET digest = ?, size = ?, state = 1, updated_at = ? WHERE id = ?",
            .hash(digest.bytes), .int(size), .int(now), .int(id))
        guard changes == 1 else { throw DepotError.storage("blob write \(id) vanished before completion") }
        return try blob(digest)!
    }

    public func deleteBlob(id: Int64) throws {
        try run("DELETE FROM recipes WHERE blob_id = ?", .int(id))
        try run("DELETE FROM blobs WHERE id = ?", .int(id))
    }

    /// Whether blob `id`'s recipe names the chunk.
    public func recipeContains(blob id: Int64, _ hash: SHA256.Value) throws -> Bool {
        try first("SELECT 1 FROM recipes WHERE chunk_hash = ? AND blob_id = ? LIMIT 1", .hash(hash), .int(id)) { _ in true } ?? false
    }

    public func blob(_ digest: Digest) throws -> BlobRecord? {
        try first("SELECT id, size, chunker FROM blobs WHERE digest = ? AND state = 1", .hash(digest.bytes)) {
            BlobRecord(id: $0.int(0), digest: digest, size: $0.int(1), chunker: $0.text(2))
        }
    }

    /// Recipe entries of a blob with `offset >= from`, in order, at most `limit`.
    public func recipe(blob id: Int64, from: Int64, limit: Int) throws -> [RecipeEntry] {
        var out: [RecipeEntry] = []
        out.reserveCapacity(limit)
        try query(
            "SELECT offset, length, chunk_hash FROM recipes WHERE blob_id = ? AND offset >= ? ORDER BY offset LIMIT ?",
            .int(id), .int(from), .int(Int64(limit))
        ) {
            guard let h = $0.hash(2) else { return }
            out.append(RecipeEntry(offset: $0.int(0), length: Int($0.int(1)), hash: h))
        }
        return out
    }

    /// The start offset of the recipe entry that contains byte `offset` of the blob.
    public func recipeStart(blob id: Int64, containing offset: Int64) throws -> Int64? {
        try first("SELECT offset FROM recipes WHERE blob_id = ? AND offset <= ? ORDER BY offset DESC LIMIT 1", .int(id), .int(offset)) {
            $0.int(0)
        }
    }

    /// Complete blobs whose recipe names `hash`.
    public func blobs(containing hash: SHA256.Value) throws -> [Digest] {
        var out: [Digest] = []
        try query(
            "SELECT DISTINCT b.digest FROM recipes r JOIN blobs b ON b.id = r.blob_id WHERE r.chunk_hash = ? AND b.state = 1", .hash(hash)
        ) {
            if let h = $0.hash(0) { out.append(Digest(bytes: h)) }
        }
        return out
    }

    /// Calls `body` for every complete blob.
    public func forEachBlob(_ body: (BlobRecord) throws -> Void) throws {
        try query("SELECT id, digest, size, chunker FROM blobs WHERE state = 1 ORDER BY id") {
            guard let h = $0.hash(1) else { return }
            try body(BlobRecord(id: $0.int(0), digest: Digest(bytes: h), size: $0.int(2), chunker: $0.text(3)))
        }
    }

    /// Recipe entries whose chunk has no index row, plain or cast (damage), with their blobs.
    public func recipesWithMissingChunks() throws -> [(Digest?, RecipeEntry)] {
        var out: [(Digest?, RecipeEntry)] = []
        try query(
            """
            SELECT b.digest, r.offset, r.length, r.chunk_hash FROM recipes r JOIN blobs b ON b.id = r.blob_id
            WHERE b.state = 1 AND NOT EXISTS (SELECT 1 FROM chunks c WHERE c.hash = r.chunk_hash)
                AND NOT EXISTS (SELECT 1 FROM chunk_casts k WHERE k.hash = r.chunk_hash)
            """
        ) {
            guard let h = $0.hash(3) else { return }
            out.append(($0.hash(0).map(Digest.init(bytes:)), RecipeEntry(offset: $0.int(1), length: Int($0.int(2)), hash: h)))
        }
        return out
    }

    // MARK: roots and garbage

    public func addRoot(_ digest: Digest, reason: String, now: Int64) throws {
        try run(
            "INSERT INTO blob_roots(digest, reason, created_at) VALUES(?,?,?) ON CONFLICT DO NOTHING", .hash(digest.bytes), .text(reason),
            .int(now))
    }

    public func removeRoot(_ digest: Digest) throws {
        try run("DELETE FROM blob_roots WHERE digest = ?", .hash(digest.bytes))
    }

    public func isRoot(_ digest: Digest) throws -> Bool {
        try first("SELECT 1 FROM blob_roots WHERE digest = ?", .hash(digest.bytes)) { _ in true } ?? false
    }

    /// GC roots: blobs declared live (`blob_roots`) and every blob a manifest in any repository
    /// references (`manifest_refs`).
    /// Deletes complete blobs that are not roots and unfinished writes, both last touched before
    /// `staleBefore` (a fresh blob is not garbage yet: the manifest naming it may be on its
    /// way), except writes in `active` and the committed parts of open upload sessions. Returns the number of blobs deleted.
    public func deleteGarbageBlobs(staleBefore: Int64, active: Set<Int64>) throws -> Int {
        let garbage = """
            updated_at < ? AND NOT EXISTS (SELECT 1 FROM upload_segments s WHERE s.blob_id = b.id) AND (state = 0 OR (
                NOT EXISTS (SELECT 1 FROM blob_roots r WHERE r.digest = b.digest)
                AND NOT EXISTS (SELECT 1 FROM manifest_refs m WHERE m.child = b.digest AND m.kind = 0)))
            """
        var doomed: [Int64] = []
        try query("SELECT id FROM blobs b WHERE \(garbage)", .int(staleBefore)) {
            let id = $0.int(0)
            if !active.contains(id) { doomed.append(id) }
        }
        // Each delete re-checks the condition: on PostgreSQL another replica may have pushed a
        // manifest over the blob since the list was read. A push touches the blob's row in its
        // transaction (`touchCompleteBlob`), so this delete waits for it and then re-reads the row
        // fresh, or went first and the push finds the blob gone. (SQLite: one writer, no gap.)
        var deleted = 0
        for id in doomed {
            try run("DELETE FROM blobs AS b WHERE id = ? AND \(garbage)", .int(id), .int(staleBefore))
            guard changes == 1 else { continue }
            try run("DELETE FROM recipes WHERE blob_id = ?", .int(id))
            deleted += 1
        }
        return deleted
    }

    // MARK: statistics

    /// The counts kept incrementally by triggers (migration 8): one row in SQLite, 16 shards in
    /// PostgreSQL (see `PostgresSchema`), whatever the store's size.
    public func storeCounters() throws -> StoreCounts {
        var c = StoreCounts()
        _ = try first(
            """
            SELECT SUM(blobs), SUM(logical_bytes), SUM(writing), SUM(chunks), SUM(chunk_raw_bytes), SUM(chunk_stored_bytes),
                SUM(packs), SUM(pack_bytes)
            FROM store_counters
            """
        ) {
            c.blobs = Int($0.int(0))
            c.logicalBytes = $0.int(1)
            c.writing = Int($0.int(2))
            c.chunks = Int($0.int(3))
            c.chunkRawBytes = $0.int(4)
            c.chunkStoredBytes = $0.int(5)
            c.packs = Int($0.int(6))
            c.packBytes = $0.int(7)
        }
        return c
    }

    /// The counts by scanning every table (`depot stats`; tests compare it with `storeCounters`).
    public func storeCounts() throws -> StoreCounts {
        var c = StoreCounts()
        _ = try first("SELECT COUNT(*), COALESCE(SUM(size),0) FROM blobs WHERE state = 1") {
            c.blobs = Int($0.int(0))
            c.logicalBytes = $0.int(1)
        }
        _ = try first("SELECT COUNT(*) FROM blobs WHERE state = 0") { c.writing = Int($0.int(0)) }
        _ = try first("SELECT COUNT(*), COALESCE(SUM(raw_length),0), COALESCE(SUM(stored_length),0) FROM chunks") {
            c.chunks = Int($0.int(0))
            c.chunkRawBytes = $0.int(1)
            c.chunkStoredBytes = $0.int(2)
        }
        _ = try first("SELECT COUNT(*), COALESCE(SUM(committed_size),0) FROM packs") {
            c.packs = Int($0.int(0))
            c.packBytes = $0.int(1)
        }
        return c
    }
}

extension CatalogConnection {
    /// Recipe entries from `from` on, each with its chunk's current location (nil if missing).
    public func recipeWithLocations(blob id: Int64, from: Int64, limit: Int) throws -> [(RecipeEntry, ChunkLocation?)] {
        var out: [(RecipeEntry, ChunkLocation?)] = []
        out.reserveCapacity(limit)
        try query(
            """
            SELECT r.offset, r.length, r.chunk_hash, c.pack_id, c.offset, c.stored_length, c.raw_length, c.codec
            FROM recipes r LEFT JOIN chunks c ON c.hash = r.chunk_hash
            WHERE r.blob_id = ? AND r.offset >= ? ORDER BY r.offset LIMIT ?
            """, .int(id), .int(from), .int(Int64(limit))
        ) {
            guard let h = $0.hash(2) else { return }
            let loc =
                $0.isNull(3)
                ? nil
                : ChunkLocation(
                    pack: $0.int(3), offset: $0.int(4), storedLength: Int($0.int(5)), rawLength: Int($0.int(6)), codec: UInt8($0.int(7)))
            out.append((RecipeEntry(offset: $0.int(0), length: Int($0.int(1)), hash: h), loc))
        }
        return out
    }
}

/// Counts of the store's rows and bytes (`depot stats`, /metrics).
public struct StoreCounts: Sendable {
    public var blobs = 0, logicalBytes: Int64 = 0, chunks = 0, chunkRawBytes: Int64 = 0, chunkStoredBytes: Int64 = 0
    public var packs = 0, packBytes: Int64 = 0, writing = 0
}

/// The multi-row statements of `insertChunks` and `appendRecipes`.
enum StoreSQL {
    struct RecipeKey: Hashable {
        var blob: Int64
        var offset: Int64
    }

    /// Rows per multi-row INSERT: one statement (one round trip to PostgreSQL) per 256 rows
    /// instead of one per row; a fixed size so SQLite caches one prepared statement per table.
    static let insertBatch = 256

    static let insertChunks =
        "INSERT INTO chunks(hash, pack_id, offset, stored_length, raw_length, codec) VALUES "
        + Array(repeating: "(?,?,?,?,?,?)", count: insertBatch).joined(separator: ",")
            + """
             ON CONFLICT(hash) DO UPDATE SET pack_id = excluded.pack_id, offset = excluded.offset,
                stored_length = excluded.stored_length, raw_length = excluded.raw_length, codec = excluded.codec
            """

    static let appendRecipes =
        "INSERT INTO recipes(blob_id, offset, length, chunk_hash) VALUES "
        + Array(repeating: "(?,?,?,?)", count: insertBatch).joined(separator: ",")
        + " ON CONFLICT(blob_id, offset) DO UPDATE SET length = excluded.length, chunk_hash = excluded.chunk_hash"
}
