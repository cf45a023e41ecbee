import DepotCore
import DepotRegistry
import Foundation
import HTTPTypes
import Hummingbird

/// Cookies, CSRF and forms of the web UI.
///
/// - `depot_session`: the session (a JWT of the UI's audience, `AuthService.openSession`),
///   `HttpOnly; SameSite=Strict; Path=/ui`, plus `Secure` when the server speaks HTTPS.
/// - CSRF: every form carries a `csrf` field. With a session it is an HMAC of the session under a
///   fixed label, so it is tied to that session and an attacker who cannot read the cookie
///   cannot compute it. Without a session (authentication off) it is the `depot_csrf` cookie's
///   random value (double submit). On top of the token, a POST whose `Sec-Fetch-Site` says
///   another site, or whose `Origin` names another host, is refused.
enum UISession {
    static let sessionCookie = "depot_session"
    static let csrfCookie = "depot_csrf"

    /// The value of cookie `name` in the request's `Cookie` headers (the first one; bounded).
    static func cookie(_ request: Request, _ name: String) -> String? {
        for header in request.headers[values: .cookie].prefix(8) where header.utf8.count <= 16_384 {
            for pair in header.split(separator: ";").prefix(64) {
                let kv = pair.trimmingCharacters(in: .whitespaces)
                guard let eq = kv.firstIndex(of: "=") else { continue }
                if kv[..<eq] == name {
                    let v = String(kv[kv.index(after: eq)...])
                    return v.isEmpty ? nil : v
                }
            }
        }
        return nil
    }

    /// `Set-Cookie` for a UI cookie; `maxAge` 0 deletes it.
    static func setCookie(_ name: String, _ value: String, maxAge: Int, secure: Bool) -> String {
        "\(name)=\(value); Path=/ui; Max-Age=\(maxAge); HttpOnly; SameSite=Strict" + (secure ? "; Secure" : "")
    }

    /// The CSRF token a form on this request's page carries (nil: a new `depot_csrf` cookie is
    /// needed first, see `newCSRFCookieValue`).
    static func csrfToken(_ request: Request) -> String? {
        if let session = cookie(request, sessionCookie) { return boundToken(session) }
        return cookie(request, csrfCookie).flatMap { isRandomToken($0) ? $0 : nil }
    }

    static func boundToken(_ session: String) -> String {
        HMACSHA256.mac(key: Array(session.utf8), data: Array("depot-ui-csrf".utf8)).map { String(format: "%02x", $0) }.joined()
    }

    static func newCSRFCookieValue() -> String {
        var g = SystemRandomNumberGenerator()
        return (0..<32).map { _ in String(format: "%02x", UInt8.random(in: 0...255, using: &g)) }.joined()
    }

    static func isRandomToken(_ s: String) -> Bool {
        s.utf8.count == 64 && s.utf8.allSatisfy { ($0 >= 0x30 && $0 <= 0x39) || ($0 >= 0x61 && $0 <= 0x66) }
    }

    /// Refuses a form post that is not from this site's own page (see the type's comment).
    static func checkPost(_ request: Request, form: [String: String]) throws {
        if let site = request.headers[HTTPField.Name("Sec-Fetch-Site")!], site != "same-origin", site != "none" {
            throw RegistryError(.denied, "form posted from another site (Sec-Fetch-Site: \(site.prefix(20)))")
        }
        if let origin = request.headers[HTTPField.Name("Origin")!], origin != "null" {
            let host = origin.split(separator: "/", omittingEmptySubsequences: true).dropFirst().first.map(String.init)
            guard let host, host == request.head.authority else {
                throw RegistryError(.denied, "form posted from another origin (\(origin.prefix(80)))")
            }
        }
        guard let expected = csrfToken(request), let given = form["csrf"],
            HMACSHA256.equal(Array(expected.utf8), Array(given.utf8))
        else {
            throw RegistryError(.denied, "the form's CSRF token is missing or stale: reload the page and submit again")
        }
    }

    /// Reads an `application/x-www-form-urlencoded` body (at most 64 KiB, 64 fields).
    static func form(_ request: Request, limits: UploadLimits) async throws -> [String: String] {
        let type = request.headers[.contentType]?.lowercased() ?? ""
        guard type.hasPrefix("application/x-www-form-urlencoded") else {
            throw RegistryError(.invalidRequest, "a form post must be application/x-www-form-urlencoded")
        }
        let body = try await RequestParsing.collect(request, limit: 64 << 10, what: "form", rate: RateFloor(limits: limits, start: .now))
        return try parseForm(String(decoding: body.readableBytesView, as: UTF8.self))
    }

    static func parseForm(_ text: String) throws -> [String: String] {
        var out: [String: String] = [:]
        for pair in text.split(separator: "&").prefix(64) {
            let parts = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            func decode(_ s: Substring) -> String? {
                String(s).replacingOccurrences(of: "+", with: " ").removingPercentEncoding
            }
            guard let key = decode(parts[0]), let value = parts.count > 1 ? decode(parts[1]) : "" else {
                throw RegistryError(.invalidRequest, "form field is not valid percent-encoding")
            }
            if out[key] == nil { out[key] = value }
        }
        return out
    }

    /// The page's query parameters, decoded as a browser's GET form encodes them (`+` is a
    /// space; Hummingbird's own decoding leaves it a plus). Invalid percent-encoding is a 400.
    static func query(_ request: Request) throws -> [String: String] {
        guard let q = request.uri.query, !q.isEmpty else { return [:] }
        guard q.utf8.count <= 8192 else { throw RegistryError(.invalidRequest, "query string is over 8 KiB") }
        return try parseForm(q)
    }

    /// A `next` target after login: only a path of this UI (no scheme, no host, no `//`), so
    /// the login page cannot be used to send someone elsewhere.
    static func safeNext(_ next: String?) -> String {
        guard let next, next.hasPrefix("/ui"), !next.hasPrefix("//"), !next.contains("\\"), next.utf8.count <= 2048,
            next.unicodeScalars.allSatisfy({ $0.value > 0x20 && $0.value < 0x7F })
        else { return "/ui" }
        return next
    }
}
