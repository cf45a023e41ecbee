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
            let r = try await c.request(.GET, Routes[.events].path() + "?after=\(after)&n=\(limit)", as: EventPage.self)
            if json { return printJSON(r) }
            for e in r.events {
                let place = (e.repository ?? "") + (e.tag.map { ":\($0)" } ?? "")
                print("\(e.id)  \(e.at)  \(e.type)  \(place)  \(short(e.digest))  \(e.actor ?? "")")
            }
            print("next cursor: \(r.next)")
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
            let r = try await c.request(.GET, path, as: DeliveryList.self)
            if json { return printJSON(r) }
            for d in r.deliveries {
                let answer = d.status.map { "HTTP \($0)" } ?? "no answer"
                print(
                    "\(d.at)  \(d.webhook)  event \(d.event)  attempt \(d.attempt)  \(answer)  \(d.durationMs) ms  \(d.outcome)  \(d.error ?? "")"
                )
            }
        }
    }
}
