import DepotCore

/// The one spelling of "an artifact" every command takes, as every OCI tool spells it:
///
///     [HOST[:PORT]/]REPOSITORY[:TAG][@DIGEST]
///
///     team/llm:v2                              a tag, on the default registry
///     team/llm@sha256:9f86…                    exactly these bytes
///     registry.example.com:5000/team/llm:v2    a tag on that registry
///     localhost:5000/team/llm:v2@sha256:9f86…  tag and digest: the digest decides what is read
///
/// The first `/`-separated component is a registry host when it contains `.` or `:` or is
/// `localhost` (the rule docker, containerd, oras and skopeo apply), so `team/llm` is a
/// repository on the default registry and `models.example.com/llm` is `llm` on that host.
/// Parsing is one linear pass over at most `maxLength` bytes; every error says what was expected
/// and shows an example.
public struct ArtifactReference: Hashable, Sendable, CustomStringConvertible {
    /// `host[:port]` when the reference names a registry, else nil (the default registry).
    public var registry: String?
    public var repository: String
    public var tag: String?
    public var digest: Digest?

    /// Longest accepted reference: a host, a 255-byte repository, a 128-byte tag and a digest fit.
    public static let maxLength = 1024
    public static let grammar = "[HOST[:PORT]/]REPOSITORY[:TAG][@DIGEST]"
    public static let example = "registry.example.com:5000/team/llm:v2 or team/llm@sha256:<64 hex>"

    public init(registry: String? = nil, repository: String, tag: String? = nil, digest: Digest? = nil) {
        self.registry = registry
        self.repository = repository
        self.tag = tag
        self.digest = digest
    }

    /// A refused reference: what was wrong, what was expected.
    public struct ParseError: Error, CustomStringConvertible, Equatable {
        public var text: String
        public var problem: String
        public var description: String {
            "'\(text)' is not an artifact reference: \(problem) (expected \(ArtifactReference.grammar), e.g. \(ArtifactReference.example))"
        }
    }

    /// Parses `text`. `requireVersion`: a tag or a digest must be present (everything that reads
    /// or writes one artifact); without it `team/llm` alone is accepted (a repository).
    public init(parsing text: String, requireVersion: Bool = true) throws(ParseError) {
        let shown = String(text.prefix(200))
        func fail(_ problem: String) -> ParseError { ParseError(text: shown, problem: problem) }
        guard !text.isEmpty else { throw fail("it is empty") }
        guard text.utf8.count <= Self.maxLength else { throw fail("longer than \(Self.maxLength) bytes") }
        guard text.utf8.allSatisfy({ $0 > 0x20 && $0 < 0x7f }) else {
            throw fail("only printable ASCII without spaces is allowed")
        }
        var rest = Substring(text)
        // @digest: after the last '@' (a digest has no '@'; nothing before it may have one).
        var digest: Digest?
        if let at = rest.firstIndex(of: "@") {
            let digestText = String(rest[rest.index(after: at)...])
            do { digest = try Digest(parsing: digestText) } catch { throw fail("the part after '@' is not a sha256 digest (\(error))") }
            rest = rest[..<at]
        }
        // Host: the first component when it looks like one and more follows.
        var registry: String?
        if let slash = rest.firstIndex(of: "/") {
            let first = rest[..<slash]
            if first.contains(".") || first.contains(":") || first == "localhost" {
                guard Self.isValidHost(first) else { throw fail("'\(first)' is not a valid HOST[:PORT]") }
                registry = String(first)
                rest = rest[rest.index(after: slash)...]
            }
        }
        // :tag after the last '/' (a repository has no ':').
        var tag: String?
        let lastSlash = rest.lastIndex(of: "/") ?? rest.startIndex
        if let colon = rest[lastSlash...].lastIndex(of: ":") {
            let tagText = String(rest[rest.index(after: colon)...])
            guard Reference.isValidTag(tagText) else {
                throw fail("'\(tagText.prefix(130))' is not a valid tag ([A-Za-z0-9_][A-Za-z0-9._-]{0,127})")
            }
            tag = tagText
            rest = rest[..<colon]
        }
        let repository = String(rest)
        guard !repository.isEmpty else { throw fail("it names no repository") }
        guard (try? RepositoryName(repository)) != nil else {
            throw fail(
                "'\(repository.prefix(130))' is not a valid repository (lowercase letters, digits and separators . _ __ - between them, components joined by /)"
            )
        }
        if requireVersion && tag == nil && digest == nil { throw fail("it names no tag or digest") }
        self.init(registry: registry, repository: repository, tag: tag, digest: digest)
    }

    /// What to ask the registry for: the digest when there is one (it decides), else the tag.
    public var reference: String? { digest?.description ?? tag }
    public var isDigest: Bool { digest != nil }

    /// Canonical text: `[host/]repo[:tag][@digest]`.
    public var description: String {
        var s = registry.map { $0 + "/" } ?? ""
        s += repository
        if let tag { s += ":" + tag }
        if let digest { s += "@" + digest.description }
        return s
    }

    /// The reference without its registry (what goes into lineage annotations and API paths).
    public var local: ArtifactReference { ArtifactReference(repository: repository, tag: tag, digest: digest) }

    /// `host` (a DNS name or IPv4 address of letters, digits, `-`, `.`), or `[IPv6]`, then an
    /// optional `:port` of 1 to 5 digits.
    static func isValidHost<S: StringProtocol>(_ text: S) -> Bool {
        var host = Substring(text)
        if host.hasPrefix("[") {
            guard let close = host.firstIndex(of: "]") else { return false }
            let inside = host[host.index(after: host.startIndex)..<close]
            guard !inside.isEmpty, inside.utf8.allSatisfy({ isHex($0) || $0 == UInt8(ascii: ":") || $0 == UInt8(ascii: ".") }) else {
                return false
            }
            host = host[host.index(after: close)...]
            guard host.isEmpty || host.hasPrefix(":") else { return false }
            return host.isEmpty || isPort(host.dropFirst())
        }
        if let colon = host.firstIndex(of: ":") {
            guard isPort(host[host.index(after: colon)...]) else { return false }
            host = host[..<colon]
        }
        guard !host.isEmpty, host.utf8.count <= 253 else { return false }
        return host.split(separator: ".", omittingEmptySubsequences: false).allSatisfy { label in
            let b = Array(label.utf8)
            guard let first = b.first, let last = b.last, b.count <= 63 else { return false }
            func alnum(_ c: UInt8) -> Bool { (c >= 0x30 && c <= 0x39) || (c >= 0x41 && c <= 0x5a) || (c >= 0x61 && c <= 0x7a) }
            return alnum(first) && alnum(last) && b.allSatisfy { alnum($0) || $0 == UInt8(ascii: "-") }
        }
    }

    private static func isPort(_ text: Substring) -> Bool {
        guard (1...5).contains(text.utf8.count), text.utf8.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }), let n = Int(text) else {
            return false
        }
        return n >= 1 && n <= 65535
    }

    private static func isHex(_ c: UInt8) -> Bool {
        (c >= 0x30 && c <= 0x39) || (c >= 0x41 && c <= 0x46) || (c >= 0x61 && c <= 0x66)
    }
}
