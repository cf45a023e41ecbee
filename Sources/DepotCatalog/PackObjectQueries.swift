import DepotCore

/// The chunk store's S3-mode statements (packs as objects). Portable SQL only (`?`
/// placeholders, no SQLite-only syntax), no schema change: an object's state is the pack row's
/// `sealed` column (0 while it is written and uploaded, 1 once the upload completed and its rows
/// committed, 2 while GC deletes it).
extension CatalogConnection {
    /// Seals pack `id` in the transaction that commits the rows naming its uploaded object, only if
    /// it is still open: a GC that meanwhile reclaimed it as an abandoned upload (see
    /// `markAbandonedPackDeleting`) wins, and this commit must fail. Exactly one of the two applies.
    public func sealUploadedPack(_ id: Int64) throws -> Bool {
        try run("UPDATE packs SET sealed = 1 WHERE id = ? AND sealed = 0", .int(id))
        return changes == 1
    }

    /// Packs still open, created before `cutoff` (milliseconds), with no chunk row: uploads whose
    /// writer died before committing (or never finished uploading).
    public func abandonedPacks(createdBefore cutoff: Int64) throws -> [Int64] {
        var out: [Int64] = []
        try query(
            "SELECT id FROM packs WHERE sealed = 0 AND created_at < ? AND NOT EXISTS (SELECT 1 FROM chunks WHERE chunks.pack_id = packs.id)",
            .int(cutoff)
        ) { out.append($0.int(0)) }
        return out
    }

    /// Marks an abandoned pack for deletion if it still is one (open, old, no chunk row).
    public func markAbandonedPackDeleting(_ id: Int64, createdBefore cutoff: Int64) throws -> Bool {
        try run(
            "UPDATE packs SET sealed = 2 WHERE id = ? AND sealed = 0 AND created_at < ? AND NOT EXISTS (SELECT 1 FROM chunks WHERE chunks.pack_id = ?)",
            .int(id), .int(cutoff), .int(id))
        return changes == 1
    }

    /// The pack holding the most recently stored chunks (the highest id with chunk rows), if any.
    public func newestPackWithChunks() throws -> Int64? {
        try first("SELECT pack_id FROM chunks ORDER BY pack_id DESC LIMIT 1") { $0.int(0) }
    }
}
