import DepotAPI
import DepotCatalog
import DepotCore
import DepotFormats
import DepotRegistry
import Foundation

/// The pickle policy of pipelines (docs/SECURITY.md): a pickle runs what it imports when it
/// is loaded, so an input whose pickles import anything outside `PickleAllowList`, or could not be
/// scanned whole, never reaches a stage, unless its repository is trusted by the operator
/// (`pipelines.trust_pickle`). The decision reads the format metadata stored when the manifest was
/// pushed; nothing is unpickled.
public enum PickleGate {
    /// What the gate decided for one input.
    public enum Verdict: Equatable, Sendable {
        /// No pickle, or only pickles whose scan was whole and found only allowed imports.
        case clean
        /// Findings, and the repository is not trusted: the job fails with this reason.
        case refused(String)
        /// Findings, and the repository is trusted: the job runs with `trust_pickle` (audited).
        case trusted([String])
    }

    /// The parameter the server sets on a job whose input it trusts; pipeline files may not set it.
    public static let trustParameter = "trust_pickle"
    /// Parameters pipeline files may not set (they would lift the policy without the operator).
    public static let reservedParameters: Set<String> = ["trust_pickle", "pickle_modules"]

    /// One line per pickle-bearing file of the manifest that is not provably clean. `manifest` is
    /// the manifest's JSON, `metadata` the stored format metadata document (nil: none).
    public static func findings(manifest: [UInt8], metadata: String?) -> [String] {
        // Read with the decoder the registry accepted it with and the runner's puller reads it
        // with, so the gate sees the layers a runner will fetch. One it cannot read fails closed
        // (an open JSON read once refused `1e400` in an unknown field that the typed decode skips).
        guard let m = try? WireJSON.decode(OCIManifestDocument.self, from: manifest, what: "manifest") else {
            return ["the manifest could not be read by the pickle gate; nothing in it was scanned"]
        }
        var files: [String: JSONValue] = [:]
        var truncatedDocument = false
        if let metadata, let d = try? JSONDecoder().decode(JSONValue.self, from: Data(metadata.utf8)) {
            for f in d["files"]?.array ?? [] {
                if let p = f["path"]?.string, files[p] == nil { files[p] = f }
            }
            truncatedDocument = d["truncated"]?.bool == true
        }
        var out: [String] = []
        var seen = Set<String>()
        for layer in m.layers ?? [] {
            let annotations = layer.annotations ?? [:]
            // The path a runner writes the layer to (Puller: the model file path, then the title).
            guard let path = [ModelMediaType.filepath, ModelMediaType.title].lazy.compactMap({ annotations[$0] }).first,
                seen.insert(path).inserted
            else { continue }
            let meta = files[path]
            let format = meta?["format"]?.string
            let name = path.lowercased()
            guard FormatInspector.pickleBearingSuffixes.contains(where: { name.hasSuffix($0) }) || format == "pytorch" || format == "pickle"
            else { continue }
            if out.count >= 20 {
                out.append("and more files")
                break
            }
            guard let meta else {
                out.append(
                    "\(path): not scanned\(truncatedDocument ? " (cut from the metadata document)" : " (not recognised as a pickle or checkpoint)")"
                )
                continue
            }
            if let error = meta["error"]?.string {
                out.append("\(path): could not be scanned: \(error.prefix(300))")
                continue
            }
            guard format == "pytorch" || format == "pickle", let unsafe = meta["unsafe"]?.bool else {
                out.append("\(path): not scanned as a pickle (format \(format ?? "unknown"))")
                continue
            }
            if unsafe {
                let imports = (meta["unsafe_imports"]?.array ?? []).compactMap(\.string).prefix(10)
                let dangerous = Set((meta["dangerous_imports"]?.array ?? []).compactMap(\.string))
                let listed = imports.map { dangerous.contains($0) ? "\($0) (runs code)" : $0 }.joined(separator: ", ")
                out.append("\(path) imports \(listed.isEmpty ? "callables" : listed), outside the allow-list")
            } else if meta["scan_complete"]?.bool != true {
                let problems = (meta["problems"]?.array ?? []).compactMap(\.string).prefix(3).joined(separator: "; ")
                out.append("\(path): not scanned whole\(problems.isEmpty ? "" : " (\(problems))")")
            }
        }
        return out
    }

    /// The reason a refused job carries: which files, which imports, and how to opt in.
    public static func reason(_ findings: [String], repository: String) -> String {
        "refused before any stage ran: pickles run code when they are loaded, and this input's are not provably safe: "
            + findings.joined(separator: "; ")
            + ". Push safetensors, ONNX or a .skops file instead; or, if \(repository)'s pickles are trusted, "
            + "an operator lists it in pipelines.trust_pickle in the server config (docs/SECURITY.md) and retries the job"
    }
}

extension JobQueue {
    /// The gate's verdict on `digest` of `repository` (docs/SECURITY.md).
    func pickleVerdict(_ conn: any CatalogConnection, repository: String, digest: String) throws -> PickleGate.Verdict {
        guard let d = try? Digest(parsing: digest), let repo = try conn.repositoryID(repository),
            let manifest = try conn.manifest(repo: repo, d)
        else { return .clean }
        let findings = PickleGate.findings(manifest: manifest.content, metadata: try conn.manifestMetadata(d))
        if findings.isEmpty { return .clean }
        if options.trustPickle.contains(where: { TagPolicy.glob($0, repository) }) { return .trusted(findings) }
        return .refused(PickleGate.reason(findings, repository: repository))
    }

    /// Applies the verdict to a job that is queued: a refused one fails at once (no runner ever
    /// receives it); a trusted one gets the `trust_pickle` parameter, and the use of the trust is
    /// audited. Returns whether the job may be handed out.
    func applyPickleGate(_ conn: any CatalogConnection, _ job: JobRecord) throws -> Bool {
        let verdict = try pickleVerdict(conn, repository: job.inputRepository, digest: job.inputDigest)
        switch verdict {
        case .clean:
            return true
        case .refused(let reason):
            let now = Self.now()
            guard try conn.failQueuedJob(job.id, reason: reason, now: now) else { return false }
            try conn.appendAudit(
                at: now, actor: "depot", action: "pipeline.pickle_refused", repository: job.inputRepository, digest: job.inputDigest,
                tag: nil,
                details: [
                    "job": .int(job.id), "pipeline": .string(job.pipeline), "stage": .string(job.stage),
                    "reason": .string(String(reason.prefix(1000))),
                ])
            return false
        case .trusted(let findings):
            var spec = (try? JSONDecoder().decode([String: JSONValue].self, from: Data(job.spec.utf8))) ?? [:]
            var with = spec["with"]?.object ?? [:]
            if with[PickleGate.trustParameter] != "true" {
                with[PickleGate.trustParameter] = "true"
                spec["with"] = .object(with)
                if let data = try? WireJSON.encode(spec) {
                    _ = try conn.setQueuedJobSpec(job.id, spec: String(decoding: data, as: UTF8.self), now: Self.now())
                }
                try conn.appendAudit(
                    at: Self.now(), actor: "depot", action: "pipeline.trust_pickle", repository: job.inputRepository,
                    digest: job.inputDigest, tag: nil,
                    details: [
                        "job": .int(job.id), "pipeline": .string(job.pipeline), "stage": .string(job.stage),
                        "findings": .string(findings.joined(separator: "; ").prefix(1000).description),
                    ])
            }
            return true
        }
    }
}
