import DepotCore

/// Summarises a Triton model configuration (config.pbtxt) and checks a model directory's
/// version folders against the file the platform or backend expects.
enum Triton {
    static func list(_ v: Any?) -> [Any] {
        guard let v else { return [] }
        return v as? [Any] ?? [v]
    }

    static func int(_ v: Any?) -> Int? {
        if let i = v as? Int { return i }
        if let d = v as? Double, d.isFinite, abs(d) < 1e15 { return Int(d) }
        if let s = v as? String { return Int(s) }
        return nil
    }

    static func string(_ v: Any?) -> String? {
        if let s = v as? String { return s }
        if let i = v as? Int { return String(i) }
        return nil
    }

    /// The parsed configuration's summary.
    static func summary(_ tree: [String: Any]) -> [String: Any] {
        var out: [String: Any] = [:]
        for key in ["name", "platform", "backend", "default_model_filename"] {
            if let v = string(tree[key]) { out[key] = v }
        }
        out["max_batch_size"] = int(tree["max_batch_size"]) ?? 0
        func tensors(_ key: String) -> [[String: Any]] {
            list(tree[key]).prefix(FormatInspector.maxListed).compactMap { $0 as? [String: Any] }.map { t in
                var o: [String: Any] = [
                    "name": string(t["name"]) ?? "", "data_type": string(t["data_type"]) ?? "TYPE_INVALID",
                    "dims": list(t["dims"]).prefix(256).compactMap(int),
                ]
                if let r = t["reshape"] as? [String: Any] { o["reshape"] = list(r["shape"]).compactMap(int) }
                if let f = string(t["format"]) { o["format"] = f }
                if let opt = t["optional"] as? Bool { o["optional"] = opt }
                return o
            }
        }
        out["inputs"] = tensors("input")
        out["outputs"] = tensors("output")
        for (key, name) in [("input", "input_count"), ("output", "output_count")] where list(tree[key]).count > FormatInspector.maxListed {
            out[name] = list(tree[key]).count
        }
        out["instance_group"] = list(tree["instance_group"]).prefix(FormatInspector.maxListed).compactMap { $0 as? [String: Any] }.map {
            g -> [String: Any] in
            var o: [String: Any] = [
                "count": int(g["count"]) ?? 1, "kind": string(g["kind"]) ?? "KIND_AUTO",
                "gpus": list(g["gpus"]).prefix(FormatInspector.maxListed).compactMap(int),
            ]
            if let n = string(g["name"]) { o["name"] = n }
            return o
        }
        var policy: [String: Any] = ["latest": ["num_versions": 1]]
        if let vp = tree["version_policy"] as? [String: Any] {
            if let l = vp["latest"] as? [String: Any] {
                policy = ["latest": ["num_versions": int(l["num_versions"]) ?? 1]]
            } else if vp["all"] != nil {
                policy = ["all": [String: Any]()]
            } else if let sp = vp["specific"] as? [String: Any] {
                policy = ["specific": ["versions": list(sp["versions"]).compactMap(int)]]
            }
        }
        out["version_policy"] = policy
        if let e = tree["ensemble_scheduling"] as? [String: Any] {
            out["ensemble_steps"] = list(e["step"]).compactMap { ($0 as? [String: Any]).flatMap { string($0["model_name"]) } }
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

    static func check(config: String, files: [String]?, budget: InspectionBudget? = nil) throws -> [String: Any] {
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
        out["versions"] = sorted
        let platform = out["platform"] as? String
        let backend = out["backend"] as? String
        let isEnsemble = platform == "ensemble"
        if platform == nil && backend == nil { problems.append("config sets neither platform nor backend") }
        if sorted.isEmpty && !isEnsemble { problems.append("no numbered version directories") }
        if !isEnsemble,
            let expected = expectedFile(platform: platform, backend: backend, override: out["default_model_filename"] as? String)
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
        if let specific = (out["version_policy"] as? [String: Any])?["specific"] as? [String: Any] {
            for v in specific["versions"] as? [Int] ?? [] where !versions.contains(v) {
                problems.append("version_policy names version \(v) but there is no directory \(v)/")
            }
        }
        out["problems"] = problems
        return out
    }
}
