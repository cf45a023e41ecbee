import DepotCatalog
import DepotCore
import DepotFormats
import DepotStore
import Foundation

/// Limits on blob uploads (config `uploads:`). Every limit answers the client with an OCI error it
/// can act on, never a dropped connection: see "Limits and failure behaviour" in docs/ARCHITECTURE.md.
public struct UploadLimits: Sendable, Equatable {
    /// A session with no bytes for this long is cancelled.
    public var idleTimeoutSeconds: Double = 3600
    /// A session older than this is cancelled whatever it does, so one kept alive by a trickle
    /// cannot hold its slot (and its writer) forever.
    public var maxLifetimeSeconds: Double = 86_400
    /// Sessions open at once, in total (each holds a writer and up to a few MiB in flight).
    public var maxSessions = 1024
    /// Sessions open at once per client (its address; an IPv6 client by its /64), so one client
    /// cannot lock every other out of uploading.
    public var maxSessionsPerClient = 64
    /// A request that streams a body for longer than `rateGraceSeconds` must average at least
    /// this many bytes per second, or it is cut off (a slow-loris upload holds a session busy).
    public var minBytesPerSecond: Int64 = 1024
    public var rateGraceSeconds: Double = 30
    /// The largest blob, by any route: monolithic or chunked upload, and recipe commits.
    public var maxBlobBytes: Int64 = 128 << 30

    public init() {}
}

/// One request's hold on an upload session (OCI "blob upload session"): the request that PATCHes
/// or PUTs claims the session in the catalog, streams its body into a writer resumed from the
/// session's last checkpoint, and then either records a new checkpoint (PATCH: the bytes are
/// acknowledged and any replica can take the next request) or finishes the blob (PUT). Not
/// thread-safe: one request drives it; `offset` may be read from anywhere.
public final class UploadSession: @unchecked Sendable {
    public let id: String
    public let repository: RepositoryName
    public let client: String
    public let created: Date
    /// This request's claim token.
    let holder: String
    /// Bytes acknowledged before this request.
    let startBytes: Int64
    private let row: UploadSessionRow
    private let owner: UploadSessions
    private var writer: BlobWriter?
    private var segments: [PriorSegment] = []
    private var lastRenewal: Date
    private var done = false
    private let received = Locked(Int64(0))

    init(row: UploadSessionRow, repository: RepositoryName, holder: String, owner: UploadSessions, now: Date) {
        id = row.id
        self.repository = repository
        client = row.client
        created = Date(timeIntervalSince1970: Double(row.createdAt) / 1000)
        self.holder = holder
        startBytes = row.bytes
        self.row = row
        self.owner = owner
        lastRenewal = now
    }

    /// Bytes received so far, this request's included.
    public var offset: Int64 { startBytes + received.withLock { $0 } }

    /// The writer, resumed from the session's checkpoint the first time it is needed.
    private func openWriter() throws -> BlobWriter {
        if let writer { return writer }
        let store = owner.store
        let made: BlobWriter
        if let state = row.writerState {
            let checkpoint: WriterCheckpoint
            do { checkpoint = try WriterCheckpoint(decoding: state) } catch {
                throw RegistryError(.blobUploadInvalid, "upload \(id)'s saved state is unreadable (\(error)); start the upload over")
            }
            segments = try store.catalog.read { try $0.uploadSegments(id) }.map {
                PriorSegment(blobID: $0.blobID, range: $0.first..<$0.end)
            }
            made = try store.resumeWriter(planner: ModelFileBoundaryPlanner(), from: checkpoint, after: segments)
        } else {
            made = try store.makeWriter(planner: ModelFileBoundaryPlanner())
        }
        writer = made
        return made
    }

    /// Appends bytes. Refuses to grow past the maximum blob size (413) before a byte is written.
    /// Renews the claim now and then; fails when it was lost (the session expired meanwhile).
    public func append(_ bytes: UnsafeRawBufferPointer) throws {
        let max = owner.limits.maxBlobBytes
        let (total, overflow) = offset.addingReportingOverflow(Int64(bytes.count))
        guard !overflow, total <= max else {
            throw RegistryError(.sizeInvalid, "blob exceeds the registry's maximum blob size of \(max) bytes", kind: .tooLarge)
        }
        try openWriter().write(bytes)
        received.withLock { $0 += Int64(bytes.count) }
        let now = Date()
        if now.timeIntervalSince(lastRenewal) >= UploadSessions.claimSeconds / 4 {
            lastRenewal = now
            guard try owner.renew(self, now: now) else {
                throw RegistryError(.blobUploadUnknown, "upload \(id) expired or was cancelled while this request wrote to it")
            }
        }
    }

    /// Acknowledges what arrived: commits it as a checkpoint and lets go of the session, so the
    /// next request (on any replica) goes on from here.
    public func checkpoint() throws {
        precondition(!done, "upload request already ended")
        done = true
        guard let writer else {
            try owner.release(self)
            return
        }
        let id = self.id
        let holder = self.holder
        let from = startBytes
        var recorded = false
        var segmentBlob: Int64 = 0
        defer { if !recorded { try? owner.release(self) } } // a failed checkpoint leaves the session free for the retry
        _ = try writer.checkpoint { conn, checkpoint, segment in
            segmentBlob = segment.blobID
            let part =
                segment.range.isEmpty
                ? nil : UploadSegmentRow(blobID: segment.blobID, first: segment.range.lowerBound, end: segment.range.upperBound)
            recorded = try conn.recordUploadCheckpoint(
                id, holder: holder, from: from, bytes: checkpoint.position, state: checkpoint.encoded(), segment: part,
                now: UploadSessions.millis(Date()))
            // Nothing was cut (a short PATCH): the tail in the checkpoint is all there is.
            if recorded && part == nil { try conn.deleteBlob(id: segment.blobID) }
        }
        if !recorded {
            _ = try? owner.store.catalog.write { try $0.deleteBlob(id: segmentBlob) }
            throw RegistryError(.blobUploadUnknown, "upload \(id) expired or was cancelled while this request wrote to it")
        }
    }

    /// Completes the upload: verifies the digest, makes the blob durable and visible in its
    /// repository, and deletes the session, in one transaction with the blob's completion.
    /// Any failure ends the session (the client starts over, as after a digest mismatch).
    public func finish(expecting digest: Digest, registry: Registry) throws -> WriteResult {
        precondition(!done, "upload request already ended")
        done = true
        let id = self.id
        let holder = self.holder
        let bytes = startBytes
        let result: WriteResult
        do {
            // The claim may have lapsed while the last body streamed without new bytes.
            guard try owner.renew(self, now: Date()) else {
                writer?.abort()
                throw RegistryError(.blobUploadUnknown, "upload \(id) expired or was cancelled while this request wrote to it")
            }
            let writer = try openWriter()
            do {
                result = try writer.finish(expecting: digest, adopting: segments) { conn in
                    // Compare-and-swap before the parts are adopted: a request that lost its claim
                    // takes nothing (another request may have acknowledged newer bytes).
                    guard try conn.finishUploadSession(id, holder: holder, bytes: bytes) else {
                        throw RegistryError(.blobUploadUnknown, "upload \(id) expired or was cancelled while this request wrote to it")
                    }
                }
            } catch let e as DepotError {
                if case .digestInvalid(let m) = e { throw RegistryError(.digestInvalid, m) }
                throw e
            }
        } catch let e as RegistryError where e.code == .digestInvalid || e.code == .sizeInvalid {
            // The client's content is wrong: the upload cannot finish, so it ends (as distribution does).
            owner.delete(id)
            throw e
        } catch {
            // Anything else (a lost claim, a transient catalog or object store failure) leaves the
            // session as it was, so the client may retry the PUT.
            try? owner.release(self)
            throw error
        }
        try registry.link(repository, result.digest)
        return result
    }

    /// Ends the request without acknowledging anything it wrote (the session stays as it was).
    public func abandon() {
        guard !done else { return }
        done = true
        writer?.abort()
        try? owner.release(self)
    }

    /// Ends the session (DELETE).
    public func cancel() {
        guard !done else { return }
        done = true
        writer?.abort()
        owner.delete(id)
    }
}

/// What a client is told of a session it is not writing to.
public struct UploadSessionStatus: Sendable, Equatable {
    public var id: String
    public var repository: RepositoryName
    public var offset: Int64
}

/// The upload sessions, in the catalog (migration 12): any replica answers any request of an
/// upload, and a restart loses nothing acknowledged (the client resumes at `Range`).
public final class UploadSessions: Sendable {
    let store: ChunkStore
    public let limits: UploadLimits
    /// Idle time after which a session expires.
    public var timeout: TimeInterval { limits.idleTimeoutSeconds }
    /// How long a request's claim on a session lasts unless renewed (it renews every quarter of
    /// this while it streams). A replica that dies mid-request frees its sessions this way.
    static let claimSeconds: Double = 60

    init(store: ChunkStore, limits: UploadLimits) {
        self.store = store
        self.limits = limits
    }

    static func millis(_ date: Date) -> Int64 { Int64(date.timeIntervalSince1970 * 1000) }

    /// Sessions open (all replicas).
    public var count: Int { (try? store.catalog.read { try $0.uploadSessionCount() }) ?? 0 }

    /// The key a client's sessions are counted under: its IPv4 address, or the /64 prefix of its
    /// IPv6 address (one host usually has a whole /64 to rotate through).
    public static func clientKey(_ address: String?) -> String {
        guard let address, !address.isEmpty else { return "unknown" }
        guard address.contains(":") else { return address }
        var groups = address.split(separator: ":", omittingEmptySubsequences: false).map(String.init)
        if let gap = groups.firstIndex(of: ""), address.contains("::") {
            let present = groups.filter { !$0.isEmpty }
            let missing = max(0, 8 - present.count)
            groups =
                Array(groups[..<gap].filter { !$0.isEmpty }) + Array(repeating: "0", count: missing)
                + Array(groups[gap...].filter { !$0.isEmpty })
        }
        return groups.prefix(4).joined(separator: ":") + "::/64"
    }

    /// Opens a session for `client`, within the total and per-client limits (counted across
    /// replicas in the catalog).
    public func start(_ repository: RepositoryName, client: String = "unknown", now: Date = Date()) throws -> UploadSessionStatus {
        let id = UUID().uuidString.lowercased()
        let refusal = try store.catalog.write { conn in
            try conn.insertUploadSession(
                id: id, repository: repository.value, client: client, now: Self.millis(now), maxTotal: limits.maxSessions,
                maxPerClient: limits.maxSessionsPerClient)
        }
        switch refusal {
        case .total(let n): throw RegistryError(.tooManyRequests, "\(n) uploads are in progress; retry later")
        case .perClient(let n):
            throw RegistryError(.tooManyRequests, "this client has \(n) uploads in progress; finish or cancel one, or retry later")
        case nil: return UploadSessionStatus(id: id, repository: repository, offset: 0)
        }
    }

    /// Where a session stands (acknowledged bytes; a request writing to it right now is not counted).
    public func status(_ repository: RepositoryName, _ id: String, now: Date = Date()) throws -> UploadSessionStatus {
        guard id.utf8.count <= 128, let row = try store.catalog.read({ try $0.uploadSession(id) }), row.repository == repository.value,
            !isPastLifetime(row, now: now)
        else { throw unknown(repository, id) }
        return UploadSessionStatus(id: id, repository: repository, offset: row.bytes)
    }

    /// Claims a session for one request; fails if another request holds it.
    public func claim(_ repository: RepositoryName, _ id: String, now: Date = Date()) throws -> UploadSession {
        guard id.utf8.count <= 128 else { throw unknown(repository, id) }
        let holder = UUID().uuidString.lowercased()
        let ms = Self.millis(now)
        let claimed = try store.catalog.write { conn in
            try conn.claimUploadSession(
                id, repository: repository.value, holder: holder, until: ms + Int64(Self.claimSeconds * 1000), now: ms)
        }
        guard let row = claimed else {
            if let row = try store.catalog.read({ try $0.uploadSession(id) }), row.repository == repository.value {
                throw RegistryError(.rangeInvalid, "another request is writing to upload \(id)")
            }
            throw unknown(repository, id)
        }
        guard !isPastLifetime(row, now: now) else {
            delete(id)
            throw RegistryError(.blobUploadUnknown, "upload \(id) was cancelled or expired")
        }
        return UploadSession(row: row, repository: repository, holder: holder, owner: self, now: now)
    }

    private func isPastLifetime(_ row: UploadSessionRow, now: Date) -> Bool {
        Double(Self.millis(now) - row.createdAt) / 1000 > limits.maxLifetimeSeconds
    }

    private func unknown(_ repository: RepositoryName, _ id: String) -> RegistryError {
        RegistryError(.blobUploadUnknown, "upload \(id.prefix(80)) is not known in \(repository)")
    }

    func renew(_ session: UploadSession, now: Date) throws -> Bool {
        let ms = Self.millis(now)
        return try store.catalog.write { conn in
            try conn.renewUploadClaim(session.id, holder: session.holder, until: ms + Int64(Self.claimSeconds * 1000), now: ms)
        }
    }

    func release(_ session: UploadSession) throws {
        try store.catalog.write { try $0.releaseUploadClaim(session.id, holder: session.holder, now: Self.millis(Date())) }
    }

    /// Deletes a session and its committed parts (best effort: expiry finds what is left).
    func delete(_ id: String) {
        _ = try? store.catalog.write { try $0.deleteUploadSession(id) }
    }

    /// Deletes a session whose id no client knows (a monolithic upload's, after a failure).
    public func discard(_ id: String) { delete(id) }

    /// Ends a session (DELETE) unless another request holds it.
    public func cancel(_ repository: RepositoryName, _ id: String) throws {
        try claim(repository, id).cancel()
    }

    /// Deletes sessions idle for longer than the idle timeout (and not held by a live request),
    /// and sessions older than their maximum lifetime even while a request holds them (that
    /// request then fails when it renews or acknowledges); returns how many. Also forgets chunk
    /// proofs older than the write grace period. Runs on the leader.
    @discardableResult
    public func expire(now: Date = Date()) -> Int {
        let ms = Self.millis(now)
        let idle = ms - Int64(limits.idleTimeoutSeconds * 1000)
        let old = ms - Int64(limits.maxLifetimeSeconds * 1000)
        guard let stale = try? store.catalog.read({ try $0.staleUploadSessions(idleBefore: idle, createdBefore: old, now: ms) }) else {
            return 0
        }
        var expired = 0
        for id in stale {
            let deleted = try? store.catalog.write { conn in
                try conn.deleteStaleUploadSession(id, idleBefore: idle, createdBefore: old, now: ms)
            }
            if deleted == true { expired += 1 }
        }
        // Chunk proofs vouch for staged chunks, which GC keeps for the write grace period: no longer.
        let proofsBefore = ms - store.options.writeGraceSeconds * 1000
        _ = try? store.catalog.write { try $0.deleteChunkProofs(createdBefore: proofsBefore) }
        return expired
    }
}
