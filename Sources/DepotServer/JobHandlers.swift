import DepotAPI
import DepotAuth
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
    /// Signs every stage output before its job completes.
    let trust: TrustService

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
        return Reply.encoded(PipelineListAnswer(pipelines: jobs.pipelines.map(Self.info)))
    }

    func list(_ match: RouteMatch, _ request: Request) async throws -> Response {
        let jobs = try queue()
        let query = request.uri.queryParameters
        let state = query["state"].map(String.init)
        let pipeline = query["pipeline"].map(String.init)
        let limit = try query["limit"].map { try Self.positive(String($0), "limit") } ?? 100
        let list = try await offload { try jobs.jobs(state: state, pipeline: pipeline, limit: limit) }
        return Reply.encoded(JobListAnswer(jobs: try list.map { try Self.info($0) }))
    }

    func lease(_ match: RouteMatch, _ request: Request) async throws -> Response {
        let jobs = try queue()
        let body = try await self.body(request, as: JobLeaseRequest.self)
        let runner = body.runner
        guard !runner.isEmpty, runner.count <= 200 else {
            throw RegistryError(.invalidRequest, "body needs \"runner\": the runner's name")
        }
        let labels = body.labels ?? []
        var holder = runner
        if let p = Caller.principal {
            // Only runner tokens lease, and only jobs their labels cover: the runner's claimed
            // labels must be among the token's. The lease is recorded as held by the principal.
            guard let allowed = p.labels else {
                throw RegistryError(.denied, "leasing jobs needs a runner token (depot admin token create --role runner --labels …)")
            }
            let extra = Set(labels).subtracting(allowed)
            guard extra.isEmpty else {
                throw RegistryError(
                    .denied,
                    "this runner token may lease jobs labelled \(allowed.sorted().joined(separator: ", ")), not \(extra.sorted().joined(separator: ", "))"
                )
            }
            holder = Self.holder(runner, p)
        }
        let leaseHolder = holder
        var canTake: (@Sendable (String) -> Bool)?
        if let p = Caller.principal {
            // Outputs are pushed to the input's repository: lease only jobs the token could push for.
            canTake = { Authorizer.decide(p, AccessRequest(.push, repository: $0), policy: AuthPolicy()) == .allow }
        }
        let take = canTake
        let job = try await offload { try jobs.lease(runner: leaseHolder, labels: Set(labels), canTake: take) }
        return Reply.encoded(JobLeaseAnswer(job: try job.map { try Self.info($0, withToken: true) }))
    }

    /// The `runner` a lease records with authentication on: the runner's own name and, in
    /// brackets, the principal that holds the lease.
    static func holder(_ runner: String, _ p: Principal) -> String { "\(runner) [\(p.id)]" }

    /// With authentication on, a job call must come from the principal that leased the job
    /// (knowing its lease token is not enough).
    func requireHolder(_ jobs: JobQueue, _ id: Int64) async throws {
        guard let p = Caller.principal else { return }
        let job = try await offload { try jobs.job(id) }
        guard let runner = job.runner, runner.hasSuffix(" [\(p.id)]") else {
            throw RegistryError(.denied, "job \(id) is not leased by \(p.id): only the runner that leased it may report on it")
        }
    }

    func get(_ match: RouteMatch, _ request: Request) async throws -> Response {
        let jobs = try queue()
        let id = try Self.jobID(match)
        let job = try await offload { try jobs.job(id) }
        return Reply.encoded(try Self.info(job))
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
        try await requireHolder(jobs, id)
        let query = request.uri.queryParameters
        let token = try Self.required(query["lease_token"].map(String.init), "lease_token (query)")
        let body = try await RequestParsing.collect(request, limit: Self.maxLogBytes, what: "job log")
        let bytes = Array(body.readableBytesView)
        let digest = try await offload { try jobs.storeLog(id, token: token, bytes: bytes) }
        return Reply.encoded(JobLogAnswer(digest: digest), status: 201)
    }

    func start(_ match: RouteMatch, _ request: Request) async throws -> Response {
        let jobs = try queue()
        let id = try Self.jobID(match)
        try await requireHolder(jobs, id)
        let body = try await self.body(request, as: JobStartRequest.self)
        let token = try Self.required(body.leaseToken, "lease_token")
        let key = try Self.required(body.key, "key")
        let decision = try await offload { try jobs.start(id, token: token, key: key) }
        switch decision {
        case .run: return Reply.encoded(JobStartAnswer(decision: .run))
        case .memoized(let d): return Reply.encoded(JobStartAnswer(decision: .memoized, output: d))
        }
    }

    func heartbeat(_ match: RouteMatch, _ request: Request) async throws -> Response {
        let jobs = try queue()
        let id = try Self.jobID(match)
        try await requireHolder(jobs, id)
        let body = try await self.body(request, as: JobHeartbeatRequest.self)
        let token = try Self.required(body.leaseToken, "lease_token")
        let job = try await offload { try jobs.heartbeat(id, token: token) }
        return Reply.encoded(try Self.info(job))
    }

    func complete(_ match: RouteMatch, _ request: Request) async throws -> Response {
        let jobs = try queue()
        let id = try Self.jobID(match)
        try await requireHolder(jobs, id)
        let body = try await self.body(request, as: JobCompleteRequest.self)
        let token = try Self.required(body.leaseToken, "lease_token")
        let output = try RequestParsing.digest(try Self.required(body.output, "output"))
        let trust = self.trust
        try await offload {
            // Signed before the job completes: the next stage (a canary's deploy policy) never
            // sees an unsigned output of a completed job. A completion refused after this leaves
            // a signature on an output the lease holder did push under the lease.
            let job = try jobs.completable(id, token: token, output: output)
            try trust.signJobOutput(job, output: output)
            try jobs.complete(id, token: token, output: output)
        }
        return Reply.encoded(try Self.info(try await offload { try jobs.job(id) }))
    }

    func fail(_ match: RouteMatch, _ request: Request) async throws -> Response {
        let jobs = try queue()
        let id = try Self.jobID(match)
        try await requireHolder(jobs, id)
        let body = try await self.body(request, as: JobFailRequest.self)
        let token = try Self.required(body.leaseToken, "lease_token")
        let reason = try Self.required(body.reason, "reason")
        let permanent = body.permanent ?? false
        let job = try await offload { try jobs.fail(id, token: token, reason: reason, permanent: permanent) }
        return Reply.encoded(try Self.info(job))
    }

    func cancel(_ match: RouteMatch, _ request: Request) async throws -> Response {
        let jobs = try queue()
        let id = try Self.jobID(match)
        let actor = Self.actor(request)
        let deployments = self.deployments
        let job = try await offload { try deployments.cancelJob(id, actor: actor, in: jobs) }
        return Reply.encoded(try Self.info(job))
    }

    func retry(_ match: RouteMatch, _ request: Request) async throws -> Response {
        let jobs = try queue()
        let id = try Self.jobID(match)
        let actor = Self.actor(request)
        let job = try await offload { try jobs.retry(id, actor: actor) }
        return Reply.encoded(try Self.info(job))
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
        let body: JobCallbackRequest
        do { body = try WireJSON.decode(JobCallbackRequest.self, from: bytes, what: "callback body") } catch let error as DocumentError {
            throw RegistryError(
                .invalidRequest, "body must be {\"job\", \"attempt\", \"status\": \"succeeded\"|\"failed\", ...} (\(error.message))")
        }
        // The signed body names the job and attempt: a callback cannot be replayed onto another
        // job of the stage, nor a late one onto a later attempt.
        guard body.job == id, body.attempt == job.attempt else {
            throw RegistryError(
                .conflict, "the callback must name this job (\"job\": \(id)) and its current attempt (\"attempt\": \(job.attempt))")
        }
        let updated: JobRecord
        switch body.status {
        case .succeeded:
            let output = try body.output.map(RequestParsing.digest)
            let trust = self.trust
            updated = try await offload {
                if let output, job.state == .running, try jobs.outputExists(job, output) { try trust.signJobOutput(job, output: output) }
                return try jobs.completeServerJob(id, output: output)
            }
        case .failed:
            let reason = body.reason ?? "the webhook reported a failure"
            let permanent = body.permanent ?? false
            updated = try await offload { try jobs.failServerJob(id, reason: "the webhook reported: \(reason)", permanent: permanent) }
        }
        return Reply.encoded(try Self.info(updated))
    }

    /// A job as the API shows it; the lease token only in a lease answer.
    static func info(_ job: JobRecord, withToken: Bool = false) throws -> JobInfo {
        let now = Int64(Date().timeIntervalSince1970 * 1000)
        return JobInfo(
            id: job.id, run: job.runID, pipeline: job.pipeline, stage: job.stage, kind: job.kind, state: job.state,
            attempt: job.attempt, maxAttempts: job.maxAttempts, labels: job.labels, memoized: job.memoized,
            timeoutSeconds: job.timeoutMs / 1000, createdAt: iso(job.createdAt), updatedAt: iso(job.updatedAt),
            input: JobInput(repository: job.inputRepository, digest: try Digest(parsing: job.inputDigest), tag: job.inputTag),
            output: JobOutput(tag: job.outputTag, digest: try job.outputDigest.map { try Digest(parsing: $0) }),
            // The stage definition is stored as the JSON the pipeline loader wrote; shown as it is.
            spec: try? WireJSON.decode(JSONValue.self, from: Array(job.spec.utf8), what: "job spec"),
            runner: job.runner, key: job.key, reason: job.reason, log: try job.logDigest.map { try Digest(parsing: $0) },
            startedAt: job.startedAt.map(iso), finishedAt: job.finishedAt.map(iso),
            notBefore: job.state == .queued && job.notBefore > now ? iso(job.notBefore) : nil,
            leaseExpires: job.leaseExpires.map(iso), leaseToken: withToken ? job.leaseToken : nil)
    }

    static func info(_ p: Pipeline) -> PipelineInfo {
        PipelineInfo(
            name: p.name, file: p.file,
            trigger: PipelineTriggerInfo(
                repositories: p.trigger.repositories, tags: p.trigger.tags, artifactTypes: p.trigger.artifactTypes),
            stages: p.stages.map { s in
                PipelineStageInfo(
                    name: s.name, kind: s.kindName, needs: s.needs, labels: s.labels, timeoutSeconds: s.timeoutSeconds,
                    retries: s.retries, tag: s.tag)
            })
    }
}

/// The job queue is what `Deployments.cancelJob` cancels jobs with (the server is the layer that
/// sees both `DepotPipelines` and `DepotDeploy`).
extension JobQueue: JobCancelling {}
