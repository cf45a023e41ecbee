import DepotAPI
import DepotAuth
import Foundation
import JWTKit

/// Stands in for an external OIDC issuer: a JWKS for a key made in the test, and tokens with
/// any claims signed by it.
enum TestJWKS {
    struct AnyClaims: JWTPayload {
        var all: [String: JSONValue]
        init(_ all: [String: JSONValue]) { self.all = all }
        init(from decoder: any Decoder) throws { all = try decoder.singleValueContainer().decode([String: JSONValue].self) }
        func encode(to encoder: any Encoder) throws {
            var c = encoder.singleValueContainer()
            try c.encode(all)
        }
        func verify(using algorithm: some JWTAlgorithm) async throws {}
    }

    static func jwks(privateKeyPEM: String, kid: String) throws -> String {
        let key = try ES256PrivateKey(pem: privateKeyPEM)
        guard let (x, y) = key.publicKey.parameters else { throw TokenError("no key parameters") }
        return #"{"keys":[{"kty":"EC","crv":"P-256","alg":"ES256","use":"sig","kid":"\#(kid)","x":"\#(x)","y":"\#(y)"}]}"#
    }

    /// Signs `claims` with the issuer's key (its `kid` in the header, as real issuers do).
    static func sign(_ issuer: TokenIssuer, _ claims: [String: JSONValue]) async throws -> String {
        try await issuer.signForTests(AnyClaims(claims))
    }
}
