import DepotCore

/// The stages a blob write goes through, for `/metrics` (`depot_push_stage_seconds`) and
/// `depot bench ingest`: where a slow push spends its time.
///
/// The stages overlap in wall time (the hashing queue runs beside the cutter, two workers
/// store chunks beside both), so each is the time summed over the threads that did it, and
/// their total may exceed the write's wall time on several cores.
public enum PushStage: String, CaseIterable, Sendable {
    /// The whole-blob SHA-256 (the digest the client named). Computed in one pass with each
    /// chunk's (`SHA256Lanes`), whose time is split evenly between this stage and `chunkHash`.
    case hash
    /// Content-defined chunking on the writer's thread, and the copy of each chunk to its worker.
    case chunk
    /// The writer's thread waiting for a free worker slot: the storing stages are behind.
    case backpressure
    /// Each chunk's SHA-256 (its identity for deduplication).
    case chunkHash = "chunk_hash"
    /// Looking the chunk up among stored ones (with `write`, it includes waiting for the
    /// store's appender lock, which concurrent pushes share: contention shows here).
    case dedup
    /// zstd (or the decision not to).
    case compress
    /// Appending to the pack, with any wait for the appender's lock (the periodic fsync and commit
    /// run on the appender's committer, in no stage, unless a writer is a whole batch ahead of it).
    case write
    /// Completing the blob: the last flush and the transaction that makes it visible.
    case commit
}

/// Time per stage for one blob write, added to by the writer's threads.
public final class PushStageTimer: Sendable {
    private let nanoseconds = Locked([UInt64](repeating: 0, count: PushStage.allCases.count))

    public init() {}

    /// Adds the time since `start` to `stage`.
    @inline(__always)
    public func add(_ stage: PushStage, since start: ContinuousClock.Instant) {
        add(stage, ContinuousClock.now - start)
    }

    public func add(_ stage: PushStage, _ elapsed: Duration) {
        let ns =
            UInt64(max(0, elapsed.components.seconds)) &* 1_000_000_000 &+ UInt64(max(0, elapsed.components.attoseconds / 1_000_000_000))
        let index = stage.index
        nanoseconds.withLock { $0[index] &+= ns }
    }

    /// Seconds per stage so far.
    public var seconds: [PushStage: Double] {
        let ns = nanoseconds.withLock { $0 }
        var out: [PushStage: Double] = [:]
        for (i, stage) in PushStage.allCases.enumerated() { out[stage] = Double(ns[i]) / 1e9 }
        return out
    }
}

extension PushStage {
    /// The position in `allCases`, without hashing the raw value on every call.
    var index: Int {
        switch self {
        case .hash: 0
        case .chunk: 1
        case .backpressure: 2
        case .chunkHash: 3
        case .dedup: 4
        case .compress: 5
        case .write: 6
        case .commit: 7
        }
    }
}

/// The store's histograms of stage times, one observation per completed blob write.
public final class PushStageMetrics: Sendable {
    private let histograms = Locked([PushStage: Histogram]())

    public init() {}

    func record(_ timer: PushStageTimer) {
        let seconds = timer.seconds
        histograms.withLock { h in
            for (stage, s) in seconds { h[stage, default: Histogram()].observe(s) }
        }
    }

    /// The histograms of the stages observed so far, in stage order.
    public func snapshot() -> [(stage: PushStage, histogram: Histogram)] {
        let h = histograms.withLock { $0 }
        return PushStage.allCases.compactMap { stage in h[stage].map { (stage, $0) } }
    }
}
