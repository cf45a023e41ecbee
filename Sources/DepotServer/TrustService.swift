import DepotAPI
import DepotCatalog
import DepotCore
import DepotDeploy
import DepotFormats
import DepotPipelines
import DepotRegistry
import DepotTrust
import Foundation
import Logging

/// Signatures on the server side: the registry signs every pipeline stage's output with its own
/// key (`pipeline`), verifies the signatures of a manifest against that key and the configured
/// trusted keys, and enforces the deploy policy before a rollout starts (docs/SECURITY.md).
public final class TrustService: DeployAdmission, Sendable {
    let registry: Registry
    /// Nil when `signing.enabled` is false: outputs are not signed (a policy naming `pipeline`
    /// then refuses them, which is the point of saying so in the configuration).
    public let signingKey: SigningKey?
    public let verifier: SignatureVerifier
    public let policy: DeployPolicy
    let logger: Logger

    public init(registry: Registry, signingKey: SigningKey?, trustedKeys: [TrustedKey], policy: DeployPolicy, logger: Logger) throws {
        self.registry = registry
        self.signingKey = signingKey
        self.policy = policy
        self.logger = logger
        verifier = SignatureVerifier(
            keys: (signingKey.map { [TrustedKey(name: SignatureFormat.pipelineSigner, signingKey: $0)] } ?? []) + trustedKeys)
        let known = Set(trustedKeys.map(\.name) + [SignatureFormat.pipelineSigner])
        for (environment, rule) in policy.environments {
            for name in rule.signedBy + (rule.pythonBackendSignedBy ?? []) where !known.contains(name) {
                throw DepotError.invalidArgument(
                    "deploy_policy.\(environment) names key '\(name)', which is neither `pipeline` nor under signing.trusted_keys")
            }
        }
    }

    /// Reads (or creates) the signing key and the trusted public keys of `config`.
    public static func make(config: ServerConfig, registry: Registry, logger: Logger) throws -> TrustService {
        var key: SigningKey?
        if config.signing.enabled {
            let path = config.signing.keyFile.isEmpty ? config.storageRoot + "/keys/signing-key.pem" : config.signing.keyFile
            key = try SigningKey.loadOrCreate(path: path)
        }
        let trusted = try config.signing.trustedKeys.sorted { $0.key < $1.key }.map { try TrustedKey.load(name: $0.key, path: $0.value) }
        return try TrustService(registry: registry, signingKey: key, trustedKeys: trusted, policy: config.deployPolicy, logger: logger)
    }

    /// A service that signs nothing and enforces no policy (tests, tools).
    public static func none(registry: Registry, logger: Logger) -> TrustService {
        // Cannot throw: no policy names a key.
        try! TrustService(registry: registry, signingKey: nil, trustedKeys: [], policy: DeployPolicy(), logger: logger)
    }

    static func now() -> Int64 { Int64(Date().timeIntervalSince1970 * 1000) }

    // MARK: signing

    /// Signs `output`, a pipeline job's output, with the registry's key: a signature artifact
    /// whose statement names the pipeline, stage, job, input and the runner holding the lease.
    /// Idempotent (a signature by this key already there is kept). Returns the signature
    /// artifact's digest, or nil when signing is off.
    @discardableResult
    public func signJobOutput(_ job: JobRecord, output: Digest) throws -> Digest? {
        guard let key = signingKey else { return nil }
        let repository = try RepositoryName(job.inputRepository)
        let claim = SignedStatement.PipelineClaim(
            pipeline: job.pipeline, stage: job.stage, job: job.id, input: try Digest(parsing: job.inputDigest),
            inputRepository: job.inputRepository, runner: job.runner)
        return try sign(repository, output, key: key, signer: SignatureFormat.pipelineSigner, pipeline: claim)
    }

    func sign(_ repository: RepositoryName, _ digest: Digest, key: SigningKey, signer: String, pipeline: SignedStatement.PipelineClaim?)
        throws -> Digest
    {
        let existing = try registry.referrers(repository, digest, artifactType: SignatureFormat.artifactType)
        if let mine = existing.first(where: { $0.annotations?[SignatureFormat.keyIDAnnotation] == key.keyID }) {
            // Already signed by this key (a retried completion, a memoized job): check it is real.
            if (try? verify(repository, signature: mine.digest, subject: digest)).map({ !$0.isEmpty }) ?? false { return mine.digest }
        }
        let manifest = try registry.manifest(repository, .digest(digest))
        let now = Self.now()
        let statement = SignedStatement(
            subject: .init(digest: digest, mediaType: manifest.mediaType, repository: repository.value), signer: signer,
            pipeline: pipeline, createdMs: now)
        let envelope = try WireJSON.encode(try key.sign(statement))
        try storeBlob(repository, envelope)
        try storeBlob(repository, SignatureFormat.emptyConfig)
        let bytes = try SignatureFormat.manifest(
            subject: OCIDescriptor(mediaType: manifest.mediaType, digest: digest, size: Int64(manifest.content.count)),
            envelope: envelope, keyID: key.keyID, signer: signer, createdMs: now)
        let (signature, _) = try registry.putManifest(
            repository, .digest(Digest.of(bytes)), contentType: MediaType.ociManifest, bytes: bytes, actor: Actor("depot"),
            reason: pipeline.map { "signature of job \($0.job) (\($0.pipeline)/\($0.stage))" } ?? "signature")
        return signature
    }

    func storeBlob(_ repository: RepositoryName, _ bytes: [UInt8]) throws {
        let digest = Digest.of(bytes)
        if try registry.blob(repository, digest) != nil { return }
        let writer = try registry.store.makeWriter()
        try writer.write(bytes)
        _ = try writer.finish(expecting: digest)
        try registry.link(repository, digest)
    }

    // MARK: verifying

    /// Signature artifacts listed for one manifest before the trusted ones are picked out.
    static let maxListedSignatures = 4096

    /// The signature artifacts of `digest` in `repository`, each verified (or why not). Anyone
    /// who can push to the repository can add signature artifacts, so those whose key id hint
    /// names a trusted key are looked at first: junk referrers cannot crowd out a real signature
    /// (at most `maxSignatureArtifacts` are verified).
    public func signatures(_ repository: RepositoryName, _ digest: Digest) throws -> (checks: [SignatureInfo], truncated: Bool) {
        let listed = try registry.referrers(
            repository, digest, artifactType: SignatureFormat.artifactType, limit: Self.maxListedSignatures)
        let trustedIDs = Set(verifier.keys.map(\.keyID))
        let hinted = listed.filter { trustedIDs.contains($0.annotations?[SignatureFormat.keyIDAnnotation] ?? "") }
        let others = listed.filter { !trustedIDs.contains($0.annotations?[SignatureFormat.keyIDAnnotation] ?? "") }
        let referrers = hinted + others
        var out: [SignatureInfo] = []
        for r in referrers.prefix(SignatureFormat.maxSignatureArtifacts) {
            var info = SignatureInfo(manifest: r.digest, verified: false)
            info.keyID = r.annotations?[SignatureFormat.keyIDAnnotation].map { String($0.prefix(128)) }
            do {
                let verified = try verify(repository, signature: r.digest, subject: digest)
                if let v = verified.first {
                    info.verified = true
                    info.key = v.key
                    info.keyID = v.keyID
                    info.signer = v.statement.signer
                    info.createdMs = v.statement.createdMs
                    if let p = v.statement.pipeline {
                        info.inputRepository = p.inputRepository
                        info.pipeline = p.pipeline
                        info.stage = p.stage
                        info.job = p.job
                        info.input = p.input
                        info.runner = p.runner
                    }
                }
            } catch {
                info.reason = String("\(error)".prefix(500))
            }
            out.append(info)
        }
        return (out, referrers.count > SignatureFormat.maxSignatureArtifacts || listed.count == Self.maxListedSignatures)
    }

    /// Names of the trusted keys with a valid signature over `digest` that count in `repository`.
    /// The pipeline key's signature counts only in the repository whose pipeline produced it: a
    /// writer copying a signed output (an intermediate stage's, or a lax pipeline's) with its
    /// signature into another repository does not make it deployable there.
    public func signers(_ repository: RepositoryName, _ digest: Digest) throws -> Set<String> {
        Set(
            try signatures(repository, digest).checks.compactMap { c -> String? in
                guard c.verified, let key = c.key else { return nil }
                if key == SignatureFormat.pipelineSigner, c.inputRepository != repository.value { return nil }
                return key
            })
    }

    /// Verifies one signature artifact over `subject`: its manifest must be a signature artifact
    /// whose subject is `subject`, its one layer an envelope within bounds.
    func verify(_ repository: RepositoryName, signature: Digest, subject: Digest) throws -> [VerifiedSignature] {
        try verify(repository, manifest: try registry.manifest(repository, .digest(signature)).content, subject: subject)
    }

    func verify(_ repository: RepositoryName, manifest: [UInt8], subject: Digest?) throws -> [VerifiedSignature] {
        let doc: OCIManifestDocument
        do { doc = try WireJSON.decode(OCIManifestDocument.self, from: manifest, what: "signature manifest") } catch let e as DocumentError
        {
            throw SignatureError.malformed(e.message)
        }
        guard doc.artifactType == SignatureFormat.artifactType, let signed = doc.subject?.digest, subject == nil || signed == subject,
            let layers = doc.layers, layers.count == 1, layers[0].mediaType == SignatureFormat.envelopeMediaType
        else {
            throw SignatureError.malformed(
                "not a signature artifact of \(subject?.description ?? "its subject") (one \(SignatureFormat.envelopeMediaType) layer)")
        }
        guard layers[0].size >= 0, layers[0].size <= Int64(SignatureFormat.maxEnvelopeBytes) else {
            throw SignatureError.malformed("the envelope is \(layers[0].size) bytes (at most \(SignatureFormat.maxEnvelopeBytes))")
        }
        guard try registry.blob(repository, layers[0].digest) != nil else {
            throw SignatureError.malformed("the envelope blob \(layers[0].digest) is not stored")
        }
        let reader = try registry.store.reader(layers[0].digest)
        var bytes: [UInt8] = []
        while let batch = try reader.next() {
            bytes += batch
            guard bytes.count <= SignatureFormat.maxEnvelopeBytes else { throw SignatureError.malformed("the envelope is too large") }
        }
        return try verifier.verify(envelope: bytes, subject: signed)
    }

    /// A pushed signature artifact whose key id hint names a trusted key must verify: otherwise
    /// anyone who can push could list junk under a trusted key's id and crowd the real signature
    /// out of the ones a verifier looks at. Signatures by other keys are stored as they come.
    func checkPushedSignature(_ repository: RepositoryName, _ manifest: [UInt8]) throws {
        struct Head: Decodable {
            var artifactType: String?
            var annotations: [String: String]?
        }
        guard let head = try? WireJSON.decode(Head.self, from: manifest, what: "manifest"),
            head.artifactType == SignatureFormat.artifactType,
            let hint = head.annotations?[SignatureFormat.keyIDAnnotation], verifier.keys.contains(where: { $0.keyID == hint })
        else { return }
        do { _ = try verify(repository, manifest: manifest, subject: nil) } catch {
            throw RegistryError(
                .manifestInvalid,
                "this signature artifact names trusted key \(hint.prefix(16)) but does not verify (\(error)); push it without that key id, or sign with the key"
            )
        }
    }

    // MARK: deploy policy

    /// Whether a bundle runs Python code on the nodes: its model's `config.pbtxt` names the
    /// Python backend. The configuration is read from the store and parsed here (not taken from
    /// the inspection metadata, which a budget can cut short); a bundle whose configuration cannot
    /// be read or parsed is treated as Python: the stricter rule applies.
    func isPythonBackend(_ manifest: ManifestRecord) -> Bool {
        guard let doc = try? WireJSON.decode(OCIManifestDocument.self, from: manifest.content, what: "manifest"),
            let model = try? Deployments.tritonModel(manifest)
        else { return true }
        let path = model + "/config.pbtxt"
        guard
            let layer = doc.layers?.first(where: { l in
                Registry.filePathKeys.lazy.compactMap { l.annotations?[$0] }.first == path
            }), layer.size >= 0, layer.size <= 1 << 20,
            let reader = try? registry.store.reader(layer.digest)
        else { return true }
        var bytes: [UInt8] = []
        do { while let batch = try reader.next() { bytes += batch } } catch { return true }
        guard let summary = try? FormatInspector.triton(config: String(decoding: bytes, as: UTF8.self), files: []) else { return true }
        if let backend = summary["backend"]?.string { return backend == "python" }
        return summary["platform"]?.string == nil
    }

    public func verdict(_ repository: RepositoryName, environment: String, manifest: ManifestRecord) throws -> DeployPolicy.Decision {
        guard policy.environments[environment] != nil else { return .allow(reason: "no deploy policy for \(environment)") }
        let signers = try signers(repository, manifest.digest)
        return policy.decide(environment: environment, signers: signers, pythonBackend: isPythonBackend(manifest))
    }

    public func admit(_ repository: RepositoryName, environment: String, manifest: ManifestRecord, actor: String) throws {
        guard case .deny(let reason) = try verdict(repository, environment: environment, manifest: manifest) else { return }
        let db = registry.store.catalog
        _ = try db.write { conn in
            try conn.appendAudit(
                at: Self.now(), actor: actor, action: "deploy.refused", repository: repository.value,
                digest: manifest.digest.description, tag: environment, details: ["reason": .string(String(reason.prefix(500)))])
        }
        logger.warning("rollout of \(repository)@\(manifest.digest) to \(environment) refused: \(reason)")
        throw RegistryError(.denied, "deploy policy: \(reason)")
    }
}
