import DepotAPI
import DepotCatalog
import DepotCore
import DepotDeploy
import DepotRegistry
import Foundation
import Hummingbird
import NIOCore

/// Handlers of deployments and canary rollouts (`/depot/v1/repositories/<name>/deployments/<env>…`,
/// `/depot/v1/deployments`, `/depot/v1/lineage/<digest>/served`). See docs/EXTENSION-API.md.
struct DeployHandlers: RouteHandlers {
    let registry: Registry
    let deployments: Deployments

    func list(_ match: RouteMatch, _ request: Request) async throws -> Response {
        let deployments = self.deployments
        let list = try await offload { try deployments.registry.store.catalog.read { try $0.deployments() } }
        return Reply.encoded(
            DeploymentListAnswer(
                deployments: try list.map { d in
                    DeploymentSummary(
                        repository: d.repository, environment: d.environment, model: d.modelName, weight: d.weight,
                        stable: try Self.digest(d.stable), canary: try Self.digest(d.canary))
                }))
    }

    func served(_ match: RouteMatch, _ request: Request) async throws -> Response {
        let digest = match["digest"]
        let deployments = self.deployments
        let d = try RequestParsing.digest(digest)
        let list = try await offload { try deployments.served(digest: d) }
        return Reply.encoded(
            ServedAnswer(
                digest: d,
                served: list.map { s in
                    ServedIntervalInfo(
                        repository: s.repository, environment: s.environment, role: s.role, weight: s.weight, from: Self.iso(s.from),
                        to: s.to.map(Self.iso))
                }))
    }

    func status(_ match: RouteMatch, _ request: Request) async throws -> Response {
        let env = match["environment"]
        let deployments = self.deployments
        let repo = try Self.name(match)
        let status = try await offload { try deployments.status(repo, env) }
        return Reply.encoded(try Self.answer(status))
    }

    func start(_ match: RouteMatch, _ request: Request) async throws -> Response {
        let env = match["environment"]
        let deployments = self.deployments
        let actor = Self.actor(request)
        let repo = try Self.name(match)
        let body = try await self.body(request, as: RolloutStartRequest.self)
        guard let reference = body.reference ?? body.digest else {
            throw RegistryError(.invalidRequest, "body needs \"reference\": a tag or digest of a Triton bundle")
        }
        let ref = try RequestParsing.reference(reference)
        let steps = body.steps
        let analysis = body.analysisSeconds
        let status = try await offload { try deployments.start(repo, env, ref, actor: actor, steps: steps, analysisSeconds: analysis) }
        return Reply.encoded(try Self.answer(status), status: 201)
    }

    /// `action` is resume, promote or abort (the route says which).
    func control(_ match: RouteMatch, _ request: Request, _ action: String) async throws -> Response {
        let env = match["environment"]
        let deployments = self.deployments
        let actor = Self.actor(request)
        let repo = try Self.name(match)
        let reason = try await body(request, as: RolloutControlRequest.self).reason
        let status = try await offload { () -> Deployments.Status in
            switch action {
            case "resume": return try deployments.resume(repo, env, actor: actor)
            case "promote": return try deployments.promote(repo, env, actor: actor, reason: reason)
            default: return try deployments.abort(repo, env, actor: actor, reason: reason)
            }
        }
        return Reply.encoded(try Self.answer(status))
    }

    func resolve(_ match: RouteMatch, _ request: Request) async throws -> Response {
        let env = match["environment"]
        let deployments = self.deployments
        let repo = try Self.name(match)
        guard let node = request.uri.queryParameters["node"].map(String.init), !node.isEmpty else {
            throw RegistryError(.invalidRequest, "resolve needs ?node=ID")
        }
        let r = try await offload { try deployments.resolve(repo, env, node: node) }
        return Reply.encoded(
            DeploymentResolution(digest: try Digest(parsing: r.digest), version: r.version, model: r.model, role: r.role, weight: r.weight))
    }

    func report(_ match: RouteMatch, _ request: Request) async throws -> Response {
        let env = match["environment"]
        let node = match["node"]
        let deployments = self.deployments
        let repo = try Self.name(match)
        let body = try await self.body(request, as: NodeReportRequest.self)
        let state = body.state
        let digest = try body.digest.map { try RequestParsing.digest($0).description }
        let version = body.version
        let reason = body.reason
        try await offload {
            try deployments.report(repo, env, node: node, digest: digest, version: version, state: state.rawValue, reason: reason)
        }
        return Reply.encoded(NodeReportAnswer(node: node, state: state))
    }

    /// A digest the catalog holds (written there parsed), typed for the wire.
    static func digest(_ text: String?) throws -> Digest? {
        try text.map { try Digest(parsing: $0) }
    }

    static func answer(_ s: Deployments.Status) throws -> DeploymentStatusAnswer {
        let d = s.deployment
        let deployment = DeploymentInfo(
            repository: d.repository, environment: d.environment, model: d.modelName, weight: d.weight, updatedAt: iso(d.updatedAt),
            stable: try digest(d.stable), canary: try digest(d.canary), stableVersion: s.stableVersion, canaryVersion: s.canaryVersion)
        let rollout = try s.rollout.map { r in
            RolloutInfo(
                id: r.id, state: r.state, canary: try Digest(parsing: r.canary), stable: try digest(r.stable), steps: r.steps,
                step: r.stepIndex + 1, weight: r.weight, analysisSeconds: Double(r.analysisMs) / 1000, failures: r.failures,
                startedBy: r.startedBy, startedAt: iso(r.createdAt), stepStartedAt: iso(r.stepStartedAt), reason: r.reason,
                finishedAt: r.finishedAt.map(iso),
                decisions: s.decisions.map { c in
                    RolloutDecisionInfo(
                        at: iso(c.at), decision: c.decision, step: c.stepIndex + 1, weight: c.weight, actor: c.actor, reason: c.reason,
                        // Stored as the JSON the canary analysis wrote; shown as it is.
                        measurements: c.measurements.flatMap {
                            try? WireJSON.decode(JSONValue.self, from: Array($0.utf8), what: "measurements")
                        })
                })
        }
        let nodes = try s.nodes.map { n in
            DeploymentNodeInfo(
                node: n.node, seenAt: iso(n.seenAt), digest: try digest(n.digest), version: n.version, state: n.state, reason: n.reason,
                reportedAt: n.reportedAt.map(iso))
        }
        return DeploymentStatusAnswer(deployment: deployment, rollout: rollout, nodes: nodes)
    }
}
