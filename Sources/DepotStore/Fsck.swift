import DepotCatalog
import DepotCore
import Dispatch

/// The findings of `depot fsck`.
public struct FsckReport: Sendable, Codable {
    public struct Damage: Sendable, Codable, Equatable {
        public var chunk: String
        public var reason: String
        /// Digests of the complete blobs whose recipe names this chunk.
        public var blobs: [String]
    }

    public var chunksChecked = 0
    public var blobsChecked = 0
    public var bytesVerified: Int64 = 0
    public var damagedChunks: [Damage] = []
    /// Blobs whose bytes do not hash to their digest, or whose recipe is broken.
    public var damagedBlobs: [String: String] = [:]
    /// What opening the store for the check did or found (quarantined packs, damaged packs left in
    /// place, rows dropped by `--repair`); nil when it found nothing. Set by the CLI.
    public var recovery: RecoveryReport?

    public var isClean: Bool { damagedChunks.isEmpty && damagedBlobs.isEmpty && (recovery?.problems.isEmpty ?? true) }

    /// Every damaged blob, from either check.
    public var affectedBlobs: Set<String> {
        Set(damagedBlobs.keys).union(damagedChunks.flatMap(\.blobs))
    }

    enum CodingKeys: String, CodingKey {
        case chunksChecked = "chunks_checked"
        case blobsChecked = "blobs_checked"
        case bytesVerified = "bytes_verified"
        case damagedChunks = "damaged_chunks"
        case damagedBlobs = "damaged_blobs"
        case recovery
    }
}

extension ChunkStore {
    /// Verifies every indexed chunk (record header, decoding, SHA-256; a cast chunk by decoding it
    /// from its sources) and every complete blob
    /// (recipe contiguous from 0 to its size, all chunks present, bytes hash to its digest).
    /// `verifyBlobDigests: false` skips re-hashing whole blobs (chunks are still all verified).
    /// S3 mode: without `deep`, only the objects are checked (presence and size, found on open
    /// with `.report`: their chunks are reported damaged) and the recipes' shape; `deep` also
    /// fetches and verifies every record and, unless `verifyBlobDigests` is false, every blob.
    /// Local packs are always read (`deep` changes nothing there).
    public func fsck(verifyBlobDigests: Bool = true, deep: Bool = true) throws -> FsckReport {
        var report = FsckReport()
        let readRecords = files.objects == nil || deep
        let verifyBlobDigests = verifyBlobDigests && readRecords
        // 1. Chunks, in pack order, batches verified on all cores.
        var batch: [(SHA256.Value, ChunkLocation)] = []
        let damaged = Locked<[(SHA256.Value, String)]>([])
        func verify(_ batch: [(SHA256.Value, ChunkLocation)]) {
            files.objects?.prefetch(batch.map(\.1))
            DispatchQueue.concurrentPerform(iterations: batch.count) { i in
                let (hash, loc) = batch[i]
                var out = [UInt8](repeating: 0, count: loc.rawLength)
                var scratch: [UInt8] = []
                do {
                    try compressors.with { c in
                        try out.withUnsafeMutableBytes {
                            try files.readChunk(hash, at: loc, into: $0, compressor: c, scratch: &scratch, verify: .sha256)
                        }
                    }
                } catch {
                    let reason: String
                    if case DepotError.integrity(let m) = error { reason = m } else { reason = "\(error)" }
                    damaged.withLock { $0.append((hash, reason)) }
                }
            }
        }
        for (pack, reason) in damagedObjects.sorted(by: { $0.key < $1.key }) where !readRecords {
            for (hash, _) in try catalog.read({ try $0.chunks(inPack: pack) }) { damaged.withLock { $0.append((hash, reason)) } }
        }
        if readRecords {
            try catalog.read { conn in
                try conn.forEachChunk { hash, loc in
                    batch.append((hash, loc))
                    report.chunksChecked += 1
                    report.bytesVerified += Int64(loc.rawLength)
                    if batch.count == 64 {
                        verify(batch)
                        batch.removeAll(keepingCapacity: true)
                    }
                }
            }
            verify(batch)
        }
        // 1b. Cast chunks (`CastChunks.swift`): sources present and plain; when records are read,
        // decoded and checked against their hash too.
        for hash in try catalog.read({ try $0.castHashes() }) {
            report.chunksChecked += 1
            do {
                guard let cast = try catalog.read({ try $0.chunkCast(hash) }) else { continue } // deleted by GC meanwhile
                if readRecords {
                    report.bytesVerified += Int64(try decodeCast(hash, cast).count)
                } else if let s = try catalog.read({ conn in try cast.sources.first { try conn.chunkLocation($0) == nil } }) {
                    throw DepotError.integrity("cast chunk sha256:\(hash.hex): its source chunk sha256:\(s.hex) is missing from the store")
                }
            } catch {
                // Made plain again by GC meanwhile (its record is checked above or next time): fine.
                if (try? catalog.read({ try $0.chunkCast(hash) == nil || $0.chunkLocation(hash) != nil })) == true { continue }
                let reason: String
                if case DepotError.integrity(let m) = error { reason = m } else { reason = "\(error)" }
                damaged.withLock { $0.append((hash, reason)) }
            }
        }
        for (hash, reason) in damaged.withLock({ $0 }).sorted(by: { $0.0 < $1.0 }) {
            let blobs = try catalog.read { try $0.blobs(containing: hash) }.map(\.description).sorted()
            report.damagedChunks.append(.init(chunk: "sha256:" + hash.hex, reason: reason, blobs: blobs))
        }
        // 2. Recipes naming chunks the index lacks.
        for (digest, entry) in try catalog.read({ try $0.recipesWithMissingChunks() }) {
            guard let digest else { continue }
            report.damagedBlobs[digest.description] = "chunk sha256:\(entry.hash.hex) at offset \(entry.offset) is missing"
        }
        // 3. Blobs: recipe shape and, optionally, whole-blob digests.
        var blobs: [BlobRecord] = []
        try catalog.read { try $0.forEachBlob { blobs.append($0) } }
        for blob in blobs {
            report.blobsChecked += 1
            let key = blob.digest.description
            if report.damagedBlobs[key] != nil { continue }
            if report.damagedChunks.contains(where: { $0.blobs.contains(key) }) { continue }
            do {
                try checkRecipe(blob)
                if verifyBlobDigests {
                    var hasher = SHA256()
                    try reader(blob.digest).forEach { bytes in bytes.withUnsafeBytes { hasher.update($0) } }
                    let actual = Digest(bytes: hasher.finalize())
                    if actual != blob.digest { report.damagedBlobs[key] = "content hashes to \(actual)" }
                }
            } catch {
                report.damagedBlobs[key] = "\(error)"
            }
        }
        return report
    }

    /// Checks that a blob's recipe covers [0, size) exactly, without gaps or overlaps.
    private func checkRecipe(_ blob: BlobRecord) throws {
        var expected: Int64 = 0
        var cursor: Int64 = 0
        while true {
            let page = try catalog.read { try $0.recipe(blob: blob.id, from: cursor, limit: 4096) }
            for e in page {
                guard e.offset == expected, e.length > 0 else {
                    throw DepotError.integrity("recipe has a gap or overlap at offset \(expected)")
                }
                expected += Int64(e.length)
            }
            guard let last = page.last, page.count == 4096 else { break }
            cursor = last.offset + 1
        }
        guard expected == blob.size else {
            throw DepotError.integrity("recipe covers \(expected) bytes but the blob has \(blob.size)")
        }
    }
}
