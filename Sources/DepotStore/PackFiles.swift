import DepotCatalog
import DepotCore

/// Opens pack files for reading and keeps the descriptors, so reads are one `pread` each.
/// In S3 mode (`objects` set) records are read from the object store instead (`ObjectPacks`),
/// and the files under the root are only staging copies of packs being written.
final class PackFiles: Sendable {
    let root: String
    let objects: ObjectPacks?
    private let open = Locked<[Int64: PosixFile]>([:])

    init(root: String, objects: ObjectPacks? = nil) {
        self.root = root
        self.objects = objects
    }

    /// Where the appender writes pack `id`: its final place, or in S3 mode a staging file under
    /// `staging/` (never under `packs/`, so it cannot be taken for a local pack), deleted once
    /// the object is uploaded.
    func path(_ id: Int64) -> String {
        objects == nil ? root + "/" + PackFormat.relativePath(id) : root + "/staging/" + String(id, radix: 16) + ".pack"
    }

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

    func evict(_ id: Int64) {
        _ = open.withLock { $0.removeValue(forKey: id) }
        objects?.cache.remove(pack: id)
    }

    /// Reads the whole record (header + payload) at `offset` of `pack` into `record` (GC
    /// compaction, which verifies it itself).
    func readRecord(pack: Int64, at offset: Int64, into record: UnsafeMutableRawBufferPointer) throws {
        if let objects {
            let split = PackFormat.recordHeaderSize
            _ = try objects.readRecord(
                pack: pack, at: offset, header: UnsafeMutableRawBufferPointer(rebasing: record[0..<split]),
                payload: UnsafeMutableRawBufferPointer(rebasing: record[split...]))
        } else {
            try file(pack).read(into: record, at: offset)
        }
    }

    /// Reads and verifies one chunk into `output` (its raw length). Throws `integrity` on any
    /// mismatch: header check, index agreement, payload CRC-32C, decoding and, with
    /// `.sha256`, the chunk's hash. A raw chunk is read straight into `output` (one `preadv`).
    /// A record fetched from the object store is always checked with SHA-256 the first time.
    func readChunk(
        _ hash: SHA256.Value, at loc: ChunkLocation, into output: UnsafeMutableRawBufferPointer,
        compressor: ChunkCompressor, scratch: inout [UInt8], verify: ReadVerification
    ) throws {
        let location = "chunk sha256:\(hash.hex) (pack \(loc.pack), offset \(loc.offset))"
        var header = (UInt64(0), UInt64(0), UInt64(0), UInt64(0), UInt64(0), UInt64(0), UInt64(0))
        let direct = loc.codec == ChunkCodec.raw.rawValue && loc.storedLength == output.count
        if scratch.count < loc.storedLength && !direct { scratch = [UInt8](repeating: 0, count: loc.storedLength) }
        var fetched = false
        do {
            try scratch.withUnsafeMutableBytes { buf in
                let payload = direct ? output : UnsafeMutableRawBufferPointer(rebasing: buf[0..<loc.storedLength])
                let decoded = try withUnsafeMutableBytes(of: &header) { h -> PackFormat.RecordHeader in
                    if let objects {
                        fetched = try objects.readRecord(pack: loc.pack, at: loc.offset, header: h, payload: payload)
                    } else {
                        try file(loc.pack).read(into: h, payload, at: loc.offset)
                    }
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
                if verify == .sha256 || fetched, SHA256.hash(UnsafeRawBufferPointer(output)) != hash {
                    throw DepotError.integrity("\(location): content does not match its hash")
                }
            }
        } catch {
            // A bad record from the object store is not kept: the next read fetches it again.
            if fetched { objects?.cache.remove(.init(pack: loc.pack, offset: loc.offset)) }
            throw error
        }
        if fetched { objects?.markVerified(pack: loc.pack, at: loc.offset) }
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
