import DepotCatalog
import DepotCore
import DepotPipelines
import Foundation
import Testing

/// Issue #12 item 5: a job log that a newer upload replaces loses its GC root in the same
/// transaction, unless another job still names it (before, every replaced log stayed rooted).
@Suite struct JobLogRootTests {
    static let pipeline = """
        name: logs
        trigger: {repositories: ["logs/*"], tags: ["v*"]}
        stages:
          s:
            exec: 'true'
            tag: "{{tag}}-done"
        """

    @Test func aReplacedLogLosesItsRootUnlessAnotherJobSharesIt() async throws {
        try await PipelineHarness.run(pipelines: [Self.pipeline]) { h, _ in
            _ = try await h.push("logs/m", "v1", files: ["a.txt": "a"])
            _ = try await h.push("logs/m", "v2", files: ["b.txt": "b"])
            _ = try await h.waitJobs { $0.count == 2 }
            var leased: [JobRecord] = []
            for _ in 0..<200 where leased.count < 2 {
                if let j = try h.jobs.lease(runner: "t", labels: ["cpu"]) {
                    leased.append(j)
                } else {
                    try await Task.sleep(for: .milliseconds(20))
                }
            }
            try #require(leased.count == 2)
            let (a, b) = (leased[0], leased[1])
            let catalog = h.registry.store.catalog
            func isRoot(_ d: Digest) throws -> Bool { try catalog.read { try $0.isRoot(d) } }

            let first = try h.jobs.storeLog(a.id, token: a.leaseToken!, bytes: Array("attempt 1\n".utf8))
            #expect(try isRoot(first))
            let second = try h.jobs.storeLog(a.id, token: a.leaseToken!, bytes: Array("attempt 1\nattempt 2\n".utf8))
            #expect(try isRoot(second))
            #expect(try !isRoot(first), "the replaced log is released to GC")
            #expect(try h.jobs.job(a.id).logDigest == second.description)

            // Job b's log has the same bytes as a's current one: replacing a's keeps it rooted for b.
            #expect(try h.jobs.storeLog(b.id, token: b.leaseToken!, bytes: Array("attempt 1\nattempt 2\n".utf8)) == second)
            let third = try h.jobs.storeLog(a.id, token: a.leaseToken!, bytes: Array("final\n".utf8))
            #expect(try isRoot(third))
            #expect(try isRoot(second), "job b still names it")
            // A stale token records nothing and roots nothing.
            #expect(throws: (any Error).self) { try h.jobs.storeLog(a.id, token: "stale", bytes: Array("x".utf8)) }
            #expect(try h.jobs.job(a.id).logDigest == third.description)
        }
    }
}
