import DepotAPI
import DepotAuth
import DepotCatalog
import DepotCore
import DepotRegistry
import DepotServer
import DepotStore
import DepotTestSupport
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import Logging
import NIOCore
import Testing

/// A live server with authentication on and a bootstrap admin token.
struct AuthServer {
    let client: any TestClientProtocol
    let registry: Registry
    let port: Int
    let admin: String
}

let bootstrapSecret = "bootstrap-" + String(repeating: "s", count: 40)

func withAuthRegistry(
    configure: (inout ServerConfig) -> Void = { _ in }, _ body: @Sendable (AuthServer) async throws -> Void
) async throws {
    let dir = TempDir()
    let store = try ChunkStore(root: dir.path, create: true)
    var config = ServerConfig.forTests()
    config.storageRoot = dir.path
    config.listenPort = 0
    config.auth.enabled = true
    config.auth.passwordIterations = 100_000
    configure(&config)
    let registry = Registry(store: store, uploads: config.uploads, policy: config.tagPolicy)
    let auth = try await DepotService.makeAuth(config: config, db: store.catalog, bootstrapSecret: bootstrapSecret)
    var logger = Logger(label: "test")
    logger.logLevel = .warning
    let app = DepotService.makeApplication(registry: registry, config: config, logger: logger, auth: auth)
    try await app.test(.live) { client in
        try await body(AuthServer(client: client, registry: registry, port: client.port!, admin: bootstrapSecret))
    }
    withExtendedLifetime(dir) {}
}

func bearer(_ token: String) -> HTTPFields { [.authorization: "Bearer \(token)"] }
func basic(_ user: String, _ password: String) -> HTTPFields {
    [.authorization: "Basic " + Data("\(user):\(password)".utf8).base64EncodedString()]
}

extension AuthServer {
    /// Creates a token through the admin API; returns its secret.
    func token(_ name: String, _ kind: TokenKind = .robot, _ grants: [GrantSpec], labels: [String]? = nil, deployments: [String]? = nil)
        async throws -> String
    {
        let body = try WireJSON.encode(TokenCreateRequest(name: name, kind: kind, grants: grants, labels: labels, deployments: deployments))
        let r = try await client.req(.post, "/depot/v1/admin/tokens", headers: bearer(admin), body: body)
        precondition(r.status.code == 201, "token create: \(r.status) \(r.text)")
        return try WireJSON.decode(TokenInfo.self, from: r.bytes, what: "token").secret!
    }
}

/// A path for a route with plausible parameters.
func samplePath(_ route: Route) -> String {
    route.path(
        name: "models/a",
        [
            "digest": "sha256:" + String(repeating: "0", count: 64), "reference": "v1", "uuid": "u1", "alias": "production", "id": "1",
            "environment": "prod", "node": "n1", "user": "nobody", "token": "nothing", "control": "promote",
        ])
}

/// Whether the gate (not a handler) refused the request.
func refusedByGate(_ r: TestResponse) -> Bool {
    r.status.code == 401 || (r.status.code == 403 && r.text.contains("requested access to the resource is denied"))
        // A web UI page sends a caller without a valid credential to its login page.
        || (r.status.code == 303 && r.header("Location")?.hasPrefix("/ui/login") == true)
}

@Suite(.serialized) struct AuthTests {
    /// No route can be forgotten: every one of the table refuses a caller without credentials
    /// with 401 and the Bearer challenge, except the few whose action is open.
    @Test func everyRouteRefusesAnonymousCallersUnlessItsActionIsOpen() async throws {
        try await withAuthRegistry { s in
            for route in Routes.all {
                let method = HTTPRequest.Method(route.method.rawValue)!
                let r = try await s.client.req(method, samplePath(route))
                if route.action.isOpen {
                    #expect(r.status.code != 401, "\(route) is open but answered 401")
                    continue
                }
                if route.isPage {
                    // Pages send the browser to the login form instead of a Bearer challenge.
                    #expect(r.status.code == 303, "\(route): \(r.status)")
                    #expect(r.header("Location")?.hasPrefix("/ui/login?next=") == true, "\(route): \(r.header("Location") ?? "")")
                    continue
                }
                #expect(r.status.code == 401, "\(route): \(r.status)")
                let challenge = r.header("WWW-Authenticate") ?? ""
                #expect(challenge.hasPrefix("Bearer realm=\"http://"), "\(route): \(challenge)")
                #expect(challenge.contains("/token\",service=\"depot\""), "\(route): \(challenge)")
                if method != .head { #expect(r.errorCode == "UNAUTHORIZED", "\(route)") }
            }
        }
    }

    /// Every route × every role: the gate lets a request through exactly when the role has the
    /// route's action (plus `tag` for a manifest PUT by tag), and refuses it otherwise.
    @Test func authorizationMatrixCoversEveryRouteAndRole() async throws {
        try await withAuthRegistry { s in
            var secrets: [RoleName: String] = [:]
            for role in RoleName.allCases {
                secrets[role] = try await s.token(
                    "role-\(role.rawValue)", role == .runner ? .runner : role == .node ? .node : .robot,
                    [GrantSpec(role: role, repositories: ["**"])], labels: role == .runner ? ["cpu"] : nil,
                    deployments: role == .node ? ["models/**"] : nil)
            }
            // Destructive admin routes last, so they do not remove what later requests use.
            let routes = Routes.all.sorted { ($0.action == .admin ? 1 : 0) < ($1.action == .admin ? 1 : 0) }
            for role in RoleName.allCases {
                for route in routes {
                    let method = HTTPRequest.Method(route.method.rawValue)!
                    let r = try await s.client.req(method, samplePath(route), headers: bearer(secrets[role]!))
                    var needed: Set<Action> = [route.action]
                    if route.id == .manifestPut { needed.insert(.tag) }
                    let expected = route.action.isOpen || route.action == .authenticated || needed.isSubset(of: role.actions)
                    #expect(refusedByGate(r) != expected, "\(role.rawValue) × \(route): \(r.status) \(r.text.prefix(160))")
                }
            }
        }
    }

    @Test func repositoryGrantsStopAtTheirGlobs() async throws {
        try await withAuthRegistry { s in
            let ci = try await s.token("ci", .robot, [GrantSpec(role: .writer, repositories: ["team/**"])])
            let blob = Array("config".utf8)
            let d = Digest.of(blob)
            let ok = try await s.client.req(.post, "/v2/team/m/blobs/uploads/?digest=\(d)", headers: bearer(ci), body: blob)
            #expect(ok.status.code == 201)
            let no = try await s.client.req(.post, "/v2/other/m/blobs/uploads/?digest=\(d)", headers: bearer(ci), body: blob)
            #expect(no.status.code == 403 && no.errorCode == "DENIED")
            // Catalog: only what the caller may pull.
            _ = try await s.client.req(.post, "/v2/other/m/blobs/uploads/?digest=\(d)", headers: bearer(s.admin), body: blob)
            let adminManifest = manifestJSON(config: (d, blob.count, MediaType.ociImageConfig), layers: [])
            var h = bearer(s.admin)
            h[.contentType] = MediaType.ociManifest
            for repo in ["team/m", "other/m"] {
                let r = try await s.client.req(.put, "/v2/\(repo)/manifests/v1", headers: h, body: adminManifest)
                #expect(r.status.code == 201, "\(r.text)")
            }
            let cat = try await s.client.req(.get, "/v2/_catalog", headers: bearer(ci))
            #expect(try WireJSON.decode(RepositoryList.self, from: cat.bytes, what: "catalog").repositories == ["team/m"])
            let all = try await s.client.req(.get, "/v2/_catalog", headers: bearer(s.admin))
            #expect(try WireJSON.decode(RepositoryList.self, from: all.bytes, what: "catalog").repositories == ["other/m", "team/m"])
        }
    }

    /// Knowing a digest is not access: neither a mount nor a foreign-layer descriptor makes
    /// another repository's blob readable.
    @Test func knowingADigestIsNotAccess() async throws {
        try await withAuthRegistry { s in
            let secret = Array("secret weights".utf8)
            let d = Digest.of(secret)
            #expect(
                try await s.client.req(.post, "/v2/private/m/blobs/uploads/?digest=\(d)", headers: bearer(s.admin), body: secret).status
                    .code == 201)
            let eve = try await s.token("eve", .robot, [GrantSpec(role: .writer, repositories: ["eve/**"])])
            // A mount from a repository eve cannot pull, or from anywhere: an upload session instead.
            for query in ["mount=\(d)&from=private/m", "mount=\(d)"] {
                let r = try await s.client.req(.post, "/v2/eve/x/blobs/uploads/?\(query)", headers: bearer(eve))
                #expect(r.status.code == 202, "\(query): \(r.status)")
            }
            #expect(try await s.client.req(.get, "/v2/eve/x/blobs/\(d)", headers: bearer(eve)).status.code == 404)
            // A manifest naming the digest as a foreign layer is accepted, but does not link it.
            let config = Array("{}".utf8)
            let cd = Digest.of(config)
            #expect(
                try await s.client.req(.post, "/v2/eve/x/blobs/uploads/?digest=\(cd)", headers: bearer(eve), body: config).status.code
                    == 201)
            let manifest = Array(
                """
                {"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json",\
                "config":{"mediaType":"application/vnd.docker.container.image.v1+json","digest":"\(cd)","size":2},\
                "layers":[{"mediaType":"\(MediaType.dockerForeignLayer)","digest":"\(d)","size":\(secret.count),"urls":["https://example.com/l"]}]}
                """.utf8)
            var h = bearer(eve)
            h[.contentType] = MediaType.dockerManifest
            let put = try await s.client.req(.put, "/v2/eve/x/manifests/v1", headers: h, body: manifest)
            #expect(put.status.code == 201, "\(put.text)")
            let read = try await s.client.req(.get, "/v2/eve/x/blobs/\(d)", headers: bearer(eve))
            #expect(read.status.code == 404 && !read.text.contains("secret"), "\(read.status)")
            // A mount by someone who may pull the source works.
            let ok = try await s.client.req(.post, "/v2/other/y/blobs/uploads/?mount=\(d)&from=private/m", headers: bearer(s.admin))
            #expect(ok.status.code == 201)
        }
    }

    @Test func theTokenFlowIssuesScopedTokensForBasicCredentials() async throws {
        let openPublic: (inout ServerConfig) -> Void = { $0.auth.anonymousPull = ["public/**"] }
        try await withAuthRegistry(configure: openPublic) { s in
            let ci = try await s.token("ci", .robot, [GrantSpec(role: .writer, repositories: ["team/**"])])
            let r = try await s.client.req(
                .get, "/token?service=depot&scope=repository:team/m:pull,push&scope=repository:other/m:pull", headers: basic("ci", ci))
            #expect(r.status.code == 200, "\(r.text)")
            let answer = try WireJSON.decode(TokenAnswer.self, from: r.bytes, what: "token")
            #expect(answer.token == answer.accessToken && answer.expiresIn == 300)
            let jwt = answer.token
            #expect(try await s.client.req(.get, "/v2/", headers: bearer(jwt)).status.code == 200)
            let blob = Array("layer".utf8)
            let d = Digest.of(blob)
            #expect(
                try await s.client.req(.post, "/v2/team/m/blobs/uploads/?digest=\(d)", headers: bearer(jwt), body: blob).status.code == 201)
            #expect(try await s.client.req(.get, "/v2/other/m/tags/list", headers: bearer(jwt)).status.code == 403)
            // The short-lived token never reaches the Depot API, whatever its owner's grants.
            let admin = try await s.client.req(.get, "/token?service=depot&scope=repository:team/m:*", headers: bearer(s.admin))
            let adminJWT = try WireJSON.decode(TokenAnswer.self, from: admin.bytes, what: "token").token
            #expect(try await s.client.req(.get, "/depot/v1/admin/tokens", headers: bearer(adminJWT)).status.code == 403)
            // POST form (containerd).
            let form = "grant_type=password&username=ci&password=\(ci)&service=depot&scope=repository%3Ateam%2Fm%3Apull&client_id=ctr"
            let post = try await s.client.req(
                .post, "/token", headers: [.contentType: "application/x-www-form-urlencoded"], body: Array(form.utf8))
            #expect(post.status.code == 200, "\(post.text)")
            // Wrong credentials: 401, never a token.
            #expect(
                try await s.client.req(
                    .get, "/token?scope=repository:team/m:pull", headers: basic("ci", "dpt_" + String(repeating: "x", count: 43))
                ).status.code == 401)
            // Anonymous: only what anonymous_pull opens.
            let anon = try await s.client.req(.get, "/token?service=depot&scope=repository:public/x:pull,push")
            let anonJWT = try WireJSON.decode(TokenAnswer.self, from: anon.bytes, what: "token").token
            #expect(try await s.client.req(.get, "/v2/public/x/tags/list", headers: bearer(anonJWT)).status.code != 403)
            #expect(try await s.client.req(.post, "/v2/public/x/blobs/uploads/", headers: bearer(anonJWT)).status.code == 403)
            // A tampered token.
            #expect(try await s.client.req(.get, "/v2/", headers: bearer(jwt.dropLast(4) + "AAAA")).status.code == 401)
        }
    }

    @Test func usersLogInWithPasswordsAndRevokedTokensStopAtOnce() async throws {
        try await withAuthRegistry { s in
            let add = UserAddRequest(
                name: "alice", password: "correct horse battery", grants: [GrantSpec(role: .reader, repositories: ["**"])])
            let r = try await s.client.req(.post, "/depot/v1/admin/users", headers: bearer(s.admin), body: try WireJSON.encode(add))
            #expect(r.status.code == 201, "\(r.text)")
            #expect(!r.text.contains("pbkdf2"), "the hash never leaves the server")
            #expect(try await s.client.req(.get, "/v2/_catalog", headers: basic("alice", "correct horse battery")).status.code == 200)
            #expect(try await s.client.req(.get, "/v2/_catalog", headers: basic("alice", "wrong horse battery")).status.code == 401)
            #expect(try await s.client.req(.get, "/v2/_catalog", headers: basic("mallory", "correct horse battery")).status.code == 401)
            let who = try await s.client.req(.get, "/depot/v1/whoami", headers: basic("alice", "correct horse battery"))
            #expect(try WireJSON.decode(WhoAmI.self, from: who.bytes, what: "whoami").principal == "user:alice")
            // A reader cannot make itself an admin.
            let escalate = TokenCreateRequest(name: "mine", grants: [GrantSpec(role: .admin)])
            #expect(
                try await s.client.req(
                    .post, "/depot/v1/admin/tokens", headers: basic("alice", "correct horse battery"), body: try WireJSON.encode(escalate)
                ).status.code == 403)

            let t = try await s.token("short-lived", .robot, [GrantSpec(role: .reader)])
            #expect(try await s.client.req(.get, "/v2/_catalog", headers: bearer(t)).status.code == 200)
            let issued = try await s.client.req(.get, "/token?service=depot&scope=registry:catalog:*", headers: basic("x", t))
            let jwt = try WireJSON.decode(TokenAnswer.self, from: issued.bytes, what: "token").token
            #expect(try await s.client.req(.get, "/v2/_catalog", headers: bearer(jwt)).status.code == 200)
            let rev = try await s.client.req(.delete, "/depot/v1/admin/tokens/short-lived", headers: bearer(s.admin))
            #expect(rev.status.code == 200, "\(rev.text)")
            let after = try await s.client.req(.get, "/v2/_catalog", headers: bearer(t))
            #expect(after.status.code == 401 && after.text.contains("revoked"))
            // The bearer token issued for it ends with it, not at its own expiry.
            let afterJWT = try await s.client.req(.get, "/v2/_catalog", headers: bearer(jwt))
            #expect(afterJWT.status.code == 401 && afterJWT.text.contains("revoked"), "\(afterJWT.text)")
            // The journal names who did it.
            let audit = try await s.client.req(.get, "/depot/v1/audit?action=token.revoke", headers: bearer(s.admin))
            #expect(audit.text.contains("token:bootstrap-admin"), "\(audit.text)")
        }
    }

    /// A client's parallel connections on a cold cache wait for one password check instead of
    /// being refused by the limit on concurrent checks.
    @Test func parallelRequestsWithOnePasswordAllSucceed() async throws {
        try await withAuthRegistry { s in
            let add = UserAddRequest(name: "bob", password: "bob-password-1", grants: [GrantSpec(role: .reader)])
            #expect(
                try await s.client.req(.post, "/depot/v1/admin/users", headers: bearer(s.admin), body: try WireJSON.encode(add)).status.code
                    == 201)
            let codes = try await withThrowingTaskGroup(of: UInt.self) { group in
                for _ in 0..<24 {
                    group.addTask {
                        UInt(try await s.client.req(.get, "/v2/_catalog", headers: basic("bob", "bob-password-1")).status.code)
                    }
                }
                return try await group.reduce(into: [UInt]()) { $0.append($1) }
            }
            #expect(codes.allSatisfy { $0 == 200 }, "\(codes)")
        }
    }

    @Test func theAuditActorIsThePrincipalNotTheHeader() async throws {
        try await withAuthRegistry { s in
            let ci = try await s.token("ci", .robot, [GrantSpec(role: .maintainer, repositories: ["**"])])
            let blob = Array("c".utf8)
            let d = Digest.of(blob)
            var h = bearer(ci)
            h[HTTPField.Name("Depot-Actor")!] = "someone-else"
            _ = try await s.client.req(.post, "/v2/m/blobs/uploads/?digest=\(d)", headers: h, body: blob)
            let m = manifestJSON(config: (d, blob.count, MediaType.ociImageConfig), layers: [])
            h[.contentType] = MediaType.ociManifest
            #expect(try await s.client.req(.put, "/v2/m/manifests/v1", headers: h, body: m).status.code == 201)
            let audit = try await s.client.req(.get, "/depot/v1/audit", headers: bearer(ci))
            #expect(audit.text.contains("token:ci") && !audit.text.contains("someone-else"), "\(audit.text)")
        }
    }

    @Test func aServerWithAuthenticationOnAndNoCredentialRefusesToStart() async throws {
        let dir = TempDir()
        let store = try ChunkStore(root: dir.path, create: true)
        var config = ServerConfig.forTests()
        config.storageRoot = dir.path
        config.auth.enabled = true
        await #expect(throws: DepotError.self) {
            _ = try await DepotService.makeAuth(config: config, db: store.catalog, bootstrapSecret: nil)
        }
        await #expect(throws: DepotError.self) {
            _ = try await DepotService.makeAuth(config: config, db: store.catalog, bootstrapSecret: "short")
        }
        _ = try await DepotService.makeAuth(config: config, db: store.catalog, bootstrapSecret: bootstrapSecret)
        // Once a credential exists, later starts need no bootstrap token.
        _ = try await DepotService.makeAuth(config: config, db: store.catalog, bootstrapSecret: nil)
        // The signing key was created private.
        let attrs = try FileManager.default.attributesOfItem(atPath: dir.path + "/auth/token-signing-key.pem")
        #expect((attrs[.posixPermissions] as? Int) == 0o600)
    }
}

/// Chunk negotiation under authentication: a chunk's hash is not access to it.
@Suite(.serialized) struct ChunkVisibilityTests {
    /// Records for `chunks` as the chunk-upload body (codec 0: raw).
    func records(_ chunks: [[UInt8]]) throws -> [UInt8] {
        var out: [UInt8] = []
        let codec = ChunkRecordCodec()
        for c in chunks {
            let hash = c.withUnsafeBytes { SHA256.hash($0) }
            try c.withUnsafeBytes { try codec.append($0, hash: hash, to: &out) }
        }
        return out
    }

    @Test func storedChunksOfPrivateBlobsLookMissingAndCannotBeCommittedWithoutTheirBytes() async throws {
        try await withAuthRegistry { s in
            let chunks = (0..<3).map { i in randomBytes(70_000 + i, seed: UInt64(i + 11)) }
            let blob = chunks.flatMap { $0 }
            let d = Digest.of(blob)
            let hashes = chunks.map { c in c.withUnsafeBytes { SHA256.hash($0) } }
            let hashBody = hashes.flatMap(\.byteArray)
            var recipe: [UInt8] = []
            for (h, c) in zip(hashes, chunks) {
                recipe += h.byteArray
                withUnsafeBytes(of: UInt32(c.count).littleEndian) { recipe += $0 }
            }
            // The owner uploads and commits into a private repository.
            #expect(
                try await s.client.req(
                    .post, "/depot/v1/repositories/private/m/chunks", headers: bearer(s.admin), body: try records(chunks)
                ).status.code == 201)
            let own = try await s.client.req(
                .put, "/depot/v1/repositories/private/m/blobs/\(d)/recipe", headers: bearer(s.admin), body: recipe)
            #expect(own.status.code == 201, "\(own.text)")
            // Eve, a writer elsewhere, knows the hashes: they all look missing to her …
            let eve = try await s.token("eve", .robot, [GrantSpec(role: .writer, repositories: ["eve/**"])])
            let missing = try await s.client.req(.post, "/depot/v1/repositories/eve/x/chunks/missing", headers: bearer(eve), body: hashBody)
            #expect(missing.bytes == hashBody, "every stored chunk is reported missing to a caller who may not pull it")
            // … and a recipe naming them fails exactly as for chunks nobody stored.
            let forged = try await s.client.req(.put, "/depot/v1/repositories/eve/x/blobs/\(d)/recipe", headers: bearer(eve), body: recipe)
            #expect(forged.status.code == 400 && forged.errorCode == "CHUNK_UNKNOWN", "\(forged.text)")
            #expect(try await s.client.req(.get, "/v2/eve/x/blobs/\(d)", headers: bearer(eve)).status.code == 404)
            // With the bytes (she really has the model), the upload is her proof and the commit works.
            #expect(
                try await s.client.req(.post, "/depot/v1/repositories/eve/x/chunks", headers: bearer(eve), body: try records(chunks)).status
                    .code == 201)
            let proven = try await s.client.req(.post, "/depot/v1/repositories/eve/x/chunks/missing", headers: bearer(eve), body: hashBody)
            #expect(proven.bytes.isEmpty)
            #expect(
                try await s.client.req(.put, "/depot/v1/repositories/eve/x/blobs/\(d)/recipe", headers: bearer(eve), body: recipe).status
                    .code == 201)
            // A reader of private/** sees the chunks as stored.
            let reader = try await s.token("reader", .robot, [GrantSpec(role: .writer, repositories: ["private/**", "mine/**"])])
            let r = try await s.client.req(.post, "/depot/v1/repositories/mine/x/chunks/missing", headers: bearer(reader), body: hashBody)
            #expect(r.bytes.isEmpty)
        }
    }
}
