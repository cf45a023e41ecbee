import DepotCore

/// One connection to the catalog, whichever engine holds it: SQLite (the embedded default, one
/// file beside the packs) or PostgreSQL (shared by replicas). Every query of this module is an
/// extension of this protocol, written once in the SQL both engines accept (see `SQLDialect` for
/// the few spellings a connection translates). Not thread-safe: `Database` hands a connection to
/// one caller at a time.
public protocol CatalogConnection: AnyObject {
    /// Which engine, for the rare statement that must be spelled differently.
    var dialect: SQLDialect { get }
    /// Names the catalog in error messages (a file path, or host/database/schema).
    var location: String { get }
    /// Runs one or more statements without arguments or results (DDL, `BEGIN`).
    func execute(_ sql: String) throws
    /// Runs a statement with arguments, ignoring rows.
    func runArgs(_ sql: String, _ args: [SQLValue]) throws
    /// Runs a query and calls `row` for every result row.
    func queryArgs(_ sql: String, _ args: [SQLValue], row: (any ResultRow) throws -> Void) throws
    /// The first row mapped by `map`, or nil when the query returns none.
    func firstArgs<T>(_ sql: String, _ args: [SQLValue], map: (any ResultRow) throws -> T) throws -> T?
    /// Rows the last INSERT, UPDATE or DELETE changed.
    var changes: Int { get }
    /// Runs `body` in a write transaction, rolling back if it throws.
    func transaction<T>(_ body: () throws -> T) throws -> T
    /// Serializes the rest of the current write transaction with every other transaction that
    /// takes the same lock, on any replica; released at commit or rollback. SQLite has one writer
    /// at a time already, so there it costs nothing. Take it before reading what the write
    /// depends on.
    func lock(_ lock: CatalogLock) throws
    /// The shared form of `lock`: any number of transactions hold it together, and it excludes
    /// `lock` of the same key (PostgreSQL `pg_advisory_xact_lock_shared`; SQLite: nothing).
    func lockShared(_ lock: CatalogLock) throws
}

/// The SQL engine behind a connection.
public enum SQLDialect: String, Sendable {
    case sqlite
    case postgres
}

/// Transaction locks (PostgreSQL advisory locks, keyed by a 64-bit hash of `key`). Each guards a
/// read-then-write sequence that a row lock cannot, because the row may not exist yet.
public enum CatalogLock: Sendable, Equatable {
    /// Schema migrations: one replica migrates, the others wait and then see the new version.
    case migrations
    /// Every write that appends to the audit journal or the events outbox, moves a tag, or reads a
    /// run's jobs to queue the next stage, on every replica: one at a time, as under SQLite's
    /// single writer. One lock for all of them, taken first, so they cannot deadlock on each
    /// other's rows (an audit entry then an event in one transaction, an event then an audit
    /// entry in another). Chunk and recipe commits, the bulk of the writes, do not take it.
    ///
    /// It also orders what keeps a manifest against deleting it: every transaction that deletes
    /// manifests (by digest, registry GC) and every one that adds something that keeps one (a
    /// tag, a pin, an index listing it, a deployment) takes it *before* reading what it checks.
    /// Under READ COMMITTED each statement sees everything committed before it started, so the
    /// later of two such transactions sees the earlier one's commit: a tag or pin never lands on
    /// a manifest deleted meanwhile, and a delete never misses a tag added meanwhile.
    case appends
    /// Moving a job's log blob and dropping logs: whether another job still names a log (and so
    /// keeps its `job-log` root) is read and acted on by one transaction at a time.
    case jobLogs
    /// One tag (alias) of one repository: reading where it points, comparing with what the
    /// caller expects and moving it are one step, as with SQLite's single writer.
    case tag(repository: Int64, name: String)
    /// A counter read as MAX + 1 (a deployment's Triton version numbers).
    case counter(String)
    /// Garbage collection's sweep of unreferenced chunks takes it exclusively; every commit of
    /// recipe rows takes it shared and checks, under it, that the stored chunks its rows name
    /// (found before the transaction) still exist. So a chunk another replica's GC found
    /// unreferenced cannot be deleted between a writer's "it is stored" and its commit.
    case chunkSweep

    /// The text hashed into the lock's key.
    public var key: String {
        switch self {
        case .migrations: "depot:migrations"
        case .appends: "depot:appends"
        case .tag(let repository, let name): "depot:tag:\(repository):\(name)"
        case .counter(let name): "depot:counter:\(name)"
        case .chunkSweep: "depot:chunk-sweep"
        case .jobLogs: "depot:job-logs"
        }
    }
}

/// The current row of a query result.
public protocol ResultRow {
    func int(_ i: Int32) -> Int64
    func isNull(_ i: Int32) -> Bool
    func text(_ i: Int32) -> String
    func blob(_ i: Int32) -> [UInt8]
    /// A 32-byte hash column; nil when the column is not 32 bytes.
    func hash(_ i: Int32) -> SHA256.Value?
    /// The index of the result column called `name`. A name the statement does not select is a
    /// programming error.
    func column(_ name: String) -> Int32
    var columnCount: Int32 { get }
    /// Names the catalog, for errors about a value read.
    var location: String { get }
}

extension ResultRow {
    /// The current row, read by column name.
    public var row: Row { Row(source: self) }
}

extension CatalogConnection {
    /// Runs a statement with arguments, ignoring rows.
    public func run(_ sql: String, _ args: SQLValue...) throws { try runArgs(sql, args) }

    /// Runs a query and calls `row` for every result row.
    public func query(_ sql: String, _ args: SQLValue..., row: (any ResultRow) throws -> Void) throws {
        try queryArgs(sql, args, row: row)
    }

    /// The first row mapped by `map`, or nil.
    public func first<T>(_ sql: String, _ args: SQLValue..., map: (any ResultRow) throws -> T) throws -> T? {
        try firstArgs(sql, args, map: map)
    }
}

/// The current row of a result, read by column name rather than position, so a column added
/// to or moved in a SELECT cannot shift the others. Valid while the result stays on the row.
public struct Row {
    let source: any ResultRow

    public func int(_ name: String) -> Int64 { source.int(source.column(name)) }
    public func text(_ name: String) -> String { source.text(source.column(name)) }
    public func bool(_ name: String) -> Bool { int(name) != 0 }
    public func isNull(_ name: String) -> Bool { source.isNull(source.column(name)) }
    public func optionalInt(_ name: String) -> Int64? { isNull(name) ? nil : int(name) }
    public func optionalText(_ name: String) -> String? { isNull(name) ? nil : text(name) }
    public func hash(_ name: String) -> SHA256.Value? { source.hash(source.column(name)) }
    public func blob(_ name: String) -> [UInt8] { source.blob(source.column(name)) }
    public func optionalBlob(_ name: String) -> [UInt8]? { isNull(name) ? nil : blob(name) }
    /// A 32-byte digest column; nil when NULL or not 32 bytes.
    public func digest(_ name: String) -> Digest? { hash(name).map(Digest.init(bytes:)) }

    /// A digest column as `sha256:<hex>` (see `SQLValue.digest`); a value that is not 32 bytes
    /// as the text it was.
    public func digestText(_ name: String) -> String {
        if let d = digest(name) { return d.description }
        return String(decoding: blob(name), as: UTF8.self)
    }

    public func optionalDigestText(_ name: String) -> String? { isNull(name) ? nil : digestText(name) }

    /// A column holding an enum's raw value (job, rollout, node states). A value this build does
    /// not know is a storage error naming the column, never a silent default.
    public func value<T: RawRepresentable>(_ name: String, as type: T.Type = T.self) throws -> T where T.RawValue == String {
        let raw = text(name)
        guard let v = T(rawValue: raw) else {
            throw DepotError.storage("catalog \(source.location): column \(name) holds '\(raw.prefix(40))', not a \(T.self)")
        }
        return v
    }

    public func optionalValue<T: RawRepresentable>(_ name: String, as type: T.Type = T.self) throws -> T? where T.RawValue == String {
        isNull(name) ? nil : try value(name, as: type)
    }
}

/// A value bound to, or read from, an SQL statement.
public enum SQLValue: Sendable {
    case null
    case int(Int64)
    case text(String)
    case blob([UInt8])
    /// A 32-byte hash stored as a BLOB (BYTEA) without an intermediate array.
    case hash(SHA256.Value)
}

extension SQLValue {
    /// An enum stored as its raw value.
    public static func state<T: RawRepresentable>(_ v: T) -> SQLValue where T.RawValue == String { .text(v.rawValue) }
    public static func optionalText(_ v: String?) -> SQLValue { v.map(SQLValue.text) ?? .null }
    public static func optionalInt(_ v: Int64?) -> SQLValue { v.map(SQLValue.int) ?? .null }

    /// A digest given as `sha256:<hex>` (how the job and deployment records carry it), bound as
    /// its 32 bytes like every digest column since migration 14. Text that is not a digest is
    /// bound as its UTF-8 bytes: the form migration 14 gave such values (it keeps every row),
    /// so it matches them and reads back as the same text (`Row.digestText`), unless it is
    /// exactly 32 bytes long, which reads as the digest of those bytes. Only rows written by hand
    /// can hold such text: every path into these tables parses the digest first.
    public static func digest(_ text: String) -> SQLValue {
        if let d = try? Digest(parsing: text) { return .hash(d.bytes) }
        return .blob(Array(text.utf8))
    }

    public static func optionalDigest(_ text: String?) -> SQLValue { text.map(SQLValue.digest) ?? .null }
}

extension SHA256.Value {
    /// The big-endian bytes, so that BLOB order equals digest order.
    var bigEndianBytes: (UInt64, UInt64, UInt64, UInt64) { (a.bigEndian, b.bigEndian, c.bigEndian, d.bigEndian) }
}
