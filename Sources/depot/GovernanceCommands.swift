import ArgumentParser
import DepotAPI
import DepotCatalog
import DepotClient
import DepotCore
import DepotRegistry
import DepotStore
import Foundation

/// Resolves `REPO:TAG` / `REPO@DIGEST` to a digest through the registry.
func digest(of ref: ArtifactReference, _ c: RegistryConnection) async throws -> String {
    if let d = ref.digest { return d.description }
    return try await c.manifest(ref.repository, ref.version).digest.description
}

/// `REPO:NAME` (the one grammar: an alias or environment in the place of the tag) or the older
/// `REPO NAME`, followed by `extra` more words; `[HOST/]` selects the registry.
struct NamedTarget {
    var reference: ArtifactReference
    var rest: [String]
    var repository: String { reference.repository }
    var name: String { reference.version }

    init(_ words: [String], extra: Int, usage: String) throws {
        let example = "e.g. \(usage)"
        if words.count == extra + 1 {
            let r = try ArtifactReference.argument(words[0])
            guard r.digest == nil, r.tag != nil else {
                throw ValidationError("'\(words[0].prefix(200))' must be REPO:NAME, without a digest (\(example))")
            }
            reference = r
        } else if words.count == extra + 2 {
            var r = try ArtifactReference.repositoryArgument(words[0])
            guard r.tag == nil, r.digest == nil else {
                throw ValidationError("with a separate NAME, '\(words[0].prefix(200))' must be a repository alone (\(example))")
            }
            guard Reference.isValidTag(words[1]) else {
                throw ValidationError("'\(words[1].prefix(200))' is not a valid name ([A-Za-z0-9_][A-Za-z0-9._-]{0,127}; \(example))")
            }
            r.tag = words[1]
            reference = r
        } else {
            throw ValidationError("expected \(extra + 1) arguments (or \(extra + 2) in the older REPO NAME form): \(example)")
        }
        rest = Array(words.suffix(extra))
    }

    /// A version of this target's repository as given after it: a tag, a digest, or a whole
    /// reference to the same repository (`team/llm:v2`, `team/llm@sha256:…`).
    func localVersion(_ text: String) throws -> String {
        if text.hasPrefix("sha256:") || (!text.contains("/") && !text.contains(":") && !text.contains("@")) { return text }
        let r = try ArtifactReference.argument(text)
        guard r.repository == repository, r.registry == nil || r.registry == reference.registry else {
            throw ValidationError(
                "'\(text.prefix(200))' is not in \(reference.registry.map { "\($0)/" } ?? "")\(repository): name a tag or digest of it, e.g. v2 or \(repository)@sha256:…"
            )
        }
        return r.version
    }
}

/// A digest shortened for a terminal (`sha256:` and 12 hex digits); other text as it is.
func short(_ digest: Any?) -> String {
    let text: String
    switch digest {
    case let d as Digest: text = d.description
    case let s as String: text = s
    default: return "-"
    }
    return text.hasPrefix("sha256:") ? String(text.prefix(19)) : text
}

struct Alias: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Move an alias (a tag with history; protected aliases move only this way).",
        subcommands: [AliasSet.self])
}

struct AliasSet: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "set", abstract: "Point REPO's ALIAS at REF (a tag or digest of REPO).",
        discussion:
            "depot alias set team/llm:production v2   (or team/llm:production team/llm@sha256:…; the older form: team/llm production v2)")
    @Argument(help: "[HOST/]REPO:ALIAS REF") var words: [String]
    @Option(help: "Why (recorded in the journal and the audit log).") var reason: String?
    @Option(help: "Move only if the alias points at this digest now (compare-and-swap).") var expect: String?
    @OptionGroup var registry: RegistryOptions
    @Flag(help: "Machine-readable output.") var json = false

    var target: NamedTarget { get throws { try NamedTarget(words, extra: 1, usage: "team/llm:production v2") } }

    func validate() throws {
        let t = try target
        _ = try t.localVersion(t.rest[0])
        if let expect { _ = try Digest(parsing: expect) }
    }

    func run() async throws {
        let t = try target
        let reference = try t.localVersion(t.rest[0])
        await runClient(registry, for: [t.reference]) { c in
            let body = AliasMoveRequest(reference: reference, expect: expect, reason: reason)
            let r = try await c.request(
                .PUT, Routes[.aliasMove].path(name: t.repository, ["alias": t.name]), body: body, as: AliasAnswer.self)
            if json { return printJSON(r) }
            print("\(t.repository):\(t.name) -> \(r.digest)" + (r.previous.map { " (was \($0))" } ?? ""))
        }
    }
}

struct History: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Every move of an alias: when, by whom, from, to, why.")
    @Argument(help: "[HOST/]REPO:ALIAS (or REPO ALIAS)") var words: [String]
    @Flag(help: "Machine-readable output.") var json = false
    @OptionGroup var registry: RegistryOptions

    func validate() throws { _ = try NamedTarget(words, extra: 0, usage: "team/llm:production") }

    func run() async throws {
        let t = try NamedTarget(words, extra: 0, usage: "team/llm:production")
        await runClient(registry, for: [t.reference]) { c in
            let r = try await c.request(.GET, Routes[.aliasHistory].path(name: t.repository, ["alias": t.name]), as: AliasHistory.self)
            if json { return printJSON(r) }
            for m in r.moves { print("\(m.at)  \(short(m.from)) -> \(short(m.to))  \(m.actor)  \(m.reason ?? "")") }
        }
    }
}

struct Rollback: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Move an alias back to an earlier digest of its history.")
    @Argument(help: "[HOST/]REPO:ALIAS (or REPO ALIAS)") var words: [String]
    @Option(help: "A digest the alias pointed at before (default: the previous one).") var to: String?
    @Option(help: "How many moves back.") var steps = 1
    @Option(help: "Why (recorded).") var reason: String?
    @OptionGroup var registry: RegistryOptions
    @Flag(help: "Machine-readable output.") var json = false

    func validate() throws {
        _ = try NamedTarget(words, extra: 0, usage: "team/llm:production")
        if let to { _ = try Digest(parsing: to) }
        guard steps >= 1 else { throw ValidationError("--steps must be at least 1") }
    }

    func run() async throws {
        let t = try NamedTarget(words, extra: 0, usage: "team/llm:production")
        await runClient(registry, for: [t.reference]) { c in
            let body = AliasRollbackRequest(to: to, steps: steps, reason: reason)
            let path = Routes[.aliasRollback].path(name: t.repository, ["alias": t.name])
            let r = try await c.request(.POST, path, body: body, as: AliasRollbackAnswer.self)
            if json { return printJSON(r) }
            print("\(t.repository):\(t.name) rolled back \(r.from) -> \(r.to)")
        }
    }
}

struct Resolve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "What an alias points at, now or at a past time (and what that was built from).")
    @Argument(help: "[HOST/]REPO:ALIAS (or REPO ALIAS)") var words: [String]
    @Option(help: "A time: RFC 3339 (2026-05-03T14:00:00Z) or milliseconds since 1970.") var at: String?
    @Flag(help: "Also show the artifact's lineage ancestors.") var lineage = false
    @Flag(help: "Machine-readable output.") var json = false
    @OptionGroup var registry: RegistryOptions

    func validate() throws { _ = try NamedTarget(words, extra: 0, usage: "team/llm:production") }

    func run() async throws {
        let t = try NamedTarget(words, extra: 0, usage: "team/llm:production")
        await runClient(registry, for: [t.reference]) { c in
            var query: [String] = []
            if let at { query.append("at=\(at.addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? at)") }
            if lineage { query.append("lineage=1") }
            let path = Routes[.aliasResolve].path(name: t.repository, ["alias": t.name])
            let r = try await c.request(.GET, path + (query.isEmpty ? "" : "?" + query.joined(separator: "&")), as: AliasResolution.self)
            if json { return printJSON(r) }
            print("\(t.repository):\(t.name) at \(r.at) -> \(r.digest)")
            for n in r.ancestors ?? [] { LineageCommand.printNode(n) }
        }
    }
}

struct Pin: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Pin an artifact: it, its blobs and its lineage ancestors are never collected or deleted.")
    @Argument(help: "[HOST/]REPO:TAG or [HOST/]REPO@DIGEST", transform: ArtifactReference.argument) var reference: ArtifactReference
    @Option(help: "Why (recorded).") var reason: String?
    @OptionGroup var registry: RegistryOptions
    @Flag(help: "Machine-readable output.") var json = false

    func run() async throws {
        await runClient(registry, for: [reference]) { c in
            let r = try await c.request(
                .PUT, Routes[.pinPut].path(name: reference.repository, ["reference": reference.version]),
                body: PinRequest(reason: reason), as: PinAnswer.self)
            if json { return printJSON(r) }
            print("pinned \(reference.repository)@\(r.digest)")
        }
    }
}

struct Unpin: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Remove a pin.")
    @Argument(help: "[HOST/]REPO:TAG or [HOST/]REPO@DIGEST", transform: ArtifactReference.argument) var reference: ArtifactReference
    @OptionGroup var registry: RegistryOptions
    @Flag(help: "Machine-readable output.") var json = false

    func run() async throws {
        await runClient(registry, for: [reference]) { c in
            let path = Routes[.pinDelete].path(name: reference.repository, ["reference": reference.version])
            let r = try await c.request(.DELETE, path, as: PinAnswer.self)
            if json { return printJSON(r) }
            print("unpinned \(reference.repository)@\(r.digest)")
        }
    }
}

struct Pins: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "List pins.")
    @Flag(help: "Machine-readable output.") var json = false
    @OptionGroup var registry: RegistryOptions

    func run() async throws {
        await runClient(registry) { c in
            let r = try await c.request(.GET, Routes[.pins].path(), as: PinList.self)
            if json { return printJSON(r) }
            for p in r.pins { print("\(p.repository)@\(p.digest)  \(p.at)  \(p.actor)  \(p.reason ?? "")") }
        }
    }
}
