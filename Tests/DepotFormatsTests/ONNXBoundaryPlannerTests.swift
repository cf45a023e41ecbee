import DepotCore
import DepotFormats
import DepotTestSupport
import Testing

/// Every forced boundary a planner reports after seeing `bytes` (from `start` on) fed in pieces
/// of `split` bytes.
private func boundaries<P: BoundaryPlanner>(_ planner: P, _ bytes: [UInt8], from start: Int = 0, split: (Int) -> Int) -> (P, [Int64]) {
    var p = planner
    var at = start
    while at < bytes.count {
        let n = max(1, min(split(at), bytes.count - at))
        bytes[at..<(at + n)].withUnsafeBytes { p.observe($0, at: Int64(at)) }
        at += n
    }
    var out: [Int64] = []
    var from: Int64 = 0
    while let b = p.nextBoundary(atOrAfter: from) {
        out.append(b)
        from = b + 1
    }
    return (p, out)
}

/// Where `payload` lies in `file` (it is random, so it occurs once).
private func range(of payload: [UInt8], in file: [UInt8]) -> Range<Int64>? {
    guard payload.count <= file.count else { return nil }
    for start in 0...(file.count - payload.count) where file[start] == payload[0] && Array(file[start..<(start + payload.count)]) == payload
    {
        return Int64(start)..<Int64(start + payload.count)
    }
    return nil
}

@Suite struct ONNXBoundaryPlannerTests {
    let weight = randomBytes(64 << 10, seed: 1) // FLOAT [128, 128]
    let half = randomBytes(32 << 10, seed: 2) // FLOAT16 [128, 128]
    let bias = randomBytes(512, seed: 3) // FLOAT [128]: under the 16 KiB minimum
    let ids = randomBytes(40 << 10, seed: 4) // INT64 [5120]

    var model: [UInt8] {
        makeONNX(initializers: [
            ("w", 1, [128, 128], weight), ("b", 1, [128], bias), ("h", 10, [128, 128], half), ("ids", 7, [5120], ids),
        ])
    }

    @Test func cutsWhereEveryLargeInitializersBytesStartAndEnd() throws {
        let file = model
        let (p, found) = boundaries(ONNXBoundaryPlanner(), file) { _ in 1 << 20 }
        let w = try #require(range(of: weight, in: file))
        let h = try #require(range(of: half, in: file))
        let i = try #require(range(of: ids, in: file))
        #expect(found == [w.lowerBound, w.upperBound, h.lowerBound, h.upperBound, i.lowerBound, i.upperBound])
        #expect(p.tag == "onnx")
        // Width hints from each tensor's data_type, 1 outside the tensors.
        #expect(p.elementWidth(at: w.lowerBound) == 4 && p.elementWidth(at: w.upperBound - 1) == 4)
        #expect(p.elementWidth(at: h.lowerBound + 100) == 2)
        #expect(p.elementWidth(at: i.lowerBound) == 8) // INT64, as safetensors gives I64
        #expect(p.elementWidth(at: w.upperBound) == 1 && p.elementWidth(at: 0) == 1)
    }

    @Test func theAnswerDoesNotDependOnHowTheStreamIsSplit() {
        let file = model
        let (reference, whole) = boundaries(ONNXBoundaryPlanner(), file) { _ in file.count }
        #expect(whole.count == 6)
        let probes = Array(stride(from: Int64(0), to: Int64(file.count), by: 1009)) + whole
        let sizes = randomBytes(file.count, seed: 9) // random piece sizes of 1–256 bytes
        for split in [{ (_: Int) in 1 }, { _ in 7 }, { _ in 4096 }, { Int(sizes[$0]) + 1 }] {
            let (p, found) = boundaries(ONNXBoundaryPlanner(), file, split: split)
            #expect(found == whole)
            #expect(probes.allSatisfy { p.elementWidth(at: $0) == reference.elementWidth(at: $0) })
        }
    }

    /// A chunked upload's requests may land on different replicas: the writer checkpoint
    /// carries the walker's state, and a walker restored from it (shown the bytes again from
    /// the last chunk boundary, as a resumed writer re-feeds its tail) answers as one stream.
    @Test func aRestoredWalkerGoesOnAsOneStream() throws {
        let file = model
        let (reference, whole) = boundaries(ONNXBoundaryPlanner(), file) { _ in file.count }
        let probes = Array(stride(from: Int64(0), to: Int64(file.count), by: 1009)) + whole
        for stop in [1, 2, 3, 40, 300, 20_000, 70_000, 100_000, file.count - 1] {
            for back in [0, 1, 5000] where back <= stop {
                var first = ONNXBoundaryPlanner()
                file[0..<stop].withUnsafeBytes { first.observe($0, at: 0) }
                let committed = Int64(stop - back)
                let state = try #require(first.savedState(committed: committed))
                #expect(state.count < 200)
                var resumed = ONNXBoundaryPlanner()
                try resumed.restore(state)
                #expect(!resumed.wantsBytes, "nothing to replay")
                let (p, found) = boundaries(resumed, file, from: Int(committed)) { _ in 333 }
                #expect(found == whole.filter { $0 >= committed }, "stopped at \(stop), committed \(committed)")
                #expect(p.tag == reference.tag, "it still says it cut (the recipe's chunker version)")
                #expect(probes.filter { $0 >= committed }.allSatisfy { p.elementWidth(at: $0) == reference.elementWidth(at: $0) })
            }
        }
        // Through the registry's planner too.
        var first = ModelFileBoundaryPlanner()
        file[0..<50_000].withUnsafeBytes { first.observe($0, at: 0) }
        var resumed = ModelFileBoundaryPlanner()
        try resumed.restore(try #require(first.savedState(committed: 50_000)))
        #expect(boundaries(resumed, file, from: 50_000) { _ in 4096 }.1 == whole.filter { $0 >= 50_000 })
    }

    @Test func aSavedStateItDidNotWriteIsRefusedOrHarmless() throws {
        var first = ONNXBoundaryPlanner()
        let file = model
        file[0..<30_000].withUnsafeBytes { first.observe($0, at: 0) }
        let state = try #require(first.savedState(committed: 30_000))
        func restored(_ bytes: [UInt8]) -> ONNXBoundaryPlanner? {
            var p = ONNXBoundaryPlanner()
            do { try p.restore(bytes) } catch {
                // Refused as the client's to redo (start the upload over), not as store damage.
                guard case DepotError.invalidArgument = error else {
                    Issue.record("refused with \(error)")
                    return nil
                }
                return nil
            }
            return p
        }
        // Every truncation, an extension and junk are refused.
        for n in 0..<state.count { #expect(restored(Array(state.prefix(n))) == nil, "truncated to \(n)") }
        #expect(restored(state + [0]) == nil)
        for junk in [randomBytes(64, seed: 3), [1] + [UInt8](repeating: 0xFF, count: 80), [2] + state.dropFirst()] {
            #expect(restored(junk) == nil)
        }
        // Every byte changed in turn: refused, or (a change the checks cannot tell from a real
        // state, e.g. in the data type or a cut) a walker that runs to the end without trapping.
        for i in 0..<state.count {
            var v = state
            v[i] ^= 0xA5
            if let p = restored(v) { _ = boundaries(p, file, from: 30_000) { _ in 999 } }
        }
        // The safetensors planner has no state to restore.
        #expect(throws: DepotError.self) {
            var s = SafetensorsBoundaryPlanner()
            try s.restore(state)
        }
    }

    @Test func malformedFramingStopsTheWalkAndKeepsWhatItFound() throws {
        let good = randomBytes(20 << 10, seed: 6)
        // A second initializer whose raw_data claims more bytes than its TensorProto holds.
        var m = PB()
        m.int(1, 8)
        m.message(7) { g in
            g.message(5) { t in
                t.int(2, 1)
                t.data(9, good)
            }
            var t = PB()
            t.int(2, 1)
            t.tag(9, 2)
            t.varint(1 << 30)
            t.bytes += randomBytes(30 << 10, seed: 7)
            g.data(5, t.bytes)
        }
        let (p, found) = boundaries(ONNXBoundaryPlanner(), m.bytes) { _ in 999 }
        let r = try #require(range(of: good, in: m.bytes))
        #expect(found == [r.lowerBound, r.upperBound])
        #expect(!p.wantsBytes)

        // Varints of eleven bytes, wire types 3, 4, 6 and 7, field 0, and a graph longer than
        // protobuf's 2 GiB limit: each stops the walk with nothing cut.
        var hostile: [[UInt8]] = [[0x08] + [UInt8](repeating: 0xFF, count: 10) + [0x01]]
        for wire: UInt8 in [3, 4, 6, 7] { hostile.append([0x08, 0x08, 0x10 | wire]) }
        hostile.append([0x08, 0x08, 0x00])
        var huge = PB()
        huge.int(1, 8)
        huge.tag(7, 2)
        huge.varint(3 << 30)
        hostile.append(huge.bytes + randomBytes(1000, seed: 8))
        // A field of the model itself (producer_name) that would end past 2 GiB.
        var long = PB()
        long.int(1, 8)
        long.tag(2, 2)
        long.varint(3 << 30)
        hostile.append(long.bytes + randomBytes(1000, seed: 8))
        for file in hostile {
            let (p, found) = boundaries(ONNXBoundaryPlanner(), file) { _ in 3 }
            #expect(found.isEmpty && !p.wantsBytes, "\(file.prefix(16))")
        }
    }

    @Test func theModelFilePlannerCutsEitherFormat() throws {
        let onnx = model
        let (po, fo) = boundaries(ModelFileBoundaryPlanner(), onnx) { _ in 5000 }
        #expect(fo == boundaries(ONNXBoundaryPlanner(), onnx) { _ in 5000 }.1)
        #expect(po.tag == "onnx")
        let w = try #require(range(of: weight, in: onnx))
        #expect(po.elementWidth(at: w.lowerBound) == 4)

        let st = makeSafetensors([("w", "F32", [128, 128], weight), ("b", "F32", [128], bias), ("h", "F16", [128, 128], half)])
        let (ps, fs) = boundaries(ModelFileBoundaryPlanner(), st) { _ in 5000 }
        #expect(fs == boundaries(SafetensorsBoundaryPlanner(), st) { _ in 5000 }.1)
        #expect(ps.tag == "safetensors")
        let h = try #require(range(of: half, in: st))
        #expect(ps.elementWidth(at: h.lowerBound) == 2)
        // Safetensors cuts at the header's end and where each large tensor starts and ends.
        let sw = try #require(range(of: weight, in: st))
        #expect(fs == [sw.lowerBound, sw.upperBound, h.lowerBound, h.upperBound])
    }

    /// A file crafted to be both: a safetensors header whose length starts with 0x08 (a
    /// varint key to the walker), whose JSON and space padding read as protobuf fields, and
    /// whose tensor data holds a graph with an initializer. Both planners cut; the union of
    /// their cuts and the width hints still do not depend on the split.
    @Test func aFileThatIsBothFormatsIsCutTheSameWhateverTheSplit() throws {
        let n = 0x0009_0008
        var data = PB()
        data.message(7) { g in
            g.message(5) { t in
                t.int(2, 1)
                t.data(9, (0..<65_536).map { UInt8(truncatingIfNeeded: $0) })
            }
        }
        var found: [UInt8]?
        search: for a in 0..<6 {
            for b in 0..<6 {
                for c in 0..<6 {
                    let body =
                        "{" + String(repeating: " ", count: a) + "\"t\"" + String(repeating: " ", count: b) + ":{\"dtype\":\"U8\","
                        + String(repeating: " ", count: c) + "\"shape\":[\(data.bytes.count)],\"data_offsets\":[0,\(data.bytes.count)]}}"
                    let header = Array(body.utf8) + [UInt8](repeating: 0x20, count: n - body.utf8.count)
                    let file = le(UInt64(n), 8) + header + data.bytes
                    if !boundaries(ONNXBoundaryPlanner(), file) { _ in file.count }.1.isEmpty {
                        found = file
                        break search
                    }
                }
            }
        }
        let file = try #require(found)
        let (reference, whole) = boundaries(ModelFileBoundaryPlanner(), file) { _ in file.count }
        #expect(reference.tag == "safetensors+onnx")
        let probes = Array(stride(from: Int64(0), to: Int64(file.count), by: 4093)) + whole
        for split in [{ (_: Int) in 64 }, { _ in 65_537 }, { at in at % 97 + 1 }] {
            let (p, cuts) = boundaries(ModelFileBoundaryPlanner(), file, split: split)
            #expect(cuts == whole)
            #expect(probes.allSatisfy { p.elementWidth(at: $0) == reference.elementWidth(at: $0) })
        }
    }
}
