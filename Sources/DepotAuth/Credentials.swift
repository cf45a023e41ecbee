import COpenSSL
import DepotCore
import Foundation

/// A credential as a request presents it (the `Authorization` header).
public enum Credential: Sendable, Equatable {
    case none
    /// `Basic base64(user:password)`: a user's password, or any name with a token secret.
    case basic(user: String, password: String)
    /// `Bearer …`: a token secret (`dpt_…`), a JWT from `/token`, or an OIDC JWT.
    case bearer(String)

    /// Longest header value read; longer ones are refused, not parsed (OIDC JWTs are a few KiB).
    public static let maxHeaderBytes = 8192

    /// Parses the header; throws for a malformed value (a client bug worth a clear 401, not
    /// a silent anonymous request).
    public static func parse(_ header: String?) throws -> Credential {
        guard let header else { return .none }
        // On the bytes: this runs on every request, and Foundation's trimming costs more than
        // the rest of authentication together (profiled).
        let u = header.utf8
        guard u.count <= maxHeaderBytes else {
            throw DepotError.invalidArgument("Authorization header is longer than \(maxHeaderBytes) bytes")
        }
        var start = u.startIndex
        var end = u.endIndex
        while start < end, u[start] == 0x20 || u[start] == 0x09 { start = u.index(after: start) }
        while end > start, u[u.index(before: end)] == 0x20 || u[u.index(before: end)] == 0x09 { end = u.index(before: end) }
        guard let space = u[start..<end].firstIndex(of: 0x20) else {
            throw DepotError.invalidArgument("Authorization header must be 'Basic …' or 'Bearer …'")
        }
        var valueStart = space
        while valueStart < end, u[valueStart] == 0x20 { valueStart = u.index(after: valueStart) }
        guard valueStart < end else { throw DepotError.invalidArgument("Authorization header has no credentials") }
        let scheme = u[start..<space]
        let value = u[valueStart..<end]
        if Self.equalsIgnoringCase(scheme, "bearer") {
            guard value.allSatisfy({ $0 > 0x20 && $0 < 0x7F }) else {
                throw DepotError.invalidArgument("bearer token contains characters a token never has")
            }
            return .bearer(String(decoding: value, as: UTF8.self))
        }
        if Self.equalsIgnoringCase(scheme, "basic") {
            guard let data = Data(base64Encoded: String(decoding: value, as: UTF8.self)), let text = String(data: data, encoding: .utf8),
                let colon = text.firstIndex(of: ":")
            else {
                throw DepotError.invalidArgument("Basic credentials must be base64 of 'user:password'")
            }
            return .basic(user: String(text[..<colon]), password: String(text[text.index(after: colon)...]))
        }
        throw DepotError.invalidArgument(
            "Authorization scheme '\(String(decoding: scheme.prefix(20), as: UTF8.self))' is not supported: use Basic or Bearer")
    }

    /// ASCII case-insensitive comparison with a lowercase literal.
    static func equalsIgnoringCase(_ bytes: Substring.UTF8View, _ lower: StaticString) -> Bool {
        guard bytes.count == lower.utf8CodeUnitCount else { return false }
        var i = 0
        for b in bytes {
            let folded = (b >= 0x41 && b <= 0x5A) ? b | 0x20 : b
            guard folded == lower.utf8Start[i] else { return false }
            i += 1
        }
        return true
    }
}

/// Token secrets: 256 random bits, shown once, stored only as a SHA-256 hash. A hash (not a
/// slow KDF) is enough for them: a secret with 256 bits of entropy cannot be guessed from its
/// hash, and the lookup by hash runs on every request.
public enum TokenSecret {
    /// Every token secret starts with this, so secret scanners and the server recognise one.
    public static let prefix = "dpt_"

    /// A new secret: `dpt_` and 43 base64url characters.
    public static func generate() -> String {
        prefix + base64url(randomBytes(32))
    }

    /// A new token id (public, shown in lists and the audit journal): `tk_` and 16 hex digits.
    public static func newID() -> String {
        "tk_" + randomBytes(8).map { String(format: "%02x", $0) }.joined()
    }

    /// What the catalog stores and looks up.
    public static func hash(_ secret: String) -> SHA256.Value {
        Array(secret.utf8).withUnsafeBytes { SHA256.hash($0) }
    }

    /// Whether a credential string is shaped like a Depot token secret.
    public static func looksLikeSecret(_ text: String) -> Bool {
        text.hasPrefix(prefix) && text.utf8.count >= prefix.utf8.count + 32 && text.utf8.count <= 200
    }

    static func randomBytes(_ n: Int) -> [UInt8] {
        // SystemRandomNumberGenerator reads the kernel's CSPRNG (getrandom) on Linux.
        var g = SystemRandomNumberGenerator()
        return (0..<n).map { _ in UInt8.random(in: 0...255, using: &g) }
    }

    public static func base64url(_ bytes: [UInt8]) -> String {
        Data(bytes).base64EncodedString().replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_")
            .replacingOccurrences(of: "=", with: "")
    }
}

/// Passwords: PBKDF2-HMAC-SHA256 (OpenSSL) with a random 16-byte salt, stored as
/// `pbkdf2-sha256$<iterations>$<salt base64>$<hash base64>`. The iteration count is in the
/// string, so raising the default later leaves existing hashes verifiable.
public enum PasswordHash {
    /// OWASP's 2023 recommendation for PBKDF2-HMAC-SHA256.
    public static let defaultIterations = 600_000
    /// Passwords longer than this are refused (PBKDF2 hashes the password each iteration).
    public static let maxPasswordBytes = 1024

    public static func make(_ password: String, iterations: Int = defaultIterations) throws -> String {
        guard password.utf8.count >= 8 else { throw DepotError.invalidArgument("password must be at least 8 characters") }
        guard password.utf8.count <= maxPasswordBytes else {
            throw DepotError.invalidArgument("password must be at most \(maxPasswordBytes) bytes")
        }
        let salt = TokenSecret.randomBytes(16)
        let hash = derive(password, salt: salt, iterations: iterations)
        return "pbkdf2-sha256$\(iterations)$\(Data(salt).base64EncodedString())$\(Data(hash).base64EncodedString())"
    }

    /// Whether `password` matches `stored`, in constant time over the hash bytes. A stored
    /// string that does not parse never matches.
    public static func verify(_ password: String, against stored: String) -> Bool {
        let parts = stored.split(separator: "$")
        guard parts.count == 4, parts[0] == "pbkdf2-sha256", let iterations = Int(parts[1]), (1_000...10_000_000).contains(iterations),
            let salt = Data(base64Encoded: String(parts[2])), let expected = Data(base64Encoded: String(parts[3])), expected.count == 32,
            password.utf8.count <= maxPasswordBytes
        else { return false }
        return HMACSHA256.equal(derive(password, salt: Array(salt), iterations: iterations), Array(expected))
    }

    static func derive(_ password: String, salt: [UInt8], iterations: Int) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: 32)
        let pw = Array(password.utf8)
        pw.withUnsafeBufferPointer { p in
            salt.withUnsafeBufferPointer { s in
                p.withMemoryRebound(to: CChar.self) { pc in
                    _ = PKCS5_PBKDF2_HMAC(
                        pc.baseAddress, Int32(pc.count), s.baseAddress, Int32(s.count), Int32(iterations), EVP_sha256(), 32, &out)
                }
            }
        }
        return out
    }
}
