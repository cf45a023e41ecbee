import DepotAPI
import DepotAuth
import DepotCatalog
import DepotCore
import DepotRegistry
import Foundation
import HTTPTypes
import Hummingbird
import NIOCore

/// The token endpoint of the OCI token flow, `whoami`, and the admin API for users and tokens.
struct AuthHandlers: RouteHandlers {
    let registry: Registry
    let auth: AuthService?

    /// `GET /token` (Basic credentials or none, `scope` parameters) and `POST /token` (the OAuth2
    /// form containerd sends: grant_type=password with username, password, scope). Anonymous
    /// callers get a token with what `auth.anonymous_pull` allows; wrong credentials get 401.
    func token(_ match: RouteMatch, _ request: Request) async throws -> Response {
        guard let auth, auth.enabled else {
            throw RegistryError(.unsupported, "authentication is off on this registry: no token is needed", kind: .notFound)
        }
        var header = request.headers[.authorization]
        var scopes = request.uri.queryParameters[values: "scope"].map(String.init)
        if request.method == .post {
            let body = try await RequestParsing.collect(
                request, limit: 64 << 10, what: "token request", rate: RateFloor(limits: registry.uploads.limits, start: .now))
            let form = Self.form(String(decoding: body.readableBytesView, as: UTF8.self))
            switch form["grant_type"] {
            case "password":
                guard let user = form["username"], let password = form["password"] else {
                    throw RegistryError(.invalidRequest, "grant_type=password needs username and password")
                }
                header = "Basic " + Data("\(user):\(password)".utf8).base64EncodedString()
            case "refresh_token":
                throw RegistryError(.unsupported, "this registry issues no refresh tokens: use grant_type=password", kind: .invalid)
            case nil: break
            case let other?: throw RegistryError(.unsupported, "grant_type \(other.prefix(40)) is not supported", kind: .invalid)
            }
            if let s = form["scope"] { scopes.append(s) }
        }
        let principal: Principal
        do { principal = try await auth.authenticate(header) } catch let f as AuthService.Failure {
            throw RegistryError(.unauthorized, f.message)
        }
        return Reply.encoded(try await auth.issueToken(for: principal, scopes: scopes))
    }

    func whoami(_ match: RouteMatch, _ request: Request) async throws -> Response {
        guard let p = Caller.principal else {
            return Reply.encoded(WhoAmI(principal: Self.actor(request), kind: "anonymous", grants: [], authEnabled: false))
        }
        return Reply.encoded(
            WhoAmI(
                principal: p.id, kind: p.tokenKind?.rawValue ?? p.kind.rawValue, grants: p.grants.map(\.spec), labels: p.labels,
                deployments: p.deployments?.map(\.pattern), expiresAtMs: p.expiresAtMs, authEnabled: true))
    }

    // MARK: admin

    func users(_ match: RouteMatch, _ request: Request) async throws -> Response {
        let db = registry.store.catalog
        return Reply.encoded(try await offload { try db.read { try $0.users() } }.map(\.info))
    }

    func userAdd(_ match: RouteMatch, _ request: Request) async throws -> Response {
        let auth = try enabledAuth()
        let body = try await body(request, as: UserAddRequest.self)
        guard Self.validName(body.name) else {
            throw RegistryError(.invalidRequest, "user name must be 1 to 64 characters of a-z, 0-9, '.', '_', '-' and '@'")
        }
        let grants = try Self.grants(body.grants)
        let hash: String
        do {
            let iterations = auth.passwordIterations
            hash = try await offload { try PasswordHash.make(body.password, iterations: iterations) }
        } catch let e as DepotError { throw RegistryError(.invalidRequest, AuthService.text(e)) }
        let actor = Self.actor(request)
        let now = auth.now()
        let record = UserRecord(name: body.name, passwordHash: hash, grants: grants.map(\.spec), createdAt: now, createdBy: actor)
        let db = registry.store.catalog
        try await offload {
            try db.write { c in
                try c.putUser(record)
                _ = try c.appendAudit(
                    at: now, actor: actor, action: "user.put", repository: nil, digest: nil, tag: nil,
                    details: [
                        "user": .string(record.name),
                        "grants": JSONValue(record.grants.map { "\($0.role.rawValue) on \($0.repositories.joined(separator: ","))" }),
                    ])
            }
        }
        auth.forgetCachedCredentials()
        return Reply.encoded(record.info, status: 201)
    }

    func userRemove(_ match: RouteMatch, _ request: Request) async throws -> Response {
        let auth = try enabledAuth()
        let name = match["user"]
        let actor = Self.actor(request)
        let now = auth.now()
        let db = registry.store.catalog
        let removed = try await offload {
            try db.write { c -> Bool in
                guard try c.removeUser(named: name) else { return false }
                _ = try c.appendAudit(
                    at: now, actor: actor, action: "user.remove", repository: nil, digest: nil, tag: nil, details: ["user": .string(name)])
                return true
            }
        }
        guard removed else { throw RegistryError(.invalidRequest, "no user named \(name.prefix(64))", kind: .notFound) }
        auth.forgetCachedCredentials()
        return Reply.empty(204)
    }

    func tokens(_ match: RouteMatch, _ request: Request) async throws -> Response {
        let db = registry.store.catalog
        let all = request.uri.queryParameters["all"] == "true"
        let now = auth?.now() ?? 0
        let list = try await offload { try db.read { try $0.tokens() } }
        return Reply.encoded(list.filter { all || $0.isValid(at: now) }.map(\.info))
    }

    func tokenCreate(_ match: RouteMatch, _ request: Request) async throws -> Response {
        let auth = try enabledAuth()
        let body = try await body(request, as: TokenCreateRequest.self)
        guard Self.validName(body.name) else {
            throw RegistryError(.invalidRequest, "token name must be 1 to 64 characters of a-z, 0-9, '.', '_', '-' and '@'")
        }
        let grants = try Self.grants(body.grants)
        switch body.kind {
        case .runner:
            guard let labels = body.labels, !labels.isEmpty, labels.count <= 64, labels.allSatisfy({ !$0.isEmpty && $0.utf8.count <= 64 })
            else {
                throw RegistryError(.invalidRequest, "a runner token needs the labels whose jobs it may lease (1 to 64 labels)")
            }
        case .node:
            guard let d = body.deployments, !d.isEmpty, d.count <= 64 else {
                throw RegistryError(.invalidRequest, "a node token needs the deployments it serves (repository/environment patterns)")
            }
            for p in d {
                do { _ = try RepositoryGlob(p) } catch let e as DepotError { throw RegistryError(.invalidRequest, AuthService.text(e)) }
            }
        case .robot:
            if body.labels != nil || body.deployments != nil {
                throw RegistryError(.invalidRequest, "labels are for runner tokens and deployments for node tokens")
            }
        }
        if let s = body.expiresInSeconds, !(60...(10 * 365 * 86_400)).contains(s) {
            throw RegistryError(.invalidRequest, "expires_in_seconds must be 60 s to 10 years")
        }
        let secret = TokenSecret.generate()
        let now = auth.now()
        let actor = Self.actor(request)
        let record = TokenRecord(
            id: TokenSecret.newID(), name: body.name, kind: body.kind, secretHash: TokenSecret.hash(secret), grants: grants.map(\.spec),
            labels: body.labels, deployments: body.deployments, createdAt: now, createdBy: actor,
            expiresAt: body.expiresInSeconds.map { now + $0 * 1000 })
        let db = registry.store.catalog
        let inserted = try await offload {
            try db.write { c -> Bool in
                guard try c.insertToken(record) else { return false }
                _ = try c.appendAudit(
                    at: now, actor: actor, action: "token.create", repository: nil, digest: nil, tag: nil,
                    details: ["token": .string(record.id), "name": .string(record.name), "kind": .string(record.kind.rawValue)])
                return true
            }
        }
        guard inserted else {
            throw RegistryError(.conflict, "a token named '\(body.name)' exists and is not revoked: revoke it first or pick another name")
        }
        var info = record.info
        info.secret = secret
        return Reply.encoded(info, status: 201)
    }

    func tokenRevoke(_ match: RouteMatch, _ request: Request) async throws -> Response {
        let auth = try enabledAuth()
        let key = match["token"]
        let actor = Self.actor(request)
        let now = auth.now()
        let db = registry.store.catalog
        let revoked = try await offload {
            try db.write { c -> TokenRecord? in
                guard let t = try c.revokeToken(key, at: now) else { return nil }
                _ = try c.appendAudit(
                    at: now, actor: actor, action: "token.revoke", repository: nil, digest: nil, tag: nil,
                    details: ["token": .string(t.id), "name": .string(t.name)])
                return t
            }
        }
        guard let revoked else {
            throw RegistryError(.invalidRequest, "no unrevoked token with id or name \(key.prefix(64))", kind: .notFound)
        }
        auth.forgetCachedCredentials()
        return Reply.encoded(revoked.info)
    }

    func enabledAuth() throws -> AuthService {
        guard let auth, auth.enabled else {
            throw RegistryError(
                .unsupported,
                "authentication is off on this registry (auth.enabled in config/depot.yaml): users and tokens would not be checked",
                kind: .conflict)
        }
        return auth
    }

    static func validName(_ s: String) -> Bool {
        !s.isEmpty && s.utf8.count <= 64
            && s.utf8.allSatisfy {
                ($0 >= 0x61 && $0 <= 0x7A) || ($0 >= 0x30 && $0 <= 0x39) || $0 == 0x2E || $0 == 0x5F || $0 == 0x2D || $0 == 0x40
            }
    }

    static func grants(_ specs: [GrantSpec]) throws -> [Grant] {
        guard specs.count <= 64 else { throw RegistryError(.invalidRequest, "at most 64 grants") }
        do { return try specs.map(Grant.init) } catch let e as DepotError { throw RegistryError(.invalidRequest, AuthService.text(e)) }
    }

    /// An `application/x-www-form-urlencoded` body (`+` is a space); the last value of a key wins.
    static func form(_ text: String) -> [String: String] {
        var out: [String: String] = [:]
        for pair in text.split(separator: "&").prefix(64) {
            let kv = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            func decode(_ s: Substring) -> String? { s.replacingOccurrences(of: "+", with: " ").removingPercentEncoding }
            guard let k = decode(kv[0]) else { continue }
            out[k] = kv.count > 1 ? decode(kv[1]) : ""
        }
        return out
    }
}
