import ArgumentParser
import DepotAPI
import DepotCatalog
import DepotClient
import DepotCore
import DepotRegistry
import DepotStore
import Foundation

struct LineageCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "lineage",
        abstract: "What an artifact was built from, what was built from it, and what an incident touches.",
        discussion: "Output: a table, or --json, --dot (Graphviz), --openlineage (OpenLineage run events, one JSON per line).")
    @Argument(help: "[HOST/]REPO:TAG or [HOST/]REPO@DIGEST (not needed with --path).", transform: ArtifactReference.argument)
    var reference: ArtifactReference?
    @Flag(help: "Walk to what it was derived from (the default).") var ancestors = false
    @Flag(help: "Walk to what was derived from it.") var descendants = false
    @Flag(help: "Which tags and aliases resolve to it or to anything derived from it.") var impact = false
    @Option(
        parsing: .upToNextOption, help: "A derivation path between two artifacts: --path FROM TO.", transform: ArtifactReference.argument)
    var path: [ArtifactReference] = []
    @Option(help: "Maximum depth.") var depth = 64
    @Option(help: "Follow only this relation (repeatable).") var relation: [String] = []
    @Option(help: "Show only artifacts of this artifactType.") var artifactType: String?
    @Flag(help: "JSON output.") var json = false
    @Flag(help: "Graphviz output.") var dot = false
    @Flag(help: "OpenLineage run events (JSON lines).") var openlineage = false
    @OptionGroup var registry: RegistryOptions

    func validate() throws {
        if !path.isEmpty {
            guard path.count == 2 else { throw ValidationError("--path takes FROM and TO") }
        } else if reference == nil {
            throw ValidationError("name an artifact (REPO:TAG or REPO@DIGEST), or use --path FROM TO")
        }
        guard [ancestors, descendants, impact].filter({ $0 }).count <= 1 else {
            throw ValidationError("choose one of --ancestors, --descendants, --impact")
        }
        guard [json, dot, openlineage].filter({ $0 }).count <= 1 else { throw ValidationError("choose one output format") }
        guard depth >= 1 && depth <= 1000 else { throw ValidationError("--depth must be 1...1000") }
    }

    func run() async throws {
        await runClient(registry, for: [reference] + path) { c in
            if path.count == 2 {
                let from = try await digest(of: path[0], c)
                let to = try await digest(of: path[1], c)
                let r = try await c.request(.GET, Routes[.lineagePath].path() + "?from=\(from)&to=\(to)", as: LineagePathAnswer.self)
                return output(edges: r.edges, raw: r) {
                    for e in r.edges { print("\(short(e.parent)) --\(e.relation)--> \(short(e.child))  \(Self.details(e))") }
                }
            }
            let ref = reference!
            let d = try await digest(of: ref, c)
            if impact {
                let r = try await c.request(.GET, Routes[.impact].path(["digest": "\(d)"]), as: ImpactAnswer.self)
                return output(edges: r.derived.map(\.edge), raw: r) {
                    print("\(r.derived.count) artifact(s) derived from \(ref)")
                    for n in r.derived { Self.printNode(n) }
                    print(
                        r.tags.isEmpty
                            ? "no tag or alias resolves to it or to anything derived from it"
                            : "tags and aliases affected:")
                    for t in r.tags { print("  \(t.repository):\(t.tag) -> \(short(t.digest))") }
                }
            }
            let direction: LineageDirection = descendants ? .descendants : .ancestors
            var query = ["direction=\(direction.rawValue)", "depth=\(depth)"]
            if !relation.isEmpty { query.append("relation=\(relation.joined(separator: ","))") }
            if let artifactType {
                query.append("artifact_type=\(artifactType.addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? artifactType)")
            }
            let path = Routes[.lineage].path(["digest": "\(d)"]) + "?" + query.joined(separator: "&")
            let r = try await c.request(.GET, path, as: LineageAnswer.self)
            output(edges: r.nodes.map(\.edge), raw: r) {
                print("\(ref) \(d)")
                if r.nodes.isEmpty { print("  (no \(direction.rawValue) recorded)") }
                for n in r.nodes { Self.printNode(n) }
            }
        }
    }

    func output<Raw: Encodable>(edges: [LineageEdgeRecord], raw: Raw, table: () -> Void) {
        if json { return printJSON(raw) }
        if dot { return print(Self.dot(edges)) }
        if openlineage {
            for e in edges { printCompactJSON(Self.openLineageEvent(e)) }
            return
        }
        table()
    }

    static func details(_ e: LineageEdgeRecord) -> String {
        var parts: [String] = []
        for (key, value) in [("run", e.run), ("dataset", e.dataset), ("commit", e.commit), ("job", e.job)] {
            if let value { parts.append("\(key)=\(value)") }
        }
        if let m = e.metrics { parts += m.keys.sorted().map { "\($0)=\(m[$0]!)" } }
        // Verified: a pipeline job's runner pushed it under the lease and the registry signed it.
        parts.append(e.verifiedJob.map { "verified(job \($0))" } ?? "declared")
        return parts.joined(separator: " ")
    }

    static func printNode(_ n: LineageNodeRecord) {
        let e = n.edge
        let indent = String(repeating: "  ", count: max(1, n.depth))
        print(
            "\(indent)\(short(n.digest))  \(e.relation)  \(e.relation == "subject" ? "" : e.parentRef)"
                + (n.stored ? "" : "  (external)") + (n.artifactType.map { "  \($0)" } ?? "") + "  " + details(e))
    }

    static func dot(_ edges: [LineageEdgeRecord]) -> String {
        var lines = ["digraph lineage {", "  rankdir=BT;", "  node [shape=box, fontname=monospace];"]
        var nodes = Set<Digest>()
        for e in edges {
            for n in [e.parent, e.child] where nodes.insert(n).inserted { lines.append("  \"\(n)\" [label=\"\(short(n))\"];") }
            lines.append("  \"\(e.child)\" -> \"\(e.parent)\" [label=\"\(e.relation)\"];")
        }
        lines.append("}")
        return lines.joined(separator: "\n")
    }

    /// An OpenLineage RunEvent for one derivation: the parent as input, the child as output.
    static func openLineageEvent(_ e: LineageEdgeRecord) -> OpenLineageRunEvent {
        let seed = Array((e.child.description + e.parent.description + e.relation).utf8)
        let h = seed.withUnsafeBytes { SHA256.hash($0).byteArray }
        var u = Array(h.prefix(16))
        u[6] = (u[6] & 0x0F) | 0x50
        u[8] = (u[8] & 0x3F) | 0x80
        let hex = u.map { String(format: "%02x", $0) }.joined()
        let runID = [
            hex.prefix(8), hex.dropFirst(8).prefix(4), hex.dropFirst(12).prefix(4), hex.dropFirst(16).prefix(4), hex.dropFirst(20),
        ].map(String.init).joined(separator: "-")
        var facets: [String: OpenLineageRunEvent.RunFacet] = [:]
        if let run = e.run { facets["depot_run"] = .init(id: run) }
        return OpenLineageRunEvent(
            eventTime: e.at, run: .init(runId: runID, facets: facets),
            job: .init(namespace: "depot", name: e.job ?? e.relation),
            inputs: [.init(namespace: "depot", name: e.parentRef)],
            outputs: [.init(namespace: "depot", name: "\(e.repository)@\(e.child)")])
    }
}

/// An OpenLineage 2-0-2 RunEvent, the subset `depot lineage --openlineage` writes.
struct OpenLineageRunEvent: Encodable {
    struct RunFacet: Encodable {
        var producer = "depot"
        var schemaURL = "https://openlineage.io/spec/facets/1-0-0/BaseFacet.json"
        var id: String

        enum CodingKeys: String, CodingKey {
            case id
            case producer = "_producer"
            case schemaURL = "_schemaURL"
        }
    }
    struct Run: Encodable {
        var runId: String
        var facets: [String: RunFacet]
    }
    struct Named: Encodable {
        var namespace: String
        var name: String
    }

    var eventType = "COMPLETE"
    var eventTime: String
    var producer = "https://github.com/depot-registry/depot"
    var schemaURL = "https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/RunEvent"
    var run: Run
    var job: Named
    var inputs: [Named]
    var outputs: [Named]
}

func printCompactJSON<T: Encodable>(_ value: T) {
    print(String(decoding: (try? WireJSON.encode(value)) ?? [], as: UTF8.self))
}

struct Audit: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "The audit journal: every push, delete, alias move, pin, rollback and GC, hash-chained.",
        subcommands: [AuditLog.self, AuditVerify.self])
}

struct AuditLog: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "log", abstract: "Print journal entries.")
    @Option(help: "Only this repository.") var repo: String?
    @Option(help: "From this time (RFC 3339 or ms).") var since: String?
    @Option(help: "Until this time (RFC 3339 or ms).") var until: String?
    @Option(help: "Only this action (push, delete, alias, rollback, pin, unpin, gc).") var action: String?
    @Option(help: "At most this many entries.") var limit = 1000
    @Flag(help: "Machine-readable output.") var json = false
    @OptionGroup var registry: RegistryOptions

    func run() async throws {
        await runClient(registry) { c in
            var q: [String] = ["limit=\(limit)"]
            func enc(_ s: String) -> String { s.addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? s }
            if let repo { q.append("repository=\(enc(repo))") }
            if let since { q.append("since=\(enc(since))") }
            if let until { q.append("until=\(enc(until))") }
            if let action { q.append("action=\(enc(action))") }
            let r = try await c.request(.GET, Routes[.audit].path() + "?" + q.joined(separator: "&"), as: DepotAPI.AuditLog.self)
            if json { return printJSON(r) }
            for e in r.entries {
                var line = "\(e.id)  \(e.at)  \(e.actor)  \(e.action)"
                if let repo = e.repository { line += "  \(repo)" + (e.tag.map { ":\($0)" } ?? "") }
                if let d = e.digest { line += "  \(short(d))" }
                if let details = e.details { line += "  " + details.text }
                print(line)
            }
        }
    }
}

struct AuditVerify: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "verify", abstract: "Recompute the journal's hash chain; report the first broken link.",
        discussion: "Exit status 0 when intact, 1 when broken. Reads the registry over HTTP, or a stopped server's --storage directly.")
    @Option(help: "Verify this storage root directly instead of asking the registry.") var storage: String?
    @Flag(help: "Machine-readable output.") var json = false
    @OptionGroup var registry: RegistryOptions

    func run() async throws {
        var result: AuditVerificationAnswer?
        if let storage {
            let v = reportingErrors { () -> AuditVerification in
                let store = try ChunkStore(root: storage, readOnly: true)
                return try store.catalog.read { try $0.verifyAudit() }
            }
            result = AuditVerificationAnswer(
                entries: v.entries, intact: v.intact, firstBrokenID: v.firstBrokenID, problem: v.problem, headHash: v.headHash)
        } else {
            await runClient(registry) { c in
                result = try await c.request(.GET, Routes[.auditVerify].path(), as: AuditVerificationAnswer.self)
            }
        }
        guard let result else { throw ExitCode(1) }
        if json {
            printJSON(result)
        } else if result.intact {
            print("audit journal intact: \(result.entries) entries, head \(result.headHash ?? "-")")
        } else {
            print("audit journal BROKEN at entry \(result.firstBrokenID.map(String.init) ?? "?"): \(result.problem ?? "?")")
        }
        if !result.intact { throw ExitCode(1) }
    }
}
