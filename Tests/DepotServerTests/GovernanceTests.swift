import DepotAPI
import DepotCatalog
import DepotCore
import DepotRegistry
import DepotStore
import DepotTestSupport
import Foundation
import HTTPTypes
import HummingbirdTesting
import Testing

@testable import DepotClient

/// A family of three checkpoints, each fine-tuned from the previous one, pushed with the client.
/// v1..v3 share tensors 0-3; each version has 2 tensors of its own.
func pushFamily(_ port: Int, _ dir: String, repo: String = "team/llm") async throws -> [Digest] {
    var digests: [Digest] = []
    for v in 1...3 {
        try makeCheckpoint(dir + "/v\(v).safetensors", tensors: 6, tensorBytes: 256 << 10, changed: v == 1 ? [] : [4, 5], seed: 1)
        // Make each version's changed tensors distinct from the others'.
        if v > 1 {
            var bytes = try [UInt8](Data(contentsOf: URL(fileURLWithPath: dir + "/v\(v).safetensors")))
            let tail = fastRandom(2 * (256 << 10), seed: UInt64(100 + v))
            bytes.replaceSubrange((bytes.count - tail.count)..., with: tail)
            try Data(bytes).write(to: URL(fileURLWithPath: dir + "/v\(v).safetensors"))
        }
        let c = try RegistryConnection(url: "http://127.0.0.1:\(port)", token: nil)
        var r = PushRequest(repository: repo, tag: "v\(v)", paths: [dir + "/v\(v).safetensors"])
        if let parent = digests.last {
            r.annotations[Annotation.Lineage.from] = "\(repo)@\(parent)"
            r.annotations[Annotation.Lineage.relation] = "fine-tuned-from"
            r.annotations[Annotation.Lineage.run] = "run-\(v)"
        }
        let s = try await Pusher(connection: c, progress: quietProgress(c, "push")).push(r)
        await c.shutdown()
        digests.append(try Digest(parsing: s.digest))
    }
    return digests
}

/// The layer (file) digest of a manifest.
func layerDigest(_ registry: Registry, _ repo: String, _ digest: Digest) throws -> Digest {
    let m = try registry.manifest(try RepositoryName(repo), .digest(digest))
    let json = try JSONSerialization.jsonObject(with: Data(m.content)) as? [String: Any]
    let layer = (json?["layers"] as? [[String: Any]])?.first?["digest"] as? String
    return try Digest(parsing: layer ?? "")
}

@Suite("Lineage, aliases, pins, audit")
struct GovernanceTests {
    @Test func pinnedAndAliasedVersionsSurviveGCAndRollbackWorks() async throws {
        let dir = TempDir("depot-gov")
        try await withRegistry { client, registry, port in
            let repo = try RepositoryName("team/llm")
            let (v1, v2, v3) = try await { () async throws -> (Digest, Digest, Digest) in
                let d = try await pushFamily(port, dir.path)
                return (d[0], d[1], d[2])
            }()
            try registry.pin(repo, .digest(v1), reason: "golden", actor: "alice")
            for v in [v1, v2, v3] { try registry.setAlias(repo, "production", to: v, actor: "alice", reason: "promote") }
            // v2's own chunks: those of its file that v1 and v3 do not have.
            let files = try [v1, v2, v3].map { try layerDigest(registry, "team/llm", $0) }
            let recipes = try files.map { f -> Set<SHA256.Value> in
                let blob = try #require(try registry.store.blob(f))
                return Set(try registry.store.recipe(of: blob, from: 0, limit: 100_000).map(\.hash))
            }
            let onlyV2 = recipes[1].subtracting(recipes[0]).subtracting(recipes[2])
            #expect(!onlyV2.isEmpty)

            let deleted = try await client.req(.delete, "/v2/team/llm/manifests/v2")
            #expect(deleted.status.code == 202)
            let report = try registry.collectGarbage(
                untaggedGraceSeconds: 0, now: Int64(Date().timeIntervalSince1970 * 1000) + (3 * 86400) * 1000)
            #expect(report.manifestsDeleted == 1)
            #expect(try registry.store.missingChunks(Array(onlyV2)).count == onlyV2.count, "v2's own chunks are gone")

            for (v, path) in [(v1, "v1"), (v3, "v3")] {
                let out = try await pull(
                    port, "team/llm", v.description, into: dir.path + "/out-\(path)", cache: dir.path + "/cache-\(path)")
                #expect(out.files == 1)
                #expect(sameFile(dir.path + "/out-\(path)/\(path).safetensors", dir.path + "/\(path).safetensors"))
            }
            let fsck = try registry.store.fsck()
            #expect(fsck.isClean)

            // production is at v3; one step back is v2, which was collected: a clear error, no change.
            #expect(throws: RegistryError.self) { try registry.rollback(repo, "production", actor: "bob", reason: nil) }
            #expect(try registry.manifest(repo, .tag("production")).digest == v3)
            let r = try registry.rollback(repo, "production", to: v1, actor: "bob", reason: "v3 regressed")
            #expect(r.from == v3 && r.to == v1)
            #expect(try registry.manifest(repo, .tag("production")).digest == v1)
        }
    }

    @Test func protectedAndImmutableTagsAndCompareAndSwap() async throws {
        let dir = TempDir("depot-gov")
        try await withRegistry { client, registry, port in
            let d = try await pushFamily(port, dir.path)
            let repo = try RepositoryName("team/llm")
            let v1 = try registry.manifest(repo, .digest(d[0]))

            // A plain OCI PUT to a protected alias is refused; the alias API may move it.
            let put = try await client.req(
                .put, "/v2/team/llm/manifests/production", headers: [.contentType: v1.mediaType], body: v1.content)
            #expect(put.status.code == 403)
            #expect(put.errorCode == "DENIED")
            try registry.setAlias(repo, "production", to: d[0], actor: "alice", reason: nil)
            let del = try await client.req(.delete, "/v2/team/llm/manifests/production")
            #expect(del.status.code == 403)

            // Compare-and-swap over HTTP: If-Match on a manifest PUT, "expect" on the alias API.
            let stale = try await client.req(
                .put, "/v2/team/llm/manifests/v3", headers: [.contentType: v1.mediaType, .ifMatch: "\"\(d[1])\""], body: v1.content)
            #expect(stale.status.code == 412)
            #expect(try registry.manifest(repo, .tag("v3")).digest == d[2])
            let moved = try await client.req(
                .put, "/depot/v1/repositories/team/llm/aliases/production",
                body: Array(#"{"digest": "\#(d[1])", "expect": "\#(d[2])"}"#.utf8))
            #expect(moved.status.code == 412)

            // Racing moves that all expect the current digest: exactly one wins.
            let outcomes = await withTaskGroup(of: Bool.self) { group -> [Bool] in
                for i in 0..<8 {
                    group.addTask {
                        (try? registry.setAlias(repo, "production", to: d[1 + i % 2], expect: d[0], actor: "racer-\(i)", reason: nil))
                            != nil
                    }
                }
                return await group.reduce(into: []) { $0.append($1) }
            }
            #expect(outcomes.filter { $0 }.count == 1)

            // Immutable tags never move.
            let strict = Registry(store: registry.store, policy: TagPolicy(protected: [], immutable: ["v*"]))
            #expect(throws: RegistryError.self) {
                _ = try strict.putManifest(
                    repo, .tag("v1"), contentType: v1.mediaType, bytes: try registry.manifest(repo, .digest(d[1])).content)
            }
            _ = try strict.putManifest(repo, .tag("v1"), contentType: v1.mediaType, bytes: v1.content) // same digest: fine
        }
    }

    @Test func deletesThatWouldBreakRetentionAreRefused() async throws {
        let dir = TempDir("depot-gov")
        try await withRegistry { client, registry, port in
            let d = try await pushFamily(port, dir.path)
            let repo = try RepositoryName("team/llm")
            try registry.pin(repo, .digest(d[2]), reason: "release", actor: "alice")
            let pinned = try await client.req(.delete, "/v2/team/llm/manifests/\(d[2])")
            #expect(pinned.status.code == 403)
            let ancestor = try await client.req(.delete, "/v2/team/llm/manifests/\(d[0])")
            #expect(ancestor.status.code == 403)
            #expect(ancestor.text.contains("ancestor"))
            try registry.unpin(repo, .digest(d[2]), actor: "alice")
            try registry.setAlias(repo, "staging", to: d[1], actor: "alice", reason: nil)
            let aliased = try await client.req(.delete, "/v2/team/llm/manifests/\(d[1])")
            #expect(aliased.status.code == 403)
            let free = try await client.req(.delete, "/v2/team/llm/manifests/\(d[2])")
            #expect(free.status.code == 202)
        }
    }

    @Test func lineageQueriesPathsImpactAndExternalParents() async throws {
        let dir = TempDir("depot-gov")
        try await withRegistry { client, registry, port in
            let d = try await pushFamily(port, dir.path)
            let up = try registry.lineage(of: d[2], up: true)
            #expect(up.map(\.digest) == [d[1], d[0]])
            #expect(up.map(\.depth) == [1, 2])
            #expect(up[0].edge.relation == "fine-tuned-from" && up[0].edge.run == "run-3")
            #expect(try registry.lineage(of: d[2], up: true, depth: 1).map(\.digest) == [d[1]])
            #expect(try registry.lineage(of: d[0], up: false).map(\.digest) == [d[1], d[2]])
            #expect(try registry.lineage(of: d[2], up: true, relations: ["converted-from"]).isEmpty)
            #expect(try registry.lineage(of: d[2], up: true, artifactType: "application/x-other").isEmpty)
            #expect(try registry.lineagePath(from: d[0], to: d[2])?.map(\.child) == [d[1], d[2]])
            #expect(try registry.lineagePath(from: d[2], to: d[0]) == nil)

            try registry.setAlias(try RepositoryName("team/llm"), "production", to: d[2], actor: "a", reason: nil)
            let impact = try registry.impact(of: d[1])
            #expect(Set(impact.tags.map(\.tag)) == ["v2", "v3", "production"])

            // A signature attached by `subject` is lineage too.
            let cfg = try await client.pushBlob("team/llm", emptyConfig)
            let subject = try registry.manifest(try RepositoryName("team/llm"), .digest(d[2]))
            let (sig, _) = try await client.pushManifest(
                "team/llm", "sig", config: (cfg, emptyConfig.count, "application/vnd.dev.cosign"),
                layers: [], subject: (d[2], subject.content.count), artifactType: "application/vnd.dev.cosign")
            #expect(try registry.lineage(of: d[2], up: false, relations: ["subject"]).map(\.digest) == [sig])

            // A parent in another registry is an external reference, not an error.
            let external = "ghcr.io/other/model@sha256:" + String(repeating: "ab", count: 32)
            let (child, _) = try await client.pushManifest(
                "team/llm", "ext", config: (cfg, emptyConfig.count, "application/vnd.cncf.model.config.v1+json"),
                layers: [],
                annotations: [
                    "dev.depot.lineage.from": external,
                    "dev.depot.lineage.relation": "quantized-from",
                ])
            let ext = try registry.lineage(of: child, up: true)
            #expect(ext.count == 1 && ext[0].stored == false && ext[0].edge.parentRef == external)

            // Malformed lineage claims are refused with a clear error.
            for bad in [
                ["dev.depot.lineage.from": "not a reference"],
                ["dev.depot.lineage.from": external, "dev.depot.lineage.relation": "stolen-from"],
                ["dev.depot.lineage.relation": "trained-from"],
            ] {
                let bytes = manifestJSON(config: (cfg, emptyConfig.count, "application/json"), layers: [], annotations: bad)
                let r = try await client.req(
                    .put, "/v2/team/llm/manifests/bad", headers: [.contentType: MediaType.ociManifest], body: bytes)
                #expect(r.status.code == 400 && r.errorCode == "MANIFEST_INVALID", "\(bad): \(r.text)")
            }
            // A cycle cannot be recorded: a digest is never its own ancestor.
            #expect(try registry.store.catalog.read { try $0.isAncestorOrSelf(d[2], of: d[0]) } == false)
            #expect(try registry.store.catalog.read { try $0.isAncestorOrSelf(d[0], of: d[2]) } == true)

            let http = try await client.req(.get, "/depot/v1/lineage/\(d[2])?direction=ancestors&depth=5")
            #expect(((http.json["nodes"] as? [[String: Any]]) ?? []).count == 2)
            let bad = try await client.req(.get, "/depot/v1/lineage/\(d[2])?depth=0")
            #expect(bad.status.code == 400)
        }
    }

    @Test func aliasHistoryTimeTravelAndAnHonestAuditChain() async throws {
        let dir = TempDir("depot-gov")
        try await withRegistry { client, registry, port in
            let d = try await pushFamily(port, dir.path)
            let repo = try RepositoryName("team/llm")
            var times: [Int64] = []
            for v in d {
                try registry.setAlias(repo, "production", to: v, actor: "alice", reason: "step")
                try await Task.sleep(nanoseconds: 20_000_000)
                times.append(Int64(Date().timeIntervalSince1970 * 1000))
                try await Task.sleep(nanoseconds: 20_000_000)
            }
            #expect(try registry.resolve(repo, "production", at: times[0] - 1_000_000) == nil)
            for (i, t) in times.enumerated() { #expect(try registry.resolve(repo, "production", at: t) == d[i]) }
            let history = try registry.aliasHistory(repo, "production")
            #expect(history.map(\.to) == d && history.allSatisfy { $0.actor == "alice" })
            let resolved = try await client.req(.get, "/depot/v1/repositories/team/llm/aliases/production/resolve?at=\(times[1])&lineage=1")
            #expect(resolved.json["digest"] as? String == d[1].description)
            #expect(((resolved.json["ancestors"] as? [[String: Any]]) ?? []).count == 1)

            // Empty history: nothing to roll back to.
            try registry.setAlias(repo, "staging", to: d[0], actor: "alice", reason: nil)
            #expect(throws: RegistryError.self) { try registry.rollback(repo, "staging", actor: "bob", reason: nil) }

            try registry.pin(repo, .digest(d[0]), reason: nil, actor: "alice")
            try registry.unpin(repo, .digest(d[0]), actor: "alice")
            _ = try registry.collectGarbage()
            let actions = Set(try registry.auditLog(AuditFilter()).map(\.action))
            #expect(actions.isSuperset(of: ["push", "alias", "pin", "unpin", "gc"]))
            #expect(try registry.auditLog(AuditFilter(repository: "team/llm", action: "alias")).count == 4)
            #expect(try registry.verifyAudit().intact)

            // Someone edits a row of the catalog directly: verify names that entry.
            let catalog = try Database(path: registry.store.root + "/catalog.db")
            let original = try #require(try registry.auditLog(AuditFilter()).first { $0.id == 3 }?.actor)
            try catalog.write { try $0.execute("UPDATE audit_log SET actor = 'mallory' WHERE id = 3") }
            let broken = try registry.verifyAudit()
            #expect(!broken.intact && broken.firstBrokenID == 3, "\(broken)")
            let overHTTP = try await client.req(.get, "/depot/v1/audit/verify")
            #expect(overHTTP.json["intact"] as? Bool == false && overHTTP.json["first_broken_id"] as? Int == 3)
            try catalog.write { try $0.execute("UPDATE audit_log SET actor = '\(original)' WHERE id = 3") }
            #expect(try registry.verifyAudit().intact)
            // Deleting the newest entries is caught too.
            try catalog.write { try $0.execute("DELETE FROM audit_log WHERE id = (SELECT MAX(id) FROM audit_log)") }
            #expect(try registry.verifyAudit().intact == false)
        }
    }
}

/// The governance commands as operators run them.
@Suite("Governance commands")
struct GovernanceCommandTests {
    @Test func historyRollbackLineageAndAuditFromTheCommandLine() async throws {
        let dir = TempDir("depot-gov-cli")
        try await withRegistry { _, registry, port in
            let d = try await pushFamily(port, dir.path)
            let url = "http://127.0.0.1:\(port)"
            let depot = repoRoot + "/.build/debug/depot"
            for v in ["v1", "v2", "v3"] {
                let r = try await run(depot, ["alias", "set", "team/llm", "production", v, "--reason", "promote \(v)", "--registry", url])
                #expect(r.status == 0, "\(r.output)")
            }
            let refused = try await run(
                depot, ["alias", "set", "team/llm", "production", "v1", "--expect", d[0].description, "--registry", url])
            #expect(refused.status == 1 && refused.output.contains("412"), "\(refused.output)")
            let history = try await run(depot, ["history", "team/llm", "production", "--registry", url])
            #expect(history.output.split(separator: "\n").count == 3 && history.output.contains("promote v2"))
            let back = try await run(depot, ["rollback", "team/llm", "production", "--steps", "2", "--registry", url])
            #expect(back.status == 0, "\(back.output)")
            #expect(try registry.manifest(try RepositoryName("team/llm"), .tag("production")).digest == d[0])

            let dot = try await run(depot, ["lineage", "team/llm:v3", "--dot", "--registry", url])
            #expect(dot.output.hasPrefix("digraph lineage") && dot.output.contains("fine-tuned-from"))
            let events = try await run(depot, ["lineage", "team/llm:v3", "--openlineage", "--registry", url])
            let lines = events.output.split(separator: "\n")
            #expect(lines.count == 2)
            for line in lines {
                let event = try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])
                #expect(event["eventType"] as? String == "COMPLETE")
                #expect(((event["inputs"] as? [[String: Any]])?.first?["name"] as? String)?.contains("@sha256:") == true)
            }
            let impact = try await run(depot, ["lineage", "team/llm:v1", "--impact", "--registry", url])
            #expect(impact.output.contains("team/llm:v3") && impact.output.contains("team/llm:production"))

            let ok = try await run(depot, ["audit", "verify", "--registry", url])
            #expect(ok.status == 0 && ok.output.contains("intact"))
            let log = try await run(depot, ["audit", "log", "--action", "rollback", "--json", "--registry", url])
            #expect(log.output.contains("\"rollback\""))
            let catalog = try Database(path: registry.store.root + "/catalog.db")
            try catalog.write { try $0.execute("UPDATE audit_log SET details = '{}' WHERE id = 2") }
            let bad = try await run(depot, ["audit", "verify", "--registry", url])
            #expect(bad.status == 1 && bad.output.contains("entry 2"), "\(bad.output)")
        }
    }
}
