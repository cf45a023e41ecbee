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

    /// `oci-layout:DIR[:TAG]` or `oci-layout:DIR@sha256:…` -> (DIR, TAG or digest), or nil when
    /// `text` is not a layout reference.
    public static func parse(_ text: String) -> (root: String, tag: String?)? {
        guard text.hasPrefix("oci-layout:") else { return nil }
        let rest = String(text.dropFirst("oci-layout:".count))
        if let at = rest.range(of: "@sha256:", options: .backwards) {
            let dir = String(rest[..<at.lowerBound])
            return dir.isEmpty ? nil : (dir, String(rest[rest.index(after: at.lowerBound)...]))
        }
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

    /// Opens `path` for reading only if it is a regular file itself, not a symbolic link (a
    /// layout comes from a USB stick or a share: a link to ~/.ssh/id_rsa or /dev/zero must not be
    /// read as a blob); returns the descriptor and its size.
    static func openRegular(_ path: String) throws -> (Int32, Int64) {
        let fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC)
        guard fd >= 0 else { throw ClientError("cannot open \(path) (errno \(errno); a symbolic link is refused)") }
        var st = stat()
        guard fstat(fd, &st) == 0, (st.st_mode & S_IFMT) == S_IFREG else {
            close(fd)
            throw ClientError("\(path) is not a regular file")
        }
        return (fd, Int64(st.st_size))
    }

    /// The whole of a regular file of at most `limit` bytes.
    static func readRegular(_ path: String, limit: Int) throws -> [UInt8] {
        let (fd, size) = try openRegular(path)
        defer { close(fd) }
        guard size <= limit else { throw ClientError("\(path) is larger than \(limit) bytes") }
        var out = [UInt8](repeating: 0, count: Int(size))
        var done = 0
        while done < out.count {
            let n = out.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress! + done, $0.count - done) }
            guard n > 0 else { throw ClientError("cannot read \(path) (errno \(errno))") }
            done += n
        }
        return out
    }

    /// Checks that the blob file of `d` is a regular file of `size` bytes hashing to `d`, reading
    /// it in 1 MiB pieces: before anything of it is uploaded.
    func verify(_ d: Digest, size: Int64) throws {
        let path = blobPath(d)
        let (fd, actual) = try Self.openRegular(path)
        defer { close(fd) }
        guard actual == size else { throw ClientError("\(path) is \(actual) bytes, not \(size): the layout is damaged") }
        var hasher = SHA256()
        var buffer = [UInt8](repeating: 0, count: 1 << 20)
        while true {
            let n = buffer.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress!, $0.count) }
            guard n >= 0 else { throw ClientError("cannot read \(path) (errno \(errno))") }
            if n == 0 { break }
            buffer.withUnsafeBytes { hasher.update(UnsafeRawBufferPointer(rebasing: $0[0..<n])) }
        }
        guard Digest(bytes: hasher.finalize()) == d else { throw ClientError("\(path) does not match its digest: the layout is damaged") }
    }

    func read(_ d: Digest, limit: Int) throws -> [UInt8] {
        let path = blobPath(d)
        guard FileManager.default.fileExists(atPath: path) else { throw ClientError("\(root) has no blob \(d)") }
        let bytes = try Self.readRegular(path, limit: limit)
        guard Digest.of(bytes) == d else { throw ClientError("\(path) does not match its digest: the layout is damaged") }
        return bytes
    }

    func index() throws -> OCIReferrersIndex {
        let path = root + "/index.json"
        guard FileManager.default.fileExists(atPath: path) else { return OCIReferrersIndex(manifests: []) }
        let data = try Self.readRegular(path, limit: Self.maxDocument)
        return try WireJSON.decode(OCIReferrersIndex.self, from: data, what: "\(path)")
    }

    /// Holds an exclusive lock on the layout (`.depot-lock`) while `body` runs: two exports into
    /// one directory take turns instead of interleaving index.json updates.
    func locked<T>(_ body: () async throws -> T) async throws -> T {
        let fd = open(root + "/.depot-lock", O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0o644)
        guard fd >= 0 else { throw ClientError("cannot create \(root)/.depot-lock (errno \(errno))") }
        defer { close(fd) }
        guard flock(fd, LOCK_EX) == 0 else { throw ClientError("cannot lock \(root) (errno \(errno))") }
        return try await body()
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
            // Untagged entries are referrers an export recorded beside the artifact.
            let named = entries.filter { $0.annotations?[Self.refName] != nil }
            found = named.isEmpty ? entries : named
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
        return try await layout.locked {
            try await exportLocked(
                from: source, repository: repository, reference: reference, to: layout, tag: tag, referrers: referrers, started: started)
        }
    }

    static func exportLocked(
        from source: RegistryConnection, repository: String, reference: String, to layout: OCILayout, tag: String?, referrers: Bool,
        started: Date
    ) async throws -> TransferSummary {
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
                let tmp = layout.blobPath(b.digest) + ".partial-\(UUID().uuidString)"
                try await download(source, repository, b, to: tmp)
                guard rename(tmp, layout.blobPath(b.digest)) == 0 else { throw ClientError("cannot rename \(tmp): errno \(errno)") }
            }
            try layout.write(m.bytes, as: m.digest)
            if referrers && depth <= maxReferrerDepth, let index = try await source.referrers(repository, m.digest) {
                guard index.manifests.count <= 1000 else {
                    throw ClientError("\(m.digest) has \(index.manifests.count) referrers, more than 1000: refused")
                }
                for d in index.manifests {
                    let r = try await source.manifest(repository, d.digest.description)
                    try await copy(r, depth: depth + 1)
                    try layout.record(r, tag: nil)
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
                // Verified before any of it is sent: a damaged or substituted file is refused here.
                try layout.verify(b.digest, size: max(0, b.size))
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
