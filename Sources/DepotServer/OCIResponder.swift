import DepotAPI
import DepotCatalog
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
    public typealias Context = DepotRequestContext
    let registry: Registry
    let metrics: ServerMetrics
    let logger: Logger
    /// The pipeline job queue; nil when no pipelines are configured (the job API then answers 404).
    let jobs: JobQueue?
    /// Secrets of webhook stages, by "pipeline/stage", to verify completion callbacks.
    let callbackSecrets: [String: String]
    /// Deployments and canary rollouts.
    let deployments: Deployments
    /// Connection, page and concurrency limits (`server:`).
    let limits: ServerConfig.ServerLimits
    /// Recipe commits in progress (each re-reads every chunk it names).
    let recipeCommits: ConcurrencyGate
    /// `/depot/v1/audit/verify` re-hashes the whole journal: one at a time (never a cached answer:
    /// an auditor verifying right after a suspected edit must see it).
    let auditVerifications = SharedRecentResult<AuditVerification>(maxAge: .zero)

    public init(
        registry: Registry, metrics: ServerMetrics, logger: Logger, jobs: JobQueue? = nil, callbackSecrets: [String: String] = [:],
        deployments: Deployments? = nil, limits: ServerConfig.ServerLimits = .init()
    ) {
        self.registry = registry
        self.limits = limits
        self.recipeCommits = ConcurrencyGate(limit: limits.maxRecipeCommits)
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
                response = try await handle(route, request, context)
            } else if let route = ExtensionRoute(path: path) {
                label = route.label
                response = try await handle(route, request)
            } else {
                response = Reply.json(
                    ["errors": [["code": "NOT_FOUND", "message": "no such endpoint", "detail": [String: String]()]]], status: 404,
                    head: head)
            }
        } catch {
            let e = RegistryError.from(error)
            if e.status >= 500 {
                logger.error(
                    "request failed",
                    metadata: ["method": "\(request.method)", "path": "\(path)", "status": "\(e.status)", "error": "\(e.message)"])
            }
            response = Reply.error(e, head: head)
        }
        response.headers[.dockerAPIVersion] = "registry/2.0"
        let known: Set<HTTPRequest.Method> = [.get, .head, .post, .put, .patch, .delete]
        metrics.record(
            route: label, method: known.contains(request.method) ? request.method.rawValue : "OTHER", status: response.status.code)
        if logger.logLevel <= .debug {
            let ms = (ContinuousClock.now - started) / .milliseconds(1)
            logger.debug(
                "request",
                metadata: [
                    "method": "\(request.method)", "path": "\(path)", "status": "\(response.status.code)",
                    "route": "\(label)", "ms": "\(String(format: "%.2f", ms))",
                ])
        }
        return response
    }

    func handle(_ route: Route, _ request: Request, _ context: Context) async throws -> Response {
        let method = request.method
        switch (route, method) {
        case (.base, .get), (.base, .head):
            return Reply.json([String: String](), head: method == .head)
        case (.catalog, .get):
            return try await catalog(request)
        case (.tags(let name), .get):
            return try await tags(try RequestParsing.name(name), request)
        case (.manifest(let name, let ref), .get), (.manifest(let name, let ref), .head):
            // A reference that can name nothing is simply not found (the distribution spec's
            // conformance suite and other registries answer 404 here; only a PUT says TAG_INVALID).
            let reference: Reference
            do { reference = try RequestParsing.reference(ref) } catch {
                throw RegistryError(
                    .manifestUnknown, "manifest '\(ref.prefix(200))' is not a valid tag or digest, so it is not in \(name.prefix(200))")
            }
            return try await getManifest(try RequestParsing.name(name), reference, head: method == .head)
        case (.manifest(let name, let ref), .put):
            return try await putManifest(try RequestParsing.name(name), try RequestParsing.reference(ref), request)
        case (.manifest(let name, let ref), .delete):
            let (n, r) = (try RequestParsing.name(name), try RequestParsing.reference(ref))
            let actor = Actor(Self.actor(request))
            try await offload { try registry.deleteManifest(n, r, actor: actor) }
            return Reply.empty(202)
        case (.blob(let name, let digest), .get), (.blob(let name, let digest), .head):
            return try await getBlob(try RequestParsing.name(name), try RequestParsing.digest(digest), request, context)
        case (.blob(let name, let digest), .delete):
            let (n, d) = (try RequestParsing.name(name), try RequestParsing.digest(digest))
            let actor = Actor(Self.actor(request))
            try await offload { try registry.deleteBlob(n, d, actor: actor) }
            return Reply.empty(202)
        case (.uploads(let name), .post):
            return try await startUpload(try RequestParsing.name(name), request, client: UploadSessions.clientKey(context.clientAddress))
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
            await offloadDetached { uploads.cancel(session) }
            return Reply.empty(204)
        case (.referrers(let name, let digest), .get):
            return try await referrers(try RequestParsing.name(name), try RequestParsing.digest(digest), request)
        default:
            throw RegistryError(.unsupported, "\(method) is not supported on this endpoint", status: 405)
        }
    }

    // MARK: blobs

    func getBlob(_ name: RepositoryName, _ digest: Digest, _ request: Request, _ context: Context) async throws -> Response {
        guard let blob = try await offload({ try registry.blob(name, digest) }) else {
            throw RegistryError(.blobUnknown, "blob \(digest) is not in \(name)")
        }
        var headers: HTTPFields = [.contentType: "application/octet-stream", .acceptRanges: "bytes", .eTag: "\"\(digest)\""]
        headers[.dockerContentDigest] = digest.description
        let range: Range<Int64>?
        do {
            range = try RequestParsing.byteRange(request, size: blob.size)
        } catch let e as RegistryError {
            return Reply.error(
                RegistryError(e.code, e.message, status: 416), headers: [.contentRange: "bytes */\(blob.size)"],
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
        let channel: (any Channel)? = length > 4 << 20 ? context.channel : nil
        let stallTimeout = Duration.milliseconds(Int64(limits.idleTimeoutSeconds * 1000))
        let body = ResponseBody(contentLength: Int(length)) { writer in
            let watchdog = StallWatchdog(channel: channel, timeout: stallTimeout)
            defer { watchdog.stop() }
            var next = first
            while let batch = next {
                metrics.sent(batch.readableBytes)
                try await writer.write(batch)
                watchdog.progress()
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

    func startUpload(_ name: RepositoryName, _ request: Request, client: String) async throws -> Response {
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
            let session = try await offload { try registry.uploads.start(name, client: client) }
            try session.claim()
            do {
                return try await complete(session, digest: digest, request)
            } catch {
                // The session was internal to this request: nothing can resume it.
                let uploads = registry.uploads
                await offloadDetached { uploads.cancel(session) }
                throw error
            }
        }
        let session = try await offload { try registry.uploads.start(name, client: client) }
        var h = uploadHeaders(session)
        h[.range] = "0-0"
        h[.ociChunkMinLength] = "0"
        return Reply.empty(202, h)
    }

    func patchUpload(_ session: UploadSession, _ request: Request) async throws -> Response {
        try session.claim()
        do {
            try await receive(request, into: session)
        } catch let e as RegistryError where e.status == 416 || e.status == 408 {
            // Tell the client where the upload stands, so it can resume.
            await letGo(session)
            return Reply.error(e, headers: uploadHeaders(session))
        } catch {
            await letGo(session)
            throw error
        }
        await letGo(session)
        return Reply.empty(202, uploadHeaders(session))
    }

    /// Releases a request's claim on a session; if the session's lifetime ended while this
    /// request held it, its writer is aborted now (only the holder of the claim may touch it).
    func letGo(_ session: UploadSession) async {
        session.release()
        if session.isCancelled {
            let uploads = registry.uploads
            await offloadDetached { uploads.abandon(session) }
        }
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
            await letGo(session)
            throw error
        }
        do {
            _ = try await offload { try registry.uploads.finish(session, expecting: digest, registry: registry) }
        } catch let e as RegistryError where e.code == .blobUploadUnknown {
            await letGo(session)
            throw e
        }
        return Reply.empty(201, [.location: "/v2/\(session.repository)/blobs/\(digest)", .dockerContentDigest: digest.description])
    }

    /// Checks Content-Range against the session and streams the body into it, handing the
    /// blocking writer about 1 MiB at a time.
    func receive(_ request: Request, into session: UploadSession) async throws {
        let declared = try RequestParsing.contentLength(request)
        let maxBlob = registry.uploads.limits.maxBlobBytes
        if let declared, declared > maxBlob {
            throw RegistryError(
                .sizeInvalid, "Content-Length \(declared) exceeds the registry's maximum blob size of \(maxBlob) bytes",
                status: 413)
        }
        if let range = try RequestParsing.contentRange(request, limit: maxBlob) {
            guard range.lowerBound == session.offset else {
                throw RegistryError(
                    .rangeInvalid, "Content-Range starts at \(range.lowerBound) but the upload has \(session.offset) bytes",
                    status: 416)
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
        do {
            for try await buffer in request.body {
                received += Int64(buffer.readableBytes)
                metrics.received(buffer.readableBytes)
                if let declared, received > declared {
                    throw RegistryError(.sizeInvalid, "the body is longer than its Content-Length of \(declared)")
                }
                if !rate.isMet(received: received, now: .now) { throw rate.error(received: received) }
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
        return Reply.bytes(
            m.content, contentType: m.mediaType,
            headers: [.dockerContentDigest: m.digest.description, .eTag: "\"\(m.digest)\""], head: head)
    }

    func putManifest(_ name: RepositoryName, _ reference: Reference, _ request: Request) async throws -> Response {
        if let declared = try RequestParsing.contentLength(request), declared > ManifestParser.maxSize {
            throw RegistryError(.sizeInvalid, "manifest exceeds \(ManifestParser.maxSize) bytes", status: 413)
        }
        let body = try await RequestParsing.collect(
            request, limit: ManifestParser.maxSize, what: "manifest",
            rate: RateFloor(limits: registry.uploads.limits, start: .now))
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
        let n = try RequestParsing.pageSize(request) ?? limits.defaultPageSize
        let last = request.uri.queryParameters["last"].map(String.init)
        let limit = n == 0 ? 0 : n + 1
        var tags = try await offload { try registry.tags(name, after: last, limit: limit) }
        var headers: HTTPFields = [:]
        if n > 0, tags.count > n {
            tags.removeLast(tags.count - n)
            headers[.link] = "</v2/\(name)/tags/list?n=\(n)&last=\(tags.last ?? "")>; rel=\"next\""
        }
        return Reply.encoded(TagList(name: name.value, tags: tags), headers: headers)
    }

    func catalog(_ request: Request) async throws -> Response {
        let n = try RequestParsing.pageSize(request) ?? limits.defaultPageSize
        let last = request.uri.queryParameters["last"].map(String.init)
        let limit = n == 0 ? 0 : n + 1
        var names = try await offload { try registry.repositories(after: last, limit: limit) }
        var headers: HTTPFields = [:]
        if n > 0, names.count > n {
            names.removeLast(names.count - n)
            headers[.link] = "</v2/_catalog?n=\(n)&last=\(names.last ?? "")>; rel=\"next\""
        }
        return Reply.encoded(RepositoryList(repositories: names), headers: headers)
    }

    func referrers(_ name: RepositoryName, _ digest: Digest, _ request: Request) async throws -> Response {
        let artifactType = request.uri.queryParameters["artifactType"].map(String.init)
        let n = try RequestParsing.pageSize(request) ?? limits.defaultPageSize
        let after = try request.uri.queryParameters["last"].map { try RequestParsing.digest(String($0)) }
        var descriptors = try await offload {
            try registry.referrers(name, digest, artifactType: artifactType, after: after, limit: n == 0 ? 0 : n + 1)
        }
        var headers: HTTPFields = [:]
        if artifactType != nil { headers[.ociFiltersApplied] = "artifactType" }
        if n > 0, descriptors.count > n {
            descriptors.removeLast(descriptors.count - n)
            var next = "/v2/\(name)/referrers/\(digest)?n=\(n)&last=\(descriptors.last!.digest)"
            if let artifactType, let escaped = artifactType.addingPercentEncoding(withAllowedCharacters: .alphanumerics) {
                next += "&artifactType=\(escaped)"
            }
            headers[.link] = "<\(next)>; rel=\"next\""
        }
        return Reply.encoded(OCIReferrersIndex(manifests: descriptors), contentType: MediaType.ociIndex, headers: headers)
    }

    // MARK: metrics

    func metricsResponse() async throws -> Response {
        let stats = try await offload { try registry.store.stats(exact: false) }
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
