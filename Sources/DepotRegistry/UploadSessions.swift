import DepotCore
import DepotFormats
import DepotStore
import Foundation

/// An upload in progress (OCI "blob upload session"): a streaming blob writer and how many
/// bytes it has received. One request at a time may append to it.
public final class UploadSession: @unchecked Sendable {
    public let id: String
    public let repository: RepositoryName
    let writer: BlobWriter
    private let state = Locked((offset: Int64(0), busy: false, lastActivity: Date(), previousActivity: Date()))

    init(id: String, repository: RepositoryName, writer: BlobWriter) {
        self.id = id
        self.repository = repository
        self.writer = writer
    }

    /// Bytes received so far.
    public var offset: Int64 { state.withLock { $0.offset } }
    var lastActivity: Date { state.withLock { $0.lastActivity } }

    /// Claims the session for one request; fails if another request holds it.
    public func claim() throws {
        try state.withLock { s in
            guard !s.busy else { throw RegistryError(.rangeInvalid, "another request is writing to upload \(id)") }
            s.busy = true
            s.previousActivity = s.lastActivity
            s.lastActivity = Date()
        }
    }

    /// When the session was last active before the current claim.
    var lastActivityBeforeClaim: Date { state.withLock { $0.previousActivity } }

    public func release() { state.withLock { $0.busy = false; $0.lastActivity = Date() } }

    /// Appends bytes (the caller holds the claim). Blocks while the chunk pipeline is full.
    public func append(_ bytes: UnsafeRawBufferPointer) throws {
        try writer.write(bytes)
        state.withLock { $0.offset += Int64(bytes.count); $0.lastActivity = Date() }
    }
}

/// The live upload sessions. They live in memory: after a restart, their ids answer
/// BLOB_UPLOAD_UNKNOWN and clients start over (their unfinished writes are garbage for GC).
public final class UploadSessions: Sendable {
    private let sessions = Locked<[String: UploadSession]>([:])
    let store: ChunkStore
    /// Idle time after which a session expires.
    public let timeout: TimeInterval
    /// Sessions open at once, at most (each holds a writer and up to a few MiB in flight).
    public let limit: Int

    init(store: ChunkStore, timeout: TimeInterval, limit: Int) {
        self.store = store
        self.timeout = timeout
        self.limit = limit
    }

    public var count: Int { sessions.withLock { $0.count } }

    public func start(_ repository: RepositoryName) throws -> UploadSession {
        guard count < limit else {
            throw RegistryError(.tooManyRequests, "\(limit) uploads are in progress; retry later")
        }
        let writer = try store.makeWriter(planner: SafetensorsBoundaryPlanner())
        let session = UploadSession(id: UUID().uuidString.lowercased(), repository: repository, writer: writer)
        sessions.withLock { $0[session.id] = session }
        return session
    }

    public func get(_ repository: RepositoryName, _ id: String) throws -> UploadSession {
        guard let s = sessions.withLock({ $0[id] }), s.repository == repository else {
            throw RegistryError(.blobUploadUnknown, "upload \(id.prefix(80)) is not known in \(repository)")
        }
        return s
    }

    /// Completes a session: verifies the digest, makes the blob durable and visible in its repository.
    public func finish(_ session: UploadSession, expecting digest: Digest, registry: Registry) throws -> WriteResult {
        remove(session.id)
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
        remove(session.id)
        session.writer.abort()
    }

    private func remove(_ id: String) { _ = sessions.withLock { $0.removeValue(forKey: id) } }

    /// Cancels sessions idle for longer than `timeout`; returns how many.
    @discardableResult
    public func expire(now: Date = Date()) -> Int {
        let idle = sessions.withLock { s in s.values.filter { now.timeIntervalSince($0.lastActivity) > timeout } }
        var expired = 0
        for session in idle {
            do { try session.claim() } catch { continue }   // in use right now: not idle
            guard now.timeIntervalSince(session.lastActivityBeforeClaim) > timeout else {
                session.release()
                continue
            }
            cancel(session)
            expired += 1
        }
        return expired
    }

    /// Cancels every session (shutdown).
    public func cancelAll() {
        for session in sessions.withLock({ Array($0.values) }) { cancel(session) }
    }
}
