import DepotCore

/// Which tags are guarded: protected aliases (moved only through `depot alias` / `rollback`,
/// never by a plain OCI manifest PUT or tag delete) and immutable tags (never moved once set).
/// Patterns are globs: `*` matches any run of characters, `?` one character.
public struct TagPolicy: Sendable, Equatable {
    public var protected: [String]
    public var immutable: [String]

    public init(protected: [String] = ["production", "staging"], immutable: [String] = []) {
        self.protected = protected
        self.immutable = immutable
    }

    public func isProtected(_ tag: String) -> Bool { protected.contains { Self.glob($0, tag) } }
    public func isImmutable(_ tag: String) -> Bool { immutable.contains { Self.glob($0, tag) } }

    /// Glob match of `text` against `pattern` (`*`, `?`).
    public static func glob(_ pattern: String, _ text: String) -> Bool {
        let p = Array(pattern.utf8)
        let t = Array(text.utf8)
        var pi = 0
        var ti = 0
        var star = -1
        var mark = 0
        while ti < t.count {
            if pi < p.count, p[pi] == UInt8(ascii: "?") || p[pi] == t[ti] {
                pi += 1
                ti += 1
            } else if pi < p.count, p[pi] == UInt8(ascii: "*") {
                star = pi
                mark = ti
                pi += 1
            } else if star >= 0 {
                pi = star + 1
                mark += 1
                ti = mark
            } else {
                return false
            }
        }
        while pi < p.count, p[pi] == UInt8(ascii: "*") { pi += 1 }
        return pi == p.count
    }
}

/// Who is asking and through which door: the OCI API or Depot's alias commands.
public struct Actor: Sendable, Equatable {
    public var name: String
    public var viaAliasAPI: Bool

    public init(_ name: String, viaAliasAPI: Bool = false) {
        self.name = name
        self.viaAliasAPI = viaAliasAPI
    }

    public static let oci = Actor("oci-client")
}
