import DepotAPI
import DepotCatalog
import DepotClient
import DepotCore
import DepotDeploy
import DepotRegistry
import DepotStore
import DepotTestSupport
import Foundation
import Testing

@testable import DepotServer

/// Metric values chosen by the test, per check and side: the input of the decision logic under
/// test. (The real path — Triton, Prometheus, triton-sync — is scripts/e2e/canary.sh; the
/// Prometheus client is tested against a real Prometheus below.)
final class ScriptedMetrics: MetricsSource, @unchecked Sendable {
    let lock = NSLock()
    var values: [String: Double?] = [:] // "error-rate/canary", "latency/stable", ...
    var unreachable = false
    let policy: CanaryPolicy
    init(policy: CanaryPolicy) { self.policy = policy }

    func set(_ key: String, _ value: Double?) {
        lock.lock()
        values[key] = value
        lock.unlock()
    }

    func value(_ promql: String) async throws -> Double? {
        try lookup(promql)
    }

    func lookup(_ promql: String) throws -> Double? {
        lock.lock()
        defer { lock.unlock() }
        if unreachable { throw MetricsError("connection refused") }
        // Which check and which side: the query as the controller renders it.
        guard let c = context else { return nil }
        for check in policy.checks {
            for (side, version) in [("canary", c.canaryVersion), ("stable", c.stableVersion ?? -1)]
            where check.render(
                model: c.model, version: version, canaryVersion: c.canaryVersion, stableVersion: c.stableVersion,
                window: c.window) == promql
            {
                return values["\(check.name)/\(side)"] ?? nil
            }
        }
        return nil
    }
    var context: CanaryAnalysis.Context?
}

@Suite("Deployments and canary rollouts")
struct DeploymentTests {
    static func policy() -> CanaryPolicy {
        var p = CanaryPolicy()
        p.analysisSeconds = 3600 // the server's own controller never finds these due; the test drives them
        p.nodeTTLSeconds = 36_000 // the test jumps the clock an hour ahead
        return p
    }

    /// Pushes a Triton bundle (`<model>/config.pbtxt`, `<model>/1/model.py`) with the real client.
    static func pushBundle(_ h: PipelineHarness, _ repo: String, _ tag: String, model: String = "adder", marker: String) async throws
        -> Digest
    {
        let dir = h.dir.path + "/bundle-\(UUID().uuidString.prefix(6))"
        try FileManager.default.createDirectory(atPath: dir + "/\(model)/1", withIntermediateDirectories: true)
        try "name: \"\(model)\"\nbackend: \"python\"\nmax_batch_size: 0\n".write(
            toFile: dir + "/\(model)/config.pbtxt", atomically: true, encoding: .utf8)
        try "# \(marker)\n".write(toFile: dir + "/\(model)/1/model.py", atomically: true, encoding: .utf8)
        let connection = try RegistryConnection(url: h.url, token: nil)
        defer { Task { await connection.shutdown() } }
        let summary = try await Pusher(
            connection: connection, progress: TransferProgress(style: .quiet, verb: "push", wire: connection.counters)
        )
        .push(PushRequest(repository: repo, tag: tag, paths: [dir]))
        return try Digest(parsing: summary.digest)
    }

    static func passAll(_ m: ScriptedMetrics) {
        m.set("error-rate/canary", 0)
        m.set("latency/canary", 500)
        m.set("latency/stable", 480)
        m.set("queue-latency/canary", 10)
        m.set("queue-latency/stable", 10)
    }

    /// Runs the controller's analysis once, as if the interval had passed.
    @discardableResult
    static func analyse(_ d: Deployments, _ m: ScriptedMetrics) async throws -> [String?] {
        var out: [String?] = []
        for due in try d.dueAnalyses(now: Int64(Date().timeIntervalSince1970 * 1000) + 3_600_001) {
            m.context = due.context
            let measurements = await CanaryAnalysis.measure(d.policy, due.context, source: m)
            out.append(try d.apply(due, measurements: measurements))
        }
        return out
    }

    @Test func aHealthyCanaryStepsToStableAndABreachRollsBackWithTheValues() async throws {
        try await PipelineHarness.run(pipelines: []) { h, _ in
            let repo = try RepositoryName("vision/adder")
            let d = Deployments(registry: h.registry, policy: Self.policy())
            let m = ScriptedMetrics(policy: d.policy)
            let v1 = try await Self.pushBundle(h, repo.value, "v1", marker: "1")
            let v2 = try await Self.pushBundle(h, repo.value, "v2", marker: "2")
            let v3 = try await Self.pushBundle(h, repo.value, "v3", marker: "3")

            let first = try d.start(repo, "production", .tag("v1"), actor: "alice")
            #expect(
                first.deployment.stable == v1.description && first.rollout?.state == .promoted, "the first deployment is stable at once")
            #expect(try d.resolve(repo, "production", node: "n1").digest == v1.description)

            let started = try d.start(repo, "production", .tag("v2"), actor: "alice")
            #expect(started.deployment.canary == v2.description && started.deployment.weight == 1)
            #expect(started.canaryVersion == 2 && started.stableVersion == 1)
            #expect(try h.registry.manifest(repo, .tag("production")).digest == v2, "the alias names the desired version")
            Self.passAll(m)
            for expected in ["advance", "advance", "advance", "promote"] {
                // Node n1 syncs as triton-sync would: what it resolves, it serves and reports.
                let r = try d.resolve(repo, "production", node: "n1")
                try d.report(repo, "production", node: "n1", digest: r.digest, version: r.version, state: "ready", reason: nil)
                #expect(try await Self.analyse(d, m) == [expected])
            }
            let promoted = try d.status(repo, "production")
            #expect(promoted.deployment.stable == v2.description && promoted.deployment.canary == nil)
            #expect(promoted.decisions.map(\.weight) == [1, 10, 50, 100, 100])

            _ = try d.start(repo, "production", .tag("v3"), actor: "bob")
            m.set("error-rate/canary", 0.5)
            #expect(try await Self.analyse(d, m) == ["rollback"], "at its first analysis")
            let rolled = try d.status(repo, "production")
            #expect(rolled.rollout?.state == .rolledBack && rolled.deployment.stable == v2.description && rolled.deployment.canary == nil)
            #expect(try h.registry.manifest(repo, .tag("production")).digest == v2, "the alias is back on the stable digest")
            let last = try #require(try h.registry.aliasHistory(repo, "production").last)
            #expect(last.from == v3 && last.to == v2 && last.actor == "depot-canary")
            #expect(last.reason?.contains("error-rate: 0.5 > max 0.01") == true, "\(last.reason ?? "")")
            let values = try #require(rolled.decisions.last?.measurements)
            #expect(values.contains("\"canary\":0.5"))
            // Facts: v3 served 1% of production, from its start to its rollback.
            let served = try d.served(digest: v3)
            #expect(served.count == 1 && served[0].role == "canary" && served[0].weight == 1 && served[0].to != nil)
            #expect(try h.registry.verifyAudit().intact)
        }
    }

    @Test func withoutEvidenceARolloutPausesAndNeverPromotes() async throws {
        try await PipelineHarness.run(pipelines: []) { h, client in
            let repo = try RepositoryName("vision/adder")
            let d = Deployments(registry: h.registry, policy: Self.policy())
            let m = ScriptedMetrics(policy: d.policy)
            _ = try await Self.pushBundle(h, repo.value, "v1", marker: "1")
            let v2 = try await Self.pushBundle(h, repo.value, "v2", marker: "2")
            _ = try d.start(repo, "production", .tag("v1"), actor: "ops")
            _ = try d.start(repo, "production", .tag("v2"), actor: "ops")

            // No data for the canary (no traffic yet): inconclusive, paused.
            #expect(try await Self.analyse(d, m) == ["pause"])
            var s = try d.status(repo, "production")
            #expect(s.rollout?.state == .paused && s.deployment.weight == 1)
            #expect(s.rollout?.reason?.contains("error-rate: no data for the canary") == true, "\(s.rollout?.reason ?? "")")
            #expect(try await Self.analyse(d, m).isEmpty, "a paused rollout is not analysed")
            // Conflicting commands get clear errors; state stays consistent.
            #expect(throws: RegistryError.self) { try d.start(repo, "production", .digest(v2), actor: "ops") }
            let resumed = try d.resume(repo, "production", actor: "ops")
            #expect(resumed.rollout?.state == .running)
            do {
                _ = try d.resume(repo, "production", actor: "ops")
                Issue.record("resume of a running rollout")
            } catch let e as RegistryError {
                #expect(e.kind == .conflict && e.message.contains("not paused"))
            }
            // Prometheus unreachable: inconclusive too.
            Self.passAll(m)
            m.unreachable = true
            #expect(try await Self.analyse(d, m) == ["pause"])
            s = try d.status(repo, "production")
            #expect(s.rollout?.reason?.contains("metrics unavailable") == true)
            // Latency between the pause and the failure ratio: inconclusive.
            m.unreachable = false
            _ = try d.resume(repo, "production", actor: "ops")
            m.set("latency/canary", 480 * 1.3)
            #expect(try await Self.analyse(d, m) == ["pause"])
            // The operator decides: abort. The alias goes back; nothing was promoted.
            let aborted = try d.abort(repo, "production", actor: "ops", reason: "not convinced")
            #expect(aborted.rollout?.state == .aborted && aborted.deployment.canary == nil)
            #expect(try h.registry.manifest(repo, .tag("production")).digest != v2)
            #expect(throws: RegistryError.self) { try d.promote(repo, "production", actor: "ops", reason: nil) }
            // Over HTTP: the same refusals, with their codes.
            let again = try await client.req(.post, "/depot/v1/repositories/vision/adder/deployments/production/resume")
            #expect(again.status.code == 409 && again.errorCode == "CONFLICT")
            let unknown = try await client.req(.get, "/depot/v1/repositories/vision/adder/deployments/staging")
            #expect(unknown.status.code == 404)
        }
    }

    @Test func aNodeThatCannotLoadTheCanaryRollsItBack() async throws {
        try await PipelineHarness.run(pipelines: []) { h, _ in
            let repo = try RepositoryName("vision/adder")
            let d = Deployments(registry: h.registry, policy: Self.policy())
            let m = ScriptedMetrics(policy: d.policy)
            let v1 = try await Self.pushBundle(h, repo.value, "v1", marker: "1")
            _ = try await Self.pushBundle(h, repo.value, "v2", marker: "2")
            _ = try d.start(repo, "production", .tag("v1"), actor: "ops")
            _ = try d.start(repo, "production", .tag("v2"), actor: "ops")
            _ = try d.resolve(repo, "production", node: "node-a") // both nodes known before the split
            let b = try d.resolve(repo, "production", node: "node-b")
            let a = try d.resolve(repo, "production", node: "node-a")
            let canaryNode = [("node-a", a), ("node-b", b)].first { $0.1.role == "canary" }
            let onCanary = try #require(canaryNode, "at 1% of two nodes, one serves the canary")
            #expect([a, b].filter { $0.role == "stable" }.count == 1)
            try d.report(
                repo, "production", node: onCanary.0, digest: onCanary.1.digest, version: onCanary.1.version, state: "failed",
                reason: "load failed for model 'adder': RuntimeError: boom")
            Self.passAll(m)
            #expect(try await Self.analyse(d, m) == ["rollback"], "metrics are green, but a node could not load it")
            let s = try d.status(repo, "production")
            #expect(s.rollout?.reason?.contains("RuntimeError: boom") == true)
            #expect(try d.resolve(repo, "production", node: onCanary.0).digest == v1.description, "the node goes back to stable")
        }
    }

    @Test func aPipelineCanaryStageEndsWithItsRollout() async throws {
        let yaml = "name: ship\ntrigger: {tags: [\"v*\"]}\nstages:\n  deploy: {canary: {environment: production, analysis: 1h}}\n"
        try await PipelineHarness.run(pipelines: [yaml]) { h, client in
            _ = try await Self.pushBundle(h, "vision/adder", "v1", marker: "1")
            var jobs = try await h.waitJobs(timeout: 15) { $0.count == 1 && $0.allFinal }
            #expect(jobs.first?.state == .succeeded, "the first deployment is stable at once: \(jobs.first?.reason ?? "")")
            let v2 = try await Self.pushBundle(h, "vision/adder", "v2", marker: "2")
            jobs = try await h.waitJobs(timeout: 15) { $0.count == 2 && $0[0].state == .running }
            // The job is marked running before its stage starts the rollout: wait for the rollout.
            var rollout: [String: Any] = [:]
            let deadline = Date().addingTimeInterval(15)
            while Date() < deadline {
                let status = try await client.req(.get, "/depot/v1/repositories/vision/adder/deployments/production")
                rollout = status.json["rollout"] as? [String: Any] ?? [:]
                if rollout["started_by"] as? String == "pipeline ship job \(jobs[0].id)" { break }
                try await Task.sleep(for: .milliseconds(50))
            }
            #expect(rollout["state"] as? String == "running" && rollout["canary"] as? String == v2.description)
            #expect(rollout["started_by"] as? String == "pipeline ship job \(jobs[0].id)")
            let aborted = try await client.req(
                .post, "/depot/v1/repositories/vision/adder/deployments/production/abort",
                body: Array(#"{"reason": "bad numbers"}"#.utf8))
            #expect(aborted.status.code == 200)
            jobs = try await h.waitJobs(timeout: 15) { $0.count == 2 && $0[0].isFinal }
            #expect(jobs[0].state == .failed && jobs[0].reason?.contains("aborted by") == true, "\(jobs[0].reason ?? "")")
            #expect(jobs[0].attempt == 1, "a rolled-back rollout is not retried")
            // Something that is not a Triton bundle fails the stage at once, with the reason.
            _ = try await h.push("vision/adder", "v3", files: ["weights.bin": "x"])
            jobs = try await h.waitJobs(timeout: 15) { $0.count == 3 && $0[0].isFinal }
            #expect(jobs[0].state == .failed && jobs[0].reason?.contains("is not a Triton bundle") == true, "\(jobs[0].reason ?? "")")
        }
    }

    @Test func theRouterHookHearsEveryWeightChangeInOrder() async throws {
        let dir = TempDir("router")
        var policy = Self.policy()
        policy.routerCommand = [
            "/bin/sh", "-c", "echo \"$DEPOT_DEPLOYMENT $DEPOT_CANARY_WEIGHT ${DEPOT_CANARY_DIGEST:-none}\" >> \(dir.path)/router.log",
        ]
        try await PipelineHarness.run(pipelines: [], canary: policy) { h, client in
            let v1 = try await Self.pushBundle(h, "vision/adder", "v1", marker: "1")
            let v2 = try await Self.pushBundle(h, "vision/adder", "v2", marker: "2")
            let path = "/depot/v1/repositories/vision/adder/deployments/production"
            _ = try await client.req(.post, path + "/rollout", body: Array(#"{"reference": "v1"}"#.utf8))
            _ = try await client.req(.post, path + "/rollout", body: Array(#"{"reference": "v2"}"#.utf8))
            _ = try await client.req(.post, path + "/abort", body: Array(#"{"reason": "test"}"#.utf8))
            var lines: [String] = []
            for _ in 0..<200 {
                lines = ((try? String(contentsOfFile: dir.path + "/router.log", encoding: .utf8)) ?? "").split(separator: "\n").map(
                    String.init)
                if lines.count >= 3 { break }
                try await Task.sleep(for: .milliseconds(25))
            }
            #expect(
                lines == ["vision/adder:production 0 none", "vision/adder:production 1 \(v2)", "vision/adder:production 0 none"],
                "initial deployment, canary at 1%, abort — in order")
            _ = v1
        }
    }

    /// Stores a Triton bundle through the registry API (no server: the store is reopened below).
    static func putBundle(_ registry: Registry, _ repo: RepositoryName, _ tag: String, marker: String) throws -> Digest {
        func blob(_ text: String) throws -> (Digest, Int) {
            let w = try registry.store.makeWriter()
            try w.write(Array(text.utf8))
            let r = try w.finish()
            try registry.link(repo, r.digest)
            return (r.digest, text.utf8.count)
        }
        let config = try blob("{}")
        let pbtxt = try blob("name: \"adder\"\nbackend: \"python\"\n")
        let py = try blob("# \(marker)\n")
        func layer(_ b: (Digest, Int), _ path: String) -> [String: Any] {
            [
                "mediaType": "application/vnd.cncf.model.weight.config.v1.raw", "digest": b.0.description, "size": b.1,
                "annotations": ["org.cncf.model.filepath": path],
            ]
        }
        let manifest: [String: Any] = [
            "schemaVersion": 2, "mediaType": MediaType.ociManifest, "artifactType": "application/vnd.depot.triton.bundle.v1",
            "config": ["mediaType": "application/vnd.cncf.model.config.v1+json", "digest": config.0.description, "size": config.1],
            "layers": [layer(pbtxt, "adder/config.pbtxt"), layer(py, "adder/1/model.py")],
        ]
        let bytes = Array(try JSONSerialization.data(withJSONObject: manifest, options: [.sortedKeys]))
        return try registry.putManifest(repo, .tag(tag), contentType: MediaType.ociManifest, bytes: bytes).digest
    }

    @Test func theAnalysisWaitsForTheCanaryNodesToServeIt() async throws {
        try await PipelineHarness.run(pipelines: []) { h, _ in
            let repo = try RepositoryName("vision/adder")
            let d = Deployments(registry: h.registry, policy: Self.policy())
            let m = ScriptedMetrics(policy: d.policy)
            Self.passAll(m)
            _ = try await Self.pushBundle(h, repo.value, "v1", marker: "1")
            _ = try await Self.pushBundle(h, repo.value, "v2", marker: "2")
            _ = try d.start(repo, "production", .tag("v1"), actor: "ops")
            for n in ["node-a", "node-b"] { _ = try d.resolve(repo, "production", node: n) }
            _ = try d.start(repo, "production", .tag("v2"), actor: "ops")
            let canary = try ["node-a", "node-b"].first { try d.resolve(repo, "production", node: $0).role == "canary" }!
            #expect(try await Self.analyse(d, m).isEmpty, "its node has not reported the canary ready: not analysed yet")
            let r = try d.resolve(repo, "production", node: canary)
            try d.report(repo, "production", node: canary, digest: r.digest, version: r.version, state: "ready", reason: nil)
            #expect(try await Self.analyse(d, m) == ["advance"])
        }
    }

    @Test func theControllerCarriesOnAfterARestart() async throws {
        let dir = TempDir("deploy-restart")
        let repo = try RepositoryName("vision/adder")
        var v2 = Digest.of([])
        do {
            let registry = Registry(store: try ChunkStore(root: dir.path, create: true))
            let d = Deployments(registry: registry, policy: Self.policy())
            _ = try Self.putBundle(registry, repo, "v1", marker: "1")
            v2 = try Self.putBundle(registry, repo, "v2", marker: "2")
            _ = try d.start(repo, "production", .tag("v1"), actor: "ops")
            _ = try d.start(repo, "production", .tag("v2"), actor: "ops")
        } // the process goes away with a rollout running
        let registry = Registry(store: try ChunkStore(root: dir.path, create: false))
        let d = Deployments(registry: registry, policy: Self.policy())
        let m = ScriptedMetrics(policy: d.policy)
        Self.passAll(m)
        #expect(try await Self.analyse(d, m) == ["advance"], "the running rollout is found and analysed after a restart")
        let s = try d.status(repo, "production")
        #expect(s.rollout?.weight == 10 && s.deployment.canary == v2.description)
    }

    @Test func theCanaryConfigIsValidated() throws {
        let dir = TempDir("canary-config")
        func load(_ yaml: String) throws -> ServerConfig {
            try yaml.write(toFile: dir.path + "/c.yaml", atomically: true, encoding: .utf8)
            return try ServerConfig.load(dir.path + "/c.yaml")
        }
        let c = try load(
            "canary:\n  steps: [5, 25, 100]\n  analysis_interval: 30s\n  checks:\n    - {name: err, query: 'x', max: 0.1, failure_limit: 2}\n"
        )
        #expect(c.canary.steps == [5, 25, 100] && c.canary.analysisSeconds == 30 && c.canary.checks.map(\.failureLimit) == [2])
        #expect(throws: DepotError.self) { try load("canary:\n  steps: [50, 10, 100]\n") }
        #expect(throws: DepotError.self) { try load("canary:\n  steps: [1, 10]\n") }
        #expect(throws: DepotError.self) { try load("canary:\n  analysis_interval: soon\n") }
        #expect(throws: DepotError.self) { try load("canary:\n  checks:\n    - {name: err, query: 'x'}\n") }
        #expect(throws: DepotError.self) { try load("canary:\n  checks:\n    - {name: err, query: 'x', max: 1, colour: red}\n") }
        #expect(throws: DepotError.self) { try load("canary:\n  prometheus_url: localhost:9090\n") }
    }

    /// The Prometheus client against a real Prometheus (Debian's), scraping this Depot's own /metrics.
    @Test func thePrometheusClientReadsARealPrometheus() async throws {
        let dir = TempDir("prom")
        try await withRegistry { _, _, port in
            let promPort = freePort()
            try """
            global: {scrape_interval: 1s, evaluation_interval: 1s}
            scrape_configs:
              - job_name: depot
                static_configs: [{targets: ["127.0.0.1:\(port)"]}]
            """.write(toFile: dir.path + "/prom.yml", atomically: true, encoding: .utf8)
            let prom = Process()
            prom.executableURL = URL(fileURLWithPath: "/usr/bin/prometheus")
            prom.arguments = [
                "--config.file=\(dir.path)/prom.yml", "--storage.tsdb.path=\(dir.path)/data",
                "--web.listen-address=127.0.0.1:\(promPort)",
            ]
            prom.standardOutput = FileHandle.nullDevice
            prom.standardError = FileHandle.nullDevice
            try prom.run()
            defer {
                kill(prom.processIdentifier, SIGKILL)
                prom.waitUntilExit()
            }
            let source = PrometheusSource(baseURL: "http://127.0.0.1:\(promPort)")
            // A scrape slower than the 1 s interval (a loaded machine) sets up to 0 for a while:
            // wait until a successful scrape shows in both queries.
            var up: Double?
            var sum: Double?
            for _ in 0..<300 where up != 1 || sum != 1 {
                up = try? await source.value("up{job=\"depot\"}")
                sum = try? await source.value("sum(up)")
                if up != 1 || sum != 1 { try await Task.sleep(for: .milliseconds(100)) }
            }
            #expect(up == 1, "Prometheus scraped the registry")
            #expect(sum == 1, "an aggregate of one series reads as that value")
            // Depot's own histograms parse as histograms: Prometheus takes a quantile of the
            // latency of the scrapes it made, and reads the build info.
            var median: Double?
            for _ in 0..<100 where median == nil {
                median = try? await source.value(
                    "histogram_quantile(0.5, sum by (le) (depot_http_request_duration_seconds_bucket{route=\"metrics\"}))")
                if median == nil { try await Task.sleep(for: .milliseconds(100)) }
            }
            #expect((median ?? 0) > 0, "a median scrape latency from depot_http_request_duration_seconds")
            #expect(try await source.value("depot_build_info") == 1)
            #expect(try await source.value("up{job=\"nobody\"}") == nil, "an empty result is no data")
            #expect(try await source.value("scalar(vector(0)) / 0 - scalar(vector(0)) / 0") == nil, "NaN is no data")
            do {
                _ = try await source.value("up or vector(5)")
                Issue.record("two series accepted")
            } catch {
                #expect("\(error)".contains("returns 2 series"))
            }
            do {
                _ = try await source.value("sum(up")
                Issue.record("a syntax error accepted")
            } catch {
                #expect("\(error)".contains("Prometheus refused the query"))
            }
            await #expect(throws: (any Error).self) { try await PrometheusSource(baseURL: "http://127.0.0.1:\(freePort())").value("up") }
        }
    }
}
