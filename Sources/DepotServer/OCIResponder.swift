import DepotAPI
import DepotAuth
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
import Tracing

/// Answers every HTTP request: the OCI distribution API under `/v2`, Depot's extension API under
/// `/depot/v1`, `/healthz` and `/metrics`. It routes with the one route table
/// (`DepotAPI.Routes`), maps errors to OCI error bodies, counts and logs; the handler groups
/// parse parameters and call `Registry`, `JobQueue` and `Deployments`.
public struct OCIResponder: HTTPResponder {
    public typealias Context = DepotRequestContext
    let registry: Registry
    let metrics: ServerMetrics
    let logger: Logger
    let blobs: BlobHandlers
    let uploads: UploadHandlers
    let manifests: ManifestHandlers
    let discovery: DiscoveryHandlers
    let chunks: ChunkHandlers
    let governance: GovernanceHandlers
    let jobs: JobHandlers
    let deploy: DeployHandlers
    let identity: AuthHandlers
    let signatures: TrustHandlers
    let ui: UIHandlers
    /// nil or disabled: every route is open (a loopback development server).
    let auth: AuthService?
    /// `http` or `https`, for the token endpoint's URL in challenges.
    let scheme: String
    /// What `/readyz` checks.
    let readiness: Readiness

    /// `jobs` is nil when no pipelines are configured (the job API then answers 404);
    /// `callbackSecrets` are the secrets of webhook stages, by "pipeline/stage".
    public init(
        registry: Registry, metrics: ServerMetrics, logger: Logger, jobs: JobQueue? = nil, callbackSecrets: [String: String] = [:],
        deployments: Deployments? = nil, limits: ServerConfig.ServerLimits = .init(), auth: AuthService? = nil, scheme: String = "http",
        trust: TrustService? = nil, readiness: Readiness? = nil
    ) {
        let trust = trust ?? TrustService.none(registry: registry, logger: logger)
        let deployments = deployments ?? Deployments(registry: registry, policy: CanaryPolicy(), admission: trust)
        self.registry = registry
        self.metrics = metrics
        self.logger = logger
        blobs = BlobHandlers(registry: registry, metrics: metrics, limits: limits)
        uploads = UploadHandlers(registry: registry, metrics: metrics, auth: auth)
        manifests = ManifestHandlers(registry: registry, metrics: metrics, trust: trust)
        discovery = DiscoveryHandlers(registry: registry, limits: limits, auth: auth)
        chunks = ChunkHandlers(
            registry: registry, metrics: metrics, recipeCommits: ConcurrencyGate(limit: limits.maxRecipeCommits),
            visibility: auth.flatMap { $0.enabled ? ChunkVisibility(policy: $0.policy, db: registry.store.catalog) : nil })
        governance = GovernanceHandlers(registry: registry, auth: auth)
        self.jobs = JobHandlers(
            registry: registry, jobs: jobs, callbackSecrets: callbackSecrets, deployments: deployments, trust: trust)
        signatures = TrustHandlers(registry: registry, trust: trust)
        deploy = DeployHandlers(registry: registry, deployments: deployments)
        identity = AuthHandlers(registry: registry, auth: auth)
        ui = UIHandlers(registry: registry, auth: auth, jobs: jobs, deployments: deployments, scheme: scheme)
        self.auth = auth
        self.scheme = scheme
        self.readiness =
            readiness ?? Readiness(probes: [CatalogProbe(registry: registry), LocalPacksProbe(root: registry.store.root)], logger: logger)
    }

    public func respond(to request: Request, context: Context) async throws -> Response {
        // One server span per request, a child of the caller's (W3C `traceparent`), covering the
        // response body too: RequestTracing.swift. With tracing off it is a no-op span.
        guard RequestTrace.traces(request) else {
            return try await RequestTrace.untraced { try await handle(request, context, NoOpTracer.NoOpSpan(context: .topLevel)) }
        }
        var parent = ServiceContext.topLevel
        InstrumentationSystem.instrument.extract(TraceHeaders(fields: request.headers), into: &parent, using: TraceHeadersExtractor())
        let span = startSpan(request.method.rawValue, context: parent, ofKind: .server)
        guard span.isRecording else {
            // Tracing off (the no-op tracer) or not sampled: nothing to end or annotate, but child
            // spans still see the context (so an unsampled request's children are unsampled too).
            return try await ServiceContext.$current.withValue(span.context) { try await handle(request, context, span) }
        }
        let traced = RequestSpan(span)
        var response: Response
        do {
            response = try await ServiceContext.$current.withValue(span.context) {
                try await RequestTrace.$span.withValue(span) { try await handle(request, context, span) }
            }
        } catch {
            traced.end(error: error)
            throw error
        }
        span.updateAttributes { a in
            a["http.response.status_code"] = Int(response.status.code)
            if let length = response.body.contentLength { a["http.response.body.size"] = length }
        }
        if response.status.code >= 500 { span.setStatus(.init(code: .error)) }
        // A body of at most 64 KiB (a manifest, an error) is in memory and goes out in one write
        // with the head; wrapping it would split that into three writes (three syscalls). Only
        // streamed bodies (blobs, chunk batches) are followed to their end.
        if request.method == .head || (response.body.contentLength ?? .max) <= 64 << 10 {
            traced.end()
        } else {
            response.body = response.body.endingSpan(traced)
        }
        return response
    }

    func handle(_ request: Request, _ context: Context, _ span: any Span) async throws -> Response {
        let started = ContinuousClock.now
        let path = request.uri.path.removingPercentEncoding ?? request.uri.path
        let head = request.method == .head
        // Metrics label: the route's id; "other" for paths no route has (bounded cardinality).
        var label = "other"
        var response: Response
        if span.isRecording {
            span.updateAttributes { a in
                a["http.request.method"] = request.method.rawValue
                a["url.path"] = clientText(request.uri.path)
                if let length = request.headers[.contentLength].flatMap({ Int($0) }) { a["http.request.body.size"] = length }
                if let agent = request.headers[.userAgent] { a["user_agent.original"] = clientText(agent) }
            }
        }
        do {
            switch Routes.route(method: request.method.rawValue, path: path) {
            case .matched(let match):
                label = match.route.id.rawValue
                if span.isRecording {
                    span.operationName = "\(request.method.rawValue) \(match.route.pattern)"
                    span.updateAttributes { a in
                        a["http.route"] = match.route.pattern
                        a["depot.route"] = label
                        if let name = match.name { a["depot.repository"] = name }
                    }
                }
                if let auth, auth.enabled {
                    switch await gate(auth, match, request) {
                    case .refuse(let refusal): response = refusal
                    case .pass(let principal):
                        response = try await Caller.$principal.withValue(principal) { try await dispatch(match, request, context) }
                    }
                } else {
                    response = try await dispatch(match, request, context)
                }
            case .methodNotAllowed(let allowed):
                response = Reply.error(
                    RegistryError(.unsupported, "\(request.method) is not supported on this endpoint"),
                    headers: [.allow: allowed.map(\.rawValue).joined(separator: ", ")], head: head)
            case .notFound:
                response = Reply.encoded(OCIErrorBody([.init(code: "NOT_FOUND", message: "no such endpoint")]), status: 404, head: head)
            }
        } catch {
            let e = RegistryError.from(error)
            let status = ErrorStatus.of(e)
            if status >= 500 {
                logger.error(
                    "request failed",
                    metadata: ["method": "\(request.method)", "path": "\(path)", "status": "\(status)", "error": "\(e.message)"])
            }
            response = Reply.error(e, head: head)
        }
        response.headers[.dockerAPIVersion] = "registry/2.0"
        let known: Set<HTTPRequest.Method> = [.get, .head, .post, .put, .patch, .delete]
        metrics.record(
            route: label, method: known.contains(request.method) ? request.method.rawValue : "OTHER", status: response.status.code,
            seconds: Double((ContinuousClock.now - started) / .microseconds(1)) / 1e6)
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

    enum GateResult {
        case pass(Principal)
        case refuse(Response)
    }

    /// Authentication and authorization of one request, from the route's action: a missing or
    /// invalid credential gets 401 with the Bearer challenge (the realm and scope OCI clients
    /// need to fetch a token), a valid one without the right gets 403 DENIED. A manifest PUT by
    /// tag needs `tag` besides `push`; node routes carry their deployment.
    func gate(_ auth: AuthService, _ match: RouteMatch, _ request: Request) async -> GateResult {
        let route = match.route
        let head = request.method == .head
        // The token endpoint and webhook callbacks check their own credentials.
        if route.action.isOpen { return .pass(.anonymous) }
        // Validated only for a challenge (a name that is not valid never goes into a header).
        var repository: String? { match.name.flatMap { (try? RepositoryName($0))?.value } }
        func unauthorized(_ message: String) -> GateResult {
            let challenge = auth.challenge(
                host: request.head.authority, scheme: scheme, repository: repository, action: route.action)
            return .refuse(Reply.error(RegistryError(.unauthorized, message), headers: [.wwwAuthenticate: challenge], head: head))
        }
        // A page also accepts the session cookie (the login form's), when no header is sent.
        let session = route.isPage && request.headers[.authorization] == nil ? UISession.cookie(request, UISession.sessionCookie) : nil
        let principal: Principal
        do {
            if let session {
                principal = try await auth.sessionPrincipal(session)
            } else {
                principal = try await auth.authenticate(request.headers[.authorization])
            }
        } catch let f as AuthService.Failure {
            return route.isPage ? .refuse(ui.loginRedirect(request, clearSession: session != nil)) : unauthorized(f.message)
        } catch {
            return .refuse(
                route.isPage
                    ? ui.refusal(request, .anonymous, RegistryError.from(error)) : Reply.error(RegistryError.from(error), head: head))
        }
        var actions = [route.action]
        if route.id == .manifestPut, !match["reference"].contains(":") { actions.append(.tag) }
        var deployment: String?
        if route.action == .nodesReport, let name = match.name { deployment = "\(name)/\(match["environment"])" }
        for action in actions {
            let wanted = AccessRequest(action, repository: match.name, deployment: deployment)
            switch Authorizer.decide(principal, wanted, policy: auth.policy) {
            case .allow: continue
            case .authenticate:
                if route.isPage { return .refuse(ui.loginRedirect(request, clearSession: false)) }
                return unauthorized("authentication required: log in (depot login, docker login) or pass a token")
            case .deny(let why) where route.isPage:
                return .refuse(ui.refusal(request, principal, RegistryError(.denied, "requested access to the resource is denied: \(why)")))
            case .deny(let why):
                var headers: HTTPFields = [:]
                // A token from /token that lacks this scope: the challenge names the scope to ask
                // for (error="insufficient_scope"). Answered with 403 rather than the spec's 401
                // because oras-py asks for a new token only after a 403 carrying a challenge (it
                // retries a 401 with the token it has); docker, skopeo and containerd request the
                // scopes they need up front and never get here.
                if principal.access != nil {
                    headers[.wwwAuthenticate] =
                        auth.challenge(host: request.head.authority, scheme: scheme, repository: repository, action: action)
                        + ",error=\"insufficient_scope\""
                }
                return .refuse(
                    Reply.error(RegistryError(.denied, "requested access to the resource is denied: \(why)"), headers: headers, head: head))
            }
        }
        return .pass(principal)
    }

    /// One case per route, and no `default`: a route added to the table without a handler does
    /// not compile.
    func dispatch(_ match: RouteMatch, _ request: Request, _ context: Context) async throws -> Response {
        switch match.route.id {
        case .health: return Reply.bytes(Array("ok\n".utf8), contentType: "text/plain", head: request.method == .head)
        case .ready: return await readyResponse(head: request.method == .head)
        case .metrics: return try await metricsResponse()

        case .base: return Reply.encoded([String: String](), head: request.method == .head)
        case .catalog: return try await discovery.catalog(request)
        case .tags: return try await discovery.tags(match, request)
        case .referrers: return try await discovery.referrers(match, request)
        case .manifestGet, .manifestHead: return try await manifests.get(match, request)
        case .manifestPut: return try await manifests.put(match, request)
        case .manifestDelete: return try await manifests.delete(match, request)
        case .blobGet, .blobHead: return try await blobs.get(match, request, context)
        case .blobDelete: return try await blobs.delete(match, request)
        case .uploadStart: return try await uploads.start(match, request, context)
        case .uploadStatus: return try await uploads.status(match, request)
        case .uploadPatch: return try await uploads.patch(match, request)
        case .uploadPut: return try await uploads.put(match, request)
        case .uploadCancel: return try await uploads.cancel(match, request)

        case .info: return try await chunks.info(match, request)
        case .missingChunks: return try await chunks.missingChunks(match, request)
        case .uploadChunks: return try await chunks.uploadChunks(match, request)
        case .recipeGet: return try await chunks.recipeGet(match, request, context)
        case .recipePut: return try await chunks.recipePut(match, request)
        case .fetchChunks: return try await chunks.fetchChunks(match, request, context)
        case .metadata: return try await chunks.metadata(match, request)

        case .aliasGet: return try await governance.aliasGet(match, request)
        case .aliasMove: return try await governance.aliasMove(match, request)
        case .aliasHistory: return try await governance.aliasHistory(match, request)
        case .aliasRollback: return try await governance.aliasRollback(match, request)
        case .aliasResolve: return try await governance.aliasResolve(match, request)
        case .pinPut: return try await governance.pinPut(match, request)
        case .pinDelete: return try await governance.pinDelete(match, request)
        case .pins: return try await governance.pins(match, request)
        case .lineage: return try await governance.lineage(match, request)
        case .impact: return try await governance.impact(match, request)
        case .lineagePath: return try await governance.lineagePath(match, request)
        case .audit: return try await governance.audit(match, request)
        case .auditVerify: return try await governance.auditVerify(match, request)
        case .events: return try await governance.events(match, request)
        case .deliveries: return try await governance.deliveries(match, request)

        case .pipelines: return try await jobs.pipelines(match, request)
        case .jobs: return try await jobs.list(match, request)
        case .jobLease: return try await jobs.lease(match, request)
        case .job: return try await jobs.get(match, request)
        case .jobLogGet: return try await jobs.logGet(match, request)
        case .jobLogPut: return try await jobs.logPut(match, request)
        case .jobStart: return try await jobs.start(match, request)
        case .jobHeartbeat: return try await jobs.heartbeat(match, request)
        case .jobComplete: return try await jobs.complete(match, request)
        case .jobFail: return try await jobs.fail(match, request)
        case .jobCancel: return try await jobs.cancel(match, request)
        case .jobRetry: return try await jobs.retry(match, request)
        case .jobCallback: return try await jobs.callback(match, request)

        case .deployments: return try await deploy.list(match, request)
        case .served: return try await deploy.served(match, request)
        case .deployment: return try await deploy.status(match, request)
        case .rolloutStart: return try await deploy.start(match, request)
        case .rolloutResume: return try await deploy.control(match, request, "resume")
        case .rolloutPromote: return try await deploy.control(match, request, "promote")
        case .rolloutAbort: return try await deploy.control(match, request, "abort")
        case .deploymentResolve: return try await deploy.resolve(match, request)
        case .nodeReport: return try await deploy.report(match, request)

        case .token: return try await identity.token(match, request)
        case .whoami: return try await identity.whoami(match, request)
        case .users: return try await identity.users(match, request)
        case .userAdd: return try await identity.userAdd(match, request)
        case .userRemove: return try await identity.userRemove(match, request)
        case .tokens: return try await identity.tokens(match, request)
        case .tokenCreate: return try await identity.tokenCreate(match, request)
        case .tokenRevoke: return try await identity.tokenRevoke(match, request)

        case .signatures: return try await signatures.signatures(match, request)
        case .signingKey: return try await signatures.signingKey(match, request)

        case .uiHome: return await ui.home(request)
        case .uiLogin: return await ui.loginPage(request)
        case .uiLoginSubmit: return await ui.loginSubmit(request)
        case .uiLogout: return await ui.logout(request)
        case .uiStyle: return ui.style()
        case .uiAudit: return await ui.auditPage(request)
        case .uiDeployments: return await ui.deploymentsPage(request)
        case .uiJobs: return await ui.jobsPage(request)
        case .uiJob: return await ui.jobPage(match, request)
        case .uiArtifact: return await ui.artifact(match, request)
        case .uiAlias: return await ui.alias(match, request)
        case .uiRollback: return await ui.rollback(match, request)
        case .uiDeployment: return await ui.deploymentPage(match, request)
        case .uiRolloutControl: return await ui.rolloutControl(match, request)
        case .uiRepository: return await ui.repository(match, request)
        }
    }

    // MARK: readiness and metrics

    func readyResponse(head: Bool) async -> Response {
        let report = await readiness.report()
        return Reply.encoded(report, status: report.ready ? 200 : 503, head: head)
    }

    func metricsResponse() async throws -> Response {
        let stats = try await offload { try registry.store.stats(exact: false) }
        let text = metrics.render(
            gauges: [
                ("depot_upload_sessions", "Upload sessions in progress.", Double(registry.uploads.count)),
                ("depot_store_logical_bytes", "Sum of the sizes of stored blobs.", Double(stats.logicalBytes)),
                ("depot_store_stored_bytes", "Bytes of pack files on disk.", Double(stats.storedBytes)),
                ("depot_store_chunks", "Unique chunks stored.", Double(stats.chunks)),
                ("depot_store_blobs", "Blobs stored.", Double(stats.blobs)),
            ],
            counters: [
                (
                    "depot_store_read_bytes_total",
                    "Bytes read from the store for clients: blob GETs (decoded) and chunk records (as stored).",
                    registry.store.readBytes
                )
            ],
            pushStages: registry.store.pushStages.snapshot())
        return Reply.bytes(Array(text.utf8), contentType: "text/plain; version=0.0.4")
    }
}
