/// Which signatures a digest needs before it may be rolled out to an environment
/// (`deploy_policy:` in depot.yaml). Decision logic only: the caller says which trusted keys
/// verified and whether the bundle runs Python code on the nodes.
public struct DeployPolicy: Sendable, Equatable {
    public struct Rule: Sendable, Equatable {
        /// A signature by any one of these keys is required (empty: none).
        public var signedBy: [String]
        /// For bundles whose `config.pbtxt` names the Python backend (its `model.py` runs on every
        /// node): a signature by one of these instead (nil: `signedBy` applies).
        public var pythonBackendSignedBy: [String]?
        public init(signedBy: [String], pythonBackendSignedBy: [String]? = nil) {
            self.signedBy = signedBy
            self.pythonBackendSignedBy = pythonBackendSignedBy
        }
    }

    /// Rules by environment (an environment without a rule needs no signature).
    public var environments: [String: Rule]

    public init(environments: [String: Rule] = [:]) { self.environments = environments }

    public enum Decision: Sendable, Equatable {
        case allow(reason: String)
        case deny(reason: String)
    }

    /// Whether a bundle signed by `signers` (trusted key names that verified) may be rolled out
    /// to `environment`.
    public func decide(environment: String, signers: Set<String>, pythonBackend: Bool) -> Decision {
        guard let rule = environments[environment] else { return .allow(reason: "no deploy policy for \(environment)") }
        let needed = pythonBackend ? (rule.pythonBackendSignedBy ?? rule.signedBy) : rule.signedBy
        guard !needed.isEmpty else { return .allow(reason: "the \(environment) policy requires no signature") }
        if let by = needed.first(where: { signers.contains($0) }) {
            return .allow(reason: "signed by \(by), as the \(environment) policy requires")
        }
        let what = pythonBackend ? "a Python-backend bundle (its model.py runs on every node)" : "a bundle"
        let have =
            signers.isEmpty ? "it has no signature by a trusted key" : "it is signed only by \(signers.sorted().joined(separator: ", "))"
        let keys = needed.count == 1 ? "the \(needed[0]) key" : "one of: \(needed.joined(separator: ", "))"
        let others = needed.filter { $0 != SignatureFormat.pipelineSigner }
        var fix: [String] = []
        if needed.contains(SignatureFormat.pipelineSigner) { fix.append("deploy a pipeline output (the registry signs those)") }
        if !others.isEmpty { fix.append("sign it with `depot sign --key` (\(others.joined(separator: " or ")))") }
        return .deny(
            reason: "\(environment) requires \(what) to be signed by \(keys); \(have). To deploy it, \(fix.joined(separator: ", or "))")
    }
}
