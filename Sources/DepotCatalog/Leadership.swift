import CLibPQ
import DepotCore

/// Which replica runs the background services that must run once (GC, webhook delivery, the
/// pipeline scheduler, the canary controller, log retention).
///
/// SQLite: the process that owns the store (its lock on the storage root) is the only one, so it
/// leads. PostgreSQL: the replica holding a session-level advisory lock on a connection of its
/// own. When that replica dies, PostgreSQL ends its session (at once for a killed process; for a
/// vanished machine after the server-side keepalives this connection sets, about 11 s) and the
/// lock is free; the next `poll()` of another replica takes it. A replica whose leader connection
/// fails (libpq keepalives and `tcp_user_timeout`: about 10 s) stops leading before it
/// reconnects, so two leaders can overlap for about one poll interval plus those timeouts. The
/// scheduler, canary controller and webhook delivery are guarded by row conditions (a webhook
/// cursor never moves back); GC is not yet (docs/SCALE.md).
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
    /// The connection and the polling: held across network I/O, so only `poll` and `resign` take it.
    private let state: Locked<State>
    /// What `isLeader` reads: its own lock, never held across I/O, so the services that ask every
    /// few hundred milliseconds and /metrics never wait for a poll stuck on an unreachable server.
    private let leadingFlag: Locked<Bool>
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
        leadingFlag = Locked(leading)
    }

    /// A contender for the leadership of the PostgreSQL catalog `settings` names.
    public static func contending(_ settings: PostgresSettings) -> Leadership {
        var s = settings
        s.poolSize = 1
        return Leadership(settings: s, leading: false)
    }

    public var isLeader: Bool { leadingFlag.withLock { $0 } }

    /// Takes the leadership if it is free, or checks that this replica still holds it. Returns
    /// what changed, if anything. Blocking (a round trip or a connection attempt): call it from a
    /// thread that may block, every few seconds.
    public func poll() -> Change? {
        guard let settings else { return nil }
        let change = state.withLock { s -> Change? in
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
        // A lost leadership is published before anything else: the connection that held it is
        // already closed (its lock freed), so another replica may lead from now on.
        let leading = state.withLock { $0.leading }
        leadingFlag.withLock { $0 = leading }
        return change
    }

    /// Gives the leadership up (shutdown): closing the session frees the lock at once.
    public func resign() {
        leadingFlag.withLock { $0 = settings == nil }
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
