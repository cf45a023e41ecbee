import DepotCore
import DepotRegistry
import DepotStore
import DepotTestSupport
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import Logging
import Testing

@testable import DepotServer

/// The events outbox and signed webhooks, against a real HTTP receiver (Python's http.server)
/// that checks every signature and refuses the first deliveries.
@Suite("Events and webhooks")
struct EventTests {
    @Test func eventsAreWrittenWithTheirChangeAndDeliveredSignedWithRetries() async throws {
        let dir = TempDir("depot-events")
        let (receiver, hookPort) = try await startWebhookReceiver(dir.path, secret: "s3cret", failFirst: 2)
        defer {
            kill(receiver.processIdentifier, SIGKILL)
            receiver.waitUntilExit()
        }

        let store = try ChunkStore(root: dir.path + "/store", create: true)
        let registry = Registry(store: store)
        var config = ServerConfig.forTests()
        config.listenPort = 0
        var hook = WebhookConfig(name: "ci", url: "http://127.0.0.1:\(hookPort)/hook", secret: "s3cret")
        hook.retryBaseSeconds = 0.05
        hook.events = ["manifest.*", "tag.*"]
        config.webhooks = [hook]
        var logger = Logger(label: "test")
        logger.logLevel = .critical
        let app = DepotService.makeApplication(registry: registry, config: config, logger: logger)
        try await app.test(.live) { client in
            // Let the dispatcher register its cursor before the first change.
            try await Task.sleep(nanoseconds: 300_000_000)
            let cfg = try await client.pushBlob("team/m", emptyConfig)
            let (digest, _) = try await client.pushManifest(
                "team/m", "v1", config: (cfg, emptyConfig.count, "application/json"), layers: [])
            // A refused change announces nothing.
            let refused = try await client.req(
                .put, "/v2/team/m/manifests/production", headers: [.contentType: MediaType.ociManifest],
                body: manifestJSON(config: (cfg, emptyConfig.count, "application/json"), layers: []))
            #expect(refused.status.code == 403)

            let page = try await client.req(.get, "/depot/v1/events?after=0")
            let events = page.json["events"] as? [[String: Any]] ?? []
            #expect(events.map { $0["type"] as? String } == ["manifest.pushed", "tag.moved"])
            #expect(events.first?["digest"] as? String == digest.description)
            #expect(page.json["next"] as? String == events.last?["id"] as? String)
            let none = try await client.req(.get, "/depot/v1/events?after=\(page.json["next"] as? String ?? "0")")
            #expect((none.json["events"] as? [Any])?.isEmpty == true)

            var lines: [[String: Any]] = []
            for _ in 0..<200 {
                let text = (try? String(contentsOfFile: dir.path + "/received", encoding: .utf8)) ?? ""
                lines = text.split(separator: "\n").compactMap { try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] }
                if lines.count >= 2 { break }
                try await Task.sleep(nanoseconds: 25_000_000)
            }
            #expect(lines.count == 2)
            #expect(lines.allSatisfy { $0["valid"] as? Bool == true }, "signatures verified by the receiver")
            #expect(lines.map { $0["event"] as? String } == ["manifest.pushed", "tag.moved"], "in order")

            let log = try await client.req(.get, "/depot/v1/webhooks/deliveries?webhook=ci")
            let attempts = (log.json["deliveries"] as? [[String: Any]] ?? []).map {
                ($0["attempt"] as? Int ?? 0, $0["outcome"] as? String ?? "")
            }
            #expect(attempts.map(\.1) == ["retrying", "retrying", "delivered", "delivered"], "\(attempts)")
        }
    }

    @Test func webhookConfigIsValidated() throws {
        let dir = TempDir("depot-events")
        func load(_ yaml: String) throws -> ServerConfig {
            try yaml.write(toFile: dir.path + "/c.yaml", atomically: true, encoding: .utf8)
            return try ServerConfig.load(dir.path + "/c.yaml")
        }
        let ok = try load("webhooks:\n  - name: ci\n    url: https://hooks.example.com/depot\n    secret: x\n    events: [\"tag.*\"]\n")
        #expect(ok.webhooks.first?.events == ["tag.*"])
        for bad in [
            "webhooks: 3\n", "webhooks:\n  - name: ci\n    url: ftp://x\n    secret: x\n",
            "webhooks:\n  - name: ci\n    url: http://x\n",
            "webhooks:\n  - name: ci\n    url: http://x\n    secret_env: DEPOT_NOT_SET_ANYWHERE\n",
            "webhooks:\n  - name: ci\n    url: http://x\n    secret: x\n    colour: red\n",
        ] {
            #expect(throws: DepotError.self) { _ = try load(bad) }
        }
        #expect(
            WebhookConfig.signature(secret: "key", timestamp: 1, body: Array("{}".utf8))
                == "t=1,v1=" + HMACSHA256.hex(key: Array("key".utf8), data: Array("1.{}".utf8)))
        // RFC 4231 test case 2.
        #expect(
            HMACSHA256.hex(key: Array("Jefe".utf8), data: Array("what do ya want for nothing?".utf8))
                == "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843")
    }
}
