import DepotCore

/// One ZIP central-directory entry.
struct ZipEntry {
    var name: String
    var size: Int64
    var compressedSize: Int64
    /// 0 = stored, 8 = deflated.
    var method: Int
    var localHeaderOffset: Int64
}

/// Reads a ZIP archive's central directory (with ZIP64) from a ByteSource.
enum Zip {
    static func isZip(_ source: any ByteSource) throws -> Bool {
        guard source.size >= 22 else { return false }
        return try source.read(at: 0, count: 4) == [0x50, 0x4b, 0x03, 0x04]
    }

    private static func le(_ b: [UInt8], _ at: Int, _ width: Int) -> UInt64 {
        var v: UInt64 = 0
        for i in 0..<width { v |= UInt64(b[at + i]) << (8 * UInt64(i)) }
        return v
    }

    private static func bad(_ m: String) -> DepotError { DepotError.invalidArgument("ZIP archive: \(m)") }

    /// All central-directory entries, in directory order.
    static func entries(_ source: any ByteSource) throws -> [ZipEntry] {
        let size = source.size
        let tailLength = Int(min(size, 22 + 65_535))
        let tailStart = size - Int64(tailLength)
        let tail = try source.read(at: tailStart, count: tailLength)
        guard tail.count == tailLength, tailLength >= 22 else { throw bad("file too small") }
        let found: Int? = tail.withUnsafeBytes { raw in
            var i = raw.count - 22
            while i >= 0 {
                if raw[i] == 0x50, raw[i + 1] == 0x4b, raw[i + 2] == 0x05, raw[i + 3] == 0x06 { return i }
                i -= 1
            }
            return nil
        }
        guard let e = found else { throw bad("no end of central directory record") }
        let eocdOffset = tailStart + Int64(e)
        var count = le(tail, e + 10, 2)
        var cdSize = le(tail, e + 12, 4)
        var cdOffset = le(tail, e + 16, 4)
        var directoryEnd = eocdOffset

        // ZIP64: a locator just before the EOCD points at the ZIP64 end of central directory record.
        if eocdOffset >= 20 {
            let loc = try source.read(at: eocdOffset - 20, count: 20)
            if loc.count == 20, le(loc, 0, 4) == 0x0706_4b50 {
                let recordOffset = le(loc, 8, 8)
                guard eocdOffset - 20 >= 56, recordOffset <= UInt64(eocdOffset - 20 - 56) else {
                    throw bad("ZIP64 end of central directory offset \(recordOffset) is outside the file")
                }
                let rec = try source.read(at: Int64(recordOffset), count: 56)
                guard rec.count == 56, le(rec, 0, 4) == 0x0606_4b50 else {
                    throw bad("bad ZIP64 end of central directory record at \(recordOffset)")
                }
                count = le(rec, 32, 8)
                cdSize = le(rec, 40, 8)
                cdOffset = le(rec, 48, 8)
                directoryEnd = Int64(recordOffset)
            }
        }
        guard cdOffset <= UInt64(directoryEnd), cdSize <= UInt64(directoryEnd) - cdOffset else {
            throw bad("central directory [\(cdOffset), +\(cdSize)) lies outside the file (ends at \(directoryEnd))")
        }
        guard count <= cdSize / 46 + 1 else { throw bad("claims \(count) entries in a \(cdSize)-byte central directory") }
        guard count <= 1_000_000 else { throw bad("\(count) entries is more than the 1000000 supported") }

        let c = ByteCursor(source, what: "ZIP central directory", start: Int64(cdOffset), end: Int64(cdOffset + cdSize))
        var entries: [ZipEntry] = []
        entries.reserveCapacity(Int(min(count, 100_000)))
        for i in 0..<count {
            let h = try c.readBytes(46)
            guard le(h, 0, 4) == 0x0201_4b50 else { throw bad("central directory entry \(i) has a bad signature at \(c.position - 46)") }
            let method = Int(le(h, 10, 2))
            var csize = le(h, 20, 4)
            var usize = le(h, 24, 4)
            let nameLength = Int(le(h, 28, 2))
            let extraLength = Int(le(h, 30, 2))
            let commentLength = Int(le(h, 32, 2))
            var offset = le(h, 42, 4)
            let name = String(decoding: try c.readBytes(nameLength), as: UTF8.self)
            let extra = try c.readBytes(extraLength)
            try c.skip(Int64(commentLength))
            // ZIP64 extended information: only the fields whose 32-bit value is 0xFFFFFFFF, in order.
            var p = 0
            while p + 4 <= extra.count {
                let id = le(extra, p, 2)
                let len = Int(le(extra, p + 2, 2))
                guard p + 4 + len <= extra.count else { throw bad("entry '\(name)' has a truncated extra field") }
                if id == 1 {
                    var q = p + 4
                    func next() throws -> UInt64 {
                        guard q + 8 <= p + 4 + len else { throw bad("entry '\(name)' has a short ZIP64 extra field") }
                        defer { q += 8 }
                        return le(extra, q, 8)
                    }
                    if usize == 0xFFFF_FFFF { usize = try next() }
                    if csize == 0xFFFF_FFFF { csize = try next() }
                    if offset == 0xFFFF_FFFF { offset = try next() }
                }
                p += 4 + len
            }
            guard offset < UInt64(size), csize <= UInt64(size), usize <= 1 << 50 else {
                throw bad("entry '\(name)' claims offset \(offset), compressed size \(csize) beyond the \(size)-byte file")
            }
            entries.append(
                ZipEntry(name: name, size: Int64(usize), compressedSize: Int64(csize), method: method, localHeaderOffset: Int64(offset)))
        }
        return entries
    }

    /// The byte range of an entry's (possibly compressed) data, from its local header.
    static func dataRange(_ entry: ZipEntry, in source: any ByteSource) throws -> Range<Int64> {
        let h = try source.read(at: entry.localHeaderOffset, count: 30)
        guard h.count == 30, le(h, 0, 4) == 0x0403_4b50 else {
            throw bad("entry '\(entry.name)' has no local header at \(entry.localHeaderOffset)")
        }
        let start = entry.localHeaderOffset + 30 + Int64(le(h, 26, 2)) + Int64(le(h, 28, 2))
        guard start <= source.size, entry.compressedSize <= source.size - start else {
            throw bad("entry '\(entry.name)' data [\(start), +\(entry.compressedSize)) runs past the end of the \(source.size)-byte file")
        }
        return start..<(start + entry.compressedSize)
    }
}
