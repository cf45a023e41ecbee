import CDepotSupport
import COpenSSL

/// SHA-256 whose state can be saved and restored in another process: a chunked upload's PATCH
/// requests may land on different replicas, and the blob's digest covers all of them.
///
/// OpenSSL's EVP interface (`SHA256`) cannot export a midstate, so this uses the low-level
/// `SHA256_CTX` (the same block function, SHA-NI included). The saved form is this module's own
/// byte layout, versioned, not a memory dump of the C struct:
///
///     offset size
///          0    1  version (1)
///          1   32  h[0..7], each UInt32 little-endian
///         33    4  Nl (bit count, low word)  UInt32 LE
///         37    4  Nh (bit count, high word) UInt32 LE
///         41   64  the partial block, as bytes (OpenSSL fills `data` bytewise)
///        105    4  num: bytes used in the partial block, < 64, UInt32 LE
///        109       (end)
public struct ResumableSHA256: Sendable {
    public static let savedSize = 109
    private var ctx = SHA256_CTX()

    public init() { SHA256_Init(&ctx) }

    /// Restores a state saved by `saved`; nil when the bytes are not one.
    public init?(saved: [UInt8]) {
        guard saved.count == Self.savedSize, saved[0] == 1 else { return nil }
        func word(_ at: Int) -> UInt32 {
            UInt32(saved[at]) | UInt32(saved[at + 1]) << 8 | UInt32(saved[at + 2]) << 16 | UInt32(saved[at + 3]) << 24
        }
        let num = word(105)
        guard num < 64 else { return nil }
        SHA256_Init(&ctx)
        withUnsafeMutableBytes(of: &ctx.h) { h in
            for i in 0..<8 { h.storeBytes(of: word(1 + 4 * i), toByteOffset: 4 * i, as: UInt32.self) }
        }
        ctx.Nl = word(33)
        ctx.Nh = word(37)
        withUnsafeMutableBytes(of: &ctx.data) { d in
            for i in 0..<64 { d[i] = saved[41 + i] }
        }
        ctx.num = num
        // A state claims a byte count; its partial block must agree with it, and the count must
        // fit an Int64 of bytes (Nh < 2^29).
        guard Int(ctx.Nl / 8 % 64) == Int(num), ctx.Nl % 8 == 0, ctx.Nh < 1 << 29 else { return nil }
    }

    public mutating func update(_ bytes: UnsafeRawBufferPointer) {
        guard let base = bytes.baseAddress, bytes.count > 0 else { return }
        SHA256_Update(&ctx, base, bytes.count)
    }

    /// Feeds bytes from the front of `bytes` until the partial block is complete (or `bytes` is
    /// used up), and leaves `bytes` as what is left.
    mutating func fillPartialBlock(_ bytes: inout UnsafeRawBufferPointer) {
        guard ctx.num != 0, bytes.count > 0 else { return }
        let n = min(64 - Int(ctx.num), bytes.count)
        update(UnsafeRawBufferPointer(rebasing: bytes[..<n]))
        bytes = UnsafeRawBufferPointer(rebasing: bytes[n...])
    }

    /// No partial block is pending: whole blocks can go straight to the block function.
    var atBlockBoundary: Bool { ctx.num == 0 }

    /// Runs `count` whole blocks of `pa` into `a` and of `pb` into `b` through the interleaved
    /// block function, and counts them as OpenSSL's SHA256_Update would. Both must be at a block
    /// boundary, and `SHA256Lanes.interleaved` true.
    static func blocks(
        _ a: inout ResumableSHA256, _ pa: UnsafeRawBufferPointer, _ b: inout ResumableSHA256, _ pb: UnsafeRawBufferPointer, count: Int
    ) {
        precondition(a.ctx.num == 0 && b.ctx.num == 0 && pa.count >= count * 64 && pb.count >= count * 64)
        let status = withUnsafeMutableBytes(of: &a.ctx.h) { ha in
            withUnsafeMutableBytes(of: &b.ctx.h) { hb in
                depot_sha256_blocks_x2(
                    ha.baseAddress!.assumingMemoryBound(to: UInt32.self), pa.baseAddress,
                    hb.baseAddress!.assumingMemoryBound(to: UInt32.self),
                    pb.baseAddress, count)
            }
        }
        precondition(status == 0, "the interleaved SHA-256 block function is not available on this CPU")
        a.countBytes(count * 64)
        b.countBytes(count * 64)
    }

    /// Adds `bytes` to the bit count the way SHA256_Update does (Nl the low word, Nh the high).
    private mutating func countBytes(_ bytes: Int) {
        let bits = UInt64(bytes) << 3
        let low = ctx.Nl &+ UInt32(truncatingIfNeeded: bits)
        if low < ctx.Nl { ctx.Nh &+= 1 }
        ctx.Nh &+= UInt32(truncatingIfNeeded: bits >> 32)
        ctx.Nl = low
    }

    /// Bytes hashed so far.
    public var count: Int64 { Int64(truncatingIfNeeded: (UInt64(ctx.Nh) << 32 | UInt64(ctx.Nl)) / 8) }

    /// The state, in the layout above.
    public var saved: [UInt8] {
        var out = [UInt8](repeating: 0, count: Self.savedSize)
        func put(_ v: UInt32, _ at: Int) {
            for i in 0..<4 { out[at + i] = UInt8(truncatingIfNeeded: v >> (8 * UInt32(i))) }
        }
        out[0] = 1
        var c = ctx
        withUnsafeBytes(of: &c.h) { h in
            for i in 0..<8 { put(h.loadUnaligned(fromByteOffset: 4 * i, as: UInt32.self), 1 + 4 * i) }
        }
        put(c.Nl, 33)
        put(c.Nh, 37)
        withUnsafeBytes(of: &c.data) { d in
            for i in 0..<64 { out[41 + i] = d[i] }
        }
        put(c.num, 105)
        return out
    }

    /// The digest of everything fed so far (the state itself is left as it was).
    public func finalize() -> SHA256.Value {
        var c = ctx
        var out = (UInt64(0), UInt64(0), UInt64(0), UInt64(0))
        return withUnsafeMutableBytes(of: &out) { raw in
            SHA256_Final(raw.baseAddress!.assumingMemoryBound(to: UInt8.self), &c)
            return SHA256.Value(bytes: UnsafeRawBufferPointer(raw))
        }
    }
}
