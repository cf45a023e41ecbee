import CDepotSupport
import DepotCore

/// The on-disk layout of pack files. A pack starts with a 16-byte file header
/// (`DEPOTPK` + format version + padding), followed by records:
///
///     0  magic "DPKR"        4 bytes
///     4  codec               1 byte  (ChunkCodec)
///     5  flags               1 byte  (0)
///     6  reserved            2 bytes (0)
///     8  raw length          UInt32 LE
///    12  stored length       UInt32 LE
///    16  sha256 of raw bytes 32 bytes
///    48  header check        UInt32 LE (FNV-1a of bytes 0..<48)
///    52  payload checksum    UInt32 LE (CRC-32C of the stored payload)
///    56  payload             stored length bytes
///
/// The SHA-256 is the chunk's identity, verified when it is written and by fsck; the CRC-32C
/// lets every read detect damage at memory speed.
///
/// Records are only ever appended; a pack is never modified in place.
public enum PackFormat {
    public static let version: UInt8 = 1
    public static let fileHeaderSize = 16
    public static let recordHeaderSize = 56
    static let fileMagic: [UInt8] = Array("DEPOTPK".utf8) + [version] + [UInt8](repeating: 0, count: 8)
    static let recordMagic: UInt32 = 0x524B_5044 // "DPKR" little-endian

    struct RecordHeader: Equatable {
        var codec: ChunkCodec
        var rawLength: Int
        var storedLength: Int
        var hash: SHA256.Value
        var checksum: UInt32
    }

    static func encode(_ h: RecordHeader, into p: UnsafeMutableRawBufferPointer) {
        p.storeBytes(of: recordMagic.littleEndian, toByteOffset: 0, as: UInt32.self)
        p.storeBytes(of: h.codec.rawValue, toByteOffset: 4, as: UInt8.self)
        p.storeBytes(of: 0, toByteOffset: 5, as: UInt8.self)
        p.storeBytes(of: 0, toByteOffset: 6, as: UInt16.self)
        p.storeBytes(of: UInt32(h.rawLength).littleEndian, toByteOffset: 8, as: UInt32.self)
        p.storeBytes(of: UInt32(h.storedLength).littleEndian, toByteOffset: 12, as: UInt32.self)
        h.hash.store(into: UnsafeMutableRawBufferPointer(rebasing: p[16..<48]))
        let check = fnv1a(UnsafeRawBufferPointer(rebasing: p[0..<48]))
        p.storeBytes(of: check.littleEndian, toByteOffset: 48, as: UInt32.self)
        p.storeBytes(of: h.checksum.littleEndian, toByteOffset: 52, as: UInt32.self)
    }

    /// Decodes a record header; nil when the magic, check or codec is wrong.
    static func decode(_ p: UnsafeRawBufferPointer) -> RecordHeader? {
        guard p.count >= recordHeaderSize,
            UInt32(littleEndian: p.loadUnaligned(fromByteOffset: 0, as: UInt32.self)) == recordMagic,
            UInt32(littleEndian: p.loadUnaligned(fromByteOffset: 48, as: UInt32.self))
                == fnv1a(UnsafeRawBufferPointer(rebasing: p[0..<48])),
            let codec = ChunkCodec(rawValue: p[4])
        else { return nil }
        return RecordHeader(
            codec: codec,
            rawLength: Int(UInt32(littleEndian: p.loadUnaligned(fromByteOffset: 8, as: UInt32.self))),
            storedLength: Int(UInt32(littleEndian: p.loadUnaligned(fromByteOffset: 12, as: UInt32.self))),
            hash: SHA256.Value(bytes: UnsafeRawBufferPointer(rebasing: p[16..<48])),
            checksum: UInt32(littleEndian: p.loadUnaligned(fromByteOffset: 52, as: UInt32.self)))
    }

    static func checksum(_ payload: UnsafeRawBufferPointer) -> UInt32 {
        depot_crc32c(0, payload.baseAddress, payload.count)
    }

    static func fnv1a(_ p: UnsafeRawBufferPointer) -> UInt32 {
        var h: UInt32 = 0x811C_9DC5
        for b in p { h = (h ^ UInt32(b)) &* 0x0100_0193 }
        return h
    }

    /// Relative path of a pack file under the storage root; in S3 mode also the pack's object key
    /// (under `storage.s3.prefix`).
    public static func relativePath(_ id: Int64) -> String {
        let hex = String(id, radix: 16)
        let padded = String(repeating: "0", count: max(0, 12 - hex.count)) + hex
        return "packs/\(padded.suffix(2))/\(padded).pack"
    }

    /// Parses a pack id back out of a file name (`<hex>.pack`).
    static func id(fromFileName name: String) -> Int64? {
        guard name.hasSuffix(".pack") else { return nil }
        return Int64(name.dropLast(5), radix: 16)
    }
}
