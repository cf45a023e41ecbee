import ArgumentParser
import DepotAPI
import DepotClient
import DepotRunner
import DepotServer
import DepotTelemetry
import Foundation
import Logging
import ServiceLifecycle

struct Jobs: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Pipeline jobs: list, show (with the log), cancel, retry.",
        subcommands: [JobList.self, JobShow.self, JobCancel.self, JobRetry.self, PipelineList.self], defaultSubcommand: JobList.self)
}

struct JobList: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "list", abstract: "Jobs, newest first.")
    @Option(help: "Only jobs in this state: queued, leased, running, succeeded, failed, cancelled.") var state: String?
    @Option(help: "Only jobs of this pipeline.") var pipeline: String?
    @Option(help: "At most this many.") var limit = 100
    @Flag(help: "Machine-readable output.") var json = false
    @OptionGroup var registry: RegistryOptions

    func run() async throws {
        await runClient(registry) { c in
            var query = ["limit=\(limit)"]
            if let state { query.append("state=\(encode(state))") }
            if let pipeline { query.append("pipeline=\(encode(pipeline))") }
            let r = try await c.request(.GET, Routes[.jobs].path() + "?" + query.joined(separator: "&"), as: JobListAnswer.self)
            if json { return printJSON(r) }
            let jobs = r.jobs
            if jobs.isEmpty {
                print("no jobs")
                return
            }
            for j in jobs { print(JobFormat.line(j)) }
        }
    }
}

struct JobShow: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "show", abstract: "One job: its input, output, attempts, reason and log.")
    @Argument(help: "Job id.") var id: Int64
    @Flag(help: "Machine-readable output (without the log).") var json = false
    @Flag(help: "Do not print the log.") var noLog = false
    @OptionGroup var registry: RegistryOptions

    func run() async throws {
        await runClient(registry) { c in
            let j = try await c.request(.GET, Routes[.job].path(["id": "\(id)"]), as: JobInfo.self)
            if json { return printJSON(j) }
            print("job \(id): \(j.pipeline)/\(j.stage)  \(j.state.rawValue)\(j.memoized ? " (memoized)" : "")")
            print("  input    \(j.input.repository)@\(j.input.digest)\(j.input.tag.map { " (\($0))" } ?? "")")
            if let d = j.output.digest {
                print("  output   \(j.input.repository)@\(d)\(j.output.tag.map { " (\($0))" } ?? "")")
            } else if let t = j.output.tag {
                print("  output   will be tagged \(t)")
            }
            print("  attempt  \(j.attempt) of \(j.maxAttempts)\(j.runner.map { ", runner \($0)" } ?? "")")
            let details: [(String, String?)] = [
                ("key", j.key), ("created_at", j.createdAt), ("started_at", j.startedAt), ("finished_at", j.finishedAt),
                ("not_before", j.notBefore), ("reason", j.reason),
            ]
            for (k, value) in details {
                if let v = value {
                    print("  \(k.replacingOccurrences(of: "_", with: " "))\(String(repeating: " ", count: max(1, 9 - k.count)))\(v)")
                }
            }
            guard !noLog else { return }
            if j.log != nil {
                let log = try await c.getBytes(Routes[.jobLogGet].path(["id": "\(id)"]), limit: 16 << 20)
                print("--- log ---")
                print(String(decoding: log, as: UTF8.self), terminator: "")
            } else {
                print("(no log yet)")
            }
        }
    }
}

struct JobCancel: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "cancel", abstract: "Cancel a queued or running job (the runner stops it).")
    @Argument(help: "Job id.") var id: Int64
    @OptionGroup var registry: RegistryOptions

    func run() async throws { await JobFormat.post(.jobCancel, id, registry) }
}

struct JobRetry: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "retry", abstract: "Queue a failed or cancelled job again, attempts reset.")
    @Argument(help: "Job id.") var id: Int64
    @OptionGroup var registry: RegistryOptions

    func run() async throws { await JobFormat.post(.jobRetry, id, registry) }
}

struct PipelineList: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "pipelines", abstract: "The pipelines the registry loaded.")
    @Flag(help: "Machine-readable output.") var json = false
    @OptionGroup var registry: RegistryOptions

    func run() async throws {
        await runClient(registry) { c in
            let r = try await c.request(.GET, Routes[.pipelines].path(), as: PipelineListAnswer.self)
            if json { return printJSON(r) }
            for p in r.pipelines {
                print("\(p.name)  (\(p.file))")
                for s in p.stages {
                    let needs = s.needs.joined(separator: ",")
                    print("  \(s.name)  \(s.kind)\(needs.isEmpty ? "" : "  needs \(needs)")\(s.tag.map { "  tag \($0)" } ?? "")")
                }
            }
        }
    }
}

enum JobFormat {
    /// POSTs an operator command on a job and prints the job's line.
    static func post(_ action: RouteID, _ id: Int64, _ registry: RegistryOptions) async {
        await runClient(registry) { c in
            print(line(try await c.request(.POST, Routes[action].path(["id": "\(id)"]), as: JobInfo.self)))
        }
    }

    static func line(_ j: JobInfo) -> String {
        var text = "\(j.id)  \(j.pipeline)/\(j.stage)  \(j.state.rawValue)"
        text += "  \(j.input.repository)@\(short(j.input.digest))"
        if let d = j.output.digest { text += " -> \(short(d))" }
        if let t = j.output.tag { text += " (\(t))" }
        text += "  attempt \(j.attempt)/\(j.maxAttempts)"
        if j.memoized { text += "  memoized" }
        if let r = j.reason { text += "  \(r.split(separator: "\n").first ?? "")" }
        return text
    }
}

func encode(_ s: String) -> String { s.addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? s }

struct RunnerCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "runner",
        abstract: "Run pipeline jobs for a registry: lease, run, push the output, report (e.g. on a GPU node).")
    @OptionGroup var registry: RegistryOptions
    @Option(help: "Labels this runner offers, comma-separated (a stage's labels must all be here).") var labels = ""
    @Option(help: "Runner name (default: runner@host).") var name: String?
    @Option(help: "Jobs run at the same time.") var concurrency = 1
    @Option(help: "Workspaces and the chunk cache (default: $TMPDIR/depot-runner-<name>).") var workDir: String?
    @Option(help: "Python for built-in hooks (default: $DEPOT_HOOKS_PYTHON, else python3).") var python: String?
    @Option(help: "Directory of the built-in hooks (default: $DEPOT_HOOKS_DIR or hooks/builtin next to the executable).") var hooksDir:
        String?
    @Option(help: "Seconds between lease renewals.") var heartbeatSeconds: Double = 5
    @Option(help: "An environment variable stages may see besides PATH, HOME, LANG… (repeatable).") var passEnv: [String] = []
    @Option(help: "How stages are confined: bubblewrap (none run where it does not work) or off (unconfined, logged).")
    var sandbox = "bubblewrap"
    @Option(help: "The bubblewrap executable.") var bwrap = "bwrap"
    @Option(help: "A host path stages may read besides the system, the Python and the hooks (repeatable).") var sandboxPath: [String] = []
    @Option(help: "A device node stages get (repeatable; default: the /dev/nvidia* present).") var device: [String] = []
    @Option(help: "When run as root: the first uid stages run as (one per concurrent job).") var sandboxUid: UInt32 = 2_000_000_000
    @Option(help: "Address space of each stage process, GiB (0: none; a CUDA runner needs 0).") var limitMemoryGib: Double = 8
    @Option(help: "CPU seconds of each stage process (0: the stage's timeout).") var limitCpuSeconds = 0
    @Option(help: "Largest file a stage may write, GiB (0: none).") var limitFileSizeGib: Double = 16
    @Option(help: "Processes and threads of a stage (0: none).") var limitProcesses = 1024
    @Option(help: "What a stage may write into its workspace, GiB (0: none).") var limitWorkspaceGib: Double = 32

    @Option(help: "Export a trace of every job over OTLP/HTTP to this URL (a collector's /v1/traces; default: off).")
    var otlpEndpoint: String?

    func validate() throws {
        guard (1...64).contains(concurrency) else { throw ValidationError("--concurrency must be 1...64") }
        if let otlpEndpoint, let problem = TracingConfig.endpointProblem(otlpEndpoint) {
            throw ValidationError("--otlp-endpoint \(problem)")
        }
        guard heartbeatSeconds >= 0.2 else { throw ValidationError("--heartbeat-seconds must be at least 0.2") }
        guard SandboxMode(rawValue: sandbox) != nil else { throw ValidationError("--sandbox must be bubblewrap or off") }
        guard [limitMemoryGib, limitFileSizeGib, limitWorkspaceGib].allSatisfy({ $0 >= 0 }), limitCpuSeconds >= 0, limitProcesses >= 0
        else {
            throw ValidationError("limits must be 0 (none) or more")
        }
    }

    func run() async throws {
        let runnerName = name ?? "runner@\(ProcessInfo.processInfo.hostName)"
        let safe = runnerName.map { $0.isLetter || $0.isNumber || $0 == "-" ? $0 : "_" }
        var options = RunnerOptions(name: runnerName, workDirectory: workDir ?? NSTemporaryDirectory() + "depot-runner-" + String(safe))
        options.labels = labels.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
        options.concurrency = concurrency
        options.python = python ?? ProcessInfo.processInfo.environment["DEPOT_HOOKS_PYTHON"].flatMap { $0.isEmpty ? nil : $0 } ?? "python3"
        options.hooksDirectory = hooksDir ?? RunnerOptions.defaultHooksDirectory()
        options.heartbeatInterval = .milliseconds(Int64(heartbeatSeconds * 1000))
        options.passEnvironment = passEnv
        options.sandbox.mode = SandboxMode(rawValue: sandbox) ?? .bubblewrap
        options.sandbox.bwrap = bwrap
        options.sandbox.readOnlyPaths = sandboxPath
        options.sandbox.devices = device.isEmpty ? nil : device
        options.sandbox.firstUID = sandboxUid
        options.sandbox.limits.memoryBytes = Int64(limitMemoryGib * Double(1 << 30))
        options.sandbox.limits.cpuSeconds = limitCpuSeconds
        options.sandbox.limits.fileBytes = Int64(limitFileSizeGib * Double(1 << 30))
        options.sandbox.limits.processes = limitProcesses
        options.sandbox.limits.workspaceBytes = Int64(limitWorkspaceGib * Double(1 << 30))
        let logger = Logger(label: "depot-runner")
        // Job spans (depot.job.run); the registry's spans of the job's requests are in their
        // traces. Before the connection: its HTTP client takes the tracer there is when it is made.
        var tracing = TracingConfig()
        tracing.enabled = otlpEndpoint != nil
        tracing.endpoint = otlpEndpoint ?? tracing.endpoint
        tracing.serviceName = "depot-runner"
        let exporter: ServiceGroup?
        do {
            exporter = try Telemetry.bootstrap(tracing, logger: logger).map {
                ServiceGroup(services: [$0], gracefulShutdownSignals: [], logger: logger)
            }
        } catch { fail("--otlp-endpoint: \(error)") }
        let exporting = exporter.map { group in Task { try? await group.run() } }
        let connection: RegistryConnection
        do { connection = try registry.connect() } catch { fail("\(error)") }
        let runner: Runner
        do { runner = try Runner(connection: connection, options: options, logger: logger) } catch { fail("\(error)") }
        // Stop on SIGINT/SIGTERM: the current job's process group is killed with the task.
        await runUntilSignalled { await runner.run() }
        await connection.shutdown()
        // Spans still queued are sent before the process ends.
        await exporter?.triggerGracefulShutdown()
        _ = await exporting?.value
    }
}

/// Runs `body` in a task that SIGINT or SIGTERM cancels, and waits for it.
func runUntilSignalled(_ body: @escaping @Sendable () async -> Void) async {
    let task = Task { await body() }
    for sig in [SIGINT, SIGTERM] {
        signal(sig, SIG_IGN)
        let source = DispatchSource.makeSignalSource(signal: sig, queue: .main)
        source.setEventHandler { task.cancel() }
        source.resume()
        SignalSources.keep(source)
    }
    await task.value
}

/// Keeps signal sources alive for the process's life.
enum SignalSources {
    nonisolated(unsafe) static var sources: [any DispatchSourceSignal] = []
    static func keep(_ s: any DispatchSourceSignal) { sources.append(s) }
}
