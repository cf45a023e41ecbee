import DepotAPI
import DepotCatalog
import DepotCore
import DepotDeploy
import DepotPipelines
import DepotRegistry
import Foundation
import HTTPTypes
import Hummingbird
import NIOCore

extension HTTPField.Name {
    static let depotSignature = Self("Depot-Signature")!
}

/// Handlers of the job API (`/depot/v1/jobs`, `/depot/v1/pipelines`): listing and operator
/// commands, and the lease protocol runners speak. See docs/EXTENSION-API.md.
struct JobHandlers: RouteHandlers {
    static let maxLogBytes = 8 << 20
    let registry: Registry
    /// The pipeline job queue; nil when no pipelines are configured (the job API then answers 404).
    let jobs: JobQueue?
    /// Secrets of webhook stages, by "pipeline/stage", to verify completion callbacks.
    let callbackSecrets: [String: String]
    /// Cancelling a canary stage's job stops its rollout.
    let deployments: Deployments

    func queue() throws -> JobQueue {
        guard let jobs else {
            throw RegistryError(.jobUnknown, "this registry runs no pipelines (no files in pipelines.directory)")
        }
        return jobs
    }

    /// The `{id}` of a job route, parsed strictly (1–19 digits, positive).
    static func jobID(_ match: RouteMatch) throws -> Int64 {
        try RequestParsing.integer(Substring(match["id"]), "job id", in: 1...Int64.max)
    }

    func pipelines(_ match: RouteMatch, _ request: Request) async throws -> Response {
        let jobs = try queue()
        return Reply.json(["pipelines": jobs.pipelines.map(Self.json)])
    }

    func list(_ match: RouteMatch, _ request: Request) async throws -> Response {
        let jobs = try queue()
        let query = request.uri.queryParameters
        let state = query["state"].map(String.init)
        let pipeline = query["pipeline"].map(String.init)
        let limit = try query["limit"].map { try Self.positive(String($0), "limit") } ?? 100
        let list = try await offload { try jobs.jobs(state: state, pipeline: pipeline, limit: limit) }
        return Reply.json(["jobs": list.map { Self.json($0) }])
    }

    func lease(_ match: RouteMatch, _ request: Request) async throws -> Response {
        let jobs = try queue()
        let body = try await jsonBody(request)
        guard let runner = body["runner"] as? String, !runner.isEmpty, runner.count <= 200 else {
            throw RegistryError(.invalidRequest, "body needs \"runner\": the runner's name")
        }
        let labels = body["labels"] as? [String] ?? []
        let job = try await offload { try jobs.lease(runner: runner, labels: Set(labels)) }
        let answer: Any = job.map { Self.json($0, withToken: true) } ?? NSNull()
        return Reply.json(["job": answer])
    }

    func get(_ match: RouteMatch, _ request: Request) async throws -> Response {
        let jobs = try queue()
        let id = try Self.jobID(match)
        let job = try await offload { try jobs.job(id) }
        return Reply.json(Self.json(job))
    }

    func logGet(_ match: RouteMatch, _ request: Request) async throws -> Response {
        let jobs = try queue()
        let id = try Self.jobID(match)
        let job = try await offload { try jobs.job(id) }
        guard let log = job.logDigest.flatMap({ try? Digest(parsing: $0) }) else {
            throw RegistryError(.blobUnknown, "job \(id) has no log yet")
        }
        let store = registry.store
        let bytes = try await offload { () -> [UInt8] in
            var out: [UInt8] = []
            try store.reader(log).forEach { out.append(contentsOf: $0) }
            return out
        }
        return Reply.bytes(bytes, contentType: "text/plain; charset=utf-8")
    }

    func logPut(_ match: RouteMatch, _ request: Request) async throws -> Response {
        let jobs = try queue()
        let id = try Self.jobID(match)
        let query = request.uri.queryParameters
        let token = try Self.required(query["lease_token"].map(String.init), "lease_token (query)")
        let body = try await RequestParsing.collect(request, limit: Self.maxLogBytes, what: "job log")
        let bytes = Array(body.readableBytesView)
        let digest = try await offload { try jobs.storeLog(id, token: token, bytes: bytes) }
        return Reply.json(["digest": digest.description], status: 201)
    }

    func start(_ match: RouteMatch, _ request: Request) async throws -> Response {
        let jobs = try queue()
        let id = try Self.jobID(match)
        let body = try await jsonBody(request)
        let token = try Self.required(body["lease_token"] as? String, "lease_token")
        let key = try Self.required(body["key"] as? String, "key")
        let decision = try await offload { try jobs.start(id, token: token, key: key) }
        switch decision {
        case .run: return Reply.json(["decision": "run"])
        case .memoized(let d): return Reply.json(["decision": "memoized", "output": d.description])
        }
    }

    func heartbeat(_ match: RouteMatch, _ request: Request) async throws -> Response {
        let jobs = try queue()
        let id = try Self.jobID(match)
        let body = try await jsonBody(request)
        let token = try Self.required(body["lease_token"] as? String, "lease_token")
        let job = try await offload { try jobs.heartbeat(id, token: token) }
        return Reply.json(Self.json(job))
    }

    func complete(_ match: RouteMatch, _ request: Request) async throws -> Response {
        let jobs = try queue()
        let id = try Self.jobID(match)
        let body = try await jsonBody(request)
        let token = try Self.required(body["lease_token"] as? String, "lease_token")
        let output = try RequestParsing.digest(try Self.required(body["output"] as? String, "output"))
        try await offload { try jobs.complete(id, token: token, output: output) }
        return Reply.json(Self.json(try await offload { try jobs.job(id) }))
    }

    func fail(_ match: RouteMatch, _ request: Request) async throws -> Response {
        let jobs = try queue()
        let id = try Self.jobID(match)
        let body = try await jsonBody(request)
        let token = try Self.required(body["lease_token"] as? String, "lease_token")
        let reason = try Self.required(body["reason"] as? String, "reason")
        let permanent = body["permanent"] as? Bool ?? false
        let job = try await offload { try jobs.fail(id, token: token, reason: reason, permanent: permanent) }
        return Reply.json(Self.json(job))
    }

    func cancel(_ match: RouteMatch, _ request: Request) async throws -> Response {
        let jobs = try queue()
        let id = try Self.jobID(match)
        let actor = Self.actor(request)
        let deployments = self.deployments
        let job = try await offload { () -> JobRecord in
            let job = try jobs.cancel(id, actor: actor)
            try deployments.abortRollout(forJob: id, actor: actor) // a canary stage's rollout stops with it
            return job
        }
        return Reply.json(Self.json(job))
    }

    func retry(_ match: RouteMatch, _ request: Request) async throws -> Response {
        let jobs = try queue()
        let id = try Self.jobID(match)
        let actor = Self.actor(request)
        let job = try await offload { try jobs.retry(id, actor: actor) }
        return Reply.json(Self.json(job))
    }

    func callback(_ match: RouteMatch, _ request: Request) async throws -> Response {
        let jobs = try queue()
        let id = try Self.jobID(match)
        return try await webhookCallback(id, request, jobs)
    }

    /// A webhook stage's completion: `{"status": "succeeded"|"failed", "output": digest?, "reason": text?}`,
    /// signed like Depot's own webhooks (`Depot-Signature: t=…,v1=HMAC(secret, "t.body")`).
    func webhookCallback(_ id: Int64, _ request: Request, _ jobs: JobQueue) async throws -> Response {
        let buffer = try await RequestParsing.collect(request, limit: 1 << 20, what: "callback body")
        let bytes = Array(buffer.readableBytesView)
        let job = try await offload { try jobs.job(id) }
        guard let secret = callbackSecrets["\(job.pipeline)/\(job.stage)"] else {
            throw RegistryError(.conflict, "job \(id) is not a webhook stage of a loaded pipeline")
        }
        guard let header = request.headers[.depotSignature], WebhookConfig.verify(header, secret: secret, body: bytes, maxSkew: 300) else {
            throw RegistryError(
                .unauthorized,
                "callback signature missing or wrong (Depot-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, \"<t>.<body>\")>)")
        }
        guard let body = try? JSONSerialization.jsonObject(with: Data(bytes)) as? [String: Any], let status = body["status"] as? String
        else {
            throw RegistryError(.invalidRequest, "body must be {\"job\", \"attempt\", \"status\": \"succeeded\"|\"failed\", ...}")
        }
        // The signed body names the job and attempt: a callback cannot be replayed onto another
        // job of the stage, nor a late one onto a later attempt.
        guard (body["job"] as? NSNumber)?.int64Value == id, (body["attempt"] as? NSNumber)?.intValue == job.attempt else {
            throw RegistryError(
                .conflict, "the callback must name this job (\"job\": \(id)) and its current attempt (\"attempt\": \(job.attempt))")
        }
        let updated: JobRecord
        switch status {
        case "succeeded":
            let output = try (body["output"] as? String).map(RequestParsing.digest)
            updated = try await offload { try jobs.completeServerJob(id, output: output) }
        case "failed":
            let reason = (body["reason"] as? String) ?? "the webhook reported a failure"
            let permanent = body["permanent"] as? Bool ?? false
            updated = try await offload { try jobs.failServerJob(id, reason: "the webhook reported: \(reason)", permanent: permanent) }
        default:
            throw RegistryError(.invalidRequest, "status must be succeeded or failed")
        }
        return Reply.json(Self.json(updated))
    }

    static func json(_ job: JobRecord, withToken: Bool = false) -> [String: Any] {
        var o: [String: Any] = [
            "id": job.id, "run": job.runID, "pipeline": job.pipeline, "stage": job.stage, "kind": job.kind, "state": job.state.rawValue,
            "attempt": job.attempt, "max_attempts": job.maxAttempts, "labels": job.labels, "memoized": job.memoized,
            "timeout_seconds": job.timeoutMs / 1000, "created_at": iso(job.createdAt), "updated_at": iso(job.updatedAt),
        ]
        var input: [String: Any] = ["repository": job.inputRepository, "digest": job.inputDigest]
        if let t = job.inputTag { input["tag"] = t }
        o["input"] = input
        var output: [String: Any] = [:]
        if let t = job.outputTag { output["tag"] = t }
        if let d = job.outputDigest { output["digest"] = d }
        o["output"] = output
        if let spec = try? JSONSerialization.jsonObject(with: Data(job.spec.utf8)) { o["spec"] = spec }
        if let v = job.runner { o["runner"] = v }
        if let v = job.key { o["key"] = v }
        if let v = job.reason { o["reason"] = v }
        if let v = job.logDigest { o["log"] = v }
        if let v = job.startedAt { o["started_at"] = iso(v) }
        if let v = job.finishedAt { o["finished_at"] = iso(v) }
        if job.state == .queued, job.notBefore > Int64(Date().timeIntervalSince1970 * 1000) { o["not_before"] = iso(job.notBefore) }
        if let v = job.leaseExpires { o["lease_expires"] = iso(v) }
        if withToken, let t = job.leaseToken { o["lease_token"] = t }
        return o
    }

    static func json(_ p: Pipeline) -> [String: Any] {
        [
            "name": p.name, "file": p.file,
            "trigger": ["repositories": p.trigger.repositories, "tags": p.trigger.tags, "artifact_types": p.trigger.artifactTypes],
            "stages": p.stages.map { s -> [String: Any] in
                var o: [String: Any] = [
                    "name": s.name, "kind": s.kindName, "needs": s.needs, "labels": s.labels,
                    "timeout_seconds": s.timeoutSeconds, "retries": s.retries,
                ]
                if let t = s.tag { o["tag"] = t }
                return o
            },
        ]
    }
}
