import ArgumentParser
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
                var out: [String: Any] = ["reference": source.description, "digest": m.digest.description, "media_type": m.mediaType,
                                          "manifest": manifest]
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
                print("triton bundle")
                for line in Self.summary(bundle) { print("  \(line)") }
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

    /// One line per top-level metadata key, nested values as compact JSON.
    static func summary(_ meta: [String: Any]) -> [String] {
        meta.keys.sorted().filter { $0 != "path" }.map { key in
            let value = meta[key]!
            if let s = value as? String { return "\(key): \(s)" }
            if let n = value as? NSNumber { return "\(key): \(n)" }
            let data = (try? JSONSerialization.data(withJSONObject: value, options: [.sortedKeys, .withoutEscapingSlashes])) ?? Data()
            var text = String(decoding: data, as: UTF8.self)
            if text.count > 300 { text = String(text.prefix(300)) + "…" }
            return "\(key): \(text)"
        }
    }
}
