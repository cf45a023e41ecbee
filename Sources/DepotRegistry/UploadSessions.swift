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

/// An upload in progress (OCI "blob upload session"): a streaming blob writer and how many
/// bytes it has received. One request at a time may append to it.
public final class UploadSession: @unchecked Sendable {
    public let id: String
    public let repository: RepositoryName
    /// The client that opened it (see `UploadSessions.clientKey`).
    public let client: String
    public let created: Date
    let writer: BlobWriter
    let maxBytes: Int64
    private let state = Locked(
        (
            offset: Int64(0), busy: false, lastActivity: Date(), previousActivity: Date(), cancelled: false,
            writerAborted: false
        ))

    init(id: String, repository: RepositoryName, client: String, writer: BlobWriter, maxBytes: Int64, now: Date) {
        self.id = id
        self.repository = repository
        self.client = client
        self.writer = writer
        self.maxBytes = maxBytes
        self.created = now
    }

    /// Bytes received so far.
    public var offset: Int64 { state.withLock { $0.offset } }
    var lastActivity: Date { state.withLock { $0.lastActivity } }

    /// Claims the session for one request; fails if another request holds it.
    public func claim() throws {
        try state.withLock { s in
            guard !s.cancelled else { throw RegistryError(.blobUploadUnknown, "upload \(id) was cancelled or expired") }
            guard !s.busy else { throw RegistryError(.rangeInvalid, "another request is writing to upload \(id)") }
            s.busy = true
            s.previousActivity = s.lastActivity
            s.lastActivity = Date()
        }
    }

    /// When the session was last active before the current claim.
    var lastActivityBeforeClaim: Date { state.withLock { $0.previousActivity } }

    public func release() {
        state.withLock {
            $0.busy = false
            $0.lastActivity = Date()
        }
    }

    /// Whether the session was cancelled (expired) while a request held it: the request stops.
    public var isCancelled: Bool { state.withLock { $0.cancelled } }

    /// Appends bytes (the caller holds the claim). Blocks while the chunk pipeline is full.
    /// Refuses to grow past the maximum blob size (413) before a byte is written.
    public func append(_ bytes: UnsafeRawBufferPointer) throws {
        try state.withLock { s in
            guard !s.cancelled else { throw RegistryError(.blobUploadUnknown, "upload \(id) was cancelled or expired") }
            let (total, overflow) = s.offset.addingReportingOverflow(Int64(bytes.count))
            guard !overflow, total <= maxBytes else {
                throw RegistryError(.sizeInvalid, "blob exceeds the registry's maximum blob size of \(maxBytes) bytes", kind: .tooLarge)
            }
        }
        try writer.write(bytes)
        state.withLock {
            $0.offset += Int64(bytes.count)
            $0.lastActivity = Date()
        }
    }

    /// Whether a request holds the session right now.
    var isBusy: Bool { state.withLock { $0.busy } }

    /// Aborts the writer, once, whoever gets here first (the expiry or the request letting go).
    fileprivate func abortWriterOnce() {
        let first = state.withLock { s -> Bool in
            if s.writerAborted { return false }
            s.writerAborted = true
            return true
        }
        if first { writer.abort() }
    }

    /// Marks the session cancelled; returns false when it already was.
    fileprivate func markCancelled() -> Bool {
        state.withLock { s in
            if s.cancelled { return false }
            s.cancelled = true
            return true
        }
    }
}

/// The live upload sessions. They live in memory: after a restart, their ids answer
/// BLOB_UPLOAD_UNKNOWN and clients start over (their unfinished writes are garbage for GC).
public final class UploadSessions: Sendable {
    /// `total` counts slots taken, including sessions still being set up (not yet in `byID`), so
    /// that the limit holds across concurrent starts.
    private let sessions = Locked<(byID: [String: UploadSession], perClient: [String: Int], total: Int)>(
        (byID: [:], perClient: [:], total: 0))
    let store: ChunkStore
    public let limits: UploadLimits
    /// Idle time after which a session expires.
    public var timeout: TimeInterval { limits.idleTimeoutSeconds }

    init(store: ChunkStore, limits: UploadLimits) {
        self.store = store
        self.limits = limits
    }

    public var count: Int { sessions.withLock { $0.byID.count } }

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

    /// Opens a session for `client`. The total and per-client counts are checked and the session
    /// inserted under one lock, so concurrent starts cannot overshoot a limit.
    public func start(_ repository: RepositoryName, client: String = "unknown", now: Date = Date()) throws -> UploadSession {
        let id = UUID().uuidString.lowercased()
        try sessions.withLock { s in
            guard s.total < limits.maxSessions else {
                throw RegistryError(.tooManyRequests, "\(limits.maxSessions) uploads are in progress; retry later")
            }
            guard s.perClient[client, default: 0] < limits.maxSessionsPerClient else {
                throw RegistryError(
                    .tooManyRequests,
                    "this client has \(limits.maxSessionsPerClient) uploads in progress; finish or cancel one, or retry later")
            }
            s.perClient[client, default: 0] += 1
            s.total += 1
        }
        let writer: BlobWriter
        do { writer = try store.makeWriter(planner: SafetensorsBoundaryPlanner()) } catch {
            release(client: client)
            throw error
        }
        let session = UploadSession(id: id, repository: repository, client: client, writer: writer, maxBytes: limits.maxBlobBytes, now: now)
        sessions.withLock { $0.byID[session.id] = session }
        return session
    }

    public func get(_ repository: RepositoryName, _ id: String) throws -> UploadSession {
        guard let s = sessions.withLock({ $0.byID[id] }), s.repository == repository else {
            throw RegistryError(.blobUploadUnknown, "upload \(id.prefix(80)) is not known in \(repository)")
        }
        return s
    }

    /// Completes a session: verifies the digest, makes the blob durable and visible in its repository.
    public func finish(_ session: UploadSession, expecting digest: Digest, registry: Registry) throws -> WriteResult {
        guard remove(session) else {
            throw RegistryError(.blobUploadUnknown, "upload \(session.id) was cancelled or expired")
        }
        let result: WriteResult
        do {
            result = try session.writer.finish(expecting: digest)
        } catch let e as DepotError {
            if case .digestInvalid(let m) = e { throw RegistryError(.digestInvalid, m) }
            throw e
        }
        try registry.link(session.repository, result.digest)
        return result
    }

    public func cancel(_ session: UploadSession) {
        guard remove(session) else { return }
        session.abortWriterOnce()
    }

    /// Takes a session out of the table (once): false when it was already gone.
    private func remove(_ session: UploadSession) -> Bool {
        guard session.markCancelled() else { return false }
        sessions.withLock { s in
            s.byID.removeValue(forKey: session.id)
            Self.decrement(&s.perClient, session.client)
            s.total -= 1
        }
        return true
    }

    private func release(client: String) {
        sessions.withLock { s in
            Self.decrement(&s.perClient, client)
            s.total -= 1
        }
    }

    private static func decrement(_ counts: inout [String: Int], _ key: String) {
        let left = counts[key, default: 0] - 1
        counts[key] = left > 0 ? left : nil
    }

    /// Cancels sessions idle for longer than the idle timeout, and sessions older than their
    /// maximum lifetime even while a request holds them (that request then fails when it next
    /// appends); returns how many.
    @discardableResult
    public func expire(now: Date = Date()) -> Int {
        let all = sessions.withLock { Array($0.byID.values) }
        var expired = 0
        for session in all {
            if now.timeIntervalSince(session.created) > limits.maxLifetimeSeconds {
                // A writer in use by a request is aborted by that request (it sees isCancelled);
                // an idle one is aborted here.
                if (try? session.claim()) != nil {
                    cancel(session)
                } else if remove(session), !session.isBusy {
                    // The holder let go between our claim and the removal: nobody else will abort
                    // the writer. (If it lets go later, it sees the session cancelled and does;
                    // the abort happens once either way.)
                    session.abortWriterOnce()
                }
                expired += 1
                continue
            }
            guard now.timeIntervalSince(session.lastActivity) > limits.idleTimeoutSeconds else { continue }
            do { try session.claim() } catch { continue } // in use right now: not idle
            guard now.timeIntervalSince(session.lastActivityBeforeClaim) > limits.idleTimeoutSeconds else {
                session.release()
                continue
            }
            cancel(session)
            expired += 1
        }
        return expired
    }

    /// Aborts the writer of a session that was removed while a request held it (its lifetime
    /// ended); called by that request when it lets go.
    public func abandon(_ session: UploadSession) {
        if session.isCancelled { session.abortWriterOnce() }
    }

    /// Cancels every session (shutdown).
    public func cancelAll() {
        for session in sessions.withLock({ Array($0.byID.values) }) { cancel(session) }
    }
}
