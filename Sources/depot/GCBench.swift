import ArgumentParser
import DepotCatalog
import DepotCore
import DepotStore
import Foundation

extension Bench {
    /// How garbage collection and fsck grow with the number of chunks. Small chunks (256 B to
    /// 4 KiB, ~1 KiB on average) make 10^6 chunks fit in about a GiB, so the catalog's rows (what
    /// grows with the chunk count) dominate as they do in a large store, not the bytes.
    struct GCBench: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "gc", abstract: "Garbage collection and fsck time against the number of chunks.")
        @Option(help: "Chunks to store (about; half of them become garbage).") var chunks = 100_000
        @Option(help: "Keep the catalog in this PostgreSQL database (a libpq URL; a fresh schema, dropped after) instead of SQLite.")
        var catalog: String?
        @Option(help: "Work directory (default: a temporary directory).") var workdir: String?
        @Flag var json = false

        func run() throws {
            let dir = workdir ?? NSTemporaryDirectory() + "depot-gc-bench-\(getpid())"
            try FileSystem.createDirectory(dir)
            defer { if workdir == nil { try? FileManager.default.removeItem(atPath: dir) } }
            var options = StoreOptions()
            options.chunker = ChunkerParameters(minSize: 256, averageSize: 1024, maxSize: 4096)
            options.compression.mode = .off
            options.writeGraceSeconds = 0
            let schema = "bench_gc_\(getpid())"
            if let catalog { options.catalog = .postgres(PostgresSettings(url: catalog, schema: schema, poolSize: 4)) }
            defer { if let catalog { try? Database.dropSchema(PostgresSettings(url: catalog, schema: schema)) } }
            let store = try ChunkStore(root: dir + "/store", options: options, create: true)
            // Blobs of 1 MiB of unique bytes (~1,000 chunks each); every other one is kept.
            let blobs = max(2, chunks / 1000)
            var results: [String: Double] = [:]
            var stored = 0
            let started = Date()
            for i in 0..<blobs {
                let writer = try store.makeWriter()
                // Seeds far apart on the generator's sequence: no blob shares bytes with another.
                var s = (UInt64(i) &+ 1) &* 0xD1B5_4A32_D192_ED03
                var block = [UInt64](repeating: 0, count: 8192)
                for _ in 0..<16 {
                    for k in 0..<block.count { block[k] = SyntheticContent.next(&s) }
                    try block.withUnsafeBytes { try writer.write($0) }
                }
                stored += try writer.finish(retain: i % 2 == 0 ? "bench" : nil).chunks
            }
            results["ingest_seconds"] = Date().timeIntervalSince(started)
            results["chunks"] = Double(stored)
            results["blobs"] = Double(blobs)
            try store.catalog.refreshStatistics()
            // GC: the unkept half is garbage (no grace); sparse packs are compacted.
            var t = Date()
            let report = try store.collectGarbage(now: Int64(Date().timeIntervalSince1970 * 1000) + 2_000)
            results["gc_seconds"] = Date().timeIntervalSince(t)
            results["gc_chunks_deleted"] = Double(report.chunksDeleted)
            results["gc_packs_compacted"] = Double(report.packsCompacted)
            // fsck: every chunk left verified, then every blob re-hashed.
            t = Date()
            let quick = try store.fsck(verifyBlobDigests: false)
            results["fsck_chunks_seconds"] = Date().timeIntervalSince(t)
            t = Date()
            let full = try store.fsck()
            results["fsck_full_seconds"] = Date().timeIntervalSince(t)
            guard quick.isClean, full.isClean else { fail("fsck found damage in a fresh store") }
            results["chunks_after_gc"] = Double(try store.stats().chunks)
            if !json { print("catalog: \(store.catalog.dialect.rawValue)") }
            BenchData.print(results, json: json)
        }
    }
}
