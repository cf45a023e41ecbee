import DepotAPI
import DepotCore

/// The policy that does not depend on who is asking: what anonymous callers may pull.
public struct AuthPolicy: Sendable, Equatable {
    /// Repositories anyone may pull without credentials (`auth.anonymous_pull`).
    public var anonymousPull: [RepositoryGlob]

    public init(anonymousPull: [RepositoryGlob] = []) {
        self.anonymousPull = anonymousPull
    }
}

/// What a request asks to do: the route's action on its repository (nil for routes without
/// one), plus, for node routes, the deployment (`repository/environment`).
public struct AccessRequest: Sendable, Equatable {
    public var action: Action
    public var repository: String?
    public var deployment: String?

    public init(_ action: Action, repository: String? = nil, deployment: String? = nil) {
        self.action = action
        self.repository = repository
        self.deployment = deployment
    }
}

/// The outcome of one authorization.
public enum Decision: Sendable, Equatable {
    case allow
    /// No credential was given: the caller should authenticate (401 and a challenge).
    case authenticate
    /// The credential is valid but does not allow this (403 DENIED). The reason is safe to
    /// show: it names the action and the repository, never another repository's existence.
    case deny(String)
}

/// Deny by default: a request is allowed only when an open action, the anonymous policy, a
/// bearer token's access claim or a grant allows it. Pure: no I/O, no clock.
public enum Authorizer {
    public static func decide(_ principal: Principal, _ request: AccessRequest, policy: AuthPolicy) -> Decision {
        let action = request.action
        if action.isOpen { return .allow }
        if action == .pull, let repo = request.repository, policy.anonymousPull.contains(where: { $0.matches(repo) }) {
            return .allow
        }
        if action == .authenticated { return principal.isAuthenticated ? .allow : .authenticate }
        if allows(principal, request) { return .allow }
        guard principal.isAuthenticated else { return .authenticate }
        if let repo = request.repository {
            return .deny("\(principal.id) may not \(action.rawValue) in repository \(repo)")
        }
        return .deny("\(principal.id) may not \(action.rawValue) (it needs the action on every repository, \"**\")")
    }

    /// Whether the principal's grants (and, for bearer tokens, its access claim) allow it.
    static func allows(_ p: Principal, _ request: AccessRequest) -> Bool {
        let action = request.action
        // Its grants were intersected with the request when the token was issued.
        if let access = p.access { return accessAllows(access, request) }
        // Node tokens act only for their own deployments.
        if action == .nodesReport, p.tokenKind == .node {
            guard let d = request.deployment, let mine = p.deployments, mine.contains(where: { $0.matches(d) }) else {
                return false
            }
        }
        if let repo = request.repository { return p.grants.contains { $0.role.actions.contains(action) && $0.covers(repo) } }
        switch action {
        // The catalog answer is filtered to what the caller may pull, so a grant anywhere suffices;
        // a runner token's labels bound what it leases (checked by the job handlers), not repositories.
        case .catalog, .jobsRun: return p.grants.contains { $0.role.actions.contains(action) }
        default: return p.grants.contains { $0.role.actions.contains(action) && $0.isGlobal }
        }
    }

    /// A `/token` bearer token carries `access` entries: the action must be in one for this
    /// repository (or `registry:catalog:*` for the catalog). Other non-repository actions are
    /// never granted to such tokens: use a robot token or a user for the Depot API.
    static func accessAllows(_ access: [AccessEntry], _ request: AccessRequest) -> Bool {
        if let repo = request.repository {
            return access.contains { e in
                e.type == "repository" && e.name == repo && (e.actions.contains(request.action.rawValue) || e.actions.contains("*"))
            }
        }
        if request.action == .catalog {
            return access.contains { $0.type == "registry" && $0.name == "catalog" && $0.actions.contains("*") }
        }
        return false
    }

    /// Whether the principal could pull `repository` (the catalog filter, mounts, visibility).
    public static func canPull(_ p: Principal, _ repository: String, policy: AuthPolicy) -> Bool {
        decide(p, AccessRequest(.pull, repository: repository), policy: policy) == .allow
    }

    /// The actions a `/token` bearer token can carry: the OCI distribution API's. The Depot API
    /// (aliases, rollouts, jobs, nodes) takes robot tokens, users or OIDC tokens directly, so a
    /// short-lived pull/push token handed to an OCI client can never move `production`.
    public static let tokenActions: [Action] = [.pull, .push, .tag, .delete]

    /// The actions of `wanted` (action names from a token request's scope) that the principal
    /// may perform on `repository`; a token gets this intersection. `push` brings `tag` with it,
    /// because every OCI client pushes by tag and asks only for `push`.
    public static func grantable(_ p: Principal, repository: String, wanted: [String], policy: AuthPolicy) -> [String] {
        var expanded: [Action] = []
        for name in wanted {
            if name == "*" {
                expanded += tokenActions
                continue
            }
            guard let a = Action(rawValue: name), tokenActions.contains(a) else { continue }
            expanded.append(a)
            if a == .push { expanded.append(.tag) }
        }
        var out: [String] = []
        for a in expanded where !out.contains(a.rawValue) {
            if decide(p, AccessRequest(a, repository: repository), policy: policy) == .allow { out.append(a.rawValue) }
        }
        return out
    }
}
