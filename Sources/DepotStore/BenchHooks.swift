/// Entry points for `depot bench` into internals that are not public API.
public enum StoreBenchHooks {
    /// Runs the store's codec choice over `data` in 64 KiB pieces; returns the total stored size.
    public static func encodeAll(_ data: [UInt8], elementWidth: Int, policy: CompressionPolicy = CompressionPolicy()) -> Int {
        let c = ChunkCompressor(maxChunk: 256 << 10)
        var total = 0
        data.withUnsafeBytes { raw in
            var i = 0
            while i < raw.count {
                let piece = UnsafeRawBufferPointer(rebasing: raw[i..<min(raw.count, i + 65536)])
                try? c.encode(piece, policy: policy, elementWidth: elementWidth) { _, stored in total += stored.count }
                i += 65536
            }
        }
        return total
    }
}
