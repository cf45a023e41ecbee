import DepotAPI
import DepotAuth
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
    /// With authentication on, lineage answers stop at repositories the caller may not pull.
    var auth: AuthService?
    /// `/depot/v1/audit/verify` re-hashes the whole journal: one at a time (never a cached answer:
    /// an auditor verifying right after a suspected edit must see it).
    let auditVerifications = SharedRecentResult<AuditVerification>(maxAge: .zero)

    static func record(_ move: TagMove) -> TagMoveRecord {
        TagMoveRecord(
            id: move.id, tag: move.tag, actor: move.actor, at: iso(move.at), atMs: move.at, from: move.from, to: move.to,
            reason: move.reason)
    }

    static func record(_ e: LineageEdge) -> LineageEdgeRecord {
        // Metrics are stored as the JSON object of the child's `dev.depot.metric.*` annotations.
        let metrics = e.metrics.flatMap { try? WireJSON.decode([String: String].self, from: Array($0.utf8), what: "metrics") }
        return LineageEdgeRecord(
            child: e.child, parent: e.parent, relation: e.relation, parentRef: e.parentRef, repository: e.repository,
            at: iso(e.createdAt), run: e.run, dataset: e.dataset, commit: e.commit, job: e.job, metrics: metrics,
            verifiedJob: e.verifiedJob)
    }

    static func record(_ n: LineageNode) -> LineageNodeRecord {
        LineageNodeRecord(digest: n.digest, depth: n.depth, edge: record(n.edge), stored: n.stored, artifactType: n.artifactType)
    }

    func aliasMove(_ match: RouteMatch, _ request: Request) async throws -> Response {
        let alias = match["alias"]
        let registry = self.registry
        let actor = Self.actor(request)
        let repo = try Self.name(match)
        let body = try await self.body(request, as: AliasMoveRequest.self)
        guard let target = body.digest ?? body.reference else {
            throw RegistryError(.invalidRequest, "body needs \"digest\" (or \"reference\": a tag or digest)")
        }
        let expect = try body.expect.map(RequestParsing.digest) ?? Self.ifMatch(request)
        let reason = body.reason
        let ref = try RequestParsing.reference(target)
        let (previous, digest) = try await offload { () -> (Digest?, Digest) in
            let digest = try registry.manifest(repo, ref).digest
            return (try registry.setAlias(repo, alias, to: digest, expect: expect, actor: actor, reason: reason), digest)
        }
        return Reply.encoded(AliasAnswer(repository: repo.value, alias: alias, digest: digest, previous: previous))
    }

    func aliasGet(_ match: RouteMatch, _ request: Request) async throws -> Response {
        let alias = match["alias"]
        let registry = self.registry
        let repo = try Self.name(match)
        let m = try await offload { try registry.manifest(repo, .tag(alias)) }
        return Reply.encoded(AliasAnswer(repository: repo.value, alias: alias, digest: m.digest))
    }

    func aliasHistory(_ match: RouteMatch, _ request: Request) async throws -> Response {
        let alias = match["alias"]
        let registry = self.registry
        let repo = try Self.name(match)
        let moves = try await offload { try registry.aliasHistory(repo, alias) }
        return Reply.encoded(AliasHistory(repository: repo.value, alias: alias, moves: moves.map(Self.record)))
    }

    func aliasRollback(_ match: RouteMatch, _ request: Request) async throws -> Response {
        let alias = match["alias"]
        let registry = self.registry
        let actor = Self.actor(request)
        let repo = try Self.name(match)
        let body = try await self.body(request, as: AliasRollbackRequest.self)
        let to = try body.to.map(RequestParsing.digest)
        let steps = body.steps ?? 1
        let reason = body.reason
        let r = try await offload { try registry.rollback(repo, alias, to: to, steps: steps, actor: actor, reason: reason) }
        return Reply.encoded(AliasRollbackAnswer(repository: repo.value, alias: alias, from: r.from, to: r.to))
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
        var out = AliasResolution(repository: repo.value, alias: alias, at: Self.iso(at), digest: digest)
        if query["lineage"] != nil {
            var ancestors = try await offload { try registry.lineage(of: digest, up: true) }
            // With authentication on, the walk stops at the first edge recorded in a repository the
            // caller may not pull: what lies beyond it is that repository's history, not this one's.
            if let p = Caller.principal, let policy = auth?.policy {
                let hidden = ancestors.filter { !Authorizer.canPull(p, $0.edge.repository, policy: policy) }.map(\.depth).min()
                if let hidden { ancestors.removeAll { $0.depth >= hidden } }
            }
            out.ancestors = ancestors.map(Self.record)
        }
        return Reply.encoded(out)
    }

    func pinPut(_ match: RouteMatch, _ request: Request) async throws -> Response {
        let ref = match["reference"]
        let registry = self.registry
        let actor = Self.actor(request)
        let repo = try Self.name(match)
        let reference = try RequestParsing.reference(ref)
        let reason = try await body(request, as: PinRequest.self).reason
        let digest = try await offload { try registry.pin(repo, reference, reason: reason, actor: actor) }
        return Reply.encoded(PinAnswer(repository: repo.value, digest: digest, pinned: true))
    }

    func pinDelete(_ match: RouteMatch, _ request: Request) async throws -> Response {
        let ref = match["reference"]
        let registry = self.registry
        let actor = Self.actor(request)
        let repo = try Self.name(match)
        let reference = try RequestParsing.reference(ref)
        let digest = try await offload { try registry.unpin(repo, reference, actor: actor) }
        return Reply.encoded(PinAnswer(repository: repo.value, digest: digest, pinned: false))
    }

    func pins(_ match: RouteMatch, _ request: Request) async throws -> Response {
        let registry = self.registry
        let actor = Self.actor(request)
        let pins = try await offload { try registry.pins() }
        return Reply.encoded(
            PinList(
                pins: pins.map {
                    PinRecord(digest: $0.digest, repository: $0.repository, actor: $0.actor, at: Self.iso($0.at), reason: $0.reason)
                }))
    }

    func lineage(_ match: RouteMatch, _ request: Request) async throws -> Response {
        let digestText = match["digest"]
        let registry = self.registry
        let query = request.uri.queryParameters
        let digest = try RequestParsing.digest(digestText)
        guard let direction = LineageDirection(rawValue: query["direction"].map(String.init) ?? "ancestors") else {
            throw RegistryError(.invalidRequest, "direction is ancestors or descendants")
        }
        let depth = try RequestParsing.query(request, "depth", in: 1...1000) ?? 64
        let relations = query["relation"].map { $0.split(separator: ",").map(String.init) }
        let artifactType = query["artifact_type"].map(String.init)
        let nodes = try await offload {
            try registry.lineage(
                of: digest, up: direction == .ancestors, depth: depth, relations: relations, artifactType: artifactType)
        }
        return Reply.encoded(LineageAnswer(digest: digest, direction: direction, nodes: nodes.map(Self.record)))
    }

    func impact(_ match: RouteMatch, _ request: Request) async throws -> Response {
        let digestText = match["digest"]
        let registry = self.registry
        let digest = try RequestParsing.digest(digestText)
        let report = try await offload { try registry.impact(of: digest) }
        return Reply.encoded(
            ImpactAnswer(
                digest: digest, derived: report.derived.map(Self.record),
                tags: report.tags.map { TagReference(repository: $0.repository, tag: $0.tag, digest: $0.digest) }))
    }

    func lineagePath(_ match: RouteMatch, _ request: Request) async throws -> Response {
        let registry = self.registry
        let query = request.uri.queryParameters
        guard let f = query["from"], let t = query["to"] else {
            throw RegistryError(.invalidRequest, "needs ?from=DIGEST&to=DIGEST")
        }
        let (from, to) = (try RequestParsing.digest(String(f)), try RequestParsing.digest(String(t)))
        let path = try await offload { try registry.lineagePath(from: from, to: to) }
        guard let path else { throw RegistryError(.manifestUnknown, "no derivation path from \(from) to \(to)") }
        return Reply.encoded(LineagePathAnswer(from: from, to: to, edges: path.map(Self.record)))
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
        return Reply.encoded(
            AuditLog(
                entries: entries.map { e in
                    AuditEntryRecord(
                        id: e.id, at: Self.iso(e.at), actor: e.actor, action: e.action, hash: e.hash, repository: e.repository,
                        digest: e.digest, tag: e.tag,
                        details: e.details.flatMap { try? WireJSON.decode(JSONValue.self, from: Array($0.utf8), what: "details") })
                }))
    }

    func auditVerify(_ match: RouteMatch, _ request: Request) async throws -> Response {
        let registry = self.registry
        let v = try await auditVerifications.result { try await offload { try registry.verifyAudit() } }
        return Reply.encoded(
            AuditVerificationAnswer(
                entries: v.entries, intact: v.intact, firstBrokenID: v.firstBrokenID, problem: v.problem, headHash: v.headHash))
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
        return Reply.encoded(
            DeliveryList(
                deliveries: rows.map { d in
                    DeliveryRecord(
                        webhook: d.webhook, event: String(d.eventID), attempt: d.attempt, at: Self.iso(d.at),
                        durationMs: Int64(d.durationMs), outcome: d.outcome, status: d.status, error: d.error)
                }))
    }
}
