import DepotAPI
import DepotCore
import DepotDeploy
import DepotRegistry
import Foundation
import HTTPTypes
import Hummingbird

/// `depot bench ui`: how long the server takes to render each page, in process (routing, the
/// catalog queries, the HTML), on a registry the caller filled (the lineage benchmark's graph of
/// about 100,000 artifacts). The socket is left out: on loopback it adds the same fraction of a
/// millisecond to every page.
public enum UIBench {
    public struct Result: Sendable, Codable {
        public var page: String
        public var path: String
        public var p50Ms: Double
        public var p95Ms: Double
        public var maxMs: Double
        public var bytes: Int
    }

    /// Renders each of `paths` (`GET`, by page name) `iterations` times; the first render of each
    /// (a cold statement cache) is left out.
    public static func run(registry: Registry, paths: [(String, String)], iterations: Int) async throws -> [Result] {
        let ui = UIHandlers(
            registry: registry, auth: nil, jobs: nil,
            deployments: Deployments(registry: registry, policy: CanaryPolicy(), admission: nil), scheme: "http")
        var out: [Result] = []
        for (name, path) in paths {
            var times: [Double] = []
            var bytes = 0
            for i in 0...max(1, iterations) {
                let started = ContinuousClock.now
                let response = try await render(ui, path)
                let ms = (ContinuousClock.now - started) / .milliseconds(1)
                guard response.status == .ok else {
                    throw DepotError.invalidArgument("\(path) answered \(response.status.code)")
                }
                if i > 0 { times.append(ms) }
                if i == 0 {
                    var body = response.body
                    bytes = try await collect(&body)
                }
            }
            times.sort()
            func pct(_ p: Double) -> Double { (times[min(times.count - 1, Int(Double(times.count) * p))] * 100).rounded() / 100 }
            out.append(Result(page: name, path: path, p50Ms: pct(0.5), p95Ms: pct(0.95), maxMs: pct(1.0), bytes: bytes))
        }
        return out
    }

    static func collect(_ body: inout ResponseBody) async throws -> Int {
        let writer = CountingWriter()
        try await body.write(writer)
        return await writer.count.value
    }

    final class Counter: Sendable {
        let total = Locked(0)
        var value: Int { total.withLock { $0 } }
    }

    struct CountingWriter: ResponseBodyWriter {
        let count = Counter()
        mutating func write(_ buffer: ByteBuffer) async throws { count.total.withLock { $0 += buffer.readableBytes } }
        consuming func finish(_ trailingHeaders: HTTPFields?) async throws {}
    }

    static func render(_ ui: UIHandlers, _ path: String) async throws -> Response {
        let request = Request(head: HTTPRequest(method: .get, scheme: "http", authority: "bench", path: path), body: .init(buffer: .init()))
        let routePath = String(path.prefix { $0 != "?" })
        guard case .matched(let match) = Routes.route(method: "GET", path: routePath) else {
            throw DepotError.invalidArgument("no page at \(path)")
        }
        switch match.route.id {
        case .uiHome: return await ui.home(request)
        case .uiRepository: return await ui.repository(match, request)
        case .uiArtifact: return await ui.artifact(match, request)
        case .uiAlias: return await ui.alias(match, request)
        case .uiAudit: return await ui.auditPage(request)
        case .uiDeployments: return await ui.deploymentsPage(request)
        default: throw DepotError.invalidArgument("\(path) is not a page the benchmark renders")
        }
    }
}
