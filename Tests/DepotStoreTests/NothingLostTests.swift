import DepotCatalog
import DepotCore
import DepotTestSupport
import Foundation
import Testing

@testable import DepotStore

/// Issue #12: recovery never deletes acknowledged data on its own; damage is refused at open,
/// reported by `depot fsck`, and dropped only by `depot fsck --repair`.
@Suite struct RecoveryNeverDeletesTests {
    /// A store with one acknowledged blob, closed. Returns the blob and its bytes.
    static func storeWithBlob(_ dir: TempDir, seed: UInt64 = 4, size: Int = 1 << 20) throws -> (Digest, [UInt8]) {
        let bytes = randomBytes(size, seed: seed)
        let store = try ChunkStore(root: dir.path, create: true)
        let d = try store.write(bytes, retain: "t").digest
        return (d, bytes)
    }

    static func packPaths(_ dir: TempDir) throws -> [String] {
        try ChunkStore(root: dir.path, readOnly: true).catalog.read { try $0.packs() }
            .map { dir.path + "/" + PackFormat.relativePath($0.id) }
    }

    static func chunkRows(_ dir: TempDir) throws -> Int {
        try ChunkStore(root: dir.path, readOnly: true).stats().chunks
    }

    /// Opening must fail with a storage error whose text contains every one of `parts`.
    static func expectRefusal(
        _ dir: TempDir, create: Bool = true, _ parts: [String],
        sourceLocation: SourceLocation = #_sourceLocation
    ) {
        do {
            _ = try ChunkStore(root: dir.path, create: create)
            Issue.record("the store opened", sourceLocation: sourceLocation)
        } catch DepotError.storage(let message) {
            for p in parts { #expect(message.contains(p), "\(message)", sourceLocation: sourceLocation) }
        } catch {
            Issue.record("unexpected error \(error)", sourceLocation: sourceLocation)
        }
    }

    @Test func aMissingPackRefusesTheOpenThenOpensCleanOnceRestored() throws {
        let dir = TempDir()
        let (d, bytes) = try Self.storeWithBlob(dir)
        let pack = try #require(try Self.packPaths(dir).first)
        let rows = try Self.chunkRows(dir)
        try FileSystem.rename(pack, dir.path + "/moved-away") // the packs volume "not mounted"
        let rel = String(pack.dropFirst(dir.path.count + 1))
        Self.expectRefusal(
            dir,
            [
                "\(rel) is referenced by the catalog", "missing (ENOENT)", "mount it",
                "depot fsck --repair --storage \(dir.path)", "Nothing was changed",
            ])
        Self.expectRefusal(dir, ["missing (ENOENT)"]) // and again: the first refusal dropped nothing
        #expect(try Self.chunkRows(dir) == rows)
        try FileSystem.rename(dir.path + "/moved-away", pack)
        let store = try ChunkStore(root: dir.path)
        #expect(store.recovery.isClean)
        #expect(try store.readAll(d) == bytes)
        #expect(try store.fsck().isClean)
    }

    @Test func packsUnreadableAtStartThenReadableAgainLoseNothing() throws {
        let dir = TempDir()
        let (d, bytes) = try Self.storeWithBlob(dir)
        let rows = try Self.chunkRows(dir)
        // Tests run as root, where chmod 000 stops nothing: inject the errors instead.
        for (op, code, name) in [(FaultInjection.Operation.stat, EACCES, "EACCES"), (.open, EIO, "EIO")] {
            let fault = FaultInjection.arm(op, errno: code, pathContains: dir.path + "/packs/")
            Self.expectRefusal(dir, ["unreadable (\(name))", "Nothing was changed"])
            FaultInjection.disarm(fault)
            #expect(try Self.chunkRows(dir) == rows, "\(name): no index row was dropped")
        }
        // An unreadable FORMAT file is not a missing one: the store is not created over.
        let format = FaultInjection.arm(.stat, errno: EIO, pathContains: dir.path + "/FORMAT")
        Self.expectRefusal(dir, ["FORMAT is unreadable (EIO)"])
        FaultInjection.disarm(format)
        // A pack path that is suddenly not a file (a bad mount) is unreadable, not missing.
        let pack = try #require(try Self.packPaths(dir).first)
        try FileSystem.rename(pack, pack + ".real")
        try FileSystem.createDirectory(pack)
        Self.expectRefusal(dir, ["unreadable (not a regular file)"])
        // fsck --repair does not drop rows of a pack that is only unreadable.
        #expect(throws: DepotError.self) { try ChunkStore(root: dir.path, ifDamaged: .repair) }
        #expect(try Self.chunkRows(dir) == rows)
        _ = rmdir(pack)
        try FileSystem.rename(pack + ".real", pack)
        let store = try ChunkStore(root: dir.path)
        #expect(store.recovery.isClean)
        #expect(try store.readAll(d) == bytes)
        #expect(try store.fsck().isClean)
    }

    @Test(.disabled(if: Database.isTestingOnPostgres, "deletes and empties the SQLite catalog file"))
    func aMissingOrEmptyCatalogNextToPacksIsRefusedAndNotRecreated() throws {
        let dir = TempDir()
        let (d, bytes) = try Self.storeWithBlob(dir)
        let catalog = dir.path + "/catalog.db"
        for suffix in ["", "-wal", "-shm"] where FileSystem.exists(catalog + suffix) {
            try FileSystem.rename(catalog + suffix, dir.path + "/saved.db" + suffix)
        }
        Self.expectRefusal(dir, ["catalog.db is missing but packs/ holds 1 pack file(s)", "Restore the matching catalog.db"])
        #expect(!FileSystem.exists(catalog), "the refusal must not create an empty catalog")
        #expect(throws: DepotError.self) { try ChunkStore(root: dir.path, ifDamaged: .repair) }
        // An empty catalog (recreated by hand, or restored from before any pack) is refused too.
        _ = try Database(path: catalog)
        Self.expectRefusal(dir, ["catalog.db records no packs but packs/ holds 1 pack file(s)"])
        #expect(try Self.packPaths(dir).isEmpty)
        for suffix in ["-wal", "-shm"] { try FileSystem.remove(catalog + suffix) }
        for suffix in ["", "-wal", "-shm"] where FileSystem.exists(dir.path + "/saved.db" + suffix) {
            try FileSystem.rename(dir.path + "/saved.db" + suffix, catalog + suffix)
        }
        let store = try ChunkStore(root: dir.path)
        #expect(try store.readAll(d) == bytes)
        #expect(try store.fsck().isClean)
    }

    @Test func aPackFileUnknownToTheCatalogIsQuarantinedNotDeleted() throws {
        let dir = TempDir()
        let (d, bytes) = try Self.storeWithBlob(dir)
        let unknown = dir.path + "/" + PackFormat.relativePath(999)
        try FileSystem.createDirectory(String(unknown[..<unknown.lastIndex(of: "/")!]))
        try "a newer catalog's data".write(toFile: unknown, atomically: false, encoding: .utf8)
        let store = try ChunkStore(root: dir.path)
        #expect(store.recovery.quarantinedPacks == ["packs/quarantine/0000000003e7.pack"])
        #expect(!FileSystem.exists(unknown))
        let kept = try String(contentsOfFile: dir.path + "/packs/quarantine/0000000003e7.pack", encoding: .utf8)
        #expect(kept == "a newer catalog's data")
        #expect(try store.readAll(d) == bytes)
        #expect(try store.fsck().isClean)
    }

    /// GC deletes a pack in three durable steps (mark the row, unlink, drop the row). A crash after
    /// the mark leaves a marked row: recovery finishes the deletion the catalog recorded, while a
    /// file with no row at all (a restored older catalog) is only quarantined.
    @Test func aPackDeletionGCCommittedToIsFinishedButAFileWithoutARowIsKept() throws {
        let dir = TempDir()
        var options = StoreOptions()
        options.packTargetSize = 1 << 20
        let d: Digest
        do {
            let store = try ChunkStore(root: dir.path, options: options, create: true)
            _ = try store.write(randomBytes(1_100_000, seed: 7)) // fills pack 1, ends in pack 2
            d = try store.write(randomBytes(900_000, seed: 8), retain: "t").digest
        }
        let packs = try ChunkStore(root: dir.path, readOnly: true).catalog.read { try $0.packs() }
        #expect(packs.count >= 2)
        let doomed = packs[0].id
        let other = dir.path + "/" + PackFormat.relativePath(packs[1].id)
        // The state GC leaves when killed right after its first step.
        let catalog = try Database(path: dir.path + "/catalog.db")
        try catalog.write { conn in
            for (hash, _) in try conn.chunks(inPack: doomed) {
                for b in try conn.blobs(containing: hash) { try conn.deleteBlob(id: conn.blob(b)!.id) }
            }
            _ = try conn.deleteUnreferencedChunks()
            #expect(try conn.chunks(inPack: doomed).isEmpty)
            try conn.markPackDeleting(doomed)
        }
        // A pack file whose row is gone altogether: kept, in quarantine.
        let stray = dir.path + "/" + PackFormat.relativePath(77)
        try FileSystem.createDirectory(String(stray[..<stray.lastIndex(of: "/")!]))
        try "older catalog".write(toFile: stray, atomically: false, encoding: .utf8)
        let store = try ChunkStore(root: dir.path, options: options)
        #expect(store.recovery.gcDeletionsFinished == 1)
        #expect(!FileSystem.exists(dir.path + "/" + PackFormat.relativePath(doomed)))
        #expect(try store.catalog.read { try $0.packs() }.allSatisfy { $0.id != doomed })
        #expect(store.recovery.quarantinedPacks == ["packs/quarantine/00000000004d.pack"])
        #expect(FileSystem.exists(other))
        #expect(try store.readAll(d) == randomBytes(900_000, seed: 8))
        #expect(try store.fsck().isClean)
    }

    @Test func aShortPackIsRefusedReportedByFsckAndDroppedOnlyByRepair() throws {
        let dir = TempDir()
        let (d, bytes) = try Self.storeWithBlob(dir)
        let pack = try #require(try Self.packPaths(dir).first)
        let file = try PosixFile(path: pack, mode: .readWrite)
        try file.truncate(to: try file.size() - 1000) // a disk that lied about fsync
        Self.expectRefusal(dir, ["acknowledged data is missing from its end", "depot fsck --repair"])
        // `depot fsck` (report): the damage is listed and left in place.
        do {
            let store = try ChunkStore(root: dir.path, ifDamaged: .report)
            #expect(store.recovery.problems.count == 1)
            #expect(store.recovery.droppedChunkRows == 0)
            let report = try store.fsck()
            #expect(report.affectedBlobs == [d.description])
        }
        Self.expectRefusal(dir, ["acknowledged data is missing from its end"])
        // `depot fsck --repair`: rows dropped, the blob named.
        do {
            let store = try ChunkStore(root: dir.path, ifDamaged: .repair)
            #expect(store.recovery.droppedChunkRows >= 1)
            #expect(store.recovery.lostBlobs == [d.description])
        }
        // Serving works again; the lost blob fails loudly, and re-writing it heals it.
        let store = try ChunkStore(root: dir.path)
        #expect(throws: DepotError.self) { try store.readAll(d) }
        #expect(try store.fsck().affectedBlobs == [d.description])
        #expect(try store.write(bytes).digest == d)
        #expect(try store.readAll(d) == bytes)
        #expect(try store.fsck().isClean)
    }

    @Test func repairOfAMissingPackListsEveryBlobThatLostChunks() throws {
        let dir = TempDir()
        var options = StoreOptions()
        options.packTargetSize = 1 << 20
        // a fills most of pack 1; b starts there and goes on in pack 2, which holds only b.
        let a = randomBytes(900_000, seed: 1)
        let b = randomBytes(900_000, seed: 2)
        let da: Digest
        let db: Digest
        do {
            let store = try ChunkStore(root: dir.path, options: options, create: true)
            da = try store.write(a, retain: "t").digest
            db = try store.write(b, retain: "t").digest
        }
        let packs = try Self.packPaths(dir)
        #expect(packs.count >= 2)
        try FileSystem.remove(packs.last!)
        Self.expectRefusal(dir, ["missing (ENOENT)"])
        let store = try ChunkStore(root: dir.path, options: options, ifDamaged: .repair)
        #expect(store.recovery.lostBlobs == [db.description])
        #expect(try store.readAll(da) == a)
        #expect(try store.fsck().affectedBlobs == [db.description])
    }
}

/// Issue #12 item 7 at the store level: injected I/O faults give clear errors, acknowledged
/// data survives, and fsck is clean afterwards.
@Suite struct FaultInjectionStoreTests {
    @Test func aFailedFdatasyncFailsTheWriteAbandonsThePackAndLosesNothing() throws {
        let dir = TempDir()
        let a = randomBytes(1 << 20, seed: 10)
        let b = randomBytes(1 << 20, seed: 11)
        let store = try ChunkStore(root: dir.path, create: true)
        let da = try store.write(a, retain: "t").digest
        let fault = FaultInjection.arm(.fdatasync, errno: EIO, pathContains: dir.path + "/packs/", count: 1)
        do {
            _ = try store.write(b, retain: "t")
            Issue.record("the write was acknowledged although its fsync failed")
        } catch DepotError.io(let m) {
            #expect(m.contains("fsync") && m.contains("Input/output error"), "\(m)")
        }
        #expect(FaultInjection.firedCount(fault) == 1)
        let before = try store.catalog.read { try $0.packs() }
        // The pack whose fsync failed is sealed and never appended to again (fsyncgate).
        let abandoned = try #require(before.last)
        #expect(abandoned.sealed)
        #expect(try PosixFile(path: dir.path + "/" + PackFormat.relativePath(abandoned.id), mode: .read).size() == abandoned.committedSize)
        let db = try store.write(b, retain: "t").digest
        let after = try store.catalog.read { try $0.packs() }
        #expect(after.last!.id > abandoned.id)
        #expect(after.first { $0.id == abandoned.id }?.committedSize == abandoned.committedSize)
        #expect(try store.readAll(da) == a)
        #expect(try store.readAll(db) == b)
        #expect(try store.fsck().isClean)
    }

    /// The periodic group commit runs on the appender's committer, outside the writers' lock
    /// (issue #19). A failed fsync there must still fail the write that had rows in the batch,
    /// with the fsync error, abandon the pack, and lose nothing acknowledged.
    @Test func aFailedFdatasyncInAHandedOffCommitFailsTheWriteWithItsError() throws {
        let dir = TempDir()
        var options = StoreOptions()
        options.flushBytes = 64 << 10 // a hand-off every chunk or two
        options.packTargetSize = 512 << 10 // and full packs handed off too
        let a = randomBytes(1 << 20, seed: 20)
        let b = randomBytes(3 << 20, seed: 21)
        let db: Digest
        do {
            let store = try ChunkStore(root: dir.path, options: options, create: true)
            let da = try store.write(a, piece: 50_000, retain: "t").digest
            let fault = FaultInjection.arm(.fdatasync, errno: EIO, pathContains: dir.path + "/packs/", count: 1)
            do {
                _ = try store.write(b, piece: 50_000, retain: "t")
                Issue.record("the write was acknowledged although an fsync of its chunks failed")
            } catch DepotError.io(let m) {
                #expect(m.contains("fsync") && m.contains("Input/output error"), "\(m)")
            }
            #expect(FaultInjection.firedCount(fault) == 1)
            db = try store.write(b, piece: 50_000, retain: "t").digest
            #expect(try store.readAll(da) == a)
            #expect(try store.readAll(db) == b)
            #expect(try store.fsck().isClean)
        }
        // Reopened (recovery cuts every pack back to its committed size), nothing is missing.
        let reopened = try ChunkStore(root: dir.path, options: options)
        #expect(try reopened.readAll(db) == b)
        #expect(try reopened.fsck().isClean)
    }

    /// Writers sharing chunks, with commits handed off every few chunks and packs filling
    /// constantly: every blob reads back and fsck finds nothing wrong.
    @Test func concurrentWritersWithHandedOffCommitsLoseNothing() throws {
        let dir = TempDir()
        var options = StoreOptions()
        options.flushBytes = 48 << 10
        options.packTargetSize = 384 << 10
        let store = try ChunkStore(root: dir.path, options: options, create: true)
        let shared = randomBytes(400_000, seed: 30)
        let results = Locked<[(Digest, [UInt8])]>([])
        DispatchQueue.concurrentPerform(iterations: 6) { i in
            let data = shared + randomBytes(300_000 + i * 10_000, seed: UInt64(31 + i)) + shared
            let r = try! store.write(data, piece: 40_000 + i * 1_000, retain: "t")
            results.withLock { $0.append((r.digest, data)) }
        }
        for (d, data) in results.withLock({ $0 }) { #expect(try store.readAll(d) == data) }
        #expect(try store.fsck().isClean)
        let packs = try store.catalog.read { try $0.packs() }
        #expect(packs.count > 4, "the test should fill several packs")
        // Writers ahead of the committer wait for it, checked before they append: no pack outgrows
        // its target by more than a flush and one record (the largest chunk and its header).
        let bound = options.packTargetSize + Int64(options.flushBytes) + Int64(options.chunker.maxSize) + 64
        for pack in packs { #expect(pack.committedSize <= bound, "pack \(pack.id): \(pack.committedSize) bytes") }
    }

    @Test func aFullDiskFailsTheWriteClearlyAndTheRetrySucceeds() throws {
        let dir = TempDir()
        let a = randomBytes(1 << 20, seed: 12)
        let b = randomBytes(2 << 20, seed: 13)
        let store = try ChunkStore(root: dir.path, create: true)
        let da = try store.write(a, retain: "t").digest
        let fault = FaultInjection.arm(.write, errno: ENOSPC, pathContains: dir.path + "/packs/")
        do {
            _ = try store.write(b, retain: "t")
            Issue.record("the write succeeded on a full disk")
        } catch DepotError.io(let m) {
            #expect(m.contains("no space left on device"), "\(m)")
        }
        #expect(FaultInjection.firedCount(fault) >= 1)
        FaultInjection.disarm(fault)
        let db = try store.write(b, retain: "t").digest
        #expect(try store.readAll(da) == a)
        #expect(try store.readAll(db) == b)
        #expect(try store.fsck().isClean)
    }

    @Test func aPackReadFailingWithEIOIsAnErrorAndReadsWorkAfterwards() throws {
        let dir = TempDir()
        let a = randomBytes(1 << 20, seed: 14)
        let store = try ChunkStore(root: dir.path, create: true)
        let da = try store.write(a, retain: "t").digest
        let fault = FaultInjection.arm(.read, errno: EIO, pathContains: dir.path + "/packs/")
        do {
            _ = try store.readAll(da)
            Issue.record("a read returned data although every pack read failed")
        } catch DepotError.io(let m) {
            #expect(m.contains("Input/output error"), "\(m)")
        }
        FaultInjection.disarm(fault)
        #expect(try store.readAll(da) == a)
        #expect(try store.fsck().isClean)
    }

    /// Another connection holding the catalog's write lock: a short hold is waited out (no
    /// error), a hold past the busy timeout fails the write with a clear "retry" error, and the
    /// retry succeeds. Nothing acknowledged is lost either way.
    @Test(.disabled(if: Database.isTestingOnPostgres, "holds SQLite's file write lock; PostgreSQL writers do not exclude each other"))
    func aCatalogLockedByAnotherConnectionGivesAClearErrorAndTheRetryWorks() throws {
        let dir = TempDir()
        var options = StoreOptions()
        options.catalogBusyTimeoutMilliseconds = 400
        let store = try ChunkStore(root: dir.path, options: options, create: true)
        let a = randomBytes(1 << 20, seed: 15)
        let b = randomBytes(1 << 20, seed: 16)
        let other = try Database(path: dir.path + "/catalog.db")
        func hold(for seconds: Double) -> DispatchGroup {
            let held = DispatchSemaphore(value: 0)
            let group = DispatchGroup()
            DispatchQueue(label: "test.lock-holder").async(group: group) {
                try? other.write { _ in
                    held.signal()
                    Thread.sleep(forTimeInterval: seconds)
                }
            }
            held.wait()
            return group
        }
        var g = hold(for: 0.1)
        let da = try store.write(a, retain: "t").digest // waits for the lock, then succeeds
        g.wait()
        let w = try store.makeWriter()
        try b.withUnsafeBytes { try w.write($0) }
        g = hold(for: 2)
        do {
            _ = try w.finish(retain: "t")
            Issue.record("the write finished while the catalog was locked")
        } catch DepotError.storage(let m) {
            #expect(m.contains("stayed locked by another connection") && m.contains("retry"), "\(m)")
        }
        w.abort()
        g.wait()
        let db = try store.write(b, retain: "t").digest
        #expect(try store.readAll(da) == a)
        #expect(try store.readAll(db) == b)
        #expect(try store.fsck().isClean)
    }
}

/// Issue #12 item 5: one damaged chunk no longer stops compaction.
@Suite struct GCAroundDamageTests {
    @Test func compactionSkipsAndReportsADamagedChunkAndCompactsEveryOtherPack() throws {
        let dir = TempDir()
        var options = StoreOptions()
        options.packTargetSize = 1 << 20
        options.writeGraceSeconds = 3600
        let keep1 = randomBytes(100_000, seed: 21)
        let keep2 = randomBytes(100_000, seed: 22)
        let d1: Digest
        let d2: Digest
        do {
            let store = try ChunkStore(root: dir.path, options: options, create: true)
            // Each kept blob sits in a pack that is mostly garbage, so both packs get compacted.
            _ = try store.write(randomBytes(700_000, seed: 31))
            d1 = try store.write(keep1, retain: "t").digest
            _ = try store.write(randomBytes(1_400_000, seed: 32))
            d2 = try store.write(keep2, retain: "t").digest
            _ = try store.write(randomBytes(1_400_000, seed: 33))
        }
        let store = try ChunkStore(root: dir.path, options: options) // all packs sealed
        let (damaged, loc1) = try store.catalog.read { conn -> (SHA256.Value, ChunkLocation) in
            let id = try #require(try conn.blob(d1)?.id)
            let first = try #require(try conn.recipe(blob: id, from: 0, limit: 1).first)
            return (first.hash, try #require(try conn.chunkLocation(first.hash)))
        }
        let loc2 = try #require(
            try store.catalog.read { conn -> ChunkLocation? in
                try conn.recipe(blob: conn.blob(d2)!.id, from: 0, limit: 1).first.flatMap { try conn.chunkLocation($0.hash) }
            })
        #expect(loc1.pack != loc2.pack)
        // Flip one payload byte of keep1's first chunk.
        let file = try PosixFile(path: dir.path + "/" + PackFormat.relativePath(loc1.pack), mode: .readWrite)
        var byte: [UInt8] = [0]
        let at = loc1.offset + Int64(PackFormat.recordHeaderSize) + 7
        try byte.withUnsafeMutableBytes { try file.read(into: $0, at: at) }
        byte[0] ^= 0xff
        try byte.withUnsafeBytes { try file.write($0, at: at) }

        let report = try store.collectGarbage(now: Int64(Date().timeIntervalSince1970 * 1000) + 7_200_000)
        #expect(report.damagedChunks.map(\.chunk) == ["sha256:" + damaged.hex])
        #expect(report.damagedChunks.first?.pack == loc1.pack)
        #expect(report.damagedChunks.first?.reason.contains("depot fsck") == true)
        // The damaged record stays where it was, and so does its pack...
        #expect(try store.catalog.read { try $0.chunkLocation(damaged) } == loc1)
        #expect(FileSystem.exists(dir.path + "/" + PackFormat.relativePath(loc1.pack)))
        // ...while keep2's pack was still compacted away.
        #expect(!FileSystem.exists(dir.path + "/" + PackFormat.relativePath(loc2.pack)))
        #expect(try store.readAll(d2) == keep2)
        let fsck = try store.fsck()
        #expect(fsck.affectedBlobs == [d1.description])
        // The next run reports it again rather than failing.
        #expect(try store.collectGarbage().damagedChunks.count == 1)
    }
}

/// The CLI side: `depot serve` prints the refusal and exits non-zero; `depot fsck` reports,
/// `depot fsck --repair --json` drops the lost rows and lists the blobs.
@Suite struct RecoveryCLITests {
    /// Runs `depot args`; kills it after `timeout` seconds. Returns (status, stdout, stderr).
    static func depot(_ args: [String], timeout: Double = 60) throws -> (Int32, String, String) {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: depotExecutable)
        p.arguments = args
        p.currentDirectoryURL = URL(fileURLWithPath: NSTemporaryDirectory()) // no config/depot.yaml
        let out = Pipe()
        let err = Pipe()
        p.standardOutput = out
        p.standardError = err
        try p.run()
        let deadline = Date().addingTimeInterval(timeout)
        while p.isRunning && Date() < deadline { usleep(20_000) }
        if p.isRunning {
            kill(p.processIdentifier, SIGKILL)
            Issue.record("depot \(args.joined(separator: " ")) still ran after \(timeout) s")
        }
        p.waitUntilExit()
        return (
            p.terminationStatus, String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self),
            String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        )
    }

    @Test func serveRefusesAMissingPackAndFsckRepairListsTheLostBlob() throws {
        let dir = TempDir()
        let (d, _) = try RecoveryNeverDeletesTests.storeWithBlob(dir)
        let pack = try #require(try RecoveryNeverDeletesTests.packPaths(dir).first)
        try FileSystem.remove(pack)
        let rel = String(pack.dropFirst(dir.path.count + 1))

        let (status, _, stderr) = try Self.depot(["serve", "--storage", dir.path, "--listen", "127.0.0.1:1"], timeout: 30)
        #expect(status != 0)
        #expect(stderr.contains("\(rel) is referenced by the catalog"), "\(stderr)")
        #expect(stderr.contains("missing (ENOENT)") && stderr.contains("depot fsck --repair --storage \(dir.path)"), "\(stderr)")

        let (checkStatus, checkOut, _) = try Self.depot(["fsck", "--storage", dir.path])
        #expect(checkStatus == 1)
        #expect(checkOut.contains("DAMAGED \(rel) is referenced by the catalog"), "\(checkOut)")
        #expect(try RecoveryNeverDeletesTests.chunkRows(dir) > 0, "plain fsck drops nothing")

        let (repairStatus, json, _) = try Self.depot(["fsck", "--repair", "--json", "--storage", dir.path])
        #expect(repairStatus == 1, "the blob is still damaged after the repair")
        let object = try #require(try JSONSerialization.jsonObject(with: Data(json.utf8)) as? [String: Any])
        let recovery = try #require(object["recovery"] as? [String: Any], "\(json)")
        #expect(recovery["lost_blobs"] as? [String] == [d.description])
        #expect((recovery["dropped_chunk_rows"] as? Int ?? 0) > 0)
        #expect(try RecoveryNeverDeletesTests.chunkRows(dir) == 0)
    }
}

@Suite struct FaultInjectionSafetyTests {
    /// Production code can never arm a fault: only tests call `arm` (see FaultInjection.swift).
    @Test func noSourceFileArmsAFault() throws {
        let sources = FileManager.default.currentDirectoryPath + "/Sources"
        let files = try #require(FileManager.default.enumerator(atPath: sources)).compactMap { $0 as? String }
            .filter { $0.hasSuffix(".swift") }
        #expect(files.count > 50, "the test must run from the package root")
        for file in files {
            let text = try String(contentsOfFile: sources + "/" + file, encoding: .utf8)
            #expect(!text.contains("FaultInjection.arm("), "\(file) arms a fault")
        }
        #expect(FaultInjection.check(.fdatasync, "/nothing/armed/for/this/path") == nil)
    }
}
