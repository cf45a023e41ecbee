import DepotAPI
import DepotAuth
import DepotCore
import DepotRegistry
import DepotServer
import DepotTestSupport
import Foundation
import HTTPTypes
import HummingbirdTesting
import Testing

/// The web UI over HTTP: escaping of hostile data, sessions, CSRF, authorization of pages and
/// forms, hostile form and query input. (The pages in a real browser: scripts/e2e/ui.sh.)
@Suite(.serialized) struct UITests {
    /// Pushes a manifest straight into the registry (no HTTP, no credentials needed).
    @discardableResult
    static func push(_ registry: Registry, _ repo: String, _ tag: String, annotations: [String: String] = [:], seed: UInt8 = 1) throws
        -> Digest
    {
        func blob(_ bytes: [UInt8]) throws -> Digest {
            let w = try registry.store.makeWriter()
            try w.write(bytes)
            let d = try w.finish().digest
            try registry.link(try RepositoryName(repo), d)
            return d
        }
        let layer = [UInt8](repeating: seed, count: 64)
        let config = try blob(emptyConfig)
        let l = try blob(layer)
        let bytes = manifestJSON(
            config: (config, emptyConfig.count, MediaType.ociEmpty), layers: [(l, layer.count)], annotations: annotations)
        return try registry.putManifest(try RepositoryName(repo), .tag(tag), contentType: MediaType.ociManifest, bytes: bytes).digest
    }

    static func cookie(_ r: TestResponse, _ name: String) -> String? {
        for value in r.headers[values: .setCookie] where value.hasPrefix(name + "=") {
            return String(value.dropFirst(name.count + 1).prefix { $0 != ";" })
        }
        return nil
    }

    static func form(_ fields: [String: String]) -> [UInt8] {
        var allowed = CharacterSet.alphanumerics
        allowed.insert(charactersIn: "-._~")
        return Array(
            fields.map { "\($0.key)=\($0.value.addingPercentEncoding(withAllowedCharacters: allowed)!)" }.joined(separator: "&").utf8)
    }

    static let formType: HTTPFields = [.contentType: "application/x-www-form-urlencoded"]

    /// Logs in through the form; returns the session cookie.
    static func login(_ s: AuthServer, _ user: String, _ password: String) async throws -> String {
        let page = try await s.client.req(.get, "/ui/login")
        let csrf = try #require(cookie(page, "depot_csrf"))
        var h = formType
        h[.cookie] = "depot_csrf=\(csrf)"
        let r = try await s.client.req(.post, "/ui/login", headers: h, body: form(["user": user, "password": password, "csrf": csrf]))
        #expect(r.status.code == 303, "login: \(r.status) \(r.text.prefix(300))")
        return try #require(cookie(r, "depot_session"))
    }

    static func with(_ h: HTTPFields, _ name: String, _ value: String) -> HTTPFields {
        var out = h
        out[HTTPField.Name(name)!] = value
        return out
    }

    static func session(_ cookie: String) -> HTTPFields { [.cookie: "depot_session=\(cookie)"] }

    /// The CSRF token of a page's forms.
    static func csrf(in page: TestResponse) throws -> String {
        let text = page.text
        let marker = "name=\"csrf\" value=\""
        let start = try #require(text.range(of: marker)).upperBound
        return String(text[start...].prefix { $0 != "\"" })
    }

    static func addUser(_ s: AuthServer, _ name: String, _ role: RoleName, _ password: String) async throws {
        let body = try WireJSON.encode(
            UserAddRequest(name: name, password: password, grants: [GrantSpec(role: role, repositories: ["**"])]))
        let r = try await s.client.req(.post, "/depot/v1/admin/users", headers: bearer(s.admin), body: body)
        #expect(r.status.code == 201 || r.status.code == 200, "user add: \(r.status) \(r.text)")
    }

    @Test func hostileDataIsEscapedAndPagesRunNoScript() async throws {
        try await withRegistry { c, registry, _ in
            let evil = "<script>alert(1)</script>\"><img src=x onerror=alert(2)>"
            let d = try Self.push(registry, "team/m", "v1", annotations: [Annotation.Lineage.run: evil, "x<y": "'&'"])
            for path in ["/ui/repositories/team/m/-/artifacts/\(d)", "/ui?q=" + "team", "/ui/repositories/team/m"] {
                let r = try await c.req(.get, path)
                #expect(r.status.code == 200, "\(path): \(r.status)")
                #expect(!r.text.contains("<script"), "\(path) carries a script")
                #expect(!r.text.contains("<img"), "\(path) carries injected markup")
                #expect(!r.text.contains("DepotServer.HTML"), "\(path) rendered a fragment as text")
                let csp = r.headers[HTTPField.Name("Content-Security-Policy")!] ?? ""
                #expect(csp.contains("default-src 'none'") && !csp.contains("script-src"), "\(path): CSP \(csp)")
                #expect(r.headers[.contentType] == "text/html; charset=utf-8")
            }
            let page = try await c.req(.get, "/ui/repositories/team/m/-/artifacts/\(d)")
            #expect(page.text.contains("&lt;script&gt;alert(1)&lt;/script&gt;&quot;&gt;&lt;img src=x onerror=alert(2)&gt;"))
            #expect(page.text.contains("x&lt;y") && page.text.contains("&#39;&amp;&#39;"))
        }
    }

    @Test func aSessionIsNotABearerTokenAndABearerTokenIsNotASession() async throws {
        try await withAuthRegistry { s in
            try await Self.addUser(s, "alice", .reader, "alice-password-1")
            let session = try await Self.login(s, "alice", "alice-password-1")
            let home = try await s.client.req(.get, "/ui", headers: Self.session(session))
            #expect(home.status.code == 200 && home.text.contains("user:alice"))
            // The session on the API: refused (its audience is the UI's).
            let api = try await s.client.req(.get, "/v2/_catalog", headers: bearer(session))
            #expect(api.status.code == 401)
            // A /token JWT or a robot token in the session cookie: not a session.
            let jwt = try await s.client.req(.get, "/token?scope=registry:catalog:*", headers: basic("alice", "alice-password-1"))
            let token = try #require(jwt.json["token"] as? String)
            // Tampered inside the signature: its last base64url character carries padding bits, so
            // replacing the last two could decode to the same signature (1 run in ~256 did).
            var tampered = Array(session)
            tampered[tampered.count - 5] = tampered[tampered.count - 5] == "A" ? "B" : "A"
            for fake in [token, s.admin, String(tampered)] {
                let r = try await s.client.req(.get, "/ui", headers: Self.session(String(fake)))
                #expect(r.status.code == 303, "\(fake.prefix(20)): \(r.status)")
                #expect(r.headers[.location]?.hasPrefix("/ui/login") == true)
                #expect(Self.cookie(r, "depot_session") == "", "a refused session cookie is cleared")
            }
            // Wrong password: the login page again, 401, no cookie.
            let page = try await s.client.req(.get, "/ui/login")
            let csrf = try #require(Self.cookie(page, "depot_csrf"))
            var h = Self.formType
            h[.cookie] = "depot_csrf=\(csrf)"
            let wrong = try await s.client.req(
                .post, "/ui/login", headers: h, body: Self.form(["user": "alice", "password": "nope-nope", "csrf": csrf]))
            #expect(wrong.status.code == 401 && Self.cookie(wrong, "depot_session") == nil)
            #expect(wrong.text.contains("user name or password is wrong"))
            // Removing the user ends the session.
            let gone = try await s.client.req(.delete, "/depot/v1/admin/users/alice", headers: bearer(s.admin))
            #expect(gone.status.code == 200 || gone.status.code == 204)
            let after = try await s.client.req(.get, "/ui", headers: Self.session(session))
            #expect(after.status.code == 303, "a removed user's session still worked: \(after.status)")
        }
    }

    @Test func loginOnlyRedirectsWithinTheUI() async throws {
        try await withAuthRegistry { s in
            try await Self.addUser(s, "bob", .reader, "bob-password-12")
            let page = try await s.client.req(.get, "/ui/login")
            let csrf = try #require(Self.cookie(page, "depot_csrf"))
            var h = Self.formType
            h[.cookie] = "depot_csrf=\(csrf)"
            for (next, expected) in [
                ("//evil.example/ui", "/ui"), ("https://evil.example/", "/ui"), ("/ui\\@evil", "/ui"), ("/ui/audit", "/ui/audit"),
            ] {
                let r = try await s.client.req(
                    .post, "/ui/login", headers: h,
                    body: Self.form(["user": "bob", "password": "bob-password-12", "csrf": csrf, "next": next]))
                #expect(r.headers[.location] == expected, "next=\(next) → \(r.headers[.location] ?? "")")
            }
            // An anonymous visit is sent to the login page with the page to come back to.
            let anon = try await s.client.req(.get, "/ui/repositories/team/m?x=1")
            #expect(anon.status.code == 303)
            #expect(anon.headers[.location] == "/ui/login?next=%2Fui%2Frepositories%2Fteam%2Fm%3Fx%3D1")
        }
    }

    @Test func rollbackNeedsTheFormTokenTheRightAndAConfirmation() async throws {
        try await withAuthRegistry { s in
            let repo = try RepositoryName("team/m")
            let v1 = try Self.push(s.registry, "team/m", "v1", seed: 1)
            let v2 = try Self.push(s.registry, "team/m", "v2", seed: 2)
            _ = try s.registry.setAlias(repo, "production", to: v1, actor: "test", reason: "first")
            _ = try s.registry.setAlias(repo, "production", to: v2, actor: "test", reason: "second")
            try await Self.addUser(s, "mia", .maintainer, "mia-password-123")
            try await Self.addUser(s, "rita", .reader, "rita-password-12")
            let path = "/ui/repositories/team/m/-/aliases/production"
            func current() throws -> Digest { try s.registry.manifest(repo, .tag("production")).digest }

            // A reader sees no form, and the gate refuses its post.
            let reader = try await Self.login(s, "rita", "rita-password-12")
            let readerPage = try await s.client.req(.get, path, headers: Self.session(reader))
            #expect(readerPage.status.code == 200 && !readerPage.text.contains("Roll back production"))
            var rh = Self.session(reader)
            rh[.contentType] = "application/x-www-form-urlencoded"
            let refused = try await s.client.req(
                .post, path + "/rollback", headers: rh,
                body: Self.form(["csrf": try Self.csrf(in: readerPage), "to": v1.description, "reason": "r", "confirm": "yes"]))
            #expect(refused.status.code == 403 && refused.text.contains("requested access to the resource is denied"))
            #expect(try current() == v2)

            let session = try await Self.login(s, "mia", "mia-password-123")
            let page = try await s.client.req(.get, path, headers: Self.session(session))
            #expect(page.text.contains("Roll back production"))
            let token = try Self.csrf(in: page)
            var h = Self.session(session)
            h[.contentType] = "application/x-www-form-urlencoded"
            // Without the token, with another session's token, without confirmation, without a
            // reason, from another site: refused, nothing moves.
            func with(_ h: HTTPFields, _ n: String, _ v: String) -> HTTPFields { Self.with(h, n, v) }
            let attempts: [([String: String], HTTPFields)] = [
                (["to": v1.description, "reason": "r", "confirm": "yes"], h),
                (["to": v1.description, "reason": "r", "confirm": "yes", "csrf": try Self.csrf(in: readerPage)], h),
                (["to": v1.description, "reason": "r", "csrf": token], h),
                (["to": v1.description, "reason": "  ", "confirm": "yes", "csrf": token], h),
                (["to": v1.description, "reason": "r", "confirm": "yes", "csrf": token], with(h, "Sec-Fetch-Site", "cross-site")),
                (["to": v1.description, "reason": "r", "confirm": "yes", "csrf": token], with(h, "Origin", "http://evil.example")),
            ]
            for (fields, headers) in attempts {
                let r = try await s.client.req(.post, path + "/rollback", headers: headers, body: Self.form(fields))
                #expect(r.status.code == 400 || r.status.code == 403, "\(fields.keys.sorted()): \(r.status)")
                #expect(try current() == v2)
            }
            let ok = try await s.client.req(
                .post, path + "/rollback", headers: h,
                body: Self.form(["to": v1.description, "reason": "bad eval", "confirm": "yes", "csrf": token]))
            #expect(ok.status.code == 303, "\(ok.status) \(ok.text.prefix(300))")
            #expect(try current() == v1)
            let history = try s.registry.aliasHistory(repo, "production")
            #expect(history.last?.actor == "user:mia" && history.last?.reason == "bad eval")
            let audit = try await s.client.req(.get, "/ui/audit?action=rollback", headers: Self.session(session))
            #expect(audit.text.contains("user:mia") && audit.text.contains("Chain intact"))
        }
    }

    @Test func hostileFormsAndQueriesGetAPageNotACrash() async throws {
        try await withRegistry { c, registry, _ in
            try Self.push(registry, "team/m", "v1")
            let page = try await c.req(.get, "/ui/repositories/team/m/-/aliases/v1")
            let csrf = try #require(Self.cookie(page, "depot_csrf"))
            var h = Self.formType
            h[.cookie] = "depot_csrf=\(csrf)"
            let path = "/ui/repositories/team/m/-/aliases/v1/rollback"
            let huge = Array("csrf=\(csrf)&reason=".utf8) + [UInt8](repeating: 0x61, count: 70_000)
            for (body, headers, expected) in [
                (huge, h, 413), (Array("csrf=\(csrf)&reason=%ZZ".utf8), h, 400),
                (Array("csrf=\(csrf)".utf8), [HTTPField.Name.cookie: "depot_csrf=\(csrf)", .contentType: "application/json"], 400),
                (Array("csrf=\(csrf)&confirm=yes&reason=x".utf8), [HTTPField.Name.contentType: "application/x-www-form-urlencoded"], 403),
            ] as [([UInt8], HTTPFields, Int)] {
                let r = try await c.req(.post, path, headers: headers, body: body)
                #expect(r.status.code == expected, "\(r.status) \(r.text.prefix(200))")
                #expect(r.headers[.contentType] == "text/html; charset=utf-8")
            }
            for query in [
                "/ui?q=" + String(repeating: "a", count: 3000), "/ui?q=colour:red", "/ui?q=%22unterminated",
                "/ui/repositories/team/m/-/aliases/v1?at=yesterday", "/ui/audit?since=2026-99-99T00:00", "/ui/jobs/99999999999999999999",
                "/ui/repositories/team/m/-/artifacts/sha256:zz", "/ui/repositories/NOT_VALID/-/aliases/x",
                "/ui/repositories/team/m/-/deployments/prod/explode",
            ] {
                let r = try await c.req(query.hasSuffix("explode") ? .post : .get, query)
                #expect(r.status.code >= 400 && r.status.code < 500 || r.status.code == 200, "\(query): \(r.status)")
                #expect(r.status.code != 500, "\(query)")
            }
            // The page still answers afterwards.
            #expect(try await c.req(.get, "/ui").status.code == 200)
        }
    }

    @Test func aPasswordChangeEndsTheSessionsOpenedWithTheOldOne() async throws {
        try await withAuthRegistry { s in
            try await Self.addUser(s, "eve", .reader, "eve-password-old")
            let session = try await Self.login(s, "eve", "eve-password-old")
            #expect(try await s.client.req(.get, "/ui", headers: Self.session(session)).status.code == 200)
            // An admin resets the password (the same call adds or replaces a user).
            try await Self.addUser(s, "eve", .reader, "eve-password-new")
            let after = try await s.client.req(.get, "/ui", headers: Self.session(session))
            #expect(after.status.code == 303, "a session opened with the old password still worked: \(after.status)")
            let fresh = try await Self.login(s, "eve", "eve-password-new")
            #expect(try await s.client.req(.get, "/ui", headers: Self.session(fresh)).status.code == 200)
        }
    }

    /// Search pages hold only what the viewer may read, and neither the rows nor the "Older" link
    /// tell anything about matches in other repositories.
    @Test func searchSaysNothingAboutRepositoriesTheViewerCannotRead() async throws {
        try await withAuthRegistry { s in
            for i in 0..<3 {
                try Self.push(s.registry, "mine/m", "v\(i)", annotations: [Annotation.Lineage.dataset: "acme"], seed: UInt8(i))
            }
            for i in 0..<60 {
                try Self.push(s.registry, "secret/m", "v\(i)", annotations: [Annotation.Lineage.dataset: "acme"], seed: UInt8(100 + i))
            }
            let reader = try await s.token("mine-reader", .robot, [GrantSpec(role: .reader, repositories: ["mine/**"])])
            let r = try await s.client.req(.get, "/ui?q=dataset:acme", headers: bearer(reader))
            #expect(r.status.code == 200)
            #expect(r.text.components(separatedBy: "/ui/repositories/mine/m/-/artifacts/").count - 1 == 3, "the three readable matches")
            #expect(!r.text.contains("secret/m") && !r.text.contains("before="), "hidden matches leaked: \(r.text.prefix(2000))")
            let admin = try await s.client.req(.get, "/ui?q=dataset:acme", headers: bearer(s.admin))
            #expect(admin.text.contains("secret/m") && admin.text.contains("before="), "an admin sees them all, with a next page")
        }
    }

    /// An ancestor is named by what the child's pusher declared: a page shows it (and its own
    /// lineage) only when the viewer may read both that repository and the child's, and links
    /// it only when the manifest is really there.
    @Test func declaredAncestorsInOtherRepositoriesAreNotAnOracle() async throws {
        try await withAuthRegistry { s in
            let base = try Self.push(s.registry, "library/base", "v1", seed: 1)
            let secret = try Self.push(
                s.registry, "private/ft", "v1",
                annotations: [
                    Annotation.Lineage.from: "library/base@\(base)", Annotation.Lineage.relation: "fine-tuned-from",
                    Annotation.Lineage.run: "secret-run-7",
                ], seed: 2)
            // The attacker names the private digest as a parent in its own repository.
            let m = try Self.push(
                s.registry, "attacker/m", "v1",
                annotations: [Annotation.Lineage.from: "attacker/m@\(secret)", Annotation.Lineage.relation: "derived-from"], seed: 3)
            let attacker = try await s.token("attacker", .robot, [GrantSpec(role: .writer, repositories: ["attacker/**", "library/**"])])
            let page = try await s.client.req(.get, "/ui/repositories/attacker/m/-/artifacts/\(m)", headers: bearer(attacker))
            #expect(page.status.code == 200)
            #expect(!page.text.contains("secret-run-7"), "the private edge's run leaked")
            #expect(
                !page.text.contains("href=\"/ui/repositories/attacker/m/-/artifacts/\(secret)\""), "a digest not in attacker/m was linked")
            #expect(page.text.contains("(not here)"), "the declared parent is shown as not present")
        }
    }
}
