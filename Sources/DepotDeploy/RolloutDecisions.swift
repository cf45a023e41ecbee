import DepotAPI
import DepotCatalog
import DepotCore
import DepotRegistry
import Foundation

/// The controller's and the operator's transitions of a rollout.
extension Deployments {
    /// What to measure for a running rollout whose analysis is due.
    public struct DueAnalysis: Sendable {
        public var rollout: RolloutRecord
        public var deployment: DeploymentRecord
        public var context: CanaryAnalysis.Context
        /// Nodes that reported failing to load the canary during this rollout.
        public var failedNodes: [String]
    }

    /// Running rollouts whose step has lasted the analysis interval, counted from when the nodes
    /// meant to serve the canary report it ready (a node still pulling or loading would make the
    /// first minutes of the window about the stable version). A node that failed to load the
    /// canary makes the analysis due at once; nodes that never report are waited for at most
    /// two more intervals (then their missing data pauses the rollout).
    public func dueAnalyses(now: Int64? = nil) throws -> [DueAnalysis] {
        let now = now ?? Self.now()
        return try db.write { conn in
            try conn.runningRollouts().compactMap { r in
                guard let d = try conn.deployment(id: r.deploymentID) else { return nil }
                let nodes = try conn.nodes(deployment: d.id)
                let failed = nodes.filter {
                    $0.digest == r.canary && $0.state == .failed && ($0.reportedAt ?? 0) >= r.createdAt
                }.map { "\($0.node): \($0.reason ?? "failed to load")" }
                if failed.isEmpty {
                    guard now - r.stepStartedAt >= r.analysisMs else { return nil }
                    let ttl = Int64(policy.nodeTTLSeconds * 1000)
                    let active = nodes.filter { now - $0.seenAt <= ttl }
                    let expected = Self.canaryNodes(active.map(\.node), weight: r.weight, salt: "\(d.id)").count
                    let ready = active.filter { $0.digest == r.canary && $0.state == .ready }
                    let servingSince = max(r.stepStartedAt, ready.compactMap(\.reportedAt).max() ?? 0)
                    let waitedTooLong = now - r.stepStartedAt >= 3 * r.analysisMs
                    if ready.count < expected && !waitedTooLong { return nil }
                    if now - servingSince < r.analysisMs && !waitedTooLong { return nil }
                }
                let canaryVersion = try conn.deploymentVersion(d.id, digest: r.canary)
                let stableVersion = try r.stable.map { try conn.deploymentVersion(d.id, digest: $0) }
                return DueAnalysis(
                    rollout: r, deployment: d,
                    context: .init(
                        model: d.modelName, canaryVersion: canaryVersion, stableVersion: stableVersion, weight: r.weight,
                        analysisSeconds: Double(r.analysisMs) / 1000),
                    failedNodes: failed)
            }
        }
    }

    /// Applies an analysis: rollback on a breached threshold (or a node that failed to load the
    /// canary), pause when inconclusive, else the next step or promotion. Returns the decision,
    /// or nil when the rollout changed meanwhile (an operator's command won).
    @discardableResult
    public func apply(_ due: DueAnalysis, measurements: [Measurement]) throws -> String? {
        let r = due.rollout
        var failures = r.failures
        for m in measurements where m.outcome == .fail { failures[m.check, default: 0] += 1 }
        let limits = Dictionary(policy.checks.map { ($0.name, $0.failureLimit) }, uniquingKeysWith: { a, _ in a })
        let breached = measurements.filter { $0.outcome == .fail && failures[$0.check, default: 0] > limits[$0.check, default: 0] }
        let inconclusive = measurements.filter { $0.outcome == .inconclusive }
        var values: [String: JSONValue] = ["measurements": .array(measurements.map(\.json))]
        if !due.failedNodes.isEmpty { values["failed_nodes"] = JSONValue(due.failedNodes) }
        let valuesJSON = String(decoding: (try? WireJSON.encode(values)) ?? [], as: UTF8.self)
        let at = "step \(r.stepIndex + 1)/\(r.steps.count) (\(r.weight)%)"
        if !breached.isEmpty || !due.failedNodes.isEmpty {
            let why = (breached.map { "\($0.check): \($0.detail)" } + due.failedNodes.map { "node \($0)" }).joined(separator: "; ")
            return try finish(
                due.deployment, r, state: .rolledBack, decision: "rollback", actor: "depot-canary",
                reason: "rolled back at \(at): \(why)", measurements: valuesJSON, failures: failures) ? "rollback" : nil
        }
        if !inconclusive.isEmpty {
            let why = inconclusive.map { "\($0.check): \($0.detail)" }.joined(separator: "; ")
            return try transition(
                due.deployment, r, to: .paused, decision: "pause", actor: "depot-canary",
                reason: "paused at \(at), inconclusive: \(why)", measurements: valuesJSON, failures: failures) ? "pause" : nil
        }
        let tolerated = measurements.filter { $0.outcome == .fail }
        if !tolerated.isEmpty {
            // Failed, but within the check's failure_limit: measure this step again rather than move on.
            let why = tolerated.map {
                "\($0.check): \($0.detail) (\(failures[$0.check, default: 0]) of \(limits[$0.check, default: 0]) tolerated)"
            }
            .joined(separator: "; ")
            return try hold(due.deployment, r, reason: "holding \(at): \(why)", measurements: valuesJSON, failures: failures) ? "hold" : nil
        }
        if r.stepIndex + 1 >= r.steps.count {
            return try finish(
                due.deployment, r, state: .promoted, decision: "promote", actor: "depot-canary",
                reason: "promoted after \(at): every check passed", measurements: valuesJSON, failures: failures) ? "promote" : nil
        }
        return try advance(due.deployment, r, actor: "depot-canary", measurements: valuesJSON, failures: failures) ? "advance" : nil
    }

    /// Next step: more nodes on the canary.
    func advance(_ d: DeploymentRecord, _ r: RolloutRecord, actor: String, measurements: String?, failures: [String: Int]) throws -> Bool {
        let next = r.stepIndex + 1
        let weight = r.steps[next]
        var changed = d
        let done = try db.write { conn -> Bool in
            let now = Self.now()
            guard
                try conn.advanceRollout(
                    r.id, fromStep: r.stepIndex, toStep: next, weight: weight, failures: Self.json(failures), now: now)
            else { return false }
            changed.weight = weight
            try conn.setDeployment(d.id, stable: d.stable, canary: d.canary, weight: weight, now: now)
            try conn.recordServing(deployment: changed, now: now)
            try conn.appendDecision(
                rollout: r.id,
                RolloutDecision(
                    at: now, stepIndex: next, weight: weight, decision: "advance", actor: actor,
                    reason: "checks passed at \(r.weight)%: now \(weight)%", measurements: measurements))
            try conn.appendAudit(
                at: now, actor: actor, action: "canary.step", repository: d.repository, digest: r.canary, tag: d.environment,
                details: ["rollout": .int(r.id), "from_weight": JSONValue(r.weight), "weight": JSONValue(weight)])
            return true
        }
        if done { onWeightChange(changed) }
        return done
    }

    /// Stay at this step and measure again after another interval.
    func hold(_ d: DeploymentRecord, _ r: RolloutRecord, reason: String, measurements: String?, failures: [String: Int]) throws -> Bool {
        try db.write { conn in
            let now = Self.now()
            guard try conn.holdRollout(r.id, atStep: r.stepIndex, failures: Self.json(failures), now: now) else { return false }
            try conn.appendDecision(
                rollout: r.id,
                RolloutDecision(
                    at: now, stepIndex: r.stepIndex, weight: r.weight, decision: "hold",
                    actor: "depot-canary", reason: reason, measurements: measurements))
            try conn.appendAudit(
                at: now, actor: "depot-canary", action: "canary.hold", repository: d.repository, digest: r.canary,
                tag: d.environment, details: ["rollout": .int(r.id), "weight": JSONValue(r.weight), "reason": .string(reason)])
            return true
        }
    }

    /// Pause or resume (no weight change).
    func transition(
        _ d: DeploymentRecord, _ r: RolloutRecord, to state: RolloutState, decision: String, actor: String, reason: String,
        measurements: String?, failures: [String: Int]
    ) throws -> Bool {
        try db.write { conn in
            let now = Self.now()
            let failuresJSON = Self.json(failures)
            let applied: Bool
            switch state {
            case .paused: applied = try conn.pauseRollout(r.id, reason: reason, failures: failuresJSON, now: now)
            case .running: applied = try conn.resumeRollout(r.id, reason: reason, failures: failuresJSON, now: now)
            case .promoted, .rolledBack, .aborted: preconditionFailure("\(state) ends a rollout: finish(_:_:state:...)")
            }
            guard applied else { return false }
            try conn.appendDecision(
                rollout: r.id,
                RolloutDecision(
                    at: now, stepIndex: r.stepIndex, weight: r.weight, decision: decision,
                    actor: actor, reason: reason, measurements: measurements))
            try conn.appendAudit(
                at: now, actor: actor, action: "canary.\(decision)", repository: d.repository, digest: r.canary,
                tag: d.environment, details: ["rollout": .int(r.id), "weight": JSONValue(r.weight), "reason": .string(reason)])
            return true
        }
    }

    /// Ends a rollout: promoted (the canary becomes stable) or rolled back / aborted (weight 0,
    /// the alias back on the stable digest, with the reason and values in its history).
    func finish(
        _ d: DeploymentRecord, _ r: RolloutRecord, state: RolloutState, decision: String, actor: String, reason: String,
        measurements: String?, failures: [String: Int]
    ) throws -> Bool {
        let promote = state == .promoted
        let repository = try RepositoryName(d.repository)
        var changed = d
        let done = try db.write { conn -> Bool in
            // Before the rollout's row lock: the alias move below takes the appends lock, and
            // every writer takes that one first (CatalogLock.appends), or two could deadlock.
            try conn.lock(.appends)
            let now = Self.now()
            let failuresJSON = Self.json(failures)
            let applied: Bool
            switch state {
            case .promoted: applied = try conn.promoteRollout(r.id, reason: reason, failures: failuresJSON, now: now)
            case .rolledBack: applied = try conn.rollBackRollout(r.id, reason: reason, failures: failuresJSON, now: now)
            case .aborted: applied = try conn.abortRollout(r.id, reason: reason, failures: failuresJSON, now: now)
            case .running, .paused: preconditionFailure("\(state) does not end a rollout: transition(_:_:to:...)")
            }
            guard applied else { return false }
            // The alias moves in the same transaction as the rollout's end: whoever wins the
            // guarded update above (the controller or an operator) also decides the alias.
            if let target = promote ? r.canary : r.stable, let digest = try? Digest(parsing: target) {
                try registry.setAlias(
                    conn, repository, d.environment, to: digest, actor: actor, reason: "rollout \(r.id): \(reason)",
                    action: promote ? "canary" : "rollback")
            }
            changed.stable = promote ? r.canary : (d.stable ?? r.stable)
            changed.canary = nil
            changed.weight = 0
            try conn.setDeployment(d.id, stable: changed.stable, canary: nil, weight: 0, now: now)
            try conn.recordServing(deployment: changed, now: now)
            try conn.appendDecision(
                rollout: r.id,
                RolloutDecision(
                    at: now, stepIndex: r.stepIndex, weight: promote ? 100 : 0, decision: decision,
                    actor: actor, reason: reason, measurements: measurements))
            var details: [String: JSONValue] = ["rollout": .int(r.id), "reason": .string(reason)]
            if let measurements { details["measurements"] = .string(measurements) }
            try conn.appendAudit(
                at: now, actor: actor, action: "canary.\(decision)", repository: d.repository, digest: r.canary,
                tag: d.environment, details: details)
            return true
        }
        registry.aliasesChanged()
        if done { onWeightChange(changed) }
        return done
    }

    static func json(_ failures: [String: Int]) -> String {
        String(decoding: (try? WireJSON.encode(failures)) ?? Array("{}".utf8), as: UTF8.self)
    }

    // MARK: operator commands

    func active(_ repository: RepositoryName, _ environment: String) throws -> (DeploymentRecord, RolloutRecord) {
        try db.read { conn in
            let d = try deployment(conn, repository, environment)
            guard let r = try conn.activeRollout(deployment: d.id) else {
                throw RegistryError(.conflict, "\(repository):\(environment) has no running or paused rollout")
            }
            return (d, r)
        }
    }

    /// paused → running; the current step's analysis interval starts again.
    public func resume(_ repository: RepositoryName, _ environment: String, actor: String) throws -> Status {
        let (d, r) = try active(repository, environment)
        guard r.state == .paused,
            try transition(
                d, r, to: .running, decision: "resume", actor: actor, reason: "resumed by \(actor) at \(r.weight)%",
                measurements: nil, failures: r.failures)
        else {
            throw RegistryError(.conflict, "rollout \(r.id) is \(r.state.rawValue), not paused")
        }
        return try status(repository, environment)
    }

    /// Promotes the canary now (the operator's decision, recorded as such).
    public func promote(_ repository: RepositoryName, _ environment: String, actor: String, reason: String?) throws -> Status {
        let (d, r) = try active(repository, environment)
        guard
            try finish(
                d, r, state: .promoted, decision: "promote", actor: actor,
                reason: "promoted by \(actor) at \(r.weight)%\(reason.map { ": \($0)" } ?? "")", measurements: nil, failures: r.failures)
        else {
            throw RegistryError(.conflict, "rollout \(r.id) changed state meanwhile; look at `depot rollout status`")
        }
        return try status(repository, environment)
    }

    /// Cancels a pipeline job and aborts the rollout it started, if that is still going: the one
    /// place the rule "cancelling a job aborts its rollout" lives. The job side comes in through
    /// `JobCancelling` because `DepotDeploy` and `DepotPipelines` are sibling layers
    /// (docs/ARCHITECTURE.md), neither importing the other; the server passes its `JobQueue`.
    /// The rule belongs here, beside the rollout state machine, since what it changes is a rollout.
    public func cancelJob<Jobs: JobCancelling>(_ id: Int64, actor: String, in jobs: Jobs) throws -> Jobs.CancelledJob {
        let job = try jobs.cancel(id, actor: actor)
        try abortRollout(forJob: id, actor: actor)
        return job
    }

    /// Aborts the rollout a pipeline job started, if it is still going (the job was cancelled).
    func abortRollout(forJob job: Int64, actor: String) throws {
        let found = try db.read { conn -> (DeploymentRecord, RolloutRecord)? in
            guard let r = try conn.rollout(forJob: job), r.isActive, let d = try conn.deployment(id: r.deploymentID) else { return nil }
            return (d, r)
        }
        guard let (d, r) = found else { return }
        _ = try finish(
            d, r, state: .aborted, decision: "abort", actor: actor, reason: "job \(job) cancelled by \(actor)",
            measurements: nil, failures: r.failures)
    }

    /// Aborts: the canary goes to 0 and the alias back to the stable digest.
    public func abort(_ repository: RepositoryName, _ environment: String, actor: String, reason: String?) throws -> Status {
        let (d, r) = try active(repository, environment)
        guard
            try finish(
                d, r, state: .aborted, decision: "abort", actor: actor,
                reason: "aborted by \(actor) at \(r.weight)%\(reason.map { ": \($0)" } ?? "")", measurements: nil, failures: r.failures)
        else {
            throw RegistryError(.conflict, "rollout \(r.id) changed state meanwhile; look at `depot rollout status`")
        }
        return try status(repository, environment)
    }
}

/// What can cancel a pipeline job (`DepotPipelines.JobQueue`): the job side of `Deployments.cancelJob`.
public protocol JobCancelling {
    /// What `cancel` answers (the queue's job record).
    associatedtype CancelledJob
    /// Cancels a queued, leased or running job; throws when it cannot be cancelled.
    func cancel(_ id: Int64, actor: String) throws -> CancelledJob
}
