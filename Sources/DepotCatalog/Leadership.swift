import CLibPQ
import DepotCore

/// Which replica runs the background services that must run once (GC, webhook delivery, the
/// pipeline scheduler, the canary controller, log retention).
///
/// SQLite: the process that owns the store (its lock on the storage root) is the only one, so it
/// leads. PostgreSQL: the replica holding a session-level advisory lock on a connection of its
/// own. When that replica dies, PostgreSQL ends its session (at once for a killed process, after
/// the TCP keepalives below for a vanished machine) and the lock is free; the next `poll()` of
/// another replica takes it. A replica that finds its connection broken stops leading before it
/// reconnects, so two leaders overlap at most for one poll interval plus the keepalive timeout;
/// every job those services do is guarded by its own row conditions, so an overlap repeats work
/// at worst and never loses or corrupts it.
public final class Leadership: Sendable {
    public enum Change: Sendable, Equatable {
        case became
        case lost(reason: String)
    }

    private struct State {
        var connection: PostgresConnection?
        var leading = false
    }

    private let settings: PostgresSettings?
    private let state: Locked<State>
    /// The key of the advisory lock: every replica of one catalog competes for the same one.
    /// Advisory locks belong to the database, not to a schema: the schema is part of the key,
    /// so two registries in two schemas of one database each have their leader.
    let lockKey: String

    /// A leader that always leads (SQLite: one process per store).
    public static func standalone() -> Leadership { Leadership(settings: nil, leading: true) }

    private init(settings: PostgresSettings?, leading: Bool) {
        self.settings = settings
        lockKey = "depot:leader:" + (settings?.schema ?? "")
        state = Locked(State(connection: nil, leading: leading))
    }

    /// A contender for the leadership of the PostgreSQL catalog `settings` names.
    public static func contending(_ settings: PostgresSettings) -> Leadership {
        var s = settings
        s.poolSize = 1
        return Leadership(settings: s, leading: false)
    }

    public var isLeader: Bool { state.withLock { $0.leading } }

    /// Takes the leadership if it is free, or checks that this replica still holds it. Returns
    /// what changed, if anything. Blocking (a round trip or a connection attempt): call it from a
    /// thread that may block, every few seconds.
    public func poll() -> Change? {
        guard let settings else { return nil }
        return state.withLock { s -> Change? in
            do {
                if s.connection == nil || s.connection?.isHealthy != true {
                    let wasLeading = s.leading
                    s.leading = false
                    s.connection = nil
                    s.connection = try PostgresConnection(settings, keepalives: true)
                    if wasLeading { return .lost(reason: "its catalog connection broke") }
                }
                guard let conn = s.connection else { return nil }
                if s.leading {
                    _ = try conn.first("SELECT 1") { $0.int(0) }
                    return nil
                }
                let got = try conn.first("SELECT pg_try_advisory_lock(hashtextextended(?, 0))", .text(lockKey)) { $0.int(0) } ?? 0
                if got != 0 {
                    s.leading = true
                    return .became
                }
                return nil
            } catch {
                let wasLeading = s.leading
                s.leading = false
                s.connection = nil
                return wasLeading ? .lost(reason: "\(error)") : nil
            }
        }
    }

    /// Gives the leadership up (shutdown): closing the session frees the lock at once.
    public func resign() {
        state.withLock { s in
            s.connection = nil
            s.leading = settings == nil
        }
    }
}

extension Database {
    /// This replica's contender for leadership of the catalog's background services.
    public func leadership() -> Leadership {
        switch location {
        case .sqlite: return .standalone()
        case .postgres(var settings):
            settings.lockTimeoutMilliseconds = busyTimeoutMilliseconds
            return .contending(settings)
        }
    }
}
