/// A file-selection pattern for partial pulls (`depot pull --include/--exclude`), with the
/// semantics huggingface_hub's `allow_patterns` has (fnmatch): `*` matches any run of characters,
/// `/` included, so `*.safetensors` selects them in every folder; `?` matches one character;
/// everything else matches itself. Matching is the greedy wildcard algorithm with one backtrack
/// point: O(pattern × path) at worst, and both are bounded.
public struct PathPattern: Sendable, Hashable, CustomStringConvertible {
    public let text: String
    private let bytes: [UInt8]

    public static let maxLength = 1024

    public init(_ text: String) throws {
        guard !text.isEmpty, text.utf8.count <= Self.maxLength else {
            throw ClientError("a file pattern must be 1 to \(Self.maxLength) bytes")
        }
        self.text = text
        self.bytes = Array(text.utf8)
    }

    public var description: String { text }

    public func matches(_ path: String) -> Bool {
        let s = Array(path.utf8)
        let star = UInt8(ascii: "*")
        let any = UInt8(ascii: "?")
        var p = 0
        var i = 0
        var starAt = -1
        var matchedAt = 0
        while i < s.count {
            if p < bytes.count && (bytes[p] == any || bytes[p] == s[i]) && bytes[p] != star {
                p += 1
                i += 1
            } else if p < bytes.count && bytes[p] == star {
                starAt = p
                matchedAt = i
                p += 1
            } else if starAt >= 0 {
                p = starAt + 1
                matchedAt += 1
                i = matchedAt
            } else {
                return false
            }
        }
        while p < bytes.count && bytes[p] == star { p += 1 }
        return p == bytes.count
    }
}
