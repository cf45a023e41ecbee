import DepotAPI
import DepotAuth
import DepotCore
import DepotRegistry
import DepotStore
import Foundation
import HTTPTypes
import Hummingbird
import NIOCore
import Tracing

/// Blob uploads (`/v2/<name>/blobs/uploads/…`): monolithic, chunked (PATCH) and cross-repository
/// mounts. A session is claimed by one request at a time; see `UploadSessions`.
struct UploadHandlers: RouteHandlers {
    let registry: Registry
    let metrics: ServerMetrics
    /// With authentication on, mounts take blobs only from repositories the caller may pull.
    var auth: AuthService?

    func start(_ match: RouteMatch, _ request: Request, _ context: DepotRequestContext) async throws -> Response {
        try await startUpload(try Self.name(match), request, client: UploadSessions.clientKey(context.clientAddress))
    }

    func status(_ match: RouteMatch, _ request: Request) async throws -> Response {
        let name = try Self.name(match)
        let id = match["uuid"]
        let uploads = registry.uploads
        let session = try await offload { try uploads.status(name, id) }
        return Reply.empty(204, uploadHeaders(id: session.id, repository: name, offset: session.offset))
    }

    func patch(_ match: RouteMatch, _ request: Request) async throws -> Response {
        try await patchUpload(try await claim(match), request)
    }

    func put(_ match: RouteMatch, _ request: Request) async throws -> Response {
        // The digest is checked before the session is claimed: a bad PUT leaves the upload as it was.
        guard let digestText = request.uri.queryParameters["digest"] else {
            throw RegistryError(.digestInvalid, "PUT to an upload needs ?digest=")
        }
        let digest = try RequestParsing.digest(String(digestText))
        return try await complete(try await claim(match), digest: digest, request)
    }

    func cancel(_ match: RouteMatch, _ request: Request) async throws -> Response {
        let session = try await claim(match)
        await offloadDetached { session.cancel() }
        return Reply.empty(204)
    }

    /// Claims the session named by the route for this request (any replica may hold its state).
    func claim(_ match: RouteMatch) async throws -> UploadSession {
        let name = try Self.name(match)
        let id = match["uuid"]
        let uploads = registry.uploads
        return try await offload { try uploads.claim(name, id) }
    }

    func uploadHeaders(_ session: UploadSession) -> HTTPFields {
        uploadHeaders(id: session.id, repository: session.repository, offset: session.offset)
    }

    func uploadHeaders(id: String, repository: RepositoryName, offset: Int64) -> HTTPFields {
        var h: HTTPFields = [.location: "/v2/\(repository)/blobs/uploads/\(id)"]
        // As distribution does: "0-0" also for an empty upload.
        h[.range] = "0-\(max(0, offset - 1))"
        h[.dockerUploadUUID] = id
        return h
    }

    func startUpload(_ name: RepositoryName, _ request: Request, client: String) async throws -> Response {
        let query = request.uri.queryParameters
        let uploads = registry.uploads
        if let mountText = query["mount"] {
            let digest = try RequestParsing.digest(String(mountText))
            let from = try query["from"].map { try RequestParsing.name(String($0)) }
            var canRead: (@Sendable (String) -> Bool)?
            if let p = Caller.principal, let policy = auth?.policy { canRead = { Authorizer.canPull(p, $0, policy: policy) } }
            let visible = canRead
            if try await offload({ try registry.mount(name, digest, from: from, canRead: visible) }) {
                return Reply.empty(201, [.location: "/v2/\(name)/blobs/\(digest)", .dockerContentDigest: digest.description])
            }
        } else if let digestText = query["digest"] {
            // Monolithic upload: the body is the whole blob.
            let digest = try RequestParsing.digest(String(digestText))
            let session = try await offload { () -> UploadSession in
                let started = try uploads.start(name, client: client)
                return try uploads.claim(name, started.id)
            }
            do {
                return try await complete(session, digest: digest, request)
            } catch {
                // The session was internal to this request: nothing can resume it.
                await offloadDetached { uploads.discard(session.id) }
                throw error
            }
        }
        let session = try await offload { try uploads.start(name, client: client) }
        var h = uploadHeaders(id: session.id, repository: name, offset: 0)
        h[.range] = "0-0"
        h[.ociChunkMinLength] = "0"
        return Reply.empty(202, h)
    }

    /// Streams the body into the session and acknowledges it. When the body breaks off or is
    /// too slow, what arrived is acknowledged all the same, and the client is told where the
    /// upload stands so that it can resume.
    func patchUpload(_ session: UploadSession, _ request: Request) async throws -> Response {
        do {
            try await receiveTraced(request, into: session)
        } catch let e as RegistryError where e.kind == .rangeNotSatisfiable || e.kind == .timedOut {
            try await acknowledge(session)
            return Reply.error(e, headers: uploadHeaders(session))
        } catch let e as RegistryError where e.code == .blobUploadInvalid {
            // The client went away mid-body: keep what arrived for its retry.
            try await acknowledge(session)
            throw e
        } catch {
            await offloadDetached { session.abandon() }
            throw error
        }
        try await acknowledge(session)
        return Reply.empty(202, uploadHeaders(session))
    }

    func acknowledge(_ session: UploadSession) async throws {
        try await RequestTrace.child("depot.upload.checkpoint") { span in
            try await offload { try session.checkpoint() }
            span.attributes["depot.upload.offset"] = Int(session.offset)
        }
    }

    /// Streams a final body (if any) into a claimed session and completes it.
    func complete(_ session: UploadSession, digest: Digest, _ request: Request) async throws -> Response {
        do {
            try await receiveTraced(request, into: session)
        } catch {
            // A PUT's body that breaks off cannot be completed; keep what arrived for a retry.
            if (try? await acknowledge(session)) == nil { await offloadDetached { session.abandon() } }
            throw error
        }
        let registry = self.registry
        // Draining the chunk workers, the digest check and the transaction that makes the blob
        // visible; its attributes say what the push stored and where its time went.
        try await RequestTrace.child("depot.blob.finish") { span in
            let result = try await offload { try session.finish(expecting: digest, registry: registry) }
            if span.isRecording { span.updateAttributes { RequestTrace.attributes(of: result, into: &$0) } }
        }
        return Reply.empty(201, [.location: "/v2/\(session.repository)/blobs/\(digest)", .dockerContentDigest: digest.description])
    }

    /// `receive` inside a span: the time the body took to arrive and be handed to the writer.
    func receiveTraced(_ request: Request, into session: UploadSession) async throws {
        try await RequestTrace.child("depot.upload.receive") { span in
            let from = session.offset
            defer { if span.isRecording { span.attributes["depot.upload.received_bytes"] = Int(session.offset - from) } }
            try await receive(request, into: session)
        }
    }

    /// Checks Content-Range against the session and streams the body into it, handing the
    /// blocking writer about 1 MiB at a time.
    func receive(_ request: Request, into session: UploadSession) async throws {
        let declared = try RequestParsing.contentLength(request)
        let maxBlob = registry.uploads.limits.maxBlobBytes
        if let declared, declared > maxBlob {
            throw RegistryError(
                .sizeInvalid, "Content-Length \(declared) exceeds the registry's maximum blob size of \(maxBlob) bytes", kind: .tooLarge)
        }
        if let range = try RequestParsing.contentRange(request, limit: maxBlob) {
            guard range.lowerBound == session.offset else {
                throw RegistryError(
                    .rangeInvalid, "Content-Range starts at \(range.lowerBound) but the upload has \(session.offset) bytes")
            }
            if let declared, declared != range.upperBound - range.lowerBound + 1 {
                throw RegistryError(
                    .sizeInvalid, "Content-Length \(declared) does not match Content-Range \(range.lowerBound)-\(range.upperBound)")
            }
        }
        var pending = ByteBuffer()
        var received: Int64 = 0
        let metrics = self.metrics
        let rate = RateFloor(limits: registry.uploads.limits, start: .now)
        // Time waiting for the client, as opposed to the writer (`receive` in depot_push_stage_seconds).
        let receiving = ContinuousClock.now
        var writing: Duration = .zero
        defer { metrics.receivedBody(waitingSeconds: Double((ContinuousClock.now - receiving - writing) / .microseconds(1)) / 1e6) }
        do {
            for try await buffer in request.body {
                received += Int64(buffer.readableBytes)
                metrics.received(buffer.readableBytes)
                if let declared, received > declared {
                    throw RegistryError(.sizeInvalid, "the body is longer than its Content-Length of \(declared)")
                }
                if !rate.isMet(received: received, now: .now) { throw rate.error(received: received) }
                let appending = ContinuousClock.now
                defer { writing += ContinuousClock.now - appending } // a failed append too
                if pending.readableBytes == 0 && buffer.readableBytes >= 1 << 20 {
                    try await offload { try buffer.withUnsafeReadableBytes { try session.append($0) } }
                } else {
                    pending.writeImmutableBuffer(buffer)
                    if pending.readableBytes >= 1 << 20 {
                        let full = pending
                        pending = ByteBuffer()
                        try await offload { try full.withUnsafeReadableBytes { try session.append($0) } }
                    }
                }
            }
        } catch {
            // The connection broke: keep what arrived, so the client can ask and resume.
            let rest = pending
            let appending = ContinuousClock.now
            if rest.readableBytes > 0 { try? await offload { try rest.withUnsafeReadableBytes { try session.append($0) } } }
            writing += ContinuousClock.now - appending
            if error is RegistryError || error is DepotError { throw error }
            // The client went away mid-body: its error, not the server's (no 500 in the logs).
            throw RegistryError(.blobUploadInvalid, "request body ended early: \(error)")
        }
        if pending.readableBytes > 0 {
            let rest = pending
            let appending = ContinuousClock.now
            defer { writing += ContinuousClock.now - appending }
            try await offload { try rest.withUnsafeReadableBytes { try session.append($0) } }
        }
        if let declared, declared != received {
            throw RegistryError(.sizeInvalid, "received \(received) bytes but Content-Length said \(declared)")
        }
    }
}
