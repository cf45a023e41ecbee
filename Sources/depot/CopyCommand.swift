import ArgumentParser
import DepotAPI
import DepotClient
import DepotCore
import Foundation

/// `depot cp SRC DST`: an artifact from one registry (or repository) to another.
struct Copy: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "cp",
        abstract: "Copy an artifact between registries (between two Depots only the chunks the destination lacks move).",
        discussion: """
            depot cp staging.example.com/team/llm:v3 models.example.com/team/llm:v3 --referrers
            The manifest is copied byte for byte: the digest, and every signature over it, stay valid. \
            A copy that fails part way moves only what is still missing when run again. Credentials: \
            $DEPOT_TOKEN for both, or what `depot login` stored for each host.
            """)
    @Argument(help: "[HOST/]REPO:TAG or [HOST/]REPO@DIGEST", transform: ArtifactReference.argument) var source: ArtifactReference
    @Argument(help: "[HOST/]REPO[:TAG] (without a tag: the source's tag, or by digest)", transform: ArtifactReference.repositoryArgument)
    var destination: ArtifactReference
    @Flag(help: "Also copy its referrers (signatures, SBOMs, reports), and theirs.") var referrers = false
    @Option(help: "Concurrent chunk batches per blob.") var jobs = 4
    @Flag(help: "Use only the standard OCI API (whole blobs).") var plainOci = false
    @OptionGroup var registry: RegistryOptions
    @Flag(help: "Print a JSON summary on stdout.") var json = false
    @Flag(help: "No summary line.") var quiet = false

    func validate() throws {
        guard jobs >= 1 && jobs <= 64 else { throw ValidationError("--jobs must be 1...64") }
        if let d = destination.digest, let s = source.digest, d != s {
            throw ValidationError("the destination digest differs from the source's: a copy keeps the digest")
        }
    }

    func run() async throws {
        RegistryConnection.tuneMemory()
        let from: RegistryConnection
        let to: RegistryConnection
        do {
            from = try registry.connect(host: source.registry)
            to = try registry.connect(host: destination.registry)
        } catch { fail(error) }
        do {
            var request = CopyRequest(
                sourceRepository: source.repository, sourceReference: source.version, destinationRepository: destination.repository,
                destinationTag: destination.tag ?? (source.digest == nil ? source.tag : nil))
            request.referrers = referrers
            request.jobs = jobs
            request.plainOCI = plainOci
            let summary = try await Copier(source: from, destination: to).copy(request)
            await from.shutdown()
            await to.shutdown()
            if json { return printJSON(summary) }
            if !quiet {
                FileHandleOutput.stderr(
                    "copied \(source) -> \(summary.reference) \(summary.digest): \(summary.files) blob(s), \(TransferProgress.bytes(summary.logicalBytes)), sent \(TransferProgress.bytes(summary.bytesSent)) (\(summary.mode))\n"
                )
            }
        } catch {
            await from.shutdown()
            await to.shutdown()
            fail(error)
        }
    }
}
