import DepotCore

/// `GET /depot/v1/repositories/{name}/manifests/{reference}/signatures`: the signatures of a
/// manifest as this registry verifies them (against its pipeline key and `signing.trusted_keys`),
/// and what each environment's deploy policy says of it.
public struct SignatureListAnswer: Codable, Sendable, Equatable {
    public var digest: Digest
    public var signatures: [SignatureInfo]
    public var policies: [PolicyVerdict]
    /// Signature artifacts past the first `SignatureFormat.maxSignatureArtifacts` were not looked at.
    public var truncated: Bool?

    public init(digest: Digest, signatures: [SignatureInfo], policies: [PolicyVerdict], truncated: Bool? = nil) {
        self.digest = digest
        self.signatures = signatures
        self.policies = policies
        self.truncated = truncated
    }
}

/// One signature artifact (a referrer of the manifest) and whether it verified.
public struct SignatureInfo: Codable, Sendable, Equatable {
    /// The signature artifact's manifest digest.
    public var manifest: Digest
    /// The trusted key's name when it verified (`pipeline`, `release`, ...).
    public var key: String?
    public var keyID: String?
    public var verified: Bool
    /// Why it did not verify.
    public var reason: String?
    /// What the signer said of itself (a hint; policies name keys).
    public var signer: String?
    public var createdMs: Int64?
    /// Set on signatures the registry made for a pipeline stage's output.
    public var pipeline: String?
    public var stage: String?
    public var job: Int64?
    public var input: Digest?
    public var runner: String?

    public init(manifest: Digest, verified: Bool) {
        self.manifest = manifest
        self.verified = verified
    }

    enum CodingKeys: String, CodingKey {
        case manifest, key, verified, reason, signer, pipeline, stage, job, input, runner
        case keyID = "key_id"
        case createdMs = "created_ms"
    }
}

/// A deploy policy's verdict on a digest for one environment.
public struct PolicyVerdict: Codable, Sendable, Equatable {
    public var environment: String
    public var allowed: Bool
    public var reason: String

    public init(environment: String, allowed: Bool, reason: String) {
        self.environment = environment
        self.allowed = allowed
        self.reason = reason
    }
}

/// `GET /depot/v1/signing-key`: the registry's public signing key (what nodes and auditors verify
/// pipeline outputs with). Public by nature; an operator should still hand it to nodes out of
/// band (a node that fetched it from the registry it distrusts would verify nothing).
public struct SigningKeyAnswer: Codable, Sendable, Equatable {
    public var name: String
    public var keyID: String
    public var publicKeyPEM: String

    public init(name: String, keyID: String, publicKeyPEM: String) {
        self.name = name
        self.keyID = keyID
        self.publicKeyPEM = publicKeyPEM
    }

    enum CodingKeys: String, CodingKey {
        case name
        case keyID = "key_id"
        case publicKeyPEM = "public_key_pem"
    }
}
