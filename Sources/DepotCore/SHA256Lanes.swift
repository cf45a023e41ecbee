import CDepotSupport
import COpenSSL

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// SHA-256 of two streams at once, for the places where Depot hashes the same bytes twice (a
/// blob's digest and each chunk's) or many buffers in a row (the chunks of an upload).
///
/// One SHA-256 stream keeps the CPU's SHA unit waiting on its own previous round; two streams
/// interleaved round by round (`depot_sha256_blocks_x2`, x86-64 SHA extensions) hash about
/// 1.6–2× the bytes per second of the two one after the other. Results are SHA-256 exactly:
/// partial blocks, lengths and padding stay OpenSSL's (`SHA256_CTX`), only whole blocks common
/// to both streams go through the interleaved block function. Where the CPU lacks the SHA
/// extensions every call falls back to OpenSSL, one stream after the other.
public enum SHA256Lanes {
    /// Whether the interleaved block function runs here (else these are plain OpenSSL calls).
    /// `DEPOT_SHA256_LANES=0` in the environment turns it off, for benchmarks that compare.
    public static let interleaved: Bool = {
        if let v = getenv("DEPOT_SHA256_LANES"), String(cString: v) == "0" { return false }
        return depot_sha256_x2_available() != 0
    }()

    /// Feeds `pa` to `a` and `pb` to `b`: the same result as `a.update(pa); b.update(pb)`.
    public static func update(
        _ a: inout ResumableSHA256, _ pa: UnsafeRawBufferPointer, _ b: inout ResumableSHA256, _ pb: UnsafeRawBufferPointer
    ) {
        var pa = pa
        var pb = pb
        if interleaved {
            a.fillPartialBlock(&pa)
            b.fillPartialBlock(&pb)
            if a.atBlockBoundary, b.atBlockBoundary {
                let blocks = min(pa.count, pb.count) / 64
                if blocks > 0 {
                    ResumableSHA256.blocks(&a, pa, &b, pb, count: blocks)
                    pa = UnsafeRawBufferPointer(rebasing: pa[(blocks * 64)...])
                    pb = UnsafeRawBufferPointer(rebasing: pb[(blocks * 64)...])
                }
            }
        }
        a.update(pa)
        b.update(pb)
    }

    /// The SHA-256 of each buffer, in order: two lanes, each taking the next buffer as soon as it
    /// finishes one, so buffers of different lengths keep both lanes busy.
    public static func hashEach(_ buffers: [UnsafeRawBufferPointer]) -> [SHA256.Value] {
        guard interleaved, buffers.count > 1 else { return buffers.map { SHA256.hash($0) } }
        var out = [SHA256.Value](repeating: SHA256.Value(a: 0, b: 0, c: 0, d: 0), count: buffers.count)
        struct Lane {
            var index: Int
            var hash = ResumableSHA256()
            var rest: UnsafeRawBufferPointer
        }
        var next = 0
        func take() -> Lane? {
            guard next < buffers.count else { return nil }
            next += 1
            return Lane(index: next - 1, rest: buffers[next - 1])
        }
        func done(_ lane: inout Lane) {
            lane.hash.update(lane.rest)
            out[lane.index] = lane.hash.finalize()
        }
        var a = take()!
        var b = take()!
        while true {
            let blocks = min(a.rest.count, b.rest.count) / 64
            if blocks > 0 {
                ResumableSHA256.blocks(&a.hash, a.rest, &b.hash, b.rest, count: blocks)
                a.rest = UnsafeRawBufferPointer(rebasing: a.rest[(blocks * 64)...])
                b.rest = UnsafeRawBufferPointer(rebasing: b.rest[(blocks * 64)...])
            }
            // At least one lane has less than a block left: finish it and start its next buffer.
            if a.rest.count < 64 {
                done(&a)
                guard let n = take() else {
                    done(&b)
                    break
                }
                a = n
            }
            if b.rest.count < 64 {
                done(&b)
                guard let n = take() else {
                    done(&a)
                    break
                }
                b = n
            }
        }
        return out
    }
}
