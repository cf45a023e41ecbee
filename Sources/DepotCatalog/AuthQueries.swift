import DepotAPI
import DepotCore
import Foundation

/// A user: a name, a password hash and grants.
public struct UserRecord: Sendable, Equatable {
    public var name: String
    public var passwordHash: String
    public var grants: [GrantSpec]
    public var createdAt: Int64
    public var createdBy: String

    public init(name: String, passwordHash: String, grants: [GrantSpec], createdAt: Int64, createdBy: String) {
        self.name = name
        self.passwordHash = passwordHash
        self.grants = grants
        self.createdAt = createdAt
        self.createdBy = createdBy
    }

    public var info: UserInfo { UserInfo(name: name, grants: grants, createdAtMs: createdAt, createdBy: createdBy) }
}

/// A robot, runner or node token (its secret is known only by its hash).
public struct TokenRecord: Sendable, Equatable {
    public var id: String
    public var name: String
    public var kind: TokenKind
    public var secretHash: SHA256.Value
    public var grants: [GrantSpec]
    public var labels: [String]?
    public var deployments: [String]?
    public var createdAt: Int64
    public var createdBy: String
    public var expiresAt: Int64?
    public var revokedAt: Int64?

    public init(
        id: String, name: String, kind: TokenKind, secretHash: SHA256.Value, grants: [GrantSpec], labels: [String]?,
        deployments: [String]?, createdAt: Int64, createdBy: String, expiresAt: Int64?, revokedAt: Int64? = nil
    ) {
        self.id = id
        self.name = name
        self.kind = kind
        self.secretHash = secretHash
        self.grants = grants
        self.labels = labels
        self.deployments = deployments
        self.createdAt = createdAt
        self.createdBy = createdBy
        self.expiresAt = expiresAt
        self.revokedAt = revokedAt
    }

    public var info: TokenInfo {
        TokenInfo(
            id: id, name: name, kind: kind, grants: grants, labels: labels, deployments: deployments, createdAtMs: createdAt,
            createdBy: createdBy, expiresAtMs: expiresAt, revokedAtMs: revokedAt)
    }

    /// Usable at `now` (ms): not revoked, not expired.
    public func isValid(at now: Int64) -> Bool { revokedAt == nil && (expiresAt.map { now < $0 } ?? true) }
}

/// Users and tokens (catalog migration 10).
extension CatalogConnection {
    public func putUser(_ u: UserRecord) throws {
        try run(
            """
            INSERT INTO auth_users(name, password_hash, grants, created_at, created_by) VALUES (?, ?, ?, ?, ?)
            ON CONFLICT(name) DO UPDATE SET password_hash = excluded.password_hash, grants = excluded.grants
            """, .text(u.name), .text(u.passwordHash), .text(try Self.json(u.grants)), .int(u.createdAt), .text(u.createdBy))
    }

    public func user(named name: String) throws -> UserRecord? {
        try first("SELECT * FROM auth_users WHERE name = ?", .text(name)) { try Self.user($0.row) }
    }

    public func users() throws -> [UserRecord] {
        var out: [UserRecord] = []
        try query("SELECT * FROM auth_users ORDER BY name") { out.append(try Self.user($0.row)) }
        return out
    }

    /// Removes a user; false if there was none.
    public func removeUser(named name: String) throws -> Bool {
        try run("DELETE FROM auth_users WHERE name = ?", .text(name))
        return changes > 0
    }

    /// Inserts a token; false (and nothing inserted) when an unrevoked token has its name.
    public func insertToken(_ t: TokenRecord) throws -> Bool {
        let taken = try first("SELECT 1 FROM auth_tokens WHERE name = ? AND revoked_at IS NULL", .text(t.name)) { _ in true } ?? false
        if taken { return false }
        try run(
            """
            INSERT INTO auth_tokens(id, name, kind, secret_hash, grants, labels, deployments, created_at, created_by, expires_at, revoked_at)
            VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
            """, .text(t.id), .text(t.name), .state(t.kind), .hash(t.secretHash), .text(try Self.json(t.grants)),
            .optionalText(try t.labels.map(Self.json)), .optionalText(try t.deployments.map(Self.json)), .int(t.createdAt),
            .text(t.createdBy), .optionalInt(t.expiresAt), .optionalInt(t.revokedAt))
        return true
    }

    public func token(secretHash: SHA256.Value) throws -> TokenRecord? {
        try first("SELECT * FROM auth_tokens WHERE secret_hash = ?", .hash(secretHash)) { try Self.token($0.row) }
    }

    public func token(id: String) throws -> TokenRecord? {
        try first("SELECT * FROM auth_tokens WHERE id = ?", .text(id)) { try Self.token($0.row) }
    }

    public func tokens() throws -> [TokenRecord] {
        var out: [TokenRecord] = []
        try query("SELECT * FROM auth_tokens ORDER BY created_at, id") { out.append(try Self.token($0.row)) }
        return out
    }

    /// Revokes the token with this id, or the unrevoked token with this name; nil if none.
    public func revokeToken(_ idOrName: String, at now: Int64) throws -> TokenRecord? {
        let found = try first(
            "SELECT * FROM auth_tokens WHERE (id = ? OR name = ?) AND revoked_at IS NULL ORDER BY id = ? DESC LIMIT 1", .text(idOrName),
            .text(idOrName), .text(idOrName)
        ) { try Self.token($0.row) }
        guard var t = found else { return nil }
        try run("UPDATE auth_tokens SET revoked_at = ? WHERE id = ?", .int(now), .text(t.id))
        t.revokedAt = now
        return t
    }

    /// Whether any credential exists (a server with authentication on and none needs a bootstrap token).
    public func hasCredentials() throws -> Bool {
        let users = try first("SELECT COUNT(*) FROM auth_users") { $0.int(0) } ?? 0
        let tokens = try first("SELECT COUNT(*) FROM auth_tokens WHERE revoked_at IS NULL") { $0.int(0) } ?? 0
        return users + tokens > 0
    }

    static func json<T: Encodable>(_ v: T) throws -> String { String(decoding: try WireJSON.encode(v), as: UTF8.self) }

    static func decodeJSON<T: Decodable>(_ type: T.Type, _ text: String, _ what: String) throws -> T {
        do { return try WireJSON.decode(T.self, from: Array(text.utf8), what: what) } catch {
            throw DepotError.storage("catalog: \(what) does not decode (\(error)): the row was written by another program?")
        }
    }

    static func user(_ r: Row) throws -> UserRecord {
        UserRecord(
            name: r.text("name"), passwordHash: r.text("password_hash"),
            grants: try decodeJSON([GrantSpec].self, r.text("grants"), "grants of user \(r.text("name"))"),
            createdAt: r.int("created_at"), createdBy: r.text("created_by"))
    }

    static func token(_ r: Row) throws -> TokenRecord {
        let id = r.text("id")
        guard let hash = r.hash("secret_hash") else { throw DepotError.storage("catalog: token \(id) has no secret hash") }
        return TokenRecord(
            id: id, name: r.text("name"), kind: try r.value("kind"), secretHash: hash,
            grants: try decodeJSON([GrantSpec].self, r.text("grants"), "grants of token \(id)"),
            labels: try r.optionalText("labels").map { try decodeJSON([String].self, $0, "labels of token \(id)") },
            deployments: try r.optionalText("deployments").map { try decodeJSON([String].self, $0, "deployments of token \(id)") },
            createdAt: r.int("created_at"), createdBy: r.text("created_by"), expiresAt: r.optionalInt("expires_at"),
            revokedAt: r.optionalInt("revoked_at"))
    }
}
