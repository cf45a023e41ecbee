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
    ref.isDigest ? ref.reference : try await c.manifest(ref.repository, ref.reference).digest.description
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

func printJSONObject(_ object: Any) {
    let data =
        (try? JSONSerialization.data(withJSONObject: object, options: [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes])) ?? Data()
    print(String(decoding: data, as: UTF8.self))
}

struct Alias: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Move an alias (a tag with history; protected aliases move only this way).",
        subcommands: [AliasSet.self])
}

struct AliasSet: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "set", abstract: "Point REPO's ALIAS at REF (a tag or digest of REPO).")
    @Argument var repository: String
    @Argument var alias: String
    @Argument(help: "A tag or sha256 digest in the repository.") var reference: String
    @Option(help: "Why (recorded in the journal and the audit log).") var reason: String?
    @Option(help: "Move only if the alias points at this digest now (compare-and-swap).") var expect: String?
    @OptionGroup var registry: RegistryOptions
    @Flag(help: "Machine-readable output.") var json = false

    func validate() throws {
        guard Reference.isValidTag(alias) else { throw ValidationError("'\(alias)' is not a valid tag") }
        if let expect { _ = try Digest(parsing: expect) }
    }

    func run() async throws {
        await runClient(registry) { c in
            let body = AliasMoveRequest(reference: reference, expect: expect, reason: reason)
            let r = try await c.request(.PUT, Routes[.aliasMove].path(name: repository, ["alias": alias]), body: body, as: AliasAnswer.self)
            if json { return printJSON(r) }
            print("\(repository):\(alias) -> \(r.digest)" + (r.previous.map { " (was \($0))" } ?? ""))
        }
    }
}

struct History: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Every move of an alias: when, by whom, from, to, why.")
    @Argument var repository: String
    @Argument var alias: String
    @Flag(help: "Machine-readable output.") var json = false
    @OptionGroup var registry: RegistryOptions

    func run() async throws {
        await runClient(registry) { c in
            let r = try await c.request(.GET, Routes[.aliasHistory].path(name: repository, ["alias": alias]), as: AliasHistory.self)
            if json { return printJSON(r) }
            for m in r.moves { print("\(m.at)  \(short(m.from)) -> \(short(m.to))  \(m.actor)  \(m.reason ?? "")") }
        }
    }
}

struct Rollback: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Move an alias back to an earlier digest of its history.")
    @Argument var repository: String
    @Argument var alias: String
    @Option(help: "A digest the alias pointed at before (default: the previous one).") var to: String?
    @Option(help: "How many moves back.") var steps = 1
    @Option(help: "Why (recorded).") var reason: String?
    @OptionGroup var registry: RegistryOptions
    @Flag(help: "Machine-readable output.") var json = false

    func validate() throws {
        if let to { _ = try Digest(parsing: to) }
        guard steps >= 1 else { throw ValidationError("--steps must be at least 1") }
    }

    func run() async throws {
        await runClient(registry) { c in
            let body = AliasRollbackRequest(to: to, steps: steps, reason: reason)
            let path = Routes[.aliasRollback].path(name: repository, ["alias": alias])
            let r = try await c.request(.POST, path, body: body, as: AliasRollbackAnswer.self)
            if json { return printJSON(r) }
            print("\(repository):\(alias) rolled back \(r.from) -> \(r.to)")
        }
    }
}

struct Resolve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "What an alias points at, now or at a past time (and what that was built from).")
    @Argument var repository: String
    @Argument var alias: String
    @Option(help: "A time: RFC 3339 (2026-05-03T14:00:00Z) or milliseconds since 1970.") var at: String?
    @Flag(help: "Also show the artifact's lineage ancestors.") var lineage = false
    @Flag(help: "Machine-readable output.") var json = false
    @OptionGroup var registry: RegistryOptions

    func run() async throws {
        await runClient(registry) { c in
            var query: [String] = []
            if let at { query.append("at=\(at.addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? at)") }
            if lineage { query.append("lineage=1") }
            let path = Routes[.aliasResolve].path(name: repository, ["alias": alias])
            let r = try await c.request(.GET, path + (query.isEmpty ? "" : "?" + query.joined(separator: "&")), as: AliasResolution.self)
            if json { return printJSON(r) }
            print("\(repository):\(alias) at \(r.at) -> \(r.digest)")
            for n in r.ancestors ?? [] { LineageCommand.printNode(n) }
        }
    }
}

struct Pin: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Pin an artifact: it, its blobs and its lineage ancestors are never collected or deleted.")
    @Argument(help: "REPO:TAG or REPO@DIGEST") var reference: ArtifactReference
    @Option(help: "Why (recorded).") var reason: String?
    @OptionGroup var registry: RegistryOptions
    @Flag(help: "Machine-readable output.") var json = false

    func run() async throws {
        await runClient(registry) { c in
            let r = try await c.request(
                .PUT, Routes[.pinPut].path(name: reference.repository, ["reference": reference.reference]),
                body: PinRequest(reason: reason), as: PinAnswer.self)
            if json { return printJSON(r) }
            print("pinned \(reference.repository)@\(r.digest)")
        }
    }
}

struct Unpin: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Remove a pin.")
    @Argument(help: "REPO:TAG or REPO@DIGEST") var reference: ArtifactReference
    @OptionGroup var registry: RegistryOptions
    @Flag(help: "Machine-readable output.") var json = false

    func run() async throws {
        await runClient(registry) { c in
            let path = Routes[.pinDelete].path(name: reference.repository, ["reference": reference.reference])
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
