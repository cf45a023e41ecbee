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
        let start = Int(offset)
        let end = start + min(count, bytes.count - start)
        return Array(bytes[start..<end])
    }
}

/// Sequential reader over a ByteSource through a buffered window (64 KiB by default).
/// Reads never pass `limit`; every failure is a `DepotError.invalidArgument` naming `what`.
/// The window lives in memory the cursor owns (not an array property), so that per-byte reads
/// cost no reference counting in debug builds, where that dominated. A cursor is used by one
/// reader on one thread; its hot fields skip the runtime's exclusivity checks (in debug builds a
/// third of the time went to them).
final class ByteCursor {
    let source: any ByteSource
    let what: String
    let fileSize: Int64
    @exclusivity(unchecked) private(set) var position: Int64
    /// Reads may not pass this offset (nested protobuf messages lower it temporarily).
    @exclusivity(unchecked) var limit: Int64
    /// The cursor's initial limit: windows are never read past it, so scanning many small ranges
    /// of one file (ZIP entries) costs their sizes, not a 64 KiB window each.
    private let end: Int64
    @exclusivity(unchecked) private var storage: UnsafeMutableRawBufferPointer
    @exclusivity(unchecked) private var bufferCount = 0
    @exclusivity(unchecked) private var bufferStart: Int64 = 0
    private let window: Int

    init(_ source: any ByteSource, what: String, start: Int64 = 0, end: Int64? = nil, window: Int = 64 << 10) {
        self.source = source
        self.what = what
        self.fileSize = source.size
        self.position = max(0, min(start, fileSize))
        self.limit = max(self.position, min(end ?? fileSize, fileSize))
        self.end = self.limit
        self.window = window
        // Never more than the range needs: cursors over tiny ranges stay tiny.
        storage = .allocate(byteCount: Int(max(1, min(Int64(window), self.limit - self.position))), alignment: 8)
    }

    deinit { storage.deallocate() }

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
        guard position >= bufferStart, position < bufferStart + Int64(bufferCount) else { return 0 }
        return Int(bufferStart + Int64(bufferCount) - position)
    }

    /// Makes at least `n` bytes (n <= window) from `position` available in the buffer.
    private func ensure(_ n: Int) throws {
        guard Int64(n) <= remaining else { throw truncated(Int64(n)) }
        if buffered >= n { return }
        let count = Int(min(Int64(max(window, n)), end - position))
        let data = try source.read(at: position, count: count)
        guard data.count >= n else { throw truncated(Int64(n)) }
        if data.count > storage.count {
            storage.deallocate()
            storage = .allocate(byteCount: data.count, alignment: 8)
        }
        data.withUnsafeBytes { UnsafeMutableRawBufferPointer(rebasing: storage[0..<$0.count]).copyMemory(from: $0) }
        bufferCount = data.count
        bufferStart = position
    }

    func readByte() throws -> UInt8 {
        try ensure(1)
        let b = storage[Int(position - bufferStart)]
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
        return Array(UnsafeRawBufferPointer(rebasing: storage[start..<(start + n)]))
    }

    func readUInt(_ width: Int) throws -> UInt64 {
        guard width >= 0, width <= 8, Int64(width) <= remaining else { throw truncated(Int64(width)) }
        try ensure(width)
        let start = Int(position - bufferStart)
        var v: UInt64 = 0
        for i in 0..<width { v |= UInt64(storage[start + i]) << (8 * UInt64(i)) }
        position += Int64(width)
        return v
    }

    /// Reads a base-128 varint (at most 10 bytes).
    func readVarint() throws -> UInt64 {
        if buffered >= 10 {
            // Fast path: decode straight from the buffer.
            let start = Int(position - bufferStart)
            var value: UInt64 = 0
            var used = 0
            for i in 0..<10 {
                let b = storage[start + i]
                value |= UInt64(b & 0x7f) << (7 * UInt64(i))
                if b < 0x80 {
                    used = i + 1
                    break
                }
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
            let usable = Int(min(Int64(buffered), remaining))
            var found: Int?
            for i in 0..<usable where storage[start + i] == 0x0a {
                found = i
                break
            }
            if let found {
                line.append(contentsOf: UnsafeRawBufferPointer(rebasing: storage[start..<(start + found)]))
                position += Int64(found + 1)
                guard line.count <= max else { throw fail("line longer than \(max) bytes at offset \(position)") }
                return line
            }
            line.append(contentsOf: UnsafeRawBufferPointer(rebasing: storage[start..<(start + usable)]))
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
