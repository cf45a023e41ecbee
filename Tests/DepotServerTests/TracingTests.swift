import DepotClient
import DepotCore
import DepotServer
import DepotTestSupport
import Foundation
import HTTPTypes
import HummingbirdTesting
import InMemoryTracing
import Testing
import Tracing

/// The process's tracer while the suite runs. swift-distributed-tracing allows one bootstrap per
/// process, so from the first test here on every server in this test process records spans;
/// each test finds its own by the trace id it sends (the in-memory tracer's propagation headers).
private enum TestTracer {
    static let shared: InMemoryTracer = {
        let tracer = InMemoryTracer()
        InstrumentationSystem.bootstrap(tracer)
        return tracer
    }()

    /// Headers that make a request a child of span `parent` in trace `trace`.
    static func headers(trace: String, parent: String) -> HTTPFields {
        var h = HTTPFields()
        h[HTTPField.Name(InMemoryTracer.traceIDKey)!] = trace
        h[HTTPField.Name(InMemoryTracer.spanIDKey)!] = parent
        return h
    }

    /// The finished spans of `trace`; the rest are dropped (the other suites' servers record too,
    /// and nothing else reads them).
    static func spans(of trace: String) -> [FinishedInMemorySpan] {
        shared.popFinishedSpans().filter { $0.traceID == trace }
    }
}

extension SpanAttributes {
    fileprivate func int(_ key: String) -> Int64? {
        if case .int64(let v)? = self[key]?.toSpanAttribute() { return v }
        return nil
    }
    fileprivate func string(_ key: String) -> String? {
        if case .string(let v)? = self[key]?.toSpanAttribute() { return v }
        return nil
    }
    fileprivate func double(_ key: String) -> Double? {
        if case .double(let v)? = self[key]?.toSpanAttribute() { return v }
        return nil
    }
}

@Suite(.serialized) struct TracingTests {
    @Test func aPushAndAPullAreTracedAsChildrenOfTheCallersSpanWithTheirBytesAndStages() async throws {
        let tracer = TestTracer.shared
        _ = tracer.popFinishedSpans()
        let trace = "trace-\(UUID().uuidString)"
        try await withRegistry { client, _, _ in
            let bytes = randomBytes(3 << 20, seed: 19)
            let digest = Digest.of(bytes)
            let put = try await client.req(
                .post, "/v2/team/traced/blobs/uploads/?digest=\(digest)", headers: TestTracer.headers(trace: trace, parent: "caller"),
                body: bytes)
            #expect(put.status.code == 201)
            let get = try await client.req(
                .get, "/v2/team/traced/blobs/\(digest)", headers: TestTracer.headers(trace: trace, parent: "caller"))
            #expect(get.bytes == bytes)
            // A request with no trace context starts a trace of its own.
            let untraced = try await client.req(.get, "/v2/team/traced/blobs/\(digest)", headers: [.range: "bytes=0-9"])
            #expect(untraced.status.code == 206)

            let spans = TestTracer.spans(of: trace)
            let push = try #require(spans.first { $0.operationName == "POST /v2/{name}/blobs/uploads" }, "\(spans.map(\.operationName))")
            #expect(push.kind == .server)
            #expect(push.parentSpanID == "caller")
            #expect(push.attributes.int("http.response.status_code") == 201)
            #expect(push.attributes.string("http.route") == "/v2/{name}/blobs/uploads")
            #expect(push.attributes.string("depot.repository") == "team/traced")
            let receive = try #require(spans.first { $0.operationName == "depot.upload.receive" })
            #expect(receive.parentSpanID == push.spanID)
            #expect(receive.attributes.int("depot.upload.received_bytes") == Int64(bytes.count))
            let finish = try #require(spans.first { $0.operationName == "depot.blob.finish" })
            #expect(finish.parentSpanID == push.spanID)
            #expect(finish.attributes.string("depot.blob.digest") == digest.description)
            #expect(finish.attributes.int("depot.blob.size") == Int64(bytes.count))
            #expect((finish.attributes.int("depot.push.new_chunks") ?? 0) > 10)
            #expect(finish.attributes.int("depot.push.new_bytes") == Int64(bytes.count))
            for stage in ["hash", "chunk", "chunk_hash", "dedup", "write", "commit"] {
                #expect(finish.attributes.double("depot.push.stage.\(stage)_seconds") != nil, "stage \(stage)")
            }

            let pull = try #require(spans.first { $0.operationName == "GET /v2/{name}/blobs/{digest}" })
            #expect(pull.parentSpanID == "caller")
            #expect(pull.attributes.int("http.response.status_code") == 200)
            #expect(pull.attributes.int("depot.blob.size") == Int64(bytes.count))
            #expect(pull.attributes.int("http.response.body.size") == Int64(bytes.count))
            // The untraced GET is not in this trace.
            #expect(spans.filter { $0.operationName == "GET /v2/{name}/blobs/{digest}" }.count == 1)
        }
    }

    @Test func aFailingRequestIsAnErrorSpanAndAnUnknownPathIsNamedByItsMethod() async throws {
        _ = TestTracer.shared.popFinishedSpans()
        let trace = "trace-\(UUID().uuidString)"
        try await withRegistry { client, _, _ in
            let digest = Digest.of([1, 2, 3])
            // The digest does not match the body: 400, the finish span carries the error.
            let bad = try await client.req(
                .post, "/v2/team/traced/blobs/uploads/?digest=\(digest)", headers: TestTracer.headers(trace: trace, parent: "caller"),
                body: [9, 9, 9])
            #expect(bad.status.code == 400)
            let missing = try await client.req(.get, "/nowhere", headers: TestTracer.headers(trace: trace, parent: "caller"))
            #expect(missing.status.code == 404)
            let spans = TestTracer.spans(of: trace)
            let finish = try #require(spans.first { $0.operationName == "depot.blob.finish" })
            #expect(!finish.errors.isEmpty)
            let unknown = try #require(spans.first { $0.operationName == "GET" })
            #expect(unknown.attributes.int("http.response.status_code") == 404)
            #expect(unknown.attributes.string("http.route") == nil)
        }
    }

    @Test func anOversizedTraceContextIsIgnoredAndClientTextIsCut() async throws {
        _ = TestTracer.shared.popFinishedSpans()
        try await withRegistry { client, _, _ in
            // A context header over 512 bytes is not parsed: the request starts a trace of its own.
            let long = String(repeating: "a", count: 600)
            var headers = TestTracer.headers(trace: long, parent: "caller")
            headers[.userAgent] = String(repeating: "u", count: 4000)
            let marker = UUID().uuidString.lowercased()
            let r = try await client.req(.get, "/v2/team/\(marker)/tags/list", headers: headers)
            #expect(r.status.code == 404)
            let span = try #require(
                TestTracer.shared.popFinishedSpans().first { $0.attributes.string("depot.repository") == "team/\(marker)" })
            #expect(span.traceID != long)
            #expect(span.parentSpanID == nil)
            #expect((span.attributes.string("user_agent.original")?.count ?? 0) <= 257)
        }
    }

    @Test func theSampleRatioPicksRequestsAndACallersContextIsAlwaysFollowed() async throws {
        _ = TestTracer.shared.popFinishedSpans()
        defer { RequestTrace.setRootSampling(ratio: 1, unsampled: .topLevel) }
        try await withRegistry { client, _, _ in
            func traced(_ repo: String) -> [FinishedInMemorySpan] {
                TestTracer.shared.popFinishedSpans().filter { $0.attributes.string("depot.repository") == repo }
            }
            RequestTrace.setRootSampling(ratio: 0, unsampled: .topLevel)
            let marker = UUID().uuidString.lowercased()
            for _ in 0..<20 { try await client.req(.get, "/v2/team/\(marker)/tags/list") }
            #expect(traced("team/\(marker)").isEmpty)
            // A caller that sends trace context is traced whatever the ratio (the tracer's
            // parent-based sampler decides).
            var headers = TestTracer.headers(trace: "trace-\(marker)", parent: "caller")
            headers[HTTPField.Name("traceparent")!] = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
            try await client.req(.get, "/v2/team/\(marker)/tags/list", headers: headers)
            #expect(traced("team/\(marker)").map(\.parentSpanID) == ["caller"])
            // A malformed traceparent gives no parent: it does not skip the coin.
            for bad in [
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7", "00-" + String(repeating: "0", count: 32) + "-00f067aa0ba902b7-01",
                "garbage",
            ] {
                headers[HTTPField.Name("traceparent")!] = bad
                try await client.req(.get, "/v2/team/\(marker)/tags/list", headers: headers)
            }
            #expect(traced("team/\(marker)").isEmpty)

            RequestTrace.setRootSampling(ratio: 0.5, unsampled: .topLevel)
            for _ in 0..<200 { try await client.req(.get, "/v2/team/\(marker)/tags/list") }
            let half = traced("team/\(marker)").count
            #expect((60...140).contains(half), "\(half) of 200 traced at a ratio of 0.5")
        }
    }

    @Test func theRunnersCollectorURLIsCheckedAsTheConfigFilesIs() async throws {
        let r = try await run(ClientProcessTests.depot, ["runner", "--otlp-endpoint", "collector:4318"])
        #expect(r.status == 2, "\(r.output)")
        #expect(r.output.contains("--otlp-endpoint must be an http:// or https:// URL"), "\(r.output)")
    }

    @Test func theClientCarriesItsCallersTraceToTheServer() async throws {
        let tracer = TestTracer.shared
        _ = tracer.popFinishedSpans()
        try await withRegistry { client, _, port in
            let c = try RegistryConnection(url: "http://127.0.0.1:\(port)", token: nil)
            let trace = try await withSpan("test.job") { span in
                _ = try await c.blobExists("team/traced", Digest.of([7]))
                return span.context.inMemorySpanContext!
            }
            await c.shutdown()
            // AsyncHTTPClient's own client span (it injects the context), then the server's.
            let spans = TestTracer.spans(of: trace.traceID)
            let names = spans.map(\.operationName)
            let request = try #require(spans.first { $0.kind == .client && $0.parentSpanID == trace.spanID }, "\(names)")
            let head = try #require(spans.first { $0.operationName == "HEAD /v2/{name}/blobs/{digest}" }, "\(names)")
            #expect(head.kind == .server)
            #expect(head.parentSpanID == request.spanID)
            #expect(head.attributes.int("http.response.status_code") == 404)
        }
    }
}
