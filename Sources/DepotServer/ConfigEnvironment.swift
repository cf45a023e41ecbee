import DepotCore
import DepotPipelines
import Foundation
import Yams

/// Config keys set by environment variables, for containers and orchestrators: every key of
/// `config/depot.yaml` has the variable `DEPOT_` + its path in capitals with `_` between the parts
/// (`storage.pack_target_mib` → `DEPOT_STORAGE_PACK_TARGET_MIB`, `pipelines.runner.limits.memory_gib`
/// → `DEPOT_PIPELINES_RUNNER_LIMITS_MEMORY_GIB`, `deploy_policy.production.signed_by` →
/// `DEPOT_DEPLOY_POLICY_PRODUCTION_SIGNED_BY`). A variable overrides the file; `depot serve`'s
/// flags override both.
///
/// A value is read as YAML, as in the file, and checked by the same parser: `64`, `true`, `0.5`,
/// a list `[a, b]`, a whole mapping `{cert_file: a, key_file: b}` (a variable of a key inside it
/// then still applies on top). An empty value is the empty string. Names are resolved against the
/// key tree (`ConfigKeys`), so underscores inside key names are not ambiguous; operator-chosen
/// names (environments, trusted key names) are written in capitals and read in lower case, and a
/// name that cannot be written so is set with its parent's variable.
///
/// Variables beginning with `DEPOT_` that are no key's and not one of Depot's other variables
/// are warned about at start (with the closest key's variable), never refused.
enum ConfigEnvironment {
    static let prefix = "DEPOT_"
    /// Longest value read (longer ones are refused: a config value is never that long).
    static let maxValueBytes = 64 << 10
    /// Longest variable name resolved.
    static let maxNameBytes = 256

    /// `DEPOT_` variables that are not config keys: the client's, the server's own, what runners
    /// and stages are given, and the test scripts'. Never warned about.
    static let otherVariables: Set<String> = [
        "DEPOT_REGISTRY", "DEPOT_TOKEN", "DEPOT_PASSWORD", "DEPOT_CACHE", "DEPOT_CA_FILE", "DEPOT_CLIENT_CERT", "DEPOT_CLIENT_KEY",
        "DEPOT_ADMIN_TOKEN", "DEPOT_HOOKS_PYTHON", "DEPOT_HOOKS_DIR", "DEPOT_BIN",
        // Stages (docs/PIPELINES.md) and the router command (canary.router_command).
        "DEPOT_OUTPUT_DIR", "DEPOT_RESULT", "DEPOT_PARAMS", "DEPOT_STAGE", "DEPOT_PIPELINE", "DEPOT_JOB_ID", "DEPOT_ATTEMPT",
        "DEPOT_ACTOR", "DEPOT_UPDATED_AT", "DEPOT_SCANNER_REPORT", "DEPOT_DEPLOYMENT", "DEPOT_MODEL", "DEPOT_STABLE_DIGEST",
        "DEPOT_CANARY_DIGEST", "DEPOT_CANARY_WEIGHT", "DEPOT_SANDBOX_CANARY", "DEPOT_SANDBOX_TEST_VERBOSE",
    ]
    /// Prefixes of such variables (a stage's inputs and parameters, the test scripts').
    static let otherPrefixes = ["DEPOT_PARAM_", "DEPOT_INPUT_", "DEPOT_E2E_"]

    /// One variable that sets a key.
    struct Override {
        let variable: String
        let path: [String]
        let value: Any
        var dotted: String { path.joined(separator: ".") }
    }

    /// The variable of a key path.
    static func variable(_ path: [String]) -> String { prefix + path.joined(separator: "_").uppercased() }

    /// The key path `variable` sets, or nil when it sets none.
    static func path(of variable: String) -> [String]? {
        guard variable.hasPrefix(prefix), variable.utf8.count <= maxNameBytes,
            variable.utf8.allSatisfy({ ($0 >= 0x41 && $0 <= 0x5a) || ($0 >= 0x30 && $0 <= 0x39) || $0 == 0x5f })
        else { return nil }
        let words = variable.dropFirst(prefix.count).split(separator: "_", omittingEmptySubsequences: false).map { $0.lowercased() }
        guard !words.contains("") else { return nil }
        return resolve(words[...], in: ConfigKeys.root)
    }

    /// The path `words` name in `shape`: an exact key first, else a key whose words begin them and
    /// whose mapping names the rest.
    static func resolve(_ words: ArraySlice<String>, in shape: ConfigKeys.Shape) -> [String]? {
        switch shape {
        case .leaf:
            return nil
        case .keys(let keys):
            // Longer keys first, so that `compression_min_savings` is not read as `compression` + more.
            for key in keys.keys.sorted(by: { ($0.count, $0) > ($1.count, $1) }) {
                let parts = key.split(separator: "_").map(String.init)
                guard words.starts(with: parts) else { continue }
                let rest = words.dropFirst(parts.count)
                if rest.isEmpty { return [key] }
                if let below = resolve(rest, in: keys[key]!) { return [key] + below }
            }
            return nil
        case .named(let entry):
            // The shortest name after which the rest names a key of the entry; else all of it is the name.
            for n in 1..<max(1, words.count) {
                if let below = resolve(words.dropFirst(n), in: entry) { return [words.prefix(n).joined(separator: "_")] + below }
            }
            return [words.joined(separator: "_")]
        }
    }

    /// The overrides `environment` holds, and the `DEPOT_` variables that set nothing (not
    /// counting Depot's other variables).
    static func overrides(_ environment: [String: String]) throws -> (overrides: [Override], unknown: [String]) {
        var found: [Override] = []
        var unknown: [String] = []
        for (name, text) in environment.sorted(by: { $0.key < $1.key }) where name.hasPrefix(prefix) {
            if otherVariables.contains(name) || otherPrefixes.contains(where: { name.hasPrefix($0) }) { continue }
            guard let path = path(of: name) else {
                unknown.append(name)
                continue
            }
            found.append(Override(variable: name, path: path, value: try value(text, variable: name)))
        }
        return (found, unknown)
    }

    /// Environment variables the config names as values (`*_env` keys, `pipelines.runner.pass_env`):
    /// an operator's `DEPOT_WEBHOOK_SECRET` is theirs, not a misspelt key.
    static func referencedVariables(_ node: Any, key: String = "") -> Set<String> {
        switch node {
        case let m as [String: Any]:
            return m.reduce(into: Set<String>()) { $0.formUnion(referencedVariables($1.value, key: $1.key)) }
        case let list as [Any]:
            return list.reduce(into: Set<String>()) { $0.formUnion(referencedVariables($1, key: key)) }
        case let s as String where key.hasSuffix("_env"):
            return [s]
        default:
            return []
        }
    }

    /// A YAML value from a variable's text, checked like the file (YAMLSafety) and bounded.
    static func value(_ text: String, variable: String) throws -> Any {
        guard text.utf8.count <= maxValueBytes else {
            throw DepotError.invalidArgument("$\(variable) is longer than \(maxValueBytes) bytes")
        }
        if text.isEmpty { return "" }
        do {
            guard let node = try Yams.compose(yaml: text) else { return "" }
            if let problem = YAMLSafety.problem(node) { throw DepotError.invalidArgument("$\(variable): \(problem)") }
            guard let value = try Yams.load(yaml: text), !(value is NSNull) else { return "" }
            return value
        } catch let e as DepotError {
            throw e
        } catch {
            throw DepotError.invalidArgument(
                "$\(variable) is not a YAML value (quote a string YAML reads otherwise, e.g. '\"**\"'): \(error)")
        }
    }

    /// `root` with the overrides applied: whole mappings first, then the keys inside them.
    static func apply(_ overrides: [Override], to root: [String: Any]) throws -> [String: Any] {
        var root = root
        for o in overrides.sorted(by: { ($0.path.count, $0.variable) < ($1.path.count, $1.variable) }) {
            try set(&root, o.path[...], o)
        }
        return root
    }

    private static func set(_ mapping: inout [String: Any], _ path: ArraySlice<String>, _ o: Override) throws {
        let key = path.first!
        guard path.count > 1 else {
            mapping[key] = o.value
            return
        }
        var child: [String: Any]
        switch mapping[key] {
        case nil, is NSNull: child = [:]
        case let m as [String: Any]: child = m
        default:
            let at = o.path[..<(o.path.count - path.count + 1)].joined(separator: ".")
            throw DepotError.invalidArgument("$\(o.variable) sets \(o.dotted), but \(at) is not a mapping")
        }
        try set(&child, path.dropFirst(), o)
        mapping[key] = child
    }

    /// The warning for a `DEPOT_` variable that sets no key, when it looks like a key's (its first
    /// words name a top-level key, or a key's variable is a few letters away); nil otherwise.
    static func unknownWarning(_ name: String) -> String? {
        guard name.utf8.count <= maxNameBytes else {
            return "environment variable \(name.prefix(64))… is not a config key's variable: ignored"
        }
        let candidates = ConfigKeys.allPaths().map { (variable($0), $0.joined(separator: ".")) }
        let scored = candidates.map { (candidate: $0, distance: editDistance(name, $0.0)) }
        guard let best = scored.min(by: { ($0.distance, $0.candidate.0) < ($1.distance, $1.candidate.0) }) else { return nil }
        let rest = name.dropFirst(prefix.count)
        let section = ConfigKeys.allPaths().contains { $0.count == 1 && rest.hasPrefix($0[0].uppercased() + "_") }
        guard section || best.distance <= max(2, name.count / 6) else { return nil }
        return "environment variable \(name) is not a config key's variable: ignored. Closest: \(best.candidate.0) (\(best.candidate.1))"
    }

    /// Levenshtein distance (names are at most `maxNameBytes` long).
    static func editDistance(_ a: String, _ b: String) -> Int {
        let a = Array(a.utf8)
        let b = Array(b.utf8)
        var row = Array(0...b.count)
        for i in 1...max(1, a.count) where !a.isEmpty {
            var previous = row[0]
            row[0] = i
            for j in 1...max(1, b.count) where !b.isEmpty {
                let old = row[j]
                row[j] = min(row[j] + 1, row[j - 1] + 1, previous + (a[i - 1] == b[j - 1] ? 0 : 1))
                previous = old
            }
        }
        return a.isEmpty ? b.count : row[b.count]
    }
}

extension ServerConfig {
    /// What `depot serve` runs with: the defaults, overridden by the file at `path` (none: no
    /// file), overridden by the `DEPOT_…` variables of `environment` (ConfigEnvironment). Warnings
    /// (variables that set nothing, world-readable secret files) are in `startupWarnings`.
    public static func load(_ path: String?, environment: [String: String]) throws -> ServerConfig {
        guard let path else { return try parse("", path: "(no file)", environment: environment) }
        let text: String
        do { text = try String(contentsOfFile: path, encoding: .utf8) } catch {
            throw DepotError.invalidArgument("cannot read config \(path): \(error.localizedDescription)")
        }
        return try parse(text, path: path, environment: environment)
    }

    /// The typed parse of `root` with the overrides of `environment` applied (nil: none, and
    /// `*_env` keys read the process's environment). An error about a key a variable set names it.
    static func parse(root: [String: Any], path: String, environment: [String: String]?) throws -> ServerConfig {
        let (overrides, unknown) = try environment.map { try ConfigEnvironment.overrides($0) } ?? ([], [])
        let tree = try ConfigEnvironment.apply(overrides, to: root)
        let referenced = ConfigEnvironment.referencedVariables(tree)
        let warnings = unknown.filter { !referenced.contains($0) }.compactMap(ConfigEnvironment.unknownWarning)
        let reader = ConfigReader(path: path, environment: environment)
        var config: ServerConfig
        do { config = try parse(tree: tree, reader) } catch DepotError.invalidArgument(let message) {
            // The variable behind the key the message names (the longest such path).
            let culprit = overrides.filter { o in
                [" ", ".", "["].contains { message.contains(": \(o.dotted)\($0)") } || message.hasSuffix(": \(o.dotted)")
            }.max { $0.path.count < $1.path.count }
            if let culprit { throw DepotError.invalidArgument(message + " (set by $\(culprit.variable))") }
            if overrides.isEmpty { throw DepotError.invalidArgument(message) }
            let names = overrides.map { "$" + $0.variable }.joined(separator: ", ")
            throw DepotError.invalidArgument(message + " (environment variables setting keys: \(names))")
        }
        config.startupWarnings = warnings + reader.warnings
        config.secretFiles = reader.secretFiles
        return config
    }
}
