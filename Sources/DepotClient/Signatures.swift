import DepotAPI
import DepotCore
import DepotTrust
import Foundation

/// One signature artifact of a manifest, checked on this side against keys the caller trusts:
/// the registry is not asked whether it is valid (a node or an auditor verifies with its own
/// copy of the public keys, so a compromised registry cannot vouch for itself).
public struct CheckedSignature: Sendable {
    /// The signature artifact's manifest digest.
    public var manifest: Digest
    public var verified: [VerifiedSignature]
    /// Why it verified nothing.
    public var failure: String?
}

extension RegistryConnection {
    /// Signs `subject` (a manifest of `repo`) with `key` and pushes the signature artifact as a
    /// referrer of it. Returns the signature artifact's digest.
    public func pushSignature(_ repo: String, subject: FetchedManifest, key: SigningKey, signer: String?, nowMs: Int64) async throws
        -> Digest
    {
        let statement = SignedStatement(
            subject: .init(digest: subject.digest, mediaType: subject.mediaType, repository: repo), signer: signer, createdMs: nowMs)
        let envelope = try WireJSON.encode(try key.sign(statement))
        for blob in [envelope, SignatureFormat.emptyConfig] {
            let digest = Digest.of(blob)
            if try await !blobExists(repo, digest) { try await uploadBlob(repo, digest, body: .bytes(blob)) }
        }
        let manifest = try SignatureFormat.manifest(
            subject: OCIDescriptor(mediaType: subject.mediaType, digest: subject.digest, size: Int64(subject.bytes.count)),
            envelope: envelope, keyID: key.keyID, signer: signer, createdMs: nowMs)
        return try await putManifest(repo, Digest.of(manifest).description, bytes: manifest, mediaType: MediaType.ociManifest)
    }

    /// The signature artifacts of `digest` in `repo` (the referrers API, filtered by artifact
    /// type), those whose key id hint names one of `preferring` first: anyone who can push there
    /// can add junk referrers, and they must not crowd out a real signature.
    public func signatureArtifacts(_ repo: String, _ digest: Digest, preferring keyIDs: Set<String> = []) async throws -> [OCIDescriptor] {
        let index = try await request(
            .GET,
            Routes[.referrers].path(name: repo, ["digest": digest.description]) + "?artifactType="
                + (SignatureFormat.artifactType.addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? ""),
            as: OCIReferrersIndex.self)
        // The filter is optional for a registry to honour: filter again here.
        let all = index.manifests.filter { $0.artifactType == SignatureFormat.artifactType }
        let hinted = all.filter { keyIDs.contains($0.annotations?[SignatureFormat.keyIDAnnotation] ?? "") }
        let others = all.filter { !keyIDs.contains($0.annotations?[SignatureFormat.keyIDAnnotation] ?? "") }
        return Array((hinted + others).prefix(SignatureFormat.maxSignatureArtifacts))
    }

    /// Every signature artifact of `digest`, verified here against `verifier`'s keys.
    public func checkSignatures(_ repo: String, _ digest: Digest, verifier: SignatureVerifier) async throws -> [CheckedSignature] {
        var out: [CheckedSignature] = []
        for descriptor in try await signatureArtifacts(repo, digest, preferring: Set(verifier.keys.map(\.keyID))) {
            do {
                let m = try await manifest(repo, descriptor.digest.description)
                let doc = try WireJSON.decode(OCIManifestDocument.self, from: m.bytes, what: "signature manifest")
                guard doc.artifactType == SignatureFormat.artifactType, doc.subject?.digest == digest, let layers = doc.layers,
                    layers.count == 1, layers[0].mediaType == SignatureFormat.envelopeMediaType,
                    (0...Int64(SignatureFormat.maxEnvelopeBytes)).contains(layers[0].size)
                else {
                    throw SignatureError.malformed("not a signature artifact of \(digest) (one \(SignatureFormat.envelopeMediaType) layer)")
                }
                let envelope = try await smallBlob(repo, layers[0].digest, limit: SignatureFormat.maxEnvelopeBytes)
                out.append(
                    CheckedSignature(manifest: descriptor.digest, verified: try verifier.verify(envelope: envelope, subject: digest)))
            } catch {
                out.append(CheckedSignature(manifest: descriptor.digest, verified: [], failure: "\(error)"))
            }
        }
        return out
    }
}
