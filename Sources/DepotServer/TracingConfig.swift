import DepotCore
import Foundation

/// The `tracing:` section: OpenTelemetry traces of requests, pushes, pulls, pipeline jobs and
/// rollouts (docs/OBSERVABILITY.md), exported over OTLP/HTTP to a collector. Off by default:
/// without it the tracing API's no-op tracer is in place and spans cost a few nanoseconds.
public struct TracingConfig: Sendable, Equatable {
    public var enabled = false
    /// The collector's OTLP/HTTP traces URL (the path included, as OTLP's per-signal endpoint
    /// variables take it).
    public var endpoint = "http://127.0.0.1:4318/v1/traces"
    /// The fraction of requests without a caller's trace context that are traced, decided per
    /// request before any span exists (`RequestTrace.traces`); a request with a well-formed
    /// `traceparent` follows its caller's sampled flag; background work is always traced.
    public var sampleRatio = 1.0
    /// `service.name` of every span.
    public var serviceName = "depot"
    /// How long one export may take before it is abandoned (spans are dropped, never waited for).
    public var timeoutSeconds = 10.0
    public init() {}

    /// Why `endpoint` cannot be a collector's URL (nil when it can): the config file's check, and
    /// `depot runner --otlp-endpoint`'s.
    public static func endpointProblem(_ endpoint: String) -> String? {
        guard let url = URL(string: endpoint), url.scheme == "http" || url.scheme == "https", url.host != nil, endpoint.utf8.count <= 2048
        else { return "must be an http:// or https:// URL (the collector's /v1/traces)" }
        return nil
    }
}

extension ServerConfig {
    static func parseTracing(_ s: [String: Any], _ reader: ConfigReader, into config: inout ServerConfig) throws {
        if let v: Bool = try reader.value(s, "enabled") { config.tracing.enabled = v }
        if let v: String = try reader.value(s, "endpoint") {
            if let problem = TracingConfig.endpointProblem(v) { throw reader.error("tracing.endpoint", problem) }
            config.tracing.endpoint = v
        }
        if let v: Double = try reader.value(s, "sample_ratio") {
            guard v >= 0, v <= 1 else { throw reader.error("tracing.sample_ratio", "must be 0 to 1") }
            config.tracing.sampleRatio = v
        }
        if let v: String = try reader.value(s, "service_name") {
            guard !v.isEmpty, v.count <= 200 else { throw reader.error("tracing.service_name", "must be 1 to 200 characters") }
            config.tracing.serviceName = v
        }
        if let v: Double = try reader.value(s, "timeout_seconds") {
            guard v > 0, v <= 300 else { throw reader.error("tracing.timeout_seconds", "must be above 0 and at most 300") }
            config.tracing.timeoutSeconds = v
        }
    }
}
