import DepotCatalog
import DepotClient
import DepotCore
import DepotDeploy
import DepotPipelines
import DepotRegistry
import DepotRunner
import DepotStore
import DepotTestSupport
import DepotTrust
import Foundation
import HummingbirdTesting
import Logging
import Testing

@testable import DepotServer

/// A live server with the given pipelines, and helpers to run runners, push and wait for jobs.
struct PipelineHarness: Sendable {
    let dir: TempDir
    let registry: Registry
    let jobs: JobQueue
    let port: Int
    /// The admin token when the harness runs with authentication on (push and pull use it).
    var admin: String? = nil
    /// Signs stage outputs (a key under the store root) and enforces `deployPolicy`.
    var trust: TrustService

    var url: String { "http://127.0.0.1:\(port)" }

    static func run(
        pipelines yaml: [String], leaseSeconds: Double = 30, retryBase: Double = 0.05,
        webhooks: [String: (url: String, secret: String)] = [:], canary: CanaryPolicy? = nil, auth: Bool = false,
        deployPolicy: DeployPolicy = DeployPolicy(), trustedKeys: [String: String] = [:],
        in directory: TempDir? = nil,
        _ body: @Sendable (PipelineHarness, any TestClientProtocol) async throws -> Void
    ) async throws {
        let dir = directory ?? TempDir("depot-pipes")
        let store = try ChunkStore(root: dir.path + "/store", create: true)
        let registry = Registry(store: store)
        let pipelines = try yaml.enumerated().map { try PipelineLoader.parse($1, file: "p\($0).yaml") }
        var options = JobQueue.Options()
        options.leaseSeconds = leaseSeconds
        options.retryBaseSeconds = retryBase
        let jobs = JobQueue(registry: registry, pipelines: pipelines, options: options)
        var config = ServerConfig.forTests()
        config.listenPort = 0
        if let canary { config.canary = canary }
        var logger = Logger(label: "test")
        logger.logLevel = .critical
        var setup = PipelineSetup(jobs: jobs, runner: nil)
        setup.webhookStages = webhooks.mapValues { WebhookStageTarget(url: $0.url, secret: $0.secret) }
        config.storageRoot = dir.path + "/store"
        config.auth.enabled = auth
        let authService = try await DepotService.makeAuth(config: config, db: store.catalog, bootstrapSecret: auth ? bootstrapSecret : nil)
        config.deployPolicy = deployPolicy
        config.signing.trustedKeys = trustedKeys
        let trust = try TrustService.make(config: config, registry: registry, logger: logger)
        let app = DepotService.makeApplication(
            registry: registry, config: config, logger: logger, pipelines: setup, auth: authService, trust: trust)
        try await app.test(.live) { client in
            let harness = PipelineHarness(
                dir: dir, registry: registry, jobs: jobs, port: client.port!, admin: auth ? bootstrapSecret : nil, trust: trust)
            // The scheduler registers its cursor on its first tick: changes before it are not acted on.
            for _ in 0..<100 where try registry.store.catalog.read({ try $0.webhookCursor("pipelines") }) == nil {
                try await Task.sleep(for: .milliseconds(20))
            }
            try await body(harness, client)
        }
    }

    /// Runs a runner until `body` returns.
    func withRunner<T: Sendable>(
        labels: [String] = ["cpu"], name: String = "test-runner", hooks: String? = nil, token: String? = nil,
        configure: (inout RunnerOptions) -> Void = { _ in },
        _ body: @Sendable () async throws -> T
    ) async throws -> T {
        var options = RunnerOptions(name: name, workDirectory: dir.path + "/runner-\(name)")
        options.labels = labels
        options.pollInterval = .milliseconds(50)
        options.heartbeatInterval = .milliseconds(200)
        options.hooksDirectory = hooks
        options.passEnvironment = ["GATE"]
        configure(&options)
        var logger = Logger(label: "runner")
        logger.logLevel = .critical
        let connection = try RegistryConnection(url: url, token: token)
        let runner = try Runner(connection: connection, options: options, logger: logger)
        let task = Task { await runner.run() }
        do {
            let result = try await body()
            task.cancel()
            await task.value
            await connection.shutdown()
            return result
        } catch {
            task.cancel()
            await task.value
            await connection.shutdown()
            throw error
        }
    }

    /// Pushes files with the real client; returns the manifest digest.
    func push(_ repository: String, _ tag: String, files: [String: String]) async throws -> Digest {
        let src = dir.path + "/src-\(UUID().uuidString.prefix(6))"
        try FileManager.default.createDirectory(atPath: src, withIntermediateDirectories: true)
        for (name, text) in files { try text.write(toFile: src + "/" + name, atomically: true, encoding: .utf8) }
        let connection = try RegistryConnection(url: url, token: admin)
        defer { Task { await connection.shutdown() } }
        let progress = TransferProgress(style: .quiet, verb: "push", wire: connection.counters)
        let summary = try await Pusher(connection: connection, progress: progress)
            .push(PushRequest(repository: repository, tag: tag, paths: files.keys.sorted().map { src + "/" + $0 }))
        return try Digest(parsing: summary.digest)
    }

    /// Pulls an artifact's files; returns name → text.
    func pull(_ repository: String, _ reference: String) async throws -> [String: String] {
        let out = dir.path + "/pull-\(UUID().uuidString.prefix(6))"
        let connection = try RegistryConnection(url: url, token: admin)
        defer { Task { await connection.shutdown() } }
        let progress = TransferProgress(style: .quiet, verb: "pull", wire: connection.counters)
        let cache = try ChunkCache(root: dir.path + "/cache", maxBytes: 1 << 30)
        _ = try await Puller(connection: connection, progress: progress, cache: cache)
            .pull(PullRequest(repository: repository, reference: reference, outputDirectory: out))
        var files: [String: String] = [:]
        for name in try FileManager.default.subpathsOfDirectory(atPath: out) where !name.hasPrefix(".depot-partial") {
            var isDir: ObjCBool = false
            if FileManager.default.fileExists(atPath: out + "/" + name, isDirectory: &isDir), !isDir.boolValue {
                files[name] = try String(contentsOfFile: out + "/" + name, encoding: .utf8)
            }
        }
        return files
    }

    /// Waits (bounded) until `done` holds for the jobs; returns them.
    @discardableResult
    func waitJobs(timeout: Double = 90, _ done: ([JobRecord]) -> Bool) async throws -> [JobRecord] {
        let deadline = Date().addingTimeInterval(timeout)
        while true {
            let list = try jobs.jobs(state: nil, pipeline: nil, limit: 1000)
            if done(list) { return list }
            if Date() > deadline {
                Issue.record("timed out waiting; jobs: \(list.map { "\($0.id) \($0.stage) \($0.state) \($0.attempt) \($0.reason ?? "")" })")
                return list
            }
            try await Task.sleep(for: .milliseconds(50))
        }
    }

    func tags(_ repository: String) throws -> [String] {
        try registry.store.catalog.read { conn in
            guard let repo = try conn.repositoryID(repository) else { return [] }
            return try conn.tags(repo: repo, after: nil, limit: 1000)
        }
    }

    func log(_ job: JobRecord) throws -> String {
        guard let d = job.logDigest.flatMap({ try? Digest(parsing: $0) }) else { return "" }
        var out: [UInt8] = []
        try registry.store.reader(d).forEach { out.append(contentsOf: $0) }
        return String(decoding: out, as: UTF8.self)
    }
}

extension Array where Element == JobRecord {
    func stage(_ name: String) -> JobRecord? { first { $0.stage == name } }
    var allFinal: Bool { !isEmpty && allSatisfy(\.isFinal) }
}
