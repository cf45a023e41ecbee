import AsyncHTTPClient
import CDepotSupport
import DepotAPI
import DepotCore
import Foundation
import NIOCore
import NIOHTTP1

/// A failed client operation, with a one-line message for the user.
public struct ClientError: Error, CustomStringConvertible, Sendable {
    public var message: String
    /// The registry's error code (e.g. `BLOB_UNKNOWN`), when it answered with one.
    public var code: String?
    public var status: Int?
    public init(_ message: String, code: String? = nil, status: Int? = nil) {
        self.message = message
        self.code = code
        self.status = status
    }
    public var description: String { message }
}

/// Payload bytes moved over the wire (request and response bodies), for `--json` summaries.
public final class TransferCounters: Sendable {
    private let state = Locked((sent: Int64(0), received: Int64(0)))
    public init() {}
    public var sent: Int64 { state.withLock { $0.sent } }
    public var received: Int64 { state.withLock { $0.received } }
    func add(sent n: Int) { state.withLock { $0.sent += Int64(n) } }
    func add(received n: Int) { state.withLock { $0.received += Int64(n) } }
}

/// One registry endpoint: base URL, credential, an HTTP client with pooled connections,
/// retries with exponential backoff on transient failures (connection errors, 5xx, 429).
///
/// The credential goes only to the registry's own origin (scheme, host, port): never to another
/// host a `Location` names (blob redirects to storage), and to a token endpoint only as the
/// registry's Bearer challenge directs (the distribution token flow), over https or on the
/// registry's own host.
public final class RegistryConnection: Sendable {
    public let baseURL: String
    let credential: RegistryCredential?
    /// The token-flow state: the bearer token in use and the scopes it was asked for.
    let flow = Locked<(jwt: String?, scopes: [String])>((nil, []))
    /// Sent as `Depot-Actor` (recorded in tag journals and the audit log; self-declared until
    /// the registry authenticates clients).
    public let actor: String
    let http: HTTPClient
    public let counters = TransferCounters()
    /// Attempts per request for transient failures.
    public let attempts: Int

    /// Keeps the process's memory bounded while several threads allocate multi-MiB batch
    /// buffers: two malloc arenas (glibc otherwise keeps freed batches in one arena per
    /// thread), and buffers up to 16 MiB (an 8 MiB batch and its records) reused from the heap.
    /// With a 1 MiB threshold every batch buffer was a fresh mapping, and zeroing its pages on
    /// first touch was a third of a push's CPU: a 1 GiB push took 3.9 CPU-seconds, now 2.6, for
    /// ~40 MB more peak RSS (~150 MB).
    public static func tuneMemory() {
        depot_tune_malloc(2, 16 << 20)
    }

    public convenience init(url: String, token: String?, attempts: Int = 5, tls: ClientTLSOptions = ClientTLSOptions()) throws {
        try self.init(url: url, credential: token.map(RegistryCredential.token), attempts: attempts, tls: tls)
    }

    public init(url: String, credential: RegistryCredential?, attempts: Int = 5, tls: ClientTLSOptions = ClientTLSOptions()) throws {
        var base = url
        while base.hasSuffix("/") { base.removeLast() }
        if !base.contains("://") { base = "http://" + base }
        guard let parsed = URL(string: base), let scheme = parsed.scheme, ["http", "https"].contains(scheme), parsed.host != nil else {
            throw ClientError("registry URL '\(url)' is not an http(s) URL")
        }
        baseURL = base
        self.credential = credential
        let env = ProcessInfo.processInfo.environment
        actor =
            env["DEPOT_ACTOR"].flatMap { $0.isEmpty ? nil : $0 }
            ?? "\(env["USER"] ?? env["LOGNAME"] ?? "user")@\(ProcessInfo.processInfo.hostName)"
        self.attempts = max(1, attempts)
        var config = HTTPClient.Configuration()
        config.timeout = .init(connect: .seconds(10), read: .seconds(300))
        config.connectionPool = .init(idleTimeout: .seconds(60), concurrentHTTP1ConnectionsPerHostSoftLimit: 16)
        // Our own retry loop backs off and reports; the pool's silent retries until the connect
        // timeout would turn "connection refused" into a minute of waiting.
        config.connectionPool.retryConnectionEstablishment = false
        config.decompression = .disabled
        config.tlsConfiguration = try tls.configuration()
        http = HTTPClient(eventLoopGroupProvider: .singleton, configuration: config)
    }

    public func shutdown() async {
        try? await http.shutdown()
    }

    /// A request body, rebuilt for each attempt.
    enum Body: Sendable {
        case none
        case bytes([UInt8])
        case buffer(ByteBuffer)
        /// A byte range of a local file, streamed.
        case file(path: String, range: Range<Int64>)

        var length: Int64 {
            switch self {
            case .none: return 0
            case .bytes(let b): return Int64(b.count)
            case .buffer(let b): return Int64(b.readableBytes)
            case .file(_, let r): return r.upperBound - r.lowerBound
            }
        }
    }

    func url(_ path: String) -> String {
        path.hasPrefix("http://") || path.hasPrefix("https://") ? path : baseURL + path
    }

    /// Sends a request, retrying transient failures. Returns the response when its status is
    /// in `accept`; otherwise throws a `ClientError` built from the registry's error body.
    func send(
        _ method: HTTPMethod, _ path: String, headers: [(String, String)] = [], body: Body = .none,
        accept: Set<Int>, timeout: TimeAmount = .hours(2)
    ) async throws -> HTTPClientResponse {
        var delay = 0.2
        var attempt = 1
        var fetchedToken = false
        let target = url(path)
        let ownOrigin = Self.origin(target) == Self.origin(baseURL)
        while true {
            var request = HTTPClientRequest(url: target)
            request.method = method
            for (name, value) in headers { request.headers.add(name: name, value: value) }
            if ownOrigin {
                if let jwt = flow.withLock({ $0.jwt }) {
                    request.headers.replaceOrAdd(name: "Authorization", value: "Bearer \(jwt)")
                } else if let credential {
                    request.headers.replaceOrAdd(name: "Authorization", value: credential.authorization)
                }
            }
            request.headers.replaceOrAdd(name: "Depot-Actor", value: actor)
            switch body {
            case .none: break
            case .bytes(let b): request.body = .bytes(b)
            case .buffer(let b): request.body = .bytes(b)
            case .file(let path, let range):
                request.body = .stream(
                    FileChunks(path: path, range: range, counters: counters), length: .known(range.upperBound - range.lowerBound))
            }
            let response: HTTPClientResponse
            do {
                response = try await http.execute(request, timeout: timeout)
                if case .file = body {} else { counters.add(sent: Int(body.length)) }
            } catch {
                if attempt < attempts, Self.isTransient(error) {
                    try await backoff(&delay, &attempt)
                    continue
                }
                throw ClientError("cannot reach the registry at \(baseURL): \(Self.describe(error))")
            }
            let status = Int(response.status.code)
            if accept.contains(status) { return response }
            // The token flow: a Bearer challenge names the token endpoint and the scope this
            // request needs; fetch a token for it (and the scopes before it) once, and resend.
            if status == 401, ownOrigin, !fetchedToken,
                let challenge = response.headers.first(name: "WWW-Authenticate").flatMap(BearerChallenge.init)
            {
                fetchedToken = true
                _ = try? await collect(response, limit: 64 << 10)
                try await fetchToken(challenge)
                continue
            }
            let text = try? await collect(response, limit: 64 << 10)
            if attempt < attempts, status == 429 || (status >= 500 && status != 501 && status != 505 && status != 507) {
                try await backoff(&delay, &attempt)
                continue
            }
            var e = Self.error(status: status, body: text ?? [], method: method, path: path)
            if status == 403, credential == nil { e.message += " (no credentials were sent: set DEPOT_TOKEN or run `depot login`)" }
            throw e
        }
    }

    /// Asks the challenge's realm for a token carrying its scope and every scope asked before.
    func fetchToken(_ challenge: BearerChallenge) async throws {
        guard let realm = URL(string: challenge.realm), let host = realm.host, ["http", "https"].contains(realm.scheme ?? "") else {
            throw ClientError("the registry's token endpoint '\(challenge.realm.prefix(100))' is not an http(s) URL")
        }
        let registryHost = URL(string: baseURL)?.host
        // Credentials cross the network in the clear only to this registry's own host or loopback.
        let sendCredential = realm.scheme == "https" || host == registryHost || Self.isLoopback(host)
        let scopes = flow.withLock { f -> [String] in
            if let s = challenge.scope, !f.scopes.contains(s) { f.scopes = Array((f.scopes + [s]).suffix(16)) }
            return f.scopes
        }
        var components = URLComponents(string: challenge.realm)
        var items = components?.queryItems ?? []
        if let service = challenge.service { items.append(URLQueryItem(name: "service", value: service)) }
        for s in scopes { items.append(URLQueryItem(name: "scope", value: s)) }
        components?.queryItems = items
        guard let tokenURL = components?.url?.absoluteString else { throw ClientError("cannot build the token request URL") }
        var request = HTTPClientRequest(url: tokenURL)
        if sendCredential, let credential {
            request.headers.replaceOrAdd(name: "Authorization", value: credential.basicForTokenEndpoint)
        }
        let response: HTTPClientResponse
        do { response = try await http.execute(request, timeout: .seconds(60)) } catch {
            throw ClientError("cannot reach the token endpoint \(tokenURL): \(Self.describe(error))")
        }
        let bytes = try await collect(response, limit: 1 << 20)
        guard response.status.code == 200 else {
            throw Self.error(status: Int(response.status.code), body: bytes, method: .GET, path: tokenURL)
        }
        struct Answer: Decodable {
            var token: String?
            var accessToken: String?
            enum CodingKeys: String, CodingKey {
                case token
                case accessToken = "access_token"
            }
        }
        guard let answer = try? WireJSON.decode(Answer.self, from: bytes, what: "token answer"),
            let jwt = answer.token ?? answer.accessToken, !jwt.isEmpty
        else { throw ClientError("the token endpoint \(tokenURL) answered without a token") }
        flow.withLock { $0.jwt = jwt }
    }

    /// `scheme://host:port` of a URL, for same-origin checks.
    static func origin(_ url: String) -> String {
        guard let u = URL(string: url), let scheme = u.scheme, let host = u.host else { return url }
        let port = u.port ?? (scheme == "https" ? 443 : 80)
        return "\(scheme)://\(host.lowercased()):\(port)"
    }

    /// `localhost`, `::1` and IPv4 literals in 127.0.0.0/8 (not names that merely start with "127.").
    public static func isLoopback(_ host: String) -> Bool {
        if host == "localhost" || host == "::1" || host == "[::1]" { return true }
        let parts = host.split(separator: ".", omittingEmptySubsequences: false)
        return parts.count == 4 && parts[0] == "127"
            && parts.allSatisfy { p in p.count <= 3 && !p.isEmpty && p.allSatisfy(\.isASCII) && UInt8(p) != nil }
    }

    private func backoff(_ delay: inout Double, _ attempt: inout Int) async throws {
        let jitter = Double.random(in: 0.8...1.2)
        try await Task.sleep(nanoseconds: UInt64(delay * jitter * 1e9))
        delay = min(delay * 2, 10)
        attempt += 1
    }

    /// Reads a whole (small) response body.
    func collect(_ response: HTTPClientResponse, limit: Int) async throws -> [UInt8] {
        var out: [UInt8] = []
        for try await part in response.body {
            counters.add(received: part.readableBytes)
            guard out.count + part.readableBytes <= limit else {
                throw ClientError("the registry's answer exceeds \(limit) bytes")
            }
            out.append(contentsOf: part.readableBytesView)
        }
        return out
    }

    static func isTransient(_ error: any Error) -> Bool {
        if error is CancellationError { return false }
        if ClientTLSOptions.explain(error) != nil { return false }
        if let e = error as? HTTPClientError {
            return e != .invalidURL && e != .emptyHost && e != .cancelled
        }
        return true // connection refused/reset, timeouts, TLS and other channel errors
    }

    static func describe(_ error: any Error) -> String {
        if let tls = ClientTLSOptions.explain(error) { return tls }
        let text = "\(error)"
        if text.contains("connectionRefused") || text.contains("Connection refused") { return "connection refused" }
        if text.contains("connectTimeout") { return "connection timed out" }
        if text.contains("readTimeout") || text.contains("deadlineExceeded") { return "no answer in time" }
        return text
    }

    /// A `ClientError` from an OCI error body (`{"errors":[{"code","message"}]}`) or the status.
    static func error(status: Int, body: [UInt8], method: HTTPMethod, path: String) -> ClientError {
        var code: String?
        var message: String?
        if let first = (try? WireJSON.decode(OCIErrorBody.self, from: body, what: "error body"))?.errors.first {
            code = first.code
            message = first.message
        } else if method == .HEAD {
            // A HEAD answer has no body to carry a code: the spec's code for its status and route,
            // so a program branching on codes sees the same one a GET would have given.
            switch status {
            case 401: code = "UNAUTHORIZED"
            case 403: code = "DENIED"
            case 404:
                // The route is /v2/<name>/{blobs,manifests}/<reference>: the second component from
                // the end, not any component (a repository may be named .../blobs/...).
                let parts = path.split(separator: "?", maxSplits: 1)[0].split(separator: "/")
                let kind = parts.count >= 2 ? parts[parts.count - 2] : ""
                code = kind == "blobs" ? "BLOB_UNKNOWN" : kind == "manifests" ? "MANIFEST_UNKNOWN" : nil
            default: break
            }
        }
        let what: String
        switch status {
        case 401:
            what =
                "the registry wants credentials it was not given or refused them"
                + (message.map { " (\($0))" } ?? "") + ": set DEPOT_TOKEN or run `depot login`"
        case 403: what = message ?? "access denied"
        default: what = message ?? (String(decoding: body.prefix(200), as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines))
        }
        let codeText = code.map { " \($0)" } ?? ""
        return ClientError("\(method) \(path): \(status)\(codeText): \(what)", code: code, status: status)
    }
}

/// Streams a byte range of a file as request body parts of up to 1 MiB.
struct FileChunks: AsyncSequence, Sendable {
    typealias Element = ByteBuffer
    let path: String
    let range: Range<Int64>
    let counters: TransferCounters

    struct AsyncIterator: AsyncIteratorProtocol {
        let file: PosixFile?
        var position: Int64
        let end: Int64
        let counters: TransferCounters
        var error: (any Error)?

        mutating func next() async throws -> ByteBuffer? {
            if let error { throw error }
            guard position < end, let file else { return nil }
            let n = Int(Swift.min(end - position, 1 << 20))
            var buffer = ByteBufferAllocator().buffer(capacity: n)
            let at = position
            try buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: n) { p in
                try file.read(into: UnsafeMutableRawBufferPointer(rebasing: p[0..<n]), at: at)
                return n
            }
            position += Int64(n)
            counters.add(sent: n)
            return buffer
        }
    }

    func makeAsyncIterator() -> AsyncIterator {
        do {
            return AsyncIterator(
                file: try PosixFile(path: path, mode: .read), position: range.lowerBound, end: range.upperBound, counters: counters)
        } catch {
            return AsyncIterator(file: nil, position: 0, end: 0, counters: counters, error: error)
        }
    }
}
