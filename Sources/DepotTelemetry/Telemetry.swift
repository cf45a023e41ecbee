import DepotServer
import Logging
import OTel
import ServiceLifecycle
import Tracing

/// The OpenTelemetry backend behind the server's tracing API calls (`tracing:` in the config):
/// spans are batched and exported over OTLP/HTTP to a collector (the OpenTelemetry Collector,
/// Jaeger, Tempo, Honeycomb, …). Only the `depot` executable links this module, so the
/// libraries and fuzz harnesses build without the exporter.
///
/// As every OpenTelemetry SDK does, the standard `OTEL_*` environment variables
/// (`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, `OTEL_EXPORTER_OTLP_HEADERS` for a vendor's API key,
/// `OTEL_TRACES_SAMPLER`, …) override what the config file says.
public enum Telemetry {
    /// The OpenTelemetry configuration `tracing` asks for: traces only (metrics stay on
    /// `/metrics`, logs on stderr), W3C trace context, parent-based sampling.
    public static func configuration(_ tracing: TracingConfig, logger: Logger) -> OTel.Configuration {
        var c = OTel.Configuration.default
        c.serviceName = tracing.serviceName
        c.logs.enabled = false
        c.metrics.enabled = false
        c.traces.enabled = true
        c.traces.exporter = .otlp
        c.traces.otlpExporter.endpoint = tracing.endpoint
        c.traces.otlpExporter.protocol = .httpProtobuf
        c.traces.otlpExporter.timeout = .milliseconds(Int64(tracing.timeoutSeconds * 1000))
        // Requests are sampled by Depot before a span exists (RequestTrace.traces: an unsampled
        // request then costs nothing); what reaches the tracer is recorded, unless a caller's
        // context says not to. Background work (jobs, rollouts, scheduling) is rare: all of it.
        c.traces.sampler = .parentBasedAlwaysOn
        // Exports every second, up to 1,024 spans each, from a queue of 4,096 (dropping past it):
        // the defaults (5 s, 512, 2,048) drop spans above ~400 traced requests a second.
        c.traces.batchSpanProcessor.scheduleDelay = .seconds(1)
        c.traces.batchSpanProcessor.maxExportBatchSize = 1024
        c.traces.batchSpanProcessor.maxQueueSize = 4096
        c.propagators = [.traceContext]
        // Exporter failures (a collector that is down) are logged by it, never fatal to requests.
        c.diagnosticLogger = .custom(logger)
        c.diagnosticLogLevel = .warning
        return c
    }

    /// The tracer and the service that batches and exports its spans (run it beside the server:
    /// spans ended before it runs wait in its queue, bounded; past the bound they are dropped).
    public static func makeTracer(_ tracing: TracingConfig, logger: Logger) throws -> (tracer: any Tracer, service: any Service) {
        try makeTracer(configuration(tracing, logger: logger))
    }

    /// The tracer and export service of an OpenTelemetry configuration (tests adjust one).
    public static func makeTracer(_ configuration: OTel.Configuration) throws -> (tracer: any Tracer, service: any Service) {
        let backend = try OTel.makeTracingBackend(configuration: configuration)
        return (backend.factory, backend.service)
    }

    /// Makes the tracer for `tracing` the process's (once per process; swift-distributed-tracing's
    /// rule) and returns its export service, or nil with tracing off (the no-op tracer stays).
    public static func bootstrap(_ tracing: TracingConfig, logger: Logger) throws -> (any Service)? {
        guard tracing.enabled else { return nil }
        let (tracer, service) = try makeTracer(tracing, logger: logger)
        InstrumentationSystem.bootstrap(tracer)
        // A remote parent that was not sampled (W3C flags 00); the ids are never exported.
        var unsampled = ServiceContext.topLevel
        tracer.extract(
            ["traceparent": "00-0000000000000000000000000000d390-000000000000d390-00"], into: &unsampled, using: DictionaryExtractor())
        RequestTrace.setRootSampling(ratio: tracing.sampleRatio, unsampled: unsampled)
        logger.info("tracing: OTLP/HTTP to \(tracing.endpoint), sampling \(tracing.sampleRatio) (OTEL_* variables override these)")
        return service
    }
}

private struct DictionaryExtractor: Extractor {
    func extract(key: String, from carrier: [String: String]) -> String? { carrier[key] }
}
