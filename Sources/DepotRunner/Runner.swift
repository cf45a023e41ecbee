import DepotClient
import DepotCore
import Foundation
import Logging
import Tracing

/// Settings of a runner (embedded in `depot serve` or `depot runner`).
public struct RunnerOptions: Sendable {
    public var name: String
    public var labels: [String] = []
    /// Jobs run at the same time.
    public var concurrency = 1
    /// Workspaces (one per job attempt, removed after it) and the chunk cache live here.
    public var workDirectory: String
    /// Where `builtin` stages' scripts are (`<dir>/<name>.py`).
    public var hooksDirectory: String?
    /// The Python that runs built-in hooks.
    public var python = "python3"
    public var pollInterval: Duration = .seconds(1)
    public var heartbeatInterval: Duration = .seconds(5)
    /// The job log keeps its last this-many bytes.
    public var maxLogBytes = 4 << 20
    public var cacheBytes: Int64 = 10 << 30
    /// Variables of the runner's own environment a stage sees besides the basics (PATH, HOME,
    /// LANG, LC_*, TZ, TMPDIR, USER, LOGNAME, SHELL): secrets of the server stay out of stages.
    public var passEnvironment: [String] = []
    /// How stages are confined, and their limits.
    public var sandbox = SandboxOptions()

    /// The environment a stage starts from.
    func stageEnvironment() -> [String: String] {
        let basics: Set<String> = ["PATH", "HOME", "LANG", "TZ", "TMPDIR", "USER", "LOGNAME", "SHELL"]
        let wanted = basics.union(passEnvironment)
        return ProcessInfo.processInfo.environment.filter { wanted.contains($0.key) || $0.key.hasPrefix("LC_") }
    }

    public init(name: String, workDirectory: String) {
        self.name = name
        self.workDirectory = workDirectory
    }

    /// `hooks/builtin` next to the executable's checkout or install: `$DEPOT_HOOKS_DIR`, then
    /// the first `hooks/builtin` found walking up from the executable, then `/usr/share/depot/hooks/builtin`.
    public static func defaultHooksDirectory() -> String? {
        let fm = FileManager.default
        if let env = ProcessInfo.processInfo.environment["DEPOT_HOOKS_DIR"], !env.isEmpty { return env }
        var dir = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath().deletingLastPathComponent()
        for _ in 0..<8 {
            let candidate = dir.appendingPathComponent("hooks/builtin").path
            if fm.fileExists(atPath: candidate + "/convert.py") { return candidate }
            dir = dir.deletingLastPathComponent()
        }
        let cwd = fm.currentDirectoryPath + "/hooks/builtin"
        if fm.fileExists(atPath: cwd + "/convert.py") { return cwd }
        return fm.fileExists(atPath: "/usr/share/depot/hooks/builtin") ? "/usr/share/depot/hooks/builtin" : nil
    }
}

/// Leases jobs from a registry and runs them: pulls the input into a workspace, runs the
/// stage's command with the `DEPOT_*` environment, pushes the output directory back as an
/// artifact whose `subject` is the input, and reports the result with the log. A job whose
/// memoization key already has an artifact is completed without running.
public final class Runner: Sendable {
    public let connection: RegistryConnection
    let options: RunnerOptions
    let logger: Logger
    let cache: ChunkCache
    let toolchains = ToolchainCache()
    let sandbox: Sandbox

    public init(connection: RegistryConnection, options: RunnerOptions, logger: Logger) throws {
        self.connection = connection
        self.options = options
        self.logger = logger
        try FileManager.default.createDirectory(atPath: options.workDirectory, withIntermediateDirectories: true)
        // Copies, not links: a stage's input is handed to the stage's uid (`chown`, root
        // runner), which must not change the owner of the cache's entries.
        cache = try ChunkCache(root: options.workDirectory + "/cache", maxBytes: options.cacheBytes, linking: false)
        // Workspaces of a runner that was killed (its jobs go back to the queue when their leases expire).
        for entry in (try? FileManager.default.contentsOfDirectory(atPath: options.workDirectory)) ?? []
        where entry.hasPrefix("job-") || entry.hasPrefix("toolchain-") || entry.hasPrefix("probe-") {
            try? FileManager.default.removeItem(atPath: options.workDirectory + "/" + entry)
        }
        sandbox = Sandbox(options: options.sandbox, runner: options)
    }

    /// How stages run here: said once at start, loudly when they are not confined.
    public var sandboxState: (confined: Bool, message: String) {
        switch sandbox.state {
        case .confined: (true, sandbox.describe(timeoutSeconds: 1800, network: false))
        case .off: (false, sandbox.describe(timeoutSeconds: 1800, network: false))
        case .unavailable: (false, sandbox.unavailableMessage ?? "")
        }
    }

    /// Runs until the task is cancelled.
    public func run() async {
        await sandbox.probe()
        logger.info("runner \(options.name) (labels: \(options.labels.joined(separator: ","))) polling \(connection.baseURL)")
        switch sandbox.state {
        case .confined: logger.info("runner \(options.name): \(sandboxState.message)")
        case .off:
            logger.warning(
                "runner \(options.name): THE STAGE SANDBOX IS OFF (pipelines.sandbox: off): stages run unconfined as uid \(geteuid()), able to read what this process reads (the storage root, the config) and to reach the network"
            )
        case .unavailable:
            logger.error("runner \(options.name): \(sandboxState.message); every job this runner leases fails")
        }
        await withTaskGroup(of: Void.self) { group in
            for slot in 0..<max(1, options.concurrency) {
                group.addTask { await self.loop(slot: slot) }
            }
        }
    }

    func loop(slot: Int) async {
        var idle = options.pollInterval
        while !Task.isCancelled {
            do {
                if let job = try await connection.leaseJob(runner: options.name, labels: options.labels) {
                    idle = options.pollInterval
                    await execute(job)
                    continue
                }
            } catch {
                logger.warning("runner \(options.name): cannot lease: \(error)")
                idle = min(idle * 2, .seconds(30))
            }
            try? await Task.sleep(for: idle)
        }
    }

    /// Runs one leased job to its end (success, failure, cancellation or lost lease), in a trace
    /// of its own: the job's requests to the registry are AsyncHTTPClient's client spans below
    /// it, and carry its context (`traceparent`), so the registry's spans of its pulls, pushes
    /// and reports are in the same trace.
    public func execute(_ job: LeasedJob) async {
        await withSpan("depot.job.run", context: .topLevel, ofKind: .consumer) { span in
            if span.isRecording {
                span.updateAttributes { a in
                    a["depot.job.id"] = Int(job.id)
                    a["depot.job.pipeline"] = job.pipeline
                    a["depot.job.stage"] = job.stage
                    a["depot.job.attempt"] = job.attempt
                    a["depot.job.input"] = "\(job.inputRepository)@\(job.inputDigest)"
                    a["depot.runner"] = options.name
                }
            }
            let outcome = await run(job)
            span.attributes["depot.job.outcome"] = outcome.rawValue
            if outcome == .failed { span.setStatus(.init(code: .error)) }
        }
    }

    enum JobOutcome: String {
        case succeeded, memoized, stopped, failed
    }

    func run(_ job: LeasedJob) async -> JobOutcome {
        let workspace = options.workDirectory + "/job-\(job.id)-\(job.attempt)-\(UUID().uuidString.prefix(8))"
        let log = JobLog(path: workspace + ".log")
        defer {
            try? FileManager.default.removeItem(atPath: workspace)
            try? FileManager.default.removeItem(atPath: log.path)
        }
        log.line(
            "runner \(options.name): job \(job.id) \(job.pipeline)/\(job.stage), attempt \(job.attempt), input \(job.inputRepository)@\(job.inputDigest)"
        )
        let slot = sandbox.acquireSlot()
        defer { sandbox.releaseSlot(slot) }
        log.line(sandbox.describe(timeoutSeconds: job.spec.timeoutSeconds, network: job.spec.network))
        do {
            if let refusal = sandbox.unavailableMessage { throw RunnerError(refusal, permanent: true) }
            let key = try await memoKey(job, slot: slot)
            if let output = try await connection.startJob(job, key: key) {
                logger.info("job \(job.id) \(job.pipeline)/\(job.stage): memoized, output \(output)")
                return .memoized
            }
            log.line("key \(key)")
            let output = try await StageExecution(job: job, key: key, workspace: workspace, log: log, runner: self, slot: slot).run()
            log.line("pushed output \(output)")
            await uploadLog(job, log)
            try await connection.completeJob(job, output: output)
            logger.info("job \(job.id) \(job.pipeline)/\(job.stage) succeeded: \(output)")
            return .succeeded
        } catch let e as StageStopped {
            log.line("stopped: \(e.reason)")
            logger.notice("job \(job.id) stopped: \(e.reason)")
            await uploadLog(job, log)
            return .stopped
        } catch {
            let permanent = (error as? RunnerError)?.permanent ?? false
            log.line("FAILED\(permanent ? " (permanent)" : ""): \(error)")
            logger.warning("job \(job.id) \(job.pipeline)/\(job.stage) failed: \(error)")
            await uploadLog(job, log)
            do { try await connection.failJob(job, reason: "\(error)", permanent: permanent) } catch {
                logger.warning("job \(job.id): cannot report the failure (the lease will expire and the job return to the queue): \(error)")
            }
            return .failed
        }
    }

    func uploadLog(_ job: LeasedJob, _ log: JobLog) async {
        do { try await connection.uploadJobLog(job, log.tail(options.maxLogBytes)) } catch {
            logger.warning("job \(job.id): cannot upload its log: \(error)")
        }
    }

    /// sha256 over the repository, the input digest, the stage definition and the toolchain identity.
    func memoKey(_ job: LeasedJob, slot: Int) async throws -> String {
        let toolchain: String
        switch job.spec.kind {
        case .exec: toolchain = job.spec.toolchain ?? ""
        case .builtin(let name): toolchain = try await toolchains.identity(of: name, options: options, sandbox: sandbox, slot: slot)
        }
        let text = "depot-job-key/1\n\(job.inputRepository)\n\(job.inputDigest)\n\(job.spec.canonical)\n\(toolchain)"
        return Digest.of(Array(text.utf8)).description
    }
}

/// Stops a job without reporting a failure (cancelled, or the lease is gone).
struct StageStopped: Error { var reason: String }

/// The job's log: runner lines and the command's output, appended to one file.
struct JobLog: Sendable {
    let path: String

    func line(_ text: String) {
        let stamp = ISO8601DateFormatter().string(from: Date())
        let bytes = Array("[\(stamp)] \(text)\n".utf8)
        let fd = open(path, O_WRONLY | O_CREAT | O_APPEND, 0o644)
        guard fd >= 0 else { return }
        _ = bytes.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        close(fd)
    }

    /// The last non-empty line written after byte `offset` (the command's own last words), at most 300 characters.
    func lastLine(after offset: Int) -> String? {
        guard let h = FileHandle(forReadingAtPath: path) else { return nil }
        defer { try? h.close() }
        let size = Int((try? h.seekToEnd()) ?? 0)
        let start = max(offset, size - 4096)
        guard start < size else { return nil }
        try? h.seek(toOffset: UInt64(start))
        let text = String(decoding: (try? h.readToEnd()) ?? Data(), as: UTF8.self)
        let line = text.split(separator: "\n").map { $0.trimmingCharacters(in: .whitespaces) }.last { !$0.isEmpty }
        return line.map { String($0.prefix(300)) }
    }

    /// The last `limit` bytes.
    func tail(_ limit: Int) -> [UInt8] {
        guard let h = FileHandle(forReadingAtPath: path) else { return [] }
        defer { try? h.close() }
        let size = (try? h.seekToEnd()) ?? 0
        let start = size > UInt64(limit) ? size - UInt64(limit) : 0
        try? h.seek(toOffset: start)
        let data = (try? h.readToEnd()) ?? Data()
        return (start > 0 ? Array("[… earlier output cut]\n".utf8) : []) + Array(data)
    }
}

/// Toolchain identities of built-in hooks: the script's sha256 and its `--toolchain` line,
/// computed once per runner process.
final class ToolchainCache: Sendable {
    let known = Locked<[String: String]>([:])

    /// The line comes from the sandbox the stages run in (a library they cannot see is absent there too).
    func identity(of builtin: String, options: RunnerOptions, sandbox: Sandbox, slot: Int) async throws -> String {
        if let hit = known.withLock({ $0[builtin] }) { return hit }
        let script = try Self.script(builtin, options)
        let bytes = try Array(Data(contentsOf: URL(fileURLWithPath: script)))
        let workspace = options.workDirectory + "/toolchain-\(builtin)-\(UUID().uuidString.prefix(8))"
        let log = workspace + ".log"
        defer {
            try? FileManager.default.removeItem(atPath: workspace)
            try? FileManager.default.removeItem(atPath: log)
        }
        try Sandbox.prepareWorkspace(workspace)
        try sandbox.handOver(workspace, slot: slot)
        var env = options.stageEnvironment()
        sandbox.adjust(&env)
        let launch = try sandbox.launch(
            argv: [sandbox.python, script, "--toolchain"], workspace: workspace, slot: slot, network: false, timeoutSeconds: 60)
        let process = try StageProcess(launch: launch, environment: env, directory: workspace, log: log)
        let deadline = Date().addingTimeInterval(60)
        let (outcome, _) = await process.wait { Date() > deadline ? "took over 60 s" : nil }
        let output = (try? String(contentsOfFile: log, encoding: .utf8)) ?? ""
        guard outcome == .exited(0) else {
            throw RunnerError(
                "built-in '\(builtin)': `\(sandbox.python) \(script) --toolchain` failed (\(outcome)): \(output.suffix(2000))")
        }
        let line = output.split(separator: "\n").last.map(String.init) ?? ""
        let identity = "\(builtin) \(Digest.of(bytes)) \(line)"
        known.withLock { $0[builtin] = identity }
        return identity
    }

    static func script(_ builtin: String, _ options: RunnerOptions) throws -> String {
        guard let dir = options.hooksDirectory else {
            throw RunnerError("built-in '\(builtin)': no hooks directory (set DEPOT_HOOKS_DIR or pipelines.runner.hooks_dir)")
        }
        let path = dir + "/\(builtin).py"
        guard FileManager.default.fileExists(atPath: path) else { throw RunnerError("built-in '\(builtin)': \(path) does not exist") }
        return path
    }
}
