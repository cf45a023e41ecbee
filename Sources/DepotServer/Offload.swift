import Dispatch
import NIOPosix
import Synchronization

/// Blocking work (catalog, disk, hashing, waiting for the chunk pipeline) runs here, never on
/// the event loops or the Swift concurrency pool.
///
/// Why a fixed pool: each call used to get its own serial dispatch queue (serial queues
/// over-commit, so a blocked call never starved the fixed-width global pool that chunk workers
/// and read batches use) — but that also meant one thread per concurrent blocking call, so a
/// thousand slow requests made a thousand threads. The pool's threads are its own (they do not
/// come from libdispatch's global pool either, so chunk workers still cannot be starved), and
/// calls beyond `server.blocking_threads` wait in line without holding a thread.
///
/// Nothing run here may wait for another offloaded call to start (that could deadlock a full
/// pool): chunk pipelines run on their own dispatch queues, read-ahead on the store's read pool
/// (`ReadWorkers`).
enum BlockingPool {
    private static let pool = Mutex<NIOThreadPool?>(nil)

    /// Sets the number of threads; effective only before the first call (the server calls it at
    /// start-up; tests share the default).
    static func configure(threads: Int) {
        pool.withLock { p in
            guard p == nil else { return }
            let made = NIOThreadPool(numberOfThreads: threads)
            made.start()
            p = made
        }
    }

    static var shared: NIOThreadPool {
        if let p = pool.withLock({ $0 }) { return p }
        configure(threads: 64)
        return pool.withLock { $0! }
    }
}

func offload<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
    try await BlockingPool.shared.runIfActive(body)
}

/// Offloads cleanup that must run even when the caller is failing (errors are dropped: the
/// caller is already reporting one).
func offloadDetached(_ body: @escaping @Sendable () -> Void) async {
    _ = try? await offload(body)
}
