import DepotCore
import DepotTestSupport
import Foundation
import Testing

@testable import DepotStore

@Suite struct HistogramTests {
    @Test func bucketsAreCumulativeWithPrometheusBounds() {
        var h = Histogram(bounds: [0.25, 1, 10])
        for v in [0.125, 0.25, 0.5, 1, 3, 20, -1, .nan] { h.observe(v) }
        // le is inclusive: 0.25 falls in the 0.25 bucket; negative and NaN count at the bottom, add nothing.
        #expect(h.count == 8)
        #expect(h.sum == 24.875)
        let text = h.exposition(name: "x_seconds", labels: "route=\"r\"")
        #expect(
            text == """
                x_seconds_bucket{route="r",le="0.25"} 4
                x_seconds_bucket{route="r",le="1"} 6
                x_seconds_bucket{route="r",le="10"} 7
                x_seconds_bucket{route="r",le="+Inf"} 8
                x_seconds_sum{route="r"} 24.875
                x_seconds_count{route="r"} 8

                """)
        #expect(Histogram(bounds: [1]).exposition(name: "y", labels: "").hasSuffix("y_sum 0\ny_count 0\n"))
    }
}

@Suite struct PushStageTests {
    /// Every stage a new blob goes through is timed; a second write of the same bytes finds every
    /// chunk stored, so it spends nothing in compression or pack writes.
    @Test func aWriteTimesEveryStageAndADuplicateSkipsCompressionAndWrites() throws {
        let dir = TempDir()
        let store = try ChunkStore(root: dir.path, create: true)
        // Compressible (zstd is tried) and several chunks long.
        var data = [UInt8](repeating: 0, count: 6 << 20)
        var s: UInt64 = 7
        for i in stride(from: 0, to: data.count, by: 4) {
            s = s &* 6_364_136_223_846_793_005 &+ 1
            data[i] = UInt8(truncatingIfNeeded: s >> 60)
        }
        let first = try store.makeWriter()
        try first.write(data)
        let written = try first.finish()
        #expect(written.newChunks > 1)
        let t = first.stageSeconds
        for stage in [PushStage.hash, .chunk, .chunkHash, .dedup, .compress, .write, .commit] {
            #expect((t[stage] ?? 0) > 0, "\(stage) was timed")
        }
        let again = try store.makeWriter()
        try again.write(data)
        let duplicate = try again.finish()
        #expect(duplicate.newChunks == 0)
        #expect(again.stageSeconds[.compress] == 0 && again.stageSeconds[.write] == 0)
        #expect((again.stageSeconds[.dedup] ?? 0) > 0)
        // One observation per completed write, per stage.
        let snapshot = store.pushStages.snapshot()
        #expect(snapshot.map(\.stage) == PushStage.allCases)
        #expect(snapshot.allSatisfy { $0.histogram.count == 2 })
    }

    @Test func stageIndicesFollowTheDeclaredOrder() {
        #expect(PushStage.allCases.enumerated().allSatisfy { $1.index == $0 })
    }
}
