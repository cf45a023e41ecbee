import DepotCore
import Foundation

/// Random access to a file's bytes (the registry adapts its blob store to it).
public protocol ByteSource {
    var size: Int64 { get }
    /// Returns exactly `min(count, size - offset)` bytes starting at `offset`.
    func read(at offset: Int64, count: Int) throws -> [UInt8]
}

/// An in-memory ByteSource (tests, small files).
public struct BytesSource: ByteSource, Sendable {
    public let bytes: [UInt8]
    public init(_ bytes: [UInt8]) { self.bytes = bytes }
    public var size: Int64 { Int64(bytes.count) }
    public func read(at offset: Int64, count: Int) throws -> [UInt8] {
        guard offset >= 0, count >= 0, offset <= size else {
            throw DepotError.rangeInvalid("read at \(offset) of \(count) bytes outside \(size) bytes")
        }
        let start = Int(offset), end = start + min(count, bytes.count - start)
        return Array(bytes[start..<end])
    }
}

/// Sequential reader over a ByteSource through a buffered window (64 KiB by default).
/// Reads never pass `limit`; every failure is a `DepotError.invalidArgument` naming `what`.
final class ByteCursor {
    let source: any ByteSource
    let what: String
    let fileSize: Int64
    private(set) var position: Int64
    /// Reads may not pass this offset (nested protobuf messages lower it temporarily).
    var limit: Int64
    /// The cursor's initial limit: windows are never read past it, so scanning many small ranges
    /// of one file (ZIP entries) costs their sizes, not a 64 KiB window each.
    private let end: Int64
    private var buffer: [UInt8] = []
    private var bufferStart: Int64 = 0
    private let window: Int

    init(_ source: any ByteSource, what: String, start: Int64 = 0, end: Int64? = nil, window: Int = 64 << 10) {
        self.source = source
        self.what = what
        self.fileSize = source.size
        self.position = max(0, min(start, fileSize))
        self.limit = max(self.position, min(end ?? fileSize, fileSize))
        self.end = self.limit
        self.window = window
    }

    var remaining: Int64 { limit - position }
    var atEnd: Bool { position >= limit }

    func fail(_ message: String) -> DepotError {
        DepotError.invalidArgument("\(what): \(message)")
    }

    func truncated(_ need: Int64) -> DepotError {
        fail("truncated: needs \(need) bytes at offset \(position) but only \(max(0, remaining)) remain")
    }

    /// Number of bytes buffered from `position` on (0 when outside the window).
    private var buffered: Int {
        guard position >= bufferStart, position < bufferStart + Int64(buffer.count) else { return 0 }
        return Int(bufferStart + Int64(buffer.count) - position)
    }

    /// Makes at least `n` bytes (n <= window) from `position` available in the buffer.
    private func ensure(_ n: Int) throws {
        guard Int64(n) <= remaining else { throw truncated(Int64(n)) }
        if buffered >= n { return }
        let count = Int(min(Int64(max(window, n)), max(end, limit) - position))
        let data = try source.read(at: position, count: count)
        guard data.count >= n else { throw truncated(Int64(n)) }
        buffer = data
        bufferStart = position
    }

    func readByte() throws -> UInt8 {
        try ensure(1)
        let b = buffer[Int(position - bufferStart)]
        position += 1
        return b
    }

    /// Reads `n` bytes; the caller bounds `n` (it is checked against the remaining bytes).
    func readBytes(_ n: Int) throws -> [UInt8] {
        guard n >= 0, Int64(n) <= remaining else { throw truncated(Int64(n)) }
        if n > window {
            let data = try source.read(at: position, count: n)
            guard data.count == n else { throw truncated(Int64(n)) }
            position += Int64(n)
            return data
        }
        try ensure(n)
        let start = Int(position - bufferStart)
        position += Int64(n)
        return Array(buffer[start..<(start + n)])
    }

    func readUInt(_ width: Int) throws -> UInt64 {
        let bytes = try readBytes(width)
        var v: UInt64 = 0
        for (i, b) in bytes.enumerated() { v |= UInt64(b) << (8 * UInt64(i)) }
        return v
    }

    /// Reads a base-128 varint (at most 10 bytes).
    func readVarint() throws -> UInt64 {
        if buffered >= 10 {
            // Fast path: decode straight from the buffer.
            let start = Int(position - bufferStart)
            let (value, used) = buffer.withUnsafeBytes { raw -> (UInt64, Int) in
                var v: UInt64 = 0
                for i in 0..<10 {
                    let b = raw[start + i]
                    v |= UInt64(b & 0x7f) << (7 * UInt64(i))
                    if b < 0x80 { return (v, i + 1) }
                }
                return (0, 0)
            }
            guard used > 0 else { throw fail("varint longer than 10 bytes at offset \(position)") }
            guard Int64(used) <= remaining else { throw truncated(Int64(used)) }
            position += Int64(used)
            return value
        }
        var v: UInt64 = 0
        for i in 0..<10 {
            let b = try readByte()
            v |= UInt64(b & 0x7f) << (7 * UInt64(i))
            if b < 0x80 { return v }
        }
        throw fail("varint longer than 10 bytes at offset \(position)")
    }

    /// Reads up to and excluding a newline (consumed); lines longer than `max` are an error.
    func readLine(max: Int = 64 << 10) throws -> [UInt8] {
        var line: [UInt8] = []
        while true {
            if buffered == 0 { try ensure(1) }
            let start = Int(position - bufferStart)
            let avail = buffered
            let found: Int? = buffer.withUnsafeBytes { raw in
                for i in 0..<avail where raw[start + i] == 0x0a { return i }
                return nil
            }
            let usable = Int(min(Int64(avail), remaining))
            if let found, found < usable {
                line.append(contentsOf: buffer[start..<(start + found)])
                position += Int64(found + 1)
                guard line.count <= max else { throw fail("line longer than \(max) bytes at offset \(position)") }
                return line
            }
            line.append(contentsOf: buffer[start..<(start + usable)])
            position += Int64(usable)
            guard line.count <= max else { throw fail("line longer than \(max) bytes at offset \(position)") }
            if atEnd { throw fail("unterminated line at offset \(position)") }
        }
    }

    func skip(_ n: Int64) throws {
        guard n >= 0, n <= remaining else { throw truncated(n) }
        position += n
    }

    func seek(to offset: Int64) throws {
        guard offset >= 0, offset <= limit else { throw fail("seek to \(offset) beyond \(limit)") }
        position = offset
    }
}
