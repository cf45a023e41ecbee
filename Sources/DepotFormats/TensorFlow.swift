import DepotAPI
import DepotCore

/// Reads TensorFlow SavedModel (`saved_model.pb`) and frozen GraphDef (`*.pb`) protobufs,
/// skipping graph payloads by length.
enum TensorFlow {
    /// SavedModel: schema version, meta graphs with their tags and TensorFlow version.
    static func savedModel(_ source: any ByteSource) throws -> [String: JSONValue] {
        let r = ProtobufReader(source, what: "TensorFlow SavedModel")
        var out: [String: JSONValue] = ["format": "tensorflow-savedmodel"]
        var metaGraphs: [JSONValue] = []
        var allTags: [String] = []
        var seenTags = Set<String>()
        var count = 0
        while let (n, w) = try r.nextField() {
            switch n {
            case 1:
                try r.expect(w, .varint, field: n)
                out["saved_model_schema_version"] = JSONValue(try r.readInt())
            case 2:
                try r.expect(w, .lengthDelimited, field: n)
                count += 1
                var tags: [String] = []
                let mg: [String: JSONValue] = try r.message {
                    var mg: [String: JSONValue] = [:]
                    while let (n2, w2) = try r.nextField() {
                        guard n2 == 1 else {
                            try r.skip(w2)
                            continue
                        }
                        try r.expect(w2, .lengthDelimited, field: n2)
                        try r.message {
                            tags = []
                            while let (n3, w3) = try r.nextField() {
                                switch n3 {
                                case 4:
                                    try r.expect(w3, .lengthDelimited, field: n3)
                                    if tags.count < 100 { tags.append(try r.readString()) } else { try r.skip(w3) }
                                case 5:
                                    try r.expect(w3, .lengthDelimited, field: n3)
                                    mg["tensorflow_version"] = .string(try r.readString())
                                case 6:
                                    try r.expect(w3, .lengthDelimited, field: n3)
                                    mg["tensorflow_git_version"] = .string(try r.readString())
                                default: try r.skip(w3)
                                }
                            }
                            mg["tags"] = JSONValue(tags)
                        }
                    }
                    return mg
                }
                if metaGraphs.count < 100 { metaGraphs.append(.object(mg)) }
                // A set for membership: a list scan per tag made many meta graphs quadratic.
                for t in tags where allTags.count < FormatInspector.maxListed && seenTags.insert(t).inserted {
                    allTags.append(t)
                }
                if out["tensorflow_version"] == nil, let v = mg["tensorflow_version"] { out["tensorflow_version"] = v }
            default:
                try r.skip(w)
            }
        }
        out["meta_graph_count"] = JSONValue(count)
        out["meta_graphs"] = .array(metaGraphs)
        out["tags"] = JSONValue(allTags)
        return out
    }

    /// A frozen GraphDef, or nil when the bytes do not parse as one with nodes.
    static func graphDef(_ source: any ByteSource) -> [String: JSONValue]? {
        let r = ProtobufReader(source, what: "TensorFlow GraphDef")
        var nodes = 0
        var ops: [String: Int] = [:]
        var producer: Int?
        do {
            while let (n, w) = try r.nextField() {
                switch n {
                case 1:
                    try r.expect(w, .lengthDelimited, field: n)
                    nodes += 1
                    let op: String = try r.message {
                        var op = ""
                        while let (n2, w2) = try r.nextField() {
                            if n2 == 2 {
                                try r.expect(w2, .lengthDelimited, field: n2)
                                op = try r.readString()
                            } else {
                                try r.skip(w2)
                            }
                        }
                        return op
                    }
                    if ops[op] != nil || ops.count < 10_000 { ops[op, default: 0] += 1 }
                case 4:
                    try r.expect(w, .lengthDelimited, field: n)
                    try r.message {
                        while let (n2, w2) = try r.nextField() {
                            if n2 == 1 {
                                try r.expect(w2, .varint, field: n2)
                                producer = try r.readInt()
                            } else {
                                try r.skip(w2)
                            }
                        }
                    }
                case 2:
                    try r.expect(w, .lengthDelimited, field: n)
                    try r.skip(w)
                default: try r.skip(w)
                }
            }
        } catch {
            return nil
        }
        guard nodes > 0, ops[""] == nil else { return nil }
        var out: [String: JSONValue] = [
            "format": "tensorflow-graphdef", "node_count": JSONValue(nodes), "op_types": JSONValue(topCounts(ops, 20)),
        ]
        if let producer { out["producer"] = JSONValue(producer) }
        return out
    }
}
