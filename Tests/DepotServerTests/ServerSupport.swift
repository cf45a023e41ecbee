import DepotCore
import DepotRegistry
import DepotServer
import DepotStore
import DepotTestSupport
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import Logging
import NIOCore

extension ServerConfig {
    /// The defaults, with a header timeout a live test client outlives: HummingbirdTesting's
    /// client connects when the app starts and may stay silent for longer than the default 30 s
    /// while the whole suite loads both cores (its first request then met a closed connection:
    /// "I/O on closed channel"). The timeout itself is tested in HostileInputTests with its own
    /// connections.
    static func forTests() -> ServerConfig {
        var c = ServerConfig()
        c.limits.headerTimeoutSeconds = 600
        return c
    }
}

/// Runs `body` against a live Depot server (real sockets, full channel pipeline) on a fresh store.
func withRegistry(
    config base: ServerConfig = .forTests(),
    readiness: Readiness? = nil,
    eventLoopGroup: EventLoopGroupProvider = .singleton,
    _ body: @Sendable (any TestClientProtocol, Registry, Int) async throws -> Void
) async throws {
    let dir = TempDir()
    let store = try ChunkStore(root: dir.path, create: true)
    let registry = Registry(store: store, uploads: base.uploads, policy: base.tagPolicy)
    var config = base
    config.listenPort = 0
    var logger = Logger(label: "test")
    logger.logLevel = .warning
    let app = DepotService.makeApplication(
        registry: registry, config: config, logger: logger, readiness: readiness, eventLoopGroup: eventLoopGroup)
    try await app.test(.live) { client in
        try await body(client, registry, client.port!)
    }
    withExtendedLifetime(dir) {}
}

extension TestClientProtocol {
    @discardableResult
    func req(_ method: HTTPRequest.Method, _ uri: String, headers: HTTPFields = [:], body: [UInt8]? = nil) async throws -> TestResponse {
        try await execute(uri: uri, method: method, headers: headers, body: body.map { ByteBuffer(bytes: $0) })
    }

    /// Monolithic blob upload; returns the digest.
    @discardableResult
    func pushBlob(_ repo: String, _ bytes: [UInt8]) async throws -> Digest {
        let d = Digest.of(bytes)
        let r = try await req(.post, "/v2/\(repo)/blobs/uploads/?digest=\(d)", body: bytes)
        precondition(r.status.code == 201, "blob push failed: \(r.status) \(r.text)")
        return d
    }

    /// Pushes an image manifest over the given blobs (first is the config); returns (digest, bytes).
    @discardableResult
    func pushManifest(
        _ repo: String, _ ref: String, config: (Digest, Int, String), layers: [(Digest, Int)],
        subject: (Digest, Int)? = nil, artifactType: String? = nil, annotations: [String: String]? = nil,
        mediaType: String = MediaType.ociManifest
    ) async throws -> (Digest, [UInt8]) {
        let bytes = manifestJSON(
            config: config, layers: layers, subject: subject, artifactType: artifactType, annotations: annotations, mediaType: mediaType)
        let r = try await req(.put, "/v2/\(repo)/manifests/\(ref)", headers: [.contentType: mediaType], body: bytes)
        precondition(r.status.code == 201, "manifest push failed: \(r.status) \(r.text)")
        return (Digest.of(bytes), bytes)
    }
}

extension HummingbirdTesting.TestResponse {
    var text: String { String(buffer: body) }
    var bytes: [UInt8] { Array(body.readableBytesView) }
    var json: [String: Any] { (try? JSONSerialization.jsonObject(with: Data(bytes))) as? [String: Any] ?? [:] }
    /// The first OCI error code in the body.
    var errorCode: String? { ((json["errors"] as? [[String: Any]])?.first?["code"]) as? String }
    func header(_ name: String) -> String? { headers[HTTPField.Name(name)!] }
}

/// A real webhook endpoint (Tests/interop/webhook_receiver.py) that verifies signatures with
/// `secret`, answers 500 to the first `failFirst` requests and appends accepted deliveries to
/// `<dir>/received`. Returns the process (kill it with SIGKILL) and its port.
func startWebhookReceiver(_ dir: String, secret: String, failFirst: Int) async throws -> (Process, String) {
    let receiver = Process()
    receiver.executableURL = URL(fileURLWithPath: "/usr/bin/env")
    receiver.arguments = [
        "python3", FileManager.default.currentDirectoryPath + "/Tests/interop/webhook_receiver.py", dir + "/port",
        dir + "/received", secret, String(failFirst),
    ]
    try receiver.run()
    var port: String?
    for _ in 0..<200 where port == nil {
        port = try? String(contentsOfFile: dir + "/port", encoding: .utf8)
        if port == nil { try await Task.sleep(nanoseconds: 25_000_000) }
    }
    guard let port else {
        kill(receiver.processIdentifier, SIGKILL)
        receiver.waitUntilExit()
        throw CancellationError()
    }
    return (receiver, port)
}
