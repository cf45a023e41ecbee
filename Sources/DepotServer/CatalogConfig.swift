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
    /// `host=… dbname=…`. A password written in it is refused: use `password_file` or `password_env`.
    public var url: String?
    /// The password (`password`, `password_env` or `password_file`, read at start).
    public var password: String?
    public var schema = "public"
    public var poolSize = 16
    public var connectTimeoutSeconds = 10
    /// `PostgresSettings.idleInTransactionTimeoutSeconds` (0: off).
    public var idleInTransactionTimeoutSeconds = 300
    /// `PostgresSettings.statementTimeoutSeconds` (0, the default: no limit).
    public var statementTimeoutSeconds = 0

    public init() {}

    /// Where the catalog is, with the password read; nil for SQLite in the storage root.
    public func location() throws -> CatalogLocation? {
        guard driver == .postgres else { return nil }
        guard let url else { throw DepotError.invalidArgument("catalog.url is required with catalog.driver: postgres") }
        var settings = PostgresSettings(
            url: url, password: password, schema: schema, poolSize: poolSize, connectTimeoutSeconds: connectTimeoutSeconds)
        settings.idleInTransactionTimeoutSeconds = idleInTransactionTimeoutSeconds
        settings.statementTimeoutSeconds = statementTimeoutSeconds
        return .postgres(settings)
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
        config.catalog.password = try reader.secret(s, "password", at: "catalog")
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
        if let v: Int = try reader.value(s, "idle_in_transaction_timeout_seconds") {
            guard (0...86_400).contains(v) else {
                throw reader.error("catalog.idle_in_transaction_timeout_seconds", "must be 0 (off) to 86400")
            }
            config.catalog.idleInTransactionTimeoutSeconds = v
        }
        if let v: Int = try reader.value(s, "statement_timeout_seconds") {
            guard (0...86_400).contains(v) else { throw reader.error("catalog.statement_timeout_seconds", "must be 0 (off) to 86400") }
            config.catalog.statementTimeoutSeconds = v
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
