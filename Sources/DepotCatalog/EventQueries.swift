import DepotAPI
import DepotCore
import Foundation

/// One event of the outbox.
public struct EventRecord: Sendable, Equatable {
    public var id: Int64
    public var at: Int64
    public var type: String
    public var repository: String?
    /// The JSON object delivered to consumers (it includes `id`, `type` and `at`).
    public var payload: String
}

/// One webhook delivery attempt.
public struct DeliveryRecord: Sendable, Equatable, Codable {
    public var id: Int64
    public var webhook: String
    public var eventID: Int64
    public var attempt: Int
    public var at: Int64
    public var status: Int?
    public var error: String?
    public var durationMs: Int
    public var outcome: String

    public init(
        id: Int64 = 0, webhook: String, eventID: Int64, attempt: Int, at: Int64, status: Int?, error: String?,
        durationMs: Int, outcome: String
    ) {
        self.id = id
        self.webhook = webhook
        self.eventID = eventID
        self.attempt = attempt
        self.at = at
        self.status = status
        self.error = error
        self.durationMs = durationMs
        self.outcome = outcome
    }

    enum CodingKeys: String, CodingKey {
        case id, webhook, attempt, at, status, error, outcome
        case eventID = "event_id"
        case durationMs = "duration_ms"
    }
}

/// The events outbox and webhook bookkeeping.
extension CatalogConnection {
    /// Appends an event (call inside the transaction of the change it announces).
    @discardableResult
    public func appendEvent(type: String, at: Int64, repository: String?, fields: [String: JSONValue]) throws -> Int64 {
        let id = try nextID(for: "events")
        var payload = fields
        payload["id"] = .string(String(id))
        payload["type"] = .string(type)
        payload["at"] = .string(Self.iso(at))
        if let repository { payload["repository"] = .string(repository) }
        let data = try WireJSON.encode(payload)
        try run(
            "INSERT INTO events(id, at, type, repository, payload) VALUES(?,?,?,?,?)", .int(id), .int(at), .text(type),
            repository.map(SQLValue.text) ?? .null, .text(String(decoding: data, as: UTF8.self)))
        return id
    }

    static func iso(_ ms: Int64) -> String {
        let f = ISO8601DateFormatter()
        f.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        return f.string(from: Date(timeIntervalSince1970: Double(ms) / 1000))
    }

    /// Events after `cursor`, oldest first.
    public func events(after cursor: Int64, limit: Int) throws -> [EventRecord] {
        var out: [EventRecord] = []
        try query("SELECT id, at, type, repository, payload FROM events WHERE id > ? ORDER BY id LIMIT ?", .int(cursor), .int(Int64(limit)))
        { s in
            let r = s.row
            out.append(
                EventRecord(
                    id: r.int("id"), at: r.int("at"), type: r.text("type"), repository: r.optionalText("repository"),
                    payload: r.text("payload")))
        }
        return out
    }

    public func lastEventID() throws -> Int64 {
        try first("SELECT COALESCE(MAX(id), 0) FROM events") { $0.int(0) } ?? 0
    }

    public func webhookCursor(_ name: String) throws -> Int64? {
        try first("SELECT last_event FROM webhook_cursors WHERE webhook = ?", .text(name)) { $0.int(0) }
    }

    /// Advances a webhook's cursor; it never moves back (a replica that just lost the leadership
    /// and finishes a delivery must not rewind the new leader's cursor).
    public func setWebhookCursor(_ name: String, _ id: Int64) throws {
        try run(
            """
            INSERT INTO webhook_cursors(webhook, last_event) VALUES(?, ?) ON CONFLICT(webhook)
            DO UPDATE SET last_event = \(dialect == .postgres ? "GREATEST" : "MAX")(webhook_cursors.last_event, excluded.last_event)
            """,
            .text(name), .int(id))
    }

    public func recordDelivery(_ d: DeliveryRecord) throws {
        try run(
            """
            INSERT INTO webhook_deliveries(webhook, event_id, attempt, at, status, error, duration_ms, outcome) VALUES(?,?,?,?,?,?,?,?)
            """, .text(d.webhook), .int(d.eventID), .int(Int64(d.attempt)), .int(d.at), d.status.map { .int(Int64($0)) } ?? .null,
            d.error.map(SQLValue.text) ?? .null, .int(Int64(d.durationMs)), .text(d.outcome))
    }

    public func deliveries(webhook: String?, limit: Int) throws -> [DeliveryRecord] {
        var out: [DeliveryRecord] = []
        var sql = "SELECT id, webhook, event_id, attempt, at, status, error, duration_ms, outcome FROM webhook_deliveries"
        var args: [SQLValue] = []
        if let webhook {
            sql += " WHERE webhook = ?"
            args.append(.text(webhook))
        }
        sql += " ORDER BY id DESC LIMIT ?"
        args.append(.int(Int64(limit)))
        try queryArgs(sql, args) { s in
            let r = s.row
            out.append(
                DeliveryRecord(
                    id: r.int("id"), webhook: r.text("webhook"), eventID: r.int("event_id"), attempt: Int(r.int("attempt")),
                    at: r.int("at"), status: r.optionalInt("status").map { Int($0) }, error: r.optionalText("error"),
                    durationMs: Int(r.int("duration_ms")), outcome: r.text("outcome")))
        }
        return out.reversed()
    }
}
