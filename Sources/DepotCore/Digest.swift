/// A content digest in OCI form (`sha256:<64 lowercase hex>`): the public identity of a blob or manifest.
public struct Digest: Hashable, Sendable, Comparable, CustomStringConvertible, Codable {
    /// The raw 32-byte SHA-256 value.
    public let bytes: SHA256.Value

    public init(bytes: SHA256.Value) { self.bytes = bytes }

    /// Parses `sha256:<hex>`; throws `DepotError.digestInvalid` / `.unsupportedDigest` otherwise.
    public init(parsing text: String) throws {
        guard let colon = text.firstIndex(of: ":") else {
            throw DepotError.digestInvalid("'\(text.prefix(80))' is not of the form algorithm:hex")
        }
        let algorithm = text[..<colon]
        let hex = text[text.index(after: colon)...]
        // OCI grammar: algorithm-component ([a-z0-9]+) joined by [+._-]; encoded [a-zA-Z0-9=_-]+.
        guard !algorithm.isEmpty, algorithm.utf8.allSatisfy({ Digest.isAlgorithmByte($0) }),
            !hex.isEmpty, hex.utf8.allSatisfy({ Digest.isEncodedByte($0) })
        else {
            throw DepotError.digestInvalid("'\(text.prefix(80))' is not a valid digest")
        }
        guard algorithm == "sha256" else {
            throw DepotError.unsupportedDigest("digest algorithm '\(algorithm)' is not supported (only sha256)")
        }
        guard let value = SHA256.Value(hex: hex) else {
            throw DepotError.digestInvalid("sha256 digest must be 64 lowercase hex characters")
        }
        self.bytes = value
    }

    /// The 64-character lowercase hex encoding.
    public var hex: String { bytes.hex }
    public var description: String { "sha256:" + bytes.hex }

    public static func < (a: Digest, b: Digest) -> Bool { a.bytes < b.bytes }

    /// Digest of an in-memory byte sequence (for small things: manifests, test data).
    public static func of<Bytes: Sequence>(_ data: Bytes) -> Digest where Bytes.Element == UInt8 {
        var h = SHA256()
        let array = Array(data)
        array.withUnsafeBytes { h.update($0) }
        return Digest(bytes: h.finalize())
    }

    public init(from decoder: Decoder) throws {
        let text = try decoder.singleValueContainer().decode(String.self)
        try self.init(parsing: text)
    }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.singleValueContainer()
        try c.encode(description)
    }

    private static func isAlgorithmByte(_ b: UInt8) -> Bool {
        (b >= 0x61 && b <= 0x7a) || (b >= 0x30 && b <= 0x39) || b == 0x2b || b == 0x2e || b == 0x5f || b == 0x2d
    }

    private static func isEncodedByte(_ b: UInt8) -> Bool {
        (b >= 0x61 && b <= 0x7a) || (b >= 0x41 && b <= 0x5a) || (b >= 0x30 && b <= 0x39) || b == 0x3d || b == 0x5f || b == 0x2d
    }
}
