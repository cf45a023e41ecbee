import DepotAPI
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

    /// A wire type as JSON (sorted keys, so the same value gives the same bytes).
    static func encoded<T: Encodable>(
        _ value: T, status: Int = 200, contentType: String = "application/json", headers: HTTPFields = [:], head: Bool = false
    ) -> Response {
        let body = (try? WireJSON.encode(value)) ?? Array("{}".utf8)
        return bytes(body, status: status, contentType: contentType, headers: headers, head: head)
    }

    static func bytes(_ bytes: [UInt8], status: Int = 200, contentType: String, headers: HTTPFields = [:], head: Bool = false) -> Response {
        var h = headers
        h[.contentType] = contentType
        h[.contentLength] = String(bytes.count)
        return Response(
            status: .init(code: status), headers: h, body: head ? ResponseBody() : ResponseBody(byteBuffer: ByteBuffer(bytes: bytes)))
    }

    /// The spec's JSON error body: `{"errors": [{"code", "message", "detail"}]}`.
    static func error(_ e: RegistryError, headers: HTTPFields = [:], head: Bool = false) -> Response {
        let body = OCIErrorBody([.init(code: e.code.rawValue, message: e.message, detail: e.detail)])
        return encoded(body, status: ErrorStatus.of(e), headers: headers, head: head)
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

    /// A non-negative decimal integer from the network (a header, a query parameter, a path
    /// segment), parsed strictly: 1–19 ASCII digits, no sign, no spaces, and within `range`.
    /// `Int64("+5")`, `Int64(" 5")` and 2^64 are all refused here, so no caller ever does
    /// arithmetic on a value it did not bound.
    static func integer(_ text: Substring, _ what: String, in range: ClosedRange<Int64>) throws -> Int64 {
        guard let value = HTTPRanges.integer(text, in: range) else {
            throw RegistryError(
                .invalidRequest, "\(what) must be an integer in \(range.lowerBound)...\(range.upperBound), got '\(text.prefix(40))'")
        }
        return value
    }

    static func integer(_ text: Substring, _ what: String, in range: ClosedRange<Int>) throws -> Int {
        Int(try integer(text, what, in: Int64(range.lowerBound)...Int64(range.upperBound)))
    }

    /// An optional query parameter as a bounded integer.
    static func query(_ request: Request, _ name: String, in range: ClosedRange<Int>) throws -> Int? {
        guard let raw = request.uri.queryParameters[Substring(name)] else { return nil }
        return try integer(raw, "query parameter \(name)", in: range)
    }

    /// Bytes of small request bodies (manifests, JSON, hash lists, logs) held in memory while
    /// they arrive, across all connections.
    static let bufferedBodies = ByteBudget(limit: 256 << 20)

    /// The largest page a list endpoint returns, and its size when `n` is absent.
    static let maxPageSize = 10_000
    static let defaultPageSize = 1_000

    /// `n` for paginated lists: nil when absent. Values over the maximum are clamped (the
    /// distribution spec lets a registry return fewer entries than asked, with a `Link`).
    static func pageSize(_ request: Request) throws -> Int? {
        guard let raw = request.uri.queryParameters["n"] else { return nil }
        let n = try integer(raw, "n", in: 0...Int64.max)
        return Int(min(n, Int64(maxPageSize)))
    }

    /// An OCI `Content-Range: <start>-<end>` (also `bytes=` / `bytes ` prefixes), inclusive.
    /// Both ends are bounded by `limit` (the maximum blob size) so `end - start + 1` cannot
    /// overflow; a range out of bounds is 416 RANGE_INVALID.
    static func contentRange(_ request: Request, limit: Int64 = Int64.max - 1) throws -> ClosedRange<Int64>? {
        guard let text = request.headers[.contentRange] else { return nil }
        return try HTTPRanges.contentRange(text, limit: limit)
    }

    static func contentLength(_ request: Request) throws -> Int64? {
        guard let text = request.headers[.contentLength] else { return nil }
        do { return try integer(Substring(text), "Content-Length", in: 0...Int64.max) } catch {
            throw RegistryError(.sizeInvalid, "Content-Length '\(text.prefix(40))' is invalid")
        }
    }

    /// A small request body, whole: over `limit` bytes is 413; a client that goes away mid-body
    /// is its own error (400), not the server's.
    ///
    /// Bytes held while a body is still arriving count against one process-wide budget
    /// (`bufferedBodies`): a client may trickle a body up to its limit and then stall, and 2048
    /// connections doing so with 4 MiB manifests would hold 8 GiB. Past the budget a request is
    /// answered 503 at once. `rate` applies the upload byte-rate floor.
    static func collect(_ request: Request, limit: Int, what: String, rate: RateFloor? = nil) async throws -> ByteBuffer {
        var body = ByteBuffer()
        var held = 0
        defer { bufferedBodies.give(held) }
        do {
            for try await part in request.body {
                guard body.readableBytes + part.readableBytes <= limit else {
                    throw RegistryError(.sizeInvalid, "\(what) exceeds \(limit) bytes", kind: .tooLarge)
                }
                guard bufferedBodies.take(part.readableBytes) else {
                    throw RegistryError(.unavailable, "the server is holding too many request bodies in memory; retry shortly")
                }
                held += part.readableBytes
                body.writeImmutableBuffer(part)
                if let rate, !rate.isMet(received: Int64(body.readableBytes), now: .now) {
                    throw rate.error(received: Int64(body.readableBytes))
                }
            }
        } catch let e as RegistryError {
            throw e
        } catch {
            throw RegistryError(.blobUploadInvalid, "\(what) body ended early: \(error)")
        }
        return body
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
