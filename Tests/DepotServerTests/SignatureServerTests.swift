import DepotAPI
import DepotCatalog
import DepotClient
import DepotCore
import DepotDeploy
import DepotPipelines
import DepotRegistry
import DepotTestSupport
import DepotTrust
import Foundation
import Testing

@testable import DepotServer

/// Signed pipeline outputs, verified lineage and the deploy policy, on a live server with a real
/// runner (the end-to-end path with Triton nodes is scripts/e2e/canary.sh and pipeline.sh).
@Suite("Signatures and deploy policy")
struct SignatureServerTests {
    static let copy = """
        name: copy
        trigger: {repositories: ["models/*"], tags: ["v*"]}
        stages:
          copy: {exec: "cp -r $DEPOT_INPUT_DIR/. $DEPOT_OUTPUT_DIR/", tag: "{{tag}}-copy"}
        """

    static func answer(_ h: PipelineHarness, _ repo: String, _ reference: String) async throws -> SignatureListAnswer {
        let c = try RegistryConnection(url: h.url, token: h.admin)
        defer { Task { await c.shutdown() } }
        return try await c.request(.GET, Routes[.signatures].path(name: repo, ["reference": reference]), as: SignatureListAnswer.self)
    }

    @Test func aStageOutputIsSignedByThePipelineKeyAndItsLineageVerified() async throws {
        try await PipelineHarness.run(pipelines: [Self.copy]) { h, client in
            let input = try await h.push("models/demo", "v1", files: ["w.txt": "weights\n"])
            let done = try await h.withRunner { try await h.waitJobs { $0.count == 1 && $0.allFinal } }
            let job = try #require(done.stage("copy"))
            #expect(job.state == .succeeded, "\(job.reason ?? "")")
            let output = try Digest(parsing: try #require(job.outputDigest))

            // The registry's own verdict: one signature, by the pipeline key, naming the job.
            let answer = try await Self.answer(h, "models/demo", output.description)
            #expect(answer.signatures.count == 1)
            let sig = try #require(answer.signatures.first)
            #expect(sig.verified && sig.key == "pipeline", "\(sig)")
            #expect(sig.job == job.id && sig.stage == "copy" && sig.pipeline == "copy" && sig.input == input)
            #expect(sig.runner?.contains("test-runner") == true, "\(sig.runner ?? "nil")")

            // A client holding only the public key (what a node or an auditor has) verifies it too.
            let keyAnswer = try await client.req(.get, "/depot/v1/signing-key")
            let pem = try #require(keyAnswer.json["public_key_pem"] as? String)
            let c = try RegistryConnection(url: h.url, token: nil)
            defer { Task { await c.shutdown() } }
            let checks = try await c.checkSignatures(
                "models/demo", output, verifier: SignatureVerifier(keys: [try TrustedKey(name: "pipeline", pem: pem)]))
            #expect(checks.count == 1 && checks[0].verified.first?.statement.pipeline?.job == job.id)

            // The edge the runner wrote is verified by the job; the input itself was only pushed.
            let up = try h.registry.lineage(of: output, up: true)
            let edges = up.filter { $0.digest == input }.map(\.edge)
            #expect(!edges.isEmpty && edges.allSatisfy { $0.verifiedJob == job.id }, "\(edges)")
            // The input carries no signature.
            #expect(try await Self.answer(h, "models/demo", input.description).signatures.isEmpty)
        }
    }

    @Test func anOrdinaryPushDeclaringLineageStaysDeclared() async throws {
        try await PipelineHarness.run(pipelines: []) { h, _ in
            let parent = try await h.push("models/base", "v1", files: ["w.txt": "base\n"])
            // A user declares a parent and even claims a job id: declared, not verified.
            let repo = try RepositoryName("models/ft")
            let child = try h.pushManifestWithLineage(repo, from: "models/base@\(parent)", job: "1")
            let up = try h.registry.lineage(of: child, up: true)
            let edge = try #require(up.first { $0.digest == parent }?.edge)
            #expect(edge.verifiedJob == nil)
            #expect(try await Self.answer(h, "models/ft", child.description).signatures.isEmpty)
        }
    }

    static let production = DeployPolicy(environments: [
        "production": .init(signedBy: ["pipeline", "release"], pythonBackendSignedBy: ["pipeline"])
    ])

    @Test func theDeployPolicyRefusesUnsignedAndUnderSignedBundlesSayingWhy() async throws {
        let releaseKey = SigningKey.generate()
        let keyDir = TempDir("depot-release-key")
        try releaseKey.publicKeyPEM.write(toFile: keyDir.path + "/release.pub", atomically: true, encoding: .utf8)
        try await PipelineHarness.run(pipelines: [], deployPolicy: Self.production, trustedKeys: ["release": keyDir.path + "/release.pub"])
        {
            h, client in
            let repo = try RepositoryName("vision/adder")
            let python = try await DeploymentTests.pushBundle(h, repo.value, "py", marker: "1")
            let d = Deployments(registry: h.registry, policy: DeploymentTests.policy(), admission: h.trust)

            // Unsigned: refused, through the API (403 DENIED) and the Deployments entry point alike.
            let refused = try await client.req(
                .post, "/depot/v1/repositories/vision/adder/deployments/production/rollout", body: Array(#"{"reference":"py"}"#.utf8))
            #expect(refused.status == .forbidden)
            #expect(refused.text.contains("DENIED") && refused.text.contains("deploy policy"), "\(refused.text)")
            #expect(refused.text.contains("the pipeline key"), "a Python-backend bundle needs the pipeline key: \(refused.text)")
            let error = #expect(throws: RegistryError.self) { try d.start(repo, "production", .tag("py"), actor: "alice") }
            #expect(error?.code == .denied)
            // The refusal is in the audit journal.
            let audit = try h.registry.store.catalog.read { try $0.auditEntries(AuditFilter(action: "deploy.refused")) }
            #expect(audit.contains { $0.digest == python.description && $0.tag == "production" })

            // A release signature is not enough for a Python-backend bundle.
            let c = try RegistryConnection(url: h.url, token: h.admin)
            defer { Task { await c.shutdown() } }
            let fetched = try await c.manifest(repo.value, python.description)
            _ = try await c.pushSignature(repo.value, subject: fetched, key: releaseKey, signer: "release-manager", nowMs: 0)
            #expect(throws: RegistryError.self) { try d.start(repo, "production", .tag("py"), actor: "alice") }
            let verdict = try await Self.answer(h, repo.value, python.description)
            #expect(verdict.signatures.first?.key == "release")
            #expect(
                verdict.policies == [PolicyVerdict(environment: "production", allowed: false, reason: verdict.policies.first?.reason ?? "")]
            )

            // A bundle that runs no Python code, signed by the release key: allowed.
            let onnx = try await Self.pushONNXBundle(h, repo.value, "onnx")
            let onnxManifest = try await c.manifest(repo.value, onnx.description)
            _ = try await c.pushSignature(repo.value, subject: onnxManifest, key: releaseKey, signer: nil, nowMs: 0)
            let started = try d.start(repo, "production", .tag("onnx"), actor: "alice")
            #expect(started.deployment.stable == onnx.description)
            // Environments without a policy need nothing.
            #expect(try d.start(repo, "staging", .tag("py"), actor: "alice").deployment.stable == python.description)
        }
    }

    @Test func aSignatureCopiedOntoAReplacedManifestSatisfiesNothing() async throws {
        let releaseKey = SigningKey.generate()
        let keyDir = TempDir("depot-release-key")
        try releaseKey.publicKeyPEM.write(toFile: keyDir.path + "/release.pub", atomically: true, encoding: .utf8)
        let policy = DeployPolicy(environments: ["production": .init(signedBy: ["release"])])
        try await PipelineHarness.run(pipelines: [], deployPolicy: policy, trustedKeys: ["release": keyDir.path + "/release.pub"]) { h, _ in
            let repo = try RepositoryName("vision/adder")
            let signed = try await Self.pushONNXBundle(h, repo.value, "v1")
            let c = try RegistryConnection(url: h.url, token: h.admin)
            defer { Task { await c.shutdown() } }
            let m = try await c.manifest(repo.value, signed.description)
            let signature = try await c.pushSignature(repo.value, subject: m, key: releaseKey, signer: nil, nowMs: 0)
            // The attacker replaces v1 after signing and re-points the signature's envelope at it.
            let replaced = try await Self.pushONNXBundle(h, repo.value, "v1", marker: "tampered")
            #expect(replaced != signed)
            let sigDoc = try WireJSON.decode(
                OCIManifestDocument.self, from: try await c.manifest(repo.value, signature.description).bytes, what: "m")
            let envelope = try #require(sigDoc.layers?.first)
            let forged = try SignatureFormat.manifest(
                subject: OCIDescriptor(mediaType: MediaType.ociManifest, digest: replaced, size: 1), envelope: [], keyID: releaseKey.keyID,
                signer: nil, createdMs: 0)
            var forgedDoc = try WireJSON.decode(OCIManifestDocument.self, from: forged, what: "m")
            forgedDoc.layers = [envelope]
            let replacedManifest = try await c.manifest(repo.value, replaced.description)
            forgedDoc.subject = OCIDescriptor(
                mediaType: replacedManifest.mediaType, digest: replaced, size: Int64(replacedManifest.bytes.count))
            let forgedBytes = try WireJSON.encode(forgedDoc)
            try await c.putManifest(repo.value, Digest.of(forgedBytes).description, bytes: forgedBytes, mediaType: MediaType.ociManifest)

            let answer = try await Self.answer(h, repo.value, replaced.description)
            #expect(answer.signatures.count == 1 && !answer.signatures[0].verified)
            #expect(answer.signatures[0].reason?.contains("replaced after it was signed") == true, "\(answer.signatures)")
            let d = Deployments(registry: h.registry, policy: DeploymentTests.policy(), admission: h.trust)
            #expect(throws: RegistryError.self) { try d.start(repo, "production", .tag("v1"), actor: "alice") }
            // The node-side check (what triton-sync runs) refuses it the same way.
            let checks = try await c.checkSignatures(
                repo.value, replaced, verifier: SignatureVerifier(keys: [try TrustedKey(name: "release", pem: releaseKey.publicKeyPEM)]))
            #expect(checks.count == 1 && checks[0].verified.isEmpty && checks[0].failure?.contains("replaced") == true)
        }
    }

    /// A bundle served by the ONNX Runtime backend (no Python code on the nodes).
    static func pushONNXBundle(_ h: PipelineHarness, _ repo: String, _ tag: String, marker: String = "1") async throws -> Digest {
        let dir = h.dir.path + "/onnx-\(UUID().uuidString.prefix(6))"
        try FileManager.default.createDirectory(atPath: dir + "/adder/1", withIntermediateDirectories: true)
        try "name: \"adder\"\nbackend: \"onnxruntime\"\nmax_batch_size: 0\n".write(
            toFile: dir + "/adder/config.pbtxt", atomically: true, encoding: .utf8)
        try "# \(marker)\n".write(toFile: dir + "/adder/1/notes.txt", atomically: true, encoding: .utf8)
        let connection = try RegistryConnection(url: h.url, token: h.admin)
        defer { Task { await connection.shutdown() } }
        let summary = try await Pusher(
            connection: connection, progress: TransferProgress(style: .quiet, verb: "push", wire: connection.counters)
        )
        .push(PushRequest(repository: repo, tag: tag, paths: [dir]))
        return try Digest(parsing: summary.digest)
    }
}

extension PipelineHarness {
    /// Pushes a small artifact whose annotations declare lineage (and claim a job id).
    func pushManifestWithLineage(_ repo: RepositoryName, from: String, job: String) throws -> Digest {
        let layer = Array("child\n".utf8)
        let w = try registry.store.makeWriter()
        try w.write(layer)
        let l = try w.finish().digest
        try registry.link(repo, l)
        let cw = try registry.store.makeWriter()
        try cw.write(Array("{}".utf8))
        let cfg = try cw.finish().digest
        try registry.link(repo, cfg)
        let doc = OCIManifestDocument.image(
            config: OCIDescriptor(mediaType: MediaType.ociEmpty, digest: cfg, size: 2),
            layers: [OCIDescriptor(mediaType: "application/octet-stream", digest: l, size: Int64(layer.count))],
            annotations: [Annotation.Lineage.from: from, Annotation.Lineage.job: job])
        let bytes = try WireJSON.encode(doc)
        return try registry.putManifest(repo, .tag("v1"), contentType: MediaType.ociManifest, bytes: bytes).digest
    }
}
