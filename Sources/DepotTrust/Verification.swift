import DepotCore
import Foundation

/// A signature that verified: by which trusted key, over which statement.
public struct VerifiedSignature: Sendable, Equatable {
    /// The trusted key's name in the verifier's configuration (what policies name).
    public var key: String
    public var keyID: String
    public var statement: SignedStatement
}

/// Checks envelopes against a set of trusted public keys.
public struct SignatureVerifier: Sendable {
    public let keys: [TrustedKey]

    public init(keys: [TrustedKey]) { self.keys = keys }

    /// The payload a statement may have (a real one is a few hundred bytes).
    static let maxPayloadBytes = 16 << 10

    /// Every trusted key's valid signature in `envelope` over a statement about `subject`.
    /// Throws the most telling reason when there is none: a tampered payload under a trusted
    /// key, a statement about another digest, or no trusted key at all. The signature is checked
    /// before the payload is parsed, so an untrusted payload is never interpreted.
    public func verify(envelope bytes: some Collection<UInt8>, subject: Digest) throws -> [VerifiedSignature] {
        let envelope = try SignatureEnvelope.parse(bytes)
        guard envelope.payloadType == SignatureFormat.payloadType else {
            throw SignatureError.malformed("payloadType is '\(envelope.payloadType.prefix(100))', not \(SignatureFormat.payloadType)")
        }
        guard envelope.payload.utf8.count <= Self.maxPayloadBytes * 4 / 3 + 4, let payload = envelope.payloadBytes else {
            throw SignatureError.malformed("the payload is not base64 of at most \(Self.maxPayloadBytes) bytes")
        }
        let pae = SignatureEnvelope.pae(type: envelope.payloadType, body: payload)
        var verified: [VerifiedSignature] = []
        var failure: SignatureError?
        for entry in envelope.signatures {
            guard entry.sig.utf8.count <= 256, let der = Data(base64Encoded: entry.sig).map(Array.init) else {
                failure = failure ?? .malformed("a signature is not base64 DER")
                continue
            }
            let candidates = keys.filter { entry.keyid == nil || $0.keyID == entry.keyid }
            guard !candidates.isEmpty else { continue }
            guard let key = candidates.first(where: { $0.isValid(der, over: pae) }) else {
                failure = .invalid(key: candidates[0].name)
                continue
            }
            let statement: SignedStatement
            do { statement = try JSONDecoder().decode(SignedStatement.self, from: Data(payload)) } catch {
                throw SignatureError.malformed("the signed statement does not parse: \(error)")
            }
            guard statement.type == SignatureFormat.statementType else {
                throw SignatureError.malformed("the signed statement's _type is '\(statement.type.prefix(100))'")
            }
            guard statement.subject.digest == subject else {
                throw SignatureError.wrongSubject(signed: statement.subject.digest, verifying: subject)
            }
            if !verified.contains(where: { $0.keyID == key.keyID }) {
                verified.append(VerifiedSignature(key: key.name, keyID: key.keyID, statement: statement))
            }
        }
        if verified.isEmpty {
            throw failure ?? .untrusted(keyIDs: envelope.signatures.compactMap(\.keyid))
        }
        return verified
    }
}
