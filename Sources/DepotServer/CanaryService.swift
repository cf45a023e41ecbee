import AsyncHTTPClient
import DepotAPI
import DepotCatalog
import DepotCore
import DepotDeploy
import DepotRegistry
import Foundation
import Logging
import NIOCore
import ServiceLifecycle
import Tracing

/// Prometheus's instant-query API as a `MetricsSource`.
struct PrometheusSource: MetricsSource {
    let baseURL: String

    func value(_ promql: String) async throws -> Double? {
        var allowed = CharacterSet.alphanumerics
        allowed.insert(charactersIn: "-._~")
        let q = promql.addingPercentEncoding(withAllowedCharacters: allowed) ?? promql
        var request = HTTPClientRequest(url: "\(baseURL)/api/v1/query?query=\(q)")
        request.method = .GET
        let response = try await HTTPClient.shared.execute(request, timeout: .seconds(10))
        let body = try await response.body.collect(upTo: 4 << 20)
        guard let json = try? JSONDecoder().decode(JSONValue.self, from: Data(buffer: body)), json.object != nil else {
            throw MetricsError("Prometheus answered HTTP \(response.status.code) with a body that is not a JSON object")
        }
        guard json["status"]?.string == "success", let data = json["data"], data.object != nil else {
            throw MetricsError("Prometheus refused the query: \(json["error"]?.string ?? "HTTP \(response.status.code)")")
        }
        // A sample is `[time, "value"]`; Prometheus writes the value as text (NaN, +Inf included).
        func number(_ pair: JSONValue?) -> Double? {
            guard let p = pair?.array, p.count == 2, let text = p[1].string, let v = Double(text), !v.isNaN else { return nil }
            return v
        }
        switch data["resultType"]?.string {
        case "scalar": return number(data["result"])
        case "vector":
            let result = data["result"]?.array ?? []
            if result.isEmpty { return nil }
            guard result.count == 1 else { throw MetricsError("the query returns \(result.count) series; aggregate it (sum, max) to one") }
            return number(result[0]["value"])
        default:
            throw MetricsError("the query returns a \(data["resultType"]?.string ?? "?"), not a scalar or a one-series vector")
        }
    }
}

struct MetricsError: Error, CustomStringConvertible {
    var description: String
    init(_ d: String) { description = d }
}

/// The canary controller inside `depot serve`: every second it analyses the rollouts whose step
/// has lasted the analysis interval and applies the decision (next step, promote, pause,
/// rollback). All state is in the catalog, so a restart carries on where it was.
struct CanaryService: Service {
    let deployments: Deployments
    let source: any MetricsSource
    let logger: Logger
    var leadership = Leadership.standalone()
    var interval: Duration = .seconds(1)

    func run() async throws {
        try? await cancelWhenGracefulShutdown {
            while !Task.isCancelled {
                if leadership.isLeader { await tick() }
                try await Task.sleep(for: interval)
            }
        }
    }

    func tick() async {
        do {
            let deployments = self.deployments
            for due in try await offload({ try deployments.dueAnalyses() }) {
                // One trace per analysis: the Prometheus queries, the verdict and the step it led to.
                try await withSpan("depot.rollout.analysis", context: .topLevel) { span in
                    span.attributes["depot.rollout.id"] = Int(due.rollout.id)
                    span.attributes["depot.deployment"] = "\(due.deployment.repository):\(due.deployment.environment)"
                    span.attributes["depot.rollout.weight"] = Int(due.rollout.weight)
                    let measurements = await CanaryAnalysis.measure(deployments.policy, due.context, source: source)
                    let decision = try await offload { try deployments.apply(due, measurements: measurements) }
                    let summary = measurements.map { "\($0.check)=\($0.outcome.rawValue)" }.joined(separator: " ")
                    span.attributes["depot.rollout.checks"] = summary
                    span.attributes["depot.rollout.decision"] = decision ?? "wait"
                    if let decision {
                        logger.notice(
                            "rollout \(due.rollout.id) \(due.deployment.repository):\(due.deployment.environment) at \(due.rollout.weight)%: \(decision) (\(summary))"
                        )
                    }
                }
            }
        } catch {
            logger.error("canary controller: \(error)")
        }
    }
}

/// Tells a traffic router about every weight change, in order (one at a time, as they happened),
/// and about every deployment's current weights when the server starts (a change lost to a
/// crash is re-sent): the configured command, run with the deployment in its environment
/// (`DEPOT_DEPLOYMENT`, `DEPOT_MODEL`, `DEPOT_STABLE_DIGEST`, `DEPOT_CANARY_DIGEST`,
/// `DEPOT_CANARY_WEIGHT`, `DEPOT_UPDATED_AT` in ms), and/or a POST of the same as JSON. Each call
/// is bounded to 60 s; failures are logged (the node split goes on regardless).
struct RouterHookService: Service {
    let changes: AsyncStream<DeploymentRecord>
    let policy: CanaryPolicy
    let registry: Registry
    let logger: Logger

    func run() async throws {
        guard policy.routerCommand != nil || policy.routerURL != nil else {
            try? await gracefulShutdown()
            return
        }
        let registry = self.registry
        for d in (try? await offload({ try registry.store.catalog.read { try $0.deployments() } })) ?? [] {
            await deliver(d)
        }
        try? await cancelWhenGracefulShutdown {
            for await d in changes { await deliver(d) }
        }
    }

    func deliver(_ d: DeploymentRecord) async {
        let fields: [String: String] = [
            "deployment": "\(d.repository):\(d.environment)", "repository": d.repository, "environment": d.environment,
            "model": d.modelName, "stable": d.stable ?? "", "canary": d.canary ?? "",
            "weight": String(d.canary == nil ? 0 : d.weight), "updated_at": String(d.updatedAt),
        ]
        if let argv = policy.routerCommand { await runCommand(argv, fields, d) }
        if let url = policy.routerURL { await post(url, fields, d) }
    }

    func runCommand(_ argv: [String], _ fields: [String: String], _ d: DeploymentRecord) async {
        guard let program = argv.first else { return }
        let logger = self.logger
        await withCheckedContinuation { (done: CheckedContinuation<Void, Never>) in
            DispatchQueue(label: "depot.router-hook").async {
                defer { done.resume() }
                let p = Process()
                p.executableURL = URL(fileURLWithPath: program.hasPrefix("/") ? program : "/usr/bin/env")
                p.arguments = program.hasPrefix("/") ? Array(argv.dropFirst()) : argv
                var env = ProcessInfo.processInfo.environment
                env["DEPOT_DEPLOYMENT"] = fields["deployment"]
                env["DEPOT_MODEL"] = fields["model"]
                env["DEPOT_STABLE_DIGEST"] = fields["stable"]
                env["DEPOT_CANARY_DIGEST"] = fields["canary"]
                env["DEPOT_CANARY_WEIGHT"] = fields["weight"]
                env["DEPOT_UPDATED_AT"] = fields["updated_at"]
                p.environment = env
                p.standardOutput = FileHandle.nullDevice
                p.standardError = FileHandle.nullDevice
                do { try p.run() } catch {
                    logger.error("router hook \(program): cannot start: \(error)")
                    return
                }
                let killer = DispatchWorkItem { if p.isRunning { kill(p.processIdentifier, SIGKILL) } }
                DispatchQueue(label: "depot.router-hook.killer").asyncAfter(deadline: .now() + 60, execute: killer)
                p.waitUntilExit()
                killer.cancel()
                if p.terminationStatus != 0 {
                    logger.error(
                        "router hook \(program) exited with \(p.terminationStatus) for \(d.repository):\(d.environment) at \(fields["weight"] ?? "?")%"
                    )
                }
            }
        }
    }

    func post(_ url: String, _ fields: [String: String], _ d: DeploymentRecord) async {
        var body = fields.mapValues(JSONValue.string)
        body["weight"] = JSONValue(Int(fields["weight"] ?? "0") ?? 0)
        body["updated_at"] = .int(Int64(fields["updated_at"] ?? "0") ?? 0)
        var request = HTTPClientRequest(url: url)
        request.method = .POST
        request.headers.add(name: "Content-Type", value: "application/json")
        request.body = .bytes((try? WireJSON.encode(body)) ?? [])
        do {
            let response = try await HTTPClient.shared.execute(request, timeout: .seconds(60))
            _ = try? await response.body.collect(upTo: 64 << 10)
            if !(200..<300).contains(Int(response.status.code)) {
                logger.error("router hook \(url) answered HTTP \(response.status.code) for \(d.repository):\(d.environment)")
            }
        } catch {
            logger.error("router hook \(url): \(error)")
        }
    }
}
