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
            guard let root = try? JSONDecoder().decode(JSONValue.self, from: Data(bytes)) else {
                throw DepotError.invalidArgument("skops file: schema.json is not valid JSON")
            }
            var types = Pickle.BoundedSet()
            var protocolVersion: Int?
            // Iterative walk: a hostile schema may nest deeply.
            var stack: [JSONValue] = [root]
            var visited = 0
            while let node = stack.popLast() {
                visited += 1
                guard visited <= 1_000_000 else {
                    problems.append("schema.json: more than 1000000 nodes, types listed so far")
                    break
                }
                switch node {
                case .object(let d):
                    if let c = d["__class__"]?.string, let m = d["__module__"]?.string {
                        var full = m + "." + c
                        if full.utf8.count > FormatInspector.maxNameLength {
                            full = String(full.prefix(FormatInspector.maxNameLength)) + "…"
                        }
                        types.insert(full)
                    }
                    if protocolVersion == nil, let p = d["protocol"]?.int, let v = Int(exactly: p) { protocolVersion = v }
                    stack.append(contentsOf: d.values)
                case .array(let a):
                    stack.append(contentsOf: a)
                default:
                    break
                }
            }
            out["types"] = JSONValue(types.sorted)
            if !types.isComplete { out["types_truncated"] = true }
            if let c = root["__class__"]?.string, let m = root["__module__"]?.string {
                out["model"] = .string(m + "." + c)
            }
            if let protocolVersion { out["protocol"] = JSONValue(protocolVersion) }
        }
        out["problems"] = JSONValue(problems)
        return out
    }
}
