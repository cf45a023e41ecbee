import DepotCore
import DepotFormats
import DepotStore
import DepotTestSupport
import Foundation
import Testing

@Suite struct SafetensorsTests {
    let layers: [(String, String, [Int], [UInt8])] = (0..<4).map { i in
        ("layers.\(i).weight", "F32", [256, 256], randomBytes(256 * 256 * 4, seed: UInt64(i + 1)))
    }

    @Test func headerIsParsedAndValidated() throws {
        let file = makeSafetensors(layers, metadata: ["format": "pt"])
        let n = Int(file.withUnsafeBytes { $0.loadUnaligned(as: UInt64.self) })
        let parsed = try Safetensors.parseHeader(Array(file[8..<(8 + n)]), fileSize: Int64(file.count))
        #expect(parsed.tensors.map(\.name) == layers.map(\.0))
        #expect(parsed.metadata == ["format": "pt"])
        #expect(parsed.tensors[1].range.lowerBound == Int64(8 + n + 256 * 256 * 4))
        // A header that lies about sizes or leaves gaps is rejected.
        let lying = Array("{\"a\":{\"dtype\":\"F32\",\"shape\":[10],\"data_offsets\":[0,39]}}".utf8)
        #expect(throws: DepotError.self) { try Safetensors.parseHeader(lying, fileSize: nil) }
        let gap = Array("{\"a\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[4,8]}}".utf8)
        #expect(throws: DepotError.self) { try Safetensors.parseHeader(gap, fileSize: nil) }
        #expect(throws: DepotError.self) { try Safetensors.parseHeader(Array("[1,2]".utf8), fileSize: nil) }
        // Data that doesn't reach the end of the file.
        #expect(throws: DepotError.self) {
            try Safetensors.parseHeader(Array(file[8..<(8 + n)]), fileSize: Int64(file.count + 1))
        }
    }

    @Test func tensorAwareCutsDedupReorderedTensorsAndEditedHeaders() throws {
        let dir = TempDir()
        let store = try ChunkStore(root: dir.path, create: true)
        let base = makeSafetensors(layers)
        _ = try store.write(base, piece: 100_000, planner: SafetensorsBoundaryPlanner())
        // Same tensors, longer header and reversed order: every tensor's bytes are reused.
        let edited = makeSafetensors(layers.reversed(), metadata: ["note": String(repeating: "x", count: 37)])
        let r = try store.write(edited, piece: 33_333, planner: SafetensorsBoundaryPlanner())
        let tensorBytes = Int64(layers.reduce(0) { $0 + $1.3.count })
        #expect(r.reusedBytes == tensorBytes, "reused \(r.reusedBytes) of \(tensorBytes)")
        #expect(r.chunker.hasSuffix("+safetensors"))
        #expect(try store.readAll(r.digest) == edited)
        // Without the planner, reordering loses most of the dedup at the tensor seams.
        let dir2 = TempDir()
        let plain = try ChunkStore(root: dir2.path, create: true)
        _ = try plain.write(base)
        let r2 = try plain.write(edited)
        #expect(r2.reusedBytes < r.reusedBytes)
    }

    @Test func anONNXExportSharesEveryWeightChunkWithItsCheckpoint() throws {
        // The checkpoint, then its export: the same fp32 bytes as initializers in another order,
        // with biases under the 16 KiB minimum between them, pushed in odd-sized pieces.
        let biases = (0..<4).map { randomBytes(1024, seed: UInt64(50 + $0)) }
        var tensors: [(String, String, [Int], [UInt8])] = []
        for (i, l) in layers.enumerated() { tensors += [l, ("layers.\(i).bias", "F32", [256], biases[i])] }
        let checkpoint = makeSafetensors(tensors)
        let export = makeONNX(initializers: tensors.reversed().map { ($0.0, 1, $0.2, $0.3) })
        let weightBytes = Int64(layers.reduce(0) { $0 + $1.3.count })

        let dir = TempDir()
        let store = try ChunkStore(root: dir.path, create: true)
        _ = try store.write(checkpoint, piece: 100_000, planner: ModelFileBoundaryPlanner())
        let r = try store.write(export, piece: 33_333, planner: ModelFileBoundaryPlanner())
        // Every weight byte is reused; what is new is the framing and the small biases inside it.
        #expect(r.reusedBytes == weightBytes, "reused \(r.reusedBytes) of \(weightBytes)")
        #expect(r.chunker.hasSuffix("+onnx"))
        #expect(try store.readAll(r.digest) == export)

        // With safetensors cuts alone, each weight's first and last chunks mix in protobuf framing.
        let dir2 = TempDir()
        let plain = try ChunkStore(root: dir2.path, create: true)
        _ = try plain.write(checkpoint, piece: 100_000, planner: SafetensorsBoundaryPlanner())
        let r2 = try plain.write(export, piece: 33_333, planner: SafetensorsBoundaryPlanner())
        #expect(r2.reusedBytes < weightBytes * 3 / 4)
    }

    @Test func thePlannerIsInactiveOnOtherData() throws {
        var p = SafetensorsBoundaryPlanner()
        let junk = randomBytes(100_000, seed: 1)
        junk.withUnsafeBytes { p.observe($0, at: 0) }
        #expect(p.nextBoundary(atOrAfter: 0) == nil)
        #expect(p.tag == nil)
    }
}

@Suite struct SafetensorsHostileInputTests {
    @Test func hugeShapesAndOffsetsAreRejectedNotTrapped() throws {
        let hostile = [
            "{\"t\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296],\"data_offsets\":[0,0]}}",
            "{\"t\":{\"dtype\":\"XX\",\"shape\":[1],\"data_offsets\":[9223372036854775000,9223372036854775807]}}",
            "{\"t\":{\"dtype\":\"F32\",\"shape\":[-1,-4],\"data_offsets\":[0,16]}}",
        ]
        for json in hostile {
            #expect(throws: DepotError.self) { try Safetensors.parseHeader(Array(json.utf8), fileSize: nil) }
            // And through the planner, as an upload would feed it.
            let header = Array(json.utf8)
            let n = UInt64(header.count).littleEndian
            let file = withUnsafeBytes(of: n) { Array($0) } + header
            var p = SafetensorsBoundaryPlanner()
            file.withUnsafeBytes { p.observe($0, at: 0) }
            #expect(p.tag == nil)
        }
    }
}
