import DepotCore

/// A repository pattern of a grant: `models/resnet` (exactly), `models/*` (one more path
/// component), `models/**` (anything under models/), `**` (every repository). `*` never
/// crosses a `/`; `**` does. Patterns are checked when configured or granted, so a typo is an
/// error rather than a grant that silently matches nothing.
///
/// Matching is at most O(pattern × name) with both bounded by 255 characters, and the common
/// shapes (exact, `prefix/**`, `**`) take a comparison.
public struct RepositoryGlob: Sendable, Hashable, CustomStringConvertible, Codable {
    public let pattern: String
    private let shape: Shape

    private enum Shape: Sendable, Hashable {
        case everything
        case exact(String)
        /// `prefix/**`: the prefix itself or anything below it.
        case subtree(String)
        case general([Token])
    }

    private enum Token: Sendable, Hashable {
        case byte(UInt8)
        case star
        case doubleStar
    }

    public static let maxLength = 255

    public init(_ pattern: String) throws {
        guard !pattern.isEmpty, pattern.utf8.count <= Self.maxLength else {
            throw DepotError.invalidArgument("repository pattern must be 1 to \(Self.maxLength) characters")
        }
        for b in pattern.utf8 {
            let ok =
                (b >= 0x61 && b <= 0x7A) || (b >= 0x30 && b <= 0x39) || b == 0x2E || b == 0x5F || b == 0x2D || b == 0x2F
                || b == 0x2A
            guard ok else {
                throw DepotError.invalidArgument(
                    "repository pattern '\(pattern.prefix(60))' may contain only a-z, 0-9, '.', '_', '-', '/' and '*' ('**' crosses '/')")
            }
        }
        guard !pattern.contains("***") else {
            throw DepotError.invalidArgument("repository pattern '\(pattern)': use * or **, not ***")
        }
        self.pattern = pattern
        if pattern == "**" {
            shape = .everything
        } else if !pattern.contains("*") {
            shape = .exact(pattern)
        } else if pattern.hasSuffix("/**"), !pattern.dropLast(3).contains("*") {
            shape = .subtree(String(pattern.dropLast(3)))
        } else {
            var tokens: [Token] = []
            let bytes = Array(pattern.utf8)
            var i = 0
            while i < bytes.count {
                if bytes[i] == 0x2A {
                    if i + 1 < bytes.count, bytes[i + 1] == 0x2A {
                        tokens.append(.doubleStar)
                        i += 2
                    } else {
                        tokens.append(.star)
                        i += 1
                    }
                } else {
                    tokens.append(.byte(bytes[i]))
                    i += 1
                }
            }
            shape = .general(tokens)
        }
    }

    public var description: String { pattern }

    public init(from decoder: any Decoder) throws {
        try self.init(try decoder.singleValueContainer().decode(String.self))
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.singleValueContainer()
        try c.encode(pattern)
    }

    /// Whether `name` (a repository, or `repository/environment` for node deployments) matches.
    public func matches(_ name: String) -> Bool {
        switch shape {
        case .everything: return true
        case .exact(let p): return name == p
        case .subtree(let p):
            return name == p
                || (name.utf8.count > p.utf8.count && name.hasPrefix(p)
                    && name.utf8[name.utf8.index(name.utf8.startIndex, offsetBy: p.utf8.count)] == 0x2F)
        case .general(let tokens): return Self.match(tokens, Array(name.utf8.prefix(4 * Self.maxLength)))
        }
    }

    /// Dynamic programming over (token, byte) positions: linear in their product, no backtracking.
    private static func match(_ tokens: [Token], _ name: [UInt8]) -> Bool {
        // reach[j]: the tokens consumed so far can match exactly name[0..<j].
        var reach = [Bool](repeating: false, count: name.count + 1)
        reach[0] = true
        for t in tokens {
            var next = [Bool](repeating: false, count: name.count + 1)
            switch t {
            case .byte(let b):
                for j in 0..<name.count where reach[j] && name[j] == b { next[j + 1] = true }
            case .star:
                // Any run of non-slash bytes.
                for j in 0...name.count where reach[j] {
                    next[j] = true
                    var k = j
                    while k < name.count, name[k] != 0x2F, !next[k + 1] {
                        next[k + 1] = true
                        k += 1
                    }
                }
            case .doubleStar:
                if let first = reach.firstIndex(of: true) {
                    for j in first...name.count { next[j] = true }
                }
            }
            reach = next
        }
        return reach[name.count]
    }
}
