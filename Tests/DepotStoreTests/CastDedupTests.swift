import DepotCatalog
import DepotCore
import DepotFormats
import DepotTestSupport
import Foundation
import Testing

@testable import DepotStore

/// fp32 values with trained-weight statistics (about N(0, 0.02)), deterministic.
private func weights(_ count: Int, seed: UInt64) -> [Float] {
    let bits = randomBytes(count * 4, seed: seed)
    return bits.withUnsafeBytes { p in
        (0..<count).map { i in
            let u = Float(UInt32(littleEndian: p.loadUnaligned(fromByteOffset: 4 * i, as: UInt32.self))) / Float(UInt32.max)
            return (u - 0.5) * 0.07
        }
    }
}

private func fp32Bytes(_ v: [Float]) -> [UInt8] { v.withUnsafeBytes { Array($0) } }

/// The fp16 cast by Swift's own `Float16` conversion (the compiler runtime), not Depot's: the
/// files a test stores are cast independently of the code that decodes them.
private func fp16Bytes(_ v: [Float]) -> [UInt8] {
    v.map { Float16($0).bitPattern }.withUnsafeBytes { Array($0) }
}

/// The bf16 cast, computed through Double rounding rather than Depot's integer arithmetic:
/// the nearest bfloat16, ties to the even one.
private func bf16Bytes(_ v: [Float]) -> [UInt8] {
    v.map { x -> UInt16 in
        let w = x.bitPattern
        let down = Float(bitPattern: w & 0xFFFF_0000)
        let up = Float(bitPattern: (w & 0xFFFF_0000) &+ 0x1_0000)
        let dd = abs(Double(x) - Double(down))
        let du = abs(Double(up) - Double(x))
        let pick = dd < du || (dd == du && (w >> 16) & 1 == 0) ? down : up
        return UInt16(pick.bitPattern >> 16)
    }.withUnsafeBytes { Array($0) }
}

private let shapeA = [256, 128] // 32,768 values: 128 KiB in fp32, 64 KiB in fp16
private let shapeB = [64, 512]

private struct Family {
    let a = weights(256 * 128, seed: 11)
    let b = weights(64 * 512, seed: 12)
    let tuned = weights(64 * 512, seed: 13)
    let bias = weights(128, seed: 14)

    var base: [UInt8] {
        makeSafetensors([("a", "F32", shapeA, fp32Bytes(a)), ("bias", "F32", [128], fp32Bytes(bias)), ("b", "F32", shapeB, fp32Bytes(b))])
    }
    var half: [UInt8] {
        makeSafetensors(
            [("a", "F16", shapeA, fp16Bytes(a)), ("bias", "F16", [128], fp16Bytes(bias)), ("b", "F16", shapeB, fp16Bytes(b))],
            metadata: ["dtype": "float16"])
    }
    var bfloat: [UInt8] {
        makeSafetensors([("b.renamed", "BF16", shapeB, bf16Bytes(b)), ("a.renamed", "BF16", shapeA, bf16Bytes(a))])
    }
    /// fp16 of a fine-tune: `a` as in base, `b` changed.
    var tunedHalf: [UInt8] {
        makeSafetensors([("a", "F16", shapeA, fp16Bytes(a)), ("b", "F16", shapeB, fp16Bytes(tuned))])
    }
}

extension ChunkStore {
    /// Stores a safetensors file the way the registry does (tensor-aligned cuts), declared live.
    fileprivate func put(_ bytes: [UInt8]) throws -> WriteResult {
        try write(bytes, planner: SafetensorsBoundaryPlanner(), retain: "test")
    }
}

@Suite struct CastArithmeticTests {
    @Test func halfMatchesTheCompilerRuntimeOnEdgesAndRandomValues() {
        var patterns: [UInt32] = [
            0, 0x8000_0000, 0x3F80_0000, 0x477F_E000, 0x477F_F000, 0x477F_EFFF, 0x7F7F_FFFF, 0x7F80_0000, 0xFF80_0000,
            0x3380_0000, 0x3300_0000, 0x3340_0000, 0x3300_0001, 0x3880_0000, 0x387F_FFFF, 0x387F_E000, 0x3DCC_CCCD, 0x0000_0001,
        ]
        var x: UInt64 = 0x9E37_79B9_7F4A_7C15
        for _ in 0..<200_000 {
            x = x &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
            patterns.append(UInt32(truncatingIfNeeded: x >> 32))
        }
        // Every exponent, with mantissas at and around the rounding point.
        for e in UInt32(0)..<256 {
            for m: UInt32 in [0, 1, 0xFFF, 0x1000, 0x1001, 0x2000, 0x3000, 0x7F_F000, 0x7F_FFFF] { patterns.append(e << 23 | m) }
        }
        // Both the scalar function and the buffer cast (which has a fast path of its own).
        var cast = [UInt16](repeating: 0, count: patterns.count)
        patterns.withUnsafeBytes { p in cast.withUnsafeMutableBytes { CastKind.float16.cast(p, count: patterns.count, into: $0) } }
        var mismatches = 0
        for (i, w) in patterns.enumerated() {
            let f = Float(bitPattern: w)
            let expected = f.isNaN ? UInt16(truncatingIfNeeded: (w >> 16) & 0x8000) | 0x7E00 : Float16(f).bitPattern
            if CastKind.halfBits(w) != expected || UInt16(littleEndian: cast[i]) != expected { mismatches += 1 }
        }
        #expect(mismatches == 0)
        #expect(CastKind.halfBits(Float(65504).bitPattern) == 0x7BFF)
        #expect(CastKind.halfBits(Float(65520).bitPattern) == 0x7C00) // rounds up to infinity
        #expect(CastKind.halfBits(0x3380_0000) == 0x0001) // 2^-24, the smallest subnormal
        #expect(CastKind.halfBits(0x3300_0000) == 0x0000) // 2^-25: a tie, to even (zero)
        #expect(CastKind.halfBits(Float(0.1).bitPattern) == 0x2E66)
    }

    @Test func bfloatRoundsToNearestEven() {
        #expect(CastKind.bfloatBits(0x3F80_0000) == 0x3F80)
        #expect(CastKind.bfloatBits(0x3F80_8000) == 0x3F80) // tie, even stays
        #expect(CastKind.bfloatBits(0x3F81_8000) == 0x3F82) // tie, odd goes up
        #expect(CastKind.bfloatBits(0x3F80_8001) == 0x3F81)
        #expect(CastKind.bfloatBits(0x7F7F_FFFF) == 0x7F80) // rounds to infinity
        #expect(CastKind.bfloatBits(0xFFC0_1234) == 0x7FC0) // NaN, as PyTorch
        let v = weights(50_000, seed: 3)
        #expect(
            v.withUnsafeBytes { p in
                var out = [UInt8](repeating: 0, count: 2 * v.count)
                out.withUnsafeMutableBytes { CastKind.bfloat16.cast(p, count: v.count, into: $0) }
                return out
            } == bf16Bytes(v))
    }
}

@Suite struct CastDedupTests {
    private let layout = SafetensorsLayout()

    @Test func castsOfStoredFp32TensorsAreStoredAsReferencesAndReadBack() throws {
        let dir = TempDir()
        var options = StoreOptions()
        options.compactBelow = 1.0
        let store = try ChunkStore(root: dir.path, options: options, create: true)
        let f = Family()
        let base = try store.put(f.base)
        let half = try store.put(f.half)
        let bfloat = try store.put(f.bfloat)
        let before = try store.stats()
        let report = try store.collectGarbage(tensors: layout)
        let casts = try #require(report.casts)
        #expect(casts.blobsScanned == 3)
        // a and b in fp16 and in bf16 (renamed, reordered: found by content, not name); the bias
        // is below the 8,192-value minimum.
        #expect(casts.tensorsMatched == 4)
        // Every chunk wholly inside a or b of either 16-bit file: all of their bytes, since the
        // planner also cuts where each large tensor ends (the small bias after `a` in the fp16
        // file gets a chunk of its own rather than sharing a's last one).
        var castBytes: Int64 = 0
        for (digest, bytes) in [(half.digest, f.half), (bfloat.digest, f.bfloat)] {
            let tensors = try #require(
                try layout.tensors(size: Int64(bytes.count)) { Array(bytes[Int($0.lowerBound)..<Int($0.upperBound)]) })
            let blob = try #require(try store.blob(digest))
            for e in try store.recipe(of: blob, from: 0, limit: 1000)
            where tensors.contains(where: { t in
                t.shape.reduce(1, *) >= 8192 && e.offset >= t.range.lowerBound && e.offset + Int64(e.length) <= t.range.upperBound
            }) {
                castBytes += Int64(e.length)
            }
        }
        #expect(castBytes == Int64(2 * (f.a.count + f.b.count) * 2))
        #expect(casts.bytesDerived == castBytes)
        let after = try store.stats()
        #expect(after.chunkBytes == before.chunkBytes - castBytes)
        #expect(after.storedBytes < before.storedBytes - castBytes / 2)
        #expect(try store.readAll(half.digest) == f.half)
        #expect(try store.readAll(bfloat.digest) == f.bfloat)
        #expect(try store.readAll(base.digest) == f.base)
        // A range read starting inside a cast chunk, at an odd byte.
        let start = f.half.withUnsafeBytes { 8 + Int64(UInt64(littleEndian: $0.loadUnaligned(as: UInt64.self))) } + 12_345
        #expect(try store.readAll(half.digest, range: start..<(start + 70_001)) == Array(f.half[Int(start)..<Int(start) + 70_001]))
        #expect(try store.fsck().isClean)
        // Scanned once: a second pass finds nothing new.
        #expect(try store.collectGarbage(tensors: layout).casts == CastReport())
    }

    @Test func aCastStoredBeforeItsSourceIsFoundWhenTheSourceArrives() throws {
        let dir = TempDir()
        let store = try ChunkStore(root: dir.path, create: true)
        let f = Family()
        let half = try store.put(f.half)
        #expect(try store.deriveCasts(layout: layout).chunksDerived == 0)
        _ = try store.put(f.base)
        let bfloat = try store.put(f.bfloat)
        // One blob per page: the fp32 file finds the fp16 one scanned before it, the bf16 file
        // (scanned after) finds the fp32 one.
        let first = try store.deriveCasts(layout: layout, blobLimit: 1)
        #expect(first.blobsScanned == 1 && first.tensorsMatched == 2)
        let second = try store.deriveCasts(layout: layout, blobLimit: 1)
        #expect(second.blobsScanned == 1 && second.tensorsMatched == 2)
        #expect(try store.readAll(half.digest) == f.half)
        #expect(try store.readAll(bfloat.digest) == f.bfloat)
        #expect(try store.fsck().isClean)
    }

    @Test func onlyTheChunksThatAreCastsAreDerived() throws {
        let dir = TempDir()
        let store = try ChunkStore(root: dir.path, create: true)
        let f = Family()
        _ = try store.put(f.base)
        let tuned = try store.put(f.tunedHalf)
        let casts = try #require(try store.collectGarbage(tensors: layout).casts)
        #expect(casts.tensorsMatched == 1)
        #expect(casts.bytesDerived == Int64(2 * f.a.count))
        #expect(try store.readAll(tuned.digest) == f.tunedHalf)
        #expect(try store.fsck().isClean)
    }

    @Test func garbageCollectionKeepsTheSourcesOfLiveCastsAndFreesThemAfter() throws {
        let dir = TempDir()
        var options = StoreOptions()
        options.writeGraceSeconds = 0
        let store = try ChunkStore(root: dir.path, options: options, create: true)
        let f = Family()
        let base = try store.put(f.base)
        let half = try store.put(f.half)
        let later = PackAppender.now() + 5_000
        #expect(try store.collectGarbage(now: later, tensors: layout).casts?.chunksDerived ?? 0 > 0)
        // The fp16 file goes while the fp32 one stays: its casts go, their sources stay (the fp32
        // file's own chunks).
        let bfloat = try store.put(f.bfloat)
        #expect(try store.collectGarbage(now: later, tensors: layout).casts?.chunksDerived ?? 0 > 0)
        try store.release(half.digest)
        let halfGone = try store.collectGarbage(now: later)
        #expect(halfGone.blobsDeleted == 1 && halfGone.castChunksDeleted > 0)
        #expect(try store.readAll(base.digest) == f.base)
        #expect(try store.readAll(bfloat.digest) == f.bfloat)
        // The fp32 file goes: the bf16 file's casts would keep all of it alive (twice their size),
        // so they are stored as plain chunks again and the fp32 chunks are swept, in the same GC.
        try store.release(base.digest)
        let baseGone = try store.collectGarbage(now: later)
        #expect(baseGone.blobsDeleted == 1)
        #expect(baseGone.castChunksMaterialized > 0)
        #expect(try store.catalog.read { try $0.castCounts() }.chunks == 0)
        #expect(try store.catalog.read { try $0.first("SELECT COUNT(*) FROM chunk_cast_sources") { $0.int(0) } } == 0)
        #expect(try store.stats().chunkBytes == Int64(f.bfloat.count))
        #expect(try store.readAll(bfloat.digest) == f.bfloat)
        #expect(try store.fsck().isClean)
        try store.release(bfloat.digest)
        _ = try store.collectGarbage(now: later)
        #expect(try store.stats().chunks == 0)
    }

    @Test func aDamagedCastDoesNotKeepTheOthersFromBeingMadePlain() throws {
        let dir = TempDir()
        var options = StoreOptions()
        options.writeGraceSeconds = 0
        let store = try ChunkStore(root: dir.path, options: options, create: true)
        let f = Family()
        let base = try store.put(f.base)
        let half = try store.put(f.half)
        let later = PackAppender.now() + 5_000
        _ = try store.collectGarbage(now: later, tensors: layout)
        let casts = try store.catalog.read { try $0.castHashes() }
        #expect(casts.count >= 2)
        // The smallest hash (the first a page would meet) points at the wrong bytes.
        try store.catalog.write { try $0.run("UPDATE chunk_casts SET source_offset = source_offset + 4 WHERE hash = ?", .hash(casts[0])) }
        try store.release(base.digest)
        let report = try store.collectGarbage(now: later)
        #expect(report.castChunksMaterialized == casts.count - 1)
        #expect(report.damagedChunks.map(\.chunk) == ["sha256:" + casts[0].hex])
        #expect(try store.catalog.read { try $0.castHashes() } == [casts[0]])
        // Every other chunk of the fp16 file reads from its plain record again.
        let blob = try #require(try store.blob(half.digest))
        let plain = try store.catalog.read { conn in
            try store.recipe(of: blob, from: 0, limit: 1000).filter { try conn.chunkLocation($0.hash) != nil }.count
        }
        #expect(try plain == store.recipe(of: blob, from: 0, limit: 1000).count - 1)
    }

    @Test func aDamagedSourceDoesNotStopGarbageCollection() throws {
        let dir = TempDir()
        let store = try ChunkStore(root: dir.path, create: true)
        let f = Family()
        let base = try store.put(f.base)
        let half = try store.put(f.half)
        // Damage one fp32 chunk in the middle of tensor `b` (the last tensor) on disk.
        let blob = try #require(try store.blob(base.digest))
        let entry = try #require(try store.recipe(of: blob, from: 0, limit: 1000).dropLast().last)
        let loc = try #require(try store.catalog.read { try $0.chunkLocation(entry.hash) })
        let file = try PosixFile(path: dir.path + "/" + PackFormat.relativePath(loc.pack), mode: .readWrite)
        try [UInt8](repeating: 0xEE, count: 64).withUnsafeBytes { try file.write($0, at: loc.offset + 100) }
        let report = try store.collectGarbage(tensors: layout)
        let casts = try #require(report.casts)
        #expect(casts.failures >= 1)
        #expect(casts.firstFailure != nil)
        #expect(casts.tensorsMatched >= 1) // tensor `a` still became casts
        #expect(try store.readAll(half.digest) == f.half)
    }

    @Test func aReStoredCastIsDeduplicatedAndServedAsARecord() throws {
        let dir = TempDir()
        let store = try ChunkStore(root: dir.path, create: true)
        let f = Family()
        _ = try store.put(f.base)
        let half = try store.put(f.half)
        _ = try store.collectGarbage(tensors: layout)
        // Pushing the same fp16 file again stores nothing: its chunks are present as casts.
        let again = try store.put(f.half)
        #expect(again.newChunks == 0)
        #expect(again.storedBytes == 0)
        // Chunk negotiation: casts are not missing, and their records decode to their bytes.
        let blob = try #require(try store.blob(half.digest))
        let recipe = try store.recipe(of: blob, from: 0, limit: 1000)
        #expect(try store.missingChunks(recipe.map(\.hash)).isEmpty)
        let records: [UInt8] = try store.records(recipe.map(\.hash), of: blob, as: [UInt8].self)
        let codec = ChunkRecordCodec(maxChunk: store.options.chunker.maxSize)
        var at = 0
        var bytes: [UInt8] = []
        try records.withUnsafeBytes { p in
            while at < p.count {
                let header = try ChunkRecords.header(
                    UnsafeRawBufferPointer(rebasing: p[at..<(at + PackFormat.recordHeaderSize)]), maxChunk: store.options.chunker.maxSize)
                let payload = UnsafeRawBufferPointer(
                    rebasing: p[(at + PackFormat.recordHeaderSize)..<(at + PackFormat.recordHeaderSize + header.storedLength)])
                try codec.verify(header, payload: payload) { bytes += $0 }
                at += PackFormat.recordHeaderSize + header.storedLength
            }
        }
        #expect(bytes == f.half)
    }

    @Test func aDamagedSourceIsReportedNotServed() throws {
        let dir = TempDir()
        let store = try ChunkStore(root: dir.path, create: true)
        let f = Family()
        _ = try store.put(f.base)
        let half = try store.put(f.half)
        _ = try store.collectGarbage(tensors: layout)
        let cast = try #require(try store.catalog.read { try $0.castHashes() }.first)
        let record = try #require(try store.catalog.read { try $0.chunkCast(cast) })
        // Point the cast at the wrong bytes: its hash check must fail on every read path.
        try store.catalog.write { try $0.run("UPDATE chunk_casts SET source_offset = source_offset + 4 WHERE hash = ?", .hash(cast)) }
        #expect(throws: DepotError.self) { try store.readAll(half.digest) }
        let report = try store.fsck()
        #expect(report.damagedChunks.map(\.chunk) == ["sha256:" + cast.hex])
        #expect(report.damagedChunks.first?.blobs == [half.digest.description])
        // And a source gone missing is named.
        try store.catalog.write {
            try $0.run("UPDATE chunk_casts SET source_offset = ? WHERE hash = ?", .int(Int64(record.sourceOffset)), .hash(cast))
        }
        #expect(try store.fsck().isClean)
        try store.catalog.write { try $0.run("DELETE FROM chunks WHERE hash = ?", .hash(record.sources[0])) }
        let missing = try store.fsck(verifyBlobDigests: false)
        #expect(missing.damagedChunks.contains { $0.chunk == "sha256:" + cast.hex && $0.reason.contains("missing") })
    }

    @Test func hostileLayoutsAndRecordsAreRefused() throws {
        let dir = TempDir()
        let store = try ChunkStore(root: dir.path, create: true)
        // A layout reader that claims tensors outside the blob, overlapping, of odd sizes.
        struct Lying: TensorLayoutReader {
            func tensors(size: Int64, read: (Range<Int64>) throws -> [UInt8]) throws -> [TensorExtent]? {
                [
                    TensorExtent(element: .float16, shape: [1 << 20], range: (size - 10)..<(size + (2 << 20))),
                    TensorExtent(element: .float32, shape: [1 << 40], range: 0..<(size - 1)),
                    TensorExtent(element: .float16, shape: [-1], range: (-4)..<size),
                ]
            }
        }
        let blob = try store.write(randomBytes(1 << 20, seed: 9), retain: "test")
        let report = try store.deriveCasts(layout: Lying())
        #expect(report.blobsScanned == 1 && report.chunksDerived == 0)
        // A malformed cast record is damage, never a crash.
        let record = try #require(try store.blob(blob.digest))
        let h = try #require(try store.recipe(of: record, from: 0, limit: 1).first?.hash)
        for (kind, skip, length) in [(9, 0, 100), (1, 7, 100), (1, 0, 1 << 30), (1, 0, -5)] {
            let record = CastRecord(kind: UInt8(kind), rawLength: length, skip: skip, sourceOffset: 0, sources: [h])
            #expect(throws: DepotError.self) { try store.decodeCast(h, record) }
        }
        #expect(throws: DepotError.self) {
            try store.decodeCast(h, CastRecord(kind: 1, rawLength: 10, skip: 0, sourceOffset: 0, sources: []))
        }
        #expect(throws: DepotError.self) {
            try store.decodeCast(h, CastRecord(kind: 1, rawLength: 10, skip: 0, sourceOffset: Int.max, sources: [h]))
        }
    }
}
