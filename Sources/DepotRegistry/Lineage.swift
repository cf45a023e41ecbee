import DepotAPI
import DepotCatalog
import DepotCore
import Foundation

/// Lineage edges declared by a manifest: its OCI `subject` (relation `subject`) and the
/// annotations `depot push` writes (`dev.depot.lineage.from` = `repo@sha256:…`, `.relation`,
/// `.run`, `.dataset`, `.commit`, `dev.depot.metric.*`). A parent in another registry (or not
/// stored here) is still an edge, by digest: an external reference, not an error.
enum LineageAnnotations {
    static func edges(of parsed: ParsedManifest, digest: Digest, repository: RepositoryName) throws -> [LineageEdge] {
        let now = Registry.nowMillis()
        var out: [LineageEdge] = []
        if let subject = parsed.subject {
            out.append(
                LineageEdge(
                    child: digest, parent: subject.digest, relation: "subject",
                    parentRef: "\(repository)@\(subject.digest)", repository: repository.value, createdAt: now))
        }
        let a = parsed.annotations ?? [:]
        guard let from = a[Annotation.Lineage.from] else {
            if a[Annotation.Lineage.relation] != nil {
                throw RegistryError(.manifestInvalid, "dev.depot.lineage.relation needs dev.depot.lineage.from")
            }
            return out
        }
        guard let at = from.lastIndex(of: "@"), let parent = try? Digest(parsing: String(from[from.index(after: at)...])) else {
            throw RegistryError(.manifestInvalid, "dev.depot.lineage.from must be REPOSITORY@sha256:<hex>, got '\(from.prefix(200))'")
        }
        let relationText = a[Annotation.Lineage.relation] ?? LineageRelation.derivedFrom.rawValue
        guard let relation = LineageRelation(rawValue: relationText)?.rawValue else {
            throw RegistryError(
                .manifestInvalid, "unknown lineage relation '\(relationText.prefix(100))'; one of \(LineageRelation.list)")
        }
        var metrics: [String: String] = [:]
        for (k, v) in a where k.hasPrefix(Annotation.metricPrefix) { metrics[String(k.dropFirst(Annotation.metricPrefix.count))] = v }
        var metricsJSON: String?
        if !metrics.isEmpty, let data = try? WireJSON.encode(metrics) {
            metricsJSON = String(decoding: data, as: UTF8.self)
        }
        out.append(
            LineageEdge(
                child: digest, parent: parent, relation: relation, parentRef: String(from.prefix(1000)),
                repository: repository.value, run: a["dev.depot.lineage.run"], dataset: a["dev.depot.lineage.dataset"],
                commit: a["dev.depot.lineage.commit"], metrics: metricsJSON, job: a["dev.depot.lineage.job"],
                createdAt: now))
        return out
    }
}

/// A lineage query's answer: nodes with the edge that reached them.
public struct LineageNode: Sendable {
    public var digest: Digest
    public var depth: Int
    public var edge: LineageEdge
    public var artifactType: String?
    /// False for a digest this registry does not store (an external reference).
    public var stored: Bool
}

/// What an impact query found: the tags (aliases) resolving to the digest or anything derived from it.
public struct ImpactReport: Sendable {
    public var digest: Digest
    public var derived: [LineageNode]
    public var tags: [TagTarget]
}

extension Registry {
    /// Ancestors (`up`) or descendants of `digest`, nearest first.
    public func lineage(
        of digest: Digest, up: Bool, depth: Int = 64, relations: [String]? = nil,
        artifactType: String? = nil, limit: Int = 10_000
    ) throws -> [LineageNode] {
        guard depth >= 1, depth <= 1000 else { throw RegistryError(.invalidRequest, "depth must be 1...1000") }
        return try db.read { conn in
            try conn.lineage(of: digest, up: up, depth: depth, relations: relations, limit: limit).compactMap { step in
                if let artifactType, step.artifactType != artifactType { return nil }
                return LineageNode(
                    digest: step.digest, depth: step.depth, edge: step.edge, artifactType: step.artifactType, stored: step.stored)
            }
        }
    }

    /// A shortest derivation path from `from` down to `to` (following parent → child), or nil.
    public func lineagePath(from: Digest, to: Digest, maxDepth: Int = 256) throws -> [LineageEdge]? {
        try db.read { conn in
            if from == to { return [] }
            var previous: [Digest: LineageEdge] = [:]
            var frontier = [from]
            var seen: Set<Digest> = [from]
            for _ in 0..<maxDepth where !frontier.isEmpty {
                var next: [Digest] = []
                for node in frontier {
                    for edge in try conn.childEdges(of: node) where seen.insert(edge.child).inserted {
                        previous[edge.child] = edge
                        if edge.child == to {
                            var path = [edge]
                            var at = edge.parent
                            while at != from, let e = previous[at] {
                                path.append(e)
                                at = e.parent
                            }
                            return path.reversed()
                        }
                        next.append(edge.child)
                    }
                }
                frontier = next
            }
            return nil
        }
    }

    /// Which tags and aliases currently resolve to `digest` or to anything derived from it
    /// (e.g. everything downstream of a checkpoint trained on a bad dataset).
    public func impact(of digest: Digest) throws -> ImpactReport {
        let derived = try lineage(of: digest, up: false, depth: 1000)
        let tags = try db.read { try $0.tagsResolvingToDescendants(of: digest) }
        return ImpactReport(digest: digest, derived: derived, tags: tags)
    }
}

/// Annotations a pipeline runner writes on a job's output manifest.
public enum JobAnnotations {
    /// The job's memoization key (`sha256:` of stage definition, input digest, toolchain).
    public static let key = Annotation.Job.key
    /// The job id (also on the lineage edge, as `dev.depot.lineage.job`).
    public static let id = Annotation.Lineage.job
    public static let pipeline = Annotation.Job.pipeline
    public static let stage = Annotation.Job.stage
}
