import DepotCatalog
import DepotCore
import DepotTestSupport
import Foundation
import Testing

@testable import DepotStore

@Suite struct BlobStoreTests {
    @Test func writesAndReadsBackIdenticalBytesWithDigest() throws {
        let dir = TempDir()
        let store = try ChunkStore(root: dir.path, create: true)
        for (n, seed) in [(0, 1), (1, 2), (100, 3), (70_000, 4), (5 << 20, 5)] {
            let data = randomBytes(n, seed: UInt64(seed))
            let r = try store.write(data, piece: 7777)
            #expect(r.digest == Digest.of(data))
            #expect(r.size == Int64(n))
            #expect(try store.readAll(r.digest) == data)
            #expect(try store.blob(r.digest)?.size == Int64(n))
        }
    }

    @Test func rangesMapOntoTheRecipe() throws {
        let dir = TempDir()
        let store = try ChunkStore(root: dir.path, create: true)
        let data = randomBytes(3 << 20, seed: 9)
        let d = try store.write(data).digest
        for (a, b) in [(0, 1), (0, 3 << 20), (65_535, 65_537), (1_000_000, 2_500_000), ((3 << 20) - 1, 3 << 20), (5, 5)] {
            #expect(try store.readAll(d, range: Int64(a)..<Int64(b)) == Array(data[a..<b]))
        }
        #expect(throws: DepotError.self) { try store.reader(d, range: 0..<Int64((3 << 20) + 1)) }
    }

    /// A batch is what one GET holds per step (NIO rounds a buffer up to a power of two, so a
    /// batch just past 1 MiB would cost 2 MiB): batches stay within `batchBytes` and end where
    /// a chunk ends, except that a range starts and ends where it asks, and a chunk larger than
    /// `batchBytes` is a batch of its own. The bytes are the blob's, in order, whatever the range.
    @Test func batchesStayWithinTheirSizeAndEndAtChunkEnds() throws {
        let dir = TempDir()
        let store = try ChunkStore(root: dir.path, create: true)
        let data = randomBytes(6 << 20, seed: 19)
        let d = try store.write(data).digest
        let blob = try #require(try store.blob(d))
        let recipe = try store.catalog.read { try $0.recipe(blob: blob.id, from: 0, limit: 100_000) }
        let ends = Set(recipe.map { $0.offset + Int64($0.length) })
        for (range, batchBytes) in [
            (0..<data.count, 1 << 20), (12_345..<5_000_000, 1 << 20), (0..<data.count, 300_000), (777..<(6 << 20) - 1, 65_536),
        ] {
            let reader = try store.reader(d, range: Int64(range.lowerBound)..<Int64(range.upperBound), as: [UInt8].self)
            reader.batchBytes = batchBytes
            var out: [UInt8] = []
            var position = Int64(range.lowerBound)
            while let batch = try reader.next() {
                let end = position + Int64(batch.count)
                let oneChunk = ends.filter { $0 > position && $0 < end }.isEmpty
                #expect(batch.count <= batchBytes || oneChunk, "a batch of \(batch.count) bytes with \(batchBytes) allowed")
                #expect(ends.contains(end) || end == Int64(range.upperBound), "a batch ends at \(end), inside a chunk")
                // A batch stops early only when the next chunk would not have fitted.
                if let next = recipe.first(where: { $0.offset == end }), end < Int64(range.upperBound) {
                    let take = min(next.offset + Int64(next.length), Int64(range.upperBound)) - end
                    #expect(Int64(batch.count) + take > Int64(batchBytes), "a batch of \(batch.count) bytes stopped early")
                }
                out += batch
                position = end
            }
            #expect(out == Array(data[range]))
        }
    }

    @Test func identicalContentIsStoredOnceAndSharedRunsDedup() throws {
        let dir = TempDir()
        let store = try ChunkStore(root: dir.path, create: true)
        let base = randomBytes(4 << 20, seed: 21)
        let first = try store.write(base)
        #expect(first.newBytes == Int64(base.count))
        let again = try store.write(base, piece: 12345)
        #expect(again.digest == first.digest)
        #expect(again.newBytes == 0)
        // Same bytes behind a 16-byte longer prefix: content-defined cuts resynchronize.
        let shifted = randomBytes(16, seed: 99) + base
        let third = try store.write(shifted)
        #expect(third.reusedBytes > Int64(base.count) * 9 / 10)
        let stats = try store.stats()
        #expect(stats.blobs == 2)
        #expect(stats.logicalBytes == Int64(base.count + shifted.count))
        #expect(stats.chunkBytes < Int64(base.count) * 11 / 10)
    }

    @Test func concurrentWritersOfTheSameContentStoreItOnce() throws {
        let dir = TempDir()
        let store = try ChunkStore(root: dir.path, create: true)
        let data = randomBytes(6 << 20, seed: 33)
        let results = Locked<[WriteResult]>([])
        DispatchQueue.concurrentPerform(iterations: 6) { i in
            let r = try! store.write(data, piece: 10_000 + i * 997)
            results.withLock { $0.append(r) }
        }
        let all = results.withLock { $0 }
        #expect(Set(all.map(\.digest)) == [Digest.of(data)])
        let stats = try store.stats()
        #expect(stats.chunkBytes == Int64(data.count)) // every chunk stored exactly once
        #expect(try store.readAll(Digest.of(data)) == data)
    }

    @Test func aDigestMismatchStoresNothing() throws {
        let dir = TempDir()
        let store = try ChunkStore(root: dir.path, create: true)
        let data = randomBytes(200_000, seed: 1)
        let w = try store.makeWriter()
        try w.write(data)
        let wrong = Digest.of([1, 2, 3])
        #expect(throws: DepotError.self) { try w.finish(expecting: wrong) }
        #expect(try store.blob(Digest.of(data)) == nil)
        #expect(try store.blob(wrong) == nil)
        #expect(try store.stats().blobs == 0)
    }

    @Test func aCorruptedPackByteIsAnIntegrityErrorNamingTheChunkAndFsckNamesTheBlobs() throws {
        let dir = TempDir()
        var digests: [Digest] = []
        let shared = randomBytes(1 << 20, seed: 77)
        do {
            let store = try ChunkStore(root: dir.path, create: true)
            digests.append(try store.write(shared + randomBytes(300_000, seed: 1)).digest)
            digests.append(try store.write(randomBytes(300_000, seed: 2) + shared).digest)
            digests.append(try store.write(randomBytes(500_000, seed: 3)).digest)
            for d in digests { try store.retain(d, reason: "test") }
            #expect(try store.fsck().isClean)
        }
        // Flip one byte in the middle of a chunk that both of the first two blobs share.
        let store = try ChunkStore(root: dir.path)
        let recipes = try digests.prefix(2).map { d in
            try store.catalog.read { try $0.recipe(blob: store.blob(d)!.id, from: 0, limit: 1000) }
        }
        let shared2 = Set(recipes[1].map(\.hash))
        let first = recipes[0].first { shared2.contains($0.hash) }!
        let loc = try store.catalog.read { try $0.chunkLocation(first.hash) }!
        let file = try PosixFile(path: dir.path + "/" + PackFormat.relativePath(loc.pack), mode: .readWrite)
        var byte: [UInt8] = [0]
        let at = loc.offset + Int64(PackFormat.recordHeaderSize) + Int64(loc.storedLength / 2)
        try byte.withUnsafeMutableBytes { try file.read(into: $0, at: at) }
        byte[0] ^= 0x5A
        try byte.withUnsafeBytes { try file.write($0, at: at) }

        do {
            _ = try store.readAll(digests[0])
            Issue.record("a damaged blob was served")
        } catch DepotError.integrity(let message) {
            #expect(message.contains(first.hash.hex))
        }
        // Untouched blobs still read.
        #expect(try store.readAll(digests[2]).count == 500_000)
        let report = try store.fsck()
        #expect(!report.isClean)
        #expect(report.damagedChunks.map(\.chunk) == ["sha256:" + first.hash.hex])
        #expect(report.affectedBlobs == Set([digests[0].description, digests[1].description]))
    }

    @Test func aNewerFormatOrMissingRootIsAClearError() throws {
        let dir = TempDir()
        #expect(throws: DepotError.storage("storage root \(dir.path)/nope does not exist")) {
            try ChunkStore(root: dir.path + "/nope")
        }
        _ = try ChunkStore(root: dir.path + "/s", create: true)
        try "depot-store 99\n".write(toFile: dir.path + "/s/FORMAT", atomically: true, encoding: .utf8)
        do {
            _ = try ChunkStore(root: dir.path + "/s")
            Issue.record("opened a newer store")
        } catch DepotError.storage(let m) {
            #expect(m.contains("newer"))
        }
    }

    @Test func aSecondProcessCannotOpenALockedStore() throws {
        let dir = TempDir()
        let store = try ChunkStore(root: dir.path, create: true)
        _ = try store.write(randomBytes(1000, seed: 1))
        let p = Process()
        p.executableURL = URL(fileURLWithPath: depotExecutable)
        p.arguments = ["gc", "--storage", dir.path]
        let err = Pipe()
        p.standardError = err
        try p.run()
        p.waitUntilExit()
        let message = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        #expect(p.terminationStatus != 0)
        #expect(message.contains("in use by another process"))
    }
}

/// Whether this process may mount a small tmpfs (root in a container usually can).
let canMountTmpfs: Bool = {
    let dir = NSTemporaryDirectory() + "/depot-mount-probe-\(getpid())"
    try? FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    defer {
        _ = umount(dir)
        try? FileManager.default.removeItem(atPath: dir)
    }
    return mount("tmpfs", dir, "tmpfs", 0, "size=1m") == 0
}()

@Suite struct FullDiskTests {
    func depot(_ args: [String]) throws -> (Int32, String) {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: depotExecutable)
        p.arguments = args
        let out = Pipe()
        p.standardOutput = out
        p.standardError = out
        try p.run()
        let text = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        p.waitUntilExit()
        return (p.terminationStatus, text)
    }

    /// A real full disk (an 8 MiB tmpfs): the write fails with a clear error, nothing is
    /// half-committed, and the next open reclaims the space the failed write used.
    @Test(.enabled(if: canMountTmpfs, "needs permission to mount a tmpfs"))
    func aFullDiskFailsTheWriteCleanlyAndTheSpaceComesBack() throws {
        let dir = TempDir("fulldisk")
        let mnt = dir.path + "/mnt"
        try FileManager.default.createDirectory(atPath: mnt, withIntermediateDirectories: true)
        #expect(mount("tmpfs", mnt, "tmpfs", 0, "size=8m") == 0)
        defer { _ = umount(mnt) }
        try Data(randomBytes(20 << 20, seed: 1)).write(to: URL(fileURLWithPath: dir.path + "/big.bin"))
        try Data(randomBytes(1 << 20, seed: 2)).write(to: URL(fileURLWithPath: dir.path + "/small.bin"))
        let (code, text) = try depot(["blob", "put", "--storage", mnt + "/st", dir.path + "/big.bin"])
        #expect(code == 1)
        #expect(text.contains("no space left on device"), "\(text)")
        let (fsckCode, fsckText) = try depot(["fsck", "--storage", mnt + "/st"])
        #expect(fsckCode == 0, "\(fsckText)")
        #expect(fsckText.contains("checked 0 chunks"))
        let (putCode, putText) = try depot(["blob", "put", "--storage", mnt + "/st", dir.path + "/small.bin"])
        #expect(putCode == 0, "\(putText)")
        let store = try ChunkStore(root: mnt + "/st", readOnly: true)
        #expect(try store.stats().blobs == 1)
    }
}

@Suite struct AbortTests {
    @Test func droppingAWriterMidStreamLeavesTheStoreWritable() throws {
        let dir = TempDir()
        let store = try ChunkStore(root: dir.path, create: true)
        let shared = randomBytes(4 << 20, seed: 42)
        _ = try store.write(shared, retain: "base")
        for i in 0..<5 {
            // Workers are still hashing and referencing chunks when the writer goes away.
            do {
                let w = try store.makeWriter()
                try w.write(shared)
                try w.write(randomBytes(1 << 20, seed: UInt64(i)))
            }
            let r = try store.write(shared + randomBytes(1000, seed: UInt64(100 + i)), retain: "after")
            #expect(try store.readAll(r.digest).count == shared.count + 1000)
        }
        #expect(try store.stats().unfinishedWrites == 0)
        _ = try store.collectGarbage(now: Int64(Date().timeIntervalSince1970 * 1000) + 100_000_000)
        #expect(try store.fsck().isClean)
    }
}
