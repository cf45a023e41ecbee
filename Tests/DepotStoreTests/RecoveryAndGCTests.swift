import DepotCatalog
import DepotCore
import DepotTestSupport
import Foundation
import Testing

@testable import DepotStore

@Suite struct RecoveryTests {
    @Test func anUnacknowledgedPackTailIsCutOnOpen() throws {
        let dir = TempDir()
        let d: Digest
        do {
            let store = try ChunkStore(root: dir.path, create: true)
            d = try store.write(randomBytes(2 << 20, seed: 4)).digest
        }
        // Simulate a crash mid-append: bytes after the committed end of the pack.
        let packs = try ChunkStore(root: dir.path, readOnly: true).catalog.read { try $0.packs() }
        let path = dir.path + "/" + PackFormat.relativePath(packs[0].id)
        let file = try PosixFile(path: path, mode: .readWrite)
        let end = try file.size()
        try randomBytes(12345, seed: 8).withUnsafeBytes { try file.write($0, at: end) }
        let store = try ChunkStore(root: dir.path)
        #expect(store.recovery.truncatedBytes == 12345)
        #expect(try file.size() == end)
        #expect(try store.readAll(d) == randomBytes(2 << 20, seed: 4))
        #expect(try store.fsck().isClean)
    }

    @Test func orphanPackFilesAreQuarantinedAndLostPackDataIsDroppedOnlyByRepair() throws {
        let dir = TempDir()
        let d: Digest
        do {
            let store = try ChunkStore(root: dir.path, create: true)
            d = try store.write(randomBytes(1 << 20, seed: 4)).digest
        }
        let orphan = dir.path + "/" + PackFormat.relativePath(999)
        try FileSystem.createDirectory(String(orphan[..<orphan.lastIndex(of: "/")!]))
        try "junk".write(toFile: orphan, atomically: false, encoding: .utf8)
        // And a pack that lost its tail (a disk that lied about fsync): serving refuses, changing nothing.
        let packs = try ChunkStore(root: dir.path, readOnly: true).catalog.read { try $0.packs() }
        let file = try PosixFile(path: dir.path + "/" + PackFormat.relativePath(packs[0].id), mode: .readWrite)
        try file.truncate(to: try file.size() - 1000)
        #expect(throws: DepotError.self) { try ChunkStore(root: dir.path) }
        #expect(FileSystem.exists(orphan))
        let store = try ChunkStore(root: dir.path, ifDamaged: .repair)
        #expect(store.recovery.quarantinedPacks.count == 1)
        #expect(store.recovery.droppedChunkRows >= 1)
        #expect(store.recovery.lostBlobs == [d.description])
        #expect(!FileSystem.exists(orphan))
        let report = try store.fsck()
        #expect(report.affectedBlobs == [d.description])
        #expect(throws: DepotError.self) { try store.readAll(d) }
    }

    /// The real thing: a child process writing blobs is SIGKILLed at random moments, many times.
    /// Every blob it acknowledged must read back byte-identical, and fsck must be clean.
    @Test func sigkillDuringWritesLosesNothingAcknowledged() throws {
        let dir = TempDir()
        var acknowledged: [(seed: UInt64, index: Int, digest: String, size: Int)] = []
        let rounds = 12
        for round in 0..<rounds {
            let p = Process()
            p.executableURL = URL(fileURLWithPath: depotExecutable)
            p.arguments =
                ["debug", "write-loop", "--storage", dir.path, "--seed", "\(round + 1)", "--max-size", "\(3 << 20)"]
                + (round % 3 == 2 ? ["--gc"] : [])
            let out = Pipe()
            p.standardOutput = out
            p.standardError = FileHandle.nullDevice
            try p.run()
            usleep(UInt32.random(in: 300_000...1_200_000))
            kill(p.processIdentifier, SIGKILL)
            p.waitUntilExit()
            let text = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            for line in text.split(separator: "\n") {
                let f = line.split(separator: " ")
                guard f.count == 4, f[0] == "ACK", let i = Int(f[1]), let n = Int(f[3]) else { continue }
                acknowledged.append((UInt64(round + 1), i, String(f[2]), n))
            }
        }
        #expect(acknowledged.count > 5, "the writer acknowledged too few blobs to test anything")
        let store = try ChunkStore(root: dir.path)
        for a in acknowledged {
            var expected: [UInt8] = []
            SyntheticContent.generate(seed: a.seed, index: a.index, size: a.size) { expected.append(contentsOf: $0) }
            let got = try store.readAll(try Digest(parsing: a.digest))
            #expect(got == expected, "blob \(a.digest) of round \(a.seed)")
        }
        let report = try store.fsck()
        #expect(report.isClean, "\(report.damagedChunks) \(report.damagedBlobs)")
    }
}

@Suite struct GarbageCollectionTests {
    @Test func gcKeepsRootsAndSweepsTheRestAndCompactsPacks() throws {
        let dir = TempDir()
        var options = StoreOptions()
        options.packTargetSize = 2 << 20
        let store = try ChunkStore(root: dir.path, options: options, create: true)
        let keep = randomBytes(3 << 20, seed: 1)
        let drop = randomBytes(3 << 20, seed: 2)
        let shared = randomBytes(1 << 20, seed: 3)
        let k = try store.write(keep + shared).digest
        let x = try store.write(drop + shared).digest
        try store.retain(k, reason: "test")
        let before = try store.stats()
        #expect(try store.collectGarbage().blobsDeleted == 0) // fresh blobs are kept for the grace period
        let report = try store.collectGarbage(now: Int64(Date().timeIntervalSince1970 * 1000) + (options.writeGraceSeconds + 1) * 1000)
        #expect(report.blobsDeleted == 1)
        #expect(report.chunkBytesFreed > 0)
        #expect(try store.blob(x) == nil)
        #expect(try store.readAll(k) == keep + shared)
        let after = try store.stats()
        #expect(after.chunkBytes < before.chunkBytes)
        #expect(after.storedBytes < before.storedBytes) // compaction gave disk space back
        #expect(try store.fsck().isClean)
    }

    @Test func unfinishedWritesSurviveWithinTheGracePeriodOnly() throws {
        let dir = TempDir()
        var options = StoreOptions()
        options.writeGraceSeconds = 3600
        let store = try ChunkStore(root: dir.path, options: options, create: true)
        let w = try store.makeWriter()
        try w.write(randomBytes(2 << 20, seed: 4))
        try store.appender.checkpoint()
        // Even past the grace period, a write in progress in this process is a root.
        _ = try store.collectGarbage(now: Int64(Date().timeIntervalSince1970 * 1000) + 7_200_000)
        try w.write(randomBytes(1 << 20, seed: 5))
        let r = try w.finish()
        try store.retain(r.digest, reason: "t")
        #expect(try store.readAll(r.digest) == randomBytes(2 << 20, seed: 4) + randomBytes(1 << 20, seed: 5))
        #expect(try store.fsck().isClean)
    }

    @Test func writesAbandonedByACrashAreCollectedAfterTheGracePeriod() throws {
        let dir = TempDir()
        // A writer killed in the middle of a large blob leaves an unfinished write behind.
        let p = Process()
        p.executableURL = URL(fileURLWithPath: depotExecutable)
        p.arguments = [
            "debug", "write-loop", "--storage", dir.path, "--count", "1", "--min-size", "\(1 << 30)", "--max-size", "\(2 << 30)",
        ]
        p.standardOutput = FileHandle.nullDevice
        try p.run()
        usleep(1_500_000)
        kill(p.processIdentifier, SIGKILL)
        p.waitUntilExit()
        var options = StoreOptions()
        options.writeGraceSeconds = 3600
        let store = try ChunkStore(root: dir.path, options: options)
        #expect(try store.stats().unfinishedWrites == 1)
        #expect(try store.stats().chunks > 0)
        _ = try store.collectGarbage()
        #expect(try store.stats().unfinishedWrites == 1) // within the grace period: may still resume
        _ = try store.collectGarbage(now: Int64(Date().timeIntervalSince1970 * 1000) + 7_200_000)
        #expect(try store.stats().unfinishedWrites == 0)
        #expect(try store.stats().chunks == 0)
        #expect(try store.stats().storedBytes == 0)
        #expect(try store.fsck().isClean)
    }

    /// A write is a GC root from the moment its blob row exists. The row used to be inserted
    /// before the appender (whose lock the sweep holds) knew the write as active, so a sweep in
    /// between deleted the new row as a stale unfinished write; the writer's recipe rows then
    /// failed the `recipes.blob_id` foreign key at the next flush (the GC-in-a-loop crash).
    /// Here that order is forced: another connection holds the catalog's write lock while the
    /// writer starts its blob and a collection starts, then lets go.
    @Test func aCollectionWhileAWriteStartsDoesNotDeleteItsBlobRow() throws {
        let dir = TempDir()
        var options = StoreOptions()
        options.writeGraceSeconds = 0
        let store = try ChunkStore(root: dir.path, options: options, create: true)
        let other = try Database(path: dir.path + "/catalog.db")
        let holding = DispatchSemaphore(value: 0)
        let release = DispatchSemaphore(value: 0)
        let group = DispatchGroup()
        DispatchQueue(label: "test.catalog-lock").async(group: group) {
            _ = try? other.write { _ in
                holding.signal()
                release.wait()
            }
        }
        holding.wait()
        let writer = Locked<Result<BlobWriter, any Error>?>(nil)
        DispatchQueue(label: "test.writer").async(group: group) {
            let made = Result { try store.makeWriter() }
            writer.withLock { $0 = made }
        }
        usleep(300_000) // the writer now waits for the catalog inside beginBlob
        let gc = Locked<Result<GCReport, any Error>?>(nil)
        DispatchQueue(label: "test.gc").async(group: group) {
            // Far past the grace period: any unfinished write that is not a root is garbage.
            let report = Result { try store.collectGarbage(now: PackAppender.now() + 3_600_000) }
            gc.withLock { $0 = report }
        }
        usleep(300_000) // and so does the collection
        release.signal()
        group.wait()
        let w = try #require(writer.withLock { $0 }).get()
        let data = randomBytes(300_000, seed: 21)
        try w.write(data)
        let r = try w.finish(retain: "t")
        #expect(try gc.withLock { $0 }?.get().blobsDeleted == 0)
        #expect(try store.readAll(r.digest) == data)
        #expect(try store.fsck().isClean)
    }

    @Test func gcInALoopWhileWritingAndReadingLosesNothing() throws {
        let dir = TempDir()
        var options = StoreOptions()
        options.packTargetSize = 1 << 20
        options.flushBytes = 256 << 10
        options.writeGraceSeconds = 0
        let store = try ChunkStore(root: dir.path, options: options, create: true)
        let stop = Locked(false)
        let gcRuns = Locked(0)
        let group = DispatchGroup()
        // A serial queue of its own (over-committing): the global pool may be saturated by other
        // tests running in parallel, and the collector must run while the writes happen.
        DispatchQueue(label: "test.gc-loop").async(group: group) {
            while !stop.withLock({ $0 }) {
                _ = try! store.collectGarbage()
                gcRuns.withLock { $0 += 1 }
            }
        }
        var kept: [(Digest, [UInt8])] = []
        for i in 0..<30 {
            // Half the blobs are kept, half become garbage; all share runs with each other.
            let data = randomBytes(200_000, seed: UInt64(i % 7)) + randomBytes(300_000, seed: UInt64(100 + i))
            let r = try store.write(data, piece: 65_000, retain: i % 2 == 0 ? "t" : nil)
            if i % 2 == 0 { kept.append((r.digest, data)) }
            for (d, bytes) in kept.suffix(3) { #expect(try store.readAll(d) == bytes) }
        }
        stop.withLock { $0 = true }
        group.wait()
        _ = try store.collectGarbage()
        #expect(gcRuns.withLock { $0 } > 1)
        for (d, bytes) in kept { #expect(try store.readAll(d) == bytes) }
        #expect(try store.fsck().isClean)
    }
}
