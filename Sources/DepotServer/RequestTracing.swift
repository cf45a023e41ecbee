import DepotCore
import DepotStore
import Dispatch
import HTTPTypes
import Hummingbird
import Synchronization
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
public enum RequestTrace {
    /// The span of the request this task serves (nil outside one), so handlers can add facts
    /// (bytes, chunks, digests) to it without passing it through every call.
    @TaskLocal static var span: (any Span)?

    /// The fraction of requests without a caller's trace context that are traced (`tracing.
    /// sample_ratio`, set by the backend's bootstrap). The coin is tossed here, before any span
    /// exists, so an untraced request costs what it costs with tracing off: OpenTelemetry's own
    /// sampler would first make random trace and span ids (system calls) and a span object.
    /// A request whose caller sent `traceparent` is left to the tracer's parent-based sampler.
    static let rootSampleRatio = Atomic<Double>(1)
    private static let coins = Atomic<UInt64>(UInt64(truncatingIfNeeded: DispatchTime.now().uptimeNanoseconds))

    /// Whether to trace a request: always with a caller's context or a ratio of 1, else by a coin
    /// (SplitMix64 over a shared counter: cheap, and fair enough for sampling).
    static func traces(_ request: Request) -> Bool {
        let ratio = rootSampleRatio.load(ordering: .relaxed)
        if ratio >= 1 || request.headers[traceparent].map(isTraceparent) == true { return true }
        if ratio <= 0 { return false }
        var z = coins.wrappingAdd(0x9E37_79B9_7F4A_7C15, ordering: .relaxed).newValue
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        z ^= z >> 31
        return Double(z >> 11) / Double(1 << 53) < ratio
    }

    private static let traceparent = HTTPField.Name("traceparent")!

    /// A W3C `traceparent` a tracer would accept (`00-` 32 hex `-` 16 hex `-` 2 hex, ids not all
    /// zero): only such a header skips the coin. A malformed one gives no parent, so honouring
    /// it would let any client have every request recorded.
    static func isTraceparent(_ value: String) -> Bool {
        let b = Array(value.utf8)
        guard b.count == 55, b[0] == UInt8(ascii: "0"), b[1] == UInt8(ascii: "0"), b[2] == UInt8(ascii: "-"), b[35] == UInt8(ascii: "-"),
            b[52] == UInt8(ascii: "-")
        else { return false }
        func hex(_ r: Range<Int>) -> Bool {
            b[r].allSatisfy { (UInt8(ascii: "0")...UInt8(ascii: "9")).contains($0) || (UInt8(ascii: "a")...UInt8(ascii: "f")).contains($0) }
        }
        func zero(_ r: Range<Int>) -> Bool { b[r].allSatisfy { $0 == UInt8(ascii: "0") } }
        return hex(3..<35) && hex(36..<52) && hex(53..<55) && !zero(3..<35) && !zero(36..<52)
    }

    /// Set once by the tracing backend's bootstrap (`tracing.sample_ratio`), which also makes
    /// the context an untraced request runs in: a caller's context saying "not sampled", so that
    /// the spans of HTTP calls made on its behalf (AsyncHTTPClient: S3 reads, webhooks) are not
    /// recorded as traces of their own either.
    public static func setRootSampling(ratio: Double, unsampled: ServiceContext) {
        rootSampleRatio.store(min(1, max(0, ratio)), ordering: .relaxed)
        unsampledContext.withLock { $0 = unsampled }
    }

    static let unsampledContext = Mutex<ServiceContext?>(nil)

    /// Serves an untraced request.
    static func untraced<T>(_ body: () async throws -> T) async rethrows -> T {
        guard let context = unsampledContext.withLock({ $0 }) else { return try await body() }
        return try await ServiceContext.$current.withValue(context) { try await body() }
    }

    /// A child span of the current request's (nil outside a traced request: no span, so an
    /// untraced request's work never starts a trace of its own).
    static func child<T>(_ name: String, _ body: (any Span) async throws -> T) async throws -> T {
        guard span != nil else { return try await body(NoOpTracer.NoOpSpan(context: .topLevel)) }
        return try await withSpan(name) { try await body($0) }
    }

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
