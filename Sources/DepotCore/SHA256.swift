import COpenSSL

/// Streaming SHA-256 over OpenSSL's EVP interface (uses SHA-NI where the CPU has it).
///
/// A value type wrapping a heap EVP context; copying a hasher is not supported (it is
/// `~Copyable`), so each stream owns exactly one context.
public struct SHA256: ~Copyable {
    /// A finished 32-byte SHA-256 value, stored inline (no heap allocation).
    public struct Value: Hashable, Sendable, Comparable {
        public var a: UInt64, b: UInt64, c: UInt64, d: UInt64 // big-endian words of the digest

        public init(a: UInt64, b: UInt64, c: UInt64, d: UInt64) {
            self.a = a
            self.b = b
            self.c = c
            self.d = d
        }

        /// Reads 32 bytes.
        public init(bytes p: UnsafeRawBufferPointer) {
            precondition(p.count >= 32)
            a = UInt64(bigEndian: p.loadUnaligned(fromByteOffset: 0, as: UInt64.self))
            b = UInt64(bigEndian: p.loadUnaligned(fromByteOffset: 8, as: UInt64.self))
            c = UInt64(bigEndian: p.loadUnaligned(fromByteOffset: 16, as: UInt64.self))
            d = UInt64(bigEndian: p.loadUnaligned(fromByteOffset: 24, as: UInt64.self))
        }

        public init?<S: StringProtocol>(hex: S) {
            let u = Array(hex.utf8)
            guard u.count == 64 else { return nil }
            var words = [UInt64](repeating: 0, count: 4)
            for i in 0..<64 {
                let ch = u[i]
                let v: UInt8
                switch ch {
                case 0x30...0x39: v = ch - 0x30
                case 0x61...0x66: v = ch - 0x61 + 10
                default: return nil
                }
                words[i / 16] = (words[i / 16] << 4) | UInt64(v)
            }
            a = words[0]
            b = words[1]
            c = words[2]
            d = words[3]
        }

        /// Writes the 32 bytes into `p`.
        public func store(into p: UnsafeMutableRawBufferPointer) {
            precondition(p.count >= 32)
            p.storeBytes(of: a.bigEndian, toByteOffset: 0, as: UInt64.self)
            p.storeBytes(of: b.bigEndian, toByteOffset: 8, as: UInt64.self)
            p.storeBytes(of: c.bigEndian, toByteOffset: 16, as: UInt64.self)
            p.storeBytes(of: d.bigEndian, toByteOffset: 24, as: UInt64.self)
        }

        public var byteArray: [UInt8] {
            [UInt8](unsafeUninitializedCapacity: 32) { buf, n in
                store(into: UnsafeMutableRawBufferPointer(buf))
                n = 32
            }
        }

        public var hex: String {
            let digits: [UInt8] = Array("0123456789abcdef".utf8)
            var out = [UInt8](repeating: 0, count: 64)
            for (wi, w) in [a, b, c, d].enumerated() {
                for j in 0..<16 { out[wi * 16 + j] = digits[Int((w >> UInt64(60 - 4 * j)) & 0xf)] }
            }
            return String(decoding: out, as: UTF8.self)
        }

        public static func < (l: Value, r: Value) -> Bool { (l.a, l.b, l.c, l.d) < (r.a, r.b, r.c, r.d) }
    }

    private let ctx: OpaquePointer

    public init() {
        guard let ctx = EVP_MD_CTX_new(), EVP_DigestInit_ex(ctx, EVP_sha256(), nil) == 1 else {
            fatalError("OpenSSL could not create a SHA-256 context")
        }
        self.ctx = ctx
    }

    deinit { EVP_MD_CTX_free(ctx) }

    public mutating func update(_ bytes: UnsafeRawBufferPointer) {
        guard let base = bytes.baseAddress, bytes.count > 0 else { return }
        EVP_DigestUpdate(ctx, base, bytes.count)
    }

    /// The digest of everything fed so far; the hasher then starts over, empty.
    public mutating func finalize() -> Value {
        var out = (UInt64(0), UInt64(0), UInt64(0), UInt64(0))
        let value = withUnsafeMutableBytes(of: &out) { raw in
            var len: UInt32 = 0
            EVP_DigestFinal_ex(ctx, raw.baseAddress!.assumingMemoryBound(to: UInt8.self), &len)
            return Value(bytes: UnsafeRawBufferPointer(raw))
        }
        EVP_DigestInit_ex(ctx, EVP_sha256(), nil)
        return value
    }

    /// One-shot hash of a buffer.
    public static func hash(_ bytes: UnsafeRawBufferPointer) -> Value {
        var out = (UInt64(0), UInt64(0), UInt64(0), UInt64(0))
        return withUnsafeMutableBytes(of: &out) { raw in
            var len: UInt32 = 0
            EVP_Digest(bytes.baseAddress, bytes.count, raw.baseAddress!.assumingMemoryBound(to: UInt8.self), &len, EVP_sha256(), nil)
            return Value(bytes: UnsafeRawBufferPointer(raw))
        }
    }
}
