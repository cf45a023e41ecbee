import CSQLite
import DepotCore
import Foundation

/// Where the catalog lives.
public enum CatalogLocation: Sendable, Equatable {
    /// The embedded default: one SQLite file (WAL) beside the packs.
    case sqlite(path: String)
    /// A PostgreSQL database shared by any number of replicas.
    case postgres(PostgresSettings)
}

/// The catalog database.
///
/// SQLite: one writer connection and a small pool of reader connections over one file in WAL
/// mode. Writers are serialized; readers run concurrently and see the last committed state.
///
/// PostgreSQL: a bounded pool of connections; write transactions run concurrently (READ
/// COMMITTED), on this replica and on others. What SQLite's single writer guaranteed for free,
/// the queries take explicitly: conditional UPDATEs for compare-and-swap, `CatalogLock` for the
/// read-then-append sequences (audit chain, events), `FOR UPDATE SKIP LOCKED` for job leases.
public final class Database: Sendable {
    /// The SQLite file, or the PostgreSQL location (without password) for messages.
    public let path: String
    public let readOnly: Bool
    public let location: CatalogLocation
    private let backend: Backend
    let busyTimeoutMilliseconds: Int

    private enum Backend: Sendable {
        case sqlite(writer: Locked<SQLiteConnection?>, readers: Locked<[SQLiteConnection]>)
        case postgres(PostgresPool)
    }

    /// The newest schema version this build understands.
    public static let schemaVersion: Int64 = Schema.migrations.count.asInt64

    /// Opens (creating and migrating if needed) the SQLite catalog at `path`.
    /// `busyTimeoutMilliseconds`: how long a statement waits for a lock another connection (or
    /// process) holds before failing with a "stayed locked ... retry" error.
    ///
    /// The test suite runs once more against PostgreSQL: with `DEPOT_TEST_CATALOG_POSTGRES` set
    /// (a libpq URL), every catalog opened by path lives in its own schema of that database,
    /// named after the path, so a test that reopens a store finds its catalog again.
    public convenience init(path: String, readOnly: Bool = false, busyTimeoutMilliseconds: Int = 10_000) throws {
        try self.init(location: Database.location(forPath: path), readOnly: readOnly, busyTimeoutMilliseconds: busyTimeoutMilliseconds)
    }

    /// The SQLite file at `path`, or its stand-in schema when the suite runs on PostgreSQL.
    public static func location(forPath path: String) -> CatalogLocation {
        guard let url = testPostgresURL else { return .sqlite(path: path) }
        return .postgres(PostgresSettings(url: url, schema: testSchema(for: path), poolSize: 8))
    }

    public init(location: CatalogLocation, readOnly: Bool = false, busyTimeoutMilliseconds: Int = 10_000) throws {
        self.location = location
        self.readOnly = readOnly
        self.busyTimeoutMilliseconds = busyTimeoutMilliseconds
        switch location {
        case .sqlite(let path):
            self.path = path
            if readOnly {
                guard FileSystem.exists(path) else { throw DepotError.storage("no catalog at \(path)") }
                backend = .sqlite(writer: Locked(nil), readers: Locked([]))
            } else {
                let conn = try SQLiteConnection(path: path, readOnly: false, busyTimeoutMilliseconds: busyTimeoutMilliseconds)
                try conn.execute("PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; PRAGMA foreign_keys=ON;")
                try Schema.migrate(conn)
                backend = .sqlite(writer: Locked(conn), readers: Locked([]))
            }
        case .postgres(var settings):
            settings.lockTimeoutMilliseconds = busyTimeoutMilliseconds
            let pool = try PostgresPool(settings)
            self.path = pool.location
            backend = .postgres(pool)
            if !readOnly {
                try pool.with { conn in try PostgresSchema.migrate(conn) }
            }
        }
        // Validate the version for read-only opens too.
        let v = try read { conn in try Schema.version(conn) }
        if v > Database.schemaVersion {
            throw DepotError.storage(
                "catalog \(path) has schema version \(v), newer than this build understands (\(Database.schemaVersion)); upgrade depot")
        }
        if readOnly, v == 0, case .postgres = location { throw DepotError.storage("no catalog at \(path)") }
    }

    /// Which engine holds the catalog.
    public var dialect: SQLDialect {
        switch backend {
        case .sqlite: .sqlite
        case .postgres: .postgres
        }
    }

    /// Runs `body` in a write transaction (SQLite: BEGIN IMMEDIATE ... COMMIT, one writer at a
    /// time; PostgreSQL: BEGIN ... COMMIT on a pooled connection).
    public func write<T>(_ body: (any CatalogConnection) throws -> T) throws -> T {
        if readOnly { throw DepotError.storage("catalog \(path) is open read-only") }
        switch backend {
        case .sqlite(let writer, _):
            return try writer.withLock { conn in
                guard let conn else { throw DepotError.storage("catalog \(path) is open read-only") }
                return try conn.transaction { try body(conn) }
            }
        case .postgres(let pool):
            return try pool.with { conn in try conn.transaction { try body(conn) } }
        }
    }

    /// Runs `body` with a reader connection (its own consistent snapshot per statement,
    /// or per transaction if `body` opens one).
    public func read<T>(_ body: (any CatalogConnection) throws -> T) throws -> T {
        switch backend {
        case .sqlite(_, let readers):
            let conn =
                try readers.withLock { pool in
                    pool.popLast()
                } ?? SQLiteConnection(path: path, readOnly: true, busyTimeoutMilliseconds: busyTimeoutMilliseconds)
            defer { readers.withLock { pool in if pool.count < 8 { pool.append(conn) } } }
            return try body(conn)
        case .postgres(let pool):
            return try pool.with { try body($0) }
        }
    }

    /// Runs `body` inside one read transaction, so that several queries see the same snapshot.
    public func snapshot<T>(_ body: (any CatalogConnection) throws -> T) throws -> T {
        switch backend {
        case .sqlite:
            return try read { conn in
                try conn.execute("BEGIN")
                defer { try? conn.execute("COMMIT") }
                return try body(conn)
            }
        case .postgres(let pool):
            return try pool.with { conn in
                try conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
                defer { try? conn.execute("COMMIT") }
                return try body(conn)
            }
        }
    }

    /// Writes a consistent copy of the SQLite catalog file `source` into `destination`, an
    /// existing empty file (its mode is kept: the caller creates it 0600, since the catalog
    /// holds password and token hashes). `VACUUM INTO` runs in one read transaction, so the copy
    /// is one committed state, WAL included, while a writer in another process goes on.
    ///
    /// `unchanging`: nothing writes the file meanwhile and it has no WAL to read (its server is
    /// stopped and holds no lock): it is then opened `immutable`, which reads it without creating
    /// the `-shm` and `-wal` files SQLite otherwise makes beside a WAL database. With a server
    /// running they exist already. The copy is not fsynced here.
    public static func copySQLiteSnapshot(of source: String, to destination: String, unchanging: Bool) throws {
        let conn: SQLiteConnection
        if unchanging {
            // A URI path: '%', '?' and '#' would be read as its syntax.
            var escaped = ""
            for c in source.unicodeScalars {
                if c == "%" || c == "?" || c == "#" {
                    escaped += "%" + String(format: "%02X", c.value)
                } else {
                    escaped.unicodeScalars.append(c)
                }
            }
            conn = try SQLiteConnection(path: "file:" + escaped + "?mode=ro&immutable=1", readOnly: true, uri: true)
        } else {
            conn = try SQLiteConnection(path: source, readOnly: true)
        }
        do {
            try conn.run("VACUUM INTO ?", .text(destination))
        } catch {
            // The SQLite layer names the source; a full or failing disk is the destination's.
            throw DepotError.io("writing the catalog snapshot of \(source) to \(destination) failed: \(error)")
        }
    }

    /// Whether the catalog answers a trivial query now (readiness probes).
    public func ping() throws {
        _ = try read { conn in try conn.first("SELECT 1") { $0.int(0) } }
    }

    /// Refreshes the planner's statistics after a bulk load (benchmarks). PostgreSQL only: its
    /// autovacuum does this on its own a while after large changes, and its plans for the lineage
    /// and GC queries depend on it; SQLite has no such daemon and its plans here need no statistics,
    /// so its catalog is left as a server would have it.
    public func refreshStatistics() throws {
        guard case .postgres(let pool) = backend else { return }
        try pool.with { try $0.execute("ANALYZE") }
    }

    /// Drops a PostgreSQL schema and everything in it (benchmarks clean up their fresh schema).
    public static func dropSchema(_ settings: PostgresSettings) throws {
        var s = settings
        s.schema = "public"
        let conn = try PostgresConnection(s)
        guard PostgresSettings.isValidSchema(settings.schema), settings.schema != "public" else {
            throw DepotError.invalidArgument("refusing to drop schema '\(settings.schema.prefix(70))'")
        }
        try conn.execute("DROP SCHEMA IF EXISTS \(settings.schema) CASCADE")
    }

    // MARK: the PostgreSQL run of the test suite

    static let testPostgresURL: String? = {
        guard let url = ProcessInfo.processInfo.environment["DEPOT_TEST_CATALOG_POSTGRES"], !url.isEmpty else { return nil }
        return url
    }()

    /// Whether this process runs the test suite against PostgreSQL (tests of SQLite's own file
    /// behaviour skip then).
    public static var isTestingOnPostgres: Bool { testPostgresURL != nil }

    /// A schema per catalog path: `t_` and 24 hex digits of the path's SHA-256 (the path made
    /// absolute, so a relative and an absolute spelling of one store agree).
    static func testSchema(for path: String) -> String {
        let absolute = path.hasPrefix("/") ? path : FileManager.default.currentDirectoryPath + "/" + path
        let normalized = URL(fileURLWithPath: absolute).standardizedFileURL.path
        let digest = Array(normalized.utf8).withUnsafeBytes { SHA256.hash($0) }
        return "t_" + String(digest.hex.prefix(24))
    }
}

/// A bounded pool of PostgreSQL connections. A caller beyond `poolSize` waits for a connection to
/// be returned; a connection found broken after use is closed, and the next caller opens a new one.
final class PostgresPool: Sendable {
    let settings: PostgresSettings
    let location: String
    /// Returned connections, each with when it was returned (seconds, monotonic).
    private let idle = Locked<[(connection: PostgresConnection, since: Double)]>([])
    private let slots: DispatchSemaphore

    init(_ settings: PostgresSettings) throws {
        self.settings = settings
        slots = DispatchSemaphore(value: max(1, settings.poolSize))
        // Connect once now, so a wrong URL or password fails at start, not at the first request.
        let first = try PostgresConnection(settings)
        location = first.location
        idle.withLock { $0.append((first, Self.clock())) }
    }

    static func clock() -> Double { Double(DispatchTime.now().uptimeNanoseconds) / 1e9 }

    /// A pooled connection that still works, or a new one. One idle past
    /// `validateAfterIdleSeconds` is checked first; a dead one is closed and the next tried.
    private func checkout() throws -> PostgresConnection {
        while let (conn, since) = idle.withLock({ $0.popLast() }) {
            if Self.clock() - since < settings.validateAfterIdleSeconds || conn.isAlive() { return conn }
        }
        return try PostgresConnection(settings)
    }

    func with<T>(_ body: (PostgresConnection) throws -> T) throws -> T {
        // Bounded: a caller that already holds a connection and asks for a second (a read inside
        // a write) while every other slot does the same would otherwise wait forever.
        guard slots.wait(timeout: .now() + .seconds(30)) == .success else {
            throw DepotError.storage(
                "catalog \(location): all \(settings.poolSize) connections stayed busy for 30 s; nothing was changed, retry "
                    + "(if it persists, raise catalog.pool_size)")
        }
        defer { slots.signal() }
        let conn = try checkout()
        defer {
            if conn.isHealthy {
                idle.withLock { $0.append((conn, Self.clock())) }
            }
        }
        return try body(conn)
    }
}

extension Int {
    var asInt64: Int64 { Int64(self) }
}
