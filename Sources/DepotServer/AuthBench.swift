import DepotAPI
import DepotAuth
import DepotCatalog
import DepotCore
import Foundation

/// `depot bench auth`: what the gate adds to one request, measured in process (throughput on a
/// loaded two-core VM varies more between runs than authentication costs; see
/// Benchmarks/auth_overhead.py). Each case is a warm cache hit, as every request after a
/// client's first is: parse the header, look it up, decide, and run the handler under the
/// task-local principal. The route lookup every request makes anyway is measured beside it.
public enum AuthBench {
    public struct Result: Sendable, Codable {
        public var name: String
        public var nanosecondsPerRequest: Double
    }

    public static func run(iterations: Int, directory: String) async throws -> [Result] {
        let db = try Database(path: directory + "/catalog.db")
        var config = ServerConfig.AuthConfig()
        config.enabled = true
        config.signingKeyPEM = TokenIssuer.newKeyPEM()
        config.passwordIterations = 100_000
        let auth = try await AuthService(config: config, db: db)
        let admin = "bench-admin-" + String(repeating: "x", count: 40)
        try auth.bootstrap(secret: admin)
        let secret = TokenSecret.generate()
        let now = auth.now()
        let record = TokenRecord(
            id: TokenSecret.newID(), name: "reader", kind: .robot, secretHash: TokenSecret.hash(secret),
            grants: [GrantSpec(role: .reader, repositories: ["bench/**"])], labels: nil, deployments: nil, createdAt: now,
            createdBy: "bench",
            expiresAt: nil)
        _ = try db.write { try $0.insertToken(record) }
        try db.write {
            try $0.putUser(
                UserRecord(
                    name: "alice", passwordHash: try PasswordHash.make("bench-password-1", iterations: 100_000),
                    grants: [GrantSpec(role: .reader)], createdAt: now, createdBy: "bench"))
        }
        let robotPrincipal = try await auth.authenticate("Bearer \(secret)")
        let jwt = try await auth.issueToken(for: robotPrincipal, scopes: ["repository:bench/m:pull"]).token
        let path = "/v2/bench/m/manifests/latest"
        guard case .matched(let match) = Routes.route(method: "GET", path: path) else { throw DepotError.invalidArgument("no route") }
        let cases: [(String, String?)] = [
            ("robot token (Bearer dpt_…)", "Bearer \(secret)"), ("token from /token (ES256 JWT)", "Bearer \(jwt)"),
            ("user password (Basic)", "Basic " + Data("alice:bench-password-1".utf8).base64EncodedString()),
        ]
        var out: [Result] = []
        // The baseline every request pays with or without authentication.
        var t0 = ContinuousClock.now
        var matched = 0
        for _ in 0..<iterations {
            if case .matched = Routes.route(method: "GET", path: path) { matched += 1 }
        }
        out.append(Result(name: "route lookup (always paid)", nanosecondsPerRequest: per(t0, iterations)))
        precondition(matched == iterations)
        for (name, header) in cases {
            _ = try await auth.authenticate(header) // warm the cache
            t0 = ContinuousClock.now
            var allowed = 0
            for _ in 0..<iterations {
                let p = try await auth.authenticate(header)
                if Authorizer.decide(p, AccessRequest(match.route.action, repository: match.name), policy: auth.policy) == .allow {
                    allowed += await Caller.$principal.withValue(p) { Caller.principal == nil ? 0 : 1 }
                }
            }
            precondition(allowed == iterations, "\(name) was refused")
            out.append(Result(name: name, nanosecondsPerRequest: per(t0, iterations)))
        }
        return out
    }

    static func per(_ start: ContinuousClock.Instant, _ n: Int) -> Double {
        let d = ContinuousClock.now - start
        return (Double(d.components.seconds) * 1e9 + Double(d.components.attoseconds) / 1e9) / Double(n)
    }
}
