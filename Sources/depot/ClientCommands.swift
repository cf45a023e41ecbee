import ArgumentParser
import DepotAPI
import DepotClient
import DepotCore
import Foundation

/// Where the registry is and how to authenticate, shared by the client commands.
struct RegistryOptions: ParsableArguments {
    @Option(
        help:
            "Registry URL (default: $DEPOT_REGISTRY, else http://127.0.0.1:5000). Credentials: $DEPOT_TOKEN, else those `depot login` stored."
    )
    var registry: String?
    @Flag(help: "Allow plain http to a registry that is not on this machine (credentials and models cross the network in the clear).")
    var plainHttp = false
    @Option(
        help: ArgumentHelp(
            "PEM CA certificates to trust for an https registry besides the system's (default: $DEPOT_CA_FILE).",
            discussion: "A client certificate, for a registry that asks for one, comes from $DEPOT_CLIENT_CERT and $DEPOT_CLIENT_KEY.",
            valueName: "file"))
    var caFile: String?

    var url: String { url(host: nil) }

    /// The configured registry: `--registry`, else `$DEPOT_REGISTRY`, else `http://127.0.0.1:5000`.
    var configured: String {
        registry ?? ProcessInfo.processInfo.environment["DEPOT_REGISTRY"].flatMap { $0.isEmpty ? nil : $0 } ?? "http://127.0.0.1:5000"
    }

    /// The registry's URL: `host` (from a reference) when given, else the configured one. A bare
    /// host is https, or http on this machine or with `plainHTTP` (as oras spells it).
    func url(host: String?, plainHTTP: Bool? = nil) -> String {
        var url = host ?? configured
        if !url.contains("://") {
            url =
                (RegistryConnection.isLoopback(Self.hostName(url)) || (host != nil && (plainHTTP ?? plainHttp)) ? "http://" : "https://")
                + url
        }
        return url
    }

    /// The host name of `host[:port]` or a URL, IPv6 brackets removed, lowercased.
    static func hostName(_ text: String) -> String {
        let key = DockerConfig.key(forRegistry: text).lowercased()
        if key.hasPrefix("["), let close = key.firstIndex(of: "]") { return String(key[key.index(after: key.startIndex)..<close]) }
        return key.split(separator: ":", maxSplits: 1).first.map(String.init) ?? key
    }

    /// `host:port` of a URL or bare host, canonical: lowercased, the scheme's default port made
    /// explicit, and every loopback name spelled `loopback` (they are all this machine).
    static func canonicalHost(_ text: String) -> String {
        let https = !text.hasPrefix("http://")
        let key = DockerConfig.key(forRegistry: text).lowercased()
        var host = hostName(key)
        var port = https ? "443" : "80"
        if key.hasPrefix("["), let close = key.firstIndex(of: "]") {
            let rest = key[key.index(after: close)...]
            if rest.hasPrefix(":") { port = String(rest.dropFirst()) }
        } else if let colon = key.firstIndex(of: ":") {
            port = String(key[key.index(after: colon)...])
        }
        if RegistryConnection.isLoopback(host) { host = "loopback" }
        return host + ":" + port
    }

    /// The one registry host the references name, or nil; an error when they name two.
    static func host(of references: [ArtifactReference]) throws -> String? {
        let hosts = Set(references.compactMap(\.registry))
        guard Set(hosts.map { canonicalHost($0) }).count <= 1 else {
            throw ClientError("the references name more than one registry (\(hosts.sorted().joined(separator: ", "))): use one")
        }
        return hosts.first
    }

    /// A connection to `host` (a reference's registry) or the configured registry. `alone`: the
    /// command names one registry, so a host differing from `--registry` is a contradiction
    /// (`depot cp` names two).
    /// `$DEPOT_TOKEN` goes only to the configured registry: a host named in a reference gets what
    /// `depot login` stored for it, or nothing (a reference is often pasted from elsewhere; a
    /// token must not follow it to a host it was not issued for).
    func connect(host: String? = nil, plainHTTP: Bool? = nil, alone: Bool = true) throws -> RegistryConnection {
        if alone, let host, let registry, Self.canonicalHost(url(host: nil)) != Self.canonicalHost(url(host: host, plainHTTP: plainHTTP)) {
            throw ClientError("--registry \(registry) and the reference's registry \(host) differ: name one")
        }
        let url = self.url(host: host, plainHTTP: plainHTTP)
        if url.hasPrefix("http://"), !(plainHTTP ?? plainHttp), !RegistryConnection.isLoopback(Self.hostName(url)) {
            throw ClientError("\(url) is plain http to another machine: use https://, or pass --plain-http if you mean it")
        }
        let isConfigured = Self.canonicalHost(url) == Self.canonicalHost(self.url(host: nil))
        return try RegistryConnection(
            url: url, credential: try Self.credential(for: url, environmentToken: isConfigured), tls: .fromEnvironment(caFile: caFile))
    }

    /// `$DEPOT_TOKEN` (when `environmentToken`: the configured registry), else what `depot login`
    /// (or `docker login`) stored for the registry's host.
    static func credential(for url: String, environmentToken: Bool = true) throws -> RegistryCredential? {
        if environmentToken, let t = ProcessInfo.processInfo.environment["DEPOT_TOKEN"], !t.isEmpty { return .token(t) }
        return try DockerConfig().credential(for: DockerConfig.key(forRegistry: url))
    }
}

/// The CLI side of the one reference grammar (`ArtifactReference` in DepotAPI).
extension ArtifactReference {
    /// For `@Argument(transform:)`: the grammar's own error (what was expected, an example)
    /// instead of ArgumentParser's generic "invalid value".
    static func argument(_ text: String) throws -> ArtifactReference {
        do { return try ArtifactReference(parsing: text) } catch { throw ValidationError(error.description) }
    }

    /// A repository with or without a version (`team/llm`, `host/team/llm:v1`).
    static func repositoryArgument(_ text: String) throws -> ArtifactReference {
        do { return try ArtifactReference(parsing: text, requireVersion: false) } catch { throw ValidationError(error.description) }
    }

    /// What to ask the registry for (the digest when there is one; parsed references have one or a tag).
    var version: String { reference ?? "latest" }
}

/// Runs a client command: one clear line and exit status 1 on failure; always closes the connection.
/// `references`: the artifacts the command names; a host in them selects the registry (all must
/// name the same one, or none).
func runClient(
    _ registry: RegistryOptions, for references: [ArtifactReference?] = [], _ body: (RegistryConnection) async throws -> Void
) async {
    RegistryConnection.tuneMemory()
    let connection: RegistryConnection
    do { connection = try registry.connect(host: try RegistryOptions.host(of: references.compactMap { $0 })) } catch { fail(error) }
    do {
        try await body(connection)
        await connection.shutdown()
    } catch {
        await connection.shutdown()
        fail(error)
    }
}

func keyValues(_ items: [String], flag: String) throws -> [(String, String)] {
    try items.map { item in
        guard let eq = item.firstIndex(of: "="), eq != item.startIndex else {
            throw ValidationError("\(flag) takes key=value, got '\(item)'")
        }
        return (String(item[..<eq]), String(item[item.index(after: eq)...]))
    }
}

struct Push: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Push files or a directory as one model artifact (only the chunks the registry lacks move).")
    @Argument(help: "[HOST/]REPO:TAG", transform: ArtifactReference.argument) var target: ArtifactReference
    @Argument(help: "Files or directories (a directory keeps its layout, e.g. a Triton model directory).") var paths: [String]
    @OptionGroup var registry: RegistryOptions
    @Option(help: "Parent artifact (REPO:TAG or REPO@DIGEST, same registry), recorded as lineage.", transform: ArtifactReference.argument)
    var from: ArtifactReference?
    @Option(help: "How this artifact derives from --from: \(LineageRelation.list).") var relation: String?
    @Option(help: "Training or pipeline run id.") var run: String?
    @Option(help: "Dataset URI.") var dataset: String?
    @Option(help: "Source commit.") var commit: String?
    @Option(help: "A metric, key=value (repeatable).") var metric: [String] = []
    @Option(help: "An annotation, key=value (repeatable).") var annotation: [String] = []
    @Option(help: "Target platform of a TensorRT plan, e.g. sm_90,trt10.3.") var platform: String?
    @Option(help: "Concurrent chunk batches per file.") var jobs = 4
    @Option(help: "Files pushed at the same time.") var fileJobs = 2
    @Flag(help: "Use only the standard OCI API (whole blobs).") var plainOci = false
    @Flag(help: "Print a JSON summary on stdout.") var json = false
    @Flag(help: "No progress output.") var quiet = false

    func validate() throws {
        guard fileJobs >= 1 && fileJobs <= 16 else { throw ValidationError("--file-jobs must be 1...16") }
        guard !target.isDigest, target.tag != nil else {
            throw ValidationError("push needs [HOST/]REPO:TAG, not a digest, e.g. team/llm:v2")
        }
        if let relation, LineageRelation(rawValue: relation) == nil {
            throw ValidationError(
                "unknown --relation '\(relation)'; one of \(LineageRelation.list)")
        }
        if relation != nil && from == nil { throw ValidationError("--relation needs --from") }
        guard jobs >= 1 && jobs <= 64 else { throw ValidationError("--jobs must be 1...64") }
        _ = try keyValues(metric, flag: "--metric")
        _ = try keyValues(annotation, flag: "--annotation")
    }

    func run() async throws {
        await runClient(registry, for: [target, from]) { connection in
            var request = PushRequest(repository: target.repository, tag: target.version, paths: paths)
            request.jobs = jobs
            request.fileJobs = fileJobs
            request.plainOCI = plainOci
            for (k, v) in try keyValues(annotation, flag: "--annotation") { request.annotations[k] = v }
            for (k, v) in try keyValues(metric, flag: "--metric") { request.annotations[Annotation.metricPrefix + k] = v }
            if let from {
                let digest = try await digest(of: from, connection)
                request.annotations[Annotation.Lineage.from] = "\(from.repository)@\(digest)"
                request.annotations[Annotation.Lineage.relation] = relation ?? LineageRelation.derivedFrom.rawValue
            }
            if let run { request.annotations[Annotation.Lineage.run] = run }
            if let dataset { request.annotations[Annotation.Lineage.dataset] = dataset }
            if let commit { request.annotations[Annotation.Lineage.commit] = commit }
            if let platform { request.annotations[Annotation.platform] = platform }
            let progress = TransferProgress(
                style: TransferProgress.automatic(quiet: quiet || json), verb: "push", wire: connection.counters)
            let summary = try await Pusher(connection: connection, progress: progress).push(request)
            if json {
                printJSON(summary)
            } else if !quiet {
                FileHandleOutput.stderr(
                    "pushed \(summary.reference) \(summary.digest): \(TransferProgress.bytes(summary.logicalBytes)) in \(summary.files) file(s), sent \(TransferProgress.bytes(summary.bytesSent)) (\(summary.mode))\n"
                )
                print(summary.digest)
            }
        }
    }
}

struct Pull: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Pull an artifact's files into a directory (only chunks missing from the local cache move).")
    @Argument(help: "[HOST/]REPO:TAG or [HOST/]REPO@sha256:...", transform: ArtifactReference.argument) var source: ArtifactReference
    @Option(name: .shortAndLong, help: "Output directory.") var output: String = "."
    @Option(help: "Pull only this file of the artifact (repeatable).") var file: [String] = []
    @Option(help: "Pull only files matching this pattern (repeatable; * matches any characters, / included, ? one).")
    var include: [String] = []
    @Option(help: "Do not pull files matching this pattern (repeatable; applied after --include).") var exclude: [String] = []
    @OptionGroup var registry: RegistryOptions
    @Option(help: "Chunk cache directory (default: $DEPOT_CACHE, $XDG_CACHE_HOME/depot or ~/.cache/depot).") var cache: String?
    @Option(help: "Chunk cache bound in GiB (it keeps pulled files, hard-linked; the least recently used are removed after a pull).")
    var cacheGib: Double = 20
    @Option(help: "Concurrent chunk batches per file.") var jobs = 4
    @Option(help: "Files pulled at the same time.") var fileJobs = 2
    @Flag(help: "Use only the standard OCI API (whole blobs).") var plainOci = false
    @Flag(help: "Print a JSON summary on stdout.") var json = false
    @Flag(help: "No progress output.") var quiet = false

    func validate() throws {
        guard jobs >= 1 && jobs <= 64 else { throw ValidationError("--jobs must be 1...64") }
        guard fileJobs >= 1 && fileJobs <= 16 else { throw ValidationError("--file-jobs must be 1...16") }
        guard cacheGib >= 0 else { throw ValidationError("--cache-gib must be >= 0") }
        guard include.count + exclude.count <= 256 else { throw ValidationError("at most 256 --include/--exclude patterns") }
        for p in include + exclude { _ = try PathPattern(p) }
    }

    func run() async throws {
        await runClient(registry, for: [source]) { connection in
            let chunkCache = try ChunkCache(root: cache ?? ChunkCache.defaultRoot, maxBytes: Int64(cacheGib * 1_073_741_824))
            var request = PullRequest(repository: source.repository, reference: source.version, outputDirectory: output)
            request.files = file
            request.include = try include.map(PathPattern.init)
            request.exclude = try exclude.map(PathPattern.init)
            request.jobs = jobs
            request.fileJobs = fileJobs
            request.plainOCI = plainOci
            let progress = TransferProgress(
                style: TransferProgress.automatic(quiet: quiet || json), verb: "pull", wire: connection.counters)
            let summary = try await Puller(connection: connection, progress: progress, cache: chunkCache).pull(request)
            if json {
                printJSON(summary)
            } else if !quiet {
                FileHandleOutput.stderr(
                    "pulled \(summary.reference) \(summary.digest) into \(output): \(TransferProgress.bytes(summary.logicalBytes)) in \(summary.files) file(s), received \(TransferProgress.bytes(summary.bytesReceived)) (\(summary.mode))\n"
                )
            }
        }
    }
}

struct Tag: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Point a new tag at an existing artifact.")
    @Argument(help: "[HOST/]REPO:TAG or [HOST/]REPO@DIGEST", transform: ArtifactReference.argument) var source: ArtifactReference
    @Argument(help: "The new tag (in the same repository).") var tag: String
    @OptionGroup var registry: RegistryOptions
    @Flag(help: "Machine-readable output.") var json = false

    func validate() throws {
        guard Reference.isValidTag(tag) else { throw ValidationError("'\(tag)' is not a valid tag") }
    }

    func run() async throws {
        await runClient(registry, for: [source]) { connection in
            let m = try await connection.manifest(source.repository, source.version)
            try await connection.putManifest(source.repository, tag, bytes: m.bytes, mediaType: m.mediaType)
            if json { return printJSON(["repository": source.repository, "tag": tag, "digest": m.digest.description]) }
            print("\(source.repository):\(tag) -> \(m.digest)")
        }
    }
}

struct List: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ls", abstract: "List repositories, or the tags of one with digest, size, created and artifact type.")
    @Argument(help: "A repository, [HOST/]REPO (omit to list repositories).", transform: ArtifactReference.repositoryArgument)
    var repository: ArtifactReference?
    @Option(help: "Describe at most this many tags (each is one manifest request; the rest are listed by name).") var limit = 1000
    @OptionGroup var registry: RegistryOptions
    @Flag(help: "Machine-readable output: [{repository}] or [{tag, digest, size, created, artifact_type}].") var json = false
    @Flag(name: .shortAndLong, help: "Only the names, one per line.") var quiet = false

    /// One tag of `depot ls REPO --json`; field names are stable.
    struct TagRow: Encodable {
        var tag: String
        var digest: String?
        /// The artifact's size: its layers (files) together.
        var size: Int64?
        var created: String?
        var artifactType: String?

        enum CodingKeys: String, CodingKey {
            case tag, digest, size, created
            case artifactType = "artifact_type"
        }
    }

    func validate() throws {
        guard limit >= 0 else { throw ValidationError("--limit must be >= 0") }
        if let repository, repository.tag != nil || repository.digest != nil {
            throw ValidationError("ls takes a repository, not a tag or digest, e.g. depot ls team/llm")
        }
    }

    func run() async throws {
        await runClient(registry, for: [repository]) { connection in
            guard let repository else {
                let names = try await connection.repositories()
                if json { return printJSON(names.map { ["repository": $0] }) }
                for n in names { print(n) }
                return
            }
            let tags = try await connection.tags(repository.repository)
            if quiet {
                for t in tags { print(t) }
                return
            }
            // Eight manifest requests at a time, in tag order.
            var rows = tags.map { TagRow(tag: $0) }
            try await withThrowingTaskGroup(of: (Int, TagRow).self) { group in
                var next = 0
                func add() {
                    guard next < min(rows.count, limit) else { return }
                    let i = next
                    next += 1
                    let tag = rows[i].tag
                    group.addTask { (i, try await Self.describe(connection, repository.repository, tag)) }
                }
                for _ in 0..<8 { add() }
                while let (i, row) = try await group.next() {
                    rows[i] = row
                    add()
                }
            }
            if json { return printJSON(rows) }
            print("TAG\tDIGEST\tSIZE\tCREATED\tARTIFACT TYPE")
            for r in rows {
                print(
                    [
                        r.tag, r.digest.map { short($0) } ?? "-", r.size.map { formatBytes($0) } ?? "-", r.created ?? "-",
                        r.artifactType ?? "-",
                    ]
                    .joined(separator: "\t"))
            }
        }
    }

    static func describe(_ connection: RegistryConnection, _ repository: String, _ tag: String) async throws -> TagRow {
        do {
            let m = try await connection.manifest(repository, tag)
            let doc = try? WireJSON.decode(OCIManifestDocument.self, from: m.bytes, what: "manifest")
            let size =
                doc?.layers.map { $0.reduce(Int64(0)) { $0 &+ max(0, $1.size) } }
                ?? doc?.manifests.map { $0.reduce(Int64(0)) { $0 &+ max(0, $1.size) } }
            return TagRow(
                tag: tag, digest: m.digest.description, size: size, created: doc?.annotations?["org.opencontainers.image.created"],
                artifactType: doc?.artifactType ?? doc?.config?.mediaType)
        } catch let e as ClientError where e.status == 404 {
            return TagRow(tag: tag) // deleted between the listing and this request
        }
    }
}
