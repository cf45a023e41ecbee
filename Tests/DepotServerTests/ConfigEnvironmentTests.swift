import DepotCore
import DepotTestSupport
import Foundation
import Testing
import Yams

@testable import DepotServer

/// Every config key has an environment variable `DEPOT_<PATH>` that overrides the file, with the
/// file's types and checks; `depot serve`'s flags override both.
@Suite struct ConfigEnvironmentTests {
    /// The variable of a key path, by the documented rule (written here, not taken from the code).
    static func variable(_ path: [String]) -> String { "DEPOT_" + path.joined(separator: "_").uppercased() }

    /// Every key of a YAML tree with its value (lists and empty mappings are values).
    static func keys(_ node: [String: Any], _ prefix: [String] = []) -> [([String], Any)] {
        node.sorted { $0.key < $1.key }.flatMap { key, value -> [([String], Any)] in
            if let m = value as? [String: Any], !m.isEmpty { return keys(m, prefix + [key]) }
            return [(prefix + [key], value)]
        }
    }

    /// A value as an operator writes it in a variable: scalars bare (quoted if YAML would read them
    /// as something else), lists in flow style `[a, b]`, mappings `{k: v}`.
    static func text(_ value: Any) -> String {
        switch value {
        case let list as [Any]: return "[" + list.map(text).joined(separator: ", ") + "]"
        case let map as [String: Any]:
            return "{" + map.sorted { $0.key < $1.key }.map { "\($0.key): \(text($0.value))" }.joined(separator: ", ") + "}"
        case let s as String:
            if s.isEmpty { return "" }
            return (try? Yams.load(yaml: s) as? String) == s ? s : "'" + s.replacingOccurrences(of: "'", with: "''") + "'"
        default: return "\(value)"
        }
    }

    func parse(_ yaml: String, _ environment: [String: String]) throws -> ServerConfig {
        try ServerConfig.parse(yaml, path: "t.yaml", environment: environment)
    }

    func error(_ yaml: String, _ environment: [String: String]) -> String? {
        do {
            _ = try parse(yaml, environment)
            return nil
        } catch {
            return "\(error)"
        }
    }

    /// The shipped config/depot.yaml, walked key by key: each key's variable (1) supplies the
    /// key's value when the file lacks it, giving the very same configuration, and (2) overrides
    /// the file's value, which the parser then checks (a wrong type is refused, naming the key and
    /// the variable).
    @Test func everyKeyOfTheShippedConfigHasAWorkingVariable() throws {
        let text = try String(contentsOfFile: repoRoot + "/config/depot.yaml", encoding: .utf8)
        let tree = try #require(try Yams.load(yaml: text) as? [String: Any])
        let shipped = try ServerConfig.parse(text, path: "depot.yaml")
        let walked = Self.keys(tree)
        #expect(walked.count >= 70, "walked only \(walked.count) keys")
        for (path, value) in walked {
            let name = Self.variable(path)
            let dotted = path.joined(separator: ".")
            #expect(ConfigEnvironment.path(of: name) == path, "\(name) does not resolve to \(dotted)")
            var without = tree
            Self.remove(path[...], from: &without)
            let rest = try Yams.dump(object: without)
            let viaVariable = try parse(rest, [name: Self.text(value)])
            #expect(viaVariable == shipped, "\(name)=\(Self.text(value)) instead of \(dotted) in the file")
            let refused = error(text, [name: "[[1]]"])
            #expect(refused?.contains(dotted) == true && refused?.contains(name) == true, "\(name)=[[1]]: \(refused ?? "accepted")")
        }
    }

    static func remove(_ path: ArraySlice<String>, from tree: inout [String: Any]) {
        guard let key = path.first else { return }
        if path.count == 1 {
            tree.removeValue(forKey: key)
        } else if var child = tree[key] as? [String: Any] {
            remove(path.dropFirst(), from: &child)
            tree[key] = child
        }
    }

    /// Every key the tree knows, mappings included, has a variable that resolves back to it: no two
    /// keys share a variable.
    @Test func everyVariableNamesOneKey() {
        let paths = ConfigKeys.allPaths()
        #expect(paths.count >= 90)
        for path in paths {
            #expect(ConfigEnvironment.path(of: Self.variable(path)) == path, "\(Self.variable(path))")
        }
        for name in ConfigEnvironment.otherVariables {
            #expect(ConfigEnvironment.path(of: name) == nil, "\(name) is both a config key's and one of Depot's other variables")
        }
    }

    /// The key tree the variables are resolved in knows every mapping the parser checks: every
    /// mapping of a configuration that uses them all, and no section key hides a mapping of its own.
    @Test func theKeyTreeKnowsEveryMappingTheParserChecks() throws {
        let text = try String(contentsOfFile: repoRoot + "/config/depot.yaml", encoding: .utf8)
        var tree = try #require(try Yams.load(yaml: text) as? [String: Any])
        var server = try #require(tree["server"] as? [String: Any])
        server["tls"] = ["cert_file": "/c.pem", "key_file": "/k.pem"]
        tree["server"] = server
        tree["signing"] = ["trusted_keys": ["release": "/r.pub"]]
        let reader = ConfigReader(path: "t.yaml", environment: [:])
        _ = try ServerConfig.parse(tree: tree, reader)
        #expect(reader.checkedMappings.count >= 10)
        for (prefix, known) in reader.checkedMappings where !prefix.contains("[") {
            var shape = ConfigKeys.root
            for part in prefix.split(separator: ".").map(String.init) {
                switch shape {
                case .keys(let keys): shape = keys[part] ?? .leaf
                case .named(let entry): shape = entry
                case .leaf: break
                }
            }
            guard case .keys(let keys) = shape else {
                Issue.record("the parser checks the keys of '\(prefix)', a mapping ConfigKeys does not list (add it to ConfigKeys.nested)")
                continue
            }
            #expect(known.isSubset(of: Set(keys.keys)), "'\(prefix)': ConfigKeys lacks \(known.subtracting(keys.keys).sorted())")
        }
        // A key that is a leaf to ConfigKeys must not be a mapping whose keys the parser checks.
        for path in ConfigKeys.allPaths() where path.count == 2 {
            guard case .leaf = ConfigKeys.shape(path.joined(separator: ".")) else { continue }
            let yaml = "\(path[0]):\n  \(path[1]):\n    zz_probe: 1\n"
            let message = error(yaml, [:]) ?? ""
            #expect(
                !message.contains("\(path[0]).\(path[1]).zz_probe is not a known setting"),
                "\(path.joined(separator: ".")) is a mapping: add it to ConfigKeys.nested")
        }
    }

    @Test func variablesOverrideTheFileWithTheFilesTypes() throws {
        let c = try parse(
            "storage:\n  pack_target_mib: 32\n  root: /from/file\nsigning:\n  trusted_keys: {ops: /ops.pub}\n",
            [
                "DEPOT_STORAGE_PACK_TARGET_MIB": "128",
                "DEPOT_STORAGE_COMPRESSION": "off",
                "DEPOT_STORAGE_COMPRESSION_MIN_SAVINGS": "0.1",
                "DEPOT_AUTH_ENABLED": "true",
                "DEPOT_AUTH_ANONYMOUS_PULL": "[public/**, \"team/*\"]",
                "DEPOT_PIPELINES_RUNNER_LIMITS_MEMORY_GIB": "0",
                "DEPOT_PIPELINES_RUNNER_LABELS": "[gpu, tensorrt]",
                "DEPOT_DEPLOY_POLICY_STAGING_SIGNED_BY": "[pipeline]",
                "DEPOT_SIGNING_TRUSTED_KEYS_RELEASE": "/keys/release.pub",
                "DEPOT_SERVER_TLS_CERT_FILE": "/tls/c.pem",
                "DEPOT_SERVER_TLS_KEY_FILE": "/tls/k.pem",
                "DEPOT_PIPELINES_CALLBACK_URL": "",
                "DEPOT_CANARY_STEPS": "[5, 100]",
            ])
        #expect(c.store.packTargetMiB == 128 && c.storageRoot == "/from/file")
        #expect(c.store.compression == "off" && c.store.compressionMinSavings == 0.1)
        #expect(c.auth.enabled && c.auth.anonymousPull == ["public/**", "team/*"])
        #expect(c.pipelines.runnerLimits.memoryBytes == 0 && c.pipelines.runnerLabels == ["gpu", "tensorrt"])
        #expect(c.deployPolicy.environments["staging"]?.signedBy == ["pipeline"])
        #expect(c.signing.trustedKeys == ["ops": "/ops.pub", "release": "/keys/release.pub"])
        #expect(c.tls?.certFile == "/tls/c.pem" && c.tls?.keyFile == "/tls/k.pem")
        #expect(c.pipelines.callbackURL == "" && c.canary.steps == [5, 100])
        #expect(c.startupWarnings.isEmpty, "\(c.startupWarnings)")
        // Without a file at all.
        let bare = try ServerConfig.load(nil, environment: ["DEPOT_SERVER_LISTEN": "0.0.0.0:6000"])
        #expect(bare.listenHost == "0.0.0.0" && bare.listenPort == 6000)
        // No environment given: the file alone, whatever this process's environment holds.
        #expect(try ServerConfig.parse("", path: "t.yaml") == ServerConfig())
    }

    /// A variable may set a whole mapping as YAML; variables of keys inside it apply on top.
    @Test func aWholeMappingAndAKeyInsideIt() throws {
        let c = try parse(
            "",
            [
                "DEPOT_PIPELINES_RUNNER_LIMITS": "{memory_gib: 1, processes: 10}",
                "DEPOT_PIPELINES_RUNNER_LIMITS_PROCESSES": "20",
                "DEPOT_DEPLOY_POLICY": "{production: {signed_by: [pipeline]}}",
                "DEPOT_DEPLOY_POLICY_PRODUCTION_PYTHON_BACKEND_SIGNED_BY": "[pipeline]",
            ])
        #expect(c.pipelines.runnerLimits.memoryBytes == 1 << 30 && c.pipelines.runnerLimits.processes == 20)
        #expect(c.deployPolicy.environments["production"] == .init(signedBy: ["pipeline"], pythonBackendSignedBy: ["pipeline"]))
    }

    @Test func badValuesAreRefusedNamingTheVariable() throws {
        let big = String(repeating: "a", count: ConfigEnvironment.maxValueBytes + 1)
        for (name, value, expected) in [
            ("DEPOT_STORAGE_PACK_TARGET_MIB", "0", "storage.pack_target_mib must be 1 to 4096"),
            ("DEPOT_STORAGE_PACK_TARGET_MIB", "many", "storage.pack_target_mib has the wrong type"),
            ("DEPOT_SERVER_LOG_LEVEL", "loud", "server.log_level"),
            ("DEPOT_AUTH_ANONYMOUS_PULL", "[unclosed", "not a YAML value"),
            ("DEPOT_AUTH_ANONYMOUS_PULL", "**", "not a YAML value"),
            ("DEPOT_AUTH_REALM", big, "longer than"),
            ("DEPOT_PIPELINES_RUNNER_LIMITS", "{memory: 1}", "pipelines.runner.limits.memory is not a known setting"),
            ("DEPOT_SERVER_LISTEN", "nowhere", "nowhere"),
            ("DEPOT_WEBHOOKS", "{[a]: 1}", "mapping key"),
        ] {
            let message = error("", [name: value]) ?? "accepted"
            #expect(message.contains(expected), "\(name)=\(value.prefix(40)): \(message)")
            #expect(message.contains(name), "\(name)=\(value.prefix(40)): \(message)")
        }
        // A key inside something the file sets to a scalar.
        let message = error("server:\n  tls: 3\n", ["DEPOT_SERVER_TLS_CERT_FILE": "/c.pem"]) ?? "accepted"
        #expect(message.contains("DEPOT_SERVER_TLS_CERT_FILE") && message.contains("server.tls is not a mapping"), "\(message)")
    }

    /// A variable that sets nothing is warned about when it looks like a key's (naming the
    /// closest), never refused; Depot's other variables and unrelated ones are left alone.
    @Test func unknownVariablesAreWarnedAboutNotRefused() throws {
        let c = try parse(
            "",
            [
                "DEPOT_SEVRER_LISTEN": "0.0.0.0:1", "DEPOT_STORAGE_PACK_TARGET": "1", "DEPOT_TOKEN": "dpt_x",
                "DEPOT_REGISTRY": "http://x", "DEPOT_PARAM_OPSET": "17", "DEPOT_CANARY_WEIGHT": "10",
                "DEPOT_TEAM_BUILD_NUMBER_OF_THE_NIGHTLY_JOB": "3", "depot_server_listen": "x",
                "DEPOT_" + String(repeating: "X", count: 300): "1",
                // Named by the config: the operator's own, not a misspelt key.
                "DEPOT_PIPELINES_SECRET": "s", "DEPOT_STORAGE_EXTRA": "e",
                "DEPOT_WEBHOOKS": "[{name: ci, url: 'http://ci/h', secret_env: DEPOT_PIPELINES_SECRET}]",
                "DEPOT_PIPELINES_RUNNER_PASS_ENV": "[DEPOT_STORAGE_EXTRA]",
            ])
        #expect(c.listenPort == 5000)
        let w = c.startupWarnings
        #expect(w.count == 3, "\(w)")
        #expect(w.contains { $0.contains("DEPOT_SEVRER_LISTEN") && $0.contains("DEPOT_SERVER_LISTEN (server.listen)") }, "\(w)")
        #expect(w.contains { $0.contains("DEPOT_STORAGE_PACK_TARGET ") && $0.contains("DEPOT_STORAGE_PACK_TARGET_MIB") }, "\(w)")
        #expect(w.contains { $0.contains("DEPOT_XXXX") }, "\(w)")
    }
}

/// `depot serve` itself: defaults < file < variables < flags, and warnings in its log.
@Suite(.serialized) struct ServeEnvironmentTests {
    /// Starts `depot serve ARGS` in `dir` (no config file there) with only `variables` among
    /// DEPOT_ variables, waits for /healthz, stops it; returns its log.
    func serve(
        _ dir: String, _ arguments: [String], _ variables: [String: String], while running: (Int) async throws -> Void = { _ in }
    ) async throws -> String {
        let port = freePort()
        let p = Process()
        p.executableURL = URL(fileURLWithPath: repoRoot + "/.build/debug/depot")
        p.arguments = ["serve", "--listen", "127.0.0.1:\(port)"] + arguments
        p.environment = ProcessInfo.processInfo.environment.filter { !$0.key.hasPrefix("DEPOT_") }.merging(variables) { $1 }
        p.currentDirectoryURL = URL(fileURLWithPath: dir)
        let log = dir + "/serve.log"
        FileManager.default.createFile(atPath: log, contents: nil)
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: log))
        p.standardOutput = handle
        p.standardError = handle
        try p.run()
        defer {
            p.terminate()
            p.waitUntilExit()
        }
        var up = false
        for _ in 0..<200 where !up && p.isRunning {
            up = try await run("/usr/bin/curl", ["-sf", "http://127.0.0.1:\(port)/healthz"], timeout: 5).status == 0
            if !up { try await Task.sleep(for: .milliseconds(100)) }
        }
        if up { try await running(port) }
        let text = (try? String(contentsOfFile: log, encoding: .utf8)) ?? ""
        #expect(up, "depot serve did not start: \(text)")
        return text
    }

    @Test func variablesOverrideTheDefaultsAndFlagsOverrideVariables() async throws {
        let dir = TempDir("serve-env")
        // A variable sets the storage root when no flag does.
        _ = try await serve(dir.path, [], ["DEPOT_STORAGE_ROOT": dir.path + "/by-variable"])
        #expect(FileManager.default.fileExists(atPath: dir.path + "/by-variable/FORMAT"))
        // The flag wins over the variable; a misspelt variable is logged with the key meant.
        let log = try await serve(
            dir.path, ["--storage", dir.path + "/by-flag"],
            ["DEPOT_STORAGE_ROOT": dir.path + "/by-variable-2", "DEPOT_SEVRER_LOG_LEVEL": "debug"])
        #expect(FileManager.default.fileExists(atPath: dir.path + "/by-flag/FORMAT"))
        #expect(!FileManager.default.fileExists(atPath: dir.path + "/by-variable-2"))
        #expect(log.contains("DEPOT_SEVRER_LOG_LEVEL") && log.contains("DEPOT_SERVER_LOG_LEVEL (server.log_level)"), "\(log)")
        // A bad value stops it, naming the variable.
        let bad = try await run(
            "/usr/bin/env",
            ["DEPOT_STORAGE_PACK_TARGET_MIB=0", repoRoot + "/.build/debug/depot", "serve", "--storage", dir.path + "/bad"], cwd: dir.path,
            timeout: 60)
        #expect(bad.status == 1 && bad.output.contains("DEPOT_STORAGE_PACK_TARGET_MIB"), "\(bad)")
    }
}

extension ServeEnvironmentTests {
    /// `auth.bootstrap_token_file` is read like every secret file: one every user may write is
    /// refused; a good one makes the admin token.
    @Test func theBootstrapTokenFileIsASecretFile() async throws {
        let dir = TempDir("serve-bootstrap")
        let token = String(repeating: "t", count: 40)
        let file = dir.path + "/admin-token"
        try Data((token + "\n").utf8).write(to: URL(fileURLWithPath: file))
        chmod(file, 0o666)
        let refused = try await run(
            "/usr/bin/env",
            [
                "DEPOT_AUTH_ENABLED=true", "DEPOT_AUTH_BOOTSTRAP_TOKEN_FILE=\(file)", repoRoot + "/.build/debug/depot", "serve",
                "--storage", dir.path + "/s1",
            ], cwd: dir.path, timeout: 60)
        #expect(refused.status == 1 && refused.output.contains("auth.bootstrap_token_file"), "\(refused)")
        #expect(refused.output.contains("written by every user"), "\(refused)")
        chmod(file, 0o600)
        _ = try await serve(
            dir.path, ["--storage", dir.path + "/s2"], ["DEPOT_AUTH_ENABLED": "true", "DEPOT_AUTH_BOOTSTRAP_TOKEN_FILE": file]
        ) { port in
            let me = try await run(
                "/usr/bin/curl", ["-sf", "-H", "Authorization: Bearer \(token)", "http://127.0.0.1:\(port)/depot/v1/whoami"], timeout: 10)
            #expect(me.status == 0 && me.output.contains("bootstrap-admin"), "\(me)")
        }
    }
}

/// `*_env` and `*_file` forms of secret keys, and the rules of secret files.
@Suite struct ConfigSecretTests {
    let dir = TempDir("secrets")

    func file(_ name: String, _ bytes: [UInt8], mode: mode_t = 0o600) throws -> String {
        let path = dir.path + "/" + name
        try Data(bytes).write(to: URL(fileURLWithPath: path))
        chmod(path, mode)
        return path
    }

    func webhook(_ secretLine: String, environment: [String: String] = [:]) throws -> ServerConfig {
        try ServerConfig.parse(
            "webhooks:\n  - name: ci\n    url: http://ci.example/hook\n    \(secretLine)\n", path: "t.yaml", environment: environment)
    }

    func refusal(_ secretLine: String, environment: [String: String] = [:]) -> String {
        do {
            _ = try webhook(secretLine, environment: environment)
            return "accepted"
        } catch {
            return "\(error)"
        }
    }

    @Test func aSecretFromAFileOrAVariable() throws {
        let plain = try file("s1", Array("s3cr3t\n".utf8))
        #expect(try webhook("secret_file: \(plain)").webhooks[0].secret == "s3cr3t")
        // One trailing newline goes (CRLF too), the rest of the file is the secret.
        let crlf = try file("s2", Array("a b\n\r\n".utf8))
        #expect(try webhook("secret_file: \(crlf)").webhooks[0].secret == "a b\n")
        #expect(try webhook("secret_env: HOOK_SECRET", environment: ["HOOK_SECRET": "v"]).webhooks[0].secret == "v")
        #expect(try webhook("secret: inline").webhooks[0].secret == "inline")
        // Through a variable too: the whole list, with a file reference.
        let c = try ServerConfig.parse(
            "", path: "t.yaml", environment: ["DEPOT_WEBHOOKS": "[{name: ci, url: 'http://ci.example/h', secret_file: \(plain)}]"])
        #expect(c.webhooks.first?.secret == "s3cr3t")
        #expect(c.startupWarnings.isEmpty, "\(c.startupWarnings)")
    }

    @Test func aFileEveryUserMayReadIsAWarningOneEveryUserMayWriteIsRefused() throws {
        let readable = try file("r", Array("x".utf8), mode: 0o644)
        let c = try webhook("secret_file: \(readable)")
        #expect(c.webhooks[0].secret == "x")
        #expect(c.startupWarnings.count == 1 && c.startupWarnings[0].contains("webhooks[0].secret_file"), "\(c.startupWarnings)")
        let writable = try file("w", Array("x".utf8), mode: 0o602)
        #expect(refusal("secret_file: \(writable)").contains("written by every user"))
    }

    @Test func secretFilesAreBoundedAndChecked() throws {
        let big = try file("big", [UInt8](repeating: 0x61, count: SecretFile.maxBytes + 1))
        let exact = try file("exact", [UInt8](repeating: 0x61, count: SecretFile.maxBytes))
        let empty = try file("empty", Array("\n".utf8))
        let binary = try file("bin", [0xff, 0xfe, 0x00])
        mkfifo(dir.path + "/fifo", 0o600)
        for (line, expected) in [
            ("secret_file: \(big)", "at most 65536"),
            ("secret_file: \(empty)", "is empty"),
            ("secret_file: \(binary)", "not UTF-8"),
            ("secret_file: \(dir.path)", "not a regular file"),
            ("secret_file: \(dir.path)/fifo", "not a regular file"),
            ("secret_file: \(dir.path)/missing", "cannot open"),
            ("secret_file: \"\"", "non-empty string"),
            ("secret_env: DEPOT_TEST_NOT_SET_ANYWHERE", "not set"),
            ("secret: a\n    secret_file: \(exact)", "given 2 ways"),
        ] {
            let message = refusal(line)
            #expect(message.contains(expected) && message.contains("webhooks[0].secret"), "\(line): \(message)")
        }
        #expect(try webhook("secret_file: \(exact)").webhooks[0].secret.utf8.count == SecretFile.maxBytes)
    }
}
