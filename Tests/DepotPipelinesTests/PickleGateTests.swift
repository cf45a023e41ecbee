import DepotCatalog
import DepotCore
import DepotPipelines
import DepotRegistry
import DepotTestSupport
import Foundation
import Testing

/// The pickle gate (docs/SECURITY.md): an input whose pickles import anything outside the
/// allow-list never reaches a runner unless the operator trusts its repository.
@Suite struct PickleGateTests {
    static let pipeline = """
        name: convert
        trigger:
          repositories: ["models/*"]
        stages:
          onnx:
            builtin: convert
            tag: "{{tag}}-onnx"
        """

    static func queue(_ t: TestRegistry, trust: [String] = []) throws -> JobQueue {
        var options = JobQueue.Options()
        options.trustPickle = trust
        let q = JobQueue(registry: t.registry, pipelines: [try PipelineLoader.parse(pipeline, file: "convert.yaml")], options: options)
        _ = try q.schedule()
        return q
    }

    /// GLOBAL os.system, a string, TUPLE1, REDUCE, STOP: protocol 2.
    static let evil: [UInt8] = [0x80, 0x02] + Array("cos\nsystem\n".utf8) + [0x8c, 2] + Array("id".utf8) + [0x85, 0x52, 0x2e]
    /// An OrderedDict: allowed.
    static let clean: [UInt8] = [0x80, 0x02] + Array("ccollections\nOrderedDict\n".utf8) + [0x29, 0x52, 0x2e]

    static func push(_ t: TestRegistry, _ repo: String, _ bytes: [UInt8], path: String = "model.pkl") throws -> Digest {
        try t.pushManifest(repo, "v1", layers: [bytes], layerAnnotations: [["org.cncf.model.filepath": path]])
    }

    @Test func aPickleOutsideTheListFailsItsJobBeforeAnyRunner() throws {
        let t = try TestRegistry("pickle-gate")
        let q = try Self.queue(t)
        try Self.push(t, "models/x", Self.evil)
        #expect(try q.schedule() == 0, "nothing queued")
        let job = try #require(try q.jobs(state: nil, pipeline: "convert", limit: 10).first)
        #expect(rawText(job.state) == "failed" && job.attempt == 0)
        let reason = job.reason ?? ""
        #expect(reason.contains("model.pkl imports os.system (runs code)"), "\(reason)")
        #expect(reason.contains("pipelines.trust_pickle"))
        #expect(try q.lease(runner: "r", labels: []) == nil)
        // A retry queues it again, and the lease refuses it again.
        _ = try q.retry(job.id, actor: "ops")
        #expect(try q.lease(runner: "r", labels: []) == nil)
        #expect(rawText(try q.job(job.id).state) == "failed")
    }

    @Test func unscannableAndGarbagePicklesAreRefusedToo() throws {
        let t = try TestRegistry("pickle-gate-garbage")
        let q = try Self.queue(t)
        try Self.push(t, "models/g", Array("not a pickle".utf8))
        try Self.push(t, "models/z", [0x78, 0x9c, 1, 2, 3], path: "model.joblib")
        _ = try q.schedule()
        let jobs = try q.jobs(state: nil, pipeline: "convert", limit: 10)
        #expect(jobs.count == 2)
        for job in jobs {
            #expect(rawText(job.state) == "failed")
            #expect(job.reason?.contains("could not be scanned") == true, "\(job.reason ?? "")")
        }
    }

    @Test func aCleanPickleRunsWithoutTrust() throws {
        let t = try TestRegistry("pickle-gate-clean")
        let q = try Self.queue(t)
        try Self.push(t, "models/ok", Self.clean)
        #expect(try q.schedule() == 1)
        let leased = try #require(try q.lease(runner: "r", labels: []))
        #expect(!leased.spec.contains("trust_pickle"))
    }

    @Test func aTrustedRepositoryRunsWithTrustPickleAndIsAudited() throws {
        let t = try TestRegistry("pickle-gate-trusted")
        let q = try Self.queue(t, trust: ["models/trusted*"])
        try Self.push(t, "models/trusted-1", Self.evil)
        try Self.push(t, "models/other", Self.evil)
        #expect(try q.schedule() == 1, "only the trusted repository's job is queued")
        let leased = try #require(try q.lease(runner: "r", labels: []))
        #expect(leased.inputRepository == "models/trusted-1")
        #expect(leased.spec.contains("\"trust_pickle\":\"true\""), "\(leased.spec)")
        let audit = try t.registry.store.catalog.read { try $0.auditEntries(AuditFilter()) }
        #expect(audit.contains { $0.action == "pipeline.trust_pickle" && $0.repository == "models/trusted-1" })
        #expect(audit.contains { $0.action == "pipeline.pickle_refused" && $0.repository == "models/other" })
    }

    /// The gate reads a manifest as the registry and the runner do: a field they skip cannot hide
    /// the layers from it, and a manifest it cannot read at all is refused, never clean.
    @Test func theGateReadsWhatTheRunnerReadsAndFailsClosed() {
        let layer = """
            {"mediaType": "application/octet-stream", "size": 3,
             "digest": "sha256:\(String(repeating: "a", count: 64))",
             "annotations": {"org.cncf.model.filepath": "model.pt"}}
            """
        let config =
            #"{"mediaType": "application/vnd.oci.image.config.v1+json", "size": 2, "digest": "sha256:\#(String(repeating: "b", count: 64))"}"#
        // A number no Double holds, in a field no decoder of the registry reads.
        let hiding = #"{"schemaVersion": 2, "x": 1e400, "config": \#(config), "layers": [\#(layer)]}"#
        let findings = PickleGate.findings(manifest: Array(hiding.utf8), metadata: nil)
        #expect(findings.count == 1 && findings[0].contains("model.pt: not scanned"), "\(findings)")
        let unreadable = PickleGate.findings(manifest: Array("{\"layers\": [".utf8), metadata: nil)
        #expect(unreadable.count == 1 && unreadable[0].contains("could not be read"), "\(unreadable)")
    }

    @Test func pipelineFilesCannotLiftThePolicy() {
        for key in ["trust_pickle", "TRUST_PICKLE", "pickle_modules"] {
            let text = Self.pipeline + "\n    with: {\(key): \"true\"}\n"
            #expect(throws: (any Error).self) { try PipelineLoader.parse(text, file: "p.yaml") }
        }
    }
}
