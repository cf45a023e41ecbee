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
    @Argument(help: "REPO:TAG or REPO@DIGEST (not needed with --path).") var reference: ArtifactReference?
    @Flag(help: "Walk to what it was derived from (the default).") var ancestors = false
    @Flag(help: "Walk to what was derived from it.") var descendants = false
    @Flag(help: "Which tags and aliases resolve to it or to anything derived from it.") var impact = false
    @Option(parsing: .upToNextOption, help: "A derivation path between two artifacts: --path FROM TO.") var path: [ArtifactReference] = []
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
        await runClient(registry) { c in
            if path.count == 2 {
                let from = try await digest(of: path[0], c)
                let to = try await digest(of: path[1], c)
                let r = try await c.call(.GET, Routes[.lineagePath].path() + "?from=\(from)&to=\(to)")
                let edges = r["edges"] as? [[String: Any]] ?? []
                return output(edges: edges, raw: r) {
                    for e in edges {
                        print("\(short(e["parent"])) --\(e["relation"] as? String ?? "?")--> \(short(e["child"]))  \(Self.details(e))")
                    }
                }
            }
            let ref = reference!
            let d = try await digest(of: ref, c)
            if impact {
                let r = try await c.call(.GET, Routes[.impact].path(["digest": "\(d)"]))
                let nodes = r["derived"] as? [[String: Any]] ?? []
                return output(edges: nodes.compactMap { $0["edge"] as? [String: Any] }, raw: r) {
                    print("\(nodes.count) artifact(s) derived from \(ref)")
                    for n in nodes { Self.printNode(n) }
                    let tags = r["tags"] as? [[String: Any]] ?? []
                    print(
                        tags.isEmpty
                            ? "no tag or alias resolves to it or to anything derived from it"
                            : "tags and aliases affected:")
                    for t in tags { print("  \(t["repository"] as? String ?? "?"):\(t["tag"] as? String ?? "?") -> \(short(t["digest"]))") }
                }
            }
            var query = ["direction=\(descendants ? "descendants" : "ancestors")", "depth=\(depth)"]
            if !relation.isEmpty { query.append("relation=\(relation.joined(separator: ","))") }
            if let artifactType {
                query.append("artifact_type=\(artifactType.addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? artifactType)")
            }
            let r = try await c.call(.GET, Routes[.lineage].path(["digest": "\(d)"]) + "?" + query.joined(separator: "&"))
            let nodes = r["nodes"] as? [[String: Any]] ?? []
            output(edges: nodes.compactMap { $0["edge"] as? [String: Any] }, raw: r) {
                print("\(ref) \(d)")
                if nodes.isEmpty { print("  (no \(descendants ? "descendants" : "ancestors") recorded)") }
                for n in nodes { Self.printNode(n) }
            }
        }
    }

    func output(edges: [[String: Any]], raw: [String: Any], table: () -> Void) {
        if json { return printJSONObject(raw) }
        if dot { return print(Self.dot(edges)) }
        if openlineage {
            for e in edges { printCompactJSON(Self.openLineageEvent(e)) }
            return
        }
        table()
    }

    static func details(_ e: [String: Any]) -> String {
        var parts: [String] = []
        for key in ["run", "dataset", "commit", "job"] { if let v = e[key] as? String { parts.append("\(key)=\(v)") } }
        if let m = e["metrics"] as? [String: Any] { parts += m.keys.sorted().map { "\($0)=\(m[$0]!)" } }
        return parts.joined(separator: " ")
    }

    static func printNode(_ n: [String: Any]) {
        let e = n["edge"] as? [String: Any] ?? [:]
        let stored = n["stored"] as? Bool ?? true
        let indent = String(repeating: "  ", count: n["depth"] as? Int ?? 1)
        print(
            "\(indent)\(short(n["digest"]))  \(e["relation"] as? String ?? "?")  \(e["relation"] as? String == "subject" ? "" : (e["parent_ref"] as? String ?? ""))"
                + (stored ? "" : "  (external)") + (n["artifact_type"].map { "  \($0)" } ?? "") + "  " + details(e))
    }

    static func dot(_ edges: [[String: Any]]) -> String {
        var lines = ["digraph lineage {", "  rankdir=BT;", "  node [shape=box, fontname=monospace];"]
        var nodes = Set<String>()
        for e in edges {
            guard let p = e["parent"] as? String, let c = e["child"] as? String else { continue }
            for n in [p, c] where nodes.insert(n).inserted { lines.append("  \"\(n)\" [label=\"\(short(n))\"];") }
            lines.append("  \"\(c)\" -> \"\(p)\" [label=\"\(e["relation"] as? String ?? "")\"];")
        }
        lines.append("}")
        return lines.joined(separator: "\n")
    }

    /// An OpenLineage RunEvent for one derivation: the parent as input, the child as output.
    static func openLineageEvent(_ e: [String: Any]) -> [String: Any] {
        let child = e["child"] as? String ?? ""
        let parent = e["parent"] as? String ?? ""
        let relation = e["relation"] as? String ?? ""
        let seed = Array((child + parent + relation).utf8)
        let h = seed.withUnsafeBytes { SHA256.hash($0).byteArray }
        var u = Array(h.prefix(16))
        u[6] = (u[6] & 0x0F) | 0x50
        u[8] = (u[8] & 0x3F) | 0x80
        let hex = u.map { String(format: "%02x", $0) }.joined()
        let runID = [
            hex.prefix(8), hex.dropFirst(8).prefix(4), hex.dropFirst(12).prefix(4), hex.dropFirst(16).prefix(4), hex.dropFirst(20),
        ].map(String.init).joined(separator: "-")
        var runFacets: [String: Any] = [:]
        if let run = e["run"] as? String {
            runFacets["depot_run"] = [
                "_producer": "depot", "_schemaURL": "https://openlineage.io/spec/facets/1-0-0/BaseFacet.json", "id": run,
            ]
        }
        let repo = e["repository"] as? String ?? ""
        return [
            "eventType": "COMPLETE",
            "eventTime": e["at"] as? String ?? "",
            "producer": "https://github.com/depot-registry/depot",
            "schemaURL": "https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/RunEvent",
            "run": ["runId": runID, "facets": runFacets],
            "job": ["namespace": "depot", "name": (e["job"] as? String) ?? relation],
            "inputs": [["namespace": "depot", "name": e["parent_ref"] as? String ?? parent]],
            "outputs": [["namespace": "depot", "name": "\(repo)@\(child)"]],
        ]
    }
}

func printCompactJSON(_ object: Any) {
    let data = (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .withoutEscapingSlashes])) ?? Data()
    print(String(decoding: data, as: UTF8.self))
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
            let r = try await c.call(.GET, Routes[.audit].path() + "?" + q.joined(separator: "&"))
            if json { return printJSONObject(r) }
            for e in r["entries"] as? [[String: Any]] ?? [] {
                var line =
                    "\(e["id"] ?? "?")  \(e["at"] as? String ?? "?")  \(e["actor"] as? String ?? "?")  \(e["action"] as? String ?? "?")"
                if let repo = e["repository"] as? String { line += "  \(repo)" + ((e["tag"] as? String).map { ":\($0)" } ?? "") }
                if let d = e["digest"] as? String { line += "  \(short(d))" }
                if let details = e["details"] {
                    line +=
                        "  "
                        + String(
                            decoding: (try? JSONSerialization.data(
                                withJSONObject: details, options: [.sortedKeys, .withoutEscapingSlashes])) ?? Data(), as: UTF8.self)
                }
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
        var result: [String: Any] = [:]
        if let storage {
            let v = reportingErrors { () -> AuditVerification in
                let store = try ChunkStore(root: storage, readOnly: true)
                return try store.catalog.read { try $0.verifyAudit() }
            }
            result = ["entries": v.entries, "intact": v.intact]
            if let id = v.firstBrokenID { result["first_broken_id"] = id }
            if let p = v.problem { result["problem"] = p }
            if let h = v.headHash { result["head_hash"] = h }
        } else {
            await runClient(registry) { c in result = try await c.call(.GET, Routes[.auditVerify].path()) }
        }
        if json {
            printJSONObject(result)
        } else if result["intact"] as? Bool == true {
            print("audit journal intact: \(result["entries"] ?? 0) entries, head \(result["head_hash"] as? String ?? "-")")
        } else {
            print("audit journal BROKEN at entry \(result["first_broken_id"] ?? "?"): \(result["problem"] as? String ?? "?")")
        }
        if result["intact"] as? Bool != true { throw ExitCode(1) }
    }
}
