import DepotCore
import DepotDeploy
import Foundation
import Testing

/// A metrics source answering each rendered query with a value the test chose.
final class ChosenMetrics: MetricsSource, Sendable {
    private let values = Locked<[String: Double]>([:])
    let unreachable: Bool
    init(unreachable: Bool = false) { self.unreachable = unreachable }

    /// Sets the value of `check`'s query for one version (nil: no data).
    func set(_ check: MetricCheck, _ context: CanaryAnalysis.Context, version: Int, _ value: Double?) {
        let q = check.render(
            model: context.model, version: version, canaryVersion: context.canaryVersion, stableVersion: context.stableVersion,
            window: context.window)
        values.withLock { $0[q] = value }
    }

    func value(_ promql: String) async throws -> Double? {
        if unreachable { throw CancellationError() }
        return values.withLock { $0[promql] }
    }
}

/// One check's outcome for chosen canary and stable values.
@Suite struct CanaryAnalysisTests {
    static let context = CanaryAnalysis.Context(model: "adder", canaryVersion: 2, stableVersion: 1, weight: 10, analysisSeconds: 900)

    static func outcome(
        _ check: MetricCheck, canary: Double?, stable: Double? = nil, context: CanaryAnalysis.Context = context
    ) async -> DepotDeploy.Measurement {
        var policy = CanaryPolicy()
        policy.checks = [check]
        let source = ChosenMetrics()
        source.set(check, context, version: context.canaryVersion, canary)
        if let sv = context.stableVersion { source.set(check, context, version: sv, stable) }
        let out = await CanaryAnalysis.measure(policy, context, source: source)
        return out[0]
    }

    static var errorRate: MetricCheck {
        var c = MetricCheck(name: "errors", query: "errors{model=\"{{model}}\",version=\"{{version}}\"}[{{window}}]")
        c.max = 0.01
        c.pauseAbove = 0.005
        return c
    }

    static var latency: MetricCheck {
        var c = MetricCheck(name: "latency", query: "latency{version=\"{{version}}\"}")
        c.maxRatio = 1.5
        c.pauseRatio = 1.2
        return c
    }

    @Test func absoluteThresholdsPassPauseOrFail() async {
        #expect(await Self.outcome(Self.errorRate, canary: 0.001).outcome == .pass)
        #expect(await Self.outcome(Self.errorRate, canary: 0.007).outcome == .inconclusive)
        let fail = await Self.outcome(Self.errorRate, canary: 0.5)
        #expect(fail.outcome == .fail && fail.detail == "0.5 > max 0.01" && fail.canary == 0.5)
        var floor = MetricCheck(name: "throughput", query: "rps{version=\"{{version}}\"}")
        floor.min = 10
        floor.pauseBelow = 20
        #expect(await Self.outcome(floor, canary: 5).outcome == .fail)
        #expect(await Self.outcome(floor, canary: 15).outcome == .inconclusive)
        #expect(await Self.outcome(floor, canary: 25).outcome == .pass)
    }

    @Test func ratiosCompareWithTheStableVersion() async {
        #expect(await Self.outcome(Self.latency, canary: 100, stable: 100).outcome == .pass)
        #expect(await Self.outcome(Self.latency, canary: 130, stable: 100).outcome == .inconclusive)
        let fail = await Self.outcome(Self.latency, canary: 200, stable: 100)
        #expect(fail.outcome == .fail && fail.stable == 100)
        #expect(await Self.outcome(Self.latency, canary: 1, stable: 0).outcome == .fail, "anything over a zero stable is an infinite ratio")
        #expect(await Self.outcome(Self.latency, canary: 0, stable: 0).outcome == .pass)
    }

    @Test func missingEvidenceIsInconclusiveUnlessOptional() async {
        let noCanary = await Self.outcome(Self.errorRate, canary: nil)
        #expect(noCanary.outcome == .inconclusive && noCanary.detail == "no data for the canary")
        var optional = Self.errorRate
        optional.optional = true
        #expect(await Self.outcome(optional, canary: nil).outcome == .skipped)
        #expect(await Self.outcome(Self.latency, canary: 100, stable: nil).outcome == .inconclusive, "no stable data")
        let first = CanaryAnalysis.Context(model: "adder", canaryVersion: 1, stableVersion: nil, weight: 10, analysisSeconds: 60)
        #expect(await Self.outcome(Self.latency, canary: 100, context: first).outcome == .inconclusive, "no stable version")
        let full = CanaryAnalysis.Context(model: "adder", canaryVersion: 2, stableVersion: 1, weight: 100, analysisSeconds: 60)
        #expect(await Self.outcome(Self.latency, canary: 100, stable: nil, context: full).outcome == .skipped, "no stable traffic at 100%")
    }

    @Test func anUnreachableSourceIsInconclusiveForEveryCheck() async {
        var policy = CanaryPolicy()
        policy.checks = [Self.errorRate, Self.latency]
        let source = ChosenMetrics(unreachable: true)
        let out = await CanaryAnalysis.measure(policy, Self.context, source: source)
        #expect(out.map(\.outcome) == [.inconclusive, .inconclusive])
        #expect(out.allSatisfy { $0.detail.hasPrefix("metrics unavailable") })
    }

    @Test func queriesAreRenderedForEachSide() {
        #expect(Self.context.window == "900s")
        #expect(
            Self.errorRate.render(model: "adder", version: 2, canaryVersion: 2, stableVersion: 1, window: "60s")
                == "errors{model=\"adder\",version=\"2\"}[60s]")
        let c = MetricCheck(name: "x", query: "{{canary_version}}/{{stable_version}}")
        #expect(c.render(model: "m", version: 1, canaryVersion: 3, stableVersion: nil, window: "1s") == "3/")
        #expect(CanaryPolicy().checks.map(\.name) == ["error-rate", "latency", "queue-latency", "gpu-utilization", "gpu-memory"])
    }

    @Test func nodesSplitByAStableHash() {
        let nodes = (1...10).map { "node-\($0)" }
        #expect(Deployments.canaryNodes(nodes, weight: 0, salt: "1").isEmpty)
        #expect(Deployments.canaryNodes(nodes, weight: 1, salt: "1").count == 1, "at least one node above 0%")
        #expect(Deployments.canaryNodes(nodes, weight: 50, salt: "1").count == 5)
        #expect(Deployments.canaryNodes(nodes, weight: 99, salt: "1").count == 9, "one node stays stable until 100%")
        #expect(Deployments.canaryNodes(nodes, weight: 100, salt: "1") == Set(nodes))
        #expect(Deployments.canaryNodes(["only"], weight: 50, salt: "1").isEmpty)
        #expect(Deployments.canaryNodes(["only"], weight: 100, salt: "1") == ["only"])
        var previous: Set<String> = []
        for w in [1, 10, 30, 50, 80, 100] {
            let now = Deployments.canaryNodes(nodes.shuffled(), weight: w, salt: "7")
            #expect(previous.isSubset(of: now), "a node on the canary stays there as the weight grows")
            #expect(Deployments.canaryNodes(nodes.reversed(), weight: w, salt: "7") == now, "the order nodes are listed in does not matter")
            previous = now
        }
        #expect(Deployments.isSafeName("node-1.a_b") && !Deployments.isSafeName("..") && !Deployments.isSafeName("a/b"))
    }
}
