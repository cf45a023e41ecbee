/// A parsed `/depot/v1/...` path (Depot's extension API; see docs/EXTENSION-API.md).
enum ExtensionRoute: Equatable {
    case info
    case missingChunks(String)
    case uploadChunks(String)
    case recipe(String, String)
    case fetchChunks(String, String)
    case metadata(String, String)

    var label: String {
        switch self {
        case .info: return "ext_info"
        case .missingChunks: return "ext_missing"
        case .uploadChunks: return "ext_chunks_upload"
        case .recipe: return "ext_recipe"
        case .fetchChunks: return "ext_chunks_fetch"
        case .metadata: return "ext_metadata"
        }
    }

    init?(path: String) {
        let prefix = "/depot/v1/"
        guard path.hasPrefix(prefix) else { return nil }
        let rest = Substring(path.dropFirst(prefix.count))
        if rest == "info" { self = .info; return }
        let repos = "repositories/"
        guard rest.hasPrefix(repos) else { return nil }
        let tail = rest.dropFirst(repos.count)
        if tail.hasSuffix("/chunks/missing") { self = .missingChunks(String(tail.dropLast("/chunks/missing".count))); return }
        for (suffix, make) in [("/recipe", { ExtensionRoute.recipe($0, $1) }), ("/chunks", { ExtensionRoute.fetchChunks($0, $1) }),
                               ("/metadata", { ExtensionRoute.metadata($0, $1) })] as [(String, (String, String) -> ExtensionRoute)] {
            guard tail.hasSuffix(suffix) else { continue }
            let head = tail.dropLast(suffix.count)
            let marker = suffix == "/metadata" ? "/manifests/" : "/blobs/"
            guard let r = head.range(of: marker, options: .backwards) else { continue }
            let ref = head[r.upperBound...]
            guard !ref.isEmpty, !ref.contains("/") else { continue }
            self = make(String(head[..<r.lowerBound]), String(ref))
            return
        }
        if tail.hasSuffix("/chunks") { self = .uploadChunks(String(tail.dropLast("/chunks".count))); return }
        return nil
    }
}
