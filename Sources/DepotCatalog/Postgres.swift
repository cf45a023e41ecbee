import CLibPQ
import DepotCore
import Foundation

/// Where a PostgreSQL catalog lives: a libpq connection string (a `postgres://` URL or
/// `key=value` pairs), the password kept apart from it (read from an environment variable or a
/// file by the configuration), and the schema holding Depot's tables.
public struct PostgresSettings: Sendable, Equatable {
    public var url: String
    public var password: String?
    /// The schema (namespace) of Depot's tables; created if missing. Several catalogs can share one
    /// database in different schemas (the test suite gives every store its own).
    public var schema: String
    /// Connections one process keeps at most; callers beyond it wait for one to be returned.
    public var poolSize: Int
    /// Seconds a connection attempt may take (libpq `connect_timeout`).
    public var connectTimeoutSeconds: Int
    /// How long a statement waits for a lock another transaction holds before it fails with a
    /// "retry" error (`lock_timeout`), like SQLite's busy timeout.
    public var lockTimeoutMilliseconds: Int = 10_000
    /// Seconds a session may sit inside an open transaction without running a statement before
    /// PostgreSQL ends it (`idle_in_transaction_session_timeout`; 0: never). A replica frozen
    /// mid-transaction (a paused VM, a stopped process: its TCP connection stays up) would
    /// otherwise hold its locks, the appends lock among them, and so stop every push on every
    /// replica, until someone found it. No Depot transaction waits between statements for long.
    public var idleInTransactionTimeoutSeconds: Int = 300
    /// Seconds one statement may run (`statement_timeout`; 0, the default: no limit). Off by
    /// default because garbage collection's sweep statements grow with the catalog (minutes at
    /// 10^7 chunks, docs/SCALE.md); a running statement is PostgreSQL working, not a stall.
    public var statementTimeoutSeconds: Int = 0
    /// A pooled connection idle for longer than this is checked with an empty query before it is
    /// handed out (a database restarted or a connection cut by a firewall meanwhile would fail
    /// the first request that drew it).
    public var validateAfterIdleSeconds: Double = 30

    public init(url: String, password: String? = nil, schema: String = "public", poolSize: Int = 16, connectTimeoutSeconds: Int = 10) {
        self.url = url
        self.password = password
        self.schema = schema
        self.poolSize = poolSize
        self.connectTimeoutSeconds = connectTimeoutSeconds
    }

    /// The URL without its password, for messages and logs.
    public var redactedURL: String {
        guard let at = url.firstIndex(of: "@"), let scheme = url.range(of: "://"), scheme.upperBound < at else { return url }
        let credentials = url[scheme.upperBound..<at]
        guard let colon = credentials.firstIndex(of: ":") else { return url }
        return String(url[..<colon]) + ":***" + String(url[at...])
    }

    /// A schema name is spliced into `SET search_path`: letters, digits and `_` only.
    public static func isValidSchema(_ s: String) -> Bool {
        !s.isEmpty && s.count <= 63 && s.utf8.allSatisfy { $0 == 0x5F || (0x30...0x39).contains($0) || (0x61...0x7A).contains($0) }
            && !(0x30...0x39).contains(s.utf8.first!)
    }
}

/// One libpq connection. libpq is synchronous, like the SQLite API the rest of the catalog was
/// written against, so every query function stays one function over one connection whichever
/// engine answers (postgres-nio would have made the whole catalog, and its ~40 callers, async).
/// It is also the reference client: SCRAM, TLS (`sslmode`), service and password files all work
/// as PostgreSQL documents them. The cost is a blocked thread per query in flight, as with
/// SQLite's fsyncs; `Database` bounds how many.
///
/// Results are read in text format (integers parse from decimal, BYTEA from `\x` hex); BYTEA
/// parameters are sent in binary format. Statements are not prepared server-side (see
/// docs/SCALE.md for the measured cost).
public final class PostgresConnection: CatalogConnection, @unchecked Sendable {
    let handle: OpaquePointer
    public let location: String
    /// The schema of Depot's tables (its search path).
    public let schema: String
    public var dialect: SQLDialect { .postgres }
    public private(set) var changes = 0
    /// SQL as written in this module → as PostgreSQL reads it (`$n` parameters, quoted names).
    private var translated: [String: String] = [:]

    /// Whether the connection still works; a broken one is closed instead of returned to the pool.
    public var isHealthy: Bool { PQstatus(handle) == CONNECTION_OK && PQtransactionStatus(handle) == PQTRANS_IDLE }

    /// `keepalives`: TCP keepalives that notice a vanished peer within about 11 s (the leader's
    /// connection, whose session holds the leadership lock).
    public init(_ settings: PostgresSettings, keepalives: Bool = false) throws {
        guard PostgresSettings.isValidSchema(settings.schema) else {
            throw DepotError.invalidArgument("catalog schema '\(settings.schema.prefix(70))' must be lower-case letters, digits and _")
        }
        location = "\(settings.redactedURL) (schema \(settings.schema))"
        schema = settings.schema
        // Defaults before `dbname`, so the URL's own parameters override them (libpq reads the
        // arrays in order, the last value winning); the password after it.
        var keywords = ["connect_timeout", "application_name"]
        var values = [String(settings.connectTimeoutSeconds), "depot"]
        // tcp_user_timeout: a query (or the pool's check of an idle connection) whose bytes are not
        // acknowledged fails after that long instead of TCP's retransmission minutes: a peer a
        // firewall cut off silently would otherwise hold the request and its pool slot ~15 min.
        // It bounds only unacknowledged bytes, never a statement PostgreSQL is busy running.
        keywords += ["keepalives", "keepalives_idle", "keepalives_interval", "keepalives_count", "tcp_user_timeout"]
        if keepalives {
            // The leader's session: noticed gone within about 11 s.
            values += ["1", "5", "2", "3", "10000"]
        } else {
            values += ["1", "30", "10", "3", "30000"]
        }
        keywords.append("dbname")
        values.append(settings.url)
        if let password = settings.password {
            keywords.append("password")
            values.append(password)
        }
        let conn = Self.withCStrings(keywords) { k in
            Self.withCStrings(values) { v in PQconnectdbParams(k, v, 1) }
        }
        guard let conn else { throw DepotError.storage("catalog \(location): out of memory connecting") }
        guard PQstatus(conn) == CONNECTION_OK else {
            let message = String(cString: PQerrorMessage(conn)).trimmingCharacters(in: .whitespacesAndNewlines)
            PQfinish(conn)
            throw DepotError.storage(
                "catalog \(location) is unreachable: \(message). Check catalog.url, that PostgreSQL is running and that the password is set"
            )
        }
        handle = conn
        // NOTICEs (an IF NOT EXISTS that found the table) would go to stderr by default.
        PQsetNoticeProcessor(conn, { _, _ in }, nil)
        do {
            // The schema is created by the migration (under its lock, by a role allowed to):
            // here only chosen, so a least-privilege role can connect. Session settings a database
            // or role could have changed are pinned: results are parsed as hex BYTEA and UTF-8.
            try execute(
                """
                SET search_path TO "\(settings.schema)";
                SET client_min_messages TO warning;
                SET client_encoding TO 'UTF8';
                SET bytea_output TO 'hex';
                SET TIME ZONE 'UTC';
                SET lock_timeout = \(max(1, settings.lockTimeoutMilliseconds));
                SET idle_in_transaction_session_timeout = \(max(0, settings.idleInTransactionTimeoutSeconds) * 1000);
                SET statement_timeout = \(max(0, settings.statementTimeoutSeconds) * 1000);
                """)
            if keepalives {
                // The server's side of the leader's session: without it, PostgreSQL would hold
                // the leadership lock of a vanished machine for its OS default (about 2 hours).
                try execute("SET tcp_keepalives_idle = 5; SET tcp_keepalives_interval = 2; SET tcp_keepalives_count = 3;")
            }
        } catch {
            PQfinish(conn)
            throw error
        }
    }

    deinit { PQfinish(handle) }

    /// Whether the server still answers on this connection: one empty query, one round trip.
    public func isAlive() -> Bool {
        guard PQstatus(handle) == CONNECTION_OK else { return false }
        let result = PQexec(handle, "")
        defer { PQclear(result) }
        return result.map(PQresultStatus) == PGRES_EMPTY_QUERY && PQstatus(handle) == CONNECTION_OK
    }

    private static func withCStrings<R>(_ strings: [String], _ body: ([UnsafePointer<CChar>?]) -> R) -> R {
        let copies = strings.map { strdup($0) }
        defer { copies.forEach { free($0) } }
        return body(copies.map { UnsafePointer($0) } + [nil])
    }

    // MARK: errors

    /// A failed result as a DepotError: disk full is I/O, a lost connection or a conflict says to
    /// retry, anything else names the statement.
    func error(_ result: OpaquePointer?, _ sql: String) -> DepotError {
        let what = String(sql.prefix(60))
        var message = String(cString: PQerrorMessage(handle)).trimmingCharacters(in: .whitespacesAndNewlines)
        var state = ""
        if let result {
            if let p = PQresultErrorField(result, Int32(UInt8(ascii: "C"))) { state = String(cString: p) }
            if let p = PQresultErrorMessage(result), p.pointee != 0 {
                message = String(cString: p).trimmingCharacters(in: .whitespacesAndNewlines)
            }
        }
        if PQstatus(handle) != CONNECTION_OK {
            return .storage("catalog \(location): the connection was lost (\(message)); nothing was acknowledged, retry")
        }
        switch state {
        case "53100": return .io("catalog \(location): disk full (\(what))")
        case "40001", "40P01":
            return .storage("catalog \(location): a concurrent transaction conflicted (\(message)); nothing was changed, retry")
        case "55P03":
            return .storage("catalog \(location): stayed locked by another transaction (\(what)); nothing was changed, retry")
        case "57014":
            return .storage(
                "catalog \(location): the statement ran past catalog.statement_timeout_seconds (\(what)); nothing was changed, retry")
        case "25P03":
            return .storage(
                "catalog \(location): the transaction sat idle past catalog.idle_in_transaction_timeout_seconds; nothing was changed, retry"
            )
        default: return .storage("catalog \(location): \(what): \(message)")
        }
    }

    // MARK: statements

    public func execute(_ sql: String) throws {
        let result = PQexec(handle, sql)
        defer { PQclear(result) }
        let status = result.map(PQresultStatus) ?? PGRES_FATAL_ERROR
        guard status == PGRES_COMMAND_OK || status == PGRES_TUPLES_OK else { throw error(result, sql) }
    }

    /// Executes `sql` with `args`; the caller clears the result.
    private func exec(_ sql: String, _ args: [SQLValue]) throws -> OpaquePointer {
        let text: String
        if let t = translated[sql] {
            text = t
        } else {
            text = PostgresSQL.translate(sql)
            translated[sql] = text
        }
        var types = [Oid](repeating: 0, count: args.count)
        var formats = [Int32](repeating: 0, count: args.count)
        var lengths = [Int32](repeating: 0, count: args.count)
        var buffers: [UnsafeMutableRawPointer?] = []
        buffers.reserveCapacity(args.count)
        defer { buffers.forEach { free($0) } }
        for (i, arg) in args.enumerated() {
            switch arg {
            case .null:
                buffers.append(nil)
            case .int(let v):
                types[i] = 20 // int8
                buffers.append(UnsafeMutableRawPointer(strdup(String(v))))
            case .text(let s):
                // A C string would end at a NUL and silently store less than asked.
                guard !s.utf8.contains(0) else {
                    throw DepotError.invalidArgument("a text value for the catalog contains a NUL character")
                }
                types[i] = 25 // text
                buffers.append(UnsafeMutableRawPointer(strdup(s)))
            case .blob(let b):
                types[i] = 17 // bytea, sent as raw bytes
                formats[i] = 1
                lengths[i] = Int32(clamping: b.count)
                let p = malloc(max(b.count, 1))!
                b.withUnsafeBytes { if let base = $0.baseAddress { p.copyMemory(from: base, byteCount: b.count) } }
                buffers.append(p)
            case .hash(let h):
                types[i] = 17
                formats[i] = 1
                lengths[i] = 32
                let p = malloc(32)!
                withUnsafeBytes(of: h.bigEndianBytes) { p.copyMemory(from: $0.baseAddress!, byteCount: 32) }
                buffers.append(p)
            }
        }
        let values = buffers.map { UnsafePointer<CChar>($0?.assumingMemoryBound(to: CChar.self)) }
        let result = PQexecParams(handle, text, Int32(args.count), types, values, lengths, formats, 0)
        let status = result.map(PQresultStatus) ?? PGRES_FATAL_ERROR
        guard let result, status == PGRES_COMMAND_OK || status == PGRES_TUPLES_OK else {
            let e = error(result, sql)
            PQclear(result)
            throw e
        }
        changes = Int(String(cString: PQcmdTuples(result))) ?? 0
        return result
    }

    public func runArgs(_ sql: String, _ args: [SQLValue]) throws {
        PQclear(try exec(sql, args))
    }

    public func queryArgs(_ sql: String, _ args: [SQLValue], row: (any ResultRow) throws -> Void) throws {
        let result = PostgresResult(try exec(sql, args), location: location)
        for i in 0..<PQntuples(result.handle) {
            try row(PostgresRow(result: result, index: i))
        }
    }

    public func firstArgs<T>(_ sql: String, _ args: [SQLValue], map: (any ResultRow) throws -> T) throws -> T? {
        let result = PostgresResult(try exec(sql, args), location: location)
        guard PQntuples(result.handle) > 0 else { return nil }
        return try map(PostgresRow(result: result, index: 0))
    }

    public func transaction<T>(_ body: () throws -> T) throws -> T {
        try execute("BEGIN")
        do {
            let value = try body()
            try execute("COMMIT")
            return value
        } catch {
            try? execute("ROLLBACK")
            throw error
        }
    }

    /// Advisory locks are per database, not per schema: the key names the schema, so catalogs
    /// sharing a database in different schemas (several registries; the test suite's stores) never
    /// wait on each other's locks.
    func advisoryKey(_ lock: CatalogLock) -> String { schema + "/" + lock.key }

    public func lock(_ lock: CatalogLock) throws {
        try runArgs("SELECT pg_advisory_xact_lock(hashtextextended(?, 0))", [.text(advisoryKey(lock))])
    }

    public func lockShared(_ lock: CatalogLock) throws {
        try runArgs("SELECT pg_advisory_xact_lock_shared(hashtextextended(?, 0))", [.text(advisoryKey(lock))])
    }
}

/// A query's rows, kept until the last reader is done.
final class PostgresResult {
    let handle: OpaquePointer
    let location: String
    private var columns: [String: Int32]?

    init(_ handle: OpaquePointer, location: String) {
        self.handle = handle
        self.location = location
    }

    deinit { PQclear(handle) }

    func column(_ name: String) -> Int32 {
        if columns == nil {
            var map: [String: Int32] = [:]
            for i in 0..<PQnfields(handle) {
                if let p = PQfname(handle, i) { map[String(cString: p)] = i }
            }
            columns = map
        }
        guard let i = columns![name] else { preconditionFailure("the statement selects no column \(name)") }
        return i
    }
}

/// One row of a PostgreSQL result, read like SQLite's: NULL reads as 0 or empty, booleans as 0 or 1.
struct PostgresRow: ResultRow {
    let result: PostgresResult
    let index: Int32

    var location: String { result.location }
    var columnCount: Int32 { PQnfields(result.handle) }
    func column(_ name: String) -> Int32 { result.column(name) }
    func isNull(_ i: Int32) -> Bool { PQgetisnull(result.handle, index, i) != 0 }

    private func bytes(_ i: Int32) -> UnsafeRawBufferPointer? {
        guard !isNull(i), let p = PQgetvalue(result.handle, index, i) else { return nil }
        return UnsafeRawBufferPointer(start: p, count: Int(PQgetlength(result.handle, index, i)))
    }

    func int(_ i: Int32) -> Int64 {
        guard let b = bytes(i), let first = b.first else { return 0 }
        if b.count == 1 && first == UInt8(ascii: "t") { return 1 }
        if b.count == 1 && first == UInt8(ascii: "f") { return 0 }
        let s = String(decoding: b, as: UTF8.self)
        if let v = Int64(s) { return v }
        // An aggregate of integers (SUM) is NUMERIC: read its integer part.
        return Int64(s.prefix { $0 != "." }) ?? 0
    }

    func text(_ i: Int32) -> String {
        guard let b = bytes(i) else { return "" }
        return String(decoding: b, as: UTF8.self)
    }

    func blob(_ i: Int32) -> [UInt8] {
        guard let b = bytes(i) else { return [] }
        return PostgresSQL.decodeBytea(b) ?? []
    }

    func hash(_ i: Int32) -> SHA256.Value? {
        guard let b = bytes(i), b.count == 66, let raw = PostgresSQL.decodeBytea(b) else { return nil }
        return raw.withUnsafeBytes { SHA256.Value(bytes: $0) }
    }
}

/// The few places where PostgreSQL reads this module's SQL differently from SQLite.
enum PostgresSQL {
    /// Rewrites SQL written for both engines into what PostgreSQL accepts:
    /// - `?` parameters become `$1`, `$2`, … (outside quotes and comments);
    /// - the column name `offset` (chunks, recipes) is quoted: OFFSET is reserved in PostgreSQL.
    ///   This module writes the keyword in capitals, so a lower-case `offset` is always the column;
    /// One pass, linear in the length of the statement.
    static func translate(_ sql: String) -> String {
        let bytes = Array(sql.utf8)
        var out: [UInt8] = []
        out.reserveCapacity(bytes.count + 16)
        var parameter = 0
        var i = 0
        func isWord(_ c: UInt8) -> Bool { c == 0x5F || (0x30...0x39).contains(c) || (0x41...0x5A).contains(c) || (0x61...0x7A).contains(c) }
        while i < bytes.count {
            let c = bytes[i]
            switch c {
            case UInt8(ascii: "'"), UInt8(ascii: "\""):
                // A quoted literal or name, copied whole ('' and "" escape themselves).
                var j = i + 1
                while j < bytes.count && bytes[j] != c { j += 1 }
                out.append(contentsOf: bytes[i..<min(j + 1, bytes.count)])
                i = j + 1
            case UInt8(ascii: "-") where i + 1 < bytes.count && bytes[i + 1] == UInt8(ascii: "-"):
                var j = i
                while j < bytes.count && bytes[j] != 0x0A { j += 1 }
                out.append(contentsOf: bytes[i..<j])
                i = j
            case UInt8(ascii: "?"):
                parameter += 1
                out.append(UInt8(ascii: "$"))
                out.append(contentsOf: Array(String(parameter).utf8))
                i += 1
            default:
                guard isWord(c) else {
                    out.append(c)
                    i += 1
                    continue
                }
                var j = i
                while j < bytes.count && isWord(bytes[j]) { j += 1 }
                let word = bytes[i..<j]
                if word.elementsEqual("offset".utf8) {
                    out.append(contentsOf: Array("\"offset\"".utf8))
                    i = j
                } else {
                    out.append(contentsOf: word)
                    i = j
                }
            }
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// BYTEA in text format: `\x` and two hex digits per byte.
    static func decodeBytea(_ b: UnsafeRawBufferPointer) -> [UInt8]? {
        guard b.count >= 2, b[0] == UInt8(ascii: "\\"), b[1] == UInt8(ascii: "x"), b.count % 2 == 0 else { return nil }
        func nibble(_ c: UInt8) -> UInt8? {
            switch c {
            case 0x30...0x39: return c - 0x30
            case 0x61...0x66: return c - 0x61 + 10
            case 0x41...0x46: return c - 0x41 + 10
            default: return nil
            }
        }
        var out = [UInt8]()
        out.reserveCapacity((b.count - 2) / 2)
        var i = 2
        while i < b.count {
            guard let hi = nibble(b[i]), let lo = nibble(b[i + 1]) else { return nil }
            out.append(hi << 4 | lo)
            i += 2
        }
        return out
    }
}
