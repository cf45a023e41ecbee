import DepotCore
import DepotTrust
import Foundation

extension ServerConfig {
    /// The `signing:` section (docs/SECURITY.md; every key documented in config/depot.yaml).
    public struct SigningConfig: Sendable, Equatable {
        /// Sign every pipeline stage's output with the registry's key (name `pipeline` in policies).
        public var enabled = true
        /// The P-256 private key; default `<storage root>/keys/signing-key.pem`, created on first
        /// start (0600). Replicas must share one.
        public var keyFile = ""
        /// Public keys (PEM files) trusted to sign, by the names deploy policies use.
        public var trustedKeys: [String: String] = [:]

        public init() {}
    }

    static func parseSigning(_ s: [String: Any], _ reader: ConfigReader, into config: inout ServerConfig) throws {
        if let v: Bool = try reader.value(s, "enabled") { config.signing.enabled = v }
        if let v: String = try reader.value(s, "key_file") { config.signing.keyFile = v }
        if let raw = s["trusted_keys"] {
            guard let map = raw as? [String: Any] else {
                throw reader.error("signing.trusted_keys", "must be a mapping of key names to PEM public key files")
            }
            for (name, path) in map {
                guard Self.isKeyName(name) else {
                    throw reader.error("signing.trusted_keys.\(name.prefix(64))", "is not a key name ([a-z0-9_-], 1-64)")
                }
                guard name != SignatureFormat.pipelineSigner else {
                    throw reader.error("signing.trusted_keys.pipeline", "is the registry's own key (signing.key_file); choose another name")
                }
                guard let p = path as? String, !p.isEmpty else { throw reader.error("signing.trusted_keys.\(name)", "must be a file path") }
                config.signing.trustedKeys[name] = p
            }
        }
    }

    /// The `deploy_policy:` section: per environment, the keys one of which must have signed a
    /// bundle before it is rolled out.
    static func parseDeployPolicy(_ s: [String: Any], _ reader: ConfigReader, into config: inout ServerConfig) throws {
        for (environment, raw) in s {
            let at = "deploy_policy.\(environment.prefix(64))"
            guard let rule = raw as? [String: Any] else {
                throw reader.error(at, "must be a mapping (signed_by, python_backend_signed_by)")
            }
            try reader.rejectUnknown(rule, known: ConfigKeys.known("deploy_policy"), at: at + ".")
            func names(_ key: String) throws -> [String]? {
                guard let v = rule[key] else { return nil }
                guard let list = v as? [String], list.allSatisfy(Self.isKeyName) else {
                    throw reader.error("\(at).\(key)", "must be a list of key names (pipeline, or names under signing.trusted_keys)")
                }
                return list
            }
            config.deployPolicy.environments[environment] = DeployPolicy.Rule(
                signedBy: try names("signed_by") ?? [], pythonBackendSignedBy: try names("python_backend_signed_by"))
        }
    }

    static func isKeyName(_ s: String) -> Bool {
        !s.isEmpty && s.utf8.count <= 64
            && s.utf8.allSatisfy { ($0 >= 0x61 && $0 <= 0x7a) || ($0 >= 0x30 && $0 <= 0x39) || $0 == 0x2d || $0 == 0x5f }
    }
}
