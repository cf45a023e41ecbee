import AsyncHTTPClient
import DepotAPI
import DepotClient
import DepotCore
import DepotTrust
import Foundation
import Logging
import NIOCore
import NIOHTTP1

/// Settings of `depot triton-sync`.
public struct TritonSyncOptions: Sendable {
    public var repository: String
    public var environment: String
    public var node: String
    public var modelRepository: String
    /// Where bundles are pulled before they are moved into place (same filesystem as the model repository).
    public var stagingDirectory: String
    /// Triton's HTTP endpoint, e.g. http://127.0.0.1:8000.
    public var tritonURL: String
    /// explicit: load/unload through the model-control API; poll: lay out files and wait for Triton to notice.
    public var pollMode = false
    public var interval: Duration = .seconds(2)
    public var cacheBytes: Int64 = 20 << 30
    /// Public keys one of which must have signed a bundle before it is loaded (checked here,
    /// against the node's own copies: the registry is not asked). Empty: bundles are not checked.
    public var trustedKeys: [TrustedKey] = []

    public init(repository: String, environment: String, node: String, modelRepository: String, tritonURL: String) {
        self.repository = repository
        self.environment = environment
        self.node = node
        self.modelRepository = modelRepository
        self.tritonURL = tritonURL
        let url = URL(fileURLWithPath: modelRepository)
        stagingDirectory = url.deletingLastPathComponent().appendingPathComponent("." + url.lastPathComponent + ".depot-staging").path
    }
}

/// The Triton node agent: asks Depot which bundle this node serves, pulls it through the chunk
/// cache, lays the version directory out atomically (staged, then renamed into place), loads it
/// (explicit mode) or waits for Triton to pick it up (poll mode), checks it is READY, reports to
/// Depot, and removes versions no longer wanted. When the registry is unreachable it keeps
/// serving what it has; when a bundle fails to load it restores the previous version and
/// reports the failure (the canary controller counts it as a failed check).
public final class TritonSync: Sendable {
    let connection: RegistryConnection
    let options: TritonSyncOptions
    let logger: Logger
    let cache: ChunkCache
    struct Serving: Sendable {
        var digest: String
        var version: Int
        var model: String
    }
    let serving = Locked<Serving?>(nil)
    /// A digest that failed to load, and when: not retried for a while.
    let failed = Locked<(String, Date)?>(nil)
    /// The digest last reported ready (after a failed load the node reports what it went back to).
    let reported = Locked<String?>(nil)

    public init(connection: RegistryConnection, options: TritonSyncOptions, logger: Logger) throws {
        self.connection = connection
        self.options = options
        self.logger = logger
        try FileManager.default.createDirectory(atPath: options.modelRepository, withIntermediateDirectories: true)
        try FileManager.default.createDirectory(atPath: options.stagingDirectory, withIntermediateDirectories: true)
        cache = try ChunkCache(root: options.stagingDirectory + "/cache", maxBytes: options.cacheBytes)
        Self.sweep(options)
    }

    /// Removes what a killed agent left: pulls in the staging directory, staged version directories.
    static func sweep(_ options: TritonSyncOptions) {
        let fm = FileManager.default
        for entry in (try? fm.contentsOfDirectory(atPath: options.stagingDirectory)) ?? [] where entry.hasPrefix("pull-") {
            try? fm.removeItem(atPath: options.stagingDirectory + "/" + entry)
        }
        for model in (try? fm.contentsOfDirectory(atPath: options.modelRepository)) ?? [] {
            for entry in (try? fm.contentsOfDirectory(atPath: options.modelRepository + "/" + model)) ?? []
            where entry.hasPrefix(".depot-") || entry.hasSuffix(".depot-tmp") {
                try? fm.removeItem(atPath: options.modelRepository + "/" + model + "/" + entry)
            }
        }
    }

    /// The path of a deployment route for this node's repository and environment.
    func deploymentPath(_ id: RouteID, _ params: [String: String] = [:]) -> String {
        Routes[id].path(name: options.repository, params.merging(["environment": options.environment]) { a, _ in a })
    }

    /// Syncs until cancelled (or once).
    public func run(once: Bool = false) async {
        var delay = options.interval
        while !Task.isCancelled {
            do {
                try await syncOnce()
                delay = options.interval
            } catch {
                let current = serving.withLock { $0 }
                logger.warning(
                    "triton-sync \(options.node): \(error); still serving \(current.map { "\($0.model) version \($0.version)" } ?? "nothing")"
                )
                delay = min(delay * 2, .seconds(30))
            }
            if once { return }
            try? await Task.sleep(for: delay)
        }
    }

    /// One round: resolve, and deploy when the wanted digest changed.
    public func syncOnce() async throws {
        let wanted = try await connection.request(
            .GET,
            deploymentPath(.deploymentResolve)
                + "?node=\(options.node.addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? options.node)",
            as: DeploymentResolution.self)
        let digest = wanted.digest.description
        let version = wanted.version
        let model = wanted.model
        guard version >= 1, Self.isSafeName(model) else {
            throw ClientError("the registry's resolve answer is malformed")
        }
        if let current = serving.withLock({ $0 }), current.digest == digest {
            // Still what we serve: make sure Triton agrees (a restarted Triton loads nothing in explicit mode).
            if try await versionReady(model, version) {
                if reported.withLock({ $0 }) != digest {
                    try await report(digest: digest, version: version, state: .ready, reason: nil)
                    reported.withLock { $0 = digest }
                }
                return
            }
            logger.notice("triton-sync \(options.node): \(model) version \(version) is not ready in Triton; loading it again")
        }
        if serving.withLock({ $0 }) == nil,
            (try? String(contentsOfFile: "\(options.modelRepository)/\(model)/\(version)/\(Self.digestMarker)", encoding: .utf8)) == digest,
            try await versionReady(model, version)
        {
            // Restarted agent, Triton already serving what is wanted (laid out by us): adopt it.
            serving.withLock { $0 = Serving(digest: digest, version: version, model: model) }
            try await report(digest: digest, version: version, state: .ready, reason: nil)
            reported.withLock { $0 = digest }
            logger.info("triton-sync \(options.node): Triton already serves \(model) version \(version) (\(digest.prefix(19)))")
            return
        }
        if let (d, at) = failed.withLock({ $0 }), d == digest, Date().timeIntervalSince(at) < 30 { return }
        do {
            try await deploy(digest: digest, version: version, model: model)
            serving.withLock { $0 = Serving(digest: digest, version: version, model: model) }
            failed.withLock { $0 = nil }
            try await report(digest: digest, version: version, state: .ready, reason: nil)
            reported.withLock { $0 = digest }
            logger.info(
                "triton-sync \(options.node): serving \(model) version \(version) (\(digest.prefix(19)), \(wanted.role))"
            )
        } catch let e as LoadFailure {
            failed.withLock { $0 = (digest, Date()) }
            reported.withLock { $0 = nil }
            logger.error("triton-sync \(options.node): \(model) version \(version) failed to load: \(e.message)")
            try? await report(digest: digest, version: version, state: .failed, reason: e.message)
            throw ClientError("\(model) version \(version) (\(digest.prefix(19))) failed to load: \(e.message)")
        }
    }

    struct LoadFailure: Error { var message: String }

    /// Written into each version directory it lays out: which digest it holds (a restarted agent
    /// adopts a version Triton already serves instead of laying it out again).
    static let digestMarker = ".depot-digest"

    func deploy(digest: String, version: Int, model: String) async throws {
        try await verifySignature(digest)
        let fm = FileManager.default
        let stage = options.stagingDirectory + "/pull-\(UUID().uuidString.prefix(8))"
        defer { try? fm.removeItem(atPath: stage) }
        let progress = TransferProgress(style: .quiet, verb: "pull", wire: connection.counters)
        _ = try await Puller(connection: connection, progress: progress, cache: cache)
            .pull(PullRequest(repository: options.repository, reference: digest, outputDirectory: stage))
        let bundle = stage + "/" + model
        guard var config = try? String(contentsOfFile: bundle + "/config.pbtxt", encoding: .utf8) else {
            throw LoadFailure(message: "the bundle has no \(model)/config.pbtxt")
        }
        let versions = (try fm.contentsOfDirectory(atPath: bundle)).filter { Int($0) != nil }
        guard versions.count == 1 else {
            throw LoadFailure(
                message: "the bundle must hold exactly one numeric version directory under \(model)/ (found \(versions.sorted()))")
        }
        guard !config.contains("version_policy") else {
            throw LoadFailure(message: "the bundle's config.pbtxt sets version_policy; triton-sync pins the version it serves")
        }
        config += "\nversion_policy: { specific: { versions: [\(version)] } }\n"

        let modelDir = options.modelRepository + "/" + model
        try fm.createDirectory(atPath: modelDir, withIntermediateDirectories: true)
        let target = modelDir + "/\(version)"
        let configPath = modelDir + "/config.pbtxt"
        let previousConfig = try? String(contentsOfFile: configPath, encoding: .utf8)
        // Stage inside the model directory under a non-numeric name (Triton ignores it), then rename.
        let staged = modelDir + "/.depot-\(version)-\(UUID().uuidString.prefix(6))"
        try fm.moveItem(atPath: bundle + "/" + versions[0], toPath: staged)
        try digest.write(toFile: staged + "/" + Self.digestMarker, atomically: false, encoding: .utf8)
        if fm.fileExists(atPath: target) { try fm.removeItem(atPath: target) }
        try fm.moveItem(atPath: staged, toPath: target)
        try Self.writeAtomically(configPath, config)

        do {
            try await load(model, version)
        } catch {
            // Restore what was there (also after an agent restart): the previous config first, so
            // no config ever pins a missing version, then drop the new directory and reload.
            if let previousConfig { try? Self.writeAtomically(configPath, previousConfig) } else { try? fm.removeItem(atPath: configPath) }
            try? fm.removeItem(atPath: target)
            if let previous = Self.pinnedVersion(previousConfig), previous != version { try? await load(model, previous) }
            throw (error as? LoadFailure) ?? LoadFailure(message: "\(error)")
        }
        // Versions no longer wanted (Triton unloaded them when the pinned version loaded).
        for entry in try fm.contentsOfDirectory(atPath: modelDir) where Int(entry) != nil && entry != String(version) {
            try? fm.removeItem(atPath: modelDir + "/" + entry)
        }
    }

    /// Refuses a bundle no trusted key signed, before anything is pulled or laid out. The pull
    /// that follows is by digest (the puller checks the manifest's digest), so what is loaded is
    /// what was verified.
    func verifySignature(_ digest: String) async throws {
        guard !options.trustedKeys.isEmpty else { return }
        let d = try Digest(parsing: digest)
        let checks = try await connection.checkSignatures(
            options.repository, d, verifier: SignatureVerifier(keys: options.trustedKeys))
        if let good = checks.first(where: { !$0.verified.isEmpty }) {
            logger.info(
                "triton-sync \(options.node): \(digest.prefix(19)) is signed by \(good.verified.map(\.key).joined(separator: ", "))")
            return
        }
        let reasons = checks.compactMap(\.failure)
        throw LoadFailure(
            message:
                "refusing to load \(digest.prefix(19)): no signature by a trusted key (\(options.trustedKeys.map(\.name).joined(separator: ", ")))"
                + (reasons.isEmpty ? "; it has no signatures" : ": " + reasons.prefix(3).joined(separator: "; ")))
    }

    /// `[A-Za-z0-9_.-]{1,128}`, not only dots (the model name becomes a directory and a URL path).
    public static func isSafeName(_ s: String) -> Bool {
        !s.isEmpty && s.count <= 128 && !s.allSatisfy({ $0 == "." })
            && s.unicodeScalars.allSatisfy {
                ($0 >= "a" && $0 <= "z") || ($0 >= "A" && $0 <= "Z") || ($0 >= "0" && $0 <= "9") || "_.-".unicodeScalars.contains($0)
            }
    }

    /// The version a config written by this agent pins.
    static func pinnedVersion(_ config: String?) -> Int? {
        guard let config, let r = config.range(of: "version_policy: { specific: { versions: [", options: .backwards) else { return nil }
        return Int(config[r.upperBound...].prefix { $0.isNumber })
    }

    static func writeAtomically(_ path: String, _ text: String) throws {
        let tmp = path + ".depot-tmp"
        try text.write(toFile: tmp, atomically: false, encoding: .utf8)
        guard rename(tmp, path) == 0 else { throw ClientError("cannot rename \(tmp) to \(path): \(String(cString: strerror(errno)))") }
    }

    func load(_ model: String, _ version: Int) async throws {
        if !options.pollMode {
            let (status, body) = try await triton(.POST, "/v2/repository/models/\(model)/load")
            guard status == 200 else { throw LoadFailure(message: "Triton refused the load (HTTP \(status)): \(body.prefix(1500))") }
        }
        let deadline = Date().addingTimeInterval(options.pollMode ? 120 : 30)
        while Date() < deadline {
            if try await versionReady(model, version) { return }
            try await Task.sleep(for: .milliseconds(250))
        }
        let (_, index) = try await triton(.POST, "/v2/repository/index")
        throw LoadFailure(message: "\(model) version \(version) did not become READY: \(index.prefix(1500))")
    }

    func versionReady(_ model: String, _ version: Int) async throws -> Bool {
        try await triton(.GET, "/v2/models/\(model)/versions/\(version)/ready").0 == 200
    }

    func triton(_ method: NIOHTTP1.HTTPMethod, _ path: String) async throws -> (Int, String) {
        var request = HTTPClientRequest(url: options.tritonURL + path)
        request.method = method
        if method == .POST { request.body = .bytes(ByteBuffer()) }
        let response = try await HTTPClient.shared.execute(request, timeout: .seconds(120))
        let body = try await response.body.collect(upTo: 1 << 20)
        return (Int(response.status.code), String(buffer: body))
    }

    func report(digest: String, version: Int, state: NodeState, reason: String?) async throws {
        _ = try await connection.request(
            .POST,
            deploymentPath(
                .nodeReport, ["node": options.node.addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? options.node]),
            body: NodeReportRequest(state: state, digest: digest, version: version, reason: reason), as: NodeReportAnswer.self)
    }
}
