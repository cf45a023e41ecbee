import DepotAPI
import DepotCatalog
import DepotCore
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
extension OCIResponder {
    static let maxLogBytes = 8 << 20

    func handleJobs(_ route: ExtensionRoute, _ request: Request) async throws -> Response {
        guard let jobs else {
            throw RegistryError(.jobUnknown, "this registry runs no pipelines (no files in pipelines.directory)")
        }
        let actor = Self.actor(request)
        let query = request.uri.queryParameters
        switch (route, request.method) {
        case (.pipelines, .get):
            return Reply.json(["pipelines": jobs.pipelines.map(Self.json)])
        case (.jobs, .get):
            let state = query["state"].map(String.init)
            let pipeline = query["pipeline"].map(String.init)
            let limit = try query["limit"].map { try Self.positive(String($0), "limit") } ?? 100
            let list = try await offload { try jobs.jobs(state: state, pipeline: pipeline, limit: limit) }
            return Reply.json(["jobs": list.map { Self.json($0) }])
        case (.jobLease, .post):
            let body = try await jsonBody(request)
            guard let runner = body["runner"] as? String, !runner.isEmpty, runner.count <= 200 else {
                throw RegistryError(.unsupported, "body needs \"runner\": the runner's name", status: 400)
            }
            let labels = body["labels"] as? [String] ?? []
            let job = try await offload { try jobs.lease(runner: runner, labels: Set(labels)) }
            let answer: Any = job.map { Self.json($0, withToken: true) } ?? NSNull()
            return Reply.json(["job": answer])
        case (.job(let id), .get):
            let job = try await offload { try jobs.job(id) }
            return Reply.json(Self.json(job))
        case (.jobAction(let id, "log"), .get):
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
        case (.jobAction(let id, "log"), .put):
            let token = try Self.required(query["lease_token"].map(String.init), "lease_token (query)")
            let body = try await RequestParsing.collect(request, limit: Self.maxLogBytes, what: "job log")
            let bytes = Array(body.readableBytesView)
            let digest = try await offload { try jobs.storeLog(id, token: token, bytes: bytes) }
            return Reply.json(["digest": digest.description], status: 201)
        case (.jobAction(let id, "start"), .post):
            let body = try await jsonBody(request)
            let token = try Self.required(body["lease_token"] as? String, "lease_token")
            let key = try Self.required(body["key"] as? String, "key")
            let decision = try await offload { try jobs.start(id, token: token, key: key) }
            switch decision {
            case .run: return Reply.json(["decision": "run"])
            case .memoized(let d): return Reply.json(["decision": "memoized", "output": d.description])
            }
        case (.jobAction(let id, "heartbeat"), .post):
            let body = try await jsonBody(request)
            let token = try Self.required(body["lease_token"] as? String, "lease_token")
            let job = try await offload { try jobs.heartbeat(id, token: token) }
            return Reply.json(Self.json(job))
        case (.jobAction(let id, "complete"), .post):
            let body = try await jsonBody(request)
            let token = try Self.required(body["lease_token"] as? String, "lease_token")
            let output = try RequestParsing.digest(try Self.required(body["output"] as? String, "output"))
            try await offload { try jobs.complete(id, token: token, output: output) }
            return Reply.json(Self.json(try await offload { try jobs.job(id) }))
        case (.jobAction(let id, "fail"), .post):
            let body = try await jsonBody(request)
            let token = try Self.required(body["lease_token"] as? String, "lease_token")
            let reason = try Self.required(body["reason"] as? String, "reason")
            let permanent = body["permanent"] as? Bool ?? false
            let job = try await offload { try jobs.fail(id, token: token, reason: reason, permanent: permanent) }
            return Reply.json(Self.json(job))
        case (.jobAction(let id, "cancel"), .post):
            let deployments = self.deployments
            let job = try await offload { () -> JobRecord in
                let job = try jobs.cancel(id, actor: actor)
                try deployments.abortRollout(forJob: id, actor: actor) // a canary stage's rollout stops with it
                return job
            }
            return Reply.json(Self.json(job))
        case (.jobAction(let id, "retry"), .post):
            let job = try await offload { try jobs.retry(id, actor: actor) }
            return Reply.json(Self.json(job))
        case (.jobAction(let id, "callback"), .post):
            return try await webhookCallback(id, request, jobs)
        default:
            throw RegistryError(.unsupported, "\(request.method) is not supported on this endpoint", status: 405)
        }
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
            throw RegistryError(.unsupported, "body must be {\"job\", \"attempt\", \"status\": \"succeeded\"|\"failed\", ...}", status: 400)
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
            throw RegistryError(.unsupported, "status must be succeeded or failed", status: 400)
        }
        return Reply.json(Self.json(updated))
    }

    static func required(_ value: String?, _ name: String) throws -> String {
        guard let value, !value.isEmpty else { throw RegistryError(.unsupported, "missing \(name)", status: 400) }
        return value
    }

    static func positive(_ text: String, _ name: String) throws -> Int {
        try RequestParsing.integer(Substring(text), name, in: 1...10_000)
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
