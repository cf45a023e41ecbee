import DepotCore
import DepotRegistry
import DepotServer
import DepotStore
import DepotTestSupport
import Foundation
import HTTPTypes
import HummingbirdTesting
import Testing

/// Numbers a hostile client sends where the server expects a count, an offset or a size.
let hostileNumbers = [
    "0", "-1", "9223372036854775807", "9223372036854775808", "18446744073709551616",
    "99999999999999999999999999999999", "abc", "+5", " 5", "1e3", "0x10", "",
]

/// Every route and parameter that takes a number (OCI and /depot/v1), sent every hostile number:
/// no 5xx, no dropped connection, and the server still answers afterwards.
@Suite struct HostileNumberTests {
    @Test func everyNumericParameterIsBoundedAndChecked() async throws {
        try await withRegistry { c, _, port in
            let config = try await c.pushBlob("team/m", emptyConfig)
            let layer = randomBytes(200_000, seed: 7)
            let blob = try await c.pushBlob("team/m", layer)
            let (manifest, _) = try await c.pushManifest(
                "team/m", "v1", config: (config, emptyConfig.count, MediaType.ociEmpty),
                layers: [(blob, layer.count)])
            let upload = try #require(try await c.req(.post, "/v2/team/m/blobs/uploads/").header("Location"))
            var failures: [String] = []

            func check(_ what: String, _ status: Int?) {
                guard let status else {
                    failures.append("\(what): no response")
                    return
                }
                if status >= 500 { failures.append("\(what): \(status)") }
            }
            for v in hostileNumbers {
                let q = v.addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? v
                // Query parameters.
                for path in [
                    "/v2/_catalog?n=\(q)", "/v2/team/m/tags/list?n=\(q)", "/v2/team/m/referrers/\(manifest)?n=\(q)",
                    "/depot/v1/jobs?limit=\(q)", "/depot/v1/jobs/\(q)", "/depot/v1/lineage/\(manifest)?depth=\(q)",
                    "/depot/v1/audit?limit=\(q)", "/depot/v1/audit?since=\(q)", "/depot/v1/audit?until=\(q)",
                    "/depot/v1/events?after=\(q)", "/depot/v1/events?n=\(q)", "/depot/v1/webhooks/deliveries?n=\(q)",
                    "/depot/v1/repositories/team/m/aliases/v1/resolve?at=\(q)",
                ] {
                    check("GET \(path)", try await c.req(.get, path).status.code)
                }
                // Headers with numbers, sent raw so that no client library corrects them.
                let raw: [(String, String)] = [
                    ("GET blob Range bytes=V-", "GET /v2/team/m/blobs/\(blob) HTTP/1.1\r\nHost: x\r\nRange: bytes=\(v)-\r\n\r\n"),
                    ("GET blob Range bytes=0-V", "GET /v2/team/m/blobs/\(blob) HTTP/1.1\r\nHost: x\r\nRange: bytes=0-\(v)\r\n\r\n"),
                    ("GET blob Range bytes=-V", "GET /v2/team/m/blobs/\(blob) HTTP/1.1\r\nHost: x\r\nRange: bytes=-\(v)\r\n\r\n"),
                    (
                        "POST monolithic Content-Range 0-V",
                        "POST /v2/team/m/blobs/uploads/?digest=\(blob) HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nContent-Range: 0-\(v)\r\n\r\n"
                    ),
                    (
                        "POST monolithic Content-Range V-V",
                        "POST /v2/team/m/blobs/uploads/?digest=\(blob) HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nContent-Range: \(v)-\(v)\r\n\r\n"
                    ),
                    (
                        "PATCH Content-Range 0-V",
                        "PATCH \(upload) HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nContent-Range: 0-\(v)\r\n\r\n"
                    ),
                    (
                        "PUT upload Content-Range 0-V",
                        "PUT \(upload)?digest=\(blob) HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nContent-Range: 0-\(v)\r\n\r\n"
                    ),
                    (
                        "PUT manifest Content-Length V",
                        "PUT /v2/team/m/manifests/x HTTP/1.1\r\nHost: x\r\nContent-Type: \(MediaType.ociManifest)\r\nContent-Length: \(v)\r\n\r\n"
                    ),
                ]
                for (what, text) in raw {
                    // A Content-Length NIO cannot parse closes the connection with 400 at the codec
                    // (nothing reaches the handler); that is a client error, not a crash.
                    let r = try await rawRequest(port: port, text)
                    if let r {
                        check("\(what) [\(v)]", r.status)
                    } else if !what.contains("Content-Length") {
                        check("\(what) [\(v)]", nil)
                    }
                }
                // JSON bodies with numbers.
                let jsonValue = v.isEmpty || Double(v) == nil || v.hasPrefix("0x") || v.hasPrefix("+") || v.hasPrefix(" ") ? "\"\(v)\"" : v
                let bodies: [(HTTPRequest.Method, String, String)] = [
                    (.post, "/depot/v1/repositories/team/m/aliases/production/rollback", "{\"steps\": \(jsonValue)}"),
                    (
                        .post, "/depot/v1/repositories/team/m/deployments/prod/rollout",
                        "{\"reference\": \"v1\", \"steps\": [\(jsonValue)], \"analysis_seconds\": \(jsonValue)}"
                    ),
                    (.post, "/depot/v1/repositories/team/m/deployments/prod/nodes/n1", "{\"state\": \"ready\", \"version\": \(jsonValue)}"),
                    (.post, "/depot/v1/jobs/1/complete", "{\"job\": \(jsonValue), \"attempt\": \(jsonValue)}"),
                ]
                for (method, path, body) in bodies {
                    check("\(method) \(path) \(body)", try await c.req(method, path, body: Array(body.utf8)).status.code)
                }
            }
            #expect(failures.isEmpty, "\(failures)")
            // Still alive, and the store is intact.
            #expect(try await c.req(.get, "/v2/").status.code == 200)
            #expect(try await c.req(.get, "/v2/team/m/blobs/\(blob)").bytes == layer)
        }
    }

    /// The request of the hardening issue that used to abort the process on an overflow trap.
    @Test func theOverflowingContentRangeIs416NotACrash() async throws {
        try await withRegistry { c, _, port in
            let d = Digest.of([1, 2, 3])
            let r = try #require(
                try await rawRequest(
                    port: port,
                    """
                    POST /v2/a/blobs/uploads/?digest=\(d) HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\
                    Content-Range: 0-9223372036854775807\r\n\r\n
                    """))
            #expect(r.status == 416)
            #expect(r.body.contains("RANGE_INVALID"))
            #expect(try await c.req(.get, "/v2/").status.code == 200)
            // And the upload it would have made is not left behind.
            #expect(try await c.req(.get, "/v2/a/blobs/\(d)").status.code == 404)
        }
    }

    @Test func recipeEntriesWithHostileLengthsAreRefused() async throws {
        try await withRegistry { c, _, _ in
            for length in [UInt32(0), UInt32.max, UInt32(1 << 31)] {
                var body = [UInt8](repeating: 7, count: 32)
                withUnsafeBytes(of: length.littleEndian) { body.append(contentsOf: $0) }
                let r = try await c.req(.put, "/depot/v1/repositories/a/blobs/\(Digest.of([1]))/recipe", body: body)
                #expect((400..<500).contains(Int(r.status.code)), "length \(length): \(r.status)")
            }
            #expect(try await c.req(.get, "/v2/").status.code == 200)
        }
    }
}

/// References that cannot name a manifest.
@Suite struct InvalidReferenceTests {
    @Test func getAndHeadOfAnInvalidReferenceAre404ManifestUnknown() async throws {
        try await withRegistry { c, _, _ in
            for ref in [".INVALID_MANIFEST_NAME", "sha256:xyz", "-bad", String(repeating: "a", count: 200)] {
                let get = try await c.req(.get, "/v2/repo/manifests/\(ref)")
                #expect(get.status.code == 404, "\(ref)")
                #expect(get.errorCode == "MANIFEST_UNKNOWN", "\(ref)")
                #expect(try await c.req(.head, "/v2/repo/manifests/\(ref)").status.code == 404, "\(ref)")
            }
            // An artifactType that is not a bounded media type (it is copied into every event, audit
            // row and referrers answer) is refused.
            let cfg = try await c.pushBlob("repo", emptyConfig)
            let huge = manifestJSON(
                config: (cfg, 2, MediaType.ociEmpty), layers: [], artifactType: "application/" + String(repeating: "x", count: 3 << 20))
            let r = try await c.req(.put, "/v2/repo/manifests/big", headers: [.contentType: MediaType.ociManifest], body: huge)
            #expect(r.status.code == 400)
            #expect(r.errorCode == "MANIFEST_INVALID")
            // A PUT under an invalid tag is still a client error saying why.
            let put = try await c.req(
                .put, "/v2/repo/manifests/.INVALID", headers: [.contentType: MediaType.ociManifest], body: Array("{}".utf8))
            #expect(put.status.code == 400)
        }
    }
}

/// `uploads:` limits: per client and in total, lifetime, byte rate, blob size.
@Suite struct UploadLimitTests {
    @Test func sessionsAreCountedPerClientAndInTotalAtomically() async throws {
        let dir = TempDir()
        let store = try ChunkStore(root: dir.path, create: true)
        var limits = UploadLimits()
        limits.maxSessions = 5
        limits.maxSessionsPerClient = 3
        let registry = Registry(store: store, uploads: limits)
        let repo = try RepositoryName("r")
        var a: [UploadSessionStatus] = []
        for _ in 0..<3 { a.append(try registry.uploads.start(repo, client: "10.0.0.1")) }
        // The fourth from the same client is refused; another client still gets in.
        #expect(throws: RegistryError.self) { try registry.uploads.start(repo, client: "10.0.0.1") }
        let b1 = try registry.uploads.start(repo, client: "10.0.0.2")
        _ = try registry.uploads.start(repo, client: "10.0.0.2")
        // The total is reached: everyone waits.
        #expect(throws: RegistryError.self) { try registry.uploads.start(repo, client: "10.0.0.3") }
        // Finishing or cancelling frees a slot for that client.
        try registry.uploads.cancel(repo, a[0].id)
        #expect(throws: RegistryError.self) { try registry.uploads.cancel(repo, a[0].id) } // twice: counted once
        _ = try registry.uploads.start(repo, client: "10.0.0.1")
        #expect(throws: RegistryError.self) { try registry.uploads.start(repo, client: "10.0.0.1") }
        try registry.uploads.cancel(repo, b1.id)
        #expect(registry.uploads.count == 4)
        // Racing starts never overshoot.
        registry.uploads.expire(now: Date().addingTimeInterval(30 * 86_400))
        let started = Locked(0)
        DispatchQueue.concurrentPerform(iterations: 64) { i in
            if (try? registry.uploads.start(repo, client: "c\(i % 2)")) != nil { started.withLock { $0 += 1 } }
        }
        #expect(started.withLock { $0 } == 5)
        #expect(registry.uploads.count == 5)
        withExtendedLifetime(dir) {}
    }

    @Test func ipv6ClientsAreCountedByTheirSlash64() {
        #expect(UploadSessions.clientKey("2001:db8:1:2:aaaa::1") == UploadSessions.clientKey("2001:db8:1:2:bbbb:cccc:dddd:eeee"))
        #expect(UploadSessions.clientKey("2001:db8:1:2::1") != UploadSessions.clientKey("2001:db8:1:3::1"))
        #expect(UploadSessions.clientKey("::1") == "0:0:0:0::/64")
        #expect(UploadSessions.clientKey("127.0.0.1") == "127.0.0.1")
        #expect(UploadSessions.clientKey(nil) == "unknown")
    }

    @Test func aSessionPastItsLifetimeExpiresEvenWhileBusy() async throws {
        var config = ServerConfig.forTests()
        config.uploads.maxLifetimeSeconds = 60
        try await withRegistry(config: config) { c, registry, _ in
            let location = try #require(try await c.req(.post, "/v2/r/blobs/uploads/").header("Location"))
            let id = String(location.split(separator: "/").last!)
            // A request is "using" it, as a trickling PATCH would.
            let session = try registry.uploads.claim(try RepositoryName("r"), id)
            #expect(registry.uploads.expire(now: Date().addingTimeInterval(30)) == 0)
            #expect(registry.uploads.expire(now: Date().addingTimeInterval(61)) == 1)
            // The holder's writes go nowhere: acknowledging them fails; the id is gone.
            try [UInt8](repeating: 1, count: 10).withUnsafeBytes { try session.append($0) }
            #expect(throws: RegistryError.self) { try session.checkpoint() }
            let r = try await c.req(.get, location)
            #expect(r.status.code == 404)
            #expect(r.errorCode == "BLOB_UPLOAD_UNKNOWN")
        }
    }

    @Test func blobsOverTheMaximumSizeAre413ByEveryRoute() async throws {
        var config = ServerConfig.forTests()
        config.uploads.maxBlobBytes = 1 << 20
        try await withRegistry(config: config) { c, _, port in
            let big = randomBytes((1 << 20) + 1, seed: 3)
            let mono = try await c.req(.post, "/v2/r/blobs/uploads/?digest=\(Digest.of(big))", body: big)
            #expect(mono.status.code == 413)
            #expect(mono.errorCode == "SIZE_INVALID")
            // A declared length over the limit is refused before the body is read.
            let declared = try #require(
                try await rawRequest(
                    port: port,
                    """
                    POST /v2/r/blobs/uploads/?digest=\(Digest.of(big)) HTTP/1.1\r\nHost: x\r\nContent-Length: 9000000000\r\n\r\n
                    """))
            #expect(declared.status == 413)
            // Chunked: the PATCH that crosses the limit is refused; the upload keeps what it had.
            let location = try #require(try await c.req(.post, "/v2/r/blobs/uploads/").header("Location"))
            let first = try await c.req(.patch, location, headers: [.contentRange: "0-599999"], body: Array(big[0..<600_000]))
            #expect(first.status.code == 202)
            let next = try #require(first.header("Location"))
            let second = try await c.req(.patch, next, headers: [.contentRange: "600000-\(big.count - 1)"], body: Array(big[600_000...]))
            #expect(second.status.code == 416 || second.status.code == 413)
            // A Content-Range beyond the limit: 416.
            let beyond = try await c.req(.patch, next, headers: [.contentRange: "600000-2000000"], body: [1])
            #expect(beyond.status.code == 416)
            // A recipe naming more than the limit: 413, before any chunk is read back.
            var recipe: [UInt8] = []
            let hash = [UInt8](repeating: 9, count: 32)
            for _ in 0..<5 {
                recipe += hash
                withUnsafeBytes(of: UInt32(256 << 10).littleEndian) { recipe.append(contentsOf: $0) }
            }
            let commit = try await c.req(.put, "/depot/v1/repositories/r/blobs/\(Digest.of(big))/recipe", body: recipe)
            #expect(commit.status.code == 413)
            #expect(try await c.req(.get, "/v2/").status.code == 200)
        }
    }

    @Test func aTricklingUploadIsCutOffAndKeepsWhatArrived() async throws {
        var config = ServerConfig.forTests()
        config.uploads.minBytesPerSecond = 100_000
        config.uploads.rateGraceSeconds = 1
        try await withRegistry(config: config) { c, _, port in
            let location = try #require(try await c.req(.post, "/v2/r/blobs/uploads/").header("Location"))
            let conn = try RawConnection(port: port)
            conn.send("PATCH \(location) HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\nContent-Range: 0-99\r\n\r\n")
            var response: RawResponse?
            for _ in 0..<20 {
                try await Task.sleep(for: .milliseconds(300))
                guard conn.send([1]) else { break }
            }
            response = await conn.readResponse()
            let r = try #require(response)
            #expect(r.status == 408)
            #expect(r.body.contains("too slow"))
            // The session survives and says how much it holds, so the client can resume.
            let status = try await c.req(.get, location)
            #expect(status.status.code == 204)
        }
    }
}

/// Connection-level limits: header timeout (slow loris) and the connection cap, against a real
/// `depot serve` (the in-process test server does not carry the connection delegate over).
@Suite struct ConnectionLimitTests {
    func withServer(_ yaml: String, _ body: (ServerProcess) async throws -> Void) async throws {
        let dir = TempDir("depot-conn")
        let config = dir.path + "/depot.yaml"
        try (yaml + "\npipelines:\n  directory: \"\"\n").write(toFile: config, atomically: true, encoding: .utf8)
        let server = try ServerProcess(storage: dir.path + "/storage", config: config)
        defer { server.stop() }
        try await server.waitReady()
        try await body(server)
    }

    /// Pushes a blob monolithically over a raw connection; returns its digest.
    static func pushBlob(_ blob: [UInt8], port: Int) async throws -> Digest {
        let d = Digest.of(blob)
        let push = try RawConnection(port: port)
        push.send("POST /v2/r/blobs/uploads/?digest=\(d) HTTP/1.1\r\nHost: x\r\nContent-Length: \(blob.count)\r\n\r\n")
        push.send(blob)
        #expect(await push.readResponse()?.status == 201)
        return d
    }

    @Test func aConnectionThatNeverCompletesItsHeadIsClosed() async throws {
        try await withServer("server:\n  header_timeout_seconds: 1\n") { server in
            let loris = try RawConnection(port: server.port, receiveTimeout: 5)
            loris.send("GET /v2/ HTTP/1.1\r\nHost: x\r\n")
            let started = ContinuousClock.now
            for _ in 0..<8 {
                try await Task.sleep(for: .milliseconds(250))
                if !loris.send("X-Slow: 1\r\n") { break }
            }
            #expect(await loris.isClosedByPeer())
            #expect(ContinuousClock.now - started < .seconds(20)) // long before the 120 s idle timeout
            // A keep-alive connection that sends whole requests is not affected, even with pauses
            // longer than the header timeout between them (the idle timeout governs those).
            let keep = try RawConnection(port: server.port)
            for _ in 0..<3 {
                keep.send("GET /v2/ HTTP/1.1\r\nHost: x\r\n\r\n")
                #expect(await keep.readResponse()?.status == 200)
                try await Task.sleep(for: .milliseconds(1500))
            }
        }
    }

    @Test func aClientThatNeverReadsItsBlobIsCutOff() async throws {
        try await withServer("server:\n  idle_timeout_seconds: 2\n") { server in
            let blob = randomBytes(24 << 20, seed: 11)
            let d = try await Self.pushBlob(blob, port: server.port)
            // Ask for it, read nothing for longer than the timeout, then drain what is buffered.
            let sloth = try RawConnection(port: server.port, receiveTimeout: 10)
            sloth.send("GET /v2/r/blobs/\(d) HTTP/1.1\r\nHost: x\r\n\r\n")
            try await Task.sleep(for: .seconds(5))
            let (received, closed) = await sloth.drain()
            #expect(closed, "the server kept a connection open for a client that does not read")
            #expect(received > 0 && received < blob.count)
            // Everyone else is served.
            let other = try RawConnection(port: server.port)
            other.send("GET /v2/ HTTP/1.1\r\nHost: x\r\n\r\n")
            #expect(await other.readResponse()?.status == 200)
        }
    }

    /// An attacker's read found `100 Continue` written into the middle of a blob being streamed
    /// on the same connection (HTTP/1.1 pipelining): the interim response must wait its turn.
    @Test func aPipelinedExpectContinueNeverLandsInsideAnotherResponse() async throws {
        try await withServer("") { server in
            let blob = randomBytes(8 << 20, seed: 12)
            let d = try await Self.pushBlob(blob, port: server.port)
            let c = try RawConnection(port: server.port)
            c.send("GET /v2/r/blobs/\(d) HTTP/1.1\r\nHost: x\r\n\r\n")
            c.send(
                "PUT /v2/r/manifests/z HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Type: \(MediaType.ociManifest)\r\n"
                    + "Content-Length: 2\r\n\r\n{}")
            let get = try #require(await c.readResponse())
            #expect(get.status == 200)
            #expect(get.bytes.count == blob.count)
            #expect(Digest.of(get.bytes) == d, "the blob's bytes were changed on the wire")
            let interim = try #require(await c.readResponse())
            #expect(interim.status == 100)
            #expect(await c.readResponse()?.status == 400)
        }
    }

    @Test func connectionsPastTheCapWaitUntilOneCloses() async throws {
        try await withServer("server:\n  max_connections: 2\n") { server in
            var held: [RawConnection] = []
            for _ in 0..<2 {
                let h = try RawConnection(port: server.port)
                h.send("GET /v2/ HTTP/1.1\r\nHost: x\r\n\r\n")
                #expect(await h.readResponse()?.status == 200)
                held.append(h)
            }
            let waiting = try RawConnection(port: server.port, receiveTimeout: 1)
            waiting.send("GET /v2/ HTTP/1.1\r\nHost: x\r\n\r\n")
            #expect(await waiting.readResponse() == nil) // not accepted yet: it waits in the backlog
            held.removeAll() // two close: it is served
            let served = try RawConnection(port: server.port, receiveTimeout: 5)
            served.send("GET /v2/ HTTP/1.1\r\nHost: x\r\n\r\n")
            #expect(await served.readResponse()?.status == 200)
        }
    }
}

/// Lists are paginated by default; a `Link` header points at the next page.
@Suite struct PaginationTests {
    @Test func tagsCatalogAndReferrersArePagedWhenNIsAbsent() async throws {
        var config = ServerConfig.forTests()
        config.limits.defaultPageSize = 2
        try await withRegistry(config: config) { c, _, _ in
            let cfg = try await c.pushBlob("p/a", emptyConfig)
            let (subject, subjectBytes) = try await c.pushManifest("p/a", "t0", config: (cfg, 2, MediaType.ociEmpty), layers: [])
            for i in 1..<5 {
                try await c.pushManifest(
                    "p/a", "t\(i)", config: (cfg, 2, MediaType.ociEmpty), layers: [],
                    subject: (subject, subjectBytes.count), artifactType: "application/x.t\(i)")
            }
            for name in ["p/b", "p/c"] { try await c.pushBlob(name, emptyConfig) }
            let tags = try await c.req(.get, "/v2/p/a/tags/list")
            #expect((tags.json["tags"] as? [String]) == ["t0", "t1"])
            let link = try #require(tags.header("Link"))
            #expect(link.contains("last=t1"))
            let url = String(link.dropFirst().prefix { $0 != ">" })
            #expect((try await c.req(.get, url).json["tags"] as? [String]) == ["t2", "t3"])
            // A client's n is honoured (and capped at 10000).
            #expect((try await c.req(.get, "/v2/p/a/tags/list?n=10").json["tags"] as? [String])?.count == 5)
            let catalog = try await c.req(.get, "/v2/_catalog")
            #expect((catalog.json["repositories"] as? [String])?.count == 2)
            #expect(catalog.header("Link") != nil)
            // Referrers: four, two a page, every one seen once across pages.
            var seen: [String] = []
            var next: String? = "/v2/p/a/referrers/\(subject)"
            while let page = next {
                let r = try await c.req(.get, page)
                #expect(r.status.code == 200)
                seen += ((r.json["manifests"] as? [[String: Any]]) ?? []).compactMap { $0["digest"] as? String }
                next = r.header("Link").map { String($0.dropFirst().prefix { $0 != ">" }) }
                if seen.count > 10 { break }
            }
            #expect(seen.count == 4)
            #expect(Set(seen).count == 4)
        }
    }
}

/// `/metrics` reads counters kept by the catalog; they must equal a full scan after any change.
@Suite struct StoreCounterTests {
    @Test func incrementalCountersMatchAFullScanAfterPushesDeletesAndGC() async throws {
        try await withRegistry { c, registry, _ in
            func agree() throws {
                let fast = try registry.store.stats(exact: false)
                let exact = try registry.store.stats(exact: true)
                #expect(fast == exact, "counters \(fast) vs scan \(exact)")
            }
            try agree()
            let cfg = try await c.pushBlob("s/a", emptyConfig)
            var layers: [(Digest, Int)] = []
            for i in 0..<3 {
                let bytes = randomBytes(300_000 + i * 1000, seed: UInt64(40 + i))
                layers.append((try await c.pushBlob("s/a", bytes), bytes.count))
            }
            try agree()
            let (m, _) = try await c.pushManifest("s/a", "v1", config: (cfg, 2, MediaType.ociEmpty), layers: layers)
            _ = try await c.req(.post, "/v2/s/a/blobs/uploads/") // an unfinished write counts too
            try agree()
            #expect(try await c.req(.delete, "/v2/s/a/manifests/v1").status.code == 202)
            #expect(try await c.req(.delete, "/v2/s/a/manifests/\(m)").status.code == 202)
            registry.uploads.expire(now: Date().addingTimeInterval(30 * 86_400))
            _ = try registry.store.collectGarbage(now: Int64(Date().timeIntervalSince1970 * 1000) + (400 * 86_400) * 1000)
            try agree()
            let metrics = try await c.req(.get, "/metrics").text
            #expect(metrics.contains("depot_store_chunks \(try registry.store.stats().chunks)"))
        }
    }
}
