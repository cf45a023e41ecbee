import ArgumentParser
import DepotCatalog
import DepotCore
import DepotFormats
import DepotRegistry
import DepotServer
import DepotStore
import Dispatch
import Foundation

/// `depot bench`: throughput and peak memory of the storage engine's parts, and dedup on real
/// files. Build with `-c release`: debug builds are about 3x slower.
struct Bench: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Benchmarks: throughput and peak memory (run a release build).",
        subcommands: [
            Hashing.self, Ingest.self, Dedup.self, LineageBench.self, GCBench.self, CatalogBench.self, AuthBenchCommand.self,
            UIBenchCommand.self,
        ])

    /// Chunker, SHA-256 and zstd on an in-memory buffer, one core each.
    struct Hashing: ParsableCommand {
        static let configuration = CommandConfiguration(commandName: "cpu", abstract: "Chunker, SHA-256 and codec throughput on one core.")
        @Option(help: "Buffer size in MiB.") var mib = 256
        @Flag var json = false

        func run() throws {
            let size = mib << 20
            let noise = BenchData.random(size, seed: 1)
            let weights = BenchData.weights(size, seed: 2)
            var results: [String: Double] = [:]
            var cutCount = 0
            results["chunker_gbps"] = BenchData.throughput(size) {
                var chunker = Chunker()
                var cuts: [Int] = []
                cuts.reserveCapacity(size / 16384)
                noise.withUnsafeBytes { chunker.scan($0, cuts: &cuts) }
                cutCount = cuts.count
            }
            results["mean_chunk_kib"] = Double(size) / Double(max(cutCount, 1)) / 1024
            results["sha256_oneshot_gbps"] = BenchData.throughput(size) {
                _ = noise.withUnsafeBytes { SHA256.hash($0) }
            }
            results["sha256_per_64k_chunk_gbps"] = BenchData.throughput(size) {
                noise.withUnsafeBytes { raw in
                    var i = 0
                    while i < size {
                        _ = SHA256.hash(UnsafeRawBufferPointer(rebasing: raw[i..<min(size, i + 65536)]))
                        i += 65536
                    }
                }
            }
            for (name, data) in [("random", noise), ("fp32_weights", weights)] {
                for width in [1, 4] {
                    var stored = 0
                    let gbps = BenchData.throughput(size) {
                        stored = BenchData.encodeAll(data, elementWidth: width)
                    }
                    let key = "encode_\(name)_\(width == 4 ? "shuffle4_hint" : "no_hint")"
                    results[key + "_gbps"] = gbps
                    results[key + "_ratio"] = Double(size) / Double(stored)
                }
            }
            BenchData.print(results, json: json)
        }
    }

    /// A file ingested into a fresh store and read back, end to end through the disk.
    struct Ingest: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Ingest a file into a fresh store and read it back (throughput, peak RSS).")
        @Option(help: "Size of the generated file in MiB (ignored with --file).") var mib = 1024
        @Option(help: "Generated content: random or weights (fp32 N(0, 0.02)).") var data = "random"
        @Option(help: "Ingest this file instead of a generated one.") var file: String?
        @Option(help: "Work directory (default: a temporary directory).") var workdir: String?
        @Option(help: "Keep the catalog in this PostgreSQL database (a libpq URL; a fresh schema, dropped after) instead of SQLite.")
        var catalog: String?
        @Flag var json = false

        func run() throws {
            let dir = workdir ?? NSTemporaryDirectory() + "depot-bench-\(getpid())"
            try FileSystem.createDirectory(dir)
            defer { if workdir == nil { try? FileManager.default.removeItem(atPath: dir) } }
            var path = file ?? ""
            if file == nil {
                path = dir + "/input.bin"
                try BenchData.writeFile(path, mib: mib, kind: data)
            }
            let size = try PosixFile(path: path, mode: .read).size()
            var options = StoreOptions()
            let schema = "bench_ingest_\(getpid())"
            if let catalog { options.catalog = .postgres(PostgresSettings(url: catalog, schema: schema, poolSize: 4)) }
            defer { if let catalog { try? Database.dropSchema(PostgresSettings(url: catalog, schema: schema)) } }
            let store = try ChunkStore(root: dir + "/store", options: options, create: true)
            var results: [String: Double] = ["bytes": Double(size)]
            PeakMemory.reset()
            var written: WriteResult?
            results["ingest_gbps"] = BenchData.throughput(Int(size)) {
                written = try! store.writeFile(path, planner: ModelFileBoundaryPlanner())
            }
            results["ingest_peak_rss_mib"] = PeakMemory.mib()
            results["ingest_cores_busy"] = BenchData.lastCores
            let gib = Double(size) / Double(1 << 30)
            results["ingest_cpu_seconds_per_gib"] = BenchData.lastCPUSeconds / max(gib, 1e-9)
            // Where those CPU-seconds went (the writer's stage timer; stages overlap in wall time).
            for (stage, h) in store.pushStages.snapshot() { results["ingest_\(stage.rawValue)_seconds_per_gib"] = h.sum / max(gib, 1e-9) }
            results["stored_bytes"] = Double(try store.stats().storedBytes)
            results["chunks"] = Double(written!.chunks)
            // Read back, as a pull would (every chunk verified), handing batches to a consumer
            // that does nothing; then once more, hashing, to check the bytes (not timed).
            BenchData.dropCaches()
            PeakMemory.reset()
            var delivered = 0
            results["read_gbps"] = BenchData.throughput(Int(size)) {
                try! store.reader(written!.digest).forEach { delivered += $0.count }
            }
            results["read_peak_rss_mib"] = PeakMemory.mib()
            results["read_cores_busy"] = BenchData.lastCores
            var hasher = SHA256()
            try store.reader(written!.digest).forEach { bytes in bytes.withUnsafeBytes { hasher.update($0) } }
            guard delivered == Int(size), Digest(bytes: hasher.finalize()) == written!.digest else { fail("read-back mismatch") }
            BenchData.print(results, json: json)
        }
    }

    /// Stores files in order in a fresh temporary store and reports what each one added.
    struct Dedup: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Deduplication of files stored in order into a fresh store.")
        @Flag var json = false
        @Flag(help: "Disable format-aware (safetensors) boundaries.") var noFormatCuts = false
        @Flag(help: "Disable compression.") var noCompression = false
        @Flag(help: "Skip cast-aware deduplication (the GC pass that stores fp16/bf16 casts of stored fp32 tensors as references).")
        var noCasts = false
        @Option(help: "Fraction a codec must save to be used (default from the store's policy).") var minSavings: Double?
        @Argument var files: [String]

        // swift-format-ignore: AlwaysUseLowerCamelCase
        // The field names are the report's JSON keys, shared with scripts/bench/xet_dedup.py.
        struct FileResult: Encodable {
            let path: String, size: Int64, new_bytes: Int64, reused_bytes: Int64, stored_bytes: Int64, chunks: Int, new_chunks: Int
        }
        // swift-format-ignore: AlwaysUseLowerCamelCase
        struct Report: Encodable {
            let tool: String, files: [FileResult], logical_bytes: Int64, stored_bytes: Int64, chunk_bytes: Int64, dedup_ratio: Double
            /// Before the cast pass (what the files cost as written), and what that pass did.
            let stored_bytes_before_casts: Int64, cast_chunks: Int, cast_bytes: Int64
        }

        func run() throws {
            let dir = NSTemporaryDirectory() + "depot-dedup-\(getpid())"
            defer { try? FileManager.default.removeItem(atPath: dir) }
            var options = StoreOptions()
            if noCompression { options.compression.mode = .off }
            if let minSavings { options.compression.minSavings = minSavings }
            // Compaction reclaims every dead byte here (a registry waits until half a pack is dead):
            // the figure after the cast pass is what the casts save once reclaimed.
            options.compactBelow = 1.0
            let store = reportingErrors { try ChunkStore(root: dir, options: options, create: true) }
            var results: [FileResult] = []
            for path in files {
                let r = reportingErrors { try store.writeFile(path, planner: noFormatCuts ? nil : ModelFileBoundaryPlanner()) }
                results.append(
                    FileResult(
                        path: path, size: r.size, new_bytes: r.newBytes, reused_bytes: r.reusedBytes,
                        stored_bytes: r.storedBytes, chunks: r.chunks, new_chunks: r.newChunks))
            }
            let before = reportingErrors { try store.stats() }.storedBytes
            // What GC does in a registry: the cast pass, then compaction of the records it freed
            // (the blobs were just written: the write grace period keeps them all).
            let casts = noCasts ? nil : reportingErrors { try store.collectGarbage(tensors: SafetensorsLayout()) }.casts
            let stats = reportingErrors { try store.stats() }
            let report = Report(
                tool: "depot", files: results, logical_bytes: stats.logicalBytes, stored_bytes: stats.storedBytes,
                chunk_bytes: stats.chunkBytes, dedup_ratio: Double(stats.logicalBytes) / Double(max(stats.storedBytes, 1)),
                stored_bytes_before_casts: before, cast_chunks: casts?.chunksDerived ?? 0, cast_bytes: casts?.bytesDerived ?? 0)
            if json { return printJSON(report) }
            for f in results {
                print(
                    "\(f.path): \(f.size) bytes, \(f.new_bytes) new, \(f.reused_bytes) reused, \(f.stored_bytes) stored after compression")
            }
            print("logical_bytes \(stats.logicalBytes)")
            if let casts {
                print(
                    "casts         \(casts.chunksDerived) chunks of \(casts.tensorsMatched) fp16/bf16 tensors (\(casts.bytesDerived) bytes) stored as casts of fp32 chunks"
                )
                print(
                    "stored_bytes  \(before) as written, \(stats.storedBytes) after the cast pass and compaction (pack files, headers included)"
                )
            } else {
                print("stored_bytes  \(stats.storedBytes)  (pack files, headers included)")
            }
            print("chunk_bytes   \(stats.chunkBytes)  (unique chunk bytes before compression)")
            print(String(format: "ratio         %.3f", report.dedup_ratio))
        }
    }
}

/// Peak resident memory from /proc (VmHWM), resettable through clear_refs.
enum PeakMemory {
    static func reset() {
        if let f = FileHandle(forWritingAtPath: "/proc/self/clear_refs") {
            f.write(Data("5".utf8))
            try? f.close()
        }
    }

    static func mib() -> Double {
        guard let text = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8),
            let line = text.split(separator: "\n").first(where: { $0.hasPrefix("VmHWM:") }),
            let kb = Double(line.split(separator: " ").dropFirst().first ?? "")
        else { return -1 }
        return kb / 1024
    }
}

enum BenchData {
    /// CPU seconds (user + system) of the last `throughput` call, all threads.
    nonisolated(unsafe) static var lastCPUSeconds = 0.0
    nonisolated(unsafe) static var lastWallSeconds = 0.0

    static func throughput(_ bytes: Int, _ body: () throws -> Void) rethrows -> Double {
        let cpu0 = cpuSeconds()
        let start = DispatchTime.now().uptimeNanoseconds
        try body()
        let ns = Double(DispatchTime.now().uptimeNanoseconds - start)
        lastCPUSeconds = cpuSeconds() - cpu0
        lastWallSeconds = ns / 1e9
        return Double(bytes) / ns // bytes per ns == GB/s
    }

    static func cpuSeconds() -> Double {
        var usage = rusage()
        getrusage(RUSAGE_SELF.rawValue, &usage)
        return Double(usage.ru_utime.tv_sec) + Double(usage.ru_utime.tv_usec) / 1e6
            + Double(usage.ru_stime.tv_sec) + Double(usage.ru_stime.tv_usec) / 1e6
    }

    /// Cores busy on average during the last `throughput` call.
    static var lastCores: Double { lastCPUSeconds / max(lastWallSeconds, 1e-9) }

    static func random(_ n: Int, seed: UInt64) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: n)
        var s = seed
        out.withUnsafeMutableBytes { raw in
            for i in 0..<(n / 8) { raw.storeBytes(of: SyntheticContent.next(&s), toByteOffset: i * 8, as: UInt64.self) }
        }
        return out
    }

    /// fp32 values distributed like trained weights: N(0, 0.02), via Box–Muller.
    static func weights(_ n: Int, seed: UInt64) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: n)
        var s = seed
        out.withUnsafeMutableBytes { raw in
            var i = 0
            while i + 8 <= n {
                let u1 = Double(SyntheticContent.next(&s) >> 11 | 1) / Double(1 << 53)
                let u2 = Double(SyntheticContent.next(&s) >> 11) / Double(1 << 53)
                let r = (-2 * log(u1)).squareRoot() * 0.02
                raw.storeBytes(of: Float(r * cos(2 * .pi * u2)), toByteOffset: i, as: Float.self)
                raw.storeBytes(of: Float(r * sin(2 * .pi * u2)), toByteOffset: i + 4, as: Float.self)
                i += 8
            }
        }
        return out
    }

    static func writeFile(_ path: String, mib: Int, kind: String) throws {
        let file = try PosixFile(path: path, mode: .createReadWrite)
        try file.truncate(to: 0)
        for i in 0..<mib {
            let piece = kind == "weights" ? weights(1 << 20, seed: UInt64(i + 1)) : random(1 << 20, seed: UInt64(i + 1))
            try piece.withUnsafeBytes { try file.write($0) }
        }
        try file.sync()
    }

    /// Encodes 64 KiB pieces with the store's codec policy; returns the stored size.
    static func encodeAll(_ data: [UInt8], elementWidth: Int) -> Int {
        StoreBenchHooks.encodeAll(data, elementWidth: elementWidth)
    }

    static func dropCaches() {
        sync()
        if let f = FileHandle(forWritingAtPath: "/proc/sys/vm/drop_caches") {
            f.write(Data("1".utf8))
            try? f.close()
        }
    }

    static func print(_ results: [String: Double], json: Bool) {
        if json { return printJSON(results) }
        for (k, v) in results.sorted(by: { $0.key < $1.key }) {
            Swift.print(k.padding(toLength: 40, withPad: " ", startingAt: 0) + String(format: "%.3f", v))
        }
    }
}

/// `depot bench auth`: the gate's cost per request (warm credential cache), beside the route
/// lookup every request pays anyway.
struct AuthBenchCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "auth", abstract: "What authentication adds to a request.")
    @Option(help: "Requests per case.") var iterations = 200_000
    @Flag(help: "Machine-readable output.") var json = false

    func run() async throws {
        let dir = NSTemporaryDirectory() + "/depot-auth-bench-\(getpid())"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let results = try await AuthBench.run(iterations: iterations, directory: dir)
        if json { return printJSON(results) }
        print("per request, warm credential cache, \(iterations) requests each:")
        for r in results {
            print("  \(r.name.padding(toLength: 32, withPad: " ", startingAt: 0)) \(String(format: "%8.0f", r.nanosecondsPerRequest)) ns")
        }
    }
}

/// `depot bench ui`: server-side render time of each web UI page on the lineage benchmark's graph
/// (about 100,000 artifacts), against the issue's budget of 50 ms a page.
struct UIBenchCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ui", abstract: "Web UI page render times on a generated ~100,000-artifact lineage graph.")
    @Option(help: "Training runs (60 checkpoints each, plus ONNX, plan and bundle every 4th).") var runs = 950
    @Option(help: "Renders of each page.") var iterations = 50
    @Option(help: "Only the pages whose name contains this (for a profile).") var only: String?
    @Option(help: "Build the graph in this PostgreSQL database (a libpq URL; a fresh schema, dropped after) instead of SQLite.")
    var catalog: String?
    @Flag(help: "Machine-readable output.") var json = false

    func run() async throws {
        let dir = NSTemporaryDirectory() + "/depot-ui-bench-\(getpid())"
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var options = StoreOptions()
        let schema = "bench_ui_\(getpid())"
        if let catalog { options.catalog = .postgres(PostgresSettings(url: catalog, schema: schema, poolSize: 4)) }
        defer { if let catalog { try? Database.dropSchema(PostgresSettings(url: catalog, schema: schema)) } }
        let store = try ChunkStore(root: dir, options: options, create: true)
        let registry = Registry(store: store)
        let started = Date()
        let graph = try LineageBench.build(store, runs: runs, chain: 60, bases: 20)
        try store.catalog.refreshStatistics()
        let built = Date().timeIntervalSince(started)
        let mid = graph.checkpoints[graph.checkpoints.count / 2]
        let paths = [
            ("home: repositories", "/ui"),
            ("search run:…", "/ui?q=run:run-\(runs / 2)"),
            ("search type + name", "/ui?q=type:application/vnd.depot.triton.bundle.v1%20models"),
            ("repository (all artifacts)", "/ui/repositories/bench/models"),
            ("artifact: a bundle (ancestors)", "/ui/repositories/bench/models/-/artifacts/\(graph.bundles[graph.bundles.count / 2])"),
            ("artifact: a checkpoint", "/ui/repositories/bench/models/-/artifacts/\(mid)"),
            ("artifact: a base model (impact ~5,000)", "/ui/repositories/bench/models/-/artifacts/\(graph.bases[0])"),
            ("alias history", "/ui/repositories/bench/models/-/aliases/run-\(runs / 2)-latest"),
            ("audit", "/ui/audit"),
        ]
        let chosen = paths.filter { only == nil || $0.0.contains(only!) }
        let results = try await UIBench.run(registry: registry, paths: chosen, iterations: iterations)
        if json { return printJSON(results) }
        print(
            "graph: \(graph.artifacts) artifacts (built in \(String(format: "%.1f", built)) s), catalog \(store.catalog.dialect.rawValue)")
        print("page                                      p50 ms   p95 ms   max ms    bytes  within 50 ms (p95)")
        for r in results {
            let verdict = r.p95Ms <= 50 ? "yes" : "NO"
            print(
                "\(r.page.padding(toLength: 40, withPad: " ", startingAt: 0)) \(String(format: "%8.2f %8.2f %8.2f %8d", r.p50Ms, r.p95Ms, r.maxMs, r.bytes))  \(verdict)"
            )
        }
    }
}
