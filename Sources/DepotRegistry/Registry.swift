import DepotAPI
import DepotCatalog
import DepotCore
import DepotFormats
import DepotStore
import Foundation

/// The OCI registry model over the chunk store and the catalog: repositories, blob
/// visibility (upload, mount, reference), manifests and their references, tags with a
/// journal, referrers and upload sessions. Every method is synchronous and may block on disk;
/// the HTTP layer calls it off the event loop.
public final class Registry: Sendable {
    public let store: ChunkStore
    public let uploads: UploadSessions
    public let policy: TagPolicy
    let cache: ManifestCache
    var db: Database { store.catalog }

    /// Format inspection of pushed layers: bounded concurrency, per-blob budgets, a digest cache.
    public let inspection: InspectionService

    public init(
        store: ChunkStore, uploads limits: UploadLimits = UploadLimits(), policy: TagPolicy = TagPolicy(),
        inspectionLimits: InspectionLimits = InspectionLimits()
    ) {
        self.store = store
        self.policy = policy
        if case .postgres = store.catalog.location {
            cache = ManifestCache(capacityBytes: 64 << 20, replicated: true)
        } else {
            cache = ManifestCache(capacityBytes: 64 << 20)
        }
        inspection = InspectionService(limits: inspectionLimits)
        uploads = UploadSessions(store: store, limits: limits)
    }

    public convenience init(
        store: ChunkStore, uploadTimeout: TimeInterval, maxUploads: Int = 1024, policy: TagPolicy = TagPolicy(),
        inspectionLimits: InspectionLimits = InspectionLimits()
    ) {
        var limits = UploadLimits()
        limits.idleTimeoutSeconds = uploadTimeout
        limits.maxSessions = maxUploads
        self.init(store: store, uploads: limits, policy: policy, inspectionLimits: inspectionLimits)
    }

    /// Catalog times are milliseconds since 1970 (catalog migration 9).
    static func now() -> Int64 { Int64(Date().timeIntervalSince1970 * 1000) }
    /// Journal and audit times: milliseconds since 1970.
    static func nowMillis() -> Int64 { Int64(Date().timeIntervalSince1970 * 1000) }

    static func name(_ text: String) throws -> RepositoryName {
        do { return try RepositoryName(text) } catch {
            throw RegistryError(.nameInvalid, "\(error)".replacingOccurrences(of: "invalid argument: ", with: ""))
        }
    }

    private func repositoryID(_ name: RepositoryName) throws -> Int64? {
        try db.read { try $0.repositoryID(name.value) }
    }

    // MARK: blobs

    /// The blob if it is stored and visible in the repository.
    public func blob(_ repository: RepositoryName, _ digest: Digest) throws -> BlobRecord? {
        try db.read { conn in
            guard let repo = try conn.repositoryID(repository.value), try conn.blobVisible(repo: repo, digest) else { return nil }
            return try conn.blob(digest)
        }
    }

    /// Makes a stored blob visible in the repository (after an upload).
    public func link(_ repository: RepositoryName, _ digest: Digest) throws {
        try db.write { conn in
            let repo = try conn.ensureRepository(repository.value, now: Self.now())
            try conn.linkBlob(repo: repo, digest, now: Self.now())
            try conn.touchBlob(digest, now: Self.now())
        }
    }

    /// Cross-repository mount. With `from`, the blob must be visible there; without, anywhere.
    /// Returns false when it can't be mounted (the client then uploads).
    ///
    /// `canRead` (authentication on) says which repositories the caller may pull: knowing a
    /// digest is not access, so a mount takes the blob only from one of those, and otherwise
    /// fails like a mount of an unknown blob (the client uploads it instead; nothing leaks).
    public func mount(
        _ repository: RepositoryName, _ digest: Digest, from: RepositoryName?, canRead: (@Sendable (String) -> Bool)? = nil
    ) throws -> Bool {
        try db.write { conn in
            guard try conn.blob(digest) != nil else { return false }
            if let from {
                if let canRead, !canRead(from.value) { return false }
                guard let source = try conn.repositoryID(from.value), try conn.blobVisible(repo: source, digest) else { return false }
            } else if let canRead {
                guard try conn.repositoriesHoldingBlob(digest).contains(where: canRead) else { return false }
            } else {
                guard try conn.blobLinkedAnywhere(digest) else { return false }
            }
            let repo = try conn.ensureRepository(repository.value, now: Self.now())
            try conn.linkBlob(repo: repo, digest, now: Self.now())
            try conn.touchBlob(digest, now: Self.now()) // a mount restarts the grace period
            return true
        }
    }

    /// Removes the blob's link from the repository. It stays readable there while a manifest
    /// of the repository references it; storage is reclaimed by GC.
    public func deleteBlob(_ repository: RepositoryName, _ digest: Digest, actor: Actor = .oci) throws {
        let removed = try db.write { conn -> Bool in
            guard let repo = try conn.repositoryID(repository.value), try conn.unlinkBlob(repo: repo, digest) else { return false }
            try conn.appendAudit(
                at: Self.nowMillis(), actor: actor.name, action: "delete", repository: repository.value,
                digest: digest.description, tag: nil, details: ["what": "blob"])
            try conn.appendEvent(
                type: "blob.deleted", at: Self.nowMillis(), repository: repository.value,
                fields: ["digest": .string(digest.description), "actor": .string(actor.name)])
            return true
        }
        guard removed else { throw RegistryError(.blobUnknown, "blob \(digest) is not in \(repository)") }
    }

    // MARK: manifests

    /// Validates and stores a manifest; tags it when `reference` is a tag. With `expect`, the
    /// tag must currently point there (compare-and-swap; HTTP `If-Match`). Records lineage from
    /// the `subject` and the `dev.depot.lineage.*` annotations, and an audit entry, in the same
    /// transaction.
    public func putManifest(
        _ repository: RepositoryName, _ reference: Reference, contentType: String?, bytes: [UInt8],
        actor: Actor = .oci, expect: Digest? = nil, reason: String? = nil
    ) throws -> (digest: Digest, manifest: ParsedManifest) {
        let parsed = try ManifestParser.parse(bytes, contentType: contentType)
        let digest = Digest.of(bytes)
        if case .digest(let d) = reference, d != digest {
            throw RegistryError(.digestInvalid, "manifest content has digest \(digest), not \(d)")
        }
        var annotationsJSON: String?
        if let a = parsed.annotations, !a.isEmpty, let data = try? WireJSON.encode(a) {
            annotationsJSON = String(decoding: data, as: UTF8.self)
        }
        // Every blob must be visible here before any layer is inspected: otherwise a manifest naming
        // another repository's blob many times costs a full inspection per attempt and is then
        // refused (an attacker's read spent 70 s of CPU and 1.2 GB that way). The transaction
        // below checks again, against concurrent deletes.
        try db.read { conn in
            let repo = try conn.repositoryID(repository.value)
            for blob in parsed.blobs where blob.urls == nil || blob.mediaType != MediaType.dockerForeignLayer {
                guard let repo, try conn.blobVisible(repo: repo, blob.digest) else {
                    throw RegistryError(
                        .manifestBlobUnknown, "blob \(blob.digest) (\(blob.mediaType)) is not in \(repository)",
                        detail: blob.digest.description)
                }
            }
        }
        let alreadyExtracted = try db.read { try $0.manifestMetadata(digest) } != nil
        let metadata = alreadyExtracted ? nil : try extractMetadata(parsed)
        let lineage = try LineageAnnotations.edges(of: parsed, digest: digest, repository: repository)
        let record = ManifestRecord(
            digest: digest, mediaType: parsed.mediaType, artifactType: parsed.artifactType,
            subject: parsed.subject?.digest, annotationsJSON: annotationsJSON, content: bytes)
        try db.write { conn in
            // First, before anything this push checks: a manifest delete (here, registry GC or
            // another replica's) takes the same lock before it checks what keeps the manifest,
            // so the index's children and a re-pushed manifest this push tags cannot be deleted
            // between the check and the commit (see CatalogLock.appends).
            try conn.lock(.appends)
            let now = Self.now()
            let repo = try conn.ensureRepository(repository.value, now: now)
            for blob in parsed.blobs where blob.urls == nil || blob.mediaType != MediaType.dockerForeignLayer {
                guard try conn.blobVisible(repo: repo, blob.digest), let stored = try conn.blob(blob.digest) else {
                    throw RegistryError(
                        .manifestBlobUnknown, "blob \(blob.digest) (\(blob.mediaType)) is not in \(repository)",
                        detail: blob.digest.description)
                }
                guard stored.size == blob.size else {
                    throw RegistryError(
                        .manifestInvalid, "descriptor of \(blob.digest) says \(blob.size) bytes; the blob has \(stored.size)")
                }
                // Held until the commit: another replica's GC sweeping this (so far unreferenced)
                // blob waits for it and then sees the manifest, or deleted it first and this fails.
                guard try conn.touchCompleteBlob(stored.id, now: now) else {
                    throw RegistryError(
                        .manifestBlobUnknown, "blob \(blob.digest) (\(blob.mediaType)) was just garbage-collected; push it again",
                        detail: blob.digest.description)
                }
            }
            for child in parsed.manifests {
                guard try conn.manifestExists(repo: repo, child.digest) else {
                    throw RegistryError(
                        .manifestBlobUnknown, "manifest \(child.digest) listed by the index is not in \(repository)",
                        detail: child.digest.description)
                }
            }
            var previous: Digest?
            if case .tag(let tag) = reference {
                previous = try checkTagMove(conn, repo: repo, repository, tag, to: digest, actor: actor, expect: expect)
            }
            // Foreign layers (URLs elsewhere) are not ours: they neither root a blob nor make one
            // readable here. Recording them would let any manifest naming another repository's
            // digest as "foreign" read that blob through this repository.
            let local = parsed.blobs.filter { $0.urls == nil || $0.mediaType != MediaType.dockerForeignLayer }.map(\.digest)
            try conn.putManifest(repo: repo, record, blobs: local, children: parsed.manifests.map(\.digest), now: now)
            if let metadata { try conn.setManifestMetadata(digest, json: metadata) }
            // Ordered by the manifest's first push here (a re-push keeps it).
            try storeFacts(conn, repo: repo, record, createdAt: try conn.manifestCreatedAt(repo: repo, digest) ?? now)
            for edge in lineage {
                if try conn.isAncestorOrSelf(digest, of: edge.parent) {
                    throw RegistryError(
                        .manifestInvalid, "lineage cycle: \(digest) cannot derive from \(edge.parent), which derives from it")
                }
                try conn.insertLineageEdge(edge, repo: repo)
            }
            if let key = parsed.annotations?[JobAnnotations.key], !key.isEmpty {
                // A pipeline job's output: memoized under its key, in the push's transaction.
                try conn.recordJobOutput(
                    key: String(key.prefix(200)), repository: repository.value, digest: digest.description,
                    now: Self.nowMillis())
            }
            var details: [String: JSONValue] = ["media_type": .string(parsed.mediaType), "size": JSONValue(bytes.count)]
            if let t = parsed.artifactType { details["artifact_type"] = .string(t) }
            if let previous { details["previous"] = .string(previous.description) }
            if let reason { details["reason"] = .string(reason) }
            if !lineage.isEmpty { details["lineage"] = JSONValue(lineage.map { "\($0.relation) \($0.parentRef)" }) }
            var event: [String: JSONValue] = [
                "digest": .string(digest.description), "media_type": .string(parsed.mediaType), "size": JSONValue(bytes.count),
                "actor": .string(actor.name),
            ]
            if let t = parsed.artifactType { event["artifact_type"] = .string(t) }
            if let s = parsed.subject { event["subject"] = .string(s.digest.description) }
            if case .tag(let tag) = reference {
                event["tag"] = .string(tag)
                try conn.setTag(repo: repo, tag, to: digest, actor: actor.name, reason: reason, now: Self.nowMillis())
                try conn.appendAudit(
                    at: Self.nowMillis(), actor: actor.name, action: "push", repository: repository.value,
                    digest: digest.description, tag: tag, details: details)
                try conn.appendEvent(type: "manifest.pushed", at: Self.nowMillis(), repository: repository.value, fields: event)
                if previous != digest {
                    var moved: [String: JSONValue] = [
                        "tag": .string(tag), "digest": .string(digest.description), "actor": .string(actor.name),
                    ]
                    if let previous { moved["previous"] = .string(previous.description) }
                    try conn.appendEvent(type: "tag.moved", at: Self.nowMillis(), repository: repository.value, fields: moved)
                }
            } else {
                try conn.appendEvent(type: "manifest.pushed", at: Self.nowMillis(), repository: repository.value, fields: event)
                try conn.appendAudit(
                    at: Self.nowMillis(), actor: actor.name, action: "push", repository: repository.value,
                    digest: digest.description, tag: nil, details: details)
            }
        }
        cache.invalidate()
        return (digest, parsed)
    }

    /// Checks that `actor` may point `tag` at `digest`: protected aliases only through the alias
    /// API, immutable tags never moved, and the compare-and-swap expectation. Returns the
    /// current digest.
    func checkTagMove(
        _ conn: any CatalogConnection, repo: Int64, _ repository: RepositoryName, _ tag: String, to digest: Digest,
        actor: Actor, expect: Digest?
    ) throws -> Digest? {
        // Another replica's move of the same tag waits until this transaction commits. The appends
        // lock first: the order every writer takes them in (see CatalogLock.appends).
        try conn.lock(.appends)
        try conn.lock(.tag(repository: repo, name: tag))
        let current = try conn.tag(repo: repo, tag)
        if let expect, current != expect {
            throw RegistryError(
                .denied, "\(repository):\(tag) is at \(current?.description ?? "nothing"), not \(expect): someone moved it first",
                kind: .preconditionFailed)
        }
        if current != digest {
            if policy.isImmutable(tag), let current {
                throw RegistryError(.denied, "\(repository):\(tag) is immutable (pattern in aliases.immutable); it stays at \(current)")
            }
            if policy.isProtected(tag), !actor.viaAliasAPI {
                throw RegistryError(
                    .denied, "\(repository):\(tag) is a protected alias; move it with `depot alias set` or `depot rollback`")
            }
        }
        return current
    }

    /// The manifest a tag or digest names.
    /// The manifest if the in-memory cache holds it (never the catalog: no blocking I/O, so a
    /// request handler can answer a hit without leaving its thread); nil otherwise, and always
    /// for a tag on replicas, whose tags are read from the catalog (see `manifest`).
    public func cachedManifest(_ repository: RepositoryName, _ reference: Reference) -> ManifestRecord? {
        if cache.replicated, case .tag = reference { return nil }
        return cache.get(repository.value + "\u{0}" + reference.description).value
    }

    public func manifest(_ repository: RepositoryName, _ reference: Reference) throws -> ManifestRecord {
        if cache.replicated, case .tag(let t) = reference {
            // Replicas: another one may move the tag at any moment, and its write clears only its
            // own cache. So a tag is always read from the catalog; the manifest it names (content
            // addressed) may come from the cache.
            let digest = try db.read { conn -> Digest in
                guard let repo = try conn.repositoryID(repository.value) else {
                    throw RegistryError(.nameUnknown, "repository \(repository) is not known")
                }
                guard let d = try conn.tag(repo: repo, t) else { throw RegistryError(.manifestUnknown, "tag \(t) is not in \(repository)") }
                return d
            }
            return try manifest(repository, .digest(digest))
        }
        let key = repository.value + "\u{0}" + reference.description
        let cached = cache.get(key)
        if let hit = cached.value { return hit }
        let record = try db.read { conn -> ManifestRecord in
            guard let repo = try conn.repositoryID(repository.value) else {
                throw RegistryError(.nameUnknown, "repository \(repository) is not known")
            }
            let digest: Digest
            switch reference {
            case .digest(let d): digest = d
            case .tag(let t):
                guard let d = try conn.tag(repo: repo, t) else { throw RegistryError(.manifestUnknown, "tag \(t) is not in \(repository)") }
                digest = d
            }
            guard let m = try conn.manifest(repo: repo, digest) else {
                throw RegistryError(.manifestUnknown, "manifest \(digest) is not in \(repository)")
            }
            return m
        }
        cache.put(key, record, readAt: cached.generation)
        return record
    }

    /// Deletes by digest (the manifest and every tag on it) or by tag (the tag only). Refused
    /// for a pinned manifest, one a protected alias points at, an ancestor of a pinned manifest,
    /// and for protected or immutable tags.
    public func deleteManifest(_ repository: RepositoryName, _ reference: Reference, actor: Actor = .oci) throws {
        try db.write { conn in
            // Before the checks below: every transaction that makes a manifest kept (a tag, a
            // pin, a deployment, an index listing it) holds this lock from before its own
            // existence check to its commit, so these checks see every such reference committed.
            try conn.lock(.appends)
            guard let repo = try conn.repositoryID(repository.value) else {
                throw RegistryError(.nameUnknown, "repository \(repository) is not known")
            }
            let now = Self.nowMillis()
            switch reference {
            case .tag(let t):
                if (policy.isProtected(t) && !actor.viaAliasAPI) || policy.isImmutable(t) {
                    throw RegistryError(.denied, "\(repository):\(t) is a protected or immutable tag; it cannot be deleted this way")
                }
                guard let target = try conn.tag(repo: repo, t), try conn.deleteTag(repo: repo, t, actor: actor.name, reason: nil, now: now)
                else {
                    throw RegistryError(.manifestUnknown, "tag \(t) is not in \(repository)")
                }
                try conn.appendAudit(
                    at: now, actor: actor.name, action: "delete", repository: repository.value,
                    digest: target.description, tag: t, details: ["what": "tag"])
                try conn.appendEvent(
                    type: "tag.deleted", at: now, repository: repository.value,
                    fields: ["tag": .string(t), "digest": .string(target.description), "actor": .string(actor.name)])
            case .digest(let d):
                guard try conn.manifestExists(repo: repo, d) else {
                    throw RegistryError(.manifestUnknown, "manifest \(d) is not in \(repository)")
                }
                if try conn.isPinned(d) {
                    throw RegistryError(.denied, "\(d) is pinned; `depot unpin` it first")
                }
                let tags = try conn.tags(repo: repo, pointingAt: d)
                if let guarded = tags.first(where: { policy.isProtected($0) || policy.isImmutable($0) }) {
                    throw RegistryError(.denied, "\(repository):\(guarded) points at \(d); move that alias first")
                }
                if try conn.isDeployed(d) {
                    throw RegistryError(.denied, "\(d) is deployed (stable or canary of a deployment); roll it out of service first")
                }
                if let pinned = try conn.pinnedDescendants(of: d).first {
                    throw RegistryError(.denied, "\(d) is an ancestor of pinned \(pinned); its lineage must stay")
                }
                for t in tags {
                    _ = try conn.deleteTag(repo: repo, t, actor: actor.name, reason: "manifest deleted", now: now)
                }
                _ = try conn.deleteManifest(repo: repo, d)
                try conn.appendAudit(
                    at: now, actor: actor.name, action: "delete", repository: repository.value,
                    digest: d.description, tag: nil, details: ["what": "manifest", "tags": JSONValue(tags)])
                try conn.appendEvent(
                    type: "manifest.deleted", at: now, repository: repository.value,
                    fields: ["digest": .string(d.description), "tags": JSONValue(tags), "actor": .string(actor.name)])
            }
        }
        cache.invalidate()
    }

    // MARK: discovery

    /// Tags in lexical order after `last`, at most `limit`. Throws NAME_UNKNOWN for an unknown repository.
    public func tags(_ repository: RepositoryName, after last: String?, limit: Int) throws -> [String] {
        try db.read { conn in
            guard let repo = try conn.repositoryID(repository.value) else {
                throw RegistryError(.nameUnknown, "repository \(repository) is not known")
            }
            return try conn.tags(repo: repo, after: last, limit: limit)
        }
    }

    public func repositories(after last: String?, limit: Int) throws -> [String] {
        try db.read { try $0.repositories(after: last, limit: limit) }
    }

    /// Descriptors of the manifests whose subject is `digest`, optionally filtered by artifactType.
    /// Referrers of `digest` in digest order: a page of at most `limit` after `after`.
    public func referrers(
        _ repository: RepositoryName, _ digest: Digest, artifactType: String?, after: Digest? = nil,
        limit: Int = Int.max
    ) throws -> [Descriptor] {
        try db.read { conn in
            guard let repo = try conn.repositoryID(repository.value) else { return [] }
            return try conn.referrers(repo: repo, subject: digest, artifactType: artifactType, after: after, limit: limit).map { r in
                var annotations: [String: String]?
                if let json = r.record.annotationsJSON {
                    annotations = try? JSONDecoder().decode([String: String].self, from: Data(json.utf8))
                }
                return Descriptor(
                    mediaType: r.record.mediaType, digest: r.record.digest, size: r.size,
                    artifactType: r.record.artifactType, annotations: annotations)
            }
        }
    }
}

/// A small cache of manifests by (repository, reference), cleared on every manifest or tag
/// write. A generation number keeps a read that raced with a write from caching what it read.
///
/// With replicas (`replicated`: a PostgreSQL catalog), writes on other replicas do not clear it:
/// it then holds digest references only (`Registry.manifest` reads tags from the catalog), and an
/// entry is trusted for `replicatedTTL` seconds, the longest another replica's delete of a
/// manifest can go unnoticed here.
final class ManifestCache: Sendable {
    private let state = Locked((entries: [String: (record: ManifestRecord, at: ContinuousClock.Instant)](), bytes: 0, generation: 0))
    /// Total manifest bytes kept; the cache empties itself when full.
    let capacityBytes: Int
    let replicated: Bool
    static let replicatedTTL: Duration = .seconds(30)

    init(capacityBytes: Int, replicated: Bool = false) {
        self.capacityBytes = capacityBytes
        self.replicated = replicated
    }

    /// The cached value, or the current generation to pass to `put` after reading the catalog.
    func get(_ key: String, now: ContinuousClock.Instant = .now) -> (value: ManifestRecord?, generation: Int) {
        state.withLock { s in
            guard let e = s.entries[key] else { return (nil, s.generation) }
            if replicated && now - e.at > Self.replicatedTTL { return (nil, s.generation) }
            return (e.record, s.generation)
        }
    }

    func put(_ key: String, _ value: ManifestRecord, readAt generation: Int) {
        state.withLock { s in
            guard s.generation == generation, value.content.count <= capacityBytes / 16 else { return }
            if s.bytes + value.content.count > capacityBytes {
                s.entries.removeAll(keepingCapacity: true)
                s.bytes = 0
            }
            if s.entries.updateValue((value, .now), forKey: key) == nil { s.bytes += value.content.count }
        }
    }

    func invalidate() {
        state.withLock { s in
            s.entries.removeAll(keepingCapacity: true)
            s.bytes = 0
            s.generation &+= 1
        }
    }
}
