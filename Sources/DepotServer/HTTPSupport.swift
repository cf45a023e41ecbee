import DepotCore
import DepotRegistry
import DepotStore
import Foundation
import HTTPTypes
import Hummingbird
import NIOCore

extension HTTPField.Name {
    static let dockerContentDigest = Self("Docker-Content-Digest")!
    static let dockerUploadUUID = Self("Docker-Upload-UUID")!
    static let dockerAPIVersion = Self("Docker-Distribution-API-Version")!
    static let ociSubject = Self("OCI-Subject")!
    static let ociFiltersApplied = Self("OCI-Filters-Applied")!
    static let ociChunkMinLength = Self("OCI-Chunk-Min-Length")!
    static let link = Self("Link")!
}

/// Building responses.
enum Reply {
    static func empty(_ status: Int, _ headers: HTTPFields = [:]) -> Response {
        var h = headers
        if h[.contentLength] == nil { h[.contentLength] = "0" }
        return Response(status: .init(code: status), headers: h, body: ResponseBody())
    }

    static func json(_ object: Any, status: Int = 200, contentType: String = "application/json", headers: HTTPFields = [:], head: Bool = false) -> Response {
        let data = (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .withoutEscapingSlashes])) ?? Data("{}".utf8)
        return bytes(Array(data), status: status, contentType: contentType, headers: headers, head: head)
    }

    static func bytes(_ bytes: [UInt8], status: Int = 200, contentType: String, headers: HTTPFields = [:], head: Bool = false) -> Response {
        var h = headers
        h[.contentType] = contentType
        h[.contentLength] = String(bytes.count)
        return Response(status: .init(code: status), headers: h, body: head ? ResponseBody() : ResponseBody(byteBuffer: ByteBuffer(bytes: bytes)))
    }

    /// The spec's JSON error body: `{"errors": [{"code", "message", "detail"}]}`.
    static func error(_ e: RegistryError, headers: HTTPFields = [:], head: Bool = false) -> Response {
        var entry: [String: Any] = ["code": e.code.rawValue, "message": e.message]
        entry["detail"] = e.detail ?? [String: String]()
        return json(["errors": [entry]], status: e.status, headers: headers, head: head)
    }
}

/// Parsing of request details shared by handlers.
enum RequestParsing {
    static func name(_ text: String) throws -> RepositoryName {
        do { return try RepositoryName(text) } catch {
            throw RegistryError(.nameInvalid, "invalid repository name '\(text.prefix(300))'")
        }
    }

    static func digest(_ text: String) throws -> Digest {
        do { return try Digest(parsing: text) } catch let e as DepotError {
            throw RegistryError.from(e)
        }
    }

    static func reference(_ text: String) throws -> Reference {
        if text.contains(":") { return .digest(try digest(text)) }
        guard Reference.isValidTag(text) else {
            throw RegistryError(.manifestInvalid, "invalid tag '\(text.prefix(200))': must match [a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}")
        }
        return .tag(text)
    }

    /// `n` for paginated lists: nil when absent.
    static func pageSize(_ request: Request) throws -> Int? {
        guard let raw = request.uri.queryParameters["n"] else { return nil }
        guard let n = Int(raw), n >= 0 else {
            throw RegistryError(.unsupported, "n must be a non-negative integer", status: 400)
        }
        return min(n, 10_000)
    }

    /// An OCI `Content-Range: <start>-<end>` (also `bytes=` / `bytes ` prefixes), inclusive.
    static func contentRange(_ request: Request) throws -> ClosedRange<Int64>? {
        guard let text = request.headers[.contentRange] else { return nil }
        return try HTTPRanges.contentRange(text)
    }

    static func contentLength(_ request: Request) throws -> Int64? {
        guard let text = request.headers[.contentLength] else { return nil }
        guard let n = Int64(text), n >= 0 else { throw RegistryError(.sizeInvalid, "Content-Length '\(text.prefix(40))' is invalid") }
        return n
    }

    /// A `Range: bytes=...` request header against a blob of `size` bytes. Returns nil for
    /// "no range"; throws RANGE_INVALID (416) when unsatisfiable. Multiple ranges are not supported.
    static func byteRange(_ request: Request, size: Int64) throws -> Range<Int64>? {
        guard let text = request.headers[.range] else { return nil }
        return try HTTPRanges.byteRange(text, size: size)
    }
}

/// Blob reads fill NIO buffers directly, so a batch goes to the socket without another copy.
extension ByteBuffer: ReadBatch {
    public init(count: Int, fill: (UnsafeMutableRawBufferPointer) -> Void) {
        self = ByteBufferAllocator().buffer(capacity: count)
        self.writeWithUnsafeMutableBytes(minimumWritableBytes: count) { buffer in
            fill(UnsafeMutableRawBufferPointer(rebasing: buffer[0..<count]))
            return count
        }
    }

    public var count: Int { readableBytes }
}
