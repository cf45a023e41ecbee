import DepotCatalog
import DepotCore
import DepotFormats
import DepotRegistry
import DepotStore
import DepotTestSupport
import Foundation
import Testing

/// `ManifestParser.parse`: what a client gets back for a manifest it got wrong.
@Suite struct ManifestParserTests {
    static var config: [String: Any] {
        [
            "mediaType": "application/vnd.oci.image.config.v1+json", "digest": Digest.of(emptyConfig).description, "size": 2,
        ]
    }
    static var layer: [String: Any] { ["mediaType": "application/octet-stream", "digest": Digest.of([1]).description, "size": 1] }

    static func bytes(_ o: [String: Any]) -> [UInt8] { Array(try! JSONSerialization.data(withJSONObject: o, options: [.sortedKeys])) }

    static func manifest(_ change: (inout [String: Any]) -> Void = { _ in }) -> [UInt8] {
        var o: [String: Any] = ["schemaVersion": 2, "mediaType": MediaType.ociManifest, "config": config, "layers": [layer, layer]]
        change(&o)
        return bytes(o)
    }

    /// The error `parse` throws: its code and message.
    static func refusal(_ bytes: [UInt8], contentType: String? = nil) -> (code: String, message: String)? {
        do {
            _ = try ManifestParser.parse(bytes, contentType: contentType)
            return nil
        } catch let e as RegistryError {
            return (e.code.rawValue, e.message)
        } catch {
            return ("other", "\(error)")
        }
    }

    @Test func aValidManifestListsItsBlobsAndInfersItsArtifactType() throws {
        let parsed = try ManifestParser.parse(Self.manifest(), contentType: MediaType.ociManifest + "; charset=utf-8")
        #expect(parsed.mediaType == MediaType.ociManifest)
        #expect(parsed.blobs.map(\.digest) == [Digest.of(emptyConfig), Digest.of([1]), Digest.of([1])])
        #expect(parsed.artifactType == "application/vnd.oci.image.config.v1+json", "the config's media type when none is given")
        let typed = try ManifestParser.parse(Self.manifest { $0["artifactType"] = "application/vnd.example.model" }, contentType: nil)
        #expect(typed.artifactType == "application/vnd.example.model")
        let noType = try ManifestParser.parse(Self.manifest { $0["mediaType"] = nil }, contentType: nil)
        #expect(noType.mediaType == MediaType.ociManifest)
    }

    @Test func aFieldOfTheWrongTypeIsNamed() {
        let cases: [(String, [UInt8])] = [
            ("schemaVersion", Self.manifest { $0["schemaVersion"] = "2" }),
            ("layers[1].size", Self.manifest { $0["layers"] = [Self.layer, Self.layer.merging(["size": "1"]) { $1 }] }),
            ("config.mediaType", Self.manifest { $0["config"] = Self.config.merging(["mediaType": 7]) { $1 } }),
            ("layers", Self.manifest { $0["layers"] = ["not": "a list"] }),
            ("annotations", Self.manifest { $0["annotations"] = ["a": 1] }),
        ]
        for (field, bytes) in cases {
            let r = Self.refusal(bytes)
            #expect(r?.code == "MANIFEST_INVALID", "\(field): \(String(describing: r))")
            #expect(r?.message.contains(field) == true, "\(field): \(r?.message ?? "accepted")")
        }
    }

    @Test func aBadDigestIsDigestInvalid() {
        for digest in ["sha256:1234", "md5:" + String(repeating: "a", count: 32), "not-a-digest"] {
            let r = Self.refusal(Self.manifest { $0["layers"] = [Self.layer.merging(["digest": digest]) { $1 }] })
            #expect(r?.code == "DIGEST_INVALID", "\(digest): \(String(describing: r))")
        }
    }

    @Test func structuralProblemsAreManifestInvalid() {
        let cases: [(String, [UInt8], String?)] = [
            ("schema 1", Self.manifest { $0["schemaVersion"] = 1 }, nil),
            ("no config", Self.manifest { $0["config"] = nil }, nil),
            ("no layers", Self.manifest { $0["layers"] = nil }, nil),
            ("negative size", Self.manifest { $0["layers"] = [Self.layer.merging(["size": -1]) { $1 }] }, nil),
            ("bad artifactType", Self.manifest { $0["artifactType"] = "no-slash" }, nil),
            ("header disagrees", Self.manifest(), MediaType.ociIndex),
            ("unknown media type", Self.manifest { $0["mediaType"] = "application/json" }, nil),
            ("index without manifests", Self.bytes(["schemaVersion": 2, "mediaType": MediaType.ociIndex]), nil),
            ("not JSON", Array("{".utf8), nil),
        ]
        for (what, bytes, contentType) in cases {
            #expect(Self.refusal(bytes, contentType: contentType)?.code == "MANIFEST_INVALID", "\(what)")
        }
    }

    @Test func anOversizedManifestIsSizeInvalid() {
        let big = Self.manifest { $0["annotations"] = ["pad": String(repeating: "x", count: ManifestParser.maxSize)] }
        #expect(Self.refusal(big)?.code == "SIZE_INVALID")
    }
}

/// Upload sessions: limits per client and in total, the maximum blob size, digest checks, expiry,
/// and resuming in another process from the catalog.
@Suite struct UploadSessionTests {
    let name = try! RepositoryName("models/up")

    @Test func sessionLimitsHoldPerClientAndInTotal() throws {
        var limits = UploadLimits()
        limits.maxSessions = 3
        limits.maxSessionsPerClient = 2
        let t = try TestRegistry(uploads: limits)
        let uploads = t.registry.uploads
        let a1 = try uploads.start(name, client: "a")
        _ = try uploads.start(name, client: "a")
        #expect(registryErrorCode { try uploads.start(name, client: "a") } == "TOOMANYREQUESTS")
        _ = try uploads.start(name, client: "b")
        #expect(registryErrorCode { try uploads.start(name, client: "c") } == "TOOMANYREQUESTS", "the total is reached")
        try uploads.cancel(name, a1.id)
        #expect(uploads.count == 2)
        _ = try uploads.start(name, client: "a")
        #expect(registryErrorCode { try uploads.status(name, a1.id) } == "BLOB_UPLOAD_UNKNOWN")
    }

    @Test func aSessionFinishesOnlyWithTheRightDigestAndWithinTheSizeLimit() throws {
        var limits = UploadLimits()
        limits.maxBlobBytes = 8
        let t = try TestRegistry(uploads: limits)
        let uploads = t.registry.uploads
        let s = try uploads.start(name)
        #expect(try uploads.status(name, s.id).offset == 0)
        #expect(registryErrorCode { try uploads.status(try RepositoryName("models/other"), s.id) } == "BLOB_UPLOAD_UNKNOWN")
        let request = try uploads.claim(name, s.id)
        #expect(registryErrorCode { try uploads.claim(name, s.id) } == "RANGE_INVALID", "one request at a time")
        try [UInt8]([1, 2, 3, 4, 5]).withUnsafeBytes { try request.append($0) }
        #expect(registryErrorCode { try [UInt8](repeating: 0, count: 4).withUnsafeBytes { try request.append($0) } } == "SIZE_INVALID")
        #expect(request.offset == 5, "a refused append writes nothing")
        try request.checkpoint()
        #expect(try uploads.status(name, s.id).offset == 5, "acknowledged")
        let put = try uploads.claim(name, s.id)
        #expect(registryErrorCode { try put.finish(expecting: Digest.of([1, 2, 3]), registry: t.registry) } == "DIGEST_INVALID")
        #expect(try t.registry.blob(name, Digest.of([1, 2, 3, 4, 5])) == nil)
        #expect(registryErrorCode { try uploads.status(name, s.id) } == "BLOB_UPLOAD_UNKNOWN", "a failed finish ends the session")

        let ok = try uploads.claim(name, try uploads.start(name).id)
        try [UInt8]([1, 2, 3]).withUnsafeBytes { try ok.append($0) }
        let result = try ok.finish(expecting: Digest.of([1, 2, 3]), registry: t.registry)
        #expect(result.digest == Digest.of([1, 2, 3]) && result.size == 3)
        #expect(try t.registry.blob(name, result.digest)?.size == 3, "a finished upload is visible in its repository")
        #expect(registryErrorCode { try uploads.claim(name, ok.id) } == "BLOB_UPLOAD_UNKNOWN")
        #expect(uploads.count == 0)
    }

    @Test func idleAndOverageSessionsExpire() throws {
        var limits = UploadLimits()
        limits.idleTimeoutSeconds = 60
        limits.maxLifetimeSeconds = 600
        let t = try TestRegistry(uploads: limits)
        let uploads = t.registry.uploads
        let start = Date()
        let idle = try uploads.start(name, now: start)
        #expect(uploads.expire(now: start.addingTimeInterval(30)) == 0)
        #expect(uploads.expire(now: start.addingTimeInterval(120)) == 1)
        #expect(registryErrorCode { try uploads.status(name, idle.id) } == "BLOB_UPLOAD_UNKNOWN")
        #expect(registryErrorCode { try uploads.claim(name, idle.id) } == "BLOB_UPLOAD_UNKNOWN")

        let busy = try uploads.start(name, now: start)
        let request = try uploads.claim(name, busy.id, now: start) // held by a request: not idle, but past its lifetime it goes anyway
        try [UInt8]([1]).withUnsafeBytes { try request.append($0) }
        #expect(uploads.expire(now: start.addingTimeInterval(50)) == 0)
        #expect(uploads.expire(now: start.addingTimeInterval(700)) == 1)
        #expect(registryErrorCode { try request.checkpoint() } == "BLOB_UPLOAD_UNKNOWN", "the request learns it when it acknowledges")
        #expect(try t.registry.store.stats().unfinishedWrites == 0, "nothing of it is left behind")
    }

    /// A claim lapses when its request's replica died: another request takes the session over,
    /// and the first one, should it come back, can no longer acknowledge anything.
    @Test func aLapsedClaimPassesToTheNextRequestAndTheFirstLosesIt() throws {
        let t = try TestRegistry()
        let uploads = t.registry.uploads
        let s = try uploads.start(name)
        let now = Date()
        let first = try uploads.claim(name, s.id, now: now)
        try [UInt8](repeating: 7, count: 100).withUnsafeBytes { try first.append($0) }
        #expect(registryErrorCode { try uploads.claim(name, s.id, now: now.addingTimeInterval(30)) } == "RANGE_INVALID")
        let second = try uploads.claim(name, s.id, now: now.addingTimeInterval(61))
        try [UInt8](repeating: 9, count: 50).withUnsafeBytes { try second.append($0) }
        try second.checkpoint()
        #expect(registryErrorCode { try first.checkpoint() } == "BLOB_UPLOAD_UNKNOWN")
        #expect(try uploads.status(name, s.id).offset == 50, "the second request's bytes, not the first's")
        // Nor can a PUT whose claim lapsed finish the upload and take the newer request's part.
        let stalePut = try uploads.claim(name, s.id, now: Date().addingTimeInterval(-120))
        let third = try uploads.claim(name, s.id)
        #expect(registryErrorCode { try stalePut.finish(expecting: Digest.of([9]), registry: t.registry) } == "BLOB_UPLOAD_UNKNOWN")
        third.abandon()
        #expect(try uploads.status(name, s.id).offset == 50, "the session is as the last acknowledgement left it")
        let put = try uploads.claim(name, s.id)
        let result = try put.finish(expecting: Digest.of([UInt8](repeating: 9, count: 50)), registry: t.registry)
        #expect(result.size == 50)
    }

    /// The state of a chunked upload is the catalog's: a PATCH acknowledged by one process is
    /// resumed by another (here the same store, closed and opened again, as after a restart or
    /// on another replica). The blob is cut into exactly the chunks one uninterrupted stream
    /// gives: the planner's tensor boundaries (it re-reads the safetensors header, or walks the
    /// ONNX framing again, from the stored part) and the content-defined cuts (the tail after the
    /// last cut goes through the chunker again), whatever the client's request sizes.
    @Test(arguments: ["safetensors", "onnx"])
    func aChunkedUploadResumesInAnotherProcessAndCutsTheSameChunks(format: String) throws {
        var rng = SystemRandomNumberGenerator()
        var tensors: [(String, String, [Int], [UInt8])] = []
        for i in 0..<6 {
            let elements = 200_000 + i * 7_777
            let bytes = (0..<(2 * elements)).map { _ in UInt8.random(in: 0...255, using: &rng) }
            tensors.append(("layer.\(i)", "F16", [elements], bytes))
        }
        let file =
            format == "onnx"
            ? makeONNX(initializers: tensors.map { ($0.0, 10, $0.2, $0.3) }) : makeSafetensors(tensors, metadata: ["format": "pt"])
        let digest = Digest.of(file)
        // The reference: the same bytes in one stream, in a store of their own, cut by the
        // planner the registry's uploads use.
        let reference = try TestRegistry()
        let w = try reference.registry.store.makeWriter(planner: ModelFileBoundaryPlanner())
        try w.write(file)
        let whole = try w.finish()
        #expect(whole.chunker.hasSuffix("+" + format))
        let wholeChunks = try reference.registry.store.catalog.read {
            try $0.recipe(blob: reference.registry.store.blob(digest)!.id, from: 0, limit: 10_000)
        }

        let dir = TempDir("depot-resume")
        var options = StoreOptions()
        options.writeGraceSeconds = 0
        // Odd splits: inside the header's length (or the first fields), inside the header (or
        // the framing of the first initializer), inside tensors.
        let cuts = [0, 3, 200, 70_001, 1_000_003, 1_900_000, file.count]
        var id = ""
        // Opens the store again, as a restarted replica would. The previous round's store may
        // still be closing on another thread (the writer's last queued work releases it), or a
        // process another test is spawning may hold a copy of its lock's descriptor until it
        // execs: a new process would not see either, so wait a little for the lock.
        func reopen() throws -> ChunkStore {
            let deadline = ContinuousClock.now + .seconds(10)
            while true {
                do {
                    return try ChunkStore(root: dir.path + "/store", options: options, create: true)
                } catch DepotError.storage(let m) where m.contains("in use by another process") && ContinuousClock.now < deadline {
                    usleep(20_000)
                }
            }
        }
        for (i, (from, to)) in zip(cuts, cuts.dropFirst()).enumerated() {
            let store = try reopen()
            let registry = Registry(store: store)
            if i == 0 { id = try registry.uploads.start(name).id }
            #expect(try registry.uploads.status(name, id).offset == Int64(from))
            let request = try registry.uploads.claim(name, id)
            try Array(file[from..<to]).withUnsafeBytes { try request.append($0) }
            if to < file.count {
                try request.checkpoint()
                // GC with no grace at all keeps what the session committed.
                _ = try registry.collectGarbage()
            } else {
                let result = try request.finish(expecting: digest, registry: registry)
                #expect(result.digest == digest && result.size == Int64(file.count))
                #expect(result.chunker == whole.chunker)
                #expect(result.chunks == whole.chunks)
                let chunks = try store.catalog.read { try $0.recipe(blob: store.blob(digest)!.id, from: 0, limit: 10_000) }
                #expect(chunks == wholeChunks, "the same chunks as one stream")
                var back: [UInt8] = []
                try store.reader(digest).forEach { back += $0 }
                #expect(back == file)
                #expect(try store.stats().unfinishedWrites == 0)
                #expect(try store.fsck().isClean)
            }

        }
    }

    @Test func clientsAreCountedByAddressAndIPv6Slash64() {
        #expect(UploadSessions.clientKey("10.0.0.1") == "10.0.0.1")
        #expect(UploadSessions.clientKey(nil) == "unknown")
        #expect(UploadSessions.clientKey("2001:db8:1:2:aaaa::1") == "2001:db8:1:2::/64")
        #expect(UploadSessions.clientKey("2001:db8:1:2::ffff") == UploadSessions.clientKey("2001:db8:1:2:5:6:7:8"))
        #expect(UploadSessions.clientKey("2001:db8:1:3::1") != UploadSessions.clientKey("2001:db8:1:2::1"))
    }
}

/// Two replicas on one PostgreSQL catalog: a tag moved through one is what the other resolves at
/// once, whatever either has cached (a cache cleared only by local writes would keep serving the
/// old manifest for a moved tag on every other replica).
@Suite(.enabled(if: Database.isTestingOnPostgres, "replicas need a PostgreSQL catalog"))
struct ReplicatedManifestCacheTests {
    @Test func aTagMovedOnOneReplicaResolvesToTheNewManifestOnAnother() throws {
        let one = try TestRegistry()
        let dir = TempDir("depot-replica")
        var options = StoreOptions()
        options.catalog = one.registry.store.catalog.location
        let two = Registry(store: try ChunkStore(root: dir.path + "/store", options: options, create: true))
        let name = try RepositoryName("models/cached")
        let v1 = try one.pushManifest(name.value, "latest", layers: [[1, 2, 3]])
        #expect(try two.manifest(name, .tag("latest")).digest == v1)
        #expect(try two.manifest(name, .tag("latest")).digest == v1, "now from its cache, if it caches tags")
        let v2 = try one.pushManifest(name.value, "latest", layers: [[4, 5, 6]])
        #expect(v2 != v1)
        #expect(try two.manifest(name, .tag("latest")).digest == v2)
    }
}
