import DepotAPI
import DepotCatalog
import DepotCore
import DepotRegistry
import Foundation

/// Deployments and their rollouts: which digest each node of an environment serves, and the
/// canary state machine (start → step … → promote, or pause / rollback / abort). State is in
/// the catalog; every transition is one transaction guarded by the state (and step) it expects,
/// so the controller and an operator's command never both win, and a restart carries on.
///
/// The environment alias (e.g. `production`) names the desired version: it moves to the canary
/// when a rollout starts and back to the stable digest on rollback or abort, so its history is
/// the rollout history, with the reasons and the metric values.
public final class Deployments: Sendable {
    public let registry: Registry
    public let policy: CanaryPolicy
    /// Called after every weight change (the router hook).
    let onWeightChange: @Sendable (DeploymentRecord) -> Void
    /// The deploy policy (signatures a bundle needs per environment); nil: none.
    let admission: (any DeployAdmission)?
    var db: Database { registry.store.catalog }

    public init(
        registry: Registry, policy: CanaryPolicy, admission: (any DeployAdmission)? = nil,
        onWeightChange: @escaping @Sendable (DeploymentRecord) -> Void = { _ in }
    ) {
        self.registry = registry
        self.policy = policy
        self.admission = admission
        self.onWeightChange = onWeightChange
    }

    static func now() -> Int64 { Int64(Date().timeIntervalSince1970 * 1000) }

    /// Everything `depot rollout status` shows.
    public struct Status: Sendable {
        public var deployment: DeploymentRecord
        public var stableVersion: Int?
        public var canaryVersion: Int?
        public var rollout: RolloutRecord?
        public var decisions: [RolloutDecision]
        public var nodes: [DeploymentNode]
    }

    /// What a node should serve.
    public struct Resolution: Sendable {
        public var digest: String
        public var version: Int
        public var model: String
        public var role: String
        public var weight: Int
    }

    func deployment(_ conn: any CatalogConnection, _ repository: RepositoryName, _ environment: String) throws -> DeploymentRecord {
        guard let d = try conn.deployment(repository: repository.value, environment: environment) else {
            throw RegistryError(.nameUnknown, "no deployment \(repository):\(environment) (start one with `depot rollout start`)")
        }
        return d
    }

    // MARK: starting

    /// Starts a rollout of `reference` (a Triton bundle) in the environment. The first deployment
    /// of an environment has nothing to compare with: the bundle becomes stable at once.
    public func start(
        _ repository: RepositoryName, _ environment: String, _ reference: Reference, actor: String,
        steps: [Int]? = nil, analysisSeconds: Double? = nil, jobID: Int64? = nil
    ) throws -> Status {
        guard Reference.isValidTag(environment) else {
            throw RegistryError(.tagInvalid, "'\(environment.prefix(100))' is not a valid alias")
        }
        guard !registry.policy.isImmutable(environment) else {
            throw RegistryError(.denied, "'\(environment)' matches an immutable tag pattern (aliases.immutable): a rollout moves it")
        }
        let steps = steps ?? policy.steps
        guard !steps.isEmpty, steps.allSatisfy({ (1...100).contains($0) }), zip(steps, steps.dropFirst()).allSatisfy({ $0 < $1 }),
            steps.last == 100
        else {
            throw RegistryError(.invalidRequest, "steps must increase within 1...100 and end at 100 (got \(steps))")
        }
        let analysis = analysisSeconds ?? policy.analysisSeconds
        guard analysis >= 1, analysis <= 7 * 86400 else {
            throw RegistryError(.invalidRequest, "the analysis interval must be between 1 s and 7 days")
        }
        let manifest = try registry.manifest(repository, reference)
        let model = try Self.tritonModel(manifest)
        try admission?.admit(repository, environment: environment, manifest: manifest, actor: actor)
        let digest = manifest.digest.description
        var changed: DeploymentRecord?
        let result = try db.write { conn -> Status in
            // The audit append below takes this lock anyway; taken first, it also orders the reads,
            // so two replicas starting the first rollout of a deployment at once do not both create
            // it (a unique violation): the second sees the first's rollout and gets a 409.
            try conn.lock(.appends)
            // Resolved before the transaction; a delete that committed since would leave the
            // deployment serving a manifest that no longer exists (deletes refuse deployed ones
            // only once the rollout is committed).
            guard let repo = try conn.repositoryID(repository.value), try conn.manifestExists(repo: repo, manifest.digest) else {
                throw RegistryError(.manifestUnknown, "manifest \(digest) is not in \(repository) (deleted meanwhile)")
            }
            let now = Self.now()
            var d =
                try conn.deployment(repository: repository.value, environment: environment)
                ?? conn.createDeployment(repository: repository.value, environment: environment, modelName: model, now: now)
            guard d.modelName == model else {
                throw RegistryError(
                    .invalidRequest, "the bundle serves model '\(model)'; \(repository):\(environment) serves '\(d.modelName)'")
            }
            if let active = try conn.activeRollout(deployment: d.id) {
                throw RegistryError(
                    .conflict,
                    "rollout \(active.id) of \(short(active.canary)) is \(active.state.rawValue) at \(active.weight)%: promote, abort or wait for it first"
                )
            }
            let version = try conn.deploymentVersion(d.id, digest: digest)
            var rollout = RolloutRecord(
                id: 0, deploymentID: d.id, stable: d.stable, canary: digest, state: .running, steps: steps,
                stepIndex: 0, weight: steps[0], analysisMs: Int64(analysis * 1000), stepStartedAt: now,
                failures: [:], startedBy: actor, jobID: jobID, reason: nil, createdAt: now, finishedAt: nil)
            if d.stable == nil {
                // First deployment: nothing to compare with.
                rollout.state = .promoted
                rollout.weight = 0
                rollout.finishedAt = now
                rollout.reason = "initial deployment"
                rollout.id = try conn.insertRollout(rollout)
                d.stable = digest
                d.canary = nil
                d.weight = 0
                try conn.appendDecision(
                    rollout: rollout.id,
                    RolloutDecision(
                        at: now, stepIndex: 0, weight: 100, decision: "initial", actor: actor,
                        reason: "first deployment of \(environment): stable at once", measurements: nil))
            } else {
                guard d.stable != digest else {
                    throw RegistryError(.conflict, "\(short(digest)) is already the stable version of \(repository):\(environment)")
                }
                rollout.id = try conn.insertRollout(rollout)
                d.canary = digest
                d.weight = steps[0]
                try conn.appendDecision(
                    rollout: rollout.id,
                    RolloutDecision(
                        at: now, stepIndex: 0, weight: steps[0], decision: "start", actor: actor,
                        reason: "canary \(short(digest)) (version \(version)) at \(steps[0])%", measurements: nil))
            }
            try conn.setDeployment(d.id, stable: d.stable, canary: d.canary, weight: d.weight, now: now)
            try conn.recordServing(deployment: d, now: now)
            try conn.appendAudit(
                at: now, actor: actor, action: d.canary == nil ? "deploy.initial" : "canary.start", repository: repository.value,
                digest: digest, tag: environment,
                details: ["rollout": .int(rollout.id), "weight": JSONValue(d.weight), "version": JSONValue(version)])
            // The alias moves in the same transaction: a crash leaves both or neither.
            try registry.setAlias(
                conn, repository, environment, to: manifest.digest, actor: actor,
                reason: "rollout \(rollout.id): \(rollout.state == .promoted ? "initial deployment" : "canary at \(rollout.weight)%")",
                action: "canary")
            changed = d
            return try self.status(conn, d)
        }
        registry.aliasesChanged()
        if let changed { onWeightChange(changed) }
        return result
    }

    /// The Triton model a bundle serves: the directory holding its `config.pbtxt`.
    public static func tritonModel(_ manifest: ManifestRecord) throws -> String {
        guard let document = try? WireJSON.decode(OCIManifestDocument.self, from: manifest.content, what: "manifest") else {
            throw RegistryError(.manifestInvalid, "manifest \(manifest.digest) is not an OCI image manifest")
        }
        let type = document.artifactType ?? document.config?.mediaType ?? "none"
        guard type == ModelMediaType.tritonBundle else {
            throw RegistryError(
                .invalidRequest,
                "\(short(manifest.digest.description)) is not a Triton bundle (artifactType \(type)); deploy a package stage's output")
        }
        for layer in document.layers ?? [] {
            let a = layer.annotations ?? [:]
            guard let path = a[ModelMediaType.filepath] ?? a[ModelMediaType.title] else { continue }
            let parts = path.split(separator: "/")
            if parts.count == 2, parts[1] == "config.pbtxt" {
                let model = String(parts[0])
                guard Self.isSafeName(model) else {
                    throw RegistryError(
                        .invalidRequest, "Triton model name '\(model.prefix(80))' must be 1-128 of A-Z a-z 0-9 _ . - (not only dots)")
                }
                return model
            }
        }
        throw RegistryError(.invalidRequest, "the bundle has no <model>/config.pbtxt (a Triton model repository with one model)")
    }

    /// A model name or node id usable in paths and URLs: `[A-Za-z0-9_.-]{1,128}`, not only dots.
    public static func isSafeName(_ s: String) -> Bool {
        !s.isEmpty && s.count <= 128 && !s.allSatisfy({ $0 == "." })
            && s.unicodeScalars.allSatisfy {
                ($0 >= "a" && $0 <= "z") || ($0 >= "A" && $0 <= "Z") || ($0 >= "0" && $0 <= "9") || "_.-".unicodeScalars.contains($0)
            }
    }

    // MARK: nodes

    /// What `node` should serve now; remembers the node (it counts when nodes are split).
    public func resolve(_ repository: RepositoryName, _ environment: String, node: String) throws -> Resolution {
        guard Self.isSafeName(node) else { throw RegistryError(.invalidRequest, "node id must be 1-128 of A-Z a-z 0-9 _ . -") }
        return try db.write { conn in
            let d = try deployment(conn, repository, environment)
            guard let stable = d.stable else {
                throw RegistryError(.manifestUnknown, "nothing is deployed to \(repository):\(environment)")
            }
            let now = Self.now()
            try conn.touchNode(deployment: d.id, node: node, now: now)
            let ttl = Int64(policy.nodeTTLSeconds * 1000)
            let active = try conn.nodes(deployment: d.id).filter { now - $0.seenAt <= ttl }.map(\.node)
            let canaryNodes = Self.canaryNodes(active, weight: d.canary == nil ? 0 : d.weight, salt: "\(d.id)")
            let onCanary = d.canary != nil && canaryNodes.contains(node)
            let digest = onCanary ? d.canary! : stable
            return Resolution(
                digest: digest, version: try conn.deploymentVersion(d.id, digest: digest), model: d.modelName,
                role: onCanary ? "canary" : "stable", weight: d.canary == nil ? 0 : d.weight)
        }
    }

    /// The nodes on the canary: nodes ranked by a stable hash of their id; the first
    /// round(n × weight%) of them, at least one while the weight is above 0 and at most n-1 until
    /// it is 100 (a single node switches only at 100%: use a router hook to split one node's traffic).
    public static func canaryNodes(_ nodes: [String], weight: Int, salt: String) -> Set<String> {
        let n = nodes.count
        guard weight > 0, n > 0 else { return [] }
        let count: Int
        if weight >= 100 {
            count = n
        } else if n == 1 {
            count = 0
        } else {
            count = Swift.max(1, Swift.min(n - 1, Int((Double(n) * Double(weight) / 100).rounded())))
        }
        let ranked = nodes.sorted {
            Digest.of(Array("\(salt)/\($0)".utf8)).description < Digest.of(Array("\(salt)/\($1)".utf8)).description
        }
        return Set(ranked.prefix(count))
    }

    /// A node reports what it serves (`ready`) or that a bundle failed to load (`failed`);
    /// `state` is the request's text, parsed here.
    public func report(
        _ repository: RepositoryName, _ environment: String, node: String, digest: String?, version: Int?,
        state: String, reason: String?
    ) throws {
        guard let state = NodeState(rawValue: state) else {
            throw RegistryError(.invalidRequest, "state must be ready or failed")
        }
        guard Self.isSafeName(node) else { throw RegistryError(.invalidRequest, "node id must be 1-128 of A-Z a-z 0-9 _ . -") }
        if let version, version < 1 { throw RegistryError(.invalidRequest, "version must be at least 1") }
        try db.write { conn in
            let d = try deployment(conn, repository, environment)
            try conn.reportNode(
                deployment: d.id, node: node, digest: digest, version: version, state: state,
                reason: reason.map { String($0.prefix(2000)) }, now: Self.now())
        }
    }

    // MARK: status

    public func status(_ repository: RepositoryName, _ environment: String) throws -> Status {
        try db.read { conn in try status(conn, try deployment(conn, repository, environment)) }
    }

    func status(_ conn: any CatalogConnection, _ d: DeploymentRecord) throws -> Status {
        let rollout = try conn.latestRollout(deployment: d.id)
        func version(_ digest: String?) throws -> Int? {
            guard let digest else { return nil }
            return try conn.existingDeploymentVersion(d.id, digest: digest)
        }
        return Status(
            deployment: d, stableVersion: try version(d.stable), canaryVersion: try version(d.canary), rollout: rollout,
            decisions: try rollout.map { try conn.decisions(rollout: $0.id) } ?? [], nodes: try conn.nodes(deployment: d.id))
    }

    /// The rollout a pipeline job started, if any.
    public func rollout(forJob job: Int64) throws -> RolloutRecord? {
        try db.read { try $0.rollout(forJob: job) }
    }

    public func served(digest: Digest) throws -> [ServedInterval] {
        try db.read { try $0.served(digest: digest.description, limit: 1000) }
    }
}

func short(_ digest: String) -> String { digest.hasPrefix("sha256:") ? String(digest.prefix(19)) : digest }
