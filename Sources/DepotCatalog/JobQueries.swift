import DepotAPI
import DepotCore
import Foundation

/// One job of the durable queue: a pipeline stage applied to one input artifact.
public struct JobRecord: Sendable, Equatable {
    public var id: Int64
    public var runID: Int64
    public var pipeline: String
    public var stage: String
    /// exec or builtin (run by runners), webhook or canary (run by the server).
    public var kind: String
    /// The stage definition as JSON, what a runner executes.
    public var spec: String
    public var state: JobState
    public var inputRepository: String
    public var inputDigest: String
    public var inputTag: String?
    public var outputTag: String?
    public var labels: [String]
    public var attempt: Int
    public var maxAttempts: Int
    public var timeoutMs: Int64
    public var notBefore: Int64
    public var runner: String?
    public var leaseToken: String?
    public var leaseExpires: Int64?
    public var key: String?
    public var outputDigest: String?
    public var memoized: Bool
    public var logDigest: String?
    public var reason: String?
    public var createdAt: Int64
    public var updatedAt: Int64
    public var startedAt: Int64?
    public var finishedAt: Int64?

    /// A job in a final state never changes again.
    public var isFinal: Bool { state.isFinal }
}

/// A new job to queue.
public struct NewJob: Sendable {
    public var stage: String
    public var kind: String
    public var spec: String
    public var inputRepository: String
    public var inputDigest: String
    public var inputTag: String?
    public var outputTag: String?
    public var labels: [String]
    public var maxAttempts: Int
    public var timeoutMs: Int64

    public init(
        stage: String, kind: String, spec: String, inputRepository: String, inputDigest: String, inputTag: String?,
        outputTag: String?, labels: [String], maxAttempts: Int, timeoutMs: Int64
    ) {
        self.stage = stage
        self.kind = kind
        self.spec = spec
        self.inputRepository = inputRepository
        self.inputDigest = inputDigest
        self.inputTag = inputTag
        self.outputTag = outputTag
        self.labels = labels
        self.maxAttempts = maxAttempts
        self.timeoutMs = timeoutMs
    }
}

/// A pipeline run: one pipeline started by one pushed digest.
public struct PipelineRunRecord: Sendable, Equatable {
    public var id: Int64
    public var pipeline: String
    public var repository: String
    public var triggerDigest: String
    public var triggerTag: String?
    public var createdAt: Int64
}

/// The job queue's SQL. State transitions are single statements guarded by the expected
/// states (and lease token), so two runners or a runner and the expiry sweep never both win;
/// each returns whether it applied.
extension CatalogConnection {
    static var jobColumns: String {
        """
        id, run_id, pipeline, stage, kind, spec, state, input_repository, input_digest, input_tag, output_tag, labels,
        attempt, max_attempts, timeout_ms, not_before, runner, lease_token, lease_expires, job_key, output_digest,
        memoized, log_digest, reason, created_at, updated_at, started_at, finished_at
        """
    }

    static func job(_ s: any ResultRow) throws -> JobRecord {
        let r = s.row
        let labels = r.text("labels")
        return JobRecord(
            id: r.int("id"), runID: r.int("run_id"), pipeline: r.text("pipeline"), stage: r.text("stage"), kind: r.text("kind"),
            spec: r.text("spec"), state: try r.value("state"), inputRepository: r.text("input_repository"),
            inputDigest: r.digestText("input_digest"), inputTag: r.optionalText("input_tag"), outputTag: r.optionalText("output_tag"),
            labels: labels.isEmpty ? [] : labels.split(separator: ",").map(String.init),
            attempt: Int(r.int("attempt")), maxAttempts: Int(r.int("max_attempts")), timeoutMs: r.int("timeout_ms"),
            notBefore: r.int("not_before"), runner: r.optionalText("runner"), leaseToken: r.optionalText("lease_token"),
            leaseExpires: r.optionalInt("lease_expires"), key: r.optionalText("job_key"),
            outputDigest: r.optionalDigestText("output_digest"),
            memoized: r.bool("memoized"), logDigest: r.optionalDigestText("log_digest"), reason: r.optionalText("reason"),
            createdAt: r.int("created_at"), updatedAt: r.int("updated_at"), startedAt: r.optionalInt("started_at"),
            finishedAt: r.optionalInt("finished_at"))
    }

    /// `'leased','running'`: an SQL list of states, from the enum's raw values only.
    static func sqlList<T: RawRepresentable>(_ states: [T]) -> String where T.RawValue == String {
        states.map { "'\($0.rawValue)'" }.joined(separator: ",")
    }

    /// Creates the run unless one exists for (pipeline, repository, digest); nil when it existed.
    public func createPipelineRun(
        pipeline: String, repository: String, digest: String, tag: String?, eventID: Int64?,
        now: Int64
    ) throws -> Int64? {
        try first(
            """
            INSERT INTO pipeline_runs(pipeline, repository, trigger_digest, trigger_tag, event_id, created_at)
            VALUES(?,?,?,?,?,?) ON CONFLICT DO NOTHING RETURNING id
            """, .text(pipeline), .text(repository), .digest(digest), .optionalText(tag), .optionalInt(eventID), .int(now)
        ) { $0.int(0) }
    }

    public func pipelineRun(_ id: Int64) throws -> PipelineRunRecord? {
        try first("SELECT id, pipeline, repository, trigger_digest, trigger_tag, created_at FROM pipeline_runs WHERE id = ?", .int(id)) {
            s in
            let r = s.row
            return PipelineRunRecord(
                id: r.int("id"), pipeline: r.text("pipeline"), repository: r.text("repository"),
                triggerDigest: r.digestText("trigger_digest"),
                triggerTag: r.optionalText("trigger_tag"), createdAt: r.int("created_at"))
        }
    }

    /// Queues a job of a run unless the run already has one for that stage; returns its id, or nil.
    @discardableResult
    public func enqueueJob(runID: Int64, pipeline: String, _ job: NewJob, now: Int64) throws -> Int64? {
        try first(
            """
            INSERT INTO jobs(run_id, pipeline, stage, kind, spec, state, input_repository, input_digest, input_tag, output_tag,
                             labels, max_attempts, timeout_ms, created_at, updated_at)
            VALUES(?,?,?,?,?,?,?,?,?,?,?,?,?,?,?) ON CONFLICT DO NOTHING RETURNING id
            """, .int(runID), .text(pipeline), .text(job.stage), .text(job.kind), .text(job.spec), .state(JobState.queued),
            .text(job.inputRepository), .digest(job.inputDigest), .optionalText(job.inputTag), .optionalText(job.outputTag),
            .text(job.labels.joined(separator: ",")), .int(Int64(job.maxAttempts)), .int(job.timeoutMs), .int(now), .int(now)
        ) { $0.int(0) }
    }

    public func job(_ id: Int64) throws -> JobRecord? {
        try first("SELECT \(Self.jobColumns) FROM jobs WHERE id = ?", .int(id)) { try Self.job($0) }
    }

    public func jobs(ofRun runID: Int64) throws -> [JobRecord] {
        var out: [JobRecord] = []
        try query("SELECT \(Self.jobColumns) FROM jobs WHERE run_id = ? ORDER BY id", .int(runID)) { out.append(try Self.job($0)) }
        return out
    }

    /// Jobs, newest first, optionally filtered.
    public func jobs(state: JobState?, pipeline: String?, limit: Int) throws -> [JobRecord] {
        var sql = "SELECT \(Self.jobColumns) FROM jobs"
        var conditions: [String] = []
        var args: [SQLValue] = []
        if let state {
            conditions.append("state = ?")
            args.append(.state(state))
        }
        if let pipeline {
            conditions.append("pipeline = ?")
            args.append(.text(pipeline))
        }
        if !conditions.isEmpty { sql += " WHERE " + conditions.joined(separator: " AND ") }
        sql += " ORDER BY id DESC LIMIT ?"
        args.append(.int(Int64(limit)))
        var out: [JobRecord] = []
        try queryArgs(sql, args) { out.append(try Self.job($0)) }
        return out
    }

    /// Queued jobs of these kinds that may be leased now, oldest first, after job id `after`
    /// (paging). Not locked: the leaser takes the one it chooses with `claimQueuedJob`.
    public func leasableJobs(kinds: [String], now: Int64, after: Int64 = 0, limit: Int) throws -> [JobRecord] {
        var out: [JobRecord] = []
        let list = kinds.map { "'\($0.filter { $0.isLetter })'" }.joined(separator: ",")
        try query(
            """
            SELECT \(Self.jobColumns) FROM jobs WHERE state = ? AND kind IN (\(list)) AND not_before <= ? AND id > ? ORDER BY id LIMIT ?
            """, .state(JobState.queued), .int(now), .int(after), .int(Int64(limit))
        ) { out.append(try Self.job($0)) }
        return out
    }

    /// Whether job `id` is still queued and this transaction now holds it. On PostgreSQL the
    /// row is locked `FOR UPDATE SKIP LOCKED`: a job another replica is leasing right now is
    /// skipped at once (false), instead of waiting for that transaction and then finding the job
    /// leased. One row, the chosen one: locking a whole page of candidates would hide every job
    /// of the page from the other replicas' runners for as long as this lease takes.
    /// (SQLite has one writer: the row only has to be still queued.)
    /// `now`: the job must still be due (a retry requeued meanwhile waits out its backoff).
    public func claimQueuedJob(_ id: Int64, now: Int64) throws -> Bool {
        let skipLocked = dialect == .postgres ? " FOR UPDATE SKIP LOCKED" : ""
        return try first(
            "SELECT 1 FROM jobs WHERE id = ? AND state = ? AND not_before <= ?\(skipLocked)", .int(id), .state(JobState.queued), .int(now)
        ) { _ in true } ?? false
    }

    /// Running jobs of one kind.
    public func runningJobs(kind: String) throws -> [JobRecord] {
        var out: [JobRecord] = []
        try query("SELECT \(Self.jobColumns) FROM jobs WHERE state = ? AND kind = ? ORDER BY id", .state(JobState.running), .text(kind)) {
            out.append(try Self.job($0))
        }
        return out
    }

    // MARK: transitions (each one guarded UPDATE; true when it applied)

    /// queued → leased, if still queued. Counts an attempt.
    public func leaseJob(_ id: Int64, runner: String, token: String, expires: Int64, now: Int64) throws -> Bool {
        try run(
            """
            UPDATE jobs SET state = 'leased', runner = ?, lease_token = ?, lease_expires = ?, attempt = attempt + 1,
                            reason = NULL, updated_at = ? WHERE id = ? AND state = 'queued'
            """, .text(runner), .text(token), .int(expires), .int(now), .int(id))
        return changes > 0
    }

    /// leased → running for the holder of `token`, recording the memoization key; `leaseExpires`
    /// renews the lease (nil keeps it).
    public func startJob(_ id: Int64, token: String, key: String, leaseExpires: Int64?, now: Int64) throws -> Bool {
        try run(
            """
            UPDATE jobs SET state = 'running', job_key = ?, started_at = ?, lease_expires = COALESCE(?, lease_expires), updated_at = ?
            WHERE id = ? AND lease_token = ? AND state = 'leased'
            """, .text(key), .int(now), .optionalInt(leaseExpires), .int(now), .int(id), .text(token))
        return changes > 0
    }

    /// leased → succeeded without running: an artifact with the job's key exists (`output`).
    public func completeMemoizedJob(_ id: Int64, token: String, key: String, output: String, now: Int64) throws -> Bool {
        try run(
            """
            UPDATE jobs SET state = 'succeeded', job_key = ?, output_digest = ?, memoized = 1, lease_token = NULL, lease_expires = NULL,
                            started_at = ?, finished_at = ?, updated_at = ?
            WHERE id = ? AND lease_token = ? AND state = 'leased'
            """, .text(key), .digest(output), .int(now), .int(now), .int(now), .int(id), .text(token))
        return changes > 0
    }

    /// running → succeeded with `output` (nil: the stage has none). `token` nil: any holder (the
    /// server's own stages, completed by a callback).
    public func completeJob(_ id: Int64, token: String?, output: String?, now: Int64) throws -> Bool {
        try run(
            """
            UPDATE jobs SET state = 'succeeded', output_digest = ?, lease_token = NULL, lease_expires = NULL, finished_at = ?, updated_at = ?
            WHERE id = ? AND state = 'running' AND (CAST(? AS TEXT) IS NULL OR lease_token = ?)
            """, .optionalDigest(output), .int(now), .int(now), .int(id), .optionalText(token), .optionalText(token))
        return changes > 0
    }

    /// Renews the lease of a leased or running job held by `token`.
    public func renewJobLease(_ id: Int64, token: String, expires: Int64, now: Int64) throws -> Bool {
        try run(
            "UPDATE jobs SET lease_expires = ?, updated_at = ? WHERE id = ? AND lease_token = ? AND state IN ('leased', 'running')",
            .int(expires), .int(now), .int(id), .text(token))
        return changes > 0
    }

    /// leased | running → queued, to be leased again from `notBefore` (a failed attempt, a lost lease).
    public func requeueJob(_ id: Int64, reason: String, notBefore: Int64, now: Int64) throws -> Bool {
        try run(
            """
            UPDATE jobs SET state = 'queued', reason = ?, not_before = ?, runner = NULL, lease_token = NULL, lease_expires = NULL,
                            updated_at = ?
            WHERE id = ? AND state IN ('leased', 'running')
            """, .text(reason), .int(notBefore), .int(now), .int(id))
        return changes > 0
    }

    /// leased | running → failed, for good.
    public func failJob(_ id: Int64, reason: String, now: Int64) throws -> Bool {
        try run(
            """
            UPDATE jobs SET state = 'failed', reason = ?, lease_token = NULL, lease_expires = NULL, finished_at = ?, updated_at = ?
            WHERE id = ? AND state IN ('leased', 'running')
            """, .text(reason), .int(now), .int(now), .int(id))
        return changes > 0
    }

    /// queued → failed, for good: a job refused before any runner received it (the pickle gate).
    public func failQueuedJob(_ id: Int64, reason: String, now: Int64) throws -> Bool {
        try run(
            """
            UPDATE jobs SET state = 'failed', reason = ?, finished_at = ?, updated_at = ? WHERE id = ? AND state = 'queued'
            """, .text(reason), .int(now), .int(now), .int(id))
        return changes > 0
    }

    /// A queued job's spec, replaced (the server adds a parameter it decides, such as `trust_pickle`).
    public func setQueuedJobSpec(_ id: Int64, spec: String, now: Int64) throws -> Bool {
        try run("UPDATE jobs SET spec = ?, updated_at = ? WHERE id = ? AND state = 'queued'", .text(spec), .int(now), .int(id))
        return changes > 0
    }

    /// queued | leased | running → cancelled. The lease token stays, so the runner holding it
    /// learns of the cancellation at its next heartbeat and may still store its log.
    public func cancelJob(_ id: Int64, reason: String, now: Int64) throws -> Bool {
        try run(
            """
            UPDATE jobs SET state = 'cancelled', reason = ?, finished_at = ?, updated_at = ?
            WHERE id = ? AND state IN ('queued', 'leased', 'running')
            """, .text(reason), .int(now), .int(now), .int(id))
        return changes > 0
    }

    /// failed | cancelled → queued, with its attempts and key reset.
    public func retryJob(_ id: Int64, now: Int64) throws -> Bool {
        try run(
            """
            UPDATE jobs SET state = 'queued', attempt = 0, not_before = 0, reason = NULL, runner = NULL, lease_token = NULL,
                            lease_expires = NULL, job_key = NULL, finished_at = NULL, started_at = NULL, updated_at = ?
            WHERE id = ? AND state IN ('failed', 'cancelled')
            """, .int(now), .int(id))
        return changes > 0
    }

    /// Leased or running jobs whose lease expired.
    public func expiredLeases(now: Int64) throws -> [JobRecord] {
        var out: [JobRecord] = []
        try query("SELECT \(Self.jobColumns) FROM jobs WHERE state IN ('leased', 'running') AND lease_expires < ?", .int(now)) {
            out.append(try Self.job($0))
        }
        return out
    }

    /// The artifact a memoization key produced, if any.
    public func jobOutput(key: String) throws -> (repository: String, digest: String)? {
        try first("SELECT repository, digest FROM job_outputs WHERE job_key = ?", .text(key)) {
            ($0.row.text("repository"), $0.row.digestText("digest"))
        }
    }

    /// Whether a pipeline job produced this manifest.
    public func isJobOutput(_ digest: String) throws -> Bool {
        try first("SELECT 1 FROM job_outputs WHERE digest = ? LIMIT 1", .digest(digest)) { _ in true } ?? false
    }

    /// Records the artifact a key produced. A key keeps its first artifact while that manifest
    /// exists (a late duplicate does not replace it); a key whose artifact was deleted takes the new one.
    public func recordJobOutput(key: String, repository: String, digest: String, now: Int64) throws {
        try run(
            """
            INSERT INTO job_outputs(job_key, repository, digest, created_at) VALUES(?,?,?,?)
            ON CONFLICT(job_key) DO UPDATE SET repository = excluded.repository, digest = excluded.digest, created_at = excluded.created_at
            WHERE NOT EXISTS (SELECT 1 FROM manifests m JOIN repositories r ON r.id = m.repo_id
                              WHERE r.name = job_outputs.repository AND m.digest = job_outputs.digest)
            """, .text(key), .text(repository), .digest(digest), .int(now))
    }

    /// Records `digest` as job `id`'s log (if it is still leased with `token`) and makes it a GC
    /// root, in one transaction with releasing the log it replaces: the old blob loses its
    /// `job-log` root unless another job still names it. Returns false if the lease was lost.
    public func replaceJobLog(_ id: Int64, token: String, digest: Digest, now: Int64) throws -> Bool {
        // Two jobs whose logs are the same bytes, stored on two replicas at once: without the
        // lock, one could drop the root the other just relied on (its insert found it present).
        try lock(.jobLogs)
        let old = try first("SELECT log_digest FROM jobs WHERE id = ? AND lease_token = ?", .int(id), .text(token)) {
            $0.row.optionalDigestText("log_digest")
        }
        guard let old else { return false }
        try run(
            "UPDATE jobs SET log_digest = ?, updated_at = ? WHERE id = ? AND lease_token = ?",
            .hash(digest.bytes), .int(now), .int(id), .text(token))
        try addRoot(digest, reason: "job-log", now: now)
        if let old, old != digest.description,
            try first("SELECT 1 FROM jobs WHERE log_digest = ? LIMIT 1", .digest(old), map: { _ in true }) == nil,
            let d = try? Digest(parsing: old)
        {
            try run("DELETE FROM blob_roots WHERE digest = ? AND reason = 'job-log'", .hash(d.bytes))
        }
        return true
    }

    /// Forgets the logs of jobs that finished before `before` (a log shared by a newer job stays):
    /// the job rows lose their log, the blobs their `job-log` root; GC reclaims them. Returns how many.
    public func expireJobLogs(finishedBefore before: Int64) throws -> Int {
        try lock(.jobLogs)
        var digests: [String] = []
        try query(
            """
            SELECT log_digest FROM jobs WHERE log_digest IS NOT NULL GROUP BY log_digest
            HAVING MAX(COALESCE(finished_at, 9223372036854775807)) < ?
            """, .int(before)
        ) { digests.append($0.row.digestText("log_digest")) }
        for text in digests {
            try run("UPDATE jobs SET log_digest = NULL WHERE log_digest = ?", .digest(text))
            if let d = try? Digest(parsing: text) {
                try run("DELETE FROM blob_roots WHERE digest = ? AND reason = 'job-log'", .hash(d.bytes))
            }
        }
        return digests.count
    }

    /// Counts of jobs by state.
    public func jobCounts() throws -> [JobState: Int] {
        var out: [JobState: Int] = [:]
        try query("SELECT state, COUNT(*) AS n FROM jobs GROUP BY state") { out[try $0.row.value("state")] = Int($0.row.int("n")) }
        return out
    }
}
