import DepotCatalog
import DepotCore

/// A chunk compaction could not move because its record is damaged or unreadable: it stays
/// where it is (index row and pack untouched) for `depot fsck` to name the blobs affected.
public struct GCDamage: Sendable, Codable, Equatable {
    public var chunk: String
    public var pack: Int64
    public var reason: String
}

/// What one garbage collection did.
public struct GCReport: Sendable, Codable, Equatable {
    public var blobsDeleted = 0
    public var chunksDeleted = 0
    public var chunkBytesFreed: Int64 = 0
    public var packsCompacted = 0
    public var chunksMoved = 0
    public var packsDeleted = 0
    public var packBytesFreed: Int64 = 0
    /// Chunks compaction skipped (damaged or unreadable); every other pack was still compacted.
    public var damagedChunks: [GCDamage] = []
    /// Cast-aware deduplication's pass after the sweep (nil when GC ran without a layout reader).
    public var casts: CastReport?
    /// Cast chunks (`chunk_casts`) deleted because no recipe names them any more.
    public var castChunksDeleted = 0
    /// Cast chunks stored as plain chunks again because their fp32 source is no longer used.
    public var castChunksMaterialized = 0

    enum CodingKeys: String, CodingKey {
        case blobsDeleted = "blobs_deleted"
        case chunksDeleted = "chunks_deleted"
        case chunkBytesFreed = "chunk_bytes_freed"
        case packsCompacted = "packs_compacted"
        case chunksMoved = "chunks_moved"
        case packsDeleted = "packs_deleted"
        case packBytesFreed = "pack_bytes_freed"
        case damagedChunks = "damaged_chunks"
        case casts
        case castChunksDeleted = "cast_chunks_deleted"
        case castChunksMaterialized = "cast_chunks_materialized"
    }
}

extension ChunkStore {
    /// Mark and sweep, then compaction. Safe while writes and reads continue.
    ///
    /// Roots: blobs declared live (`retain`), writes in progress in this process, and unfinished
    /// writes touched within the grace period. The sweep (delete unrooted blobs, then cast chunks
    /// no recipe names, then chunks no recipe and no cast names) runs inside the appender's lock,
    /// so no writer can reference a chunk between "unreferenced" and "deleted". Compaction then
    /// copies the live records of sparse packs into the current pack, and deletes a pack file only
    /// after no index row names it.
    /// `now`: milliseconds since 1970, like every catalog time. With `tensors`, cast-aware
    /// deduplication then scans new blobs (`deriveCasts`, at most `castPassSeconds`; only blobs
    /// the sweep kept are sources), casts whose fp32 source was swept are made plain again
    /// (`materializeCasts`) and their sources swept, and compaction reclaims the records of chunks
    /// turned into casts in the same run.
    public func collectGarbage(now: Int64? = nil, tensors: (any TensorLayoutReader)? = nil) throws -> GCReport {
        guard !readOnly else { throw DepotError.storage("store \(root) is open read-only") }
        var report = GCReport()
        // The cutoff is a whole second, as when the catalog counted seconds (before migration 9): a
        // write touched in the current second is never stale, even with a grace of 0.
        let staleBefore = ((now ?? PackAppender.now()) / 1000 - options.writeGraceSeconds) * 1000
        try appender.exclusive { conn, active in
            report.blobsDeleted = try conn.deleteGarbageBlobs(staleBefore: staleBefore, active: active)
            // Casts first: the sources of a cast that goes are then unreferenced in this sweep.
            report.castChunksDeleted = try conn.deleteUnreferencedCasts()
            let swept = try conn.deleteUnreferencedChunks()
            report.chunksDeleted = swept.count
            report.chunkBytesFreed = swept.bytes
        }
        if let tensors { report.casts = try deriveCasts(layout: tensors, deadline: .now + .seconds(Self.castPassSeconds)) }
        try materializeCasts(&report)
        if report.castChunksMaterialized > 0 {
            try appender.exclusive { conn, _ in
                let swept = try conn.deleteUnreferencedChunks()
                report.chunksDeleted += swept.count
                report.chunkBytesFreed += swept.bytes
            }
        }
        try compact(&report)
        return report
    }

    /// The longest a GC spends scanning for casts; the rest waits for the next GC.
    static let castPassSeconds: Int64 = 600

    private func compact(_ report: inout GCReport) throws {
        if let objects = files.objects { return try compactObjects(objects, &report) }
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
            // Three durable steps: mark the row (only if no chunk row names the pack), unlink, drop
            // the row. A crash in between leaves a marked row, and recovery finishes the deletion;
            // a file without any row would be an unknown pack, which recovery only quarantines.
            let deleted = try catalog.write { conn -> Bool in
                guard try conn.chunks(inPack: pack.id).isEmpty else { return false }
                try conn.markPackDeleting(pack.id)
                return true
            }
            if deleted {
                // Unlink first, then drop the cached descriptor: a reader that opens the pack in
                // between fails to open it and retries with a fresh location.
                try FileSystem.remove(files.path(pack.id))
                files.evict(pack.id)
                try catalog.write { try $0.deletePack(pack.id) }
                report.packsDeleted += 1
                report.packBytesFreed += pack.committedSize - live
            }
        }
    }

    /// S3 mode. The same rules, in another order: every sparse or small pack's live records are
    /// copied first and committed once (a commit uploads and seals the current pack, so one
    /// commit per old pack would make new packs as small as the old ones), then each old pack is
    /// deleted in the same three durable steps (mark with no chunk row, DELETE the object, drop the
    /// row). A small pack is compacted only when there are at least two: one alone would be
    /// re-uploaded as is. Then uploads whose writer died before committing (open rows with no
    /// chunk, older than the write grace period) are deleted the same way.
    private func compactObjects(_ objects: ObjectPacks, _ report: inout GCReport) throws {
        let usage = try catalog.read { try $0.packUsage(headerSize: PackFormat.recordHeaderSize) }
        let packs = try catalog.read { try $0.packs() }
        let current = appender.currentPack
        let sealed = packs.filter { $0.sealed && !$0.deleting && $0.id != current }
        let smallOnes = sealed.filter { $0.committedSize < options.packTargetSize / 4 && (usage[$0.id]?.bytes ?? 0) > 0 }.count
        var candidates: [(pack: PackRecord, live: Int64)] = []
        for pack in sealed {
            let live = usage[pack.id]?.bytes ?? 0
            let payload = max(pack.committedSize - Int64(PackFormat.fileHeaderSize), 1)
            let fraction = Double(live) / Double(payload)
            let small = pack.committedSize < options.packTargetSize / 4 && smallOnes > 1
            if live > 0 && fraction >= options.compactBelow && !small { continue }
            candidates.append((pack, live))
        }
        for (pack, live) in candidates where live > 0 {
            try moveLiveChunks(of: pack.id, &report)
            report.packsCompacted += 1
        }
        try appender.checkpoint()
        for (pack, live) in candidates {
            let marked = try catalog.write { conn -> Bool in
                guard try conn.chunks(inPack: pack.id).isEmpty else { return false }
                try conn.markPackDeleting(pack.id)
                return true
            }
            guard marked else { continue }
            try objects.store.delete(key: ObjectPacks.key(pack.id))
            files.evict(pack.id)
            try catalog.write { try $0.deletePack(pack.id) }
            report.packsDeleted += 1
            report.packBytesFreed += pack.committedSize - live
        }
        let cutoff = PackAppender.now() - options.writeGraceSeconds * 1000
        for id in try catalog.read({ try $0.abandonedPacks(createdBefore: cutoff) }) where id != appender.currentPack {
            guard try catalog.write({ try $0.markAbandonedPackDeleting(id, createdBefore: cutoff) }) else { continue }
            try objects.store.delete(key: ObjectPacks.key(id))
            files.evict(id)
            try catalog.write { try $0.deletePack(id) }
            report.packsDeleted += 1
        }
    }

    /// Copies the live records of `pack` into the current pack. A record that cannot be read or
    /// verified is skipped and reported (its row keeps naming the old pack, so the pack is not
    /// deleted); the rest are still moved. Failures to *write* the copy (disk full) stop GC.
    private func moveLiveChunks(of pack: Int64, _ report: inout GCReport) throws {
        let chunks = try catalog.read { try $0.chunks(inPack: pack) }
        var file: PosixFile?
        if files.objects == nil {
            do {
                file = try files.file(pack)
            } catch {
                for (hash, _) in chunks { skipDamaged(hash, pack, "pack unreadable: \(error)", &report) }
                return
            }
        }
        var buffer = [UInt8](repeating: 0, count: PackFormat.recordHeaderSize + options.chunker.maxSize + 1024)
        // Where each chunk of the next 256 is indexed now: one query for them all, instead of one
        // per chunk (on PostgreSQL a round trip each: 1 ms a chunk, most of a compaction's time).
        var current: [SHA256.Value: ChunkLocation] = [:]
        for (i, (hash, loc)) in chunks.enumerated() {
            if i % 256 == 0 { current = try catalog.read { try $0.chunkLocations(chunks[i..<min(i + 256, chunks.count)].map(\.0)) } }
            // S3 mode: fetch the next records with a few coalesced GETs rather than one each.
            if let objects = files.objects, i % 64 == 0 { objects.prefetch(chunks[i..<min(i + 64, chunks.count)].map(\.1)) }
            // Swept, or moved by a newer write of the same bytes, since the pack was listed.
            guard current[hash] == loc else { continue }
            let total = PackFormat.recordHeaderSize + loc.storedLength
            if buffer.count < total { buffer = [UInt8](repeating: 0, count: total) }
            let verified: ChunkCodec? = buffer.withUnsafeMutableBytes { buf in
                let record = UnsafeMutableRawBufferPointer(rebasing: buf[0..<total])
                do {
                    if let file {
                        try file.read(into: record, at: loc.offset)
                    } else {
                        try files.readRecord(pack: pack, at: loc.offset, into: record)
                    }
                } catch {
                    skipDamaged(hash, pack, "\(error)", &report)
                    return nil
                }
                guard let header = PackFormat.decode(UnsafeRawBufferPointer(record)), header.hash == hash,
                    header.storedLength == loc.storedLength, header.rawLength == loc.rawLength
                else {
                    skipDamaged(hash, pack, "record header is damaged or does not match the index", &report)
                    return nil
                }
                let payload = UnsafeRawBufferPointer(rebasing: record[PackFormat.recordHeaderSize...])
                // Verify before copying, so compaction never launders a damaged chunk.
                let intact = compressors.with { c -> Bool in
                    var raw = [UInt8](repeating: 0, count: loc.rawLength)
                    return raw.withUnsafeMutableBytes { out in
                        guard (try? c.decode(payload, codec: header.codec, into: out)) != nil else { return false }
                        return SHA256.hash(UnsafeRawBufferPointer(out)) == hash
                    }
                }
                guard intact else {
                    skipDamaged(hash, pack, "payload does not decode to its hash", &report)
                    return nil
                }
                return header.codec
            }
            guard let codec = verified else { continue }
            try buffer.withUnsafeBytes { buf in
                let payload = UnsafeRawBufferPointer(rebasing: buf[PackFormat.recordHeaderSize..<total])
                try appender.relocate(hash, from: loc, codec: codec, payload: payload)
            }
            report.chunksMoved += 1
        }
    }

    private func skipDamaged(_ hash: SHA256.Value, _ pack: Int64, _ reason: String, _ report: inout GCReport) {
        report.damagedChunks.append(
            GCDamage(
                chunk: "sha256:" + hash.hex, pack: pack,
                reason: reason + "; left in place, run `depot fsck` to list the blobs affected"))
    }
}
