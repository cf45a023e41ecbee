import DepotAPI
import DepotPipelines
import Foundation
import Testing
import Yams

/// Pipeline files: what is accepted, and that every refusal names the file and the line.
@Suite struct PipelineLoaderTests {
    static let valid = """
        name: convert
        trigger:
          repositories: ["models/*"]
          tags: ["v*"]
        stages:
          onnx:
            exec: ["python3", "convert.py", "{{tag}}"]
            labels: [cpu]
            relation: converted-from
            tag: "{{tag}}-onnx"
          package:
            builtin: package
            needs: [onnx]
            timeout: 10m
            retries: 0
        """

    /// The error `text` is refused with (nil when it is accepted).
    static func refusal(_ text: String, file: String = "p.yaml") -> PipelineFileError? {
        do {
            _ = try PipelineLoader.parse(text, file: file)
            return nil
        } catch let e as PipelineFileError {
            return e
        } catch {
            Issue.record("not a PipelineFileError: \(error)")
            return nil
        }
    }

    @Test func aValidFileIsReadInDependencyOrder() throws {
        let p = try PipelineLoader.parse(Self.valid, file: "convert.yaml")
        #expect(p.name == "convert" && p.file == "convert.yaml")
        #expect(p.stages.map(\.name) == ["onnx", "package"])
        #expect(p.roots.map(\.name) == ["onnx"])
        #expect(p.dependents(of: "onnx").map(\.name) == ["package"])
        let onnx = try #require(p.stage("onnx"))
        #expect(onnx.kind == .exec(["python3", "convert.py", "{{tag}}"]) && onnx.labels == ["cpu"] && onnx.relation == "converted-from")
        #expect(p.stage("package")?.timeoutSeconds == 600 && p.stage("package")?.retries == 0)
        #expect(p.trigger.matches(repository: "models/bert", tag: "v2", artifactType: nil))
        #expect(!p.trigger.matches(repository: "data/set", tag: "v2", artifactType: nil))
        #expect(!p.trigger.matches(repository: "models/bert", tag: "latest", artifactType: nil))
    }

    @Test func everyRefusalNamesTheFileAndTheLine() {
        // (file text, the line the problem is on, a phrase of the message)
        let cases: [(String, Int, String)] = [
            ("trigger: {}\nstages:\n  a:\n    exec: x\n", 1, "missing 'name'"),
            ("name: p\nstages:\n  a:\n    exec: x\n", 1, "missing 'trigger'"),
            ("name: p\ntrigger: {}\nstages: {}\n", 3, "'stages' must be a non-empty mapping"),
            ("name: p\ntrigger: {}\nstages:\n  a:\n    exec: x\n    colour: red\n", 6, "unknown key 'colour'"),
            ("name: p\ntrigger: {}\nstages:\n  a:\n    exec: x\n    builtin: package\n", 5, "exactly one of exec"),
            ("name: p\ntrigger: {}\nstages:\n  a:\n    builtin: nope\n", 5, "unknown built-in 'nope'"),
            ("name: p\ntrigger: {}\nstages:\n  a:\n    exec: x\n    needs: [b]\n", 4, "no stage named 'b'"),
            ("name: p\ntrigger: {}\nstages:\n  a:\n    exec: x\n    timeout: forever\n", 6, "not a duration"),
            ("name: p\ntrigger: {}\nstages:\n  a:\n    exec: x\n    retries: 99\n", 6, "retries"),
            ("name: p\ntrigger: {}\nstages:\n  a:\n    exec: x\n    relation: stolen-from\n", 6, "is not one of"),
            ("name: p\ntrigger: {}\nstages:\n  a:\n    exec: x\n    tag: \"{{colour}}\"\n", 6, "unknown variable {{colour}}"),
            ("name: p\ntrigger: {}\nstages:\n  a:\n    canary: {environment: production}\n    labels: [\"a b\"]\n", 6, "labels"),
            ("name: p\ntrigger: [\n", 3, "not valid YAML"),
            ("name: bad name\ntrigger: {}\nstages:\n  a:\n    exec: x\n", 1, "name"),
            ("name: p\ntrigger: {}\nstages:\n  a:\n    exec: x\n    network: maybe\n", 6, "network: must be true or false"),
            ("name: p\ntrigger: {}\nstages:\n  a:\n    canary: {environment: production}\n    network: true\n", 6, "only exec and builtin"),
        ]
        for (text, line, phrase) in cases {
            let e = Self.refusal(text, file: "pipes/p.yaml")
            #expect(e?.file == "pipes/p.yaml", "\(text)")
            #expect(e?.line == line, "\(phrase): \(e?.description ?? "accepted")")
            #expect(e?.message.contains(phrase) == true, "\(e?.description ?? "accepted")")
            #expect(e?.description.hasPrefix("pipes/p.yaml:\(line): ") == true)
        }
    }

    /// `network: true` reaches the job spec (and so the runner's sandbox); unset, the spec is as before.
    @Test func networkIsAStageKeyCarriedInTheSpecOnlyWhenSet() throws {
        let p = try PipelineLoader.parse(
            "name: p\ntrigger: {}\nstages:\n  a:\n    exec: x\n    network: true\n  b:\n    builtin: convert\n    network: false\n",
            file: "p.yaml")
        #expect(p.stage("a")?.network == true && p.stage("b")?.network == false)
        #expect(p.stage("a")?.spec(pipeline: "p", variables: [:])["network"] == true)
        #expect(p.stage("b")?.spec(pipeline: "p", variables: [:])["network"] == nil, "other stages' definitions (and keys) do not change")
    }

    @Test func everyLineageRelationIsAcceptedAndOthersAreNot() throws {
        for relation in LineageRelation.allCases {
            let p = try PipelineLoader.parse(
                "name: p\ntrigger: {}\nstages:\n  a:\n    exec: x\n    relation: \(relation.rawValue)\n", file: "p.yaml")
            #expect(p.stages[0].relation == relation.rawValue)
        }
        let e = Self.refusal("name: p\ntrigger: {}\nstages:\n  a:\n    exec: x\n    relation: subject\n")
        #expect(e?.message.contains(LineageRelation.list) == true, "the refusal lists the relations: \(e?.description ?? "accepted")")
    }

    @Test func cyclesAndAmbiguousInputsAreRefused() {
        let cycle = "name: p\ntrigger: {}\nstages:\n  a:\n    exec: x\n    needs: [b]\n  b:\n    exec: y\n    needs: [a]\n"
        let e = Self.refusal(cycle)
        #expect(e?.message.contains("the stages form a cycle") == true, "\(e?.description ?? "accepted")")
        #expect(e?.line == 4 || e?.line == 7, "the line of a stage in the cycle")
        let selfLoop = Self.refusal("name: p\ntrigger: {}\nstages:\n  a:\n    exec: x\n    needs: [a]\n")
        #expect(selfLoop?.message.contains("cycle") == true)
        let two = "name: p\ntrigger: {}\nstages:\n  a:\n    exec: x\n  b:\n    exec: y\n  c:\n    exec: z\n    needs: [a, b]\n"
        #expect(Self.refusal(two)?.message.contains("say whose output is its input") == true)
        let wrongInput = two.replacingOccurrences(of: "needs: [a, b]", with: "needs: [a, b]\n    input: d")
        #expect(Self.refusal(wrongInput)?.message.contains("must be one of its needs") == true)
        let dup = "name: p\ntrigger: {}\nstages:\n  a:\n    exec: x\n  a:\n    exec: y\n"
        #expect(Self.refusal(dup) != nil)
    }

    @Test func aDirectoryIsReadInNameOrderAndNamesAreUnique() throws {
        let dir = NSTemporaryDirectory() + "/depot-pipes-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        #expect(try PipelineLoader.load(directory: dir + "/missing").isEmpty)
        try Self.valid.write(toFile: dir + "/b.yaml", atomically: true, encoding: .utf8)
        try "name: first\ntrigger: {}\nstages:\n  a:\n    exec: x\n".write(toFile: dir + "/a.yml", atomically: true, encoding: .utf8)
        try "not a pipeline".write(toFile: dir + "/notes.txt", atomically: true, encoding: .utf8)
        #expect(try PipelineLoader.load(directory: dir).map(\.name) == ["first", "convert"])
        try Self.valid.write(toFile: dir + "/c.yaml", atomically: true, encoding: .utf8)
        do {
            _ = try PipelineLoader.load(directory: dir)
            Issue.record("a duplicate name was accepted")
        } catch let e as PipelineFileError {
            #expect(e.file == dir + "/c.yaml" && e.message.contains("already used by \(dir)/b.yaml"), "\(e)")
        }
    }

    @Test func durations() {
        #expect(PipelineLoader.duration("90") == 90)
        #expect(PipelineLoader.duration("90s") == 90)
        #expect(PipelineLoader.duration("10m") == 600)
        #expect(PipelineLoader.duration("2h") == 7200)
        #expect(PipelineLoader.duration("1.5s") == nil)
        #expect(PipelineLoader.duration("soon") == nil)
    }
}

/// YAML trees refused before they are used (found by the config fuzzer).
@Suite struct YAMLSafetyTests {
    @Test func nonStringKeysAreRefusedWithAnError() throws {
        for yaml in ["{[a]: 1}", "server:\n  ? [x, y]\n  : 1\n", "? {a: 1}\n: x\n"] {
            let node = try #require(try Yams.compose(yaml: yaml))
            #expect(YAMLSafety.problem(node)?.contains("mapping key that is a list or a mapping") == true, "\(yaml)")
            #expect(throws: PipelineFileError.self, "\(yaml)") { try PipelineLoader.parse("name: p\n" + yaml, file: "p.yaml") }
        }
        #expect(YAMLSafety.problem(try #require(try Yams.compose(yaml: "a: [1, {b: c}]\n"))) == nil)
    }

    @Test func aTreeExpandedByAliasesIsBounded() throws {
        // Each level refers to the one before ten times: 10^6 nodes from a few lines.
        var yaml = "a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n"
        for i in 1...5 { yaml += "a\(i): &a\(i) [" + Array(repeating: "*a\(i - 1)", count: 10).joined(separator: ", ") + "]\n" }
        let node = try #require(try Yams.compose(yaml: yaml))
        #expect(YAMLSafety.problem(node) == "more than \(YAMLSafety.maxNodes) YAML nodes")
        let e = try #require(PipelineLoaderTests.refusal("name: p\n" + yaml))
        #expect(e.message.contains("YAML nodes"), "\(e)")
    }
}
