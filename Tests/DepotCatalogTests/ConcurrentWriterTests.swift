import DepotAPI
import DepotCore
import Foundation
import Testing

@testable import DepotCatalog

/// Writers on several "replicas" at once: separate `Database` instances (separate connection
/// pools) on one catalog, each driven by several threads. On PostgreSQL these are concurrent
/// transactions, as on replicas sharing one database; on SQLite they are writers of two processes
/// waiting on the file lock. Either way, what the catalog promises must hold exactly.
func digestOf(_ text: String) -> Digest {
    Digest(bytes: Array(text.utf8).withUnsafeBytes { SHA256.hash($0) })
}

@Suite struct ConcurrentWriterTests {
    static let replicas = 2
    static let threadsPerReplica = 4

    /// Opens `replicas` catalogs on one location and runs `body(replica, thread)` on every thread.
    func onReplicas(_ body: @escaping @Sendable (Database, Int, Int) throws -> Void) throws -> Database {
        let (first, dir) = try makeCatalog()
        var dbs = [first]
        for _ in 1..<Self.replicas { dbs.append(try Database(location: first.location)) }
        let errors = Locked<[String]>([])
        let group = DispatchGroup()
        for (r, db) in dbs.enumerated() {
            for t in 0..<Self.threadsPerReplica {
                group.enter()
                Thread.detachNewThread {
                    defer { group.leave() }
                    do { try body(db, r, t) } catch { errors.withLock { $0.append("\(error)") } }
                }
            }
        }
        group.wait()
        try? FileManager.default.removeItem(atPath: dir)
        #expect(errors.withLock { $0 }.isEmpty, "\(errors.withLock { $0 }.prefix(3))")
        return first
    }

    @Test func theAuditChainStaysUnbrokenUnderConcurrentAppenders() throws {
        let perThread = 25
        let db = try onReplicas { db, r, t in
            for i in 0..<perThread {
                try db.write { conn in
                    try conn.appendAudit(
                        at: Int64(i), actor: "replica-\(r)", action: "test", repository: "team/m", digest: nil, tag: "t\(t)",
                        details: ["i": JSONValue(i)])
                }
            }
        }
        let result = try db.read { try $0.verifyAudit() }
        #expect(result.intact, "\(result.problem ?? "")")
        #expect(result.entries == Self.replicas * Self.threadsPerReplica * perThread)
    }

    @Test func eventIdsAreContiguousAndNeverRepeated() throws {
        let perThread = 25
        let db = try onReplicas { db, r, _ in
            for i in 0..<perThread {
                try db.write { conn in
                    _ = try conn.appendEvent(type: "test", at: Int64(i), repository: "team/m", fields: ["replica": JSONValue(r)])
                }
            }
        }
        let ids = try db.read { try $0.events(after: 0, limit: 10_000) }.map(\.id)
        let total = Self.replicas * Self.threadsPerReplica * perThread
        #expect(ids == (1...Int64(total)).map { $0 })
    }

    /// Transactions appending an audit entry then an event, and others the reverse (a push by tag
    /// and a push by digest do): on PostgreSQL, without one lock order they deadlock and one fails.
    @Test func appendsInEitherOrderNeverDeadlock() throws {
        let perThread = 20
        let db = try onReplicas { db, r, t in
            for i in 0..<perThread {
                try db.write { conn in
                    if (t + i) % 2 == 0 {
                        try conn.appendAudit(at: 1, actor: "r\(r)", action: "a", repository: nil, digest: nil, tag: nil, details: nil)
                        _ = try conn.appendEvent(type: "e", at: 1, repository: nil, fields: [:])
                    } else {
                        _ = try conn.appendEvent(type: "e", at: 1, repository: nil, fields: [:])
                        try conn.appendAudit(at: 1, actor: "r\(r)", action: "a", repository: nil, digest: nil, tag: nil, details: nil)
                    }
                }
            }
        }
        #expect(try db.read { try $0.verifyAudit() }.intact)
    }

    /// Every thread moves one tag repeatedly; the journal must be one chain: each move starts
    /// where the previous one ended (no two writers read the same "from").
    @Test func everyTagMoveIsJournaledFromTheDigestItReplaced() throws {
        let perThread = 15
        let db = try onReplicas { db, r, t in
            for i in 0..<perThread {
                try db.write { conn in
                    let repo = try conn.ensureRepository("team/m", now: 1)
                    let digest = digestOf("\(r)-\(t)-\(i)")
                    try conn.setTag(repo: repo, "production", to: digest, actor: "r\(r)", reason: nil, now: Int64(i))
                }
            }
        }
        let moves = try db.read { conn in try conn.tagHistory(repo: try #require(try conn.repositoryID("team/m")), "production") }
        #expect(moves.count == Self.replicas * Self.threadsPerReplica * perThread)
        #expect(moves.first?.from == nil)
        let broken = zip(moves, moves.dropFirst()).filter { $0.1.from != $0.0.to }.map(\.1.id)
        #expect(broken.isEmpty, "moves that do not start where the previous one ended: \(broken.prefix(5))")
    }

    /// Compare-and-swap: every thread tries to move the alias from the digest it last saw; of
    /// the threads that saw one digest, exactly one wins.
    @Test func aCompareAndSwapHasExactlyOneWinnerPerDigest() throws {
        let seed = digestOf("seed")
        let (setup, dir) = try makeCatalog()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try setup.write { conn in
            let repo = try conn.ensureRepository("team/m", now: 1)
            try conn.setTag(repo: repo, "production", to: seed, actor: "setup", reason: nil, now: 1)
        }
        let wins = Locked(0)
        let group = DispatchGroup()
        let dbs = try (0..<Self.replicas).map { _ in try Database(location: setup.location) }
        for (r, db) in dbs.enumerated() {
            for t in 0..<Self.threadsPerReplica {
                group.enter()
                Thread.detachNewThread {
                    defer { group.leave() }
                    let mine = digestOf("\(r)-\(t)")
                    // What Registry.checkTagMove does: lock the tag, compare, move.
                    let won = try? db.write { conn -> Bool in
                        let repo = try conn.ensureRepository("team/m", now: 1)
                        try conn.lock(.tag(repository: repo, name: "production"))
                        guard try conn.tag(repo: repo, "production") == seed else { return false }
                        try conn.setTag(repo: repo, "production", to: mine, actor: "r\(r)", reason: nil, now: 2)
                        return true
                    }
                    if won == true { wins.withLock { $0 += 1 } }
                }
            }
        }
        group.wait()
        #expect(wins.withLock { $0 } == 1)
    }

    /// Runners on every replica lease at once: each job is leased exactly once.
    @Test func eachQueuedJobIsLeasedByExactlyOneRunner() throws {
        let jobs = 40
        let (setup, dir) = try makeCatalog()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try setup.write { conn in
            for j in 0..<jobs {
                let run = try #require(
                    try conn.createPipelineRun(
                        pipeline: "p", repository: "team/m", digest: "sha256:" + String(format: "%064x", j), tag: nil, eventID: nil, now: 1)
                )
                _ = try conn.enqueueJob(runID: run, pipeline: "p", newJob(), now: 1)
            }
        }
        let leased = Locked<[Int64]>([])
        let group = DispatchGroup()
        let dbs = try (0..<Self.replicas).map { _ in try Database(location: setup.location) }
        for (r, db) in dbs.enumerated() {
            for t in 0..<Self.threadsPerReplica {
                group.enter()
                Thread.detachNewThread {
                    defer { group.leave() }
                    while true {
                        let got = try? db.write { conn -> Int64? in
                            for job in try conn.leasableJobs(kinds: ["exec"], now: 10, limit: 8)
                            where try conn.claimQueuedJob(job.id, now: 10)
                                && conn.leaseJob(job.id, runner: "r\(r)-\(t)", token: UUID().uuidString, expires: 1000, now: 10)
                            {
                                return job.id
                            }
                            return nil
                        }
                        guard let id = got else { return }
                        leased.withLock { $0.append(id) }
                    }
                }
            }
        }
        group.wait()
        let ids = leased.withLock { $0 }
        #expect(ids.count == jobs)
        #expect(Set(ids).count == jobs)
    }

    /// While one replica's runner holds the job it is leasing (its transaction still open), a
    /// runner on another replica leases the next job at once: the first one locked only the row
    /// it chose, not the page of candidates it chose from (which left a short queue looking empty
    /// to every other replica). Two transactions at once on one catalog: PostgreSQL only.
    @Test(.enabled(if: Database.isTestingOnPostgres, "concurrent write transactions need PostgreSQL"))
    func aRunnerLeasingOneJobLeavesTheOthersToOtherReplicas() throws {
        let (setup, dir) = try makeCatalog()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try setup.write { conn in
            for j in 0..<2 {
                let run = try #require(
                    try conn.createPipelineRun(
                        pipeline: "p", repository: "team/m", digest: "sha256:" + String(format: "%064x", j), tag: nil, eventID: nil, now: 1)
                )
                _ = try conn.enqueueJob(runID: run, pipeline: "p", newJob(), now: 1)
            }
        }
        let first = try Database(location: setup.location)
        let second = try Database(location: setup.location)
        let holding = DispatchSemaphore(value: 0)
        let release = DispatchSemaphore(value: 0)
        let firstLeased = Locked<Int64?>(nil)
        let done = DispatchGroup()
        done.enter()
        Thread.detachNewThread {
            defer { done.leave() }
            let id = try? first.write { conn -> Int64? in
                for job in try conn.leasableJobs(kinds: ["exec"], now: 10, limit: 256) where try conn.claimQueuedJob(job.id, now: 10) {
                    _ = try conn.leaseJob(job.id, runner: "a", token: UUID().uuidString, expires: 1000, now: 10)
                    holding.signal()
                    _ = release.wait(timeout: .now() + 20)
                    return job.id
                }
                holding.signal()
                return nil
            }
            firstLeased.withLock { $0 = id ?? nil }
        }
        #expect(holding.wait(timeout: .now() + 20) == .success)
        let secondLeased = try second.write { conn -> Int64? in
            for job in try conn.leasableJobs(kinds: ["exec"], now: 10, limit: 256) where try conn.claimQueuedJob(job.id, now: 10) {
                if try conn.leaseJob(job.id, runner: "b", token: UUID().uuidString, expires: 1000, now: 10) { return job.id }
            }
            return nil
        }
        release.signal()
        done.wait()
        let a = try #require(firstLeased.withLock { $0 })
        let b = try #require(secondLeased, "the second replica found nothing to lease while the first held one job")
        #expect(a != b)
    }

    /// A manifest pushed on one replica over a blob that nothing referenced yet, while another
    /// replica's GC sweeps stale unreferenced blobs: the push's transaction touches the blob's row
    /// (what `Registry.putManifest` does), so the sweep, which listed the blob before the push
    /// committed, waits for that row and then finds it fresh. Before, it deleted the blob under
    /// the new manifest. Two transactions at once on one catalog: PostgreSQL only.
    @Test(.enabled(if: Database.isTestingOnPostgres, "concurrent write transactions need PostgreSQL"))
    func aBlobAManifestIsBeingPushedOverIsNotSweptMeanwhile() throws {
        let (setup, dir) = try makeCatalog()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let layer = digestOf("layer")
        let (blob, repo) = try setup.write { conn -> (Int64, Int64) in
            let id = try conn.beginBlob(chunker: "test", now: 1)
            _ = try conn.completeBlob(id, digest: layer, size: 5, now: 1) // stale: written long ago
            return (id, try conn.ensureRepository("team/m", now: 1))
        }
        let pusher = try Database(location: setup.location)
        let collector = try Database(location: setup.location)
        let touched = DispatchSemaphore(value: 0)
        let done = DispatchGroup()
        done.enter()
        Thread.detachNewThread {
            defer { done.leave() }
            try? pusher.write { conn in
                #expect(try conn.touchCompleteBlob(blob, now: 1_000_000))
                touched.signal()
                Thread.sleep(forTimeInterval: 0.5) // the sweep lists the blob and waits on its row
                let manifest = ManifestRecord(
                    digest: digestOf("manifest"), mediaType: "application/vnd.oci.image.manifest.v1+json", artifactType: nil,
                    subject: nil, annotationsJSON: nil, content: Array("{}".utf8))
                try conn.putManifest(repo: repo, manifest, blobs: [layer], children: [], now: 1_000_000)
            }
        }
        #expect(touched.wait(timeout: .now() + 20) == .success)
        let swept = try collector.write { try $0.deleteGarbageBlobs(staleBefore: 500_000, active: []) }
        done.wait()
        #expect(swept == 0)
        #expect(try setup.read { try $0.blob(layer) } != nil, "the pushed manifest's blob was swept")
    }
}
