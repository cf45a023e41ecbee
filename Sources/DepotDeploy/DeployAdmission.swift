import DepotCatalog
import DepotCore

/// Decides whether a bundle may be rolled out to an environment (the deploy policy: which
/// signatures it needs). `Deployments.start` asks it before anything changes, for `depot rollout
/// start` and a pipeline's canary stage alike.
public protocol DeployAdmission: Sendable {
    /// Throws a `RegistryError` (`.denied`, saying which signature is missing) when `manifest` may
    /// not be rolled out to `environment` of `repository`.
    func admit(_ repository: RepositoryName, environment: String, manifest: ManifestRecord, actor: String) throws
}
