import DepotAPI
import DepotAuth
import DepotCore
import DepotServer
import DepotTestSupport
import Foundation
import HTTPTypes
import HummingbirdTesting
import JWTKit
import Testing

/// Workload identity end to end: a server configured with an issuer, its JWKS in a file and a
/// claim rule, and a CI job's JWT signed by a key made here.
@Suite struct OIDCServerTests {
    struct Claims: JWTPayload {
        var all: [String: JSONValue]
        init(_ all: [String: JSONValue]) { self.all = all }
        init(from decoder: any Decoder) throws { all = try decoder.singleValueContainer().decode([String: JSONValue].self) }
        func encode(to encoder: any Encoder) throws {
            var c = encoder.singleValueContainer()
            try c.encode(all)
        }
        func verify(using algorithm: some JWTAlgorithm) async throws {}
    }

    @Test func aCIJobPushesWithItsOIDCTokenOnlyWhereItsClaimsAllow() async throws {
        let dir = TempDir("oidc")
        let pem = TokenIssuer.newKeyPEM()
        let ci = try await TokenIssuer(privateKeyPEM: pem, issuer: "https://ci.example.com", service: "depot")
        let key = try ES256PrivateKey(pem: pem)
        let (x, y) = try #require(key.publicKey.parameters)
        let jwks = #"{"keys":[{"kty":"EC","crv":"P-256","alg":"ES256","use":"sig","kid":"\#(ci.kid)","x":"\#(x)","y":"\#(y)"}]}"#
        try jwks.write(toFile: dir.path + "/jwks.json", atomically: true, encoding: .utf8)
        let rule = OIDCRule(
            claims: ["repository": "ml-team/*", "ref": "refs/heads/main"],
            grants: [Grant(role: .writer, repositories: [try RepositoryGlob("models/**")])])
        let configure: (inout ServerConfig) -> Void = {
            $0.auth.oidc = [
                ServerConfig.OIDCIssuerConfig(
                    issuer: "https://ci.example.com", audience: "depot", jwksFile: dir.path + "/jwks.json", rules: [rule])
            ]
        }
        try await withAuthRegistry(configure: configure) { s in
            let exp = JSONValue.int(Int64(Date().timeIntervalSince1970) + 600)
            func token(_ claims: [String: JSONValue]) async throws -> String { try await ci.signForTests(Claims(claims)) }
            let main = try await token([
                "iss": "https://ci.example.com", "aud": "depot", "sub": "repo:ml-team/train:ref:refs/heads/main",
                "repository": "ml-team/train", "ref": "refs/heads/main", "exp": exp,
            ])
            let blob = Array("weights".utf8)
            let d = Digest.of(blob)
            let ok = try await s.client.req(.post, "/v2/models/m/blobs/uploads/?digest=\(d)", headers: bearer(main), body: blob)
            #expect(ok.status.code == 201, "\(ok.text)")
            #expect(
                try await s.client.req(.post, "/v2/other/m/blobs/uploads/?digest=\(d)", headers: bearer(main), body: blob).status.code
                    == 403)
            let who = try await s.client.req(.get, "/depot/v1/whoami", headers: bearer(main))
            #expect(who.text.contains("oidc:repo:ml-team/train:ref:refs/heads/main"), "\(who.text)")
            // A branch the rule does not name: authenticated, allowed nothing.
            let branch = try await token([
                "iss": "https://ci.example.com", "aud": "depot", "sub": "x", "repository": "ml-team/train", "ref": "refs/heads/dev",
                "exp": exp,
            ])
            #expect(
                try await s.client.req(.post, "/v2/models/m/blobs/uploads/?digest=\(d)", headers: bearer(branch), body: blob).status.code
                    == 403)
            // Expired, wrong audience: 401.
            let old = try await token([
                "iss": "https://ci.example.com", "aud": "depot", "sub": "x", "repository": "ml-team/a", "ref": "refs/heads/main",
                "exp": .int(Int64(Date().timeIntervalSince1970) - 3600),
            ])
            #expect(try await s.client.req(.get, "/v2/", headers: bearer(old)).status.code == 401)
            let aud = try await token(["iss": "https://ci.example.com", "aud": "else", "sub": "x", "exp": exp])
            #expect(try await s.client.req(.get, "/v2/", headers: bearer(aud)).status.code == 401)
        }
    }
}
