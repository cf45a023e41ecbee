import DepotCore
import DepotTestSupport
import Foundation
import Testing

@testable import DepotStore

/// The interleaved two-stream SHA-256 (DepotCore's SHA256Lanes over CDepotSupport's block
/// function) must give exactly OpenSSL's digests, whatever the lengths, splits and states.
@Suite struct SHA256LanesTests {
    @Test func theInterleavedPathRunsWhereTheCPUHasTheSHAExtensions() throws {
        // Otherwise every other test here compares OpenSSL with itself.
        let cpuinfo = (try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8)) ?? ""
        let flags = cpuinfo.split(separator: "\n").first { $0.hasPrefix("flags") } ?? ""
        let off = ProcessInfo.processInfo.environment["DEPOT_SHA256_LANES"] == "0"
        #expect(SHA256Lanes.interleaved == (flags.split(separator: " ").contains("sha_ni") && !off))
    }

    @Test func eachBufferGetsItsOwnDigest() {
        let data = randomBytes(4 << 20, seed: 11)
        var rng = SeededGenerator(seed: 5)
        data.withUnsafeBytes { all in
            // Lengths around block edges, long ones, empty ones; counts 0, 1, 2 and many.
            let edges = [0, 1, 55, 56, 63, 64, 65, 127, 128, 129, 4096, 65_536, 1 << 20]
            for count in [0, 1, 2, 3, 17, 200] {
                var buffers: [UnsafeRawBufferPointer] = []
                for _ in 0..<count {
                    let length = Bool.random(using: &rng) ? edges.randomElement(using: &rng)! : Int.random(in: 0...(300 << 10), using: &rng)
                    let start = Int.random(in: 0...(all.count - length), using: &rng)
                    buffers.append(UnsafeRawBufferPointer(rebasing: all[start..<(start + length)]))
                }
                #expect(SHA256Lanes.hashEach(buffers) == buffers.map { SHA256.hash($0) }, "count \(count)")
            }
        }
    }

    @Test func twoStreamsFedTogetherEqualEachFedAlone() {
        let data = randomBytes(2 << 20, seed: 12)
        var rng = SeededGenerator(seed: 6)
        data.withUnsafeBytes { all in
            for round in 0..<40 {
                var a = ResumableSHA256()
                var b = ResumableSHA256()
                var a1 = ResumableSHA256()
                var b1 = ResumableSHA256()
                var ia = Int.random(in: 0..<1000, using: &rng)
                var ib = Int.random(in: 0..<1000, using: &rng)
                for _ in 0..<Int.random(in: 1...12, using: &rng) {
                    // Pieces from 0 bytes to 200 KiB, often not whole blocks, so the two states'
                    // partial blocks differ.
                    let la = Bool.random(using: &rng) ? Int.random(in: 0...130, using: &rng) : Int.random(in: 0...(200 << 10), using: &rng)
                    let lb = Bool.random(using: &rng) ? la : Int.random(in: 0...(200 << 10), using: &rng)
                    guard ia + la <= all.count, ib + lb <= all.count else { break }
                    let pa = UnsafeRawBufferPointer(rebasing: all[ia..<(ia + la)])
                    let pb = UnsafeRawBufferPointer(rebasing: all[ib..<(ib + lb)])
                    SHA256Lanes.update(&a, pa, &b, pb)
                    a1.update(pa)
                    b1.update(pb)
                    ia += la
                    ib += lb
                    // The saved form (what an upload checkpoint stores) is the same state too.
                    #expect(a.saved == a1.saved && b.saved == b1.saved, "round \(round)")
                }
                #expect(a.finalize() == a1.finalize() && b.finalize() == b1.finalize(), "round \(round)")
                #expect(a.count == a1.count && b.count == b1.count)
            }
        }
    }

    @Test func aMidstateIsWrittenAsTheHashStatesHeaderSaysAndResumes() throws {
        // The state after 64 zero bytes, read from OpenSSL's SHA256_CTX (h0..h7 big-endian): the
        // layout other clients of Depot-Hash-States must produce.
        let known = "da5698be17b9b46962335799779fbeca8ce5d491c0d26243bafef9ea1837a9d8"
        var h = ResumableSHA256()
        [UInt8](repeating: 0, count: 64).withUnsafeBytes { h.update($0) }
        #expect(h.midstate.hex == known)
        let state = try #require(SHA256.Value(hex: known))
        var resumed = try #require(ResumableSHA256(midstate: state, count: 64))
        Array("abc".utf8).withUnsafeBytes { resumed.update($0) }
        #expect(resumed.finalize() == ([UInt8](repeating: 0, count: 64) + Array("abc".utf8)).withUnsafeBytes { SHA256.hash($0) })
        #expect(ResumableSHA256(midstate: state, count: 65) == nil, "only at a block boundary")
    }

    @Test func theBitCountCarriesIntoItsHighWord() throws {
        // A state 64 bytes short of 2^32 bits (512 MiB hashed): two more blocks carry Nl into Nh,
        // as OpenSSL's own update does. Built from the saved layout (ResumableSHA256's comment).
        var saved = ResumableSHA256().saved
        let nl: UInt32 = 0xFFFF_FE00
        for i in 0..<4 { saved[33 + i] = UInt8(truncatingIfNeeded: nl >> (8 * UInt32(i))) }
        var a = try #require(ResumableSHA256(saved: saved))
        var b = a
        var a1 = a
        var b1 = b
        let data = randomBytes(256, seed: 13)
        data.withUnsafeBytes { p in
            SHA256Lanes.update(&a, UnsafeRawBufferPointer(rebasing: p[0..<128]), &b, UnsafeRawBufferPointer(rebasing: p[128..<256]))
            a1.update(UnsafeRawBufferPointer(rebasing: p[0..<128]))
            b1.update(UnsafeRawBufferPointer(rebasing: p[128..<256]))
        }
        #expect(a.saved == a1.saved && b.saved == b1.saved)
        #expect(a.count == (1 << 29) + 64)
        #expect(a.finalize() == a1.finalize())
    }
}

/// A chunk upload's records are verified in groups, their hashes two at a time.
@Suite struct ChunkRecordGroupTests {
    /// Records for 20 chunks, raw (random) and compressed (repetitive) alternating in runs;
    /// the chunk at `lyingAt` is sent under another chunk's name.
    func records(lyingAt: Int?) throws -> (bytes: [UInt8], hashes: [SHA256.Value]) {
        let codec = ChunkRecordCodec()
        var out = [UInt8]()
        var hashes: [SHA256.Value] = []
        for i in 0..<20 {
            var chunk = randomBytes(10_000 + 3_331 * i, seed: UInt64(i))
            if i % 3 == 0 { for j in chunk.indices { chunk[j] = UInt8(j % 7) } } // compresses
            let real = chunk.withUnsafeBytes { SHA256.hash($0) }
            let claimed = i == lyingAt ? SHA256.Value(a: 1, b: 2, c: 3, d: UInt64(i)) : real
            try chunk.withUnsafeBytes { _ = try codec.append($0, hash: claimed, to: &out) }
            hashes.append(claimed)
        }
        return (out, hashes)
    }

    func parse(_ p: UnsafeRawBufferPointer) throws -> [ChunkRecordCodec.Record] {
        var at = 0
        var out: [ChunkRecordCodec.Record] = []
        while at < p.count {
            let h = try ChunkRecords.header(UnsafeRawBufferPointer(rebasing: p[at...]), maxChunk: ChunkerParameters.v1.maxSize)
            let start = at + ChunkRecords.headerSize
            out.append((h, UnsafeRawBufferPointer(rebasing: p[start..<(start + h.storedLength)])))
            at = start + h.storedLength
        }
        return out
    }

    @Test func goodRecordsAreHandedOverInOrder() throws {
        let (bytes, hashes) = try records(lyingAt: nil)
        try bytes.withUnsafeBytes { p in
            let parsed = try parse(p)
            #expect(parsed.contains { $0.header.codec == .raw } && parsed.contains { $0.header.codec != .raw })
            var seen: [Int] = []
            try ChunkRecordCodec().verifyEach(parsed) { seen.append($0) }
            #expect(seen == Array(0..<20))
            #expect(parsed.map(\.header.hash) == hashes)
        }
    }

    @Test func aRecordWhoseBytesAreAnotherChunkIsRefusedWherePairedAndGrouped() throws {
        // Raw and compressed, in either lane, in the first group and a later one.
        for lying in [0, 1, 6, 7, 8, 9, 13, 19] {
            let (bytes, hashes) = try records(lyingAt: lying)
            try bytes.withUnsafeBytes { p in
                var seen: [Int] = []
                do {
                    try ChunkRecordCodec().verifyEach(try parse(p)) { seen.append($0) }
                    Issue.record("record \(lying) was accepted")
                } catch DepotError.integrity(let m) {
                    #expect(m.contains(hashes[lying].hex) && m.contains("does not match"), "\(m)")
                }
                let group = ChunkRecordCodec.verifyGroup
                #expect(seen == Array(0..<(lying / group * group)), "only whole groups before the bad record are handed over")
            }
        }
    }

    @Test func aDamagedPayloadIsCaughtByItsChecksumFirst() throws {
        var (bytes, _) = try records(lyingAt: nil)
        bytes[bytes.count - 5] ^= 0x40
        try bytes.withUnsafeBytes { p in
            #expect(throws: DepotError.self) { try ChunkRecordCodec().verifyEach(try parse(p)) { _ in } }
        }
    }
}
