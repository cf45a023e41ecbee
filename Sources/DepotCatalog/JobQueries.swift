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
    public var state: String
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

    /// States a job never leaves on its own.
    public static let finalStates: Set<String> = ["succeeded", "failed", "cancelled"]
    public var isFinal: Bool { Self.finalStates.contains(state) }
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
/// state (and lease token), so two runners or a runner and the expiry sweep never both win.
extension SQLiteConnection {
    static let jobColumns = """
        id, run_id, pipeline, stage, kind, spec, state, input_repository, input_digest, input_tag, output_tag, labels,
        attempt, max_attempts, timeout_ms, not_before, runner, lease_token, lease_expires, job_key, output_digest,
        memoized, log_digest, reason, created_at, updated_at, started_at, finished_at
        """

    static func job(_ s: Statement) -> JobRecord {
        func opt(_ i: Int32) -> String? { s.isNull(i) ? nil : s.text(i) }
        func optInt(_ i: Int32) -> Int64? { s.isNull(i) ? nil : s.int(i) }
        let labels = s.text(11)
        return JobRecord(
            id: s.int(0), runID: s.int(1), pipeline: s.text(2), stage: s.text(3), kind: s.text(4), spec: s.text(5), state: s.text(6),
            inputRepository: s.text(7), inputDigest: s.text(8), inputTag: opt(9), outputTag: opt(10),
            labels: labels.isEmpty ? [] : labels.split(separator: ",").map(String.init),
            attempt: Int(s.int(12)), maxAttempts: Int(s.int(13)), timeoutMs: s.int(14), notBefore: s.int(15),
            runner: opt(16), leaseToken: opt(17), leaseExpires: optInt(18), key: opt(19), outputDigest: opt(20),
            memoized: s.int(21) != 0, logDigest: opt(22), reason: opt(23), createdAt: s.int(24), updatedAt: s.int(25),
            startedAt: optInt(26), finishedAt: optInt(27))
    }

    /// Creates the run unless one exists for (pipeline, repository, digest); nil when it existed.
    public func createPipelineRun(
        pipeline: String, repository: String, digest: String, tag: String?, eventID: Int64?,
        now: Int64
    ) throws -> Int64? {
        try run(
            """
            INSERT OR IGNORE INTO pipeline_runs(pipeline, repository, trigger_digest, trigger_tag, event_id, created_at)
            VALUES(?,?,?,?,?,?)
            """, .text(pipeline), .text(repository), .text(digest), tag.map(SQLValue.text) ?? .null,
            eventID.map(SQLValue.int) ?? .null, .int(now))
        guard changes > 0 else { return nil }
        return lastInsertRowID
    }

    public func pipelineRun(_ id: Int64) throws -> PipelineRunRecord? {
        try first("SELECT id, pipeline, repository, trigger_digest, trigger_tag, created_at FROM pipeline_runs WHERE id = ?", .int(id)) {
            s in
            PipelineRunRecord(
                id: s.int(0), pipeline: s.text(1), repository: s.text(2), triggerDigest: s.text(3),
                triggerTag: s.isNull(4) ? nil : s.text(4), createdAt: s.int(5))
        }
    }

    /// Queues a job of a run unless the run already has one for that stage; returns its id, or nil.
    @discardableResult
    public func enqueueJob(runID: Int64, pipeline: String, _ job: NewJob, now: Int64) throws -> Int64? {
        try run(
            """
            INSERT OR IGNORE INTO jobs(run_id, pipeline, stage, kind, spec, state, input_repository, input_digest, input_tag, output_tag,
                                       labels, max_attempts, timeout_ms, created_at, updated_at)
            VALUES(?,?,?,?,?,'queued',?,?,?,?,?,?,?,?,?)
            """, .int(runID), .text(pipeline), .text(job.stage), .text(job.kind), .text(job.spec), .text(job.inputRepository),
            .text(job.inputDigest),
            job.inputTag.map(SQLValue.text) ?? .null, job.outputTag.map(SQLValue.text) ?? .null,
            .text(job.labels.joined(separator: ",")), .int(Int64(job.maxAttempts)), .int(job.timeoutMs), .int(now), .int(now))
        guard changes > 0 else { return nil }
        return lastInsertRowID
    }

    public func job(_ id: Int64) throws -> JobRecord? {
        try first("SELECT \(Self.jobColumns) FROM jobs WHERE id = ?", .int(id)) { Self.job($0) }
    }

    public func jobs(ofRun runID: Int64) throws -> [JobRecord] {
        var out: [JobRecord] = []
        try query("SELECT \(Self.jobColumns) FROM jobs WHERE run_id = ? ORDER BY id", .int(runID)) { out.append(Self.job($0)) }
        return out
    }

    /// Jobs, newest first, optionally filtered.
    public func jobs(state: String?, pipeline: String?, limit: Int) throws -> [JobRecord] {
        var sql = "SELECT \(Self.jobColumns) FROM jobs"
        var conditions: [String] = []
        var args: [SQLValue] = []
        if let state {
            conditions.append("state = ?")
            args.append(.text(state))
        }
        if let pipeline {
            conditions.append("pipeline = ?")
            args.append(.text(pipeline))
        }
        if !conditions.isEmpty { sql += " WHERE " + conditions.joined(separator: " AND ") }
        sql += " ORDER BY id DESC LIMIT ?"
        args.append(.int(Int64(limit)))
        var out: [JobRecord] = []
        try queryArgs(sql, args) { out.append(Self.job($0)) }
        return out
    }

    /// Queued jobs of these kinds that may be leased now, oldest first, after job id `after` (paging).
    public func leasableJobs(kinds: [String], now: Int64, after: Int64 = 0, limit: Int) throws -> [JobRecord] {
        var out: [JobRecord] = []
        let list = kinds.map { "'\($0.filter { $0.isLetter })'" }.joined(separator: ",")
        try query(
            """
            SELECT \(Self.jobColumns) FROM jobs WHERE state = 'queued' AND kind IN (\(list)) AND not_before <= ? AND id > ? ORDER BY id LIMIT ?
            """, .int(now), .int(after), .int(Int64(limit))
        ) { out.append(Self.job($0)) }
        return out
    }

    /// Running jobs of one kind.
    public func runningJobs(kind: String) throws -> [JobRecord] {
        var out: [JobRecord] = []
        try query("SELECT \(Self.jobColumns) FROM jobs WHERE state = 'running' AND kind = ? ORDER BY id", .text(kind)) {
            out.append(Self.job($0))
        }
        return out
    }

    /// queued → leased, if still queued. Counts an attempt.
    public func leaseJob(_ id: Int64, runner: String, token: String, expires: Int64, now: Int64) throws -> Bool {
        try run(
            """
            UPDATE jobs SET state = 'leased', runner = ?, lease_token = ?, lease_expires = ?, attempt = attempt + 1,
                            reason = NULL, updated_at = ? WHERE id = ? AND state = 'queued'
            """, .text(runner), .text(token), .int(expires), .int(now), .int(id))
        return changes > 0
    }

    /// Updates a leased or running job held by `token`; false when the lease is gone.
    public func updateLeasedJob(_ id: Int64, token: String, set: String, _ args: [SQLValue]) throws -> Bool {
        try runArgs(
            "UPDATE jobs SET \(set) WHERE id = ? AND lease_token = ? AND state IN ('leased', 'running')",
            args + [.int(id), .text(token)])
        return changes > 0
    }

    /// Sets columns of a job in one of `states`; false when it was in none of them.
    public func updateJob(_ id: Int64, inStates states: [String], set: String, _ args: [SQLValue]) throws -> Bool {
        let list = states.map { "'\($0)'" }.joined(separator: ",")
        try runArgs("UPDATE jobs SET \(set) WHERE id = ? AND state IN (\(list))", args + [.int(id)])
        return changes > 0
    }

    /// Leased or running jobs whose lease expired.
    public func expiredLeases(now: Int64) throws -> [JobRecord] {
        var out: [JobRecord] = []
        try query("SELECT \(Self.jobColumns) FROM jobs WHERE state IN ('leased', 'running') AND lease_expires < ?", .int(now)) {
            out.append(Self.job($0))
        }
        return out
    }

    /// The artifact a memoization key produced, if any.
    public func jobOutput(key: String) throws -> (repository: String, digest: String)? {
        try first("SELECT repository, digest FROM job_outputs WHERE job_key = ?", .text(key)) { ($0.text(0), $0.text(1)) }
    }

    /// Whether a pipeline job produced this manifest.
    public func isJobOutput(_ digest: String) throws -> Bool {
        try first("SELECT 1 FROM job_outputs WHERE digest = ? LIMIT 1", .text(digest)) { _ in true } ?? false
    }

    /// Records the artifact a key produced. A key keeps its first artifact while that manifest
    /// exists (a late duplicate does not replace it); a key whose artifact was deleted takes the new one.
    public func recordJobOutput(key: String, repository: String, digest: String, now: Int64) throws {
        try run(
            """
            INSERT INTO job_outputs(job_key, repository, digest, created_at) VALUES(?,?,?,?)
            ON CONFLICT(job_key) DO UPDATE SET repository = excluded.repository, digest = excluded.digest, created_at = excluded.created_at
            WHERE NOT EXISTS (SELECT 1 FROM manifests m JOIN repositories r ON r.id = m.repo_id
                              WHERE r.name = job_outputs.repository AND 'sha256:' || lower(hex(m.digest)) = job_outputs.digest)
            """, .text(key), .text(repository), .text(digest), .int(now))
    }

    /// Records `digest` as job `id`'s log (if it is still leased with `token`) and makes it a GC
    /// root, in one transaction with releasing the log it replaces: the old blob loses its
    /// `job-log` root unless another job still names it. Returns false if the lease was lost.
    public func replaceJobLog(_ id: Int64, token: String, digest: Digest, now: Int64) throws -> Bool {
        let old = try first("SELECT log_digest FROM jobs WHERE id = ? AND lease_token = ?", .int(id), .text(token)) {
            $0.isNull(0) ? nil : $0.text(0)
        }
        guard let old else { return false }
        try run(
            "UPDATE jobs SET log_digest = ?, updated_at = ? WHERE id = ? AND lease_token = ?",
            .text(digest.description), .int(now), .int(id), .text(token))
        try addRoot(digest, reason: "job-log", now: now)
        if let old, old != digest.description,
            try first("SELECT 1 FROM jobs WHERE log_digest = ? LIMIT 1", .text(old), map: { _ in true }) == nil,
            let d = try? Digest(parsing: old)
        {
            try run("DELETE FROM blob_roots WHERE digest = ? AND reason = 'job-log'", .hash(d.bytes))
        }
        return true
    }

    /// Forgets the logs of jobs that finished before `before` (a log shared by a newer job stays):
    /// the job rows lose their log, the blobs their `job-log` root; GC reclaims them. Returns how many.
    public func expireJobLogs(finishedBefore before: Int64) throws -> Int {
        var digests: [String] = []
        try query(
            """
            SELECT log_digest FROM jobs WHERE log_digest IS NOT NULL GROUP BY log_digest
            HAVING MAX(COALESCE(finished_at, 9223372036854775807)) < ?
            """, .int(before)
        ) { digests.append($0.text(0)) }
        for text in digests {
            try run("UPDATE jobs SET log_digest = NULL WHERE log_digest = ?", .text(text))
            if let d = try? Digest(parsing: text) {
                try run("DELETE FROM blob_roots WHERE digest = ? AND reason = 'job-log'", .hash(d.bytes))
            }
        }
        return digests.count
    }

    /// Counts of jobs by state.
    public func jobCounts() throws -> [String: Int] {
        var out: [String: Int] = [:]
        try query("SELECT state, COUNT(*) FROM jobs GROUP BY state") { out[$0.text(0)] = Int($0.int(1)) }
        return out
    }
}
