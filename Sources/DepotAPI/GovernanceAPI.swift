import DepotCore

/// Request and response bodies of `/depot/v1` aliases, pins, lineage, audit, events and webhook
/// deliveries (docs/EXTENSION-API.md). Field names on the wire are snake_case; times are RFC 3339
/// strings (`at`), with milliseconds beside them where a client needs to compute (`at_ms`).

// MARK: aliases

/// `PUT …/aliases/{alias}`: move the alias to a digest or to what a tag names now. `expect`
/// (or an `If-Match` header) makes it a compare-and-swap.
public struct AliasMoveRequest: Codable, Sendable, Equatable {
    public var digest: String?
    /// A tag or a digest, resolved when the move happens.
    public var reference: String?
    public var expect: String?
    public var reason: String?

    public init(digest: String? = nil, reference: String? = nil, expect: String? = nil, reason: String? = nil) {
        self.digest = digest
        self.reference = reference
        self.expect = expect
        self.reason = reason
    }
}

/// `GET`/`PUT …/aliases/{alias}`: where the alias points (and, after a move, where it pointed).
public struct AliasAnswer: Codable, Sendable, Equatable {
    public var repository: String
    public var alias: String
    public var digest: Digest
    public var previous: Digest?

    public init(repository: String, alias: String, digest: Digest, previous: Digest? = nil) {
        self.repository = repository
        self.alias = alias
        self.digest = digest
        self.previous = previous
    }
}

/// One move of a tag or alias, from the tag journal.
public struct TagMoveRecord: Codable, Sendable, Equatable {
    public var id: Int64
    public var tag: String
    public var actor: String
    public var at: String
    public var atMs: Int64
    /// nil when the tag was created by this move.
    public var from: Digest?
    /// nil when the tag was deleted by this move.
    public var to: Digest?
    public var reason: String?

    public init(id: Int64, tag: String, actor: String, at: String, atMs: Int64, from: Digest?, to: Digest?, reason: String?) {
        self.id = id
        self.tag = tag
        self.actor = actor
        self.at = at
        self.atMs = atMs
        self.from = from
        self.to = to
        self.reason = reason
    }

    enum CodingKeys: String, CodingKey {
        case id, tag, actor, at, from, to, reason
        case atMs = "at_ms"
    }
}

/// `GET …/aliases/{alias}/history`, newest first.
public struct AliasHistory: Codable, Sendable, Equatable {
    public var repository: String
    public var alias: String
    public var moves: [TagMoveRecord]

    public init(repository: String, alias: String, moves: [TagMoveRecord]) {
        self.repository = repository
        self.alias = alias
        self.moves = moves
    }
}

/// `POST …/aliases/{alias}/rollback`: back to `to`, or `steps` moves back (default 1).
public struct AliasRollbackRequest: Codable, Sendable, Equatable {
    public var to: String?
    public var steps: Int?
    public var reason: String?

    public init(to: String? = nil, steps: Int? = nil, reason: String? = nil) {
        self.to = to
        self.steps = steps
        self.reason = reason
    }
}

public struct AliasRollbackAnswer: Codable, Sendable, Equatable {
    public var repository: String
    public var alias: String
    public var from: Digest
    public var to: Digest

    public init(repository: String, alias: String, from: Digest, to: Digest) {
        self.repository = repository
        self.alias = alias
        self.from = from
        self.to = to
    }
}

/// `GET …/aliases/{alias}/resolve?at=TIME[&lineage]`: what the alias named at a time.
public struct AliasResolution: Codable, Sendable, Equatable {
    public var repository: String
    public var alias: String
    public var at: String
    public var digest: Digest
    /// With `?lineage`: the digest's ancestors.
    public var ancestors: [LineageNodeRecord]?

    public init(repository: String, alias: String, at: String, digest: Digest, ancestors: [LineageNodeRecord]? = nil) {
        self.repository = repository
        self.alias = alias
        self.at = at
        self.digest = digest
        self.ancestors = ancestors
    }
}

// MARK: pins

/// `PUT …/pins/{reference}`.
public struct PinRequest: Codable, Sendable, Equatable {
    public var reason: String?

    public init(reason: String? = nil) { self.reason = reason }
}

/// `PUT`/`DELETE …/pins/{reference}`.
public struct PinAnswer: Codable, Sendable, Equatable {
    public var repository: String
    public var digest: Digest
    public var pinned: Bool

    public init(repository: String, digest: Digest, pinned: Bool) {
        self.repository = repository
        self.digest = digest
        self.pinned = pinned
    }
}

public struct PinRecord: Codable, Sendable, Equatable {
    public var digest: Digest
    public var repository: String
    public var actor: String
    public var at: String
    public var reason: String?

    public init(digest: Digest, repository: String, actor: String, at: String, reason: String?) {
        self.digest = digest
        self.repository = repository
        self.actor = actor
        self.at = at
        self.reason = reason
    }
}

/// `GET /depot/v1/pins`.
public struct PinList: Codable, Sendable, Equatable {
    public var pins: [PinRecord]

    public init(pins: [PinRecord]) { self.pins = pins }
}

// MARK: lineage

/// One derivation edge: `child` derives from `parent` by `relation`.
public struct LineageEdgeRecord: Codable, Sendable, Equatable {
    public var child: Digest
    public var parent: Digest
    /// A `LineageRelation` raw value, or `subject` for an OCI subject link.
    public var relation: String
    /// How the child named its parent (`repo@sha256:…`): the parent may live in another registry.
    public var parentRef: String
    public var repository: String
    public var at: String
    public var run: String?
    public var dataset: String?
    public var commit: String?
    public var job: String?
    /// `dev.depot.metric.*` annotations of the child, by name.
    public var metrics: [String: String]?
    /// The pipeline job that vouched for the edge (its runner pushed the child under the job's
    /// lease, the job completed with it, and the registry signed it); nil: declared by the pusher.
    public var verifiedJob: Int64?

    /// `verified` (a pipeline job vouched for it) or `declared`.
    public var provenance: String { verifiedJob == nil ? "declared" : "verified" }

    public init(
        child: Digest, parent: Digest, relation: String, parentRef: String, repository: String, at: String, run: String? = nil,
        dataset: String? = nil, commit: String? = nil, job: String? = nil, metrics: [String: String]? = nil, verifiedJob: Int64? = nil
    ) {
        self.child = child
        self.parent = parent
        self.relation = relation
        self.parentRef = parentRef
        self.repository = repository
        self.at = at
        self.run = run
        self.dataset = dataset
        self.commit = commit
        self.job = job
        self.metrics = metrics
        self.verifiedJob = verifiedJob
    }

    enum CodingKeys: String, CodingKey {
        case child, parent, relation, repository, at, run, dataset, commit, job, metrics
        case parentRef = "parent_ref"
        case verifiedJob = "verified_job"
    }
}

/// A node reached by a lineage walk, with the edge that reached it.
public struct LineageNodeRecord: Codable, Sendable, Equatable {
    public var digest: Digest
    public var depth: Int
    public var edge: LineageEdgeRecord
    /// Whether this registry holds the manifest (a parent may be external).
    public var stored: Bool
    public var artifactType: String?

    public init(digest: Digest, depth: Int, edge: LineageEdgeRecord, stored: Bool, artifactType: String?) {
        self.digest = digest
        self.depth = depth
        self.edge = edge
        self.stored = stored
        self.artifactType = artifactType
    }

    enum CodingKeys: String, CodingKey {
        case digest, depth, edge, stored
        case artifactType = "artifact_type"
    }
}

/// Which way a lineage walk goes.
public enum LineageDirection: String, Codable, Sendable, CaseIterable {
    case ancestors, descendants
}

/// `GET /depot/v1/lineage/{digest}?direction=&depth=&relation=&artifact_type=`.
public struct LineageAnswer: Codable, Sendable, Equatable {
    public var digest: Digest
    public var direction: LineageDirection
    public var nodes: [LineageNodeRecord]

    public init(digest: Digest, direction: LineageDirection, nodes: [LineageNodeRecord]) {
        self.digest = digest
        self.direction = direction
        self.nodes = nodes
    }
}

/// A tag that names an affected digest.
public struct TagReference: Codable, Sendable, Equatable {
    public var repository: String
    public var tag: String
    public var digest: Digest

    public init(repository: String, tag: String, digest: Digest) {
        self.repository = repository
        self.tag = tag
        self.digest = digest
    }
}

/// `GET /depot/v1/lineage/{digest}/impact`: everything derived from a digest, and the tags on it.
public struct ImpactAnswer: Codable, Sendable, Equatable {
    public var digest: Digest
    public var derived: [LineageNodeRecord]
    public var tags: [TagReference]

    public init(digest: Digest, derived: [LineageNodeRecord], tags: [TagReference]) {
        self.digest = digest
        self.derived = derived
        self.tags = tags
    }
}

/// `GET /depot/v1/lineage/path?from=&to=`: the edges from one digest to a descendant.
public struct LineagePathAnswer: Codable, Sendable, Equatable {
    public var from: Digest
    public var to: Digest
    public var edges: [LineageEdgeRecord]

    public init(from: Digest, to: Digest, edges: [LineageEdgeRecord]) {
        self.from = from
        self.to = to
        self.edges = edges
    }
}

// MARK: audit, events, deliveries

/// One entry of the hash-chained audit journal.
public struct AuditEntryRecord: Codable, Sendable, Equatable {
    public var id: Int64
    public var at: String
    public var actor: String
    public var action: String
    public var hash: String
    public var repository: String?
    public var digest: String?
    public var tag: String?
    /// What the action recorded; its shape depends on the action.
    public var details: JSONValue?

    public init(
        id: Int64, at: String, actor: String, action: String, hash: String, repository: String?, digest: String?, tag: String?,
        details: JSONValue?
    ) {
        self.id = id
        self.at = at
        self.actor = actor
        self.action = action
        self.hash = hash
        self.repository = repository
        self.digest = digest
        self.tag = tag
        self.details = details
    }
}

/// `GET /depot/v1/audit?repository=&action=&since=&until=&limit=`.
public struct AuditLog: Codable, Sendable, Equatable {
    public var entries: [AuditEntryRecord]

    public init(entries: [AuditEntryRecord]) { self.entries = entries }
}

/// `GET /depot/v1/audit/verify`: the chain re-hashed from the first entry.
public struct AuditVerificationAnswer: Codable, Sendable, Equatable {
    public var entries: Int
    public var intact: Bool
    public var firstBrokenID: Int64?
    public var problem: String?
    public var headHash: String?

    public init(entries: Int, intact: Bool, firstBrokenID: Int64?, problem: String?, headHash: String?) {
        self.entries = entries
        self.intact = intact
        self.firstBrokenID = firstBrokenID
        self.problem = problem
        self.headHash = headHash
    }

    enum CodingKeys: String, CodingKey {
        case entries, intact, problem
        case firstBrokenID = "first_broken_id"
        case headHash = "head_hash"
    }
}

/// One registry event (push, tag move, delete, …), as webhooks receive it.
public struct RegistryEvent: Codable, Sendable, Equatable {
    public var id: String
    public var at: String
    public var type: String
    public var repository: String?
    public var tag: String?
    public var digest: String?
    public var actor: String?
    /// The whole event as stored (type-specific fields included).
    public var payload: JSONValue

    public init(from decoder: any Decoder) throws {
        payload = try JSONValue(from: decoder)
        let c = try decoder.container(keyedBy: CodingKeys.self)
        id = try c.decode(String.self, forKey: .id)
        at = try c.decodeIfPresent(String.self, forKey: .at) ?? ""
        type = try c.decodeIfPresent(String.self, forKey: .type) ?? ""
        repository = try c.decodeIfPresent(String.self, forKey: .repository)
        tag = try c.decodeIfPresent(String.self, forKey: .tag)
        digest = try c.decodeIfPresent(String.self, forKey: .digest)
        actor = try c.decodeIfPresent(String.self, forKey: .actor)
    }

    public func encode(to encoder: any Encoder) throws { try payload.encode(to: encoder) }

    enum CodingKeys: String, CodingKey {
        case id, at, type, repository, tag, digest, actor
    }
}

/// `GET /depot/v1/events?after=&n=`: a page of events and the cursor for the next.
public struct EventPage: Codable, Sendable, Equatable {
    public var events: [RegistryEvent]
    public var next: String
}

/// One attempt to deliver an event to a webhook.
public struct DeliveryRecord: Codable, Sendable, Equatable {
    public var webhook: String
    public var event: String
    public var attempt: Int
    public var at: String
    public var durationMs: Int64
    /// `delivered`, `failed`, `gave-up`, …
    public var outcome: String
    /// The webhook's HTTP status, when it answered.
    public var status: Int?
    public var error: String?

    public init(
        webhook: String, event: String, attempt: Int, at: String, durationMs: Int64, outcome: String, status: Int?, error: String?
    ) {
        self.webhook = webhook
        self.event = event
        self.attempt = attempt
        self.at = at
        self.durationMs = durationMs
        self.outcome = outcome
        self.status = status
        self.error = error
    }

    enum CodingKeys: String, CodingKey {
        case webhook, event, attempt, at, outcome, status, error
        case durationMs = "duration_ms"
    }
}

/// `GET /depot/v1/webhooks/deliveries?webhook=&n=`.
public struct DeliveryList: Codable, Sendable, Equatable {
    public var deliveries: [DeliveryRecord]

    public init(deliveries: [DeliveryRecord]) { self.deliveries = deliveries }
}
