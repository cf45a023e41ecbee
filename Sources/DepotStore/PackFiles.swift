import DepotCatalog
import DepotCore

/// Opens pack files for reading and keeps the descriptors, so reads are one `pread` each.
final class PackFiles: Sendable {
    let root: String
    private let open = Locked<[Int64: PosixFile]>([:])

    init(root: String) { self.root = root }

    func path(_ id: Int64) -> String { root + "/" + PackFormat.relativePath(id) }

    /// Open pack descriptors kept at most (the rest are closed, oldest-opened first).
    static let maxOpen = 256

    func file(_ id: Int64) throws -> PosixFile {
        if let f = open.withLock({ $0[id] }) { return f }
        let f = try PosixFile(path: path(id), mode: .read)
        open.withLock { cache in
            if cache.count >= Self.maxOpen, let victim = cache.keys.min() { cache.removeValue(forKey: victim) }
            cache[id] = f
        }
        return f
    }

    func evict(_ id: Int64) { _ = open.withLock { $0.removeValue(forKey: id) } }

    /// Reads and verifies one chunk into `output` (its raw length). Throws `integrity` on any
    /// mismatch: header check, index agreement, payload CRC-32C, decoding and, with
    /// `.sha256`, the chunk's hash. A raw chunk is read straight into `output` (one `preadv`).
    func readChunk(
        _ hash: SHA256.Value, at loc: ChunkLocation, into output: UnsafeMutableRawBufferPointer,
        compressor: ChunkCompressor, scratch: inout [UInt8], verify: ReadVerification
    ) throws {
        let file = try self.file(loc.pack)
        let location = "chunk sha256:\(hash.hex) (pack \(loc.pack), offset \(loc.offset))"
        var header = (UInt64(0), UInt64(0), UInt64(0), UInt64(0), UInt64(0), UInt64(0), UInt64(0))
        let direct = loc.codec == ChunkCodec.raw.rawValue && loc.storedLength == output.count
        if scratch.count < loc.storedLength && !direct { scratch = [UInt8](repeating: 0, count: loc.storedLength) }
        try scratch.withUnsafeMutableBytes { buf in
            let payload = direct ? output : UnsafeMutableRawBufferPointer(rebasing: buf[0..<loc.storedLength])
            let decoded = try withUnsafeMutableBytes(of: &header) { h -> PackFormat.RecordHeader in
                try file.read(into: h, payload, at: loc.offset)
                guard let decoded = PackFormat.decode(UnsafeRawBufferPointer(h)) else {
                    throw DepotError.integrity("\(location): record header is damaged")
                }
                return decoded
            }
            guard decoded.hash == hash, decoded.storedLength == loc.storedLength, decoded.rawLength == loc.rawLength,
                decoded.rawLength == output.count, decoded.codec.rawValue == loc.codec
            else {
                throw DepotError.integrity("\(location): record header does not match the index")
            }
            guard PackFormat.checksum(UnsafeRawBufferPointer(payload)) == decoded.checksum else {
                throw DepotError.integrity("\(location): payload checksum mismatch")
            }
            if !direct {
                do {
                    try compressor.decode(UnsafeRawBufferPointer(payload), codec: decoded.codec, into: output)
                } catch {
                    throw DepotError.integrity("\(location): payload does not decode")
                }
            }
            if verify == .sha256, SHA256.hash(UnsafeRawBufferPointer(output)) != hash {
                throw DepotError.integrity("\(location): content does not match its hash")
            }
        }
    }
}

/// A small pool of compressors (each holds zstd contexts and scratch buffers).
final class CompressorPool: Sendable {
    private let pool = Locked<[ChunkCompressor]>([])
    let maxChunk: Int

    init(maxChunk: Int) { self.maxChunk = maxChunk }

    func with<T>(_ body: (ChunkCompressor) throws -> T) rethrows -> T {
        let c = pool.withLock { $0.popLast() } ?? ChunkCompressor(maxChunk: maxChunk)
        defer { pool.withLock { if $0.count < 8 { $0.append(c) } } }
        return try body(c)
    }
}

extension ChunkCompressor: @unchecked Sendable {}
