import DepotCore

/// Parsing of the byte-range request headers, as pure functions over the header text so that
/// they can be tested and fuzzed without a server. Errors are RANGE_INVALID.
public enum HTTPRanges {
    /// An OCI `Content-Range: <start>-<end>` (also `bytes=` / `bytes ` prefixes, and an ignored
    /// `/<total>` suffix), inclusive.
    public static func contentRange(_ header: String) throws -> ClosedRange<Int64> {
        var text = header
        for prefix in ["bytes=", "bytes "] where text.hasPrefix(prefix) { text = String(text.dropFirst(prefix.count)) }
        if let slash = text.firstIndex(of: "/") { text = String(text[..<slash]) }
        let parts = text.split(separator: "-", omittingEmptySubsequences: false)
        guard parts.count == 2, let a = Int64(parts[0]), let b = Int64(parts[1]), a >= 0, b >= a else {
            throw RegistryError(.rangeInvalid, "Content-Range '\(text.prefix(100))' is not <start>-<end>")
        }
        return a...b
    }

    /// A `Range: bytes=...` header against a blob of `size` bytes: the half-open range to send.
    /// Throws RANGE_INVALID when unsatisfiable or malformed. Multiple ranges are not supported.
    public static func byteRange(_ text: String, size: Int64) throws -> Range<Int64> {
        guard text.hasPrefix("bytes="), !text.contains(",") else {
            throw RegistryError(.rangeInvalid, "Range '\(text.prefix(100))' is not a single bytes= range")
        }
        let spec = text.dropFirst(6)
        let parts = spec.split(separator: "-", omittingEmptySubsequences: false)
        guard parts.count == 2 else { throw RegistryError(.rangeInvalid, "Range '\(text.prefix(100))' is malformed") }
        if parts[0].isEmpty {
            guard let suffix = Int64(parts[1]), suffix > 0, size > 0 else {
                throw RegistryError(.rangeInvalid, "Range '\(text.prefix(100))' is unsatisfiable")
            }
            return max(0, size - suffix)..<size
        }
        guard let start = Int64(parts[0]), start >= 0 else { throw RegistryError(.rangeInvalid, "Range '\(text.prefix(100))' is malformed") }
        var end = size - 1
        if !parts[1].isEmpty {
            guard let e = Int64(parts[1]), e >= start else { throw RegistryError(.rangeInvalid, "Range '\(text.prefix(100))' is malformed") }
            end = min(e, size - 1)
        }
        guard start < size else { throw RegistryError(.rangeInvalid, "Range '\(text.prefix(100))' starts beyond the blob's \(size) bytes") }
        return start..<(end + 1)
    }
}
