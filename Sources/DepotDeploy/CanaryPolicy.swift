import Foundation

/// How rollouts proceed: the traffic steps, the analysis interval, the metric checks, where
/// Prometheus is, and an optional router hook. From the `canary:` section of the config.
public struct CanaryPolicy: Sendable, Equatable {
    public var steps: [Int] = [1, 10, 50, 100]
    public var analysisSeconds: Double = 900
    public var prometheusURL: String = "http://127.0.0.1:9090"
    public var checks: [MetricCheck] = MetricCheck.tritonDefaults
    /// A command run on every weight change (argv; `DEPOT_*` environment), for traffic routers.
    public var routerCommand: [String]?
    /// A URL POSTed a JSON description on every weight change, for traffic routers.
    public var routerURL: String?
    /// Nodes not heard from for this long are not counted when nodes are split.
    public var nodeTTLSeconds: Double = 300

    public init() {}

}

/// A PromQL check with thresholds: absolute (`max`, `min`) or relative to the stable version
/// (`maxRatio`: canary ≤ ratio × stable). Values between the pause threshold and the failure
/// threshold are inconclusive and pause the rollout; so is no data, unless `optional` (for
/// metrics that exist only on some hardware, e.g. GPU utilization).
public struct MetricCheck: Sendable, Equatable {
    public var name: String
    /// PromQL with `{{model}}`, `{{version}}` (the side measured), `{{canary_version}}`,
    /// `{{stable_version}}`, `{{window}}`.
    public var query: String
    public var max: Double?
    public var pauseAbove: Double?
    public var min: Double?
    public var pauseBelow: Double?
    public var maxRatio: Double?
    public var pauseRatio: Double?
    /// Failed measurements tolerated before a rollback.
    public var failureLimit = 0
    public var optional = false

    public init(name: String, query: String) {
        self.name = name
        self.query = query
    }

    public var needsStable: Bool { maxRatio != nil || pauseRatio != nil }

    static func rate(_ metric: String) -> String {
        "sum(rate(\(metric){model=\"{{model}}\",version=\"{{version}}\"}[{{window}}]))"
    }

    /// Checks written for Triton's metrics (`nv_inference_*`, labelled by model and version;
    /// `nv_gpu_*` where a GPU exists, so those are optional).
    public static let tritonDefaults: [MetricCheck] = {
        var errors = MetricCheck(
            name: "error-rate",
            query:
                "\(rate("nv_inference_request_failure")) / (\(rate("nv_inference_request_success")) + \(rate("nv_inference_request_failure")))"
        )
        errors.max = 0.01
        errors.pauseAbove = 0.005
        var latency = MetricCheck(
            name: "latency", query: "\(rate("nv_inference_request_duration_us")) / \(rate("nv_inference_request_success"))")
        latency.maxRatio = 1.5
        latency.pauseRatio = 1.2
        var queue = MetricCheck(
            name: "queue-latency", query: "\(rate("nv_inference_queue_duration_us")) / \(rate("nv_inference_request_success"))")
        queue.maxRatio = 3
        queue.pauseRatio = 2
        queue.optional = true // zero queueing on an idle stable makes the ratio meaningless
        var gpu = MetricCheck(name: "gpu-utilization", query: "max(nv_gpu_utilization)")
        gpu.max = 0.98
        gpu.optional = true
        var memory = MetricCheck(name: "gpu-memory", query: "max(nv_gpu_memory_used_bytes / nv_gpu_memory_total_bytes)")
        memory.max = 0.95
        memory.optional = true
        return [errors, latency, queue, gpu, memory]
    }()

    /// The query for one side.
    public func render(model: String, version: Int, canaryVersion: Int, stableVersion: Int?, window: String) -> String {
        var q = query
        let values = [
            "model": model, "version": String(version), "canary_version": String(canaryVersion),
            "stable_version": stableVersion.map(String.init) ?? "", "window": window,
        ]
        for (k, v) in values { q = q.replacingOccurrences(of: "{{\(k)}}", with: v) }
        return q
    }
}
