import DepotCore

/// SHA-256 states part-way through a blob, sent with a recipe commit so the server can check
/// the blob's digest in segments, in parallel, instead of in one pass front to back.
///
/// SHA-256 is a chain: the state after byte `k·stride` (a multiple of the 64-byte block) is
/// the compression function run from the state after byte `(k-1)·stride` over the bytes
/// between. The client, which hashes the file front to back anyway, records the state at every
/// `stride`; the server recomputes each segment from the state the client claims at its start
/// (the standard initial state for the first) and requires exactly the state claimed at its end
/// (the claimed digest for the last, after padding with the blob's true length). If every
/// segment matches, the chain from the initial state is the one a single pass computes, so the
/// check proves the same thing: the blob's bytes have the digest it is stored under. A state
/// that is wrong fails its segment; nothing is trusted.
///
/// On the wire, the `Depot-Hash-States` header of `PUT .../recipes/<digest>`:
///
///     Depot-Hash-States: <stride> <state 1>,<state 2>,...,<state n-1>
///
/// `stride` in bytes, a multiple of 1 MiB and at least `minStride`; each state is h0..h7 as
/// 64 lowercase hex digits (big-endian 32-bit words, the way a digest is written); a blob of
/// `size` bytes has exactly `ceil(size / stride) - 1` of them, at most `maxStates`.
public struct BlobHashStates: Sendable, Equatable {
    public static let header = "Depot-Hash-States"
    public static let minStride: Int64 = 16 << 20
    public static let maxStates = 32

    public var stride: Int64
    /// The state after `(i + 1) · stride` bytes, for each `i`.
    public var states: [SHA256.Value]

    public init(stride: Int64, states: [SHA256.Value]) {
        self.stride = stride
        self.states = states
    }

    /// The stride a client uses for a blob of `size` bytes: at least `minStride`, in whole MiB,
    /// so that there are at most `maxStates` states. Nil when one segment covers it all.
    public static func stride(forSize size: Int64) -> Int64? {
        guard size > minStride else { return nil }
        let perSegment = (size + Int64(maxStates)) / Int64(maxStates + 1) // ceil(size / (maxStates + 1))
        let mib: Int64 = 1 << 20
        return max(minStride, (perSegment + mib - 1) / mib * mib)
    }

    /// The header's value.
    public var headerValue: String { "\(stride) " + states.map(\.hex).joined(separator: ",") }

    /// Parses and checks a header's value against the recipe's `size`; throws `invalidArgument`
    /// naming what is wrong. Linear in the value's length, which is bounded before parsing.
    public init(headerValue value: String, size: Int64) throws {
        let limit = 20 + Self.maxStates * 65
        guard value.utf8.count <= limit else { throw DepotError.invalidArgument("\(Self.header) is longer than \(limit) bytes") }
        let parts = value.split(separator: " ", omittingEmptySubsequences: false)
        guard parts.count == 2, let stride = Int64(parts[0]), stride >= Self.minStride, stride % (1 << 20) == 0 else {
            throw DepotError.invalidArgument(
                "\(Self.header) must be '<stride> <state>,...' with a stride in whole MiB of at least \(Self.minStride) bytes")
        }
        var states: [SHA256.Value] = []
        for hex in parts[1].split(separator: ",", omittingEmptySubsequences: false) {
            guard let state = SHA256.Value(hex: hex) else {
                throw DepotError.invalidArgument("\(Self.header) has a state that is not 64 lowercase hex digits")
            }
            states.append(state)
        }
        // ceil(size / stride) - 1 states: one at each stride boundary strictly inside the blob.
        let expected = size <= 0 ? 0 : (size - 1) / stride
        guard Int64(states.count) == expected, states.count <= Self.maxStates else {
            throw DepotError.invalidArgument(
                "\(Self.header) has \(states.count) state(s); a \(size)-byte blob at stride \(stride) has \(expected) (at most \(Self.maxStates))"
            )
        }
        self.init(stride: stride, states: states)
    }
}

extension ResumableSHA256 {
    /// The state after `count` bytes, `count` a multiple of 64 (no partial block pending).
    public init?(midstate: SHA256.Value, count: Int64) {
        guard count >= 0, count % 64 == 0, count < 1 << 58 else { return nil }
        var saved = [UInt8](repeating: 0, count: Self.savedSize)
        saved[0] = 1
        func put(_ v: UInt32, _ at: Int) {
            for i in 0..<4 { saved[at + i] = UInt8(truncatingIfNeeded: v >> (8 * UInt32(i))) }
        }
        let words = [midstate.a, midstate.b, midstate.c, midstate.d]
        for (i, w) in words.enumerated() {
            put(UInt32(truncatingIfNeeded: w >> 32), 1 + 8 * i)
            put(UInt32(truncatingIfNeeded: w), 5 + 8 * i)
        }
        let bits = UInt64(count) << 3
        put(UInt32(truncatingIfNeeded: bits), 33)
        put(UInt32(truncatingIfNeeded: bits >> 32), 37)
        self.init(saved: saved)
    }

    /// The state as h0..h7 (big-endian words, like a digest); only meaningful at a block boundary.
    public var midstate: SHA256.Value {
        let s = saved
        func word(_ at: Int) -> UInt64 {
            UInt64(s[at]) | UInt64(s[at + 1]) << 8 | UInt64(s[at + 2]) << 16 | UInt64(s[at + 3]) << 24
        }
        return SHA256.Value(
            a: word(1) << 32 | word(5), b: word(9) << 32 | word(13), c: word(17) << 32 | word(21), d: word(25) << 32 | word(29))
    }
}
