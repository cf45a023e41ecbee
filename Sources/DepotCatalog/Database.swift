import CSQLite
import DepotCore

/// The catalog database: one writer connection and a small pool of reader connections
/// over one SQLite file in WAL mode. Writers are serialized; readers run concurrently
/// and see the last committed state.
public final class Database: Sendable {
    public let path: String
    public let readOnly: Bool
    private let writer: Locked<SQLiteConnection?>
    private let readers: Locked<[SQLiteConnection]>
    let busyTimeoutMilliseconds: Int

    /// The newest schema version this build understands.
    public static let schemaVersion: Int64 = Schema.migrations.count.asInt64

    /// Opens (creating and migrating if needed) the catalog at `path`.
    /// `busyTimeoutMilliseconds`: how long a statement waits for a lock another connection (or
    /// process) holds before failing with a "stayed locked ... retry" error.
    public init(path: String, readOnly: Bool = false, busyTimeoutMilliseconds: Int = 10_000) throws {
        self.path = path
        self.readOnly = readOnly
        self.busyTimeoutMilliseconds = busyTimeoutMilliseconds
        if readOnly {
            guard FileSystem.exists(path) else { throw DepotError.storage("no catalog at \(path)") }
            writer = Locked(nil)
        } else {
            let conn = try SQLiteConnection(path: path, readOnly: false, busyTimeoutMilliseconds: busyTimeoutMilliseconds)
            try conn.execute("PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; PRAGMA foreign_keys=ON;")
            try Schema.migrate(conn)
            writer = Locked(conn)
        }
        readers = Locked([])
        // Validate the version for read-only opens too.
        try read { conn in
            let v = try conn.first("PRAGMA user_version") { $0.int(0) } ?? 0
            if v > Database.schemaVersion {
                throw DepotError.storage(
                    "catalog \(path) has schema version \(v), newer than this build understands (\(Database.schemaVersion)); upgrade depot")
            }
        }
    }

    /// Runs `body` in a write transaction (BEGIN IMMEDIATE ... COMMIT).
    public func write<T>(_ body: (SQLiteConnection) throws -> T) throws -> T {
        try writer.withLock { conn in
            guard let conn else { throw DepotError.storage("catalog \(path) is open read-only") }
            return try conn.transaction { try body(conn) }
        }
    }

    /// Runs `body` with a reader connection (its own consistent snapshot per statement,
    /// or per transaction if `body` opens one).
    public func read<T>(_ body: (SQLiteConnection) throws -> T) throws -> T {
        let conn =
            try readers.withLock { pool in
                pool.popLast()
            } ?? SQLiteConnection(path: path, readOnly: true, busyTimeoutMilliseconds: busyTimeoutMilliseconds)
        defer { readers.withLock { pool in if pool.count < 8 { pool.append(conn) } } }
        return try body(conn)
    }

    /// Runs `body` inside one read transaction, so that several queries see the same snapshot.
    public func snapshot<T>(_ body: (SQLiteConnection) throws -> T) throws -> T {
        try read { conn in
            try conn.execute("BEGIN")
            defer { try? conn.execute("COMMIT") }
            return try body(conn)
        }
    }
}

extension Int {
    var asInt64: Int64 { Int64(self) }
}
