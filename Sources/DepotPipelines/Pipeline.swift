import DepotAPI
import DepotCore
import DepotRegistry
import Foundation

/// A pipeline from `config/pipelines/*.yaml`: which pushes start it, and its stages (a DAG).
public struct Pipeline: Sendable, Equatable {
    public var name: String
    /// The file it was read from (for messages).
    public var file: String
    public var trigger: Trigger
    /// Stages in a topological order (every stage after the ones it needs).
    public var stages: [Stage]

    public func stage(_ name: String) -> Stage? { stages.first { $0.name == name } }

    /// Stages that can start when the pipeline is triggered.
    public var roots: [Stage] { stages.filter { $0.needs.isEmpty } }

    /// Stages that need `stage`.
    public func dependents(of stage: String) -> [Stage] { stages.filter { $0.needs.contains(stage) } }
}

/// What starts a pipeline: a tagged push matching every listed condition (globs, `*` and `?`).
public struct Trigger: Sendable, Equatable {
    public var repositories: [String] = []
    public var tags: [String] = []
    public var artifactTypes: [String] = []

    public func matches(repository: String, tag: String, artifactType: String?) -> Bool {
        (repositories.isEmpty || repositories.contains { TagPolicy.glob($0, repository) })
            && (tags.isEmpty || tags.contains { TagPolicy.glob($0, tag) })
            && (artifactTypes.isEmpty || artifactTypes.contains { TagPolicy.glob($0, artifactType ?? "") })
    }
}

/// One stage of a pipeline.
public struct Stage: Sendable, Equatable {
    public enum Kind: Sendable, Equatable {
        /// A command (argv) run by a runner in a workspace.
        case exec([String])
        /// A hook shipped with Depot (`hooks/builtin/<name>.py`), run by a runner.
        case builtin(String)
        /// POST to a URL, then wait for a signed completion callback (run by the server).
        case webhook(url: String, secretEnv: String?, secret: String?)
        /// A canary rollout of the input (a Triton bundle) to an environment (run by the server;
        /// the job ends when the rollout is promoted, or fails when it is rolled back).
        case canary(environment: String, steps: [Int]?, analysisSeconds: Int?)
    }

    public static let builtins: [String: String] = [
        "convert": "converted-from", "accelerate": "quantized-from", "package": "packaged-from",
    ]

    public var name: String
    public var kind: Kind
    public var needs: [String] = []
    /// Whose output is this stage's input (a stage in `needs`); nil: the trigger's artifact or the only need.
    public var input: String?
    public var with: [String: String] = [:]
    /// Output tag template, e.g. `{{tag}}-onnx`; nil: the output is pushed untagged.
    public var tag: String?
    public var timeoutSeconds: Int = 1800
    public var retries: Int = 2
    public var labels: [String] = []
    /// Identity of the tools an `exec` stage uses (part of the memoization key).
    public var toolchain: String?
    /// Lineage relation of the output to the input.
    public var relation: String?
    /// The stage's sandbox shares the host's network (`network: true`); by default it has none.
    public var network = false

    /// The stage whose output feeds this one, or nil for the trigger's artifact.
    public var inputStage: String? { input ?? (needs.count == 1 ? needs[0] : nil) }

    public init(name: String, kind: Kind) {
        self.name = name
        self.kind = kind
    }

    /// The JSON a runner executes, with templates rendered for one job.
    public func spec(pipeline: String, variables: [String: String]) -> [String: JSONValue] {
        var out: [String: JSONValue] = [
            "pipeline": .string(pipeline), "stage": .string(name), "timeout_seconds": JSONValue(timeoutSeconds),
        ]
        switch kind {
        case .exec(let argv):
            out["kind"] = "exec"
            out["command"] = JSONValue(argv)
        case .builtin(let b):
            out["kind"] = "builtin"
            out["builtin"] = .string(b)
        case .webhook(let url, _, _):
            out["kind"] = "webhook"
            out["url"] = .string(url)
        case .canary(let env, let steps, let analysis):
            out["kind"] = "canary"
            out["environment"] = .string(env)
            if let steps { out["steps"] = JSONValue(steps) }
            if let analysis { out["analysis_seconds"] = JSONValue(analysis) }
        }
        out["with"] = JSONValue(with.mapValues { Template.render($0, variables) })
        // Where it runs is part of what it produces (a TensorRT plan is per GPU): labels are in the key.
        if !labels.isEmpty { out["labels"] = JSONValue(labels.sorted()) }
        if let toolchain { out["toolchain"] = .string(toolchain) }
        if let relation { out["relation"] = .string(relation) }
        // Only when set: the definitions (and memoization keys) of other stages stay as they were.
        if network { out["network"] = true }
        if case .builtin(let b) = kind, relation == nil, let r = Self.builtins[b] { out["relation"] = .string(r) }
        return out
    }

    public var kindName: String {
        switch kind {
        case .exec: "exec"
        case .builtin: "builtin"
        case .webhook: "webhook"
        case .canary: "canary"
        }
    }
}

/// `{{name}}` templates of tags and parameters.
public enum Template {
    public static let variables: Set<String> = ["tag", "repository", "name", "stage", "pipeline"]

    public static func render(_ text: String, _ values: [String: String]) -> String {
        var out = text
        for (k, v) in values { out = out.replacingOccurrences(of: "{{\(k)}}", with: v) }
        return out
    }

    /// Names used in `text`; throws on an unclosed `{{`.
    public static func names(in text: String) throws -> [String] {
        var names: [String] = []
        var rest = Substring(text)
        while let open = rest.range(of: "{{") {
            guard let close = rest[open.upperBound...].range(of: "}}") else { throw DepotError.invalidArgument("unclosed {{ in '\(text)'") }
            names.append(rest[open.upperBound..<close.lowerBound].trimmingCharacters(in: .whitespaces))
            rest = rest[close.upperBound...]
        }
        return names
    }
}
