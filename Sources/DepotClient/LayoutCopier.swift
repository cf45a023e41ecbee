import DepotAPI
import DepotCore
import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// An OCI image layout directory (`oci-layout`, `index.json`, `blobs/sha256/<hex>`) as one end of
/// `depot cp`, for air-gapped transfer: `depot cp REF oci-layout:DIR[:TAG]` writes the artifact
/// there (skopeo, oras and containerd read it), and `depot cp oci-layout:DIR[:TAG] REF` pushes it
/// back, through chunk negotiation when the registry is a Depot (only missing chunks move).
///
/// Layout invariants kept: every blob file is written to a temporary name, verified against its
/// digest and renamed into place, so a blob file present is a whole, correct blob; `index.json`
/// is replaced by rename after every blob of the manifest it names is in place.
public struct OCILayout: Sendable {
    public let root: String

    /// `ref.name` of the entry written or read (OCI's `org.opencontainers.image.ref.name`).
    public static let refName = "org.opencontainers.image.ref.name"
    /// Largest manifest or index.json read from a layout.
    public static let maxDocument = 4 << 20

    public init(root: String) { self.root = root }

    /// `oci-layout:DIR[:TAG]` -> (DIR, TAG), or nil when `text` is not a layout reference.
    public static func parse(_ text: String) -> (root: String, tag: String?)? {
        guard text.hasPrefix("oci-layout:") else { return nil }
        let rest = String(text.dropFirst("oci-layout:".count))
        let lastSlash = rest.lastIndex(of: "/") ?? rest.startIndex
        if let colon = rest[lastSlash...].lastIndex(of: ":"), colon != rest.startIndex {
            let tag = String(rest[rest.index(after: colon)...])
            return (String(rest[..<colon]), tag.isEmpty ? nil : tag)
        }
        return rest.isEmpty ? nil : (rest, nil)
    }

    func blobPath(_ d: Digest) -> String { "\(root)/blobs/sha256/\(d.hex)" }

    func has(_ d: Digest) -> Bool { FileManager.default.fileExists(atPath: blobPath(d)) }

    func prepare() throws {
        try FileManager.default.createDirectory(atPath: root + "/blobs/sha256", withIntermediateDirectories: true)
        let marker = root + "/oci-layout"
        if !FileManager.default.fileExists(atPath: marker) {
            try Data(#"{"imageLayoutVersion":"1.0.0"}"#.utf8).write(to: URL(fileURLWithPath: marker), options: .atomic)
        }
    }

    /// Writes `bytes` as the blob `d` (verified) unless present.
    func write(_ bytes: [UInt8], as d: Digest) throws {
        guard Digest.of(bytes) == d else { throw ClientError("content of \(d) does not match its digest") }
        if has(d) { return }
        try Data(bytes).write(to: URL(fileURLWithPath: blobPath(d)), options: .atomic)
    }

    func read(_ d: Digest, limit: Int) throws -> [UInt8] {
        let path = blobPath(d)
        guard let attrs = try? FileManager.default.attributesOfItem(atPath: path), let size = attrs[.size] as? Int, size <= limit else {
            throw ClientError("\(root) has no blob \(d) of at most \(limit) bytes")
        }
        let bytes = try [UInt8](Data(contentsOf: URL(fileURLWithPath: path)))
        guard Digest.of(bytes) == d else { throw ClientError("\(path) does not match its digest: the layout is damaged") }
        return bytes
    }

    func index() throws -> OCIReferrersIndex {
        let path = root + "/index.json"
        guard FileManager.default.fileExists(atPath: path) else { return OCIReferrersIndex(manifests: []) }
        let data = try [UInt8](Data(contentsOf: URL(fileURLWithPath: path)))
        guard data.count <= Self.maxDocument else { throw ClientError("\(path) is larger than \(Self.maxDocument) bytes") }
        return try WireJSON.decode(OCIReferrersIndex.self, from: data, what: "\(path)")
    }

    /// Adds (or replaces, by ref name) the entry for `manifest` in index.json.
    func record(_ manifest: FetchedManifest, tag: String?) throws {
        var index = try index()
        var entry = OCIDescriptor(mediaType: manifest.mediaType, digest: manifest.digest, size: Int64(manifest.bytes.count))
        if let tag {
            entry.annotations = [Self.refName: tag]
            index.manifests.removeAll { $0.annotations?[Self.refName] == tag }
        } else {
            index.manifests.removeAll { $0.digest == manifest.digest && $0.annotations?[Self.refName] == nil }
        }
        index.manifests.append(entry)
        let bytes = try WireJSON.encode(index)
        try Data(bytes).write(to: URL(fileURLWithPath: root + "/index.json"), options: .atomic)
    }

    /// The manifest named `tag` (or the only one, when there is exactly one and no tag is given).
    func manifest(tag: String?) throws -> FetchedManifest {
        let entries = try index().manifests
        let found: [OCIDescriptor]
        if let tag {
            found = entries.filter { $0.annotations?[Self.refName] == tag || $0.digest.description == tag }
        } else {
            found = entries
        }
        guard found.count == 1, let entry = found.first else {
            let names = entries.compactMap { $0.annotations?[Self.refName] }
            throw ClientError(
                "\(root): \(found.isEmpty ? "no manifest named \(tag ?? "")" : "several manifests; name one") (it has: \(names.prefix(20).joined(separator: ", ")))"
            )
        }
        let bytes = try read(entry.digest, limit: Self.maxDocument)
        return FetchedManifest(bytes: bytes, mediaType: entry.mediaType, digest: entry.digest)
    }
}

extension Copier {
    /// Registry -> layout.
    public static func export(
        from source: RegistryConnection, repository: String, reference: String, to layout: OCILayout, tag: String?, referrers: Bool
    ) async throws -> TransferSummary {
        let started = Date()
        try layout.prepare()
        let root = try await source.manifest(repository, reference)
        var seen: Set<Digest> = []
        var blobs = 0
        var logical: Int64 = 0
        func copy(_ m: FetchedManifest, depth: Int) async throws {
            guard seen.insert(m.digest).inserted else { return }
            guard seen.count <= maxManifests else { throw ClientError("more than \(maxManifests) manifests: refused") }
            let doc = try WireJSON.decode(OCIManifestDocument.self, from: m.bytes, what: "manifest \(m.digest)")
            for child in doc.manifests ?? [] {
                try await copy(try await source.manifest(repository, child.digest.description), depth: depth)
            }
            for b in (doc.config.map { [$0] } ?? []) + (doc.layers ?? []) where !(b.urls?.isEmpty == false) {
                blobs += 1
                logical &+= max(0, b.size)
                if layout.has(b.digest) { continue }
                let tmp = layout.blobPath(b.digest) + ".partial"
                try await download(source, repository, b, to: tmp)
                guard rename(tmp, layout.blobPath(b.digest)) == 0 else { throw ClientError("cannot rename \(tmp): errno \(errno)") }
            }
            try layout.write(m.bytes, as: m.digest)
            if referrers && depth <= maxReferrerDepth {
                let path = Routes[.referrers].path(name: repository, ["digest": m.digest.description])
                if let index = try? await source.request(.GET, path, as: OCIReferrersIndex.self) {
                    for d in index.manifests.prefix(1000) {
                        let r = try await source.manifest(repository, d.digest.description)
                        try await copy(r, depth: depth + 1)
                        try layout.record(r, tag: nil)
                    }
                }
            }
        }
        try await copy(root, depth: 1)
        try layout.record(root, tag: tag)
        return TransferSummary(
            reference: "oci-layout:\(layout.root)" + (tag.map { ":\($0)" } ?? ""), digest: root.digest.description, files: blobs,
            logicalBytes: logical, bytesSent: 0, bytesReceived: source.counters.received, deduplicatedBytes: 0, chunksTotal: 0,
            chunksTransferred: 0, mode: "oci-layout", seconds: Date().timeIntervalSince(started))
    }

    /// Layout -> registry: blobs through chunk negotiation when the registry offers it.
    public static func `import`(
        from layout: OCILayout, tag: String?, to destination: RegistryConnection, repository: String, destinationTag: String?,
        plainOCI: Bool
    ) async throws -> TransferSummary {
        let started = Date()
        let root = try layout.manifest(tag: tag)
        var chunked = false
        if !plainOCI { chunked = try await destination.extensionInfo() != nil }
        let pusher = Pusher(connection: destination, progress: TransferProgress(style: .quiet, verb: "cp", wire: destination.counters))
        var request = PushRequest(repository: repository, tag: "", paths: [])
        request.plainOCI = !chunked
        var seen: Set<Digest> = []
        var blobs = 0
        var logical: Int64 = 0
        var deduplicated: Int64 = 0
        var chunks = 0
        var moved = 0
        func copy(_ m: FetchedManifest, tag: String?) async throws {
            guard seen.insert(m.digest).inserted else { return }
            guard seen.count <= maxManifests else { throw ClientError("more than \(maxManifests) manifests: refused") }
            let doc = try WireJSON.decode(OCIManifestDocument.self, from: m.bytes, what: "manifest \(m.digest)")
            for child in doc.manifests ?? [] {
                let bytes = try layout.read(child.digest, limit: OCILayout.maxDocument)
                try await copy(FetchedManifest(bytes: bytes, mediaType: child.mediaType, digest: child.digest), tag: nil)
            }
            for b in (doc.config.map { [$0] } ?? []) + (doc.layers ?? []) where !(b.urls?.isEmpty == false) {
                blobs += 1
                logical &+= max(0, b.size)
                guard layout.has(b.digest) else { throw ClientError("\(layout.root) lacks blob \(b.digest)") }
                let file = ArtifactFile(localPath: layout.blobPath(b.digest), relativePath: b.digest.hex)
                let r = chunked ? try await pusher.pushChunked(file, request) : try await pusher.pushWhole(file, request)
                guard r.digest == b.digest else { throw ClientError("\(file.localPath) does not match its digest: the layout is damaged") }
                deduplicated &+= r.deduplicated
                chunks += r.chunks
                moved += r.sent
            }
            let put = try await destination.putManifest(repository, tag ?? m.digest.description, bytes: m.bytes, mediaType: m.mediaType)
            guard put == m.digest else { throw ClientError("the destination stored \(m.digest) as \(put)") }
        }
        try await copy(root, tag: destinationTag)
        // Referrers recorded in the layout (entries whose manifest has this subject) go along.
        for entry in try layout.index().manifests where entry.annotations?[OCILayout.refName] == nil && !seen.contains(entry.digest) {
            let bytes = try layout.read(entry.digest, limit: OCILayout.maxDocument)
            let doc = try WireJSON.decode(OCIManifestDocument.self, from: bytes, what: "manifest \(entry.digest)")
            if let subject = doc.subject?.digest, seen.contains(subject) {
                try await copy(FetchedManifest(bytes: bytes, mediaType: entry.mediaType, digest: entry.digest), tag: nil)
            }
        }
        return TransferSummary(
            reference: destinationTag.map { "\(repository):\($0)" } ?? "\(repository)@\(root.digest)", digest: root.digest.description,
            files: blobs, logicalBytes: logical, bytesSent: destination.counters.sent, bytesReceived: 0,
            deduplicatedBytes: deduplicated, chunksTotal: chunks, chunksTransferred: moved, mode: chunked ? "chunked" : "oci",
            seconds: Date().timeIntervalSince(started))
    }

    /// Streams blob `b` into `path`, verifying size and digest.
    static func download(_ source: RegistryConnection, _ repository: String, _ b: OCIDescriptor, to path: String) async throws {
        guard FileManager.default.createFile(atPath: path, contents: nil), let out = FileHandle(forWritingAtPath: path) else {
            throw ClientError("cannot write \(path)")
        }
        var hasher = SHA256()
        var written: Int64 = 0
        do {
            let response = try await source.blob(repository, b.digest, from: 0)
            for try await part in response.body {
                written += Int64(part.readableBytes)
                source.counters.add(received: part.readableBytes)
                guard written <= max(0, b.size) else {
                    throw ClientError("\(b.digest) is larger than its descriptor says (\(b.size) bytes)")
                }
                part.withUnsafeReadableBytes { hasher.update($0) }
                try part.withUnsafeReadableBytes { try out.write(contentsOf: $0) }
            }
            try out.synchronize()
            try out.close()
        } catch {
            try? out.close()
            try? FileManager.default.removeItem(atPath: path)
            throw error
        }
        guard Digest(bytes: hasher.finalize()) == b.digest, written == b.size else {
            try? FileManager.default.removeItem(atPath: path)
            throw ClientError("\(b.digest) as read does not match its digest: not written")
        }
    }
}
