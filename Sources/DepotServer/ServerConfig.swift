import DepotCore
import DepotDeploy
import DepotFormats
import DepotPipelines
import DepotRegistry
import DepotRunner
import DepotStore
import DepotTrust
import Foundation
import Yams

/// Depot's configuration (`config/depot.yaml`): defaults, overridden by the file, overridden
/// by command-line flags. Every key is documented in `config/depot.yaml`.
public struct ServerConfig: Sendable, Equatable {
    public var listenHost = "127.0.0.1"
    public var listenPort = 5000
    public var logLevel = "info"
    /// `text` (swift-log's default lines) or `json` (one object per line).
    public var logFormat = "text"
    /// Set by `load`/`parse` (not a key of the file): what `depot serve` logs as warnings at start
    /// (`DEPOT_` variables that set no key, secret files every user may read).
    public var startupWarnings: [String] = []
    /// Set by `load`/`parse`: the files secrets were read from (`*_file` keys), hidden from
    /// pipeline stages like the key files.
    public var secretFiles: [String] = []
    public var storageRoot = "storage"
    /// Where the catalog lives (`catalog:`): SQLite in the storage root, or PostgreSQL.
    public var catalog = CatalogConfig()
    /// `storage.backend`: `local` (packs under the root, the default) or `s3` (`storage.s3`).
    public var storageBackend = "local"
    public var s3: ObjectStorageConfig?
    /// Upload sessions and blob size (`uploads:`).
    public var uploads = UploadLimits()
    /// Connections, timeouts and threads (`server:`).
    public var limits = ServerLimits()
    /// Protected and immutable tag patterns (`aliases.protected`, `aliases.immutable`).
    public var tagPolicy = TagPolicy()
    /// Webhooks receiving events (`webhooks:`).
    public var webhooks: [WebhookConfig] = []
    /// Hours between background garbage collections inside `depot serve` (0 disables).
    public var gcIntervalHours: Double = 24
    public var store = StoreOptionsConfig()
    /// Pipelines, the job queue and the embedded runner (`pipelines:`).
    public var pipelines = PipelinesConfig()
    /// Canary rollouts (`canary:`).
    public var canary = CanaryPolicy()
    /// Budgets of format inspection of pushed layers (`formats:`).
    public var inspection = InspectionLimits()
    /// Identity and authorization (`auth:`).
    public var auth = AuthConfig()
    /// HTTPS (`server.tls:`); nil serves plain HTTP.
    public var tls: TLSSettings?
    /// The `signing:` section: the pipeline signing key and trusted public keys.
    public var signing = SigningConfig()
    /// The `deploy_policy:` section: signatures a bundle needs per environment.
    public var deployPolicy = DeployPolicy()
    /// The `tracing:` section: OpenTelemetry traces (TracingConfig).
    public var tracing = TracingConfig()

    /// The resource limits of the `server:` section. See "Limits and failure behaviour" in
    /// docs/ARCHITECTURE.md for what a client sees when one is hit.
    public struct ServerLimits: Sendable, Equatable {
        /// Connections open at once; past it the server stops accepting (new ones wait in the
        /// kernel's backlog) until one closes.
        public var maxConnections = 2048
        /// A connection that has not sent its first complete request head this long after it
        /// opened is closed: a slow-loris client cannot hold it.
        public var headerTimeoutSeconds: Double = 30
        /// A connection with no bytes either way for this long is closed.
        public var idleTimeoutSeconds: Double = 120
        /// Threads for blocking work (catalog, disk, hashing); more requests wait in line.
        public var blockingThreads = 64
        /// Entries in a tags, catalog or referrers page when the client gives no `n`.
        public var defaultPageSize = 1000
        /// Recipe commits (`/depot/v1` chunk negotiation) verified at once; more get 429.
        public var maxRecipeCommits = 4
        public init() {}
    }

    /// The `pipelines:` section.
    public struct PipelinesConfig: Sendable, Equatable {
        /// Directory of pipeline files (relative to the working directory, like `storage.root`);
        /// empty, or a directory that does not exist: no pipelines.
        public var directory = "config/pipelines"
        public var leaseSeconds: Double = 30
        public var retryBaseSeconds: Double = 5
        /// Logs of jobs finished longer ago are released to GC; 0 keeps them forever.
        public var logRetentionDays: Double = 30
        /// Repositories (globs) whose pickles reach stages whatever they import (docs/SECURITY.md).
        public var trustPickle: [String] = []
        /// Base URL webhook stages call back (default: http://<listen address>).
        public var callbackURL = ""
        public var runnerEnabled = true
        public var runnerName = "embedded"
        public var runnerLabels: [String] = ["cpu"]
        public var runnerConcurrency = 1
        /// Default: `<storage root>/runner`.
        public var runnerWorkDirectory = ""
        public var runnerPython = "python3"
        /// Default: found next to the executable (see `RunnerOptions.defaultHooksDirectory`).
        public var runnerHooksDirectory = ""
        /// Server environment variables stages may see (besides PATH, HOME, LANG, …).
        public var runnerPassEnvironment: [String] = []
        /// `bubblewrap` (stages are confined; none run where it does not work) or `off`.
        public var sandbox = SandboxMode.bubblewrap
        /// The bubblewrap executable.
        public var runnerBwrap = "bwrap"
        /// Extra host paths stages may read.
        public var runnerSandboxPaths: [String] = []
        /// Device nodes stages get; nil: the /dev/nvidia* present at start.
        public var runnerDevices: [String]?
        /// First uid of stages when the runner is root (one per concurrent job).
        public var runnerSandboxUID: UInt32 = 2_000_000_000
        public var runnerLimits = StageLimits()
        /// Set by `depot serve` (not a key of the file): the config file itself, which stages never see.
        public var runnerHiddenPaths: [String] = []
    }

    /// The chunk-store part, mapped onto `StoreOptions`.
    public struct StoreOptionsConfig: Sendable, Equatable {
        public var packTargetMiB = 64
        public var flushMiB = 32
        public var compression = "auto"
        public var compressionMinSavings = 0.04
        public var writeGraceHours: Double = 24
        public var compactBelow = 0.5
        public var readVerification = "checksum"
        public var castDedup = true
        /// nil: `ReadWorkers.defaultLimit`.
        public var readThreads: Int?
    }

    public init() {}

    public var storeOptions: StoreOptions {
        var o = StoreOptions()
        o.packTargetSize = Int64(store.packTargetMiB) << 20
        o.flushBytes = store.flushMiB << 20
        o.compression.mode = store.compression == "off" ? .off : .auto
        o.compression.minSavings = store.compressionMinSavings
        o.writeGraceSeconds = Int64(store.writeGraceHours * 3600)
        o.compactBelow = store.compactBelow
        o.castDedup = store.castDedup
        o.readThreads = store.readThreads
        o.readVerification = ReadVerification(rawValue: store.readVerification) ?? .checksum
        if let s3 { o.recordCacheBytes = s3.cacheMiB << 20 }
        return o
    }

    /// Parses `HOST:PORT` (IPv6 as `[::1]:PORT`).
    public mutating func setListen(_ text: String) throws {
        guard let colon = text.lastIndex(of: ":"), let port = Int(text[text.index(after: colon)...]), (1...65535).contains(port) else {
            throw DepotError.invalidArgument("listen address '\(text)' is not HOST:PORT")
        }
        var host = String(text[..<colon])
        if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        guard !host.isEmpty else { throw DepotError.invalidArgument("listen address '\(text)' has no host") }
        listenHost = host
        listenPort = port
    }

    /// Loads `path` over the defaults. Unknown keys and wrong types are errors naming the key.
    public static func load(_ path: String) throws -> ServerConfig {
        let text: String
        do { text = try String(contentsOfFile: path, encoding: .utf8) } catch {
            throw DepotError.invalidArgument("cannot read config \(path): \(error.localizedDescription)")
        }
        return try parse(text, path: path)
    }

    /// Parses config file text (`path` names it in errors) over the defaults, then the `DEPOT_…`
    /// variables of `environment` over it (ConfigEnvironment). nil: no overrides, and `*_env` keys
    /// read this process's environment.
    public static func parse(_ text: String, path: String, environment: [String: String]? = nil) throws -> ServerConfig {
        let node: Any?
        do {
            // Composed and checked first: Yams.load crashes on some trees (YAMLSafety).
            if let composed = try Yams.compose(yaml: text), let problem = YAMLSafety.problem(composed) {
                throw DepotError.invalidArgument("config \(path): \(problem)")
            }
            node = try Yams.load(yaml: text)
        } catch let e as DepotError {
            throw e
        } catch {
            throw DepotError.invalidArgument("config \(path) is not valid YAML: \(error)")
        }
        guard let root = (node ?? [String: Any]()) as? [String: Any] else {
            throw DepotError.invalidArgument("config \(path): the top level must be a mapping")
        }
        return try parse(root: root, path: path, environment: environment)
    }

    /// The typed parse of a config tree over the defaults: every key checked, errors naming it.
    static func parse(tree root: [String: Any], _ reader: ConfigReader) throws -> ServerConfig {
        var config = ServerConfig()
        try reader.section(root, "server") { s in
            if let listen: String = try reader.value(s, "listen") { try config.setListen(listen) }
            if let level: String = try reader.value(s, "log_level") {
                guard ["trace", "debug", "info", "notice", "warning", "error", "critical"].contains(level) else {
                    throw reader.error("server.log_level", "must be trace, debug, info, notice, warning, error or critical")
                }
                config.logLevel = level
            }
            if let format: String = try reader.value(s, "log_format") {
                guard format == "text" || format == "json" else { throw reader.error("server.log_format", "must be text or json") }
                config.logFormat = format
            }
            if let v: Int = try reader.value(s, "max_connections") {
                guard (1...1_000_000).contains(v) else { throw reader.error("server.max_connections", "must be 1 to 1000000") }
                config.limits.maxConnections = v
            }
            if let v: Double = try reader.value(s, "header_timeout_seconds") {
                guard v >= 1, v <= 3600 else { throw reader.error("server.header_timeout_seconds", "must be 1 to 3600") }
                config.limits.headerTimeoutSeconds = v
            }
            if let v: Double = try reader.value(s, "idle_timeout_seconds") {
                guard v >= 1, v <= 86_400 else { throw reader.error("server.idle_timeout_seconds", "must be 1 to 86400") }
                config.limits.idleTimeoutSeconds = v
            }
            if let v: Int = try reader.value(s, "blocking_threads") {
                guard (4...4096).contains(v) else { throw reader.error("server.blocking_threads", "must be 4 to 4096") }
                config.limits.blockingThreads = v
            }
            if let v: Int = try reader.value(s, "default_page_size") {
                guard (1...10_000).contains(v) else { throw reader.error("server.default_page_size", "must be 1 to 10000") }
                config.limits.defaultPageSize = v
            }
            if let v: Int = try reader.value(s, "max_recipe_commits") {
                guard (1...1024).contains(v) else { throw reader.error("server.max_recipe_commits", "must be 1 to 1024") }
                config.limits.maxRecipeCommits = v
            }
            if let raw = s["tls"] { config.tls = try TLSSettings.parse(raw, reader) }
        }
        try reader.section(root, "storage") { s in
            if let v: String = try reader.value(s, "root") { config.storageRoot = v }
            if let v: String = try reader.value(s, "backend") {
                guard v == "local" || v == "s3" else { throw reader.error("storage.backend", "must be local or s3") }
                config.storageBackend = v
            }
            if let raw = s["s3"] { config.s3 = try ObjectStorageConfig.parse(raw, reader) }
            if config.storageBackend == "s3" && config.s3 == nil {
                throw reader.error("storage.s3", "is required when storage.backend is s3")
            }
            if let v: Int = try reader.value(s, "pack_target_mib") {
                guard (1...4096).contains(v) else { throw reader.error("storage.pack_target_mib", "must be 1 to 4096") }
                config.store.packTargetMiB = v
            }
            if let v: Int = try reader.value(s, "flush_mib") {
                guard (1...1024).contains(v) else { throw reader.error("storage.flush_mib", "must be 1 to 1024") }
                config.store.flushMiB = v
            }
            // YAML 1.1 reads a bare `off` as false: accept both spellings.
            if let flag = s["compression"] as? Bool {
                config.store.compression = flag ? "auto" : "off"
            } else if let v: String = try reader.value(s, "compression") {
                guard v == "auto" || v == "off" else { throw reader.error("storage.compression", "must be auto or off") }
                config.store.compression = v
            }
            if let v: Double = try reader.value(s, "compression_min_savings") {
                guard (0...1).contains(v) else { throw reader.error("storage.compression_min_savings", "must be between 0 and 1") }
                config.store.compressionMinSavings = v
            }
            if let v: Double = try reader.value(s, "write_grace_hours") {
                guard v >= 0 else { throw reader.error("storage.write_grace_hours", "must not be negative") }
                config.store.writeGraceHours = v
            }
            if let v: String = try reader.value(s, "read_verification") {
                guard v == "checksum" || v == "sha256" else {
                    throw reader.error("storage.read_verification", "must be checksum or sha256")
                }
                config.store.readVerification = v
            }
            if let v: Double = try reader.value(s, "gc_interval_hours") {
                guard v >= 0 else { throw reader.error("storage.gc_interval_hours", "must not be negative") }
                config.gcIntervalHours = v
            }
            if let v: Double = try reader.value(s, "compact_below") {
                guard (0...1).contains(v) else { throw reader.error("storage.compact_below", "must be between 0 and 1") }
                config.store.compactBelow = v
            }
            if let v: Bool = try reader.value(s, "cast_dedup") { config.store.castDedup = v }
            if let v: Int = try reader.value(s, "read_threads") {
                guard (1...1024).contains(v) else { throw reader.error("storage.read_threads", "must be 1 to 1024") }
                config.store.readThreads = v
            }
        }
        try reader.section(root, "uploads") { s in
            if let v: Double = try reader.value(s, "timeout_seconds") {
                guard v > 0, v <= 7 * 86_400 else { throw reader.error("uploads.timeout_seconds", "must be positive, at most 7 days") }
                config.uploads.idleTimeoutSeconds = v
            }
            if let v: Double = try reader.value(s, "max_lifetime_seconds") {
                guard v > 0, v <= 30 * 86_400 else {
                    throw reader.error("uploads.max_lifetime_seconds", "must be positive, at most 30 days")
                }
                config.uploads.maxLifetimeSeconds = v
            }
            if let v: Int = try reader.value(s, "max_sessions") {
                guard (1...1_000_000).contains(v) else { throw reader.error("uploads.max_sessions", "must be 1 to 1000000") }
                config.uploads.maxSessions = v
            }
            if let v: Int = try reader.value(s, "max_sessions_per_client") {
                guard (1...1_000_000).contains(v) else { throw reader.error("uploads.max_sessions_per_client", "must be 1 to 1000000") }
                config.uploads.maxSessionsPerClient = v
            }
            if let v: Int = try reader.value(s, "min_bytes_per_second") {
                guard v >= 0 else { throw reader.error("uploads.min_bytes_per_second", "must not be negative (0 disables)") }
                config.uploads.minBytesPerSecond = Int64(v)
            }
            if let v: Double = try reader.value(s, "rate_grace_seconds") {
                guard v >= 1, v <= 3600 else { throw reader.error("uploads.rate_grace_seconds", "must be 1 to 3600") }
                config.uploads.rateGraceSeconds = v
            }
            if let v: Double = try reader.value(s, "max_blob_gib") {
                guard v > 0, v <= 1_048_576 else { throw reader.error("uploads.max_blob_gib", "must be positive, at most 1048576 (1 PiB)") }
                config.uploads.maxBlobBytes = Int64(v * Double(1 << 30))
            }
        }
        try reader.section(root, "aliases") { s in
            for key in ["protected", "immutable"] {
                guard let raw = s[key] else { continue }
                guard let list = raw as? [Any], list.allSatisfy({ $0 is String && !($0 as! String).isEmpty }) else {
                    throw reader.error("aliases.\(key)", "must be a list of tag patterns (strings, * and ? allowed)")
                }
                let patterns = list.map { $0 as! String }
                if key == "protected" { config.tagPolicy.protected = patterns } else { config.tagPolicy.immutable = patterns }
            }
        }
        if let raw = root["webhooks"] {
            guard let list = raw as? [Any] else { throw reader.error("webhooks", "must be a list") }
            config.webhooks = try list.enumerated().map { try Self.webhook($1, index: $0, reader) }
            let names = config.webhooks.map(\.name)
            if Set(names).count != names.count { throw reader.error("webhooks", "names must be unique") }
        }
        try reader.section(root, "pipelines") { s in
            if let v: String = try reader.value(s, "directory") { config.pipelines.directory = v }
            if let v: Double = try reader.value(s, "lease_seconds") {
                guard (2...3600).contains(v) else { throw reader.error("pipelines.lease_seconds", "must be 2 to 3600") }
                config.pipelines.leaseSeconds = v
            }
            if let v: Double = try reader.value(s, "retry_base_seconds") {
                guard (0...3600).contains(v) else { throw reader.error("pipelines.retry_base_seconds", "must be 0 to 3600") }
                config.pipelines.retryBaseSeconds = v
            }
            if let v: String = try reader.value(s, "callback_url") { config.pipelines.callbackURL = v }
            if let v: Double = try reader.value(s, "log_retention_days") {
                guard (0...36500).contains(v) else { throw reader.error("pipelines.log_retention_days", "must be 0 (forever) to 36500") }
                config.pipelines.logRetentionDays = v
            }
            if let raw = s["trust_pickle"] {
                guard let list = raw as? [String], list.allSatisfy({ !$0.isEmpty }) else {
                    throw reader.error("pipelines.trust_pickle", "must be a list of repository globs")
                }
                config.pipelines.trustPickle = list
            }
            if let raw = s["runner"] {
                guard let r = raw as? [String: Any] else { throw reader.error("pipelines.runner", "must be a mapping") }
                let outer = reader.enter("pipelines.runner")
                defer { reader.restore(outer) }
                if let v: Bool = try reader.value(r, "enabled") { config.pipelines.runnerEnabled = v }
                if let v: String = try reader.value(r, "name") { config.pipelines.runnerName = v }
                if let raw = r["labels"] {
                    guard let list = raw as? [String] else { throw reader.error("pipelines.runner.labels", "must be a list of strings") }
                    config.pipelines.runnerLabels = list
                }
                if let v: Int = try reader.value(r, "concurrency") {
                    guard (1...64).contains(v) else { throw reader.error("pipelines.runner.concurrency", "must be 1 to 64") }
                    config.pipelines.runnerConcurrency = v
                }
                if let v: String = try reader.value(r, "work_dir") { config.pipelines.runnerWorkDirectory = v }
                if let v: String = try reader.value(r, "python") { config.pipelines.runnerPython = v }
                if let v: String = try reader.value(r, "hooks_dir") { config.pipelines.runnerHooksDirectory = v }
                if let raw = r["pass_env"] {
                    guard let list = raw as? [String] else {
                        throw reader.error("pipelines.runner.pass_env", "must be a list of variable names")
                    }
                    config.pipelines.runnerPassEnvironment = list
                }
                if let v: String = try reader.value(r, "bwrap") { config.pipelines.runnerBwrap = v }
                if let raw = r["sandbox_paths"] {
                    guard let list = raw as? [String], list.allSatisfy({ $0.hasPrefix("/") }) else {
                        throw reader.error("pipelines.runner.sandbox_paths", "must be a list of absolute paths")
                    }
                    config.pipelines.runnerSandboxPaths = list
                }
                if let raw = r["devices"] {
                    guard let list = raw as? [String], list.allSatisfy({ $0.hasPrefix("/dev/") }) else {
                        throw reader.error("pipelines.runner.devices", "must be a list of device paths (/dev/...)")
                    }
                    config.pipelines.runnerDevices = list
                }
                if let v: Int = try reader.value(r, "sandbox_uid") {
                    guard (1...4_000_000_000).contains(v) else {
                        throw reader.error("pipelines.runner.sandbox_uid", "must be 1 to 4000000000")
                    }
                    config.pipelines.runnerSandboxUID = UInt32(v)
                }
                if let raw = r["limits"] {
                    guard let l = raw as? [String: Any] else { throw reader.error("pipelines.runner.limits", "must be a mapping") }
                    let outer = reader.enter("pipelines.runner.limits")
                    defer { reader.restore(outer) }
                    var limits = StageLimits()
                    func gib(_ key: String) throws -> Int64? {
                        guard let v: Double = try reader.value(l, key) else { return nil }
                        guard v >= 0, v <= 1_048_576 else {
                            throw reader.error("pipelines.runner.limits.\(key)", "must be 0 (none) to 1048576")
                        }
                        return Int64(v * Double(1 << 30))
                    }
                    if let v = try gib("memory_gib") { limits.memoryBytes = v }
                    if let v = try gib("file_size_gib") { limits.fileBytes = v }
                    if let v = try gib("workspace_gib") { limits.workspaceBytes = v }
                    if let v: Int = try reader.value(l, "cpu_seconds") {
                        guard v >= 0 else {
                            throw reader.error("pipelines.runner.limits.cpu_seconds", "must be 0 (the stage's timeout) or more")
                        }
                        limits.cpuSeconds = v
                    }
                    if let v: Int = try reader.value(l, "processes") {
                        guard (0...1_000_000).contains(v) else {
                            throw reader.error("pipelines.runner.limits.processes", "must be 0 (none) to 1000000")
                        }
                        limits.processes = v
                    }
                    try reader.rejectUnknown(l, known: ConfigKeys.known("pipelines.runner.limits"), at: "pipelines.runner.limits.")
                    config.pipelines.runnerLimits = limits
                }
                try reader.rejectUnknown(r, known: ConfigKeys.known("pipelines.runner"), at: "pipelines.runner.")
            }
            if let raw = s["sandbox"] {
                // YAML reads a bare `off` as false.
                if let b = raw as? Bool, !b {
                    config.pipelines.sandbox = .off
                } else if let v = raw as? String, let mode = SandboxMode(rawValue: v) {
                    config.pipelines.sandbox = mode
                } else {
                    throw reader.error("pipelines.sandbox", "must be bubblewrap or off")
                }
            }
        }
        try reader.section(root, "canary") { s in
            if let v: String = try reader.value(s, "prometheus_url") {
                guard let u = URL(string: v), ["http", "https"].contains(u.scheme ?? ""), u.host != nil else {
                    throw reader.error("canary.prometheus_url", "must be an http(s) URL")
                }
                config.canary.prometheusURL = v.hasSuffix("/") ? String(v.dropLast()) : v
            }
            if let raw = s["steps"] {
                guard let steps = raw as? [Int], !steps.isEmpty, steps.allSatisfy({ (1...100).contains($0) }),
                    zip(steps, steps.dropFirst()).allSatisfy({ $0 < $1 }), steps.last == 100
                else {
                    throw reader.error("canary.steps", "must be increasing percentages within 1...100 ending at 100")
                }
                config.canary.steps = steps
            }
            if let v: String = try reader.value(s, "analysis_interval") {
                guard let seconds = DurationText.seconds(v), seconds >= 1, seconds <= 7 * 86400 else {
                    throw reader.error("canary.analysis_interval", "must be a duration between 1s and 7 days (e.g. 15m, 90s)")
                }
                config.canary.analysisSeconds = seconds
            }
            if let v: String = try reader.value(s, "node_ttl") {
                guard let seconds = DurationText.seconds(v), seconds >= 1, seconds <= 30 * 86400 else {
                    throw reader.error("canary.node_ttl", "must be a duration between 1s and 30 days (e.g. 5m)")
                }
                config.canary.nodeTTLSeconds = seconds
            }
            if let v: String = try reader.value(s, "router_url") {
                guard let u = URL(string: v), ["http", "https"].contains(u.scheme ?? ""), u.host != nil else {
                    throw reader.error("canary.router_url", "must be an http(s) URL")
                }
                config.canary.routerURL = v
            }
            if let raw = s["router_command"] {
                guard let argv = raw as? [String], !argv.isEmpty else {
                    throw reader.error("canary.router_command", "must be a non-empty list (argv)")
                }
                config.canary.routerCommand = argv
            }
            if let raw = s["checks"] {
                guard let list = raw as? [[String: Any]], !list.isEmpty else {
                    throw reader.error("canary.checks", "must be a non-empty list of checks")
                }
                config.canary.checks = try list.enumerated().map { try Self.check($1, index: $0, reader) }
            }
        }
        try reader.section(root, "formats") { s in
            if let v: Int = try reader.value(s, "max_mib_per_blob") {
                guard (1...4096).contains(v) else { throw reader.error("formats.max_mib_per_blob", "must be 1 to 4096") }
                config.inspection.maxBytesPerBlob = Int64(v) << 20
            }
            if let v: Double = try reader.value(s, "max_seconds_per_blob") {
                guard v > 0, v <= 3600 else { throw reader.error("formats.max_seconds_per_blob", "must be above 0 and at most 3600") }
                config.inspection.maxSecondsPerBlob = v
            }
            if let v: Double = try reader.value(s, "max_seconds_per_manifest") {
                guard v > 0, v <= 3600 else { throw reader.error("formats.max_seconds_per_manifest", "must be above 0 and at most 3600") }
                config.inspection.maxSecondsPerManifest = v
            }
            if let v: Int = try reader.value(s, "max_document_kib") {
                guard (16...65536).contains(v) else { throw reader.error("formats.max_document_kib", "must be 16 to 65536") }
                config.inspection.maxDocumentBytes = v << 10
            }
            if let v: Int = try reader.value(s, "concurrency") {
                guard (1...256).contains(v) else { throw reader.error("formats.concurrency", "must be 1 to 256") }
                config.inspection.concurrency = v
            }
            if let v: Int = try reader.value(s, "cache_entries") {
                guard (0...1_000_000).contains(v) else { throw reader.error("formats.cache_entries", "must be 0 to 1000000") }
                config.inspection.cacheEntries = v
            }
        }
        try reader.section(root, "auth") { s in try Self.parseAuth(s, reader, into: &config) }
        try reader.section(root, "signing") { s in try Self.parseSigning(s, reader, into: &config) }
        try reader.section(root, "catalog") { s in try Self.parseCatalog(s, reader, into: &config) }
        try reader.section(root, "tracing") { s in try Self.parseTracing(s, reader, into: &config) }
        if let raw = root["deploy_policy"] {
            guard let s = raw as? [String: Any] else { throw reader.error("deploy_policy", "must be a mapping of environments") }
            try Self.parseDeployPolicy(s, reader, into: &config)
        }
        try reader.rejectUnknown(
            root,
            known: [
                "server", "storage", "uploads", "aliases", "webhooks", "pipelines", "canary", "formats", "auth", "signing", "tracing",
                "deploy_policy", "catalog",
            ], at: "")
        return config
    }
}

extension ServerConfig {
    static func check(_ m: [String: Any], index: Int, _ reader: ConfigReader) throws -> MetricCheck {
        let at = "canary.checks[\(index)]"
        try reader.rejectUnknown(
            m,
            known: [
                "name", "query", "max", "pause_above", "min", "pause_below", "max_ratio", "pause_ratio",
                "failure_limit", "optional",
            ], at: at + ".")
        guard let name = m["name"] as? String, !name.isEmpty else { throw reader.error(at + ".name", "is required") }
        guard let query = m["query"] as? String, !query.isEmpty else { throw reader.error(at + ".query", "is required (PromQL)") }
        var c = MetricCheck(name: name, query: query)
        func number(_ key: String) throws -> Double? {
            guard let raw = m[key] else { return nil }
            if let d = raw as? Double { return d }
            if let i = raw as? Int { return Double(i) }
            throw reader.error("\(at).\(key)", "must be a number")
        }
        c.max = try number("max")
        c.pauseAbove = try number("pause_above")
        c.min = try number("min")
        c.pauseBelow = try number("pause_below")
        c.maxRatio = try number("max_ratio")
        c.pauseRatio = try number("pause_ratio")
        guard c.max != nil || c.min != nil || c.maxRatio != nil else {
            throw reader.error(at, "needs a threshold: max, min or max_ratio")
        }
        if let v = m["failure_limit"] {
            guard let i = v as? Int, i >= 0 else { throw reader.error("\(at).failure_limit", "must be a non-negative integer") }
            c.failureLimit = i
        }
        if let v = m["optional"] {
            guard let b = v as? Bool else { throw reader.error("\(at).optional", "must be true or false") }
            c.optional = b
        }
        return c
    }

    static func webhook(_ raw: Any, index: Int, _ reader: ConfigReader) throws -> WebhookConfig {
        let at = "webhooks[\(index)]"
        guard let m = raw as? [String: Any] else { throw reader.error(at, "must be a mapping") }
        try reader.rejectUnknown(
            m,
            known: [
                "name", "url", "secret", "secret_env", "secret_file", "events", "repositories", "max_attempts",
                "retry_base_seconds", "timeout_seconds",
            ], at: at + ".")
        guard let name = m["name"] as? String, !name.isEmpty else { throw reader.error(at + ".name", "is required") }
        guard let url = m["url"] as? String, let u = URL(string: url), ["http", "https"].contains(u.scheme ?? ""), u.host != nil else {
            throw reader.error(at + ".url", "must be an http(s) URL")
        }
        guard let secret = try reader.secret(m, "secret", at: at) else {
            throw reader.error(at, "needs secret, secret_env or secret_file (events are signed)")
        }
        var hook = WebhookConfig(name: name, url: url, secret: secret)
        for key in ["events", "repositories"] {
            guard let v = m[key] else { continue }
            guard let list = v as? [String] else { throw reader.error("\(at).\(key)", "must be a list of patterns") }
            if key == "events" { hook.events = list } else { hook.repositories = list }
        }
        if let v = m["max_attempts"] {
            guard let n = v as? Int, n >= 1 else { throw reader.error(at + ".max_attempts", "must be a positive integer") }
            hook.maxAttempts = n
        }
        if let v = m["retry_base_seconds"] {
            guard let d = (v as? Double) ?? (v as? Int).map(Double.init), d > 0 else {
                throw reader.error(at + ".retry_base_seconds", "must be positive")
            }
            hook.retryBaseSeconds = d
        }
        if let v = m["timeout_seconds"] {
            guard let d = (v as? Double) ?? (v as? Int).map(Double.init), d > 0 else {
                throw reader.error(at + ".timeout_seconds", "must be positive")
            }
            hook.timeoutSeconds = d
        }
        return hook
    }
}

/// Typed access to the YAML mappings of a config file, with errors that name the full key.
///
/// The one place (with its helpers in the *Config.swift files) where an untyped tree is read:
/// `Yams.load` yields `[String: Any]`, and this reader is where it becomes typed. Every key's type
/// is checked (`value`), every mapping's unknown keys are refused (`rejectUnknown`), and errors
/// name the dotted path, which a Codable decode of YAML would not give an operator.
final class ConfigReader {
    let path: String
    /// What `*_env` keys read (ConfigSecrets).
    let environment: [String: String]
    /// Warnings for the operator, logged at start (`ServerConfig.startupWarnings`).
    var warnings: [String] = []
    /// Files secrets were read from (`ServerConfig.secretFiles`).
    var secretFiles: [String] = []
    /// The keys each checked mapping may have, by dotted path ("" for the top level): what
    /// `rejectUnknown` was given (ConfigEnvironmentTests compares it with ConfigKeys).
    private(set) var checkedMappings: [String: Set<String>] = [:]
    private var current = ""

    /// `environment` nil: this process's.
    init(path: String, environment: [String: String]? = nil) {
        self.path = path
        self.environment = environment ?? ProcessInfo.processInfo.environment
    }

    /// Keys `value` reads are named under `mapping` (a dotted path) until `restore(returned)`.
    func enter(_ mapping: String) -> String {
        defer { current = mapping + "." }
        return current
    }

    func restore(_ previous: String) { current = previous }

    func error(_ key: String, _ message: String) -> DepotError {
        .invalidArgument("config \(path): \(key) \(message)")
    }

    func section(_ root: [String: Any], _ name: String, _ body: ([String: Any]) throws -> Void) throws {
        guard let value = root[name] else { return }
        guard let mapping = value as? [String: Any] else { throw error(name, "must be a mapping") }
        current = name + "."
        defer { current = "" }
        try body(mapping)
        try rejectUnknown(mapping, known: Self.sectionKeys[name] ?? [], at: name + ".")
    }

    /// Every section's keys (ConfigKeys builds the key tree environment variables name from them).
    static var sectionKeys: [String: Set<String>] {
        let known: [String: Set<String>] = [
            "server": [
                "listen", "log_level", "log_format", "max_connections", "header_timeout_seconds", "idle_timeout_seconds",
                "blocking_threads", "default_page_size", "max_recipe_commits", "tls",
            ],
            "storage": [
                "root", "pack_target_mib", "flush_mib", "compression", "compression_min_savings", "write_grace_hours",
                "compact_below", "read_verification", "gc_interval_hours", "backend", "s3", "cast_dedup",
                "read_threads",
            ],
            "uploads": [
                "timeout_seconds", "max_lifetime_seconds", "max_sessions", "max_sessions_per_client", "min_bytes_per_second",
                "rate_grace_seconds", "max_blob_gib",
            ],
            "aliases": ["protected", "immutable"],
            "pipelines": [
                "directory", "lease_seconds", "retry_base_seconds", "log_retention_days", "callback_url", "trust_pickle", "runner",
                "sandbox",
            ],
            "canary": ["prometheus_url", "steps", "analysis_interval", "node_ttl", "router_command", "router_url", "checks"],
            "auth": [
                "enabled", "bootstrap_token_file", "token_ttl_seconds", "signing_key_file", "realm", "service", "anonymous_pull",
                "password_iterations", "oidc",
            ],
            "signing": ["enabled", "key_file", "trusted_keys"],
            "catalog": Set([
                "driver", "url", "schema", "pool_size", "connect_timeout_seconds", "idle_in_transaction_timeout_seconds",
                "statement_timeout_seconds",
            ]).union(secretKeys("password")),
            "tracing": ["enabled", "endpoint", "sample_ratio", "service_name", "timeout_seconds"],
            "formats": [
                "max_mib_per_blob", "max_seconds_per_blob", "max_seconds_per_manifest", "max_document_kib", "concurrency",
                "cache_entries",
            ],
        ]
        return known
    }

    func value<T>(_ mapping: [String: Any], _ key: String) throws -> T? {
        guard let raw = mapping[key] else { return nil }
        if let v = raw as? T { return v }
        if T.self == Double.self, let i = raw as? Int { return Double(i) as? T }
        throw error(current + key, "has the wrong type (\(type(of: raw)), expected \(T.self))")
    }

    func rejectUnknown(_ mapping: [String: Any], known: Set<String>, at prefix: String) throws {
        checkedMappings[prefix.hasSuffix(".") ? String(prefix.dropLast()) : prefix, default: []].formUnion(known)
        for key in mapping.keys where !known.contains(key) {
            throw error(prefix + key, "is not a known setting")
        }
    }
}
