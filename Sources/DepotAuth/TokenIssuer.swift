import DepotAPI
import DepotCore
import Foundation
import JWTKit

/// The claims of a bearer token `/token` issues (distribution token specification: `iss`,
/// `sub`, `aud`, `exp`, `nbf`, `iat`, `jti`, `access`). `kind` and `tid` say what identity it
/// was issued to, so the audit journal names the same actor whichever way the client came in.
struct IssuedClaims: JWTPayload, Equatable {
    var iss: String
    var sub: String
    var aud: String
    var exp: Int64
    var nbf: Int64
    var iat: Int64
    var jti: String
    var access: [AccessEntry]
    var kind: String
    var tid: String?

    /// Times are checked by `TokenIssuer.verify` with the clock it is given, not here.
    func verify(using algorithm: some JWTAlgorithm) async throws {}
}

/// The claims of a web UI session cookie. Its audience is the service's plus `:ui`, so a session
/// is never accepted as a bearer token (whose audience is the service) and a bearer token is
/// never accepted as a session. It names the identity, not its rights: the grants are looked up
/// on every use (through the credential cache), so removing a user or revoking a token ends
/// its sessions too.
struct SessionClaims: JWTPayload, Equatable {
    var iss: String
    var sub: String
    var aud: String
    var exp: Int64
    var nbf: Int64
    var iat: Int64
    var jti: String
    var kind: String
    var tid: String?
    /// The credential's version when the session was opened (for a user: a digest of its
    /// password hash): a password change, or the user removed and added again, ends the session.
    var ver: String?

    func verify(using algorithm: some JWTAlgorithm) async throws {}
}

/// Who a valid session stands for.
public struct SessionIdentity: Sendable, Equatable {
    public var kind: Principal.Kind
    public var name: String
    public var tokenID: String?
    public var expiresAtMs: Int64
    public var credentialVersion: String?
}

/// Why a bearer token was refused (the client sees it in the 401's message).
public struct TokenError: Error, Sendable, CustomStringConvertible {
    public var message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// Issues and verifies the short-lived ES256 tokens of the OCI token flow. The signing key is a
/// P-256 key in PEM; replicas that share it verify each other's tokens. Its `kid` is derived
/// from the public key, so a rotated key never verifies tokens of the old one.
public final class TokenIssuer: Sendable {
    let keys: JWTKeyCollection
    public let issuer: String
    public let service: String
    public let kid: String
    /// Clock skew tolerated on `nbf` and `exp`, in seconds.
    static let leeway: Int64 = 30

    public init(privateKeyPEM: String, issuer: String = "depot", service: String = "depot") async throws {
        let key: ES256PrivateKey
        do { key = try ES256PrivateKey(pem: privateKeyPEM) } catch {
            throw DepotError.invalidArgument("token signing key is not a P-256 private key in PEM (\(error))")
        }
        let publicPEM = key.publicKey.pemRepresentation
        kid = String(Array(publicPEM.utf8).withUnsafeBytes { SHA256.hash($0) }.hex.prefix(16))
        keys = JWTKeyCollection()
        await keys.add(ecdsa: key, kid: JWKIdentifier(string: kid))
        self.issuer = issuer
        self.service = service
    }

    /// A new P-256 private key in PEM.
    public static func newKeyPEM() -> String { ES256PrivateKey().pemRepresentation }

    /// Reads the key at `path`, creating it (mode 0600, directory 0700) when it does not exist.
    public static func loadOrCreateKey(path: String) throws -> String {
        let fm = FileManager.default
        if fm.fileExists(atPath: path) {
            do { return try String(contentsOfFile: path, encoding: .utf8) } catch {
                throw DepotError.invalidArgument("cannot read token signing key \(path): \(error.localizedDescription)")
            }
        }
        let dir = (path as NSString).deletingLastPathComponent
        if !dir.isEmpty { try fm.createDirectory(atPath: dir, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700]) }
        let pem = newKeyPEM()
        // Created 0600 by open itself: never readable by others, not even for a moment.
        try PrivateFile.create(path, Array(pem.utf8))
        return pem
    }

    /// Signs a token for `principal` carrying `access`, valid `ttlSeconds` from `nowMs`.
    public func issue(to principal: Principal, access: [AccessEntry], ttlSeconds: Int, nowMs: Int64) async throws -> String {
        let now = nowMs / 1000
        var exp = now + Int64(ttlSeconds)
        // Never outlive the credential it was issued for.
        if let e = principal.expiresAtMs { exp = min(exp, e / 1000) }
        let claims = IssuedClaims(
            iss: issuer, sub: principal.name, aud: service, exp: exp, nbf: now, iat: now, jti: TokenSecret.newID(), access: access,
            kind: principal.kind.rawValue, tid: principal.tokenID)
        return try await keys.sign(claims, kid: JWKIdentifier(string: kid))
    }

    /// The audience of web UI sessions.
    public var sessionAudience: String { service + ":ui" }

    /// Signs a web UI session for a user or token principal, valid `ttlSeconds` (never longer
    /// than the credential it was opened with).
    public func issueSession(to principal: Principal, credentialVersion: String?, ttlSeconds: Int, nowMs: Int64) async throws -> String {
        let now = nowMs / 1000
        var exp = now + Int64(ttlSeconds)
        if let e = principal.expiresAtMs { exp = min(exp, e / 1000) }
        let claims = SessionClaims(
            iss: issuer, sub: principal.name, aud: sessionAudience, exp: exp, nbf: now, iat: now, jti: TokenSecret.newID(),
            kind: principal.kind.rawValue, tid: principal.tokenID, ver: credentialVersion)
        return try await keys.sign(claims, kid: JWKIdentifier(string: kid))
    }

    /// The identity a session cookie stands for; throws `TokenError` when it is not a valid,
    /// current session of this issuer.
    public func verifySession(_ token: String, nowMs: Int64) async throws -> SessionIdentity {
        guard token.utf8.count <= 4096 else { throw TokenError("session is too long") }
        let claims: SessionClaims
        do { claims = try await keys.verify(token, as: SessionClaims.self) } catch {
            throw TokenError("session is invalid: log in again")
        }
        guard claims.iss == issuer, claims.aud == sessionAudience else { throw TokenError("session is not for this registry") }
        let now = nowMs / 1000
        guard claims.nbf <= now + Self.leeway, now < claims.exp else { throw TokenError("session expired: log in again") }
        guard let kind = Principal.Kind(rawValue: claims.kind), kind == .user || kind == .token else {
            throw TokenError("session names no user or token")
        }
        return SessionIdentity(
            kind: kind, name: claims.sub, tokenID: claims.tid, expiresAtMs: claims.exp * 1000, credentialVersion: claims.ver)
    }

    /// Signs any payload with this issuer's key: lets tests stand in for an external OIDC issuer.
    public func signForTests(_ payload: some JWTPayload) async throws -> String {
        try await keys.sign(payload, kid: JWKIdentifier(string: kid))
    }

    /// Whether `token` looks like one of ours (a JWT whose issuer is this issuer), without
    /// verifying it: decides between this issuer and the OIDC verifier.
    public func isOwn(_ token: String) async -> Bool {
        guard let claims = try? await keys.unverified(token, as: IssuedClaims.self) else { return false }
        return claims.iss == issuer
    }

    /// The principal a token of ours stands for, limited to its `access`; throws `TokenError`
    /// when its signature, issuer, audience or times do not hold.
    public func verify(_ token: String, nowMs: Int64) async throws -> Principal {
        let claims: IssuedClaims
        do { claims = try await keys.verify(token, as: IssuedClaims.self) } catch {
            throw TokenError("bearer token is invalid (bad signature or not issued by this registry): request a new one")
        }
        guard claims.iss == issuer, claims.aud == service else { throw TokenError("bearer token is for another service") }
        let now = nowMs / 1000
        guard claims.nbf <= now + Self.leeway else { throw TokenError("bearer token is not valid yet (check the clocks)") }
        guard now < claims.exp + Self.leeway else { throw TokenError("bearer token expired: request a new one") }
        guard claims.access.count <= 64 else { throw TokenError("bearer token carries too many access entries") }
        let kind = Principal.Kind(rawValue: claims.kind) ?? .anonymous
        return Principal(kind: kind, name: claims.sub, tokenID: claims.tid, expiresAtMs: claims.exp * 1000, access: claims.access)
    }
}
