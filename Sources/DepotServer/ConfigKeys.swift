/// The keys of the config file as a tree, for what names keys from outside the file (environment
/// variables: `ConfigEnvironment`). The top level and the sections' own keys are the parser's
/// lists (`ConfigReader.sectionKeys`); the mappings below them are listed here, and their parsers
/// check the keys they are given against this list, so a key is added in one place.
///
/// A new mapping inside a section (say `storage.s3`) goes into `nested`; so does a new top-level
/// key that is not parsed as a section. A key not listed is a leaf: its variable sets it whole
/// (a scalar, or a list or mapping written as YAML). `ConfigEnvironmentTests` fails for a mapping
/// the parser checks that is missing here.
enum ConfigKeys {
    /// What a key holds.
    indirect enum Shape: Sendable, Equatable {
        /// A value set whole.
        case leaf
        /// A mapping with these keys.
        case keys([String: Shape])
        /// A mapping whose keys are names the operator chooses (environments, key names), each
        /// value of this shape.
        case named(Shape)
    }

    /// How `nested` describes a mapping.
    enum Mapping: Sendable {
        /// Fixed keys.
        case keys(Set<String>)
        /// Operator-chosen names; each value a mapping with these keys (empty: a leaf).
        case named(Set<String>)
        /// A top-level key set whole (a list of mappings: `webhooks`).
        case leaf
    }

    /// Mappings below the top level (and top-level keys that are not sections), by dotted path.
    static let nested: [String: Mapping] = [
        "server.tls": .keys(["cert_file", "key_file", "client_ca_file", "client_auth"]),
        "pipelines.runner": .keys([
            "enabled", "name", "labels", "concurrency", "work_dir", "python", "hooks_dir", "pass_env", "bwrap", "sandbox_paths",
            "devices", "sandbox_uid", "limits",
        ]),
        "pipelines.runner.limits": .keys(["memory_gib", "cpu_seconds", "file_size_gib", "processes", "workspace_gib"]),
        // The S3 pack backend (issue 16; its parser, ObjectStorageConfig, lands from the s3-packs branch).
        "storage.s3": .keys([
            "endpoint", "bucket", "region", "prefix", "access_key_env", "secret_key_env", "access_key_file", "secret_key_file",
            "part_size_mib", "cache_mib",
        ]),
        "signing.trusted_keys": .named([]),
        "deploy_policy": .named(["signed_by", "python_backend_signed_by"]),
        "webhooks": .leaf,
    ]

    /// The keys the parser accepts in the mapping at `path` (for a named mapping: in each entry).
    static func known(_ path: String) -> Set<String> {
        switch nested[path] {
        case .keys(let keys), .named(let keys): return keys
        case .leaf, nil: return []
        }
    }

    /// The whole tree.
    static let root: Shape = {
        var top: [String: Shape] = [:]
        for (section, keys) in ConfigReader.sectionKeys { top[section] = shape(section, keys: keys) }
        for path in nested.keys where !path.contains(".") { top[path] = shape(path) }
        return .keys(top)
    }()

    static func shape(_ path: String, keys: Set<String>? = nil) -> Shape {
        if let keys { return .keys(Dictionary(uniqueKeysWithValues: keys.map { ($0, shape(path + "." + $0)) })) }
        switch nested[path] {
        case .keys(let keys): return shape(path, keys: keys)
        case .named(let keys): return .named(keys.isEmpty ? .leaf : .keys(Dictionary(uniqueKeysWithValues: keys.map { ($0, .leaf) })))
        case .leaf, nil: return .leaf
        }
    }

    /// Every key path of the tree, mappings included (a named mapping's entries are not listed).
    static func allPaths(_ shape: Shape = root, _ prefix: [String] = []) -> [[String]] {
        guard case .keys(let keys) = shape else { return [] }
        return keys.sorted { $0.key < $1.key }.flatMap { key, child in [prefix + [key]] + allPaths(child, prefix + [key]) }
    }
}
