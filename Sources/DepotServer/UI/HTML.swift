/// A fragment of HTML. Built with string interpolation, where every interpolated `String` (or
/// other value) is escaped and only another `HTML` value is inserted as it is: markup comes from
/// literals in this module, never from data. That is the whole XSS defence, so there is no
/// `init(raw:)` taking a variable outside this file.
///
///     let name = "<script>"
///     let h: HTML = "<td>\(name)</td>"   // <td>&lt;script&gt;</td>
struct HTML: ExpressibleByStringInterpolation, Sendable {
    private(set) var text: String

    init(stringLiteral value: String) { text = value }

    init(stringInterpolation: Interpolation) { text = stringInterpolation.text }

    private init(trusted: String) { text = trusted }

    static let empty: HTML = ""

    struct Interpolation: StringInterpolationProtocol {
        private(set) var text = ""
        init(literalCapacity: Int, interpolationCount: Int) { text.reserveCapacity(literalCapacity + interpolationCount * 16) }
        mutating func appendLiteral(_ literal: String) { text += literal }
        mutating func appendInterpolation(_ html: HTML) { text += html.text }
        mutating func appendInterpolation(_ fragments: [HTML]) { for f in fragments { text += f.text } }
        mutating func appendInterpolation(_ value: String) { text += HTML.escape(value) }
        mutating func appendInterpolation(_ value: Substring) { text += HTML.escape(String(value)) }
        mutating func appendInterpolation<T: BinaryInteger>(_ value: T) { text += String(value) }
        mutating func appendInterpolation(_ value: some CustomStringConvertible) { text += HTML.escape(value.description) }
        mutating func appendInterpolation(_ value: String?) { if let value { text += HTML.escape(value) } }
    }

    /// Escapes text for an element's content or a quoted attribute value.
    static func escape(_ s: String) -> String {
        var out = ""
        out.reserveCapacity(s.utf8.count)
        for ch in s.unicodeScalars {
            switch ch {
            case "&": out += "&amp;"
            case "<": out += "&lt;"
            case ">": out += "&gt;"
            case "\"": out += "&quot;"
            case "'": out += "&#39;"
            // Controls other than tab and newline have no business in a page; bidirectional
            // overrides and isolates would let data reorder the text around it.
            case "\u{0}"..."\u{8}", "\u{B}", "\u{C}", "\u{E}"..."\u{1F}", "\u{7F}", "\u{202A}"..."\u{202E}", "\u{2066}"..."\u{2069}":
                out += "\u{FFFD}"
            default: out.unicodeScalars.append(ch)
            }
        }
        return out
    }

    /// Percent-encodes one path segment or query value for an `href` (then HTML-escaped by the
    /// interpolation like any text).
    static func urlComponent(_ s: String) -> String {
        var out = ""
        for b in s.utf8 {
            switch b {
            case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "0")...UInt8(ascii: "9"),
                UInt8(ascii: "-"), UInt8(ascii: "."), UInt8(ascii: "_"), UInt8(ascii: "~"), UInt8(ascii: ":"):
                out.append(Character(Unicode.Scalar(b)))
            default:
                out += "%" + String(b >> 4, radix: 16, uppercase: true) + String(b & 15, radix: 16, uppercase: true)
            }
        }
        return out
    }

    /// A repository name in a path: its components percent-encoded, its slashes kept.
    static func namePath(_ name: String) -> String {
        name.split(separator: "/", omittingEmptySubsequences: false).map { urlComponent(String($0)) }.joined(separator: "/")
    }

    /// `html` when `condition` holds, else nothing (a ternary of two literals would make a
    /// `String`, which interpolation escapes).
    static func when(_ condition: Bool, _ html: HTML) -> HTML { condition ? html : .empty }

    /// Joins fragments.
    static func join(_ parts: [HTML], separator: HTML = "") -> HTML {
        var out = ""
        for (i, p) in parts.enumerated() {
            if i > 0 { out += separator.text }
            out += p.text
        }
        return HTML(trusted: out)
    }

    /// The bytes of the page.
    var bytes: [UInt8] { Array(text.utf8) }
}
