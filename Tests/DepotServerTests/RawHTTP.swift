import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// A plain TCP connection to the server under test, for requests no well-behaved HTTP client
/// would send: invalid `Content-Length`, headers sent a byte at a time, bodies that trickle.
/// Blocking reads run on a thread of their own (`blocking`): on the Swift concurrency pool they
/// would starve the in-process server's handlers, which run there too (2 cores = 2 threads).
final class RawConnection: @unchecked Sendable {
    let fd: Int32
    /// Bytes read past the end of the last response (pipelined responses).
    private var leftover: [UInt8] = []

    init(port: Int, receiveTimeout: Double = 10) throws {
        fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw POSIXError(.EIO) }
        var tv = timeval(tv_sec: Int(receiveTimeout), tv_usec: Int((receiveTimeout - Double(Int(receiveTimeout))) * 1e6))
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = in_port_t(UInt16(port).bigEndian)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        let rc = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard rc == 0 else {
            close(fd)
            throw POSIXError(.ECONNREFUSED)
        }
    }

    deinit { close(fd) }

    /// Sends bytes; false when the peer has closed the connection.
    @discardableResult
    func send(_ text: String) -> Bool { send(Array(text.utf8)) }

    @discardableResult
    func send(_ bytes: [UInt8]) -> Bool {
        var sent = 0
        while sent < bytes.count {
            let n = bytes[sent...].withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if n <= 0 { return false }
            sent += n
        }
        return true
    }

    /// Reads one response head and, given its Content-Length, its body. Nil when the
    /// connection closed (or timed out) before a complete head arrived.
    func readResponse() async -> RawResponse? {
        await blocking { self.readResponseBlocking() }
    }

    /// True when the server has closed the connection (recv returns 0 or an error other than a timeout).
    func isClosedByPeer() async -> Bool {
        await blocking {
            var byte: UInt8 = 0
            let n = recv(self.fd, &byte, 1, 0)
            return n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK)
        }
    }

    /// Reads until the peer closes (or the receive timeout passes); returns the bytes read and
    /// whether the peer closed the connection.
    func drain() async -> (bytes: Int, closed: Bool) {
        await blocking {
            var total = 0
            var buffer = [UInt8](repeating: 0, count: 1 << 16)
            while true {
                let n = buffer.withUnsafeMutableBytes { recv(self.fd, $0.baseAddress, $0.count, 0) }
                if n <= 0 { return (total, n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK)) }
                total += n
            }
        }
    }

    private func readResponseBlocking() -> RawResponse? {
        var data: [UInt8] = leftover
        leftover = []
        var buffer = [UInt8](repeating: 0, count: 65536)
        func fill() -> Bool {
            let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            guard n > 0 else { return false }
            data.append(contentsOf: buffer[0..<n])
            return true
        }
        let separator: [UInt8] = Array("\r\n\r\n".utf8)
        var headEnd: Int?
        while headEnd == nil {
            if let r = data.firstRange(of: separator) {
                headEnd = r.upperBound
                break
            }
            guard fill() else { return nil }
        }
        let head = String(decoding: data[0..<headEnd!], as: UTF8.self)
        var lines = head.components(separatedBy: "\r\n").filter { !$0.isEmpty }
        let statusLine = lines.removeFirst().split(separator: " ")
        guard statusLine.count >= 2, let status = Int(statusLine[1]) else { return nil }
        var headers: [String: String] = [:]
        for line in lines {
            guard let colon = line.firstIndex(of: ":") else { continue }
            headers[line[..<colon].lowercased()] = line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
        }
        let length = Int(headers["content-length"] ?? "0") ?? 0
        while data.count - headEnd! < length { guard fill() else { break } }
        leftover = Array(data[headEnd!...].dropFirst(length))
        return RawResponse(status: status, headers: headers, bytes: Array(data[headEnd!...].prefix(length)))
    }

}

struct RawResponse: Sendable {
    var status: Int
    var headers: [String: String]
    var bytes: [UInt8]
    var body: String { String(decoding: bytes, as: UTF8.self) }
}

/// Runs blocking work on a fresh thread, off the Swift concurrency pool.
func blocking<T: Sendable>(_ body: @escaping @Sendable () -> T) async -> T {
    await withCheckedContinuation { continuation in
        Thread { continuation.resume(returning: body()) }.start()
    }
}

/// Sends one raw request on a new connection and reads the response (nil if none came).
func rawRequest(port: Int, _ text: String, body: [UInt8] = []) async throws -> RawResponse? {
    let c = try RawConnection(port: port)
    c.send(Array(text.utf8) + body)
    return await c.readResponse()
}
