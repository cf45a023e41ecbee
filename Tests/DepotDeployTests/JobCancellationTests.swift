import DepotCore
import DepotDeploy
import DepotRegistry
import DepotTestSupport
import Foundation
import Testing

/// A job queue that records what it was asked to cancel (the real one lives in DepotPipelines,
/// a sibling layer this target does not import).
final class CancelLog: JobCancelling, @unchecked Sendable {
    private let lock = NSLock()
    private var ids: [Int64] = []
    let refuse: Bool

    init(refuse: Bool = false) { self.refuse = refuse }

    var cancelled: [Int64] {
        lock.lock()
        defer { lock.unlock() }
        return ids
    }

    func cancel(_ id: Int64, actor: String) throws -> String {
        if refuse { throw RegistryError(.conflict, "job \(id) is succeeded: only queued, leased or running jobs can be cancelled") }
        lock.lock()
        ids.append(id)
        lock.unlock()
        return "job \(id) cancelled by \(actor)"
    }
}

/// "Cancelling a job aborts its rollout", in `Deployments.cancelJob`.
@Suite struct JobCancellationTests {
    let repo = try! RepositoryName("vision/adder")

    @Test func cancellingACanaryJobAbortsTheRolloutItStarted() throws {
        let t = try TestRegistry("deploy")
        let d = Deployments(registry: t.registry, policy: RolloutTests.policy())
        let v1 = try RolloutTests.bundle(t, "v1", marker: "1")
        try RolloutTests.bundle(t, "v2", marker: "2")
        _ = try d.start(repo, "production", .tag("v1"), actor: "ops")
        let started = try d.start(repo, "production", .tag("v2"), actor: "pipeline", jobID: 7)
        #expect(started.rollout?.state == .running)

        let jobs = CancelLog()
        let job = try d.cancelJob(7, actor: "ops", in: jobs)
        #expect(job == "job 7 cancelled by ops" && jobs.cancelled == [7])
        let s = try d.status(repo, "production")
        #expect(s.rollout?.state == .aborted && s.rollout?.reason?.contains("job 7 cancelled by ops") == true)
        #expect(s.deployment.stable == v1.description)
    }

    @Test func cancellingAnotherJobLeavesTheRolloutRunning() throws {
        let t = try TestRegistry("deploy")
        let d = Deployments(registry: t.registry, policy: RolloutTests.policy())
        try RolloutTests.bundle(t, "v1", marker: "1")
        try RolloutTests.bundle(t, "v2", marker: "2")
        _ = try d.start(repo, "production", .tag("v1"), actor: "ops")
        _ = try d.start(repo, "production", .tag("v2"), actor: "pipeline", jobID: 7)

        _ = try d.cancelJob(8, actor: "ops", in: CancelLog())
        #expect(try d.status(repo, "production").rollout?.state == .running)
    }

    @Test func aJobThatCannotBeCancelledLeavesItsRolloutAlone() throws {
        let t = try TestRegistry("deploy")
        let d = Deployments(registry: t.registry, policy: RolloutTests.policy())
        try RolloutTests.bundle(t, "v1", marker: "1")
        try RolloutTests.bundle(t, "v2", marker: "2")
        _ = try d.start(repo, "production", .tag("v1"), actor: "ops")
        _ = try d.start(repo, "production", .tag("v2"), actor: "pipeline", jobID: 7)

        #expect(throws: RegistryError.self) { try d.cancelJob(7, actor: "ops", in: CancelLog(refuse: true)) }
        #expect(try d.status(repo, "production").rollout?.state == .running)
    }
}
