import DepotAPI
import DepotCore
import Foundation

/// A DSSE envelope (https://github.com/secure-systems-lab/dsse): a payload, its type, and
/// signatures over PAE(type, payload).
public struct SignatureEnvelope: Codable, Sendable, Equatable {
    public var payloadType: String
    /// Base64 (standard alphabet) of the payload bytes.
    public var payload: String
    public var signatures: [Entry]

    public struct Entry: Codable, Sendable, Equatable {
        public var keyid: String?
        /// Base64 of the DER ECDSA signature.
        public var sig: String
        public init(keyid: String?, sig: String) {
            self.keyid = keyid
            self.sig = sig
        }
    }

    public init(payloadType: String, payload: [UInt8], signatures: [Entry]) {
        self.payloadType = payloadType
        self.payload = Data(payload).base64EncodedString()
        self.signatures = signatures
    }

    /// The bytes that are signed: "DSSEv1" SP LEN(type) SP type SP LEN(body) SP body, lengths
    /// in ASCII decimal. Binding the type stops a payload being reinterpreted as another kind.
    public static func pae(type: String, body: [UInt8]) -> [UInt8] {
        var out = Array("DSSEv1 \(type.utf8.count) \(type) \(body.count) ".utf8)
        out.append(contentsOf: body)
        return out
    }

    /// Parses an envelope read from a registry: bounded in size and in signatures, every field
    /// checked; throws `SignatureError.malformed` saying what is wrong.
    public static func parse(_ bytes: some Collection<UInt8>) throws -> SignatureEnvelope {
        guard bytes.count <= SignatureFormat.maxEnvelopeBytes else {
            throw SignatureError.malformed("the envelope is \(bytes.count) bytes (at most \(SignatureFormat.maxEnvelopeBytes))")
        }
        let e: SignatureEnvelope
        do { e = try WireJSON.decode(SignatureEnvelope.self, from: bytes, what: "signature envelope") } catch let error as DocumentError {
            throw SignatureError.malformed(error.message)
        }
        guard !e.signatures.isEmpty, e.signatures.count <= SignatureFormat.maxSignaturesPerEnvelope else {
            throw SignatureError.malformed(
                "the envelope holds \(e.signatures.count) signatures (1 to \(SignatureFormat.maxSignaturesPerEnvelope))")
        }
        return e
    }

    /// The decoded payload, or nil when it is not base64.
    public var payloadBytes: [UInt8]? { Data(base64Encoded: payload).map { Array($0) } }
}

/// Why a signature does not verify.
public enum SignatureError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The envelope or statement cannot be read.
    case malformed(String)
    /// No signature in the envelope is by a key the verifier trusts.
    case untrusted(keyIDs: [String])
    /// A trusted key's signature does not match the payload.
    case invalid(key: String)
    /// The statement is about another digest (a signature copied onto another manifest).
    case wrongSubject(signed: Digest, verifying: Digest)
    /// A key file or PEM could not be used.
    case badKey(String)

    public var description: String {
        switch self {
        case .malformed(let why): "malformed signature: \(why)"
        case .untrusted(let ids):
            "signed by a key that is not trusted here (key id \(ids.map { String($0.prefix(16)) }.joined(separator: ", ")))"
        case .invalid(let key): "the signature by key '\(key)' does not match its payload (tampered)"
        case .wrongSubject(let signed, let verifying):
            "the signature covers \(signed), not \(verifying): the manifest was replaced after it was signed"
        case .badKey(let why): why
        }
    }
}
