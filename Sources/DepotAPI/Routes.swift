/// The one route table: every HTTP endpoint Depot serves, its method, path pattern and the
/// action it performs. The server matches requests against it and dispatches on `RouteID` with
/// an exhaustive switch (so a route without a handler does not compile); authorization checks
/// the route's `action`; the client and the CLI build their paths from it; a test enumerates it.
///
/// Patterns are segment lists. `{name}` is a repository name and may span several segments (it
/// contains slashes); every other `{param}` is exactly one segment. A pattern has at most one
/// `{name}`, so matching is linear: the literal segments before it are matched from the start,
/// those after it from the end, and the name is what lies between.
///
/// A name may itself contain route words (`team/blobs/models` is a valid repository), so one path
/// can fit two patterns: `…/repositories/team/blobs/models/chunks` is a chunk upload to that
/// repository, not a chunk fetch of blob `models` in `team`. Matching first requires `{digest}`
/// to look like a digest (it has a `:`, which no name component can) and `{id}` to be digits; a
/// path that fits no route that way is matched loosely, so that a malformed digest still reaches
/// its handler and gets the spec's `DIGEST_INVALID`.

/// What a request does, for authorization (docs/AUTHORIZATION.md). Raw values are the names
/// used in policy files, roles and tokens. A route's action applies to the repository its path
/// names; routes without a repository (lists, audit, jobs) need the action on every repository.
public enum Action: String, Codable, Sendable, CaseIterable {
    /// No resource and nothing to protect: health, the extension API's capabilities.
    case anonymous
    /// Any authenticated caller: the API version check (`GET /v2/`, which OCI clients call to
    /// learn how to authenticate) and `whoami`.
    case authenticated
    /// Exchange credentials for a bearer token (`/token`): open, because the endpoint checks
    /// the credentials in the request itself.
    case token
    /// Read blobs, manifests, tags, referrers, recipes, chunks, metadata, lineage, aliases, pins.
    case pull
    /// Write blobs and manifests by digest (uploads, chunk uploads, recipe commits).
    case push
    /// Point a tag at a manifest (a manifest PUT by tag needs `push` and `tag`).
    case tag
    /// Delete manifests, tags and blobs.
    case delete
    /// List every repository (the answer holds only the repositories the caller may pull).
    case catalog
    /// Move an alias (`production`, …).
    case aliasMove = "alias.move"
    /// Move an alias back to an earlier digest of its history.
    case rollback
    /// Pin or unpin a digest (keeps it through GC and retention).
    case pin
    /// Read the audit journal, the event log and webhook deliveries; verify the journal chain.
    case auditRead = "audit.read"
    /// Read jobs, their logs and the pipelines.
    case jobsRead = "jobs.read"
    /// Lease and run jobs, report their progress and results (runners).
    case jobsRun = "jobs.run"
    /// Cancel or retry jobs.
    case jobsManage = "jobs.manage"
    /// Complete a webhook stage: authenticated by the stage's HMAC signature, not by identity.
    case jobsCallback = "jobs.callback"
    /// Read deployments, rollouts and which nodes serve what.
    case deployRead = "deploy.read"
    /// Start, resume, promote or abort a rollout.
    case rollout
    /// A serving node resolves what to load and reports what it loaded (`depot triton-sync`);
    /// a node token may do so only for its own deployments.
    case nodesReport = "nodes.report"
    /// Server internals: metrics, users and tokens.
    case admin

    /// Actions a request may carry without any identity: the gate lets them through (the token
    /// endpoint and webhook callbacks authenticate inside their handlers).
    public var isOpen: Bool { self == .anonymous || self == .token || self == .jobsCallback }
}

/// The HTTP methods routes use (raw values are the method tokens).
public enum HTTPVerb: String, Codable, Sendable, CaseIterable {
    case get = "GET"
    case head = "HEAD"
    case post = "POST"
    case put = "PUT"
    case patch = "PATCH"
    case delete = "DELETE"
}

/// Every endpoint, by name. The raw value is the metrics label.
public enum RouteID: String, Sendable, CaseIterable {
    // Operational.
    case health, ready, metrics
    // OCI distribution API.
    case base, catalog, tags
    case manifestGet, manifestHead, manifestPut, manifestDelete
    case blobGet, blobHead, blobDelete
    case uploadStart, uploadStatus, uploadPatch, uploadPut, uploadCancel
    case referrers
    // Depot extension API: chunk negotiation and format metadata.
    case info, missingChunks, uploadChunks, recipeGet, recipePut, fetchChunks, metadata
    // Aliases, pins, lineage, audit, events.
    case aliasGet, aliasMove, aliasHistory, aliasRollback, aliasResolve
    case pinPut, pinDelete, pins
    case lineage, impact, lineagePath
    case audit, auditVerify, events, deliveries
    // Pipelines and jobs.
    case pipelines, jobs, jobLease, job, jobLogGet, jobLogPut, jobStart, jobHeartbeat, jobComplete, jobFail
    case jobCancel, jobRetry, jobCallback
    // Deployments and rollouts.
    case deployments, served, deployment, rolloutStart, rolloutResume, rolloutPromote, rolloutAbort, deploymentResolve
    case nodeReport
    // Identity: the OCI token endpoint, who am I, users and tokens.
    case token, whoami, users, userAdd, userRemove, tokens, tokenCreate, tokenRevoke
    // Signatures (docs/SECURITY.md)
    case signatures, signingKey
    // The web UI (docs/UI.md): HTML pages and form posts.
    case uiHome, uiLogin, uiLoginSubmit, uiLogout, uiStyle, uiAudit, uiDeployments, uiJobs, uiJob
    case uiArtifact, uiAlias, uiRollback, uiDeployment, uiRolloutControl, uiRepository
}

/// One endpoint: method, pattern, action.
public struct Route: Sendable, CustomStringConvertible {
    public let id: RouteID
    public let method: HTTPVerb
    public let pattern: String
    public let action: Action
    /// The pattern's segments (`/v2/{name}/tags/list` → ["v2", "{name}", "tags", "list"]).
    let segments: [Segment]
    /// Index of the `{name}` segment, if any.
    let nameIndex: Int?

    enum Segment: Sendable, Equatable {
        case literal(Substring)
        case param(String)
        case name
    }

    init(_ id: RouteID, _ method: HTTPVerb, _ pattern: String, _ action: Action) {
        self.id = id
        self.method = method
        self.pattern = pattern
        self.action = action
        let parts = pattern.split(separator: "/", omittingEmptySubsequences: false).dropFirst()
        segments = parts.map { p in
            if p == "{name}" { return .name }
            if p.hasPrefix("{"), p.hasSuffix("}") { return .param(String(p.dropFirst().dropLast())) }
            return .literal(p)
        }
        nameIndex = segments.firstIndex(of: .name)
        precondition(segments.filter { $0 == .name }.count <= 1, "\(pattern): at most one {name}")
    }

    public var description: String { "\(method.rawValue) \(pattern) (\(action.rawValue))" }

    /// Whether the route is a web UI page (HTML; the session cookie is a credential; a refusal
    /// is a redirect to the login page or an HTML page rather than an OCI error body).
    public var isPage: Bool { pattern == "/ui" || pattern.hasPrefix("/ui/") }

    /// Whether the route's path names a repository (its action applies to that repository).
    public var isRepositoryScoped: Bool { nameIndex != nil }

    /// The path for these parameters: `{name}` is `name`, each `{p}` is `params[p]`. Values are
    /// inserted as they are (names, digests, tags and ids never need escaping; other values are
    /// percent-encoded by the caller where the server decodes them).
    public func path(name: String? = nil, _ params: [String: String] = [:]) -> String {
        var out = ""
        for s in segments {
            out += "/"
            switch s {
            case .literal(let l): out += l
            case .name: out += name ?? ""
            case .param(let p): out += params[p] ?? ""
            }
        }
        return out
    }

    /// Matches the path segments (from `Routes.segments(of:)`); nil if the shape differs.
    func match(_ parts: [Substring], strict: Bool) -> RouteMatch? {
        guard let m = match(parts) else { return nil }
        if strict {
            for (k, v) in m.params {
                if k == "digest", !v.contains(":") { return nil }
                if k == "id", !v.allSatisfy({ $0 >= "0" && $0 <= "9" }) { return nil }
            }
        }
        return m
    }

    func match(_ parts: [Substring]) -> RouteMatch? {
        guard let n = nameIndex else {
            guard parts.count == segments.count else { return nil }
            var params: [(String, Substring)] = []
            for (s, p) in zip(segments, parts) {
                switch s {
                case .literal(let l): if l != p { return nil }
                case .param(let name):
                    if p.isEmpty { return nil }
                    params.append((name, p))
                case .name: return nil
                }
            }
            return RouteMatch(route: self, name: nil, params: params)
        }
        let after = segments.count - n - 1
        guard parts.count >= segments.count else { return nil }
        var params: [(String, Substring)] = []
        for i in 0..<n {
            guard Self.matches(segments[i], parts[i], into: &params) else { return nil }
        }
        let tail = parts.count - after
        for i in 0..<after {
            guard Self.matches(segments[n + 1 + i], parts[tail + i], into: &params) else { return nil }
        }
        let nameParts = parts[n..<tail]
        // An empty segment inside a name (`a//b`) still routes, so the handler answers the spec's
        // NAME_INVALID; a name that is all empty (`/v2//tags/list`) names no repository.
        guard nameParts.contains(where: { !$0.isEmpty }) else { return nil }
        return RouteMatch(route: self, name: nameParts.joined(separator: "/"), params: params)
    }

    private static func matches(_ s: Segment, _ p: Substring, into params: inout [(String, Substring)]) -> Bool {
        switch s {
        case .literal(let l): return l == p
        case .param(let name):
            guard !p.isEmpty else { return false }
            params.append((name, p))
            return true
        case .name: return false
        }
    }
}

/// A request matched to a route: the repository name (when the pattern has one) and the other
/// parameters, unvalidated (the handler parses them into their types).
public struct RouteMatch: Sendable {
    public let route: Route
    public let name: String?
    let params: [(String, Substring)]

    public subscript(_ param: String) -> String {
        for (k, v) in params where k == param { return String(v) }
        preconditionFailure("route \(route.pattern) has no parameter {\(param)}")
    }
}

/// The outcome of routing one request.
public enum RouteResult: Sendable {
    case matched(RouteMatch)
    /// The path names an endpoint, but not with this method.
    case methodNotAllowed(allowed: [HTTPVerb])
    case notFound
}

public enum Routes {
    /// Every route. Order matters only where two patterns can match one path: the more specific
    /// comes first (`…/blobs/{digest}/chunks` before `…/chunks`, since a name may contain
    /// `blobs`).
    public static let all: [Route] = [
        Route(.health, .get, "/healthz", .anonymous),
        // Load balancers often probe with HEAD.
        Route(.health, .head, "/healthz", .anonymous),
        // Whether this server can serve: its catalog and pack storage answer (ReadinessReport).
        Route(.ready, .get, "/readyz", .anonymous),
        Route(.ready, .head, "/readyz", .anonymous),
        Route(.metrics, .get, "/metrics", .admin),

        Route(.base, .get, "/v2", .authenticated),
        Route(.base, .head, "/v2", .authenticated),
        Route(.catalog, .get, "/v2/_catalog", .catalog),
        Route(.tags, .get, "/v2/{name}/tags/list", .pull),
        Route(.manifestGet, .get, "/v2/{name}/manifests/{reference}", .pull),
        Route(.manifestHead, .head, "/v2/{name}/manifests/{reference}", .pull),
        Route(.manifestPut, .put, "/v2/{name}/manifests/{reference}", .push),
        Route(.manifestDelete, .delete, "/v2/{name}/manifests/{reference}", .delete),
        Route(.uploadStart, .post, "/v2/{name}/blobs/uploads", .push),
        Route(.uploadStatus, .get, "/v2/{name}/blobs/uploads/{uuid}", .push),
        Route(.uploadPatch, .patch, "/v2/{name}/blobs/uploads/{uuid}", .push),
        Route(.uploadPut, .put, "/v2/{name}/blobs/uploads/{uuid}", .push),
        Route(.uploadCancel, .delete, "/v2/{name}/blobs/uploads/{uuid}", .push),
        Route(.blobGet, .get, "/v2/{name}/blobs/{digest}", .pull),
        Route(.blobHead, .head, "/v2/{name}/blobs/{digest}", .pull),
        Route(.blobDelete, .delete, "/v2/{name}/blobs/{digest}", .delete),
        Route(.referrers, .get, "/v2/{name}/referrers/{digest}", .pull),

        Route(.info, .get, "/depot/v1/info", .anonymous),
        Route(.missingChunks, .post, "/depot/v1/repositories/{name}/chunks/missing", .push),
        Route(.recipeGet, .get, "/depot/v1/repositories/{name}/blobs/{digest}/recipe", .pull),
        Route(.recipePut, .put, "/depot/v1/repositories/{name}/blobs/{digest}/recipe", .push),
        Route(.fetchChunks, .post, "/depot/v1/repositories/{name}/blobs/{digest}/chunks", .pull),
        Route(.uploadChunks, .post, "/depot/v1/repositories/{name}/chunks", .push),
        Route(.metadata, .get, "/depot/v1/repositories/{name}/manifests/{reference}/metadata", .pull),
        Route(.signatures, .get, "/depot/v1/repositories/{name}/manifests/{reference}/signatures", .pull),
        // The public half of the pipeline signing key: public by nature.
        Route(.signingKey, .get, "/depot/v1/signing-key", .anonymous),

        Route(.aliasGet, .get, "/depot/v1/repositories/{name}/aliases/{alias}", .pull),
        Route(.aliasMove, .put, "/depot/v1/repositories/{name}/aliases/{alias}", .aliasMove),
        Route(.aliasHistory, .get, "/depot/v1/repositories/{name}/aliases/{alias}/history", .pull),
        Route(.aliasRollback, .post, "/depot/v1/repositories/{name}/aliases/{alias}/rollback", .rollback),
        Route(.aliasResolve, .get, "/depot/v1/repositories/{name}/aliases/{alias}/resolve", .pull),
        Route(.pinPut, .put, "/depot/v1/repositories/{name}/pins/{reference}", .pin),
        Route(.pinDelete, .delete, "/depot/v1/repositories/{name}/pins/{reference}", .pin),
        Route(.pins, .get, "/depot/v1/pins", .pull),
        Route(.lineagePath, .get, "/depot/v1/lineage/path", .pull),
        Route(.impact, .get, "/depot/v1/lineage/{digest}/impact", .pull),
        Route(.served, .get, "/depot/v1/lineage/{digest}/served", .deployRead),
        Route(.lineage, .get, "/depot/v1/lineage/{digest}", .pull),
        Route(.audit, .get, "/depot/v1/audit", .auditRead),
        Route(.auditVerify, .get, "/depot/v1/audit/verify", .auditRead),
        Route(.events, .get, "/depot/v1/events", .auditRead),
        Route(.deliveries, .get, "/depot/v1/webhooks/deliveries", .auditRead),

        Route(.pipelines, .get, "/depot/v1/pipelines", .jobsRead),
        Route(.jobs, .get, "/depot/v1/jobs", .jobsRead),
        Route(.jobLease, .post, "/depot/v1/jobs/lease", .jobsRun),
        Route(.job, .get, "/depot/v1/jobs/{id}", .jobsRead),
        Route(.jobLogGet, .get, "/depot/v1/jobs/{id}/log", .jobsRead),
        Route(.jobLogPut, .put, "/depot/v1/jobs/{id}/log", .jobsRun),
        Route(.jobStart, .post, "/depot/v1/jobs/{id}/start", .jobsRun),
        Route(.jobHeartbeat, .post, "/depot/v1/jobs/{id}/heartbeat", .jobsRun),
        Route(.jobComplete, .post, "/depot/v1/jobs/{id}/complete", .jobsRun),
        Route(.jobFail, .post, "/depot/v1/jobs/{id}/fail", .jobsRun),
        Route(.jobCancel, .post, "/depot/v1/jobs/{id}/cancel", .jobsManage),
        Route(.jobRetry, .post, "/depot/v1/jobs/{id}/retry", .jobsManage),
        Route(.jobCallback, .post, "/depot/v1/jobs/{id}/callback", .jobsCallback),

        Route(.deployments, .get, "/depot/v1/deployments", .deployRead),
        Route(.deployment, .get, "/depot/v1/repositories/{name}/deployments/{environment}", .deployRead),
        Route(.rolloutStart, .post, "/depot/v1/repositories/{name}/deployments/{environment}/rollout", .rollout),
        Route(.rolloutResume, .post, "/depot/v1/repositories/{name}/deployments/{environment}/resume", .rollout),
        Route(.rolloutPromote, .post, "/depot/v1/repositories/{name}/deployments/{environment}/promote", .rollout),
        Route(.rolloutAbort, .post, "/depot/v1/repositories/{name}/deployments/{environment}/abort", .rollout),
        Route(.deploymentResolve, .get, "/depot/v1/repositories/{name}/deployments/{environment}/resolve", .nodesReport),
        Route(.nodeReport, .post, "/depot/v1/repositories/{name}/deployments/{environment}/nodes/{node}", .nodesReport),

        // The distribution token specification: GET with Basic credentials, POST with an OAuth2 form.
        Route(.token, .get, "/token", .token),
        Route(.token, .post, "/token", .token),
        Route(.whoami, .get, "/depot/v1/whoami", .authenticated),
        Route(.users, .get, "/depot/v1/admin/users", .admin),
        Route(.userAdd, .post, "/depot/v1/admin/users", .admin),
        Route(.userRemove, .delete, "/depot/v1/admin/users/{user}", .admin),
        Route(.tokens, .get, "/depot/v1/admin/tokens", .admin),
        Route(.tokenCreate, .post, "/depot/v1/admin/tokens", .admin),
        Route(.tokenRevoke, .delete, "/depot/v1/admin/tokens/{token}", .admin),

        // The web UI: the same actions as the API routes showing or changing the same things.
        // Repository pages share the prefix `/ui/repositories/{name}/-/`: `-` is never a
        // component of a repository name, so a page path cannot be read as a longer name.
        Route(.uiHome, .get, "/ui", .catalog),
        Route(.uiLogin, .get, "/ui/login", .token),
        Route(.uiLoginSubmit, .post, "/ui/login", .token),
        Route(.uiLogout, .post, "/ui/logout", .token),
        Route(.uiStyle, .get, "/ui/style.css", .anonymous),
        Route(.uiAudit, .get, "/ui/audit", .auditRead),
        Route(.uiDeployments, .get, "/ui/deployments", .deployRead),
        Route(.uiJobs, .get, "/ui/jobs", .jobsRead),
        Route(.uiJob, .get, "/ui/jobs/{id}", .jobsRead),
        Route(.uiArtifact, .get, "/ui/repositories/{name}/-/artifacts/{digest}", .pull),
        Route(.uiAlias, .get, "/ui/repositories/{name}/-/aliases/{alias}", .pull),
        Route(.uiRollback, .post, "/ui/repositories/{name}/-/aliases/{alias}/rollback", .rollback),
        Route(.uiDeployment, .get, "/ui/repositories/{name}/-/deployments/{environment}", .deployRead),
        Route(.uiRolloutControl, .post, "/ui/repositories/{name}/-/deployments/{environment}/{control}", .rollout),
        Route(.uiRepository, .get, "/ui/repositories/{name}", .pull),
    ]

    /// Routes by id (a route id with several methods, like `base`, keeps its first).
    public static let byID: [RouteID: Route] = Dictionary(all.map { ($0.id, $0) }, uniquingKeysWith: { a, _ in a })

    public static subscript(_ id: RouteID) -> Route { byID[id]! }

    /// Segments of a request path: "/v2/a/b/tags/list" → ["v2", "a", "b", "tags", "list"]. A
    /// trailing slash is ignored ("/v2/" is "/v2"; `…/blobs/uploads/` is `…/blobs/uploads`).
    public static func segments(of path: String) -> [Substring]? {
        guard path.first == "/" else { return nil }
        var body = Substring(path).dropFirst()
        if body.last == "/" { body = body.dropLast() }
        return body.split(separator: "/", omittingEmptySubsequences: false)
    }

    /// Routes a request. The first route whose pattern matches the path decides the endpoint;
    /// among routes with that same pattern, the method picks one.
    public static func route(method: String, path: String) -> RouteResult {
        guard let parts = segments(of: path) else { return .notFound }
        for strict in [true, false] {
            for (i, r) in all.enumerated() {
                guard let m = r.match(parts, strict: strict) else { continue }
                if r.method.rawValue == method { return .matched(m) }
                // Routes that share a pattern are listed together: the method picks among them.
                var allowed: [HTTPVerb] = [r.method]
                for other in all[(i + 1)...] where other.pattern == r.pattern {
                    if other.method.rawValue == method, let m2 = other.match(parts) { return .matched(m2) }
                    allowed.append(other.method)
                }
                return .methodNotAllowed(allowed: allowed)
            }
        }
        return .notFound
    }
}
