import DepotCore
import Foundation
import Testing

@testable import DepotCatalog

@Suite struct LeadershipTests {
    @Test func aSQLiteCatalogsOwnerAlwaysLeads() throws {
        let leadership = try Database(location: .sqlite(path: NSTemporaryDirectory() + "lead-\(UUID().uuidString).db")).leadership()
        #expect(leadership.isLeader)
        #expect(leadership.poll() == nil)
    }

    /// Replicas of one PostgreSQL catalog: one leads; when it goes (its session ends), the next
    /// poll of another takes over; the leader's own polls keep it leading.
    @Test(.enabled(if: Database.isTestingOnPostgres, "needs the suite's PostgreSQL (scripts/test-postgres.sh)"))
    func oneReplicaLeadsAndAnotherTakesOverWhenItGoes() throws {
        let (db, dir) = try makeCatalog()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        // Each test catalog has its own schema, and the lock key names it: parallel tests do not compete.
        let a = db.leadership()
        let b = db.leadership()
        let c = db.leadership()
        defer {
            a.resign()
            b.resign()
            c.resign()
        }
        let first = [a.poll(), b.poll(), c.poll()]
        #expect(first.filter { $0 == .became }.count == 1, "\(first)")
        let leader = [a, b, c].first { $0.isLeader }!
        let others = [a, b, c].filter { !$0.isLeader }
        #expect(leader.poll() == nil && leader.isLeader)
        #expect(others.allSatisfy { $0.poll() == nil && !$0.isLeader })
        leader.resign() // as a killed process: its session ends, the lock is free
        #expect(!leader.isLeader)
        // The server frees the lock when the closed session's backend exits, a moment later:
        // poll as the replicas do (they poll every 2 s), for at most 30 s.
        var next: [Leadership.Change?] = []
        let deadline = Date().addingTimeInterval(30)
        while Date() < deadline {
            next = others.map { $0.poll() }
            if next.contains(.became) { break }
            Thread.sleep(forTimeInterval: 0.1)
        }
        #expect(next.filter { $0 == .became }.count == 1, "\(next)")
        #expect(others.filter(\.isLeader).count == 1)
    }
}
