import DepotAPI
import DepotCore
import Foundation
import Testing

@testable import DepotCatalog

/// A fresh catalog in a temporary directory.
func makeCatalog() throws -> (Database, String) {
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("depot-catalog-\(UUID().uuidString)").path
    try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    return (try Database(path: dir + "/catalog.db"), dir)
}

func newJob(_ stage: String = "convert") -> NewJob {
    NewJob(
        stage: stage, kind: "exec", spec: "{}", inputRepository: "team/model", inputDigest: "sha256:" + String(repeating: "a", count: 64),
        inputTag: "v1", outputTag: nil, labels: ["gpu"], maxAttempts: 3, timeoutMs: 60_000)
}

/// A queued job in a fresh catalog.
func queuedJob(_ db: Database) throws -> Int64 {
    try db.write { conn in
        let run = try #require(
            try conn.createPipelineRun(
                pipeline: "p", repository: "team/model", digest: "sha256:" + String(repeating: "a", count: 64), tag: "v1", eventID: nil,
                now: 1))
        return try #require(try conn.enqueueJob(runID: run, pipeline: "p", newJob(), now: 1))
    }
}

@Suite struct JobTransitionTests {
    @Test func aJobGoesThroughItsStatesAndAWrongSourceStateDoesNotApply() throws {
        let (db, dir) = try makeCatalog()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let id = try queuedJob(db)
        try db.write { conn in
            // Not leased yet: nothing that needs a lease applies.
            #expect(try !conn.startJob(id, token: "t", key: "k", leaseExpires: nil, now: 2))
            #expect(try !conn.completeJob(id, token: nil, output: nil, now: 2))
            #expect(try !conn.failJob(id, reason: "x", now: 2))
            #expect(try !conn.requeueJob(id, reason: "x", notBefore: 0, now: 2))
            #expect(try !conn.retryJob(id, now: 2))
            #expect(try conn.job(id)?.state == .queued)

            #expect(try conn.leaseJob(id, runner: "r", token: "t", expires: 100, now: 2))
            #expect(try !conn.leaseJob(id, runner: "r2", token: "t2", expires: 100, now: 2), "a leased job is not leased twice")
            #expect(try !conn.completeJob(id, token: "t", output: "sha256:x", now: 3), "a leased job that did not start cannot succeed")
            #expect(try !conn.startJob(id, token: "wrong", key: "k", leaseExpires: 200, now: 3), "another token does not start it")
            #expect(try conn.startJob(id, token: "t", key: "k", leaseExpires: 200, now: 3))
            #expect(try !conn.startJob(id, token: "t", key: "k", leaseExpires: 200, now: 3), "a running job does not start again")
            #expect(try conn.renewJobLease(id, token: "t", expires: 300, now: 4))
            #expect(try !conn.renewJobLease(id, token: "wrong", expires: 400, now: 4))
            #expect(try !conn.completeJob(id, token: "wrong", output: "sha256:x", now: 5))
            #expect(try conn.completeJob(id, token: "t", output: "sha256:x", now: 5))
            let done = try #require(try conn.job(id))
            #expect(done.state == .succeeded && done.isFinal && done.outputDigest == "sha256:x" && done.leaseToken == nil)
            #expect(done.startedAt == 3 && done.finishedAt == 5 && done.key == "k" && done.attempt == 1 && done.labels == ["gpu"])

            // Final: nothing moves it.
            #expect(try !conn.cancelJob(id, reason: "x", now: 6))
            #expect(try !conn.failJob(id, reason: "x", now: 6))
            #expect(try !conn.requeueJob(id, reason: "x", notBefore: 0, now: 6))
            #expect(try !conn.retryJob(id, now: 6), "only failed or cancelled jobs are retried")
            #expect(try conn.job(id)?.state == .succeeded)
        }
    }

    @Test func failRequeueCancelAndRetryAreGuarded() throws {
        let (db, dir) = try makeCatalog()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let id = try queuedJob(db)
        try db.write { conn in
            #expect(try conn.leaseJob(id, runner: "r", token: "t", expires: 100, now: 2))
            #expect(try conn.requeueJob(id, reason: "attempt 1 failed", notBefore: 50, now: 3))
            let requeued = try #require(try conn.job(id))
            #expect(requeued.state == .queued && requeued.notBefore == 50 && requeued.leaseToken == nil && requeued.runner == nil)
            #expect(try conn.leasableJobs(kinds: ["exec"], now: 49, limit: 10).isEmpty, "backoff: not before 50")
            #expect(try conn.leasableJobs(kinds: ["exec"], now: 50, limit: 10).map(\.id) == [id])

            #expect(try conn.leaseJob(id, runner: "r", token: "t2", expires: 100, now: 50))
            #expect(try conn.failJob(id, reason: "broken", now: 51))
            #expect(try conn.job(id)?.state == .failed)
            #expect(try !conn.cancelJob(id, reason: "x", now: 52), "a failed job is not cancelled")
            #expect(try conn.retryJob(id, now: 53))
            let retried = try #require(try conn.job(id))
            #expect(retried.state == .queued && retried.attempt == 0 && retried.key == nil && retried.finishedAt == nil)

            #expect(try conn.cancelJob(id, reason: "cancelled by me", now: 54))
            #expect(try conn.job(id)?.state == .cancelled)
            #expect(try !conn.leaseJob(id, runner: "r", token: "t3", expires: 100, now: 55))
            #expect(try conn.retryJob(id, now: 56))
            #expect(try conn.jobs(state: .queued, pipeline: "p", limit: 10).map(\.id) == [id])
            #expect(try conn.jobs(state: .failed, pipeline: nil, limit: 10).isEmpty)
            #expect(try conn.jobCounts() == [.queued: 1])
        }
    }

    @Test func theMemoizedPathAppliesOnlyToALeasedJobWithItsToken() throws {
        let (db, dir) = try makeCatalog()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let id = try queuedJob(db)
        try db.write { conn in
            #expect(try !conn.completeMemoizedJob(id, token: "t", key: "k", output: "sha256:o", now: 2), "queued: no")
            #expect(try conn.leaseJob(id, runner: "r", token: "t", expires: 100, now: 2))
            #expect(try !conn.completeMemoizedJob(id, token: "other", key: "k", output: "sha256:o", now: 3))
            #expect(try conn.completeMemoizedJob(id, token: "t", key: "k", output: "sha256:o", now: 3))
            let job = try #require(try conn.job(id))
            #expect(job.state == .succeeded && job.memoized && job.outputDigest == "sha256:o")
        }
    }
}

@Suite struct RolloutTransitionTests {
    func rollout(_ db: Database) throws -> (deployment: Int64, rollout: Int64) {
        try db.write { conn in
            let d = try conn.createDeployment(repository: "team/model", environment: "production", modelName: "m", now: 1)
            let r = try conn.insertRollout(
                RolloutRecord(
                    id: 0, deploymentID: d.id, stable: "sha256:s", canary: "sha256:c", state: .running, steps: [10, 50, 100],
                    stepIndex: 0, weight: 10, analysisMs: 1000, stepStartedAt: 1, failures: [:], startedBy: "me", jobID: 7,
                    reason: nil, createdAt: 1, finishedAt: nil))
            return (d.id, r)
        }
    }

    @Test func pauseResumeAdvanceAndEndAreGuarded() throws {
        let (db, dir) = try makeCatalog()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let (d, id) = try rollout(db)
        try db.write { conn in
            #expect(try !conn.resumeRollout(id, reason: "x", failures: "{}", now: 2), "running: nothing to resume")
            #expect(try !conn.advanceRollout(id, fromStep: 1, toStep: 2, weight: 100, failures: "{}", now: 2), "not at step 1")
            #expect(try !conn.holdRollout(id, atStep: 1, failures: "{}", now: 2))
            #expect(try conn.holdRollout(id, atStep: 0, failures: "{\"err\":1}", now: 2))
            #expect(try conn.rollout(id)?.failures == ["err": 1])
            #expect(try conn.advanceRollout(id, fromStep: 0, toStep: 1, weight: 50, failures: "{}", now: 3))
            #expect(try !conn.advanceRollout(id, fromStep: 0, toStep: 1, weight: 50, failures: "{}", now: 3), "a step is taken once")
            #expect(try conn.pauseRollout(id, reason: "inconclusive", failures: "{}", now: 4))
            #expect(try !conn.pauseRollout(id, reason: "again", failures: "{}", now: 4))
            #expect(try !conn.advanceRollout(id, fromStep: 1, toStep: 2, weight: 100, failures: "{}", now: 4), "paused: no step")
            #expect(try conn.activeRollout(deployment: d)?.state == .paused)
            #expect(try conn.runningRollouts().isEmpty)
            #expect(try conn.resumeRollout(id, reason: "resumed", failures: "{}", now: 5))
            #expect(try conn.runningRollouts().map(\.id) == [id])
            #expect(try conn.promoteRollout(id, reason: "ok", failures: "{}", now: 6))
            let promoted = try #require(try conn.rollout(id))
            #expect(promoted.state == .promoted && promoted.weight == 100 && promoted.finishedAt == 6 && !promoted.isActive)
            #expect(try !conn.abortRollout(id, reason: "late", failures: "{}", now: 7), "an ended rollout stays ended")
            #expect(try !conn.rollBackRollout(id, reason: "late", failures: "{}", now: 7))
            #expect(try !conn.resumeRollout(id, reason: "late", failures: "{}", now: 7))
            #expect(try conn.activeRollout(deployment: d) == nil)
            #expect(try conn.rollout(forJob: 7)?.state == .promoted)
        }
    }

    @Test func rollBackAndAbortSetWeightZero() throws {
        let (db, dir) = try makeCatalog()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let (_, id) = try rollout(db)
        try db.write { conn in
            #expect(try conn.rollBackRollout(id, reason: "breached", failures: "{}", now: 2))
            let r = try conn.rollout(id)
            #expect(r?.state == .rolledBack && r?.weight == 0)
        }
        let (_, other) = try db.write { conn in
            let d = try conn.createDeployment(repository: "team/model", environment: "staging", modelName: "m", now: 1)
            return (
                d.id,
                try conn.insertRollout(
                    RolloutRecord(
                        id: 0, deploymentID: d.id, stable: nil, canary: "sha256:c", state: .paused, steps: [100], stepIndex: 0, weight: 5,
                        analysisMs: 1000, stepStartedAt: 1, failures: [:], startedBy: "me", jobID: nil, reason: nil, createdAt: 1,
                        finishedAt: nil))
            )
        }
        try db.write { conn in
            #expect(try conn.abortRollout(other, reason: "stop", failures: "{}", now: 3))
            let r = try conn.rollout(other)
            #expect(r?.state == .aborted && r?.weight == 0)
        }
    }
}
