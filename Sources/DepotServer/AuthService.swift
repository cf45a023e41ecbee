import DepotAPI
import DepotAuth
import DepotCatalog
import DepotCore
import DepotRegistry
import Foundation

/// Who is calling, for the request being handled. Set by `OCIResponder` around the handler
/// (a task-local, like swift-distributed-tracing's context: every handler and the domain calls
/// it makes see it without threading a parameter through each signature); nil when
/// authentication is off.
enum Caller {
    @TaskLocal static var principal: Principal?
}

/// Authentication for one server: turns a request's credential into a `Principal`, issues the
/// bearer tokens of the OCI token flow, and holds the policy. Credentials are verified once and
/// cached by their hash for `cacheSeconds` (a password's PBKDF2 takes hundreds of milliseconds;
/// a token lookup is a catalog read), so a revoked token stops working within that time on
/// other replicas and at once on this one (a revocation clears the cache).
public final class AuthService: Sendable {
    public let enabled: Bool
    public let policy: AuthPolicy
    let db: Database
    let issuer: TokenIssuer
    let oidc: OIDCVerifier
    let tokenTTLSeconds: Int
    /// `auth.realm`: the token endpoint clients are sent to; nil: derived from the request's Host.
    let realm: String?
    let passwordIterations: Int
    /// The embedded runner's credential: random per process, never stored, never shown.
    let internalRunnerSecret: String
    let internalRunner: Principal
    let cache = Locked<[CacheKey: CachedPrincipal]>([:])
    let inflight = Locked<[CacheKey: Task<CachedPrincipal, any Error>]>([:])
    let refusals = Locked<[CacheKey: CachedPrincipal]>([:])

    /// A header up to 1 KiB is its own key (hashing it with the dictionary's SipHash costs a
    /// fraction of a SHA-256 context); longer ones (OIDC JWTs) are keyed by their SHA-256, so
    /// the cache holds at most 10 000 × 1 KiB of credentials.
    enum CacheKey: Hashable, Sendable {
        case text(String)
        case hash(SHA256.Value)

        init(_ header: String) {
            if header.utf8.count <= 1024 {
                self = .text(header)
            } else {
                self = .hash(Array(header.utf8).withUnsafeBytes { SHA256.hash($0) })
            }
        }
    }
    static let cacheSeconds: Int64 = 10
    static let cacheLimit = 10_000
    let now: @Sendable () -> Int64

    struct CachedPrincipal: Sendable {
        /// nil: the credential was refused (with this message); refusals are cached too, so a
        /// client retrying a wrong password does not cost a PBKDF2 hash each time.
        var principal: Principal?
        var refusal: String = ""
        var untilMs: Int64
    }
    /// Password checks (PBKDF2) running at once; more get 429, so a flood of guesses cannot
    /// occupy the blocking threads every other request needs.
    let passwordChecks = ConcurrencyGate(limit: 4)

    /// Why a credential was refused: the 401's message.
    struct Failure: Error {
        var message: String
    }

    public init(
        config: ServerConfig.AuthConfig, db: Database, runnerLabels: [String] = [],
        now: @escaping @Sendable () -> Int64 = { Int64(Date().timeIntervalSince1970 * 1000) }
    ) async throws {
        enabled = config.enabled
        policy = AuthPolicy(anonymousPull: try config.anonymousPull.map(RepositoryGlob.init))
        self.db = db
        let keyPEM = config.signingKeyPEM ?? TokenIssuer.newKeyPEM()
        issuer = try await TokenIssuer(privateKeyPEM: keyPEM, issuer: config.issuerName, service: config.service)
        var providers: [OIDCProvider] = []
        for o in config.oidc {
            let jwks: String
            do { jwks = try String(contentsOfFile: o.jwksFile, encoding: .utf8) } catch {
                throw DepotError.invalidArgument(
                    "cannot read the JWKS of OIDC issuer \(o.issuer) (\(o.jwksFile)): \(error.localizedDescription)")
            }
            providers.append(
                OIDCProvider(issuer: o.issuer, audience: o.audience, jwksJSON: jwks, subjectClaim: o.subjectClaim, rules: o.rules))
        }
        oidc = try await OIDCVerifier(providers: providers)
        tokenTTLSeconds = config.tokenTTLSeconds
        realm = config.realm.isEmpty ? nil : config.realm
        passwordIterations = config.passwordIterations
        internalRunnerSecret = TokenSecret.generate()
        internalRunner = Principal(
            kind: .token, name: "embedded-runner", tokenID: "embedded", tokenKind: .runner,
            grants: [Grant(role: .runner, repositories: [try RepositoryGlob("**")])], labels: runnerLabels)
        self.now = now
    }

    // MARK: authentication

    /// The principal for the request's `Authorization` header (anonymous without one); throws
    /// `Failure` when a credential is present but not valid.
    func authenticate(_ header: String?) async throws -> Principal {
        let credential: Credential
        do { credential = try Credential.parse(header) } catch let e as DepotError {
            throw Failure(message: Self.text(e))
        }
        if case .none = credential { return .anonymous }
        let key = CacheKey(header ?? "")
        let nowMs = now()
        if let hit = cache.withLock({ $0[key] }), hit.untilMs > nowMs, let p = hit.principal { return p }
        if let refused = refusals.withLock({ $0[key] }), refused.untilMs > nowMs { throw Failure(message: refused.refusal) }
        // Single flight: concurrent requests with the same credential (a client's parallel
        // connections on a cold cache) wait for one verification instead of each hashing.
        let task = inflight.withLock { running -> Task<CachedPrincipal, any Error> in
            if let t = running[key] { return t }
            let t = Task { try await self.verifyForCache(credential, nowMs: nowMs) }
            running[key] = t
            return t
        }
        let entry: CachedPrincipal
        do {
            entry = try await task.value
            inflight.withLock { $0[key] = nil }
        } catch {
            inflight.withLock { $0[key] = nil }
            throw error
        }
        guard let p = entry.principal else {
            // Refusals have their own map: a flood of junk credentials fills and clears only it,
            // never the verified ones (whose loss would cost every password user a PBKDF2 again).
            refusals.withLock { r in
                if r.count >= Self.cacheLimit { r.removeAll(keepingCapacity: true) }
                r[key] = entry
            }
            throw Failure(message: entry.refusal)
        }
        cache.withLock { c in
            if c.count >= Self.cacheLimit { c = c.filter { $0.value.untilMs > nowMs } }
            if c.count >= Self.cacheLimit { c.removeAll(keepingCapacity: true) }
            c[key] = entry
        }
        return p
    }

    func verifyForCache(_ credential: Credential, nowMs: Int64) async throws -> CachedPrincipal {
        do {
            let principal = try await verify(credential, nowMs: nowMs)
            return CachedPrincipal(principal: principal, untilMs: min(nowMs + Self.cacheSeconds * 1000, principal.expiresAtMs ?? Int64.max))
        } catch let f as Failure {
            return CachedPrincipal(principal: nil, refusal: f.message, untilMs: nowMs + Self.cacheSeconds * 1000)
        }
    }

    func verify(_ credential: Credential, nowMs: Int64) async throws -> Principal {
        switch credential {
        case .none:
            return .anonymous
        case .bearer(let token):
            // A JWT has three dot-separated parts; anything else is a token secret (`dpt_…`, or
            // the bootstrap token, which the operator chose).
            guard token.utf8.filter({ $0 == 0x2E }).count == 2 else { return try await tokenPrincipal(secret: token, nowMs: nowMs) }
            if await issuer.isOwn(token) {
                let p: Principal
                do { p = try await issuer.verify(token, nowMs: nowMs) } catch let e as TokenError { throw Failure(message: e.message) }
                try await requireStillValid(p, nowMs: nowMs)
                return p
            }
            do {
                if let p = try await oidc.verify(token, nowMs: nowMs) { return p }
            } catch let e as TokenError {
                throw Failure(message: e.message)
            }
            throw Failure(message: "bearer token is not a Depot token, a token from /token, or a JWT of a configured OIDC issuer")
        case .basic(let user, let password):
            // Any user name with a token secret (how `docker login` and skopeo carry robot tokens).
            if TokenSecret.looksLikeSecret(password) { return try await tokenPrincipal(secret: password, nowMs: nowMs) }
            return try await userPrincipal(user, password, nowMs: nowMs)
        }
    }

    /// A `/token` bearer token is as good as the credential it was issued for: revoking that
    /// token or removing that user ends it too (within the cache's 10 s), not only at its expiry.
    func requireStillValid(_ p: Principal, nowMs: Int64) async throws {
        let db = self.db
        switch p.kind {
        case .token:
            guard let id = p.tokenID, id != internalRunner.tokenID else { return }
            let t = try await offload { try db.read { try $0.token(id: id) } }
            guard let t, t.isValid(at: nowMs) else {
                throw Failure(message: "the token this bearer token was issued for is revoked or expired")
            }
        case .user:
            let name = p.name
            guard try await offload({ try db.read { try $0.user(named: name) } }) != nil else {
                throw Failure(message: "the user this bearer token was issued to no longer exists")
            }
        case .anonymous, .oidc:
            return
        }
    }

    func tokenPrincipal(secret: String, nowMs: Int64) async throws -> Principal {
        if HMACSHA256.equal(Array(secret.utf8), Array(internalRunnerSecret.utf8)) { return internalRunner }
        let hash = TokenSecret.hash(secret)
        let db = self.db
        guard let t = try await offload({ try db.read { try $0.token(secretHash: hash) } }) else {
            throw Failure(message: "token is not known to this registry: check DEPOT_TOKEN or the stored login")
        }
        if t.revokedAt != nil { throw Failure(message: "token \(t.name) (\(t.id)) was revoked: ask an admin for a new one") }
        if let e = t.expiresAt, nowMs >= e { throw Failure(message: "token \(t.name) (\(t.id)) expired: ask an admin for a new one") }
        return Principal(
            kind: .token, name: t.name, tokenID: t.id, tokenKind: t.kind, grants: try t.grants.map(Grant.init), labels: t.labels,
            deployments: try t.deployments.map { try $0.map(RepositoryGlob.init) }, expiresAtMs: t.expiresAt)
    }

    func userPrincipal(_ name: String, _ password: String, nowMs: Int64) async throws -> Principal {
        let db = self.db
        let found = try await offload { try db.read { try $0.user(named: name) } }
        // Not a user: perhaps a token chosen by the operator (the bootstrap token) under any name.
        if found == nil, password.utf8.count >= 32, let p = try? await tokenPrincipal(secret: password, nowMs: nowMs) { return p }
        // Hash even for an unknown user, so the answer's timing does not tell which names exist.
        let stored =
            found?.passwordHash ?? "pbkdf2-sha256$\(passwordIterations)$AAAAAAAAAAAAAAAAAAAAAA==$" + String(repeating: "A", count: 43) + "="
        guard passwordChecks.tryEnter() else {
            throw RegistryError(.tooManyRequests, "too many password checks at once: retry shortly (tokens avoid the check)")
        }
        defer { passwordChecks.leave() }
        let ok = try await offload { PasswordHash.verify(password, against: stored) }
        guard ok, let user = found else { throw Failure(message: "user name or password is wrong") }
        return Principal(kind: .user, name: user.name, grants: try user.grants.map(Grant.init))
    }

    /// Forgets cached credentials (after a revocation or a user change on this server).
    func forgetCachedCredentials() {
        cache.withLock { $0.removeAll() }
        refusals.withLock { $0.removeAll() }
    }

    // MARK: web UI sessions

    /// How long a web UI session lasts: a working day; then the login page again.
    var sessionSeconds: Int { 8 * 3600 }

    /// A short digest of a user's stored password hash (salted, so a password set again, even
    /// to the same text, gives another): the version a session is bound to.
    static func credentialVersion(_ passwordHash: String) -> String {
        String(Array(passwordHash.utf8).withUnsafeBytes { SHA256.hash($0) }.hex.prefix(16))
    }

    /// Opens a web UI session from the login form: a user name and password, or any name with
    /// a token secret as the password. Returns the session cookie's value (a JWT whose audience
    /// is the UI's, naming the identity, not its rights).
    func openSession(user: String, password: String) async throws -> (session: String, principal: Principal) {
        guard !password.isEmpty, password.utf8.count <= 1024, user.utf8.count <= 256 else {
            throw Failure(message: "user name or password is wrong")
        }
        let principal = try await verify(.basic(user: user, password: password), nowMs: now())
        guard principal.kind == .user || principal.kind == .token, principal.tokenID != internalRunner.tokenID || principal.tokenID == nil
        else { throw Failure(message: "this credential cannot open a web session") }
        var version: String?
        if principal.kind == .user {
            let db = self.db
            let name = principal.name
            version = try await offload { try db.read { try $0.user(named: name) } }.map { Self.credentialVersion($0.passwordHash) }
        }
        let session = try await issuer.issueSession(to: principal, credentialVersion: version, ttlSeconds: sessionSeconds, nowMs: now())
        return (session, principal)
    }

    /// The principal of a session cookie, with the grants its user or token has now (cached
    /// like every credential for 10 s: removing the user or revoking the token ends the
    /// session within that time).
    func sessionPrincipal(_ session: String) async throws -> Principal {
        let key = CacheKey("session " + session)
        let nowMs = now()
        if let hit = cache.withLock({ $0[key] }), hit.untilMs > nowMs, let p = hit.principal { return p }
        let identity: SessionIdentity
        do { identity = try await issuer.verifySession(session, nowMs: nowMs) } catch let e as TokenError {
            throw Failure(message: e.message)
        }
        let db = self.db
        var principal: Principal
        switch identity.kind {
        case .user:
            let name = identity.name
            guard let user = try await offload({ try db.read { try $0.user(named: name) } }) else {
                throw Failure(message: "the user of this session no longer exists: log in again")
            }
            guard identity.credentialVersion == Self.credentialVersion(user.passwordHash) else {
                throw Failure(message: "the password changed since this session was opened: log in again")
            }
            principal = Principal(kind: .user, name: user.name, grants: try user.grants.map(Grant.init))
        case .token:
            guard let id = identity.tokenID, let t = try await offload({ try db.read { try $0.token(id: id) } }), t.isValid(at: nowMs)
            else {
                throw Failure(message: "the token of this session is revoked or expired: log in again")
            }
            principal = Principal(
                kind: .token, name: t.name, tokenID: t.id, tokenKind: t.kind, grants: try t.grants.map(Grant.init), labels: t.labels,
                deployments: try t.deployments.map { try $0.map(RepositoryGlob.init) }, expiresAtMs: t.expiresAt)
        default:
            throw Failure(message: "session names no user or token")
        }
        principal.expiresAtMs = min(principal.expiresAtMs ?? Int64.max, identity.expiresAtMs)
        let entry = CachedPrincipal(principal: principal, untilMs: min(nowMs + Self.cacheSeconds * 1000, identity.expiresAtMs))
        cache.withLock { c in
            if c.count >= Self.cacheLimit { c = c.filter { $0.value.untilMs > nowMs } }
            if c.count >= Self.cacheLimit { c.removeAll(keepingCapacity: true) }
            c[key] = entry
        }
        return principal
    }

    // MARK: token flow

    /// `WWW-Authenticate` for a request refused for want of credentials: the Bearer challenge
    /// of the distribution token specification, with the scope the request needed.
    func challenge(host: String?, scheme: String, repository: String?, action: Action) -> String {
        var value = "Bearer realm=\"\(realmURL(host: host, scheme: scheme))\",service=\"\(issuer.service)\""
        if let scope = Self.scope(repository: repository, action: action) { value += ",scope=\"\(scope)\"" }
        return value
    }

    func realmURL(host: String?, scheme: String) -> String {
        if let realm { return realm }
        // The Host header is the client's own view of this server; only it follows the realm.
        let h = host.flatMap { h in h.utf8.allSatisfy { $0 > 0x20 && $0 < 0x7F && $0 != 0x22 } && h.utf8.count <= 255 ? h : nil }
        return "\(scheme)://\(h ?? "127.0.0.1")/token"
    }

    /// The distribution scope naming what a refused request needed (nil for Depot API actions,
    /// which take robot tokens, users or OIDC tokens directly).
    static func scope(repository: String?, action: Action) -> String? {
        switch action {
        case .catalog: return "registry:catalog:*"
        case .pull: return repository.map { "repository:\($0):pull" }
        case .push, .tag: return repository.map { "repository:\($0):pull,push" }
        case .delete: return repository.map { "repository:\($0):delete" }
        default: return nil
        }
    }

    /// A token for `principal` carrying what it may do of `scopes` (`repository:NAME:ACTIONS`,
    /// `registry:catalog:*`); scopes it may not use are left out, not refused (the spec's rule:
    /// the client then gets a 403 from the registry).
    func issueToken(for principal: Principal, scopes: [String]) async throws -> TokenAnswer {
        var access: [AccessEntry] = []
        for scope in scopes.prefix(32) {
            for part in scope.split(separator: " ").prefix(32) {
                let fields = part.split(separator: ":", omittingEmptySubsequences: false)
                guard fields.count >= 3 else { continue }
                let type = String(fields[0])
                let name = fields[1..<(fields.count - 1)].joined(separator: ":")
                let actions = fields[fields.count - 1].split(separator: ",").map(String.init)
                if type == "registry", name == "catalog" {
                    if Authorizer.decide(principal, AccessRequest(.catalog), policy: policy) == .allow {
                        access.append(AccessEntry(type: "registry", name: "catalog", actions: ["*"]))
                    }
                    continue
                }
                guard type == "repository", (try? RepositoryName(name)) != nil else { continue }
                let granted = Authorizer.grantable(principal, repository: name, wanted: actions, policy: policy)
                if !granted.isEmpty { access.append(AccessEntry(type: "repository", name: name, actions: granted)) }
            }
        }
        let nowMs = now()
        let jwt = try await issuer.issue(to: principal, access: access, ttlSeconds: tokenTTLSeconds, nowMs: nowMs)
        let f = ISO8601DateFormatter()
        return TokenAnswer(
            token: jwt, expiresIn: tokenTTLSeconds, issuedAt: f.string(from: Date(timeIntervalSince1970: Double(nowMs) / 1000)))
    }

    // MARK: bootstrap

    /// At start-up with authentication on: makes `secret` (from `DEPOT_ADMIN_TOKEN` or
    /// `auth.bootstrap_token_file`) an admin token named `bootstrap-admin`, replacing an earlier
    /// bootstrap token with another secret. Without one, refuses to start when no credential
    /// exists at all: nobody could ever log in.
    func bootstrap(secret: String?) throws {
        guard enabled else { return }
        let nowMs = now()
        try db.write { c in
            // Replicas starting together bootstrap one at a time: the second finds the first's token
            // (the audit append below takes this lock anyway; taken first, it orders the reads too).
            try c.lock(.appends)
            if let secret {
                guard secret.utf8.count >= 32, secret.utf8.count <= 200, secret.utf8.allSatisfy({ $0 > 0x20 && $0 < 0x7F }) else {
                    throw DepotError.invalidArgument(
                        "the bootstrap admin token must be 32 to 200 printable characters (make one with `openssl rand -hex 32`)")
                }
                let hash = TokenSecret.hash(secret)
                if let existing = try c.token(secretHash: hash) {
                    if existing.isValid(at: nowMs) { return }
                    throw DepotError.invalidArgument(
                        "the bootstrap admin token in DEPOT_ADMIN_TOKEN (or auth.bootstrap_token_file) was revoked: set a new one, "
                            + "or unset it to start with the credentials that exist")
                }
                _ = try c.revokeToken("bootstrap-admin", at: nowMs)
                let t = TokenRecord(
                    id: TokenSecret.newID(), name: "bootstrap-admin", kind: .robot, secretHash: hash,
                    grants: [GrantSpec(role: .admin, repositories: ["**"])], labels: nil, deployments: nil, createdAt: nowMs,
                    createdBy: "bootstrap", expiresAt: nil)
                _ = try c.insertToken(t)
                _ = try c.appendAudit(
                    at: nowMs, actor: "bootstrap", action: "token.create", repository: nil, digest: nil, tag: nil,
                    details: ["token": .string(t.id), "name": .string(t.name), "role": "admin"])
            } else if try !c.hasCredentials() {
                throw DepotError.invalidArgument(
                    "authentication is on (auth.enabled) but no user or token exists: start once with DEPOT_ADMIN_TOKEN set "
                        + "(or auth.bootstrap_token_file) to create the first admin token")
            }
        }
    }

    static func text(_ e: DepotError) -> String {
        if case .invalidArgument(let m) = e { return m }
        return "\(e)"
    }
}
