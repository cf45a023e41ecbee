import DepotCore

/// The versioned parameters of the content-defined chunker. A recipe records the `version`
/// string of the chunker that cut it; clients chunk with exactly these values.
public struct ChunkerParameters: Sendable, Equatable, Codable {
    public var minSize: Int
    public var averageSize: Int
    public var maxSize: Int

    /// Sizes in bytes: `averageSize` a power of two, `minSize < averageSize < maxSize`.
    public init(minSize: Int, averageSize: Int, maxSize: Int) {
        precondition(minSize > 0 && minSize < averageSize && averageSize < maxSize && averageSize & (averageSize - 1) == 0)
        self.minSize = minSize
        self.averageSize = averageSize
        self.maxSize = maxSize
    }

    /// Depot's chunker v1: FastCDC-style gear hash, normalized chunking (level 2), 16/64/256 KiB.
    public static let v1 = ChunkerParameters(minSize: 16 << 10, averageSize: 64 << 10, maxSize: 256 << 10)

    /// A stable identifier of the algorithm and its parameters, stored with every recipe.
    public var version: String { "fastcdc-gear-v1/\(minSize)/\(averageSize)/\(maxSize)" }

    /// Mask bits for the average: before the normal point cutting is harder (more bits), after it easier.
    var averageBits: Int { Int.bitWidth - 1 - averageSize.leadingZeroBitCount }
    /// Hash bits tested before `normalSize` (harder) and after it (easier). Masks use the
    /// high bits of the gear hash, which depend on the last 64 bytes.
    var maskSmall: UInt64 { ~UInt64(0) << UInt64(64 - (averageBits + 2)) }
    var maskLarge: UInt64 { ~UInt64(0) << UInt64(64 - (averageBits - 2)) }
    /// Where the mask switches. FastCDC's normal size, pulled in so that the mean chunk
    /// (min + expected gap) lands near `averageSize` (measured: see docs/ARCHITECTURE.md).
    var normalSize: Int { averageSize - averageSize / 4 }
}

/// Streaming content-defined chunker. Feed buffers of any size in order with `scan`;
/// it reports the same chunk boundaries as it would on the whole stream at once.
public struct Chunker: Sendable {
    public let parameters: ChunkerParameters
    private let maskSmall: UInt64, maskLarge: UInt64
    private let minSize: Int, normalSize: Int, maxSize: Int
    /// Bytes in the chunk being cut.
    public private(set) var pending = 0
    private var hash: UInt64 = 0

    public init(_ parameters: ChunkerParameters = .v1) {
        self.parameters = parameters
        maskSmall = parameters.maskSmall
        maskLarge = parameters.maskLarge
        minSize = parameters.minSize
        normalSize = parameters.normalSize
        maxSize = parameters.maxSize
    }

    /// Scans `buffer`; for each chunk that ends inside it, appends the buffer-relative end
    /// index (exclusive) to `cuts`. Bytes after the last cut stay pending for the next call.
    public mutating func scan(_ buffer: UnsafeRawBufferPointer, cuts: inout [Int]) {
        guard let base = buffer.baseAddress?.assumingMemoryBound(to: UInt8.self) else { return }
        let count = buffer.count
        var i = 0
        var pending = self.pending
        var h = hash
        Gear.table.withUnsafeBufferPointer { gearBuffer in
            let gear = gearBuffer.baseAddress!
            while i < count {
                // Skip the first `minSize` bytes of a chunk without hashing (FastCDC).
                if pending < minSize {
                    let skip = Swift.min(minSize - pending, count - i)
                    pending += skip
                    i += skip
                    continue
                }
                // Hash with the strict mask up to the normal size, then the loose one up to max.
                let strict = pending < normalSize
                let mask = strict ? maskSmall : maskLarge
                let limit = strict ? normalSize : maxSize
                let n = Swift.min(limit - pending, count - i)
                var j = 0
                var found = false
                let p = base + i
                // Unrolled by 4: one loop-bound check per 4 bytes; the hash chain is one `lea` a byte.
                scan: while j &+ 4 <= n {
                    h = (h &<< 1) &+ gear[Int(p[j])]
                    if h & mask == 0 {
                        j &+= 1
                        found = true
                        break scan
                    }
                    h = (h &<< 1) &+ gear[Int(p[j &+ 1])]
                    if h & mask == 0 {
                        j &+= 2
                        found = true
                        break scan
                    }
                    h = (h &<< 1) &+ gear[Int(p[j &+ 2])]
                    if h & mask == 0 {
                        j &+= 3
                        found = true
                        break scan
                    }
                    h = (h &<< 1) &+ gear[Int(p[j &+ 3])]
                    j &+= 4
                    if h & mask == 0 {
                        found = true
                        break scan
                    }
                }
                if !found {
                    while j < n {
                        h = (h &<< 1) &+ gear[Int(p[j])]
                        j &+= 1
                        if h & mask == 0 {
                            found = true
                            break
                        }
                    }
                }
                i += j
                pending += j
                if found || pending == maxSize {
                    cuts.append(i)
                    pending = 0
                    h = 0
                }
            }
        }
        self.pending = pending
        hash = h
    }

    /// Ends the current chunk here (a format boundary or the end of the stream). Returns
    /// whether a non-empty chunk was ended.
    @discardableResult
    public mutating func cut() -> Bool {
        defer {
            pending = 0
            hash = 0
        }
        return pending > 0
    }
}

/// The gear table: 256 pseudo-random 64-bit values from a fixed SplitMix64 seed. Part of the
/// chunker's version: changing it changes every boundary.
enum Gear {
    static let table: [UInt64] = {
        var state: UInt64 = 0x6465_706f_7447_6561 // "depotGea"
        return (0..<256).map { _ in
            state &+= 0x9E37_79B9_7F4A_7C15
            var z = state
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
    }()
}
