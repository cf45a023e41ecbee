import DepotCore
import Foundation

/// AWS Signature Version 4 for S3, header form (`Authorization: AWS4-HMAC-SHA256 ...`).
///
/// Written here because Soto is not available; checked against AWS's published examples
/// (`SigV4Tests`). Depot signs the payload's SHA-256 on every request (`x-amz-content-sha256`
/// is the hex digest, never `UNSIGNED-PAYLOAD`): the store verifies it, so a part corrupted on
/// the way is refused instead of stored, and plain-HTTP endpoints (a test emulator, a private
/// MinIO) get the same integrity as TLS ones. The price is one SHA-256 pass over uploaded bytes.
public struct SigV4Signer: Sendable {
    public var accessKey: String
    public var secretKey: String
    public var region: String
    public var service: String

    public init(accessKey: String, secretKey: String, region: String, service: String = "s3") {
        self.accessKey = accessKey
        self.secretKey = secretKey
        self.region = region
        self.service = service
    }

    /// The hex SHA-256 of an empty payload.
    public static let emptyPayloadHash = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

    /// `20130524T000000Z` and `20130524` for `date` (UTC).
    public static func timestamps(_ date: Date) -> (amzDate: String, day: String) {
        var t = time_t(date.timeIntervalSince1970)
        var tm = tm()
        gmtime_r(&t, &tm)
        let amz = String(
            format: "%04d%02d%02dT%02d%02d%02dZ", Int(tm.tm_year) + 1900, Int(tm.tm_mon) + 1, Int(tm.tm_mday), Int(tm.tm_hour),
            Int(tm.tm_min), Int(tm.tm_sec))
        return (amz, String(amz.prefix(8)))
    }

    /// RFC 3986 percent-encoding as SigV4 wants it: unreserved characters stay, everything else is
    /// `%XX` (uppercase); `/` stays only when `keepSlash` (object keys in the path).
    public static func encode(_ s: String, keepSlash: Bool = false) -> String {
        var out = ""
        out.reserveCapacity(s.utf8.count)
        for b in s.utf8 {
            switch b {
            case UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "0")...UInt8(ascii: "9"),
                UInt8(ascii: "-"), UInt8(ascii: "."), UInt8(ascii: "_"), UInt8(ascii: "~"):
                out.unicodeScalars.append(Unicode.Scalar(b))
            case UInt8(ascii: "/") where keepSlash:
                out.append("/")
            default:
                out += String(format: "%%%02X", Int(b))
            }
        }
        return out
    }

    /// `key=value&...`, encoded and sorted by key then value (the canonical query string; also
    /// what goes on the wire, so the two can never differ).
    public static func canonicalQuery(_ query: [(String, String)]) -> String {
        let encoded: [(String, String)] = query.map { (encode($0.0), encode($0.1)) }
        let sorted = encoded.sorted { a, b in a.0 == b.0 ? a.1 < b.1 : a.0 < b.0 }
        return sorted.map { "\($0.0)=\($0.1)" }.joined(separator: "&")
    }

    /// The canonical request. `path` is already encoded (as sent); `headers` are every header that
    /// is signed (names any case; values trimmed, inner runs of spaces folded).
    public static func canonicalRequest(
        method: String, path: String, query: [(String, String)], headers: [(String, String)], payloadHash: String
    ) -> (request: String, signedHeaders: String) {
        var merged: [String: [String]] = [:]
        for (name, value) in headers {
            let folded = value.split(separator: " ", omittingEmptySubsequences: true).joined(separator: " ")
            merged[name.lowercased(), default: []].append(folded)
        }
        let names = merged.keys.sorted()
        let canonicalHeaders = names.map { "\($0):\(merged[$0]!.joined(separator: ","))\n" }.joined()
        let signed = names.joined(separator: ";")
        let request = [method, path, canonicalQuery(query), canonicalHeaders, signed, payloadHash].joined(separator: "\n")
        return (request, signed)
    }

    static func hex(_ bytes: [UInt8]) -> String {
        bytes.withUnsafeBytes { SHA256.hash($0) }.hex
    }

    /// The string to sign for a canonical request.
    public func stringToSign(canonicalRequest: String, amzDate: String) -> String {
        let day = String(amzDate.prefix(8))
        return ["AWS4-HMAC-SHA256", amzDate, "\(day)/\(region)/\(service)/aws4_request", Self.hex(Array(canonicalRequest.utf8))]
            .joined(separator: "\n")
    }

    /// The hex signature of `stringToSign`.
    public func signature(stringToSign: String, day: String) -> String {
        var key = HMACSHA256.mac(key: Array("AWS4\(secretKey)".utf8), data: Array(day.utf8))
        key = HMACSHA256.mac(key: key, data: Array(region.utf8))
        key = HMACSHA256.mac(key: key, data: Array(service.utf8))
        key = HMACSHA256.mac(key: key, data: Array("aws4_request".utf8))
        return HMACSHA256.hex(key: key, data: Array(stringToSign.utf8))
    }

    /// The `Authorization` value for a request whose signed headers (including `host`,
    /// `x-amz-date` and `x-amz-content-sha256`) are `headers`.
    public func authorization(
        method: String, path: String, query: [(String, String)], headers: [(String, String)], payloadHash: String, amzDate: String
    ) -> String {
        let (request, signed) = Self.canonicalRequest(method: method, path: path, query: query, headers: headers, payloadHash: payloadHash)
        let sts = stringToSign(canonicalRequest: request, amzDate: amzDate)
        let sig = signature(stringToSign: sts, day: String(amzDate.prefix(8)))
        return "AWS4-HMAC-SHA256 Credential=\(accessKey)/\(amzDate.prefix(8))/\(region)/\(service)/aws4_request,"
            + "SignedHeaders=\(signed),Signature=\(sig)"
    }
}
