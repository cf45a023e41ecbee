import DepotAPI
import DepotCatalog
import DepotClient
import DepotCore
import DepotPipelines
import DepotRegistry
import DepotTestSupport
import Foundation
import Testing

@testable import DepotServer

/// Push-triggered pipelines end to end on a live server with a real runner: the DAG, outputs
/// with subject and lineage, memoization, replays, retries, timeouts, cancellation, labels and
/// webhook stages. (The real-model path — skl2onnx, onnxruntime, Triton — is
/// scripts/e2e/pipeline.sh.)
@Suite("Pipelines and jobs")
struct PipelineTests {
    static let twoStages = """
        name: upper
        trigger: {repositories: ["models/*"], tags: ["v*"]}
        stages:
          upper:
            exec: 'tr a-z A-Z < "$DEPOT_INPUT_DIR/hello.txt" > "$DEPOT_OUTPUT_DIR/HELLO.txt"; echo "param=$DEPOT_PARAM_GREETING"'
            with: {greeting: "hi {{name}}"}
            tag: "{{tag}}-upper"
          count:
            needs: [upper]
            exec: ["/bin/sh", "-c", "wc -c < $DEPOT_INPUT_DIR/HELLO.txt | tr -d ' ' > $DEPOT_OUTPUT_DIR/count.txt"]
            tag: "{{tag}}-count"
            relation: derived-from
        """

    @Test func aPushRunsTheDAGAndOutputsCarrySubjectLineageAndJobIDs() async throws {
        try await PipelineHarness.run(pipelines: [Self.twoStages]) { h, client in
            let input = try await h.push("models/demo", "v1", files: ["hello.txt": "hello world\n"])
            let done = try await h.withRunner {
                try await h.waitJobs { $0.count == 2 && $0.allFinal }
            }
            let upper = try #require(done.stage("upper"))
            let count = try #require(done.stage("count"))
            #expect(upper.state == .succeeded && count.state == .succeeded, "\(done.map { ($0.stage, $0.state, $0.reason ?? "") })")
            #expect(upper.inputDigest == input.description)
            #expect(count.inputDigest == upper.outputDigest, "the second stage works on the first one's output")
            #expect(try h.log(upper).contains("param=hi demo"), "with: parameters reach the command, rendered")
            #expect(try await h.pull("models/demo", "v1-upper") == ["HELLO.txt": "HELLO WORLD\n"])
            #expect(try await h.pull("models/demo", "v1-count") == ["count.txt": "12\n"])

            // Subject (OCI referrers) and typed lineage with the job id.
            let outDigest = try #require(upper.outputDigest)
            let referrers = try await client.req(.get, "/v2/models/demo/referrers/\(input)")
            let listed = (referrers.json["manifests"] as? [[String: Any]] ?? []).compactMap { $0["digest"] as? String }
            #expect(listed.contains(outDigest))
            let ancestors = try h.registry.lineage(of: try Digest(parsing: try #require(count.outputDigest)), up: true)
            let typed = ancestors.filter { $0.edge.relation != "subject" }
            #expect(typed.map(\.digest.description) == [outDigest, input.description])
            #expect(typed.map(\.edge.job) == [String(count.id), String(upper.id)])

            // Replaying every event, or a second tag on the same digest, starts nothing new.
            try h.registry.store.catalog.write { try $0.setWebhookCursor("pipelines", 0) }
            try await client.req(
                .put, "/v2/models/demo/manifests/v1-again", headers: [.contentType: MediaType.ociManifest],
                body: try h.registry.manifest(try RepositoryName("models/demo"), .digest(input)).content)
            // Wait until the scheduler has read every event again, then count.
            let last = try h.registry.store.catalog.read { try $0.lastEventID() }
            for _ in 0..<400 where try h.registry.store.catalog.read({ try $0.webhookCursor("pipelines") }) ?? 0 < last {
                try await Task.sleep(for: .milliseconds(25))
            }
            #expect(try h.registry.store.catalog.read { try $0.webhookCursor("pipelines") } == last, "the scheduler caught up")
            #expect(try h.jobs.jobs(state: nil, pipeline: nil, limit: 100).count == 2)
            // Outputs tagged v1-upper match the trigger's v* but never start pipelines themselves.
            #expect(Set(try h.tags("models/demo")) == ["v1", "v1-again", "v1-upper", "v1-count"])
        }
    }

    /// The exactly-once mechanism: a runner that pushed its output and died before reporting
    /// leaves a job whose next attempt finds the output by its key and completes at once.
    @Test func anOutputPushedBeforeACrashIsFoundByItsKey() async throws {
        let yaml = """
            name: once
            trigger: {tags: ["v*"]}
            stages:
              copy: {exec: "cp -r $DEPOT_INPUT_DIR/. $DEPOT_OUTPUT_DIR/", tag: "{{tag}}-copy"}
            """
        try await PipelineHarness.run(pipelines: [yaml], leaseSeconds: 1) { h, client in
            let input = try await h.push("team/m", "v1", files: ["a.txt": "a"])
            let queued = try await h.waitJobs(timeout: 60) { $0.count == 1 }
            let first = try #require(try h.jobs.lease(runner: "doomed", labels: []))
            #expect(first.id == queued[0].id && first.attempt == 1)
            let key = Digest.of(Array("some key".utf8)).description
            #expect(try h.jobs.start(first.id, token: first.leaseToken!, key: key) == .run)
            // The doomed runner pushes its output (carrying the key), then dies without completing.
            _ = try await h.push("team/m", "scratch", files: ["a.txt": "a"])
            let manifest = try h.registry.manifest(try RepositoryName("team/m"), .tag("scratch"))
            var json = try #require(try JSONSerialization.jsonObject(with: Data(manifest.content)) as? [String: Any])
            var annotations = json["annotations"] as? [String: String] ?? [:]
            annotations[JobAnnotations.key] = key
            json["annotations"] = annotations
            let bytes = Array(try JSONSerialization.data(withJSONObject: json, options: [.sortedKeys]))
            let (keyed, _) = try h.registry.putManifest(
                try RepositoryName("team/m"), .tag("v1-copy"), contentType: MediaType.ociManifest, bytes: bytes)
            // Its lease expires; the job goes back to the queue and the next attempt is memoized.
            let requeued = try await h.waitJobs(timeout: 60) { $0.count == 1 && $0[0].state == .queued }
            #expect(requeued[0].reason?.contains("lease expired") == true)
            var leased: JobRecord?
            for _ in 0..<100 where leased == nil { // after the retry backoff
                leased = try h.jobs.lease(runner: "next", labels: [])
                if leased == nil { try await Task.sleep(for: .milliseconds(20)) }
            }
            let second = try #require(leased)
            #expect(second.attempt == 2)
            #expect(try h.jobs.start(second.id, token: second.leaseToken!, key: key) == .memoized(keyed))
            let final = try h.jobs.job(second.id)
            #expect(final.state == .succeeded && final.memoized && final.outputDigest == keyed.description)
            // The lost runner's late report is refused: its lease is gone.
            #expect(throws: RegistryError.self) { try h.jobs.complete(first.id, token: first.leaseToken!, output: keyed) }
            _ = input
            _ = client
        }
    }

    @Test func failuresFollowTheRetryPolicyAndPublishNothing() async throws {
        func pipeline(_ name: String, _ stage: String) -> String {
            "name: \(name)\ntrigger: {repositories: [\"bad/*\"]}\nstages:\n  s:\n    retries: 1\n    tag: \"{{tag}}-\(name)\"\n\(stage)\n"
        }
        let pipelines = [
            pipeline("missing", "    exec: [\"/nonexistent/convert\", \"x\"]"),
            pipeline("exits", "    exec: 'echo boom from the stage >&2; exit 3'"),
            pipeline("hangs", "    exec: 'sleep 30'\n    timeout: 1s"),
            pipeline("nooutput", "    exec: 'echo nothing written'"),
            pipeline("badmodel", "    exec: 'echo not onnx > $DEPOT_OUTPUT_DIR/model.onnx'"),
            pipeline("permanent", "    exec: 'echo cannot convert this model >&2; exit 78'"),
            pipeline(
                "badresult", "    exec: 'echo x > $DEPOT_OUTPUT_DIR/x.txt; echo \"{\\\"relation\\\": \\\"nonsense\\\"}\" > $DEPOT_RESULT'"),
        ]
        try await PipelineHarness.run(pipelines: pipelines) { h, _ in
            _ = try await h.push("bad/m", "v1", files: ["a.txt": "a"])
            let done = try await h.withRunner {
                try await h.waitJobs(timeout: 120) { $0.count == 7 && $0.allFinal }
            }
            func job(_ p: String) -> JobRecord? { done.first { $0.pipeline == p } }
            for j in done { #expect(j.state == .failed, "\(j.pipeline): \(j.state) \(j.reason ?? "")") }
            #expect(job("missing")?.reason?.contains("cannot start '/nonexistent/convert'") == true)
            #expect(job("missing")?.attempt == 2, "retried once")
            #expect(job("exits")?.reason?.contains("status 3: boom from the stage") == true, "the reason quotes the last line it wrote")
            #expect(try h.log(job("exits")!).contains("boom from the stage"), "the log keeps stderr")
            #expect(job("hangs")?.reason?.contains("timed out after 1 s") == true)
            #expect(job("hangs")?.attempt == 2)
            #expect(job("nooutput")?.reason?.contains("wrote no output") == true, "\(job("nooutput")?.reason ?? "")")
            #expect(job("badmodel")?.reason?.contains("invalid model: model.onnx") == true)
            #expect(job("permanent")?.attempt == 1, "status 78 is not retried")
            #expect(job("permanent")?.reason?.contains("status 78 (the input can never work with it): cannot convert this model") == true)
            #expect(job("badresult")?.reason?.contains("DEPOT_RESULT.relation") == true)
            #expect(try h.tags("bad/m") == ["v1"], "no output of a failed job is visible")
            let audit = try h.registry.auditLog(AuditFilter(action: "job.failed"))
            #expect(audit.count == 7)
            // Past the retention, logs go to GC: the rows forget them, the blobs lose their root.
            let log = try #require(job("exits")?.logDigest.flatMap { try? Digest(parsing: $0) })
            #expect(try h.registry.store.catalog.read { try $0.isRoot(log) })
            #expect(try h.jobs.expireLogs(now: Int64(Date().timeIntervalSince1970 * 1000) + 31 * 86_400_000) == 7)
            #expect(try h.jobs.job(job("exits")!.id).logDigest == nil)
            #expect(try !h.registry.store.catalog.read { try $0.isRoot(log) })
        }
    }

    @Test func cancelStopsTheProcessGroupAndRetryRunsAgain() async throws {
        let yaml = """
            name: slow
            trigger: {tags: ["v*"]}
            stages:
              wait:
                exec: 'if [ -f "$GATE" ]; then cp $DEPOT_INPUT_DIR/a.txt $DEPOT_OUTPUT_DIR/; exit 0; fi; (sleep 60; echo late) & echo $! > "$GATE.child"; sleep 60'
                tag: "{{tag}}-done"
            """
        let gate = NSTemporaryDirectory() + "gate-\(UUID().uuidString.prefix(6))"
        setenv("GATE", gate, 1)
        try await PipelineHarness.run(pipelines: [yaml]) { h, client in
            _ = try await h.push("team/slow", "v1", files: ["a.txt": "a"])
            // Unconfined: the stage writes host paths (the gate) and the test kills a host pid; the
            // sandboxed kill is in SandboxTests.
            try await h.withRunner(configure: { $0.sandbox.mode = .off }) {
                let running = try await h.waitJobs(timeout: 60) {
                    $0.first?.state == .running && FileManager.default.fileExists(atPath: gate + ".child")
                }
                let child = Int32(
                    (try String(contentsOfFile: gate + ".child", encoding: .utf8)).trimmingCharacters(in: .whitespacesAndNewlines))!
                let cancelled = try await client.req(.post, "/depot/v1/jobs/\(running[0].id)/cancel")
                #expect(cancelled.status.code == 200)
                #expect(cancelled.json["state"] as? String == "cancelled")
                // The runner notices at its next heartbeat and kills the whole process group.
                let deadline = Date().addingTimeInterval(10)
                while kill(child, 0) == 0 && Date() < deadline { try await Task.sleep(for: .milliseconds(50)) }
                #expect(kill(child, 0) != 0, "the stage's background child was killed too")
                let stopped = try await h.waitJobs(timeout: 60) { $0.first?.logDigest != nil }
                #expect(try h.log(stopped[0]).contains("stopped: cancelled"), "the log of a cancelled job is kept")
                let again = try await client.req(.post, "/depot/v1/jobs/\(running[0].id)/cancel")
                #expect(again.status.code == 409)
                FileManager.default.createFile(atPath: gate, contents: nil)
                let retried = try await client.req(.post, "/depot/v1/jobs/\(running[0].id)/retry")
                #expect(retried.json["state"] as? String == "queued")
                let done = try await h.waitJobs(timeout: 15) { $0.first?.state == .succeeded }
                #expect(done[0].attempt == 1, "attempts were reset")
            }
            #expect(try h.tags("team/slow").contains("v1-done"))
        }
        try? FileManager.default.removeItem(atPath: gate)
        try? FileManager.default.removeItem(atPath: gate + ".child")
    }

    @Test func aStageRunsOnlyOnARunnerWithItsLabels() async throws {
        let yaml = """
            name: gpu
            trigger: {tags: ["v*"]}
            stages:
              build: {exec: "echo plan > $DEPOT_OUTPUT_DIR/out.txt", labels: [gpu, tensorrt], tag: "{{tag}}-plan"}
            """
        try await PipelineHarness.run(pipelines: [yaml]) { h, _ in
            _ = try await h.push("team/g", "v1", files: ["a.txt": "a"])
            try await h.waitJobs(timeout: 60) { $0.count == 1 }
            try await h.withRunner(labels: ["cpu", "gpu"], name: "cpu-only") {
                try await Task.sleep(for: .milliseconds(800))
                #expect(
                    try h.jobs.jobs(state: nil, pipeline: nil, limit: 10).first?.state == .queued, "a runner without tensorrt leaves it")
            }
            let done = try await h.withRunner(labels: ["gpu", "tensorrt"], name: "gpu-node") {
                try await h.waitJobs(timeout: 60) { $0.first?.state == .succeeded }
            }
            #expect(done[0].runner == "gpu-node")
        }
    }

    @Test func webhookStagesWaitForASignedCallback() async throws {
        let dir = TempDir("depot-hookstage")
        let (receiver, port) = try await startWebhookReceiver(dir.path, secret: "stage-secret", failFirst: 0)
        defer {
            kill(receiver.processIdentifier, SIGKILL)
            receiver.waitUntilExit()
        }
        let hookURL = "http://127.0.0.1:\(port)/stage"
        let yaml = """
            name: external
            trigger: {tags: ["v*"]}
            stages:
              review: {webhook: {url: "\(hookURL)", secret: "stage-secret"}, timeout: 60s, retries: 0}
              after: {needs: [review], exec: "cp $DEPOT_INPUT_DIR/a.txt $DEPOT_OUTPUT_DIR/", tag: "{{tag}}-reviewed"}
            """
        // The same endpoint with a short timeout, for a webhook that never calls back.
        let silent = """
            name: silent
            trigger: {tags: ["s*"]}
            stages:
              review: {webhook: {url: "\(hookURL)", secret: "stage-secret"}, timeout: 2s, retries: 0}
            """
        try await PipelineHarness.run(
            pipelines: [yaml, silent],
            webhooks: ["external/review": (hookURL, "stage-secret"), "silent/review": (hookURL, "stage-secret")]
        ) { h, client in
            let input = try await h.push("team/w", "v1", files: ["a.txt": "a"])
            let running = try await h.waitJobs(timeout: 60) { $0.first?.state == .running }
            // The receiver got a signed POST describing the job.
            var received: [String: Any] = [:]
            for _ in 0..<200 {
                let text = (try? String(contentsOfFile: dir.path + "/received", encoding: .utf8)) ?? ""
                if let line = text.split(separator: "\n").first,
                    let o = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any]
                {
                    received = o
                    break
                }
                try await Task.sleep(for: .milliseconds(25))
            }
            #expect(received["valid"] as? Bool == true, "signed with the stage's secret")
            #expect((received["body"] as? [String: Any])?["job"] as? Int == Int(running[0].id))
            let stale = Array(#"{"job": \#(running[0].id), "attempt": 7, "status": "succeeded"}"#.utf8)
            let body = Array(#"{"job": \#(running[0].id), "attempt": 1, "status": "succeeded"}"#.utf8)
            let path = "/depot/v1/jobs/\(running[0].id)/callback"
            let replayed = try await client.req(
                .post, path,
                headers: [
                    .depotSignature: WebhookConfig.signature(
                        secret: "stage-secret", timestamp: Int64(Date().timeIntervalSince1970), body: stale)
                ], body: stale)
            #expect(replayed.status.code == 409, "a callback for another attempt is refused")
            let ancient = try await client.req(.post, path, headers: [.depotSignature: "t=-9223372036854775808,v1=00"], body: body)
            #expect(ancient.status.code == 401, "a forged timestamp is refused, not trapped on")
            let unsigned = try await client.req(.post, path, body: body)
            #expect(unsigned.status.code == 401)
            let forged = try await client.req(
                .post, path,
                headers: [
                    .depotSignature: WebhookConfig.signature(secret: "wrong", timestamp: Int64(Date().timeIntervalSince1970), body: body)
                ], body: body)
            #expect(forged.status.code == 401)
            let signed = try await client.req(
                .post, path,
                headers: [
                    .depotSignature: WebhookConfig.signature(
                        secret: "stage-secret", timestamp: Int64(Date().timeIntervalSince1970), body: body)
                ], body: body)
            #expect(signed.status.code == 200, "\(signed.json)")
            let done = try await h.withRunner {
                try await h.waitJobs(timeout: 60) { $0.count == 2 && $0.allFinal }
            }
            #expect(done.stage("review")?.state == .succeeded)
            #expect(done.stage("after")?.state == .succeeded)
            #expect(done.stage("after")?.inputDigest == input.description, "without an output the next stage takes the input")

            // A webhook that never calls back fails when the stage's timeout passes.
            _ = try await h.push("team/w", "s1", files: ["a.txt": "b"])
            let timedOut = try await h.waitJobs(timeout: 15) { jobs in jobs.contains { $0.inputTag == "s1" && $0.state == .failed } }
            let failed = try #require(timedOut.first { $0.inputTag == "s1" })
            #expect(failed.reason?.contains("did not call back") == true)
        }
    }

    @Test func pipelineFilesAreValidatedWithFileAndLine() throws {
        func error(_ yaml: String) -> String {
            do {
                _ = try PipelineLoader.parse(yaml, file: "x.yaml")
                return "accepted"
            } catch { return "\(error)" }
        }
        #expect(try PipelineLoader.parse(Self.twoStages, file: "ok.yaml").stages.map(\.name) == ["upper", "count"])
        #expect(
            error("name: a\ntrigger: {}\nstages:\n  s: {exec: x, timeout: 10x}\n")
                == "x.yaml:4: stages.s.timeout: '10x' is not a duration between 1s and 7d (e.g. 90s, 10m, 2h)")
        #expect(
            error("name: a\ntrigger: {}\nstages:\n  s:\n    exec: x\n    colour: red\n")
                == "x.yaml:6: stages.s: unknown key 'colour' (known: builtin, canary, exec, input, labels, needs, network, relation, retries, tag, timeout, toolchain, webhook, with)"
        )
        #expect(
            error("name: a\ntrigger: {}\nstages:\n  s: {builtin: compile}\n").hasPrefix(
                "x.yaml:4: stages.s.builtin: unknown built-in 'compile'"))
        #expect(
            error("name: a\ntrigger: {}\nstages:\n  s: {needs: [t]}\n").hasPrefix(
                "x.yaml:4: stages.s: exactly one of exec, builtin, webhook or canary"))
        #expect(error("name: a\ntrigger: {}\nstages:\n  s: {exec: x, needs: [t]}\n") == "x.yaml:4: stages.s.needs: no stage named 't'")
        #expect(error("name: a\ntrigger: {}\nstages:\n  s: {exec: x, needs: [t]}\n  t: {exec: y, needs: [s]}\n").contains("form a cycle"))
        #expect(
            error("name: a\ntrigger: {}\nstages:\n  s: {exec: x, tag: \"{{version}}\"}\n").hasPrefix(
                "x.yaml:4: stages.s.tag: unknown variable {{version}}"))
        #expect(error("name: a\ntrigger: {}\nstages:\n  s: {exec: x, tag: \"{{repository}}-x\"}\n").contains("does not make a valid tag"))
        #expect(
            error("name: a\ntrigger: {}\nstages:\n  s: {exec: x}\n  t: {exec: y}\n  u: {exec: z, needs: [s, t]}\n").contains(
                "say whose output is its input"))
        #expect(error("name: a\ntrigger: {}\nstages:\n  s: {webhook: {url: \"ftp://x\", secret: k}}\n").contains("is not an http(s) URL"))
        #expect(error("name: a\nstages:\n  s: {exec: x}\n").hasPrefix("x.yaml:1: missing 'trigger'"))
        #expect(
            error("name: a\ntrigger: {}\nstages:\n  s: {canary: {environment: prod, steps: [50, 10]}}\n").contains("stages.s.canary.steps"))
        #expect(error("name: a\ntrigger: {}\nstages:\n  s: {canary: {steps: [100]}}\n").contains("missing 'environment'"))
        #expect(error("name: a\ntrigger: {}\nstages: [\n").hasPrefix("x.yaml:4: not valid YAML"))
        #expect(error("name: a b\ntrigger: {}\nstages:\n  s: {exec: x}\n").hasPrefix("x.yaml:1: name: 'a b' must be"))
        // A directory with two pipelines of one name is refused, naming both files.
        let dir = TempDir("pipes")
        try "name: a\ntrigger: {}\nstages:\n  s: {exec: x}\n".write(toFile: dir.path + "/1.yaml", atomically: true, encoding: .utf8)
        try "name: a\ntrigger: {}\nstages:\n  s: {exec: y}\n".write(toFile: dir.path + "/2.yml", atomically: true, encoding: .utf8)
        #expect(throws: PipelineFileError.self) { try PipelineLoader.load(directory: dir.path) }
    }
}
