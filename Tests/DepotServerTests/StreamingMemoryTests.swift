import DepotCore
import DepotTestSupport
import Dispatch
import Foundation
import Hummingbird
import NIOCore
import NIOPosix
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// What a blob GET holds in memory. A rollout's nodes pull at once, so whatever one GET holds is
/// multiplied by their number: it must stay a few read batches, however busy the server is.
@Suite struct StreamingMemoryTests {
    /// Hummingbird's body writer returns once a batch is queued for the connection's event loop;
    /// only when the loop has written it does the writer learn that the socket is full. While a
    /// loop is busy with other connections, a GET that does not wait for it reads batch after
    /// batch into that queue: 64 slow pulls once held 28 MB each. Here the loops stop outright
    /// (blocked on a semaphore) while a client reads a large blob: a GET that waits for its loop
    /// after each batch reads a few batches more, one that does not reads the rest of the blob
    /// into memory. Measured with the store's read counter, which only this server's GET moves
    /// (the heap is shared with every test running beside this one).
    @Test func aBlobGetReadsAFewBatchesAheadWhileItsEventLoopIsBusy() async throws {
        // The server runs on loops of its own, so stopping them stops no other test's server.
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 2)
        do {
            try await readWhileTheLoopsStop(group)
        } catch {
            try? await group.shutdownGracefully()
            throw error
        }
        try await group.shutdownGracefully()
    }

    private func readWhileTheLoopsStop(_ group: MultiThreadedEventLoopGroup) async throws {
        try await withRegistry(eventLoopGroup: .shared(group)) { _, registry, port in
            // Pushed on a raw connection: HummingbirdTesting's client gives a request 20 s, which
            // 64 MiB can take in a debug build while the whole suite runs on PostgreSQL.
            let size = 64 << 20
            let blob = randomBytes(size, seed: 41)
            let digest = Digest.of(blob)
            let push = try RawConnection(port: port, receiveTimeout: 600)
            await blocking {
                push.send("POST /v2/mem/blob/blobs/uploads/?digest=\(digest) HTTP/1.1\r\nHost: x\r\nContent-Length: \(size)\r\n\r\n")
                push.send(blob)
            }
            #expect(await push.readResponse()?.status == 201)
            let conn = try RawConnection(port: port, receiveTimeout: 30)
            conn.send("GET /v2/mem/blob/blobs/\(digest) HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            // Once 4 MiB have arrived, the client's own thread stops every event loop (blocked on
            // a semaphore), so the loops stop while most of the body is still to come, however
            // slow the machine. It reads on as fast as it can, counting what arrives: the socket
            // drains, and a GET that does not wait for its loop sees a writable channel.
            let loops = Array(group.makeIterator())
            let release = DispatchSemaphore(value: 0)
            let released = Locked(false)
            let stopped = Locked(0)
            @Sendable func restart() {
                guard
                    !released.withLock({ r in
                        defer { r = true }
                        return r
                    })
                else { return }
                for _ in loops { release.signal() }
            }
            // Whatever happens below, the loops run again (the server's shutdown needs them).
            defer { restart() }
            let arrived = Locked(0)
            let reading = Task {
                await blocking {
                    var buffer = [UInt8](repeating: 0, count: 1 << 16)
                    var stopping = true
                    while true {
                        let n = buffer.withUnsafeMutableBytes { recv(conn.fd, $0.baseAddress, $0.count, 0) }
                        if n <= 0 { return n == 0 }
                        if arrived.withLock({
                            $0 += n
                            return $0
                        }) >= 4 << 20 && stopping {
                            stopping = false
                            for loop in loops {
                                loop.execute {
                                    stopped.withLock { $0 += 1 }
                                    release.wait()
                                }
                            }
                        }
                    }
                }
            }
            // While the loops are stopped, the GET may read `limit` bytes more, no further (a GET
            // reading ahead without bound fails early).
            let limit: Int64 = 8 << 20
            let stopping = ContinuousClock.now + .seconds(30)
            while stopped.withLock({ $0 }) < loops.count && ContinuousClock.now < stopping {
                try await Task.sleep(for: .milliseconds(1))
            }
            #expect(stopped.withLock { $0 } == loops.count, "the event loops did not stop")
            let base = registry.store.readBytes
            #expect(base < Int64(size) - 2 * limit, "the GET was nearly done before the loops stopped: the test tells nothing")
            let deadline = ContinuousClock.now + .milliseconds(1500)
            var ahead: Int64 = 0
            while ContinuousClock.now < deadline && ahead <= limit {
                try await Task.sleep(for: .milliseconds(10))
                ahead = registry.store.readBytes - base
            }
            restart()
            print("blob GET while its event loops stop: read \(ahead >> 10) KiB ahead")
            let closed = await reading.value
            let received = arrived.withLock { $0 }
            #expect(closed && received > size, "the blob arrived whole (\(received) bytes)")
            #expect(ahead <= limit, "the GET read \(ahead >> 20) MiB ahead while its event loop was stopped (a few 1 MiB batches expected)")
        }
    }
}
