import DepotAPI
import DepotCore
import Foundation

/// Inspects a scikit-learn model saved with skops (`skops.io.dump`): a ZIP archive whose
/// `schema.json` describes the object tree and whose arrays are `.npy` entries. Nothing in it is a
/// program: loading rebuilds only the types the loader trusts. Reports the types the schema names
/// (`module.class`), read as JSON, never executed.
enum Skops {
    /// Largest schema.json read.
    static let maxSchema: Int64 = 16 << 20

    static func inspect(_ source: any ByteSource) throws -> [String: JSONValue] {
        guard try Zip.isZip(source) else { throw DepotError.invalidArgument("skops file: not a ZIP archive") }
        let entries = try Zip.entries(source)
        guard let schema = entries.first(where: { $0.name == "schema.json" }) else {
            throw DepotError.invalidArgument("skops file: no schema.json entry")
        }
        var out: [String: JSONValue] = [
            "format": "skops", "entry_count": JSONValue(entries.count),
            "arrays": JSONValue(entries.filter { $0.name.hasSuffix(".npy") }.count),
        ]
        var problems: [String] = []
        if schema.method != 0 {
            problems.append("schema.json is compressed: its types are not listed")
        } else if schema.compressedSize > maxSchema {
            problems.append("schema.json of \(schema.compressedSize) bytes is over the \(maxSchema)-byte limit: its types are not listed")
        } else {
            let range = try Zip.dataRange(schema, in: source)
            let bytes = try source.read(at: range.lowerBound, count: Int(range.count))
            // JSONSerialization, not a Codable decode into JSONValue: schema.json is a model
            // file's (hostile, up to 16 MiB), and the trial decoding JSONValue's Decodable does is
            // superlinear in nesting (500 levels took 2.6 s of CPU, a 4 MiB flat schema 1.5 s;
            // JSONSerialization 1.5 ms and 0.36 s).
            guard let root = try? JSONSerialization.jsonObject(with: Data(bytes), options: []) else {
                throw DepotError.invalidArgument("skops file: schema.json is not valid JSON")
            }
            var types = Pickle.BoundedSet()
            var protocolVersion: Int?
            // Iterative walk: a hostile schema may nest deeply.
            var stack: [Any] = [root]
            var visited = 0
            while let node = stack.popLast() {
                visited += 1
                guard visited <= 1_000_000 else {
                    problems.append("schema.json: more than 1000000 nodes, types listed so far")
                    break
                }
                if let d = node as? [String: Any] {
                    if let c = d["__class__"] as? String, let m = d["__module__"] as? String {
                        var full = m + "." + c
                        if full.utf8.count > FormatInspector.maxNameLength {
                            full = String(full.prefix(FormatInspector.maxNameLength)) + "…"
                        }
                        types.insert(full)
                    }
                    if protocolVersion == nil, let p = d["protocol"] as? Int { protocolVersion = p }
                    stack.append(contentsOf: d.values)
                } else if let a = node as? [Any] {
                    stack.append(contentsOf: a)
                }
            }
            out["types"] = JSONValue(types.sorted)
            if !types.isComplete { out["types_truncated"] = true }
            if let top = root as? [String: Any], let c = top["__class__"] as? String, let m = top["__module__"] as? String {
                out["model"] = .string(m + "." + c)
            }
            if let protocolVersion { out["protocol"] = JSONValue(protocolVersion) }
        }
        out["problems"] = JSONValue(problems)
        return out
    }
}
