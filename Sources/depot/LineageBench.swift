import ArgumentParser
import DepotAPI
import DepotCatalog
import DepotCore
import DepotRegistry
import DepotStore
import Foundation

/// `depot bench lineage`: a generated lineage graph with realistic fan-out, and the latency of
/// ancestors / descendants / impact queries on it.
struct LineageBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "lineage",
        abstract: "Lineage query latency on a generated graph (default ~100,000 artifacts).",
        discussion: """
            Shape: base models; training runs, each a chain of checkpoints (trained-from a base, then \
            fine-tuned-from the previous checkpoint); every 4th checkpoint converted to ONNX, compiled to a \
            TensorRT plan and packaged as a Triton bundle; each run's last bundle tagged. Queries pick random \
            artifacts: ancestors of a bundle, descendants of a checkpoint, impact of a checkpoint (tags downstream).
            """)
    @Option(help: "Training runs.") var runs = 950
    @Option(help: "Checkpoints per run.") var chain = 60
    @Option(help: "Base models the runs start from.") var bases = 20
    @Option(help: "Queries of each kind.") var queries = 1000
    @Option(help: "Work directory (a temporary one by default).") var workdir: String?
    @Option(help: "Build the graph in this PostgreSQL database (a libpq URL; a fresh schema, dropped after) instead of SQLite.")
    var catalog: String?
    @Flag(help: "Machine-readable output.") var json = false

    func run() throws {
        let dir = workdir ?? NSTemporaryDirectory() + "/depot-lineage-bench-\(getpid())"
        defer { if workdir == nil { try? FileManager.default.removeItem(atPath: dir) } }
        let result = reportingErrors { () -> LineageBenchResult in
            var options = StoreOptions()
            let schema = "bench_lineage_\(getpid())"
            if let catalog { options.catalog = .postgres(PostgresSettings(url: catalog, schema: schema, poolSize: 4)) }
            defer { if let catalog { try? Database.dropSchema(PostgresSettings(url: catalog, schema: schema)) } }
            let store = try ChunkStore(root: dir, options: options, create: true)
            let registry = Registry(store: store)
            var rng = SystemRandomNumberGenerator()
            let started = Date()
            let graph = try Self.build(store, runs: runs, chain: chain, bases: bases)
            let (checkpoints, bundles, baseDigests, next) = (graph.checkpoints, graph.bundles, graph.bases, graph.artifacts)
            let built = Date().timeIntervalSince(started)
            try store.catalog.refreshStatistics()
            func measure(count: Int? = nil, _ body: () throws -> Int) rethrows -> LineageBenchResult.Timing {
                var times: [Double] = []
                var sizes = 0
                for _ in 0..<(count ?? queries) {
                    let t = Date()
                    sizes += try body()
                    times.append(Date().timeIntervalSince(t) * 1000)
                }
                times.sort()
                func pct(_ p: Double) -> Double { (times[min(times.count - 1, Int(Double(times.count) * p))] * 1000).rounded() / 1000 }
                return .init(p50Ms: pct(0.5), p99Ms: pct(0.99), maxMs: pct(1.0), meanResult: sizes / max(1, times.count))
            }
            let ancestors = try measure { try registry.lineage(of: bundles.randomElement(using: &rng)!, up: true, depth: 1000).count }
            let descendants = try measure {
                try registry.lineage(of: checkpoints.randomElement(using: &rng)!, up: false, depth: 1000).count
            }
            let impact = try measure { try registry.impact(of: checkpoints.randomElement(using: &rng)!).tags.count }
            // One manifest by digest straight from the catalog (what a registry cache miss costs).
            let repoID = try store.catalog.read { try $0.repositoryID("bench/models") }!
            let manifest = try measure {
                let d = bundles.randomElement(using: &rng)!
                return try store.catalog.read { try $0.manifest(repo: repoID, d) }?.content.count ?? 0
            }
            // The worst case: a base model that a twentieth of all runs started from.
            let baseImpact = try measure(count: 20) { try registry.impact(of: baseDigests.randomElement(using: &rng)!).derived.count }
            return LineageBenchResult(
                artifacts: next, edges: next - bases, buildSeconds: (built * 100).rounded() / 100,
                ancestorsOfBundle: ancestors, descendantsOfCheckpoint: descendants, impactOfCheckpoint: impact,
                impactOfBaseModel: baseImpact, manifestByDigest: manifest, catalog: store.catalog.dialect.rawValue)
        }
        if json { return printJSON(result) }
        print("graph: \(result.artifacts) artifacts, \(result.edges) edges (built in \(result.buildSeconds) s)")
        print("catalog: \(result.catalog)")
        for (key, m) in [
            ("ancestors_of_bundle", result.ancestorsOfBundle), ("descendants_of_checkpoint", result.descendantsOfCheckpoint),
            ("impact_of_checkpoint", result.impactOfCheckpoint), ("impact_of_base_model", result.impactOfBaseModel),
            ("manifest_by_digest", result.manifestByDigest),
        ] {
            print("\(key): p50 \(m.p50Ms) ms, p99 \(m.p99Ms) ms, max \(m.maxMs) ms, mean result \(m.meanResult)")
        }
    }

    /// What `--json` prints (keys as before: scripts read them).
    struct LineageBenchResult: Codable {
        struct Timing: Codable {
            var p50Ms: Double
            var p99Ms: Double
            var maxMs: Double
            var meanResult: Int
            enum CodingKeys: String, CodingKey {
                case p50Ms = "p50_ms"
                case p99Ms = "p99_ms"
                case maxMs = "max_ms"
                case meanResult = "mean_result"
            }
        }
        var artifacts: Int
        var edges: Int
        var buildSeconds: Double
        var ancestorsOfBundle: Timing
        var descendantsOfCheckpoint: Timing
        var impactOfCheckpoint: Timing
        var impactOfBaseModel: Timing
        var manifestByDigest: Timing
        var catalog: String
        enum CodingKeys: String, CodingKey {
            case artifacts, edges, catalog
            case buildSeconds = "build_seconds"
            case ancestorsOfBundle = "ancestors_of_bundle"
            case descendantsOfCheckpoint = "descendants_of_checkpoint"
            case impactOfCheckpoint = "impact_of_checkpoint"
            case impactOfBaseModel = "impact_of_base_model"
            case manifestByDigest = "manifest_by_digest"
        }
    }
    /// What `build` made.
    struct Graph {
        var checkpoints: [Digest] = []
        var bundles: [Digest] = []
        var bases: [Digest] = []
        var artifacts = 0
    }

    /// Writes the graph straight into the catalog (manifests without blobs, lineage edges, a tag
    /// per run, the search facts a push would write): the benchmark measures queries, not pushes.
    static func build(_ store: ChunkStore, runs: Int, chain: Int, bases: Int) throws -> Graph {
        var g = Graph()
        func fake(_ i: Int) -> Digest { Digest.of(Array("artifact-\(i)".utf8)) }
        var next = 0
        try store.catalog.write { conn in
            let repo = try conn.ensureRepository("bench/models", now: 0)
            func artifact(_ type: String, run: Int?) throws -> Digest {
                let d = fake(next)
                next += 1
                let content = Array("{\"n\":\(next)}".utf8)
                // Times in push order (milliseconds), so "newest first" means something.
                try conn.putManifest(
                    repo: repo,
                    ManifestRecord(
                        digest: d, mediaType: MediaType.ociManifest, artifactType: type,
                        subject: nil, annotationsJSON: run.map { "{\"\(Annotation.Lineage.run)\":\"run-\($0)\"}" }, content: content),
                    blobs: [], children: [], now: Int64(next))
                try conn.setArtifactFacts(
                    repo: repo, d,
                    ArtifactFacts.of(
                        mediaType: MediaType.ociManifest, artifactType: type,
                        annotations: run.map { [Annotation.Lineage.run: "run-\($0)"] },
                        metadataJSON: nil), createdAt: Int64(next))
                return d
            }
            func edge(_ child: Digest, _ parent: Digest, _ relation: String, run: Int) throws {
                try conn.insertLineageEdge(
                    LineageEdge(
                        child: child, parent: parent, relation: relation, parentRef: "bench/models@\(parent)",
                        repository: "bench/models", run: "run-\(run)", createdAt: 0), repo: repo)
            }
            let baseModels = try (0..<bases).map { _ in try artifact("application/vnd.cncf.model.manifest.v1+json", run: nil) }
            g.bases = baseModels
            for r in 0..<runs {
                var previous = baseModels[r % bases]
                var lastBundle: Digest?
                for k in 0..<chain {
                    let ckpt = try artifact("application/vnd.cncf.model.manifest.v1+json", run: r)
                    try edge(ckpt, previous, k == 0 ? "trained-from" : "fine-tuned-from", run: r)
                    g.checkpoints.append(ckpt)
                    previous = ckpt
                    if k % 4 == 3 {
                        let onnx = try artifact("application/vnd.cncf.model.manifest.v1+json", run: r)
                        try edge(onnx, ckpt, "converted-from", run: r)
                        let plan = try artifact("application/vnd.depot.tensorrt.plan.v1", run: r)
                        try edge(plan, onnx, "compiled-from", run: r)
                        let bundle = try artifact("application/vnd.depot.triton.bundle.v1", run: r)
                        try edge(bundle, plan, "packaged-from", run: r)
                        g.bundles.append(bundle)
                        lastBundle = bundle
                    }
                }
                if let lastBundle {
                    try conn.setTag(repo: repo, "run-\(r)-latest", to: lastBundle, actor: "bench", reason: nil, now: 0)
                }
            }
        }
        g.artifacts = next
        return g
    }
}
