import DepotCatalog
import DepotCore
import DepotStore
import DepotTestSupport
import Foundation
import Testing

@testable import DepotObjectStore

/// Ingest and read throughput, local packs vs S3 mode against moto_server, on this machine.
/// Not a check (no timing assertions): run with `DEPOT_S3_BENCH=<MiB> swift test --filter S3Bench`.
@Suite(.enabled(if: ProcessInfo.processInfo.environment["DEPOT_S3_BENCH"] != nil && MotoServer.executable != nil))
struct S3Bench {
    @Test func ingestAndReadLocalVersusS3() throws {
        let mib = Int(ProcessInfo.processInfo.environment["DEPOT_S3_BENCH"] ?? "") ?? 256
        let data = randomBytes(mib << 20, seed: 99)
        func seconds(_ body: () throws -> Void) rethrows -> Double {
            let t = DispatchTime.now().uptimeNanoseconds
            try body()
            return Double(DispatchTime.now().uptimeNanoseconds - t) / 1e9
        }
        func rate(_ s: Double) -> String { String(format: "%.0f MB/s (%.2f s)", Double(data.count) / s / 1e6, s) }
        var options = StoreOptions()
        options.compression.mode = .off
        if let packs = Int(ProcessInfo.processInfo.environment["DEPOT_S3_BENCH_PACK_MIB"] ?? "") {
            options.packTargetSize = Int64(packs) << 20
        }
        let local = TempDir()
        let localStore = try ChunkStore(root: local.path, options: options, create: true)
        var d: Digest!
        let localWrite = try seconds { d = try localStore.write(data).digest }
        var n = 0
        let localRead = try seconds { n = try localStore.readAll(d).count }
        #expect(n == data.count)
        print("bench local: ingest \(rate(localWrite)), read \(rate(localRead))")

        let moto = try MotoServer()
        let counter = CountingObjects(try S3PackObjectStore(settings: moto.settings))
        let dir = TempDir()
        let s3Store = try ChunkStore(root: dir.path, options: options, create: true, objects: counter)
        let s3Write = try seconds { d = try s3Store.write(data).digest }
        let writes = counter.snapshot()
        // A replica with a cold cache reads it back.
        let replica = TempDir()
        var shared = options
        shared.catalog = Database.location(forPath: dir.path + "/catalog.db")
        let cold = try ChunkStore(root: replica.path, options: shared, create: true, objects: counter)
        var back: [UInt8] = []
        let coldRead = try seconds { back = try cold.readAll(d) }
        #expect(back == data)
        let afterCold = counter.snapshot()
        // A 64 MiB range read twice: the second time from the record cache.
        let range: Range<Int64> = 0..<Int64(min(64 << 20, data.count))
        _ = try cold.readAll(d, range: range)
        let beforeWarm = counter.snapshot()
        let warmRead = try seconds { n = try cold.readAll(d, range: range).count }
        #expect(n == range.count)
        let afterWarm = counter.snapshot()
        print("bench s3 (moto, packs of \(options.packTargetSize >> 20) MiB): ingest \(rate(s3Write)) in \(writes.creates) object(s)")
        print("bench s3 (moto): cold read \(rate(coldRead)) with \(afterCold.gets - writes.gets) GET(s)")
        let warmRate = String(format: "%.0f MB/s", Double(range.count) / warmRead / 1e6)
        print("bench s3 (moto): cached re-read of 64 MiB \(warmRate) with \(afterWarm.gets - beforeWarm.gets) GET(s)")
    }
}

final class CountingObjects: PackObjectStore, @unchecked Sendable {
    let inner: any PackObjectStore
    let counts = Locked((creates: 0, gets: 0))
    init(_ inner: any PackObjectStore) { self.inner = inner }
    func snapshot() -> (creates: Int, gets: Int) { counts.withLock { $0 } }
    var location: String { inner.location }
    func checkReachable() throws { try inner.checkReachable() }
    func create(key: String, from file: PosixFile, size: Int64) throws {
        counts.withLock { $0.creates += 1 }
        try inner.create(key: key, from: file, size: size)
    }
    func read(key: String, offset: Int64, length: Int) throws -> [UInt8] {
        counts.withLock { $0.gets += 1 }
        return try inner.read(key: key, offset: offset, length: length)
    }
    func readMany(_ r: [(key: String, offset: Int64, length: Int)]) -> [Result<[UInt8], any Error>] {
        counts.withLock { $0.gets += r.count }
        return inner.readMany(r)
    }
    func size(key: String) throws -> Int64? { try inner.size(key: key) }
    func delete(key: String) throws { try inner.delete(key: key) }
    func list(prefix: String, _ body: (String, Int64) throws -> Void) throws { try inner.list(prefix: prefix, body) }
}
