import ArgumentParser
import DepotAPI
import DepotClient
import DepotCore
import Foundation

struct Inspect: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Show an artifact: manifest, files, sizes, extracted format metadata, lineage annotations.")
    @Argument(help: "REPO:TAG or REPO@sha256:...") var source: ArtifactReference
    @OptionGroup var registry: RegistryOptions
    @Flag(help: "Machine-readable output.") var json = false

    func run() async throws {
        await runClient(registry) { connection in
            let m = try await connection.manifest(source.repository, source.reference)
            let manifest = (try? JSONSerialization.jsonObject(with: Data(m.bytes)) as? [String: Any]) ?? [:]
            let metadata = try await connection.metadata(source.repository, m.digest)
            if json {
                var out: [String: Any] = [
                    "reference": source.description, "digest": m.digest.description, "media_type": m.mediaType,
                    "manifest": manifest,
                ]
                if let metadata { out["metadata"] = metadata }
                let data = try JSONSerialization.data(withJSONObject: out, options: [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes])
                print(String(decoding: data, as: UTF8.self))
                return
            }
            print("reference      \(source)")
            print("digest         \(m.digest)")
            print("media type     \(m.mediaType)")
            if let t = manifest["artifactType"] as? String { print("artifact type  \(t)") }
            let layers = manifest["layers"] as? [[String: Any]] ?? []
            let total = layers.reduce(Int64(0)) { $0 + ((($1["size"] as? NSNumber)?.int64Value) ?? 0) }
            print("files          \(layers.count), \(TransferProgress.bytes(total))")
            let fileMeta = (metadata?["files"] as? [[String: Any]]) ?? []
            for l in layers {
                let a = l["annotations"] as? [String: String] ?? [:]
                let path = a[ModelMediaType.filepath] ?? a[ModelMediaType.title] ?? "-"
                let size = ((l["size"] as? NSNumber)?.int64Value) ?? 0
                let digest = (l["digest"] as? String ?? "").prefix(19)
                print("  \(path)  \(TransferProgress.bytes(size))  \(digest)  \(l["mediaType"] as? String ?? "")")
                if let meta = fileMeta.first(where: { $0["path"] as? String == path }) {
                    for line in Self.summary(meta) { print("      \(line)") }
                }
            }
            if let bundle = metadata?["triton"] as? [String: Any] {
                let versions = (bundle["versions"] as? [Int] ?? []).map(String.init).joined(separator: ", ")
                print(
                    "triton bundle  \(bundle["name"] ?? "?"), \(bundle["platform"] ?? bundle["backend"] ?? "?"), max_batch_size \(bundle["max_batch_size"] ?? "?"), versions [\(versions)]"
                )
                for problem in bundle["problems"] as? [String] ?? [] { print("  problem: \(problem)") }
            }
            let annotations = manifest["annotations"] as? [String: String] ?? [:]
            let lineage = annotations.filter { $0.key.hasPrefix("dev.depot.") }.sorted { $0.key < $1.key }
            if !lineage.isEmpty {
                print("lineage")
                for (k, v) in lineage { print("  \(k.replacingOccurrences(of: "dev.depot.", with: ""))  \(v)") }
            }
            let other = annotations.filter { !$0.key.hasPrefix("dev.depot.") }.sorted { $0.key < $1.key }
            if !other.isEmpty {
                print("annotations")
                for (k, v) in other { print("  \(k)  \(v)") }
            }
        }
    }

    /// A few readable lines per file, by format; the full document is in `--json`.
    static func summary(_ meta: [String: Any]) -> [String] {
        func str(_ k: String) -> String { meta[k].map { "\($0)" } ?? "?" }
        func list(_ k: String) -> [String] { meta[k] as? [String] ?? [] }
        func tensors(_ k: String) -> String {
            (meta[k] as? [[String: Any]] ?? []).map { t in
                let shape = (t["shape"] as? [Any] ?? []).map { "\($0)" }.joined(separator: ",")
                return "\(t["name"] ?? "?") \(t["elem_type"] ?? t["data_type"] ?? "?") [\(shape)]"
            }.joined(separator: "; ")
        }
        if let error = meta["error"] as? String { return ["not readable as its name says: \(error)"] }
        switch meta["format"] as? String {
        case "onnx":
            let opsets = (meta["opsets"] as? [[String: Any]] ?? []).map {
                "\(($0["domain"] as? String).flatMap { $0.isEmpty ? nil : $0 } ?? "ai.onnx") \($0["version"] ?? "?")"
            }
            var lines = [
                "onnx: IR \(str("ir_version")), opset \(opsets.joined(separator: ", ")), producer \(str("producer")) \(meta["producer_version"] ?? "")",
                "inputs: \(tensors("inputs"))", "outputs: \(tensors("outputs"))",
                "\(str("node_count")) nodes, \(str("initializer_count")) initializers (\(TransferProgress.bytes(Int64(meta["initializer_bytes"] as? Int ?? 0))))",
            ]
            if !list("external_locations").isEmpty { lines.append("external data: \(list("external_locations").joined(separator: ", "))") }
            return lines
        case "safetensors":
            let dtypes = (meta["dtypes"] as? [String: Any] ?? [:]).map { "\($0.key) ×\($0.value)" }.sorted().joined(separator: ", ")
            return ["safetensors: \(str("tensor_count")) tensors, \(str("parameters")) parameters (\(dtypes))"]
        case "pytorch":
            var lines = [
                "pytorch (\(str("container"))): \(str("entry_count")) entries; imports: \(list("imports").joined(separator: ", "))"
            ]
            if meta["unsafe"] as? Bool == true {
                lines.append("UNSAFE pickle imports: \(list("unsafe_imports").joined(separator: ", "))")
                if !list("dangerous_imports").isEmpty {
                    lines.append("DANGEROUS (code execution on load): \(list("dangerous_imports").joined(separator: ", "))")
                }
            }
            return lines + list("problems").map { "problem: \($0)" }
        case "tensorrt-plan":
            return [
                "tensorrt plan: compute capability \(meta["compute_capability"].map { "\($0)" } ?? "unknown"), TensorRT \(meta["tensorrt_version"].map { "\($0)" } ?? "unknown")"
            ]
                + list("problems").map { "problem: \($0)" }
        case "triton-config":
            return ["triton config: \(str("name")), \(meta["platform"] ?? meta["backend"] ?? "?"), max_batch_size \(str("max_batch_size"))"]
        default:
            let skip: Set<String> = ["path", "digest", "size"]
            return meta.keys.sorted().filter { !skip.contains($0) }.map { key in
                let value = meta[key]!
                if let s = value as? String { return "\(key): \(s)" }
                if let n = value as? NSNumber { return "\(key): \(n)" }
                let data = (try? JSONSerialization.data(withJSONObject: value, options: [.sortedKeys, .withoutEscapingSlashes])) ?? Data()
                var text = String(decoding: data, as: UTF8.self)
                if text.count > 200 { text = String(text.prefix(200)) + "…" }
                return "\(key): \(text)"
            }
        }
    }
}
