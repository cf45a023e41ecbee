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
        return Reply.json([
            "deployments": list.map { d -> [String: Any] in
                var o: [String: Any] = [
                    "repository": d.repository, "environment": d.environment, "model": d.modelName, "weight": d.weight,
                ]
                if let s = d.stable { o["stable"] = s }
                if let c = d.canary { o["canary"] = c }
                return o
            }
        ])
    }

    func served(_ match: RouteMatch, _ request: Request) async throws -> Response {
        let digest = match["digest"]
        let deployments = self.deployments
        let d = try RequestParsing.digest(digest)
        let list = try await offload { try deployments.served(digest: d) }
        return Reply.json([
            "digest": d.description,
            "served": list.map { s -> [String: Any] in
                var o: [String: Any] = [
                    "repository": s.repository, "environment": s.environment, "role": s.role, "weight": s.weight,
                    "from": Self.iso(s.from),
                ]
                if let to = s.to { o["to"] = Self.iso(to) }
                return o
            },
        ])
    }

    func status(_ match: RouteMatch, _ request: Request) async throws -> Response {
        let env = match["environment"]
        let deployments = self.deployments
        let repo = try Self.name(match)
        let status = try await offload { try deployments.status(repo, env) }
        return Reply.json(Self.json(status))
    }

    func start(_ match: RouteMatch, _ request: Request) async throws -> Response {
        let env = match["environment"]
        let deployments = self.deployments
        let actor = Self.actor(request)
        let repo = try Self.name(match)
        let body = try await jsonBody(request)
        guard let reference = (body["reference"] ?? body["digest"]) as? String else {
            throw RegistryError(.invalidRequest, "body needs \"reference\": a tag or digest of a Triton bundle")
        }
        let ref = try RequestParsing.reference(reference)
        let steps = body["steps"] as? [Int]
        let analysis = (body["analysis_seconds"] as? NSNumber)?.doubleValue
        let status = try await offload { try deployments.start(repo, env, ref, actor: actor, steps: steps, analysisSeconds: analysis) }
        return Reply.json(Self.json(status), status: 201)
    }

    /// `action` is resume, promote or abort (the route says which).
    func control(_ match: RouteMatch, _ request: Request, _ action: String) async throws -> Response {
        let env = match["environment"]
        let deployments = self.deployments
        let actor = Self.actor(request)
        let repo = try Self.name(match)
        let reason = try await jsonBody(request)["reason"] as? String
        let status = try await offload { () -> Deployments.Status in
            switch action {
            case "resume": return try deployments.resume(repo, env, actor: actor)
            case "promote": return try deployments.promote(repo, env, actor: actor, reason: reason)
            default: return try deployments.abort(repo, env, actor: actor, reason: reason)
            }
        }
        return Reply.json(Self.json(status))
    }

    func resolve(_ match: RouteMatch, _ request: Request) async throws -> Response {
        let env = match["environment"]
        let deployments = self.deployments
        let repo = try Self.name(match)
        guard let node = request.uri.queryParameters["node"].map(String.init), !node.isEmpty else {
            throw RegistryError(.invalidRequest, "resolve needs ?node=ID")
        }
        let r = try await offload { try deployments.resolve(repo, env, node: node) }
        return Reply.json(["digest": r.digest, "version": r.version, "model": r.model, "role": r.role, "weight": r.weight])
    }

    func report(_ match: RouteMatch, _ request: Request) async throws -> Response {
        let env = match["environment"]
        let node = match["node"]
        let deployments = self.deployments
        let repo = try Self.name(match)
        let body = try await jsonBody(request)
        guard let state = body["state"] as? String else {
            throw RegistryError(.invalidRequest, "body needs \"state\": ready or failed")
        }
        let digest = try (body["digest"] as? String).map { try RequestParsing.digest($0).description }
        let version = (body["version"] as? NSNumber)?.intValue
        let reason = body["reason"] as? String
        try await offload {
            try deployments.report(repo, env, node: node, digest: digest, version: version, state: state, reason: reason)
        }
        return Reply.json(["node": node, "state": state])
    }

    static func json(_ s: Deployments.Status) -> [String: Any] {
        let d = s.deployment
        var deployment: [String: Any] = [
            "repository": d.repository, "environment": d.environment, "model": d.modelName,
            "weight": d.weight, "updated_at": iso(d.updatedAt),
        ]
        if let v = d.stable { deployment["stable"] = v }
        if let v = d.canary { deployment["canary"] = v }
        if let v = s.stableVersion { deployment["stable_version"] = v }
        if let v = s.canaryVersion { deployment["canary_version"] = v }
        var out: [String: Any] = ["deployment": deployment]
        if let r = s.rollout {
            var o: [String: Any] = [
                "id": r.id, "state": r.state.rawValue, "canary": r.canary, "steps": r.steps, "step": r.stepIndex + 1,
                "weight": r.weight, "analysis_seconds": Double(r.analysisMs) / 1000, "failures": r.failures,
                "started_by": r.startedBy, "started_at": iso(r.createdAt), "step_started_at": iso(r.stepStartedAt),
            ]
            if let v = r.stable { o["stable"] = v }
            if let v = r.reason { o["reason"] = v }
            if let v = r.finishedAt { o["finished_at"] = iso(v) }
            o["decisions"] = s.decisions.map { c -> [String: Any] in
                var e: [String: Any] = [
                    "at": iso(c.at), "decision": c.decision, "step": c.stepIndex + 1, "weight": c.weight, "actor": c.actor,
                ]
                if let v = c.reason { e["reason"] = v }
                if let m = c.measurements, let obj = try? JSONSerialization.jsonObject(with: Data(m.utf8)) { e["measurements"] = obj }
                return e
            }
            out["rollout"] = o
        }
        out["nodes"] = s.nodes.map { n -> [String: Any] in
            var o: [String: Any] = ["node": n.node, "seen_at": iso(n.seenAt)]
            if let v = n.digest { o["digest"] = v }
            if let v = n.version { o["version"] = v }
            if let v = n.state { o["state"] = v.rawValue }
            if let v = n.reason { o["reason"] = v }
            if let v = n.reportedAt { o["reported_at"] = iso(v) }
            return o
        }
        return out
    }
}
