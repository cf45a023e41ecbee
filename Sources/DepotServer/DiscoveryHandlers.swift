import DepotAPI
import DepotAuth
import DepotCore
import DepotRegistry
import DepotStore
import Foundation
import HTTPTypes
import Hummingbird
import NIOCore

/// Listings (`/v2/_catalog`, `/v2/<name>/tags/list`, `/v2/<name>/referrers/<digest>`), paged
/// with `n` and `last` and a `Link` header to the next page.
struct DiscoveryHandlers: RouteHandlers {
    let registry: Registry
    /// The default page size.
    let limits: ServerConfig.ServerLimits
    let auth: AuthService?

    func tags(_ match: RouteMatch, _ request: Request) async throws -> Response {
        try await tags(try Self.name(match), request)
    }

    func referrers(_ match: RouteMatch, _ request: Request) async throws -> Response {
        try await referrers(try Self.name(match), try RequestParsing.digest(match["digest"]), request)
    }

    func tags(_ name: RepositoryName, _ request: Request) async throws -> Response {
        let n = try RequestParsing.pageSize(request) ?? limits.defaultPageSize
        let last = request.uri.queryParameters["last"].map(String.init)
        let limit = n == 0 ? 0 : n + 1
        var tags = try await offload { try registry.tags(name, after: last, limit: limit) }
        var headers: HTTPFields = [:]
        if n > 0, tags.count > n {
            tags.removeLast(tags.count - n)
            headers[.link] = "</v2/\(name)/tags/list?n=\(n)&last=\(tags.last ?? "")>; rel=\"next\""
        }
        return Reply.encoded(TagList(name: name.value, tags: tags), headers: headers)
    }

    func catalog(_ request: Request) async throws -> Response {
        let n = try RequestParsing.pageSize(request) ?? limits.defaultPageSize
        let last = request.uri.queryParameters["last"].map(String.init)
        let limit = n == 0 ? 0 : n + 1
        var names: [String]
        if let auth, auth.enabled, let principal = Caller.principal {
            // Only the repositories the caller may pull: read on in batches until a page is full.
            let policy = auth.policy
            let batch = max(limit, 256)
            names = []
            var cursor = last
            while true {
                let after = cursor
                let got = try await offload { try registry.repositories(after: after, limit: limit == 0 ? 0 : batch) }
                names += got.filter { Authorizer.canPull(principal, $0, policy: policy) }
                if limit == 0 || names.count >= limit || got.count < batch { break }
                cursor = got.last
            }
            if limit > 0, names.count > limit { names.removeLast(names.count - limit) }
        } else {
            names = try await offload { try registry.repositories(after: last, limit: limit) }
        }
        var headers: HTTPFields = [:]
        if n > 0, names.count > n {
            names.removeLast(names.count - n)
            headers[.link] = "</v2/_catalog?n=\(n)&last=\(names.last ?? "")>; rel=\"next\""
        }
        return Reply.encoded(RepositoryList(repositories: names), headers: headers)
    }

    func referrers(_ name: RepositoryName, _ digest: Digest, _ request: Request) async throws -> Response {
        let artifactType = request.uri.queryParameters["artifactType"].map(String.init)
        let n = try RequestParsing.pageSize(request) ?? limits.defaultPageSize
        let after = try request.uri.queryParameters["last"].map { try RequestParsing.digest(String($0)) }
        var descriptors = try await offload {
            try registry.referrers(name, digest, artifactType: artifactType, after: after, limit: n == 0 ? 0 : n + 1)
        }
        var headers: HTTPFields = [:]
        if artifactType != nil { headers[.ociFiltersApplied] = "artifactType" }
        if n > 0, descriptors.count > n {
            descriptors.removeLast(descriptors.count - n)
            var next = "/v2/\(name)/referrers/\(digest)?n=\(n)&last=\(descriptors.last!.digest)"
            if let artifactType, let escaped = artifactType.addingPercentEncoding(withAllowedCharacters: .alphanumerics) {
                next += "&artifactType=\(escaped)"
            }
            headers[.link] = "<\(next)>; rel=\"next\""
        }
        return Reply.encoded(OCIReferrersIndex(manifests: descriptors), contentType: MediaType.ociIndex, headers: headers)
    }
}
