import DepotCore
import DepotDeploy
import DepotPipelines
import DepotRegistry
import DepotStore
import Foundation
import HTTPTypes
import Hummingbird
import Logging
import NIOCore

/// Answers every HTTP request: the OCI distribution API under `/v2/`, plus `/healthz` and
/// `/metrics`. Parsing and status codes live here; behaviour lives in `Registry`.
public struct OCIResponder: HTTPResponder {
    public typealias Context = BasicRequestContext
    let registry: Registry
    let metrics: ServerMetrics
    let logger: Logger
    /// The pipeline job queue; nil when no pipelines are configured (the job API then answers 404).
    let jobs: JobQueue?
    /// Secrets of webhook stages, by "pipeline/stage", to verify completion callbacks.
    let callbackSecrets: [String: String]
    /// Deployments and canary rollouts.
    let deployments: Deployments

    public init(registry: Registry, metrics: ServerMetrics, logger: Logger, jobs: JobQueue? = nil, callbackSecrets: [String: String] = [:],
                deployments: Deployments? = nil) {
        self.registry = registry
        self.metrics = metrics
        self.logger = logger
        self.jobs = jobs
        self.callbackSecrets = callbackSecrets
        self.deployments = deployments ?? Deployments(registry: registry, policy: CanaryPolicy())
    }

    public func respond(to request: Request, context: Context) async throws -> Response {
        let started = ContinuousClock.now
        let path = request.uri.path.removingPercentEncoding ?? request.uri.path
        let head = request.method == .head
        var label = "other"
        var response: Response
        do {
            if path == "/healthz" {
                label = "healthz"
                response = Reply.bytes(Array("ok\n".utf8), contentType: "text/plain")
            } else if path == "/metrics" {
                label = "metrics"
                response = try await metricsResponse()
            } else if let route = Route(path: path) {
                label = route.label
                response = try await handle(route, request)
            } else if let route = ExtensionRoute(path: path) {
                label = route.label
                response = try await handle(route, request)
            } else {
                response = Reply.json(["errors": [["code": "NOT_FOUND", "message": "no such endpoint", "detail": [String: String]()]]], status: 404, head: head)
            }
        } catch {
            let e = RegistryError.from(error)
            if e.status >= 500 {
                logger.error("request failed", metadata: ["method": "\(request.method)", "path": "\(path)", "status": "\(e.status)", "error": "\(e.message)"])
            }
            response = Reply.error(e, head: head)
        }
        response.headers[.dockerAPIVersion] = "registry/2.0"
        let known: Set<HTTPRequest.Method> = [.get, .head, .post, .put, .patch, .delete]
        metrics.record(route: label, method: known.contains(request.method) ? request.method.rawValue : "OTHER", status: response.status.code)
        if logger.logLevel <= .debug {
            let ms = (ContinuousClock.now - started) / .milliseconds(1)
            logger.debug("request", metadata: ["method": "\(request.method)", "path": "\(path)", "status": "\(response.status.code)",
                                             "route": "\(label)", "ms": "\(String(format: "%.2f", ms))"])
        }
        return response
    }

    func handle(_ route: Route, _ request: Request) async throws -> Response {
        let method = request.method
        switch (route, method) {
        case (.base, .get), (.base, .head):
            return Reply.json([String: String](), head: method == .head)
        case (.catalog, .get):
            return try await catalog(request)
        case (.tags(let name), .get):
            return try await tags(try RequestParsing.name(name), request)
        case (.manifest(let name, let ref), .get), (.manifest(let name, let ref), .head):
            return try await getManifest(try RequestParsing.name(name), try RequestParsing.reference(ref), head: method == .head)
        case (.manifest(let name, let ref), .put):
            return try await putManifest(try RequestParsing.name(name), try RequestParsing.reference(ref), request)
        case (.manifest(let name, let ref), .delete):
            let (n, r) = (try RequestParsing.name(name), try RequestParsing.reference(ref))
            let actor = Actor(Self.actor(request))
            try await offload { try registry.deleteManifest(n, r, actor: actor) }
            return Reply.empty(202)
        case (.blob(let name, let digest), .get), (.blob(let name, let digest), .head):
            return try await getBlob(try RequestParsing.name(name), try RequestParsing.digest(digest), request)
        case (.blob(let name, let digest), .delete):
            let (n, d) = (try RequestParsing.name(name), try RequestParsing.digest(digest))
            let actor = Actor(Self.actor(request))
            try await offload { try registry.deleteBlob(n, d, actor: actor) }
            return Reply.empty(202)
        case (.uploads(let name), .post):
            return try await startUpload(try RequestParsing.name(name), request)
        case (.upload(let name, let id), .get):
            let session = try registry.uploads.get(try RequestParsing.name(name), id)
            return Reply.empty(204, uploadHeaders(session))
        case (.upload(let name, let id), .patch):
            return try await patchUpload(try registry.uploads.get(try RequestParsing.name(name), id), request)
        case (.upload(let name, let id), .put):
            return try await putUpload(try registry.uploads.get(try RequestParsing.name(name), id), request)
        case (.upload(let name, let id), .delete):
            let session = try registry.uploads.get(try RequestParsing.name(name), id)
            try session.claim()
            let uploads = registry.uploads
            try await offload { uploads.cancel(session) }
            return Reply.empty(204)
        case (.referrers(let name, let digest), .get):
            return try await referrers(try RequestParsing.name(name), try RequestParsing.digest(digest), request)
        default:
            throw RegistryError(.unsupported, "\(method) is not supported on this endpoint", status: 405)
        }
    }

    // MARK: blobs

    func getBlob(_ name: RepositoryName, _ digest: Digest, _ request: Request) async throws -> Response {
        guard let blob = try await offload({ try registry.blob(name, digest) }) else {
            throw RegistryError(.blobUnknown, "blob \(digest) is not in \(name)")
        }
        var headers: HTTPFields = [.contentType: "application/octet-stream", .acceptRanges: "bytes", .eTag: "\"\(digest)\""]
        headers[.dockerContentDigest] = digest.description
        let range: Range<Int64>?
        do {
            range = try RequestParsing.byteRange(request, size: blob.size)
        } catch let e as RegistryError {
            return Reply.error(RegistryError(e.code, e.message, status: 416), headers: [.contentRange: "bytes */\(blob.size)"],
                               head: request.method == .head)
        }
        var status = 200
        if let range {
            status = 206
            headers[.contentRange] = "bytes \(range.lowerBound)-\(range.upperBound - 1)/\(blob.size)"
        }
        let length = range.map { $0.upperBound - $0.lowerBound } ?? blob.size
        headers[.contentLength] = String(length)
        if request.method == .head || length == 0 {
            return Response(status: .init(code: status), headers: headers, body: ResponseBody())
        }
        let reader = try await offload { try registry.store.reader(digest, range: range, as: ByteBuffer.self) }
        // The first batch is read before the headers go out, so a pack that cannot be read (EIO,
        // damage) is an OCI error response, not a 200 whose connection drops. A failure later on
        // can only cut the body short (Content-Length tells the client it is incomplete).
        let first = try await offload { try reader.next() }
        let metrics = self.metrics
        let body = ResponseBody(contentLength: Int(length)) { writer in
            var next = first
            while let batch = next {
                metrics.sent(batch.readableBytes)
                try await writer.write(batch)
                next = try await offload { try reader.next() }
            }
            try await writer.finish(nil)
        }
        return Response(status: .init(code: status), headers: headers, body: body)
    }

    // MARK: uploads

    func uploadHeaders(_ session: UploadSession) -> HTTPFields {
        var h: HTTPFields = [.location: "/v2/\(session.repository)/blobs/uploads/\(session.id)"]
        // As distribution does: "0-0" also for an empty upload.
        h[.range] = "0-\(max(0, session.offset - 1))"
        h[.dockerUploadUUID] = session.id
        return h
    }

    func startUpload(_ name: RepositoryName, _ request: Request) async throws -> Response {
        let query = request.uri.queryParameters
        if let mountText = query["mount"] {
            let digest = try RequestParsing.digest(String(mountText))
            let from = try query["from"].map { try RequestParsing.name(String($0)) }
            if try await offload({ try registry.mount(name, digest, from: from) }) {
                return Reply.empty(201, [.location: "/v2/\(name)/blobs/\(digest)", .dockerContentDigest: digest.description])
            }
        } else if let digestText = query["digest"] {
            // Monolithic upload: the body is the whole blob.
            let digest = try RequestParsing.digest(String(digestText))
            let session = try await offload { try registry.uploads.start(name) }
            try session.claim()
            do {
                return try await complete(session, digest: digest, request)
            } catch {
                // The session was internal to this request: nothing can resume it.
                let uploads = registry.uploads
                _ = try? await offload { uploads.cancel(session) }
                throw error
            }
        }
        let session = try await offload { try registry.uploads.start(name) }
        var h = uploadHeaders(session)
        h[.range] = "0-0"
        h[.ociChunkMinLength] = "0"
        return Reply.empty(202, h)
    }

    func patchUpload(_ session: UploadSession, _ request: Request) async throws -> Response {
        try session.claim()
        defer { session.release() }
        do {
            try await receive(request, into: session)
        } catch let e as RegistryError where e.status == 416 {
            // Tell the client where the upload stands, so it can resume.
            return Reply.error(e, headers: uploadHeaders(session))
        }
        return Reply.empty(202, uploadHeaders(session))
    }

    func putUpload(_ session: UploadSession, _ request: Request) async throws -> Response {
        guard let digestText = request.uri.queryParameters["digest"] else {
            throw RegistryError(.digestInvalid, "PUT to an upload needs ?digest=")
        }
        let digest = try RequestParsing.digest(String(digestText))
        try session.claim()
        return try await complete(session, digest: digest, request)
    }

    /// Streams a final body (if any) into a claimed session and completes it.
    func complete(_ session: UploadSession, digest: Digest, _ request: Request) async throws -> Response {
        do {
            try await receive(request, into: session)
        } catch {
            session.release()
            throw error
        }
        _ = try await offload { try registry.uploads.finish(session, expecting: digest, registry: registry) }
        return Reply.empty(201, [.location: "/v2/\(session.repository)/blobs/\(digest)", .dockerContentDigest: digest.description])
    }

    /// Checks Content-Range against the session and streams the body into it, handing the
    /// blocking writer about 1 MiB at a time.
    func receive(_ request: Request, into session: UploadSession) async throws {
        let declared = try RequestParsing.contentLength(request)
        if let range = try RequestParsing.contentRange(request) {
            guard range.lowerBound == session.offset else {
                throw RegistryError(.rangeInvalid, "Content-Range starts at \(range.lowerBound) but the upload has \(session.offset) bytes",
                                    status: 416)
            }
            if let declared, declared != range.upperBound - range.lowerBound + 1 {
                throw RegistryError(.sizeInvalid, "Content-Length \(declared) does not match Content-Range \(range.lowerBound)-\(range.upperBound)")
            }
        }
        var pending = ByteBuffer()
        var received: Int64 = 0
        let metrics = self.metrics
        do {
            for try await buffer in request.body {
                received += Int64(buffer.readableBytes)
                metrics.received(buffer.readableBytes)
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
            if rest.readableBytes > 0 { try? await offload { try rest.withUnsafeReadableBytes { try session.append($0) } } }
            if error is RegistryError || error is DepotError { throw error }
            // The client went away mid-body: its error, not the server's (no 500 in the logs).
            throw RegistryError(.blobUploadInvalid, "request body ended early: \(error)", status: 400)
        }
        if pending.readableBytes > 0 {
            let rest = pending
            try await offload { try rest.withUnsafeReadableBytes { try session.append($0) } }
        }
        if let declared, declared != received {
            throw RegistryError(.sizeInvalid, "received \(received) bytes but Content-Length said \(declared)")
        }
    }

    // MARK: manifests

    func getManifest(_ name: RepositoryName, _ reference: Reference, head: Bool) async throws -> Response {
        let m = try await offload { try registry.manifest(name, reference) }
        metrics.sent(head ? 0 : m.content.count)
        return Reply.bytes(m.content, contentType: m.mediaType,
                           headers: [.dockerContentDigest: m.digest.description, .eTag: "\"\(m.digest)\""], head: head)
    }

    func putManifest(_ name: RepositoryName, _ reference: Reference, _ request: Request) async throws -> Response {
        var body = ByteBuffer()
        for try await buffer in request.body {
            guard body.readableBytes + buffer.readableBytes <= ManifestParser.maxSize else {
                throw RegistryError(.sizeInvalid, "manifest exceeds \(ManifestParser.maxSize) bytes", status: 413)
            }
            body.writeImmutableBuffer(buffer)
        }
        metrics.received(body.readableBytes)
        let bytes = Array(body.readableBytesView)
        let contentType = request.headers[.contentType]
        let actor = Actor(Self.actor(request))
        let expect = try Self.ifMatch(request)
        let (digest, parsed) = try await offload {
            try registry.putManifest(name, reference, contentType: contentType, bytes: bytes, actor: actor, expect: expect)
        }
        var h: HTTPFields = [.location: "/v2/\(name)/manifests/\(digest)", .dockerContentDigest: digest.description]
        if let subject = parsed.subject { h[.ociSubject] = subject.digest.description }
        return Reply.empty(201, h)
    }

    // MARK: discovery

    func tags(_ name: RepositoryName, _ request: Request) async throws -> Response {
        let n = try RequestParsing.pageSize(request)
        let last = request.uri.queryParameters["last"].map(String.init)
        let limit = n.map { $0 == 0 ? 0 : $0 + 1 } ?? Int.max
        var tags = try await offload { try registry.tags(name, after: last, limit: limit) }
        var headers: HTTPFields = [:]
        if let n, n > 0, tags.count > n {
            tags.removeLast(tags.count - n)
            headers[.link] = "</v2/\(name)/tags/list?n=\(n)&last=\(tags.last ?? "")>; rel=\"next\""
        }
        return Reply.json(["name": name.value, "tags": tags], headers: headers)
    }

    func catalog(_ request: Request) async throws -> Response {
        let n = try RequestParsing.pageSize(request)
        let last = request.uri.queryParameters["last"].map(String.init)
        let limit = n.map { $0 == 0 ? 0 : $0 + 1 } ?? Int.max
        var names = try await offload { try registry.repositories(after: last, limit: limit) }
        var headers: HTTPFields = [:]
        if let n, n > 0, names.count > n {
            names.removeLast(names.count - n)
            headers[.link] = "</v2/_catalog?n=\(n)&last=\(names.last ?? "")>; rel=\"next\""
        }
        return Reply.json(["repositories": names], headers: headers)
    }

    func referrers(_ name: RepositoryName, _ digest: Digest, _ request: Request) async throws -> Response {
        let artifactType = request.uri.queryParameters["artifactType"].map(String.init)
        let descriptors = try await offload { try registry.referrers(name, digest, artifactType: artifactType) }
        var headers: HTTPFields = [:]
        if artifactType != nil { headers[.ociFiltersApplied] = "artifactType" }
        let index: [String: Any] = ["schemaVersion": 2, "mediaType": MediaType.ociIndex, "manifests": descriptors.map(\.json)]
        return Reply.json(index, contentType: MediaType.ociIndex, headers: headers)
    }

    // MARK: metrics

    func metricsResponse() async throws -> Response {
        let stats = try await offload { try registry.store.stats() }
        let text = metrics.render(gauges: [
            ("depot_upload_sessions", "Upload sessions in progress.", Double(registry.uploads.count)),
            ("depot_store_logical_bytes", "Sum of the sizes of stored blobs.", Double(stats.logicalBytes)),
            ("depot_store_stored_bytes", "Bytes of pack files on disk.", Double(stats.storedBytes)),
            ("depot_store_chunks", "Unique chunks stored.", Double(stats.chunks)),
            ("depot_store_blobs", "Blobs stored.", Double(stats.blobs)),
        ])
        return Reply.bytes(Array(text.utf8), contentType: "text/plain; version=0.0.4")
    }
}
