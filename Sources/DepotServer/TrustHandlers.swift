import DepotAPI
import DepotCore
import DepotRegistry
import DepotTrust
import Hummingbird

/// Handlers of signatures: a manifest's signatures as this registry verifies them, with each
/// environment's deploy-policy verdict, and the public half of the pipeline key.
struct TrustHandlers: RouteHandlers {
    let registry: Registry
    let trust: TrustService

    func signatures(_ match: RouteMatch, _ request: Request) async throws -> Response {
        let name = try Self.name(match)
        let reference = try RequestParsing.reference(match["reference"])
        let registry = self.registry
        let trust = self.trust
        let answer = try await offload { () -> SignatureListAnswer in
            let manifest = try registry.manifest(name, reference)
            let (checks, truncated) = try trust.signatures(name, manifest.digest)
            var verdicts: [PolicyVerdict] = []
            for environment in trust.policy.environments.keys.sorted() {
                switch try trust.verdict(name, environment: environment, manifest: manifest) {
                case .allow(let reason): verdicts.append(PolicyVerdict(environment: environment, allowed: true, reason: reason))
                case .deny(let reason): verdicts.append(PolicyVerdict(environment: environment, allowed: false, reason: reason))
                }
            }
            return SignatureListAnswer(digest: manifest.digest, signatures: checks, policies: verdicts, truncated: truncated ? true : nil)
        }
        return Reply.encoded(answer)
    }

    func signingKey(_ match: RouteMatch, _ request: Request) async throws -> Response {
        guard let key = trust.signingKey else {
            throw RegistryError(.nameUnknown, "this registry does not sign pipeline outputs (signing.enabled is false)")
        }
        return Reply.encoded(SigningKeyAnswer(name: SignatureFormat.pipelineSigner, keyID: key.keyID, publicKeyPEM: key.publicKeyPEM))
    }
}
