import AsyncHTTPClient
import DepotCore
import Foundation
import NIOCore
import NIOHTTP1

/// Where and how to reach an S3-compatible bucket (`storage.s3` in config/depot.yaml).
public struct S3Settings: Sendable, Equatable {
    /// `scheme://host[:port]`, no path: `https://s3.eu-west-1.amazonaws.com`, `http://minio:9000`.
    public var endpoint: String
    public var bucket: String
    public var region: String = "us-east-1"
    /// Prepended to every key Depot writes (`depot/` gives `depot/packs/..`); empty for none.
    public var prefix: String = ""
    public var accessKey: String
    public var secretKey: String
    /// Multipart part size (S3's minimum is 5 MiB except for the last part). Also the most memory
    /// one upload holds at a time.
    public var partSize: Int = 16 << 20
    /// Seconds one request may take (a part upload included) before it fails.
    public var requestTimeoutSeconds: Int64 = 120

    public init(endpoint: String, bucket: String, region: String = "us-east-1", prefix: String = "", accessKey: String, secretKey: String) {
        self.endpoint = endpoint
        self.bucket = bucket
        self.region = region
        self.prefix = prefix
        self.accessKey = accessKey
        self.secretKey = secretKey
    }

    /// `s3://bucket/prefix`, for messages.
    public var location: String { "s3://\(bucket)/\(prefix)" }
}

/// An error answer of the object store (or no answer), with what to do about it.
public struct S3Error: Error, CustomStringConvertible, Sendable {
    public enum Kind: Sendable, Equatable {
        /// 412 on a conditional write: the key exists.
        case exists
        /// 404 NoSuchKey.
        case missing
        /// 403 / signature or key errors.
        case credentials
        /// 404 NoSuchBucket.
        case noBucket
        /// The endpoint answered something S3 does not (wrong length, a missing header, ignored Range).
        case protocolViolation
        /// 5xx, 429, timeouts, refused connections: may work when retried.
        case transient
        /// Anything else (4xx).
        case refused
    }

    public var kind: Kind
    public var operation: String
    public var status: Int?
    public var code: String?
    public var message: String

    public var description: String {
        var s = "\(operation): "
        if let status { s += "HTTP \(status) " }
        if let code { s += "\(code) " }
        s += message
        return s
    }
}

/// A small S3 client: PUT (conditional), multipart upload, ranged GET, HEAD, DELETE,
/// ListObjectsV2, HEAD bucket; SigV4 header authentication, path-style URLs
/// (`endpoint/bucket/key`), which AWS, MinIO, Ceph RGW and moto all accept.
///
/// **Synchronous on purpose.** The chunk store's reads and its group commit are synchronous
/// (`pread`/`fdatasync` today) and run on threads that may block: the server's `BlockingPool`,
/// libdispatch's queues of the blob reader and writer. Each call here starts the request with
/// AsyncHTTPClient's EventLoopFuture API and waits for the future on the caller's thread. The
/// request runs on NIO's event loops, never on the Swift concurrency pool, so a caller blocking on
/// it cannot starve what it waits for (a `Task` + semaphore bridge can deadlock once the
/// cooperative pool's few threads are all waiting). It must not be called on an event loop
/// (NIO traps `wait()` there); nothing in the store runs on one.
///
/// **Every answer is hostile.** Bodies are accumulated up to a bound that depends on the request
/// (the range asked for, 8 MiB for listings, 64 KiB for errors); ranged GETs must be 206 with
/// exactly the length asked for; numbers are parsed with overflow checks; redirects are not followed.
public final class S3Client: Sendable {
    public let settings: S3Settings
    let signer: SigV4Signer
    let http: HTTPClient
    let scheme: String
    let hostHeader: String

    static let errorBodyLimit = 64 << 10
    static let listBodyLimit = 8 << 20

    public init(settings: S3Settings) throws {
        guard let url = URL(string: settings.endpoint), let scheme = url.scheme?.lowercased(), scheme == "http" || scheme == "https",
            let host = url.host, !host.isEmpty
        else {
            throw DepotError.invalidArgument("storage.s3.endpoint '\(settings.endpoint)' is not http(s)://host[:port]")
        }
        guard url.path.isEmpty || url.path == "/", url.query == nil else {
            throw DepotError.invalidArgument(
                "storage.s3.endpoint '\(settings.endpoint)' must not have a path or query (the bucket is separate)")
        }
        guard Self.validBucket(settings.bucket) else {
            throw DepotError.invalidArgument("storage.s3.bucket '\(settings.bucket)' is not a valid bucket name (3-63 of a-z 0-9 . -)")
        }
        guard settings.partSize >= 5 << 20, settings.partSize <= 1 << 30 else {
            throw DepotError.invalidArgument("storage.s3 part size must be 5 MiB to 1 GiB")
        }
        self.settings = settings
        self.scheme = scheme
        let bracketed = host.contains(":") ? "[\(host)]" : host
        if let port = url.port, !(scheme == "http" && port == 80), !(scheme == "https" && port == 443) {
            hostHeader = "\(bracketed):\(port)"
        } else {
            hostHeader = bracketed
        }
        signer = SigV4Signer(accessKey: settings.accessKey, secretKey: settings.secretKey, region: settings.region)
        var config = HTTPClient.Configuration()
        config.redirectConfiguration = .disallow
        config.timeout = .init(connect: .seconds(10), read: .seconds(settings.requestTimeoutSeconds))
        config.decompression = .disabled
        config.connectionPool = .init(idleTimeout: .seconds(30))
        // No client spans: S3 requests run on blocking threads, outside the request's trace
        // context, so each would start a trace of its own (one per ranged GET) whatever the
        // sampling ratio says.
        config.tracing.tracer = nil
        http = HTTPClient(eventLoopGroupProvider: .singleton, configuration: config)
    }

    deinit {
        // Non-blocking: the last reference may go away on any thread.
        http.shutdown(queue: .global()) { _ in }
    }

    static func validBucket(_ b: String) -> Bool {
        (3...63).contains(b.utf8.count)
            && b.utf8.allSatisfy { ($0 >= 97 && $0 <= 122) || ($0 >= 48 && $0 <= 57) || $0 == 46 || $0 == 45 }
    }

    // MARK: requests

    struct Answer {
        var status: Int
        var headers: HTTPHeaders
        var body: ByteBuffer?
    }

    /// Starts one signed request. `key` nil addresses the bucket itself.
    func start(
        _ method: HTTPMethod, key: String?, query: [(String, String)] = [], headers extra: [(String, String)] = [],
        body: ByteBuffer? = nil, payloadHash: String = SigV4Signer.emptyPayloadHash, maxBody: Int
    ) -> EventLoopFuture<Answer> {
        var path = "/" + SigV4Signer.encode(settings.bucket)
        if let key { path += "/" + SigV4Signer.encode(key, keepSlash: true) }
        let queryString = SigV4Signer.canonicalQuery(query)
        let url = "\(scheme)://\(hostHeader)\(path)" + (queryString.isEmpty ? "" : "?" + queryString)
        let amzDate = SigV4Signer.timestamps(Date()).amzDate
        var signed = [("host", hostHeader), ("x-amz-date", amzDate), ("x-amz-content-sha256", payloadHash)]
        signed += extra
        let auth = signer.authorization(
            method: method.rawValue, path: path, query: query, headers: signed, payloadHash: payloadHash, amzDate: amzDate)
        var headers = HTTPHeaders(signed)
        headers.add(name: "authorization", value: auth)
        let loop = http.eventLoopGroup.any()
        do {
            let request = try HTTPClient.Request(url: url, method: method, headers: headers, body: body.map { .byteBuffer($0) })
            let delegate = ResponseAccumulator(request: request, maxBodySize: max(maxBody, Self.errorBodyLimit))
            let deadline = NIODeadline.now() + .seconds(settings.requestTimeoutSeconds)
            return http.execute(request: request, delegate: delegate, deadline: deadline).futureResult.map {
                Answer(status: Int($0.status.code), headers: $0.headers, body: $0.body)
            }
        } catch {
            return loop.makeFailedFuture(error)
        }
    }

    /// Waits for `future`, mapping transport failures to `S3Error.transient`.
    func wait(_ future: EventLoopFuture<Answer>, _ operation: String) throws -> Answer {
        do {
            return try future.wait()
        } catch let e as ResponseAccumulator.ResponseTooBigError {
            throw S3Error(
                kind: .protocolViolation, operation: operation, status: nil, code: nil,
                message: "the answer exceeded \(e.maxBodySize) bytes (not what S3 sends for this request)")
        } catch {
            throw S3Error(
                kind: .transient, operation: operation, status: nil, code: nil,
                message: "no answer from \(settings.endpoint) (\(error)); check the endpoint is up and reachable, then retry")
        }
    }

    /// Maps a non-2xx answer to an error that says what to do.
    func failure(_ a: Answer, _ operation: String) -> S3Error {
        var code: String?
        var message = ""
        if var body = a.body, let text = body.readString(length: min(body.readableBytes, Self.errorBodyLimit)) {
            code = MiniXML.first("Code", in: text)
            message = MiniXML.first("Message", in: text) ?? ""
        }
        let kind: S3Error.Kind
        var advice = ""
        switch (a.status, code) {
        case (412, _):
            kind = .exists
        case (404, "NoSuchBucket"):
            kind = .noBucket
            advice = "bucket '\(settings.bucket)' does not exist at \(settings.endpoint): create it (Depot never creates buckets)"
        case (404, _):
            kind = .missing
        case (403, _), (400, "AuthorizationHeaderMalformed"), (400, "InvalidAccessKeyId"), (401, _):
            kind = .credentials
            advice =
                "the object store refused the credentials: check storage.s3 access_key_env/secret_key_env (or *_file), "
                + "storage.s3.region ('\(settings.region)') and that this machine's clock is within 15 minutes of real time"
        case (501, _):
            kind = .refused
            advice =
                "the endpoint does not implement this request; Depot needs conditional writes (If-None-Match: *) and multipart upload (docs/OBJECT-STORAGE.md)"
        case (429, _), (500...599, _):
            kind = .transient
            advice = "the object store is failing or throttling; retry later"
        default:
            kind = .refused
        }
        let text = [message, advice].filter { !$0.isEmpty }.joined(separator: "; ")
        return S3Error(kind: kind, operation: operation, status: a.status, code: code, message: text)
    }

    /// Runs an idempotent request, retrying transient failures twice (0.2 s, then 1 s later).
    func idempotent<T>(_ operation: String, _ body: () throws -> T) throws -> T {
        var delay: UInt32 = 200_000
        for attempt in 1...3 {
            do {
                return try body()
            } catch let e as S3Error where e.kind == .transient && attempt < 3 {
                usleep(delay)
                delay *= 5
            }
        }
        fatalError("unreachable")
    }

    func objectKey(_ key: String) -> String { settings.prefix + key }

    // MARK: operations

    /// HEAD bucket: reachable, exists, credentials accepted.
    public func checkBucket() throws {
        let op = "HEAD \(settings.location)"
        try idempotent(op) {
            let a = try wait(start(.HEAD, key: nil, maxBody: 0), op)
            guard (200..<300).contains(a.status) else {
                var e = failure(a, op)
                if a.status == 404 { e.kind = .noBucket }
                if e.message.isEmpty, a.status == 404 {
                    e.message =
                        "bucket '\(settings.bucket)' does not exist at \(settings.endpoint): create it (Depot never creates buckets)"
                }
                throw e
            }
        }
    }

    /// Creates the bucket (tests against an emulator; Depot itself never creates buckets).
    public func createBucket() throws {
        let op = "PUT bucket \(settings.bucket)"
        let a = try wait(start(.PUT, key: nil, maxBody: Self.errorBodyLimit), op)
        guard (200..<300).contains(a.status) || a.status == 409 else { throw failure(a, op) }
    }

    /// PUT `body` at `key` only if no object has that key (`If-None-Match: *`).
    public func putNew(key: String, body: ByteBuffer) throws {
        let op = "PUT \(settings.location)\(key)"
        let hash = body.withUnsafeReadableBytes { SHA256.hash($0) }.hex
        let a = try wait(
            start(.PUT, key: objectKey(key), headers: [("if-none-match", "*")], body: body, payloadHash: hash, maxBody: 0), op)
        guard (200..<300).contains(a.status) else { throw failure(a, op) }
    }

    /// Uploads `size` bytes of `file` as a new object at `key`: one PUT up to the part size,
    /// multipart above it, one part in memory at a time. Both forms are conditional
    /// (`If-None-Match: *`, on the PUT or on CompleteMultipartUpload): an existing key is never
    /// overwritten, the call throws `S3Error` with kind `.exists` instead.
    public func upload(key: String, from file: PosixFile, size: Int64) throws {
        guard size >= 0 else { throw DepotError.invalidArgument("negative upload size") }
        if size <= Int64(settings.partSize) {
            try putNew(key: key, body: try Self.read(file, at: 0, count: Int(size)))
            return
        }
        let full = objectKey(key)
        let op = "multipart upload of \(settings.location)\(key)"
        let created = try idempotent(op) { () -> Answer in
            let a = try wait(start(.POST, key: full, query: [("uploads", "")], maxBody: Self.errorBodyLimit), op)
            guard (200..<300).contains(a.status) else { throw failure(a, op) }
            return a
        }
        guard var body = created.body, let text = body.readString(length: body.readableBytes),
            let uploadID = MiniXML.first("UploadId", in: text), !uploadID.isEmpty, uploadID.utf8.count <= 1024
        else {
            throw S3Error(kind: .protocolViolation, operation: op, status: created.status, code: nil, message: "no UploadId in the answer")
        }
        do {
            var etags: [String] = []
            var offset: Int64 = 0
            while offset < size {
                let count = Int(min(Int64(settings.partSize), size - offset))
                let part = try Self.read(file, at: offset, count: count)
                let hash = part.withUnsafeReadableBytes { SHA256.hash($0) }.hex
                let number = etags.count + 1
                guard number <= 10_000 else { throw DepotError.invalidArgument("more than 10000 parts: raise the part size") }
                let partOp = "\(op): part \(number)"
                let etag = try idempotent(partOp) { () -> String in
                    let a = try wait(
                        start(
                            .PUT, key: full, query: [("partNumber", String(number)), ("uploadId", uploadID)], body: part, payloadHash: hash,
                            maxBody: 0), partOp)
                    guard (200..<300).contains(a.status) else { throw failure(a, partOp) }
                    guard let etag = a.headers.first(name: "etag"), !etag.isEmpty, etag.utf8.count <= 256 else {
                        throw S3Error(
                            kind: .protocolViolation, operation: partOp, status: a.status, code: nil, message: "no ETag in the answer")
                    }
                    return etag
                }
                etags.append(etag)
                offset += Int64(count)
            }
            var xml = "<CompleteMultipartUpload xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">"
            for (i, etag) in etags.enumerated() {
                xml += "<Part><PartNumber>\(i + 1)</PartNumber><ETag>\(MiniXML.escape(etag))</ETag></Part>"
            }
            xml += "</CompleteMultipartUpload>"
            let body = ByteBuffer(string: xml)
            let hash = Array(xml.utf8).withUnsafeBytes { SHA256.hash($0) }.hex
            let completeOp = "\(op): complete"
            let a = try wait(
                start(
                    .POST, key: full, query: [("uploadId", uploadID)], headers: [("if-none-match", "*")], body: body, payloadHash: hash,
                    maxBody: Self.errorBodyLimit), completeOp)
            guard (200..<300).contains(a.status) else { throw failure(a, completeOp) }
            // S3 may answer 200 and still report an error in the body (the upload did not complete).
            if var b = a.body, let text = b.readString(length: b.readableBytes), text.contains("<Error>") {
                var failed = failure(Answer(status: 500, headers: a.headers, body: ByteBuffer(string: text)), completeOp)
                if failed.code == "PreconditionFailed" { failed.kind = .exists }
                throw failed
            }
        } catch {
            // Best effort: an unfinished upload costs storage until aborted (also set a bucket
            // lifecycle rule AbortIncompleteMultipartUpload for uploads of replicas that died).
            _ = try? wait(start(.DELETE, key: full, query: [("uploadId", uploadID)], maxBody: Self.errorBodyLimit), op)
            throw error
        }
    }

    static func read(_ file: PosixFile, at offset: Int64, count: Int) throws -> ByteBuffer {
        var buffer = ByteBufferAllocator().buffer(capacity: count)
        try buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: count) { raw in
            try file.read(into: UnsafeMutableRawBufferPointer(rebasing: raw[0..<count]), at: offset)
            return count
        }
        return buffer
    }

    /// Starts a ranged GET of `length` bytes at `offset` of `key` (validated by `finishRange`).
    func startRange(key: String, offset: Int64, length: Int) -> EventLoopFuture<Answer> {
        let last = offset + Int64(length) - 1
        return start(.GET, key: objectKey(key), headers: [("range", "bytes=\(offset)-\(last)")], maxBody: length)
    }

    func finishRange(_ a: Answer, key: String, offset: Int64, length: Int, _ op: String) throws -> ByteBuffer {
        guard a.status == 206 else {
            if a.status == 200 {
                throw S3Error(
                    kind: .protocolViolation, operation: op, status: 200, code: nil,
                    message: "the endpoint ignored the Range header (Depot needs ranged GETs)")
            }
            if a.status == 416 {
                throw S3Error(kind: .missing, operation: op, status: 416, code: nil, message: "the object is shorter than the range")
            }
            throw failure(a, op)
        }
        guard let body = a.body, body.readableBytes == length else {
            throw S3Error(
                kind: .protocolViolation, operation: op, status: 206, code: nil,
                message: "expected \(length) bytes, got \(a.body?.readableBytes ?? 0)")
        }
        if let range = a.headers.first(name: "content-range"), !range.hasPrefix("bytes \(offset)-\(offset + Int64(length) - 1)/") {
            throw S3Error(
                kind: .protocolViolation, operation: op, status: 206, code: nil,
                message: "Content-Range '\(range)' is not the range asked for")
        }
        return body
    }

    /// `length` bytes at `offset` of `key`, exactly, or an error.
    public func get(key: String, offset: Int64, length: Int) throws -> ByteBuffer {
        guard offset >= 0, length > 0, offset.addingReportingOverflow(Int64(length)).overflow == false else {
            throw DepotError.invalidArgument("bad range \(offset)+\(length)")
        }
        let op = "GET \(settings.location)\(key) bytes \(offset)+\(length)"
        return try idempotent(op) {
            try finishRange(wait(startRange(key: key, offset: offset, length: length), op), key: key, offset: offset, length: length, op)
        }
    }

    /// Several ranged GETs in flight at once; one result per request, in order.
    public func getMany(_ requests: [(key: String, offset: Int64, length: Int)]) -> [Result<ByteBuffer, any Error>] {
        let futures = requests.map { startRange(key: $0.key, offset: $0.offset, length: $0.length) }
        return zip(requests, futures).map { r, f in
            let op = "GET \(settings.location)\(r.key) bytes \(r.offset)+\(r.length)"
            return Result { try finishRange(wait(f, op), key: r.key, offset: r.offset, length: r.length, op) }
        }
    }

    /// The object's size, or nil when there is none.
    public func head(key: String) throws -> Int64? {
        let op = "HEAD \(settings.location)\(key)"
        return try idempotent(op) {
            let a = try wait(start(.HEAD, key: objectKey(key), maxBody: 0), op)
            if a.status == 404 { return nil }
            guard (200..<300).contains(a.status) else { throw failure(a, op) }
            guard let text = a.headers.first(name: "content-length"), let size = Int64(text), size >= 0 else {
                throw S3Error(kind: .protocolViolation, operation: op, status: a.status, code: nil, message: "no valid Content-Length")
            }
            return size
        }
    }

    /// Deletes `key`; a missing key is not an error.
    public func delete(key: String) throws {
        let op = "DELETE \(settings.location)\(key)"
        try idempotent(op) {
            let a = try wait(start(.DELETE, key: objectKey(key), maxBody: Self.errorBodyLimit), op)
            guard (200..<300).contains(a.status) || a.status == 404 else { throw failure(a, op) }
        }
    }

    /// Every object under `prefix` (relative to the settings' prefix), with its size, in key order
    /// (ListObjectsV2, 1000 a page).
    public func list(prefix: String, _ body: (_ key: String, _ size: Int64) throws -> Void) throws {
        var token: String?
        let full = objectKey(prefix)
        var pages = 0
        repeat {
            var query = [("list-type", "2"), ("prefix", full), ("max-keys", "1000")]
            if let token { query.append(("continuation-token", token)) }
            let op = "ListObjectsV2 \(settings.location)\(prefix)"
            let a = try idempotent(op) { () -> Answer in
                let a = try wait(start(.GET, key: nil, query: query, maxBody: Self.listBodyLimit), op)
                guard (200..<300).contains(a.status) else { throw failure(a, op) }
                return a
            }
            guard var b = a.body, let text = b.readString(length: b.readableBytes) else { break }
            for item in MiniXML.elements("Contents", in: text) {
                guard let key = MiniXML.first("Key", in: item), let sizeText = MiniXML.first("Size", in: item), let size = Int64(sizeText),
                    size >= 0, key.hasPrefix(settings.prefix)
                else {
                    throw S3Error(
                        kind: .protocolViolation, operation: op, status: a.status, code: nil,
                        message: "a listed object has no valid Key/Size")
                }
                try body(String(key.dropFirst(settings.prefix.count)), size)
            }
            let truncated = MiniXML.first("IsTruncated", in: text) == "true"
            let next = truncated ? MiniXML.first("NextContinuationToken", in: text) : nil
            guard next == nil || next != token else {
                throw S3Error(kind: .protocolViolation, operation: op, status: a.status, code: nil, message: "the listing did not advance")
            }
            token = next
            pages += 1
        } while token != nil
    }
}

/// Just enough XML for S3's answers: the text of simple elements, entities decoded. The input is
/// bounded by the caller; nothing here recurses.
enum MiniXML {
    /// The text of every `<tag>…</tag>` (no attributes expected), in order.
    static func elements(_ tag: String, in text: String) -> [String] {
        var out: [String] = []
        let open = "<\(tag)>"
        let close = "</\(tag)>"
        var rest = text[...]
        while let start = rest.range(of: open) {
            guard let end = rest[start.upperBound...].range(of: close) else { break }
            out.append(String(rest[start.upperBound..<end.lowerBound]))
            rest = rest[end.upperBound...]
        }
        return out
    }

    static func first(_ tag: String, in text: String) -> String? {
        let open = "<\(tag)>"
        guard let start = text.range(of: open), let end = text[start.upperBound...].range(of: "</\(tag)>") else { return nil }
        return unescape(String(text[start.upperBound..<end.lowerBound]))
    }

    static func unescape(_ s: String) -> String {
        guard s.contains("&") else { return s }
        return s.replacingOccurrences(of: "&lt;", with: "<").replacingOccurrences(of: "&gt;", with: ">")
            .replacingOccurrences(of: "&quot;", with: "\"").replacingOccurrences(of: "&apos;", with: "'")
            .replacingOccurrences(of: "&#34;", with: "\"").replacingOccurrences(of: "&amp;", with: "&")
    }

    static func escape(_ s: String) -> String {
        s.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;")
            .replacingOccurrences(of: ">", with: "&gt;").replacingOccurrences(of: "\"", with: "&quot;")
    }
}
