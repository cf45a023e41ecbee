import DepotCore
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

/// A request's server span, ended exactly once: by the response body once it is written, or, if
/// the body never runs (the client went away before the response head could be written, and
/// Hummingbird drops the response), when the last reference goes. A span never ended would stay
/// in the tracer's table of recording spans for good.
final class RequestSpan: Sendable {
    let span: any Span
    private let ended = Locked(false)

    init(_ span: any Span) { self.span = span }

    func end(error: (any Error)? = nil) {
        guard
            ended.withLock({ e in
                defer { e = true }
                return !e
            })
        else { return }
        if let error {
            span.recordError(error)
            span.setStatus(.init(code: .error))
        }
        span.end()
    }

    deinit {
        if !ended.withLock({ $0 }) {
            span.setStatus(.init(code: .error, message: "the response was not written (the client went away)"))
            span.end()
        }
    }
}

extension ResponseBody {
    /// The same body, ending the request's span once it has been written (or its writing failed):
    /// a blob GET's span covers the bytes it streams, not only the handler that set them up.
    func endingSpan(_ request: RequestSpan) -> ResponseBody {
        let body = self
        return ResponseBody(contentLength: contentLength) { writer in
            do {
                try await ServiceContext.$current.withValue(request.span.context) { try await body.write(writer) }
                request.end()
            } catch {
                request.end(error: error)
                throw error
            }
        }
    }
}

/// The trace context headers of a request, as the tracer's extractor sees them. Every value is
/// client-controlled: one longer than 512 bytes (W3C's `traceparent` is 55, `tracestate` at most
/// 32 members that vendors keep to 512 characters) is ignored, so a hostile header costs the
/// context parser nothing. Its description, which a tracer may log on a malformed context, names
/// only the two W3C headers: never the request's credentials.
struct TraceHeaders: CustomStringConvertible {
    let fields: HTTPFields
    static let maxValueBytes = 512

    func value(_ name: String) -> String? {
        guard let field = HTTPField.Name(name), let value = fields[field], value.utf8.count <= Self.maxValueBytes else { return nil }
        return value
    }

    var description: String {
        "traceparent: \(value("traceparent") ?? "-"), tracestate: \(value("tracestate") ?? "-")"
    }
}

/// Reads W3C `traceparent`/`tracestate` (or whichever keys the backend's propagator asks for).
struct TraceHeadersExtractor: Extractor {
    func extract(key name: String, from headers: TraceHeaders) -> String? { headers.value(name) }
}

/// Attribute text from a client (a path, a user agent): at most 256 characters, so that a
/// sampled request cannot make a span, and the exporter's bounded queue, hold kilobytes.
func clientText(_ text: some StringProtocol) -> String {
    text.count <= 256 ? String(text) : String(text.prefix(256)) + "…"
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
