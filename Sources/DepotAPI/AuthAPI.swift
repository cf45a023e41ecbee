/// Request and response bodies of identity: the OCI token endpoint (`/token`, the distribution
/// token specification), `whoami`, and the admin API for users and tokens
/// (`/depot/v1/admin/…`). Roles and their actions are in `DepotAuth.Role`; their names are the
/// raw values of `RoleName`.

/// The roles a grant can give (docs/AUTHORIZATION.md lists each one's actions).
public enum RoleName: String, Codable, Sendable, CaseIterable {
    case reader, writer, maintainer, deployer, auditor, runner, node, admin
}

/// What kind of credential a token is. Runner tokens carry the job labels they may lease; node
/// tokens the deployments (`repository/environment` globs) they may resolve and report for.
public enum TokenKind: String, Codable, Sendable, CaseIterable {
    case robot, runner, node
}

/// A role on a set of repositories (globs: `*` within one path component, `**` across them).
public struct GrantSpec: Codable, Sendable, Equatable {
    public var role: RoleName
    public var repositories: [String]

    public init(role: RoleName, repositories: [String] = ["**"]) {
        self.role = role
        self.repositories = repositories
    }
}

/// `GET /token` answer (distribution token specification): `token` and `access_token` carry
/// the same JWT, because clients read one or the other.
public struct TokenAnswer: Codable, Sendable, Equatable {
    public var token: String
    public var accessToken: String
    public var expiresIn: Int
    public var issuedAt: String

    public init(token: String, expiresIn: Int, issuedAt: String) {
        self.token = token
        self.accessToken = token
        self.expiresIn = expiresIn
        self.issuedAt = issuedAt
    }

    enum CodingKeys: String, CodingKey {
        case token
        case accessToken = "access_token"
        case expiresIn = "expires_in"
        case issuedAt = "issued_at"
    }
}

/// `GET /depot/v1/whoami`: who the server takes the caller to be.
public struct WhoAmI: Codable, Sendable, Equatable {
    /// `user:alice`, `token:ci-push`, `oidc:<issuer>#<subject>`, `anonymous`.
    public var principal: String
    public var kind: String
    public var grants: [GrantSpec]
    /// Runner tokens: the job labels they may lease.
    public var labels: [String]?
    /// Node tokens: the deployments they may resolve and report for.
    public var deployments: [String]?
    /// Milliseconds since 1970; nil when the credential does not expire.
    public var expiresAtMs: Int64?
    /// Whether the server enforces authentication at all.
    public var authEnabled: Bool

    public init(
        principal: String, kind: String, grants: [GrantSpec], labels: [String]? = nil, deployments: [String]? = nil,
        expiresAtMs: Int64? = nil, authEnabled: Bool
    ) {
        self.principal = principal
        self.kind = kind
        self.grants = grants
        self.labels = labels
        self.deployments = deployments
        self.expiresAtMs = expiresAtMs
        self.authEnabled = authEnabled
    }

    enum CodingKeys: String, CodingKey {
        case principal, kind, grants, labels, deployments
        case expiresAtMs = "expires_at_ms"
        case authEnabled = "auth_enabled"
    }
}

/// `POST /depot/v1/admin/users`: adds a user, or replaces its password and grants.
public struct UserAddRequest: Codable, Sendable, Equatable {
    public var name: String
    public var password: String
    public var grants: [GrantSpec]

    public init(name: String, password: String, grants: [GrantSpec]) {
        self.name = name
        self.password = password
        self.grants = grants
    }
}

/// One user, without its password hash.
public struct UserInfo: Codable, Sendable, Equatable {
    public var name: String
    public var grants: [GrantSpec]
    public var createdAtMs: Int64
    public var createdBy: String

    public init(name: String, grants: [GrantSpec], createdAtMs: Int64, createdBy: String) {
        self.name = name
        self.grants = grants
        self.createdAtMs = createdAtMs
        self.createdBy = createdBy
    }

    enum CodingKeys: String, CodingKey {
        case name, grants
        case createdAtMs = "created_at_ms"
        case createdBy = "created_by"
    }
}

/// `POST /depot/v1/admin/tokens`.
public struct TokenCreateRequest: Codable, Sendable, Equatable {
    public var name: String
    public var kind: TokenKind
    public var grants: [GrantSpec]
    /// Runner tokens: the labels whose jobs it may lease (it must cover every label of a job).
    public var labels: [String]?
    /// Node tokens: `repository/environment` globs it may resolve and report for.
    public var deployments: [String]?
    /// Lifetime in seconds; nil: never expires.
    public var expiresInSeconds: Int64?

    public init(
        name: String, kind: TokenKind = .robot, grants: [GrantSpec], labels: [String]? = nil, deployments: [String]? = nil,
        expiresInSeconds: Int64? = nil
    ) {
        self.name = name
        self.kind = kind
        self.grants = grants
        self.labels = labels
        self.deployments = deployments
        self.expiresInSeconds = expiresInSeconds
    }

    enum CodingKeys: String, CodingKey {
        case name, kind, grants, labels, deployments
        case expiresInSeconds = "expires_in_seconds"
    }
}

/// One token, without its secret (`secret` is set only in the answer that creates it: the
/// server keeps a hash and cannot show it again).
public struct TokenInfo: Codable, Sendable, Equatable {
    public var id: String
    public var name: String
    public var kind: TokenKind
    public var grants: [GrantSpec]
    public var labels: [String]?
    public var deployments: [String]?
    public var createdAtMs: Int64
    public var createdBy: String
    public var expiresAtMs: Int64?
    public var revokedAtMs: Int64?
    public var secret: String?

    public init(
        id: String, name: String, kind: TokenKind, grants: [GrantSpec], labels: [String]?, deployments: [String]?,
        createdAtMs: Int64, createdBy: String, expiresAtMs: Int64?, revokedAtMs: Int64?, secret: String? = nil
    ) {
        self.id = id
        self.name = name
        self.kind = kind
        self.grants = grants
        self.labels = labels
        self.deployments = deployments
        self.createdAtMs = createdAtMs
        self.createdBy = createdBy
        self.expiresAtMs = expiresAtMs
        self.revokedAtMs = revokedAtMs
        self.secret = secret
    }

    enum CodingKeys: String, CodingKey {
        case id, name, kind, grants, labels, deployments, secret
        case createdAtMs = "created_at_ms"
        case createdBy = "created_by"
        case expiresAtMs = "expires_at_ms"
        case revokedAtMs = "revoked_at_ms"
    }
}
