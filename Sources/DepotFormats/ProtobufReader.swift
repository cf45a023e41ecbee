import DepotCore

/// Protobuf wire types.
enum WireType: Int {
    case varint = 0
    case fixed64 = 1
    case lengthDelimited = 2
    case fixed32 = 5
}

/// Reads the protobuf wire format from a ByteSource: tags, varints, strings and nested messages.
/// Length-delimited fields the caller does not want are skipped by seeking, never read.
struct ProtobufReader {
    let cursor: ByteCursor
    /// Strings longer than this are truncated (the rest is skipped): names, versions and doc
    /// strings are short, and every kept string ends up in the metadata document.
    var maxString = 4096

    init(_ source: any ByteSource, what: String) {
        cursor = ByteCursor(source, what: what)
    }

    var position: Int64 { cursor.position }

    /// The next field's number and wire type, or nil at the end of the current message.
    func nextField() throws -> (number: Int, wire: WireType)? {
        guard !cursor.atEnd else { return nil }
        let at = cursor.position
        let key = try cursor.readVarint()
        let number = key >> 3
        guard number >= 1, number <= 536_870_911 else { throw cursor.fail("invalid field number \(number) at offset \(at)") }
        guard let wire = WireType(rawValue: Int(key & 7)) else {
            throw cursor.fail("bad wire type \(key & 7) for field \(number) at offset \(at)")
        }
        return (Int(number), wire)
    }

    func expect(_ wire: WireType, _ wanted: WireType, field: Int) throws {
        guard wire == wanted else {
            throw cursor.fail("field \(field) has wire type \(wire.rawValue), expected \(wanted.rawValue) (offset \(cursor.position))")
        }
    }

    func readVarint() throws -> UInt64 { try cursor.readVarint() }
    func readInt64() throws -> Int64 { Int64(bitPattern: try cursor.readVarint()) }
    func readInt() throws -> Int { Int(truncatingIfNeeded: try readInt64()) }

    /// Reads a length prefix and checks it against the bytes left in the current message.
    func readLength() throws -> Int64 {
        let at = cursor.position
        let n = try cursor.readVarint()
        guard n <= UInt64(max(0, cursor.remaining)) else {
            throw cursor.fail("length \(n) at offset \(at) runs past the end (\(cursor.remaining) bytes left)")
        }
        return Int64(n)
    }

    func readBytes() throws -> [UInt8] {
        let n = try readLength()
        let take = Int(min(n, Int64(maxString)))
        let bytes = try cursor.readBytes(take)
        try cursor.skip(n - Int64(take))
        return bytes
    }

    func readString() throws -> String { String(decoding: try readBytes(), as: UTF8.self) }

    /// Skips a field's value; returns the number of payload bytes skipped.
    @discardableResult
    func skip(_ wire: WireType) throws -> Int64 {
        switch wire {
        case .varint:
            _ = try cursor.readVarint()
            return 0
        case .fixed64:
            try cursor.skip(8)
            return 8
        case .fixed32:
            try cursor.skip(4)
            return 4
        case .lengthDelimited:
            let n = try readLength()
            try cursor.skip(n)
            return n
        }
    }

    /// Runs `body` inside a length-delimited sub-message; afterwards the reader is at its end.
    func message<T>(_ body: () throws -> T) throws -> T {
        let n = try readLength()
        let end = cursor.position + n
        let outer = cursor.limit
        cursor.limit = end
        defer { cursor.limit = outer }
        let result = try body()
        try cursor.seek(to: end)
        return result
    }

    /// Reads a StringStringEntryProto (key = 1, value = 2).
    func readStringEntry() throws -> (key: String, value: String) {
        try message {
            var key = ""
            var value = ""
            while let (n, w) = try nextField() {
                switch n {
                case 1:
                    try expect(w, .lengthDelimited, field: n)
                    key = try readString()
                case 2:
                    try expect(w, .lengthDelimited, field: n)
                    value = try readString()
                default: try skip(w)
                }
            }
            return (key, value)
        }
    }
}

/// The `top` most frequent keys of a histogram (ties broken by name).
func topCounts(_ counts: [String: Int], _ top: Int) -> [String: Int] {
    let kept = counts.sorted { ($0.value, $1.key) > ($1.value, $0.key) }.prefix(top)
    return Dictionary(uniqueKeysWithValues: kept.map { ($0.key, $0.value) })
}
