import CDepotSupport
import DepotAuth
import DepotCatalog
import DepotClient
import DepotCore
import DepotDeploy
import DepotPipelines
import DepotRegistry
import DepotRunner
import DepotStore
import Foundation
import Hummingbird
import HummingbirdCore
import Logging
import NIOCore
import ServiceLifecycle

/// `depot serve`: opens the store, builds the registry and runs the HTTP server until SIGTERM
/// or SIGINT, then stops accepting requests, lets in-flight ones finish, cancels unfinished
/// uploads and closes the store (flushing and sealing the current pack).
public struct DepotService {
    public let config: ServerConfig
    public init(config: ServerConfig) { self.config = config }

    /// Builds the application (also used by tests with HummingbirdTesting).
    public static func makeApplication(
        registry: Registry, config: ServerConfig, logger: Logger,
        pipelines: PipelineSetup = PipelineSetup(),
        metricsSource: (any MetricsSource)? = nil,
        auth: AuthService? = nil,
        tls: TLSCertificateStore? = nil,
        trust: TrustService? = nil,
        readiness: Readiness? = nil,
        services extra: [any Service] = [],
        eventLoopGroup: EventLoopGroupProvider = .singleton,
        onServerRunning: @escaping @Sendable (any Channel) async -> Void = { _ in }
    )
        -> some ApplicationProtocol
    {
        let policy = config.canary
        // Weight changes reach the router hook in order, through one stream.
        let (routerChanges, routerFeed) = AsyncStream<DeploymentRecord>.makeStream()
        let trust = trust ?? TrustService.none(registry: registry, logger: logger)
        let deployments = Deployments(registry: registry, policy: policy, admission: trust) { d in
            if policy.routerCommand != nil || policy.routerURL != nil { routerFeed.yield(d) }
        }
        let limits = config.limits
        BlockingPool.configure(threads: limits.blockingThreads)
        // Background services that must run once run on the leader (always this process with
        // SQLite; one replica of those sharing a PostgreSQL catalog).
        let leadership = registry.store.catalog.leadership()
        let responder = OCIResponder(
            registry: registry, metrics: ServerMetrics(leadership: leadership), logger: logger, jobs: pipelines.jobs,
            callbackSecrets: pipelines.webhookStages.mapValues(\.secret), deployments: deployments, limits: limits, auth: auth,
            scheme: tls == nil ? "http" : "https", trust: trust,
            readiness: readiness ?? Readiness(probes: Readiness.probes(registry: registry, config: config), logger: logger))
        let headerTimeout = TimeAmount.milliseconds(Int64(limits.headerTimeoutSeconds * 1000))
        return Application(
            responder: responder,
            // HTTPS when `tls` is given (config.tls, loaded by `run()`): TLSSupport.swift.
            server: TLSCertificateStore.serverBuilder(
                tls,
                http1: .init(
                    additionalChannelHandlers: [ContinueHandler(), HeaderTimeoutHandler(timeout: headerTimeout)],
                    idleTimeout: .milliseconds(Int64(limits.idleTimeoutSeconds * 1000)))),
            configuration: .init(
                address: .hostname(config.listenHost, port: config.listenPort), serverName: "depot",
                availableConnectionsDelegate: MaximumAvailableConnections(limits.maxConnections, logger: logger)),
            // Services stop in reverse order: `extra` (the trace exporter) first in the list, so it
            // stops last and exports the other services' final spans.
            services: extra + [
                LeaderElection(leadership: leadership, logger: logger),
                UploadExpiry(uploads: registry.uploads, leadership: leadership),
                PeriodicGC(registry: registry, intervalHours: config.gcIntervalHours, logger: logger, leadership: leadership),
                WebhookDispatcher(registry: registry, hooks: config.webhooks, logger: logger, leadership: leadership),
                PipelineScheduler(
                    jobs: pipelines.jobs, deployments: deployments, webhookStages: pipelines.webhookStages,
                    callbackBase: pipelines.callbackBase, logger: logger, leadership: leadership),
                EmbeddedRunner(runner: pipelines.runner),
                CanaryService(
                    deployments: deployments, source: metricsSource ?? PrometheusSource(baseURL: policy.prometheusURL),
                    logger: logger, leadership: leadership),
                RouterHookService(changes: routerChanges, policy: policy, registry: registry, logger: logger),
            ],
            onServerRunning: onServerRunning,
            eventLoopGroupProvider: eventLoopGroup,
            logger: logger
        )
    }

    /// Runs until a signal; `services` run beside the server's own (the tracing exporter).
    public func run(services extra: [any Service] = []) async throws {
        // Chunk and read buffers are allocated on one thread and freed on another.
        depot_tune_malloc(2, 8 << 20)
        let logger = Self.makeLogger(config)
        for warning in config.startupWarnings { logger.warning("config: \(warning)") }
        // Certificate files are checked before the store opens: a bad one stops start-up naming the file.
        let tls = try config.tls.map { try TLSCertificateStore(settings: $0, logger: logger) }
        tls?.reloadOnHangup()
        var storeOptions = config.storeOptions
        storeOptions.catalog = try config.catalog.location()
        let store = try ChunkStore(root: config.storageRoot, options: storeOptions, create: true, objects: try config.makeObjectStore())
        logger.info("catalog: \(store.catalog.dialect == .postgres ? "PostgreSQL " : "SQLite ")\(store.catalog.path)")
        if let objects = store.objectStore { logger.info("packs are objects in \(objects.location) (storage.backend: s3)") }
        if !store.recovery.isClean {
            logger.notice("repaired store on open: \(store.recovery.summary)")
            for path in store.recovery.quarantinedPacks {
                logger.warning("pack file unknown to the catalog moved to \(path) (is catalog.db older than the packs?): kept")
            }
        }
        let registry = Registry(store: store, uploads: config.uploads, policy: config.tagPolicy, inspectionLimits: config.inspection)
        // Search facts of manifests pushed before they existed (catalog migration 13), in the
        // background: idempotent, so every replica may do it; a batch is one short transaction.
        Task.detached(priority: .background) {
            var indexed = 0
            do {
                while case let n = try registry.indexArtifactFacts(), n > 0 { indexed += n }
                if indexed > 0 { logger.info("search facts indexed for \(indexed) earlier manifests") }
            } catch {
                logger.warning("indexing search facts stopped: \(error) (searches miss older manifests until the next start)")
            }
        }
        let listen = "\(config.listenHost):\(config.listenPort)"
        let root = config.storageRoot
        let auth = try await Self.makeAuth(
            config: config, db: store.catalog, bootstrapSecret: try Self.bootstrapSecret(config, logger: logger))
        let pipelines = try PipelineSetup(config: config, registry: registry, logger: logger, auth: auth)
        let trust = try TrustService.make(config: config, registry: registry, logger: logger)
        if let key = trust.signingKey {
            logger.info("signing pipeline outputs with key \(key.keyID.prefix(16)) (public key: GET /depot/v1/signing-key)")
        } else {
            logger.warning("signing.enabled is false: pipeline outputs are NOT signed; a deploy policy naming `pipeline` refuses them")
        }
        let app = Self.makeApplication(
            registry: registry, config: config, logger: logger, pipelines: pipelines, auth: auth, tls: tls, trust: trust,
            services: extra
        ) { _ in
            logger.info("depot listening on \(listen), storage \(root), authentication \(auth.enabled ? "on" : "OFF")")
        }
        // Upload sessions stay in the catalog: a client resumes them here after a restart, or on
        // another replica.
        try await app.runService(gracefulShutdownSignals: [.sigterm, .sigint])
        logger.info("depot stopped")
    }
}

extension DepotService {
    /// The server's logger: `server.log_format` and `server.log_level`.
    public static func makeLogger(_ config: ServerConfig, label: String = "depot") -> Logger {
        var log = config.logFormat == "json" ? Logger(label: label, factory: { JSONLogHandler(label: $0) }) : Logger(label: label)
        log.logLevel = Logger.Level(rawValue: config.logLevel) ?? .info
        return log
    }

    /// The authentication service for `config.auth`: reads (or creates) the token signing key
    /// and the OIDC issuers' JWKS files, and makes sure an admin credential exists.
    public static func makeAuth(config: ServerConfig, db: Database, bootstrapSecret: String?) async throws -> AuthService {
        var a = config.auth
        if a.enabled {
            let keyPath = a.signingKeyFile.isEmpty ? config.storageRoot + "/auth/token-signing-key.pem" : a.signingKeyFile
            a.signingKeyPEM = try TokenIssuer.loadOrCreateKey(path: keyPath)
        }
        let auth = try await AuthService(config: a, db: db, runnerLabels: config.pipelines.runnerLabels)
        try auth.bootstrap(secret: bootstrapSecret)
        return auth
    }

    /// The first admin token: `DEPOT_ADMIN_TOKEN`, else the contents of `auth.bootstrap_token_file`
    /// (read as every secret file is: `SecretFile`).
    static func bootstrapSecret(_ config: ServerConfig, logger: Logger) throws -> String? {
        if let s = ProcessInfo.processInfo.environment["DEPOT_ADMIN_TOKEN"], !s.isEmpty { return s }
        let file = config.auth.bootstrapTokenFile
        guard config.auth.enabled, !file.isEmpty else { return nil }
        do {
            let (value, warning) = try SecretFile.load(file)
            if let warning { logger.warning("config: auth.bootstrap_token_file: \(warning)") }
            return value.trimmingCharacters(in: .whitespacesAndNewlines)
        } catch let e as SecretFile.Refusal {
            throw DepotError.invalidArgument("auth.bootstrap_token_file: \(e.message)")
        }
    }
}

/// The pipeline parts of a server: the job queue (nil without pipelines), the embedded runner
/// and the webhook stages' endpoints.
public struct PipelineSetup: Sendable {
    public var jobs: JobQueue?
    public var runner: Runner?
    var webhookStages: [String: WebhookStageTarget] = [:]
    var callbackBase = ""

    public init() {}

    public init(jobs: JobQueue?, runner: Runner?) {
        self.jobs = jobs
        self.runner = runner
    }

    /// Loads `pipelines.directory`; a bad pipeline file stops start-up with its file, line and reason.
    init(config: ServerConfig, registry: Registry, logger: Logger, auth: AuthService? = nil) throws {
        let p = config.pipelines
        guard !p.directory.isEmpty else { return }
        let loaded: [Pipeline]
        do { loaded = try PipelineLoader.load(directory: p.directory) } catch let e as PipelineFileError {
            throw DepotError.invalidArgument("pipeline file \(e)")
        }
        guard !loaded.isEmpty else { return }
        var options = JobQueue.Options()
        options.leaseSeconds = p.leaseSeconds
        options.retryBaseSeconds = p.retryBaseSeconds
        options.logRetentionSeconds = p.logRetentionDays * 86400
        options.trustPickle = p.trustPickle
        if !p.trustPickle.isEmpty {
            logger.warning(
                "pipelines: pickles of \(p.trustPickle.joined(separator: ", ")) reach stages whatever they import (pipelines.trust_pickle)")
        }
        jobs = JobQueue(registry: registry, pipelines: loaded, options: options)
        let host = config.listenHost.contains(":") ? "[\(config.listenHost)]" : config.listenHost
        let local = "\(config.tls == nil ? "http" : "https")://\(host == "0.0.0.0" ? "127.0.0.1" : host):\(config.listenPort)"
        callbackBase = p.callbackURL.isEmpty ? local : p.callbackURL
        for pipeline in loaded {
            for stage in pipeline.stages {
                guard case .webhook(let url, let secretEnv, let secret) = stage.kind else { continue }
                var value = secret
                if let secretEnv {
                    guard let v = ProcessInfo.processInfo.environment[secretEnv], !v.isEmpty else {
                        throw DepotError.invalidArgument(
                            "pipeline \(pipeline.name) (\(pipeline.file)): stage \(stage.name) reads its secret from $\(secretEnv), which is not set"
                        )
                    }
                    value = v
                }
                webhookStages["\(pipeline.name)/\(stage.name)"] = WebhookStageTarget(url: url, secret: value ?? "")
            }
        }
        if p.runnerEnabled {
            var options = RunnerOptions(
                name: p.runnerName,
                workDirectory: p.runnerWorkDirectory.isEmpty ? config.storageRoot + "/runner" : p.runnerWorkDirectory)
            options.labels = p.runnerLabels
            options.concurrency = p.runnerConcurrency
            options.python = ProcessInfo.processInfo.environment["DEPOT_HOOKS_PYTHON"].flatMap { $0.isEmpty ? nil : $0 } ?? p.runnerPython
            options.passEnvironment = p.runnerPassEnvironment
            options.hooksDirectory = p.runnerHooksDirectory.isEmpty ? RunnerOptions.defaultHooksDirectory() : p.runnerHooksDirectory
            options.heartbeatInterval = .milliseconds(Int64(max(500, p.leaseSeconds * 1000 / 4)))
            options.sandbox.mode = p.sandbox
            options.sandbox.bwrap = p.runnerBwrap
            options.sandbox.readOnlyPaths = p.runnerSandboxPaths
            options.sandbox.devices = p.runnerDevices
            options.sandbox.firstUID = p.runnerSandboxUID
            options.sandbox.limits = p.runnerLimits
            // Secrets and the store stay out of view even where they lie under a path stages read.
            options.sandbox.hiddenPaths =
                [
                    config.storageRoot, config.auth.bootstrapTokenFile, config.auth.signingKeyFile, config.signing.keyFile,
                    config.tls?.keyFile ?? "",
                ]
                + p.runnerHiddenPaths + config.secretFiles
            options.sandbox.hiddenPaths.removeAll { $0.isEmpty }
            // With authentication on, the embedded runner uses a credential made for this process
            // (a runner on every repository, with the configured labels); never stored or shown.
            let token = auth.flatMap { $0.enabled ? $0.internalRunnerSecret : nil } ?? ProcessInfo.processInfo.environment["DEPOT_TOKEN"]
            let connection = try RegistryConnection(url: local, token: token, tls: try Self.embeddedRunnerTLS(config.tls))
            runner = try Runner(connection: connection, options: options, logger: logger)
        }
    }
}

/// Expires idle upload sessions once a minute (on the leader: the sessions are the catalog's).
struct UploadExpiry: Service {
    let uploads: UploadSessions
    var leadership = Leadership.standalone()

    func run() async throws {
        let interval = min(60, max(1, uploads.timeout / 4))
        do {
            try await cancelWhenGracefulShutdown {
                while !Task.isCancelled {
                    try await Task.sleep(for: .seconds(interval))
                    guard leadership.isLeader else { continue }
                    let uploads = self.uploads
                    _ = try await offload { uploads.expire() }
                }
            }
        } catch is CancellationError {
            // Shutting down.
        }
    }
}

/// Runs garbage collection in the background every `intervalHours` (the store lock keeps
/// `depot gc` from running beside the server, so the server does it itself).
struct PeriodicGC: Service {
    let registry: Registry
    let intervalHours: Double
    let logger: Logger
    var leadership = Leadership.standalone()

    func run() async throws {
        guard intervalHours > 0 else {
            // A service that returns stops the whole group (the server with it): idle instead.
            try? await gracefulShutdown()
            return
        }
        do {
            try await cancelWhenGracefulShutdown {
                while !Task.isCancelled {
                    try await Task.sleep(for: .seconds(intervalHours * 3600))
                    guard leadership.isLeader else { continue }
                    let registry = self.registry
                    do {
                        let report = try await offload { try registry.collectGarbage() }
                        let r = report.store
                        logger.info(
                            "gc: deleted \(report.manifestsDeleted) unkept manifest(s), \(r.blobsDeleted) blob(s) and \(r.chunksDeleted) chunk(s), compacted \(r.packsCompacted) pack(s), freed \(r.packBytesFreed) pack bytes"
                        )
                        if let c = r.casts, c.blobsScanned > 0 || c.failures > 0 || r.castChunksMaterialized > 0 {
                            logger.info(
                                "gc: cast-aware dedup scanned \(c.blobsScanned) blob(s): \(c.chunksDerived) chunk(s) of \(c.tensorsMatched) fp16/bf16 tensor(s) (\(c.bytesDerived) bytes) stored as casts of fp32 chunks; \(r.castChunksMaterialized) cast(s) stored plain again"
                            )
                        }
                        if let c = r.casts, let why = c.firstFailure {
                            logger.warning(
                                "gc: cast-aware dedup skipped \(c.failures) unreadable blob(s) or candidate(s), e.g. \(why); run `depot fsck`"
                            )
                        }
                        for d in r.damagedChunks {
                            logger.error("gc: skipped damaged chunk \(d.chunk) in pack \(d.pack): \(d.reason)")
                        }
                    } catch {
                        logger.error("gc failed: \(error)")
                    }
                }
            }
        } catch is CancellationError {
            // Shutting down.
        }
    }
}

/// Competes for the leadership of the background services every 2 s (see `Leadership`) and logs
/// every change, so an operator sees which replica runs GC and the canary controller.
struct LeaderElection: Service {
    let leadership: Leadership
    let logger: Logger
    var interval: Duration = .seconds(2)

    func run() async throws {
        try? await cancelWhenGracefulShutdown {
            while !Task.isCancelled {
                let leadership = self.leadership
                switch try await offload({ leadership.poll() }) {
                case .became?:
                    logger.notice("leader: this replica now runs GC, webhooks, the pipeline scheduler and the canary controller")
                case .lost(let reason)?:
                    logger.warning("leader: this replica stopped leading (\(reason)); another replica takes over")
                case nil: break
                }
                try await Task.sleep(for: interval)
            }
        }
        leadership.resign()
    }
}
