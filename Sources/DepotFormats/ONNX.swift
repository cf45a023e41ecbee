import DepotAPI
import DepotCore

/// Reads an ONNX ModelProto's metadata from the protobuf wire format without loading weights:
/// initializer payloads are skipped by length and only counted.
enum ONNX {
    /// ONNX TensorProto.DataType names.
    static func typeName(_ t: Int) -> String {
        switch t {
        case 1: return "FLOAT"
        case 2: return "UINT8"
        case 3: return "INT8"
        case 4: return "UINT16"
        case 5: return "INT16"
        case 6: return "INT32"
        case 7: return "INT64"
        case 8: return "STRING"
        case 9: return "BOOL"
        case 10: return "FLOAT16"
        case 11: return "DOUBLE"
        case 12: return "UINT32"
        case 13: return "UINT64"
        case 14: return "COMPLEX64"
        case 15: return "COMPLEX128"
        case 16: return "BFLOAT16"
        default: return "TYPE_\(t)"
        }
    }

    static func inspect(_ source: any ByteSource) throws -> [String: JSONValue] {
        let r = ProtobufReader(source, what: "ONNX model")
        var out: [String: JSONValue] = ["format": "onnx"]
        var opsets: [JSONValue] = []
        var metadata: [String: String] = [:]
        var sawGraph = false
        while let (n, w) = try r.nextField() {
            switch n {
            case 1:
                try r.expect(w, .varint, field: n)
                out["ir_version"] = JSONValue(try r.readInt())
            case 2:
                try r.expect(w, .lengthDelimited, field: n)
                out["producer"] = .string(try r.readString())
            case 3:
                try r.expect(w, .lengthDelimited, field: n)
                out["producer_version"] = .string(try r.readString())
            case 4:
                try r.expect(w, .lengthDelimited, field: n)
                out["domain"] = .string(try r.readString())
            case 5:
                try r.expect(w, .varint, field: n)
                out["model_version"] = JSONValue(try r.readInt())
            case 6:
                try r.expect(w, .lengthDelimited, field: n)
                out["doc_string"] = .string(String(try r.readString().prefix(4096)))
            case 7:
                try r.expect(w, .lengthDelimited, field: n)
                sawGraph = true
                try r.message { try readGraph(r, into: &out) }
            case 8:
                try r.expect(w, .lengthDelimited, field: n)
                let opset: JSONValue = try r.message {
                    var domain = ""
                    var version = 0
                    while let (n2, w2) = try r.nextField() {
                        switch n2 {
                        case 1:
                            try r.expect(w2, .lengthDelimited, field: n2)
                            domain = try r.readString()
                        case 2:
                            try r.expect(w2, .varint, field: n2)
                            version = try r.readInt()
                        default: try r.skip(w2)
                        }
                    }
                    return ["domain": .string(domain), "version": JSONValue(version)]
                }
                if opsets.count < 1000 { opsets.append(opset) }
            case 14:
                try r.expect(w, .lengthDelimited, field: n)
                let e = try r.readStringEntry()
                if metadata.count < 1000 { metadata[e.key] = String(e.value.prefix(4096)) }
            default:
                try r.skip(w)
            }
        }
        guard out["ir_version"] != nil || sawGraph else {
            throw DepotError.invalidArgument("ONNX model: no ir_version and no graph (not a ModelProto)")
        }
        out["opsets"] = .array(opsets)
        if !metadata.isEmpty { out["metadata"] = JSONValue(metadata) }
        return out
    }

    private static func readGraph(_ r: ProtobufReader, into out: inout [String: JSONValue]) throws {
        var nodeCount = 0
        var ops: [String: Int] = [:]
        var initializerNames = Set<String>()
        var initializerCount = 0
        var initializerBytes: Int64 = 0
        var external: [JSONValue] = []
        var locations: [String] = []
        var seenLocations = Set<String>()
        // (name, info) pairs: the name is needed again to drop initializers listed as inputs.
        var inputs: [(name: String, info: JSONValue)] = []
        var outputs: [JSONValue] = []
        var inputCount = 0
        var outputCount = 0
        let listed = FormatInspector.maxListed
        while let (n, w) = try r.nextField() {
            switch n {
            case 1:
                try r.expect(w, .lengthDelimited, field: n)
                nodeCount += 1
                let op: String = try r.message {
                    var op = ""
                    while let (n2, w2) = try r.nextField() {
                        if n2 == 4 {
                            try r.expect(w2, .lengthDelimited, field: n2)
                            op = try r.readString()
                        } else {
                            try r.skip(w2)
                        }
                    }
                    return op
                }
                if ops[op] != nil || ops.count < 10_000 { ops[op, default: 0] += 1 }
            case 2:
                try r.expect(w, .lengthDelimited, field: n)
                out["graph_name"] = .string(try r.readString())
            case 5:
                try r.expect(w, .lengthDelimited, field: n)
                let t = try readTensor(r)
                initializerCount += 1
                initializerBytes += t.bytes
                if initializerNames.count < 1_000_000 { initializerNames.insert(t.name) }
                if let e = t.external, external.count < listed {
                    external.append(.object(e))
                    if let loc = e["location"]?.string, locations.count < 1000, seenLocations.insert(loc).inserted {
                        locations.append(loc)
                    }
                }
            case 11, 12:
                try r.expect(w, .lengthDelimited, field: n)
                let info = try readValueInfo(r)
                if n == 11 { inputCount += 1 } else { outputCount += 1 }
                // Initializers usually precede inputs on the wire: drop them here so weights listed
                // as inputs do not use up the list limit.
                if n == 11 {
                    if inputs.count < listed, !initializerNames.contains(info.name) { inputs.append(info) }
                } else if outputs.count < listed {
                    outputs.append(info.info)
                }
            default:
                try r.skip(w)
            }
        }
        // Old exporters list initializers as graph inputs too: those are weights, not inputs.
        out["inputs"] = .array(inputs.filter { !initializerNames.contains($0.name) }.map(\.info))
        out["outputs"] = .array(outputs)
        if inputCount > listed || outputCount > listed {
            out["input_count"] = JSONValue(inputCount)
            out["output_count"] = JSONValue(outputCount)
            out["inputs_truncated"] = true
        }
        out["node_count"] = JSONValue(nodeCount)
        out["op_types"] = JSONValue(topCounts(ops, 20))
        out["initializer_count"] = JSONValue(initializerCount)
        out["initializer_bytes"] = .int(initializerBytes)
        out["external_data"] = .array(external)
        out["external_locations"] = JSONValue(locations)
    }

    /// A TensorProto's name, payload size in bytes (inline data) and external-data reference.
    private static func readTensor(_ r: ProtobufReader) throws -> (name: String, bytes: Int64, external: [String: JSONValue]?) {
        try r.message {
            var name = ""
            var bytes: Int64 = 0
            var isExternal = false
            var entries: [String: String] = [:]
            while let (n, w) = try r.nextField() {
                switch n {
                case 8:
                    try r.expect(w, .lengthDelimited, field: n)
                    name = try r.readString()
                case 9, 6:
                    try r.expect(w, .lengthDelimited, field: n)
                    bytes += try r.skip(w)
                case 4, 5, 7, 10, 11:
                    // Packed numeric data: count the payload; unpacked elements count their width.
                    switch w {
                    case .lengthDelimited: bytes += try r.skip(w)
                    case .fixed32: bytes += try r.skip(w)
                    case .fixed64: bytes += try r.skip(w)
                    case .varint:
                        try r.skip(w)
                        bytes += (n == 5 ? 4 : 8)
                    }
                case 13:
                    try r.expect(w, .lengthDelimited, field: n)
                    let e = try r.readStringEntry()
                    if entries.count < 100 { entries[e.key] = e.value }
                case 14:
                    try r.expect(w, .varint, field: n)
                    isExternal = try r.readInt() == 1
                default: try r.skip(w)
                }
            }
            guard isExternal || !entries.isEmpty else { return (name, bytes, nil) }
            var e: [String: JSONValue] = ["tensor": .string(name)]
            if let loc = entries["location"] { e["location"] = .string(loc) }
            for key in ["offset", "length"] {
                guard let s = entries[key] else { continue }
                guard let v = Int(s), v >= 0 else {
                    throw DepotError.invalidArgument(
                        "ONNX model: tensor '\(name)' has external_data \(key) '\(s)' that is not a non-negative integer")
                }
                e[key] = JSONValue(v)
            }
            return (name, bytes, e)
        }
    }

    /// A ValueInfoProto: name, element type and shape (ints or symbolic names).
    private static func readValueInfo(_ r: ProtobufReader) throws -> (name: String, info: JSONValue) {
        try r.message {
            var name = ""
            var info: [String: JSONValue] = [:]
            while let (n, w) = try r.nextField() {
                switch n {
                case 1:
                    try r.expect(w, .lengthDelimited, field: n)
                    name = try r.readString()
                case 2:
                    try r.expect(w, .lengthDelimited, field: n)
                    try r.message {
                        while let (n2, w2) = try r.nextField() {
                            guard n2 == 1 else {
                                try r.skip(w2)
                                continue
                            }
                            try r.expect(w2, .lengthDelimited, field: n2)
                            try readTensorType(r, into: &info)
                        }
                    }
                default: try r.skip(w)
                }
            }
            info["name"] = .string(name)
            return (name, .object(info))
        }
    }

    private static func readTensorType(_ r: ProtobufReader, into info: inout [String: JSONValue]) throws {
        try r.message {
            while let (n, w) = try r.nextField() {
                switch n {
                case 1:
                    try r.expect(w, .varint, field: n)
                    info["elem_type"] = .string(typeName(try r.readInt()))
                case 2:
                    try r.expect(w, .lengthDelimited, field: n)
                    var shape: [JSONValue] = []
                    try r.message {
                        while let (n2, w2) = try r.nextField() {
                            guard n2 == 1 else {
                                try r.skip(w2)
                                continue
                            }
                            try r.expect(w2, .lengthDelimited, field: n2)
                            let dim: JSONValue = try r.message {
                                var dim: JSONValue = "?"
                                while let (n3, w3) = try r.nextField() {
                                    switch n3 {
                                    case 1:
                                        try r.expect(w3, .varint, field: n3)
                                        dim = JSONValue(try r.readInt())
                                    case 2:
                                        try r.expect(w3, .lengthDelimited, field: n3)
                                        dim = .string(try r.readString())
                                    default: try r.skip(w3)
                                    }
                                }
                                return dim
                            }
                            if shape.count < 256 { shape.append(dim) }
                        }
                    }
                    info["shape"] = .array(shape)
                default: try r.skip(w)
                }
            }
        }
    }
}
