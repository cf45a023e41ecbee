import DepotAPI
import Testing

@Suite struct RouteTableTests {
    func matched(_ method: String, _ path: String) -> RouteMatch? {
        if case .matched(let m) = Routes.route(method: method, path: path) { return m }
        return nil
    }

    @Test func everyRouteMatchesThePathItBuilds() throws {
        // Each route's own path, with a name of several segments and plausible parameters,
        // routes back to that route with the same parameters: no route shadows another.
        for r in Routes.all {
            var params: [String: String] = [:]
            for p in r.pattern.split(separator: "/") where p.hasPrefix("{") && p != "{name}" {
                let key = String(p.dropFirst().dropLast())
                params[key] = key == "id" ? "42" : key == "digest" ? "sha256:" + String(repeating: "a", count: 64) : "x-\(key)"
            }
            let path = r.path(name: "team/blobs/models", params)
            let m = try #require(matched(r.method.rawValue, path), "\(r) did not match \(path)")
            #expect(m.route.id == r.id, "\(path) routed to \(m.route) instead of \(r)")
            #expect(m.name == (r.isRepositoryScoped ? "team/blobs/models" : nil))
            for (k, v) in params { #expect(m[k] == v) }
        }
    }

    @Test func namesThatLookLikeRouteSegmentsStillRoute() throws {
        let m = try #require(matched("GET", "/v2/a/manifests/b/manifests/v1"))
        #expect(m.route.id == .manifestGet && m.name == "a/manifests/b" && m["reference"] == "v1")
        let u = try #require(matched("POST", "/v2/a/blobs/uploads/"))
        #expect(u.route.id == .uploadStart && u.name == "a")
        let t = try #require(matched("GET", "/v2/tags/list/tags/list"))
        #expect(t.route.id == .tags && t.name == "tags/list")
        let d = try #require(matched("GET", "/depot/v1/repositories/m/aliases/deployments/prod"))
        #expect(d.route.id == .deployment && d.name == "m/aliases" && d["environment"] == "prod")
        let f = try #require(matched("POST", "/depot/v1/repositories/a/blobs/sha256:ab/chunks"))
        #expect(f.route.id == .fetchChunks && f.name == "a")
        #expect(try #require(matched("GET", "/v2/")).route.id == .base)
    }

    @Test func aKnownPathWithAnotherMethodIs405AndUnknownPathsAre404() {
        guard case .methodNotAllowed(let allowed) = Routes.route(method: "POST", path: "/v2/a/manifests/v1") else {
            Issue.record("expected 405")
            return
        }
        #expect(Set(allowed) == [.get, .head, .put, .delete])
        for path in [
            "/", "", "/v2/a", "/v2//manifests/x", "/v2/a/manifests/", "/depot/v1/jobs/1/nope", "/v3/a/tags/list", "v2/a/tags/list",
        ] {
            if case .matched(let m) = Routes.route(method: "GET", path: path) { Issue.record("\(path) matched \(m.route)") }
        }
    }

    @Test func everyRouteHasAnActionAndIdsAreUniquePerMethod() {
        var seen = Set<String>()
        for r in Routes.all {
            #expect(seen.insert("\(r.method.rawValue) \(r.pattern)").inserted, "\(r) is listed twice")
        }
        // Every id is routed (the server's exhaustive switch covers the rest).
        #expect(Set(Routes.all.map(\.id)) == Set(RouteID.allCases))
        // Writes never run as anonymous.
        for r in Routes.all where r.method != .get && r.method != .head { #expect(r.action != .anonymous, "\(r)") }
    }
}

@Suite struct LooseMatchTests {
    @Test func aMalformedDigestStillReachesItsHandler() {
        // No route matches strictly, so the blob route takes it and its handler answers DIGEST_INVALID.
        guard case .matched(let m) = Routes.route(method: "GET", path: "/v2/a/blobs/not-a-digest") else {
            Issue.record("expected a match")
            return
        }
        #expect(m.route.id == .blobGet && m["digest"] == "not-a-digest")
    }
}
