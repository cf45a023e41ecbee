/// Casts of fp32 tensors to 16-bit floats, as the store's cast-aware deduplication stores them:
/// a chunk of an fp16 or bf16 tensor that is an exact cast of stored fp32 bytes is kept as a
/// reference to those bytes plus the cast, and decoded by casting them again on read.
///
/// These functions are part of the storage format: a derived chunk is decoded by exactly this
/// arithmetic, so it is written out bit by bit here (no compiler runtime or CPU conversion
/// instruction whose NaN handling might differ between builds or machines), and a kind's
/// meaning never changes; a different cast is a new kind. Every decoded chunk is still checked
/// against its SHA-256, so a cast that disagreed would be caught, never served.
public enum CastKind: UInt8, Sendable, CaseIterable {
    /// IEEE binary32 → binary16, round to nearest even (what numpy's `astype(float16)` and
    /// PyTorch's `.half()` do); overflow gives ±infinity, a NaN gives the quiet NaN 0x7E00 with
    /// its sign (PyTorch's choice; numpy keeps payload bits, so such a tensor is not derived).
    case float16 = 1
    /// IEEE binary32 → bfloat16, round to nearest even (PyTorch's `.bfloat16()`); a NaN gives
    /// 0x7FC0, as in PyTorch.
    case bfloat16 = 2

    /// Casts `count` little-endian fp32 values at `source` to 2-byte little-endian values at
    /// `output` (which holds at least `2 * count` bytes).
    public func cast(_ source: UnsafeRawBufferPointer, count: Int, into output: UnsafeMutableRawBufferPointer) {
        precondition(source.count >= 4 * count && output.count >= 2 * count)
        guard count > 0 else { return }
        switch self {
        case .float16:
            // Sixteen values at a time when all are in [2^-14, 65536) in magnitude (weights almost
            // always are): the same arithmetic as `halfBits` there: rebias the exponent, round to
            // nearest even by adding 0xFFF plus the kept part's lowest bit (a carry rounds the
            // exponent up, to infinity at most). Any other group, and the tail, go through
            // `halfBits` value by value.
            let base = source.baseAddress!
            let out = output.baseAddress!
            var i = 0
            while i + 16 <= count {
                // Scalar code over a fixed-size group, without branches, so the compiler
                // vectorizes it; `outside` collects whether any value needs `halfBits`.
                var outside: UInt32 = 0
                for j in i..<(i + 16) {
                    let w = UInt32(littleEndian: base.loadUnaligned(fromByteOffset: 4 * j, as: UInt32.self))
                    let magnitude = w & 0x7FFF_FFFF
                    outside |= (magnitude &- 0x3880_0000) >= (0x4780_0000 - 0x3880_0000) ? 1 : 0
                    let rounded = (magnitude &- 0x3800_0000 &+ 0x0FFF &+ ((magnitude &>> 13) & 1)) &>> 13
                    let h = UInt16(truncatingIfNeeded: (w &>> 16) & 0x8000 | rounded)
                    out.storeBytes(of: h.littleEndian, toByteOffset: 2 * j, as: UInt16.self)
                }
                if outside != 0 {
                    for j in i..<(i + 16) { Self.storeHalf(base, out, j) }
                }
                i += 16
            }
            while i < count {
                Self.storeHalf(base, out, i)
                i += 1
            }
        case .bfloat16:
            for i in 0..<count {
                let w = UInt32(littleEndian: source.loadUnaligned(fromByteOffset: 4 * i, as: UInt32.self))
                output.storeBytes(of: Self.bfloatBits(w).littleEndian, toByteOffset: 2 * i, as: UInt16.self)
            }
        }
    }

    @inline(__always)
    private static func storeHalf(_ source: UnsafeRawPointer, _ output: UnsafeMutableRawPointer, _ i: Int) {
        let w = UInt32(littleEndian: source.loadUnaligned(fromByteOffset: 4 * i, as: UInt32.self))
        output.storeBytes(of: halfBits(w).littleEndian, toByteOffset: 2 * i, as: UInt16.self)
    }

    /// fp32 bits → fp16 bits, round to nearest even, integer arithmetic only.
    @inline(__always)
    public static func halfBits(_ w: UInt32) -> UInt16 {
        let sign = UInt16(truncatingIfNeeded: (w >> 16) & 0x8000)
        let exponent = Int((w >> 23) & 0xFF)
        let mantissa = w & 0x7F_FFFF
        if exponent == 0xFF { return sign | (mantissa != 0 ? 0x7E00 : 0x7C00) }
        let e = exponent - 127 + 15
        if e >= 0x1F { return sign | 0x7C00 }
        if e <= 0 {
            // A binary16 subnormal (or zero): the significand with its implicit bit, shifted
            // down to units of 2^-24, rounded to nearest even. Below 2^-25 everything rounds to 0.
            if e < -10 { return sign }
            let m = mantissa | 0x80_0000
            let shift = UInt32(14 - e)
            var h = m >> shift
            let rest = m & ((1 << shift) - 1)
            let half = UInt32(1) << (shift - 1)
            if rest > half || (rest == half && h & 1 == 1) { h += 1 }
            return sign | UInt16(truncatingIfNeeded: h)
        }
        // Normal: 10 mantissa bits kept; a carry out of the mantissa increments the exponent,
        // which is right, up to and including infinity (0x7C00).
        var h = UInt32(e) << 10 | (mantissa >> 13)
        let rest = mantissa & 0x1FFF
        if rest > 0x1000 || (rest == 0x1000 && h & 1 == 1) { h += 1 }
        return sign | UInt16(truncatingIfNeeded: h)
    }

    /// fp32 bits → bfloat16 bits, round to nearest even (PyTorch's `round_to_nearest_even`).
    @inline(__always)
    public static func bfloatBits(_ w: UInt32) -> UInt16 {
        if w & 0x7FFF_FFFF > 0x7F80_0000 { return 0x7FC0 }
        return UInt16(truncatingIfNeeded: (w &+ 0x7FFF &+ ((w >> 16) & 1)) >> 16)
    }
}

/// The element type of a tensor, as far as cast-aware deduplication cares.
public enum TensorElement: Sendable, Equatable {
    case float32
    case float16
    case bfloat16
    case other

    /// The cast that produces this type from fp32, if there is one.
    public var castKind: CastKind? {
        switch self {
        case .float16: return .float16
        case .bfloat16: return .bfloat16
        default: return nil
        }
    }
}

/// One tensor's data inside a blob.
public struct TensorExtent: Sendable, Equatable {
    public var element: TensorElement
    public var shape: [Int64]
    /// Absolute byte range of the tensor's data in the blob.
    public var range: Range<Int64>

    public init(element: TensorElement, shape: [Int64], range: Range<Int64>) {
        self.element = element
        self.shape = shape
        self.range = range
    }
}

/// Finds the tensors of a stored blob (e.g. a safetensors file), for cast-aware deduplication.
/// Like `BoundaryPlanner`, the store knows no file format: the caller hands one in.
public protocol TensorLayoutReader: Sendable {
    /// The tensors of a blob of `size` bytes, read through `read` (a byte range of the blob);
    /// nil when the blob is not in this reader's format. Must bound what it reads: the blob is
    /// untrusted.
    func tensors(size: Int64, read: (Range<Int64>) throws -> [UInt8]) throws -> [TensorExtent]?
}

/// The fingerprint that pairs a 16-bit tensor with the fp32 tensor it may be a cast of: the
/// cast kind, the shape and the first and last `elements` values in the 16-bit type (the last
/// too, so that tensors starting alike, e.g. with zero rows, differ). An fp32 tensor's print is
/// taken after casting those values; equal prints are only candidates, every chunk is verified
/// by hash before it is stored as a cast.
public enum TensorPrint {
    /// Values at each end of a tensor in its print.
    public static let elements = 256

    /// `values`: the first and then the last `elements` values, 2 bytes each, of the 16-bit tensor.
    public static func make(kind: CastKind, shape: [Int64], values: UnsafeRawBufferPointer) -> [UInt8] {
        var h = SHA256()
        var head: [UInt8] = Array("depot-tensor-print-v1".utf8) + [kind.rawValue]
        withUnsafeBytes(of: UInt32(shape.count).littleEndian) { head += $0 }
        for d in shape { withUnsafeBytes(of: d.littleEndian) { head += $0 } }
        head.withUnsafeBytes { h.update($0) }
        h.update(values)
        return Array(h.finalize().byteArray.prefix(16))
    }
}
