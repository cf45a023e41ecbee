import Dispatch

/// Blocking work (catalog, disk, hashing, waiting for the chunk pipeline) runs here, never on
/// the event loops or the Swift concurrency pool. Each call gets its own serial queue: serial
/// queues target libdispatch's *over-committing* root queue, so a call that blocks gets a
/// thread of its own instead of starving the fixed-width global pool that the chunk workers and
/// read batches use (a shared concurrent queue would not over-commit).
func offload<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { continuation in
        DispatchQueue(label: "depot.blocking").async { continuation.resume(with: Result { try body() }) }
    }
}
