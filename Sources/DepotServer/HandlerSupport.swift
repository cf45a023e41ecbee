import DepotAPI
import DepotCore
import DepotRegistry
import Foundation
import HTTPTypes
import Hummingbird
import NIOCore

extension HTTPField.Name {
    static let depotActor = Self("Depot-Actor")!
}

/// What every handler group shares. Each group (`BlobHandlers`, `JobHandlers`, …) holds only the
/// services its routes need; the registry is common to all because its upload limits bound every
/// request body. `OCIResponder` routes a request with the route table (`DepotAPI.Routes`) and
/// hands the match to one group's function, which parses the match's parameters itself.
protocol RouteHandlers: Sendable {
    var registry: Registry { get }
}

extension RouteHandlers {
    /// The match's repository name, validated (only called for routes whose pattern has `{name}`).
    static func name(_ match: RouteMatch) throws -> RepositoryName {
        try RequestParsing.name(match.name!)
    }

    /// Who is acting, for the audit journal: the authenticated principal (`user:alice`,
    /// `token:ci-push`) when authentication is on; otherwise the self-declared `Depot-Actor`
    /// header, else "anonymous".
    static func actor(_ request: Request) -> String {
        if let p = Caller.principal { return p.id }
        guard let raw = request.headers[.depotActor]?.trimmingCharacters(in: .whitespaces), !raw.isEmpty,
            raw.count <= 200, raw.unicodeScalars.allSatisfy({ $0.value >= 0x20 && $0.value != 0x7F })
        else { return "anonymous" }
        return raw
    }

    /// An `If-Match` digest (quotes optional), nil when absent.
    static func ifMatch(_ request: Request) throws -> Digest? {
        guard var text = request.headers[.ifMatch] else { return nil }
        text = text.trimmingCharacters(in: .whitespaces)
        if text.hasPrefix("W/") { text.removeFirst(2) }
        text = text.trimmingCharacters(in: CharacterSet(charactersIn: "\""))
        return try RequestParsing.digest(text)
    }

    /// A small JSON request body as a wire type; an empty body decodes as `{}` (every field of a
    /// request type is optional or defaulted where an empty body is meaningful).
    func body<T: Decodable>(_ request: Request, as type: T.Type) async throws -> T {
        let body = try await RequestParsing.collect(
            request, limit: 1 << 20, what: "JSON body",
            rate: RateFloor(limits: registry.uploads.limits, start: .now))
        let bytes = body.readableBytes == 0 ? Array("{}".utf8) : Array(body.readableBytesView)
        do { return try WireJSON.decode(T.self, from: bytes, what: "body") } catch let e as DocumentError {
            throw RegistryError(.invalidRequest, e.message)
        }
    }

    /// A time given as RFC 3339 (`2026-05-03T14:00:00Z`, fractions allowed) or milliseconds since 1970.
    static func time(_ text: String) throws -> Int64 {
        // Milliseconds, bounded to what Date and ISO 8601 can print (years 0001–9999).
        if text.utf8.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }) {
            return try RequestParsing.integer(Substring(text), "time in milliseconds", in: 0...253_402_300_799_999)
        }
        let f = ISO8601DateFormatter()
        f.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        if let d = f.date(from: text) { return Int64(d.timeIntervalSince1970 * 1000) }
        f.formatOptions = [.withInternetDateTime]
        if let d = f.date(from: text) { return Int64(d.timeIntervalSince1970 * 1000) }
        throw RegistryError(.invalidRequest, "time '\(text.prefix(60))' is not RFC 3339 (2026-05-03T14:00:00Z) or milliseconds")
    }

    static func iso(_ ms: Int64) -> String {
        let f = ISO8601DateFormatter()
        f.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        return f.string(from: Date(timeIntervalSince1970: Double(ms) / 1000))
    }

    static func required(_ value: String?, _ name: String) throws -> String {
        guard let value, !value.isEmpty else { throw RegistryError(.invalidRequest, "missing \(name)") }
        return value
    }

    static func positive(_ text: String, _ name: String) throws -> Int {
        try RequestParsing.integer(Substring(text), name, in: 1...10_000)
    }
}
