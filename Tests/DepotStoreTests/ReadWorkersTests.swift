import DepotCore
import DepotTestSupport
import Dispatch
import Foundation
import Testing

@testable import DepotStore

@Suite struct ReadWorkersTests {
    /// A store whose read pool has `readThreads` threads, holding one 3 MiB blob.
    private func storeWithABlob(in dir: TempDir, readThreads: Int, seed: UInt64) throws -> (ChunkStore, [UInt8], Digest) {
        var options = StoreOptions()
        options.readThreads = readThreads
        let store = try ChunkStore(root: dir.path, options: options, create: true)
        let data = randomBytes(3 << 20, seed: seed)
        return (store, data, try store.write(data).digest)
    }

    /// A rollout's nodes pull at once: every reader gets its bytes, in order, while the threads
    /// preparing their batches stay within the store's bound (each reader used to get a thread).
    @Test func manyReadersShareABoundedPoolAndGetTheirBytes() async throws {
        let dir = TempDir()
        let (store, data, digest) = try storeWithABlob(in: dir, readThreads: 3, seed: 41)
        let expected = data.withUnsafeBytes { SHA256.hash($0) }
        let results = try await withThrowingTaskGroup(of: SHA256.Value.self) { group in
            for i in 0..<32 {
                group.addTask {
                    let reader = try store.reader(digest, as: [UInt8].self)
                    reader.batchBytes = (64 << 10) + i * 1024
                    var hasher = SHA256()
                    while let batch = try await reader.nextAsync() { batch.withUnsafeBytes { hasher.update($0) } }
                    return hasher.finalize()
                }
            }
            return try await group.reduce(into: []) { $0.append($1) }
        }
        #expect(results.count == 32)
        #expect(results.allSatisfy { $0 == expected })
        let threads = store.readWorkers.threadCounts
        #expect(threads.peak >= 1, "the readers did not use the store's read pool")
        #expect(threads.peak <= 3, "\(threads.peak) read threads ran at once, 3 allowed")
    }

    /// Jobs past the bound wait and run in the order they came; none is lost.
    @Test func jobsPastTheLimitRunInOrder() {
        let pool = ReadWorkers(limit: 1)
        let order = Locked<[Int]>([])
        let done = DispatchGroup()
        for i in 0..<200 {
            done.enter()
            pool.submit {
                order.withLock { $0.append(i) }
                done.leave()
            }
        }
        #expect(done.wait(timeout: .now() + 10) == .success)
        #expect(order.withLock { $0 } == Array(0..<200))
        #expect(pool.threadCounts.peak == 1)
    }

    /// A job that waits starts another thread (up to the bound), so one slow batch (a cold
    /// disk, an object store) does not hold up the others; idle threads end.
    @Test func aWaitingJobDoesNotHoldUpOthersAndIdleThreadsEnd() {
        let pool = ReadWorkers(limit: 4, idleTimeout: 0.1)
        let started = DispatchSemaphore(value: 0)
        let release = DispatchSemaphore(value: 0)
        let done = DispatchGroup()
        for _ in 0..<4 {
            done.enter()
            pool.submit {
                started.signal()
                release.wait()
                done.leave()
            }
        }
        // All four run at once: each waits for the release, which comes only after all started.
        for _ in 0..<4 { #expect(started.wait(timeout: .now() + 10) == .success) }
        #expect(pool.threadCounts.now == 4)
        for _ in 0..<4 { release.signal() }
        #expect(done.wait(timeout: .now() + 10) == .success)
        let deadline = Date(timeIntervalSinceNow: 10)
        while pool.threadCounts.now > 0 && Date() < deadline { Thread.sleep(forTimeInterval: 0.02) }
        #expect(pool.threadCounts.now == 0, "idle read threads did not end")
        // And the pool starts threads again afterwards.
        done.enter()
        pool.submit { done.leave() }
        #expect(done.wait(timeout: .now() + 10) == .success)
    }

    /// A job of the pool that reads a blob loads its batches itself: queued behind the job, on
    /// a pool of one thread, they would wait forever.
    @Test func aReadInsideAPoolJobDoesNotQueueBehindItself() throws {
        let dir = TempDir()
        let (store, data, digest) = try storeWithABlob(in: dir, readThreads: 1, seed: 43)
        let got = Locked<[UInt8]?>(nil)
        let done = DispatchSemaphore(value: 0)
        store.readWorkers.submit {
            let bytes = try? store.readAll(digest)
            got.withLock { $0 = bytes }
            done.signal()
        }
        #expect(done.wait(timeout: .now() + 10) == .success, "a read inside a pool job waited behind that job")
        let same = got.withLock { $0 == data }
        #expect(same, "the read inside the job did not return the blob's bytes")
    }

    /// When the system will not make a thread (a container's pids limit), queued reads still
    /// run: on libdispatch's pool when the read pool has no thread at all.
    @Test func jobsStillRunWhenNoThreadCanBeStarted() {
        let starts = Locked(0)
        let pool = ReadWorkers(limit: 4) { _ in
            starts.withLock { $0 += 1 }
            return false
        }
        let done = DispatchGroup()
        let ran = Locked(0)
        for _ in 0..<20 {
            done.enter()
            pool.submit {
                ran.withLock { $0 += 1 }
                done.leave()
            }
        }
        #expect(done.wait(timeout: .now() + 10) == .success, "queued jobs waited for a thread that was never made")
        #expect(ran.withLock { $0 } == 20)
        #expect(starts.withLock { $0 } >= 1)
        let deadline = Date(timeIntervalSinceNow: 10)
        while pool.threadCounts.now > 0 && Date() < deadline { Thread.sleep(forTimeInterval: 0.01) }
        #expect(pool.threadCounts.now == 0)
    }
}
