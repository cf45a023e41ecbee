import DepotAPI
import DepotAuth
import DepotCore
import Foundation

extension ServerConfig {
    /// The `auth:` section (docs/AUTHORIZATION.md; every key documented in config/depot.yaml).
    public struct AuthConfig: Sendable, Equatable {
        /// Off by default so a laptop `depot serve` on 127.0.0.1 needs nothing; `depot serve`
        /// refuses a non-loopback address with it off unless `--insecure-open`.
        public var enabled = false
        /// A file holding the first admin token (else `DEPOT_ADMIN_TOKEN`).
        public var bootstrapTokenFile = ""
        /// Lifetime of the bearer tokens `/token` issues.
        public var tokenTTLSeconds = 300
        /// The P-256 key that signs them; default `<storage root>/auth/token-signing-key.pem`,
        /// created on first start. Replicas must share one.
        public var signingKeyFile = ""
        /// Filled at start-up from `signingKeyFile` (nil: a key made for this process only).
        public var signingKeyPEM: String?
        /// The token endpoint advertised in challenges; default `<scheme>://<Host>/token`.
        public var realm = ""
        public var service = "depot"
        public var issuerName = "depot"
        /// Repository globs anyone may pull without credentials.
        public var anonymousPull: [String] = []
        /// PBKDF2 iterations for new passwords.
        public var passwordIterations = PasswordHash.defaultIterations
        /// Trusted OIDC issuers (workload identity).
        public var oidc: [OIDCIssuerConfig] = []

        public init() {}
    }

    /// One `auth.oidc[]` entry; the JWKS file is read at start-up.
    public struct OIDCIssuerConfig: Sendable, Equatable {
        public var issuer: String
        public var audience: String
        public var jwksFile: String
        public var subjectClaim = "sub"
        public var rules: [OIDCRule] = []

        public init(issuer: String, audience: String, jwksFile: String, subjectClaim: String = "sub", rules: [OIDCRule] = []) {
            self.issuer = issuer
            self.audience = audience
            self.jwksFile = jwksFile
            self.subjectClaim = subjectClaim
            self.rules = rules
        }
    }

    static func parseAuth(_ s: [String: Any], _ reader: ConfigReader, into config: inout ServerConfig) throws {
        if let v: Bool = try reader.value(s, "enabled") { config.auth.enabled = v }
        if let v: String = try reader.value(s, "bootstrap_token_file") { config.auth.bootstrapTokenFile = v }
        if let v: Int = try reader.value(s, "token_ttl_seconds") {
            guard (30...86_400).contains(v) else { throw reader.error("auth.token_ttl_seconds", "must be 30 to 86400") }
            config.auth.tokenTTLSeconds = v
        }
        if let v: String = try reader.value(s, "signing_key_file") { config.auth.signingKeyFile = v }
        if let v: String = try reader.value(s, "realm"), !v.isEmpty {
            guard let u = URL(string: v), ["http", "https"].contains(u.scheme ?? ""), u.host != nil else {
                throw reader.error("auth.realm", "must be an http(s) URL (the token endpoint, e.g. https://depot.example.com/token)")
            }
            config.auth.realm = v
        }
        if let v: String = try reader.value(s, "service") { config.auth.service = v }
        if let raw = s["anonymous_pull"] {
            guard let list = raw as? [String] else { throw reader.error("auth.anonymous_pull", "must be a list of repository patterns") }
            for p in list {
                do { _ = try RepositoryGlob(p) } catch let e as DepotError {
                    throw reader.error("auth.anonymous_pull", AuthService.text(e))
                }
            }
            config.auth.anonymousPull = list
        }
        if let v: Int = try reader.value(s, "password_iterations") {
            guard (100_000...10_000_000).contains(v) else {
                throw reader.error("auth.password_iterations", "must be 100000 to 10000000")
            }
            config.auth.passwordIterations = v
        }
        if let raw = s["oidc"] {
            guard let list = raw as? [Any] else { throw reader.error("auth.oidc", "must be a list of issuers") }
            config.auth.oidc = try list.enumerated().map { try oidcIssuer($1, at: "auth.oidc[\($0)]", reader) }
        }
    }

    static func oidcIssuer(_ raw: Any, at: String, _ reader: ConfigReader) throws -> OIDCIssuerConfig {
        guard let m = raw as? [String: Any] else { throw reader.error(at, "must be a mapping") }
        try reader.rejectUnknown(m, known: ["issuer", "audience", "jwks_file", "subject_claim", "rules"], at: at + ".")
        guard let issuer = m["issuer"] as? String, !issuer.isEmpty else { throw reader.error(at + ".issuer", "is required") }
        guard let audience = m["audience"] as? String, !audience.isEmpty else { throw reader.error(at + ".audience", "is required") }
        guard let jwks = m["jwks_file"] as? String, !jwks.isEmpty else {
            throw reader.error(at + ".jwks_file", "is required (the issuer's JWKS document, saved to a file)")
        }
        var out = OIDCIssuerConfig(issuer: issuer, audience: audience, jwksFile: jwks)
        if let v = m["subject_claim"] {
            guard let c = v as? String, !c.isEmpty else { throw reader.error(at + ".subject_claim", "must be a claim name") }
            out.subjectClaim = c
        }
        if let v = m["rules"] {
            guard let rules = v as? [Any] else { throw reader.error(at + ".rules", "must be a list") }
            for (i, r) in rules.enumerated() {
                let rat = "\(at).rules[\(i)]"
                guard let rm = r as? [String: Any] else { throw reader.error(rat, "must be a mapping") }
                try reader.rejectUnknown(rm, known: ["claims", "grants"], at: rat + ".")
                guard let claims = rm["claims"] as? [String: String], !claims.isEmpty else {
                    throw reader.error(rat + ".claims", "must map claim names to patterns (strings, * matches anything)")
                }
                guard let grants = rm["grants"] as? [Any], !grants.isEmpty else {
                    throw reader.error(rat + ".grants", "must be a non-empty list of {role, repositories}")
                }
                out.rules.append(
                    OIDCRule(claims: claims, grants: try grants.enumerated().map { try grant($1, at: "\(rat).grants[\($0)]", reader) }))
            }
        }
        return out
    }

    static func grant(_ raw: Any, at: String, _ reader: ConfigReader) throws -> Grant {
        guard let m = raw as? [String: Any] else { throw reader.error(at, "must be a mapping") }
        try reader.rejectUnknown(m, known: ["role", "repositories"], at: at + ".")
        guard let r = m["role"] as? String, let role = RoleName(rawValue: r) else {
            throw reader.error(at + ".role", "must be one of \(RoleName.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        let repos = m["repositories"] as? [String] ?? ["**"]
        do { return try Grant(GrantSpec(role: role, repositories: repos)) } catch let e as DepotError {
            throw reader.error(at + ".repositories", AuthService.text(e))
        }
    }
}
