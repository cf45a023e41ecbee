import DepotCore
import DepotRegistry
import DepotTestSupport
import Foundation
import Testing

/// The one reference grammar, command by command, as users type it: every command that names an
/// artifact takes `[HOST[:PORT]/]REPO[:TAG][@DIGEST]` (a host in it selects the registry, with
/// no --registry and no $DEPOT_REGISTRY), aliases and environments take the tag's place
/// (`REPO:ALIAS`), and the older split forms still work. Exit statuses: 2 for a refused
/// command line (with the grammar and an example), 3 for something that does not exist.
@Suite("Reference grammar on the command line")
struct ReferenceGrammarCLITests {
    static let depot = repoRoot + "/.build/debug/depot"

    @Test func everyCommandTakesEveryForm() async throws {
        let dir = TempDir("depot-grammar")
        try await withRegistry { _, registry, port in
            let d = try await pushFamily(port, dir.path)
            let url = "http://127.0.0.1:\(port)"
            let host = "127.0.0.1:\(port)"
            // The three spellings of v2 (and v1), each run against the registry it names.
            func forms(_ tag: String, _ digest: Digest) -> [(args: [String], ref: String)] {
                [
                    (["--registry", url], "team/llm:\(tag)"),
                    (["--registry", url], "team/llm@\(digest)"),
                    ([], "\(host)/team/llm:\(tag)"),
                    ([], "\(host)/team/llm:\(tag)@\(digest)"),
                    ([], "localhost:\(port)/team/llm@\(digest)"),
                ]
            }
            func depot(_ args: [String]) async throws -> (status: Int32, output: String) {
                try await run(Self.depot, args)
            }
            var n = 0
            for (extra, ref) in forms("v2", d[1]) {
                n += 1
                for command in [["inspect", ref, "--json"], ["lineage", ref, "--json"], ["pin", ref], ["unpin", ref]] {
                    let r = try await depot(command + extra)
                    #expect(r.status == 0, "\(command) \(extra): \(r.output)")
                    #expect(r.output.contains(command[0] == "lineage" ? d[0].description : d[1].description), "\(command): \(r.output)")
                }
                let out = dir.path + "/pull\(n)"
                let pull = try await depot(["pull", ref, "-o", out, "--quiet"] + extra)
                #expect(pull.status == 0, "pull \(ref): \(pull.output)")
                #expect(FileManager.default.fileExists(atPath: out + "/v2.safetensors"), "pull \(ref)")
                let tag = try await depot(["tag", ref, "copy\(n)", "--json"] + extra)
                #expect(tag.status == 0 && tag.output.contains(d[1].description), "tag \(ref): \(tag.output)")
                // An alias moved to this form (REPO:ALIAS REF, REF a whole reference of the same repository).
                // The alias names its registry the way the reference does (a host or --registry).
                let prefix = extra.isEmpty ? String(ref[..<ref.firstIndex(of: "/")!]) + "/" : ""
                let alias = try await depot(["alias", "set", prefix + "team/llm:production", ref] + extra)
                #expect(alias.status == 0, "alias set to \(ref): \(alias.output)")
                #expect(try registry.manifest(try RepositoryName("team/llm"), .tag("production")).digest == d[1])
                let back = try await depot(["alias", "set", "team/llm", "production", "v1", "--registry", url]) // the older form
                #expect(back.status == 0, "\(back.output)")
                #expect(try registry.manifest(try RepositoryName("team/llm"), .tag("production")).digest == d[0])
            }
            // Alias commands in both forms, with a host or --registry.
            for target in [
                ["team/llm:production", "--registry", url], ["team/llm", "production", "--registry", url], ["\(host)/team/llm:production"],
            ] {
                let history = try await depot(["history"] + target + ["--json"])
                #expect(history.status == 0 && history.output.contains(d[0].description), "history \(target): \(history.output)")
                let resolve = try await depot(["resolve"] + target + ["--json"])
                #expect(resolve.status == 0 && resolve.output.contains(d[0].description), "resolve \(target): \(resolve.output)")
            }
            let rollback = try await depot(["rollback", "\(host)/team/llm:production"])
            #expect(rollback.status == 0, "\(rollback.output)")
            #expect(try registry.manifest(try RepositoryName("team/llm"), .tag("production")).digest == d[1])
            // A push to a host-qualified reference, with a host-qualified parent.
            let pushed = try await depot([
                "push", "\(host)/team/llm:v4", dir.path + "/v3.safetensors", "--from", "\(host)/team/llm:v3", "--quiet",
            ])
            #expect(pushed.status == 0, "\(pushed.output)")
            #expect(
                try registry.lineage(of: try registry.manifest(try RepositoryName("team/llm"), .tag("v4")).digest, up: true).first?.digest
                    == d[2])
        }
    }

    @Test func refusalsAndExitStatuses() async throws {
        let dir = TempDir("depot-grammar-refusals")
        try await withRegistry { _, _, port in
            _ = try await pushFamily(port, dir.path)
            let url = "http://127.0.0.1:\(port)"
            // Refused before anything is sent: status 2, the grammar and an example in the message.
            for args in [
                ["pull", "Team/llm:v1"], ["inspect", "team/llm"], ["pin", "team/llm@sha256:abc"], ["lineage", "team/llm:"],
                ["push", "team/llm@sha256:" + String(repeating: "a", count: 64), dir.path + "/v1.safetensors"],
                ["alias", "set", "team/llm:production"], ["alias", "set", "team/llm:production", "other/model:v1"],
                ["rollback", "team/llm"], ["resolve", "team/llm:production@sha256:" + String(repeating: "a", count: 64)],
                ["rollout", "status", "team/llm"], ["pull", "exa_mple.com/team/llm:v1"],
            ] {
                let r = try await run(Self.depot, args + ["--registry", url])
                #expect(r.status == 2, "\(args): status \(r.status): \(r.output)")
                #expect(r.output.contains("e.g."), "\(args) shows an example: \(r.output)")
            }
            // Two registries named at once.
            let two = try await run(Self.depot, ["inspect", "127.0.0.1:\(port)/team/llm:v1", "--registry", "http://127.0.0.1:1"])
            #expect(two.status == 1 && two.output.contains("differ"), "\(two.output)")
            // Not found: 3; the JSON error line carries the code.
            let missing = try await run(Self.depot, ["inspect", "team/llm:v9", "--registry", url])
            #expect(missing.status == 3, "\(missing.output)")
            let p = Process()
            p.executableURL = URL(fileURLWithPath: Self.depot)
            p.arguments = ["pull", "team/none:v1", "--registry", url, "-o", dir.path + "/none"]
            p.environment = ProcessInfo.processInfo.environment.merging(["DEPOT_ERROR_FORMAT": "json"]) { $1 }
            let err = Pipe()
            p.standardError = err
            p.standardOutput = FileHandle.nullDevice
            try p.run()
            let text = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            p.waitUntilExit()
            #expect(p.terminationStatus == 3)
            let line = try #require(text.split(separator: "\n").last.map(String.init))
            let body = try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])
            let e = try #require(body["error"] as? [String: Any])
            #expect(e["status"] as? Int == 404 && (e["code"] as? String)?.hasSuffix("_UNKNOWN") == true, "\(line)")
        }
    }

    /// Regular files under `dir`, relative, sorted (the pull's partial folder left out).
    static func files(_ dir: String) -> [String] {
        let all = FileManager.default.enumerator(atPath: dir)?.allObjects as? [String] ?? []
        return all.filter { path in
            var isDir: ObjCBool = false
            return !path.hasPrefix(".depot") && FileManager.default.fileExists(atPath: dir + "/" + path, isDirectory: &isDir)
                && !isDir.boolValue
        }.sorted()
    }

    @Test func partialPullsSelectByPattern() async throws {
        let dir = TempDir("depot-grammar-partial")
        try FileManager.default.createDirectory(atPath: dir.path + "/m/shards", withIntermediateDirectories: true)
        for (name, bytes) in [
            ("config.json", "{}"), ("tokenizer.json", "{\"t\":1}"), ("shards/a.bin", "aa"), ("shards/b.bin", "bb"), ("README.md", "#"),
        ] {
            try Data(bytes.utf8).write(to: URL(fileURLWithPath: dir.path + "/m/" + name))
        }
        try await withRegistry { _, _, port in
            let url = "http://127.0.0.1:\(port)"
            let push = try await run(Self.depot, ["push", "team/parts:v1", dir.path + "/m", "--registry", url, "--quiet"])
            #expect(push.status == 0, "\(push.output)")
            let cases: [([String], [String])] = [
                (["--include", "*.json"], ["config.json", "tokenizer.json"]),
                (["--include", "*.bin", "--exclude", "*/b.bin"], ["shards/a.bin"]),
                (["--exclude", "shards/*", "--exclude", "README*"], ["config.json", "tokenizer.json"]),
                (["--include", "tokenizer*", "--include", "README.md"], ["README.md", "tokenizer.json"]),
            ]
            for (i, (flags, expected)) in cases.enumerated() {
                let out = dir.path + "/out\(i)"
                let r = try await run(Self.depot, ["pull", "team/parts:v1", "-o", out, "--registry", url, "--quiet"] + flags)
                #expect(r.status == 0, "\(flags): \(r.output)")
                #expect(Self.files(out) == expected, "\(flags)")
            }
            let none = try await run(
                Self.depot, ["pull", "team/parts:v1", "-o", dir.path + "/none", "--registry", url, "--include", "*.onnx"])
            #expect(none.status == 1 && none.output.contains("no file"), "\(none.output)")
        }
    }
}
