import ArgumentParser
import DepotAPI
import DepotCatalog
import DepotCore
import DepotPipelines
import DepotRegistry
import DepotStore
import Foundation

/// `depot bench catalog`: what the catalog costs the requests that are mostly catalog, measured
/// in process (no HTTP) on either engine, so SQLite and PostgreSQL compare side by side: a
/// manifest resolved by tag and by digest (a manifest GET), a manifest pushed with a tag (a
/// manifest PUT: rows, the tag move, the audit chain and the events outbox), a runner's lease of a
/// queued job and its poll of an empty queue.
struct CatalogBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "catalog",
        abstract: "Latency of catalog-bound operations (manifest GET and PUT, job lease) on SQLite or PostgreSQL.")
    @Option(help: "Operations of each kind.") var count = 2000
    @Option(help: "Keep the catalog in this PostgreSQL database (a libpq URL; a fresh schema, dropped after) instead of SQLite.")
    var catalog: String?
    @Option(help: "Work directory (a temporary one by default).") var workdir: String?
    @Flag(help: "Machine-readable output.") var json = false

    struct Timing: Codable {
        var p50Ms: Double
        var p99Ms: Double
        var perSecond: Double

        enum CodingKeys: String, CodingKey {
            case p50Ms = "p50_ms"
            case p99Ms = "p99_ms"
            case perSecond = "per_second"
        }
    }

    func run() throws {
        let dir = workdir ?? NSTemporaryDirectory() + "/depot-catalog-bench-\(getpid())"
        defer { if workdir == nil { try? FileManager.default.removeItem(atPath: dir) } }
        let results = reportingErrors { () -> [String: Timing] in
            var options = StoreOptions()
            let schema = "bench_catalog_\(getpid())"
            // The pool a replica has by default: the operations run one at a time, so it only
            // has to be there.
            if let catalog { options.catalog = .postgres(PostgresSettings(url: catalog, schema: schema, poolSize: 16)) }
            defer { if let catalog { try? Database.dropSchema(PostgresSettings(url: catalog, schema: schema)) } }
            let store = try ChunkStore(root: dir, options: options, create: true)
            let registry = Registry(store: store)
            let repo = try RepositoryName("bench/model")
            // One config and one layer blob, shared by every manifest pushed below.
            func blob(_ bytes: [UInt8]) throws -> Digest {
                let w = try store.makeWriter()
                try w.write(bytes)
                let d = try w.finish().digest
                try registry.link(repo, d)
                return d
            }
            let config = Array("{}".utf8)
            let layer = BenchData.random(64 << 10, seed: 7)
            let configDigest = try blob(config)
            let layerDigest = try blob(layer)
            func manifest(_ i: Int) -> [UInt8] {
                let o: [String: Any] = [
                    "schemaVersion": 2, "mediaType": MediaType.ociManifest,
                    "config": [
                        "mediaType": "application/vnd.oci.image.config.v1+json", "digest": configDigest.description, "size": config.count,
                    ],
                    "layers": [
                        ["mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layerDigest.description, "size": layer.count]
                    ],
                    "annotations": ["bench.sequence": String(i)],
                ]
                return Array(try! JSONSerialization.data(withJSONObject: o, options: [.sortedKeys]))
            }
            func measure(_ n: Int, _ body: (Int) throws -> Void) rethrows -> Timing {
                var times: [Double] = []
                times.reserveCapacity(n)
                let started = DispatchTime.now().uptimeNanoseconds
                for i in 0..<n {
                    let t = DispatchTime.now().uptimeNanoseconds
                    try body(i)
                    times.append(Double(DispatchTime.now().uptimeNanoseconds - t) / 1e6)
                }
                let total = Double(DispatchTime.now().uptimeNanoseconds - started) / 1e9
                times.sort()
                func pct(_ p: Double) -> Double { (times[min(times.count - 1, Int(Double(times.count) * p))] * 1000).rounded() / 1000 }
                return Timing(p50Ms: pct(0.5), p99Ms: pct(0.99), perSecond: (Double(n) / max(total, 1e-9)).rounded())
            }
            var out: [String: Timing] = [:]
            // PUT: a new manifest each time, tagged (the tag moves: journal, audit, event).
            var last = Digest.of([])
            out["manifest_put_tagged"] = try measure(count) { i in
                last = try registry.putManifest(repo, .tag("latest"), contentType: MediaType.ociManifest, bytes: manifest(i)).digest
            }
            try store.catalog.refreshStatistics()
            out["manifest_get_by_tag"] = try measure(count) { _ in _ = try registry.manifest(repo, .tag("latest")) }
            out["manifest_get_by_digest"] = try measure(count) { _ in _ = try registry.manifest(repo, .digest(last)) }
            // Jobs: `count` queued (kind exec, labels a runner has), then leased one by one.
            let queue = JobQueue(registry: registry, pipelines: [])
            try store.catalog.write { conn in
                for i in 0..<count {
                    guard
                        let run = try conn.createPipelineRun(
                            // One run per trigger digest: each job its own run.
                            pipeline: "bench", repository: repo.value, digest: "sha256:" + String(format: "%064x", i), tag: nil,
                            eventID: nil, now: Int64(i))
                    else { continue }
                    _ = try conn.enqueueJob(
                        runID: run, pipeline: "bench",
                        NewJob(
                            stage: "convert", kind: "exec", spec: "{}", inputRepository: repo.value, inputDigest: last.description,
                            inputTag: nil, outputTag: nil, labels: ["cpu"], maxAttempts: 1, timeoutMs: 60_000),
                        now: Int64(i))
                }
            }
            try store.catalog.refreshStatistics()
            var leased = 0
            out["job_lease"] = try measure(count) { _ in
                if try queue.lease(runner: "bench", labels: ["cpu"]) != nil { leased += 1 }
            }
            guard leased == count else { throw DepotError.storage("leased \(leased) of \(count) queued jobs") }
            out["job_lease_empty_queue"] = try measure(count) { _ in
                if try queue.lease(runner: "bench", labels: ["cpu"]) != nil { throw DepotError.storage("a job was leased twice") }
            }
            return out
        }
        if json {
            struct Output: Codable {
                var catalog: String
                var count: Int
                var results: [String: Timing]
            }
            let data = try WireJSON.encode(Output(catalog: catalog == nil ? "sqlite" : "postgres", count: count, results: results))
            print(String(decoding: data, as: UTF8.self))
        } else {
            print("catalog: \(catalog == nil ? "sqlite" : "postgres"), \(count) of each")
            for (name, t) in results.sorted(by: { $0.key < $1.key }) {
                print(
                    name.padding(toLength: 26, withPad: " ", startingAt: 0)
                        + "p50 \(t.p50Ms) ms  p99 \(t.p99Ms) ms  \(Int(t.perSecond))/s")
            }
        }
    }
}
