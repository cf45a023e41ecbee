import ArgumentParser
import DepotCore
import DepotServer
import Foundation

struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run the registry: the OCI distribution API on HTTP.",
        discussion: "Flags override the configuration file; the file overrides the defaults.")

    @Option(help: "Address to listen on, HOST:PORT (default 127.0.0.1:5000).") var listen: String?
    @Option(help: "Storage root (default storage/).") var storage: String?
    @Option(help: "Configuration file (default config/depot.yaml, if present).") var config: String?
    @Option(help: "Log level: trace, debug, info, notice, warning, error, critical.") var logLevel: String?

    func run() async throws {
        var settings = ServerConfig()
        do {
            if let config {
                settings = try ServerConfig.load(config)
            } else if FileManager.default.fileExists(atPath: "config/depot.yaml") {
                settings = try ServerConfig.load("config/depot.yaml")
            }
            if let listen { try settings.setListen(listen) }
            if let storage { settings.storageRoot = storage }
            if let logLevel { settings.logLevel = logLevel }
            try await DepotService(config: settings).run()
        } catch let e as DepotError {
            fail(e.description)
        }
    }
}
