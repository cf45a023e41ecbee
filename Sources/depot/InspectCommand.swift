import ArgumentParser
import DepotAPI
import DepotClient
import DepotCore
import Foundation

struct Inspect: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Show an artifact: manifest, files, sizes, extracted format metadata, lineage annotations.")
    @Argument(help: "[HOST/]REPO:TAG or [HOST/]REPO@sha256:...", transform: ArtifactReference.argument) var source: ArtifactReference
    @OptionGroup var registry: RegistryOptions
    @Flag(help: "Machine-readable output.") var json = false

    /// `--json`: the manifest as stored and the extracted metadata.
    struct Output: Encodable {
        var reference: String
        var digest: String
        var mediaType: String
        var manifest: JSONValue
        var metadata: JSONValue?
        /// As the registry verifies them (`depot verify --key` checks them locally).
        var signatures: SignatureListAnswer?

        enum CodingKeys: String, CodingKey {
            case reference, digest, manifest, metadata, signatures
            case mediaType = "media_type"
        }
    }

    func run() async throws {
        await runClient(registry, for: [source]) { connection in
            let m = try await connection.manifest(source.repository, source.version)
            let raw = (try? WireJSON.decode(JSONValue.self, from: m.bytes, what: "manifest")) ?? .object([:])
            let manifest = try? WireJSON.decode(OCIManifestDocument.self, from: m.bytes, what: "manifest")
            let metadata = try await connection.metadata(source.repository, m.digest)
            // A registry without the signatures route (another OCI registry) just has none to show.
            let signatures = try? await connection.request(
                .GET, Routes[.signatures].path(name: source.repository, ["reference": m.digest.description]), as: SignatureListAnswer.self)
            if json {
                return printJSON(
                    Output(
                        reference: source.description, digest: m.digest.description, mediaType: m.mediaType, manifest: raw,
                        metadata: metadata, signatures: signatures))
            }
            print("reference      \(source)")
            print("digest         \(m.digest)")
            print("media type     \(m.mediaType)")
            if let t = manifest?.artifactType { print("artifact type  \(t)") }
            let layers = manifest?.layers ?? []
            let total = layers.reduce(Int64(0)) { $0 + $1.size }
            print("files          \(layers.count), \(TransferProgress.bytes(total))")
            let fileMeta = metadata?["files"]?.array ?? []
            for l in layers {
                let a = l.annotations ?? [:]
                let path = a[ModelMediaType.filepath] ?? a[ModelMediaType.title] ?? "-"
                print("  \(path)  \(TransferProgress.bytes(l.size))  \(l.digest.description.prefix(19))  \(l.mediaType)")
                if let meta = fileMeta.first(where: { $0["path"]?.string == path }) {
                    for line in Self.summary(meta) { print("      \(line)") }
                }
            }
            if let bundle = metadata?["triton"] {
                let versions = (bundle["versions"]?.array ?? []).map(\.text).joined(separator: ", ")
                let kind = (bundle["platform"] ?? bundle["backend"])?.text ?? "?"
                print(
                    "triton bundle  \(bundle["name"]?.text ?? "?"), \(kind), max_batch_size \(bundle["max_batch_size"]?.text ?? "?"), versions [\(versions)]"
                )
                for problem in bundle["problems"]?.array ?? [] { print("  problem: \(problem.text)") }
            }
            let annotations = manifest?.annotations ?? [:]
            let lineage = annotations.filter { $0.key.hasPrefix(Annotation.prefix) }.sorted { $0.key < $1.key }
            if !lineage.isEmpty {
                print("lineage")
                for (k, v) in lineage { print("  \(k.dropFirst(Annotation.prefix.count))  \(v)") }
            }
            let other = annotations.filter { !$0.key.hasPrefix(Annotation.prefix) }.sorted { $0.key < $1.key }
            if !other.isEmpty {
                print("annotations")
                for (k, v) in other { print("  \(k)  \(v)") }
            }
            if let signatures {
                print("signatures     \(signatures.signatures.isEmpty ? "none" : String(signatures.signatures.count))")
                for sig in signatures.signatures {
                    var line = "  \(sig.manifest.description.prefix(19))  "
                    if sig.verified {
                        line += "verified by \(sig.key ?? "?")"
                        if let job = sig.job {
                            line += ", job \(job) (\(sig.pipeline ?? "?")/\(sig.stage ?? "?")), runner \(sig.runner ?? "?")"
                        }
                    } else {
                        line += "not verified: \(sig.reason ?? "?")"
                    }
                    print(line)
                }
                for v in signatures.policies { print("  policy \(v.environment): \(v.allowed ? "allowed" : "refused") (\(v.reason))") }
            }
        }
    }

    /// A few readable lines per file, by format; the full document is in `--json`.
    static func summary(_ meta: JSONValue) -> [String] {
        func str(_ k: String) -> String { meta[k]?.text ?? "?" }
        func list(_ k: String) -> [String] { (meta[k]?.array ?? []).map(\.text) }
        func tensors(_ k: String) -> String {
            (meta[k]?.array ?? []).map { t in
                let shape = (t["shape"]?.array ?? []).map(\.text).joined(separator: ",")
                return "\(t["name"]?.text ?? "?") \((t["elem_type"] ?? t["data_type"])?.text ?? "?") [\(shape)]"
            }.joined(separator: "; ")
        }
        if let error = meta["error"]?.string { return ["not readable as its name says: \(error)"] }
        switch meta["format"]?.string {
        case "onnx":
            let opsets = (meta["opsets"]?.array ?? []).map {
                "\($0["domain"]?.string.flatMap { $0.isEmpty ? nil : $0 } ?? "ai.onnx") \($0["version"]?.text ?? "?")"
            }
            var lines = [
                "onnx: IR \(str("ir_version")), opset \(opsets.joined(separator: ", ")), producer \(str("producer")) \(meta["producer_version"]?.text ?? "")",
                "inputs: \(tensors("inputs"))", "outputs: \(tensors("outputs"))",
                "\(str("node_count")) nodes, \(str("initializer_count")) initializers (\(TransferProgress.bytes(meta["initializer_bytes"]?.int ?? 0)))",
            ]
            if !list("external_locations").isEmpty { lines.append("external data: \(list("external_locations").joined(separator: ", "))") }
            return lines
        case "safetensors":
            let dtypes = (meta["dtypes"]?.object ?? [:]).map { "\($0.key) ×\($0.value.text)" }.sorted().joined(separator: ", ")
            return ["safetensors: \(str("tensor_count")) tensors, \(str("parameters")) parameters (\(dtypes))"]
        case "pytorch", "pickle":
            var lines = [
                "\(str("format")) (\(str("container"))): \(str("entry_count")) entries; imports: \(list("imports").joined(separator: ", "))"
            ]
            if meta["unsafe"] == .bool(true) {
                lines.append("UNSAFE pickle imports: \(list("unsafe_imports").joined(separator: ", "))")
                if !list("dangerous_imports").isEmpty {
                    lines.append("DANGEROUS (code execution on load): \(list("dangerous_imports").joined(separator: ", "))")
                }
            }
            if meta["scan_complete"] == .bool(false) { lines.append("NOT SCANNED WHOLE: pipelines refuse it (see problems)") }
            return lines + list("problems").map { "problem: \($0)" }
        case "skops":
            return ["skops: \(str("model")); types: \(list("types").joined(separator: ", "))"] + list("problems").map { "problem: \($0)" }
        case "tensorrt-plan":
            return [
                "tensorrt plan: compute capability \(meta["compute_capability"]?.text ?? "unknown"), TensorRT \(meta["tensorrt_version"]?.text ?? "unknown")"
            ]
                + list("problems").map { "problem: \($0)" }
        case "triton-config":
            return [
                "triton config: \(str("name")), \((meta["platform"] ?? meta["backend"])?.text ?? "?"), max_batch_size \(str("max_batch_size"))"
            ]
        default:
            let skip: Set<String> = ["path", "digest", "size"]
            let fields = meta.object ?? [:]
            return fields.keys.sorted().filter { !skip.contains($0) }.map { key in
                var text = fields[key]!.text
                if text.count > 200 { text = String(text.prefix(200)) + "…" }
                return "\(key): \(text)"
            }
        }
    }
}
