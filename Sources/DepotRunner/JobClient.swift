import DepotAPI
import DepotClient
import DepotCore
import Foundation

/// A job as a runner leased it: the stage to execute, its input, and the lease token.
public struct LeasedJob: Sendable {
    public var id: Int64
    public var token: String
    public var pipeline: String
    public var stage: String
    public var attempt: Int
    public var inputRepository: String
    public var inputDigest: Digest
    public var inputTag: String?
    public var outputTag: String?
    public var spec: StageSpec

    init(_ job: JobInfo) throws {
        guard let token = job.leaseToken, let spec = job.spec else {
            throw ClientError("the registry's job lease is malformed (no lease_token or spec)")
        }
        id = job.id
        self.token = token
        pipeline = job.pipeline
        stage = job.stage
        attempt = job.attempt
        inputRepository = job.input.repository
        inputDigest = job.input.digest
        inputTag = job.input.tag
        outputTag = job.output.tag
        self.spec = try StageSpec(spec)
    }
}

/// What a stage runs, as the server describes it in a lease.
public struct StageSpec: Sendable {
    public enum Kind: Sendable {
        case exec([String])
        case builtin(String)
    }
    public var kind: Kind
    public var with: [String: String]
    public var timeoutSeconds: Int
    public var toolchain: String?
    public var relation: String?
    /// The stage may use the host's network (`network: true`); otherwise its sandbox has none.
    public var network: Bool
    /// The canonical JSON of the definition (part of the memoization key).
    public var canonical: String

    /// `spec` is the stage definition as the lease carries it (open by design: see `JobInfo.spec`).
    init(_ spec: JSONValue) throws {
        switch spec["kind"]?.string {
        case "exec":
            guard let argv = spec["command"]?.array?.compactMap(\.string), !argv.isEmpty, argv.count == spec["command"]?.array?.count
            else { throw ClientError("exec stage without a command") }
            kind = .exec(argv)
        case "builtin":
            guard let b = spec["builtin"]?.string else { throw ClientError("builtin stage without a name") }
            kind = .builtin(b)
        case let other:
            throw ClientError("this runner cannot run stages of kind \(other ?? "none")")
        }
        var with: [String: String] = [:]
        for (k, v) in spec["with"]?.object ?? [:] {
            // Parameters are strings; a definition with any other value has none (as before).
            guard let text = v.string else {
                with = [:]
                break
            }
            with[k] = text
        }
        self.with = with
        timeoutSeconds = spec["timeout_seconds"]?.int.map { Int($0) } ?? 1800
        toolchain = spec["toolchain"]?.string
        relation = spec["relation"]?.string
        network = spec["network"]?.bool ?? false
        // The definition, without what does not change the result (timeouts, names). Serialized
        // with JSONSerialization on purpose: the memoization key must stay byte-identical to
        // the keys earlier runners computed (number and escaping rules of that serializer).
        guard var identity = try JSONSerialization.jsonObject(with: Data(WireJSON.encode(spec))) as? [String: Any] else {
            throw ClientError("the stage definition is not a JSON object")
        }
        for k in ["timeout_seconds", "pipeline", "stage"] { identity.removeValue(forKey: k) }
        let data = try JSONSerialization.data(withJSONObject: identity, options: [.sortedKeys, .withoutEscapingSlashes])
        canonical = String(decoding: data, as: UTF8.self)
    }
}

/// The runner side of `/depot/v1/jobs` (see docs/EXTENSION-API.md).
extension RegistryConnection {
    func leaseJob(runner: String, labels: [String]) async throws -> LeasedJob? {
        let answer = try await request(
            .POST, Routes[.jobLease].path(), body: JobLeaseRequest(runner: runner, labels: labels), as: JobLeaseAnswer.self)
        return try answer.job.map(LeasedJob.init)
    }

    /// Returns the memoized output digest, or nil when the job should run.
    func startJob(_ job: LeasedJob, key: String) async throws -> Digest? {
        let answer = try await request(
            .POST, Routes[.jobStart].path(["id": "\(job.id)"]), body: JobStartRequest(leaseToken: job.token, key: key),
            as: JobStartAnswer.self)
        guard answer.decision == .memoized else { return nil }
        return answer.output
    }

    /// Renews the lease; returns the job's state (`cancelled` means stop; an answer without a
    /// state this build knows counts as running).
    func heartbeatJob(_ job: LeasedJob) async throws -> JobState {
        let answer = try await request(
            .POST, Routes[.jobHeartbeat].path(["id": "\(job.id)"]), body: JobHeartbeatRequest(leaseToken: job.token),
            as: StateOnly.self)
        return answer.state.flatMap(JobState.init(rawValue:)) ?? .running
    }

    func uploadJobLog(_ job: LeasedJob, _ bytes: [UInt8]) async throws {
        try await putBytes(
            Routes[.jobLogPut].path(["id": "\(job.id)"]) + "?lease_token=\(job.token)", bytes, contentType: "text/plain; charset=utf-8")
    }

    func completeJob(_ job: LeasedJob, output: Digest) async throws {
        _ = try await request(
            .POST, Routes[.jobComplete].path(["id": "\(job.id)"]), body: JobCompleteRequest(leaseToken: job.token, output: output),
            as: Unread.self)
    }

    func failJob(_ job: LeasedJob, reason: String, permanent: Bool) async throws {
        _ = try await request(
            .POST, Routes[.jobFail].path(["id": "\(job.id)"]),
            body: JobFailRequest(leaseToken: job.token, reason: reason, permanent: permanent), as: Unread.self)
    }
}

/// The part of a job answer the heartbeat reads: its state, as text, so that a state a newer
/// server adds does not fail the heartbeat.
private struct StateOnly: Decodable {
    var state: String?
}

/// An answer the runner does not read (any JSON object decodes as this).
private struct Unread: Decodable {}
