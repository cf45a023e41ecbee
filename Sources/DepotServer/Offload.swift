import Dispatch

/// Blocking work (catalog queries, disk, hashing) runs here, never on the event loops or the
/// Swift concurrency pool. The queue is concurrent and over-commits: a blocked call never
/// starves the others.
let blockingQueue = DispatchQueue(label: "depot.blocking", attributes: .concurrent)

func offload<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { continuation in
        blockingQueue.async { continuation.resume(with: Result { try body() }) }
    }
}
