import DepotCore

/// An OCI blob upload session (catalog migration 12). Sessions live in the catalog so that any
/// replica can serve the next request of an upload: `bytes` is what the client was acknowledged,
/// `writer_state` the store's checkpoint of the writer at that point (hash midstate and the
/// bytes after the last chunk boundary), and `upload_segments` the unfinished blobs holding the
/// committed chunks, in order. One request at a time holds a session: `holder` is a random
/// token of that request and `held_until` when its claim lapses if it is not renewed (a replica
/// that died mid-request frees the session that way).
public struct UploadSessionRow: Sendable, Equatable {
    public var id: String
    public var repository: String
    public var client: String
    public var createdAt: Int64
    public var updatedAt: Int64
    public var bytes: Int64
    public var writerState: [UInt8]?
    public var holder: String?
    public var heldUntil: Int64?
}

/// One committed part of an upload: an unfinished blob whose recipe covers `first..<end`.
public struct UploadSegmentRow: Sendable, Equatable {
    public var blobID: Int64
    public var first: Int64
    public var end: Int64

    public init(blobID: Int64, first: Int64, end: Int64) {
        self.blobID = blobID
        self.first = first
        self.end = end
    }
}

/// Why a session could not be opened.
public enum UploadStartRefusal: Sendable, Equatable {
    case total(Int)
    case perClient(Int)
}

extension CatalogConnection {
    private static var uploadColumns: String { "id, repository, client, created_at, updated_at, bytes, writer_state, holder, held_until" }

    private static func uploadRow(_ s: any ResultRow) -> UploadSessionRow {
        let r = s.row
        return UploadSessionRow(
            id: r.text("id"), repository: r.text("repository"), client: r.text("client"), createdAt: r.int("created_at"),
            updatedAt: r.int("updated_at"), bytes: r.int("bytes"), writerState: r.optionalBlob("writer_state"),
            holder: r.optionalText("holder"), heldUntil: r.optionalInt("held_until"))
    }

    /// Opens a session unless `maxTotal` sessions, or `maxPerClient` of `client`'s, are open.
    /// Counting and inserting are one step on every replica (a lock; SQLite has one writer).
    /// Call inside a transaction.
    public func insertUploadSession(
        id: String, repository: String, client: String, now: Int64, maxTotal: Int, maxPerClient: Int
    ) throws -> UploadStartRefusal? {
        try lock(.counter("upload-sessions"))
        let total = try first("SELECT COUNT(*) FROM upload_sessions") { $0.int(0) } ?? 0
        guard total < Int64(maxTotal) else { return .total(maxTotal) }
        let mine = try first("SELECT COUNT(*) FROM upload_sessions WHERE client = ?", .text(client)) { $0.int(0) } ?? 0
        guard mine < Int64(maxPerClient) else { return .perClient(maxPerClient) }
        try run(
            "INSERT INTO upload_sessions(id, repository, client, created_at, updated_at, bytes) VALUES(?,?,?,?,?,0)",
            .text(id), .text(repository), .text(client), .int(now), .int(now))
        return nil
    }

    public func uploadSession(_ id: String) throws -> UploadSessionRow? {
        try first("SELECT \(Self.uploadColumns) FROM upload_sessions WHERE id = ?", .text(id), map: Self.uploadRow)
    }

    public func uploadSessionCount() throws -> Int {
        Int(try first("SELECT COUNT(*) FROM upload_sessions") { $0.int(0) } ?? 0)
    }

    /// Takes the session for one request (`holder`) until `until`, if nobody holds it or the
    /// holder's claim has lapsed. Returns the row as claimed, or nil when another request holds
    /// it; throws nothing for an unknown id either (nil, and `uploadSession` tells which).
    public func claimUploadSession(_ id: String, repository: String, holder: String, until: Int64, now: Int64) throws -> UploadSessionRow? {
        try first(
            """
            UPDATE upload_sessions SET holder = ?, held_until = ?, updated_at = ?
            WHERE id = ? AND repository = ? AND (holder IS NULL OR held_until < ?)
            RETURNING \(Self.uploadColumns)
            """, .text(holder), .int(until), .int(now), .text(id), .text(repository), .int(now), map: Self.uploadRow)
    }

    /// Extends a claim; false when the request no longer holds the session (its claim lapsed and
    /// another request took it, or the session expired or was cancelled).
    public func renewUploadClaim(_ id: String, holder: String, until: Int64, now: Int64) throws -> Bool {
        try run(
            "UPDATE upload_sessions SET held_until = ?, updated_at = ? WHERE id = ? AND holder = ?", .int(until), .int(now), .text(id),
            .text(holder))
        return changes == 1
    }

    /// Lets go of a claim without recording anything.
    public func releaseUploadClaim(_ id: String, holder: String, now: Int64) throws {
        try run(
            "UPDATE upload_sessions SET holder = NULL, held_until = NULL, updated_at = ? WHERE id = ? AND holder = ?", .int(now), .text(id),
            .text(holder))
    }

    /// Records a checkpoint and lets go of the claim, only if `holder` still holds the session
    /// at `from` bytes (compare-and-swap). `segment`: the part just committed, if it holds any
    /// chunk. Returns false, changing nothing, when the claim was lost.
    public func recordUploadCheckpoint(
        _ id: String, holder: String, from: Int64, bytes: Int64, state: [UInt8], segment: UploadSegmentRow?, now: Int64
    ) throws -> Bool {
        try run(
            """
            UPDATE upload_sessions SET bytes = ?, writer_state = ?, holder = NULL, held_until = NULL, updated_at = ?
            WHERE id = ? AND holder = ? AND bytes = ?
            """, .int(bytes), .blob(state), .int(now), .text(id), .text(holder), .int(from))
        guard changes == 1 else { return false }
        if let segment {
            try run(
                "INSERT INTO upload_segments(session_id, first_byte, end_byte, blob_id) VALUES(?,?,?,?)", .text(id), .int(segment.first),
                .int(segment.end), .int(segment.blobID))
        }
        return true
    }

    /// The committed parts of a session, in order.
    public func uploadSegments(_ id: String) throws -> [UploadSegmentRow] {
        var out: [UploadSegmentRow] = []
        try query("SELECT blob_id, first_byte, end_byte FROM upload_segments WHERE session_id = ? ORDER BY first_byte", .text(id)) {
            out.append(UploadSegmentRow(blobID: $0.int(0), first: $0.int(1), end: $0.int(2)))
        }
        return out
    }

    /// Deletes a session, then its segment rows and their unfinished blobs. The session row goes
    /// first: every contender for a session (a finishing PUT, a DELETE, expiry) deletes that row
    /// first, so on PostgreSQL they queue on its row lock and exactly one finds it. Returns
    /// whether this call deleted it.
    @discardableResult
    public func deleteUploadSession(_ id: String) throws -> Bool {
        try run("DELETE FROM upload_sessions WHERE id = ?", .text(id))
        guard changes == 1 else { return false }
        try deleteUploadSegments(id, keepBlobs: false)
        return true
    }

    /// Deletes a session only if it is still stale (the conditions of `staleUploadSessions`,
    /// checked again in the same statement: a request may have claimed it since it was listed).
    public func deleteStaleUploadSession(_ id: String, idleBefore: Int64, createdBefore: Int64, now: Int64) throws -> Bool {
        try run(
            """
            DELETE FROM upload_sessions
            WHERE id = ? AND (created_at < ? OR (updated_at < ? AND (holder IS NULL OR held_until < ?)))
            """, .text(id), .int(createdBefore), .int(idleBefore), .int(now))
        guard changes == 1 else { return false }
        try deleteUploadSegments(id, keepBlobs: false)
        return true
    }

    /// A finishing request's compare-and-swap: deletes the session only if `holder` still holds
    /// it at `bytes` acknowledged bytes, and then its segment rows (their blobs are being adopted
    /// by the finished blob). False, changing nothing, when the request lost its claim.
    public func finishUploadSession(_ id: String, holder: String, bytes: Int64) throws -> Bool {
        try run("DELETE FROM upload_sessions WHERE id = ? AND holder = ? AND bytes = ?", .text(id), .text(holder), .int(bytes))
        guard changes == 1 else { return false }
        try deleteUploadSegments(id, keepBlobs: true)
        return true
    }

    private func deleteUploadSegments(_ id: String, keepBlobs: Bool) throws {
        if !keepBlobs {
            for segment in try uploadSegments(id) { try deleteBlob(id: segment.blobID) }
        }
        try run("DELETE FROM upload_segments WHERE session_id = ?", .text(id))
    }

    /// Sessions idle since before `idleBefore` (and not held by a live claim at `now`), or
    /// created before `createdBefore` whatever they do.
    public func staleUploadSessions(idleBefore: Int64, createdBefore: Int64, now: Int64) throws -> [String] {
        var out: [String] = []
        try query(
            """
            SELECT id FROM upload_sessions
            WHERE created_at < ? OR (updated_at < ? AND (holder IS NULL OR held_until < ?))
            """, .int(createdBefore), .int(idleBefore), .int(now)
        ) { out.append($0.text(0)) }
        return out
    }

    /// Moves the recipe rows of unfinished blobs `parts` (a resumed upload's committed segments)
    /// into blob `id` and deletes the parts. Throws when a part is gone or complete: its rows
    /// may already belong to another blob, and the finished blob would lack them.
    public func adoptRecipes(of parts: [Int64], into id: Int64) throws {
        // PostgreSQL: lock each part's row, so a concurrent delete either finished before (the
        // part is gone) or waits for this transaction; SQLite has one writer already.
        let lock = dialect == .postgres ? " FOR UPDATE" : ""
        for part in parts {
            guard try first("SELECT 1 FROM blobs WHERE id = ? AND state = 0" + lock, .int(part), map: { _ in true }) != nil else {
                throw DepotError.storage("a committed part of this upload (blob write \(part)) is gone; start the upload over")
            }
            try run("UPDATE recipes SET blob_id = ? WHERE blob_id = ?", .int(id), .int(part))
            // A recorded part holds at least one chunk: moving nothing means its rows went elsewhere.
            guard changes > 0 else {
                throw DepotError.storage("a committed part of this upload (blob write \(part)) has no chunks left; start the upload over")
            }
            try run("DELETE FROM blobs WHERE id = ?", .int(part))
        }
    }

    // MARK: chunk proofs

    /// Records that `principal` uploaded these chunks (the server hashed their bytes).
    public func recordChunkProofs(principal: String, _ hashes: [SHA256.Value], now: Int64) throws {
        for h in hashes {
            try run(
                """
                INSERT INTO chunk_proofs(principal, hash, created_at) VALUES(?,?,?)
                ON CONFLICT(principal, hash) DO UPDATE SET created_at = excluded.created_at
                """, .text(principal), .hash(h), .int(now))
        }
    }

    /// Which of `hashes` `principal` proved it has.
    public func provenChunks(principal: String, _ hashes: [SHA256.Value]) throws -> Set<SHA256.Value> {
        var out = Set<SHA256.Value>()
        for h in hashes where !out.contains(h) {
            if try first("SELECT 1 FROM chunk_proofs WHERE principal = ? AND hash = ?", .text(principal), .hash(h), map: { _ in true })
                != nil
            {
                out.insert(h)
            }
        }
        return out
    }

    /// Forgets proofs recorded before `createdBefore`; returns how many.
    @discardableResult
    public func deleteChunkProofs(createdBefore: Int64) throws -> Int {
        try run("DELETE FROM chunk_proofs WHERE created_at < ?", .int(createdBefore))
        return changes
    }
}
