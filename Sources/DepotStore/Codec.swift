import CDepotSupport
import CZstd
import DepotCore

/// How a chunk's bytes are stored in a pack record.
public enum ChunkCodec: UInt8, Sendable, CaseIterable {
    case raw = 0
    case zstd = 1
    /// Byte planes of 4-byte elements grouped (fp32/int32 weights), then zstd.
    case zstdShuffle4 = 2
    /// Byte planes of 2-byte elements grouped (fp16/bf16 weights), then zstd.
    case zstdShuffle2 = 3

    var elementWidth: Int {
        switch self {
        case .zstdShuffle4: return 4
        case .zstdShuffle2: return 2
        default: return 1
        }
    }
}

/// Compression policy: try cheaply on a sample, keep raw unless it saves enough.
public struct CompressionPolicy: Sendable, Equatable {
    public enum Mode: String, Sendable, Codable { case auto, off }
    public var mode: Mode = .auto
    /// zstd level (1 is the sweet spot for weights).
    public var level: Int32 = 1
    /// Minimum fraction of bytes a codec must save on the sample to be used.
    public var minSavings: Double = 0.04
    /// Bytes from the middle of a chunk compressed to decide.
    public var sampleSize: Int = 8 << 10

    public init(mode: Mode = .auto, level: Int32 = 1, minSavings: Double = 0.04) {
        self.mode = mode
        self.level = level
        self.minSavings = minSavings
    }
}

/// Per-thread zstd contexts and scratch space for compressing and decompressing chunks.
final class ChunkCompressor {
    private let cctx: OpaquePointer
    /// Compresses byte planes (`zstdShuffle4`/`zstdShuffle2`), with match finding tuned for
    /// them: see `setPlaneParameters`. Its frames are ordinary zstd frames (the decoder is the same).
    private let planeCctx: OpaquePointer
    /// The level `planeCctx`'s parameters were last set for.
    private var planeLevel: Int32?
    private let dctx: OpaquePointer
    /// A stored payload read from a pack before it is decoded (`PackFiles.readChunk`), kept
    /// with the compressor so a read does not allocate and zero a buffer for every chunk.
    var recordScratch: [UInt8] = []
    private var scratch: UnsafeMutableRawBufferPointer
    private var shuffled: UnsafeMutableRawBufferPointer

    init(maxChunk: Int) {
        cctx = ZSTD_createCCtx()
        planeCctx = ZSTD_createCCtx()
        dctx = ZSTD_createDCtx()
        scratch = .allocate(byteCount: ZSTD_compressBound(maxChunk), alignment: 16)
        shuffled = .allocate(byteCount: maxChunk, alignment: 16)
    }

    deinit {
        ZSTD_freeCCtx(cctx)
        ZSTD_freeCCtx(planeCctx)
        ZSTD_freeDCtx(dctx)
        scratch.deallocate()
        shuffled.deallocate()
    }

    private func ensure(_ n: Int) {
        if shuffled.count < n {
            shuffled.deallocate()
            shuffled = .allocate(byteCount: n, alignment: 16)
            scratch.deallocate()
            scratch = .allocate(byteCount: ZSTD_compressBound(n), alignment: 16)
        }
    }

    /// Chooses a codec for `chunk` and encodes it. Returns the codec and the stored bytes
    /// (a view into internal scratch, valid until the next call, or `chunk` itself for raw).
    func encode(
        _ chunk: UnsafeRawBufferPointer, policy: CompressionPolicy, elementWidth: Int,
        _ body: (ChunkCodec, UnsafeRawBufferPointer) throws -> Void
    ) throws {
        guard policy.mode == .auto, chunk.count >= 4096 else { return try body(.raw, chunk) }
        ensure(chunk.count)
        // A width hint (a tensor's element size) names the codec to try first, on the whole
        // chunk: on weights the planes beat plain zstd practically always, and the two sample
        // trials below cost a fifth as much as compressing the chunk itself. Only when the planes
        // do not save enough do the trials decide, as for data without a hint.
        if elementWidth == 4 || elementWidth == 2 {
            let codec: ChunkCodec = elementWidth == 4 ? .zstdShuffle4 : .zstdShuffle2
            let size = compress(chunk, codec: codec, level: policy.level)
            if size > 0, Double(size) <= Double(chunk.count) * (1 - policy.minSavings) {
                return try body(codec, UnsafeRawBufferPointer(rebasing: scratch[0..<size]))
            }
        }
        // Candidate codecs: plain zstd, plus the shuffle matching the element width hint.
        var candidates: [ChunkCodec] = [.zstd]
        if elementWidth == 4 { candidates.append(.zstdShuffle4) }
        if elementWidth == 2 { candidates.append(.zstdShuffle2) }
        let sampleLength = Swift.min(policy.sampleSize, chunk.count) & ~3
        let sampleStart = ((chunk.count - sampleLength) / 2) & ~3
        let sample = UnsafeRawBufferPointer(rebasing: chunk[sampleStart..<(sampleStart + sampleLength)])
        var best: ChunkCodec = .raw
        var bestSize = Int(Double(sampleLength) * (1 - policy.minSavings))
        for codec in candidates {
            let size = compress(sample, codec: codec, level: policy.level)
            if size > 0 && size < bestSize {
                best = codec
                bestSize = size
            }
        }
        guard best != .raw else { return try body(.raw, chunk) }
        let size = compress(chunk, codec: best, level: policy.level)
        guard size > 0, Double(size) <= Double(chunk.count) * (1 - policy.minSavings / 2) else {
            return try body(.raw, chunk)
        }
        try body(best, UnsafeRawBufferPointer(rebasing: scratch[0..<size]))
    }

    /// Compresses into `scratch`; returns the compressed size, or 0 on failure.
    ///
    /// Byte-grouped codecs compress each plane as its own zstd frame, `[UInt32 LE size][frame]`
    /// per plane (plus one for a tail that is not a whole element): zstd entropy-codes a block
    /// with one literal table, so the low-entropy exponent plane only pays off on its own.
    private func compress(_ input: UnsafeRawBufferPointer, codec: ChunkCodec, level: Int32) -> Int {
        guard codec.elementWidth > 1 else {
            let n = ZSTD_compressCCtx(cctx, scratch.baseAddress, scratch.count, input.baseAddress, input.count, level)
            return ZSTD_isError(n) != 0 ? 0 : n
        }
        Shuffle.group(input, width: codec.elementWidth, into: shuffled)
        guard setPlaneParameters(level: level) else { return 0 }
        var written = 0
        for segment in Shuffle.segments(count: input.count, width: codec.elementWidth) {
            guard scratch.count - written > 4 else { return 0 }
            let out = scratch.baseAddress! + written + 4
            let n = ZSTD_compress2(
                planeCctx, out, scratch.count - written - 4,
                shuffled.baseAddress! + segment.lowerBound, segment.count)
            guard ZSTD_isError(n) == 0 else { return 0 }
            scratch.storeBytes(of: UInt32(n).littleEndian, toByteOffset: written, as: UInt32.self)
            written += 4 + n
        }
        return written
    }

    /// Sets `planeCctx` up for `level`: zstd's defaults, but matches of at least 7 bytes and, at
    /// the fast levels (1 and the negative ones), a 64-entry hash table.
    ///
    /// Why: a plane of numbers is noise except for its exponent bytes, whose few values repeat
    /// by chance. With the default minimum match (4–5 bytes at the fast levels) zstd encodes
    /// those chance repeats as thousands of short sequences, which cost more bits than the
    /// Huffman-coded literals they replace and are slow to decode. Measured on the exponent plane
    /// of N(0, 0.02) fp32 weights in 16 KiB planes (a 64 KiB chunk's), level 1: 2.49x at 636 MB/s
    /// decoding by default, 2.92x at 1.58 GB/s with these settings (its entropy allows 2.99x);
    /// level 3: 2.34x / 503 MB/s vs 2.78x / 1.10 GB/s. Planes of mantissa bytes are stored as
    /// raw blocks either way. Only the encoder changes: what is already stored decodes as before.
    private func setPlaneParameters(level: Int32) -> Bool {
        if planeLevel == level { return true }
        planeLevel = nil
        // The session too: a compression that failed part-way (output too small) leaves the
        // context mid-frame, where parameters cannot be changed.
        guard ZSTD_isError(ZSTD_CCtx_reset(planeCctx, ZSTD_reset_session_and_parameters)) == 0,
            ZSTD_isError(ZSTD_CCtx_setParameter(planeCctx, ZSTD_c_compressionLevel, level)) == 0,
            ZSTD_isError(ZSTD_CCtx_setParameter(planeCctx, ZSTD_c_minMatch, 7)) == 0,
            // Level 0 means zstd's default (3), whose hash table is another strategy's.
            level > 1 || level == 0 || ZSTD_isError(ZSTD_CCtx_setParameter(planeCctx, ZSTD_c_hashLog, 6)) == 0
        else { return false }
        planeLevel = level
        return true
    }

    /// Decodes a stored payload into `output` (exactly `output.count` raw bytes).
    func decode(_ stored: UnsafeRawBufferPointer, codec: ChunkCodec, into output: UnsafeMutableRawBufferPointer) throws {
        switch codec {
        case .raw:
            guard stored.count == output.count else { throw DepotError.integrity("raw chunk length mismatch") }
            output.copyMemory(from: stored)
        case .zstd:
            let n = ZSTD_decompressDCtx(dctx, output.baseAddress, output.count, stored.baseAddress, stored.count)
            guard ZSTD_isError(n) == 0, n == output.count else { throw DepotError.integrity("zstd payload does not decode") }
        case .zstdShuffle4, .zstdShuffle2:
            ensure(output.count)
            var read = 0
            for segment in Shuffle.segments(count: output.count, width: codec.elementWidth) {
                guard stored.count - read >= 4 else { throw DepotError.integrity("byte-plane payload is truncated") }
                let size = Int(UInt32(littleEndian: stored.loadUnaligned(fromByteOffset: read, as: UInt32.self)))
                guard size <= stored.count - read - 4 else { throw DepotError.integrity("byte-plane payload is truncated") }
                let n = ZSTD_decompressDCtx(
                    dctx, shuffled.baseAddress! + segment.lowerBound, segment.count,
                    stored.baseAddress! + read + 4, size)
                guard ZSTD_isError(n) == 0, n == segment.count else { throw DepotError.integrity("zstd plane does not decode") }
                read += 4 + size
            }
            guard read == stored.count else { throw DepotError.integrity("byte-plane payload has trailing bytes") }
            Shuffle.ungroup(UnsafeRawBufferPointer(rebasing: shuffled[0..<output.count]), width: codec.elementWidth, into: output)
        }
    }
}

/// Byte-plane transform: byte k of every `width`-byte element goes to plane k. A tail that
/// is not a whole element is copied as is.
enum Shuffle {
    /// Byte ranges of the grouped buffer compressed separately: one per plane, then the tail.
    static func segments(count: Int, width: Int) -> [Range<Int>] {
        let n = count / width
        var out = (0..<width).map { ($0 * n)..<(($0 + 1) * n) }
        if count > n * width { out.append((n * width)..<count) }
        return out
    }

    static func group(_ input: UnsafeRawBufferPointer, width: Int, into out: UnsafeMutableRawBufferPointer) {
        let n = input.count / width
        depot_bytes_group(input.baseAddress!, n, width, out.baseAddress!)
        let tail = input.count - n * width
        if tail > 0 { (out.baseAddress! + n * width).copyMemory(from: input.baseAddress! + n * width, byteCount: tail) }
    }

    static func ungroup(_ input: UnsafeRawBufferPointer, width: Int, into out: UnsafeMutableRawBufferPointer) {
        let n = input.count / width
        depot_bytes_ungroup(input.baseAddress!, n, width, out.baseAddress!)
        let tail = input.count - n * width
        if tail > 0 { (out.baseAddress! + n * width).copyMemory(from: input.baseAddress! + n * width, byteCount: tail) }
    }
}
