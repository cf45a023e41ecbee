import DepotCore

/// Request and response bodies of `/depot/v1/pipelines` and `/depot/v1/jobs` (docs/EXTENSION-API.md):
/// the operator's view of jobs and the lease protocol runners speak. Field names on the wire are
/// snake_case; times are RFC 3339 strings; optional fields are absent when they have no value.

// MARK: pipelines

/// What starts a pipeline: pushes to these repositories, tags and artifact types (empty: any).
public struct PipelineTriggerInfo: Codable, Sendable, Equatable {
    public var repositories: [String]
    public var tags: [String]
    public var artifactTypes: [String]

    public init(repositories: [String], tags: [String], artifactTypes: [String]) {
        self.repositories = repositories
        self.tags = tags
        self.artifactTypes = artifactTypes
    }

    enum CodingKeys: String, CodingKey {
        case repositories, tags
        case artifactTypes = "artifact_types"
    }
}

/// One stage of a loaded pipeline.
public struct PipelineStageInfo: Codable, Sendable, Equatable {
    public var name: String
    /// `exec`, `builtin`, `webhook`, `canary`, … (a pipeline file's kind name).
    public var kind: String
    public var needs: [String]
    public var labels: [String]
    public var timeoutSeconds: Int
    public var retries: Int
    /// The tag the stage's output gets.
    public var tag: String?

    public init(
        name: String, kind: String, needs: [String], labels: [String], timeoutSeconds: Int, retries: Int, tag: String? = nil
    ) {
        self.name = name
        self.kind = kind
        self.needs = needs
        self.labels = labels
        self.timeoutSeconds = timeoutSeconds
        self.retries = retries
        self.tag = tag
    }

    enum CodingKeys: String, CodingKey {
        case name, kind, needs, labels, retries, tag
        case timeoutSeconds = "timeout_seconds"
    }
}

public struct PipelineInfo: Codable, Sendable, Equatable {
    public var name: String
    /// The pipeline file it was loaded from.
    public var file: String
    public var trigger: PipelineTriggerInfo
    public var stages: [PipelineStageInfo]

    public init(name: String, file: String, trigger: PipelineTriggerInfo, stages: [PipelineStageInfo]) {
        self.name = name
        self.file = file
        self.trigger = trigger
        self.stages = stages
    }
}

/// `GET /depot/v1/pipelines`.
public struct PipelineListAnswer: Codable, Sendable, Equatable {
    public var pipelines: [PipelineInfo]

    public init(pipelines: [PipelineInfo]) { self.pipelines = pipelines }
}

// MARK: jobs

/// A job's input: the artifact the stage runs on.
public struct JobInput: Codable, Sendable, Equatable {
    public var repository: String
    public var digest: Digest
    public var tag: String?

    public init(repository: String, digest: Digest, tag: String? = nil) {
        self.repository = repository
        self.digest = digest
        self.tag = tag
    }
}

/// A job's output: the tag it will get, and the digest once it has one (`{}` when neither).
public struct JobOutput: Codable, Sendable, Equatable {
    public var tag: String?
    public var digest: Digest?

    public init(tag: String? = nil, digest: Digest? = nil) {
        self.tag = tag
        self.digest = digest
    }
}

/// One job, as `GET /depot/v1/jobs/{id}`, the job list and every job command answer it.
public struct JobInfo: Codable, Sendable, Equatable {
    public var id: Int64
    /// The pipeline run the job belongs to.
    public var run: Int64
    public var pipeline: String
    public var stage: String
    /// The stage's kind name (`exec`, `builtin`, `webhook`, `canary`, …).
    public var kind: String
    public var state: JobState
    public var attempt: Int
    public var maxAttempts: Int
    public var labels: [String]
    public var memoized: Bool
    public var timeoutSeconds: Int64
    public var createdAt: String
    public var updatedAt: String
    public var input: JobInput
    public var output: JobOutput
    /// The stage's definition as the runner executes it. Open by design: each stage kind has its
    /// own fields (`command`, `builtin`, `with`, `url`, …), pipeline files may add new ones, and a
    /// runner hashes the whole definition into the memoization key, so it travels as written.
    public var spec: JSONValue?
    public var runner: String?
    /// The memoization key the runner computed.
    public var key: String?
    /// Why the job failed or was cancelled.
    public var reason: String?
    /// The digest of the job's log blob (`GET …/jobs/{id}/log`).
    public var log: Digest?
    public var startedAt: String?
    public var finishedAt: String?
    /// When a queued job may be leased again (after a failed attempt's backoff).
    public var notBefore: String?
    public var leaseExpires: String?
    /// Only in a lease answer: the token the runner presents in every later call.
    public var leaseToken: String?

    public init(
        id: Int64, run: Int64, pipeline: String, stage: String, kind: String, state: JobState, attempt: Int, maxAttempts: Int,
        labels: [String], memoized: Bool, timeoutSeconds: Int64, createdAt: String, updatedAt: String, input: JobInput,
        output: JobOutput, spec: JSONValue? = nil, runner: String? = nil, key: String? = nil, reason: String? = nil,
        log: Digest? = nil, startedAt: String? = nil, finishedAt: String? = nil, notBefore: String? = nil,
        leaseExpires: String? = nil, leaseToken: String? = nil
    ) {
        self.id = id
        self.run = run
        self.pipeline = pipeline
        self.stage = stage
        self.kind = kind
        self.state = state
        self.attempt = attempt
        self.maxAttempts = maxAttempts
        self.labels = labels
        self.memoized = memoized
        self.timeoutSeconds = timeoutSeconds
        self.createdAt = createdAt
        self.updatedAt = updatedAt
        self.input = input
        self.output = output
        self.spec = spec
        self.runner = runner
        self.key = key
        self.reason = reason
        self.log = log
        self.startedAt = startedAt
        self.finishedAt = finishedAt
        self.notBefore = notBefore
        self.leaseExpires = leaseExpires
        self.leaseToken = leaseToken
    }

    enum CodingKeys: String, CodingKey {
        case id, run, pipeline, stage, kind, state, attempt, labels, memoized, input, output, spec, runner, key, reason, log
        case maxAttempts = "max_attempts"
        case timeoutSeconds = "timeout_seconds"
        case createdAt = "created_at"
        case updatedAt = "updated_at"
        case startedAt = "started_at"
        case finishedAt = "finished_at"
        case notBefore = "not_before"
        case leaseExpires = "lease_expires"
        case leaseToken = "lease_token"
    }
}

/// `GET /depot/v1/jobs?state=&pipeline=&limit=`, newest first.
public struct JobListAnswer: Codable, Sendable, Equatable {
    public var jobs: [JobInfo]

    public init(jobs: [JobInfo]) { self.jobs = jobs }
}

// MARK: the lease protocol

/// `POST /depot/v1/jobs/lease`: a runner asks for a job whose labels it offers.
public struct JobLeaseRequest: Codable, Sendable, Equatable {
    public var runner: String
    public var labels: [String]?

    public init(runner: String, labels: [String]? = nil) {
        self.runner = runner
        self.labels = labels
    }
}

/// The lease answer: `{"job": {…, "lease_token": …}}`, or `{"job": null}` when none is waiting.
public struct JobLeaseAnswer: Codable, Sendable, Equatable {
    public var job: JobInfo?

    public init(job: JobInfo?) { self.job = job }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        job = try c.decodeIfPresent(JobInfo.self, forKey: .job)
    }

    /// `job` is written as `null` rather than left out: runners test for it.
    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(job, forKey: .job)
    }

    enum CodingKeys: String, CodingKey { case job }
}

/// `POST …/jobs/{id}/start`: the runner's memoization key for the job.
public struct JobStartRequest: Codable, Sendable, Equatable {
    public var leaseToken: String?
    public var key: String?

    public init(leaseToken: String, key: String) {
        self.leaseToken = leaseToken
        self.key = key
    }

    enum CodingKeys: String, CodingKey {
        case key
        case leaseToken = "lease_token"
    }
}

/// Whether the runner runs the stage or an earlier run's output is reused.
public enum JobStartDecision: String, Codable, Sendable, CaseIterable {
    case run, memoized
}

/// The start answer: `{"decision": "run"}` or `{"decision": "memoized", "output": digest}`.
public struct JobStartAnswer: Codable, Sendable, Equatable {
    public var decision: JobStartDecision
    /// With `memoized`: the output to reuse.
    public var output: Digest?

    public init(decision: JobStartDecision, output: Digest? = nil) {
        self.decision = decision
        self.output = output
    }
}

/// `POST …/jobs/{id}/heartbeat`: renews the lease; the answer is the job (`cancelled` means stop).
public struct JobHeartbeatRequest: Codable, Sendable, Equatable {
    public var leaseToken: String?

    public init(leaseToken: String) { self.leaseToken = leaseToken }

    enum CodingKeys: String, CodingKey { case leaseToken = "lease_token" }
}

/// `POST …/jobs/{id}/complete`: the stage's output was pushed.
public struct JobCompleteRequest: Codable, Sendable, Equatable {
    public var leaseToken: String?
    /// A digest; text here so that a malformed one gets the registry's `DIGEST_INVALID`.
    public var output: String?

    public init(leaseToken: String, output: Digest) {
        self.leaseToken = leaseToken
        self.output = output.description
    }

    enum CodingKeys: String, CodingKey {
        case output
        case leaseToken = "lease_token"
    }
}

/// `POST …/jobs/{id}/fail`: the attempt failed; `permanent` skips the remaining attempts.
public struct JobFailRequest: Codable, Sendable, Equatable {
    public var leaseToken: String?
    public var reason: String?
    public var permanent: Bool?

    public init(leaseToken: String, reason: String, permanent: Bool? = nil) {
        self.leaseToken = leaseToken
        self.reason = reason
        self.permanent = permanent
    }

    enum CodingKeys: String, CodingKey {
        case reason, permanent
        case leaseToken = "lease_token"
    }
}

/// `PUT …/jobs/{id}/log?lease_token=`: the digest the log was stored under.
public struct JobLogAnswer: Codable, Sendable, Equatable {
    public var digest: Digest

    public init(digest: Digest) { self.digest = digest }
}

/// How a webhook stage ended, in its callback.
public enum JobCallbackStatus: String, Codable, Sendable, CaseIterable {
    case succeeded, failed
}

/// `POST …/jobs/{id}/callback`, signed (`Depot-Signature`): a webhook stage's completion. The body
/// names the job and its attempt, so a callback cannot be replayed onto another job or attempt.
public struct JobCallbackRequest: Codable, Sendable, Equatable {
    public var job: Int64?
    public var attempt: Int?
    public var status: JobCallbackStatus
    /// With `succeeded`: the output digest, when the webhook produced one (text, so that a
    /// malformed one gets the registry's `DIGEST_INVALID`).
    public var output: String?
    /// With `failed`: why.
    public var reason: String?
    public var permanent: Bool?

    public init(
        job: Int64, attempt: Int, status: JobCallbackStatus, output: String? = nil, reason: String? = nil, permanent: Bool? = nil
    ) {
        self.job = job
        self.attempt = attempt
        self.status = status
        self.output = output
        self.reason = reason
        self.permanent = permanent
    }
}
