import DepotCore
import DepotRegistry
import Foundation

/// A parsed `/v2/...` path. Repository names contain slashes, so routes are recognised by
/// their last fixed segment (`/manifests/`, `/blobs/`, `/blobs/uploads/`, `/tags/list`, `/referrers/`).
enum Route: Equatable {
    case base
    case catalog
    case tags(String)
    case manifest(String, String)
    case blob(String, String)
    case uploads(String)
    case upload(String, String)
    case referrers(String, String)

    /// A short label for metrics.
    var label: String {
        switch self {
        case .base: return "base"
        case .catalog: return "catalog"
        case .tags: return "tags"
        case .manifest: return "manifest"
        case .blob: return "blob"
        case .uploads, .upload: return "upload"
        case .referrers: return "referrers"
        }
    }

    init?(path: String) {
        guard path == "/v2" || path.hasPrefix("/v2/") else { return nil }
        let rest = path.dropFirst(4)
        if rest.isEmpty {
            self = .base
            return
        }
        if rest == "_catalog" {
            self = .catalog
            return
        }
        if rest.hasSuffix("/tags/list") {
            self = .tags(String(rest.dropLast("/tags/list".count)))
            return
        }
        if rest.hasSuffix("/blobs/uploads") || rest.hasSuffix("/blobs/uploads/") {
            let name = rest.hasSuffix("/") ? rest.dropLast("/blobs/uploads/".count) : rest.dropLast("/blobs/uploads".count)
            self = .uploads(String(name))
            return
        }
        for (marker, make) in [
            ("/blobs/uploads/", { Route.upload($0, $1) }), ("/manifests/", { Route.manifest($0, $1) }),
            ("/referrers/", { Route.referrers($0, $1) }), ("/blobs/", { Route.blob($0, $1) }),
        ] as [(String, (String, String) -> Route)] {
            if let r = rest.range(of: marker, options: .backwards) {
                let tail = rest[r.upperBound...]
                guard !tail.isEmpty, !tail.contains("/") else { continue }
                self = make(String(rest[..<r.lowerBound]), String(tail))
                return
            }
        }
        return nil
    }
}
