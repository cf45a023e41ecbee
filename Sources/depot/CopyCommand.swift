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
            A copy that fails part way moves only what is still missing when run again (a blob copied \
            whole, between registries without chunk negotiation, is spooled through $TMPDIR and starts \
            over). Credentials: $DEPOT_TOKEN goes only to the configured registry ($DEPOT_REGISTRY or \
            --registry); another host gets what `depot login` stored for it.
            """)
    @Argument(help: "[HOST/]REPO:TAG, [HOST/]REPO@DIGEST or oci-layout:DIR[:TAG]") var sourceText: String
    @Argument(help: "[HOST/]REPO[:TAG] (without a tag: the source's tag, or by digest) or oci-layout:DIR[:TAG]") var destinationText: String
    @Flag(help: "Also copy its referrers (signatures, SBOMs, reports), and theirs.") var referrers = false
    @Option(help: "Concurrent chunk batches per blob.") var jobs = 4
    @Flag(help: "Use only the standard OCI API (whole blobs).") var plainOci = false
    @Flag(help: "Plain http to the source registry (not on this machine).") var fromPlainHttp = false
    @Flag(help: "Plain http to the destination registry (not on this machine).") var toPlainHttp = false
    @OptionGroup var registry: RegistryOptions
    @Flag(help: "Print a JSON summary on stdout.") var json = false
    @Flag(help: "No summary line.") var quiet = false

    /// One end of the copy: a registry reference or an OCI layout directory.
    enum End {
        case registry(ArtifactReference)
        case layout(OCILayout, tag: String?)
    }

    func end(_ text: String, source: Bool) throws -> End {
        if let (root, tag) = OCILayout.parse(text) {
            if let tag, !Reference.isValidTag(tag), (try? Digest(parsing: tag)) == nil {
                throw ValidationError("'\(tag)' is not a valid tag, e.g. oci-layout:/mnt/usb/models:v3")
            }
            return .layout(OCILayout(root: root), tag: tag)
        }
        return .registry(source ? try ArtifactReference.argument(text) : try ArtifactReference.repositoryArgument(text))
    }

    func validate() throws {
        guard jobs >= 1 && jobs <= 64 else { throw ValidationError("--jobs must be 1...64") }
        guard !registry.plainHttp else {
            throw ValidationError(
                "a copy has two ends: --from-plain-http or --to-plain-http, e.g. depot cp --from-plain-http 10.0.0.5:5000/a:v1 models.example.com/a"
            )
        }
        let from = try end(sourceText, source: true)
        let to = try end(destinationText, source: false)
        if case .layout = from, case .layout = to {
            throw ValidationError("copy between two layouts with cp -r; one end must be a registry")
        }
        if case .registry(let s) = from, case .registry(let d) = to, let dd = d.digest, let sd = s.digest, dd != sd {
            throw ValidationError(
                "the destination digest differs from the source's: a copy keeps the digest, e.g. depot cp a/m@sha256:… b/m")
        }
    }

    func run() async throws {
        RegistryConnection.tuneMemory()
        let from = try end(sourceText, source: true)
        let to = try end(destinationText, source: false)
        switch (from, to) {
        case (.registry(let source), .layout(let layout, let tag)):
            let connection: RegistryConnection
            do { connection = try registry.connect(host: source.registry, plainHTTP: fromPlainHttp) } catch { fail(error) }
            do {
                let summary = try await Copier.export(
                    from: connection, repository: source.repository, reference: source.version, to: layout,
                    tag: tag ?? source.tag, referrers: referrers)
                await connection.shutdown()
                report(summary, from: source.description)
            } catch {
                await connection.shutdown()
                fail(error)
            }
            return
        case (.layout(let layout, let tag), .registry(let destination)):
            let connection: RegistryConnection
            do { connection = try registry.connect(host: destination.registry, plainHTTP: toPlainHttp) } catch { fail(error) }
            do {
                let summary = try await Copier.import(
                    from: layout, tag: tag, to: connection, repository: destination.repository,
                    destinationTag: destination.tag ?? (tag.flatMap { Reference.isValidTag($0) ? $0 : nil }), plainOCI: plainOci)
                await connection.shutdown()
                report(summary, from: sourceText)
            } catch {
                await connection.shutdown()
                fail(error)
            }
            return
        case (.registry(let source), .registry(let destination)):
            try await copy(source, destination)
        default:
            fail("one end of a copy must be a registry")
        }
    }

    func report(_ summary: TransferSummary, from: String) {
        if json { return printJSON(summary) }
        if !quiet {
            FileHandleOutput.stderr(
                "copied \(from) -> \(summary.reference) \(summary.digest): \(summary.files) blob(s), \(TransferProgress.bytes(summary.logicalBytes)), sent \(TransferProgress.bytes(summary.bytesSent)) (\(summary.mode))\n"
            )
        }
    }

    func copy(_ source: ArtifactReference, _ destination: ArtifactReference) async throws {
        let from: RegistryConnection
        let to: RegistryConnection
        do {
            from = try registry.connect(host: source.registry, plainHTTP: fromPlainHttp, alone: false)
            to = try registry.connect(host: destination.registry, plainHTTP: toPlainHttp, alone: false)
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
            report(summary, from: source.description)
        } catch {
            await from.shutdown()
            await to.shutdown()
            fail(error)
        }
    }
}
