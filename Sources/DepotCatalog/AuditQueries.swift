import DepotAPI
import DepotCore
import Foundation

/// One entry of the audit journal.
public struct AuditEntry: Sendable, Equatable, Codable {
    public var id: Int64
    /// Milliseconds since 1970.
    public var at: Int64
    public var actor: String
    public var action: String
    public var repository: String?
    public var digest: String?
    public var tag: String?
    /// JSON object with action-specific details.
    public var details: String?
    public var hash: String

    public init(
        id: Int64, at: Int64, actor: String, action: String, repository: String?, digest: String?, tag: String?,
        details: String?, hash: String
    ) {
        self.id = id
        self.at = at
        self.actor = actor
        self.action = action
        self.repository = repository
        self.digest = digest
        self.tag = tag
        self.details = details
        self.hash = hash
    }
}

/// What `verifyAudit` found.
public struct AuditVerification: Sendable, Codable, Equatable {
    public var entries: Int
    public var intact: Bool
    /// The first entry whose hash or link does not hold, and why.
    public var firstBrokenID: Int64?
    public var problem: String?
    /// Hash of the last entry: record it elsewhere to anchor the chain.
    public var headHash: String?

    enum CodingKeys: String, CodingKey {
        case entries, intact, problem
        case firstBrokenID = "first_broken_id"
        case headHash = "head_hash"
    }
}

/// Filters of an audit log query.
public struct AuditFilter: Sendable {
    public var repository: String?
    public var action: String?
    public var since: Int64?
    public var until: Int64?
    public var actor: String?
    /// Newest entries first (the web UI's journal); the API keeps journal order.
    public var newestFirst = false
    public var limit = 1000
    public init(repository: String? = nil, action: String? = nil, since: Int64? = nil, until: Int64? = nil) {
        self.repository = repository
        self.action = action
        self.since = since
        self.until = until
    }
}

/// The audit journal: append-only rows, each carrying the SHA-256 of the previous row's hash
/// and its own fields, so editing, reordering or deleting a row breaks the chain.
extension CatalogConnection {
    /// The hash of an entry: sha256(prev_hash || id || at || actor || action || repository ||
    /// digest || tag || details), each field length-prefixed so no two entries collide.
    static func auditHash(
        prev: [UInt8], id: Int64, at: Int64, actor: String, action: String, repository: String?,
        digest: String?, tag: String?, details: String?
    ) -> [UInt8] {
        var bytes = prev
        func add(_ s: String?) {
            guard let s else {
                bytes += [0xFF, 0xFF, 0xFF, 0xFF]
                return
            }
            let u = Array(s.utf8)
            withUnsafeBytes(of: UInt32(u.count).littleEndian) { bytes += $0 }
            bytes += u
        }
        withUnsafeBytes(of: id.littleEndian) { bytes += $0 }
        withUnsafeBytes(of: at.littleEndian) { bytes += $0 }
        add(actor)
        add(action)
        add(repository)
        add(digest)
        add(tag)
        add(details)
        return bytes.withUnsafeBytes { SHA256.hash($0).byteArray }
    }

    /// Appends an entry (call inside the transaction of the change it records).
    @discardableResult
    public func appendAudit(
        at: Int64, actor: String, action: String, repository: String?, digest: String?, tag: String?,
        details: [String: JSONValue]?
    ) throws -> Int64 {
        var detailsText: String?
        if let details, !details.isEmpty {
            detailsText = String(decoding: try WireJSON.encode(details), as: UTF8.self)
        }
        // The id first: in PostgreSQL it locks the chain until this transaction commits, so the
        // last hash read next is still the last when this entry lands.
        let id = try nextID(for: "audit_log")
        let last = try first("SELECT id, hash FROM audit_log ORDER BY id DESC LIMIT 1") { ($0.int(0), $0.blob(1)) }
        let prev = last?.1 ?? [UInt8](repeating: 0, count: 32)
        let hash = Self.auditHash(
            prev: prev, id: id, at: at, actor: actor, action: action, repository: repository,
            digest: digest, tag: tag, details: detailsText)
        try run(
            """
            INSERT INTO audit_log(id, at, actor, action, repository, digest, tag, details, prev_hash, hash) VALUES(?,?,?,?,?,?,?,?,?,?)
            """, .int(id), .int(at), .text(actor), .text(action), repository.map(SQLValue.text) ?? .null,
            digest.map(SQLValue.text) ?? .null, tag.map(SQLValue.text) ?? .null, detailsText.map(SQLValue.text) ?? .null,
            .blob(prev), .blob(hash))
        return id
    }

    public func auditEntries(_ f: AuditFilter) throws -> [AuditEntry] {
        var sql = "SELECT id, at, actor, action, repository, digest, tag, details, hash FROM audit_log WHERE 1=1"
        var args: [SQLValue] = []
        if let r = f.repository {
            sql += " AND repository = ?"
            args.append(.text(r))
        }
        if let a = f.action {
            sql += " AND action = ?"
            args.append(.text(a))
        }
        if let a = f.actor {
            sql += " AND actor = ?"
            args.append(.text(a))
        }
        if let s = f.since {
            sql += " AND at >= ?"
            args.append(.int(s))
        }
        if let u = f.until {
            sql += " AND at <= ?"
            args.append(.int(u))
        }
        sql += f.newestFirst ? " ORDER BY id DESC LIMIT ?" : " ORDER BY id LIMIT ?"
        args.append(.int(Int64(f.limit)))
        var out: [AuditEntry] = []
        try queryArgs(sql, args) { s in
            let r = s.row
            out.append(
                AuditEntry(
                    id: r.int("id"), at: r.int("at"), actor: r.text("actor"), action: r.text("action"),
                    repository: r.optionalText("repository"), digest: r.optionalText("digest"), tag: r.optionalText("tag"),
                    details: r.optionalText("details"), hash: r.blob("hash").map { String(format: "%02x", $0) }.joined()))
        }
        return out
    }

    /// Recomputes the whole chain: ids contiguous from 1 up to the highest id ever assigned,
    /// each prev_hash equal to the previous entry's hash, each hash equal to its recomputation.
    public func verifyAudit() throws -> AuditVerification {
        var expectedPrev = [UInt8](repeating: 0, count: 32)
        var expectedID: Int64 = 1
        var count = 0
        var broken: (Int64, String)?
        try query("SELECT id, at, actor, action, repository, digest, tag, details, prev_hash, hash FROM audit_log ORDER BY id") { s in
            guard broken == nil else { return }
            let r = s.row
            let id = r.int("id")
            count += 1
            if id != expectedID {
                broken = (expectedID, "entry \(expectedID) is missing (next present is \(id))")
                return
            }
            let prev = r.blob("prev_hash")
            let stored = r.blob("hash")
            if prev != expectedPrev {
                broken = (id, "entry \(id) does not link to entry \(id - 1)")
                return
            }
            let recomputed = Self.auditHash(
                prev: prev, id: id, at: r.int("at"), actor: r.text("actor"), action: r.text("action"),
                repository: r.optionalText("repository"), digest: r.optionalText("digest"), tag: r.optionalText("tag"),
                details: r.optionalText("details"))
            if recomputed != stored {
                broken = (id, "entry \(id) was modified (its content does not match its hash)")
                return
            }
            expectedPrev = stored
            expectedID += 1
        }
        if broken == nil {
            let seq = try highestID(for: "audit_log")
            if seq > expectedID - 1 {
                broken = (expectedID, "entries \(expectedID)...\(seq) were deleted from the end")
            }
        }
        let head = count > 0 && broken == nil ? expectedPrev.map { String(format: "%02x", $0) }.joined() : nil
        return AuditVerification(entries: count, intact: broken == nil, firstBrokenID: broken?.0, problem: broken?.1, headHash: head)
    }
}

/// Ids that must be gapless and never reused: the audit chain's (verification checks that no entry
/// is missing, even from the end) and the events cursor's (consumers resume after the last id
/// they saw, so an id must never come back).
extension CatalogConnection {
    /// The id the next row of `table` gets. SQLite: one more than AUTOINCREMENT's high-water mark
    /// (`sqlite_sequence`) or the table's highest id. PostgreSQL: `catalog_sequences`, updated in
    /// this transaction, so its row lock orders concurrent appenders on every replica in commit
    /// order, and a rollback gives the id back.
    func nextID(for table: String) throws -> Int64 {
        switch dialect {
        case .sqlite:
            let seq = try first("SELECT seq FROM sqlite_sequence WHERE name = ?", .text(table)) { $0.int(0) } ?? 0
            let last = try first("SELECT MAX(id) FROM \(table)") { $0.isNull(0) ? 0 : $0.int(0) } ?? 0
            return max(seq, last) + 1
        case .postgres:
            try lock(.appends)
            guard
                let id = try first(
                    "UPDATE catalog_sequences SET seq = seq + 1 WHERE name = ? RETURNING seq", .text(table), map: { $0.int(0) })
            else { throw DepotError.storage("catalog \(location): no sequence for \(table)") }
            return id
        }
    }

    /// The highest id ever assigned in `table` (0 if none).
    func highestID(for table: String) throws -> Int64 {
        switch dialect {
        case .sqlite: return try first("SELECT seq FROM sqlite_sequence WHERE name = ?", .text(table)) { $0.int(0) } ?? 0
        case .postgres: return try first("SELECT seq FROM catalog_sequences WHERE name = ?", .text(table)) { $0.int(0) } ?? 0
        }
    }
}
