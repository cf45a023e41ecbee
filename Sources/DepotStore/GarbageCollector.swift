import DepotCatalog
import DepotCore

/// What one garbage collection did.
public struct GCReport: Sendable, Codable, Equatable {
    public var blobsDeleted = 0
    public var chunksDeleted = 0
    public var chunkBytesFreed: Int64 = 0
    public var packsCompacted = 0
    public var chunksMoved = 0
    public var packsDeleted = 0
    public var packBytesFreed: Int64 = 0

    enum CodingKeys: String, CodingKey {
        case blobsDeleted = "blobs_deleted", chunksDeleted = "chunks_deleted", chunkBytesFreed = "chunk_bytes_freed"
        case packsCompacted = "packs_compacted", chunksMoved = "chunks_moved", packsDeleted = "packs_deleted"
        case packBytesFreed = "pack_bytes_freed"
    }
}

extension ChunkStore {
    /// Mark and sweep, then compaction. Safe while writes and reads continue.
    ///
    /// Roots: blobs declared live (`retain`), writes in progress in this process, and unfinished
    /// writes touched within the grace period. The sweep (delete unrooted blobs, then chunks no
    /// recipe names) runs inside the appender's lock, so no writer can reference a chunk between
    /// "unreferenced" and "deleted". Compaction then copies the live records of sparse packs into
    /// the current pack, and deletes a pack file only after no index row names it.
    public func collectGarbage(now: Int64? = nil) throws -> GCReport {
        guard !readOnly else { throw DepotError.storage("store \(root) is open read-only") }
        var report = GCReport()
        let staleBefore = (now ?? PackAppender.now()) - options.writeGraceSeconds
        try appender.exclusive { conn, active in
            report.blobsDeleted = try conn.deleteGarbageBlobs(staleBefore: staleBefore, active: active)
            let swept = try conn.deleteUnreferencedChunks()
            report.chunksDeleted = swept.count
            report.chunkBytesFreed = swept.bytes
        }
        try compact(&report)
        return report
    }

    private func compact(_ report: inout GCReport) throws {
        var usage = try catalog.read { try $0.packUsage(headerSize: PackFormat.recordHeaderSize) }
        // The pack being appended to is reclaimable too once most of it is dead.
        if try appender.sealCurrent(ifLiveBelow: options.compactBelow, usage: usage) {
            usage = try catalog.read { try $0.packUsage(headerSize: PackFormat.recordHeaderSize) }
        }
        let packs = try catalog.read { try $0.packs() }
        let current = appender.currentPack
        for pack in packs where pack.sealed && pack.id != current {
            let live = usage[pack.id]?.bytes ?? 0
            let payload = max(pack.committedSize - Int64(PackFormat.fileHeaderSize), 1)
            let fraction = Double(live) / Double(payload)
            let small = pack.committedSize < options.packTargetSize / 4 && packs.count > 1
            if live > 0 && fraction >= options.compactBelow && !small { continue }
            if live > 0 {
                try moveLiveChunks(of: pack.id, &report)
                report.packsCompacted += 1
            }
            try appender.checkpoint()
            let deleted = try catalog.write { conn -> Bool in
                guard try conn.chunks(inPack: pack.id).isEmpty else { return false }
                try conn.deletePack(pack.id)
                return true
            }
            if deleted {
                // Unlink first, then drop the cached descriptor: a reader that opens the pack in
                // between fails to open it and retries with a fresh location.
                try FileSystem.remove(files.path(pack.id))
                files.evict(pack.id)
                report.packsDeleted += 1
                report.packBytesFreed += pack.committedSize - live
            }
        }
    }

    private func moveLiveChunks(of pack: Int64, _ report: inout GCReport) throws {
        let chunks = try catalog.read { try $0.chunks(inPack: pack) }
        let file = try files.file(pack)
        var buffer = [UInt8](repeating: 0, count: PackFormat.recordHeaderSize + options.chunker.maxSize + 1024)
        for (hash, loc) in chunks {
            let total = PackFormat.recordHeaderSize + loc.storedLength
            if buffer.count < total { buffer = [UInt8](repeating: 0, count: total) }
            try buffer.withUnsafeMutableBytes { buf in
                let record = UnsafeMutableRawBufferPointer(rebasing: buf[0..<total])
                try file.read(into: record, at: loc.offset)
                guard let header = PackFormat.decode(UnsafeRawBufferPointer(record)), header.hash == hash,
                      header.storedLength == loc.storedLength else {
                    throw DepotError.integrity("chunk sha256:\(hash.hex) in pack \(pack) is damaged; run `depot fsck` (compaction stopped)")
                }
                let payload = UnsafeRawBufferPointer(rebasing: record[PackFormat.recordHeaderSize...])
                // Verify before copying, so compaction never launders a damaged chunk.
                try compressors.with { c in
                    var raw = [UInt8](repeating: 0, count: loc.rawLength)
                    try raw.withUnsafeMutableBytes { out in
                        try c.decode(payload, codec: header.codec, into: out)
                        guard SHA256.hash(UnsafeRawBufferPointer(out)) == hash else {
                            throw DepotError.integrity("chunk sha256:\(hash.hex) in pack \(pack) does not match its hash; run `depot fsck` (compaction stopped)")
                        }
                    }
                }
                try appender.relocate(hash, from: loc, codec: header.codec, payload: payload)
            }
            report.chunksMoved += 1
        }
    }
}
