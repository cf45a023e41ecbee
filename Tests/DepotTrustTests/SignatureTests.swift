import DepotAPI
import DepotCore
import DepotTrust
import Foundation
import Testing

@Suite struct SignatureTests {
    let subject = Digest.of(Array("a manifest".utf8))
    let other = Digest.of(Array("another manifest".utf8))

    func statement(_ digest: Digest, pipeline: Bool = true) -> SignedStatement {
        SignedStatement(
            subject: .init(digest: digest, mediaType: MediaType.ociManifest, repository: "models/x"), signer: "pipeline",
            pipeline: pipeline
                ? .init(pipeline: "p", stage: "convert", job: 7, input: other, inputRepository: "models/x", runner: "token:runner")
                : nil, createdMs: 1_700_000_000_000)
    }

    func bytes(_ e: SignatureEnvelope) throws -> [UInt8] { try WireJSON.encode(e) }

    @Test func aSignatureVerifiesUnderItsKeyAndCarriesTheStatement() throws {
        let key = SigningKey.generate()
        let envelope = try key.sign(statement(subject))
        let verifier = SignatureVerifier(keys: [TrustedKey(name: "pipeline", signingKey: key)])
        let verified = try verifier.verify(envelope: try bytes(envelope), subject: subject)
        #expect(verified.count == 1)
        #expect(verified[0].key == "pipeline")
        #expect(verified[0].statement == statement(subject))
        // A verifier configured with the public half only (what a node holds) agrees.
        let publicOnly = SignatureVerifier(keys: [try TrustedKey(name: "release", pem: key.publicKeyPEM)])
        #expect(try publicOnly.verify(envelope: try bytes(envelope), subject: subject)[0].key == "release")
    }

    @Test func aTamperedPayloadIsRefusedAsInvalid() throws {
        let key = SigningKey.generate()
        var envelope = try key.sign(statement(subject))
        // The payload now says it is about `other` (an attacker re-pointing a signature).
        let forged = try WireJSON.encode(statement(other))
        envelope.payload = Data(forged).base64EncodedString()
        let verifier = SignatureVerifier(keys: [TrustedKey(name: "pipeline", signingKey: key)])
        #expect(throws: SignatureError.invalid(key: "pipeline")) { try verifier.verify(envelope: try bytes(envelope), subject: other) }
    }

    @Test func aSignatureCopiedOntoAnotherManifestVerifiesNothing() throws {
        let key = SigningKey.generate()
        let envelope = try key.sign(statement(subject))
        let verifier = SignatureVerifier(keys: [TrustedKey(name: "pipeline", signingKey: key)])
        #expect(throws: SignatureError.wrongSubject(signed: subject, verifying: other)) {
            try verifier.verify(envelope: try bytes(envelope), subject: other)
        }
    }

    @Test func aKeyThatIsNotTrustedVerifiesNothing() throws {
        let mallory = SigningKey.generate()
        let envelope = try mallory.sign(statement(subject))
        let verifier = SignatureVerifier(keys: [TrustedKey(name: "pipeline", signingKey: SigningKey.generate())])
        #expect(throws: SignatureError.untrusted(keyIDs: [mallory.keyID])) {
            try verifier.verify(envelope: try bytes(envelope), subject: subject)
        }
        // Dropping the key id does not help: every trusted key is tried, and none matches.
        var anonymous = envelope
        anonymous.signatures[0].keyid = nil
        #expect(throws: SignatureError.invalid(key: "pipeline")) { try verifier.verify(envelope: try bytes(anonymous), subject: subject) }
        // Claiming the trusted key's id does not help either.
        var claimed = envelope
        claimed.signatures[0].keyid = verifier.keys[0].keyID
        #expect(throws: SignatureError.invalid(key: "pipeline")) { try verifier.verify(envelope: try bytes(claimed), subject: subject) }
    }

    @Test func theSignatureBindsThePayloadType() throws {
        let key = SigningKey.generate()
        var envelope = try key.sign(statement(subject))
        envelope.payloadType = "application/vnd.in-toto+json"
        let verifier = SignatureVerifier(keys: [TrustedKey(name: "pipeline", signingKey: key)])
        #expect(throws: SignatureError.self) { try verifier.verify(envelope: try bytes(envelope), subject: subject) }
        // PAE: the type's length is signed, so "ab"+"c" and "a"+"bc" differ.
        #expect(SignatureEnvelope.pae(type: "ab", body: Array("c".utf8)) != SignatureEnvelope.pae(type: "a", body: Array("bc".utf8)))
    }

    @Test func hostileEnvelopesAreMalformedNotCrashes() throws {
        let key = SigningKey.generate()
        let verifier = SignatureVerifier(keys: [TrustedKey(name: "pipeline", signingKey: key)])
        let good = try key.sign(statement(subject))
        var many = good
        many.signatures = Array(repeating: good.signatures[0], count: 9)
        var badBase64 = good
        badBase64.signatures[0].sig = "%%%"
        var badPayload = good
        badPayload.payload = "not base64!"
        let cases: [[UInt8]] = [
            [], Array("null".utf8), Array("[]".utf8), Array("{\"payloadType\": 1}".utf8),
            Array(repeating: UInt8(ascii: " "), count: SignatureFormat.maxEnvelopeBytes + 1),
            Array("{\"payloadType\":\"\(SignatureFormat.payloadType)\",\"payload\":\"\",\"signatures\":[]}".utf8),
            try bytes(many), try bytes(badBase64), try bytes(badPayload),
            Array(String(repeating: "[", count: 100_000).utf8),
        ]
        for c in cases {
            #expect(throws: SignatureError.self, "\(c.prefix(60))") { try verifier.verify(envelope: c, subject: subject) }
        }
        // A validly signed payload that is not a statement is refused after the signature check.
        let sig = try SigningKeyHelper.rawSign(key, body: Array("{\"x\":1}".utf8))
        #expect(throws: SignatureError.self) { try verifier.verify(envelope: try bytes(sig), subject: subject) }
    }

    @Test func keysLoadFromPEMAndRefuseGarbage() throws {
        let key = SigningKey.generate()
        let again = try SigningKey(pem: key.pem)
        #expect(again.keyID == key.keyID)
        #expect(try TrustedKey(name: "k", pem: key.publicKeyPEM).keyID == key.keyID)
        #expect(throws: SignatureError.self) { try SigningKey(pem: "-----BEGIN EC PRIVATE KEY-----\nAAAA\n-----END EC PRIVATE KEY-----\n") }
        #expect(throws: SignatureError.self) { try TrustedKey(name: "k", pem: "hello") }
        #expect(key.keyID.count == 64)
    }

    @Test func theSignatureManifestIsAnOCIReferrerOfTheSubject() throws {
        let key = SigningKey.generate()
        let envelope = try bytes(try key.sign(statement(subject)))
        let manifest = try SignatureFormat.manifest(
            subject: OCIDescriptor(mediaType: MediaType.ociManifest, digest: subject, size: 10), envelope: envelope, keyID: key.keyID,
            signer: "pipeline", createdMs: 0)
        let doc = try WireJSON.decode(OCIManifestDocument.self, from: manifest, what: "manifest")
        #expect(doc.artifactType == SignatureFormat.artifactType)
        #expect(doc.subject?.digest == subject)
        #expect(doc.layers?.first?.digest == Digest.of(envelope))
        #expect(doc.layers?.first?.mediaType == SignatureFormat.envelopeMediaType)
        #expect(doc.config?.digest == Digest.of(SignatureFormat.emptyConfig))
    }
}

/// Signs arbitrary bytes as a statement payload (what a buggy or hostile signer could produce).
enum SigningKeyHelper {
    static func rawSign(_ key: SigningKey, body: [UInt8]) throws -> SignatureEnvelope {
        try key.signRaw(body)
    }
}

@Suite struct DeployPolicyTests {
    let policy = DeployPolicy(environments: [
        "production": .init(signedBy: ["pipeline", "release"], pythonBackendSignedBy: ["pipeline"]),
        "staging": .init(signedBy: []),
    ])

    func allowed(_ d: DeployPolicy.Decision) -> Bool { if case .allow = d { true } else { false } }

    @Test func productionNeedsThePipelineOrAReleaseKey() {
        #expect(allowed(policy.decide(environment: "production", signers: ["pipeline"], pythonBackend: false)))
        #expect(allowed(policy.decide(environment: "production", signers: ["release"], pythonBackend: false)))
        #expect(!allowed(policy.decide(environment: "production", signers: [], pythonBackend: false)))
        #expect(!allowed(policy.decide(environment: "production", signers: ["someone"], pythonBackend: false)))
    }

    @Test func pythonBackendBundlesNeedThePipelineKey() {
        #expect(allowed(policy.decide(environment: "production", signers: ["pipeline"], pythonBackend: true)))
        let d = policy.decide(environment: "production", signers: ["release"], pythonBackend: true)
        guard case .deny(let reason) = d else {
            Issue.record("a release-signed Python bundle was allowed")
            return
        }
        #expect(reason.contains("the pipeline key"))
        #expect(reason.contains("signed only by release"))
    }

    @Test func environmentsWithoutARuleNeedNothing() {
        #expect(allowed(policy.decide(environment: "staging", signers: [], pythonBackend: true)))
        #expect(allowed(policy.decide(environment: "dev", signers: [], pythonBackend: true)))
    }
}
