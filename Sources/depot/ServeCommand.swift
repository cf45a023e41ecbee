import ArgumentParser
import DepotClient
import DepotCore
import DepotServer
import DepotTelemetry
import Foundation

struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run the registry: the OCI distribution API on HTTP.",
        discussion:
            "Flags override DEPOT_<SECTION>_<KEY> environment variables (every key of config/depot.yaml has one), which override the configuration file; the file overrides the defaults."
    )

    @Option(help: "Address to listen on, HOST:PORT (default 127.0.0.1:5000).") var listen: String?
    @Option(help: "Storage root (default storage/).") var storage: String?
    @Option(help: "Configuration file (default config/depot.yaml, if present).") var config: String?
    @Option(help: "Log level: trace, debug, info, notice, warning, error, critical.") var logLevel: String?
    @Flag(help: "Listen on a non-loopback address with authentication off (anyone who reaches the port can push and delete).")
    var insecureOpen = false

    func run() async throws {
        var settings = ServerConfig()
        do {
            // Defaults, then the file, then DEPOT_<SECTION>_<KEY> variables, then the flags below.
            let file = config ?? (FileManager.default.fileExists(atPath: "config/depot.yaml") ? "config/depot.yaml" : nil)
            settings = try ServerConfig.load(file, environment: ProcessInfo.processInfo.environment)
            if let file { settings.pipelines.runnerHiddenPaths = [URL(fileURLWithPath: file).standardizedFileURL.path] }
            if let listen { try settings.setListen(listen) }
            if let storage { settings.storageRoot = storage }
            if let logLevel { settings.logLevel = logLevel }
            if !settings.auth.enabled, !insecureOpen, !Self.isLoopback(settings.listenHost) {
                throw DepotError.invalidArgument(
                    "refusing to listen on \(settings.listenHost) with authentication off: anyone who reaches the port could push, delete "
                        + "and move production. Turn it on (auth.enabled: true in config/depot.yaml, see README \"Securing Depot\"), "
                        + "listen on 127.0.0.1, or pass --insecure-open")
            }
            // Before anything makes a span: the tracer is chosen once per process.
            let tracing = try Telemetry.bootstrap(settings.tracing, logger: DepotService.makeLogger(settings, label: "depot.tracing"))
            try await DepotService(config: settings).run(services: tracing.map { [$0] } ?? [])
        } catch let e as DepotError {
            fail(e.description)
        }
    }

    /// 127.0.0.0/8, ::1 and localhost: addresses only this machine reaches.
    static func isLoopback(_ host: String) -> Bool {
        RegistryConnection.isLoopback(host)
    }
}
