import DepotCore
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

/// Upload sessions: limits per client and in total, the maximum blob size, digest checks, expiry.
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
        uploads.cancel(a1)
        #expect(uploads.count == 2)
        _ = try uploads.start(name, client: "a")
        #expect(registryErrorCode { try uploads.get(name, a1.id) } == "BLOB_UPLOAD_UNKNOWN")
        uploads.cancelAll()
        #expect(uploads.count == 0)
    }

    @Test func aSessionFinishesOnlyWithTheRightDigestAndWithinTheSizeLimit() throws {
        var limits = UploadLimits()
        limits.maxBlobBytes = 8
        let t = try TestRegistry(uploads: limits)
        let uploads = t.registry.uploads
        let s = try uploads.start(name)
        #expect(try uploads.get(name, s.id) === s)
        #expect(registryErrorCode { try uploads.get(try RepositoryName("models/other"), s.id) } == "BLOB_UPLOAD_UNKNOWN")
        try s.claim()
        #expect(registryErrorCode { try s.claim() } != nil, "one request at a time")
        try [UInt8]([1, 2, 3, 4, 5]).withUnsafeBytes { try s.append($0) }
        #expect(registryErrorCode { try [UInt8](repeating: 0, count: 4).withUnsafeBytes { try s.append($0) } } == "SIZE_INVALID")
        #expect(s.offset == 5, "a refused append writes nothing")
        s.release()
        #expect(registryErrorCode { try uploads.finish(s, expecting: Digest.of([1, 2, 3]), registry: t.registry) } == "DIGEST_INVALID")
        #expect(try t.registry.blob(name, Digest.of([1, 2, 3, 4, 5])) == nil)

        let ok = try uploads.start(name)
        try [UInt8]([1, 2, 3]).withUnsafeBytes { try ok.append($0) }
        let result = try uploads.finish(ok, expecting: Digest.of([1, 2, 3]), registry: t.registry)
        #expect(result.digest == Digest.of([1, 2, 3]) && result.size == 3)
        #expect(try t.registry.blob(name, result.digest)?.size == 3, "a finished upload is visible in its repository")
        #expect(registryErrorCode { try uploads.finish(ok, expecting: result.digest, registry: t.registry) } == "BLOB_UPLOAD_UNKNOWN")
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
        #expect(registryErrorCode { try uploads.get(name, idle.id) } == "BLOB_UPLOAD_UNKNOWN")
        #expect(registryErrorCode { try idle.claim() } == "BLOB_UPLOAD_UNKNOWN")

        let busy = try uploads.start(name, now: start)
        try busy.claim() // held by a request: not idle, but past its lifetime it goes anyway
        #expect(uploads.expire(now: start.addingTimeInterval(120)) == 0)
        #expect(uploads.expire(now: start.addingTimeInterval(700)) == 1)
        #expect(busy.isCancelled)
        #expect(registryErrorCode { try [UInt8]([1]).withUnsafeBytes { try busy.append($0) } } == "BLOB_UPLOAD_UNKNOWN")
        uploads.abandon(busy)
    }

    @Test func clientsAreCountedByAddressAndIPv6Slash64() {
        #expect(UploadSessions.clientKey("10.0.0.1") == "10.0.0.1")
        #expect(UploadSessions.clientKey(nil) == "unknown")
        #expect(UploadSessions.clientKey("2001:db8:1:2:aaaa::1") == "2001:db8:1:2::/64")
        #expect(UploadSessions.clientKey("2001:db8:1:2::ffff") == UploadSessions.clientKey("2001:db8:1:2:5:6:7:8"))
        #expect(UploadSessions.clientKey("2001:db8:1:3::1") != UploadSessions.clientKey("2001:db8:1:2::1"))
    }
}
