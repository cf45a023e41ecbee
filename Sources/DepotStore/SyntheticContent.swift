/// Deterministic pseudo-random content with shared runs, so blobs deduplicate against each
/// other: what `depot debug write-loop` writes and the crash tests regenerate to compare.
public enum SyntheticContent {
    public static func size(seed: UInt64, index: Int, max: Int) -> Int {
        var s = seed &* 0x9E37_79B9_7F4A_7C15 &+ UInt64(index)
        return Int(next(&s) % UInt64(max))
    }

    /// Produces `size` bytes in 64 KiB pieces: each piece is one of 32 shared patterns or unique.
    public static func generate(seed: UInt64, index: Int, size: Int, _ sink: (UnsafeRawBufferPointer) throws -> Void) rethrows {
        var piece = [UInt64](repeating: 0, count: 8192)
        var s = seed ^ (UInt64(index) &* 0xD1B5_4A32_D192_ED03)
        var produced = 0
        while produced < size {
            let choice = next(&s) % 4
            var p = choice == 0 ? next(&s) : seed &+ (next(&s) % 32) // 3 in 4 pieces are shared
            for k in 0..<piece.count { piece[k] = next(&p) }
            let n = min(size - produced, 65_536 - Int(next(&s) % 4096))
            try piece.withUnsafeBytes { try sink(UnsafeRawBufferPointer(rebasing: $0[0..<n])) }
            produced += n
        }
    }

    @inline(__always) public static func next(_ s: inout UInt64) -> UInt64 {
        s &+= 0x9E37_79B9_7F4A_7C15
        var z = s
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
