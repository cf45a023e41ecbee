import DepotCatalog
import DepotCore
import DepotPipelines
import DepotRunner
import DepotTestSupport
import Foundation
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// Hostile stages against the bubblewrap sandbox (docs/SECURITY.md). Each stage tries one
/// escape. The same stages run unconfined (`sandbox: off`) in `theAttacksWorkWithoutTheSandbox`, which
/// shows every attempt is real: what stops them in the other tests is the sandbox.
@Suite(.serialized) struct SandboxTests {
    /// One pipeline per attack, each triggered by its own repository `evil/<name>`.
    static func pipeline(_ name: String, shell: String = "/bin/sh", _ script: String, extra: [String] = []) -> String {
        var text = """
            name: \(name)
            trigger: {repositories: ["evil/\(name)"]}
            stages:
              s:
                retries: 0
                tag: "{{tag}}-out"
                exec: ['\(shell)', '-c', '\(script.replacingOccurrences(of: "'", with: "''"))']

            """
        for line in extra { text += "    \(line)\n" }
        return text
    }

    /// The attacks against one server's storage, a secret-holding process, a loopback listener and a host file.
    struct Attacks {
        let storage: String
        let secretPID: Int32
        let port: Int
        let hostTmpMarker: String

        var escapeTargets: [String] { [storage + "/evil.txt", "/evil.txt", "/usr/evil.txt", storage + "/../evil.txt"] }

        var pipelines: [String] {
            let writes = escapeTargets.map { "'\($0)'" }.joined(separator: " ")
            return [
                SandboxTests.pipeline("catalog", "cat '\(storage)/catalog.db' > \"$DEPOT_OUTPUT_DIR/stolen.db\""),
                SandboxTests.pipeline(
                    "environ",
                    "grep -a -o \"DEPOT_SANDBOX_CANARY=[a-z0-9-]*\" /proc/\(secretPID)/environ > \"$DEPOT_OUTPUT_DIR/env.txt\""),
                SandboxTests.pipeline(
                    "socket", shell: "/bin/bash", "exec 3<>/dev/tcp/127.0.0.1/\(port) && echo connected > \"$DEPOT_OUTPUT_DIR/net.txt\""),
                SandboxTests.pipeline(
                    "forkloop",
                    "n=0; while [ $n -lt 400 ]; do sleep 30 & n=$((n+1)); done; echo \"forked $n\" > \"$DEPOT_OUTPUT_DIR/forked.txt\""),
                SandboxTests.pipeline(
                    "outside",
                    "w=0; for p in \(writes); do if echo x > \"$p\"; then w=$((w+1)); echo \"WROTE $p\"; fi; done; echo x > '\(hostTmpMarker)'; echo \"$w\" > \"$DEPOT_OUTPUT_DIR/written.txt\"; echo \"escape attempts: $w written\" >&2; [ $w -eq 0 ] && exit 3; exit 0"
                ),
            ]
        }

        var names: [String] { ["catalog", "environ", "socket", "forkloop", "outside"] }

        func cleanUp() {
            for p in escapeTargets + [hostTmpMarker] { try? FileManager.default.removeItem(atPath: p) }
        }
    }

    /// A process whose environment holds a secret (`/proc/<pid>/environ` shows the environment a
    /// process started with, so the secret is there from the start).
    static func secretHolder() throws -> Process {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/bin/sleep")
        p.arguments = ["120"]
        p.environment = ["DEPOT_SANDBOX_CANARY": "s3cret-\(UUID().uuidString.prefix(8).lowercased())"]
        try p.run()
        return p
    }

    /// A TCP listener on 127.0.0.1 (the kernel completes connections without accept): the socket and its port.
    static func listener() throws -> (Int32, Int) {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        addr.sin_port = 0
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        let ok = withUnsafeMutablePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(fd, $0, len) == 0 && listen(fd, 16) == 0 && getsockname(fd, $0, &len) == 0
            }
        }
        #expect(ok, "a loopback listener")
        return (fd, Int(UInt16(bigEndian: addr.sin_port)))
    }

    /// Small limits, so that the attacks meet them quickly.
    static func limited(_ o: inout RunnerOptions, uids: UInt32) {
        o.concurrency = 2
        // Uids of their own: other suites' runners, running meanwhile, use the default ones.
        o.sandbox.firstUID = uids
        o.sandbox.limits.processes = 64
        o.sandbox.limits.workspaceBytes = 32 << 20
        o.sandbox.limits.fileBytes = 16 << 20
    }

    static let bubblewrapInstalled = FileManager.default.isExecutableFile(atPath: "/usr/bin/bwrap")

    /// Runs the attacks (plus `extra` pipelines) on a server with the sandbox in `mode`.
    static func withAttacks(
        mode: SandboxMode, extra: (Attacks) -> [String] = { _ in [] },
        _ body: @Sendable (PipelineHarness, Attacks) async throws -> Void
    ) async throws {
        let holder = try secretHolder()
        defer { holder.terminate() }
        let (sock, port) = try listener()
        defer { close(sock) }
        let dir = TempDir("depot-sandbox")
        let attacks = Attacks(
            storage: dir.path + "/store", secretPID: holder.processIdentifier, port: port,
            hostTmpMarker: NSTemporaryDirectory() + "depot-escape-\(UUID().uuidString.prefix(8))")
        // A run killed mid-test (an unconfined stage of `theAttacksWorkWithoutTheSandbox` writes
        // /evil.txt on purpose) leaves the targets behind: start from none.
        attacks.cleanUp()
        defer { attacks.cleanUp() }
        try await PipelineHarness.run(pipelines: attacks.pipelines + extra(attacks), in: dir) { h, _ in
            try await h.withRunner(configure: {
                limited(&$0, uids: 2_000_001_000)
                $0.sandbox.mode = mode
            }) {
                try await body(h, attacks)
            }
        }
    }

    /// Beyond the attacks: a runaway writer, a large file, a stage with network: true and a benign one.
    static func moreStages(_ a: Attacks) -> [String] {
        [
            Self.pipeline(
                "quota",
                "i=0; while true; do i=$((i+1)); head -c 4194304 /dev/zero > \"$DEPOT_OUTPUT_DIR/f$i\" || exit 1; sleep 0.1; done",
                extra: ["timeout: 2m"]),
            Self.pipeline("filesize", "head -c 67108864 /dev/zero > \"$DEPOT_OUTPUT_DIR/big\""),
            Self.pipeline(
                "netok", shell: "/bin/bash",
                "exec 3<>/dev/tcp/127.0.0.1/\(a.port) && echo connected > \"$DEPOT_OUTPUT_DIR/net.txt\"",
                extra: ["network: true"]),
            Self.pipeline("good", "tr a-z A-Z < \"$DEPOT_INPUT_DIR/a.txt\" > \"$DEPOT_OUTPUT_DIR/A.txt\""),
        ]
    }

    @Test(.enabled(if: bubblewrapInstalled)) func hostileStagesAreStoppedWithAClearReason() async throws {
        try await Self.withAttacks(mode: .bubblewrap, extra: Self.moreStages) { h, attacks in
            for name in attacks.names + ["quota", "filesize", "netok", "good"] {
                _ = try await h.push("evil/\(name)", "v1", files: ["a.txt": "hello"])
            }
            let jobs = try await h.waitJobs(timeout: 90) { $0.count == 9 && $0.allFinal }
            func job(_ p: String) -> JobRecord? { jobs.first { $0.pipeline == p } }
            func log(_ p: String) -> String { job(p).flatMap { try? h.log($0) } ?? "" }
            if ProcessInfo.processInfo.environment["DEPOT_SANDBOX_TEST_VERBOSE"] != nil {
                for j in jobs { print("sandbox test: \(j.pipeline): \(j.state.rawValue): \(j.reason ?? "")") }
            }
            for name in attacks.names + ["quota", "filesize"] {
                #expect(job(name)?.state == .failed, "\(name): \(job(name)?.state.rawValue ?? "none") \(job(name)?.reason ?? "")")
                #expect(try h.tags("evil/\(name)") == ["v1"], "\(name): nothing published")
                #expect(log(name).contains("sandbox: bubblewrap"), "\(name): the log says how the stage was confined")
            }
            // (a) The storage root is not there at all.
            #expect(job("catalog")?.reason?.contains("No such file or directory") == true, "\(job("catalog")?.reason ?? "")")
            // (b) Other processes are not visible (own pid namespace).
            #expect(job("environ")?.reason?.contains("No such file or directory") == true, "\(job("environ")?.reason ?? "")")
            // (c) No network: the stage's loopback is its own.
            let socket = job("socket")?.reason ?? ""
            #expect(socket.contains("Connection refused") || socket.contains("Network is unreachable"), "\(socket)")
            // (d) The process limit stops the fork loop (64 for the stage's own uid).
            #expect(
                log("forkloop").contains("Cannot fork") || log("forkloop").contains("Resource temporarily unavailable"),
                "\(log("forkloop"))")
            // (e) The workspace quota (polled) and the file size limit (RLIMIT_FSIZE).
            #expect(job("quota")?.reason?.contains("exceeded its workspace quota") == true, "\(job("quota")?.reason ?? "")")
            #expect(job("filesize")?.reason?.contains("SIGXFSZ") == true, "\(job("filesize")?.reason ?? "")")
            // (f) Nothing written outside the workspace; the stage's /tmp is its own.
            #expect(job("outside")?.reason?.contains("escape attempts: 0 written") == true, "\(job("outside")?.reason ?? "")")
            for p in attacks.escapeTargets + [attacks.hostTmpMarker] {
                #expect(!FileManager.default.fileExists(atPath: p), "\(p) was not written")
            }
            // A stage that declares network: true reaches the host's loopback; the benign stage works.
            #expect(job("netok")?.state == .succeeded, "\(job("netok")?.reason ?? "")")
            #expect(log("netok").contains("the host's network (network: true)"))
            #expect(job("good")?.state == .succeeded, "\(job("good")?.reason ?? "")")
            #expect(try await h.pull("evil/good", "v1-out") == ["A.txt": "HELLO"])
            // The server is unaffected: its catalog still answers, a push and a pull still work.
            _ = try await h.push("evil/after", "v1", files: ["b.txt": "still here"])
            #expect(try await h.pull("evil/after", "v1") == ["b.txt": "still here"])
        }
    }

    /// The control: unconfined, the same stages read the catalog and the other process's secret,
    /// connect, fork 400 times and write outside their workspace. (No fork bomb here: it would not stop.)
    @Test(.disabled(if: Database.isTestingOnPostgres, "one attack reads catalog.db, which a PostgreSQL catalog does not have"))
    func theAttacksWorkWithoutTheSandbox() async throws {
        try await Self.withAttacks(mode: .off) { h, attacks in
            for name in attacks.names { _ = try await h.push("evil/\(name)", "v1", files: ["a.txt": "hello"]) }
            let jobs = try await h.waitJobs(timeout: 60) { $0.count == attacks.names.count && $0.allFinal }
            for j in jobs { #expect(j.state == .succeeded, "\(j.pipeline): \(j.reason ?? "")") }
            #expect(try h.log(jobs.first { $0.pipeline == "catalog" }!).contains("sandbox OFF"), "the log says the stage ran unconfined")
            #expect(try await h.pull("evil/environ", "v1-out")["env.txt"]?.contains("DEPOT_SANDBOX_CANARY=s3cret-") == true)
            #expect(try await h.pull("evil/forkloop", "v1-out")["forked.txt"] == "forked 400\n")
            #expect(FileManager.default.fileExists(atPath: attacks.hostTmpMarker))
        }
    }

    /// A fork bomb fills its own process limit only: a job running at the same time on the same
    /// runner finishes, and when the bomb's job ends none of its processes is left.
    @Test(.enabled(if: bubblewrapInstalled)) func aForkBombDoesNotStopAConcurrentJob() async throws {
        let bomb = Self.pipeline("bomb", shell: "/bin/bash", ":(){ :|:& };:; sleep 60", extra: ["timeout: 20s"])
        let good = Self.pipeline("good", "cp \"$DEPOT_INPUT_DIR/a.txt\" \"$DEPOT_OUTPUT_DIR/\"")
        let dir = TempDir("depot-sandbox")
        try await PipelineHarness.run(pipelines: [bomb, good], in: dir) { h, client in
            try await h.withRunner(configure: { Self.limited(&$0, uids: 2_000_002_000) }) {
                _ = try await h.push("evil/bomb", "v1", files: ["a.txt": "x"])
                let running = try await h.waitJobs(timeout: 20) { $0.first?.state == .running }
                _ = try await h.push("evil/good", "v1", files: ["a.txt": "fine"])
                let both = try await h.waitJobs(timeout: 20) {
                    $0.count == 2 && $0.stage("s") != nil && $0.contains { $0.pipeline == "good" && $0.isFinal }
                }
                let goodJob = both.first { $0.pipeline == "good" }
                #expect(goodJob?.state == .succeeded, "\(goodJob?.reason ?? "")")
                #expect(both.first { $0.pipeline == "bomb" }?.state == .running, "the bomb was still running meanwhile")
                // The bomb ends with its timeout; its processes go with it.
                let cancelled = try await client.req(.post, "/depot/v1/jobs/\(running[0].id)/cancel")
                #expect(cancelled.status.code == 200)
                _ = try await h.waitJobs(timeout: 20) { $0.first { $0.pipeline == "bomb" }?.logDigest != nil }
                let deadline = Date().addingTimeInterval(10)
                while Self.processes(ofUIDsFrom: 2_000_002_000, count: 4) > 0 && Date() < deadline {
                    try await Task.sleep(for: .milliseconds(100))
                }
                #expect(Self.processes(ofUIDsFrom: 2_000_002_000, count: 4) == 0, "no process of the stages' uids is left")
            }
            #expect(try await h.pull("evil/good", "v1-out") == ["a.txt": "fine"])
        }
    }

    /// A hidden path (the storage root, the config file, key files) stays out of view even inside
    /// a path the stage may read.
    @Test(.enabled(if: bubblewrapInstalled)) func hiddenPathsInsideReadablePathsAreCovered() async throws {
        let dir = TempDir("depot-sandbox")
        // Not under /tmp: the stage's /tmp is its own.
        let shared = (path: repoRoot + "/.build/sandbox-shared-\(UUID().uuidString.prefix(8))", ())
        defer { try? FileManager.default.removeItem(atPath: shared.path) }
        try FileManager.default.createDirectory(atPath: shared.path + "/secret", withIntermediateDirectories: true)
        try "public".write(toFile: shared.path + "/ok.txt", atomically: true, encoding: .utf8)
        try "key".write(toFile: shared.path + "/secret/key", atomically: true, encoding: .utf8)
        try "conf".write(toFile: shared.path + "/depot.yaml", atomically: true, encoding: .utf8)
        chmod(shared.path, 0o755)
        let yaml = Self.pipeline(
            "hidden",
            "cp '\(shared.path)/ok.txt' \"$DEPOT_OUTPUT_DIR/\"; cat '\(shared.path)/secret/key' '\(shared.path)/depot.yaml' > \"$DEPOT_OUTPUT_DIR/stolen.txt\"; true"
        )
        try await PipelineHarness.run(pipelines: [yaml], in: dir) { h, _ in
            _ = try await h.push("evil/hidden", "v1", files: ["a.txt": "x"])
            let jobs = try await h.withRunner(configure: {
                $0.sandbox.readOnlyPaths = [shared.path]
                $0.sandbox.hiddenPaths = [shared.path + "/secret", shared.path + "/depot.yaml"]
            }) {
                try await h.waitJobs(timeout: 20) { $0.allFinal }
            }
            #expect(jobs.first?.state == .succeeded, "\(jobs.first?.reason ?? "")")
            let out = try await h.pull("evil/hidden", "v1-out")
            #expect(out["ok.txt"] == "public", "the readable path is there")
            #expect(out["stolen.txt"] == "", "the hidden directory is empty and the hidden file reads as /dev/null")
        }
    }

    /// Processes whose real uid is in [first, first+count).
    static func processes(ofUIDsFrom first: UInt32, count: UInt32) -> Int {
        guard geteuid() == 0 else { return 0 }
        var n = 0
        for entry in (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? [] where Int(entry) != nil {
            guard let status = try? String(contentsOfFile: "/proc/\(entry)/status", encoding: .utf8),
                let line = status.split(separator: "\n").first(where: { $0.hasPrefix("Uid:") }),
                let uid = line.split(whereSeparator: { $0 == " " || $0 == "\t" }).dropFirst().first.flatMap({ UInt32($0) })
            else { continue }
            if uid >= first && uid < first + count { n += 1 }
        }
        return n
    }

    /// Where bubblewrap is missing or does not work, stages do not run unless the operator set `off`.
    @Test func withoutAWorkingSandboxNoStageRuns() async throws {
        let yaml = Self.pipeline("plain", "cp \"$DEPOT_INPUT_DIR/a.txt\" \"$DEPOT_OUTPUT_DIR/\"")
        for bwrap in ["/nonexistent/bwrap", "/bin/false"] {
            try await PipelineHarness.run(pipelines: [yaml]) { h, _ in
                _ = try await h.push("evil/plain", "v1", files: ["a.txt": "x"])
                let jobs = try await h.withRunner(configure: { $0.sandbox.bwrap = bwrap }) {
                    try await h.waitJobs(timeout: 20) { $0.allFinal }
                }
                let reason = jobs.first?.reason ?? ""
                #expect(jobs.first?.state == .failed, "\(bwrap): \(reason)")
                #expect(jobs.first?.attempt == 1, "\(bwrap): not retried")
                #expect(reason.contains("stages do not run without a sandbox"), "\(bwrap): \(reason)")
                #expect(reason.contains("install bubblewrap") || reason.contains("Install bubblewrap"), "\(reason)")
                #expect(reason.contains("pipelines.sandbox: off"), "\(reason)")
                #expect(reason.contains(bwrap == "/bin/false" ? "does not work here" : "was not found"), "\(reason)")
                #expect(try h.tags("evil/plain") == ["v1"])
            }
        }
    }
}
