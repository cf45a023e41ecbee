import DepotAPI
import DepotCatalog
import DepotCore
import DepotRegistry
import DepotStore
import DepotTestSupport
import Foundation
import Testing

/// A manifest deleted on one replica while another replica tags or pins it. Each test parks the
/// second transaction mid-way on a tag lock that a third connection holds (so the interleaving
/// that used to lose is the likely one), lets both finish, and checks what a user relies on:
/// no tag and no pin names a manifest that is gone. Concurrent write transactions on one
/// catalog: PostgreSQL only (SQLite has one writer, which serializes them whole).
@Suite(.enabled(if: Database.isTestingOnPostgres, "replicas need a PostgreSQL catalog"))
struct ReplicaRaceTests {
    let repo = try! RepositoryName("team/race")

    /// Two registries on one catalog (two replicas), and a manifest pushed through the first.
    func replicas(tag: String?) throws -> (TestRegistry, Registry, TempDir, Digest) {
        let t = try TestRegistry("race")
        let dir = TempDir("race-replica")
        var options = StoreOptions()
        options.catalog = t.registry.store.catalog.location
        let other = Registry(store: try ChunkStore(root: dir.path + "/store", options: options, create: true))
        let digest = try t.pushManifest(repo.value, tag, layers: [Array("weights \(UUID())".utf8)])
        return (t, other, dir, digest)
    }

    /// Holds the lock of `tag` in its own transaction until `release` is signalled.
    func holdTagLock(_ t: TestRegistry, _ tag: String, release: DispatchSemaphore, group: DispatchGroup) throws {
        let db = try Database(location: t.registry.store.catalog.location)
        let held = DispatchSemaphore(value: 0)
        group.enter()
        Thread.detachNewThread {
            defer { group.leave() }
            try? db.write { conn in
                let id = try conn.repositoryID("team/race")!
                try conn.lock(.tag(repository: id, name: tag))
                held.signal()
                _ = release.wait(timeout: .now() + 20)
            }
        }
        #expect(held.wait(timeout: .now() + 20) == .success)
    }

    func inBackground(_ group: DispatchGroup, _ outcome: Locked<[String]>, _ name: String, _ body: @escaping @Sendable () throws -> Void) {
        group.enter()
        Thread.detachNewThread {
            defer { group.leave() }
            let code = registryErrorCode { try body() }
            outcome.withLock { $0.append("\(name): \(code ?? "ok")") }
        }
    }

    /// No tag of the repository and no pin names a missing manifest.
    func expectNothingDangles(_ t: TestRegistry, _ outcomes: [String]) throws {
        try t.registry.store.catalog.read { conn in
            let id = try #require(try conn.repositoryID("team/race"))
            for name in try conn.tags(repo: id, after: nil, limit: 100) {
                let d = try #require(try conn.tag(repo: id, name))
                #expect(try conn.manifestExists(repo: id, d), "tag \(name) names deleted \(d); \(outcomes)")
            }
            for pin in try conn.pins() {
                #expect(try conn.manifestExists(repo: id, pin.digest), "a pin names deleted \(pin.digest); \(outcomes)")
            }
        }
    }

    /// The race: `first` starts while the lock of tag `held` is taken (it stops on it, inside its
    /// transaction), then `second`; then the lock is released. Returns each one's outcome
    /// ("name: ok" or "name: ERROR_CODE"), after checking that nothing dangles.
    func race(
        _ t: TestRegistry, holding held: String, first: (String, @Sendable () throws -> Void),
        then second: (String, @Sendable () throws -> Void)
    ) throws -> [String] {
        let release = DispatchSemaphore(value: 0)
        let group = DispatchGroup()
        let outcomes = Locked<[String]>([])
        try holdTagLock(t, held, release: release, group: group)
        inBackground(group, outcomes, first.0, first.1)
        Thread.sleep(forTimeInterval: 0.3)
        inBackground(group, outcomes, second.0, second.1)
        Thread.sleep(forTimeInterval: 0.3)
        release.signal()
        group.wait()
        let o = outcomes.withLock { $0 }
        try expectNothingDangles(t, o)
        return o
    }

    @Test func anAliasMovedWhileAnotherReplicaDeletesTheManifest() throws {
        let (t, other, dir, digest) = try replicas(tag: nil)
        defer { withExtendedLifetime(dir) {} }
        // The alias move stops on the held tag lock, inside its transaction.
        _ = try race(
            t, holding: "candidate",
            first: ("alias", { _ = try t.registry.setAlias(self.repo, "candidate", to: digest, actor: "a", reason: nil) }),
            then: ("delete", { try other.deleteManifest(self.repo, .digest(digest)) }))
    }

    @Test func aPinWhileAnotherReplicaDeletesTheManifest() throws {
        let (t, other, dir, digest) = try replicas(tag: "v1")
        defer { withExtendedLifetime(dir) {} }
        // The delete stops inside its transaction on the lock of the tag it removes with the manifest.
        let o = try race(
            t, holding: "v1",
            first: ("delete", { try other.deleteManifest(self.repo, .digest(digest)) }),
            then: ("pin", { _ = try t.registry.pin(self.repo, .digest(digest), reason: nil, actor: "a") }))
        #expect(o.contains("delete: ok") != o.contains("pin: ok"), "exactly one of them wins: \(o)")
    }

    @Test func anAliasMovedWhileAnotherReplicasGCCollectsTheManifest() throws {
        let (t, other, dir, digest) = try replicas(tag: nil)
        defer { withExtendedLifetime(dir) {} }
        // Untagged and (with no grace) old: garbage, unless the alias commits first.
        let later = Int64(Date().timeIntervalSince1970 * 1000) + 60_000
        let o = try race(
            t, holding: "candidate",
            first: ("alias", { _ = try t.registry.setAlias(self.repo, "candidate", to: digest, actor: "a", reason: nil) }),
            then: ("gc", { _ = try other.collectGarbage(untaggedGraceSeconds: 0, now: later) }))
        // Either order is correct: the alias first (GC then keeps the manifest), or, if the alias
        // thread was not yet scheduled, GC first (the alias then finds no manifest).
        #expect(o.contains("gc: ok") && (o.contains("alias: ok") || o.contains("alias: MANIFEST_UNKNOWN")), "\(o)")
    }
}
