import DepotCore
import DepotTestSupport
import Foundation
import Testing
import Yams

@testable import DepotServer

/// deploy/kubernetes: the config the ConfigMap ships, with the Deployment's DEPOT_ variables, is
/// one `depot serve` accepts. (scripts/check_kubernetes.py checks the manifests themselves.)
@Suite struct KubernetesConfigTests {
    /// Keys the manifests use that other work of issue 16 adds (the PostgreSQL catalog, S3 packs):
    /// while the parser does not know them yet they are taken out, and only they; once it does,
    /// they are checked like the rest.
    static let pending: Set<String> = ["catalog", "storage.backend", "storage.s3"]

    @Test func theConfigMapAndTheDeploymentsVariablesAreAValidConfig() throws {
        let dir = repoRoot + "/deploy/kubernetes"
        let configMap = try #require(
            try Yams.load(yaml: String(contentsOfFile: dir + "/configmap.yaml", encoding: .utf8)) as? [String: Any])
        let text = try #require((configMap["data"] as? [String: Any])?["depot.yaml"] as? String)
        var tree = try #require(try Yams.load(yaml: text) as? [String: Any])
        let deployment = try #require(
            try Yams.load(yaml: String(contentsOfFile: dir + "/deployment.yaml", encoding: .utf8)) as? [String: Any])
        let containers = try #require(
            ((deployment["spec"] as? [String: Any])?["template"] as? [String: Any]).flatMap {
                ($0["spec"] as? [String: Any])?["containers"]
            }
                as? [[String: Any]])
        var environment: [String: String] = [:]
        for e in containers[0]["env"] as? [[String: Any]] ?? [] {
            guard let name = e["name"] as? String else { continue }
            // Values from the Secret: any non-empty text stands for them here.
            environment[name] = e["value"] as? String ?? "from-the-secret"
        }
        #expect(environment.keys.contains { $0.hasPrefix("DEPOT_") })
        // The Secret's files, made here (the pod has them under /etc/depot/secrets).
        let secrets = TempDir("k8s-secrets")
        tree = Self.replacingSecretFiles(tree, in: secrets.path)
        var removed: [String] = []
        while true {
            do {
                let c = try ServerConfig.parse(try Yams.dump(object: tree), path: "configmap.yaml", environment: environment)
                #expect(c.auth.enabled && c.listenHost == "0.0.0.0" && !c.pipelines.runnerEnabled)
                #expect(c.startupWarnings.isEmpty, "\(c.startupWarnings)")
                break
            } catch DepotError.invalidArgument(let message) {
                let key = Self.pending.first { message.contains(": \($0) is not a known setting") }
                guard let key, !removed.contains(key) else {
                    Issue.record("\(message)")
                    break
                }
                removed.append(key)
                Self.remove(key.split(separator: ".").map(String.init)[...], from: &tree)
            }
        }
    }

    static func replacingSecretFiles(_ node: [String: Any], in dir: String) -> [String: Any] {
        node.reduce(into: [String: Any]()) { out, entry in
            if let m = entry.value as? [String: Any] {
                out[entry.key] = replacingSecretFiles(m, in: dir)
            } else if entry.key.hasSuffix("_file"), let path = entry.value as? String, path.hasPrefix("/etc/depot/secrets/") {
                let local = dir + "/" + (path as NSString).lastPathComponent
                FileManager.default.createFile(atPath: local, contents: Data("secret-value\n".utf8), attributes: [.posixPermissions: 0o600])
                out[entry.key] = local
            } else {
                out[entry.key] = entry.value
            }
        }
    }

    static func remove(_ path: ArraySlice<String>, from tree: inout [String: Any]) {
        guard let key = path.first else { return }
        if path.count == 1 {
            tree.removeValue(forKey: key)
        } else if var child = tree[key] as? [String: Any] {
            remove(path.dropFirst(), from: &child)
            tree[key] = child
        }
    }
}
