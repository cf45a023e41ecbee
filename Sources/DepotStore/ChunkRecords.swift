import DepotCore

/// Chunk records as they travel between a chunk-aware client and the server: exactly the pack
/// record format (`PackFormat`: a 56-byte header with codec, lengths, SHA-256, a header check
/// and a CRC-32C of the payload, then the stored, possibly compressed, payload). The server
/// sends records straight out of its packs; a client encodes with the same codecs the store uses.
public enum ChunkRecords {
    public static let headerSize = PackFormat.recordHeaderSize

    /// A decoded, checked record header.
    public struct Header: Sendable, Equatable {
        public var codec: ChunkCodec
        public var rawLength: Int
        public var storedLength: Int
        public var hash: SHA256.Value
        var checksum: UInt32
    }

    /// Parses a record header; throws when it is damaged or its lengths exceed `maxChunk`.
    public static func header(_ bytes: UnsafeRawBufferPointer, maxChunk: Int) throws -> Header {
        guard let h = PackFormat.decode(bytes) else {
            throw DepotError.integrity("chunk record header is damaged (bad magic, codec or header check)")
        }
        guard h.rawLength > 0, h.rawLength <= maxChunk, h.storedLength <= maxStoredLength(maxChunk) else {
            throw DepotError.integrity(
                "chunk record sha256:\(h.hash.hex) has lengths \(h.rawLength)/\(h.storedLength) beyond the \(maxChunk)-byte chunk limit")
        }
        return Header(codec: h.codec, rawLength: h.rawLength, storedLength: h.storedLength, hash: h.hash, checksum: h.checksum)
    }

    /// The largest stored payload a chunk of `maxChunk` raw bytes may have (compression bound
    /// plus per-plane frame headers).
    public static func maxStoredLength(_ maxChunk: Int) -> Int { maxChunk + maxChunk / 128 + 4096 }
}

/// Encodes and verifies chunk records. Holds zstd contexts and scratch space: one per thread.
public final class ChunkRecordCodec: @unchecked Sendable {
    private let compressor: ChunkCompressor
    private var scratch: [UInt8] = []
    /// `verifyEach`'s decoded payloads (grown to what a group's compressed records need).
    private var groupScratch: [UInt8] = []
    public let maxChunk: Int
    public var policy: CompressionPolicy

    public init(maxChunk: Int = ChunkerParameters.v1.maxSize, policy: CompressionPolicy = CompressionPolicy()) {
        self.maxChunk = maxChunk
        self.policy = policy
        compressor = ChunkCompressor(maxChunk: maxChunk)
    }

    /// Appends the record for `chunk` (whose SHA-256 is `hash`) to `out`, compressed when that
    /// pays. Returns the payload's stored length.
    @discardableResult
    public func append(
        _ chunk: UnsafeRawBufferPointer, hash: SHA256.Value, elementWidth: Int = 1,
        compress: Bool = true, to out: inout [UInt8]
    ) throws -> Int {
        try encode(chunk, hash: hash, elementWidth: elementWidth, compress: compress) { header, payload in
            out.append(contentsOf: header)
            out.append(contentsOf: payload)
        }
    }

    /// Hands `body` the record for `chunk` as its header and its payload (compressed when that
    /// pays), for a caller that writes them into a buffer of its own. Returns the payload's
    /// stored length.
    @discardableResult
    public func encode(
        _ chunk: UnsafeRawBufferPointer, hash: SHA256.Value, elementWidth: Int = 1, compress: Bool = true,
        _ body: (_ header: UnsafeRawBufferPointer, _ payload: UnsafeRawBufferPointer) throws -> Void
    ) throws -> Int {
        var p = policy
        if !compress { p.mode = .off }
        var stored = 0
        try compressor.encode(chunk, policy: p, elementWidth: elementWidth) { codec, payload in
            var header = [UInt8](repeating: 0, count: PackFormat.recordHeaderSize)
            header.withUnsafeMutableBytes { h in
                PackFormat.encode(
                    .init(
                        codec: codec, rawLength: chunk.count, storedLength: payload.count, hash: hash,
                        checksum: PackFormat.checksum(payload)),
                    into: h)
            }
            try header.withUnsafeBytes { try body($0, payload) }
            stored = payload.count
        }
        return stored
    }

    /// Checks a record's payload against its header (CRC-32C), decodes it into `output`
    /// (exactly `header.rawLength` bytes) and verifies the SHA-256. Throws `integrity` on any mismatch.
    public func decode(_ header: ChunkRecords.Header, payload: UnsafeRawBufferPointer, into output: UnsafeMutableRawBufferPointer) throws {
        let name = "chunk sha256:\(header.hash.hex)"
        guard payload.count == header.storedLength, output.count == header.rawLength else {
            throw DepotError.integrity("\(name): record is truncated")
        }
        guard PackFormat.checksum(payload) == header.checksum else {
            throw DepotError.integrity("\(name): payload checksum mismatch (damaged in transit?)")
        }
        do {
            try compressor.decode(payload, codec: header.codec, into: output)
        } catch {
            throw DepotError.integrity("\(name): payload does not decode")
        }
        guard SHA256.hash(UnsafeRawBufferPointer(output)) == header.hash else {
            throw DepotError.integrity("\(name): content does not match its hash")
        }
    }

    /// Checks a record's CRC-32C and hands `body` its raw bytes (the payload itself when it is
    /// stored raw, else decoded into scratch: `header.rawLength` bytes, up to the codec's
    /// maximum chunk) without hashing them. Only for a caller that checks each chunk's length
    /// against what it expects, and a digest over everything it assembles from them: a pull
    /// checks the file's digest, and hashes chunks one by one only to find a bad one when that
    /// check fails.
    public func unhashed<T>(
        _ header: ChunkRecords.Header, payload: UnsafeRawBufferPointer, _ body: (UnsafeRawBufferPointer) throws -> T
    ) throws -> T {
        let name = "chunk sha256:\(header.hash.hex)"
        guard payload.count == header.storedLength else { throw DepotError.integrity("\(name): record is truncated") }
        guard PackFormat.checksum(payload) == header.checksum else {
            throw DepotError.integrity("\(name): payload checksum mismatch (damaged in transit?)")
        }
        if header.codec == .raw {
            guard payload.count == header.rawLength else { throw DepotError.integrity("\(name): record is truncated") }
            return try body(payload)
        }
        if scratch.count < header.rawLength { scratch = [UInt8](repeating: 0, count: max(header.rawLength, maxChunk)) }
        return try scratch.withUnsafeMutableBytes { s in
            let out = UnsafeMutableRawBufferPointer(rebasing: s[0..<header.rawLength])
            do {
                try compressor.decode(payload, codec: header.codec, into: out)
            } catch {
                throw DepotError.integrity("\(name): payload does not decode")
            }
            return try body(UnsafeRawBufferPointer(out))
        }
    }

    /// A record as it arrives: its parsed header and its payload.
    public typealias Record = (header: ChunkRecords.Header, payload: UnsafeRawBufferPointer)

    /// Records per group of `verifyEach`: what bounds its scratch (`verifyGroup × maxChunk`).
    static let verifyGroup = 8

    /// Checks each record as `decode` does (lengths, CRC-32C, decoding, SHA-256) and then hands
    /// `body` its index, in order. The records are taken `verifyGroup` at a time and each
    /// group's SHA-256s computed two at a time (`SHA256Lanes`); a raw record is hashed where it
    /// lies, not copied. Compressed payloads are decoded into scratch of at most
    /// `verifyGroup × maxChunk` bytes (what the group's compressed records need), however many records come (a body of tiny records that
    /// each decode to a full chunk cannot make it grow). Throws `integrity` at the first bad
    /// record; `body` has then been called for the groups before it only.
    public func verifyEach(_ records: [Record], _ body: (Int) throws -> Void) throws {
        var start = 0
        while start < records.count {
            let end = min(start + Self.verifyGroup, records.count)
            // Scratch for this group's compressed records only (each rawLength ≤ maxChunk: checked
            // by `ChunkRecords.header` and again below), so a body of raw records needs none.
            let decoded = records[start..<end].reduce(0) { $0 + ($1.header.codec == .raw ? 0 : min($1.header.rawLength, maxChunk)) }
            if groupScratch.count < decoded { groupScratch = [UInt8](repeating: 0, count: decoded) }
            try groupScratch.withUnsafeMutableBytes { s in
                var views: [UnsafeRawBufferPointer] = []
                views.reserveCapacity(end - start)
                var used = 0
                for (header, payload) in records[start..<end] {
                    let name = "chunk sha256:\(header.hash.hex)"
                    guard payload.count == header.storedLength, header.rawLength <= maxChunk else {
                        throw DepotError.integrity("\(name): record is truncated")
                    }
                    guard PackFormat.checksum(payload) == header.checksum else {
                        throw DepotError.integrity("\(name): payload checksum mismatch (damaged in transit?)")
                    }
                    if header.codec == .raw {
                        guard payload.count == header.rawLength else { throw DepotError.integrity("\(name): record is truncated") }
                        views.append(payload)
                        continue
                    }
                    let out = UnsafeMutableRawBufferPointer(rebasing: s[used..<(used + header.rawLength)])
                    do {
                        try compressor.decode(payload, codec: header.codec, into: out)
                    } catch {
                        throw DepotError.integrity("\(name): payload does not decode")
                    }
                    views.append(UnsafeRawBufferPointer(out))
                    used += header.rawLength
                }
                for (k, hash) in SHA256Lanes.hashEach(views).enumerated() where hash != records[start + k].header.hash {
                    throw DepotError.integrity("chunk sha256:\(records[start + k].header.hash.hex): content does not match its hash")
                }
            }
            for i in start..<end { try body(i) }
            start = end
        }
    }

    /// `decode` into internal scratch; `body` sees the verified raw bytes.
    public func verify<T>(
        _ header: ChunkRecords.Header, payload: UnsafeRawBufferPointer,
        _ body: (UnsafeRawBufferPointer) throws -> T
    ) throws -> T {
        if scratch.count < header.rawLength { scratch = [UInt8](repeating: 0, count: max(header.rawLength, maxChunk)) }
        return try scratch.withUnsafeMutableBytes { s in
            let out = UnsafeMutableRawBufferPointer(rebasing: s[0..<header.rawLength])
            try decode(header, payload: payload, into: out)
            return try body(UnsafeRawBufferPointer(out))
        }
    }
}
