import Dispatch
import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// The threads that prepare `BlobReader` batches (read, decode, verify) for every reader of a
/// store: a batch is one job, and at most `limit` run at once whatever the number of readers.
///
/// Why not a dispatch queue per reader: each reader's serial queue is an over-committing queue,
/// so every reader with a batch in flight got a thread of its own. A rollout's nodes pulling
/// at once (64 GETs) held ~130 threads, and a thousand would hold as many as libdispatch allows.
/// Here the count is bounded, and readers past it wait their turn in FIFO order. A batch takes
/// about a millisecond of work on a warm store, so a few threads keep up with many sockets.
///
/// Threads start when a job waits and none is idle, and end after `idleTimeout` without work,
/// so a store idle for that long (and each of a test suite's many stores) holds none.
///
/// Invariant: a job never waits for another job of the same pool (it could be queued behind
/// itself). `BlobReader.loadBatch` reads the catalog and pack files and decodes in parallel on
/// the global queue; nothing in it waits on a reader. Should a job ever read a blob with a
/// `BlobReader`, that reader loads its batches on the calling thread (`onWorkerThread`)
/// instead of queueing them behind the job.
///
/// One queue for all of a store's reads: in S3 mode a batch can wait on the network for as
/// long as the object store's timeouts allow, and `limit` such batches hold up the reads
/// queued behind them (records already cached included) until one ends.
final class ReadWorkers: @unchecked Sendable {
    typealias Job = @Sendable () -> Void

    let limit: Int
    let idleTimeout: TimeInterval
    let name: String
    // Everything below is guarded by `condition`'s lock.
    private let condition = NSCondition()
    private var queue: [Job?] = []
    private var head = 0
    private var threads = 0
    private var idle = 0
    private var peak = 0

    /// Starts a thread running the pool; `startThread` but in tests that make it fail.
    let threadStarter: @Sendable (ReadWorkers) -> Bool

    init(
        limit: Int, idleTimeout: TimeInterval = 30, name: String = "depot.read",
        threadStarter: @escaping @Sendable (ReadWorkers) -> Bool = ReadWorkers.startThread
    ) {
        precondition(limit > 0, "a read pool needs at least one thread")
        self.limit = limit
        self.idleTimeout = idleTimeout
        self.name = name
        self.threadStarter = threadStarter
        resumeQueue = DispatchQueue(label: name + ".resume")
    }

    /// The default bound: a few threads per core for local packs (a batch is mostly memory
    /// work, disk reads of a cold store overlap across the batch's parallel chunk reads), more
    /// for packs in an object store, where a batch waits tens of milliseconds for the network.
    static func defaultLimit(objectStore: Bool) -> Int {
        objectStore ? 64 : min(64, max(8, 4 * ProcessInfo.processInfo.activeProcessorCount))
    }

    /// Where readers resume async callers once a batch is ready: a serial queue of the pool's
    /// own, which only resumes continuations, so a global pool whose workers are all blocked
    /// (reads, `concurrentPerform`) cannot delay it.
    let resumeQueue: DispatchQueue

    private static let marker = "depot.read-worker"

    /// Whether the calling thread is one of a read pool's.
    static var onWorkerThread: Bool { Thread.current.threadDictionary[marker] != nil }

    /// Queues `job`; it runs on one of the pool's threads, after the jobs queued before it.
    func submit(_ job: @escaping Job) {
        condition.lock()
        queue.append(job)
        let waiting = queue.count - head
        let start = waiting > idle && threads < limit
        if start {
            threads += 1
            peak = max(peak, threads)
        }
        condition.signal()
        condition.unlock()
        if start && !threadStarter(self) {
            // No thread could be made (a container's pids limit, memory): undo the count. With
            // no thread of the pool left to run the queue, libdispatch's pool drains it, rather
            // than leave readers waiting for ever; with some left, they take the job in turn.
            condition.lock()
            threads -= 1
            let stranded = threads == 0
            if stranded { threads += 1 }
            condition.unlock()
            if stranded { DispatchQueue.global().async { [self] in drain() } }
        }
    }

    /// Threads running now, and the most that ever ran at once (tests, `/metrics` one day).
    var threadCounts: (now: Int, peak: Int) {
        condition.lock()
        defer { condition.unlock() }
        return (threads, peak)
    }

    /// Starts a thread running `work()`; false when the system would not make one.
    /// (Foundation's `Thread.start()` does not report a failed `pthread_create`.)
    static func startThread(_ pool: ReadWorkers) -> Bool {
        let context = Unmanaged.passRetained(pool).toOpaque()
        var attributes = pthread_attr_t()
        pthread_attr_init(&attributes)
        defer { pthread_attr_destroy(&attributes) }
        pthread_attr_setdetachstate(&attributes, Int32(PTHREAD_CREATE_DETACHED))
        var thread = pthread_t()
        let created = pthread_create(
            &thread, &attributes,
            { context in
                let pool = Unmanaged<ReadWorkers>.fromOpaque(context!).takeRetainedValue()
                Thread.current.name = pool.name
                pool.work()
                return nil
            }, context)
        if created != 0 {
            Unmanaged<ReadWorkers>.fromOpaque(context).release()
            return false
        }
        return true
    }

    /// Runs what is queued on the calling (libdispatch) thread until the queue is empty, for
    /// when no thread of the pool could be started. Counted as one of the pool's threads.
    private func drain() {
        Thread.current.threadDictionary[Self.marker] = true
        defer { Thread.current.threadDictionary[Self.marker] = nil }
        condition.lock()
        while let job = takeJob() {
            condition.unlock()
            job()
            condition.lock()
        }
        threads -= 1
        condition.unlock()
    }

    /// The next queued job, if any; called with the lock held.
    private func takeJob() -> Job? {
        guard head < queue.count else { return nil }
        let job = queue[head]
        queue[head] = nil
        head += 1
        // Drop the consumed prefix once it is most of the array: O(1) amortized per job.
        if head >= 64 && head * 2 >= queue.count {
            queue.removeFirst(head)
            head = 0
        }
        return job
    }

    private func work() {
        Thread.current.threadDictionary[Self.marker] = true
        condition.lock()
        while true {
            if let job = takeJob() {
                condition.unlock()
                job()
                condition.lock()
                continue
            }
            idle += 1
            let signalled = condition.wait(until: Date(timeIntervalSinceNow: idleTimeout))
            idle -= 1
            if !signalled && head == queue.count {
                threads -= 1
                condition.unlock()
                return
            }
        }
    }
}
