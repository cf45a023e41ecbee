import AsyncHTTPClient
import DepotAPI
import DepotCatalog
import DepotCore
import DepotDeploy
import DepotPipelines
import DepotRegistry
import DepotRunner
import Foundation
import Logging
import ServiceLifecycle
import Tracing

/// A webhook stage's endpoint and the secret that signs both directions.
struct WebhookStageTarget: Sendable {
    var url: String
    var secret: String
}

/// Inside `depot serve`: turns new events into jobs, returns jobs whose lease expired to the
/// queue, and runs webhook stages (POST out; the signed callback completes them).
struct PipelineScheduler: Service {
    let jobs: JobQueue?
    /// Runs `canary` stages (nil: they wait).
    var deployments: Deployments?
    let webhookStages: [String: WebhookStageTarget]
    let callbackBase: String
    let logger: Logger
    var leadership = Leadership.standalone()
    var interval: Duration = .milliseconds(250)

    func run() async throws {
        guard let jobs else {
            try? await gracefulShutdown() // a returning service would stop the server
            return
        }
        logger.info("pipelines: \(jobs.pipelines.map(\.name).joined(separator: ", "))")
        try? await cancelWhenGracefulShutdown {
            var ticks = 0
            while !Task.isCancelled {
                guard leadership.isLeader else {
                    try await Task.sleep(for: interval)
                    continue
                }
                do {
                    let tick = BackgroundSpan()
                    let queued = try await offload { try jobs.schedule() }
                    if queued > 0 {
                        logger.info("pipelines: queued \(queued) job(s)")
                        tick.record("depot.pipeline.schedule") { $0["depot.jobs.queued"] = queued }
                    }
                    if ticks % 14_400 == 0 { // hourly (and at start-up)
                        let n = try await offload { try jobs.expireLogs() }
                        if n > 0 { logger.info("pipelines: released \(n) job log(s) past their retention to GC") }
                    }
                    if ticks % 4 == 0 {
                        for job in try await offload({ try jobs.expireLeases() }) {
                            logger.warning("job \(job.id) \(job.pipeline)/\(job.stage): lease expired (runner \(job.runner ?? "?"))")
                        }
                    }
                    if !webhookStages.isEmpty { try await dispatchWebhooks(jobs) }
                    if let deployments { try await runCanaryStages(jobs, deployments) }
                } catch {
                    logger.error("pipelines: scheduling failed: \(error)")
                }
                ticks += 1
                try await Task.sleep(for: interval)
            }
        }
    }

    func dispatchWebhooks(_ jobs: JobQueue) async throws {
        while let job = try await offload({ try jobs.leaseServerJob(kind: "webhook") }) {
            guard let target = webhookStages["\(job.pipeline)/\(job.stage)"] else {
                try await offload { try jobs.serverJobDispatchFailed(job, reason: "the pipeline's webhook stage is no longer configured") }
                continue
            }
            var input: [String: JSONValue] = ["repository": .string(job.inputRepository), "digest": .string(job.inputDigest)]
            if let t = job.inputTag { input["tag"] = .string(t) }
            let spec = try? JSONDecoder().decode(JSONValue.self, from: Data(job.spec.utf8))
            let payload: [String: JSONValue] = [
                "job": .int(job.id), "pipeline": .string(job.pipeline), "stage": .string(job.stage), "attempt": JSONValue(job.attempt),
                "input": .object(input), "params": spec?["with"] ?? .object([:]), "key": .string(job.key ?? ""),
                "output_tag": .string(job.outputTag ?? ""), "callback_url": .string("\(callbackBase)/depot/v1/jobs/\(job.id)/callback"),
            ]
            let body = (try? WireJSON.encode(payload)) ?? []
            var request = HTTPClientRequest(url: target.url)
            request.method = .POST
            request.headers.add(name: "Content-Type", value: "application/json")
            request.headers.add(name: "User-Agent", value: "depot-pipelines")
            request.headers.add(
                name: "Depot-Signature",
                value: WebhookConfig.signature(secret: target.secret, timestamp: Int64(Date().timeIntervalSince1970), body: body))
            request.body = .bytes(body)
            var failure: String?
            do {
                let response = try await HTTPClient.shared.execute(request, timeout: .seconds(30))
                _ = try? await response.body.collect(upTo: 64 << 10)
                if !(200..<300).contains(Int(response.status.code)) { failure = "the webhook answered HTTP \(response.status.code)" }
            } catch {
                failure = "cannot reach the webhook \(target.url): \(error)"
            }
            if let failure {
                logger.warning("job \(job.id) \(job.pipeline)/\(job.stage): \(failure)")
                try await offload { try jobs.serverJobDispatchFailed(job, reason: failure) }
            } else {
                logger.info("job \(job.id) \(job.pipeline)/\(job.stage): webhook called, waiting for its callback")
            }
        }
    }
}

extension PipelineScheduler {
    /// Starts a rollout for each queued `canary` job, and ends the job when its rollout ends:
    /// promoted → succeeded, rolled back or aborted → failed (not retried: the evidence is in).
    func runCanaryStages(_ jobs: JobQueue, _ deployments: Deployments) async throws {
        while let job = try await offload({ try jobs.leaseServerJob(kind: "canary") }) {
            // A job leased again (its lease outlived by a long rollout) keeps its rollout.
            if try await offload({ try deployments.rollout(forJob: job.id) }) != nil { continue }
            try await startRollout(job, jobs, deployments)
        }
        for job in try await offload({ try jobs.runningServerJobs(kind: "canary") }) {
            guard let rollout = try await offload({ try deployments.rollout(forJob: job.id) }) else {
                // Leased, then the server died before the rollout started: start it now.
                try await startRollout(job, jobs, deployments)
                continue
            }
            guard !rollout.isActive else { continue }
            if rollout.state == .promoted {
                _ = try await offload { try jobs.completeServerJob(job.id, output: nil) }
            } else {
                _ = try await offload {
                    try jobs.failServerJob(
                        job.id, reason: "rollout \(rollout.id) \(rollout.state.rawValue): \(rollout.reason ?? "")", permanent: true)
                }
            }
        }
    }
}

extension PipelineScheduler {
    func startRollout(_ job: JobRecord, _ jobs: JobQueue, _ deployments: Deployments) async throws {
        try await withSpan("depot.rollout.start", context: .topLevel) { span in
            span.attributes["depot.job.id"] = Int(job.id)
            span.attributes["depot.job.pipeline"] = job.pipeline
            span.attributes["depot.job.stage"] = job.stage
            span.attributes["depot.job.input"] = "\(job.inputRepository)@\(job.inputDigest)"
            try await startRolloutTraced(job, jobs, deployments)
        }
    }

    func startRolloutTraced(_ job: JobRecord, _ jobs: JobQueue, _ deployments: Deployments) async throws {
        let spec = try? JSONDecoder().decode(JSONValue.self, from: Data(job.spec.utf8))
        let env = spec?["environment"]?.string ?? ""
        let steps = spec?["steps"]?.array?.compactMap { $0.int.map { Int($0) } }
        let analysis = spec?["analysis_seconds"]?.double
        do {
            let repo = try RepositoryName(job.inputRepository)
            let digest = try Digest(parsing: job.inputDigest)
            let status = try await offload {
                try deployments.start(
                    repo, env, .digest(digest), actor: "pipeline \(job.pipeline) job \(job.id)", steps: steps,
                    analysisSeconds: analysis, jobID: job.id)
            }
            logger.info(
                "job \(job.id) \(job.pipeline)/\(job.stage): rollout \(status.rollout?.id ?? 0) of \(job.inputDigest.prefix(19)) to \(env) started"
            )
        } catch {
            let e = RegistryError.from(error)
            // A conflict (another rollout running) may clear; a bad input will not.
            try await offload {
                try jobs.serverJobDispatchFailed(job, reason: "cannot start the rollout: \(e.message)", permanent: e.kind != .conflict)
            }
        }
    }
}

/// The runner inside `depot serve` (the same code as `depot runner`, talking to this server over HTTP).
struct EmbeddedRunner: Service {
    let runner: Runner?

    func run() async throws {
        guard let runner else {
            try? await gracefulShutdown()
            return
        }
        try? await cancelWhenGracefulShutdown { await runner.run() }
        // Its HTTP client must be shut down before it is released (a debug build traps otherwise,
        // which a stop during the runner's back-off after the listener closed reached).
        await runner.connection.shutdown()
    }
}
