import DepotCatalog
import DepotCore
import DepotTestSupport
import Foundation
import Testing

@testable import DepotObjectStore
@testable import DepotStore

/// The chunk store in S3 mode against a real `moto_server` (an S3 emulator) on loopback.
@Suite(.enabled(if: MotoServer.executable != nil, "\(MotoServer.skipMessage)"))
struct S3StoreTests {
    /// Small packs so a test crosses several seals, and larger than the 5 MiB part size so
    /// they go up as multipart uploads.
    static func options() -> StoreOptions {
        var o = StoreOptions()
        o.packTargetSize = 12 << 20
        o.recordCacheBytes = 64 << 20
        return o
    }

    /// Options of a replica: the catalog of the store at `root` (as replicas share one).
    static func options(sharingCatalogOf root: String) -> StoreOptions {
        var o = options()
        o.catalog = Database.location(forPath: root + "/catalog.db")
        return o
    }

    static func objects(_ moto: MotoServer) throws -> [String: Int64] {
        var out: [String: Int64] = [:]
        try moto.client().list(prefix: "") { out[$0] = $1 }
        return out
    }

    @Test func blobsGoInAndComeOutBitIdenticalAcrossPackSeals() throws {
        let moto = try MotoServer()
        let dir = TempDir()
        let big = randomBytes(30 << 20, seed: 1)
        let small = randomBytes(100_000, seed: 2)
        let store = try ChunkStore(
            root: dir.path, options: Self.options(), create: true, objects: S3PackObjectStore(settings: moto.settings))
        let a = try store.write(big).digest
        let b = try store.write(small).digest
        #expect(try store.readAll(a) == big)
        #expect(try store.readAll(b) == small)
        #expect(try store.readAll(a, range: 12_345_678..<20_000_001) == Array(big[12_345_678..<20_000_001]))
        // Every pack with chunks is an object of exactly its committed size; nothing stays staged locally.
        let packs = try store.catalog.read { try $0.packs() }
        let objects = try Self.objects(moto)
        #expect(packs.count >= 3)
        for p in packs { #expect(objects["packs/" + String(PackFormat.relativePath(p.id).dropFirst(6))] == p.committedSize) }
        #expect(objects.keys.allSatisfy { $0.hasPrefix("packs/") })
        #expect((try? FileManager.default.contentsOfDirectory(atPath: dir.path + "/staging"))?.isEmpty ?? true)
        let report = try store.fsck(deep: true)
        #expect(report.isClean)
        #expect(report.chunksChecked > 400)
    }

    /// Cast-aware deduplication in S3 mode: the fp16 file's chunks become casts, compaction
    /// deletes the objects that held their records, and a replica with an empty local directory
    /// and cache decodes them from the fp32 sources it fetches from the bucket.
    @Test func castChunksAreReadFromTheirSourcesInTheBucket() throws {
        /// The tensors of the two files below, as a format reader would report them.
        struct Layout: TensorLayoutReader {
            let fp32: [UInt8]
            let fp16: [UInt8]
            func tensors(size: Int64, read: (Range<Int64>) throws -> [UInt8]) throws -> [TensorExtent]? {
                let header = try read(0..<8).withUnsafeBytes { 8 + Int64(UInt64(littleEndian: $0.loadUnaligned(as: UInt64.self))) }
                let width: Int64 = size == Int64(fp32.count) ? 4 : 2
                return [TensorExtent(element: width == 4 ? .float32 : .float16, shape: [1 << 18], range: header..<(header + width << 18))]
            }
        }
        let moto = try MotoServer()
        let dir = TempDir()
        let floats = randomBytes(1 << 20, seed: 5).withUnsafeBytes { p in
            (0..<(1 << 18)).map {
                Float(bitPattern: (p.loadUnaligned(fromByteOffset: 4 * $0, as: UInt32.self) & 0x807F_FFFF) | 0x3C00_0000)
            }
        }
        let fp32 = makeSafetensors([("w", "F32", [1 << 18], floats.withUnsafeBytes { Array($0) })])
        let fp16 = makeSafetensors([("w", "F16", [1 << 18], floats.map { Float16($0).bitPattern }.withUnsafeBytes { Array($0) })])
        var options = Self.options()
        options.compactBelow = 1.0
        let store = try ChunkStore(root: dir.path, options: options, create: true, objects: S3PackObjectStore(settings: moto.settings))
        _ = try store.write(fp32, retain: "test")
        let half = try store.write(fp16, retain: "test").digest
        let report = try store.collectGarbage(tensors: Layout(fp32: fp32, fp16: fp16))
        #expect(report.casts?.bytesDerived ?? 0 > 400_000)
        #expect(report.packsDeleted >= 1)
        #expect(try store.readAll(half) == fp16)
        #expect(try store.fsck(deep: true).isClean)
        let replicaDir = TempDir()
        let replica = try ChunkStore(
            root: replicaDir.path, options: Self.options(sharingCatalogOf: dir.path), create: true,
            objects: S3PackObjectStore(settings: moto.settings))
        #expect(try replica.readAll(half) == fp16)
        #expect(try replica.readAll(half, range: 100_001..<300_000) == Array(fp16[100_001..<300_000]))
    }

    @Test func aReplicaWithAnEmptyLocalDirectoryReadsTheSameBlobs() throws {
        let moto = try MotoServer()
        let first = TempDir()
        let data = randomBytes(20 << 20, seed: 3)
        let d: Digest
        do {
            let store = try ChunkStore(
                root: first.path, options: Self.options(), create: true, objects: S3PackObjectStore(settings: moto.settings))
            d = try store.write(data, retain: "test").digest
        }
        // The replica shares only the catalog (the first one's SQLite file, or its PostgreSQL
        // schema when the suite runs there) and the bucket: none of the first one's other files.
        let replica = TempDir()
        try? FileManager.default.removeItem(atPath: first.path + "/staging")
        let store = try ChunkStore(
            root: replica.path, options: Self.options(sharingCatalogOf: first.path), create: true,
            objects: S3PackObjectStore(settings: moto.settings))
        #expect(try store.readAll(d) == data)
        #expect(try store.fsck(deep: true).isClean)
    }

    @Test func twoWritersNeverOverwriteEachOthersPackObjects() throws {
        let moto = try MotoServer()
        // Two stores with their own catalogs on one bucket prefix: both number their first pack 1.
        let dirA = TempDir()
        let dirB = TempDir()
        let a = try ChunkStore(root: dirA.path, options: Self.options(), create: true, objects: S3PackObjectStore(settings: moto.settings))
        let b = try ChunkStore(root: dirB.path, options: Self.options(), create: true, objects: S3PackObjectStore(settings: moto.settings))
        let x = randomBytes(3 << 20, seed: 10)
        let y = randomBytes(3 << 20, seed: 11)
        let z = randomBytes(3 << 20, seed: 12)
        let dx = try a.write(x).digest
        let dy = try b.write(y).digest // pack 1 is taken: B moves its pack to a fresh id
        let dz = try a.write(z).digest // and so does A next
        #expect(try a.readAll(dx) == x)
        #expect(try a.readAll(dz) == z)
        #expect(try b.readAll(dy) == y)
        let idsA = Set(try a.catalog.read { try $0.packs() }.map(\.id))
        let idsB = Set(try b.catalog.read { try $0.packs() }.map(\.id))
        #expect(idsA.isDisjoint(with: idsB))
        #expect(try Self.objects(moto).count == 3)
        #expect(try a.fsck(deep: true).isClean && b.fsck(deep: true).isClean)
    }

    @Test func gcDeletesAPackObjectOnlyAfterNoRowNamesIt() throws {
        let moto = try MotoServer()
        let dir = TempDir()
        var options = Self.options()
        options.writeGraceSeconds = 0
        let spy = DeleteSpy(try S3PackObjectStore(settings: moto.settings))
        let store = try ChunkStore(root: dir.path, options: options, create: true, objects: spy)
        spy.catalog.withLock { $0 = store.catalog }
        let kept = randomBytes(2 << 20, seed: 20)
        let dropped = randomBytes(2 << 20, seed: 21)
        let dk = try store.write(kept, retain: "keep").digest
        _ = try store.write(dropped).digest
        #expect(try Self.objects(moto).count == 2)
        let report = try store.collectGarbage(now: Int64(Date().timeIntervalSince1970 * 1000) + 5_000)
        #expect(report.blobsDeleted == 1 && report.packsDeleted >= 1)
        #expect(!spy.deletes.withLock { $0 }.isEmpty)
        #expect(spy.deletes.withLock { $0 }.allSatisfy { $0.rowsLeft == 0 })
        #expect(try Self.objects(moto).count == 1)
        #expect(try store.readAll(dk) == kept)
        #expect(try store.fsck(deep: true).isClean)
    }

    @Test func fsckReportsADeletedObjectAndServingRefusesIt() throws {
        let moto = try MotoServer()
        let dir = TempDir()
        let data = randomBytes(2 << 20, seed: 30)
        let d: Digest
        do {
            let store = try ChunkStore(
                root: dir.path, options: Self.options(), create: true, objects: S3PackObjectStore(settings: moto.settings))
            d = try store.write(data, retain: "test").digest
        }
        let key = try #require(try Self.objects(moto).keys.first)
        try moto.client().delete(key: key)
        // Serving refuses, naming the object.
        #expect {
            _ = try ChunkStore(root: dir.path, options: Self.options(), objects: S3PackObjectStore(settings: moto.settings))
        } throws: { "\($0)".contains(key) }
        // fsck (a HEAD/size check without --deep) names the object and the blob.
        let store = try ChunkStore(
            root: dir.path, options: Self.options(), ifDamaged: .report, objects: S3PackObjectStore(settings: moto.settings))
        #expect(store.recovery.problems.contains { $0.contains(key) && $0.contains("missing") })
        let report = try store.fsck(deep: false)
        #expect(!report.isClean)
        #expect(report.affectedBlobs.contains(d.description))
        #expect(report.chunksChecked == 0) // not deep: no record was read
    }

    @Test func aTamperedObjectIsNeverServed() throws {
        let moto = try MotoServer()
        let dir = TempDir()
        var options = Self.options()
        options.compression.mode = .off
        let data = randomBytes(1 << 20, seed: 40)
        let store = try ChunkStore(root: dir.path, options: options, create: true, objects: S3PackObjectStore(settings: moto.settings))
        let d = try store.write(data, retain: "test").digest
        let (key, size) = try #require(try Self.objects(moto).first)
        let client = try moto.client()
        var bytes = Array(try client.get(key: key, offset: 0, length: Int(size)).readableBytesView)
        bytes[bytes.count / 2] ^= 0x40
        try client.delete(key: key)
        try client.putNew(key: key, body: .init(bytes: bytes))
        let replica = TempDir()
        var shared = options
        shared.catalog = Database.location(forPath: dir.path + "/catalog.db")
        let fresh = try ChunkStore(root: replica.path, options: shared, create: true, objects: S3PackObjectStore(settings: moto.settings))
        #expect { _ = try fresh.readAll(d) } throws: { "\($0)".contains("integrity") }
        #expect(try fresh.fsck(deep: true).affectedBlobs.contains(d.description))
    }
}

/// An object store whose uploads fail while `failing` is set (the endpoint down mid-push).
final class FailingUploads: PackObjectStore, @unchecked Sendable {
    let inner: any PackObjectStore
    let failing = Locked(false)
    init(_ inner: any PackObjectStore) { self.inner = inner }
    var location: String { inner.location }
    func checkReachable() throws { try inner.checkReachable() }
    func create(key: String, from file: PosixFile, size: Int64) throws {
        if failing.withLock({ $0 }) { throw DepotError.io("object store: injected upload failure") }
        try inner.create(key: key, from: file, size: size)
    }
    func read(key: String, offset: Int64, length: Int) throws -> [UInt8] { try inner.read(key: key, offset: offset, length: length) }
    func readMany(_ r: [(key: String, offset: Int64, length: Int)]) -> [Result<[UInt8], any Error>] { inner.readMany(r) }
    func size(key: String) throws -> Int64? { try inner.size(key: key) }
    func delete(key: String) throws { try inner.delete(key: key) }
    func list(prefix: String, _ body: (String, Int64) throws -> Void) throws { try inner.list(prefix: prefix, body) }
}

extension S3StoreTests {
    @Test func aFailedUploadAcknowledgesNothingAndGCCleansUpAfterIt() throws {
        let moto = try MotoServer()
        let dir = TempDir()
        var options = Self.options()
        options.writeGraceSeconds = 0
        let objects = FailingUploads(try S3PackObjectStore(settings: moto.settings))
        let store = try ChunkStore(root: dir.path, options: options, create: true, objects: objects)
        let good = randomBytes(1 << 20, seed: 50)
        let lost = randomBytes(1 << 20, seed: 51)
        let dg = try store.write(good, retain: "keep").digest
        objects.failing.withLock { $0 = true }
        #expect(throws: (any Error).self) { _ = try store.write(lost, retain: "keep") }
        #expect(try store.blob(Digest(bytes: lost.withUnsafeBytes { SHA256.hash($0) })) == nil)
        objects.failing.withLock { $0 = false }
        // The same content goes in on the next attempt, and the abandoned pack row goes away.
        let dl = try store.write(lost, retain: "keep").digest
        #expect(try store.readAll(dl) == lost && store.readAll(dg) == good)
        let before = try store.catalog.read { try $0.packs() }.count
        _ = try store.collectGarbage(now: Int64(Date().timeIntervalSince1970 * 1000) + 5_000)
        #expect(try store.catalog.read { try $0.packs() }.count < before)
        #expect(try store.fsck(deep: true).isClean)
        #expect((try? FileManager.default.contentsOfDirectory(atPath: dir.path + "/staging"))?.isEmpty ?? true)
    }
}

/// Records, for every object delete, how many chunk rows still named that pack at that moment.
final class DeleteSpy: PackObjectStore, @unchecked Sendable {
    let inner: any PackObjectStore
    let catalog = Locked<Database?>(nil)
    let deletes = Locked<[(key: String, rowsLeft: Int)]>([])
    init(_ inner: any PackObjectStore) { self.inner = inner }
    var location: String { inner.location }
    func checkReachable() throws { try inner.checkReachable() }
    func create(key: String, from file: PosixFile, size: Int64) throws { try inner.create(key: key, from: file, size: size) }
    func read(key: String, offset: Int64, length: Int) throws -> [UInt8] { try inner.read(key: key, offset: offset, length: length) }
    func readMany(_ r: [(key: String, offset: Int64, length: Int)]) -> [Result<[UInt8], any Error>] { inner.readMany(r) }
    func size(key: String) throws -> Int64? { try inner.size(key: key) }
    func list(prefix: String, _ body: (String, Int64) throws -> Void) throws { try inner.list(prefix: prefix, body) }
    func delete(key: String) throws {
        let name = key.split(separator: "/").last.map(String.init) ?? ""
        let id = Int64(name.dropLast(5), radix: 16) ?? -1
        let rows = try catalog.withLock { $0 }?.read { try $0.chunks(inPack: id).count } ?? -1
        deletes.withLock { $0.append((key, rows)) }
        try inner.delete(key: key)
    }
}

extension ChunkStore {
    func write(_ bytes: [UInt8], retain: String? = nil) throws -> WriteResult {
        let w = try makeWriter()
        var i = 0
        while i < bytes.count {
            let n = min(1 << 20, bytes.count - i)
            try bytes.withUnsafeBytes { try w.write(UnsafeRawBufferPointer(rebasing: $0[i..<(i + n)])) }
            i += n
        }
        return try w.finish(retain: retain)
    }

    func readAll(_ digest: Digest, range: Range<Int64>? = nil) throws -> [UInt8] {
        var out: [UInt8] = []
        try reader(digest, range: range).forEach { out.append(contentsOf: $0) }
        return out
    }
}

/// Two replicas (two stores on one catalog and one bucket) sharing the work of one blob, and
/// racing each other's garbage collection.
extension S3StoreTests {
    /// Two stores in their own directories on the first one's catalog and one bucket.
    static func replicas(_ moto: MotoServer) throws -> (ChunkStore, ChunkStore, [TempDir]) {
        let a = TempDir()
        let b = TempDir()
        let one = try ChunkStore(root: a.path, options: options(), create: true, objects: S3PackObjectStore(settings: moto.settings))
        let two = try ChunkStore(
            root: b.path, options: options(sharingCatalogOf: a.path), create: true, objects: S3PackObjectStore(settings: moto.settings))
        return (one, two, [a, b])
    }

    /// A writer checkpoints on one replica and another resumes it from the checkpoint's bytes and
    /// adopts the first's committed part (the planner's header replay is tested in the registry).
    @Test func aWriteCheckpointedOnOneReplicaFinishesOnAnother() throws {
        let moto = try MotoServer()
        let (one, two, dirs) = try Self.replicas(moto)
        defer { withExtendedLifetime(dirs) {} }
        let data = randomBytes(3 << 20, seed: 60)
        let first = try one.makeWriter()
        try first.write(Array(data[..<1_234_567]))
        var part: PriorSegment?
        let saved = try first.checkpoint { _, _, segment in part = segment }
        let segment = try #require(part)
        #expect(segment.range == 0..<saved.committed && saved.position == 1_234_567 && !saved.tail.isEmpty)
        // The checkpoint travels as bytes (the catalog's upload row in the registry).
        let resumed = try two.resumeWriter(planner: nil, from: try WriterCheckpoint(decoding: saved.encoded()), after: [segment])
        try resumed.write(Array(data[1_234_567...]))
        let result = try resumed.finish(
            expecting: Digest(bytes: data.withUnsafeBytes { SHA256.hash($0) }), retain: "keep", adopting: [segment])
        #expect(try one.readAll(result.digest) == data)
        #expect(try one.stats().unfinishedWrites == 0)
        #expect(try one.fsck(deep: true).isClean)
    }

    /// Replica two finds a chunk stored and reuses it; before it commits, replica one's GC finds
    /// the chunk unreferenced and deletes it. The commit must fail that blob (the client retries)
    /// rather than acknowledge a recipe naming a chunk that is gone. Only PostgreSQL has replicas
    /// writing at once (a SQLite catalog has one writer process).
    @Test(.enabled(if: Database.isTestingOnPostgres, "replicas need a PostgreSQL catalog"))
    func aChunkSweptByAnotherReplicaFailsTheWriteThatReusedItNotTheStore() throws {
        let moto = try MotoServer()
        let (one, two, dirs) = try Self.replicas(moto)
        defer { withExtendedLifetime(dirs) {} }
        let data = randomBytes(1 << 20, seed: 61)
        _ = try one.write(data) // stored, and garbage: nothing keeps it...
        // ...and past its grace period (the writer below is not: GC keeps a write in progress).
        try one.catalog.write { try $0.run("UPDATE blobs SET updated_at = 0 WHERE state = 1") }
        let writer = try two.makeWriter()
        try writer.write(data) // every chunk found stored: references only, committed at finish
        _ = try one.collectGarbage()
        #expect(try one.stats().chunks == 0, "the sweep deleted the chunks")
        #expect { _ = try writer.finish(retain: "keep") } throws: { "\($0)".contains("garbage collection on another replica") }
        #expect(try one.fsck(deep: true).isClean)
        // The client's retry stores the bytes again.
        let again = try two.write(data, retain: "keep")
        #expect(try one.readAll(again.digest) == data)
    }
}

extension S3StoreTests {
    /// `depot pull` asks any replica for a blob's chunk records: they come from the bucket, not
    /// from a local pack file (which a replica that did not write the pack never has).
    @Test func anotherReplicaServesChunkRecordsFromTheBucket() throws {
        let moto = try MotoServer()
        let (one, two, dirs) = try Self.replicas(moto)
        defer { withExtendedLifetime(dirs) {} }
        let data = randomBytes(2 << 20, seed: 62)
        let digest = try one.write(data, retain: "keep").digest
        let blob = try #require(try two.blob(digest))
        let recipe = try two.recipe(of: blob, from: 0, limit: 1000)
        let records = try two.records(recipe.map(\.hash), of: blob, as: [UInt8].self)
        // Each record is a header naming its chunk, then its payload; together they decode to the blob.
        var at = 0
        for entry in recipe {
            let header = try #require(records.withUnsafeBytes { PackFormat.decode(UnsafeRawBufferPointer(rebasing: $0[at...])) })
            #expect(header.hash == entry.hash && header.rawLength == entry.length)
            at += PackFormat.recordHeaderSize + header.storedLength
        }
        #expect(at == records.count && recipe.count > 4)
    }
}
