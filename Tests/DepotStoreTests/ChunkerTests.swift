import DepotCore
@testable import DepotStore
import Testing

@Suite struct ChunkerTests {
    func cutsWhole(_ data: [UInt8], _ params: ChunkerParameters = .v1) -> [Int] {
        var chunker = Chunker(params)
        var cuts: [Int] = []
        data.withUnsafeBytes { chunker.scan($0, cuts: &cuts) }
        if chunker.cut() { cuts.append(data.count) }
        return cuts
    }

    @Test func boundariesDoNotDependOnHowTheStreamIsSplit() {
        let data = randomBytes(3 << 20, seed: 7)
        let expected = cutsWhole(data)
        var rng = SystemRandomNumberGenerator()
        for _ in 0..<25 {
            var chunker = Chunker()
            var cuts: [Int] = []
            var offset = 0
            while offset < data.count {
                // Random split sizes from 1 byte to 300 KiB, biased to small.
                let n = min(data.count - offset, Bool.random(using: &rng) ? Int.random(in: 1...64, using: &rng) : Int.random(in: 1...(300 << 10), using: &rng))
                var local: [Int] = []
                data.withUnsafeBytes { chunker.scan(UnsafeRawBufferPointer(rebasing: $0[offset..<(offset + n)]), cuts: &local) }
                cuts.append(contentsOf: local.map { $0 + offset })
                offset += n
            }
            if chunker.cut() { cuts.append(data.count) }
            #expect(cuts == expected)
        }
    }

    @Test func chunkSizesRespectBoundsAndAverage() {
        let data = randomBytes(32 << 20, seed: 11)
        let cuts = cutsWhole(data)
        var previous = 0
        var sizes: [Int] = []
        for c in cuts { sizes.append(c - previous); previous = c }
        #expect(sizes.dropLast().allSatisfy { $0 >= 16 << 10 && $0 <= 256 << 10 })
        let mean = Double(data.count) / Double(sizes.count)
        // Normalized chunking keeps the mean near the 64 KiB target.
        #expect(mean > 48 * 1024 && mean < 80 * 1024, "mean chunk \(mean)")
    }

    @Test func anInsertionOnlyChangesNearbyChunks() {
        let data = randomBytes(8 << 20, seed: 3)
        var edited = data
        edited.insert(contentsOf: [1, 2, 3, 4, 5, 6, 7], at: 4 << 20)
        func chunks(_ d: [UInt8]) -> Set<[UInt8]> {
            var set = Set<[UInt8]>()
            var prev = 0
            for c in cutsWhole(d) { set.insert(Array(d[prev..<c])); prev = c }
            return set
        }
        let a = chunks(data), b = chunks(edited)
        #expect(b.subtracting(a).count <= 3)
    }

    @Test func parametersAreVersioned() {
        #expect(ChunkerParameters.v1.version == "fastcdc-gear-v1/16384/65536/262144")
    }
}

@Suite struct CodecTests {
    @Test func shuffleRoundTripsEveryWidthAndTail() {
        for width in [2, 4] {
            for n in [0, 1, 3, 4, 5, 1000, 1003] {
                let input = randomBytes(n, seed: UInt64(n))
                var grouped = [UInt8](repeating: 0, count: n)
                var back = [UInt8](repeating: 0, count: n)
                input.withUnsafeBytes { i in grouped.withUnsafeMutableBytes { Shuffle.group(i, width: width, into: $0) } }
                grouped.withUnsafeBytes { g in back.withUnsafeMutableBytes { Shuffle.ungroup(g, width: width, into: $0) } }
                #expect(back == input)
            }
        }
    }

    @Test func compressibleChunksAreCompressedAndDecodeExactly() throws {
        let c = ChunkCompressor(maxChunk: 256 << 10)
        let text = [UInt8](String(repeating: "model weights and more model weights ", count: 2000).utf8)
        var stored: [UInt8] = []
        var codec = ChunkCodec.raw
        try text.withUnsafeBytes { try c.encode($0, policy: CompressionPolicy(), elementWidth: 1) { k, p in codec = k; stored = Array(p) } }
        #expect(codec == .zstd)
        #expect(stored.count < text.count / 10)
        var out = [UInt8](repeating: 0, count: text.count)
        try stored.withUnsafeBytes { s in try out.withUnsafeMutableBytes { try c.decode(s, codec: codec, into: $0) } }
        #expect(out == text)
    }

    @Test func incompressibleChunksStayRaw() throws {
        let c = ChunkCompressor(maxChunk: 256 << 10)
        let noise = randomBytes(64 << 10, seed: 5)
        var codec = ChunkCodec.zstd
        try noise.withUnsafeBytes { try c.encode($0, policy: CompressionPolicy(), elementWidth: 4) { k, _ in codec = k } }
        #expect(codec == .raw)
    }
}
