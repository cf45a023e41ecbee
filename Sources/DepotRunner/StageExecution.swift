import DepotAPI
import DepotClient
import DepotCore
import DepotFormats
import Foundation

/// One attempt of one job: workspace, input pull, the command under a heartbeat and a
/// deadline, then the output pushed (last, so nothing of a failed attempt becomes visible).
struct StageExecution {
    let job: LeasedJob
    let key: String
    let workspace: String
    let log: JobLog
    let runner: Runner
    /// The job's slot in the sandbox (its own uid when the runner is root).
    let slot: Int

    var connection: RegistryConnection { runner.connection }
    var options: RunnerOptions { runner.options }

    /// Annotation keys a stage may not set (the runner writes them).
    static let reservedPrefixes = ["dev.depot.lineage.", "dev.depot.job."]

    func run() async throws -> Digest {
        let fm = FileManager.default
        let inputDir = workspace + "/input"
        let outputDir = workspace + "/output"
        let resultFile = workspace + "/result.json"
        let sandbox = runner.sandbox
        try Sandbox.prepareWorkspace(workspace)

        // The lease is renewed for the whole attempt (pull, command, push).
        let beat = Heartbeat()
        let beats = Task { await beat.loop(job: job, connection: connection, every: options.heartbeatInterval) }
        defer { beats.cancel() }

        let input = try await connection.manifest(job.inputRepository, job.inputDigest.description)
        let progress = TransferProgress(style: .quiet, verb: "pull", wire: connection.counters)
        let pulled = try await Puller(connection: connection, progress: progress, cache: runner.cache)
            .pull(PullRequest(repository: job.inputRepository, reference: job.inputDigest.description, outputDirectory: inputDir))
        log.line("pulled input: \(pulled.files) file(s), \(TransferProgress.bytes(pulled.logicalBytes))")
        if let stop = beat.stopReason() { throw StageStopped(reason: stop) }

        let argv: [String]
        switch job.spec.kind {
        case .exec(let command): argv = command
        case .builtin(let name): argv = [sandbox.python, try ToolchainCache.script(name, options)]
        }
        try sandbox.handOver(workspace, slot: slot)
        let launch = try sandbox.launch(
            argv: argv, workspace: workspace, slot: slot, network: job.spec.network, timeoutSeconds: job.spec.timeoutSeconds)
        // Paths as the stage sees them (the sandbox mounts the workspace at /workspace).
        let seen = launch.workspace
        var env = options.stageEnvironment()
        sandbox.adjust(&env)
        let inputType = (try? JSONDecoder().decode(JSONValue.self, from: Data(input.bytes)))?["artifactType"]?.string
        let vars: [String: String?] = [
            "DEPOT_INPUT_DIR": seen + "/input", "DEPOT_OUTPUT_DIR": seen + "/output", "DEPOT_RESULT": seen + "/result.json",
            "DEPOT_INPUT_REPOSITORY": job.inputRepository, "DEPOT_INPUT_DIGEST": job.inputDigest.description,
            "DEPOT_INPUT_TAG": job.inputTag, "DEPOT_INPUT_ARTIFACT_TYPE": inputType, "DEPOT_JOB_ID": String(job.id),
            "DEPOT_PIPELINE": job.pipeline, "DEPOT_STAGE": job.stage, "DEPOT_REGISTRY": connection.baseURL,
            "DEPOT_ATTEMPT": String(job.attempt),
        ]
        for (k, v) in vars { env[k] = v ?? "" }
        for (k, v) in job.spec.with { env["DEPOT_PARAM_" + k.uppercased()] = v }
        env["DEPOT_PARAMS"] = (try? WireJSON.encode(job.spec.with)).map { String(decoding: $0, as: UTF8.self) } ?? "{}"

        log.line("run: \(argv.joined(separator: " ")) (timeout \(job.spec.timeoutSeconds) s)")
        let started = Date()
        let logStart = (try? FileManager.default.attributesOfItem(atPath: log.path)[.size] as? Int) ?? 0
        let process = try StageProcess(launch: launch, environment: env, directory: workspace, log: log.path)
        let deadline = started.addingTimeInterval(Double(job.spec.timeoutSeconds))
        let timeout = job.spec.timeoutSeconds
        // The workspace quota: what the stage adds to its workspace and its log, measured twice a second.
        let quota = options.sandbox.limits.workspaceBytes
        let baseline = Sandbox.usage(workspace) + Int64(logStart)
        let lastMeasured = Locked(Date.distantPast)
        let ws = workspace
        let logPath = log.path
        let (outcome, killed) = await process.wait {
            if let stop = beat.stopReason() { return stop }
            if Date() > deadline { return "timed out after \(timeout) s" }
            if Task.isCancelled { return "runner shutting down" }
            if quota > 0, lastMeasured.withLock({ Date().timeIntervalSince($0) >= 0.5 }) {
                lastMeasured.withLock { $0 = Date() }
                let used = Sandbox.usage(ws) + Sandbox.usage(logPath) - baseline
                if used > quota {
                    return
                        "exceeded its workspace quota: it wrote \(TransferProgress.bytes(used)), more than \(TransferProgress.bytes(quota)) (pipelines.runner.limits.workspace_gib)"
                }
            }
            return nil
        }
        let said = log.lastLine(after: logStart).map { ": \($0)" } ?? " (see the log)"
        log.line("command ended: \(outcome) after \(String(format: "%.1f", Date().timeIntervalSince(started))) s")
        if let killed {
            if killed.hasPrefix("timed out") || killed.hasPrefix("exceeded") {
                throw RunnerError("the stage \(killed) (its processes were killed)")
            }
            throw StageStopped(reason: killed)
        }
        // bubblewrap reports a command killed by signal N as exit status 128+N.
        let confined = sandbox.state == .confined
        switch outcome {
        case .exited(0): break
        case .exited(78): throw RunnerError("the stage exited with status 78 (the input can never work with it)\(said)", permanent: true)
        case .exited(let code) where confined && code > 128 && code < 128 + 65:
            throw RunnerError("the stage was killed by signal \(code - 128)\(Self.signalMeaning(code - 128, launch))\(said)")
        case .exited(let code): throw RunnerError("the stage exited with status \(code)\(said)")
        case .signalled(let sig): throw RunnerError("the stage was killed by signal \(sig)\(Self.signalMeaning(sig, launch))")
        }

        // Outputs are read by the runner: a link could point it at anything it can read (the catalog).
        try Self.refuseLinks(outputDir, shownAs: "DEPOT_OUTPUT_DIR")
        try Self.refuseLinks(resultFile, shownAs: "DEPOT_RESULT")
        let written = (fm.enumerator(atPath: outputDir)?.allObjects as? [String] ?? []).filter {
            var isDir: ObjCBool = false
            return fm.fileExists(atPath: outputDir + "/" + $0, isDirectory: &isDir) && !isDir.boolValue
        }
        guard !written.isEmpty else { throw RunnerError("the stage wrote no output into DEPOT_OUTPUT_DIR") }
        let files = try ArtifactFiles.collect([outputDir])
        try Self.validate(files)
        let result = try StageResult.read(resultFile)
        var request = PushRequest(repository: job.inputRepository, tag: job.outputTag ?? "", paths: [outputDir])
        request.subject = input
        request.artifactType = result.artifactType
        request.annotations = result.annotations
        request.annotations[JobAnnotationKeys.key] = key
        request.annotations[JobAnnotationKeys.job] = String(job.id)
        request.annotations[JobAnnotationKeys.pipeline] = job.pipeline
        request.annotations[JobAnnotationKeys.stage] = job.stage
        request.annotations[Annotation.Lineage.from] = "\(job.inputRepository)@\(job.inputDigest)"
        request.annotations[Annotation.Lineage.relation] = result.relation ?? job.spec.relation ?? LineageRelation.derivedFrom.rawValue
        if let stop = beat.stopReason() { throw StageStopped(reason: stop) }
        let pushProgress = TransferProgress(style: .quiet, verb: "push", wire: connection.counters)
        do {
            let summary = try await Pusher(connection: connection, progress: pushProgress).push(request)
            return try Digest(parsing: summary.digest)
        } catch let e as ClientError where e.status.map({ (400..<500).contains($0) }) ?? false {
            // The registry refused the output (e.g. a model its format readers reject): retrying won't change it.
            throw RunnerError("the registry refused the output: \(e.message)")
        }
    }
}

extension StageExecution {
    /// What a signal that killed a stage means here (its resource limits).
    static func signalMeaning(_ sig: Int32, _ launch: Sandbox.Launch) -> String {
        func limit(_ r: __rlimit_resource) -> UInt64? { launch.limits.first { $0.0 == Int32(r.rawValue) }?.1 }
        switch sig {
        case SIGXCPU: return " (SIGXCPU: it used its CPU time limit of \(limit(RLIMIT_CPU).map { "\($0) s" } ?? "?") in one process)"
        case SIGXFSZ:
            return
                " (SIGXFSZ: it wrote a file larger than its file size limit of \(limit(RLIMIT_FSIZE).map { TransferProgress.bytes(Int64($0)) } ?? "?"))"
        case SIGKILL: return " (SIGKILL)"
        case SIGSEGV:
            return
                " (SIGSEGV; with a memory limit of \(limit(RLIMIT_AS).map { TransferProgress.bytes(Int64($0)) } ?? "none"), an allocation may have failed)"
        case SIGABRT: return " (SIGABRT)"
        default: return ""
        }
    }

    /// Refuses symbolic links and anything else that is not a regular file or a directory under `path`.
    static func refuseLinks(_ path: String, shownAs: String) throws {
        var st = stat()
        guard lstat(path, &st) == 0 else { return }
        switch st.st_mode & S_IFMT {
        case S_IFREG: return
        case S_IFDIR:
            for name in (try? FileManager.default.contentsOfDirectory(atPath: path)) ?? [] {
                try refuseLinks(path + "/" + name, shownAs: shownAs + "/" + name)
            }
        case S_IFLNK: throw RunnerError("the stage wrote a symbolic link (\(shownAs)): outputs must be regular files", permanent: true)
        default: throw RunnerError("the stage wrote \(shownAs), which is not a regular file", permanent: true)
        }
    }

    /// Every output file in a format Depot reads must parse (an ONNX file that is not ONNX, a
    /// lying safetensors header, a config.pbtxt with a syntax error fail the job before anything
    /// is pushed).
    static func validate(_ files: [ArtifactFile]) throws {
        for f in files {
            do {
                _ = try FormatInspector.inspect(path: f.relativePath, source: try LocalFileSource(path: f.localPath), platform: nil)
            } catch {
                throw RunnerError("the stage wrote an invalid model: \(f.relativePath): \(error)")
            }
        }
    }
}

/// Annotation keys the runner writes on outputs (the server reads them as `JobAnnotations`).
enum JobAnnotationKeys {
    static let key = Annotation.Job.key
    static let job = Annotation.Lineage.job
    static let pipeline = Annotation.Job.pipeline
    static let stage = Annotation.Job.stage
}

/// What a stage reported in `$DEPOT_RESULT`.
struct StageResult {
    var artifactType: String?
    var relation: String?
    var annotations: [String: String] = [:]

    static func read(_ path: String) throws -> StageResult {
        guard FileManager.default.fileExists(atPath: path) else { return StageResult() }
        guard let data = FileManager.default.contents(atPath: path), data.count <= 1 << 20,
            let json = (try? JSONDecoder().decode(JSONValue.self, from: data))?.object
        else {
            throw RunnerError("DEPOT_RESULT is not a JSON object (at most 1 MiB)")
        }
        var r = StageResult()
        for key in json.keys where !["artifact_type", "relation", "annotations"].contains(key) {
            throw RunnerError("DEPOT_RESULT: unknown key '\(key)' (artifact_type, relation, annotations)")
        }
        if let t = json["artifact_type"] {
            guard let s = t.string, s.contains("/"), s.count <= 255 else {
                throw RunnerError("DEPOT_RESULT.artifact_type must be a media type")
            }
            r.artifactType = s
        }
        if let rel = json["relation"] {
            guard let s = rel.string, LineageRelation(rawValue: s) != nil else {
                throw RunnerError(
                    "DEPOT_RESULT.relation must be one of \(LineageRelation.list)"
                )
            }
            r.relation = s
        }
        if let a = json["annotations"] {
            guard let map = a.object else { throw RunnerError("DEPOT_RESULT.annotations must be an object of strings") }
            for (k, v) in map {
                guard let s = v.string else { throw RunnerError("DEPOT_RESULT.annotations.\(k) must be a string") }
                if StageExecution.reservedPrefixes.contains(where: { k.hasPrefix($0) }) {
                    throw RunnerError("DEPOT_RESULT.annotations.\(k): the runner writes dev.depot.lineage.* and dev.depot.job.* itself")
                }
                r.annotations[k] = s
            }
        }
        return r
    }
}

/// Renews a job's lease in the background and remembers why the job must stop, if it must.
final class Heartbeat: Sendable {
    let reason = Locked<String?>(nil)

    func stopReason() -> String? { reason.withLock { $0 } }

    func loop(job: LeasedJob, connection: RegistryConnection, every interval: Duration) async {
        while !Task.isCancelled {
            try? await Task.sleep(for: interval)
            if Task.isCancelled { return }
            do {
                let state = try await connection.heartbeatJob(job)
                if state == .cancelled {
                    reason.withLock { $0 = "cancelled" }
                    return
                }
            } catch let e as ClientError where e.status == 409 || e.status == 404 {
                reason.withLock { $0 = "lease lost: \(e.message)" }
                return
            } catch {
                // The registry is unreachable: keep working; if the lease expires meanwhile, the
                // completion is refused and the job's next attempt finds the output memoized.
            }
        }
    }
}
