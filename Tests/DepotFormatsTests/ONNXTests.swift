import DepotAPI
import DepotCore
import DepotFormats
import DepotTestSupport
import Testing

/// A hand-built ONNX ModelProto: two nodes, a symbolic input, a 1 MiB initializer and an external one.
func makeONNX() -> [UInt8] {
    func valueInfo(_ g: inout PB, field: Int, name: String, dims: [Any]) {
        g.message(field) { v in
            v.string(1, name)
            v.message(2) { t in
                t.message(1) { tt in
                    tt.int(1, 1)
                    tt.message(2) { shape in
                        for d in dims {
                            shape.message(1) { dim in
                                if let i = d as? Int { dim.int(1, i) } else { dim.string(2, d as! String) }
                            }
                        }
                    }
                }
            }
        }
    }
    var m = PB()
    m.int(1, 8)
    m.string(2, "pytorch")
    m.string(3, "2.3.0")
    m.message(7) { g in
        g.message(1) { n in
            n.string(1, "x")
            n.string(1, "w")
            n.string(2, "h")
            n.string(3, "mm")
            n.string(4, "MatMul")
        }
        g.message(1) { n in
            n.string(1, "h")
            n.string(2, "y")
            n.string(4, "Relu")
        }
        g.string(2, "main_graph")
        g.message(5) { t in
            var dims = PB()
            dims.varint(512)
            dims.varint(512)
            t.data(1, dims.bytes) // packed dims
            t.int(2, 1)
            t.string(8, "w")
            t.data(9, [UInt8](repeating: 0, count: 1 << 20))
        }
        g.message(5) { t in
            t.int(1, 1024) // unpacked dims
            t.int(2, 1)
            t.string(8, "ext")
            t.message(13) { e in
                e.string(1, "location")
                e.string(2, "weights.bin")
            }
            t.message(13) { e in
                e.string(1, "offset")
                e.string(2, "0")
            }
            t.message(13) { e in
                e.string(1, "length")
                e.string(2, "4096")
            }
            t.int(14, 1)
        }
        valueInfo(&g, field: 11, name: "x", dims: ["N", 4])
        valueInfo(&g, field: 11, name: "w", dims: [512, 512])
        valueInfo(&g, field: 12, name: "y", dims: ["N", 512])
    }
    m.message(8) { o in
        o.string(1, "")
        o.int(2, 17)
    }
    m.message(8) { o in
        o.string(1, "com.microsoft")
        o.int(2, 1)
    }
    m.message(14) { e in
        e.string(1, "author")
        e.string(2, "depot")
    }
    return m.bytes
}

@Suite struct ONNXTests {
    @Test func extractsEveryField() throws {
        let out = try #require(try inspect("models/net.onnx", makeONNX()))
        #expect(out["format"] == "onnx")
        #expect(out["ir_version"] == 8)
        #expect(out["producer"] == "pytorch")
        #expect(out["producer_version"] == "2.3.0")
        #expect(out["graph_name"] == "main_graph")
        let opsets = try #require(out["opsets"]?.array)
        #expect(opsets.map { $0["domain"]?.string } == ["", "com.microsoft"])
        #expect(opsets.map { $0["version"]?.int } == [17, 1])
        #expect(out["node_count"] == 2)
        #expect(out["op_types"] == ["MatMul": 1, "Relu": 1])
        #expect(out["initializer_count"] == 2)
        #expect(out["initializer_bytes"]?.int == 1 << 20)
        let inputs = try #require(out["inputs"]?.array)
        #expect(inputs.count == 1) // "w" is an initializer, not an input
        #expect(inputs[0]["name"] == "x")
        #expect(inputs[0]["elem_type"] == "FLOAT")
        let shape = try #require(inputs[0]["shape"]?.array)
        #expect(shape.count == 2 && shape[0] == "N" && shape[1] == 4)
        let outputs = try #require(out["outputs"]?.array)
        #expect(outputs.map { $0["name"]?.string } == ["y"])
        let external = try #require(out["external_data"]?.array)
        #expect(external.count == 1)
        #expect(external[0]["tensor"] == "ext")
        #expect(external[0]["location"] == "weights.bin")
        #expect(external[0]["offset"] == 0)
        #expect(external[0]["length"] == 4096)
        #expect(out["external_locations"] == ["weights.bin"])
        #expect(out["metadata"] == ["author": "depot"])
    }

    @Test func truncatedOrMalformedThrows() {
        let model = makeONNX()
        let truncated = Array(model.prefix(model.count / 2))
        #expect(errorMessage { try inspect("net.onnx", truncated) }.contains("ONNX model"))
        // Field 1 with wire type 3 (group start) is not allowed.
        #expect(errorMessage { try inspect("net.onnx", [0x0b, 0x00]) }.contains("bad wire type 3"))
        // A length that runs past the end of the file.
        var pb = PB()
        pb.tag(7, 2)
        pb.varint(1 << 40)
        #expect(errorMessage { try inspect("net.onnx", pb.bytes) }.contains("runs past the end"))
        // A varint that never ends.
        #expect(errorMessage { try inspect("net.onnx", [0x08] + [UInt8](repeating: 0xff, count: 12)) }.contains("varint"))
    }
}
