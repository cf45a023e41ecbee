import DepotAPI
import DepotCore
import Foundation

/// A deployment: an environment alias of a repository, its stable digest and, during a
/// rollout, the canary digest and the percentage of nodes serving it.
public struct DeploymentRecord: Sendable, Equatable {
    public var id: Int64
    public var repository: String
    public var environment: String
    public var modelName: String
    public var stable: String?
    public var canary: String?
    public var weight: Int
    public var updatedAt: Int64
}

/// One rollout of a canary digest through the steps.
public struct RolloutRecord: Sendable, Equatable {
    public var id: Int64
    public var deploymentID: Int64
    public var stable: String?
    public var canary: String
    public var state: RolloutState
    public var steps: [Int]
    public var stepIndex: Int
    public var weight: Int
    public var analysisMs: Int64
    public var stepStartedAt: Int64
    public var failures: [String: Int]
    public var startedBy: String
    public var jobID: Int64?
    public var reason: String?
    public var createdAt: Int64
    public var finishedAt: Int64?

    public init(
        id: Int64, deploymentID: Int64, stable: String?, canary: String, state: RolloutState, steps: [Int], stepIndex: Int, weight: Int,
        analysisMs: Int64, stepStartedAt: Int64, failures: [String: Int], startedBy: String, jobID: Int64?, reason: String?,
        createdAt: Int64, finishedAt: Int64?
    ) {
        self.id = id
        self.deploymentID = deploymentID
        self.stable = stable
        self.canary = canary
        self.state = state
        self.steps = steps
        self.stepIndex = stepIndex
        self.weight = weight
        self.analysisMs = analysisMs
        self.stepStartedAt = stepStartedAt
        self.failures = failures
        self.startedBy = startedBy
        self.jobID = jobID
        self.reason = reason
        self.createdAt = createdAt
        self.finishedAt = finishedAt
    }

    public var isActive: Bool { state.isActive }
}

/// A decision of a rollout, with the measurements behind it.
public struct RolloutDecision: Sendable, Equatable {
    public var at: Int64
    public var stepIndex: Int
    public var weight: Int
    public var decision: String
    public var actor: String
    public var reason: String?
    public var measurements: String?

    public init(at: Int64, stepIndex: Int, weight: Int, decision: String, actor: String, reason: String?, measurements: String?) {
        self.at = at
        self.stepIndex = stepIndex
        self.weight = weight
        self.decision = decision
        self.actor = actor
        self.reason = reason
        self.measurements = measurements
    }
}

/// A node of a deployment and what it last reported.
public struct DeploymentNode: Sendable, Equatable {
    public var node: String
    public var digest: String?
    public var version: Int?
    public var state: NodeState?
    public var reason: String?
    public var seenAt: Int64
    public var reportedAt: Int64?
}

/// An interval during which a digest served a share of an environment.
public struct ServedInterval: Sendable, Equatable {
    public var repository: String
    public var environment: String
    public var digest: String
    public var role: String
    public var weight: Int
    public var from: Int64
    public var to: Int64?
}

extension CatalogConnection {
    static var deploymentColumns: String { "id, repository, environment, model_name, stable_digest, canary_digest, weight, updated_at" }

    static func deployment(_ s: any ResultRow) -> DeploymentRecord {
        let r = s.row
        return DeploymentRecord(
            id: r.int("id"), repository: r.text("repository"), environment: r.text("environment"), modelName: r.text("model_name"),
            stable: r.optionalDigestText("stable_digest"), canary: r.optionalDigestText("canary_digest"), weight: Int(r.int("weight")),
            updatedAt: r.int("updated_at"))
    }

    public func deployment(repository: String, environment: String) throws -> DeploymentRecord? {
        try first(
            "SELECT \(Self.deploymentColumns) FROM deployments WHERE repository = ? AND environment = ?",
            .text(repository), .text(environment)
        ) { Self.deployment($0) }
    }

    public func deployment(id: Int64) throws -> DeploymentRecord? {
        try first("SELECT \(Self.deploymentColumns) FROM deployments WHERE id = ?", .int(id)) { Self.deployment($0) }
    }

    public func deployments() throws -> [DeploymentRecord] {
        var out: [DeploymentRecord] = []
        try query("SELECT \(Self.deploymentColumns) FROM deployments ORDER BY repository, environment") { out.append(Self.deployment($0)) }
        return out
    }

    public func createDeployment(repository: String, environment: String, modelName: String, now: Int64) throws -> DeploymentRecord {
        let id = try first(
            "INSERT INTO deployments(repository, environment, model_name, created_at, updated_at) VALUES(?,?,?,?,?) RETURNING id",
            .text(repository), .text(environment), .text(modelName), .int(now), .int(now)
        ) { $0.int(0) }!
        return try deployment(id: id)!
    }

    public func setDeployment(_ id: Int64, stable: String?, canary: String?, weight: Int, now: Int64) throws {
        try run(
            "UPDATE deployments SET stable_digest = ?, canary_digest = ?, weight = ?, updated_at = ? WHERE id = ?",
            .optionalDigest(stable), .optionalDigest(canary), .int(Int64(weight)), .int(now), .int(id))
    }

    /// The Triton version number already assigned to `digest` in the deployment, if any.
    public func existingDeploymentVersion(_ deployment: Int64, digest: String) throws -> Int? {
        try first(
            "SELECT version FROM deployment_versions WHERE deployment_id = ? AND digest = ?", .int(deployment), .digest(digest),
            map: { Int($0.int(0)) })
    }

    /// The Triton version number of `digest` in the deployment, assigned (next integer) on first use.
    public func deploymentVersion(_ deployment: Int64, digest: String) throws -> Int {
        try lock(.counter("deployment-version:\(deployment)"))
        if let v = try existingDeploymentVersion(deployment, digest: digest) { return v }
        let next =
            (try first("SELECT COALESCE(MAX(version), 0) FROM deployment_versions WHERE deployment_id = ?", .int(deployment)) {
                Int($0.int(0))
            } ?? 0) + 1
        try run(
            "INSERT INTO deployment_versions(deployment_id, digest, version) VALUES(?,?,?)", .int(deployment), .digest(digest),
            .int(Int64(next)))
        return next
    }

    // MARK: rollouts

    static var rolloutColumns: String {
        """
        id, deployment_id, stable_digest, canary_digest, state, steps, step_index, weight, analysis_ms, step_started_at,
        failures, started_by, job_id, reason, created_at, finished_at
        """
    }

    static func rollout(_ s: any ResultRow) throws -> RolloutRecord {
        let r = s.row
        // Written by this module only (insertRollout, the failure counters); an unreadable value
        // reads as empty rather than failing every listing that includes the row.
        let steps = (try? JSONDecoder().decode([Int].self, from: Data(r.text("steps").utf8))) ?? []
        let failures = (try? JSONDecoder().decode([String: Int].self, from: Data(r.text("failures").utf8))) ?? [:]
        return RolloutRecord(
            id: r.int("id"), deploymentID: r.int("deployment_id"), stable: r.optionalDigestText("stable_digest"),
            canary: r.digestText("canary_digest"),
            state: try r.value("state"), steps: steps, stepIndex: Int(r.int("step_index")), weight: Int(r.int("weight")),
            analysisMs: r.int("analysis_ms"), stepStartedAt: r.int("step_started_at"), failures: failures,
            startedBy: r.text("started_by"), jobID: r.optionalInt("job_id"), reason: r.optionalText("reason"),
            createdAt: r.int("created_at"), finishedAt: r.optionalInt("finished_at"))
    }

    public func insertRollout(_ r: RolloutRecord) throws -> Int64 {
        let steps = String(decoding: try WireJSON.encode(r.steps), as: UTF8.self)
        return try first(
            """
            INSERT INTO rollouts(deployment_id, stable_digest, canary_digest, state, steps, step_index, weight, analysis_ms, step_started_at,
                                 started_by, job_id, reason, created_at, finished_at) VALUES(?,?,?,?,?,?,?,?,?,?,?,?,?,?)
            RETURNING id
            """, .int(r.deploymentID), .optionalDigest(r.stable), .digest(r.canary), .state(r.state), .text(steps),
            .int(Int64(r.stepIndex)), .int(Int64(r.weight)), .int(r.analysisMs), .int(r.stepStartedAt), .text(r.startedBy),
            r.jobID.map(SQLValue.int) ?? .null, r.reason.map(SQLValue.text) ?? .null, .int(r.createdAt),
            r.finishedAt.map(SQLValue.int) ?? .null
        ) { $0.int(0) }!
    }

    public func rollout(_ id: Int64) throws -> RolloutRecord? {
        try first("SELECT \(Self.rolloutColumns) FROM rollouts WHERE id = ?", .int(id)) { try Self.rollout($0) }
    }

    /// The running or paused rollout of a deployment.
    public func activeRollout(deployment: Int64) throws -> RolloutRecord? {
        try first(
            "SELECT \(Self.rolloutColumns) FROM rollouts WHERE deployment_id = ? AND state IN (\(Self.sqlList(RolloutState.active)))",
            .int(deployment)
        ) {
            try Self.rollout($0)
        }
    }

    public func latestRollout(deployment: Int64) throws -> RolloutRecord? {
        try first("SELECT \(Self.rolloutColumns) FROM rollouts WHERE deployment_id = ? ORDER BY id DESC LIMIT 1", .int(deployment)) {
            try Self.rollout($0)
        }
    }

    /// The rollout a pipeline job started.
    public func rollout(forJob job: Int64) throws -> RolloutRecord? {
        try first("SELECT \(Self.rolloutColumns) FROM rollouts WHERE job_id = ? ORDER BY id DESC LIMIT 1", .int(job)) {
            try Self.rollout($0)
        }
    }

    public func runningRollouts() throws -> [RolloutRecord] {
        var out: [RolloutRecord] = []
        try query("SELECT \(Self.rolloutColumns) FROM rollouts WHERE state = ? ORDER BY id", .state(RolloutState.running)) {
            out.append(try Self.rollout($0))
        }
        return out
    }

    // MARK: rollout transitions (each one guarded UPDATE; true when it applied)

    /// running at step `from` → the next step at `weight`, its analysis starting `now`.
    public func advanceRollout(_ id: Int64, fromStep from: Int, toStep to: Int, weight: Int, failures: String, now: Int64) throws -> Bool {
        try run(
            """
            UPDATE rollouts SET step_index = ?, weight = ?, step_started_at = ?, failures = ?
            WHERE id = ? AND state = 'running' AND step_index = ?
            """, .int(Int64(to)), .int(Int64(weight)), .int(now), .text(failures), .int(id), .int(Int64(from)))
        return changes > 0
    }

    /// running at step `step`: stay and measure again from `now`.
    public func holdRollout(_ id: Int64, atStep step: Int, failures: String, now: Int64) throws -> Bool {
        try run(
            "UPDATE rollouts SET step_started_at = ?, failures = ? WHERE id = ? AND state = 'running' AND step_index = ?",
            .int(now), .text(failures), .int(id), .int(Int64(step)))
        return changes > 0
    }

    /// running → paused.
    public func pauseRollout(_ id: Int64, reason: String, failures: String, now: Int64) throws -> Bool {
        try setActiveRolloutState(id, from: .running, to: .paused, reason: reason, failures: failures, now: now)
    }

    /// paused → running; the step's analysis starts again `now`.
    public func resumeRollout(_ id: Int64, reason: String, failures: String, now: Int64) throws -> Bool {
        try setActiveRolloutState(id, from: .paused, to: .running, reason: reason, failures: failures, now: now)
    }

    private func setActiveRolloutState(
        _ id: Int64, from: RolloutState, to: RolloutState, reason: String, failures: String, now: Int64
    ) throws -> Bool {
        try run(
            "UPDATE rollouts SET state = ?, reason = ?, failures = ?, step_started_at = ? WHERE id = ? AND state = ?",
            .state(to), .text(reason), .text(failures), .int(now), .int(id), .state(from))
        return changes > 0
    }

    /// running | paused → promoted (weight 100).
    public func promoteRollout(_ id: Int64, reason: String, failures: String, now: Int64) throws -> Bool {
        try endRollout(id, as: .promoted, weight: 100, reason: reason, failures: failures, now: now)
    }

    /// running | paused → rolled-back (weight 0).
    public func rollBackRollout(_ id: Int64, reason: String, failures: String, now: Int64) throws -> Bool {
        try endRollout(id, as: .rolledBack, weight: 0, reason: reason, failures: failures, now: now)
    }

    /// running | paused → aborted (weight 0).
    public func abortRollout(_ id: Int64, reason: String, failures: String, now: Int64) throws -> Bool {
        try endRollout(id, as: .aborted, weight: 0, reason: reason, failures: failures, now: now)
    }

    private func endRollout(_ id: Int64, as state: RolloutState, weight: Int, reason: String, failures: String, now: Int64) throws -> Bool {
        try run(
            """
            UPDATE rollouts SET state = ?, reason = ?, failures = ?, finished_at = ?, weight = ?
            WHERE id = ? AND state IN (\(Self.sqlList(RolloutState.active)))
            """, .state(state), .text(reason), .text(failures), .int(now), .int(Int64(weight)), .int(id))
        return changes > 0
    }

    public func appendDecision(rollout: Int64, _ d: RolloutDecision) throws {
        try run(
            """
            INSERT INTO rollout_decisions(rollout_id, at, step_index, weight, decision, actor, reason, measurements) VALUES(?,?,?,?,?,?,?,?)
            """, .int(rollout), .int(d.at), .int(Int64(d.stepIndex)), .int(Int64(d.weight)), .text(d.decision), .text(d.actor),
            d.reason.map(SQLValue.text) ?? .null, d.measurements.map(SQLValue.text) ?? .null)
    }

    public func decisions(rollout: Int64) throws -> [RolloutDecision] {
        var out: [RolloutDecision] = []
        try query(
            "SELECT at, step_index, weight, decision, actor, reason, measurements FROM rollout_decisions WHERE rollout_id = ? ORDER BY id",
            .int(rollout)
        ) { s in
            let r = s.row
            out.append(
                RolloutDecision(
                    at: r.int("at"), stepIndex: Int(r.int("step_index")), weight: Int(r.int("weight")), decision: r.text("decision"),
                    actor: r.text("actor"), reason: r.optionalText("reason"), measurements: r.optionalText("measurements")))
        }
        return out
    }

    // MARK: nodes

    /// Notes that `node` asked (resolve) at `now`.
    public func touchNode(deployment: Int64, node: String, now: Int64) throws {
        try run(
            """
            INSERT INTO deployment_nodes(deployment_id, node, seen_at) VALUES(?,?,?)
            ON CONFLICT(deployment_id, node) DO UPDATE SET seen_at = excluded.seen_at
            """, .int(deployment), .text(node), .int(now))
    }

    public func reportNode(deployment: Int64, node: String, digest: String?, version: Int?, state: NodeState, reason: String?, now: Int64)
        throws
    {
        try run(
            """
            INSERT INTO deployment_nodes(deployment_id, node, digest, version, state, reason, seen_at, reported_at) VALUES(?,?,?,?,?,?,?,?)
            ON CONFLICT(deployment_id, node) DO UPDATE SET digest = excluded.digest, version = excluded.version, state = excluded.state,
                reason = excluded.reason, seen_at = excluded.seen_at, reported_at = excluded.reported_at
            """, .int(deployment), .text(node), .optionalDigest(digest), version.map { .int(Int64($0)) } ?? .null,
            .state(state), reason.map(SQLValue.text) ?? .null, .int(now), .int(now))
    }

    public func nodes(deployment: Int64) throws -> [DeploymentNode] {
        var out: [DeploymentNode] = []
        try query(
            "SELECT node, digest, version, state, reason, seen_at, reported_at FROM deployment_nodes WHERE deployment_id = ? ORDER BY node",
            .int(deployment)
        ) { s in
            let r = s.row
            out.append(
                DeploymentNode(
                    node: r.text("node"), digest: r.optionalDigestText("digest"), version: r.optionalInt("version").map { Int($0) },
                    state: try r.optionalValue("state"), reason: r.optionalText("reason"), seenAt: r.int("seen_at"),
                    reportedAt: r.optionalInt("reported_at")))
        }
        return out
    }

    // MARK: served intervals

    /// Closes the deployment's open intervals and opens the current ones (stable at 100-weight, canary at weight).
    public func recordServing(deployment: DeploymentRecord, now: Int64) throws {
        try run("UPDATE served_intervals SET to_at = ? WHERE deployment_id = ? AND to_at IS NULL", .int(now), .int(deployment.id))
        let canaryWeight = deployment.canary == nil ? 0 : deployment.weight
        if let stable = deployment.stable, canaryWeight < 100 {
            try run(
                "INSERT INTO served_intervals(deployment_id, digest, role, weight, from_at) VALUES(?,?,'stable',?,?)",
                .int(deployment.id), .digest(stable), .int(Int64(100 - canaryWeight)), .int(now))
        }
        if let canary = deployment.canary, canaryWeight > 0 {
            try run(
                "INSERT INTO served_intervals(deployment_id, digest, role, weight, from_at) VALUES(?,?,'canary',?,?)",
                .int(deployment.id), .digest(canary), .int(Int64(canaryWeight)), .int(now))
        }
    }

    /// Where and when a digest served (newest first).
    public func served(digest: String, limit: Int) throws -> [ServedInterval] {
        var out: [ServedInterval] = []
        try query(
            """
            SELECT d.repository, d.environment, s.digest, s.role, s.weight, s.from_at, s.to_at
            FROM served_intervals s JOIN deployments d ON d.id = s.deployment_id WHERE s.digest = ? ORDER BY s.from_at DESC LIMIT ?
            """, .digest(digest), .int(Int64(limit))
        ) { s in
            let r = s.row
            out.append(
                ServedInterval(
                    repository: r.text("repository"), environment: r.text("environment"), digest: r.digestText("digest"),
                    role: r.text("role"),
                    weight: Int(r.int("weight")), from: r.int("from_at"), to: r.optionalInt("to_at")))
        }
        return out
    }
}
