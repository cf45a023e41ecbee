import Crypto
import DepotCore
import Foundation

/// A private ECDSA P-256 key that signs statements (the registry's pipeline key, or a user's
/// release key). PEM in, PKCS#8 or SEC1 ("EC PRIVATE KEY", which `openssl ecparam -genkey` writes).
public struct SigningKey: Sendable {
    let key: P256.Signing.PrivateKey
    /// Hex SHA-256 of the public key's SubjectPublicKeyInfo DER.
    public let keyID: String

    public init(pem: String) throws {
        do { key = try P256.Signing.PrivateKey(pemRepresentation: pem) } catch {
            throw SignatureError.badKey("not an ECDSA P-256 private key in PEM (\(error)); create one with `depot key generate`")
        }
        keyID = TrustedKey.keyID(of: key.publicKey)
    }

    public static func generate() -> SigningKey { try! SigningKey(pem: P256.Signing.PrivateKey().pemRepresentation) }

    public var pem: String { key.pemRepresentation }
    public var publicKeyPEM: String { key.publicKey.pemRepresentation }

    /// Reads the key at `path`, creating it (mode 0600, directory 0700) when it does not exist.
    public static func loadOrCreate(path: String) throws -> SigningKey {
        let fm = FileManager.default
        if fm.fileExists(atPath: path) {
            let text: String
            do { text = try String(contentsOfFile: path, encoding: .utf8) } catch {
                throw SignatureError.badKey("cannot read signing key \(path): \(error.localizedDescription)")
            }
            return try SigningKey(pem: text)
        }
        let dir = (path as NSString).deletingLastPathComponent
        if !dir.isEmpty { try fm.createDirectory(atPath: dir, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700]) }
        let key = generate()
        // Created 0600 by open itself: never readable by others, not even for a moment.
        try PrivateFile.create(path, Array(key.pem.utf8))
        return key
    }

    public static func load(path: String) throws -> SigningKey {
        let text: String
        do { text = try String(contentsOfFile: path, encoding: .utf8) } catch {
            throw SignatureError.badKey("cannot read signing key \(path): \(error.localizedDescription)")
        }
        return try SigningKey(pem: text)
    }

    /// An envelope over `statement`, signed by this key.
    public func sign(_ statement: SignedStatement) throws -> SignatureEnvelope {
        let body = try StatementCoding.encode(statement)
        let pae = SignatureEnvelope.pae(type: SignatureFormat.payloadType, body: body)
        let signature = try key.signature(for: pae)
        return SignatureEnvelope(
            payloadType: SignatureFormat.payloadType, payload: body,
            signatures: [.init(keyid: keyID, sig: signature.derRepresentation.base64EncodedString())])
    }
}

/// A public key a verifier trusts, under the name policies use (`pipeline`, `release`, ...).
public struct TrustedKey: Sendable {
    public let name: String
    let key: P256.Signing.PublicKey
    public let keyID: String

    public init(name: String, pem: String) throws {
        self.name = name
        do { key = try P256.Signing.PublicKey(pemRepresentation: pem) } catch {
            // A private key is accepted too (its public half is what is trusted).
            guard let privateKey = try? P256.Signing.PrivateKey(pemRepresentation: pem) else {
                throw SignatureError.badKey("key '\(name)' is not an ECDSA P-256 public key in PEM (\(error))")
            }
            key = privateKey.publicKey
        }
        keyID = Self.keyID(of: key)
    }

    public init(name: String, signingKey: SigningKey) {
        self.name = name
        key = signingKey.key.publicKey
        keyID = signingKey.keyID
    }

    public static func load(name: String, path: String) throws -> TrustedKey {
        let text: String
        do { text = try String(contentsOfFile: path, encoding: .utf8) } catch {
            throw SignatureError.badKey("cannot read public key '\(name)' from \(path): \(error.localizedDescription)")
        }
        return try TrustedKey(name: name, pem: text)
    }

    public var pem: String { key.pemRepresentation }

    static func keyID(of key: P256.Signing.PublicKey) -> String {
        Array(key.derRepresentation).withUnsafeBytes { DepotCore.SHA256.hash($0) }.hex
    }

    func isValid(_ der: [UInt8], over message: [UInt8]) -> Bool {
        guard let signature = try? P256.Signing.ECDSASignature(derRepresentation: der) else { return false }
        return key.isValidSignature(signature, for: message)
    }
}

/// The statement's JSON: sorted keys, so the same statement is the same bytes.
enum StatementCoding {
    static func encode(_ s: SignedStatement) throws -> [UInt8] {
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return Array(try e.encode(s))
    }
}

extension SigningKey {
    /// Signs `body` as a statement payload without checking it is one (tests of verifiers).
    public func signRaw(_ body: [UInt8]) throws -> SignatureEnvelope {
        let signature = try key.signature(for: SignatureEnvelope.pae(type: SignatureFormat.payloadType, body: body))
        return SignatureEnvelope(
            payloadType: SignatureFormat.payloadType, payload: body,
            signatures: [.init(keyid: keyID, sig: signature.derRepresentation.base64EncodedString())])
    }
}
