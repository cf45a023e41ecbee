import DepotAPI
import DepotCore
import Foundation
import Testing

/// The job and deployment wire types: a value survives encode → decode, and today's exact JSON
/// (as the server wrote it before these types, and as scripts and hooks read it) decodes.
@Suite struct JobsDeployAPITests {
    static let a = try! Digest(parsing: "sha256:" + String(repeating: "a", count: 64))
    static let b = try! Digest(parsing: "sha256:" + String(repeating: "b", count: 64))

    func roundTrip<T: Codable & Equatable>(_ value: T) throws {
        let bytes = try WireJSON.encode(value)
        #expect(try WireJSON.decode(T.self, from: bytes, what: "test") == value, "\(String(decoding: bytes, as: UTF8.self))")
    }

    func decode<T: Decodable>(_ type: T.Type, _ text: String) throws -> T {
        try WireJSON.decode(T.self, from: Array(text.utf8), what: "test")
    }

    func object(_ value: some Encodable) throws -> [String: Any] {
        try #require(try JSONSerialization.jsonObject(with: Data(WireJSON.encode(value))) as? [String: Any])
    }

    static let job = JobInfo(
        id: 3, run: 1, pipeline: "convert", stage: "onnx", kind: "exec", state: .running, attempt: 1, maxAttempts: 3,
        labels: ["gpu"], memoized: false, timeoutSeconds: 1800, createdAt: "2026-05-03T14:00:00.000Z",
        updatedAt: "2026-05-03T14:00:01.000Z", input: JobInput(repository: "vision/resnet", digest: a, tag: "v1"),
        output: JobOutput(tag: "v1-onnx"),
        spec: .object(["kind": .string("exec"), "command": .array([.string("convert")]), "timeout_seconds": .int(1800)]),
        runner: "r1", leaseExpires: "2026-05-03T14:00:31.000Z", leaseToken: "tok")

    @Test func jobTypesRoundTrip() throws {
        try roundTrip(Self.job)
        try roundTrip(JobListAnswer(jobs: [Self.job]))
        try roundTrip(JobLeaseAnswer(job: Self.job))
        try roundTrip(JobLeaseAnswer(job: nil))
        try roundTrip(JobLeaseRequest(runner: "r1", labels: ["gpu"]))
        try roundTrip(JobStartRequest(leaseToken: "tok", key: "k"))
        try roundTrip(JobStartAnswer(decision: .memoized, output: Self.b))
        try roundTrip(JobHeartbeatRequest(leaseToken: "tok"))
        try roundTrip(JobCompleteRequest(leaseToken: "tok", output: Self.b))
        try roundTrip(JobFailRequest(leaseToken: "tok", reason: "exit 1", permanent: true))
        try roundTrip(JobLogAnswer(digest: Self.b))
        try roundTrip(JobCallbackRequest(job: 3, attempt: 1, status: .succeeded, output: Self.b.description))
        let stage = PipelineStageInfo(name: "onnx", kind: "exec", needs: [], labels: ["gpu"], timeoutSeconds: 60, retries: 2, tag: "x")
        try roundTrip(
            PipelineListAnswer(pipelines: [
                PipelineInfo(
                    name: "convert", file: "convert.yaml",
                    trigger: PipelineTriggerInfo(repositories: ["vision/*"], tags: [], artifactTypes: []), stages: [stage])
            ]))
    }

    @Test func jobFieldsKeepTheirWireNames() throws {
        let o = try object(Self.job)
        #expect(o["max_attempts"] as? Int == 3 && o["timeout_seconds"] as? Int == 1800 && o["lease_token"] as? String == "tok")
        #expect(o["state"] as? String == "running" && o["created_at"] != nil && o["lease_expires"] != nil)
        #expect((o["output"] as? [String: Any])?.keys.sorted() == ["tag"], "an absent output digest is left out")
        #expect(o["reason"] == nil && o["log"] == nil && o["not_before"] == nil, "absent fields are left out")
        // No job waiting: the lease answer says null rather than leaving `job` out.
        #expect(String(decoding: try WireJSON.encode(JobLeaseAnswer(job: nil)), as: UTF8.self) == #"{"job":null}"#)
        #expect(String(decoding: try WireJSON.encode(JobStartAnswer(decision: .run)), as: UTF8.self) == #"{"decision":"run"}"#)
    }

    @Test func todaysJobJSONDecodes() throws {
        let text = """
            {"attempt":2,"created_at":"2026-05-03T14:00:00.000Z","id":12,"input":{"digest":"\(Self.a)","repository":"vision/resnet"},
             "kind":"builtin","labels":[],"lease_token":"abc","max_attempts":3,"memoized":true,"output":{"digest":"\(Self.b)","tag":"v1-onnx"},
             "pipeline":"convert","reason":"first\\nsecond","run":4,"spec":{"builtin":"onnx-convert","kind":"builtin","with":{"opset":"17"}},
             "stage":"onnx","state":"succeeded","timeout_seconds":600,"updated_at":"2026-05-03T14:00:05.000Z","log":"\(Self.b)",
             "started_at":"2026-05-03T14:00:01.000Z","finished_at":"2026-05-03T14:00:05.000Z","key":"k1","runner":"r"}
            """
        let j = try decode(JobInfo.self, text)
        #expect(j.id == 12 && j.run == 4 && j.state == .succeeded && j.memoized && j.attempt == 2 && j.maxAttempts == 3)
        #expect(j.input == JobInput(repository: "vision/resnet", digest: Self.a) && j.output == JobOutput(tag: "v1-onnx", digest: Self.b))
        #expect(j.spec?["with"]?["opset"]?.string == "17" && j.log == Self.b && j.leaseToken == "abc")
        #expect(try decode(JobLeaseAnswer.self, #"{"job":null}"#).job == nil)
        #expect(try decode(JobStartAnswer.self, #"{"decision":"memoized","output":"\#(Self.b)"}"#).output == Self.b)
        let callback = try decode(JobCallbackRequest.self, #"{"job":12,"attempt":2,"status":"failed","reason":"nope"}"#)
        #expect(callback.status == .failed && callback.job == 12 && callback.attempt == 2 && callback.reason == "nope")
        let pipelines = try decode(
            PipelineListAnswer.self,
            #"{"pipelines":[{"file":"c.yaml","name":"c","stages":[{"kind":"exec","labels":[],"name":"s","needs":[],"retries":2,"timeout_seconds":1800}],"trigger":{"artifact_types":[],"repositories":["a"],"tags":["v*"]}}]}"#
        )
        #expect(pipelines.pipelines.first?.stages.first?.tag == nil && pipelines.pipelines.first?.trigger.tags == ["v*"])
    }

    static let status = DeploymentStatusAnswer(
        deployment: DeploymentInfo(
            repository: "vision/adder", environment: "production", model: "adder", weight: 10,
            updatedAt: "2026-05-03T14:00:00.000Z", stable: a, canary: b, stableVersion: 1, canaryVersion: 2),
        rollout: RolloutInfo(
            id: 5, state: .running, canary: b, stable: a, steps: [10, 50, 100], step: 1, weight: 10, analysisSeconds: 1.5,
            failures: ["errors": 1], startedBy: "ops", startedAt: "2026-05-03T14:00:00.000Z",
            stepStartedAt: "2026-05-03T14:00:00.000Z",
            decisions: [
                RolloutDecisionInfo(
                    at: "2026-05-03T14:00:00.000Z", decision: "start", step: 1, weight: 10, actor: "ops",
                    measurements: .object(["measurements": .array([.object(["check": .string("errors")])])]))
            ]),
        nodes: [DeploymentNodeInfo(node: "n1", seenAt: "2026-05-03T14:00:00.000Z", digest: b, version: 2, state: .ready)])

    @Test func deployTypesRoundTrip() throws {
        try roundTrip(Self.status)
        try roundTrip(DeploymentStatusAnswer(deployment: Self.status.deployment, nodes: []))
        try roundTrip(
            DeploymentListAnswer(deployments: [DeploymentSummary(repository: "r", environment: "e", model: "m", weight: 0, stable: Self.a)])
        )
        try roundTrip(
            ServedAnswer(
                digest: Self.a, served: [ServedIntervalInfo(repository: "r", environment: "e", role: "stable", weight: 100, from: "x")]))
        try roundTrip(RolloutStartRequest(reference: "v2", steps: [1, 100], analysisSeconds: 90))
        try roundTrip(RolloutControlRequest(reason: "why"))
        try roundTrip(RolloutControlRequest())
        try roundTrip(DeploymentResolution(digest: Self.a, version: 1, model: "adder", role: "canary", weight: 10))
        try roundTrip(NodeReportRequest(state: .failed, digest: Self.a.description, version: 2, reason: "load failed"))
        try roundTrip(NodeReportAnswer(node: "n1", state: .ready))
    }

    @Test func deployFieldsKeepTheirWireNames() throws {
        let o = try object(Self.status)
        let d = try #require(o["deployment"] as? [String: Any])
        #expect(d["stable_version"] as? Int == 1 && d["canary_version"] as? Int == 2 && d["updated_at"] != nil)
        let r = try #require(o["rollout"] as? [String: Any])
        #expect(r["analysis_seconds"] as? Double == 1.5 && r["started_by"] as? String == "ops" && r["step_started_at"] != nil)
        #expect(r["state"] as? String == "running" && r["finished_at"] == nil && r["reason"] == nil)
        #expect((o["nodes"] as? [[String: Any]])?.first?["seen_at"] != nil)
        #expect(try self.object(DeploymentStatusAnswer(deployment: Self.status.deployment, nodes: []))["rollout"] == nil)
        #expect(try self.object(RolloutControlRequest()).isEmpty, "no reason: an empty object")
    }

    @Test func todaysDeploymentJSONDecodes() throws {
        let text = """
            {"deployment":{"canary":"\(Self.b)","environment":"production","model":"adder","repository":"vision/adder",
              "stable":"\(Self.a)","stable_version":1,"updated_at":"2026-05-03T14:00:00.000Z","weight":10},
             "nodes":[{"node":"n1","seen_at":"2026-05-03T14:00:00.000Z"}],
             "rollout":{"analysis_seconds":90,"canary":"\(Self.b)","decisions":[{"actor":"canary","at":"2026-05-03T14:01:30.000Z",
               "decision":"rollback","measurements":{"measurements":[{"check":"errors","detail":"0.5 > 0.01","outcome":"fail"}]},
               "reason":"errors","step":1,"weight":10}],"failures":{},"id":5,"started_at":"2026-05-03T14:00:00.000Z",
               "started_by":"ops","state":"rolled-back","step":1,"step_started_at":"2026-05-03T14:00:00.000Z","steps":[10,50,100],"weight":10}}
            """
        let s = try decode(DeploymentStatusAnswer.self, text)
        #expect(s.deployment.canaryVersion == nil && s.deployment.canary == Self.b && s.nodes.first?.state == nil)
        #expect(s.rollout?.state == .rolledBack && s.rollout?.analysisSeconds == 90 && s.rollout?.failures.isEmpty == true)
        #expect(s.rollout?.decisions.first?.measurements?["measurements"]?.array?.first?["outcome"]?.string == "fail")
        let start = try decode(RolloutStartRequest.self, #"{"digest":"\#(Self.a)","steps":[1,10,100],"analysis_seconds":30}"#)
        #expect(start.reference == nil && start.digest == Self.a.description && start.steps == [1, 10, 100] && start.analysisSeconds == 30)
        let r = try decode(DeploymentResolution.self, #"{"digest":"\#(Self.a)","model":"adder","role":"stable","version":3,"weight":0}"#)
        #expect(r.version == 3 && r.digest == Self.a)
        let report = try decode(NodeReportRequest.self, #"{"state":"ready","digest":"\#(Self.a)","version":1}"#)
        #expect(report.state == .ready && report.reason == nil)
        #expect(throws: DocumentError.self) { try decode(NodeReportRequest.self, #"{"state":"loading"}"#) }
    }
}
