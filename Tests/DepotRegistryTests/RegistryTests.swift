import DepotAPI
import DepotCatalog
import DepotCore
import DepotRegistry
import DepotTestSupport
import Foundation
import Testing

/// The registry model without HTTP: blob visibility, manifests and tags, delete rules, referrers,
/// aliases, pins and lineage. Errors are checked by their OCI code, which is what a client acts on.
@Suite struct RegistryTests {
    let repo = "models/resnet"
    var name: RepositoryName { try! RepositoryName(repo) }

    @Test func aBlobIsVisibleOnlyWhereItIsLinkedOrMounted() throws {
        let t = try TestRegistry()
        let d = try t.pushBlob(repo, randomBytes(1000, seed: 1))
        let other = try RepositoryName("models/other")
        #expect(try t.registry.blob(name, d)?.size == 1000)
        #expect(try t.registry.blob(other, d) == nil)
        #expect(try t.registry.mount(other, d, from: try RepositoryName("models/nowhere")) == false)
        #expect(try t.registry.mount(other, d, from: name))
        #expect(try t.registry.blob(other, d) != nil)
        try t.registry.deleteBlob(name, d)
        #expect(try t.registry.blob(name, d) == nil)
        #expect(try t.registry.blob(other, d) != nil, "unlinking in one repository leaves the other's link")
        #expect(registryErrorCode { try t.registry.deleteBlob(name, d) } == "BLOB_UNKNOWN")
        #expect(try t.registry.mount(name, Digest.of([1, 2, 3]), from: nil) == false, "a digest never stored cannot be mounted")
    }

    @Test func aManifestIsFoundByTagAndDigestAndTagsPage() throws {
        let t = try TestRegistry()
        let d = try t.pushManifest(repo, "v1", layers: [randomBytes(100, seed: 2)])
        #expect(try t.registry.manifest(name, .tag("v1")).digest == d)
        #expect(try t.registry.manifest(name, .digest(d)).digest == d)
        for tag in ["c", "a", "b"] { try t.pushManifest(repo, tag, layers: [randomBytes(100, seed: 2)]) }
        #expect(try t.registry.tags(name, after: nil, limit: 2) == ["a", "b"])
        #expect(try t.registry.tags(name, after: "b", limit: 10) == ["c", "v1"])
        #expect(try t.registry.repositories(after: nil, limit: 10) == [repo])
        #expect(registryErrorCode { try t.registry.tags(try RepositoryName("no/such"), after: nil, limit: 10) } == "NAME_UNKNOWN")
        #expect(registryErrorCode { try t.registry.manifest(name, .tag("missing")) } == "MANIFEST_UNKNOWN")
        #expect(registryErrorCode { try t.registry.manifest(try RepositoryName("no/such"), .tag("v1")) } == "NAME_UNKNOWN")
    }

    @Test func aManifestNeedsItsBlobsHereWithTheirSizesAndItsDigest() throws {
        let t = try TestRegistry()
        let config = try t.pushBlob(repo, emptyConfig)
        let elsewhere = try t.pushBlob("models/other", [9, 9, 9])
        let mediaType = "application/vnd.oci.image.config.v1+json"
        let foreign = manifestJSON(config: (config, 2, mediaType), layers: [(elsewhere, 3)])
        #expect(
            registryErrorCode { try t.registry.putManifest(name, .tag("x"), contentType: nil, bytes: foreign) } == "MANIFEST_BLOB_UNKNOWN",
            "a blob of another repository is not usable without a mount")
        let layer = try t.pushBlob(repo, [1, 2, 3, 4])
        let wrongSize = manifestJSON(config: (config, 2, mediaType), layers: [(layer, 5)])
        #expect(registryErrorCode { try t.registry.putManifest(name, .tag("x"), contentType: nil, bytes: wrongSize) } == "MANIFEST_INVALID")
        let good = manifestJSON(config: (config, 2, mediaType), layers: [(layer, 4)])
        #expect(
            registryErrorCode { try t.registry.putManifest(name, .digest(Digest.of([0])), contentType: nil, bytes: good) }
                == "DIGEST_INVALID", "put by digest must name the content's digest")
        #expect(try t.registry.putManifest(name, .digest(Digest.of(good)), contentType: nil, bytes: good).digest == Digest.of(good))
        #expect(registryErrorCode { try t.registry.manifest(name, .tag("x")) } == "MANIFEST_UNKNOWN", "refused pushes left no tag")
    }

    @Test func deletingATagKeepsTheManifestAndDeletingTheDigestRemovesEveryTag() throws {
        let t = try TestRegistry()
        let d = try t.pushManifest(repo, "v1", layers: [[1]])
        try t.pushManifest(repo, "latest", layers: [[1]])
        try t.registry.deleteManifest(name, .tag("latest"))
        #expect(try t.registry.tags(name, after: nil, limit: 10) == ["v1"])
        #expect(try t.registry.manifest(name, .digest(d)).digest == d)
        #expect(registryErrorCode { try t.registry.deleteManifest(name, .tag("latest")) } == "MANIFEST_UNKNOWN")
        try t.registry.deleteManifest(name, .digest(d))
        #expect(try t.registry.tags(name, after: nil, limit: 10) == [])
        #expect(registryErrorCode { try t.registry.manifest(name, .digest(d)) } == "MANIFEST_UNKNOWN")
        #expect(registryErrorCode { try t.registry.deleteManifest(name, .digest(d)) } == "MANIFEST_UNKNOWN")
    }

    @Test func protectedAndImmutableTagsAreGuarded() throws {
        let t = try TestRegistry(policy: TagPolicy(protected: ["production"], immutable: ["release-*"]))
        let v1 = try t.pushManifest(repo, "v1", layers: [[1]])
        let v2 = try t.pushManifest(repo, "v2", layers: [[2]])
        #expect(registryErrorCode { try t.pushManifest(repo, "production", layers: [[1]]) } == "DENIED", "a plain push cannot move it")
        try t.registry.setAlias(name, "production", to: v1, actor: "alice", reason: "first")
        #expect(registryErrorCode { try t.registry.deleteManifest(name, .tag("production")) } == "DENIED")
        #expect(registryErrorCode { try t.registry.deleteManifest(name, .digest(v1)) } == "DENIED", "an alias points at it")
        try t.pushManifest(repo, "release-1", layers: [[2]])
        try t.pushManifest(repo, "release-1", layers: [[2]]) // the same digest again is fine
        #expect(registryErrorCode { try t.pushManifest(repo, "release-1", layers: [[1]]) } == "DENIED")
        #expect(registryErrorCode { try t.registry.setAlias(name, "release-1", to: v1, actor: "alice", reason: nil) } == "DENIED")
        #expect(try t.registry.manifest(name, .tag("release-1")).digest == v2)
        #expect(registryErrorCode { try t.registry.deleteManifest(name, .tag("release-1")) } == "DENIED")
    }

    @Test func referrersPageInDigestOrderAndFilterByType() throws {
        let t = try TestRegistry()
        let subject = try t.pushManifest(repo, "v1", layers: [[1]])
        var pushed: [Digest: String] = [:]
        for i in 0..<5 {
            let type = i < 3 ? "application/vnd.test.signature" : "application/vnd.test.sbom"
            let d = try t.pushManifest(repo, nil, subject: subject, artifactType: type, annotations: ["n": "\(i)"])
            pushed[d] = type
        }
        let all = try t.registry.referrers(name, subject, artifactType: nil)
        #expect(all.map(\.digest) == pushed.keys.sorted { $0.description < $1.description })
        #expect(all.allSatisfy { pushed[$0.digest] == $0.artifactType })
        var paged: [Digest] = []
        var after: Digest?
        while true {
            let page = try t.registry.referrers(name, subject, artifactType: nil, after: after, limit: 2)
            #expect(page.count <= 2)
            paged += page.map(\.digest)
            guard page.count == 2 else { break }
            after = page.last?.digest
        }
        #expect(paged == all.map(\.digest))
        #expect(try t.registry.referrers(name, subject, artifactType: "application/vnd.test.signature").count == 3)
        #expect(try t.registry.referrers(name, Digest.of([7]), artifactType: nil).isEmpty)
        #expect(try t.registry.referrers(try RepositoryName("no/such"), subject, artifactType: nil).isEmpty)
    }

    @Test func anAliasMovesByCompareAndSwapAndRollsBackThroughItsHistory() throws {
        let t = try TestRegistry()
        let v1 = try t.pushManifest(repo, "v1", layers: [[1]])
        let v2 = try t.pushManifest(repo, "v2", layers: [[2]])
        let v3 = try t.pushManifest(repo, "v3", layers: [[3]])
        let before = Int64(Date().timeIntervalSince1970 * 1000) - 1
        #expect(try t.registry.setAlias(name, "production", to: v1, actor: "alice", reason: "first") == nil)
        #expect(try t.registry.setAlias(name, "production", to: v2, expect: v1, actor: "bob", reason: "next") == v1)
        #expect(
            registryErrorCode { try t.registry.setAlias(name, "production", to: v3, expect: v1, actor: "carol", reason: nil) } == "DENIED",
            "someone moved it first")
        #expect(try t.registry.manifest(name, .tag("production")).digest == v2)
        #expect(registryErrorCode { try t.registry.setAlias(name, "bad tag", to: v1, actor: "a", reason: nil) } == "TAG_INVALID")
        #expect(
            registryErrorCode { try t.registry.setAlias(name, "production", to: Digest.of([0]), actor: "a", reason: nil) }
                == "MANIFEST_UNKNOWN")

        #expect(registryErrorCode { try t.registry.rollback(name, "production", to: v3, actor: "ops", reason: nil) } == "MANIFEST_UNKNOWN")
        let back = try t.registry.rollback(name, "production", actor: "ops", reason: "bad model")
        #expect(back.from == v2 && back.to == v1)
        #expect(try t.registry.manifest(name, .tag("production")).digest == v1)
        let history = try t.registry.aliasHistory(name, "production")
        #expect(history.map(\.to) == [v1, v2, v1])
        #expect(history.map(\.actor) == ["alice", "bob", "ops"])
        #expect(history.last?.reason == "bad model")
        #expect(try t.registry.resolve(name, "production", at: before) == nil, "it did not exist yet")
        #expect(try t.registry.resolve(name, "production", at: Int64.max) == v1)
        #expect(
            registryErrorCode { try t.registry.rollback(name, "production", steps: 5, actor: "ops", reason: nil) } == "MANIFEST_UNKNOWN")
        #expect(registryErrorCode { try t.registry.rollback(name, "never", actor: "ops", reason: nil) } == "MANIFEST_UNKNOWN")
    }

    @Test func aPinKeepsTheManifestAndItsAncestorsFromDeletion() throws {
        let t = try TestRegistry()
        let base = try t.pushManifest(repo, "base", layers: [[1]])
        let child = try t.pushManifest(repo, "child", layers: [[2]], annotations: [Annotation.Lineage.from: "\(repo)@\(base)"])
        #expect(try t.registry.pin(name, .tag("child"), reason: "audit", actor: "alice") == child)
        #expect(try t.registry.pins().map(\.digest) == [child])
        #expect(registryErrorCode { try t.registry.deleteManifest(name, .digest(child)) } == "DENIED")
        #expect(registryErrorCode { try t.registry.deleteManifest(name, .digest(base)) } == "DENIED", "an ancestor of a pinned manifest")
        try t.registry.deleteManifest(name, .tag("child")) // tags are not protected by a pin
        try t.registry.unpin(name, .digest(child), actor: "alice")
        #expect(try t.registry.pins().isEmpty)
        #expect(registryErrorCode { try t.registry.unpin(name, .digest(child), actor: "alice") } == "MANIFEST_UNKNOWN")
        try t.registry.deleteManifest(name, .digest(child))
        try t.registry.deleteManifest(name, .digest(base))
    }
}

/// Lineage edges from `subject` and the `dev.depot.lineage.*` annotations.
@Suite struct LineageTests {
    let repo = "models/bert"

    @Test func annotationsDeclareAnEdgeWithItsRelationAndProvenance() throws {
        let t = try TestRegistry()
        let base = try t.pushManifest(repo, "base", layers: [[1]])
        let tuned = try t.pushManifest(
            repo, "tuned", layers: [[2]],
            annotations: [
                Annotation.Lineage.from: "\(repo)@\(base)", Annotation.Lineage.relation: LineageRelation.fineTunedFrom.rawValue,
                Annotation.Lineage.run: "run-7", Annotation.Lineage.dataset: "squad", Annotation.metricPrefix + "f1": "0.91",
            ])
        let up = try t.registry.lineage(of: tuned, up: true)
        #expect(up.map(\.digest) == [base])
        let edge = try #require(up.first?.edge)
        #expect(edge.relation == "fine-tuned-from" && edge.run == "run-7" && edge.dataset == "squad")
        #expect(edge.metrics?.contains("\"f1\":\"0.91\"") == true, "\(edge.metrics ?? "")")
        #expect(up.first?.stored == true)
        #expect(try t.registry.lineage(of: base, up: false).map(\.digest) == [tuned])
        #expect(try t.registry.lineagePath(from: base, to: tuned)?.map(\.child) == [tuned])
        #expect(try t.registry.lineagePath(from: tuned, to: base) == nil, "paths follow parent to child only")
        #expect(try t.registry.impact(of: base).tags.count >= 1)
    }

    @Test func everyDeclaredRelationIsAcceptedAndDerivedFromIsTheDefault() throws {
        let t = try TestRegistry()
        let base = try t.pushManifest(repo, "base", layers: [[1]])
        for (i, relation) in LineageRelation.allCases.enumerated() {
            let d = try t.pushManifest(
                repo, nil, layers: [[UInt8(10 + i)]],
                annotations: [Annotation.Lineage.from: "\(repo)@\(base)", Annotation.Lineage.relation: relation.rawValue])
            #expect(try t.registry.lineage(of: d, up: true).first?.edge.relation == relation.rawValue)
        }
        let plain = try t.pushManifest(repo, nil, layers: [[99]], annotations: [Annotation.Lineage.from: "\(repo)@\(base)"])
        #expect(try t.registry.lineage(of: plain, up: true).first?.edge.relation == LineageRelation.derivedFrom.rawValue)
    }

    @Test func aParentStoredElsewhereIsAnExternalEdge() throws {
        let t = try TestRegistry()
        let outside = Digest.of(Array("elsewhere".utf8))
        let d = try t.pushManifest(repo, "v1", layers: [[1]], annotations: [Annotation.Lineage.from: "hub.example/m@\(outside)"])
        let up = try t.registry.lineage(of: d, up: true)
        #expect(up.map(\.digest) == [outside])
        #expect(up.first?.stored == false)
        #expect(up.first?.edge.parentRef == "hub.example/m@\(outside)")
    }

    @Test func badLineageAnnotationsRefuseThePushAndStoreNothing() throws {
        let t = try TestRegistry()
        let base = try t.pushManifest(repo, "base", layers: [[1]])
        let name = try RepositoryName(repo)
        let bad: [[String: String]] = [
            [Annotation.Lineage.from: "\(repo)@\(base)", Annotation.Lineage.relation: "stolen-from"],
            [Annotation.Lineage.relation: "trained-from"],
            [Annotation.Lineage.from: "\(repo):base"],
            [Annotation.Lineage.from: "\(repo)@sha256:1234"],
        ]
        for annotations in bad {
            #expect(registryErrorCode { try t.pushManifest(repo, "child", layers: [[2]], annotations: annotations) } == "MANIFEST_INVALID")
        }
        do {
            try t.pushManifest(
                repo, "child", layers: [[2]],
                annotations: [Annotation.Lineage.from: "\(repo)@\(base)", Annotation.Lineage.relation: "stolen-from"])
        } catch let e as RegistryError {
            #expect(e.message.contains("stolen-from") && e.message.contains(LineageRelation.list), "\(e.message)")
        }
        #expect(registryErrorCode { try t.registry.manifest(name, .tag("child")) } == "MANIFEST_UNKNOWN")
        #expect(try t.registry.lineage(of: base, up: false).isEmpty)
    }
}
