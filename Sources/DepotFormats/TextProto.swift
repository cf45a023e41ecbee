import DepotAPI
import DepotCore
import Foundation

/// A small parser for the protobuf text format (as in Triton's config.pbtxt). Produces a tree of
/// `[String: JSONValue]` messages; a field seen more than once, or written as a `[...]` list,
/// becomes an array. Scalars are strings (quoted strings and enum identifiers), ints, doubles or
/// bools.
struct TextProto {
    /// The text's bytes. A buffer pointer, not an array: in debug builds every access to an array
    /// property retains and releases it, which made parsing several times slower.
    private let s: UnsafeBufferPointer<UInt8>
    private var i = 0
    private var depth = 0
    private let what: String
    private let budget: InspectionBudget?
    private var steps = 0
    private var values = 0
    private var messages = 0
    private var lastName: (start: Int, count: Int, string: String) = (0, -1, "")
    /// A real config has hundreds of fields. The parse tree costs ~100 bytes a value and more a
    /// message, so these caps bound its memory whatever the input.
    static let maxValues = 1 << 20
    static let maxMessages = 100_000

    static func parse(_ text: String, what: String = "config.pbtxt", budget: InspectionBudget? = nil) throws -> [String: JSONValue] {
        let bytes = Array(text.utf8)
        return try bytes.withUnsafeBufferPointer { buffer in
            var p = TextProto(s: buffer, what: what, budget: budget)
            return try p.fields(until: nil)
        }
    }

    private init(s: UnsafeBufferPointer<UInt8>, what: String, budget: InspectionBudget?) {
        self.s = s
        self.what = what
        self.budget = budget
    }

    private func error(_ message: String, at index: Int? = nil) -> DepotError {
        let at = min(index ?? i, s.count)
        var line = 1
        var column = 1
        for b in s[0..<at] {
            if b == 0x0a {
                line += 1
                column = 1
            } else {
                column += 1
            }
        }
        return DepotError.invalidArgument("\(what) line \(line), column \(column): \(message)")
    }

    /// Skips whitespace and `#` comments.
    private mutating func space() {
        while i < s.count {
            let c = s[i]
            if c == 0x20 || c == 0x09 || c == 0x0a || c == 0x0d {
                i += 1
            } else if c == UInt8(ascii: "#") {
                while i < s.count, s[i] != 0x0a { i += 1 }
            } else {
                break
            }
        }
    }

    private mutating func peek() -> UInt8? {
        space()
        return i < s.count ? s[i] : nil
    }

    private static func isIdent(_ c: UInt8, first: Bool) -> Bool {
        (c >= 0x41 && c <= 0x5a) || (c >= 0x61 && c <= 0x7a) || c == 0x5f || (!first && ((c >= 0x30 && c <= 0x39) || c == 0x2e))
    }

    private mutating func identifier() throws -> String {
        space()
        let start = i
        guard i < s.count, Self.isIdent(s[i], first: true) else {
            throw error(
                i < s.count
                    ? "expected a field name, found '\(Character(Unicode.Scalar(s[i])))'" : "expected a field name, found end of input")
        }
        while i < s.count, Self.isIdent(s[i], first: false) { i += 1 }
        // Field names repeat: reuse the previous name's String when the bytes are the same.
        if i - start == lastName.count, memcmp(s.baseAddress! + start, s.baseAddress! + lastName.start, lastName.count) == 0 {
            return lastName.string
        }
        let name = String(decoding: UnsafeBufferPointer(rebasing: s[start..<i]), as: UTF8.self)
        lastName = (start, i - start, name)
        return name
    }

    /// Fields up to `close` (or the end of input for the top level).
    private mutating func fields(until close: UInt8?) throws -> [String: JSONValue] {
        depth += 1
        defer { depth -= 1 }
        guard depth < 100 else { throw error("messages nested too deeply") }
        // One slot a field name, found through one dictionary lookup; a repeated field's values
        // are appended in place to its slot's list. (Appending to an array copied out of a
        // dictionary copies it every time: 150,000 repeats of one field took over 20 s.)
        var index: [String: Int] = [:]
        var slots: [Slot] = []
        while true {
            guard let c = peek() else {
                if let close { throw error("expected '\(Character(Unicode.Scalar(close)))' before end of input") }
                return Self.tree(index, slots)
            }
            if let close, c == close {
                i += 1
                return Self.tree(index, slots)
            }
            if c == UInt8(ascii: ",") || c == UInt8(ascii: ";") {
                i += 1
                continue
            }
            steps += 1
            if steps & 4095 == 0 { try budget?.checkTime() }
            let name: String
            if c == UInt8(ascii: "[") { // extension or Any type URL: [foo.bar]
                let start = i
                while i < s.count, s[i] != UInt8(ascii: "]") { i += 1 }
                guard i < s.count else { throw error("unterminated '['", at: start) }
                i += 1
                name = String(decoding: UnsafeBufferPointer(rebasing: s[start..<i]), as: UTF8.self)
            } else {
                name = try identifier()
            }
            var colon = false
            if peek() == UInt8(ascii: ":") {
                i += 1
                colon = true
            }
            var isList = false
            // A `[...]` list comes back as its elements, not wrapped: it is appended, never
            // unwrapped from an enum payload.
            let value = try fieldValue(colon: colon, field: name, isList: &isList)
            guard let k = index[name] else {
                index[name] = slots.count
                slots.append(isList ? Slot(single: nil, list: value.list) : Slot(single: value.single, list: nil))
                continue
            }
            if let first = slots[k].single {
                slots[k].single = nil
                slots[k].list = [first]
            }
            if isList { slots[k].list!.append(contentsOf: value.list) } else if let v = value.single { slots[k].list!.append(v) }
        }
    }

    /// A field's value so far: the first one as written, or the list of all of them.
    private struct Slot {
        var single: JSONValue?
        var list: [JSONValue]?
    }

    private static func tree(_ index: [String: Int], _ slots: [Slot]) -> [String: JSONValue] {
        var out: [String: JSONValue] = [:]
        out.reserveCapacity(index.count)
        for (name, k) in index {
            if let v = slots[k].single { out[name] = v } else { out[name] = .array(slots[k].list ?? []) }
        }
        return out
    }

    /// A field's value; `isList` when it was written as `[...]`.
    private mutating func fieldValue(colon: Bool, field: String, isList: inout Bool) throws -> (single: JSONValue?, list: [JSONValue]) {
        guard let c = peek() else { throw error("expected a value for '\(field)', found end of input") }
        if c == UInt8(ascii: "[") {
            i += 1
            var list: [JSONValue] = []
            while true {
                guard let d = peek() else { throw error("unterminated list for '\(field)'") }
                if d == UInt8(ascii: "]") {
                    i += 1
                    break
                }
                if !list.isEmpty {
                    guard d == UInt8(ascii: ",") else { throw error("expected ',' or ']' in list for '\(field)'") }
                    i += 1
                }
                list.append(try singleValue(field: field, colon: true))
                guard list.count <= 1 << 20 else { throw error("list for '\(field)' is too long") }
            }
            isList = true
            return (nil, list)
        }
        return (try singleValue(field: field, colon: colon), [])
    }

    private func tooLarge(_ what: String) -> Error {
        let reason = "\(self.what) has more than \(what)"
        return budget != nil ? InspectionBudgetExceeded(reason: reason) : error(reason)
    }

    private mutating func singleValue(field: String, colon: Bool) throws -> JSONValue {
        guard let c = peek() else { throw error("expected a value for '\(field)', found end of input") }
        values += 1
        guard values <= Self.maxValues else { throw tooLarge("\(Self.maxValues) values") }
        if c == UInt8(ascii: "{") || c == UInt8(ascii: "<") {
            messages += 1
            guard messages <= Self.maxMessages else { throw tooLarge("\(Self.maxMessages) messages") }
            i += 1
            return .object(try fields(until: c == UInt8(ascii: "{") ? UInt8(ascii: "}") : UInt8(ascii: ">")))
        }
        guard colon else { throw error("expected ':' or '{' after '\(field)'") }
        if c == UInt8(ascii: "\"") || c == UInt8(ascii: "'") {
            var text = try quoted()
            while let d = peek(), d == UInt8(ascii: "\"") || d == UInt8(ascii: "'") { text += try quoted() }
            return .string(text)
        }
        let start = i
        if c == UInt8(ascii: "-") || c == UInt8(ascii: "+") { i += 1 }
        while i < s.count, Self.isIdent(s[i], first: false) || s[i] == UInt8(ascii: "-") || s[i] == UInt8(ascii: "+") { i += 1 }
        if let v = Self.decimal(UnsafeBufferPointer(rebasing: s[start..<i])) { return JSONValue(v) }
        let token = String(decoding: UnsafeBufferPointer(rebasing: s[start..<i]), as: UTF8.self)
        guard !token.isEmpty else { throw error("expected a value for '\(field)', found '\(Character(Unicode.Scalar(c)))'") }
        if let v = Int(token) { return JSONValue(v) }
        if token.hasPrefix("0x") || token.hasPrefix("0X"), let v = Int(token.dropFirst(2), radix: 16) { return JSONValue(v) }
        if let first = token.first, first.isNumber || first == "-" || first == "+" || first == "." {
            let trimmed = token.hasSuffix("f") || token.hasSuffix("F") ? String(token.dropLast()) : token
            if let v = Double(trimmed) { return .double(v) }
            throw error("invalid number '\(token)' for '\(field)'", at: start)
        }
        switch token {
        case "true", "True", "t": return true
        case "false", "False", "f": return false
        default: return .string(token)
        }
    }

    /// A plain decimal integer of at most 18 digits (no overflow possible), or nil: the common
    /// case, parsed without making a String.
    private static func decimal(_ t: UnsafeBufferPointer<UInt8>) -> Int? {
        guard !t.isEmpty, t.count <= 19 else { return nil }
        var k = 0
        let negative = t[0] == UInt8(ascii: "-")
        if negative || t[0] == UInt8(ascii: "+") { k = 1 }
        guard k < t.count, t.count - k <= 18 else { return nil }
        var v = 0
        while k < t.count {
            let d = t[k]
            guard d >= 0x30, d <= 0x39 else { return nil }
            v = v * 10 + Int(d - 0x30)
            k += 1
        }
        return negative ? -v : v
    }

    private mutating func quoted() throws -> String {
        let quote = s[i]
        let start = i
        i += 1
        var bytes: [UInt8] = []
        while true {
            guard i < s.count, s[i] != 0x0a else { throw error("unterminated string", at: start) }
            let c = s[i]
            i += 1
            if c == quote { break }
            guard c == UInt8(ascii: "\\") else {
                bytes.append(c)
                continue
            }
            guard i < s.count else { throw error("unterminated string", at: start) }
            let e = s[i]
            i += 1
            switch e {
            case UInt8(ascii: "n"): bytes.append(0x0a)
            case UInt8(ascii: "t"): bytes.append(0x09)
            case UInt8(ascii: "r"): bytes.append(0x0d)
            case UInt8(ascii: "a"): bytes.append(0x07)
            case UInt8(ascii: "b"): bytes.append(0x08)
            case UInt8(ascii: "f"): bytes.append(0x0c)
            case UInt8(ascii: "v"): bytes.append(0x0b)
            case UInt8(ascii: "x"):
                var v = 0
                var n = 0
                while n < 2, i < s.count, let d = Int(String(Unicode.Scalar(s[i])), radix: 16) {
                    v = v * 16 + d
                    i += 1
                    n += 1
                }
                guard n > 0 else { throw error("bad \\x escape", at: i - 2) }
                bytes.append(UInt8(v))
            case UInt8(ascii: "0")...UInt8(ascii: "7"):
                var v = Int(e - 0x30)
                var n = 1
                while n < 3, i < s.count, s[i] >= 0x30, s[i] <= 0x37 {
                    v = v * 8 + Int(s[i] - 0x30)
                    i += 1
                    n += 1
                }
                bytes.append(UInt8(truncatingIfNeeded: v))
            default: bytes.append(e) // \" \' \\ \? and unknown escapes keep the character
            }
        }
        return String(decoding: bytes, as: UTF8.self)
    }
}
