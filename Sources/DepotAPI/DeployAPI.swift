import DepotCore

/// Request and response bodies of deployments and canary rollouts
/// (`/depot/v1/repositories/{name}/deployments/{environment}…`, `/depot/v1/deployments`,
/// `/depot/v1/lineage/{digest}/served`; docs/EXTENSION-API.md). Field names on the wire are
/// snake_case; times are RFC 3339 strings; optional fields are absent when they have no value.

// MARK: deployments

/// One deployment in `GET /depot/v1/deployments`.
public struct DeploymentSummary: Codable, Sendable, Equatable {
    public var repository: String
    public var environment: String
    /// The Triton model name the bundle is served under.
    public var model: String
    /// The canary's share of traffic, in percent.
    public var weight: Int
    public var stable: Digest?
    public var canary: Digest?

    public init(repository: String, environment: String, model: String, weight: Int, stable: Digest? = nil, canary: Digest? = nil) {
        self.repository = repository
        self.environment = environment
        self.model = model
        self.weight = weight
        self.stable = stable
        self.canary = canary
    }
}

/// `GET /depot/v1/deployments`.
public struct DeploymentListAnswer: Codable, Sendable, Equatable {
    public var deployments: [DeploymentSummary]

    public init(deployments: [DeploymentSummary]) { self.deployments = deployments }
}

/// An interval during which a digest was served.
public struct ServedIntervalInfo: Codable, Sendable, Equatable {
    public var repository: String
    public var environment: String
    /// `stable` or `canary`.
    public var role: String
    public var weight: Int
    public var from: String
    /// nil while it is still served.
    public var to: String?

    public init(repository: String, environment: String, role: String, weight: Int, from: String, to: String? = nil) {
        self.repository = repository
        self.environment = environment
        self.role = role
        self.weight = weight
        self.from = from
        self.to = to
    }
}

/// `GET /depot/v1/lineage/{digest}/served`: where and when a digest was served.
public struct ServedAnswer: Codable, Sendable, Equatable {
    public var digest: Digest
    public var served: [ServedIntervalInfo]

    public init(digest: Digest, served: [ServedIntervalInfo]) {
        self.digest = digest
        self.served = served
    }
}

// MARK: status of one deployment

/// The deployment part of a status: what is stable, what is canary, and at which weight.
public struct DeploymentInfo: Codable, Sendable, Equatable {
    public var repository: String
    public var environment: String
    public var model: String
    public var weight: Int
    public var updatedAt: String
    public var stable: Digest?
    public var canary: Digest?
    /// The Triton version number the stable digest is served as.
    public var stableVersion: Int?
    public var canaryVersion: Int?

    public init(
        repository: String, environment: String, model: String, weight: Int, updatedAt: String, stable: Digest? = nil,
        canary: Digest? = nil, stableVersion: Int? = nil, canaryVersion: Int? = nil
    ) {
        self.repository = repository
        self.environment = environment
        self.model = model
        self.weight = weight
        self.updatedAt = updatedAt
        self.stable = stable
        self.canary = canary
        self.stableVersion = stableVersion
        self.canaryVersion = canaryVersion
    }

    enum CodingKeys: String, CodingKey {
        case repository, environment, model, weight, stable, canary
        case updatedAt = "updated_at"
        case stableVersion = "stable_version"
        case canaryVersion = "canary_version"
    }
}

/// One decision of a rollout (advance, pause, promote, abort, roll back, …).
public struct RolloutDecisionInfo: Codable, Sendable, Equatable {
    public var at: String
    public var decision: String
    /// The step (from 1) the decision was taken at.
    public var step: Int
    public var weight: Int
    public var actor: String
    public var reason: String?
    /// The canary analysis behind an automatic decision, as the analysis recorded it
    /// (`{"measurements": [{"check", "outcome", "detail", …}], …}`). Open by design: each check
    /// kind reports its own values, and the record is stored and shown as it was written.
    public var measurements: JSONValue?

    public init(
        at: String, decision: String, step: Int, weight: Int, actor: String, reason: String? = nil, measurements: JSONValue? = nil
    ) {
        self.at = at
        self.decision = decision
        self.step = step
        self.weight = weight
        self.actor = actor
        self.reason = reason
        self.measurements = measurements
    }
}

/// The deployment's current or last rollout.
public struct RolloutInfo: Codable, Sendable, Equatable {
    public var id: Int64
    public var state: RolloutState
    public var canary: Digest
    public var stable: Digest?
    /// Traffic steps in percent; `step` counts from 1.
    public var steps: [Int]
    public var step: Int
    public var weight: Int
    public var analysisSeconds: Double
    /// Failed checks so far, by check name.
    public var failures: [String: Int]
    public var startedBy: String
    public var startedAt: String
    public var stepStartedAt: String
    public var reason: String?
    public var finishedAt: String?
    public var decisions: [RolloutDecisionInfo]

    public init(
        id: Int64, state: RolloutState, canary: Digest, stable: Digest? = nil, steps: [Int], step: Int, weight: Int,
        analysisSeconds: Double, failures: [String: Int], startedBy: String, startedAt: String, stepStartedAt: String,
        reason: String? = nil, finishedAt: String? = nil, decisions: [RolloutDecisionInfo]
    ) {
        self.id = id
        self.state = state
        self.canary = canary
        self.stable = stable
        self.steps = steps
        self.step = step
        self.weight = weight
        self.analysisSeconds = analysisSeconds
        self.failures = failures
        self.startedBy = startedBy
        self.startedAt = startedAt
        self.stepStartedAt = stepStartedAt
        self.reason = reason
        self.finishedAt = finishedAt
        self.decisions = decisions
    }

    enum CodingKeys: String, CodingKey {
        case id, state, canary, stable, steps, step, weight, failures, reason, decisions
        case analysisSeconds = "analysis_seconds"
        case startedBy = "started_by"
        case startedAt = "started_at"
        case stepStartedAt = "step_started_at"
        case finishedAt = "finished_at"
    }
}

/// A Triton node of the deployment: when it last asked, and what it last reported.
public struct DeploymentNodeInfo: Codable, Sendable, Equatable {
    public var node: String
    public var seenAt: String
    public var digest: Digest?
    public var version: Int?
    /// nil until the node reports.
    public var state: NodeState?
    public var reason: String?
    public var reportedAt: String?

    public init(
        node: String, seenAt: String, digest: Digest? = nil, version: Int? = nil, state: NodeState? = nil, reason: String? = nil,
        reportedAt: String? = nil
    ) {
        self.node = node
        self.seenAt = seenAt
        self.digest = digest
        self.version = version
        self.state = state
        self.reason = reason
        self.reportedAt = reportedAt
    }

    enum CodingKeys: String, CodingKey {
        case node, digest, version, state, reason
        case seenAt = "seen_at"
        case reportedAt = "reported_at"
    }
}

/// `GET …/deployments/{environment}` and the answer of every rollout command.
public struct DeploymentStatusAnswer: Codable, Sendable, Equatable {
    public var deployment: DeploymentInfo
    /// Absent when the deployment never had a rollout.
    public var rollout: RolloutInfo?
    public var nodes: [DeploymentNodeInfo]

    public init(deployment: DeploymentInfo, rollout: RolloutInfo? = nil, nodes: [DeploymentNodeInfo]) {
        self.deployment = deployment
        self.rollout = rollout
        self.nodes = nodes
    }
}

// MARK: rollout commands

/// `POST …/deployments/{environment}/rollout`: start rolling a bundle out. `reference` is a tag
/// or digest; `digest` is accepted in its place.
public struct RolloutStartRequest: Codable, Sendable, Equatable {
    public var reference: String?
    public var digest: String?
    /// Traffic steps in percent (default from the config).
    public var steps: [Int]?
    /// Analysis interval per step (default from the config).
    public var analysisSeconds: Double?

    public init(reference: String, steps: [Int]? = nil, analysisSeconds: Double? = nil) {
        self.reference = reference
        self.steps = steps
        self.analysisSeconds = analysisSeconds
    }

    enum CodingKeys: String, CodingKey {
        case reference, digest, steps
        case analysisSeconds = "analysis_seconds"
    }
}

/// `POST …/resume`, `…/promote`, `…/abort`: the reason is recorded (resume takes none).
public struct RolloutControlRequest: Codable, Sendable, Equatable {
    public var reason: String?

    public init(reason: String? = nil) { self.reason = reason }
}

// MARK: the node agent

/// `GET …/deployments/{environment}/resolve?node=`: what this node should serve.
public struct DeploymentResolution: Codable, Sendable, Equatable {
    public var digest: Digest
    /// The Triton version directory to serve it as.
    public var version: Int
    public var model: String
    /// `stable` or `canary`.
    public var role: String
    public var weight: Int

    public init(digest: Digest, version: Int, model: String, role: String, weight: Int) {
        self.digest = digest
        self.version = version
        self.model = model
        self.role = role
        self.weight = weight
    }
}

/// `POST …/deployments/{environment}/nodes/{node}`: what a node loaded, or failed to load.
public struct NodeReportRequest: Codable, Sendable, Equatable {
    public var state: NodeState
    /// A digest; text here so that a malformed one gets the registry's `DIGEST_INVALID`.
    public var digest: String?
    public var version: Int?
    public var reason: String?

    public init(state: NodeState, digest: String? = nil, version: Int? = nil, reason: String? = nil) {
        self.state = state
        self.digest = digest
        self.version = version
        self.reason = reason
    }
}

public struct NodeReportAnswer: Codable, Sendable, Equatable {
    public var node: String
    public var state: NodeState

    public init(node: String, state: NodeState) {
        self.node = node
        self.state = state
    }
}
