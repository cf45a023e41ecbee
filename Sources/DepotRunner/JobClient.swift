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

    init(json: [String: Any]) throws {
        guard let id = (json["id"] as? NSNumber)?.int64Value, let token = json["lease_token"] as? String,
            let pipeline = json["pipeline"] as? String, let stage = json["stage"] as? String,
            let input = json["input"] as? [String: Any], let repo = input["repository"] as? String,
            let digest = (input["digest"] as? String).flatMap({ try? Digest(parsing: $0) }),
            let spec = json["spec"] as? [String: Any]
        else {
            throw ClientError("the registry's job lease is malformed")
        }
        self.id = id
        self.token = token
        self.pipeline = pipeline
        self.stage = stage
        attempt = (json["attempt"] as? NSNumber)?.intValue ?? 1
        inputRepository = repo
        inputDigest = digest
        inputTag = input["tag"] as? String
        outputTag = (json["output"] as? [String: Any])?["tag"] as? String
        self.spec = try StageSpec(json: spec)
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
    /// The canonical JSON of the definition (part of the memoization key).
    public var canonical: String

    init(json: [String: Any]) throws {
        switch json["kind"] as? String {
        case "exec":
            guard let argv = json["command"] as? [String], !argv.isEmpty else { throw ClientError("exec stage without a command") }
            kind = .exec(argv)
        case "builtin":
            guard let b = json["builtin"] as? String else { throw ClientError("builtin stage without a name") }
            kind = .builtin(b)
        case let other:
            throw ClientError("this runner cannot run stages of kind \(other ?? "none")")
        }
        with = json["with"] as? [String: String] ?? [:]
        timeoutSeconds = (json["timeout_seconds"] as? NSNumber)?.intValue ?? 1800
        toolchain = json["toolchain"] as? String
        relation = json["relation"] as? String
        // The definition, without what does not change the result (timeouts, names).
        var identity = json
        for k in ["timeout_seconds", "pipeline", "stage"] { identity.removeValue(forKey: k) }
        let data = try JSONSerialization.data(withJSONObject: identity, options: [.sortedKeys, .withoutEscapingSlashes])
        canonical = String(decoding: data, as: UTF8.self)
    }
}

/// The runner side of `/depot/v1/jobs` (see docs/EXTENSION-API.md).
extension RegistryConnection {
    func leaseJob(runner: String, labels: [String]) async throws -> LeasedJob? {
        let answer = try await call(.POST, Routes[.jobLease].path(), body: ["runner": runner, "labels": labels])
        guard let job = answer["job"] as? [String: Any] else { return nil }
        return try LeasedJob(json: job)
    }

    /// Returns the memoized output digest, or nil when the job should run.
    func startJob(_ job: LeasedJob, key: String) async throws -> Digest? {
        let answer = try await call(.POST, Routes[.jobStart].path(["id": "\(job.id)"]), body: ["lease_token": job.token, "key": key])
        guard answer["decision"] as? String == "memoized" else { return nil }
        return (answer["output"] as? String).flatMap { try? Digest(parsing: $0) }
    }

    /// Renews the lease; returns the job's state (`cancelled` means stop; an answer without a
    /// state this build knows counts as running).
    func heartbeatJob(_ job: LeasedJob) async throws -> JobState {
        let answer = try await call(.POST, Routes[.jobHeartbeat].path(["id": "\(job.id)"]), body: ["lease_token": job.token])
        return (answer["state"] as? String).flatMap(JobState.init(rawValue:)) ?? .running
    }

    func uploadJobLog(_ job: LeasedJob, _ bytes: [UInt8]) async throws {
        _ = try await putBytes(
            Routes[.jobLogPut].path(["id": "\(job.id)"]) + "?lease_token=\(job.token)", bytes, contentType: "text/plain; charset=utf-8")
    }

    func completeJob(_ job: LeasedJob, output: Digest) async throws {
        _ = try await call(
            .POST, Routes[.jobComplete].path(["id": "\(job.id)"]), body: ["lease_token": job.token, "output": output.description])
    }

    func failJob(_ job: LeasedJob, reason: String, permanent: Bool) async throws {
        _ = try await call(
            .POST, Routes[.jobFail].path(["id": "\(job.id)"]),
            body: ["lease_token": job.token, "reason": reason, "permanent": permanent])
    }
}
