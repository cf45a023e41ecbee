import DepotCatalog
import DepotCore
import Foundation

/// The `catalog:` section: which database holds the catalog. `sqlite` (the default) keeps
/// `catalog.db` in the storage root; `postgres` shares one PostgreSQL database among replicas.
public struct CatalogConfig: Sendable, Equatable {
    public enum Driver: String, Sendable {
        case sqlite
        case postgres
    }

    public var driver = Driver.sqlite
    /// libpq connection string: `postgres://USER@HOST:PORT/DB?sslmode=verify-full` or
    /// `host=… dbname=…`. A password written here is refused: use `password_env` or `password_file`.
    public var url: String?
    /// The password, read at start from this environment variable…
    public var passwordEnv: String?
    /// …or from this file (one line; a trailing newline is dropped).
    public var passwordFile: String?
    public var schema = "public"
    public var poolSize = 16
    public var connectTimeoutSeconds = 10

    public init() {}

    /// Where the catalog is, with the password read; nil for SQLite in the storage root.
    public func location() throws -> CatalogLocation? {
        guard driver == .postgres else { return nil }
        guard let url else { throw DepotError.invalidArgument("catalog.url is required with catalog.driver: postgres") }
        var password: String?
        if let env = passwordEnv {
            guard let v = ProcessInfo.processInfo.environment[env], !v.isEmpty else {
                throw DepotError.invalidArgument("catalog.password_env names \(env), which is not set")
            }
            password = v
        }
        if let file = passwordFile {
            password = try Self.readSecret(file, key: "catalog.password_file")
        }
        return .postgres(
            PostgresSettings(url: url, password: password, schema: schema, poolSize: poolSize, connectTimeoutSeconds: connectTimeoutSeconds)
        )
    }

    /// A secret file: at most 64 KiB, one trailing newline dropped.
    static func readSecret(_ path: String, key: String) throws -> String {
        guard let attributes = try? FileManager.default.attributesOfItem(atPath: path) else {
            throw DepotError.invalidArgument("\(key): cannot read \(path)")
        }
        if let size = attributes[.size] as? NSNumber, size.intValue > 64 << 10 {
            throw DepotError.invalidArgument("\(key): \(path) is larger than 64 KiB; it should hold one secret")
        }
        guard let data = FileManager.default.contents(atPath: path), var text = String(data: data, encoding: .utf8) else {
            throw DepotError.invalidArgument("\(key): cannot read \(path) as UTF-8 text")
        }
        if text.hasSuffix("\n") { text.removeLast() }
        if text.hasSuffix("\r") { text.removeLast() }
        guard !text.isEmpty else { throw DepotError.invalidArgument("\(key): \(path) is empty") }
        return text
    }
}

extension ServerConfig {
    static func parseCatalog(_ s: [String: Any], _ reader: ConfigReader, into config: inout ServerConfig) throws {
        if let v: String = try reader.value(s, "driver") {
            guard let d = CatalogConfig.Driver(rawValue: v) else { throw reader.error("catalog.driver", "must be sqlite or postgres") }
            config.catalog.driver = d
        }
        if let v: String = try reader.value(s, "url") {
            guard !v.isEmpty, v.count <= 4096 else { throw reader.error("catalog.url", "must be a libpq connection string") }
            if Self.urlHasPassword(v) {
                throw reader.error("catalog.url", "holds a password: move it to catalog.password_env or catalog.password_file")
            }
            config.catalog.url = v
        }
        if let v: String = try reader.value(s, "password_env") { config.catalog.passwordEnv = v }
        if let v: String = try reader.value(s, "password_file") { config.catalog.passwordFile = v }
        if config.catalog.passwordEnv != nil && config.catalog.passwordFile != nil {
            throw reader.error("catalog", "takes password_env or password_file, not both")
        }
        if let v: String = try reader.value(s, "schema") {
            guard PostgresSettings.isValidSchema(v) else {
                throw reader.error("catalog.schema", "must be 1-63 lower-case letters, digits and _, starting with a letter")
            }
            config.catalog.schema = v
        }
        if let v: Int = try reader.value(s, "pool_size") {
            guard (1...1000).contains(v) else { throw reader.error("catalog.pool_size", "must be 1 to 1000") }
            config.catalog.poolSize = v
        }
        if let v: Int = try reader.value(s, "connect_timeout_seconds") {
            guard (1...600).contains(v) else { throw reader.error("catalog.connect_timeout_seconds", "must be 1 to 600") }
            config.catalog.connectTimeoutSeconds = v
        }
        if config.catalog.driver == .postgres && config.catalog.url == nil {
            throw reader.error("catalog.url", "is required with driver: postgres")
        }
    }

    /// `postgres://user:secret@host` or `password=secret`: a password kept in the config file.
    static func urlHasPassword(_ url: String) -> Bool {
        if let scheme = url.range(of: "://"), let at = url[scheme.upperBound...].firstIndex(of: "@") {
            if url[scheme.upperBound..<at].contains(":") { return true }
        }
        return url.range(of: "password=", options: .caseInsensitive) != nil
    }
}
