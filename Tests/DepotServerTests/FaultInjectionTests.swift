import DepotCatalog
import DepotCore
import DepotRegistry
import DepotServer
import DepotStore
import DepotTestSupport
import Foundation
import HummingbirdTesting
import Logging
import Testing

/// Issue #12 item 7 through HTTP: a failing fdatasync, a full disk, a pack read failing with EIO
/// and a locked catalog each give the client an OCI error response (not a dropped connection),
/// the server stays up, nothing acknowledged is lost, and `depot fsck` is clean afterwards.
@Suite struct FaultInjectionTests {
    /// A live server on a fresh store; `body` gets the client and the store.
    func withServer(
        _ options: StoreOptions = StoreOptions(),
        _ body: @Sendable (any TestClientProtocol, ChunkStore) async throws -> Void
    ) async throws {
        let dir = TempDir("depot-faults")
        let store = try ChunkStore(root: dir.path, options: options, create: true)
        let registry = Registry(store: store, uploadTimeout: 3600)
        var config = ServerConfig.forTests()
        config.listenPort = 0
        var logger = Logger(label: "test")
        logger.logLevel = .critical
        let app = DepotService.makeApplication(registry: registry, config: config, logger: logger)
        defer { FaultInjection.disarmAll(pathContains: dir.path) }
        try await app.test(.live) { client in try await body(client, store) }
        withExtendedLifetime(dir) {}
    }

    @Test func anUploadWhoseFdatasyncFailsGetsA5xxAndTheRetrySucceeds() async throws {
        try await withServer { c, store in
            let first = randomBytes(300_000, seed: 1)
            let d1 = try await c.pushBlob("m/a", first) // opens the pack: the fault below hits a commit
            let data = randomBytes(700_000, seed: 2)
            let d = Digest.of(data)
            let fault = FaultInjection.arm(.fdatasync, errno: EIO, pathContains: store.root + "/packs/")
            let r = try await c.req(.post, "/v2/m/a/blobs/uploads/?digest=\(d)", body: data)
            #expect(r.status.code == 500, "\(r.status) \(r.text)")
            #expect(r.errorCode == "UNAVAILABLE")
            #expect(r.text.contains("fsync"), "\(r.text)")
            #expect(try await c.req(.head, "/v2/m/a/blobs/\(d)").status.code == 404, "nothing was acknowledged")
            FaultInjection.disarm(fault)
            #expect(try await c.req(.post, "/v2/m/a/blobs/uploads/?digest=\(d)", body: data).status.code == 201)
            #expect(try await c.req(.get, "/v2/m/a/blobs/\(d)").bytes == data)
            #expect(try await c.req(.get, "/v2/m/a/blobs/\(d1)").bytes == first)
            #expect(try store.fsck().isClean)
        }
    }

    @Test func aFullDiskDuringAPushGets507AndNothingHalfAcknowledged() async throws {
        try await withServer { c, store in
            let first = randomBytes(300_000, seed: 3)
            let d1 = try await c.pushBlob("m/b", first)
            let data = randomBytes(600_000, seed: 4)
            let d = Digest.of(data)
            let fault = FaultInjection.arm(.write, errno: ENOSPC, pathContains: store.root + "/packs/")
            let r = try await c.req(.post, "/v2/m/b/blobs/uploads/?digest=\(d)", body: data)
            #expect(r.status.code == 507, "\(r.status) \(r.text)")
            #expect(r.errorCode == "UNAVAILABLE")
            #expect(r.text.contains("no space left on device"), "\(r.text)")
            #expect(try await c.req(.head, "/v2/m/b/blobs/\(d)").status.code == 404)
            FaultInjection.disarm(fault)
            #expect(try await c.req(.post, "/v2/m/b/blobs/uploads/?digest=\(d)", body: data).status.code == 201)
            #expect(try await c.req(.get, "/v2/m/b/blobs/\(d)").bytes == data)
            #expect(try await c.req(.get, "/v2/m/b/blobs/\(d1)").bytes == first)
            #expect(try store.fsck().isClean)
        }
    }

    @Test func aPackReadFailingWithEIOGetsAnErrorResponseAndTheServerStaysUp() async throws {
        try await withServer { c, store in
            let data = randomBytes(500_000, seed: 5)
            let d = try await c.pushBlob("m/c", data)
            let fault = FaultInjection.arm(.read, errno: EIO, pathContains: store.root + "/packs/")
            let r = try await c.req(.get, "/v2/m/c/blobs/\(d)")
            #expect(r.status.code == 500, "\(r.status)")
            #expect(r.errorCode == "UNAVAILABLE")
            #expect(r.text.contains("Input/output error"), "\(r.text)")
            #expect(try await c.req(.get, "/v2/").status.code == 200, "the server is still up")
            FaultInjection.disarm(fault)
            #expect(try await c.req(.get, "/v2/m/c/blobs/\(d)").bytes == data)
            #expect(try store.fsck().isClean)
        }
    }

    @Test(.disabled(if: Database.isTestingOnPostgres, "holds SQLite's file write lock; PostgreSQL writers do not exclude each other"))
    func aCatalogLockedByAnotherProcessGets503AndTheRetrySucceeds() async throws {
        var options = StoreOptions()
        options.catalogBusyTimeoutMilliseconds = 300
        try await withServer(options) { c, store in
            let data = randomBytes(200_000, seed: 6)
            let d = Digest.of(data)
            // Another connection (as another process would) takes the write lock and holds it until
            // the request has been answered (at most 60 s), however slow a loaded machine is.
            let other = try Database(path: store.root + "/catalog.db")
            let phase = Locked(0) // 1: holding the lock, 2: asked to let go, 3: released
            DispatchQueue(label: "test.lock-holder").async {
                try? other.write { _ in
                    phase.withLock { $0 = 1 }
                    for _ in 0..<1200 where phase.withLock({ $0 }) < 2 { Thread.sleep(forTimeInterval: 0.05) }
                }
                phase.withLock { $0 = 3 }
            }
            while phase.withLock({ $0 }) == 0 { try await Task.sleep(for: .milliseconds(10)) }
            let r = try await c.req(.post, "/v2/m/d/blobs/uploads/?digest=\(d)", body: data)
            phase.withLock { $0 = max($0, 2) }
            #expect(r.status.code == 503, "\(r.status) \(r.text)")
            #expect(r.errorCode == "UNAVAILABLE")
            #expect(r.text.contains("retry"), "\(r.text)")
            while phase.withLock({ $0 }) != 3 { try await Task.sleep(for: .milliseconds(50)) }
            #expect(try await c.req(.post, "/v2/m/d/blobs/uploads/?digest=\(d)", body: data).status.code == 201)
            #expect(try await c.req(.get, "/v2/m/d/blobs/\(d)").bytes == data)
            #expect(try store.fsck().isClean)
        }
    }
}
