import DepotAPI
import DepotCore
import DepotRegistry
import DepotTestSupport
import HTTPTypes
import HummingbirdTesting
import Testing

/// The route table against a running server: every route has a reachable handler, and every
/// path answers a method it does not serve with 405 and the methods it does serve.
@Suite struct RouteTableServerTests {
    /// Parameter values of the right shape (the handlers may still find nothing there).
    static let params = [
        "digest": "sha256:" + String(repeating: "ab", count: 32), "reference": "v1", "uuid": "no-such-upload", "id": "1",
        "alias": "production", "environment": "production", "node": "node-1", "user": "nobody", "token": "no-such-token",
        "control": "promote",
    ]

    static func path(_ route: Route, _ params: [String: String] = params) -> String {
        route.path(name: route.isRepositoryScoped ? "team/m" : nil, params)
    }

    @Test func everyRouteReachesItsHandler() async throws {
        try await withRegistry { c, _, _ in
            // A blob and a manifest tagged v1 exist, so that HEAD routes (no body, hence no error
            // code) answer 200 when routed; deletes run last so that they remove nothing others need.
            let config = try await c.pushBlob("team/m", emptyConfig)
            try await c.pushManifest(
                "team/m", "v1", config: (config, emptyConfig.count, MediaType.ociEmpty), layers: [(config, emptyConfig.count)])
            var params = Self.params
            params["digest"] = config.description
            var failures: [String] = []
            for route in Routes.all.filter({ $0.method != .delete }) + Routes.all.filter({ $0.method == .delete }) {
                let method = try #require(HTTPRequest.Method(route.method.rawValue))
                let r = try await c.req(method, Self.path(route, params))
                // A handler may answer 404 for what is not there (JOB_UNKNOWN, BLOB_UPLOAD_UNKNOWN, …),
                // never the router's NOT_FOUND; and never 405 for its own method.
                let routerNotFound = r.status.code == 404 && (route.method == .head || r.errorCode == "NOT_FOUND")
                if r.status.code == 405 || routerNotFound || r.status.code >= 500 {
                    failures.append("\(route): \(r.status.code) \(r.errorCode ?? "")")
                }
            }
            #expect(failures.isEmpty, "\(failures)")
        }
    }

    @Test func aWrongMethodIs405WithAllow() async throws {
        try await withRegistry { c, _, _ in
            let patterns = Dictionary(grouping: Routes.all, by: \.pattern)
            for (pattern, routes) in patterns {
                let served = Set(routes.map(\.method))
                guard let wrong = HTTPVerb.allCases.first(where: { !served.contains($0) }) else { continue }
                let r = try await c.req(try #require(HTTPRequest.Method(wrong.rawValue)), Self.path(routes[0]))
                #expect(r.status.code == 405, "\(wrong.rawValue) \(pattern)")
                if wrong != .head { #expect(r.errorCode == "UNSUPPORTED", "\(wrong.rawValue) \(pattern)") }
                let allow = Set((r.header("Allow") ?? "").split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) })
                #expect(allow == Set(served.map(\.rawValue)), "\(wrong.rawValue) \(pattern): Allow \(allow)")
            }
        }
    }

    @Test func aPathNoRouteHasIs404NotFound() async throws {
        try await withRegistry { c, _, _ in
            for path in ["/", "/v3", "/depot/v1/nothing", "/v2/team/m/unknown/x"] {
                let r = try await c.req(.get, path)
                #expect(r.status.code == 404, "\(path)")
                #expect(r.errorCode == "NOT_FOUND", "\(path)")
            }
        }
    }
}
