import DepotAPI
import DepotAuth
import DepotCore
import Foundation
import Testing

@Suite struct TokenIssuerTests {
    let now: Int64 = 1_800_000_000_000

    @Test func issuedTokensVerifyWithTheirAccessAndExpire() async throws {
        let issuer = try await TokenIssuer(privateKeyPEM: TokenIssuer.newKeyPEM())
        let who = Principal(kind: .token, name: "ci", tokenID: "tk_1")
        let access = [AccessEntry(type: "repository", name: "models/a", actions: ["pull", "push"])]
        let jwt = try await issuer.issue(to: who, access: access, ttlSeconds: 300, nowMs: now)
        #expect(await issuer.isOwn(jwt))
        let back = try await issuer.verify(jwt, nowMs: now + 1000)
        #expect(back.name == "ci" && back.kind == .token && back.tokenID == "tk_1" && back.access == access)
        await #expect(throws: TokenError.self) { try await issuer.verify(jwt, nowMs: now + 400_000) }
    }

    @Test func aTokenOfAnotherKeyOrTamperedIsRefused() async throws {
        let a = try await TokenIssuer(privateKeyPEM: TokenIssuer.newKeyPEM())
        let b = try await TokenIssuer(privateKeyPEM: TokenIssuer.newKeyPEM())
        let jwt = try await a.issue(to: .anonymous, access: [], ttlSeconds: 300, nowMs: now)
        await #expect(throws: TokenError.self) { try await b.verify(jwt, nowMs: now) }
        // Swap the payload for one granting push, keep the signature.
        var parts = jwt.split(separator: ".").map(String.init)
        let forged =
            #"{"iss":"depot","sub":"x","aud":"depot","exp":9999999999,"nbf":0,"iat":0,"jti":"j","kind":"user","access":[{"type":"repository","name":"m","actions":["*"]}]}"#
        parts[1] = TokenSecret.base64url(Array(forged.utf8))
        await #expect(throws: TokenError.self) { try await a.verify(parts.joined(separator: "."), nowMs: now) }
        // alg "none" with no signature.
        let none = TokenSecret.base64url(Array(#"{"alg":"none","typ":"JWT"}"#.utf8)) + "." + parts[1] + "."
        await #expect(throws: TokenError.self) { try await a.verify(none, nowMs: now) }
    }

    @Test func aTokenNeverOutlivesItsCredential() async throws {
        let issuer = try await TokenIssuer(privateKeyPEM: TokenIssuer.newKeyPEM())
        let who = Principal(kind: .token, name: "short", expiresAtMs: now + 10_000)
        let jwt = try await issuer.issue(to: who, access: [], ttlSeconds: 3600, nowMs: now)
        let p = try await issuer.verify(jwt, nowMs: now)
        #expect(p.expiresAtMs == now + 10_000)
    }
}

@Suite struct OIDCTests {
    let now: Int64 = 1_800_000_000_000

    /// A JWKS for a key made here, and a signer standing in for the external issuer.
    func issuerPair() async throws -> (TokenIssuer, String) {
        let pem = TokenIssuer.newKeyPEM()
        let signer = try await TokenIssuer(privateKeyPEM: pem, issuer: "https://ci.example.com", service: "depot")
        return (signer, try TestJWKS.jwks(privateKeyPEM: pem, kid: signer.kid))
    }

    @Test func claimsMapToGrantsAndBadTokensAreRefused() async throws {
        let (ci, jwks) = try await issuerPair()
        let rule = OIDCRule(
            claims: ["repository": "ml-team/*"], grants: [Grant(role: .writer, repositories: [try RepositoryGlob("models/**")])])
        let verifier = try await OIDCVerifier(providers: [
            OIDCProvider(issuer: "https://ci.example.com", audience: "depot", jwksJSON: jwks, rules: [rule])
        ])
        let good = try await TestJWKS.sign(
            ci,
            [
                "iss": "https://ci.example.com", "aud": "depot", "sub": "repo:ml-team/train", "repository": "ml-team/train",
                "exp": .int(now / 1000 + 600),
            ])
        let p = try #require(try await verifier.verify(good, nowMs: now))
        #expect(p.kind == .oidc && p.name == "repo:ml-team/train" && p.grants.count == 1)
        // A claim outside the rule: authenticated, no grants.
        let other = try await TestJWKS.sign(
            ci, ["iss": "https://ci.example.com", "aud": "depot", "sub": "x", "repository": "evil/repo", "exp": .int(now / 1000 + 600)])
        #expect(try await verifier.verify(other, nowMs: now)?.grants.isEmpty == true)
        let wrongAudience = try await TestJWKS.sign(
            ci, ["iss": "https://ci.example.com", "aud": "else", "sub": "x", "exp": .int(now / 1000 + 600)])
        await #expect(throws: TokenError.self) { try await verifier.verify(wrongAudience, nowMs: now) }
        let expired = try await TestJWKS.sign(
            ci, ["iss": "https://ci.example.com", "aud": "depot", "sub": "x", "exp": .int(now / 1000 - 3600)])
        await #expect(throws: TokenError.self) { try await verifier.verify(expired, nowMs: now) }
        let noExpiry = try await TestJWKS.sign(ci, ["iss": "https://ci.example.com", "aud": "depot", "sub": "x"])
        await #expect(throws: TokenError.self) { try await verifier.verify(noExpiry, nowMs: now) }
        // Same issuer name, signed by another key.
        let (impostor, _) = try await issuerPair()
        let forged = try await TestJWKS.sign(
            impostor,
            ["iss": "https://ci.example.com", "aud": "depot", "sub": "x", "repository": "ml-team/a", "exp": .int(now / 1000 + 600)])
        await #expect(throws: TokenError.self) { try await verifier.verify(forged, nowMs: now) }
        // Another issuer entirely: not this verifier's business.
        let foreign = try await TestJWKS.sign(ci, ["iss": "https://other", "aud": "depot", "sub": "x", "exp": .int(now / 1000 + 600)])
        #expect(try await verifier.verify(foreign, nowMs: now) == nil)
    }
}
