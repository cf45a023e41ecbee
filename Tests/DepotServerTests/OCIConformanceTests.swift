import DepotCatalog
import DepotCore
import DepotRegistry
import DepotTestSupport
import Foundation
import HTTPTypes
import HummingbirdTesting
import Testing

/// The MUSTs of the OCI distribution spec v1.1, over real HTTP.
@Suite struct OCIPullPushTests {
    @Test func baseEndpointAnswers200WithTheAPIVersionHeader() async throws {
        try await withRegistry { c, _, _ in
            let r = try await c.req(.get, "/v2/")
            #expect(r.status.code == 200)
            #expect(r.header("Docker-Distribution-API-Version") == "registry/2.0")
        }
    }

    @Test func monolithicPushThenHeadAndGet() async throws {
        try await withRegistry { c, _, _ in
            let data = randomBytes(300_000, seed: 1)
            let d = Digest.of(data)
            let post = try await c.req(.post, "/v2/team/llama/ft/blobs/uploads/?digest=\(d)", body: data)
            #expect(post.status.code == 201)
            #expect(post.header("Location") == "/v2/team/llama/ft/blobs/\(d)")
            #expect(post.header("Docker-Content-Digest") == d.description)
            let head = try await c.req(.head, "/v2/team/llama/ft/blobs/\(d)")
            #expect(head.status.code == 200)
            #expect(head.header("Content-Length") == "300000")
            #expect(head.header("Docker-Content-Digest") == d.description)
            #expect(head.bytes.isEmpty)
            let get = try await c.req(.get, "/v2/team/llama/ft/blobs/\(d)")
            #expect(get.status.code == 200)
            #expect(get.bytes == data)
            // Not visible in another repository.
            #expect(try await c.req(.head, "/v2/other/blobs/\(d)").status.code == 404)
            let missing = try await c.req(.get, "/v2/team/llama/ft/blobs/\(Digest.of([9]))")
            #expect(missing.status.code == 404)
            #expect(missing.errorCode == "BLOB_UNKNOWN")
        }
    }

    @Test func chunkedPushWithOutOfOrderChunkRejectedAndTheSessionStillUsable() async throws {
        try await withRegistry { c, _, _ in
            let data = randomBytes(250_000, seed: 2)
            let post = try await c.req(.post, "/v2/repo/blobs/uploads/")
            #expect(post.status.code == 202)
            let location = try #require(post.header("Location"))
            #expect(location.hasPrefix("/v2/repo/blobs/uploads/"))
            let first = try await c.req(
                .patch, location, headers: [.contentRange: "0-99999", .contentType: "application/octet-stream"],
                body: Array(data[0..<100_000]))
            #expect(first.status.code == 202)
            #expect(first.header("Range") == "0-99999")
            let next = try #require(first.header("Location"))
            // A chunk that does not start where the upload ends: 416, and nothing changes.
            let wrong = try await c.req(.patch, next, headers: [.contentRange: "150000-249999"], body: Array(data[150_000...]))
            #expect(wrong.status.code == 416)
            #expect(wrong.header("Range") == "0-99999")
            #expect(wrong.header("Location") == next)
            let status = try await c.req(.get, next)
            #expect(status.status.code == 204)
            #expect(status.header("Range") == "0-99999")
            #expect(status.header("Location") == next)
            let second = try await c.req(.patch, next, headers: [.contentRange: "100000-249999"], body: Array(data[100_000...]))
            #expect(second.status.code == 202)
            #expect(second.header("Range") == "0-249999")
            let put = try await c.req(.put, "\(next)?digest=\(Digest.of(data))")
            #expect(put.status.code == 201)
            #expect(put.header("Location") == "/v2/repo/blobs/\(Digest.of(data))")
            #expect(try await c.req(.get, "/v2/repo/blobs/\(Digest.of(data))").bytes == data)
            // The session is gone once closed.
            let after = try await c.req(.get, next)
            #expect(after.status.code == 404)
            #expect(after.errorCode == "BLOB_UPLOAD_UNKNOWN")
        }
    }

    @Test func aClosingPutMayCarryTheLastChunk() async throws {
        try await withRegistry { c, _, _ in
            let data = randomBytes(70_000, seed: 3)
            let location = try #require(try await c.req(.post, "/v2/repo/blobs/uploads/").header("Location"))
            _ = try await c.req(.patch, location, body: Array(data[0..<30_000]))
            let put = try await c.req(
                .put, "\(location)?digest=\(Digest.of(data))", headers: [.contentRange: "30000-69999"], body: Array(data[30_000...]))
            #expect(put.status.code == 201)
            #expect(try await c.req(.get, "/v2/repo/blobs/\(Digest.of(data))").bytes == data)
        }
    }

    @Test func aDigestThatDoesNotMatchIsRejectedAndNothingIsStored() async throws {
        try await withRegistry { c, registry, _ in
            let data = randomBytes(50_000, seed: 4)
            let claimed = Digest.of([1, 2, 3])
            let r = try await c.req(.post, "/v2/repo/blobs/uploads/?digest=\(claimed)", body: data)
            #expect(r.status.code == 400)
            #expect(r.errorCode == "DIGEST_INVALID")
            #expect(try await c.req(.head, "/v2/repo/blobs/\(claimed)").status.code == 404)
            #expect(try await c.req(.head, "/v2/repo/blobs/\(Digest.of(data))").status.code == 404)
            #expect(try registry.store.stats().blobs == 0)
        }
    }

    @Test func cancellingAnUploadForgetsIt() async throws {
        try await withRegistry { c, registry, _ in
            let location = try #require(try await c.req(.post, "/v2/repo/blobs/uploads/").header("Location"))
            _ = try await c.req(.patch, location, body: randomBytes(1000, seed: 1))
            #expect(try await c.req(.delete, location).status.code == 204)
            let r = try await c.req(.get, location)
            #expect(r.status.code == 404)
            #expect(r.errorCode == "BLOB_UPLOAD_UNKNOWN")
            #expect(registry.uploads.count == 0)
        }
    }

    @Test func rangeRequestsOnBlobs() async throws {
        try await withRegistry { c, _, _ in
            let data = randomBytes(200_000, seed: 5)
            let d = try await c.pushBlob("repo", data)
            let r = try await c.req(.get, "/v2/repo/blobs/\(d)", headers: [.range: "bytes=1000-1999"])
            #expect(r.status.code == 206)
            #expect(r.header("Content-Range") == "bytes 1000-1999/200000")
            #expect(r.bytes == Array(data[1000..<2000]))
            let suffix = try await c.req(.get, "/v2/repo/blobs/\(d)", headers: [.range: "bytes=-10"])
            #expect(suffix.bytes == Array(data[199_990...]))
            let open = try await c.req(.get, "/v2/repo/blobs/\(d)", headers: [.range: "bytes=199000-"])
            #expect(open.bytes == Array(data[199_000...]))
            let bad = try await c.req(.get, "/v2/repo/blobs/\(d)", headers: [.range: "bytes=300000-400000"])
            #expect(bad.status.code == 416)
            #expect(bad.errorCode == "RANGE_INVALID")
            #expect(bad.header("Content-Range") == "bytes */200000")
        }
    }

    @Test func concurrentPushesOfTheSameBlobAllSucceedAndStoreItOnce() async throws {
        try await withRegistry { c, registry, _ in
            let data = randomBytes(1 << 20, seed: 6)
            try await withThrowingTaskGroup(of: Int.self) { group in
                for i in 0..<8 {
                    group.addTask {
                        let r = try await c.req(.post, "/v2/repo\(i % 2)/blobs/uploads/?digest=\(Digest.of(data))", body: data)
                        return Int(r.status.code)
                    }
                }
                for try await code in group { #expect(code == 201) }
            }
            let stats = try registry.store.stats()
            #expect(stats.blobs == 1)
            #expect(stats.chunkBytes == Int64(data.count))
        }
    }
}

@Suite struct OCIManifestTests {
    @Test func manifestsRoundTripByteIdenticalByTagAndDigest() async throws {
        try await withRegistry { c, _, _ in
            let config = try await c.pushBlob("models/m", emptyConfig)
            let layer = randomBytes(10_000, seed: 7)
            let l = try await c.pushBlob("models/m", layer)
            let (d, bytes) = try await c.pushManifest(
                "models/m", "v1", config: (config, 2, MediaType.ociEmpty), layers: [(l, layer.count)],
                artifactType: "application/vnd.cncf.model.manifest.v1+json")
            for ref in ["v1", d.description] {
                let g = try await c.req(.get, "/v2/models/m/manifests/\(ref)")
                #expect(g.status.code == 200)
                #expect(g.bytes == bytes)
                #expect(g.header("Content-Type") == MediaType.ociManifest)
                #expect(g.header("Docker-Content-Digest") == d.description)
                let h = try await c.req(.head, "/v2/models/m/manifests/\(ref)")
                #expect(h.status.code == 200)
                #expect(h.header("Content-Length") == String(bytes.count))
                #expect(h.bytes.isEmpty)
            }
            let unknown = try await c.req(.get, "/v2/models/m/manifests/v2")
            #expect(unknown.status.code == 404)
            #expect(unknown.errorCode == "MANIFEST_UNKNOWN")
        }
    }

    @Test func manifestsAreValidated() async throws {
        try await withRegistry { c, _, _ in
            let config = try await c.pushBlob("repo", emptyConfig)
            let missing = Digest.of([4, 5, 6])
            let refMissing = manifestJSON(config: (config, 2, MediaType.ociEmpty), layers: [(missing, 3)])
            let r1 = try await c.req(.put, "/v2/repo/manifests/v1", headers: [.contentType: MediaType.ociManifest], body: refMissing)
            #expect(r1.status.code == 400)
            #expect(r1.errorCode == "MANIFEST_BLOB_UNKNOWN")
            let r2 = try await c.req(
                .put, "/v2/repo/manifests/v1", headers: [.contentType: MediaType.ociManifest], body: Array("not json".utf8))
            #expect(r2.status.code == 400)
            #expect(r2.errorCode == "MANIFEST_INVALID")
            let good = manifestJSON(config: (config, 2, MediaType.ociEmpty), layers: [])
            let r3 = try await c.req(
                .put, "/v2/repo/manifests/\(Digest.of([1]))", headers: [.contentType: MediaType.ociManifest], body: good)
            #expect(r3.status.code == 400)
            #expect(r3.errorCode == "DIGEST_INVALID")
            let huge = [UInt8](repeating: 0x20, count: (4 << 20) + 1)
            let r4 = try await c.req(.put, "/v2/repo/manifests/big", headers: [.contentType: MediaType.ociManifest], body: huge)
            #expect(r4.status.code == 413)
            // Content-Type that contradicts the body's mediaType.
            let r5 = try await c.req(.put, "/v2/repo/manifests/v1", headers: [.contentType: MediaType.dockerManifest], body: good)
            #expect(r5.status.code == 400)
            #expect(r5.errorCode == "MANIFEST_INVALID")
            // A size that lies about the blob.
            let lying = manifestJSON(config: (config, 3, MediaType.ociEmpty), layers: [])
            let r6 = try await c.req(.put, "/v2/repo/manifests/v1", headers: [.contentType: MediaType.ociManifest], body: lying)
            #expect(r6.status.code == 400)
            // Nothing of the above is stored.
            #expect(try await c.req(.get, "/v2/repo/tags/list").json["tags"] as? [String] == [])
        }
    }

    @Test func dockerSchema2AndIndexesAreAccepted() async throws {
        try await withRegistry { c, _, _ in
            let config = try await c.pushBlob("repo", Array("{\"architecture\":\"amd64\"}".utf8))
            let (d1, b1) = try await c.pushManifest(
                "repo", "amd64", config: (config, 24, "application/vnd.docker.container.image.v1+json"),
                layers: [], mediaType: MediaType.dockerManifest)
            let index: [String: Any] = [
                "schemaVersion": 2, "mediaType": MediaType.ociIndex,
                "manifests": [
                    [
                        "mediaType": MediaType.dockerManifest, "digest": d1.description, "size": b1.count,
                        "platform": ["architecture": "amd64", "os": "linux"],
                    ]
                ],
            ]
            let ib = Array(try JSONSerialization.data(withJSONObject: index))
            let r = try await c.req(.put, "/v2/repo/manifests/multi", headers: [.contentType: MediaType.ociIndex], body: ib)
            #expect(r.status.code == 201)
            let missingChild: [String: Any] = [
                "schemaVersion": 2, "mediaType": MediaType.ociIndex,
                "manifests": [["mediaType": MediaType.ociManifest, "digest": Digest.of([7]).description, "size": 1]],
            ]
            let r2 = try await c.req(
                .put, "/v2/repo/manifests/bad", headers: [.contentType: MediaType.ociIndex],
                body: Array(try JSONSerialization.data(withJSONObject: missingChild)))
            #expect(r2.status.code == 400)
            #expect(r2.errorCode == "MANIFEST_BLOB_UNKNOWN")
        }
    }

    @Test func deletingByTagRemovesOnlyTheTagAndByDigestRemovesTheManifestAndItsTags() async throws {
        try await withRegistry { c, _, _ in
            let config = try await c.pushBlob("repo", emptyConfig)
            let (d, _) = try await c.pushManifest("repo", "a", config: (config, 2, MediaType.ociEmpty), layers: [])
            try await c.pushManifest("repo", "b", config: (config, 2, MediaType.ociEmpty), layers: [])
            #expect(try await c.req(.delete, "/v2/repo/manifests/a").status.code == 202)
            #expect(try await c.req(.get, "/v2/repo/manifests/a").status.code == 404)
            #expect(try await c.req(.get, "/v2/repo/manifests/\(d)").status.code == 200)
            #expect(try await c.req(.get, "/v2/repo/tags/list").json["tags"] as? [String] == ["b"])
            #expect(try await c.req(.delete, "/v2/repo/manifests/\(d)").status.code == 202)
            #expect(try await c.req(.get, "/v2/repo/manifests/\(d)").status.code == 404)
            #expect(try await c.req(.get, "/v2/repo/manifests/b").status.code == 404)
            let again = try await c.req(.delete, "/v2/repo/manifests/\(d)")
            #expect(again.status.code == 404)
            #expect(again.errorCode == "MANIFEST_UNKNOWN")
        }
    }

    @Test func aBlobStaysReadableWhileAManifestReferencesIt() async throws {
        try await withRegistry { c, _, _ in
            let config = try await c.pushBlob("repo", emptyConfig)
            let layer = randomBytes(5000, seed: 8)
            let l = try await c.pushBlob("repo", layer)
            let orphan = try await c.pushBlob("repo", randomBytes(100, seed: 9))
            try await c.pushManifest("repo", "v1", config: (config, 2, MediaType.ociEmpty), layers: [(l, layer.count)])
            #expect(try await c.req(.delete, "/v2/repo/blobs/\(l)").status.code == 202)
            #expect(try await c.req(.get, "/v2/repo/blobs/\(l)").bytes == layer)
            #expect(try await c.req(.delete, "/v2/repo/blobs/\(orphan)").status.code == 202)
            #expect(try await c.req(.head, "/v2/repo/blobs/\(orphan)").status.code == 404)
        }
    }
}

@Suite struct OCIDiscoveryTests {
    @Test func tagsPaginateWithNLastAndLinkHeaders() async throws {
        try await withRegistry { c, _, _ in
            let config = try await c.pushBlob("repo", emptyConfig)
            for t in ["c", "a", "e", "b", "d"] {
                try await c.pushManifest("repo", t, config: (config, 2, MediaType.ociEmpty), layers: [], annotations: ["t": t])
            }
            let all = try await c.req(.get, "/v2/repo/tags/list")
            #expect(all.json["tags"] as? [String] == ["a", "b", "c", "d", "e"])
            #expect(all.json["name"] as? String == "repo")
            let p1 = try await c.req(.get, "/v2/repo/tags/list?n=2")
            #expect(p1.json["tags"] as? [String] == ["a", "b"])
            #expect(p1.header("Link") == "</v2/repo/tags/list?n=2&last=b>; rel=\"next\"")
            let p2 = try await c.req(.get, "/v2/repo/tags/list?n=2&last=b")
            #expect(p2.json["tags"] as? [String] == ["c", "d"])
            let none = try await c.req(.get, "/v2/repo/tags/list?n=0")
            #expect(none.json["tags"] as? [String] == [])
            #expect(none.header("Link") == nil)
            let p3 = try await c.req(.get, "/v2/repo/tags/list?n=2&last=d")
            #expect(p3.json["tags"] as? [String] == ["e"])
            #expect(p3.header("Link") == nil)
            let unknown = try await c.req(.get, "/v2/nope/tags/list")
            #expect(unknown.status.code == 404)
            #expect(unknown.errorCode == "NAME_UNKNOWN")
        }
    }

    @Test func referrersListManifestsWithASubjectAndFilterByArtifactType() async throws {
        try await withRegistry { c, _, _ in
            let config = try await c.pushBlob("repo", emptyConfig)
            let (model, modelBytes) = try await c.pushManifest("repo", "v1", config: (config, 2, MediaType.ociEmpty), layers: [])
            let sig = manifestJSON(
                config: (config, 2, MediaType.ociEmpty), layers: [], subject: (model, modelBytes.count),
                artifactType: "application/vnd.example.signature", annotations: ["by": "ci"])
            let put = try await c.req(
                .put, "/v2/repo/manifests/\(Digest.of(sig))", headers: [.contentType: MediaType.ociManifest], body: sig)
            #expect(put.status.code == 201)
            #expect(put.header("OCI-Subject") == model.description)
            let sbom = manifestJSON(
                config: (config, 2, MediaType.ociEmpty), layers: [], subject: (model, modelBytes.count),
                artifactType: "application/spdx+json")
            _ = try await c.req(.put, "/v2/repo/manifests/\(Digest.of(sbom))", headers: [.contentType: MediaType.ociManifest], body: sbom)

            let all = try await c.req(.get, "/v2/repo/referrers/\(model)")
            #expect(all.status.code == 200)
            #expect(all.header("Content-Type") == MediaType.ociIndex)
            let manifests = try #require(all.json["manifests"] as? [[String: Any]])
            #expect(
                Set(manifests.compactMap { $0["artifactType"] as? String }) == [
                    "application/vnd.example.signature", "application/spdx+json",
                ])
            let s = try #require(manifests.first { $0["digest"] as? String == Digest.of(sig).description })
            #expect(s["size"] as? Int == sig.count)
            #expect(s["annotations"] as? [String: String] == ["by": "ci"])
            let filtered = try await c.req(.get, "/v2/repo/referrers/\(model)?artifactType=application/spdx%2Bjson")
            #expect(filtered.header("OCI-Filters-Applied") == "artifactType")
            #expect((filtered.json["manifests"] as? [[String: Any]])?.count == 1)
            let none = try await c.req(.get, "/v2/repo/referrers/\(Digest.of([1]))")
            #expect(none.status.code == 200)
            #expect((none.json["manifests"] as? [Any])?.isEmpty == true)
        }
    }

    @Test func catalogPaginates() async throws {
        try await withRegistry { c, _, _ in
            for r in ["b/x", "a", "c"] { try await c.pushBlob(r, emptyConfig) }
            #expect(try await c.req(.get, "/v2/_catalog").json["repositories"] as? [String] == ["a", "b/x", "c"])
            let p = try await c.req(.get, "/v2/_catalog?n=1&last=a")
            #expect(p.json["repositories"] as? [String] == ["b/x"])
            #expect(p.header("Link") == "</v2/_catalog?n=1&last=b/x>; rel=\"next\"")
        }
    }

    @Test func crossRepositoryMount() async throws {
        try await withRegistry { c, _, _ in
            let data = randomBytes(4000, seed: 10)
            let d = try await c.pushBlob("src", data)
            let m = try await c.req(.post, "/v2/dst/blobs/uploads/?mount=\(d)&from=src")
            #expect(m.status.code == 201)
            #expect(m.header("Location") == "/v2/dst/blobs/\(d)")
            #expect(try await c.req(.get, "/v2/dst/blobs/\(d)").bytes == data)
            // Not in the named source: an upload session instead.
            let n = try await c.req(.post, "/v2/dst2/blobs/uploads/?mount=\(d)&from=elsewhere")
            #expect(n.status.code == 202)
            #expect(n.header("Location")?.hasPrefix("/v2/dst2/blobs/uploads/") == true)
            // No source named: mounted if the registry has it anywhere.
            #expect(try await c.req(.post, "/v2/dst3/blobs/uploads/?mount=\(d)").status.code == 201)
            #expect(try await c.req(.post, "/v2/dst3/blobs/uploads/?mount=\(Digest.of([0]))").status.code == 202)
        }
    }
}

@Suite struct OCIBadInputTests {
    @Test func invalidNamesDigestsAndReferencesGetSpecErrors() async throws {
        try await withRegistry { c, _, _ in
            for name in ["UPPER/case", "a//b", "a/-b", "a..b", "_x"] {
                let r = try await c.req(.get, "/v2/\(name)/tags/list")
                #expect(r.status.code == 400, "\(name)")
                #expect(r.errorCode == "NAME_INVALID", "\(name)")
            }
            let traversal = try await c.req(.get, "/v2/../x/tags/list")
            #expect(traversal.status.code == 400)
            #expect(traversal.errorCode == "NAME_INVALID")
            for digest in [
                "sha256:abc", "sha256:" + String(repeating: "G", count: 64), "nocolon", "sha256:" + String(repeating: "A", count: 64),
            ] {
                let r = try await c.req(.get, "/v2/repo/blobs/\(digest)")
                #expect(r.status.code == 400, "\(digest)")
                #expect(r.errorCode == "DIGEST_INVALID", "\(digest)")
            }
            let unknownAlgorithm = try await c.req(.post, "/v2/repo/blobs/uploads/?digest=md5:d41d8cd98f00b204e9800998ecf8427e", body: [1])
            #expect(unknownAlgorithm.status.code == 400)
            #expect(unknownAlgorithm.errorCode == "DIGEST_INVALID")
            let badTag = try await c.req(
                .put, "/v2/repo/manifests/-bad", headers: [.contentType: MediaType.ociManifest], body: Array("{}".utf8))
            #expect(badTag.status.code == 400)
            let badN = try await c.req(.get, "/v2/repo/tags/list?n=-1")
            #expect(badN.status.code == 400)
            let method = try await c.req(.post, "/v2/repo/manifests/v1")
            #expect(method.status.code == 405)
        }
    }

    @Test func uploadsRejectMismatchedLengthsAndUnknownSessions() async throws {
        try await withRegistry { c, _, _ in
            let location = try #require(try await c.req(.post, "/v2/repo/blobs/uploads/").header("Location"))
            let r = try await c.req(.patch, location, headers: [.contentRange: "0-9"], body: [UInt8](repeating: 1, count: 20))
            #expect(r.status.code == 400)
            #expect(r.errorCode == "SIZE_INVALID")
            let unknown = try await c.req(.patch, "/v2/repo/blobs/uploads/does-not-exist", body: [1])
            #expect(unknown.status.code == 404)
            #expect(unknown.errorCode == "BLOB_UPLOAD_UNKNOWN")
            let otherRepo = try await c.req(.get, location.replacingOccurrences(of: "/v2/repo/", with: "/v2/other/"))
            #expect(otherRepo.status.code == 404)
            let noDigest = try await c.req(.put, location)
            #expect(noDigest.status.code == 400)
            #expect(noDigest.errorCode == "DIGEST_INVALID")
        }
    }

    @Test func healthAndMetrics() async throws {
        try await withRegistry { c, _, _ in
            try await c.pushBlob("repo", randomBytes(1234, seed: 1))
            #expect(try await c.req(.get, "/healthz").status.code == 200)
            let m = try await c.req(.get, "/metrics").text
            #expect(m.contains("depot_http_requests_total{route=\"uploadStart\",method=\"POST\",status=\"201\"} 1"))
            #expect(m.contains("depot_store_logical_bytes 1234"))
            #expect(m.contains("depot_http_received_bytes_total 1234"))
            // Latency and push stages, as histograms: one upload request, one blob write.
            #expect(m.contains("depot_http_request_duration_seconds_count{route=\"uploadStart\",method=\"POST\"} 1"))
            #expect(m.contains("depot_http_request_duration_seconds_bucket{route=\"uploadStart\",method=\"POST\",le=\"+Inf\"} 1"))
            #expect(m.contains("depot_push_stage_seconds_count{stage=\"receive\"} 1"))
            #expect(m.contains("depot_push_stage_seconds_count{stage=\"hash\"} 1"))
            #expect(m.contains("depot_push_stage_seconds_count{stage=\"commit\"} 1"))
            #expect(m.contains("depot_build_info{version=\"\(BuildInfo.version)\",catalog_schema=\"\(Database.schemaVersion)\"} 1"))
            // Prometheus' own linter (Debian's prometheus package) accepts the exposition.
            let promtool = Process()
            promtool.executableURL = URL(fileURLWithPath: "/usr/bin/promtool")
            promtool.arguments = ["check", "metrics"]
            let input = Pipe()
            let output = Pipe()
            promtool.standardInput = input
            promtool.standardOutput = output
            promtool.standardError = output
            try promtool.run()
            input.fileHandleForWriting.write(Data(m.utf8))
            try input.fileHandleForWriting.close()
            let said = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            promtool.waitUntilExit()
            #expect(promtool.terminationStatus == 0, "promtool check metrics: \(said)")
        }
    }
}

/// Sends raw bytes on a fresh TCP connection to 127.0.0.1:port, then closes it.
func sendRaw(port: Int, _ bytes: [UInt8]) {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    defer { close(fd) }
    var addr = sockaddr_in()
    addr.sin_family = sa_family_t(AF_INET)
    addr.sin_port = UInt16(port).bigEndian
    addr.sin_addr.s_addr = inet_addr("127.0.0.1")
    let ok = withUnsafePointer(to: &addr) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
    }
    guard ok == 0 else { return }
    _ = bytes.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, 0) }
    usleep(100_000)
}

@Suite struct TruncatedBodyTests {
    @Test func aTruncatedUploadStoresNothingAndLeavesNoSessionBehind() async throws {
        try await withRegistry { c, registry, port in
            let data = randomBytes(100_000, seed: 11)
            let d = Digest.of(data)
            let head = Array("POST /v2/repo/blobs/uploads/?digest=\(d) HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100000\r\n\r\n".utf8)
            sendRaw(port: port, head + Array(data[0..<40_000]))
            for _ in 0..<50 where registry.uploads.count > 0 { try await Task.sleep(for: .milliseconds(50)) }
            #expect(registry.uploads.count == 0)
            #expect(try await c.req(.head, "/v2/repo/blobs/\(d)").status.code == 404)
            #expect(try registry.store.stats().blobs == 0)
            // A chunk cut short leaves a session that says how much arrived, and can resume.
            let location = try #require(try await c.req(.post, "/v2/repo/blobs/uploads/").header("Location"))
            let patch = Array("PATCH \(location) HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100000\r\n\r\n".utf8)
            sendRaw(port: port, patch + Array(data[0..<30_000]))
            var status = try await c.req(.get, location)
            for _ in 0..<60 where status.header("Range") == "0-0" {
                try await Task.sleep(for: .milliseconds(50))
                status = try await c.req(.get, location)
            }
            #expect(status.status.code == 204)
            let range = try #require(status.header("Range"))
            let end = try #require(Int(range.split(separator: "-")[1]))
            let resumed = try await c.req(.patch, location, headers: [.contentRange: "\(end + 1)-99999"], body: Array(data[(end + 1)...]))
            #expect(end == 29_999)
            #expect(resumed.status.code == 202, "range \(range): \(resumed.text)")
            #expect(try await c.req(.put, "\(location)?digest=\(d)").status.code == 201)
            #expect(try await c.req(.get, "/v2/repo/blobs/\(d)").bytes == data)
        }
    }
}

@Suite struct RoutingTests {
    @Test func repositoriesNamedLikeRouteSegmentsStillRoute() async throws {
        try await withRegistry { c, _, _ in
            // Components such as "blobs", "manifests" and "uploads" are valid in names.
            for repo in ["a/manifests/b", "blobs", "x/blobs/uploads", "tags/list/y"] {
                let config = try await c.pushBlob(repo, emptyConfig)
                let (d, _) = try await c.pushManifest(repo, "v1", config: (config, 2, MediaType.ociEmpty), layers: [])
                #expect(try await c.req(.get, "/v2/\(repo)/manifests/v1").status.code == 200, "\(repo)")
                #expect(try await c.req(.get, "/v2/\(repo)/tags/list").json["tags"] as? [String] == ["v1"], "\(repo)")
                #expect(try await c.req(.head, "/v2/\(repo)/blobs/\(config)").status.code == 200, "\(repo)")
                #expect(try await c.req(.get, "/v2/\(repo)/referrers/\(d)").status.code == 200, "\(repo)")
            }
            // A percent-encoded digest is decoded.
            let data = randomBytes(10, seed: 3)
            let d = try await c.pushBlob("enc", data)
            let encoded = d.description.replacingOccurrences(of: ":", with: "%3A")
            #expect(try await c.req(.get, "/v2/enc/blobs/\(encoded)").bytes == data)
        }
    }
}
