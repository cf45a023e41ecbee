import CSQLite
import DepotCore

// SQLITE_TRANSIENT is a macro that Swift does not import.
private let transient = unsafeBitCast(-1, to: sqlite3_destructor_type.self)

/// One SQLite connection with a statement cache. Not thread-safe by itself: `Database`
/// hands it to one caller at a time.
public final class SQLiteConnection: CatalogConnection, @unchecked Sendable {
    public var dialect: SQLDialect { .sqlite }
    public var location: String { path }
    let handle: OpaquePointer
    let path: String
    private var cache: [String: Statement] = [:]

    /// How long a statement waits for another connection's lock (SQLite's busy handler retries
    /// meanwhile) before failing with `busyMessage`.
    let busyTimeoutMilliseconds: Int

    /// `uri`: `path` is a `file:` URI (its query parameters apply, e.g. `immutable=1`).
    init(path: String, readOnly: Bool, busyTimeoutMilliseconds: Int = 10_000, uri: Bool = false) throws {
        self.busyTimeoutMilliseconds = busyTimeoutMilliseconds
        var db: OpaquePointer?
        let flags =
            (readOnly ? SQLITE_OPEN_READONLY : (SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE)) | SQLITE_OPEN_NOMUTEX
            | (uri ? SQLITE_OPEN_URI : 0)
        let rc = sqlite3_open_v2(path, &db, flags, nil)
        guard rc == SQLITE_OK, let db else {
            let msg = db.map { String(cString: sqlite3_errmsg($0)) } ?? "cannot open"
            if let db { sqlite3_close_v2(db) }
            throw DepotError.storage("cannot open catalog \(path): \(msg)")
        }
        handle = db
        self.path = path
        sqlite3_busy_timeout(db, Int32(clamping: busyTimeoutMilliseconds))
    }

    /// Registers `depot_digest_blob(x)` on this connection for migration 14: `sha256:<hex>` text
    /// becomes its 32 big-endian bytes (`SQLValue.hash`'s form), other text its UTF-8 bytes
    /// (`SQLValue.digest`'s fallback, so no row is lost), anything else (NULL) is returned as it is.
    func registerDigestFunction() throws {
        let rc = sqlite3_create_function_v2(
            handle, "depot_digest_blob", 1, SQLITE_UTF8 | SQLITE_DETERMINISTIC, nil,
            { context, _, argv in
                guard let context, let value = argv?[0] else { return }
                guard sqlite3_value_type(value) == SQLITE_TEXT, let p = sqlite3_value_text(value) else {
                    sqlite3_result_value(context, value)
                    return
                }
                let text = String(cString: p)
                if let d = try? Digest(parsing: text) {
                    let be = d.bytes.bigEndianBytes
                    withUnsafeBytes(of: be) { sqlite3_result_blob(context, $0.baseAddress, 32, transient) }
                } else if text.isEmpty {
                    sqlite3_result_zeroblob(context, 0)
                } else {
                    let bytes = Array(text.utf8)
                    bytes.withUnsafeBytes { sqlite3_result_blob(context, $0.baseAddress, Int32(bytes.count), transient) }
                }
            }, nil, nil, nil)
        guard rc == SQLITE_OK else { throw error("register depot_digest_blob") }
    }

    func busyMessage(_ what: String) -> String {
        let seconds = Double(busyTimeoutMilliseconds) / 1000
        return "catalog \(path) stayed locked by another connection for \(seconds) s (\(what)); nothing was changed, retry. "
            + "If it persists, another process (a `depot` command, or sqlite3) holds a long transaction on it: stop it"
    }

    deinit {
        cache.removeAll()
        sqlite3_close_v2(handle)
    }

    func error(_ what: String) -> DepotError {
        let code = sqlite3_errcode(handle) & 0xff // the primary code of an extended one
        let msg = String(cString: sqlite3_errmsg(handle))
        if code == SQLITE_FULL { return .io("catalog \(path): disk full (\(what))") }
        if code == SQLITE_BUSY || code == SQLITE_LOCKED { return .storage(busyMessage(what)) }
        return .storage("catalog \(path): \(what): \(msg)")
    }

    /// Runs one or more statements without results.
    public func execute(_ sql: String) throws {
        var err: UnsafeMutablePointer<CChar>?
        let rc = sqlite3_exec(handle, sql, nil, nil, &err)
        if rc != SQLITE_OK {
            let msg = err.map { String(cString: $0) } ?? "unknown"
            sqlite3_free(err)
            if rc & 0xff == SQLITE_BUSY { throw DepotError.storage(busyMessage(String(sql.prefix(60)))) }
            if rc & 0xff == SQLITE_FULL { throw DepotError.io("catalog \(path): disk full (\(sql.prefix(60)))") }
            throw DepotError.storage("catalog \(path): \(msg) in \(sql.prefix(60))")
        }
    }

    /// A prepared (and cached) statement, reset and with no bindings.
    public func statement(_ sql: String) throws -> Statement {
        if let s = cache[sql] {
            s.reset()
            return s
        }
        var stmt: OpaquePointer?
        guard sqlite3_prepare_v3(handle, sql, -1, UInt32(SQLITE_PREPARE_PERSISTENT), &stmt, nil) == SQLITE_OK, let stmt else {
            throw error("prepare \(sql.prefix(60))")
        }
        let s = Statement(stmt, self)
        cache[sql] = s
        return s
    }

    /// Runs a statement with an argument array, ignoring rows.
    public func runArgs(_ sql: String, _ args: [SQLValue]) throws {
        let s = try statement(sql)
        try s.bind(args)
        defer { s.reset() }
        while try s.step() {}
    }

    /// Runs a query and calls `row` for every result row.
    public func queryArgs(_ sql: String, _ args: [SQLValue], row: (any ResultRow) throws -> Void) throws {
        let s = try statement(sql)
        try s.bind(args)
        defer { s.reset() } // never leave a read snapshot open on a pooled connection
        while try s.step() { try row(s) }
    }

    /// The first row mapped by `map`, or nil.
    public func firstArgs<T>(_ sql: String, _ args: [SQLValue], map: (any ResultRow) throws -> T) throws -> T? {
        let s = try statement(sql)
        try s.bind(args)
        defer { s.reset() }
        return try s.step() ? map(s) : nil
    }

    /// One writer at a time already: nothing to take.
    public func lock(_ lock: CatalogLock) throws {}

    public func lockShared(_ lock: CatalogLock) throws {}

    public var changes: Int { Int(sqlite3_changes(handle)) }

    /// Runs `body` inside `BEGIN IMMEDIATE ... COMMIT`, rolling back if it throws.
    public func transaction<T>(_ body: () throws -> T) throws -> T {
        try execute("BEGIN IMMEDIATE")
        do {
            let result = try body()
            try execute("COMMIT")
            return result
        } catch {
            try? execute("ROLLBACK")
            throw error
        }
    }
}

/// A prepared statement: bind, step, read columns.
public final class Statement: ResultRow {
    let stmt: OpaquePointer
    unowned let connection: SQLiteConnection
    /// Column name → index, read once per prepared statement (statements are cached).
    private var columnIndices: [String: Int32]?

    init(_ stmt: OpaquePointer, _ connection: SQLiteConnection) {
        self.stmt = stmt
        self.connection = connection
    }

    deinit { sqlite3_finalize(stmt) }

    func reset() {
        sqlite3_reset(stmt)
        sqlite3_clear_bindings(stmt)
    }

    public func bind(_ values: [SQLValue]) throws {
        for (i, v) in values.enumerated() {
            let idx = Int32(i + 1)
            let rc: Int32
            switch v {
            case .null: rc = sqlite3_bind_null(stmt, idx)
            case .int(let x): rc = sqlite3_bind_int64(stmt, idx, x)
            case .text(let s): rc = sqlite3_bind_text(stmt, idx, s, -1, transient)
            case .blob(let b): rc = b.withUnsafeBytes { sqlite3_bind_blob(stmt, idx, $0.baseAddress, Int32($0.count), transient) }
            case .hash(let h):
                // Big-endian bytes, so that BLOB order equals digest order.
                let be = h.bigEndianBytes
                rc = withUnsafeBytes(of: be) { sqlite3_bind_blob(stmt, idx, $0.baseAddress, 32, transient) }
            }
            guard rc == SQLITE_OK else { throw connection.error("bind") }
        }
    }

    /// Advances; true when a row is available.
    public func step() throws -> Bool {
        let rc = sqlite3_step(stmt)
        if rc == SQLITE_ROW { return true }
        if rc == SQLITE_DONE { return false }
        throw connection.error("step")
    }

    public func int(_ i: Int32) -> Int64 { sqlite3_column_int64(stmt, i) }
    public func isNull(_ i: Int32) -> Bool { sqlite3_column_type(stmt, i) == SQLITE_NULL }

    public func text(_ i: Int32) -> String {
        guard let p = sqlite3_column_text(stmt, i) else { return "" }
        return String(cString: p)
    }

    public func blob(_ i: Int32) -> [UInt8] {
        let n = Int(sqlite3_column_bytes(stmt, i))
        guard n > 0, let p = sqlite3_column_blob(stmt, i) else { return [] }
        return Array(UnsafeRawBufferPointer(start: p, count: n))
    }

    /// The index of the result column called `name` (its `AS` name, or the column's own name).
    /// A name the statement does not select is a programming error.
    public func column(_ name: String) -> Int32 {
        if columnIndices == nil {
            var map: [String: Int32] = [:]
            for i in 0..<columnCount {
                if let p = sqlite3_column_name(stmt, i) { map[String(cString: p)] = i }
            }
            columnIndices = map
        }
        guard let i = columnIndices![name] else { preconditionFailure("the statement selects no column \(name)") }
        return i
    }

    /// How many columns a row of this statement has.
    public var columnCount: Int32 { sqlite3_column_count(stmt) }

    public var location: String { connection.path }

    /// Reads a 32-byte hash column; nil when the column is not 32 bytes.
    public func hash(_ i: Int32) -> SHA256.Value? {
        let n = Int(sqlite3_column_bytes(stmt, i))
        guard n == 32, let p = sqlite3_column_blob(stmt, i) else { return nil }
        return SHA256.Value(bytes: UnsafeRawBufferPointer(start: p, count: 32))
    }
}
