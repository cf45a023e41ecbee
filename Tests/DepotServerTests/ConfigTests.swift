import DepotCore
import DepotFormats
import DepotRunner
import DepotServer
import DepotTestSupport
import Foundation
import Testing

@Suite struct ConfigTests {
    func load(_ yaml: String) throws -> ServerConfig {
        let dir = TempDir("cfg")
        let path = dir.path + "/depot.yaml"
        try yaml.write(toFile: path, atomically: true, encoding: .utf8)
        return try ServerConfig.load(path)
    }

    @Test func theShippedConfigLoadsAndEqualsTheDefaults() throws {
        let shipped = try ServerConfig.load(repoRoot + "/config/depot.yaml")
        // Except the deploy policy: the shipped file lets only pipeline-signed bundles reach
        // production; a config that says nothing has no policy (an environment needs a rule).
        var expected = ServerConfig()
        expected.deployPolicy.environments["production"] = .init(signedBy: ["pipeline"], pythonBackendSignedBy: ["pipeline"])
        #expect(shipped == expected)
    }

    @Test func tracingKeysAreParsedAndCheckedWithTheirNames() throws {
        let c = try load(
            "tracing:\n  enabled: true\n  endpoint: https://collector.example:4318/v1/traces\n"
                + "  sample_ratio: 0.25\n  service_name: depot-eu\n  timeout_seconds: 3\n")
        #expect(c.tracing.enabled)
        #expect(c.tracing.endpoint == "https://collector.example:4318/v1/traces")
        #expect(c.tracing.sampleRatio == 0.25)
        #expect(c.tracing.serviceName == "depot-eu")
        #expect(c.tracing.timeoutSeconds == 3)
        #expect(try load("server: {}\n").tracing == TracingConfig())
        #expect(try ServerConfig.load(nil, environment: ["DEPOT_TRACING_ENABLED": "true"]).tracing.enabled)
        for (bad, key) in [
            ("tracing:\n  endpoint: collector:4318\n", "tracing.endpoint"),
            ("tracing:\n  endpoint: ftp://collector/v1/traces\n", "tracing.endpoint"),
            ("tracing:\n  protocol: http/json\n", "tracing.protocol"),
            ("tracing:\n  sample_ratio: 1.5\n", "tracing.sample_ratio"),
            ("tracing:\n  service_name: ''\n", "tracing.service_name"),
            ("tracing:\n  timeout_seconds: 0\n", "tracing.timeout_seconds"),
            ("tracing:\n  enabled: yes please\n", "tracing.enabled"),
            ("tracing:\n  exporter: otlp\n", "tracing.exporter"),
        ] {
            do {
                _ = try load(bad)
                Issue.record("accepted: \(bad)")
            } catch { #expect("\(error)".contains(key), "\(error)") }
        }
    }

    @Test func signingAndDeployPolicyKeysAreCheckedWithTheirNames() throws {
        let c = try load(
            "signing:\n  trusted_keys: {release: /k/release.pub}\ndeploy_policy:\n  production: {signed_by: [pipeline, release]}\n")
        #expect(c.signing.trustedKeys == ["release": "/k/release.pub"])
        #expect(c.deployPolicy.environments["production"]?.signedBy == ["pipeline", "release"])
        for (bad, key) in [
            ("signing:\n  trusted_keys: {pipeline: /k.pub}\n", "signing.trusted_keys.pipeline"),
            ("signing:\n  trusted_keys: {Release: /k.pub}\n", "signing.trusted_keys.Release"),
            ("signing:\n  keyfile: x\n", "signing.keyfile"),
            ("deploy_policy:\n  production: {signed: [pipeline]}\n", "deploy_policy.production.signed"),
            ("deploy_policy:\n  production: {signed_by: pipeline}\n", "deploy_policy.production.signed_by"),
            ("deploy_policy: [production]\n", "deploy_policy"),
        ] {
            #expect(throws: DepotError.self, "\(bad)") { try load(bad) }
            do { _ = try load(bad) } catch { #expect("\(error)".contains(key), "\(error)") }
        }
    }

    @Test func settingsOverrideDefaults() throws {
        let c = try load(
            "server:\n  listen: 0.0.0.0:6000\nstorage:\n  root: /data\n  compression: off\n  flush_mib: 8\n  read_threads: 12\n"
                + "uploads:\n  timeout_seconds: 60\n"
        )
        #expect(c.listenHost == "0.0.0.0")
        #expect(c.listenPort == 6000)
        #expect(c.storageRoot == "/data")
        #expect(c.storeOptions.compression.mode == .off)
        #expect(c.storeOptions.flushBytes == 8 << 20)
        #expect(c.storeOptions.readThreads == 12)
        #expect(ServerConfig().storeOptions.readThreads == nil)
        #expect(c.uploads.idleTimeoutSeconds == 60)
    }

    @Test func badConfigsNameTheKey() throws {
        for (yaml, key) in [
            ("storage:\n  compresion: auto\n", "storage.compresion"),
            ("storage:\n  pack_target_mib: 0\n", "storage.pack_target_mib"),
            ("storage:\n  read_threads: 0\n", "storage.read_threads"),
            ("server:\n  listen: nowhere\n", "nowhere"),
            ("uploads:\n  timeout_seconds: fast\n", "timeout_seconds"),
            ("bogus: 1\n", "bogus"),
        ] {
            do {
                _ = try load(yaml)
                Issue.record("accepted \(yaml)")
            } catch let e as DepotError {
                #expect("\(e)".contains(key), "\(e)")
            }
        }
    }

    @Test func sandboxSettings() throws {
        let c = try load(
            "pipelines:\n  sandbox: off\n  runner:\n    bwrap: /opt/bwrap\n    sandbox_paths: [/opt/tensorrt]\n    devices: [/dev/nvidia0]\n    sandbox_uid: 3000000000\n    limits: {memory_gib: 0, cpu_seconds: 60, file_size_gib: 0.5, processes: 64, workspace_gib: 2}\n"
        )
        #expect(c.pipelines.sandbox == .off)
        #expect(c.pipelines.runnerBwrap == "/opt/bwrap" && c.pipelines.runnerSandboxPaths == ["/opt/tensorrt"])
        #expect(c.pipelines.runnerDevices == ["/dev/nvidia0"] && c.pipelines.runnerSandboxUID == 3_000_000_000)
        let l = c.pipelines.runnerLimits
        #expect(l.memoryBytes == 0 && l.cpuSeconds == 60 && l.fileBytes == 512 << 20 && l.processes == 64 && l.workspaceBytes == 2 << 30)
        #expect(ServerConfig().pipelines.sandbox == .bubblewrap, "confined unless the operator says otherwise")
        for (yaml, key) in [
            ("pipelines:\n  sandbox: maybe\n", "pipelines.sandbox"),
            ("pipelines:\n  runner:\n    limits: {memory: 1}\n", "pipelines.runner.limits.memory"),
            ("pipelines:\n  runner:\n    limits: {processes: -1}\n", "pipelines.runner.limits.processes"),
            ("pipelines:\n  runner:\n    sandbox_paths: [relative]\n", "pipelines.runner.sandbox_paths"),
        ] {
            do {
                _ = try load(yaml)
                Issue.record("accepted \(yaml)")
            } catch let e as DepotError {
                #expect("\(e)".contains(key), "\(e)")
            }
        }
    }

    @Test func formatsConfigSection() throws {
        let c = try ServerConfig.parse(
            """
            formats:
              max_mib_per_blob: 8
              max_seconds_per_blob: 0.5
              max_seconds_per_manifest: 4
              max_document_kib: 256
              concurrency: 4
              cache_entries: 0
            """, path: "t.yaml")
        var expected = InspectionLimits()
        expected.maxBytesPerBlob = 8 << 20
        expected.maxSecondsPerBlob = 0.5
        expected.maxSecondsPerManifest = 4
        expected.maxDocumentBytes = 256 << 10
        expected.concurrency = 4
        expected.cacheEntries = 0
        #expect(c.inspection == expected)
        for (yaml, key) in [("formats:\n  concurrency: 0\n", "formats.concurrency"), ("formats:\n  max_mib: 1\n", "formats.max_mib")] {
            #expect(throws: DepotError.self) { try ServerConfig.parse(yaml, path: "t.yaml") }
            do { _ = try ServerConfig.parse(yaml, path: "t.yaml") } catch { #expect("\(error)".contains(key), "\(error)") }
        }
    }

    /// Found by the config fuzzer: Yams.load crashed the process on a mapping key that is not a
    /// string. The config reader refuses such files with an error (the pipeline reader: DepotPipelinesTests).
    @Test func yamlWithNonStringKeysIsAnError() throws {
        for yaml in ["{[a]: 1}", "server:\n  ? [x, y]\n  : 1\n", "? {a: 1}\n: x\n"] {
            #expect(throws: DepotError.self, "\(yaml)") { try ServerConfig.parse(yaml, path: "t.yaml") }
        }
        let found = repoRoot + "/fuzz/regressions/config"
        for name in try FileManager.default.contentsOfDirectory(atPath: found) {
            let text = String(decoding: try Data(contentsOf: URL(fileURLWithPath: found + "/" + name)), as: UTF8.self)
            _ = try? ServerConfig.parse(text, path: name)
        }
    }
}
