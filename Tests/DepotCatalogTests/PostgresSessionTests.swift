import DepotCore
import Foundation
import Testing

@testable import DepotCatalog

/// What the PostgreSQL pool does about sessions that went bad while nobody looked: a connection
/// the server dropped is not handed to the next request, and a transaction left idle by a frozen
/// replica does not hold its locks forever.
@Suite(.enabled(if: Database.isTestingOnPostgres, "PostgreSQL sessions"))
struct PostgresSessionTests {
    func settings(_ db: Database) throws -> PostgresSettings {
        guard case .postgres(let s) = db.location else { throw DepotError.invalidArgument("not PostgreSQL") }
        return s
    }

    /// The server ended the pool's only connection (a restart, a firewall's idle cut, an
    /// administrator): the next request gets a fresh connection instead of a "connection lost".
    @Test func aConnectionTheServerDroppedIsReplacedBeforeUse() throws {
        let (setup, dir) = try makeCatalog()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var s = try settings(setup)
        s.poolSize = 1
        s.validateAfterIdleSeconds = 0
        let db = try Database(location: .postgres(s))
        let pid = try #require(try db.read { try $0.first("SELECT pg_backend_pid()") { $0.int(0) } })
        let killed = try setup.read { try $0.first("SELECT pg_terminate_backend(CAST(? AS integer))", .int(pid)) { $0.int(0) } }
        #expect(killed == 1)
        // Termination is asynchronous on the server: wait until the backend is gone.
        for _ in 0..<100 {
            let alive =
                try setup.read { try $0.first("SELECT 1 FROM pg_stat_activity WHERE pid = CAST(? AS integer)", .int(pid)) { _ in true } }
                ?? false
            if !alive { break }
            Thread.sleep(forTimeInterval: 0.05)
        }
        let next = try db.read { try $0.first("SELECT pg_backend_pid()") { $0.int(0) } }
        #expect(next != nil && next != pid)
    }

    /// A transaction that holds the appends lock and then stops issuing statements (its replica
    /// frozen) is ended by the server after `idleInTransactionTimeoutSeconds`: another replica
    /// then takes the lock, and the frozen one, when it wakes, is told to retry.
    @Test func aTransactionLeftIdleReleasesItsLocks() throws {
        let (setup, dir) = try makeCatalog()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var s = try settings(setup)
        s.idleInTransactionTimeoutSeconds = 1
        let frozen = try Database(location: .postgres(s))
        let other = try Database(location: setup.location)
        let holding = DispatchSemaphore(value: 0)
        let outcome = Locked<String?>(nil)
        let done = DispatchGroup()
        done.enter()
        Thread.detachNewThread {
            defer { done.leave() }
            do {
                try frozen.write { conn in
                    try conn.lock(.appends)
                    holding.signal()
                    Thread.sleep(forTimeInterval: 2.5)
                    try conn.run("SELECT 1")
                }
                outcome.withLock { $0 = "committed" }
            } catch {
                outcome.withLock { $0 = "\(error)" }
            }
        }
        #expect(holding.wait(timeout: .now() + 20) == .success)
        // Within the other replica's lock timeout (10 s), the frozen transaction is ended.
        try other.write { conn in try conn.lock(.appends) }
        done.wait()
        let message = try #require(outcome.withLock { $0 })
        #expect(message.contains("retry"), "\(message)")
    }
}
