import DepotCore
import DepotFormats
import DepotStore
import DepotTestSupport
import Foundation
import Testing

/// A planner that counts the bytes it is shown below `mark` (a resumed writer's replay).
private struct Counting: BoundaryPlanner {
    var inner = ModelFileBoundaryPlanner()
    let mark: Int64
    let replayed: Locked<Int64>

    mutating func observe(_ bytes: UnsafeRawBufferPointer, at offset: Int64) {
        if offset < mark { replayed.withLock { $0 += min(Int64(bytes.count), mark - offset) } }
        inner.observe(bytes, at: offset)
    }
    func nextBoundary(atOrAfter offset: Int64) -> Int64? { inner.nextBoundary(atOrAfter: offset) }
    func elementWidth(at offset: Int64) -> Int { inner.elementWidth(at: offset) }
    var tag: String? { inner.tag }
    var wantsBytes: Bool { inner.wantsBytes }
    func savedState(committed: Int64) -> [UInt8]? { inner.savedState(committed: committed) }
    mutating func restore(_ state: [UInt8]) throws { try inner.restore(state) }
}

@Suite struct PlannerResumeTests {
    /// A chunked upload of an ONNX model resumed at every request: the checkpoint carries the
    /// walker's state, so the resumed writer does not read the stored part back through it
    /// (which cost every request of a chunked upload the whole upload so far), and still cuts
    /// exactly the chunks of one stream. A version 1 checkpoint (no planner state) still
    /// resumes, by replaying.
    @Test func aResumedONNXUploadCarriesThePlannersStateInsteadOfReplaying() throws {
        let tensors = (0..<12).map { ("w\($0)", 1, [256, 512], randomBytes(512 << 10, seed: UInt64(80 + $0))) }
        let file = makeONNX(initializers: tensors)

        let dir = TempDir()
        let store = try ChunkStore(root: dir.path, create: true)
        let reference = try store.write(file, planner: ModelFileBoundaryPlanner())
        #expect(reference.chunker.hasSuffix("+onnx"))
        let wholeChunks = try store.catalog.read { try $0.recipe(blob: store.blob(reference.digest)!.id, from: 0, limit: 10_000) }

        // In a tensor; and after the last cut (the rest is framing), which the final PUT resumes.
        for (split, version1) in [(5_000_000, false), (5_000_000, true), (file.count - 10, false)] {
            let dir = TempDir()
            let store = try ChunkStore(root: dir.path, create: true)
            let first = try store.makeWriter(planner: ModelFileBoundaryPlanner())
            try file[..<split].withUnsafeBytes { try first.write($0) }
            var part: PriorSegment?
            var saved = try first.checkpoint { _, _, segment in part = segment }
            let segment = try #require(part)
            #expect(!saved.plannerState.isEmpty && saved.plannerState.count < 200)
            if version1 {
                // A checkpoint as builds from before the planner state wrote it.
                saved.plannerState = []
                let bytes = saved.encoded()
                #expect(Array(bytes.prefix(4)) == Array("DWC1".utf8))
                saved = try WriterCheckpoint(decoding: bytes)
                #expect(saved.plannerState.isEmpty)
            } else {
                #expect(Array(saved.encoded().prefix(4)) == Array("DWC2".utf8))
                saved = try WriterCheckpoint(decoding: saved.encoded())
            }
            let replayed = Locked<Int64>(0)
            let resumed = try store.resumeWriter(
                planner: Counting(mark: saved.committed, replayed: replayed), from: saved, after: [segment])
            try file[split...].withUnsafeBytes { try resumed.write($0) }
            let result = try resumed.finish(expecting: reference.digest, retain: "keep", adopting: [segment])
            let chunks = try store.catalog.read { try $0.recipe(blob: store.blob(result.digest)!.id, from: 0, limit: 10_000) }
            #expect(chunks == wholeChunks, "split at \(split), version 1: \(version1)")
            #expect(result.chunker == reference.chunker)
            #expect(try store.readAll(result.digest) == file)
            if version1 {
                #expect(replayed.withLock { $0 } == saved.committed, "replays everything stored")
            } else {
                // One read batch (1 MiB, ending at a chunk's end) at most, for the safetensors
                // planner to see it is not one.
                #expect(replayed.withLock { $0 } <= 5 << 18, "replayed \(replayed.withLock { $0 }) of \(saved.committed) bytes")
            }
        }
    }

    /// Only an ONNX upload's checkpoint carries planner state; every other one stays in the
    /// version builds from before it read, so a rolling upgrade or a rollback keeps them.
    @Test func otherUploadsKeepTheVersion1Checkpoint() throws {
        let dir = TempDir()
        let store = try ChunkStore(root: dir.path, create: true)
        let safetensors = makeSafetensors([("w", "F32", [256, 256], randomBytes(256 << 10, seed: 90))])
        for bytes in [safetensors, randomBytes(1 << 20, seed: 91)] {
            let w = try store.makeWriter(planner: ModelFileBoundaryPlanner())
            try bytes.withUnsafeBytes { try w.write($0) }
            let saved = try w.checkpoint { _, _, _ in }
            #expect(saved.plannerState.isEmpty)
            #expect(Array(saved.encoded().prefix(4)) == Array("DWC1".utf8))
        }
    }
}
