import ArgumentParser
import DepotCatalog
import DepotClient
import DepotCore
import DepotStore
import Foundation

/// The `depot` command line: the registry server, its client, and store maintenance.
@main
struct Depot: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "depot",
        abstract: "Depot: a content-addressed, deduplicating model registry.",
        version: BuildInfo.version,
        subcommands: [
            Serve.self, Push.self, Pull.self, Tag.self, List.self, Inspect.self,
            Alias.self, History.self, Rollback.self, Resolve.self, Pin.self, Unpin.self, Pins.self,
            LineageCommand.self, Audit.self, Events.self, Jobs.self, RunnerCommand.self, Rollout.self, TritonSyncCommand.self, Stats.self,
            Fsck.self, Backup.self, GC.self, Blob.self, Bench.self, Debug.self, Login.self, Logout.self, WhoAmICommand.self, Admin.self,
            Sign.self, Verify.self, KeyCommand.self, Attach.self, Discover.self, Copy.self, Completion.self,
        ]
    )

    /// Exit statuses (README, "Exit statuses"): 0 success, 1 an error, 2 the command line was
    /// refused (usage), 3 what was named does not exist (HTTP 404 or a `*_UNKNOWN` code), 4 the
    /// registry refused the credential or the action (401/403). ArgumentParser's own usage status
    /// is 64 (EX_USAGE); scripts written against git, grep and oras expect 2. 3 is for the
    /// artifact, repository or job named (NAME_UNKNOWN, MANIFEST_UNKNOWN, JOB_UNKNOWN), not for a
    /// blob or chunk missing in the middle of a transfer.
    static func main() async {
        do {
            var command = try parseAsRoot()
            if var async = command as? AsyncParsableCommand {
                try await async.run()
            } else {
                try command.run()
            }
        } catch {
            let code = exitCode(for: error)
            if code == .validationFailure {
                FileHandleOutput.stderr(fullMessage(for: error) + "\n")
                Foundation.exit(ExitStatus.usage)
            }
            exit(withError: error)
        }
    }
}

/// The `depot` command's exit statuses.
enum ExitStatus {
    static let failure: Int32 = 1
    static let usage: Int32 = 2
    static let notFound: Int32 = 3
    static let denied: Int32 = 4

    /// The status for a registry's answer.
    static func of(code: String?, status: Int?) -> Int32 {
        if status == 412 || status == 409 { return failure } // a lost compare-and-swap, whatever its code
        // What was named does not exist: the repository, the tag or digest, a job. A missing blob
        // or chunk during a push or copy is a failure of the transfer, not "not found".
        if code == "NAME_UNKNOWN" || code == "MANIFEST_UNKNOWN" || code == "JOB_UNKNOWN" || (status == 404 && code == nil) {
            return notFound
        }
        if status == 401 || status == 403 || code == "DENIED" || code == "UNAUTHORIZED" { return denied }
        return failure
    }
}

/// `depot completion bash|zsh|fish`: the shell completion script (ArgumentParser writes it).
struct Completion: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Print a shell completion script: depot completion bash > /etc/bash_completion.d/depot",
        discussion:
            "zsh: depot completion zsh > \"${fpath[1]}/_depot\"; fish: depot completion fish > ~/.config/fish/completions/depot.fish")
    @Argument(help: "bash, zsh or fish") var shell: String

    func validate() throws {
        guard CompletionShell(rawValue: shell) != nil else { throw ValidationError("shell must be bash, zsh or fish") }
    }

    func run() {
        print(Depot.completionScript(for: CompletionShell(rawValue: shell)!))
    }
}

/// `--storage DIR`, shared by every command that opens a store.
struct StorageOptions: ParsableArguments {
    @Option(name: .long, help: "Storage root (catalog.db and packs/).")
    var storage: String = "storage"

    @Option(
        name: .long,
        help: ArgumentHelp(
            "A PostgreSQL catalog (libpq URL, e.g. postgres://depot@db:5432/depot) instead of catalog.db in the storage root.",
            discussion: "Default: $DEPOT_CATALOG_URL. The password comes from PGPASSWORD or ~/.pgpass, as for psql."))
    var catalog: String?

    @Option(name: .long, help: "The PostgreSQL schema of the catalog.")
    var catalogSchema: String = "public"

    /// `base` with the catalog these options name.
    func options(_ base: StoreOptions = StoreOptions()) -> StoreOptions {
        var o = base
        if let url = catalog ?? ProcessInfo.processInfo.environment["DEPOT_CATALOG_URL"].flatMap({ $0.isEmpty ? nil : $0 }) {
            o.catalog = .postgres(PostgresSettings(url: url, schema: catalogSchema, poolSize: 4))
        }
        return o
    }
}

/// Prints `error: message` to stderr and exits with `code`. With `DEPOT_ERROR_FORMAT=json` in the
/// environment (what the Python SDK sets) the line is one JSON object instead,
/// `{"error":{"message":…,"code":"MANIFEST_UNKNOWN","status":404}}`, so a program gets the
/// registry's error code without parsing English.
func fail(_ message: String, code: Int32 = 1, registryCode: String? = nil, status: Int? = nil) -> Never {
    if ProcessInfo.processInfo.environment["DEPOT_ERROR_FORMAT"] == "json" {
        struct Body: Encodable {
            var message: String
            var code: String?
            var status: Int?
        }
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        let data = (try? encoder.encode(["error": Body(message: message, code: registryCode, status: status)])) ?? Data("{}".utf8)
        FileHandleOutput.stderr(String(decoding: data, as: UTF8.self) + "\n")
    } else {
        FileHandleOutput.stderr("error: \(message)\n")
    }
    Foundation.exit(code)
}

/// `fail` for any error: a registry's error code and HTTP status travel along when it has them,
/// and choose the exit status (`ExitStatus`).
func fail(_ error: any Error) -> Never {
    if let e = error as? ClientError {
        fail(e.message, code: ExitStatus.of(code: e.code, status: e.status), registryCode: e.code, status: e.status)
    }
    fail("\(error)")
}

enum FileHandleOutput {
    static func stderr(_ s: String) { FileHandle.standardError.write(Data(s.utf8)) }
    static func stdout(_ s: String) {
        FileHandle.standardOutput.write(Data(s.utf8))
    }
}

/// Runs `body`, turning Depot errors into one clear line and a non-zero exit.
func reportingErrors<T>(_ body: () throws -> T) -> T {
    do { return try body() } catch let e as DepotError { fail(e.description) } catch { fail("\(error)") }
}

func printJSON<T: Encodable>(_ value: T) {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
    let data = (try? encoder.encode(value)) ?? Data("{}".utf8)
    FileHandleOutput.stdout(String(decoding: data, as: UTF8.self) + "\n")
}

func formatBytes(_ n: Int64) -> String { ByteCount.text(n, decimals: 2) }
