import COpenSSL

/// HMAC-SHA256 (OpenSSL), for signing webhook deliveries.
public enum HMACSHA256 {
    /// The 32-byte MAC of `data` under `key`.
    public static func mac(key: [UInt8], data: [UInt8]) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: 32)
        var length: UInt32 = 32
        key.withUnsafeBytes { k in
            data.withUnsafeBytes { d in
                _ = HMAC(
                    EVP_sha256(), k.baseAddress, Int32(k.count), d.baseAddress?.assumingMemoryBound(to: UInt8.self), d.count,
                    &out, &length)
            }
        }
        return out
    }

    /// Lowercase hex of the MAC.
    public static func hex(key: [UInt8], data: [UInt8]) -> String {
        let digits = Array("0123456789abcdef".utf8)
        var out = [UInt8]()
        for b in mac(key: key, data: data) {
            out.append(digits[Int(b >> 4)])
            out.append(digits[Int(b & 15)])
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// Compares two MACs in constant time.
    public static func equal(_ a: [UInt8], _ b: [UInt8]) -> Bool {
        guard a.count == b.count else { return false }
        var diff: UInt8 = 0
        for i in 0..<a.count { diff |= a[i] ^ b[i] }
        return diff == 0
    }
}
