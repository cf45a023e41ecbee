import DepotCatalog
import DepotCore


/// Opens pack files for reading and keeps the descriptors, so reads are one `pread` each.
final class PackFiles: Sendable {
    let root: String
    private let open = Locked<[Int64: PosixFile]>([:])

    init(root: String) { self.root = root }

    func path(_ id: Int64) -> String { root + "/" + PackFormat.relativePath(id) }

    func file(_ id: Int64) throws -> PosixFile {
        if let f = open.withLock({ $0[id] }) { return f }
        let f = try PosixFile(path: path(id), mode: .read)
        open.withLock { $0[id] = f }
        return f
    }

    func evict(_ id: Int64) { _ = open.withLock { $0.removeValue(forKey: id) } }

    /// Reads and verifies one chunk into `output` (its raw length). Throws `integrity` on any mismatch.
    func readChunk(_ hash: SHA256.Value, at loc: ChunkLocation, into output: UnsafeMutableRawBufferPointer,
                   compressor: ChunkCompressor, scratch: inout [UInt8]) throws {
        let total = PackFormat.recordHeaderSize + loc.storedLength
        if scratch.count < total { scratch = [UInt8](repeating: 0, count: total) }
        let file = try self.file(loc.pack)
        try scratch.withUnsafeMutableBytes { buf in
            let record = UnsafeMutableRawBufferPointer(rebasing: buf[0..<total])
            try file.read(into: record, at: loc.offset)
            let where_ = "chunk sha256:\(hash.hex) (pack \(loc.pack), offset \(loc.offset))"
            guard let header = PackFormat.decode(UnsafeRawBufferPointer(record)) else {
                throw DepotError.integrity("\(where_): record header is damaged")
            }
            guard header.hash == hash, header.storedLength == loc.storedLength, header.rawLength == loc.rawLength,
                  header.rawLength == output.count else {
                throw DepotError.integrity("\(where_): record header does not match the index")
            }
            let payload = UnsafeRawBufferPointer(rebasing: record[PackFormat.recordHeaderSize...])
            do {
                try compressor.decode(payload, codec: header.codec, into: output)
            } catch {
                throw DepotError.integrity("\(where_): payload does not decode")
            }
            guard SHA256.hash(UnsafeRawBufferPointer(output)) == hash else {
                throw DepotError.integrity("\(where_): content does not match its hash")
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
