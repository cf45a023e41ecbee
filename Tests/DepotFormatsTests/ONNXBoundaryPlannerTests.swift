import DepotCore
import DepotFormats
import DepotTestSupport
import Testing

/// Every forced boundary a planner reports after seeing `bytes` fed in pieces of `split` bytes.
private func boundaries<P: BoundaryPlanner>(_ planner: P, _ bytes: [UInt8], split: (Int) -> Int) -> (P, [Int64]) {
    var p = planner
    var at = 0
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
        #expect(p.elementWidth(at: i.lowerBound) == 1)
        #expect(p.elementWidth(at: w.upperBound) == 1 && p.elementWidth(at: 0) == 1)
    }

    @Test func theAnswerDoesNotDependOnHowTheStreamIsSplit() {
        let file = model
        let whole = boundaries(ONNXBoundaryPlanner(), file) { _ in file.count }.1
        #expect(whole.count == 6)
        let sizes = randomBytes(file.count, seed: 9) // random piece sizes of 1–256 bytes
        for split in [{ (_: Int) in 1 }, { _ in 7 }, { _ in 4096 }, { Int(sizes[$0]) + 1 }] {
            #expect(boundaries(ONNXBoundaryPlanner(), file, split: split).1 == whole)
        }
    }

    @Test func otherFormatsAreNotWalked() {
        let safetensors = makeSafetensors([("w", "F32", [128, 128], weight)])
        let junk = randomBytes(200_000, seed: 5)
        for file in [safetensors, junk, [0x08], []] {
            let (p, found) = boundaries(ONNXBoundaryPlanner(), file) { _ in 4096 }
            #expect(found.isEmpty && p.tag == nil)
        }
        // A stream not shown in order is not guessed at.
        var p = ONNXBoundaryPlanner()
        model.withUnsafeBytes { p.observe(UnsafeRawBufferPointer(rebasing: $0[100...]), at: 100) }
        #expect(!p.wantsBytes && p.nextBoundary(atOrAfter: 0) == nil)
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
}
