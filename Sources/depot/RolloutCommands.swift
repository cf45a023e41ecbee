import ArgumentParser
import DepotAPI
import DepotClient
import DepotCore
import DepotRunner
import Foundation
import Logging

struct Rollout: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Canary rollouts of Triton bundles: start, status, resume, promote, abort.",
        subcommands: [
            RolloutStart.self, RolloutStatus.self, RolloutAction.Resume.self, RolloutAction.Promote.self, RolloutAction.Abort.self,
        ])
}

/// `[HOST/]REPO:ENV` (or the older `REPO ENV`), shared by the rollout commands.
struct DeploymentArguments: ParsableArguments {
    @Argument(help: "[HOST/]REPO:ENV (or REPO ENV), e.g. team/llm:production") var words: [String]
    var target: NamedTarget { get throws { try NamedTarget(words, extra: 0, usage: "team/llm:production") } }
    func validate() throws { _ = try target }
    /// The path of one of this deployment's routes.
    func path(_ id: RouteID) throws -> String {
        let t = try target
        return Routes[id].path(name: t.repository, ["environment": t.name])
    }
}

struct RolloutStart: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "start", abstract: "Roll a Triton bundle out to an environment by steps, gated by metrics.")
    @Argument(help: "[HOST/]REPO:ENV REF (or REPO ENV REF): the bundle, a tag or digest of REPO, e.g. team/llm:production v3")
    var words: [String]

    var target: NamedTarget { get throws { try NamedTarget(words, extra: 1, usage: "team/llm:production v3") } }

    func validate() throws {
        let t = try target
        _ = try t.localVersion(t.rest[0])
    }
    @Option(help: "Traffic steps in percent, comma-separated (default from the config: 1,10,50,100).") var steps: String?
    @Option(help: "Analysis interval per step: 90s, 15m, … (default from the config).") var analysis: String?
    @Flag(help: "Machine-readable output.") var json = false
    @OptionGroup var registry: RegistryOptions

    func run() async throws {
        let t = try target
        var body = RolloutStartRequest(reference: try t.localVersion(t.rest[0]))
        if let steps {
            let list = steps.split(separator: ",").compactMap { Int($0.trimmingCharacters(in: .whitespaces)) }
            guard list.count == steps.split(separator: ",").count else { fail("--steps must be integers, e.g. 1,10,50,100") }
            body.steps = list
        }
        if let analysis {
            guard let seconds = DurationText.seconds(analysis) else { fail("--analysis must be a duration such as 90s or 15m") }
            body.analysisSeconds = Double(seconds)
        }
        let path = Routes[.rolloutStart].path(name: t.repository, ["environment": t.name])
        await runClient(registry, for: [t.reference]) { [body] c in
            let status = try await c.request(.POST, path, body: body, as: DeploymentStatusAnswer.self)
            if json { return printJSON(status) }
            RolloutFormat.print(status)
        }
    }
}

struct RolloutStatus: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "status", abstract: "Stable and canary digests, step, weight, decisions with their measurements, nodes.")
    @OptionGroup var deployment: DeploymentArguments
    @Flag(help: "Machine-readable output.") var json = false
    @OptionGroup var registry: RegistryOptions

    func run() async throws {
        await runClient(registry, for: [try deployment.target.reference]) { c in
            let status = try await c.request(.GET, try deployment.path(.deployment), as: DeploymentStatusAnswer.self)
            if json { return printJSON(status) }
            RolloutFormat.print(status)
        }
    }
}

enum RolloutAction {
    static func perform(_ action: RouteID, _ deployment: DeploymentArguments, reason: String?, json: Bool, _ registry: RegistryOptions)
        async
    {
        // validate() checked the arguments: these do not throw here.
        guard let target = try? deployment.target, let path = try? deployment.path(action) else { fail("invalid deployment arguments") }
        await runClient(registry, for: [target.reference]) { c in
            let status = try await c.request(
                .POST, path, body: RolloutControlRequest(reason: reason), as: DeploymentStatusAnswer.self)
            if json { return printJSON(status) }
            RolloutFormat.print(status)
        }
    }

    struct Resume: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "resume", abstract: "Resume a paused rollout (the step's analysis starts again).")
        @OptionGroup var deployment: DeploymentArguments
        @Flag var json = false
        @OptionGroup var registry: RegistryOptions
        func run() async throws { await RolloutAction.perform(.rolloutResume, deployment, reason: nil, json: json, registry) }
    }

    struct Promote: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "promote", abstract: "Promote the canary now: it becomes stable everywhere.")
        @OptionGroup var deployment: DeploymentArguments
        @Option(help: "Why (recorded).") var reason: String?
        @Flag var json = false
        @OptionGroup var registry: RegistryOptions
        func run() async throws { await RolloutAction.perform(.rolloutPromote, deployment, reason: reason, json: json, registry) }
    }

    struct Abort: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "abort", abstract: "Abort: the canary goes to 0% and the alias back to the stable digest.")
        @OptionGroup var deployment: DeploymentArguments
        @Option(help: "Why (recorded).") var reason: String?
        @Flag var json = false
        @OptionGroup var registry: RegistryOptions
        func run() async throws { await RolloutAction.perform(.rolloutAbort, deployment, reason: reason, json: json, registry) }
    }
}

enum RolloutFormat {
    static func print(_ s: DeploymentStatusAnswer) {
        let d = s.deployment
        Swift.print("\(d.repository):\(d.environment)  model \(d.model)")
        Swift.print("  stable  \(d.stable?.description ?? "-")\(d.stableVersion.map { "  (version \($0))" } ?? "")")
        if let c = d.canary {
            Swift.print("  canary  \(c)\(d.canaryVersion.map { "  (version \($0))" } ?? "")  at \(d.weight)%")
        }
        if let r = s.rollout {
            let steps = r.steps.map(String.init).joined(separator: ",")
            Swift.print(
                "  rollout \(r.id): \(r.state.rawValue), step \(r.step) of [\(steps)], \(r.weight)%\(r.reason.map { " — \($0)" } ?? "")")
            for e in r.decisions {
                Swift.print("    \(e.at)  \(e.decision)  \(e.weight)%  \(e.actor)  \(e.reason ?? "")")
            }
            // The last analysis's values.
            if let last = r.decisions.last(where: { $0.measurements != nil }),
                let ms = last.measurements?["measurements"]?.array
            {
                Swift.print("  last analysis:")
                for m in ms {
                    Swift.print("    \(m["check"]?.string ?? "?"): \(m["outcome"]?.string ?? "?") — \(m["detail"]?.string ?? "")")
                }
            }
        }
        for n in s.nodes {
            Swift.print(
                "  node \(n.node): \(n.state?.rawValue ?? "asked") \(short(n.digest))\(n.version.map { " v\($0)" } ?? "")\(n.reason.map { " — \($0.prefix(200))" } ?? "")"
            )
        }
    }
}

struct TritonSyncCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "triton-sync",
        abstract: "The Triton node agent: serve what the deployment says this node serves.",
        discussion:
            "Resolves the deployment for this node, pulls the bundle through the chunk cache, lays out <model>/<version>/ atomically, loads it (explicit mode) or waits for Triton (poll mode), checks READY, reports to the registry, and removes versions no longer wanted. Keeps serving the last good version while the registry is unreachable."
    )
    @OptionGroup var registry: RegistryOptions
    @Option(help: "REPO:ENV, e.g. vision/resnet:production.") var deployment: String
    @Option(help: "Triton's model repository directory.") var modelRepository: String
    @Option(help: "This node's id (stable across restarts).") var node: String
    @Option(help: "Triton's HTTP endpoint.") var triton = "http://127.0.0.1:8000"
    @Option(help: "Triton's model control mode: explicit (load through the API) or poll.") var mode = "explicit"
    @Option(help: "Seconds between checks.") var interval: Double = 5
    @Option(help: "Staging directory for pulls (same filesystem as the model repository).") var stagingDir: String?
    @Flag(help: "Sync once and exit (status 1 when it failed).") var once = false
    @Option(
        name: .customLong("trusted-key"),
        help: ArgumentHelp(
            "A public key (PEM) a bundle must be signed by, as NAME=FILE or FILE; repeatable (any one suffices).",
            discussion: "Get the registry's pipeline key with `depot key show` and copy it to the node out of band."))
    var trustedKeys: [String] = []
    @Flag(help: "Load bundles without checking signatures (not for production).") var allowUnsigned = false

    func validate() throws {
        guard !trustedKeys.isEmpty || allowUnsigned else {
            throw ValidationError(
                "pass --trusted-key FILE (the registry's pipeline key: `depot key show --out FILE`), or --allow-unsigned to load bundles unverified"
            )
        }
        guard ["explicit", "poll"].contains(mode) else { throw ValidationError("--mode must be explicit or poll") }
        guard TritonSync.isSafeName(node) else { throw ValidationError("--node must be 1-128 of A-Z a-z 0-9 _ . -") }
        guard interval >= 0.2 else { throw ValidationError("--interval must be at least 0.2 s") }
        guard let colon = deployment.lastIndex(of: ":"), colon != deployment.startIndex,
            deployment.index(after: colon) != deployment.endIndex
        else {
            throw ValidationError("--deployment must be REPO:ENV")
        }
    }

    func run() async throws {
        let colon = deployment.lastIndex(of: ":")!
        var options = TritonSyncOptions(
            repository: String(deployment[..<colon]), environment: String(deployment[deployment.index(after: colon)...]),
            node: node, modelRepository: modelRepository, tritonURL: triton.hasSuffix("/") ? String(triton.dropLast()) : triton)
        options.pollMode = mode == "poll"
        options.interval = .milliseconds(Int64(interval * 1000))
        if let stagingDir { options.stagingDirectory = stagingDir }
        do { options.trustedKeys = try trustedKeys.map(loadTrustedKey) } catch { fail("\(error)") }
        let connection: RegistryConnection
        do { connection = try registry.connect() } catch { fail("\(error)") }
        let sync: TritonSync
        do { sync = try TritonSync(connection: connection, options: options, logger: Logger(label: "triton-sync")) } catch {
            fail("\(error)")
        }
        if once {
            do { try await sync.syncOnce() } catch { fail("\(error)") }
            await connection.shutdown()
            return
        }
        await runUntilSignalled { await sync.run() }
        await connection.shutdown()
    }
}
