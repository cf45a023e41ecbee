import DepotServer
import DepotTelemetry
import Foundation
import Hummingbird
import HummingbirdTesting
import Logging
import NIOCore
import OTel
import ServiceLifecycle
import Synchronization
import Testing
import Tracing

/// The exporter `tracing:` configures, against a loopback OTLP/HTTP receiver. The test switches
/// the encoding to JSON, which it can read without protobuf code (ids come base64-encoded in
/// swift-otel's JSON, which is why `tracing:` offers only protobuf); scripts/e2e/pipeline.sh and
/// canary.sh decode the protobuf exports of a real server with the OpenTelemetry project's own
/// Python classes.
@Suite struct OTLPExportTests {
    /// Runs a receiver that keeps every body POSTed to /v1/traces.
    func withReceiver(_ body: @Sendable (Int, @escaping @Sendable () -> [[String: Any]]) async throws -> Void) async throws {
        let received = Mutex<[Data]>([])
        let router = Router()
        router.post("/v1/traces") { request, _ -> Response in
            let buffer = try await request.body.collect(upTo: 16 << 20)
            received.withLock { $0.append(Data(buffer.readableBytesView)) }
            var headers = HTTPFields()
            headers[.contentType] = "application/json"
            return Response(status: .ok, headers: headers, body: ResponseBody(byteBuffer: ByteBuffer(string: "{}")))
        }
        let app = Application(router: router, configuration: .init(address: .hostname("127.0.0.1", port: 0)))
        try await app.test(.live) { client in
            try await body(client.port!) {
                received.withLock { $0 }.compactMap { try? JSONSerialization.jsonObject(with: $0) as? [String: Any] }
            }
        }
    }

    /// Every span of the received export requests, flattened, with its resource's attributes.
    static func spans(_ requests: [[String: Any]]) -> [(span: [String: Any], resource: [String: String])] {
        var out: [(span: [String: Any], resource: [String: String])] = []
        for request in requests {
            for rs in request["resourceSpans"] as? [[String: Any]] ?? [] {
                var resource: [String: String] = [:]
                for kv in (rs["resource"] as? [String: Any])?["attributes"] as? [[String: Any]] ?? [] {
                    if let k = kv["key"] as? String, let v = (kv["value"] as? [String: Any])?["stringValue"] as? String { resource[k] = v }
                }
                for ss in rs["scopeSpans"] as? [[String: Any]] ?? [] {
                    for span in ss["spans"] as? [[String: Any]] ?? [] { out.append((span, resource)) }
                }
            }
        }
        return out
    }

    /// An id as hex, from swift-otel's JSON (base64, protobuf's mapping of bytes); nil if absent or empty.
    static func hex(_ value: Any?) -> String? {
        guard let text = value as? String, let data = Data(base64Encoded: text), !data.isEmpty else { return nil }
        return data.map { String(format: "%02x", $0) }.joined()
    }

    static func attribute(_ span: [String: Any], _ key: String) -> [String: Any]? {
        (span["attributes"] as? [[String: Any]] ?? []).first { $0["key"] as? String == key }?["value"] as? [String: Any]
    }

    @Test func spansReachTheCollectorWithTheirServiceAndContinueAW3CTraceparent() async throws {
        try await withReceiver { port, received in
            var config = TracingConfig()
            config.enabled = true
            config.endpoint = "http://127.0.0.1:\(port)/v1/traces"
            config.serviceName = "depot-export-test"
            var logger = Logger(label: "test")
            logger.logLevel = .warning
            var otel = Telemetry.configuration(config, logger: logger)
            #expect(otel.traces.otlpExporter.endpoint == config.endpoint)
            otel.traces.otlpExporter.protocol = .httpJSON
            let (tracer, service) = try Telemetry.makeTracer(otel)
            let group = ServiceGroup(services: [service], gracefulShutdownSignals: [], logger: logger)
            let running = Task { try await group.run() }

            // A caller's W3C trace context, as a client's `traceparent` header carries it.
            let traceID = "4bf92f3577b34da6a3ce929d0e0e4736"
            let callerSpan = "00f067aa0ba902b7"
            var parent = ServiceContext.topLevel
            tracer.extract(["traceparent": "00-\(traceID)-\(callerSpan)-01"], into: &parent, using: DictionaryExtractor())
            let span = tracer.startSpan("GET /v2/{name}/blobs/{digest}", context: parent, ofKind: .server, at: DefaultTracerClock.now)
            span.attributes["http.response.status_code"] = 200
            span.attributes["depot.blob.size"] = 1 << 20
            span.end()
            // A root span: a trace of its own.
            let root = tracer.startSpan("depot.rollout.analysis", context: .topLevel, ofKind: .internal, at: DefaultTracerClock.now)
            root.attributes["depot.rollout.decision"] = "advance to 10%"
            root.end()

            // A graceful shutdown exports what is queued.
            await group.triggerGracefulShutdown()
            try await running.value

            let spans = Self.spans(received())
            let get = try #require(spans.first { $0.span["name"] as? String == "GET /v2/{name}/blobs/{digest}" })
            #expect(get.resource["service.name"] == "depot-export-test")
            #expect(Self.hex(get.span["traceId"]) == traceID)
            #expect(Self.hex(get.span["parentSpanId"]) == callerSpan)
            #expect(Self.attribute(get.span, "depot.blob.size")?["intValue"] as? String == "1048576")
            let analysis = try #require(spans.first { $0.span["name"] as? String == "depot.rollout.analysis" })
            #expect(Self.hex(analysis.span["traceId"]) != traceID)
            #expect(Self.hex(analysis.span["parentSpanId"]) == nil)
            #expect(Self.attribute(analysis.span, "depot.rollout.decision")?["stringValue"] as? String == "advance to 10%")
        }
    }

    @Test func tracingOffMakesNoBackend() throws {
        #expect(try Telemetry.bootstrap(TracingConfig(), logger: Logger(label: "test")) == nil)
    }
}

private struct DictionaryExtractor: Extractor {
    func extract(key: String, from carrier: [String: String]) -> String? { carrier[key] }
}
