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

    var url: String {
        let env = ProcessInfo.processInfo.environment
        var url = registry ?? env["DEPOT_REGISTRY"].flatMap { $0.isEmpty ? nil : $0 } ?? "http://127.0.0.1:5000"
        if !url.contains("://") {
            // A bare host: https unless it is this machine.
            let host = DockerConfig.key(forRegistry: url).split(separator: ":").first.map(String.init) ?? url
            url = (RegistryConnection.isLoopback(host) ? "http://" : "https://") + url
        }
        return url
    }

    func connect() throws -> RegistryConnection {
        let url = self.url
        if url.hasPrefix("http://"), !plainHttp, let host = URL(string: url)?.host, !RegistryConnection.isLoopback(host) {
            throw ClientError("\(url) is plain http to another machine: use https://, or pass --plain-http if you mean it")
        }
        return try RegistryConnection(url: url, credential: try Self.credential(for: url), tls: .fromEnvironment(caFile: caFile))
    }

    /// `$DEPOT_TOKEN`, else what `depot login` (or `docker login`) stored for the registry's host.
    static func credential(for url: String) throws -> RegistryCredential? {
        if let t = ProcessInfo.processInfo.environment["DEPOT_TOKEN"], !t.isEmpty { return .token(t) }
        return try DockerConfig().credential(for: DockerConfig.key(forRegistry: url))
    }
}

/// `REPO:TAG` or `REPO@sha256:...`.
struct ArtifactReference: ExpressibleByArgument, CustomStringConvertible {
    var repository: String
    var reference: String
    var isDigest: Bool { reference.hasPrefix("sha256:") }

    init?(argument: String) {
        if let at = argument.firstIndex(of: "@") {
            repository = String(argument[..<at])
            reference = String(argument[argument.index(after: at)...])
            guard (try? Digest(parsing: reference)) != nil else { return nil }
        } else if let colon = argument.lastIndex(of: ":") {
            repository = String(argument[..<colon])
            reference = String(argument[argument.index(after: colon)...])
            guard Reference.isValidTag(reference) else { return nil }
        } else {
            return nil
        }
        guard (try? RepositoryName(repository)) != nil else { return nil }
    }

    var description: String { isDigest ? "\(repository)@\(reference)" : "\(repository):\(reference)" }
}

/// Runs a client command: one clear line and exit status 1 on failure; always closes the connection.
func runClient(_ registry: RegistryOptions, _ body: (RegistryConnection) async throws -> Void) async {
    RegistryConnection.tuneMemory()
    let connection: RegistryConnection
    do { connection = try registry.connect() } catch { fail(error) }
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
    @Argument(help: "REPO:TAG") var target: ArtifactReference
    @Argument(help: "Files or directories (a directory keeps its layout, e.g. a Triton model directory).") var paths: [String]
    @OptionGroup var registry: RegistryOptions
    @Option(help: "Parent artifact (REPO:TAG or REPO@DIGEST), recorded as lineage.") var from: ArtifactReference?
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
        guard !target.isDigest else { throw ValidationError("push needs REPO:TAG, not a digest") }
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
        await runClient(registry) { connection in
            var request = PushRequest(repository: target.repository, tag: target.reference, paths: paths)
            request.jobs = jobs
            request.fileJobs = fileJobs
            request.plainOCI = plainOci
            for (k, v) in try keyValues(annotation, flag: "--annotation") { request.annotations[k] = v }
            for (k, v) in try keyValues(metric, flag: "--metric") { request.annotations[Annotation.metricPrefix + k] = v }
            if let from {
                let digest =
                    from.isDigest ? from.reference : try await connection.manifest(from.repository, from.reference).digest.description
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
    @Argument(help: "REPO:TAG or REPO@sha256:...") var source: ArtifactReference
    @Option(name: .shortAndLong, help: "Output directory.") var output: String = "."
    @Option(help: "Pull only this file of the artifact (repeatable).") var file: [String] = []
    @OptionGroup var registry: RegistryOptions
    @Option(help: "Chunk cache directory (default: $DEPOT_CACHE, $XDG_CACHE_HOME/depot or ~/.cache/depot).") var cache: String?
    @Option(help: "Chunk cache bound in GiB (least recently used chunks are removed after a pull).") var cacheGib: Double = 20
    @Option(help: "Concurrent chunk batches per file.") var jobs = 4
    @Option(help: "Files pulled at the same time.") var fileJobs = 2
    @Flag(help: "Use only the standard OCI API (whole blobs).") var plainOci = false
    @Flag(help: "Print a JSON summary on stdout.") var json = false
    @Flag(help: "No progress output.") var quiet = false

    func validate() throws {
        guard jobs >= 1 && jobs <= 64 else { throw ValidationError("--jobs must be 1...64") }
        guard fileJobs >= 1 && fileJobs <= 16 else { throw ValidationError("--file-jobs must be 1...16") }
        guard cacheGib >= 0 else { throw ValidationError("--cache-gib must be >= 0") }
    }

    func run() async throws {
        await runClient(registry) { connection in
            let chunkCache = try ChunkCache(root: cache ?? ChunkCache.defaultRoot, maxBytes: Int64(cacheGib * 1_073_741_824))
            var request = PullRequest(repository: source.repository, reference: source.reference, outputDirectory: output)
            request.files = file
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
    @Argument(help: "REPO:TAG or REPO@DIGEST") var source: ArtifactReference
    @Argument(help: "The new tag (in the same repository).") var tag: String
    @OptionGroup var registry: RegistryOptions
    @Flag(help: "Machine-readable output.") var json = false

    func validate() throws {
        guard Reference.isValidTag(tag) else { throw ValidationError("'\(tag)' is not a valid tag") }
    }

    func run() async throws {
        await runClient(registry) { connection in
            let m = try await connection.manifest(source.repository, source.reference)
            try await connection.putManifest(source.repository, tag, bytes: m.bytes, mediaType: m.mediaType)
            if json { return printJSON(["repository": source.repository, "tag": tag, "digest": m.digest.description]) }
            print("\(source.repository):\(tag) -> \(m.digest)")
        }
    }
}

struct List: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "ls", abstract: "List repositories, or the tags of one.")
    @Argument(help: "A repository (omit to list repositories).") var repository: String?
    @OptionGroup var registry: RegistryOptions
    @Flag(help: "Machine-readable output.") var json = false

    func run() async throws {
        await runClient(registry) { connection in
            let items: [String]
            if let repository { items = try await connection.tags(repository) } else { items = try await connection.repositories() }
            if json { printJSON(items) } else { for i in items { print(i) } }
        }
    }
}
