import DepotCatalog
import DepotCore
import DepotRegistry
import Foundation
import HTTPTypes
import Hummingbird
import NIOCore

extension HTTPField.Name {
    static let depotActor = Self("Depot-Actor")!
}

/// Handlers for aliases, pins, lineage and the audit journal under `/depot/v1`.
extension OCIResponder {
    /// Who is acting: the `Depot-Actor` header (self-declared until authentication lands), else "anonymous".
    static func actor(_ request: Request) -> String {
        guard let raw = request.headers[.depotActor]?.trimmingCharacters(in: .whitespaces), !raw.isEmpty,
            raw.count <= 200, raw.unicodeScalars.allSatisfy({ $0.value >= 0x20 && $0.value != 0x7F })
        else { return "anonymous" }
        return raw
    }

    /// An `If-Match` digest (quotes optional), nil when absent.
    static func ifMatch(_ request: Request) throws -> Digest? {
        guard var text = request.headers[.ifMatch] else { return nil }
        text = text.trimmingCharacters(in: .whitespaces)
        if text.hasPrefix("W/") { text.removeFirst(2) }
        text = text.trimmingCharacters(in: CharacterSet(charactersIn: "\""))
        return try RequestParsing.digest(text)
    }

    /// A small JSON request body as an object.
    func jsonBody(_ request: Request) async throws -> [String: Any] {
        let body = try await RequestParsing.collect(
            request, limit: 1 << 20, what: "JSON body",
            rate: RateFloor(limits: registry.uploads.limits, start: .now))
        if body.readableBytes == 0 { return [:] }
        guard let object = try? JSONSerialization.jsonObject(with: Data(body.readableBytesView)) as? [String: Any] else {
            throw RegistryError(.unsupported, "body must be a JSON object", status: 400)
        }
        return object
    }

    /// A time given as RFC 3339 (`2026-05-03T14:00:00Z`, fractions allowed) or milliseconds since 1970.
    static func time(_ text: String) throws -> Int64 {
        // Milliseconds, bounded to what Date and ISO 8601 can print (years 0001–9999).
        if text.utf8.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }) {
            return try RequestParsing.integer(Substring(text), "time in milliseconds", in: 0...253_402_300_799_999)
        }
        let f = ISO8601DateFormatter()
        f.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        if let d = f.date(from: text) { return Int64(d.timeIntervalSince1970 * 1000) }
        f.formatOptions = [.withInternetDateTime]
        if let d = f.date(from: text) { return Int64(d.timeIntervalSince1970 * 1000) }
        throw RegistryError(.unsupported, "time '\(text.prefix(60))' is not RFC 3339 (2026-05-03T14:00:00Z) or milliseconds", status: 400)
    }

    static func iso(_ ms: Int64) -> String {
        let f = ISO8601DateFormatter()
        f.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        return f.string(from: Date(timeIntervalSince1970: Double(ms) / 1000))
    }

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

    func handleGovernance(_ route: ExtensionRoute, _ request: Request) async throws -> Response {
        let registry = self.registry
        let actor = Self.actor(request)
        let query = request.uri.queryParameters
        switch (route, request.method) {
        case (.alias(let name, let alias), .put):
            let repo = try RequestParsing.name(name)
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
        case (.alias(let name, let alias), .get):
            let repo = try RequestParsing.name(name)
            let m = try await offload { try registry.manifest(repo, .tag(alias)) }
            return Reply.json(["repository": repo.value, "alias": alias, "digest": m.digest.description])
        case (.aliasHistory(let name, let alias), .get):
            let repo = try RequestParsing.name(name)
            let moves = try await offload { try registry.aliasHistory(repo, alias) }
            return Reply.json(["repository": repo.value, "alias": alias, "moves": moves.map(Self.json)])
        case (.aliasRollback(let name, let alias), .post):
            let repo = try RequestParsing.name(name)
            let body = try await jsonBody(request)
            let to = try (body["to"] as? String).map(RequestParsing.digest)
            let steps = body["steps"] as? Int ?? 1
            let reason = body["reason"] as? String
            let r = try await offload { try registry.rollback(repo, alias, to: to, steps: steps, actor: actor, reason: reason) }
            return Reply.json(["repository": repo.value, "alias": alias, "from": r.from.description, "to": r.to.description])
        case (.aliasResolve(let name, let alias), .get):
            let repo = try RequestParsing.name(name)
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
        case (.pin(let name, let ref), .put):
            let repo = try RequestParsing.name(name)
            let reference = try RequestParsing.reference(ref)
            let reason = try await jsonBody(request)["reason"] as? String
            let digest = try await offload { try registry.pin(repo, reference, reason: reason, actor: actor) }
            return Reply.json(["repository": repo.value, "digest": digest.description, "pinned": true])
        case (.pin(let name, let ref), .delete):
            let repo = try RequestParsing.name(name)
            let reference = try RequestParsing.reference(ref)
            let digest = try await offload { try registry.unpin(repo, reference, actor: actor) }
            return Reply.json(["repository": repo.value, "digest": digest.description, "pinned": false])
        case (.pins, .get):
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
        case (.lineage(let digestText), .get):
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
        case (.impact(let digestText), .get):
            let digest = try RequestParsing.digest(digestText)
            let report = try await offload { try registry.impact(of: digest) }
            return Reply.json([
                "digest": digest.description, "derived": report.derived.map(Self.json),
                "tags": report.tags.map { ["repository": $0.repository, "tag": $0.tag, "digest": $0.digest.description] },
            ])
        case (.lineagePath, .get):
            guard let f = query["from"], let t = query["to"] else {
                throw RegistryError(.unsupported, "needs ?from=DIGEST&to=DIGEST", status: 400)
            }
            let (from, to) = (try RequestParsing.digest(String(f)), try RequestParsing.digest(String(t)))
            let path = try await offload { try registry.lineagePath(from: from, to: to) }
            guard let path else { throw RegistryError(.manifestUnknown, "no derivation path from \(from) to \(to)") }
            return Reply.json(["from": from.description, "to": to.description, "edges": path.map(Self.json)])
        case (.audit, .get):
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
        case (.auditVerify, .get):
            let v = try await auditVerifications.result { try await offload { try registry.verifyAudit() } }
            var o: [String: Any] = ["entries": v.entries, "intact": v.intact]
            if let id = v.firstBrokenID { o["first_broken_id"] = id }
            if let p = v.problem { o["problem"] = p }
            if let h = v.headHash { o["head_hash"] = h }
            return Reply.json(o)
        case (.events, .get):
            let after = try query["after"].map { try RequestParsing.integer($0, "after (an event cursor)", in: 0...Int64.max) } ?? 0
            let limit = try RequestParsing.pageSize(request).map { max(1, $0) } ?? 100
            let events = try await offload { try registry.events(after: after, limit: limit) }
            // The payloads are stored JSON: splice them in as they are.
            var body = "{\"events\":[" + events.map(\.payload).joined(separator: ",") + "],\"next\":\"\(events.last?.id ?? after)\"}"
            body += "\n"
            return Reply.bytes(Array(body.utf8), contentType: "application/json")
        case (.deliveries, .get):
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
        default:
            throw RegistryError(.unsupported, "\(request.method) is not supported on this endpoint", status: 405)
        }
    }
}
