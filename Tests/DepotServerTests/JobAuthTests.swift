import DepotAPI
import DepotCatalog
import DepotCore
import DepotTestSupport
import Foundation
import HTTPTypes
import HummingbirdTesting
import Testing

@testable import DepotServer

/// Runners and pipeline outputs with authentication on: a lease needs a runner token whose
/// labels cover the job, job calls come only from the lease holder, and only it may push
/// manifests that claim to be the job's output.
@Suite(.serialized) struct JobAuthTests {
    static let oneStage = """
        name: upper
        trigger: {repositories: ["models/*"], tags: ["v*"]}
        stages:
          upper:
            exec: 'tr a-z A-Z < "$DEPOT_INPUT_DIR/hello.txt" > "$DEPOT_OUTPUT_DIR/HELLO.txt"'
            tag: "{{tag}}-upper"
        """

    func token(
        _ client: any TestClientProtocol, _ admin: String, _ name: String, _ role: RoleName, labels: [String]? = nil,
        repositories: [String] = ["**"]
    ) async throws -> String {
        let kind: TokenKind = role == .runner ? .runner : .robot
        let body = try WireJSON.encode(
            TokenCreateRequest(name: name, kind: kind, grants: [GrantSpec(role: role, repositories: repositories)], labels: labels))
        let r = try await client.req(.post, "/depot/v1/admin/tokens", headers: bearer(admin), body: body)
        try #require(r.status.code == 201, "\(r.text)")
        return try #require(try WireJSON.decode(TokenInfo.self, from: r.bytes, what: "token").secret)
    }

    @Test func aRunnerTokenRunsAPipelineEndToEnd() async throws {
        try await PipelineHarness.run(pipelines: [Self.oneStage], auth: true) { h, client in
            let runnerToken = try await token(client, h.admin!, "runner-1", .runner, labels: ["cpu"])
            _ = try await h.push("models/demo", "v1", files: ["hello.txt": "hello\n"])
            // The runner authenticates with its token; the job succeeds and names its holder.
            let done = try await h.withRunner(token: runnerToken) { try await h.waitJobs { $0.count == 1 && $0.allFinal } }
            #expect(done.first?.state == .succeeded, "\(done.map { ($0.stage, $0.state, $0.reason ?? "") })")
            #expect(done.first?.runner == "test-runner [token:runner-1]", "the lease names its holder")
            #expect(try await h.pull("models/demo", "v1-upper")["HELLO.txt"] == "HELLO\n")
        }
    }

    @Test func leasesAndJobCallsAreBoundToTheRunnerToken() async throws {
        try await PipelineHarness.run(pipelines: [Self.oneStage], auth: true) { h, client in
            let a = try await token(client, h.admin!, "runner-a", .runner, labels: ["cpu"])
            let b = try await token(client, h.admin!, "runner-b", .runner, labels: ["cpu"])
            let writer = try await token(client, h.admin!, "ci", .writer)
            _ = try await h.push("models/demo", "v1", files: ["hello.txt": "hello\n"])
            try await h.waitJobs { $0.count == 1 }
            // Labels beyond the token's, or a token that is not a runner's: refused.
            let gpu = try WireJSON.encode(JobLeaseRequest(runner: "x", labels: ["cpu", "gpu"]))
            #expect(try await client.req(.post, "/depot/v1/jobs/lease", headers: bearer(a), body: gpu).status.code == 403)
            let cpu = try WireJSON.encode(JobLeaseRequest(runner: "x", labels: ["cpu"]))
            #expect(try await client.req(.post, "/depot/v1/jobs/lease", headers: bearer(writer), body: cpu).status.code == 403)
            #expect(try await client.req(.post, "/depot/v1/jobs/lease", headers: bearer(h.admin!), body: cpu).status.code == 403)
            // A leases; B knows the lease token but is not the holder.
            let leased = try await client.req(.post, "/depot/v1/jobs/lease", headers: bearer(a), body: cpu)
            let job = try #require(try WireJSON.decode(JobLeaseAnswer.self, from: leased.bytes, what: "lease").job)
            let beat = try WireJSON.encode(JobHeartbeatRequest(leaseToken: try #require(job.leaseToken)))
            let stolen = try await client.req(.post, "/depot/v1/jobs/\(job.id)/heartbeat", headers: bearer(b), body: beat)
            #expect(stolen.status.code == 403 && stolen.text.contains("not leased by token:runner-b"), "\(stolen.text)")
            #expect(try await client.req(.post, "/depot/v1/jobs/\(job.id)/heartbeat", headers: bearer(a), body: beat).status.code == 200)

            // A manifest claiming to be the job's output: refused unless pushed by the holder.
            let config = Array("{}".utf8)
            let d = Digest.of(config)
            _ = try await client.req(.post, "/v2/models/demo/blobs/uploads/?digest=\(d)", headers: bearer(writer), body: config)
            let claim = manifestJSON(
                config: (d, config.count, MediaType.ociImageConfig), layers: [],
                annotations: [Annotation.Lineage.job: "\(job.id)", Annotation.Job.key: "forged-key"])
            var hw = bearer(writer)
            hw[.contentType] = MediaType.ociManifest
            let forged = try await client.req(.put, "/v2/models/demo/manifests/v1-upper", headers: hw, body: claim)
            #expect(forged.status.code == 403 && forged.errorCode == "DENIED", "\(forged.text)")
            var ha = bearer(a)
            ha[.contentType] = MediaType.ociManifest
            // The holder itself cannot plant the output elsewhere or under another key.
            _ = try await client.req(.post, "/v2/models/other/blobs/uploads/?digest=\(d)", headers: bearer(a), body: config)
            #expect(try await client.req(.put, "/v2/models/other/manifests/x", headers: ha, body: claim).status.code == 403)
            // The job is leased but not started: not yet a running job's output.
            #expect(try await client.req(.put, "/v2/models/demo/manifests/v1-upper", headers: ha, body: claim).status.code == 403)
            // A runner token granted on other repositories never sees this job.
            let elsewhere = try await token(client, h.admin!, "runner-c", .runner, labels: ["cpu"], repositories: ["team/**"])
            _ = try await client.req(
                .post, "/depot/v1/jobs/\(job.id)/fail", headers: bearer(a),
                body: try WireJSON.encode(JobFailRequest(leaseToken: try #require(job.leaseToken), reason: "requeue", permanent: false)))
            try await h.waitJobs { $0.first?.state == .queued }
            let none = try await client.req(.post, "/depot/v1/jobs/lease", headers: bearer(elsewhere), body: cpu)
            #expect(try WireJSON.decode(JobLeaseAnswer.self, from: none.bytes, what: "lease").job == nil, "\(none.text)")
        }
    }
}
