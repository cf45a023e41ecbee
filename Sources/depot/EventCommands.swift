import ArgumentParser
import DepotAPI
import DepotClient
import Foundation

struct Events: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "The registry's events (pushes, tag and alias moves, deletes) and webhook deliveries.",
        subcommands: [EventList.self, Deliveries.self], defaultSubcommand: EventList.self)
}

struct EventList: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "list", abstract: "Events after a cursor, oldest first.")
    @Option(help: "Cursor: show events after this id.") var after: Int64 = 0
    @Option(help: "At most this many.") var limit = 100
    @Flag(help: "Machine-readable output (the events as delivered, plus the next cursor).") var json = false
    @OptionGroup var registry: RegistryOptions

    func run() async throws {
        await runClient(registry) { c in
            let r = try await c.call(.GET, Routes[.events].path() + "?after=\(after)&n=\(limit)")
            if json { return printJSONObject(r) }
            for e in r["events"] as? [[String: Any]] ?? [] {
                let place = "\(e["repository"] as? String ?? "")" + ((e["tag"] as? String).map { ":\($0)" } ?? "")
                print(
                    "\(e["id"] as? String ?? "?")  \(e["at"] as? String ?? "?")  \(e["type"] as? String ?? "?")  \(place)  \(short(e["digest"]))  \(e["actor"] as? String ?? "")"
                )
            }
            print("next cursor: \(r["next"] as? String ?? "?")")
        }
    }
}

struct Deliveries: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Webhook delivery attempts: status, error, duration, outcome.")
    @Option(help: "Only this webhook.") var webhook: String?
    @Option(help: "The newest this many.") var limit = 100
    @Flag(help: "Machine-readable output.") var json = false
    @OptionGroup var registry: RegistryOptions

    func run() async throws {
        await runClient(registry) { c in
            var path = Routes[.deliveries].path() + "?n=\(limit)"
            if let webhook { path += "&webhook=\(webhook.addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? webhook)" }
            let r = try await c.call(.GET, path)
            if json { return printJSONObject(r) }
            for d in r["deliveries"] as? [[String: Any]] ?? [] {
                print(
                    "\(d["at"] as? String ?? "?")  \(d["webhook"] as? String ?? "?")  event \(d["event"] as? String ?? "?")  attempt \(d["attempt"] ?? "?")  \(d["status"].map { "HTTP \($0)" } ?? "no answer")  \(d["duration_ms"] ?? "?") ms  \(d["outcome"] as? String ?? "?")  \(d["error"] as? String ?? "")"
                )
            }
        }
    }
}
