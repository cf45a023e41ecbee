import DepotStore
import HTTPTypes
import Hummingbird
import Tracing

/// Distributed tracing of requests and of the server's background work, through the
/// swift-distributed-tracing API. The backend is chosen by the `depot` executable
/// (`tracing:` in the config, DepotTelemetry: OpenTelemetry over OTLP/HTTP); until one is
/// bootstrapped the API's no-op tracer is in place, every span is a `NoOpSpan`, and the
/// attributes below are not even computed (`isRecording`).
///
/// Span names and attributes follow OpenTelemetry's HTTP semantic conventions where they
/// apply (`GET /v2/{name}/blobs/{digest}`, `http.request.method`, `http.route`,
/// `http.response.status_code`) and are `depot.*` otherwise. docs/OBSERVABILITY.md lists them.
enum RequestTrace {
    /// The span of the request this task serves (nil outside one), so handlers can add facts
    /// (bytes, chunks, digests) to it without passing it through every call.
    @TaskLocal static var span: (any Span)?

    /// Adds attributes to the current request's span; the closure runs only while a real
    /// tracer records it.
    static func annotate(_ update: (inout SpanAttributes) -> Void) {
        guard let span, span.isRecording else { return }
        span.updateAttributes(update)
    }

    /// The push facts of one finished blob write: sizes, deduplication, and seconds per stage.
    static func attributes(of result: WriteResult, into a: inout SpanAttributes) {
        a["depot.blob.digest"] = result.digest.description
        a["depot.blob.size"] = Int(result.size)
        a["depot.push.chunks"] = result.chunks
        a["depot.push.new_chunks"] = result.newChunks
        a["depot.push.new_bytes"] = Int(result.newBytes)
        a["depot.push.reused_bytes"] = Int(result.reusedBytes)
        a["depot.push.stored_bytes"] = Int(result.storedBytes)
        for (stage, seconds) in result.stageSeconds { a["depot.push.stage.\(stage.rawValue)_seconds"] = seconds }
    }
}

extension ResponseBody {
    /// The same body, ending `span` once it has been written (or its writing failed): a blob
    /// GET's span covers the bytes it streams, not only the handler that set them up.
    func endingSpan(_ span: any Span) -> ResponseBody {
        let body = self
        return ResponseBody(contentLength: contentLength) { writer in
            do {
                try await ServiceContext.$current.withValue(span.context) { try await body.write(writer) }
                span.end()
            } catch {
                span.recordError(error)
                span.setStatus(.init(code: .error))
                span.end()
                throw error
            }
        }
    }
}

/// Reads W3C `traceparent`/`tracestate` (or whichever propagator the backend uses) from a request.
struct HTTPFieldsExtractor: Extractor {
    func extract(key name: String, from headers: HTTPFields) -> String? {
        guard let field = HTTPField.Name(name) else { return nil }
        return headers[field]
    }
}

/// Spans of background work that usually has nothing to do (a scheduler tick): started at the
/// tick's beginning only once it turns out there was work, so idle ticks export nothing.
struct BackgroundSpan {
    let start = DefaultTracerClock.now

    /// Records the work done since this value was made as one span.
    func record(_ name: String, _ attributes: (inout SpanAttributes) -> Void) {
        let span = startSpan(name, context: .topLevel, ofKind: .internal, at: start)
        if span.isRecording { span.updateAttributes(attributes) }
        span.end()
    }
}
