import DepotCatalog
import DepotCore
import DepotDeploy
import DepotRegistry
import DepotStore
import DepotTestSupport
import Foundation
import Testing

/// The weights the router hook was told, in order.
final class WeightLog: @unchecked Sendable {
    private let lock = NSLock()
    private var list: [Int] = []
    func append(_ w: Int) {
        lock.lock()
        list.append(w)
        lock.unlock()
    }
    var weights: [Int] {
        lock.lock()
        defer { lock.unlock() }
        return list
    }
}

/// The rollout state machine driven directly: chosen metric values, and the analysis clock moved
/// forward by passing `now` (the interval is 60 s; nothing here waits).
@Suite struct RolloutTests {
    static let analysisMs: Int64 = 60_000
    let repo = try! RepositoryName("vision/adder")

    static func errors(failureLimit: Int = 0) -> MetricCheck {
        var c = MetricCheck(name: "errors", query: "errors{model=\"{{model}}\",version=\"{{version}}\"}")
        c.max = 0.01
        c.failureLimit = failureLimit
        return c
    }

    static func policy(failureLimit: Int = 0) -> CanaryPolicy {
        var p = CanaryPolicy()
        p.steps = [10, 50, 100]
        p.analysisSeconds = Double(analysisMs / 1000)
        p.checks = [errors(failureLimit: failureLimit)]
        return p
    }

    /// A Triton bundle (`adder/config.pbtxt`, `adder/1/model.py`) pushed directly to the registry.
    @discardableResult
    static func bundle(_ t: TestRegistry, _ tag: String, marker: String, model: String = "adder") throws -> Digest {
        try t.pushManifest(
            "vision/adder", tag, layers: [Array("name: \"\(model)\"\n".utf8), Array("# \(marker)\n".utf8)],
            artifactType: "application/vnd.depot.triton.bundle.v1",
            layerAnnotations: [["org.cncf.model.filepath": "\(model)/config.pbtxt"], ["org.cncf.model.filepath": "\(model)/1/model.py"]])
    }

    static var nowMs: Int64 { Int64(Date().timeIntervalSince1970 * 1000) }

    /// Runs every due analysis at `nowMs + ahead` with the canary's error rate `canaryErrors`
    /// (nil: no data); returns the decisions.
    static func analyse(_ d: Deployments, canaryErrors: Double?, ahead: Int64 = analysisMs + 1) async throws -> [String?] {
        var out: [String?] = []
        for due in try d.dueAnalyses(now: nowMs + ahead) {
            let source = ChosenMetrics()
            for check in d.policy.checks { source.set(check, due.context, version: due.context.canaryVersion, canaryErrors) }
            let measurements = await CanaryAnalysis.measure(d.policy, due.context, source: source)
            out.append(rawText(try d.apply(due, measurements: measurements)))
        }
        return out
    }

    @Test func aHealthyCanaryStepsThroughEveryWeightAndIsPromoted() async throws {
        let t = try TestRegistry("deploy")
        let log = WeightLog()
        let d = Deployments(registry: t.registry, policy: Self.policy()) { log.append($0.weight) }
        let v1 = try Self.bundle(t, "v1", marker: "1")
        let v2 = try Self.bundle(t, "v2", marker: "2")

        let first = try d.start(repo, "production", .tag("v1"), actor: "alice")
        #expect(first.deployment.stable == v1.description && first.deployment.canary == nil)
        #expect(rawText(first.rollout?.state) == "promoted", "the first deployment is stable at once")
        #expect(try t.registry.manifest(repo, .tag("production")).digest == v1)

        let started = try d.start(repo, "production", .tag("v2"), actor: "alice")
        #expect(started.deployment.canary == v2.description && started.deployment.weight == 10)
        #expect(started.canaryVersion == 2 && started.stableVersion == 1)
        #expect(try t.registry.manifest(repo, .tag("production")).digest == v2, "the alias names the desired version")
        #expect(try d.dueAnalyses(now: Self.nowMs).isEmpty, "the interval has not passed")

        #expect(try await Self.analyse(d, canaryErrors: 0.001) == ["advance"])
        #expect(try d.status(repo, "production").deployment.weight == 50)
        #expect(try await Self.analyse(d, canaryErrors: 0.001) == ["advance"])
        #expect(try await Self.analyse(d, canaryErrors: 0.001) == ["promote"])
        let done = try d.status(repo, "production")
        #expect(done.deployment.stable == v2.description && done.deployment.canary == nil && done.deployment.weight == 0)
        #expect(rawText(done.rollout?.state) == "promoted")
        #expect(done.decisions.map(\.decision) == ["start", "advance", "advance", "promote"])
        #expect(done.decisions.map(\.weight) == [10, 50, 100, 100])
        #expect(log.weights == [0, 10, 50, 100, 0], "the router hears every weight change")
        #expect(try await Self.analyse(d, canaryErrors: 0.001).isEmpty, "nothing left to analyse")
    }

    @Test func aBreachRollsBackAndTheAliasReturnsWithTheValues() async throws {
        let t = try TestRegistry("deploy")
        let d = Deployments(registry: t.registry, policy: Self.policy())
        let v1 = try Self.bundle(t, "v1", marker: "1")
        let v2 = try Self.bundle(t, "v2", marker: "2")
        _ = try d.start(repo, "production", .tag("v1"), actor: "ops")
        _ = try d.start(repo, "production", .tag("v2"), actor: "ops")

        #expect(try await Self.analyse(d, canaryErrors: 0.5) == ["rollback"], "at the first analysis")
        let s = try d.status(repo, "production")
        #expect(rawText(s.rollout?.state) == "rolled-back")
        #expect(s.deployment.stable == v1.description && s.deployment.canary == nil && s.deployment.weight == 0)
        #expect(try t.registry.manifest(repo, .tag("production")).digest == v1)
        let last = try #require(try t.registry.aliasHistory(repo, "production").last)
        #expect(last.from == v2 && last.to == v1 && last.actor == "depot-canary")
        #expect(last.reason?.contains("errors: 0.5 > max 0.01") == true, "\(last.reason ?? "")")
        #expect(s.decisions.last?.measurements?.contains("\"canary\":0.5") == true)
        let served = try d.served(digest: v2)
        #expect(served.count == 1 && served[0].role == "canary" && served[0].weight == 10 && served[0].to != nil)
        // The rollout is over: another may start.
        let v3 = try Self.bundle(t, "v3", marker: "3")
        #expect(try d.start(repo, "production", .digest(v3), actor: "ops").deployment.canary == v3.description)
    }

    @Test func missingEvidencePausesAndOnlyAnOperatorMovesOn() async throws {
        let t = try TestRegistry("deploy")
        let d = Deployments(registry: t.registry, policy: Self.policy())
        let v1 = try Self.bundle(t, "v1", marker: "1")
        let v2 = try Self.bundle(t, "v2", marker: "2")
        _ = try d.start(repo, "production", .tag("v1"), actor: "ops")
        _ = try d.start(repo, "production", .tag("v2"), actor: "ops")

        #expect(try await Self.analyse(d, canaryErrors: nil) == ["pause"])
        var s = try d.status(repo, "production")
        #expect(rawText(s.rollout?.state) == "paused" && s.deployment.weight == 10)
        #expect(s.rollout?.reason?.contains("errors: no data for the canary") == true, "\(s.rollout?.reason ?? "")")
        #expect(try await Self.analyse(d, canaryErrors: 0.001).isEmpty, "a paused rollout is not analysed")
        #expect(registryErrorCode { try d.start(repo, "production", .digest(v2), actor: "ops") } == "CONFLICT")

        s = try d.resume(repo, "production", actor: "ops")
        #expect(rawText(s.rollout?.state) == "running")
        #expect(registryErrorCode { try d.resume(repo, "production", actor: "ops") } == "CONFLICT", "it is not paused")
        #expect(try await Self.analyse(d, canaryErrors: 0.001) == ["advance"])

        s = try d.abort(repo, "production", actor: "ops", reason: "not convinced")
        #expect(rawText(s.rollout?.state) == "aborted" && s.deployment.canary == nil)
        #expect(try t.registry.manifest(repo, .tag("production")).digest == v1)
        #expect(registryErrorCode { try d.promote(repo, "production", actor: "ops", reason: nil) } == "CONFLICT")
    }

    @Test func aFailureWithinTheLimitHoldsTheStepAndTheNextRollsBack() async throws {
        let t = try TestRegistry("deploy")
        let d = Deployments(registry: t.registry, policy: Self.policy(failureLimit: 1))
        try Self.bundle(t, "v1", marker: "1")
        try Self.bundle(t, "v2", marker: "2")
        _ = try d.start(repo, "production", .tag("v1"), actor: "ops")
        _ = try d.start(repo, "production", .tag("v2"), actor: "ops")
        #expect(try await Self.analyse(d, canaryErrors: 0.5) == ["hold"])
        let held = try d.status(repo, "production")
        #expect(held.deployment.weight == 10 && held.rollout?.failures == ["errors": 1])
        #expect(try await Self.analyse(d, canaryErrors: 0.5) == ["rollback"])
    }

    @Test func theOperatorCanPromoteEarly() async throws {
        let t = try TestRegistry("deploy")
        let d = Deployments(registry: t.registry, policy: Self.policy())
        try Self.bundle(t, "v1", marker: "1")
        let v2 = try Self.bundle(t, "v2", marker: "2")
        _ = try d.start(repo, "production", .tag("v1"), actor: "ops")
        _ = try d.start(repo, "production", .tag("v2"), actor: "ops")
        let s = try d.promote(repo, "production", actor: "ops", reason: "hotfix")
        #expect(rawText(s.rollout?.state) == "promoted" && s.deployment.stable == v2.description)
        #expect(s.decisions.last?.actor == "ops" && s.decisions.last?.reason?.contains("hotfix") == true)
    }

    @Test func nodesSplitAndTheAnalysisWaitsForTheCanaryNodes() async throws {
        let t = try TestRegistry("deploy")
        let d = Deployments(registry: t.registry, policy: Self.policy())
        let v1 = try Self.bundle(t, "v1", marker: "1")
        let v2 = try Self.bundle(t, "v2", marker: "2")
        _ = try d.start(repo, "production", .tag("v1"), actor: "ops")
        let nodes = (1...4).map { "n\($0)" }
        for n in nodes { #expect(try d.resolve(repo, "production", node: n).digest == v1.description) }
        _ = try d.start(repo, "production", .tag("v2"), actor: "ops")
        let resolved = try nodes.map { try d.resolve(repo, "production", node: $0) }
        let canary = zip(nodes, resolved).filter { $0.1.role == "canary" }.map(\.0)
        #expect(canary.count == 1, "10% of four nodes is one node")
        #expect(resolved.filter { $0.role == "canary" }.allSatisfy { $0.digest == v2.description && $0.version == 2 })
        #expect(resolved.filter { $0.role == "stable" }.allSatisfy { $0.digest == v1.description && $0.version == 1 })

        #expect(try d.dueAnalyses(now: Self.nowMs + Self.analysisMs + 1).isEmpty, "the canary node has not reported it serves v2")
        #expect(try d.dueAnalyses(now: Self.nowMs + 3 * Self.analysisMs + 1).count == 1, "not waited for longer than two more intervals")
        try d.report(repo, "production", node: canary[0], digest: v2.description, version: 2, state: "ready", reason: nil)
        #expect(try d.dueAnalyses(now: Self.nowMs + Self.analysisMs + 1).count == 1)
    }

    @Test func aNodeThatCannotLoadTheCanaryRollsItBackAtOnce() async throws {
        let t = try TestRegistry("deploy")
        let d = Deployments(registry: t.registry, policy: Self.policy())
        let v1 = try Self.bundle(t, "v1", marker: "1")
        let v2 = try Self.bundle(t, "v2", marker: "2")
        _ = try d.start(repo, "production", .tag("v1"), actor: "ops")
        _ = try d.start(repo, "production", .tag("v2"), actor: "ops")
        try d.report(repo, "production", node: "n1", digest: v2.description, version: 2, state: "failed", reason: "CUDA OOM")
        let due = try d.dueAnalyses(now: Self.nowMs)
        #expect(due.count == 1 && due.first?.failedNodes == ["n1: CUDA OOM"], "due before the interval")
        #expect(try await Self.analyse(d, canaryErrors: 0.001, ahead: 0) == ["rollback"], "even with good metrics")
        #expect(try t.registry.manifest(repo, .tag("production")).digest == v1)
        #expect(try d.status(repo, "production").rollout?.reason?.contains("CUDA OOM") == true)
    }

    @Test func aRolloutIsRefusedWhenItCannotMakeSense() throws {
        let t = try TestRegistry("deploy", policy: TagPolicy(protected: ["production"], immutable: ["frozen"]))
        let d = Deployments(registry: t.registry, policy: Self.policy())
        try Self.bundle(t, "v1", marker: "1")
        try Self.bundle(t, "other", marker: "x", model: "multiplier")
        try t.pushManifest("vision/adder", "plain", layers: [[1]])
        #expect(registryErrorCode { try d.start(repo, "bad env", .tag("v1"), actor: "ops") } == "TAG_INVALID")
        #expect(registryErrorCode { try d.start(repo, "frozen", .tag("v1"), actor: "ops") } == "DENIED")
        #expect(registryErrorCode { try d.start(repo, "production", .tag("missing"), actor: "ops") } == "MANIFEST_UNKNOWN")
        for steps in [[50, 10, 100], [10, 50], [], [0, 100], [10, 10, 100]] {
            let code = registryErrorCode { try d.start(repo, "production", .tag("v1"), actor: "ops", steps: steps) }
            #expect(code != nil && code?.hasPrefix("other") == false, "steps \(steps)")
        }
        let notBundle = registryErrorCode { try d.start(repo, "production", .tag("plain"), actor: "ops") }
        #expect(notBundle != nil && notBundle?.hasPrefix("other") == false, "not a Triton bundle")
        _ = try d.start(repo, "production", .tag("v1"), actor: "ops")
        #expect(registryErrorCode { try d.start(repo, "production", .tag("v1"), actor: "ops") } == "CONFLICT", "already stable")
        let otherModel = registryErrorCode { try d.start(repo, "production", .tag("other"), actor: "ops") }
        #expect(otherModel != nil && otherModel?.hasPrefix("other") == false, "a bundle serving another model")
        #expect(registryErrorCode { try d.status(repo, "staging") } == "NAME_UNKNOWN")
        #expect(registryErrorCode { try d.resolve(repo, "production", node: "../etc") } != nil)
    }
}

/// Replicas (two registries on one PostgreSQL catalog) starting the first rollout of a new
/// deployment at the same moment: one creates it, the other gets a clean conflict, never a
/// database error about a duplicate row.
@Suite(.enabled(if: Database.isTestingOnPostgres, "replicas need a PostgreSQL catalog"))
struct ConcurrentRolloutStartTests {
    @Test func twoReplicasStartingOneNewDeploymentGetOneSuccessAndOneConflict() throws {
        let repo = try RepositoryName("vision/adder")
        let t = try TestRegistry("deploy")
        let dir = TempDir("deploy-replica")
        var options = StoreOptions()
        options.catalog = t.registry.store.catalog.location
        // Opened first: a store with local packs refuses a catalog naming packs it does not have.
        let other = Registry(store: try ChunkStore(root: dir.path + "/store", options: options, create: true))
        try RolloutTests.bundle(t, "v1", marker: "1")
        for round in 0..<5 {
            let env = "env\(round)"
            let replicas = [
                Deployments(registry: t.registry, policy: RolloutTests.policy()),
                Deployments(registry: other, policy: RolloutTests.policy()),
            ]
            let outcomes = Locked<[String]>([])
            DispatchQueue.concurrentPerform(iterations: 2) { i in
                do {
                    _ = try replicas[i].start(repo, env, .tag("v1"), actor: "replica-\(i)")
                    outcomes.withLock { $0.append("ok") }
                } catch let e as RegistryError {
                    outcomes.withLock { $0.append(e.code.rawValue) }
                } catch {
                    outcomes.withLock { $0.append("other: \(error)") }
                }
            }
            #expect(outcomes.withLock { $0 }.sorted() == ["CONFLICT", "ok"], "round \(round)")
        }
    }
}
