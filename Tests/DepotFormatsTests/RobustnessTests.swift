import DepotCore
import DepotFormats
import DepotTestSupport
import Testing

/// Corrupted inputs must produce a result or a DepotError, never a crash or a huge allocation.
@Suite struct RobustnessTests {
    struct Rng {
        var state: UInt64
        mutating func next() -> UInt64 {
            state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
            return state >> 33
        }
    }

    func mutate(_ path: String, _ base: [UInt8], rounds: Int, seed: UInt64) {
        var rng = Rng(state: seed)
        for _ in 0..<rounds {
            var bytes = base
            for _ in 0..<(1 + Int(rng.next() % 4)) {
                let i = Int(rng.next() % UInt64(bytes.count))
                bytes[i] = rng.next() % 3 == 0 ? 0xff : UInt8(truncatingIfNeeded: rng.next())
            }
            if rng.next() % 4 == 0 { bytes = Array(bytes.prefix(Int(rng.next() % UInt64(bytes.count)))) }
            do {
                _ = try FormatInspector.inspect(path: path, source: BytesSource(bytes), platform: "sm_90")
            } catch is DepotError {
            } catch {
                Issue.record("unexpected error type for \(path): \(error)")
            }
        }
    }

    @Test func corruptedFilesNeverCrash() {
        var small = PB()
        small.int(1, 8)
        small.message(7) { g in
            g.message(1) { n in n.string(4, "Add") }
            g.message(5) { t in
                t.int(1, 4)
                t.string(8, "w")
                t.data(9, [1, 2, 3, 4])
            }
            g.message(11) { v in
                v.string(1, "x")
                v.message(2) { t in t.message(1) { tt in tt.int(1, 1) } }
            }
        }
        mutate("m.onnx", small.bytes, rounds: 2000, seed: 1)
        let pickle: [UInt8] =
            [0x80, 0x04] + P.shortUnicode("os") + [0x94] + P.shortUnicode("system") + [0x94, 0x93]
            + [0x42] + le(3, 4) + [1, 2, 3] + [0x8a, 0x01, 0x05, 0x71, 0x02, 0x68, 0x02, 0x2e]
        mutate("m.pt", makeZip([("a/data.pkl", pickle, 0), ("a/data/0", [1, 2, 3], 0)]), rounds: 2000, seed: 2)
        mutate("m.pt", makeZip([("a/data.pkl", pickle, 0)], zip64: true), rounds: 2000, seed: 3)
        mutate("legacy.pth", pickle + pickle, rounds: 2000, seed: 4)
        mutate("config.pbtxt", Array(tritonConfig.utf8), rounds: 1000, seed: 5)
        let st = safetensorsFile(#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#, dataBytes: 8)
        mutate("m.safetensors", st, rounds: 1000, seed: 6)
        mutate("saved_model.pb", small.bytes, rounds: 1000, seed: 7)
        mutate("g.pb", small.bytes, rounds: 1000, seed: 8)
    }
}
