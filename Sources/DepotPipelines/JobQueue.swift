import DepotAPI
import DepotCatalog
import DepotCore
import DepotRegistry
import DepotStore
import Foundation

/// The durable job queue: turns pushes into pipeline runs and jobs, hands jobs to runners under
/// leases, and records what they did. All state is in the catalog; every transition is one
/// transaction guarded by the state it expects, so a crash at any point leaves each job in
/// exactly one state and a restart carries on (an expired lease sends the job back to the queue).
public final class JobQueue: Sendable {
    public struct Options: Sendable {
        /// A lease not renewed for this long returns the job to the queue.
        public var leaseSeconds = 30.0
        /// First retry delay; each further attempt doubles it, up to `maxBackoffSeconds`.
        public var retryBaseSeconds = 5.0
        public var maxBackoffSeconds = 600.0
        /// Logs of jobs finished longer ago than this are released to GC (0: kept forever).
        public var logRetentionSeconds = 30.0 * 86400
        /// Repositories (globs, as in triggers) whose pickles the operator trusts: their inputs reach
        /// stages whatever their pickles import (`pipelines.trust_pickle`; audited). See `PickleGate`.
        public var trustPickle: [String] = []
        public init() {}
    }

    /// What `start` decided.
    public enum StartDecision: Sendable, Equatable {
        /// Run the stage.
        case run
        /// An artifact with this key exists: the job succeeded without running.
        case memoized(Digest)
    }

    public let registry: Registry
    public let pipelines: [Pipeline]
    public let options: Options
    static let cursorName = "pipelines"
    var db: Database { registry.store.catalog }

    public init(registry: Registry, pipelines: [Pipeline], options: Options = Options()) {
        self.registry = registry
        self.pipelines = pipelines
        self.options = options
    }

    static func now() -> Int64 { Int64(Date().timeIntervalSince1970 * 1000) }

    func pipeline(_ name: String) -> Pipeline? { pipelines.first { $0.name == name } }

    // MARK: scheduling

    /// Reads the events written since the last call and starts the pipelines whose trigger
    /// matches a tag move. The cursor advances in the transaction that creates the jobs: an
    /// event is acted on exactly once, and a replay (or a second tag on the same digest) finds
    /// the run already there. Returns the number of jobs queued.
    @discardableResult
    public func schedule(batch: Int = 256) throws -> Int {
        guard !pipelines.isEmpty else { return 0 }
        return try db.write { conn in
            let cursor: Int64
            if let c = try conn.webhookCursor(Self.cursorName) {
                cursor = c
            } else {
                // First start with pipelines: act on what is pushed from now on.
                let start = try conn.lastEventID()
                try conn.setWebhookCursor(Self.cursorName, start)
                return 0
            }
            let events = try conn.events(after: cursor, limit: batch)
            var queued = 0
            for event in events where event.type == "tag.moved" {
                queued += try trigger(conn, event)
            }
            if let last = events.last { try conn.setWebhookCursor(Self.cursorName, last.id) }
            return queued
        }
    }

    private func trigger(_ conn: any CatalogConnection, _ event: EventRecord) throws -> Int {
        guard let data = event.payload.data(using: .utf8),
            let payload = try? JSONDecoder().decode(JSONValue.self, from: data),
            let repository = event.repository, let tag = payload["tag"]?.string,
            let digestText = payload["digest"]?.string, let digest = try? Digest(parsing: digestText)
        else { return 0 }
        guard let repo = try conn.repositoryID(repository), let manifest = try conn.manifest(repo: repo, digest) else { return 0 }
        // A pipeline's own output never starts pipelines (no loops through `{{tag}}-onnx` matching
        // `v*`): anything pushed with a job key, recorded or a late duplicate.
        if try conn.isJobOutput(digest.description) || Self.carriesJobKey(manifest) { return 0 }
        var queued = 0
        for pipeline in pipelines where pipeline.trigger.matches(repository: repository, tag: tag, artifactType: manifest.artifactType) {
            guard
                let run = try conn.createPipelineRun(
                    pipeline: pipeline.name, repository: repository, digest: digest.description,
                    tag: tag, eventID: event.id, now: Self.now())
            else { continue }
            for stage in pipeline.roots {
                if let id = try conn.enqueueJob(
                    runID: run, pipeline: pipeline.name,
                    newJob(pipeline, stage, repository: repository, input: digest.description, triggerTag: tag),
                    now: Self.now()), let job = try conn.job(id), try applyPickleGate(conn, job)
                {
                    queued += 1
                }
            }
            try conn.appendAudit(
                at: Self.now(), actor: "depot", action: "pipeline.start", repository: repository,
                digest: digest.description, tag: tag, details: ["pipeline": .string(pipeline.name), "run": .int(run)])
        }
        return queued
    }

    static func carriesJobKey(_ m: ManifestRecord) -> Bool {
        guard let text = m.annotationsJSON, let a = try? JSONDecoder().decode(JSONValue.self, from: Data(text.utf8)) else {
            return false
        }
        return a[JobAnnotations.key] != nil
    }

    func newJob(_ pipeline: Pipeline, _ stage: Stage, repository: String, input: String, triggerTag: String?) -> NewJob {
        let name = repository.split(separator: "/").last.map(String.init) ?? repository
        let variables = [
            "tag": triggerTag ?? "untagged", "repository": repository, "name": name, "stage": stage.name,
            "pipeline": pipeline.name,
        ]
        let spec = stage.spec(pipeline: pipeline.name, variables: variables)
        let specJSON = (try? WireJSON.encode(spec)).map { String(decoding: $0, as: UTF8.self) } ?? "{}"
        return NewJob(
            stage: stage.name, kind: stage.kindName, spec: specJSON, inputRepository: repository, inputDigest: input, inputTag: triggerTag,
            outputTag: stage.tag.map { Template.render($0, variables) }, labels: stage.labels,
            maxAttempts: stage.retries + 1, timeoutMs: Int64(stage.timeoutSeconds) * 1000)
    }

    /// Queues the stages that were waiting for `job` and can now start.
    func queueDependents(_ conn: any CatalogConnection, of job: JobRecord, output: String) throws {
        guard let pipeline = pipeline(job.pipeline), let run = try conn.pipelineRun(job.runID) else { return }
        // Two stages a third one needs, completing at once on two replicas: each would read the
        // other as still running and neither would queue the third. Serialized, the second reads
        // the first as succeeded (PostgreSQL; SQLite has one writer).
        try conn.lock(.appends)
        let jobs = try conn.jobs(ofRun: job.runID)
        // A stage without an output (webhook, canary) passes its input on.
        let succeeded = Dictionary(
            jobs.filter { $0.state == .succeeded }.map { ($0.stage, $0.outputDigest ?? $0.inputDigest) },
            uniquingKeysWith: { a, _ in a })
        var outputs = succeeded
        outputs[job.stage] = output
        for stage in pipeline.dependents(of: job.stage) where stage.needs.allSatisfy({ outputs[$0] != nil }) {
            let input = stage.inputStage.flatMap { outputs[$0] } ?? run.triggerDigest
            if let id = try conn.enqueueJob(
                runID: job.runID, pipeline: pipeline.name,
                newJob(pipeline, stage, repository: run.repository, input: input, triggerTag: run.triggerTag),
                now: Self.now()), let queued = try conn.job(id)
            {
                _ = try applyPickleGate(conn, queued)
            }
        }
    }

    // MARK: leases

    /// Leases the oldest queued job this runner can take (all the stage's labels among
    /// `labels`, a kind it runs), or nil.
    /// `canTake` (authentication on) says whether the leasing runner may work on a job of that
    /// input repository: a runner token granted on some repositories never sees others' jobs.
    public func lease(
        runner: String, labels: Set<String>, kinds: Set<String> = ["exec", "builtin"], canTake: ((String) -> Bool)? = nil
    ) throws -> JobRecord? {
        try db.write { conn in
            let now = Self.now()
            // Page through the queue: older jobs nobody here can take must not hide newer ones.
            var after: Int64 = 0
            while true {
                let page = try conn.leasableJobs(kinds: kinds.sorted(), now: now, after: after, limit: 256)
                for job in page {
                    guard Set(job.labels).isSubset(of: labels), canTake?(job.inputRepository) ?? true else { continue }
                    // Checked again at every lease: a retried job, or a trust the operator withdrew.
                    guard try conn.claimQueuedJob(job.id, now: now), try applyPickleGate(conn, job) else { continue }
                    let token = UUID().uuidString
                    if try conn.leaseJob(job.id, runner: runner, token: token, expires: now + Int64(options.leaseSeconds * 1000), now: now)
                    {
                        return try conn.job(job.id)
                    }
                }
                guard let last = page.last, page.count == 256 else { return nil }
                after = last.id
            }
        }
    }

    func leased(_ conn: any CatalogConnection, _ id: Int64, token: String) throws -> JobRecord {
        guard let job = try conn.job(id) else { throw RegistryError(.jobUnknown, "no job \(id)") }
        guard job.leaseToken == token, job.state.isHeld else {
            throw RegistryError(
                .conflict, "job \(id) is \(job.state.rawValue) and no longer leased with this token (lease expired or job cancelled)")
        }
        return job
    }

    /// The runner is about to run the job; `key` is its memoization key. When an artifact with
    /// that key exists the job succeeds at once, pointing at it.
    public func start(_ id: Int64, token: String, key: String) throws -> StartDecision {
        guard key.hasPrefix("sha256:"), key.count == 71 else {
            throw RegistryError(.invalidRequest, "a job key is sha256:<64 hex>")
        }
        var tagToSet: (String, String, Digest)?
        let decision = try db.write { conn -> StartDecision in
            let job = try leased(conn, id, token: token)
            let now = Self.now()
            if let found = try conn.jobOutput(key: key), found.repository == job.inputRepository,
                let digest = try? Digest(parsing: found.digest), let repo = try conn.repositoryID(found.repository),
                try conn.manifestExists(repo: repo, digest)
            {
                _ = try conn.completeMemoizedJob(id, token: token, key: key, output: found.digest, now: now)
                try queueDependents(conn, of: job, output: found.digest)
                if let tag = job.outputTag { tagToSet = (job.inputRepository, tag, digest) }
                return .memoized(digest)
            }
            _ = try conn.startJob(id, token: token, key: key, leaseExpires: now + Int64(options.leaseSeconds * 1000), now: now)
            return .run
        }
        if let (repository, tag, digest) = tagToSet { applyOutputTag(repository, tag, digest, job: id) }
        return decision
    }

    /// Points the job's output tag at a memoized output (the runner tags what it pushes itself).
    func applyOutputTag(_ repository: String, _ tag: String, _ digest: Digest, job: Int64) {
        guard let name = try? RepositoryName(repository) else { return }
        _ = try? registry.setAlias(name, tag, to: digest, actor: "depot-pipelines", reason: "job \(job) (memoized)", action: "pipeline")
    }

    /// Renews the lease. Returns the job (a runner stops a job it finds `cancelled`); throws
    /// CONFLICT when the lease is gone.
    public func heartbeat(_ id: Int64, token: String) throws -> JobRecord {
        try db.write { conn in
            guard let job = try conn.job(id) else { throw RegistryError(.jobUnknown, "no job \(id)") }
            if job.state == .cancelled, job.leaseToken == token { return job }
            _ = try leased(conn, id, token: token)
            let now = Self.now()
            _ = try conn.renewJobLease(id, token: token, expires: now + Int64(options.leaseSeconds * 1000), now: now)
            return try conn.job(id)!
        }
    }

    /// Stores the job's log (bounded by the caller) as a blob and records its digest.
    /// A runner stopped by a cancellation may still store the log of what it did.
    public func storeLog(_ id: Int64, token: String, bytes: [UInt8]) throws -> Digest {
        try db.read { conn in
            guard let job = try conn.job(id) else { throw RegistryError(.jobUnknown, "no job \(id)") }
            guard job.leaseToken == token, job.state.isHeld || job.state == .cancelled else {
                throw RegistryError(.conflict, "job \(id) is \(job.state.rawValue) and no longer leased with this token")
            }
        }
        let writer = try registry.store.makeWriter()
        do {
            try writer.write(bytes)
            // No root yet: the fresh blob is kept by the GC grace period until the transaction
            // below roots it, records it and releases the log it replaces, all at once. (Rooting
            // in `finish` and releasing later left every replaced log rooted forever.)
            let result = try writer.finish()
            let recorded = try db.write { conn in
                try conn.replaceJobLog(id, token: token, digest: result.digest, now: Self.now())
            }
            guard recorded else { throw RegistryError(.conflict, "job \(id) is no longer leased with this token") }
            return result.digest
        } catch {
            writer.abort()
            throw error
        }
    }

    /// The job ran and pushed `output` (a manifest of the input's repository carrying the job's key).
    public func complete(_ id: Int64, token: String, output: Digest) throws {
        try db.write { conn in
            try conn.lock(.appends) // first: the order every writer takes it in (CatalogLock.appends)
            let job = try checkCompletion(conn, id, token: token, output: output)
            let now = Self.now()
            _ = try conn.completeJob(id, token: token, output: output.description, now: now)
            if let input = try? Digest(parsing: job.inputDigest) {
                try conn.markLineageVerified(child: output, parent: input, job: id)
                // Auditors see which edges the registry vouches for (the push entry of the output
                // lists what the pusher declared).
                try conn.appendAudit(
                    at: now, actor: "depot", action: "lineage.verified", repository: job.inputRepository, digest: output.description,
                    tag: nil,
                    details: [
                        "job": .int(id), "pipeline": .string(job.pipeline), "stage": .string(job.stage),
                        "input": .string(job.inputDigest), "runner": .string(job.runner ?? ""),
                    ])
            }
            try queueDependents(conn, of: job, output: output.description)
        }
    }

    /// The job the lease holder may complete with `output`, or why not, without completing it:
    /// the registry signs an output before it completes the job (so a next stage never sees an
    /// unsigned output of a completed job).
    public func completable(_ id: Int64, token: String, output: Digest) throws -> JobRecord {
        try db.read { conn in try checkCompletion(conn, id, token: token, output: output) }
    }

    func checkCompletion(_ conn: any CatalogConnection, _ id: Int64, token: String, output: Digest) throws -> JobRecord {
        let job = try leased(conn, id, token: token)
        guard job.state == .running, let key = job.key else { throw RegistryError(.conflict, "job \(id) was not started") }
        guard let repo = try conn.repositoryID(job.inputRepository), let manifest = try conn.manifest(repo: repo, output) else {
            throw RegistryError(.manifestUnknown, "output \(output) is not a manifest of \(job.inputRepository)")
        }
        guard try conn.jobOutput(key: key)?.digest == output.description else {
            throw RegistryError(
                .manifestInvalid,
                "output \(output) does not carry the job's key \(key) (annotation \(JobAnnotations.key)); artifactType \(manifest.artifactType ?? "none")"
            )
        }
        return job
    }

    /// The job failed. It is queued again after a backoff while attempts remain, unless
    /// `permanent` (the input can never work).
    public func fail(_ id: Int64, token: String, reason: String, permanent: Bool = false) throws -> JobRecord {
        try db.write { conn in
            try conn.lock(.appends) // first: the order every writer takes it in (CatalogLock.appends)
            let job = try leased(conn, id, token: token)
            try failLocked(conn, job, reason: reason, permanent: permanent)
            return try conn.job(id)!
        }
    }

    func failLocked(_ conn: any CatalogConnection, _ job: JobRecord, reason: String, permanent: Bool) throws {
        let now = Self.now()
        let text = String(reason.prefix(4000))
        if !permanent, job.attempt < job.maxAttempts {
            let delay = min(options.maxBackoffSeconds, options.retryBaseSeconds * pow(2, Double(max(0, job.attempt - 1))))
            _ = try conn.requeueJob(
                job.id, reason: "attempt \(job.attempt) failed: \(text)", notBefore: now + Int64(delay * 1000), now: now)
        } else {
            _ = try conn.failJob(job.id, reason: text, now: now)
            try conn.appendAudit(
                at: now, actor: "depot", action: "job.failed", repository: job.inputRepository, digest: job.inputDigest,
                tag: nil,
                details: [
                    "job": .int(job.id), "pipeline": .string(job.pipeline), "stage": .string(job.stage),
                    "reason": .string(String(text.prefix(500))),
                ])
        }
    }

    /// Returns jobs whose lease expired (runner gone, server restarted past the lease) to the
    /// queue, or fails them when no attempt is left.
    @discardableResult
    public func expireLeases() throws -> [JobRecord] {
        try db.write { conn in
            try conn.lock(.appends) // first: the order every writer takes it in (CatalogLock.appends)
            let expired = try conn.expiredLeases(now: Self.now())
            for job in expired {
                let why =
                    job.kind == "webhook"
                    ? "the webhook did not call back within the stage's timeout"
                    : job.kind == "canary"
                        ? "the rollout did not finish within the stage's timeout"
                        : "lease expired: runner \(job.runner ?? "?") stopped renewing it (killed, or lost its connection)"
                try failLocked(conn, job, reason: why, permanent: false)
            }
            return expired
        }
    }

    /// Releases the logs older than the retention to garbage collection; returns how many.
    @discardableResult
    public func expireLogs(now: Int64? = nil) throws -> Int {
        guard options.logRetentionSeconds > 0 else { return 0 }
        let cutoff = (now ?? Self.now()) - Int64(options.logRetentionSeconds * 1000)
        return try db.write { try $0.expireJobLogs(finishedBefore: cutoff) }
    }

    // MARK: operator commands

    /// Cancels a job that has not finished; a runner running it stops at its next heartbeat.
    public func cancel(_ id: Int64, actor: String) throws -> JobRecord {
        try db.write { conn in
            try conn.lock(.appends) // first: the order every writer takes it in (CatalogLock.appends)
            guard let job = try conn.job(id) else { throw RegistryError(.jobUnknown, "no job \(id)") }
            let now = Self.now()
            guard try conn.cancelJob(id, reason: "cancelled by \(actor)", now: now) else {
                throw RegistryError(.conflict, "job \(id) is \(job.state.rawValue): only queued, leased or running jobs can be cancelled")
            }
            try conn.appendAudit(
                at: now, actor: actor, action: "job.cancel", repository: job.inputRepository, digest: job.inputDigest,
                tag: nil, details: ["job": .int(id), "pipeline": .string(job.pipeline), "stage": .string(job.stage)])
            return try conn.job(id)!
        }
    }

    /// Queues a failed or cancelled job again, with its attempts reset.
    public func retry(_ id: Int64, actor: String) throws -> JobRecord {
        try db.write { conn in
            try conn.lock(.appends) // first: the order every writer takes it in (CatalogLock.appends)
            guard let job = try conn.job(id) else { throw RegistryError(.jobUnknown, "no job \(id)") }
            let now = Self.now()
            guard try conn.retryJob(id, now: now) else {
                throw RegistryError(.conflict, "job \(id) is \(job.state.rawValue): only failed or cancelled jobs can be retried")
            }
            try conn.appendAudit(
                at: now, actor: actor, action: "job.retry", repository: job.inputRepository, digest: job.inputDigest,
                tag: nil, details: ["job": .int(id), "pipeline": .string(job.pipeline), "stage": .string(job.stage)])
            return try conn.job(id)!
        }
    }

    public func job(_ id: Int64) throws -> JobRecord {
        guard let job = try db.read({ try $0.job(id) }) else { throw RegistryError(.jobUnknown, "no job \(id)") }
        return job
    }

    /// Jobs, newest first; `state` is a query parameter's text, parsed here (an unknown one is a 400).
    public func jobs(state: String?, pipeline: String?, limit: Int) throws -> [JobRecord] {
        var parsed: JobState?
        if let state {
            guard let s = JobState(rawValue: state) else {
                let known = JobState.allCases.map(\.rawValue).joined(separator: ", ")
                throw RegistryError(.invalidRequest, "unknown job state '\(state.prefix(40))' (\(known))")
            }
            parsed = s
        }
        return try db.read { try $0.jobs(state: parsed, pipeline: pipeline, limit: min(max(limit, 1), 10_000)) }
    }
}

// MARK: stages the server runs itself (webhook: POST out, signed callback in; canary: a rollout)

extension JobQueue {
    /// Leases a queued job of `kind` for the server; the lease lasts the stage's timeout.
    public func leaseServerJob(kind: String) throws -> JobRecord? {
        try db.write { conn in
            let now = Self.now()
            for job in try conn.leasableJobs(kinds: [kind], now: now, limit: 8) {
                guard try conn.claimQueuedJob(job.id, now: now), try applyPickleGate(conn, job) else { continue }
                let token = UUID().uuidString
                if try conn.leaseJob(job.id, runner: "depot-\(kind)", token: token, expires: now + job.timeoutMs, now: now) {
                    let key = Digest.of(Array("depot-job-key/1\n\(job.inputRepository)\n\(job.inputDigest)\n\(job.spec)\n\(kind)".utf8))
                        .description
                    _ = try conn.startJob(job.id, token: token, key: key, leaseExpires: nil, now: now)
                    return try conn.job(job.id)
                }
            }
            return nil
        }
    }

    /// Dispatching the job failed (the webhook's POST, the rollout's start): the retry policy applies unless `permanent`.
    public func serverJobDispatchFailed(_ job: JobRecord, reason: String, permanent: Bool = false) throws {
        try db.write { conn in
            guard let current = try conn.job(job.id), current.state == .running, current.leaseToken == job.leaseToken else { return }
            try failLocked(conn, current, reason: reason, permanent: permanent)
        }
    }

    /// Running jobs of `kind` (the server checks on them).
    public func runningServerJobs(kind: String) throws -> [JobRecord] {
        try db.read { try $0.runningJobs(kind: kind) }
    }

    /// A server-run stage succeeded (a signed webhook callback, a promoted rollout); `output`,
    /// when given, is a manifest of the input's repository.
    /// Whether `output` is a manifest of the job's input repository (a webhook stage's output
    /// is signed only then).
    public func outputExists(_ job: JobRecord, _ output: Digest) throws -> Bool {
        try db.read { conn in
            guard let repo = try conn.repositoryID(job.inputRepository) else { return false }
            return try conn.manifestExists(repo: repo, output)
        }
    }

    public func completeServerJob(_ id: Int64, output: Digest?) throws -> JobRecord {
        try db.write { conn in
            try conn.lock(.appends) // first: the order every writer takes it in (CatalogLock.appends)
            guard let job = try conn.job(id) else { throw RegistryError(.jobUnknown, "no job \(id)") }
            guard job.state == .running, ["webhook", "canary"].contains(job.kind) else {
                throw RegistryError(.conflict, "job \(id) is \(job.state.rawValue): it is not waiting for a callback")
            }
            if let output {
                guard let repo = try conn.repositoryID(job.inputRepository), try conn.manifestExists(repo: repo, output) else {
                    throw RegistryError(.manifestUnknown, "output \(output) is not a manifest of \(job.inputRepository)")
                }
                if let key = job.key {
                    try conn.recordJobOutput(key: key, repository: job.inputRepository, digest: output.description, now: Self.now())
                }
            }
            let now = Self.now()
            _ = try conn.completeJob(id, token: nil, output: output?.description, now: now)
            // Without an output, the next stages work on this stage's input.
            try queueDependents(conn, of: job, output: output?.description ?? job.inputDigest)
            return try conn.job(id)!
        }
    }

    /// A server-run stage failed (a signed webhook callback, a rolled-back rollout).
    public func failServerJob(_ id: Int64, reason: String, permanent: Bool) throws -> JobRecord {
        try db.write { conn in
            try conn.lock(.appends) // first: the order every writer takes it in (CatalogLock.appends)
            guard let job = try conn.job(id) else { throw RegistryError(.jobUnknown, "no job \(id)") }
            guard job.state == .running, ["webhook", "canary"].contains(job.kind) else {
                throw RegistryError(.conflict, "job \(id) is \(job.state.rawValue): it is not waiting for a callback")
            }
            try failLocked(conn, job, reason: reason, permanent: permanent)
            return try conn.job(id)!
        }
    }
}
