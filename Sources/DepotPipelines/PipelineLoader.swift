import DepotAPI
import DepotCore
import Foundation
import Yams

/// A pipeline file that cannot be used: where and why.
public struct PipelineFileError: Error, CustomStringConvertible, Equatable {
    public var file: String
    public var line: Int
    public var message: String
    public var description: String { "\(file):\(line): \(message)" }
}

/// Reads and validates pipeline files. Every problem is reported with its file and line;
/// nothing half-valid is accepted.
public enum PipelineLoader {
    static let nameCharacters = CharacterSet(charactersIn: "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-")

    /// Every `*.yaml` / `*.yml` of `directory`, sorted by file name. A missing directory is no pipelines.
    public static func load(directory: String) throws -> [Pipeline] {
        let fm = FileManager.default
        var isDir: ObjCBool = false
        guard fm.fileExists(atPath: directory, isDirectory: &isDir) else { return [] }
        guard isDir.boolValue else { throw PipelineFileError(file: directory, line: 0, message: "not a directory") }
        let names = try fm.contentsOfDirectory(atPath: directory).filter { $0.hasSuffix(".yaml") || $0.hasSuffix(".yml") }.sorted()
        var out: [Pipeline] = []
        for name in names {
            let path = directory + "/" + name
            guard let data = fm.contents(atPath: path), let text = String(data: data, encoding: .utf8) else {
                throw PipelineFileError(file: path, line: 0, message: "cannot read the file as UTF-8")
            }
            let pipeline = try parse(text, file: path)
            if let other = out.first(where: { $0.name == pipeline.name }) {
                throw PipelineFileError(file: path, line: 1, message: "pipeline name '\(pipeline.name)' is already used by \(other.file)")
            }
            out.append(pipeline)
        }
        return out
    }

    /// Parses one pipeline file.
    public static func parse(_ text: String, file: String) throws -> Pipeline {
        let root: Node
        do {
            guard let node = try Yams.compose(yaml: text) else {
                throw PipelineFileError(file: file, line: 1, message: "the file is empty")
            }
            if let problem = YAMLSafety.problem(node) { throw PipelineFileError(file: file, line: node.mark?.line ?? 1, message: problem) }
            root = node
        } catch let e as YamlError {
            throw PipelineFileError(file: file, line: Self.line(of: e), message: "not valid YAML: \(Self.problem(of: e))")
        }
        let r = Reader(file: file)
        let top = try r.mapping(root, "the top level", known: ["name", "trigger", "stages", "description"])
        guard let nameNode = top["name"] else { throw r.error(root, "missing 'name'") }
        let name = try r.identifier(nameNode, "name")
        var trigger = Trigger()
        if let t = top["trigger"] {
            let m = try r.mapping(t, "trigger", known: ["repositories", "tags", "artifact_types"])
            trigger.repositories = try m["repositories"].map { try r.strings($0, "trigger.repositories") } ?? []
            trigger.tags = try m["tags"].map { try r.strings($0, "trigger.tags") } ?? []
            trigger.artifactTypes = try m["artifact_types"].map { try r.strings($0, "trigger.artifact_types") } ?? []
        } else {
            throw r.error(root, "missing 'trigger' (which pushes start the pipeline)")
        }
        guard let stagesNode = top["stages"], case .mapping(let stagesMap) = stagesNode, !stagesMap.isEmpty else {
            throw r.error(top["stages"] ?? root, "'stages' must be a non-empty mapping of stage name to stage")
        }
        var stages: [Stage] = []
        var lines: [String: Node] = [:]
        for (keyNode, value) in stagesMap {
            let stageName = try r.identifier(keyNode, "stage name")
            if lines[stageName] != nil { throw r.error(keyNode, "stage '\(stageName)' is defined twice") }
            lines[stageName] = keyNode
            stages.append(try stage(stageName, value, r))
        }
        // References and the DAG.
        for s in stages {
            for need in s.needs where lines[need] == nil {
                throw r.error(lines[s.name]!, "stages.\(s.name).needs: no stage named '\(need)'")
            }
            if let input = s.input, !s.needs.contains(input) {
                throw r.error(
                    lines[s.name]!, "stages.\(s.name).input: '\(input)' must be one of its needs (\(s.needs.joined(separator: ", ")))")
            }
            if s.input == nil, s.needs.count > 1 {
                throw r.error(lines[s.name]!, "stages.\(s.name) needs several stages: say whose output is its input with 'input:'")
            }
        }
        let ordered = try topologicalOrder(stages) { cycle in r.error(lines[cycle]!, "stages.\(cycle).needs: the stages form a cycle") }
        return Pipeline(name: name, file: file, trigger: trigger, stages: ordered)
    }

    static func stage(_ name: String, _ node: Node, _ r: Reader) throws -> Stage {
        let at = "stages.\(name)"
        let m = try r.mapping(
            node, at,
            known: [
                "exec", "builtin", "webhook", "canary", "needs", "input", "with", "tag", "timeout", "retries",
                "labels", "toolchain", "relation", "network",
            ])
        let kinds = ["exec", "builtin", "webhook", "canary"].filter { m[$0] != nil }
        guard kinds.count == 1 else {
            throw r.error(
                node,
                "\(at): exactly one of exec, builtin, webhook or canary is needed (found \(kinds.isEmpty ? "none" : kinds.joined(separator: ", ")))"
            )
        }
        var stage: Stage
        if let e = m["exec"] {
            let argv: [String]
            if case .scalar(let s) = e { argv = ["/bin/sh", "-c", s.string] } else { argv = try r.strings(e, "\(at).exec") }
            guard let first = argv.first, !first.isEmpty else { throw r.error(e, "\(at).exec: the command is empty") }
            stage = Stage(name: name, kind: .exec(argv))
        } else if let b = m["builtin"] {
            let builtin = try r.string(b, "\(at).builtin")
            guard Stage.builtins[builtin] != nil else {
                throw r.error(
                    b, "\(at).builtin: unknown built-in '\(builtin)' (one of \(Stage.builtins.keys.sorted().joined(separator: ", ")))")
            }
            stage = Stage(name: name, kind: .builtin(builtin))
        } else if let c = m["canary"] {
            let cm = try r.mapping(c, "\(at).canary", known: ["environment", "steps", "analysis"])
            guard let envNode = cm["environment"] else {
                throw r.error(c, "\(at).canary: missing 'environment' (the alias, e.g. production)")
            }
            let env = try r.string(envNode, "\(at).canary.environment")
            guard Reference.isValidTag(env) else { throw r.error(envNode, "\(at).canary.environment: '\(env)' is not a valid alias") }
            var steps: [Int]?
            if let sNode = cm["steps"] {
                let list = try r.strings(sNode, "\(at).canary.steps").map { Int($0) }
                guard list.allSatisfy({ $0 != nil }), let values = Optional(list.map { $0! }), !values.isEmpty,
                    values.allSatisfy({ (1...100).contains($0) }), zip(values, values.dropFirst()).allSatisfy({ $0 < $1 }),
                    values.last == 100
                else {
                    throw r.error(sNode, "\(at).canary.steps: increasing percentages within 1...100 ending at 100")
                }
                steps = values
            }
            var analysis: Int?
            if let aNode = cm["analysis"] {
                let text = try r.string(aNode, "\(at).canary.analysis")
                guard let v = duration(text), v >= 1 else {
                    throw r.error(aNode, "\(at).canary.analysis: '\(text)' is not a duration (e.g. 15m)")
                }
                analysis = v
            }
            stage = Stage(name: name, kind: .canary(environment: env, steps: steps, analysisSeconds: analysis))
            stage.timeoutSeconds = 86400
        } else {
            let w = try r.mapping(m["webhook"]!, "\(at).webhook", known: ["url", "secret", "secret_env"])
            guard let urlNode = w["url"] else { throw r.error(m["webhook"]!, "\(at).webhook: missing 'url'") }
            let url = try r.string(urlNode, "\(at).webhook.url")
            guard let u = URL(string: url), ["http", "https"].contains(u.scheme ?? ""), u.host != nil else {
                throw r.error(urlNode, "\(at).webhook.url: '\(url)' is not an http(s) URL")
            }
            let secret = try w["secret"].map { try r.string($0, "\(at).webhook.secret") }
            let secretEnv = try w["secret_env"].map { try r.string($0, "\(at).webhook.secret_env") }
            guard (secret == nil) != (secretEnv == nil) else {
                throw r.error(
                    m["webhook"]!, "\(at).webhook: give exactly one of 'secret' or 'secret_env' (the completion callback is signed with it)"
                )
            }
            stage = Stage(name: name, kind: .webhook(url: url, secretEnv: secretEnv, secret: secret))
        }
        if let n = m["needs"] { stage.needs = try r.strings(n, "\(at).needs") }
        if let n = m["input"] { stage.input = try r.string(n, "\(at).input") }
        if let w = m["with"] {
            let wm = try r.mapping(w, "\(at).with", known: nil)
            for (k, v) in wm {
                guard k.range(of: "^[A-Za-z_][A-Za-z0-9_]*$", options: .regularExpression) != nil else {
                    throw r.error(v, "\(at).with: parameter name '\(k)' must be letters, digits and _")
                }
                guard !PickleGate.reservedParameters.contains(k.lowercased()) else {
                    throw r.error(
                        v,
                        "\(at).with.\(k): the pickle policy is the operator's, per repository: list trusted repositories in "
                            + "pipelines.trust_pickle in the server config (docs/SECURITY.md)")
                }
                guard case .scalar(let s) = v else { throw r.error(v, "\(at).with.\(k): must be a scalar (string, number or boolean)") }
                try r.template(v, s.string, "\(at).with.\(k)")
                stage.with[k] = s.string
            }
        }
        if let t = m["tag"] {
            let tag = try r.string(t, "\(at).tag")
            try r.template(t, tag, "\(at).tag")
            let sample = Template.render(tag, ["tag": "v1", "repository": "a/b", "name": "b", "stage": name, "pipeline": "p"])
            guard Reference.isValidTag(sample) else {
                throw r.error(
                    t, "\(at).tag: '\(tag)' does not make a valid tag (e.g. '\(sample)'); {{repository}} contains '/', use {{name}}")
            }
            stage.tag = tag
        }
        if let t = m["timeout"] {
            let text = try r.string(t, "\(at).timeout")
            guard let seconds = duration(text), seconds >= 1, seconds <= 7 * 86400 else {
                throw r.error(t, "\(at).timeout: '\(text)' is not a duration between 1s and 7d (e.g. 90s, 10m, 2h)")
            }
            stage.timeoutSeconds = seconds
        }
        if let n = m["retries"] {
            guard case .scalar(let s) = n, let v = Int(s.string), (0...20).contains(v) else {
                throw r.error(n, "\(at).retries: must be an integer 0...20")
            }
            stage.retries = v
        }
        if let n = m["labels"] {
            stage.labels = try r.strings(n, "\(at).labels")
            for l in stage.labels where l.isEmpty || l.unicodeScalars.contains(where: { !nameCharacters.contains($0) }) {
                throw r.error(n, "\(at).labels: '\(l)' must be letters, digits, '-' and '_'")
            }
        }
        if let n = m["toolchain"] { stage.toolchain = try r.string(n, "\(at).toolchain") }
        if let n = m["network"] {
            guard case .scalar(let s) = n, let v = Bool(s.string.lowercased()) else {
                throw r.error(n, "\(at).network: must be true or false")
            }
            if v, stage.kindName != "exec" && stage.kindName != "builtin" {
                throw r.error(n, "\(at).network: only exec and builtin stages run in a runner's sandbox")
            }
            stage.network = v
        }
        if let n = m["relation"] {
            let rel = try r.string(n, "\(at).relation")
            guard LineageRelation(rawValue: rel) != nil else {
                throw r.error(n, "\(at).relation: '\(rel)' is not one of \(LineageRelation.list)")
            }
            stage.relation = rel
        }
        return stage
    }

    /// Whole seconds of "90", "90s", "10m", "2h", "1d".
    public static func duration(_ text: String) -> Int? {
        guard let s = DurationText.seconds(text), s == s.rounded(), s <= Double(Int32.max) else { return nil }
        return Int(s)
    }

    static func topologicalOrder(_ stages: [Stage], cycle: (String) -> Error) throws -> [Stage] {
        var done: [String] = []
        var visiting: Set<String> = []
        let byName = Dictionary(uniqueKeysWithValues: stages.map { ($0.name, $0) })
        func visit(_ name: String) throws {
            if done.contains(name) { return }
            if visiting.contains(name) { throw cycle(name) }
            visiting.insert(name)
            for need in byName[name]!.needs { try visit(need) }
            visiting.remove(name)
            done.append(name)
        }
        for s in stages { try visit(s.name) }
        return done.map { byName[$0]! }
    }

    static func line(of e: YamlError) -> Int {
        switch e {
        case .scanner(_, _, let mark, _), .parser(_, _, let mark, _), .composer(_, _, let mark, _): return mark.line
        default: return 1
        }
    }

    static func problem(of e: YamlError) -> String {
        switch e {
        case .scanner(_, let p, _, _), .parser(_, let p, _, _), .composer(_, let p, _, _): return p
        default: return "\(e)"
        }
    }
}

/// Typed access to YAML nodes with file:line errors.
struct Reader {
    let file: String

    func error(_ node: Node, _ message: String) -> PipelineFileError {
        PipelineFileError(file: file, line: node.mark?.line ?? 1, message: message)
    }

    /// A mapping with string keys; with `known`, any other key is an error.
    func mapping(_ node: Node, _ at: String, known: Set<String>?) throws -> [String: Node] {
        guard case .mapping(let m) = node else { throw error(node, "\(at) must be a mapping") }
        var out: [String: Node] = [:]
        for (k, v) in m {
            guard case .scalar(let s) = k else { throw error(k, "\(at): keys must be strings") }
            if let known, !known.contains(s.string) {
                throw error(k, "\(at): unknown key '\(s.string)' (known: \(known.sorted().joined(separator: ", ")))")
            }
            if out[s.string] != nil { throw error(k, "\(at): key '\(s.string)' appears twice") }
            out[s.string] = v
        }
        return out
    }

    func string(_ node: Node, _ at: String) throws -> String {
        guard case .scalar(let s) = node, !s.string.isEmpty else { throw error(node, "\(at) must be a non-empty string") }
        return s.string
    }

    func strings(_ node: Node, _ at: String) throws -> [String] {
        guard case .sequence(let seq) = node else { throw error(node, "\(at) must be a list of strings") }
        return try seq.map { try string($0, at) }
    }

    func identifier(_ node: Node, _ at: String) throws -> String {
        let s = try string(node, at)
        guard s.count <= 64, s.unicodeScalars.allSatisfy({ PipelineLoader.nameCharacters.contains($0) }) else {
            throw error(node, "\(at): '\(s.prefix(80))' must be 1-64 letters, digits, '-' or '_'")
        }
        return s
    }

    func template(_ node: Node, _ text: String, _ at: String) throws {
        let names: [String]
        do { names = try Template.names(in: text) } catch { throw self.error(node, "\(at): \(error)") }
        for n in names where !Template.variables.contains(n) {
            throw error(node, "\(at): unknown variable {{\(n)}} (known: \(Template.variables.sorted().joined(separator: ", ")))")
        }
    }
}
