import DepotAPI
import DepotCatalog
import DepotCore
import Foundation

/// The searchable facts of a manifest: what the web UI's search box filters on. Derived from the
/// manifest (media type, artifact type, annotations) and its extracted format metadata (file
/// formats, tensor dtypes, ONNX opsets, the Triton backend), stored per repository in
/// `artifact_facts`. One definition, used at push and by the backfill.
///
/// Keys a user types (`run:exp-42`, `format:onnx`, `opset:17`):
/// `media_type`, `type` (artifactType), `run`, `dataset`, `commit`, `owner`, `title`,
/// `platform`, `format`, `dtype`, `opset`, `backend`, and `annotation.KEY` for any annotation.
public enum ArtifactFacts {
    /// Bounds: a manifest's annotations are client-chosen, the table must not grow with them.
    public static let maxAnnotations = 64
    public static let maxKeyBytes = 128
    public static let maxValueBytes = 256
    public static let maxFacts = 256

    /// The short keys and the annotations they come from (first present wins).
    public static let shortKeys: [(key: String, annotations: [String])] = [
        ("run", [Annotation.Lineage.run]),
        ("dataset", [Annotation.Lineage.dataset]),
        ("commit", [Annotation.Lineage.commit, "org.opencontainers.image.revision"]),
        ("owner", ["dev.depot.owner", "org.opencontainers.image.authors", "org.opencontainers.image.vendor"]),
        ("title", ["org.opencontainers.image.title"]),
        ("platform", [Annotation.platform]),
    ]

    /// Every key the search understands besides `annotation.*`.
    public static let keys: Set<String> = Set(shortKeys.map(\.key)).union(["media_type", "type", "format", "dtype", "opset", "backend"])

    public static func of(
        mediaType: String, artifactType: String?, annotations: [String: String]?, metadataJSON: String?
    ) -> [ArtifactFact] {
        var facts: [ArtifactFact] = [ArtifactFact("media_type", mediaType)]
        func add(_ key: String, _ value: String) {
            guard facts.count < maxFacts, !value.isEmpty, value.utf8.count <= maxValueBytes, key.utf8.count <= maxKeyBytes else { return }
            facts.append(ArtifactFact(key, value))
        }
        if let artifactType { add("type", artifactType) }
        if let annotations {
            for (key, sources) in shortKeys {
                if let v = sources.lazy.compactMap({ annotations[$0] }).first { add(key, v) }
            }
            for (k, v) in annotations.sorted(by: { $0.key < $1.key }).prefix(maxAnnotations) { add("annotation." + k, v) }
        }
        guard let metadataJSON, metadataJSON.utf8.count <= 16 << 20,
            let doc = try? WireJSON.decode(JSONValue.self, from: Array(metadataJSON.utf8), what: "metadata")
        else { return facts }
        for file in doc.object?["files"]?.array?.prefix(1000) ?? [] {
            guard let f = file.object else { continue }
            if let format = f["format"]?.string { add("format", format) }
            for dtype in (f["dtypes"]?.object?.keys).map(Array.init) ?? [] { add("dtype", dtype) }
            for opset in f["opsets"]?.array?.prefix(32) ?? [] {
                let domain = opset.object?["domain"]?.string ?? ""
                if domain.isEmpty || domain == "ai.onnx", let v = opset.object?["version"]?.int { add("opset", String(v)) }
            }
        }
        if let triton = doc.object?["triton"]?.object {
            if let b = triton["backend"]?.string { add("backend", b) }
            if let p = triton["platform"]?.string { add("backend", p) }
        }
        return Array(Set(facts)).sorted { ($0.key, $0.value) < ($1.key, $1.value) }
    }

    /// Parses a search box: `key:value` words are facts (`annotation.KEY:VALUE` for any
    /// annotation, or a short key), other words must all appear in the repository name.
    /// Quoted values keep spaces: `run:"exp 42"`. Unknown keys are refused with the list.
    public static func parseQuery(_ text: String, limit: Int = 50) throws -> ArtifactQuery {
        guard text.utf8.count <= 1024 else { throw RegistryError(.invalidRequest, "search text is over 1024 bytes") }
        var words: [String] = []
        var current = ""
        var quoted = false
        for ch in text {
            if ch == "\"" {
                quoted.toggle()
            } else if ch.isWhitespace && !quoted {
                if !current.isEmpty { words.append(current) }
                current = ""
            } else {
                current.append(ch)
            }
        }
        if !current.isEmpty { words.append(current) }
        guard words.count <= 16 else { throw RegistryError(.invalidRequest, "at most 16 search terms") }
        var query = ArtifactQuery(limit: limit)
        var names: [String] = []
        for word in words {
            guard let colon = word.firstIndex(of: ":") else {
                names.append(word)
                continue
            }
            let key = String(word[..<colon]).lowercased()
            let value = String(word[word.index(after: colon)...])
            guard keys.contains(key) || (key.hasPrefix("annotation.") && key.count > "annotation.".count) else {
                throw RegistryError(
                    .invalidRequest,
                    "unknown search key '\(key.prefix(40))': use \(keys.sorted().joined(separator: ", ")) or annotation.KEY")
            }
            // Annotation keys keep their case (OCI keys are case-sensitive); short keys are lower case.
            let factKey = key.hasPrefix("annotation.") ? "annotation." + word[word.index(word.startIndex, offsetBy: 11)..<colon] : key
            query.facts.append(ArtifactFact(String(factKey), value))
        }
        query.names = names
        return query
    }
}

extension Registry {
    /// Computes and stores the facts of a manifest stored in `repo` (in the caller's transaction).
    func storeFacts(_ conn: any CatalogConnection, repo: Int64, _ record: ManifestRecord, createdAt: Int64) throws {
        let annotations = record.annotationsJSON.flatMap {
            try? WireJSON.decode([String: String].self, from: Array($0.utf8), what: "annotations")
        }
        let facts = ArtifactFacts.of(
            mediaType: record.mediaType, artifactType: record.artifactType, annotations: annotations,
            metadataJSON: try conn.manifestMetadata(record.digest))
        try conn.setArtifactFacts(repo: repo, record.digest, facts, createdAt: createdAt)
    }

    /// Indexes up to `batch` manifests pushed before search facts existed; returns how many.
    /// Idempotent, so every replica may run it; the server calls it at start until it returns 0.
    @discardableResult
    public func indexArtifactFacts(batch: Int = 500) throws -> Int {
        try db.write { conn in
            // A manifest deleted meanwhile (its facts with it) must not get facts again.
            try conn.lock(.appends)
            let pending = try conn.manifestsWithoutFacts(limit: batch)
            for (repo, record, createdAt) in pending { try storeFacts(conn, repo: repo, record, createdAt: createdAt) }
            return pending.count
        }
    }

    /// Manifests matching a search, newest first (`CatalogConnection.searchArtifacts`).
    public func searchArtifacts(_ query: ArtifactQuery) throws -> [ArtifactRow] {
        try db.read { try $0.searchArtifacts(query) }
    }

    public func repositorySummaries(nameContains: String?, after: String?, limit: Int) throws -> [RepositorySummary] {
        try db.read { try $0.repositorySummaries(nameContains: nameContains, after: after, limit: limit) }
    }

    /// A repository's newest manifests and its summary.
    public func repositoryOverview(_ repository: RepositoryName, before: ArtifactCursor?, limit: Int) throws -> (
        artifacts: [ArtifactRow], summary: RepositorySummary?
    ) {
        try db.read { conn in
            guard let repo = try conn.repositoryID(repository.value) else {
                throw RegistryError(.nameUnknown, "repository \(repository) is not known")
            }
            let rows = try conn.artifacts(repo: repo, repository: repository.value, before: before, limit: limit)
            return (rows, try conn.repositorySummary(repo: repo))
        }
    }

    /// What the repository's chunks take in the store (each counted once): a walk over every
    /// chunk of every blob in it, so callers cache it (the web UI for ten minutes).
    public func repositoryStoredBytes(_ repository: RepositoryName) throws -> Int64 {
        try db.read { conn in
            guard let repo = try conn.repositoryID(repository.value) else { return 0 }
            return try conn.repositoryStoredBytes(repo: repo)
        }
    }

    /// A repository's tags and what they point at (name order, at most `limit`).
    public func tagTargets(_ repository: RepositoryName, limit: Int) throws -> [(tag: String, digest: Digest)] {
        try db.read { conn in
            guard let repo = try conn.repositoryID(repository.value) else {
                throw RegistryError(.nameUnknown, "repository \(repository) is not known")
            }
            return try conn.tagTargets(repo: repo, limit: limit)
        }
    }

    /// What a page shows of an artifact's impact: how many artifacts derive from it (counted
    /// up to `limit`; `more` when there are more) and the tags resolving to it or to one of its
    /// `limit` nearest descendants (at most 200). `impact(of:)` is the whole answer (the API's).
    public func impactSummary(of digest: Digest, limit: Int = 2000) throws -> (derived: Int, more: Bool, tags: [TagTarget]) {
        try db.read { conn in
            let derived = try conn.descendantCount(of: digest, limit: limit + 1)
            return (min(derived, limit), derived > limit, try conn.tagsResolvingToDescendants(of: digest, nodes: limit, tags: 200))
        }
    }

    /// The tags of a repository pointing at `digest`.
    public func tags(_ repository: RepositoryName, pointingAt digest: Digest) throws -> [String] {
        try db.read { conn in
            guard let repo = try conn.repositoryID(repository.value) else { return [] }
            return try conn.tags(repo: repo, pointingAt: digest).sorted()
        }
    }

    /// The format metadata document of a manifest digest (nil when none was extracted).
    public func metadataDocument(_ digest: Digest) throws -> String? {
        try db.read { try $0.manifestMetadata(digest) }
    }
}
