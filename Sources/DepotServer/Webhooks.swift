import AsyncHTTPClient
import DepotCatalog
import DepotCore
import DepotRegistry
import Foundation
import Logging
import NIOCore
import ServiceLifecycle

/// A webhook from the config file: where events go, which ones, and how they are signed.
public struct WebhookConfig: Sendable, Equatable {
    public var name: String
    public var url: String
    public var secret: String
    /// Event type patterns (globs, e.g. `tag.*`); empty: every event.
    public var events: [String] = []
    /// Repository patterns (globs); empty: every repository.
    public var repositories: [String] = []
    public var maxAttempts = 12
    /// First retry delay; each further one doubles, up to `maxBackoffSeconds`.
    public var retryBaseSeconds = 1.0
    public var maxBackoffSeconds = 600.0
    public var timeoutSeconds = 10.0

    public init(name: String, url: String, secret: String) {
        self.name = name
        self.url = url
        self.secret = secret
    }

    func wants(_ e: EventRecord) -> Bool {
        (events.isEmpty || events.contains { TagPolicy.glob($0, e.type) })
            && (repositories.isEmpty || repositories.contains { TagPolicy.glob($0, e.repository ?? "") })
    }

    /// Checks a `Depot-Signature` header: a valid v1 HMAC, timestamp within `maxSkew` seconds of now.
    public static func verify(_ header: String, secret: String, body: [UInt8], maxSkew: Int64) -> Bool {
        var t: Int64?
        var signatures: [String] = []
        for part in header.split(separator: ",") {
            let kv = part.split(separator: "=", maxSplits: 1).map { $0.trimmingCharacters(in: .whitespaces) }
            guard kv.count == 2 else { continue }
            if kv[0] == "t" { t = Int64(kv[1]) } else if kv[0] == "v1" { signatures.append(kv[1].lowercased()) }
        }
        let now = Int64(Date().timeIntervalSince1970)
        // Bounded before any arithmetic: a forged t near Int64.min must not overflow.
        guard let t, t > now - maxSkew, t < now + maxSkew else { return false }
        let expected = Array(signature(secret: secret, timestamp: t, body: body).split(separator: "=").last!.utf8)
        // Constant time over equal lengths.
        return signatures.contains { s in
            let got = Array(s.utf8)
            guard got.count == expected.count else { return false }
            return zip(got, expected).reduce(UInt8(0)) { $0 | ($1.0 ^ $1.1) } == 0
        }
    }

    /// `Depot-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`.
    public static func signature(secret: String, timestamp: Int64, body: [UInt8]) -> String {
        "t=\(timestamp),v1=" + HMACSHA256.hex(key: Array(secret.utf8), data: Array("\(timestamp).".utf8) + body)
    }
}

/// Delivers outbox events to webhooks, in order, at least once: a webhook's cursor advances
/// only after a 2xx answer (or after its last attempt, recorded as `gave-up`). Every attempt is
/// logged in `webhook_deliveries`. A new webhook starts at the events written after it appeared.
struct WebhookDispatcher: Service {
    let registry: Registry
    let hooks: [WebhookConfig]
    let logger: Logger
    var leadership = Leadership.standalone()
    var pollInterval: Duration = .milliseconds(250)

    func run() async throws {
        guard !hooks.isEmpty else {
            // A service that returns stops the whole group: idle until shutdown instead.
            try? await gracefulShutdown()
            return
        }
        // The process-wide client: nothing to shut down when the service stops.
        let http = HTTPClient.shared
        try? await cancelWhenGracefulShutdown {
            await withTaskGroup(of: Void.self) { group in
                for hook in hooks { group.addTask { await deliverLoop(hook, http: http) } }
            }
        }
    }

    func deliverLoop(_ hook: WebhookConfig, http: HTTPClient) async {
        let db = registry.store.catalog
        // Read from the catalog whenever this replica (re)gains the leadership: another replica
        // may have delivered and advanced it meanwhile.
        var cursor: Int64?
        while !Task.isCancelled {
            guard leadership.isLeader else {
                cursor = nil
                try? await Task.sleep(for: pollInterval)
                continue
            }
            if cursor == nil {
                do {
                    cursor = try await offload {
                        try db.write { conn in
                            if let c = try conn.webhookCursor(hook.name) { return c }
                            let start = try conn.lastEventID()
                            try conn.setWebhookCursor(hook.name, start)
                            return start
                        }
                    }
                } catch {
                    logger.error("webhook \(hook.name): cannot read its cursor: \(error)")
                    try? await Task.sleep(for: .seconds(5))
                    continue
                }
            }
            guard let after = cursor else { continue }
            guard let batch = try? await offload({ try registry.events(after: after, limit: 100) }) else {
                try? await Task.sleep(for: pollInterval)
                continue
            }
            if batch.isEmpty {
                try? await Task.sleep(for: pollInterval)
                continue
            }
            for event in batch {
                if Task.isCancelled { return }
                // Interrupted (shutdown) before it was delivered or given up: not done.
                if hook.wants(event), await !deliver(event, to: hook, http: http) { return }
                cursor = event.id
                let done = event.id
                _ = try? await offload { try db.write { try $0.setWebhookCursor(hook.name, done) } }
            }
        }
    }

    /// Attempts one event until it is accepted or the attempts run out. Returns false when
    /// interrupted by shutdown first (the event stays pending for the next start).
    func deliver(_ event: EventRecord, to hook: WebhookConfig, http: HTTPClient) async -> Bool {
        let body = Array(event.payload.utf8)
        var delay = hook.retryBaseSeconds
        let attempts = max(1, hook.maxAttempts)
        for attempt in 1...attempts {
            if Task.isCancelled { return false }
            let started = ContinuousClock.now
            var status: Int?
            var failure: String?
            do {
                var request = HTTPClientRequest(url: hook.url)
                request.method = .POST
                let timestamp = Int64(Date().timeIntervalSince1970)
                request.headers.add(name: "Content-Type", value: "application/json")
                request.headers.add(name: "User-Agent", value: "depot-webhooks")
                request.headers.add(name: "Depot-Event", value: event.type)
                request.headers.add(name: "Depot-Delivery", value: "\(hook.name)-\(event.id)")
                request.headers.add(
                    name: "Depot-Signature", value: WebhookConfig.signature(secret: hook.secret, timestamp: timestamp, body: body))
                request.body = .bytes(body)
                let response = try await http.execute(request, timeout: .milliseconds(Int64(hook.timeoutSeconds * 1000)))
                status = Int(response.status.code)
                _ = try? await response.body.collect(upTo: 64 << 10)
            } catch {
                failure = "\(error)"
            }
            let ms = Int((ContinuousClock.now - started) / .milliseconds(1))
            let ok = status.map { (200..<300).contains($0) } ?? false
            if !ok && Task.isCancelled { return false }
            let outcome = ok ? "delivered" : (attempt == attempts ? "gave-up" : "retrying")
            if failure == nil, !ok { failure = "HTTP \(status ?? 0)" }
            let record = DeliveryRecord(
                webhook: hook.name, eventID: event.id, attempt: attempt, at: Int64(Date().timeIntervalSince1970 * 1000),
                status: status, error: ok ? nil : failure, durationMs: ms, outcome: outcome)
            _ = try? await offload { try registry.store.catalog.write { try $0.recordDelivery(record) } }
            if ok { return true }
            if outcome == "gave-up" {
                logger.error("webhook \(hook.name): gave up on event \(event.id) after \(attempt) attempts: \(failure ?? "")")
                return true
            }
            logger.warning("webhook \(hook.name): event \(event.id) attempt \(attempt) failed (\(failure ?? "")); retrying in \(delay) s")
            do { try await Task.sleep(for: .milliseconds(Int64(delay * 1000))) } catch { return false }
            delay = min(delay * 2, hook.maxBackoffSeconds)
        }
        return true
    }
}
