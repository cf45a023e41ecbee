import DepotCore

/// One searchable fact of a manifest in a repository: `format=onnx`, `run=exp-42`,
/// `annotation.org.opencontainers.image.title=resnet`. Facts are derived (see
/// `DepotRegistry.ArtifactFacts`) and stored in `artifact_facts` (migration 13).
public struct ArtifactFact: Sendable, Hashable {
    public var key: String
    public var value: String
    public init(_ key: String, _ value: String) {
        self.key = key
        self.value = value
    }
}

/// A manifest found by a search, or listed on a repository's page.
public struct ArtifactRow: Sendable, Equatable {
    public var repository: String
    public var digest: Digest
    public var mediaType: String
    public var artifactType: String?
    public var annotationsJSON: String?
    public var createdAt: Int64
    /// Tags of the repository pointing at it (sorted; at most 16).
    public var tags: [String]
    public var repoID: Int64 = 0

    /// Where the page after this row starts.
    public var cursor: ArtifactCursor { ArtifactCursor(createdAt: createdAt, repo: repoID, digest: digest) }
}

/// A position in a newest-first list of manifests: (time, repository id, digest), so that
/// manifests pushed in the same millisecond are neither lost nor shown twice across pages.
/// As text (`?before=`): `MS.REPO.HEX`.
public struct ArtifactCursor: Sendable, Equatable {
    public var createdAt: Int64
    public var repo: Int64
    public var digest: Digest

    public init(createdAt: Int64, repo: Int64, digest: Digest) {
        self.createdAt = createdAt
        self.repo = repo
        self.digest = digest
    }

    public var text: String { "\(createdAt).\(repo).\(digest.hex)" }

    public init?(text: String) {
        let parts = text.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 3, parts[0].utf8.count <= 19, parts[1].utf8.count <= 19, let ms = Int64(parts[0]), ms >= 0,
            let repo = Int64(parts[1]), repo >= 0, let d = try? Digest(parsing: "sha256:" + parts[2])
        else { return nil }
        self.init(createdAt: ms, repo: repo, digest: d)
    }

    /// `(time, repo, digest) < (cursor)` for the columns named, without row values (both engines).
    static func condition(time: String, repo: String, digest: String) -> String {
        "(\(time) < ? OR (\(time) = ? AND (\(repo) < ? OR (\(repo) = ? AND \(digest) < ?))))"
    }

    var arguments: [SQLValue] { [.int(createdAt), .int(createdAt), .int(repo), .int(repo), .hash(digest.bytes)] }
}

/// A repository with what its listing shows.
public struct RepositorySummary: Sendable, Equatable {
    public var name: String
    public var artifacts: Int64
    /// The newest manifest's time (milliseconds), nil for a repository without manifests.
    public var lastPush: Int64?
    /// Sum of the sizes of the blobs linked to the repository (what clients download).
    public var logicalBytes: Int64
}

/// What a search asks for: every fact must hold, and the repository name must contain every
/// word of `names` (case-insensitive).
public struct ArtifactQuery: Sendable, Equatable {
    public var facts: [ArtifactFact] = []
    public var names: [String] = []
    public var limit = 50
    /// Only manifests after this position (newest first): the next page of a search.
    public var before: ArtifactCursor?
    /// How many of the newest candidates (of the driving fact, or of all manifests) a search
    /// checks at most: its cost is bounded whatever it asks.
    public var candidates = 20_000
    public init(facts: [ArtifactFact] = [], names: [String] = [], limit: Int = 50, before: ArtifactCursor? = nil) {
        self.facts = facts
        self.names = names
        self.limit = limit
        self.before = before
    }
}

extension CatalogConnection {
    /// Replaces the facts of a manifest in a repository.
    public func setArtifactFacts(repo: Int64, _ digest: Digest, _ facts: [ArtifactFact], createdAt: Int64) throws {
        try run("DELETE FROM artifact_facts WHERE repo_id = ? AND digest = ?", .int(repo), .hash(digest.bytes))
        for f in Set(facts) {
            try run(
                "INSERT INTO artifact_facts(key, value, repo_id, digest, created_at) VALUES(?,?,?,?,?) ON CONFLICT DO NOTHING",
                .text(f.key), .text(f.value), .int(repo), .hash(digest.bytes), .int(createdAt))
        }
    }

    /// When a manifest was first stored in a repository (what its facts are ordered by).
    public func manifestCreatedAt(repo: Int64, _ digest: Digest) throws -> Int64? {
        try first("SELECT created_at FROM manifests WHERE repo_id = ? AND digest = ?", .int(repo), .hash(digest.bytes)) { $0.int(0) }
    }

    /// Manifests with no facts yet (pushed before migration 13), oldest first, at most `limit`.
    public func manifestsWithoutFacts(limit: Int) throws -> [(repo: Int64, record: ManifestRecord, createdAt: Int64)] {
        var out: [(Int64, ManifestRecord, Int64)] = []
        try query(
            """
            SELECT m.repo_id, m.digest, m.media_type, m.artifact_type, m.annotations, m.created_at FROM manifests m
            WHERE NOT EXISTS (SELECT 1 FROM artifact_facts f WHERE f.repo_id = m.repo_id AND f.digest = m.digest)
            ORDER BY m.created_at LIMIT ?
            """, .int(Int64(limit))
        ) {
            let r = $0.row
            guard let d = r.hash("digest") else { return }
            out.append(
                (
                    r.int("repo_id"),
                    ManifestRecord(
                        digest: Digest(bytes: d), mediaType: r.text("media_type"), artifactType: r.optionalText("artifact_type"),
                        subject: nil, annotationsJSON: r.optionalText("annotations"), content: []),
                    r.int("created_at")
                ))
        }
        return out
    }

    /// Manifests matching every fact and whose repository name contains every word, newest
    /// first. Bounded work whatever the query: the most selective fact (counted up to 5,001
    /// index entries each) drives through its `(key, value, created_at)` index, or without facts
    /// the `manifests_by_time` index; at most `candidates` of those, newest first, are checked
    /// against the other facts (`artifact_facts_by_manifest`) and the name words.
    public func searchArtifacts(_ q: ArtifactQuery) throws -> [ArtifactRow] {
        var driver: ArtifactFact?
        var fewest = Int64.max
        for f in q.facts {
            let n =
                try first(
                    "SELECT COUNT(*) FROM (SELECT 1 FROM artifact_facts WHERE key = ? AND value = ? LIMIT 5001) AS c", .text(f.key),
                    .text(f.value)
                ) { $0.int(0) } ?? 0
            if n < fewest { (driver, fewest) = (f, n) }
        }
        // The scan walks the driving index newest first and stops at the page's last row, or at
        // the time of the `candidates`-th newest entry (one index lookup): never further.
        var args: [SQLValue] = []
        var conditions: [String] = []
        var sql = "SELECT r.name, m.digest, m.media_type, m.artifact_type, m.annotations, m.created_at, m.repo_id FROM "
        let table = driver == nil ? "m" : "c"
        let before = q.before.map { _ in " AND " + ArtifactCursor.condition(time: "created_at", repo: "repo_id", digest: "digest") } ?? ""
        let bound: String
        var boundArgs: [SQLValue] = []
        if let driver {
            sql += "artifact_facts c JOIN manifests m ON m.repo_id = c.repo_id AND m.digest = c.digest"
            conditions.append("c.key = ? AND c.value = ?")
            args += [.text(driver.key), .text(driver.value)]
            bound = "SELECT created_at FROM artifact_facts WHERE key = ? AND value = ?\(before) ORDER BY created_at DESC LIMIT 1 OFFSET ?"
            boundArgs = [.text(driver.key), .text(driver.value)]
        } else {
            sql += "manifests m"
            bound = "SELECT created_at FROM manifests WHERE 1 = 1\(before) ORDER BY created_at DESC LIMIT 1 OFFSET ?"
        }
        sql += " JOIN repositories r ON r.id = m.repo_id"
        if let b = q.before {
            conditions.append(ArtifactCursor.condition(time: "\(table).created_at", repo: "\(table).repo_id", digest: "\(table).digest"))
            args += b.arguments
            boundArgs += b.arguments
        }
        conditions.append("\(table).created_at >= COALESCE((\(bound)), -1)")
        args += boundArgs + [.int(Int64(max(1, q.candidates) - 1))]
        for f in q.facts where f != driver {
            conditions.append(
                "EXISTS (SELECT 1 FROM artifact_facts f WHERE f.repo_id = m.repo_id AND f.digest = m.digest AND f.key = ? AND f.value = ?)")
            args += [.text(f.key), .text(f.value)]
        }
        for word in q.names where !word.isEmpty {
            conditions.append(dialect == .postgres ? "strpos(lower(r.name), ?) > 0" : "instr(lower(r.name), ?) > 0")
            args.append(.text(word.lowercased()))
        }
        sql += " WHERE " + conditions.joined(separator: " AND ")
        sql += " ORDER BY \(table).created_at DESC, \(table).repo_id DESC, \(table).digest DESC LIMIT ?"
        args.append(.int(Int64(max(1, min(q.limit, 1000)))))
        var rows: [(ArtifactRow, Int64)] = []
        try queryArgs(sql, args) {
            let r = $0.row
            guard let d = r.hash("digest") else { return }
            rows.append(
                (
                    ArtifactRow(
                        repository: r.text("name"), digest: Digest(bytes: d), mediaType: r.text("media_type"),
                        artifactType: r.optionalText("artifact_type"), annotationsJSON: r.optionalText("annotations"),
                        createdAt: r.int("created_at"), tags: [], repoID: r.int("repo_id")),
                    r.int("repo_id")
                ))
        }
        return try rows.map { row, repo in
            var r = row
            r.tags = Array(try tags(repo: repo, pointingAt: r.digest).sorted().prefix(16))
            return r
        }
    }

    /// Manifests of one repository, newest first, a page at a time (after `before`).
    public func artifacts(repo: Int64, repository: String, before: ArtifactCursor?, limit: Int) throws -> [ArtifactRow] {
        var rows: [ArtifactRow] = []
        let after = before.map { _ in " AND (created_at < ? OR (created_at = ? AND digest < ?))" } ?? ""
        let cursor: [SQLValue] = before.map { [.int($0.createdAt), .int($0.createdAt), .hash($0.digest.bytes)] } ?? []
        try queryArgs(
            """
            SELECT digest, media_type, artifact_type, annotations, created_at FROM manifests
            WHERE repo_id = ?\(after) ORDER BY created_at DESC, digest DESC LIMIT ?
            """, [.int(repo)] + cursor + [.int(Int64(max(1, min(limit, 1000))))]
        ) {
            let r = $0.row
            guard let d = r.hash("digest") else { return }
            rows.append(
                ArtifactRow(
                    repository: repository, digest: Digest(bytes: d), mediaType: r.text("media_type"),
                    artifactType: r.optionalText("artifact_type"), annotationsJSON: r.optionalText("annotations"),
                    createdAt: r.int("created_at"), tags: [], repoID: repo))
        }
        return try rows.map { row in
            var r = row
            r.tags = Array(try tags(repo: repo, pointingAt: r.digest).sorted().prefix(16))
            return r
        }
    }

    /// What a repository summary reads, per row of `repositories r`.
    static var summaryColumns: String {
        """
        SELECT r.name,
            (SELECT COUNT(*) FROM manifests m WHERE m.repo_id = r.id) AS artifacts,
            (SELECT MAX(m.created_at) FROM manifests m WHERE m.repo_id = r.id) AS last_push,
            (SELECT COALESCE(SUM(b.size), 0) FROM repository_blobs rb JOIN blobs b ON b.digest = rb.digest
             WHERE rb.repo_id = r.id) AS logical
        """
    }

    static func summary(_ r: Row) -> RepositorySummary {
        RepositorySummary(
            name: r.text("name"), artifacts: r.int("artifacts"), lastPush: r.optionalInt("last_push"), logicalBytes: r.int("logical"))
    }

    /// Repositories (name order) whose name contains `name`, with their counts, a page at a time.
    public func repositorySummaries(nameContains name: String?, after: String?, limit: Int) throws -> [RepositorySummary] {
        var out: [RepositorySummary] = []
        let filter = name.map { $0.lowercased() } ?? ""
        let contains = dialect == .postgres ? "strpos(lower(r.name), ?) > 0" : "instr(lower(r.name), ?) > 0"
        try query(
            """
            \(Self.summaryColumns)
            FROM repositories r WHERE r.name > ? AND (? = '' OR \(contains)) ORDER BY r.name LIMIT ?
            """, .text(after ?? ""), .text(filter), .text(filter), .int(Int64(max(1, min(limit, 1000))))
        ) {
            out.append(Self.summary($0.row))
        }
        return out
    }

    /// A repository's tags with their digests, in name order, at most `limit`.
    public func tagTargets(repo: Int64, limit: Int) throws -> [(tag: String, digest: Digest)] {
        var out: [(String, Digest)] = []
        try query("SELECT name, digest FROM tags WHERE repo_id = ? ORDER BY name LIMIT ?", .int(repo), .int(Int64(max(1, limit)))) {
            let r = $0.row
            if let d = r.hash("digest") { out.append((r.text("name"), Digest(bytes: d))) }
        }
        return out
    }

    /// One repository's summary.
    public func repositorySummary(repo: Int64) throws -> RepositorySummary? {
        try first(
            """
            \(Self.summaryColumns)
            FROM repositories r WHERE r.id = ?
            """, .int(repo)
        ) { Self.summary($0.row) }
    }

    /// Bytes of the distinct chunks the repository's blobs are made of, counted once each,
    /// stored (compressed) size: what the repository costs after dedup within it.
    public func repositoryStoredBytes(repo: Int64) throws -> Int64 {
        try first(
            """
            SELECT COALESCE(SUM(c.stored_length), 0) FROM chunks c WHERE c.hash IN (
                SELECT rc.chunk_hash FROM repository_blobs rb JOIN blobs b ON b.digest = rb.digest
                JOIN recipes rc ON rc.blob_id = b.id WHERE rb.repo_id = ?)
            """, .int(repo)
        ) { $0.int(0) } ?? 0
    }
}
