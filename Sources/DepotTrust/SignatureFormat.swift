import DepotAPI
import DepotCore
import Foundation

/// How a Depot signature is laid out in a registry. A signature is an OCI 1.1 artifact whose
/// `subject` is the signed manifest, so it travels with the artifact through any OCI copy
/// (skopeo, oras, `depot push`) and is listed by the referrers API:
///
///     manifest  artifactType  application/vnd.depot.signature.v1+json
///               config        the empty descriptor (application/vnd.oci.empty.v1+json, "{}")
///               layers[0]     application/vnd.dsse.envelope.v1+json: a DSSE envelope (below)
///               subject       the signed manifest's descriptor
///               annotations   dev.depot.signature.keyid, dev.depot.signature.signer (hints only)
///
/// The envelope (in-toto's Dead Simple Signing Envelope, as cosign attestations use it):
///
///     {"payloadType": "application/vnd.depot.statement.v1+json",
///      "payload": base64(statement JSON),
///      "signatures": [{"keyid": hex SHA-256 of the key's SubjectPublicKeyInfo DER,
///                      "sig": base64(ECDSA P-256 / SHA-256 signature, DER)}]}
///
/// The signature covers PAE(payloadType, payload) = "DSSEv1 <len> <type> <len> <payload>", so a
/// payload cannot be reinterpreted as another type. Annotations are not signed: a verifier trusts
/// only what the envelope's payload says, and only when the statement's subject digest is the
/// digest it is verifying (a signature copied onto another manifest verifies nothing).
public enum SignatureFormat {
    public static let artifactType = "application/vnd.depot.signature.v1+json"
    public static let envelopeMediaType = "application/vnd.dsse.envelope.v1+json"
    public static let payloadType = "application/vnd.depot.statement.v1+json"
    public static let statementType = "https://depot.dev/signature/v1"
    public static let keyIDAnnotation = "dev.depot.signature.keyid"
    public static let signerAnnotation = "dev.depot.signature.signer"
    /// The name the registry's own key goes by in deploy policies.
    public static let pipelineSigner = "pipeline"

    /// An envelope larger than this is not read (a real one is well under 4 KiB).
    public static let maxEnvelopeBytes = 64 << 10
    /// Signatures of one envelope that are looked at.
    public static let maxSignaturesPerEnvelope = 8
    /// Signature artifacts of one manifest that are looked at (a referrers list can be long;
    /// anyone who can push to the repository can add to it).
    public static let maxSignatureArtifacts = 64

    /// The empty config every signature artifact names (OCI 1.1 `application/vnd.oci.empty.v1+json`).
    public static let emptyConfig: [UInt8] = Array("{}".utf8)

    /// The manifest of a signature artifact over `subject`, the envelope being `envelope` bytes.
    public static func manifest(subject: OCIDescriptor, envelope: [UInt8], keyID: String, signer: String?, createdMs: Int64)
        throws -> [UInt8]
    {
        var annotations = [keyIDAnnotation: keyID, "org.opencontainers.image.created": Self.iso8601(ms: createdMs)]
        if let signer { annotations[signerAnnotation] = signer }
        let document = OCIManifestDocument(
            schemaVersion: 2, mediaType: MediaType.ociManifest, artifactType: artifactType,
            config: OCIDescriptor(mediaType: MediaType.ociEmpty, digest: Digest.of(emptyConfig), size: Int64(emptyConfig.count)),
            layers: [OCIDescriptor(mediaType: envelopeMediaType, digest: Digest.of(envelope), size: Int64(envelope.count))],
            subject: OCIDescriptor(mediaType: subject.mediaType, digest: subject.digest, size: subject.size),
            annotations: annotations)
        return try WireJSON.encode(document)
    }

    static func iso8601(ms: Int64) -> String {
        let f = ISO8601DateFormatter()
        f.formatOptions = [.withInternetDateTime]
        return f.string(from: Date(timeIntervalSince1970: Double(ms) / 1000))
    }
}
