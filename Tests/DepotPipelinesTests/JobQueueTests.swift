import DepotCore
import DepotPipelines
import DepotRegistry
import DepotTestSupport
import Foundation
import Testing

/// The job queue against a real catalog: pushes start runs, leases, attempts, memoization and
/// the dependents of a finished job. No runner and no HTTP: the test plays the runner.
@Suite struct JobQueueTests {
    static let pipeline = """
        name: convert
        trigger:
          repositories: ["models/*"]
          tags: ["v*"]
        stages:
          onnx:
            exec: ["true"]
            retries: 1
            tag: "{{tag}}-onnx"
          package:
            exec: ["true"]
            needs: [onnx]
            labels: [gpu]
        """

    static func queue(_ t: TestRegistry) throws -> JobQueue {
        var options = JobQueue.Options()
        options.retryBaseSeconds = 0 // a failed attempt is leasable again at once
        let q = JobQueue(registry: t.registry, pipelines: [try PipelineLoader.parse(pipeline, file: "convert.yaml")], options: options)
        #expect(try q.schedule() == 0, "the first call only places the cursor")
        return q
    }

    static let key = "sha256:" + String(repeating: "ab", count: 32)

    /// Pushes the job's output as a runner does: a manifest carrying the job's key.
    static func pushOutput(_ t: TestRegistry, key: String, marker: UInt8) throws -> Digest {
        try t.pushManifest("models/bert", nil, layers: [[marker]], annotations: [JobAnnotations.key: key])
    }

    @Test func aPushQueuesTheRootStageAndAJobRunsThroughItsStates() throws {
        let t = try TestRegistry("jobs")
        let q = try Self.queue(t)
        try t.pushManifest("data/set", "v1", layers: [[1]])
        try t.pushManifest("models/bert", "latest", layers: [[1]])
        #expect(try q.schedule() == 0, "neither push matches the trigger")
        let input = try t.pushManifest("models/bert", "v1", layers: [[2]])
        #expect(try q.schedule() == 1)
        #expect(try q.schedule() == 0, "an event is acted on once")

        let queued = try #require(try q.jobs(state: nil, pipeline: "convert", limit: 10).first)
        #expect(queued.stage == "onnx" && rawText(queued.state) == "queued" && queued.inputDigest == input.description)
        #expect(queued.inputTag == "v1" && queued.outputTag == "v1-onnx", "the tag template is rendered")

        let leased = try #require(try q.lease(runner: "r1", labels: ["cpu"]))
        #expect(leased.id == queued.id && rawText(leased.state) == "leased" && leased.runner == "r1")
        #expect(try q.lease(runner: "r2", labels: ["cpu"]) == nil, "one lease at a time")
        let token = try #require(leased.leaseToken)
        #expect(registryErrorCode { try q.start(leased.id, token: "stolen", key: Self.key) } == "CONFLICT")
        #expect(registryErrorCode { try q.start(leased.id, token: token, key: "sha256:short") } != nil)
        #expect(try q.start(leased.id, token: token, key: Self.key) == .run)
        #expect(rawText(try q.job(leased.id).state) == "running")
        _ = try q.heartbeat(leased.id, token: token)

        // The first attempt fails: queued again, with the reason.
        let failed = try q.fail(leased.id, token: token, reason: "exit 1")
        #expect(rawText(failed.state) == "queued" && failed.reason?.contains("exit 1") == true)
        let again = try #require(try q.lease(runner: "r1", labels: ["cpu"]))
        #expect(again.id == leased.id && again.attempt == 2)
        let token2 = try #require(again.leaseToken)
        #expect(registryErrorCode { try q.heartbeat(again.id, token: token) } == "CONFLICT", "the old lease is gone")
        #expect(try q.start(again.id, token: token2, key: Self.key) == .run)
        let unrelated = try t.pushManifest("models/bert", nil, layers: [[9]])
        #expect(registryErrorCode { try q.complete(again.id, token: token2, output: unrelated) } == "MANIFEST_INVALID", "no job key")
        let output = try Self.pushOutput(t, key: Self.key, marker: 3)
        try q.complete(again.id, token: token2, output: output)
        let done = try q.job(again.id)
        #expect(rawText(done.state) == "succeeded" && done.outputDigest == output.description && done.isFinal)

        // The dependent stage is queued on the output, and only a runner with its label gets it.
        let next = try #require(try q.jobs(state: nil, pipeline: "convert", limit: 10).first { $0.stage == "package" })
        #expect(rawText(next.state) == "queued" && next.inputDigest == output.description)
        #expect(try q.lease(runner: "r1", labels: ["cpu"]) == nil)
        #expect(try q.lease(runner: "r3", labels: ["cpu", "gpu"])?.id == next.id)
    }

    @Test func theLastAttemptFailsTheJobAndRetryQueuesItAgain() throws {
        let t = try TestRegistry("jobs")
        let q = try Self.queue(t)
        try t.pushManifest("models/bert", "v1", layers: [[2]])
        try q.schedule()
        for attempt in 1...2 {
            let job = try #require(try q.lease(runner: "r", labels: []), "attempt \(attempt)")
            _ = try q.fail(job.id, token: job.leaseToken!, reason: "boom \(attempt)")
        }
        let job = try #require(try q.jobs(state: nil, pipeline: nil, limit: 10).first)
        #expect(rawText(job.state) == "failed" && job.reason == "boom 2" && job.isFinal, "retries: 1 means two attempts")
        #expect(try q.lease(runner: "r", labels: []) == nil)
        #expect(registryErrorCode { try q.cancel(job.id, actor: "ops") } == "CONFLICT", "a finished job cannot be cancelled")
        let retried = try q.retry(job.id, actor: "ops")
        #expect(rawText(retried.state) == "queued" && retried.attempt == 0)
        let leased = try #require(try q.lease(runner: "r", labels: []))
        let cancelled = try q.cancel(leased.id, actor: "ops")
        #expect(rawText(cancelled.state) == "cancelled" && cancelled.reason == "cancelled by ops")
        #expect(rawText(try q.heartbeat(leased.id, token: leased.leaseToken!).state) == "cancelled", "the runner learns it")
        #expect(registryErrorCode { try q.retry(leased.id + 1000, actor: "ops") } == "JOB_UNKNOWN")
    }

    @Test func aKnownKeyIsMemoizedAndAPipelineOutputStartsNothing() throws {
        let t = try TestRegistry("jobs")
        let q = try Self.queue(t)
        try t.pushManifest("models/bert", "v1", layers: [[2]])
        try q.schedule()
        let first = try #require(try q.lease(runner: "r", labels: []))
        #expect(try q.start(first.id, token: first.leaseToken!, key: Self.key) == .run)
        let output = try Self.pushOutput(t, key: Self.key, marker: 3)
        try q.complete(first.id, token: first.leaseToken!, output: output)

        // Tagging the output with a matching tag does not start the pipeline on its own output.
        try t.registry.setAlias(try RepositoryName("models/bert"), "v1-output", to: output, actor: "ops", reason: nil)
        #expect(try q.schedule() == 0)

        // Another input whose job computes the same key (same stage, toolchain and input content) is memoized.
        try t.pushManifest("models/bert", "v2", layers: [[4]])
        #expect(try q.schedule() == 1)
        let second = try #require(try q.lease(runner: "r", labels: []))
        #expect(try q.start(second.id, token: second.leaseToken!, key: Self.key) == .memoized(output))
        let memo = try q.job(second.id)
        #expect(rawText(memo.state) == "succeeded" && memo.memoized && memo.outputDigest == output.description)
        #expect(try t.registry.manifest(try RepositoryName("models/bert"), .tag("v2-onnx")).digest == output, "the output tag is set")
    }
}
