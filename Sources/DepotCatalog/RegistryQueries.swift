import DepotCore

/// A manifest as stored: the exact bytes and what the registry needs to serve them.
public struct ManifestRecord: Sendable, Equatable {
    public var digest: Digest
    public var mediaType: String
    public var artifactType: String?
    public var subject: Digest?
    public var annotationsJSON: String?
    public var content: [UInt8]

    public init(digest: Digest, mediaType: String, artifactType: String?, subject: Digest?, annotationsJSON: String?, content: [UInt8]) {
        self.digest = digest
        self.mediaType = mediaType
        self.artifactType = artifactType
        self.subject = subject
        self.annotationsJSON = annotationsJSON
        self.content = content
    }
}

/// One move of a tag, from the journal.
public struct TagMove: Sendable, Equatable {
    public var id: Int64
    public var tag: String
    public var from: Digest?
    public var to: Digest?
    public var actor: String
    public var reason: String?
    public var at: Int64
}

/// Typed queries over the registry tables.
extension CatalogConnection {
    // MARK: repositories

    public func repositoryID(_ name: String) throws -> Int64? {
        try first("SELECT id FROM repositories WHERE name = ?", .text(name)) { $0.int(0) }
    }

    public func ensureRepository(_ name: String, now: Int64) throws -> Int64 {
        if let id = try repositoryID(name) { return id }
        // Another replica may create it between the two statements: then the insert does nothing
        // and the second lookup finds its row.
        if let id = try first(
            "INSERT INTO repositories(name, created_at) VALUES(?, ?) ON CONFLICT DO NOTHING RETURNING id", .text(name), .int(now),
            map: { $0.int(0) })
        {
            return id
        }
        guard let id = try repositoryID(name) else {
            throw DepotError.storage("catalog \(location): repository \(name) vanished while created")
        }
        return id
    }

    /// Repository names after `last` in lexical order, at most `limit`.
    public func repositories(after last: String?, limit: Int) throws -> [String] {
        var out: [String] = []
        try query("SELECT name FROM repositories WHERE name > ? ORDER BY name LIMIT ?", .text(last ?? ""), .int(Int64(limit))) {
            out.append($0.text(0))
        }
        return out
    }

    // MARK: blob links

    public func linkBlob(repo: Int64, _ digest: Digest, now: Int64) throws {
        try run(
            "INSERT INTO repository_blobs(repo_id, digest, created_at) VALUES(?,?,?) ON CONFLICT DO NOTHING", .int(repo),
            .hash(digest.bytes), .int(now))
    }

    public func unlinkBlob(repo: Int64, _ digest: Digest) throws -> Bool {
        try run("DELETE FROM repository_blobs WHERE repo_id = ? AND digest = ?", .int(repo), .hash(digest.bytes))
        return changes > 0
    }

    /// Whether `digest` is visible in the repository: linked, or referenced by one of its manifests.
    public func blobVisible(repo: Int64, _ digest: Digest) throws -> Bool {
        if try first("SELECT 1 FROM repository_blobs WHERE repo_id = ? AND digest = ?", .int(repo), .hash(digest.bytes), map: { _ in true })
            == true
        {
            return true
        }
        return try first(
            "SELECT 1 FROM manifest_refs WHERE child = ? AND kind = 0 AND repo_id = ? LIMIT 1", .hash(digest.bytes), .int(repo),
            map: { _ in true }) ?? false
    }

    /// Whether any repository links or references `digest`.
    /// Names of the repositories that link the blob or reference it from a manifest (at most
    /// `limit`, by name), for a mount without `from` that may use only some repositories.
    public func repositoriesHoldingBlob(_ digest: Digest, limit: Int = 1000) throws -> [String] {
        var out: [String] = []
        try query(
            """
            SELECT name FROM repositories WHERE id IN (
                SELECT repo_id FROM repository_blobs WHERE digest = ?
                UNION SELECT repo_id FROM manifest_refs WHERE child = ? AND kind = 0)
            ORDER BY name LIMIT ?
            """, .hash(digest.bytes), .hash(digest.bytes), .int(Int64(limit))
        ) { out.append($0.text(0)) }
        return out
    }

    /// Repositories holding a blob whose recipe uses the chunk (through at most `blobs` blobs):
    /// whether a caller may know of a chunk, under authentication.
    public func repositoriesHoldingChunk(_ hash: SHA256.Value, blobs: Int = 64) throws -> [String] {
        var digests: [Digest] = []
        try query(
            "SELECT DISTINCT b.digest FROM recipes rc JOIN blobs b ON b.id = rc.blob_id WHERE rc.chunk_hash = ? AND b.digest IS NOT NULL LIMIT ?",
            .hash(hash), .int(Int64(blobs))
        ) { s in if let h = s.hash(0) { digests.append(Digest(bytes: h)) } }
        var out: [String] = []
        for d in digests { out += try repositoriesHoldingBlob(d, limit: 256) }
        return out
    }

    public func blobLinkedAnywhere(_ digest: Digest) throws -> Bool {
        if try first("SELECT 1 FROM repository_blobs WHERE digest = ? LIMIT 1", .hash(digest.bytes), map: { _ in true }) == true {
            return true
        }
        return try first("SELECT 1 FROM manifest_refs WHERE child = ? AND kind = 0 LIMIT 1", .hash(digest.bytes), map: { _ in true })
            ?? false
    }

    // MARK: manifests

    public func manifest(repo: Int64, _ digest: Digest) throws -> ManifestRecord? {
        try first(
            "SELECT media_type, artifact_type, subject, annotations, content FROM manifests WHERE repo_id = ? AND digest = ?",
            .int(repo), .hash(digest.bytes)
        ) {
            let r = $0.row
            return ManifestRecord(
                digest: digest, mediaType: r.text("media_type"), artifactType: r.optionalText("artifact_type"),
                subject: r.digest("subject"), annotationsJSON: r.optionalText("annotations"), content: r.blob("content"))
        }
    }

    public func manifestExists(repo: Int64, _ digest: Digest) throws -> Bool {
        try first("SELECT 1 FROM manifests WHERE repo_id = ? AND digest = ?", .int(repo), .hash(digest.bytes)) { _ in true } ?? false
    }

    /// Stores a manifest and its references (idempotent for the same digest).
    public func putManifest(repo: Int64, _ m: ManifestRecord, blobs: [Digest], children: [Digest], now: Int64) throws {
        try run(
            """
            INSERT INTO manifests(repo_id, digest, media_type, artifact_type, subject, annotations, content, created_at)
            VALUES(?,?,?,?,?,?,?,?) ON CONFLICT DO NOTHING
            """, .int(repo), .hash(m.digest.bytes), .text(m.mediaType), m.artifactType.map(SQLValue.text) ?? .null,
            m.subject.map { .hash($0.bytes) } ?? .null, m.annotationsJSON.map(SQLValue.text) ?? .null, .blob(m.content), .int(now))
        for b in blobs {
            try run(
                "INSERT INTO manifest_refs(repo_id, manifest, child, kind) VALUES(?,?,?,0) ON CONFLICT DO NOTHING", .int(repo),
                .hash(m.digest.bytes),
                .hash(b.bytes))
        }
        for c in children {
            try run(
                "INSERT INTO manifest_refs(repo_id, manifest, child, kind) VALUES(?,?,?,1) ON CONFLICT DO NOTHING", .int(repo),
                .hash(m.digest.bytes),
                .hash(c.bytes))
        }
    }

    public func deleteManifest(repo: Int64, _ digest: Digest) throws -> Bool {
        try run("DELETE FROM manifests WHERE repo_id = ? AND digest = ?", .int(repo), .hash(digest.bytes))
        let deleted = changes > 0
        try run("DELETE FROM manifest_refs WHERE repo_id = ? AND manifest = ?", .int(repo), .hash(digest.bytes))
        try run("DELETE FROM artifact_facts WHERE repo_id = ? AND digest = ?", .int(repo), .hash(digest.bytes))
        return deleted
    }

    /// `deleteManifest` for many manifests (registry GC): 256 per statement instead of three
    /// statements each (round trips on PostgreSQL, while GC holds the appends lock).
    public func deleteManifests(_ doomed: [(repo: Int64, digest: Digest)]) throws {
        for start in stride(from: 0, to: doomed.count, by: 256) {
            let group = doomed[start..<min(doomed.count, start + 256)]
            let pairs = Array(repeating: "(?,?)", count: group.count).joined(separator: ",")
            var args: [SQLValue] = []
            for m in group { args += [.int(m.repo), .hash(m.digest.bytes)] }
            try runArgs("DELETE FROM manifests WHERE (repo_id, digest) IN (VALUES \(pairs))", args)
            try runArgs("DELETE FROM manifest_refs WHERE (repo_id, manifest) IN (VALUES \(pairs))", args)
            try runArgs("DELETE FROM artifact_facts WHERE (repo_id, digest) IN (VALUES \(pairs))", args)
        }
    }

    /// Manifests in the repository whose subject is `digest` (content left empty; `size` set).
    /// Manifests of a repository whose subject is `digest`, in digest order, one page at a time:
    /// those after `after` (a digest), at most `limit`, optionally of one artifactType.
    public func referrers(
        repo: Int64, subject digest: Digest, artifactType: String? = nil, after: Digest? = nil,
        limit: Int = Int.max
    ) throws -> [(record: ManifestRecord, size: Int64)] {
        var out: [(record: ManifestRecord, size: Int64)] = []
        // The digests come from `manifests_by_subject` (a covering lookup) before the rows are
        // read: asked for the rows directly, SQLite without statistics estimated the primary
        // key's repository range as small and scanned every manifest of the repository
        // (33 ms a referrers query at 100,000 manifests).
        var sql = """
            SELECT digest, media_type, artifact_type, annotations, length(content) AS size FROM manifests
            WHERE repo_id = ? AND digest IN (SELECT digest FROM manifests WHERE repo_id = ? AND subject = ?)
            """
        var args: [SQLValue] = [.int(repo), .int(repo), .hash(digest.bytes)]
        if let artifactType {
            sql += " AND artifact_type = ?"
            args.append(.text(artifactType))
        }
        if let after {
            sql += " AND digest > ?"
            args.append(.hash(after.bytes))
        }
        sql += " ORDER BY digest LIMIT ?"
        args.append(.int(Int64(min(limit, Int(Int32.max)))))
        try queryArgs(sql, args) {
            let r = $0.row
            guard let d = r.digest("digest") else { return }
            let record = ManifestRecord(
                digest: d, mediaType: r.text("media_type"), artifactType: r.optionalText("artifact_type"),
                subject: digest, annotationsJSON: r.optionalText("annotations"), content: [])
            out.append((record, r.int("size")))
        }
        return out
    }

    /// Sizes of manifests by digest within a repository.
    public func manifestSize(repo: Int64, _ digest: Digest) throws -> Int64? {
        try first("SELECT length(content) FROM manifests WHERE repo_id = ? AND digest = ?", .int(repo), .hash(digest.bytes)) { $0.int(0) }
    }

    // MARK: tags

    public func tag(repo: Int64, _ name: String) throws -> Digest? {
        try first("SELECT digest FROM tags WHERE repo_id = ? AND name = ?", .int(repo), .text(name)) { $0.hash(0).map(Digest.init(bytes:)) }
            ?? nil
    }

    /// Points `name` at `digest`, journaling the move; returns the previous digest.
    @discardableResult
    public func setTag(repo: Int64, _ name: String, to digest: Digest, actor: String, reason: String?, now: Int64) throws -> Digest? {
        try lock(.appends) // before the tag: the order every writer takes them in
        try lock(.tag(repository: repo, name: name))
        let previous = try tag(repo: repo, name)
        guard previous != digest else { return previous }
        try run(
            """
            INSERT INTO tags(repo_id, name, digest, updated_at) VALUES(?,?,?,?)
            ON CONFLICT(repo_id, name) DO UPDATE SET digest = excluded.digest, updated_at = excluded.updated_at
            """, .int(repo), .text(name), .hash(digest.bytes), .int(now))
        try journalTag(repo: repo, name, from: previous, to: digest, actor: actor, reason: reason, now: now)
        return previous
    }

    public func deleteTag(repo: Int64, _ name: String, actor: String, reason: String?, now: Int64) throws -> Bool {
        try lock(.appends) // before the tag: the order every writer takes them in
        try lock(.tag(repository: repo, name: name))
        guard let previous = try tag(repo: repo, name) else { return false }
        try run("DELETE FROM tags WHERE repo_id = ? AND name = ?", .int(repo), .text(name))
        try journalTag(repo: repo, name, from: previous, to: nil, actor: actor, reason: reason, now: now)
        return true
    }

    /// Tags pointing at `digest`.
    public func tags(repo: Int64, pointingAt digest: Digest) throws -> [String] {
        var out: [String] = []
        try query("SELECT name FROM tags WHERE repo_id = ? AND digest = ? ORDER BY name", .int(repo), .hash(digest.bytes)) {
            out.append($0.text(0))
        }
        return out
    }

    public func tags(repo: Int64, after last: String?, limit: Int) throws -> [String] {
        var out: [String] = []
        try query(
            "SELECT name FROM tags WHERE repo_id = ? AND name > ? ORDER BY name LIMIT ?", .int(repo), .text(last ?? ""), .int(Int64(limit))
        ) {
            out.append($0.text(0))
        }
        return out
    }

    func journalTag(repo: Int64, _ name: String, from: Digest?, to: Digest?, actor: String, reason: String?, now: Int64) throws {
        try run(
            "INSERT INTO tag_journal(repo_id, tag, from_digest, to_digest, actor, reason, at) VALUES(?,?,?,?,?,?,?)",
            .int(repo), .text(name), from.map { .hash($0.bytes) } ?? .null, to.map { .hash($0.bytes) } ?? .null,
            .text(actor), reason.map(SQLValue.text) ?? .null, .int(now))
    }

    /// The moves of a tag, oldest first; with `newest`, only the newest that many (still oldest
    /// first): what a page shows of a tag moved a hundred thousand times.
    public func tagHistory(repo: Int64, _ name: String, newest: Int? = nil) throws -> [TagMove] {
        var out: [TagMove] = []
        let sql =
            newest == nil
            ? "SELECT id, tag, from_digest, to_digest, actor, reason, at FROM tag_journal WHERE repo_id = ? AND tag = ? ORDER BY id"
            : """
            SELECT * FROM (SELECT id, tag, from_digest, to_digest, actor, reason, at FROM tag_journal
            WHERE repo_id = ? AND tag = ? ORDER BY id DESC LIMIT ?) AS newest ORDER BY id
            """
        try queryArgs(sql, [.int(repo), .text(name)] + (newest.map { [.int(Int64(max(1, $0)))] } ?? [])) {
            let r = $0.row
            out.append(
                TagMove(
                    id: r.int("id"), tag: r.text("tag"), from: r.digest("from_digest"), to: r.digest("to_digest"),
                    actor: r.text("actor"), reason: r.optionalText("reason"), at: r.int("at")))
        }
        return out
    }

    // MARK: format metadata

    public func manifestMetadata(_ digest: Digest) throws -> String? {
        try first("SELECT json FROM manifest_metadata WHERE digest = ?", .hash(digest.bytes)) { $0.text(0) }
    }

    public func setManifestMetadata(_ digest: Digest, json: String) throws {
        try run(
            "INSERT INTO manifest_metadata(digest, json) VALUES(?, ?) ON CONFLICT(digest) DO UPDATE SET json = excluded.json",
            .hash(digest.bytes),
            .text(json))
    }
}
