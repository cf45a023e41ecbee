import DepotAPI
import DepotCore
import Foundation
import JWTKit

/// One trusted external issuer of workload identities (a CI system, a cluster's service
/// account issuer): JWTs it signs are accepted as credentials, and their claims are mapped to
/// grants by `rules`. Keys come from a JWKS document (`jwks_file`), so the test, an air-gapped
/// site and a key rotation are the same: replace the file and restart (or SIGHUP, later).
public struct OIDCProvider: Sendable {
    public var issuer: String
    public var audience: String
    public var jwksJSON: String
    /// The claim naming the workload (audit actor: `oidc:<value>`).
    public var subjectClaim: String
    public var rules: [OIDCRule]

    public init(issuer: String, audience: String, jwksJSON: String, subjectClaim: String = "sub", rules: [OIDCRule]) {
        self.issuer = issuer
        self.audience = audience
        self.jwksJSON = jwksJSON
        self.subjectClaim = subjectClaim
        self.rules = rules
    }
}

/// Grants given to a token whose claims all match: `claims` maps a claim name to a pattern
/// (`*` matches any run of characters). A token matching no rule authenticates but may do
/// nothing.
public struct OIDCRule: Sendable, Equatable {
    public var claims: [String: String]
    public var grants: [Grant]

    public init(claims: [String: String], grants: [Grant]) {
        self.claims = claims
        self.grants = grants
    }

    func matches(_ payload: [String: JSONValue]) -> Bool {
        claims.allSatisfy { name, pattern in
            guard let value = payload[name]?.string else { return false }
            return Wildcard.matches(pattern, value)
        }
    }
}

/// Every claim of a token, for rules to read.
struct OIDCClaims: JWTPayload {
    var all: [String: JSONValue]

    init(from decoder: any Decoder) throws {
        all = try decoder.singleValueContainer().decode([String: JSONValue].self)
    }

    func encode(to encoder: any Encoder) throws {
        var c = encoder.singleValueContainer()
        try c.encode(all)
    }

    /// Checked by `OIDCVerifier` with the clock it is given.
    func verify(using algorithm: some JWTAlgorithm) async throws {}
}

/// Verifies JWTs of the configured issuers: signature (the issuer's JWKS), issuer, audience,
/// expiry and not-before (with the clock passed in), then maps claims to grants.
public final class OIDCVerifier: Sendable {
    let providers: [(OIDCProvider, JWTKeyCollection)]
    static let leeway: Int64 = 60

    public init(providers: [OIDCProvider]) async throws {
        var out: [(OIDCProvider, JWTKeyCollection)] = []
        for p in providers {
            let keys = JWTKeyCollection()
            do { try await keys.add(jwksJSON: p.jwksJSON) } catch {
                throw DepotError.invalidArgument("OIDC issuer \(p.issuer): its JWKS does not load (\(error))")
            }
            out.append((p, keys))
        }
        self.providers = out
    }

    public var isEmpty: Bool { providers.isEmpty }

    /// The provider whose issuer the token names, or nil (then the token is not for this verifier).
    func provider(of token: String) async -> (OIDCProvider, JWTKeyCollection)? {
        for (p, keys) in providers {
            if let claims = try? await keys.unverified(token, as: OIDCClaims.self), claims.all["iss"]?.string == p.issuer {
                return (p, keys)
            }
        }
        return nil
    }

    /// The principal for a token of a configured issuer; nil when no configured issuer issued it;
    /// throws `TokenError` when one did but the token does not hold.
    public func verify(_ token: String, nowMs: Int64) async throws -> Principal? {
        guard let (p, keys) = await provider(of: token) else { return nil }
        let claims: [String: JSONValue]
        do { claims = try await keys.verify(token, as: OIDCClaims.self).all } catch {
            throw TokenError("OIDC token from \(p.issuer) does not verify against its keys: \(error)")
        }
        let audiences: [String]
        switch claims["aud"] {
        case .string(let a): audiences = [a]
        case .array(let list): audiences = list.compactMap(\.string)
        default: audiences = []
        }
        guard audiences.contains(p.audience) else { throw TokenError("OIDC token is not for audience \(p.audience)") }
        let now = nowMs / 1000
        guard let exp = Self.seconds(claims["exp"]) else {
            throw TokenError("OIDC token has no exp: tokens without expiry are refused")
        }
        guard now < exp + Self.leeway else { throw TokenError("OIDC token expired") }
        if let nbf = Self.seconds(claims["nbf"]), nbf > now + Self.leeway { throw TokenError("OIDC token is not valid yet") }
        guard let subject = claims[p.subjectClaim]?.string, !subject.isEmpty, subject.utf8.count <= 256 else {
            throw TokenError("OIDC token has no \(p.subjectClaim) claim to name the workload")
        }
        let grants = p.rules.filter { $0.matches(claims) }.flatMap(\.grants)
        return Principal(kind: .oidc, name: subject, tokenID: p.issuer, grants: grants, expiresAtMs: exp * 1000)
    }

    /// A NumericDate claim: integer or fractional seconds, within a sane range.
    static func seconds(_ v: JSONValue?) -> Int64? {
        switch v {
        case .int(let i) where (0...253_402_300_799).contains(i): return i
        case .double(let d) where d >= 0 && d <= 253_402_300_799: return Int64(d)
        default: return nil
        }
    }
}

/// `*` matches any run of characters (including `/`); everything else matches itself. Linear:
/// dynamic programming over pattern and value.
enum Wildcard {
    static func matches(_ pattern: String, _ value: String) -> Bool {
        guard pattern.utf8.count <= 1024, value.utf8.count <= 4096 else { return false }
        let p = Array(pattern.utf8)
        let v = Array(value.utf8)
        var reach = [Bool](repeating: false, count: v.count + 1)
        reach[0] = true
        for c in p {
            var next = [Bool](repeating: false, count: v.count + 1)
            if c == 0x2A {
                if let first = reach.firstIndex(of: true) { for j in first...v.count { next[j] = true } }
            } else {
                for j in 0..<v.count where reach[j] && v[j] == c { next[j + 1] = true }
            }
            reach = next
        }
        return reach[v.count]
    }
}
