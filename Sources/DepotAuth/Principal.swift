import DepotAPI
import DepotCore

/// A role on repository globs, parsed (`GrantSpec` is its wire form).
public struct Grant: Sendable, Hashable {
    public var role: RoleName
    public var repositories: [RepositoryGlob]

    public init(role: RoleName, repositories: [RepositoryGlob]) {
        self.role = role
        self.repositories = repositories
    }

    /// Parses a wire grant; a bad glob is an error naming it.
    public init(_ spec: GrantSpec) throws {
        guard !spec.repositories.isEmpty else {
            throw DepotError.invalidArgument("grant of role \(spec.role.rawValue) names no repositories (use \"**\" for all)")
        }
        self.init(role: spec.role, repositories: try spec.repositories.map(RepositoryGlob.init))
    }

    public var spec: GrantSpec { GrantSpec(role: role, repositories: repositories.map(\.pattern)) }

    func covers(_ repository: String) -> Bool { repositories.contains { $0.matches(repository) } }
    /// Whether the grant is on every repository (`**`), which non-repository routes need.
    var isGlobal: Bool { repositories.contains { $0.pattern == "**" } }
}

/// One entry of a bearer token's `access` claim (distribution token specification): the
/// actions the token carries on one resource. `type` is `repository` (name = repository) or
/// `registry` (name = `catalog`).
public struct AccessEntry: Codable, Sendable, Hashable {
    public var type: String
    public var name: String
    public var actions: [String]

    public init(type: String, name: String, actions: [String]) {
        self.type = type
        self.name = name
        self.actions = actions
    }
}

/// Who is calling, as the server established it. Built by `Authenticator` from a credential;
/// `Authorizer` decides what it may do.
public struct Principal: Sendable, Equatable {
    public enum Kind: String, Sendable {
        /// No credential at all.
        case anonymous
        case user
        /// A robot, runner or node token (see `tokenKind`).
        case token
        /// A workload identity: a JWT from a configured OIDC issuer.
        case oidc
    }

    public var kind: Kind
    /// User name, token name, or the OIDC subject.
    public var name: String
    /// Token id (tokens), or the OIDC issuer.
    public var tokenID: String?
    public var tokenKind: TokenKind?
    public var grants: [Grant]
    /// Runner tokens: the labels whose jobs it may lease.
    public var labels: [String]?
    /// Node tokens: `repository/environment` patterns it may resolve and report for.
    public var deployments: [RepositoryGlob]?
    /// Milliseconds since 1970; nil for credentials that do not expire.
    public var expiresAtMs: Int64?
    /// Set for bearer tokens from `/token`: the token can do only this, whatever the grants
    /// of the identity it was issued to (they were intersected when it was issued).
    public var access: [AccessEntry]?

    public init(
        kind: Kind, name: String, tokenID: String? = nil, tokenKind: TokenKind? = nil, grants: [Grant] = [],
        labels: [String]? = nil, deployments: [RepositoryGlob]? = nil, expiresAtMs: Int64? = nil, access: [AccessEntry]? = nil
    ) {
        self.kind = kind
        self.name = name
        self.tokenID = tokenID
        self.tokenKind = tokenKind
        self.grants = grants
        self.labels = labels
        self.deployments = deployments
        self.expiresAtMs = expiresAtMs
        self.access = access
    }

    public static let anonymous = Principal(kind: .anonymous, name: "anonymous")

    /// The audit journal's actor: `user:alice`, `token:ci-push`, `oidc:<subject>`, `anonymous`.
    public var id: String {
        switch kind {
        case .anonymous: "anonymous"
        case .user: "user:\(name)"
        case .token: "token:\(name)"
        case .oidc: "oidc:\(name)"
        }
    }

    public var isAuthenticated: Bool { kind != .anonymous || access != nil }
}
