import DepotCore

/// Parsing of numbers and byte-range headers from the network, as pure functions over the text
/// so that they can be tested and fuzzed without a server.
public enum HTTPRanges {
    /// A non-negative decimal integer parsed strictly: 1–19 ASCII digits, no sign, no spaces, and
    /// within `range`; nil otherwise. `Int64("+5")`, `Int64(" 5")` and 2^64 are all refused here,
    /// so no caller ever does arithmetic on a value it did not bound.
    public static func integer(_ text: Substring, in range: ClosedRange<Int64>) -> Int64? {
        guard !text.isEmpty, text.utf8.count <= 19, text.utf8.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }) else { return nil }
        // 19 digits fit in UInt64 without overflow (at most 9_999_999_999_999_999_999 < 2^64).
        var value: UInt64 = 0
        for digit in text.utf8 { value = value * 10 + UInt64(digit - 0x30) }
        guard value <= UInt64(Int64.max), range.contains(Int64(value)) else { return nil }
        return Int64(value)
    }

    /// An OCI `Content-Range: <start>-<end>` (also `bytes=` / `bytes ` prefixes, and an ignored
    /// `/<total>` suffix), inclusive. Both ends are bounded by `limit` (the maximum blob size), so
    /// `end - start + 1` cannot overflow (it once aborted the server).
    public static func contentRange(_ header: String, limit: Int64 = Int64.max - 1) throws -> ClosedRange<Int64> {
        var text = Substring(header)
        for prefix in ["bytes=", "bytes "] where text.hasPrefix(prefix) { text = text.dropFirst(prefix.count) }
        if let slash = text.firstIndex(of: "/") { text = text[..<slash] }
        let parts = text.split(separator: "-", omittingEmptySubsequences: false)
        let bound = min(limit, Int64.max - 1)
        guard parts.count == 2, let a = integer(parts[0], in: 0...bound), let b = integer(parts[1], in: 0...bound), b >= a else {
            throw RegistryError(
                .rangeInvalid, "Content-Range '\(text.prefix(100))' is not <start>-<end> within the blob size limit")
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
            guard let suffix = integer(parts[1], in: 1...Int64.max), size > 0 else {
                throw RegistryError(.rangeInvalid, "Range '\(text.prefix(100))' is unsatisfiable")
            }
            return max(0, size - suffix)..<size
        }
        guard let start = integer(parts[0], in: 0...Int64.max) else {
            throw RegistryError(.rangeInvalid, "Range '\(text.prefix(100))' is malformed")
        }
        var end = size - 1
        if !parts[1].isEmpty {
            guard let e = integer(parts[1], in: 0...Int64.max), e >= start else {
                throw RegistryError(.rangeInvalid, "Range '\(text.prefix(100))' is malformed")
            }
            end = min(e, size - 1)
        }
        guard start < size else { throw RegistryError(.rangeInvalid, "Range '\(text.prefix(100))' starts beyond the blob's \(size) bytes") }
        return start..<(end + 1)
    }
}
