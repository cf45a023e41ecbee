import ArgumentParser
import DepotAPI
import DepotClient
import DepotCore
import Foundation

/// `depot attach REF FILE… --artifact-type T`: an OCI 1.1 referrer (an SBOM, an evaluation
/// report, a model card) pushed with `subject` = REF's manifest, untagged, as oras attach does.
struct Attach: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Attach files to an artifact as an OCI referrer (an SBOM, an evaluation report, a model card).",
        discussion: "depot attach team/llm:v2 eval.json --artifact-type application/vnd.example.eval+json; list them with depot discover.")
    @Argument(help: "[HOST/]REPO:TAG or [HOST/]REPO@DIGEST: the subject.", transform: ArtifactReference.argument)
    var subject: ArtifactReference
    @Argument(help: "Files or directories to attach.") var paths: [String]
    @Option(help: "The referrer's artifactType (a media type, e.g. application/spdx+json).") var artifactType: String
    @Option(help: "An annotation, key=value (repeatable).") var annotation: [String] = []
    @OptionGroup var registry: RegistryOptions
    @Flag(help: "Use only the standard OCI API (whole blobs).") var plainOci = false
    @Flag(help: "Print a JSON summary on stdout.") var json = false

    func validate() throws {
        guard MediaTypeText.isValid(artifactType) else {
            throw ValidationError("--artifact-type must be a media type such as application/vnd.example.eval+json")
        }
        _ = try keyValues(annotation, flag: "--annotation")
    }

    func run() async throws {
        await runClient(registry, for: [subject]) { connection in
            let target = try await connection.manifest(subject.repository, subject.version)
            var request = PushRequest(repository: subject.repository, tag: "", paths: paths)
            request.subject = target
            request.artifactType = artifactType
            request.plainOCI = plainOci
            for (k, v) in try keyValues(annotation, flag: "--annotation") { request.annotations[k] = v }
            let progress = TransferProgress(style: .quiet, verb: "attach", wire: connection.counters)
            let summary = try await Pusher(connection: connection, progress: progress).push(request)
            if json { return printJSON(summary) }
            print("\(summary.reference) -> \(subject.repository)@\(target.digest) (\(artifactType))")
        }
    }
}

/// `depot discover REF`: the referrers of an artifact, and theirs, as a tree or JSON.
struct Discover: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "List an artifact's referrers (signatures, SBOMs, reports), and theirs, as a tree or --json.")
    @Argument(help: "[HOST/]REPO:TAG or [HOST/]REPO@DIGEST", transform: ArtifactReference.argument) var subject: ArtifactReference
    @Option(help: "Only referrers of this artifactType (at the first level).") var artifactType: String?
    @Option(help: "How many levels of referrers of referrers to follow.") var depth = 3
    @OptionGroup var registry: RegistryOptions
    @Flag(help: "Machine-readable output.") var json = false

    /// One node of the `--json` tree; field names are stable.
    struct Node: Encodable {
        var digest: String
        var mediaType: String
        var artifactType: String?
        var size: Int64
        var annotations: [String: String]?
        var referrers: [Node]

        enum CodingKeys: String, CodingKey {
            case digest, size, annotations, referrers
            case mediaType = "media_type"
            case artifactType = "artifact_type"
        }
    }

    /// At most this many referrers are listed per artifact (a registry could return any number).
    static let maxPerLevel = 1000
    /// At most this many referrers in the whole tree (a hostile registry could fan out forever).
    static let maxNodes = 10_000

    func validate() throws {
        guard (1...16).contains(depth) else { throw ValidationError("--depth must be 1...16") }
    }

    func run() async throws {
        await runClient(registry, for: [subject]) { connection in
            let root = try await connection.manifest(subject.repository, subject.version)
            var seen: Set<Digest> = [root.digest]
            func children(of digest: Digest, level: Int, filter: String?) async throws -> [Node] {
                guard level <= depth else { return [] }
                guard let index = try await connection.referrers(subject.repository, digest, artifactType: filter) else { return [] }
                var out: [Node] = []
                // The filter is optional for a registry to honour: filter again here.
                for d in index.manifests.prefix(Self.maxPerLevel) where filter == nil || d.artifactType == filter {
                    guard seen.insert(d.digest).inserted else { continue } // a cycle or a repeat
                    out.append(
                        Node(
                            digest: d.digest.description, mediaType: d.mediaType, artifactType: d.artifactType, size: d.size,
                            annotations: d.annotations, referrers: try await children(of: d.digest, level: level + 1, filter: nil)))
                }
                return out
            }
            let tree = Node(
                digest: root.digest.description, mediaType: root.mediaType, artifactType: nil, size: Int64(root.bytes.count),
                annotations: nil, referrers: try await children(of: root.digest, level: 1, filter: artifactType))
            if json { return printJSON(tree) }
            print("\(subject.repository)@\(root.digest)")
            func show(_ nodes: [Node], _ indent: String) {
                for (i, n) in nodes.enumerated() {
                    let last = i == nodes.count - 1
                    print("\(indent)\(last ? "└── " : "├── ")\(n.artifactType ?? n.mediaType)  \(n.digest)")
                    show(n.referrers, indent + (last ? "    " : "│   "))
                }
            }
            show(tree.referrers, "")
        }
    }
}

/// `type/subtype[+suffix]` as RFC 6838 restricts the characters, bounded.
enum MediaTypeText {
    static func isValid(_ text: String) -> Bool {
        guard text.utf8.count <= 255, let slash = text.firstIndex(of: "/") else { return false }
        func token(_ s: Substring) -> Bool {
            !s.isEmpty
                && s.utf8.allSatisfy { c in
                    (c >= 0x30 && c <= 0x39) || (c >= 0x41 && c <= 0x5a) || (c >= 0x61 && c <= 0x7a) || "!#$&-^_.+".utf8.contains(c)
                }
        }
        return token(text[..<slash]) && token(text[text.index(after: slash)...])
    }
}
