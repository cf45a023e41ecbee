import DepotCatalog
import DepotCore
import DepotTestSupport
import Foundation
import Testing

@testable import DepotStore

/// `depot backup`: a copy taken while the store is written and collected opens as a store of its
/// own, holds every blob acknowledged before it began, and `fsck` finds it clean.
@Suite struct StoreBackupTests {
    /// The suite's PostgreSQL run puts every catalog in PostgreSQL, which `depot backup` refuses
    /// (pg_dump's job): true after checking that refusal, and the caller stops there.
    func refusedOnPostgres(_ store: ChunkStore, _ dir: TempDir) throws -> Bool {
        guard case .postgres = store.catalog.location else { return false }
        let error = #expect(throws: DepotError.self) { try StoreBackup.run(root: dir.path, to: dir.path + "-backup") }
        #expect("\(error.map { "\($0)" } ?? "")".contains("pg_dump"))
        #expect(FileSystem.probe(dir.path + "-backup") == .missing, "nothing created")
        return true
    }

    /// Every file under `root` with its size, except the SQLite files a reader may touch.
    func listing(_ root: String) throws -> [String: Int64] {
        var out: [String: Int64] = [:]
        let base = URL(fileURLWithPath: root).standardizedFileURL.path
        for case let path as String in FileManager.default.enumerator(atPath: base)! {
            guard case .file(let size) = FileSystem.probe(base + "/" + path), !path.hasPrefix("catalog.db") else { continue }
            out[path] = size
        }
        return out
    }

    @Test func aBackupIsAStoreWithEveryBlobAndTheKeys() throws {
        let dir = TempDir()
        var options = StoreOptions()
        options.packTargetSize = 2 << 20
        let store = try ChunkStore(root: dir.path, options: options, create: true)
        defer { try? FileManager.default.removeItem(atPath: dir.path + "-backup") }
        if try refusedOnPostgres(store, dir) { return }
        var blobs: [Digest: [UInt8]] = [:]
        for seed in 1...4 {
            let bytes = randomBytes((1 + seed) << 20, seed: UInt64(seed)) + randomBytes(1 << 20, seed: 99) // a shared part
            blobs[try store.write(bytes).digest] = bytes
        }
        for (dir, name) in [("keys", "signing-key.pem"), ("auth", "token-signing-key.pem")] {
            try FileSystem.createDirectory(store.root + "/" + dir)
            try Data("secret \(name)".utf8).write(to: URL(fileURLWithPath: store.root + "/" + dir + "/" + name))
        }
        let before = try listing(dir.path)

        let report = try StoreBackup.run(root: dir.path, to: dir.path + "-backup", options: options)
        #expect(report.attempts == 1)
        #expect(report.packs == (try store.catalog.read { try $0.packs() }.count))
        #expect(report.keyFiles == ["auth/token-signing-key.pem", "keys/signing-key.pem"])
        #expect(try listing(dir.path) == before, "the source is only read")

        let restored = try ChunkStore(root: dir.path + "-backup", options: options)
        #expect(restored.recovery.isClean, "nothing to cut or quarantine: \(restored.recovery.summary)")
        for (digest, bytes) in blobs { #expect(try restored.readAll(digest) == bytes) }
        #expect(try restored.fsck().isClean)
        for rel in report.keyFiles {
            #expect(
                FileManager.default.contents(atPath: dir.path + "-backup/" + rel)
                    == FileManager.default.contents(atPath: dir.path + "/" + rel))
            let mode = try FileManager.default.attributesOfItem(atPath: dir.path + "-backup/" + rel)[.posixPermissions] as? Int
            #expect(mode == 0o600)
        }
        // A restored store takes writes; its appends go to a new pack.
        let more = randomBytes(1 << 20, seed: 7)
        #expect(try restored.readAll(try restored.write(more).digest) == more)
    }

    @Test func aBackupWhileBlobsAreWrittenHoldsEveryOneAcknowledgedBeforeIt() throws {
        let dir = TempDir()
        var options = StoreOptions()
        options.packTargetSize = 1 << 20
        let store = try ChunkStore(root: dir.path, options: options, create: true)
        defer { try? FileManager.default.removeItem(atPath: dir.path + "-backup") }
        if try refusedOnPostgres(store, dir) { return }
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
        let report = try StoreBackup.run(root: dir.path, to: dir.path + "-backup", options: options)
        stop.withLock { $0 = true }
        while !writer.isFinished { usleep(1000) }
        #expect(written.withLock { $0.count } >= 2)

        let restored = try ChunkStore(root: dir.path + "-backup", options: options)
        #expect(restored.recovery.truncatedPacks == 0, "only committed bytes are copied")
        #expect(restored.recovery.quarantinedPacks.isEmpty)
        for (digest, bytes) in acknowledged { #expect(try restored.readAll(digest) == bytes) }
        // Blobs finished while it ran are there or not, but never half there.
        let present = try written.withLock { $0 }.filter { try restored.blob($0.key) != nil }
        for (digest, bytes) in present { #expect(try restored.readAll(digest) == bytes) }
        #expect(try restored.fsck().isClean)
        #expect(report.packs >= 3)
    }

    @Test func gcDeletingAPackBeforeItIsCopiedTakesAnotherSnapshot() throws {
        let dir = TempDir()
        var options = StoreOptions()
        options.packTargetSize = 2 << 20
        let store = try ChunkStore(root: dir.path, options: options, create: true)
        defer { try? FileManager.default.removeItem(atPath: dir.path + "-backup") }
        if try refusedOnPostgres(store, dir) { return }
        let keep = randomBytes(3 << 20, seed: 1)
        let k = try store.write(keep).digest
        _ = try store.write(randomBytes(3 << 20, seed: 2)).digest
        try store.retain(k, reason: "test")
        let report = try StoreBackup.run(root: dir.path, to: dir.path + "-backup", options: options) { attempt in
            guard attempt == 1 else { return }
            // After the first snapshot: the unretained blob is collected and its packs compacted
            // (the kept chunks move to a new pack, the old packs are deleted).
            let gc = try store.collectGarbage(now: PackAppender.now() + (options.writeGraceSeconds + 1) * 1000)
            #expect(gc.blobsDeleted == 1)
        }
        #expect(report.attempts == 2, "a pack the first snapshot named was gone")
        let restored = try ChunkStore(root: dir.path + "-backup", options: options)
        #expect(restored.recovery.quarantinedPacks.isEmpty, "no copy of a pack the final snapshot does not name")
        #expect(try restored.readAll(k) == keep)
        #expect(try restored.fsck().isClean)
    }

    @Test func aMissingPackStopsTheBackupAndLeavesNoStore() throws {
        let dir = TempDir()
        let store = try ChunkStore(root: dir.path, create: true)
        defer { try? FileManager.default.removeItem(atPath: dir.path + "-backup") }
        if try refusedOnPostgres(store, dir) { return }
        _ = try store.write(randomBytes(1 << 20, seed: 1))
        let pack = try store.catalog.read { try $0.packs() }[0]
        try FileSystem.rename(dir.path + "/" + PackFormat.relativePath(pack.id), dir.path + "/moved-away")
        #expect {
            try StoreBackup.run(root: dir.path, to: dir.path + "-backup")
        } throws: { error in
            "\(error)".contains(PackFormat.relativePath(pack.id)) && "\(error)".contains("damaged")
        }
        #expect(FileSystem.probe(dir.path + "-backup/FORMAT") == .missing)
        #expect(FileSystem.probe(dir.path + "-backup/catalog.db") == .missing)
    }

    @Test func theDestinationMustBeNewAndOutsideTheStore() throws {
        let dir = TempDir()
        let store = try ChunkStore(root: dir.path, create: true)
        defer { try? FileManager.default.removeItem(atPath: dir.path + "-backup") }
        if try refusedOnPostgres(store, dir) { return }
        _ = try store.write(randomBytes(100_000, seed: 1))
        let other = TempDir()
        try Data("x".utf8).write(to: URL(fileURLWithPath: other.path + "/something"))
        for (dest, why) in [
            (other.path, "not empty"), (dir.path + "/inside", "inside the store"), (dir.path, "inside the store"),
            (other.path + "/something", "not a directory"), (other.path + "/new/../x", "without . or .."),
        ] {
            let error = #expect(throws: DepotError.self) { try StoreBackup.run(root: dir.path, to: dest) }
            #expect(error.map { "\($0)".contains(why) } == true, "\(dest): \(String(describing: error))")
        }
        #expect(FileSystem.probe(dir.path + "/inside") == .missing)
    }
}
