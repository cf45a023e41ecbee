import DepotAPI
import DepotCatalog
import DepotCore
import DepotRegistry
import Foundation
import HTTPTypes
import Hummingbird
import NIOCore

/// Handlers for aliases, pins, lineage, the audit journal, events and webhook deliveries under `/depot/v1`.
struct GovernanceHandlers: RouteHandlers {
    let registry: Registry
    /// `/depot/v1/audit/verify` re-hashes the whole journal: one at a time (never a cached answer:
    /// an auditor verifying right after a suspected edit must see it).
    let auditVerifications = SharedRecentResult<AuditVerification>(maxAge: .zero)

    static func json(_ move: TagMove) -> [String: Any] {
        var o: [String: Any] = ["id": move.id, "tag": move.tag, "actor": move.actor, "at": iso(move.at), "at_ms": move.at]
        if let f = move.from { o["from"] = f.description }
        if let t = move.to { o["to"] = t.description }
        if let r = move.reason { o["reason"] = r }
        return o
    }

    static func json(_ e: LineageEdge) -> [String: Any] {
        var o: [String: Any] = [
            "child": e.child.description, "parent": e.parent.description, "relation": e.relation,
            "parent_ref": e.parentRef, "repository": e.repository, "at": iso(e.createdAt),
        ]
        if let v = e.run { o["run"] = v }
        if let v = e.dataset { o["dataset"] = v }
        if let v = e.commit { o["commit"] = v }
        if let v = e.job { o["job"] = v }
        if let m = e.metrics, let obj = try? JSONSerialization.jsonObject(with: Data(m.utf8)) { o["metrics"] = obj }
        return o
    }

    static func json(_ n: LineageNode) -> [String: Any] {
        var o: [String: Any] = ["digest": n.digest.description, "depth": n.depth, "edge": json(n.edge), "stored": n.stored]
        if let t = n.artifactType { o["artifact_type"] = t }
        return o
    }

    func aliasMove(_ match: RouteMatch, _ request: Request) async throws -> Response {
        let alias = match["alias"]
        let registry = self.registry
        let actor = Self.actor(request)
        let repo = try Self.name(match)
        let body = try await jsonBody(request)
        guard let target = (body["digest"] ?? body["reference"]) as? String else {
            throw RegistryError(.unsupported, "body needs \"digest\" (or \"reference\": a tag or digest)", status: 400)
        }
        let expect = try (body["expect"] as? String).map(RequestParsing.digest) ?? Self.ifMatch(request)
        let reason = body["reason"] as? String
        let ref = try RequestParsing.reference(target)
        let (previous, digest) = try await offload { () -> (Digest?, Digest) in
            let digest = try registry.manifest(repo, ref).digest
            return (try registry.setAlias(repo, alias, to: digest, expect: expect, actor: actor, reason: reason), digest)
        }
        var out: [String: Any] = ["repository": repo.value, "alias": alias, "digest": digest.description]
        if let previous { out["previous"] = previous.description }
        return Reply.json(out)
    }

    func aliasGet(_ match: RouteMatch, _ request: Request) async throws -> Response {
        let alias = match["alias"]
        let registry = self.registry
        let repo = try Self.name(match)
        let m = try await offload { try registry.manifest(repo, .tag(alias)) }
        return Reply.json(["repository": repo.value, "alias": alias, "digest": m.digest.description])
    }

    func aliasHistory(_ match: RouteMatch, _ request: Request) async throws -> Response {
        let alias = match["alias"]
        let registry = self.registry
        let repo = try Self.name(match)
        let moves = try await offload { try registry.aliasHistory(repo, alias) }
        return Reply.json(["repository": repo.value, "alias": alias, "moves": moves.map(Self.json)])
    }

    func aliasRollback(_ match: RouteMatch, _ request: Request) async throws -> Response {
        let alias = match["alias"]
        let registry = self.registry
        let actor = Self.actor(request)
        let repo = try Self.name(match)
        let body = try await jsonBody(request)
        let to = try (body["to"] as? String).map(RequestParsing.digest)
        let steps = body["steps"] as? Int ?? 1
        let reason = body["reason"] as? String
        let r = try await offload { try registry.rollback(repo, alias, to: to, steps: steps, actor: actor, reason: reason) }
        return Reply.json(["repository": repo.value, "alias": alias, "from": r.from.description, "to": r.to.description])
    }

    func aliasResolve(_ match: RouteMatch, _ request: Request) async throws -> Response {
        let alias = match["alias"]
        let registry = self.registry
        let query = request.uri.queryParameters
        let repo = try Self.name(match)
        let at = try query["at"].map { try Self.time(String($0)) } ?? Int64(Date().timeIntervalSince1970 * 1000)
        let digest = try await offload { try registry.resolve(repo, alias, at: at) }
        guard let digest else {
            throw RegistryError(.manifestUnknown, "\(repo):\(alias) pointed at nothing at \(Self.iso(at))")
        }
        var out: [String: Any] = ["repository": repo.value, "alias": alias, "at": Self.iso(at), "digest": digest.description]
        if query["lineage"] != nil {
            let ancestors = try await offload { try registry.lineage(of: digest, up: true) }
            out["ancestors"] = ancestors.map(Self.json)
        }
        return Reply.json(out)
    }

    func pinPut(_ match: RouteMatch, _ request: Request) async throws -> Response {
        let ref = match["reference"]
        let registry = self.registry
        let actor = Self.actor(request)
        let repo = try Self.name(match)
        let reference = try RequestParsing.reference(ref)
        let reason = try await jsonBody(request)["reason"] as? String
        let digest = try await offload { try registry.pin(repo, reference, reason: reason, actor: actor) }
        return Reply.json(["repository": repo.value, "digest": digest.description, "pinned": true])
    }

    func pinDelete(_ match: RouteMatch, _ request: Request) async throws -> Response {
        let ref = match["reference"]
        let registry = self.registry
        let actor = Self.actor(request)
        let repo = try Self.name(match)
        let reference = try RequestParsing.reference(ref)
        let digest = try await offload { try registry.unpin(repo, reference, actor: actor) }
        return Reply.json(["repository": repo.value, "digest": digest.description, "pinned": false])
    }

    func pins(_ match: RouteMatch, _ request: Request) async throws -> Response {
        let registry = self.registry
        let actor = Self.actor(request)
        let pins = try await offload { try registry.pins() }
        return Reply.json([
            "pins": pins.map { p -> [String: Any] in
                var o: [String: Any] = [
                    "digest": p.digest.description, "repository": p.repository, "actor": p.actor, "at": Self.iso(p.at),
                ]
                if let r = p.reason { o["reason"] = r }
                return o
            }
        ])
    }

    func lineage(_ match: RouteMatch, _ request: Request) async throws -> Response {
        let digestText = match["digest"]
        let registry = self.registry
        let query = request.uri.queryParameters
        let digest = try RequestParsing.digest(digestText)
        let direction = query["direction"].map(String.init) ?? "ancestors"
        guard direction == "ancestors" || direction == "descendants" else {
            throw RegistryError(.unsupported, "direction is ancestors or descendants", status: 400)
        }
        let depth = try RequestParsing.query(request, "depth", in: 1...1000) ?? 64
        let relations = query["relation"].map { $0.split(separator: ",").map(String.init) }
        let artifactType = query["artifact_type"].map(String.init)
        let nodes = try await offload {
            try registry.lineage(
                of: digest, up: direction == "ancestors", depth: depth, relations: relations, artifactType: artifactType)
        }
        return Reply.json(["digest": digest.description, "direction": direction, "nodes": nodes.map(Self.json)])
    }

    func impact(_ match: RouteMatch, _ request: Request) async throws -> Response {
        let digestText = match["digest"]
        let registry = self.registry
        let digest = try RequestParsing.digest(digestText)
        let report = try await offload { try registry.impact(of: digest) }
        return Reply.json([
            "digest": digest.description, "derived": report.derived.map(Self.json),
            "tags": report.tags.map { ["repository": $0.repository, "tag": $0.tag, "digest": $0.digest.description] },
        ])
    }

    func lineagePath(_ match: RouteMatch, _ request: Request) async throws -> Response {
        let registry = self.registry
        let query = request.uri.queryParameters
        guard let f = query["from"], let t = query["to"] else {
            throw RegistryError(.unsupported, "needs ?from=DIGEST&to=DIGEST", status: 400)
        }
        let (from, to) = (try RequestParsing.digest(String(f)), try RequestParsing.digest(String(t)))
        let path = try await offload { try registry.lineagePath(from: from, to: to) }
        guard let path else { throw RegistryError(.manifestUnknown, "no derivation path from \(from) to \(to)") }
        return Reply.json(["from": from.description, "to": to.description, "edges": path.map(Self.json)])
    }

    func audit(_ match: RouteMatch, _ request: Request) async throws -> Response {
        let registry = self.registry
        let actor = Self.actor(request)
        let query = request.uri.queryParameters
        var filter = AuditFilter()
        filter.repository = query["repository"].map(String.init)
        filter.action = query["action"].map(String.init)
        filter.since = try query["since"].map { try Self.time(String($0)) }
        filter.until = try query["until"].map { try Self.time(String($0)) }
        if let l = query["limit"] {
            filter.limit = Int(min(try RequestParsing.integer(l, "limit", in: 1...Int64.max), 100_000))
        }
        let chosen = filter
        let entries = try await offload { try registry.auditLog(chosen) }
        return Reply.json([
            "entries": entries.map { e -> [String: Any] in
                var o: [String: Any] = ["id": e.id, "at": Self.iso(e.at), "actor": e.actor, "action": e.action, "hash": e.hash]
                if let v = e.repository { o["repository"] = v }
                if let v = e.digest { o["digest"] = v }
                if let v = e.tag { o["tag"] = v }
                if let d = e.details, let obj = try? JSONSerialization.jsonObject(with: Data(d.utf8)) { o["details"] = obj }
                return o
            }
        ])
    }

    func auditVerify(_ match: RouteMatch, _ request: Request) async throws -> Response {
        let registry = self.registry
        let v = try await auditVerifications.result { try await offload { try registry.verifyAudit() } }
        var o: [String: Any] = ["entries": v.entries, "intact": v.intact]
        if let id = v.firstBrokenID { o["first_broken_id"] = id }
        if let p = v.problem { o["problem"] = p }
        if let h = v.headHash { o["head_hash"] = h }
        return Reply.json(o)
    }

    func events(_ match: RouteMatch, _ request: Request) async throws -> Response {
        let registry = self.registry
        let query = request.uri.queryParameters
        let after = try query["after"].map { try RequestParsing.integer($0, "after (an event cursor)", in: 0...Int64.max) } ?? 0
        let limit = try RequestParsing.pageSize(request).map { max(1, $0) } ?? 100
        let events = try await offload { try registry.events(after: after, limit: limit) }
        // The payloads are stored JSON: splice them in as they are.
        var body = "{\"events\":[" + events.map(\.payload).joined(separator: ",") + "],\"next\":\"\(events.last?.id ?? after)\"}"
        body += "\n"
        return Reply.bytes(Array(body.utf8), contentType: "application/json")
    }

    func deliveries(_ match: RouteMatch, _ request: Request) async throws -> Response {
        let registry = self.registry
        let query = request.uri.queryParameters
        let webhook = query["webhook"].map(String.init)
        let limit = try RequestParsing.pageSize(request).map { max(1, $0) } ?? 100
        let rows = try await offload { try registry.deliveries(webhook: webhook, limit: limit) }
        return Reply.json([
            "deliveries": rows.map { d -> [String: Any] in
                var o: [String: Any] = [
                    "webhook": d.webhook, "event": String(d.eventID), "attempt": d.attempt, "at": Self.iso(d.at),
                    "duration_ms": d.durationMs, "outcome": d.outcome,
                ]
                if let s = d.status { o["status"] = s }
                if let e = d.error { o["error"] = e }
                return o
            }
        ])
    }
}
