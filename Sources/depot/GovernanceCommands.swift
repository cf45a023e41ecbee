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

func printJSONObject(_ object: Any) {
    let data =
        (try? JSONSerialization.data(withJSONObject: object, options: [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes])) ?? Data()
    print(String(decoding: data, as: UTF8.self))
}

func short(_ digest: Any?) -> String {
    guard let d = digest as? String else { return "-" }
    return d.hasPrefix("sha256:") ? String(d.prefix(19)) : d
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

    func validate() throws {
        guard Reference.isValidTag(alias) else { throw ValidationError("'\(alias)' is not a valid tag") }
        if let expect { _ = try Digest(parsing: expect) }
    }

    func run() async throws {
        await runClient(registry) { c in
            var body: [String: Any] = ["reference": reference]
            if let reason { body["reason"] = reason }
            if let expect { body["expect"] = expect }
            let r = try await c.call(.PUT, Routes[.aliasMove].path(name: repository, ["alias": alias]), body: body)
            print("\(repository):\(alias) -> \(r["digest"] as? String ?? "?")" + ((r["previous"] as? String).map { " (was \($0))" } ?? ""))
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
            let r = try await c.call(.GET, Routes[.aliasHistory].path(name: repository, ["alias": alias]))
            if json { return printJSONObject(r) }
            for m in r["moves"] as? [[String: Any]] ?? [] {
                print(
                    "\(m["at"] as? String ?? "?")  \(short(m["from"])) -> \(short(m["to"]))  \(m["actor"] as? String ?? "?")  \(m["reason"] as? String ?? "")"
                )
            }
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

    func validate() throws {
        if let to { _ = try Digest(parsing: to) }
        guard steps >= 1 else { throw ValidationError("--steps must be at least 1") }
    }

    func run() async throws {
        await runClient(registry) { c in
            var body: [String: Any] = ["steps": steps]
            if let to { body["to"] = to }
            if let reason { body["reason"] = reason }
            let r = try await c.call(.POST, Routes[.aliasRollback].path(name: repository, ["alias": alias]), body: body)
            print("\(repository):\(alias) rolled back \(r["from"] as? String ?? "?") -> \(r["to"] as? String ?? "?")")
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
            let r = try await c.call(
                .GET,
                Routes[.aliasResolve].path(name: repository, ["alias": alias]) + (query.isEmpty ? "" : "?" + query.joined(separator: "&")))
            if json { return printJSONObject(r) }
            print("\(repository):\(alias) at \(r["at"] as? String ?? "?") -> \(r["digest"] as? String ?? "?")")
            for n in r["ancestors"] as? [[String: Any]] ?? [] { LineageCommand.printNode(n) }
        }
    }
}

struct Pin: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Pin an artifact: it, its blobs and its lineage ancestors are never collected or deleted.")
    @Argument(help: "REPO:TAG or REPO@DIGEST") var reference: ArtifactReference
    @Option(help: "Why (recorded).") var reason: String?
    @OptionGroup var registry: RegistryOptions

    func run() async throws {
        await runClient(registry) { c in
            let r = try await c.call(
                .PUT, Routes[.pinPut].path(name: reference.repository, ["reference": reference.reference]),
                body: reason.map { ["reason": $0] } ?? [:])
            print("pinned \(reference.repository)@\(r["digest"] as? String ?? "?")")
        }
    }
}

struct Unpin: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Remove a pin.")
    @Argument(help: "REPO:TAG or REPO@DIGEST") var reference: ArtifactReference
    @OptionGroup var registry: RegistryOptions

    func run() async throws {
        await runClient(registry) { c in
            let r = try await c.call(.DELETE, Routes[.pinDelete].path(name: reference.repository, ["reference": reference.reference]))
            print("unpinned \(reference.repository)@\(r["digest"] as? String ?? "?")")
        }
    }
}

struct Pins: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "List pins.")
    @Flag(help: "Machine-readable output.") var json = false
    @OptionGroup var registry: RegistryOptions

    func run() async throws {
        await runClient(registry) { c in
            let r = try await c.call(.GET, Routes[.pins].path())
            if json { return printJSONObject(r) }
            for p in r["pins"] as? [[String: Any]] ?? [] {
                print(
                    "\(p["repository"] as? String ?? "?")@\(p["digest"] as? String ?? "?")  \(p["at"] as? String ?? "")  \(p["actor"] as? String ?? "")  \(p["reason"] as? String ?? "")"
                )
            }
        }
    }
}
