import DepotTestSupport
import Foundation
import Testing

/// SIGKILL of a remote runner, then of the server, in the middle of a job: the job is leased
/// again (or carries on), and its output appears exactly once.
@Suite(.serialized) struct PipelineCrashTests {
    final class RunnerProcess {
        let process = Process()
        init(url: String, name: String, workDir: String, marks: String, log: String) throws {
            process.executableURL = URL(fileURLWithPath: repoRoot + "/.build/debug/depot")
            process.arguments = [
                "runner", "--registry", url, "--labels", "cpu", "--name", name, "--work-dir", workDir,
                "--heartbeat-seconds", "0.5", "--pass-env", "MARKS",
                // The stage talks to the test through files on the host (MARKS): unconfined.
                "--sandbox", "off",
            ]
            var env = ProcessInfo.processInfo.environment
            env["MARKS"] = marks
            process.environment = env
            FileManager.default.createFile(atPath: log, contents: nil)
            let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: log))
            process.standardOutput = handle
            process.standardError = handle
            try process.run()
        }
        func kill9() {
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
        }
    }

    static func jobs(_ url: String) async throws -> [[String: Any]] {
        let r = try await run("/usr/bin/curl", ["-sf", "\(url)/depot/v1/jobs"], timeout: 10)
        return (try? JSONSerialization.jsonObject(with: Data(r.output.utf8)) as? [String: Any])?["jobs"] as? [[String: Any]] ?? []
    }

    static func waitFor(_ what: String, timeout: Double = 30, _ check: () async throws -> Bool) async throws {
        let deadline = Date().addingTimeInterval(timeout)
        while try await !check() {
            guard Date() < deadline else {
                Issue.record("timed out waiting for \(what)")
                return
            }
            try await Task.sleep(for: .milliseconds(100))
        }
    }

    @Test func killingTheRunnerOrTheServerMidJobStillYieldsExactlyOneOutput() async throws {
        let dir = TempDir("pipe-crash")
        let storage = dir.path + "/store"
        let marks = dir.path + "/marks"
        try FileManager.default.createDirectory(atPath: dir.path + "/pipelines", withIntermediateDirectories: true)
        try FileManager.default.createDirectory(atPath: marks, withIntermediateDirectories: true)
        try """
        name: slowcopy
        trigger: {tags: ["v*"]}
        stages:
          copy:
            exec: 'echo "$DEPOT_ATTEMPT" >> "$MARKS/$DEPOT_INPUT_TAG"; i=0; while [ ! -e "$MARKS/go-$DEPOT_INPUT_TAG" ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i+1)); done; cp -r "$DEPOT_INPUT_DIR/." "$DEPOT_OUTPUT_DIR/"'
            tag: "{{tag}}-copy"
            retries: 3
        """.write(toFile: dir.path + "/pipelines/slow.yaml", atomically: true, encoding: .utf8)
        try """
        pipelines:
          directory: \(dir.path)/pipelines
          lease_seconds: 6
          retry_base_seconds: 0.1
          runner: {enabled: false}
        """.write(toFile: dir.path + "/depot.yaml", atomically: true, encoding: .utf8)
        try "weights".write(toFile: dir.path + "/model.bin", atomically: true, encoding: .utf8)
        let depot = repoRoot + "/.build/debug/depot"
        var server = try ServerProcess(storage: storage, config: dir.path + "/depot.yaml", log: dir.path + "/server.log")
        let port = server.port
        let url = server.url
        try await server.waitReady()
        try await Task.sleep(for: .milliseconds(400)) // the scheduler registers its cursor

        // 1. The runner dies mid-job: after its lease expires another runner runs attempt 2.
        var runner = try RunnerProcess(url: url, name: "r1", workDir: dir.path + "/r1", marks: marks, log: dir.path + "/r1.log")
        let push = try await run(depot, ["push", "team/c:v1", dir.path + "/model.bin", "--registry", url, "--quiet"])
        #expect(push.status == 0, "\(push.output)")
        try await Self.waitFor("attempt 1 to start") { FileManager.default.fileExists(atPath: marks + "/v1") }
        runner.kill9()
        // The stage waits for this file, so attempt 1 cannot finish before its runner is gone,
        // however late this test gets to run (the machine may be busy with other suites).
        FileManager.default.createFile(atPath: marks + "/go-v1", contents: nil)
        runner = try RunnerProcess(url: url, name: "r2", workDir: dir.path + "/r2", marks: marks, log: dir.path + "/r2.log")
        try await Self.waitFor("v1's job to succeed") { try await Self.jobs(url).first?["state"] as? String == "succeeded" }
        let v1Marks = try String(contentsOfFile: marks + "/v1", encoding: .utf8)
        #expect(v1Marks == "1\n2\n", "leased again after the runner died: attempts \(v1Marks.split(separator: "\n"))")

        // 2. The server dies mid-job and comes back: the job finishes once.
        let push2 = try await run(depot, ["push", "team/c:v2", dir.path + "/model.bin", "--registry", url, "--quiet"])
        #expect(push2.status == 0, "\(push2.output)")
        try await Self.waitFor("v2's job to start") { FileManager.default.fileExists(atPath: marks + "/v2") }
        server.kill9()
        try await Task.sleep(for: .milliseconds(500))
        server = try ServerProcess(storage: storage, port: port, config: dir.path + "/depot.yaml", log: dir.path + "/server.log")
        try await server.waitReady()
        FileManager.default.createFile(atPath: marks + "/go-v2", contents: nil)
        try await Self.waitFor("v2's job to succeed") {
            try await Self.jobs(url).first { ($0["input"] as? [String: Any])?["tag"] as? String == "v2" }?["state"] as? String
                == "succeeded"
        }

        let jobs = try await Self.jobs(url)
        #expect(jobs.count == 2, "\(jobs)")
        for job in jobs {
            let input = try #require(job["input"] as? [String: Any])
            let digest = try #require(input["digest"] as? String)
            let referrers = try await run("/usr/bin/curl", ["-sf", "\(url)/v2/team/c/referrers/\(digest)"], timeout: 10)
            let manifests =
                (try? JSONSerialization.jsonObject(with: Data(referrers.output.utf8)) as? [String: Any])?["manifests"] as? [[String: Any]]
                ?? []
            #expect(manifests.count == 1, "exactly one output for \(input["tag"] ?? "?"): \(manifests)")
            #expect(manifests.first?["digest"] as? String == (job["output"] as? [String: Any])?["digest"] as? String)
        }
        let tags = try await run(depot, ["ls", "team/c", "-q", "--registry", url])
        #expect(Set(tags.output.split(separator: "\n").map(String.init)) == ["v1", "v1-copy", "v2", "v2-copy"], "\(tags.output)")
        runner.kill9()
        server.stop()
        let fsck = try await run(depot, ["fsck", "--storage", storage])
        #expect(fsck.status == 0, "\(fsck.output)")
    }

    @Test func anInvalidPipelineFileStopsStartUpWithItsFileAndLine() async throws {
        let dir = TempDir("pipe-bad")
        try FileManager.default.createDirectory(atPath: dir.path + "/pipelines", withIntermediateDirectories: true)
        try "name: x\ntrigger: {}\nstages:\n  a: {exec: y, timeout: 5q}\n".write(
            toFile: dir.path + "/pipelines/b.yaml", atomically: true, encoding: .utf8)
        try "pipelines: {directory: \(dir.path)/pipelines}\n".write(toFile: dir.path + "/depot.yaml", atomically: true, encoding: .utf8)
        let r = try await run(
            repoRoot + "/.build/debug/depot",
            [
                "serve", "--config", dir.path + "/depot.yaml", "--storage", dir.path + "/s",
                "--listen", "127.0.0.1:\(freePort())",
            ], timeout: 20)
        #expect(r.status == 1)
        #expect(r.output.contains("pipeline file \(dir.path)/pipelines/b.yaml:4: stages.a.timeout: '5q' is not a duration"), "\(r.output)")
    }
}
