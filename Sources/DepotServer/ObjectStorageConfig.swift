import DepotCore
import DepotObjectStore
import DepotStore
import Foundation

/// `storage.s3` in config/depot.yaml: the bucket that holds sealed packs when
/// `storage.backend: s3`. Kept out of ServerConfig.swift so that file only gains the two keys.
public struct ObjectStorageConfig: Sendable, Equatable {
    public var endpoint = ""
    public var bucket = ""
    public var region = "us-east-1"
    public var prefix = ""
    /// Environment variables holding the credentials, or files (their content, whitespace trimmed).
    public var accessKeyEnv = "AWS_ACCESS_KEY_ID"
    public var secretKeyEnv = "AWS_SECRET_ACCESS_KEY"
    public var accessKeyFile: String?
    public var secretKeyFile: String?
    public var partSizeMiB = 16
    public var cacheMiB = 256

    public init() {}

    static let keys: Set<String> = [
        "endpoint", "bucket", "region", "prefix", "access_key_env", "secret_key_env", "access_key_file", "secret_key_file",
        "part_size_mib", "cache_mib",
    ]

    static func parse(_ raw: Any, _ reader: ConfigReader) throws -> ObjectStorageConfig {
        guard let m = raw as? [String: Any] else { throw reader.error("storage.s3", "must be a mapping") }
        try reader.rejectUnknown(m, known: keys, at: "storage.s3.")
        func text(_ key: String) throws -> String? {
            guard let v = m[key] else { return nil }
            guard let s = v as? String, !s.isEmpty else { throw reader.error("storage.s3.\(key)", "must be a non-empty string") }
            return s
        }
        func int(_ key: String, _ range: ClosedRange<Int>) throws -> Int? {
            guard let v = m[key] else { return nil }
            guard let i = v as? Int, range.contains(i) else {
                throw reader.error("storage.s3.\(key)", "must be an integer from \(range.lowerBound) to \(range.upperBound)")
            }
            return i
        }
        var c = ObjectStorageConfig()
        guard let endpoint = try text("endpoint") else { throw reader.error("storage.s3.endpoint", "is required (http(s)://host[:port])") }
        guard let bucket = try text("bucket") else { throw reader.error("storage.s3.bucket", "is required") }
        c.endpoint = endpoint
        c.bucket = bucket
        if let v = try text("region") { c.region = v }
        if let v = m["prefix"] {
            guard let s = v as? String, !s.hasPrefix("/") else {
                throw reader.error("storage.s3.prefix", "must be a string not starting with /")
            }
            // A prefix names a folder: `depot` and `depot/` both give keys under `depot/`.
            c.prefix = s.isEmpty || s.hasSuffix("/") ? s : s + "/"
        }
        if let v = try text("access_key_env") { c.accessKeyEnv = v }
        if let v = try text("secret_key_env") { c.secretKeyEnv = v }
        c.accessKeyFile = try text("access_key_file")
        c.secretKeyFile = try text("secret_key_file")
        if let v = try int("part_size_mib", 5...1024) { c.partSizeMiB = v }
        if let v = try int("cache_mib", 0...1_048_576) { c.cacheMiB = v }
        return c
    }

    /// A credential from its file, else its environment variable; the error says which to set.
    static func secret(file: String?, env: String, key: String, environment: [String: String]) throws -> String {
        if let file {
            let text: String
            do { text = try String(contentsOfFile: file, encoding: .utf8) } catch {
                throw DepotError.invalidArgument("storage.s3.\(key)_file \(file) cannot be read: \(error.localizedDescription)")
            }
            let value = text.trimmingCharacters(in: .whitespacesAndNewlines)
            guard !value.isEmpty else { throw DepotError.invalidArgument("storage.s3.\(key)_file \(file) is empty") }
            return value
        }
        guard let value = environment[env], !value.isEmpty else {
            throw DepotError.invalidArgument(
                "storage.s3.\(key)_env names \(env), which is not set: export it, or set storage.s3.\(key)_file to a file holding it")
        }
        return value
    }

    /// The S3 settings, credentials read now.
    public func settings(environment: [String: String] = ProcessInfo.processInfo.environment) throws -> S3Settings {
        var s = S3Settings(
            endpoint: endpoint, bucket: bucket, region: region, prefix: prefix,
            accessKey: try Self.secret(file: accessKeyFile, env: accessKeyEnv, key: "access_key", environment: environment),
            secretKey: try Self.secret(file: secretKeyFile, env: secretKeyEnv, key: "secret_key", environment: environment))
        s.partSize = partSizeMiB << 20
        return s
    }
}

extension ServerConfig {
    /// The object store of `storage.backend: s3` (nil for the local backend, the default).
    public func makeObjectStore() throws -> (any PackObjectStore)? {
        guard storageBackend == "s3" else { return nil }
        guard let s3 else { throw DepotError.invalidArgument("storage.backend is s3 but storage.s3 is not set") }
        return try S3PackObjectStore(settings: try s3.settings())
    }
}
