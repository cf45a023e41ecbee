import DepotCatalog
import DepotCore
import DepotTestSupport
import Foundation
import Testing

@testable import DepotStore

/// `depot backup`: a copy taken while the store is written and collected opens as a store of its
/// own, holds every blob acknowledged before it began, and `fsck` finds it clean.
@Suite struct StoreBackupTests {
    /// A store, and a directory of its own for the backups (outside the store; both removed at the end).
    final class Fixture {
        let dir = TempDir()
        let out = TempDir("depot-backups")
        let options: StoreOptions
        let store: ChunkStore
        /// Where a test's backup goes.
        var backup: String { out.path + "/backup" }

        init(packTargetSize: Int64?) throws {
            var options = StoreOptions()
            if let packTargetSize { options.packTargetSize = packTargetSize }
            self.options = options
            store = try ChunkStore(root: dir.path, options: options, create: true)
        }
    }

    /// The suite's PostgreSQL run puts every catalog in PostgreSQL, which `depot backup` refuses
    /// (pg_dump's job): nil there, after checking that refusal, and the caller stops.
    func fixture(packTargetSize: Int64? = nil) throws -> Fixture? {
        let f = try Fixture(packTargetSize: packTargetSize)
        guard case .postgres = f.store.catalog.location else { return f }
        try checkRefusedOnPostgres(f.dir.path, f.backup)
        return nil
    }

    func checkRefusedOnPostgres(_ root: String, _ backup: String) throws {
        let error = #expect(throws: DepotError.self) { try StoreBackup.run(root: root, to: backup) }
        #expect("\(error.map { "\($0)" } ?? "")".contains("pg_dump"))
        #expect(FileSystem.probe(backup) == .missing, "nothing created")
    }

    /// Every file under `root` with its size and modification time.
    func listing(_ root: String) throws -> [String: String] {
        var out: [String: String] = [:]
        let base = URL(fileURLWithPath: root).standardizedFileURL.path
        for case let path as String in FileManager.default.enumerator(atPath: base)! {
            let attributes = try FileManager.default.attributesOfItem(atPath: base + "/" + path)
            out[path] = "\(attributes[.size] ?? "") \(attributes[.modificationDate] ?? "")"
        }
        return out
    }

    @Test func aBackupIsAStoreWithEveryBlobAndTheKeys() throws {
        guard let f = try fixture(packTargetSize: 2 << 20) else { return }
        let (dir, store, options) = (f.dir, f.store, f.options)
        var blobs: [Digest: [UInt8]] = [:]
        for seed in 1...4 {
            let bytes = randomBytes((1 + seed) << 20, seed: UInt64(seed)) + randomBytes(1 << 20, seed: 99) // a shared part
            blobs[try store.write(bytes).digest] = bytes
        }
        for (dir, name) in [("keys", "signing-key.pem"), ("auth", "token-signing-key.pem")] {
            try FileSystem.createDirectory(store.root + "/" + dir)
            try Data("secret \(name)".utf8).write(to: URL(fileURLWithPath: store.root + "/" + dir + "/" + name))
        }
        // A mounted secret's layout: the key is a link to a file in a hidden directory.
        try FileSystem.createDirectory(store.root + "/keys/..data")
        try FileManager.default.moveItem(atPath: store.root + "/keys/signing-key.pem", toPath: store.root + "/keys/..data/signing-key.pem")
        try FileManager.default.createSymbolicLink(
            atPath: store.root + "/keys/signing-key.pem", withDestinationPath: "..data/signing-key.pem")
        try FileSystem.createDirectory(store.root + "/auth/old")
        let before = try listing(dir.path)

        let report = try StoreBackup.run(root: dir.path, to: f.backup, options: options)
        #expect(report.attempts == 1)
        #expect(report.packs == (try store.catalog.read { try $0.packs() }.count))
        #expect(report.keyFiles == ["auth/token-signing-key.pem", "keys/signing-key.pem"])
        #expect(report.skipped == ["auth/old"])
        #expect(report.sameFileSystem)
        #expect(try listing(dir.path) == before, "the source is only read (its server running: SQLite's files exist)")
        #expect(FileSystem.probe(f.backup + "/" + StoreBackup.incompleteMarker) == .missing)

        let restored = try ChunkStore(root: f.backup, options: options)
        #expect(restored.recovery.isClean, "nothing to cut or quarantine: \(restored.recovery.summary)")
        for (digest, bytes) in blobs { #expect(try restored.readAll(digest) == bytes) }
        #expect(try restored.fsck().isClean)
        for rel in report.keyFiles + ["catalog.db"] {
            let mode = try FileManager.default.attributesOfItem(atPath: f.backup + "/" + rel)[.posixPermissions] as? Int
            #expect(mode == 0o600, "\(rel) holds secrets")
        }
        for rel in report.keyFiles {
            #expect(
                FileManager.default.contents(atPath: f.backup + "/" + rel)
                    == FileManager.default.contents(atPath: dir.path + "/" + rel))
        }
        // A restored store takes writes; its appends go to a new pack.
        let more = randomBytes(1 << 20, seed: 7)
        #expect(try restored.readAll(try restored.write(more).digest) == more)
    }

    @Test func aStoppedStoreIsBackedUpWithoutCreatingAnythingBesideIt() throws {
        let dir = TempDir()
        let out = TempDir("depot-backups")
        let bytes = randomBytes(3 << 20, seed: 5)
        let digest: Digest
        do {
            let store = try ChunkStore(root: dir.path, create: true)
            if case .postgres = store.catalog.location { return try checkRefusedOnPostgres(dir.path, out.path + "/backup") }
            digest = try store.write(bytes).digest
        }
        // Stopped, its WAL left behind (as a server leaves it): read through it, nothing created,
        // nothing changed but SQLite's shared-memory index.
        #expect(FileSystem.probe(dir.path + "/catalog.db-shm") != .missing)
        var before = try listing(dir.path)
        _ = try StoreBackup.run(root: dir.path, to: out.path + "/backup")
        var after = try listing(dir.path)
        before["catalog.db-shm"] = nil
        after["catalog.db-shm"] = nil
        #expect(after == before)
        #expect(FileSystem.probe(dir.path + "/catalog.db-shm") != .missing)

        // A stopped store whose catalog is in WAL mode with its WAL checkpointed away (as SQLite
        // leaves it when its last connection closes cleanly): made from the backup, a catalog in
        // rollback mode, by setting its header's WAL bytes. Read as an immutable file, so not even
        // SQLite's -wal and -shm appear (a plain read-only open would create both), nor LOCK.
        try FileManager.default.copyItem(atPath: out.path + "/backup", toPath: out.path + "/walmode")
        let header = try PosixFile(path: out.path + "/walmode/catalog.db", mode: .readWrite)
        try [UInt8]([2, 2]).withUnsafeBytes { try header.write($0, at: 18) } // file format write/read version: WAL
        before = try listing(out.path + "/walmode")
        _ = try StoreBackup.run(root: out.path + "/walmode", to: out.path + "/backup2")
        #expect(try listing(out.path + "/walmode") == before)
        #expect(try ChunkStore(root: out.path + "/backup2").readAll(digest) == bytes)

        // A WAL without its shared-memory index: reading would create one, so refused.
        try FileSystem.createDirectory(out.path + "/walonly")
        for name in ["FORMAT", "catalog.db", "catalog.db-wal"] {
            try FileManager.default.copyItem(atPath: dir.path + "/" + name, toPath: out.path + "/walonly/" + name)
        }
        let error = #expect(throws: DepotError.self) { try StoreBackup.run(root: out.path + "/walonly", to: out.path + "/backup3") }
        #expect("\(error.map { "\($0)" } ?? "")".contains("without catalog.db-shm"))
        #expect(FileSystem.probe(out.path + "/walonly/catalog.db-shm") == .missing)
    }

    @Test func aBackupWhileBlobsAreWrittenHoldsEveryOneAcknowledgedBeforeIt() throws {
        guard let f = try fixture(packTargetSize: 1 << 20) else { return }
        let (dir, store, options) = (f.dir, f.store, f.options)
        var acknowledged: [Digest: [UInt8]] = [:]
        for seed in 1...3 {
            let bytes = randomBytes(3 << 19, seed: UInt64(seed))
            acknowledged[try store.write(bytes).digest] = bytes
        }
        // A writer keeps appending (into the open pack, and new ones) while the backup copies.
        let stop = Locked(false)
        let written = Locked<[Digest: [UInt8]]>([:])
        let writer = Thread {
            var seed: UInt64 = 100
            while !stop.withLock({ $0 }) {
                let bytes = randomBytes(300_000 + Int(seed % 7) * 50_000, seed: seed)
                if let d = try? store.write(bytes).digest { written.withLock { $0[d] = bytes } }
                seed += 1
            }
        }
        writer.start()
        while written.withLock({ $0.count }) < 2 { usleep(1000) }
        let report = try StoreBackup.run(root: dir.path, to: f.backup, options: options)
        stop.withLock { $0 = true }
        while !writer.isFinished { usleep(1000) }

        let restored = try ChunkStore(root: f.backup, options: options)
        #expect(restored.recovery.truncatedPacks == 0, "only committed bytes are copied")
        #expect(restored.recovery.quarantinedPacks.isEmpty)
        for (digest, bytes) in acknowledged { #expect(try restored.readAll(digest) == bytes) }
        // Blobs finished while it ran are there or not, but never half there.
        let present = try written.withLock { $0 }.filter { try restored.blob($0.key) != nil }
        for (digest, bytes) in present { #expect(try restored.readAll(digest) == bytes) }
        #expect(try restored.fsck().isClean)
        #expect(report.packs >= 3)
    }

    @Test func gcDeletingPacksWhileTheyAreCopiedTakesAnotherSnapshot() throws {
        guard let f = try fixture(packTargetSize: 1 << 20) else { return }
        let (dir, store, options) = (f.dir, f.store, f.options)
        // The first packs hold only the blob that will be collected, the later ones the kept one.
        _ = try store.write(randomBytes(3 << 20, seed: 2)).digest
        let keep = randomBytes(3 << 20, seed: 1)
        let k = try store.write(keep).digest
        try store.retain(k, reason: "test")
        let first = try store.catalog.read { try $0.packs() }
        let report = try StoreBackup.run(root: dir.path, to: f.backup, options: options, maxAttempts: 5) { attempt, index in
            guard attempt == 1, index == 1 else { return }
            // The first pack is copied; GC now deletes it and the second (their chunks died).
            let gc = try store.collectGarbage(now: PackAppender.now() + (options.writeGraceSeconds + 1) * 1000)
            #expect(gc.blobsDeleted == 1)
        }
        #expect(report.attempts == 2, "the second pack was gone when its turn came")
        let named = Set(
            try ChunkStore(root: f.backup, options: options, readOnly: true).catalog.read { try $0.packs() }.map(\.id))
        #expect(!named.contains(first[0].id), "the final snapshot no longer names the first pack")
        #expect(
            Set(try Recovery.packFilesOnDisk(root: f.backup).keys) == named,
            "the first pack's copy is gone, every named pack is there")
        let restored = try ChunkStore(root: f.backup, options: options)
        #expect(restored.recovery.isClean, "\(restored.recovery.summary)")
        #expect(try restored.readAll(k) == keep)
        #expect(try restored.fsck().isClean)
    }

    @Test func aMissingPackStopsTheBackupAndLeavesNoStore() throws {
        guard let f = try fixture() else { return }
        let (dir, store) = (f.dir, f.store)
        _ = try store.write(randomBytes(1 << 20, seed: 1))
        let pack = try store.catalog.read { try $0.packs() }[0]
        try FileSystem.rename(dir.path + "/" + PackFormat.relativePath(pack.id), dir.path + "/moved-away")
        let error = #expect(throws: DepotError.self) { try StoreBackup.run(root: dir.path, to: f.backup) }
        let message = error.map { "\($0)" } ?? ""
        #expect(message.contains(PackFormat.relativePath(pack.id)) && message.contains("damaged") && message.contains("delete it"))
        #expect(FileSystem.probe(f.backup + "/FORMAT") == .missing)
        // Whatever a failed backup left, nothing opens it as a store (a server would create one there).
        let refusal = #expect(throws: DepotError.self) { try ChunkStore(root: f.backup, create: true) }
        #expect("\(refusal.map { "\($0)" } ?? "")".contains("unfinished"))
    }

    @Test func theCommandBacksUpVerifiesAndRefusesAUsedDestination() throws {
        guard let f = try fixture() else { return }
        let (dir, store) = (f.dir, f.store)
        let bytes = randomBytes(2 << 20, seed: 3)
        let digest = try store.write(bytes).digest
        func depot(_ arguments: [String]) throws -> (status: Int32, out: String, err: String) {
            let p = Process()
            p.executableURL = URL(fileURLWithPath: depotExecutable)
            p.arguments = arguments
            let out = Pipe()
            let err = Pipe()
            p.standardOutput = out
            p.standardError = err
            try p.run()
            let o = out.fileHandleForReading.readDataToEndOfFile()
            let e = err.fileHandleForReading.readDataToEndOfFile()
            p.waitUntilExit()
            return (p.terminationStatus, String(decoding: o, as: UTF8.self), String(decoding: e, as: UTF8.self))
        }
        // The store stays open here, as a running server holds it.
        let first = try depot(["backup", "--storage", dir.path, f.backup, "--verify", "--json"])
        #expect(first.status == 0, "\(first.err)")
        let json = try JSONSerialization.jsonObject(with: Data(first.out.utf8)) as? [String: Any]
        let backup = json?["backup"] as? [String: Any]
        let verified = json?["verified"] as? [String: Any]
        #expect(backup?["packs"] as? Int == 1)
        #expect(backup?["same_file_system"] as? Bool == true)
        #expect(verified?["blobs_checked"] as? Int == 1)
        #expect((verified?["damaged_chunks"] as? [Any])?.isEmpty == true)
        #expect(try ChunkStore(root: f.backup, readOnly: true).readAll(digest) == bytes)
        let again = try depot(["backup", "--storage", dir.path, f.backup])
        #expect(again.status == 1)
        #expect(again.err.contains("is not empty"), "\(again.err)")
    }

    @Test func theDestinationMustBeNewOrEmptyAndOursAndOutsideTheStore() throws {
        guard let f = try fixture() else { return }
        let (dir, store) = (f.dir, f.store)
        _ = try store.write(randomBytes(100_000, seed: 1))
        let other = TempDir()
        try Data("x".utf8).write(to: URL(fileURLWithPath: other.path + "/something"))
        try FileManager.default.createSymbolicLink(atPath: other.path + "/into-store", withDestinationPath: dir.path + "/packs")
        try FileManager.default.createSymbolicLink(atPath: other.path + "/dangling", withDestinationPath: dir.path + "/new")
        try FileSystem.createDirectory(other.path + "/shared")
        _ = chmod(other.path + "/shared", 0o777)
        let parent = URL(fileURLWithPath: dir.path).deletingLastPathComponent().path
        for (dest, why) in [
            (other.path, "not empty"), (dir.path + "/inside", "inside the store"), (dir.path, "inside the store"),
            (parent, "contains it"), (other.path + "/into-store/x", "inside the store"),
            (other.path + "/dangling", "a link to nothing"), (other.path + "/shared", "no one else can write"),
            (other.path + "/something", "not a directory"), (other.path + "/new/../x", "without . or .."),
        ] {
            let error = #expect(throws: DepotError.self) { try StoreBackup.run(root: dir.path, to: dest) }
            #expect(error.map { "\($0)".contains(why) } == true, "\(dest): \(String(describing: error))")
        }
        #expect(FileSystem.probe(dir.path + "/inside") == .missing)
        #expect(FileSystem.probe(dir.path + "/new") == .missing, "nothing created through the dangling link")
        // An empty directory of ours, mode 700, is taken.
        try FileSystem.createDirectory(other.path + "/empty")
        _ = chmod(other.path + "/empty", 0o700)
        #expect(try StoreBackup.run(root: dir.path, to: other.path + "/empty").packs == 1)
    }
}
