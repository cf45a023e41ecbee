/// A repository name as the OCI distribution spec defines it: path components of lowercase
/// alphanumerics joined by `.`, `_`, `__` or runs of `-`, separated by `/` (`team/llama/ft`).
public struct RepositoryName: Hashable, Sendable, CustomStringConvertible, Comparable {
    public let value: String
    public var description: String { value }

    /// Longest accepted name (distribution's limit).
    public static let maxLength = 255

    public init(_ text: String) throws {
        guard !text.isEmpty, text.utf8.count <= Self.maxLength else {
            throw DepotError.invalidArgument("repository name must be 1 to \(Self.maxLength) characters")
        }
        for component in text.split(separator: "/", omittingEmptySubsequences: false) {
            guard Self.isValidComponent(component) else {
                throw DepotError.invalidArgument(
                    "invalid repository name '\(text.prefix(300))': each /-separated component must match [a-z0-9]+((\\.|_|__|-+)[a-z0-9]+)*"
                )
            }
        }
        value = text
    }

    static func isValidComponent(_ c: Substring) -> Bool {
        let bytes = Array(c.utf8)
        guard let first = bytes.first, let last = bytes.last, isAlnum(first), isAlnum(last) else { return false }
        var i = 0
        while i < bytes.count {
            let b = bytes[i]
            if isAlnum(b) {
                i += 1
                continue
            }
            // A separator: ".", "_", "__" or one or more "-", followed by an alphanumeric.
            if b == UInt8(ascii: ".") {
                i += 1
            } else if b == UInt8(ascii: "_") {
                i += 1
                if i < bytes.count && bytes[i] == UInt8(ascii: "_") { i += 1 }
            } else if b == UInt8(ascii: "-") {
                while i < bytes.count && bytes[i] == UInt8(ascii: "-") { i += 1 }
            } else {
                return false
            }
            guard i < bytes.count, isAlnum(bytes[i]) else { return false }
        }
        return true
    }

    static func isAlnum(_ b: UInt8) -> Bool { (b >= 0x61 && b <= 0x7a) || (b >= 0x30 && b <= 0x39) }

    public static func < (a: RepositoryName, b: RepositoryName) -> Bool { a.value < b.value }
}

/// A manifest reference: a tag (`[A-Za-z0-9_][A-Za-z0-9._-]{0,127}`) or a digest.
public enum Reference: Hashable, Sendable, CustomStringConvertible {
    case tag(String)
    case digest(Digest)

    public init(_ text: String) throws {
        if text.contains(":") {
            self = .digest(try Digest(parsing: text))
            return
        }
        guard Self.isValidTag(text) else {
            throw DepotError.invalidArgument("invalid tag '\(text.prefix(200))': must match [a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}")
        }
        self = .tag(text)
    }

    public static func isValidTag(_ text: String) -> Bool {
        let bytes = Array(text.utf8)
        guard !bytes.isEmpty, bytes.count <= 128 else { return false }
        func word(_ b: UInt8) -> Bool {
            (b >= 0x61 && b <= 0x7a) || (b >= 0x41 && b <= 0x5a) || (b >= 0x30 && b <= 0x39) || b == UInt8(ascii: "_")
        }
        guard word(bytes[0]) else { return false }
        return bytes.dropFirst().allSatisfy { word($0) || $0 == UInt8(ascii: ".") || $0 == UInt8(ascii: "-") }
    }

    public var description: String {
        switch self {
        case .tag(let t): return t
        case .digest(let d): return d.description
        }
    }
}

/// Durations as people write them in config files and flags: "90", "90s", "15m", "2h", "1d".
public enum DurationText {
    /// Seconds, or nil when `text` is not a duration.
    public static func seconds(_ text: String) -> Double? {
        let blank: (Character) -> Bool = { $0 == " " || $0 == "\t" }
        let t = Substring(text.drop(while: blank).reversed().drop(while: blank).reversed())
        let units: [Character: Double] = ["s": 1, "m": 60, "h": 3600, "d": 86400]
        let value: Double?
        if let last = t.last, let unit = units[last] { value = Double(t.dropLast()).map { $0 * unit } } else { value = Double(t) }
        guard let value, value.isFinite, value >= 0 else { return nil }
        return value
    }
}
