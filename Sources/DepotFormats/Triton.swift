import DepotAPI
import DepotCore

/// Summarises a Triton model configuration (config.pbtxt) and checks a model directory's
/// version folders against the file the platform or backend expects.
enum Triton {
    static func list(_ v: JSONValue?) -> [JSONValue] {
        guard let v else { return [] }
        if case .array(let a) = v { return a }
        return [v]
    }

    static func int(_ v: JSONValue?) -> Int? {
        switch v {
        case .int(let i)?: return Int(exactly: i)
        case .double(let d)? where d.isFinite && abs(d) < 1e15: return Int(d)
        case .string(let s)?: return Int(s)
        default: return nil
        }
    }

    static func string(_ v: JSONValue?) -> String? {
        switch v {
        case .string(let s)?: return s
        case .int(let i)?: return String(i)
        default: return nil
        }
    }

    static func ints(_ v: JSONValue?) -> JSONValue { JSONValue(list(v).compactMap(int)) }

    /// The parsed configuration's summary.
    static func summary(_ tree: [String: JSONValue]) -> [String: JSONValue] {
        var out: [String: JSONValue] = [:]
        for key in ["name", "platform", "backend", "default_model_filename"] {
            if let v = string(tree[key]) { out[key] = .string(v) }
        }
        out["max_batch_size"] = JSONValue(int(tree["max_batch_size"]) ?? 0)
        func tensors(_ key: String) -> JSONValue {
            .array(
                list(tree[key]).prefix(FormatInspector.maxListed).compactMap(\.object).map { t in
                    var o: [String: JSONValue] = [
                        "name": .string(string(t["name"]) ?? ""), "data_type": .string(string(t["data_type"]) ?? "TYPE_INVALID"),
                        "dims": JSONValue(list(t["dims"]).prefix(256).compactMap(int)),
                    ]
                    if let r = t["reshape"]?.object { o["reshape"] = ints(r["shape"]) }
                    if let f = string(t["format"]) { o["format"] = .string(f) }
                    if let opt = t["optional"]?.bool { o["optional"] = .bool(opt) }
                    return .object(o)
                })
        }
        out["inputs"] = tensors("input")
        out["outputs"] = tensors("output")
        for (key, name) in [("input", "input_count"), ("output", "output_count")] where list(tree[key]).count > FormatInspector.maxListed {
            out[name] = JSONValue(list(tree[key]).count)
        }
        out["instance_group"] = .array(
            list(tree["instance_group"]).prefix(FormatInspector.maxListed).compactMap(\.object).map { g -> JSONValue in
                var o: [String: JSONValue] = [
                    "count": JSONValue(int(g["count"]) ?? 1), "kind": .string(string(g["kind"]) ?? "KIND_AUTO"),
                    "gpus": JSONValue(list(g["gpus"]).prefix(FormatInspector.maxListed).compactMap(int)),
                ]
                if let n = string(g["name"]) { o["name"] = .string(n) }
                return .object(o)
            })
        var policy: JSONValue = ["latest": ["num_versions": 1]]
        if let vp = tree["version_policy"]?.object {
            if let l = vp["latest"]?.object {
                policy = ["latest": ["num_versions": JSONValue(int(l["num_versions"]) ?? 1)]]
            } else if vp["all"] != nil {
                policy = ["all": .object([:])]
            } else if let sp = vp["specific"]?.object {
                policy = ["specific": ["versions": ints(sp["versions"])]]
            }
        }
        out["version_policy"] = policy
        if let e = tree["ensemble_scheduling"]?.object {
            out["ensemble_steps"] = JSONValue(list(e["step"]).compactMap { $0.object.flatMap { string($0["model_name"]) } })
        }
        return out
    }

    /// The file (or directory) a version folder must hold, or nil when unknown.
    static func expectedFile(platform: String?, backend: String?, override: String?) -> String? {
        if let override, !override.isEmpty { return override }
        switch platform ?? "" {
        case "onnxruntime_onnx": return "model.onnx"
        case "tensorrt_plan": return "model.plan"
        case "pytorch_libtorch": return "model.pt"
        case "tensorflow_savedmodel": return "model.savedmodel"
        case "tensorflow_graphdef": return "model.graphdef"
        default: break
        }
        switch backend ?? "" {
        case "onnxruntime": return "model.onnx"
        case "tensorrt": return "model.plan"
        case "pytorch": return "model.pt"
        case "python": return "model.py"
        case "openvino": return "model.xml"
        default: return nil
        }
    }

    static func check(config: String, files: [String]?, budget: InspectionBudget? = nil) throws -> [String: JSONValue] {
        let tree = try TextProto.parse(config, budget: budget)
        var out = summary(tree)
        guard let files else { return out }
        var problems: [String] = []
        // Paths relative to the directory holding the top-level config.pbtxt.
        let normalized = files.map { $0.hasPrefix("./") ? String($0.dropFirst(2)) : $0 }
        var base = ""
        if !normalized.contains("config.pbtxt"),
            let top = normalized.filter({ $0.hasSuffix("/config.pbtxt") }).min(by: { $0.count < $1.count })
        {
            base = String(top.dropLast("config.pbtxt".count))
        }
        let relative = normalized.compactMap { $0.hasPrefix(base) ? String($0.dropFirst(base.count)) : nil }
        var versions = Set<Int>()
        for path in relative {
            guard let slash = path.firstIndex(of: "/") else { continue }
            let dir = path[..<slash]
            if !dir.isEmpty, dir.count <= 18, dir.allSatisfy({ $0.isASCII && $0.isNumber }), let v = Int(dir) { versions.insert(v) }
        }
        let sorted = versions.sorted()
        out["versions"] = JSONValue(sorted)
        let platform = out["platform"]?.string
        let backend = out["backend"]?.string
        let isEnsemble = platform == "ensemble"
        if platform == nil && backend == nil { problems.append("config sets neither platform nor backend") }
        if sorted.isEmpty && !isEnsemble { problems.append("no numbered version directories") }
        if !isEnsemble,
            let expected = expectedFile(platform: platform, backend: backend, override: out["default_model_filename"]?.string)
        {
            let origin = platform.map { "platform \($0)" } ?? "backend \(backend ?? "")"
            // Sorted paths: "is there a file under path/" is a binary search, not a scan per version.
            let ordered = relative.sorted()
            func hasFile(under directory: String) -> Bool {
                var lo = 0
                var hi = ordered.count
                while lo < hi {
                    let mid = (lo + hi) / 2
                    if ordered[mid] < directory { lo = mid + 1 } else { hi = mid }
                }
                return lo < ordered.count && ordered[lo].hasPrefix(directory)
            }
            let fileSet = Set(relative)
            for v in sorted {
                let path = "\(v)/\(expected)"
                if !fileSet.contains(path) && !hasFile(under: path + "/") {
                    problems.append("version directory \(v) lacks \(expected) expected by \(origin)")
                }
            }
        }
        if let specific = out["version_policy"]?["specific"] {
            for v in (specific["versions"]?.array ?? []).compactMap(int) where !versions.contains(v) {
                problems.append("version_policy names version \(v) but there is no directory \(v)/")
            }
        }
        out["problems"] = JSONValue(problems)
        return out
    }
}
