import AsyncHTTPClient
import DepotAPI
import DepotCore
import DepotStore
import Foundation
import NIOCore
import NIOHTTP1

/// What a registry announces under `GET /depot/v1/info` (absent on plain OCI registries).
/// One chunk of a recipe: its SHA-256 and length (offsets follow from the order).
public struct ChunkRef: Sendable, Equatable {
    public var hash: SHA256.Value
    public var length: Int
    public init(hash: SHA256.Value, length: Int) {
        self.hash = hash
        self.length = length
    }
}

/// A manifest as fetched: its bytes, media type and digest.
public struct FetchedManifest: Sendable {
    public var bytes: [UInt8]
    public var mediaType: String
    public var digest: Digest
}

/// Typed calls of the OCI distribution API and Depot's `/depot/v1` extension.
extension RegistryConnection {
    static let manifestAccept = [MediaType.ociManifest, MediaType.ociIndex, MediaType.dockerManifest, MediaType.dockerManifestList].joined(
        separator: ", ")

    /// The extension's parameters, or nil when the registry does not speak it.
    public func extensionInfo() async throws -> ExtensionInfo? {
        let r = try await send(.GET, Routes[.info].path(), accept: [200, 404, 405])
        let body = try await collect(r, limit: 1 << 20)
        guard r.status.code == 200 else { return nil }
        do { return try WireJSON.decode(ExtensionInfo.self, from: body, what: "the registry's /depot/v1/info answer") } catch {
            throw ClientError("\(error)")
        }
    }

    public func blobExists(_ repo: String, _ digest: Digest) async throws -> Bool {
        let r = try await send(.HEAD, Routes[.blobHead].path(name: repo, ["digest": "\(digest)"]), accept: [200, 404])
        return r.status.code == 200
    }

    /// The hashes the registry lacks among `hashes`.
    func missingChunks(_ repo: String, _ hashes: ArraySlice<SHA256.Value>) async throws -> [SHA256.Value] {
        var body = [UInt8]()
        body.reserveCapacity(hashes.count * 32)
        for h in hashes { body.append(contentsOf: h.byteArray) }
        let r = try await send(
            .POST, Routes[.missingChunks].path(name: repo),
            headers: [("Content-Type", "application/octet-stream")], body: .bytes(body), accept: [200])
        let answer = try await collect(r, limit: hashes.count * 32)
        guard answer.count % 32 == 0 else { throw ClientError("malformed missing-chunks answer") }
        return answer.withUnsafeBytes { p in
            stride(from: 0, to: p.count, by: 32).map { SHA256.Value(bytes: UnsafeRawBufferPointer(rebasing: p[$0..<($0 + 32)])) }
        }
    }

    func uploadChunkRecords(_ repo: String, _ records: [UInt8]) async throws {
        try await uploadChunkRecords(repo, ByteBuffer(bytes: records))
    }

    func uploadChunkRecords(_ repo: String, _ records: ByteBuffer) async throws {
        let r = try await send(
            .POST, Routes[.uploadChunks].path(name: repo),
            headers: [("Content-Type", "application/octet-stream")], body: .buffer(records), accept: [201])
        _ = try await collect(r, limit: 1 << 16)
    }

    /// With `states`, the server checks the digest in parallel segments (`BlobHashStates`).
    func commitRecipe(_ repo: String, _ digest: Digest, chunks: [ChunkRef], chunker: String, states: BlobHashStates? = nil) async throws {
        var body = [UInt8]()
        body.reserveCapacity(chunks.count * 36)
        for c in chunks {
            body.append(contentsOf: c.hash.byteArray)
            withUnsafeBytes(of: UInt32(c.length).littleEndian) { body.append(contentsOf: $0) }
        }
        let r = try await send(
            .PUT, Routes[.recipePut].path(name: repo, ["digest": "\(digest)"]),
            headers: [("Content-Type", "application/octet-stream"), ("Depot-Chunker", chunker)]
                + (states.map { [(BlobHashStates.header, $0.headerValue)] } ?? []),
            body: .bytes(body), accept: [201])
        _ = try await collect(r, limit: 1 << 16)
    }

    func recipe(_ repo: String, _ digest: Digest) async throws -> [ChunkRef] {
        let r = try await send(.GET, Routes[.recipeGet].path(name: repo, ["digest": "\(digest)"]), accept: [200])
        let body = try await collect(r, limit: 256 << 20)
        guard body.count % 36 == 0 else { throw ClientError("malformed recipe for \(digest)") }
        let refs = body.withUnsafeBytes { p in
            stride(from: 0, to: p.count, by: 36).map {
                ChunkRef(
                    hash: SHA256.Value(bytes: UnsafeRawBufferPointer(rebasing: p[$0..<($0 + 32)])),
                    length: Int(UInt32(littleEndian: p.loadUnaligned(fromByteOffset: $0 + 32, as: UInt32.self))))
            }
        }
        // Never trust lengths from the wire: every chunk is 1...max chunk bytes.
        guard refs.allSatisfy({ $0.length >= 1 && $0.length <= ChunkerParameters.v1.maxSize }) else {
            throw ClientError("the registry's recipe for \(digest) has a chunk length outside 1...\(ChunkerParameters.v1.maxSize)")
        }
        return refs
    }

    /// Starts fetching chunk records of a blob; the caller streams the body.
    func fetchChunks(_ repo: String, _ digest: Digest, _ hashes: [SHA256.Value]) async throws -> HTTPClientResponse {
        var body = [UInt8]()
        for h in hashes { body.append(contentsOf: h.byteArray) }
        return try await send(
            .POST, Routes[.fetchChunks].path(name: repo, ["digest": "\(digest)"]),
            headers: [("Content-Type", "application/octet-stream")], body: .bytes(body), accept: [200])
    }

    /// Uploads a blob through the standard OCI API (POST, then PUT with the whole body).
    func uploadBlob(_ repo: String, _ digest: Digest, body: Body) async throws {
        // The spec's form ends in a slash, and distribution's router requires it.
        let start = try await send(.POST, Routes[.uploadStart].path(name: repo) + "/", accept: [202])
        _ = try await collect(start, limit: 1 << 16)
        guard let location = start.headers.first(name: "Location") else {
            throw ClientError("the registry started an upload without a Location")
        }
        let separator = location.contains("?") ? "&" : "?"
        let r = try await send(
            .PUT, location + separator + "digest=\(digest)",
            headers: [("Content-Type", "application/octet-stream"), ("Content-Length", String(body.length))],
            body: body, accept: [201])
        _ = try await collect(r, limit: 1 << 16)
    }

    public func manifest(_ repo: String, _ reference: String) async throws -> FetchedManifest {
        let r = try await send(
            .GET, Routes[.manifestGet].path(name: repo, ["reference": reference]), headers: [("Accept", Self.manifestAccept)], accept: [200]
        )
        let bytes = try await collect(r, limit: 4 << 20)
        let digest = Digest.of(bytes)
        if reference.hasPrefix("sha256:"), reference != digest.description {
            throw ClientError("manifest \(reference) arrived with digest \(digest): refusing it")
        }
        let type = r.headers.first(name: "Content-Type").map { String($0.split(separator: ";")[0]) } ?? MediaType.ociManifest
        return FetchedManifest(bytes: bytes, mediaType: type, digest: digest)
    }

    @discardableResult
    public func putManifest(_ repo: String, _ reference: String, bytes: [UInt8], mediaType: String) async throws -> Digest {
        let r = try await send(
            .PUT, Routes[.manifestPut].path(name: repo, ["reference": reference]), headers: [("Content-Type", mediaType)],
            body: .bytes(bytes), accept: [201])
        _ = try await collect(r, limit: 1 << 16)
        return Digest.of(bytes)
    }

    /// GETs a blob from `offset` on; the caller streams the body.
    func blob(_ repo: String, _ digest: Digest, from offset: Int64) async throws -> HTTPClientResponse {
        let headers = offset > 0 ? [("Range", "bytes=\(offset)-")] : []
        return try await send(
            .GET, Routes[.blobGet].path(name: repo, ["digest": "\(digest)"]), headers: headers, accept: offset > 0 ? [206] : [200])
    }

    /// Small blobs (configs) in one piece.
    func smallBlob(_ repo: String, _ digest: Digest, limit: Int = 4 << 20) async throws -> [UInt8] {
        let r = try await blob(repo, digest, from: 0)
        let bytes = try await collect(r, limit: limit)
        guard Digest.of(bytes) == digest else { throw ClientError("blob \(digest) arrived with different content") }
        return bytes
    }

    public func tags(_ repo: String) async throws -> [String] {
        try await paged(Routes[.tags].path(name: repo) + "?n=1000", key: "tags")
    }

    public func repositories() async throws -> [String] {
        try await paged(Routes[.catalog].path() + "?n=1000", key: "repositories")
    }

    private func paged(_ first: String, key: String) async throws -> [String] {
        var out: [String] = []
        var next: String? = first
        while let path = next {
            let r = try await send(.GET, path, accept: [200])
            let body = try await collect(r, limit: 16 << 20)
            // `tags` of a TagList or `repositories` of a RepositoryList; `null` reads as empty.
            let page = try? WireJSON.decode([String: JSONValue].self, from: body, what: "page")
            out += (page?[key]?.array ?? []).compactMap(\.string)
            next = nil
            if let link = r.headers.first(name: "Link"), let open = link.firstIndex(of: "<"), let close = link.firstIndex(of: ">") {
                next = String(link[link.index(after: open)..<close])
            }
        }
        return out
    }

    /// Extracted format metadata of a manifest (Depot registries only).
    public func metadata(_ repo: String, _ digest: Digest) async throws -> JSONValue? {
        let r = try await send(.GET, Routes[.metadata].path(name: repo, ["reference": "\(digest)"]), accept: [200, 404, 501])
        let body = try await collect(r, limit: 16 << 20)
        guard r.status.code == 200 else { return nil }
        return try? WireJSON.decode(JSONValue.self, from: body, what: "metadata")
    }

    /// PUTs raw bytes to an extension path (a job log); the answer is read and dropped.
    public func putBytes(_ path: String, _ bytes: [UInt8], contentType: String = "application/octet-stream") async throws {
        let r = try await send(
            .PUT, path, headers: [("Content-Type", contentType), ("Content-Length", String(bytes.count))],
            body: .bytes(bytes), accept: [200, 201])
        _ = try await collect(r, limit: 1 << 20)
    }

    /// The referrers of `digest` in `repo` (at most 4 MiB of index; nil when the registry has no
    /// referrers API: 404). The referrers API's pagination (`Link`) is not followed: an index
    /// that says there is more is refused rather than read in part.
    public func referrers(_ repo: String, _ digest: Digest, artifactType: String? = nil) async throws -> OCIReferrersIndex? {
        var path = Routes[.referrers].path(name: repo, ["digest": digest.description])
        if let artifactType {
            path += "?artifactType=" + (artifactType.addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? artifactType)
        }
        let r = try await send(.GET, path, accept: [200, 404])
        let body = try await collect(r, limit: 4 << 20)
        if r.status.code == 404 { return nil }
        if r.headers.first(name: "Link") != nil {
            throw ClientError("\(repo)@\(digest) has more referrers than one page: not supported yet")
        }
        return try WireJSON.decode(OCIReferrersIndex.self, from: body, what: "referrers of \(digest)")
    }

    /// GETs an extension path's body (at most `limit` bytes).
    public func getBytes(_ path: String, limit: Int) async throws -> [UInt8] {
        let r = try await send(.GET, path, accept: [200])
        return try await collect(r, limit: limit)
    }

    /// A call of Depot's extension API with a typed answer (`DepotAPI` wire types).
    /// `GET /v2/`: whether the registry speaks the distribution API and takes our credential
    /// (the check `docker login` makes).
    public func checkAPI() async throws {
        _ = try await collect(try await send(.GET, "/v2/", accept: [200]), limit: 64 << 10)
    }

    /// A DELETE answered with no body (204) or an ignored one (200, 202).
    public func delete(_ path: String) async throws {
        _ = try await collect(try await send(.DELETE, path, accept: [200, 202, 204]), limit: 1 << 20)
    }

    public func request<Answer: Decodable>(_ method: HTTPMethod, _ path: String, as type: Answer.Type) async throws -> Answer {
        try await decode(Answer.self, method, path, try await send(method, path, accept: [200, 201]))
    }

    /// A call of Depot's extension API with a typed body and answer.
    public func request<Body: Encodable, Answer: Decodable>(
        _ method: HTTPMethod, _ path: String, body: Body, as type: Answer.Type
    ) async throws -> Answer {
        let r = try await send(
            method, path, headers: [("Content-Type", "application/json")], body: .bytes(try WireJSON.encode(body)), accept: [200, 201])
        return try await decode(Answer.self, method, path, r)
    }

    private func decode<Answer: Decodable>(_ type: Answer.Type, _ method: HTTPMethod, _ path: String, _ r: HTTPClientResponse) async throws
        -> Answer
    {
        let bytes = try await collect(r, limit: 256 << 20)
        do { return try WireJSON.decode(Answer.self, from: bytes, what: "\(method) \(path): the registry's answer") } catch {
            throw ClientError("\(error)")
        }
    }
}
