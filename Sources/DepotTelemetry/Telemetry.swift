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
        c.traces.sampler =
            tracing.sampleRatio >= 1 ? .parentBasedAlwaysOn : (.parentBasedTraceIDRatio(ratio: tracing.sampleRatio) ?? .parentBasedAlwaysOn)
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
        logger.info("tracing: OTLP/HTTP to \(tracing.endpoint), sampling \(tracing.sampleRatio) (OTEL_* variables override these)")
        return service
    }
}
