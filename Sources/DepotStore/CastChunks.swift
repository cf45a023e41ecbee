import DepotCatalog
import DepotCore

/// Cast-aware deduplication: a chunk of an fp16 or bf16 tensor that is an exact cast of fp32
/// bytes the store already has is kept as a few catalog rows (`chunk_casts`: the cast, where the
/// first value starts, the fp32 source chunks) instead of a record in a pack, and decoded on read
/// by casting the source bytes again and checking the result against the chunk's SHA-256.
///
/// Finding casts runs after blobs are committed, as the first step of GC, so neither push path
/// pays for it: each complete blob is scanned once (`blobs.casts_scanned`). Its tensors come from
/// a `TensorLayoutReader` (the store knows no file format). An fp32 tensor leaves a print of its
/// cast (`TensorPrint`: kind, shape, first values) per 16-bit type; a 16-bit tensor whose print
/// matches one is compared chunk by chunk: each of its chunks that lies inside the tensor is cast
/// from the source's bytes and hashed, and only a chunk whose hash matches is recorded as a cast.
/// The chunk's old record becomes dead space that compaction, later in the same GC, reclaims.
///
/// Invariants: a cast's sources are plain chunks (never casts: decoding never recurses); a chunk
/// that is some cast's source is never itself made a cast; GC keeps a cast's sources while the
/// cast is referenced (`chunk_cast_sources`), and drops a cast nothing references before it
/// sweeps chunks. A cast is recorded in one transaction that checks all of this, so the chunk is
/// readable, as a plain chunk or as a cast, at every moment.
public struct CastReport: Sendable, Codable, Equatable {
    public var blobsScanned = 0
    /// 16-bit tensors with at least one chunk recorded as a cast.
    public var tensorsMatched = 0
    public var chunksDerived = 0
    /// Raw bytes of the chunks recorded as casts (what their records held before compression).
    public var bytesDerived: Int64 = 0
    /// Blobs that could not be read (left unscanned for the next pass) and candidates that could
    /// not be compared; `depot fsck` says what is damaged.
    public var failures = 0
    /// The first failure, for the log.
    public var firstFailure: String?

    public init() {}

    mutating func failed(_ why: String) {
        failures += 1
        if firstFailure == nil { firstFailure = why }
    }

    enum CodingKeys: String, CodingKey {
        case blobsScanned = "blobs_scanned"
        case tensorsMatched = "tensors_matched"
        case chunksDerived = "chunks_derived"
        case bytesDerived = "bytes_derived"
        case failures
        case firstFailure = "first_failure"
    }
}

extension ChunkStore {
    /// Sources one cast may name: a maximal 16-bit chunk spans twice its size of fp32 bytes, so
    /// this is generous; a record naming more is treated as damaged.
    static let maxCastSources = 256
    /// Smallest 16-bit tensor considered, in values (the boundary planner's 16 KiB).
    static let minCastValues = 8 << 10
    /// fp32 tensors whose print matches that are tried per 16-bit tensor.
    static let castCandidates = 4
    /// Smallest chunk made a cast, in bytes: below it the cast's rows cost about what the record does.
    static let minCastChunk = 4 << 10

    // MARK: reading

    /// The bytes of cast chunk `hash`: its sources read, cast, and checked against the hash.
    func decodeCast(_ hash: SHA256.Value, _ c: CastRecord) throws -> [UInt8] {
        let name = "cast chunk sha256:\(hash.hex)"
        guard let kind = CastKind(rawValue: c.kind), c.rawLength > 0, c.rawLength <= options.chunker.maxSize, c.skip == 0 || c.skip == 1,
            c.sourceOffset >= 0, !c.sources.isEmpty, c.sources.count <= Self.maxCastSources
        else { throw DepotError.integrity("\(name): its cast record is malformed") }
        let values = (c.skip + c.rawLength + 1) / 2
        var source = [UInt8](repeating: 0, count: 4 * values)
        var filled = 0
        var skipBytes = c.sourceOffset
        for s in c.sources where filled < source.count {
            guard let length = try catalog.read({ try $0.chunkLocation(s) })?.rawLength else {
                throw DepotError.integrity("\(name): its source chunk sha256:\(s.hex) is missing from the store")
            }
            guard length > 0, length <= options.chunker.maxSize else {
                throw DepotError.integrity("\(name): its source chunk sha256:\(s.hex) has an impossible length \(length)")
            }
            if skipBytes >= length {
                skipBytes -= length
                continue
            }
            let bytes: [UInt8]
            if let cached = castSources.get(s) {
                bytes = cached
            } else {
                var read = [UInt8](repeating: 0, count: length)
                try read.withUnsafeMutableBytes {
                    try readChunk(RecipeEntry(offset: 0, length: length, hash: s), nil, skip: 0, into: $0, castAllowed: false)
                }
                castSources.put(s, read)
                bytes = read
            }
            guard bytes.count == length else { throw DepotError.integrity("\(name): its source chunk sha256:\(s.hex) changed length") }
            let take = min(length - skipBytes, source.count - filled)
            source.replaceSubrange(filled..<(filled + take), with: bytes[skipBytes..<(skipBytes + take)])
            filled += take
            skipBytes = 0
        }
        guard filled == source.count else { throw DepotError.integrity("\(name): its sources are shorter than the cast needs") }
        var cast = [UInt8](repeating: 0, count: 2 * values)
        source.withUnsafeBytes { s in cast.withUnsafeMutableBytes { kind.cast(s, count: values, into: $0) } }
        let bytes = Array(cast[c.skip..<(c.skip + c.rawLength)])
        guard bytes.withUnsafeBytes({ SHA256.hash($0) }) == hash else {
            throw DepotError.integrity("\(name): casting its sources does not give its hash")
        }
        return bytes
    }

    // MARK: finding casts

    /// Scans the complete blobs that existed when it started and were not scanned yet (up to
    /// `blobLimit`, until `deadline`), 64 at a time, and records the casts found (see the type's
    /// comment): a new 16-bit tensor is compared with the fp32 tensors its print names, and a new
    /// fp32 tensor with the 16-bit tensors scanned before it (a cast pushed before its source).
    /// A blob that cannot be read is left unscanned for the next pass, a candidate that cannot
    /// be read is skipped (both counted in `failures`): nothing here stops GC. Safe while writes
    /// and reads continue.
    public func deriveCasts(
        layout: any TensorLayoutReader, blobLimit: Int = .max, deadline: ContinuousClock.Instant? = nil
    ) throws -> CastReport {
        guard !readOnly else { throw DepotError.storage("store \(root) is open read-only") }
        var report = CastReport()
        let newest = try catalog.read { try $0.newestBlobID() }
        var after: Int64 = 0
        while report.blobsScanned < blobLimit, deadline.map({ ContinuousClock.now < $0 }) ?? true {
            let blobs = try catalog.read {
                try $0.blobsToScanForCasts(after: after, through: newest, limit: min(64, blobLimit - report.blobsScanned))
            }
            guard let last = blobs.last else { break }
            after = last.id
            try deriveCasts(in: blobs, layout: layout, deadline: deadline, &report)
        }
        return report
    }

    private func deriveCasts(
        in blobs: [BlobRecord], layout: any TensorLayoutReader, deadline: ContinuousClock.Instant?, _ report: inout CastReport
    ) throws {
        // Every blob's prints first, so a 16-bit blob finds an fp32 blob of the same page.
        // (tensor, print, the cast the print is for)
        var scanned: [(BlobRecord, [(TensorExtent, [UInt8], CastKind)])] = []
        for blob in blobs {
            do {
                var tensors: [(TensorExtent, [UInt8], CastKind)] = []
                var rows: [([UInt8], Int64, Bool)] = []
                for t in try castTensors(of: blob, layout: layout) {
                    if let kind = t.element.castKind {
                        let print = try ends(of: t, in: blob, width: 2).withUnsafeBytes {
                            TensorPrint.make(kind: kind, shape: t.shape, values: $0)
                        }
                        tensors.append((t, print, kind))
                        rows.append((print, t.range.lowerBound, false))
                        continue
                    }
                    let values = try ends(of: t, in: blob, width: 4)
                    var cast = [UInt8](repeating: 0, count: values.count / 2)
                    for kind in CastKind.allCases {
                        values.withUnsafeBytes { h in cast.withUnsafeMutableBytes { kind.cast(h, count: values.count / 4, into: $0) } }
                        let print = cast.withUnsafeBytes { TensorPrint.make(kind: kind, shape: t.shape, values: $0) }
                        tensors.append((t, print, kind))
                        rows.append((print, t.range.lowerBound, true))
                    }
                }
                if !rows.isEmpty {
                    try catalog.write { conn in
                        for (print, offset, source) in rows {
                            try conn.addTensorPrint(print, blob: blob.id, offset: offset, source: source)
                        }
                    }
                }
                scanned.append((blob, tensors))
            } catch {
                // Unreadable now (damage, I/O): left unscanned, so the next pass tries again.
                report.failed("blob \(blob.digest): \(error)")
            }
        }
        for (blob, tensors) in scanned {
            if let deadline, ContinuousClock.now >= deadline { return } // the rest stays unscanned
            for (t, print, kind) in tensors {
                if t.element != .float32 {
                    // A 16-bit tensor: the fp32 tensors it may be a cast of.
                    let sources = try catalog.read { try $0.tensorSources(print: print, excluding: blob.id, limit: Self.castCandidates) }
                    for source in sources where try derive(t.range, of: blob, kind: kind, from: source, &report) {
                        break
                    }
                } else {
                    // An fp32 tensor: 16-bit tensors scanned before it that may be its casts `kind`.
                    let targets = try catalog.read { try $0.tensorTargets(print: print, excluding: blob.id, limit: Self.castCandidates) }
                    let values = (t.range.upperBound - t.range.lowerBound) / 4
                    for target in targets where target.offset >= 0 && target.offset <= target.blob.size && values <= target.blob.size / 2 {
                        let range = target.offset..<(target.offset + 2 * values)
                        _ = try derive(
                            range, of: target.blob, kind: kind, from: TensorSource(blob: blob, offset: t.range.lowerBound), &report)
                    }
                }
            }
            try catalog.write { try $0.markScannedForCasts(blob: blob.id) }
            report.blobsScanned += 1
        }
    }

    /// `deriveTensor`, with a failure (a candidate that cannot be read) counted, not thrown;
    /// true when chunks were recorded.
    private func derive(
        _ range: Range<Int64>, of blob: BlobRecord, kind: CastKind, from source: TensorSource, _ report: inout CastReport
    ) throws -> Bool {
        do {
            let (chunks, bytes) = try deriveTensor(range, of: blob, kind: kind, from: source)
            guard chunks > 0 else { return false }
            report.tensorsMatched += 1
            report.chunksDerived += chunks
            report.bytesDerived += bytes
            return true
        } catch let e as DepotError {
            // A storage failure (disk full, catalog unreachable) stops the pass; damage skips one.
            if case .storage = e { throw e }
            report.failed("\(blob.digest) from \(source.blob.digest): \(e)")
            return false
        }
    }

    /// The first and last `TensorPrint.elements` values of `t` (`width` bytes each).
    private func ends(of t: TensorExtent, in blob: BlobRecord, width: Int) throws -> [UInt8] {
        let n = Int64(TensorPrint.elements * width)
        let head = try bytes(of: blob, t.range.lowerBound..<(t.range.lowerBound + n))
        return head + (try bytes(of: blob, (t.range.upperBound - n)..<t.range.upperBound))
    }

    /// The tensors of `blob` that can take part in casts: fp32, fp16 or bf16, at least
    /// `minCastValues` values, whole values, inside the blob. The layout reader's answer is not
    /// trusted further than that; one that finds the blob is not its format (`invalidArgument`)
    /// gives none, any other failure is thrown.
    private func castTensors(of blob: BlobRecord, layout: any TensorLayoutReader) throws -> [TensorExtent] {
        let tensors: [TensorExtent]?
        do {
            tensors = try layout.tensors(size: blob.size) { range in try bytes(of: blob, range) }
        } catch DepotError.invalidArgument {
            return []
        }
        return (tensors ?? []).filter { t in
            let width: Int64
            switch t.element {
            case .float32: width = 4
            case .float16, .bfloat16: width = 2
            case .other: return false
            }
            guard t.range.lowerBound >= 0, t.range.upperBound <= blob.size else { return false }
            let length = t.range.upperBound - t.range.lowerBound
            return length % width == 0 && length / width >= Int64(Self.minCastValues)
        }
    }

    /// Bytes `range` of a stored blob (small reads: headers, the first values of a tensor).
    private func bytes(of blob: BlobRecord, _ range: Range<Int64>) throws -> [UInt8] {
        guard range.lowerBound >= 0, range.upperBound <= blob.size, range.upperBound - range.lowerBound <= 64 << 20 else {
            throw DepotError.invalidArgument("range \(range) is outside blob \(blob.digest) or too large")
        }
        var out: [UInt8] = []
        out.reserveCapacity(range.count)
        try BlobReader<[UInt8]>(store: self, blob: blob, range: range).forEach { out += $0 }
        return out
    }

    /// Compares the chunks of the 16-bit tensor at `range` of `blob` with the cast of the fp32
    /// tensor at `source`, recording each chunk that matches as a cast. Returns (chunks, raw bytes)
    /// recorded. Chunks under `minCastChunk` bytes are left as they are (a cast's rows would cost
    /// more than their record).
    private func deriveTensor(_ range: Range<Int64>, of blob: BlobRecord, kind: CastKind, from source: TensorSource) throws -> (Int, Int64)
    {
        guard range.lowerBound >= 0, range.upperBound <= blob.size else { return (0, 0) }
        let values = (range.upperBound - range.lowerBound) / 2
        guard source.offset >= 0, source.offset <= source.blob.size, values <= (source.blob.size - source.offset) / 4 else { return (0, 0) }
        let sourceRange = source.offset..<(source.offset + 4 * values)
        // The tensor's chunks: entries wholly inside it that are plain chunks now.
        var entries: [RecipeEntry] = []
        var cursor = try catalog.read { try $0.recipeStart(blob: blob.id, containing: range.lowerBound) } ?? 0
        scan: while true {
            let page = try catalog.read { try $0.recipe(blob: blob.id, from: cursor, limit: 512) }
            for e in page {
                if e.offset >= range.upperBound { break scan }
                if e.offset >= range.lowerBound && e.offset + Int64(e.length) <= range.upperBound && e.length >= Self.minCastChunk {
                    entries.append(e)
                }
            }
            guard let last = page.last, page.count == 512 else { break }
            cursor = last.offset + 1
        }
        let plain = try catalog.read { conn in try entries.filter { try conn.chunkLocation($0.hash) != nil } }
        guard !plain.isEmpty else { return (0, 0) }
        var window = ByteWindow(reader: BlobReader<[UInt8]>(store: self, blob: source.blob, range: sourceRange))
        var sources = RecipeCursor(store: self, blob: source.blob.id)
        var found: [(SHA256.Value, CastRecord)] = []
        var recorded = 0
        var bytes: Int64 = 0
        var misses = 0
        var cast: [UInt8] = []
        func record() throws {
            guard !found.isEmpty else { return }
            let now = PackAppender.now()
            try catalog.write { conn in
                try conn.lockCasts()
                for (hash, record) in found where try conn.recordCast(hash, record, now: now) == nil {
                    recorded += 1
                    bytes += Int64(record.rawLength)
                }
            }
            found.removeAll(keepingCapacity: true)
        }
        for e in plain {
            let r0 = e.offset - range.lowerBound
            let skip = Int(r0 % 2)
            let first = r0 / 2
            let count = (skip + e.length + 1) / 2
            let input = try window.bytes(4 * first, 4 * count)
            if cast.count < 2 * count { cast = [UInt8](repeating: 0, count: 2 * count) }
            let hash = input.withUnsafeBytes { s in
                cast.withUnsafeMutableBytes { out -> SHA256.Value in
                    kind.cast(s, count: count, into: out)
                    return SHA256.hash(UnsafeRawBufferPointer(rebasing: out[skip..<(skip + e.length)]))
                }
            }
            guard hash == e.hash else {
                // Not a cast of this tensor (a print collision, or a fine-tuned copy): give up early
                // when nothing matched at all.
                misses += 1
                if recorded == 0 && found.isEmpty && misses >= 8 { return (0, 0) }
                continue
            }
            let start = sourceRange.lowerBound + 4 * first
            guard let (hashes, offset) = try sources.chunks(covering: start..<(start + Int64(4 * count))),
                hashes.count <= Self.maxCastSources
            else { continue }
            found.append((e.hash, CastRecord(kind: kind.rawValue, rawLength: e.length, skip: skip, sourceOffset: offset, sources: hashes)))
            // Small batches: on PostgreSQL each holds the sweep lock, which writers' commits wait for.
            if found.count == 32 { try record() }
        }
        try record()
        return (recorded, bytes)
    }

    // MARK: making casts plain again

    /// Stores as plain chunks again the casts whose fp32 source no recipe names any more (its
    /// file was deleted): otherwise the cast would keep the whole fp32 source alive, twice its own
    /// size. Each is decoded, compressed and appended like any chunk; its cast rows go once the
    /// record is committed. Returns how many; GC then sweeps the sources.
    func materializeCasts(_ report: inout GCReport) throws {
        var after: SHA256.Value?
        var done: [SHA256.Value] = []
        while true {
            let hashes = try catalog.read { try $0.castsWithUnreferencedSources(after: after, limit: 256) }
            guard let last = hashes.last else { break }
            after = last
            for hash in hashes {
                guard let cast = try catalog.read({ try $0.chunkCast(hash) }) else { continue }
                let bytes: [UInt8]
                do {
                    bytes = try decodeCast(hash, cast)
                } catch DepotError.integrity(let why) {
                    // Undecodable (damage): left for `depot fsck` to name, never a reason to stop GC.
                    report.damagedChunks.append(
                        GCDamage(chunk: "sha256:" + hash.hex, pack: 0, reason: "\(why); a cast chunk, left in place, run `depot fsck`"))
                    continue
                }
                // Failing to write (disk full, the object store) stops GC, as in compaction.
                try compressors.with { c in
                    try bytes.withUnsafeBytes { raw in
                        try c.encode(raw, policy: options.compression, elementWidth: 2) { codec, payload in
                            try appender.appendUnrecorded(hash, codec: codec, rawLength: raw.count, payload: payload)
                        }
                    }
                }
                done.append(hash)
            }
        }
        guard !done.isEmpty else { return }
        // One commit for all (in S3 mode a commit uploads and seals the current pack: one per page
        // would leave small packs), then the cast rows of those now plain.
        try appender.checkpoint()
        for start in stride(from: 0, to: done.count, by: 256) {
            let group = done[start..<min(done.count, start + 256)]
            report.castChunksMaterialized += try catalog.write { conn -> Int in
                try conn.lockCasts()
                return try group.filter { try conn.dropCastNowPlain($0) }.count
            }
        }
    }
}

/// A forward-only window over a blob range: bytes are asked for at non-decreasing offsets.
private struct ByteWindow {
    let reader: BlobReader<[UInt8]>
    var buffer: [UInt8] = []
    /// Offset (relative to the reader's range) of `buffer[0]`.
    var base: Int64 = 0

    init(reader: BlobReader<[UInt8]>) { self.reader = reader }

    mutating func bytes(_ from: Int64, _ count: Int) throws -> ArraySlice<UInt8> {
        // Recipe entries come in offset order; anything else is a damaged recipe, not a crash.
        guard from >= base else { throw DepotError.integrity("blob \(reader.blob.digest): recipe entries out of order at \(from)") }
        // Drop what was read before `from` once it is most of the buffer (amortized copies).
        let consumed = Int(min(from - base, Int64(buffer.count)))
        if consumed > 0 && consumed >= buffer.count / 2 {
            buffer.removeFirst(consumed)
            base += Int64(consumed)
        }
        while base + Int64(buffer.count) < from + Int64(count) {
            guard let more = try reader.next() else {
                throw DepotError.integrity("blob \(reader.blob.digest) ended before offset \(from + Int64(count))")
            }
            let gap = from - base - Int64(buffer.count)
            if gap > 0 {
                // The buffer is empty here (dropped above): skip the batch's bytes before `from`.
                let skip = Int(min(gap, Int64(more.count)))
                base += Int64(buffer.count + skip)
                buffer = Array(more[skip...])
            } else {
                buffer += more
            }
        }
        let at = Int(from - base)
        return buffer[at..<(at + count)]
    }
}

/// A forward-only walk over a blob's recipe: the chunks that cover a byte range.
private struct RecipeCursor {
    let store: ChunkStore
    let blob: Int64
    var entries: [RecipeEntry] = []
    var next: Int64 = 0
    var done = false

    init(store: ChunkStore, blob: Int64) {
        self.store = store
        self.blob = blob
    }

    /// The hashes of the entries covering `range` and where `range` starts in the first; nil if
    /// the recipe does not cover it. Ranges must come in non-decreasing order.
    mutating func chunks(covering range: Range<Int64>) throws -> ([SHA256.Value], Int)? {
        entries.removeAll { $0.offset + Int64($0.length) <= range.lowerBound }
        if entries.isEmpty && next < range.lowerBound {
            next = try store.catalog.read { try $0.recipeStart(blob: blob, containing: range.lowerBound) } ?? next
        }
        while !done && (entries.last.map { $0.offset + Int64($0.length) < range.upperBound } ?? true) {
            let page = try store.catalog.read { try $0.recipe(blob: blob, from: next, limit: 512) }
            entries += page.filter { $0.offset + Int64($0.length) > range.lowerBound }
            if let last = page.last { next = last.offset + 1 }
            if page.count < 512 { done = true }
        }
        guard let first = entries.first, first.offset <= range.lowerBound else { return nil }
        var hashes: [SHA256.Value] = []
        var end = first.offset
        for e in entries where e.offset < range.upperBound {
            guard e.offset == end else { return nil }
            hashes.append(e.hash)
            end += Int64(e.length)
        }
        guard end >= range.upperBound else { return nil }
        return (hashes, Int(range.lowerBound - first.offset))
    }
}

/// A small LRU of decoded source chunks, shared by the threads that decode cast chunks. Entries
/// were verified when read (CRC-32C, and SHA-256 when so configured); every cast decoded from
/// them is checked against its own hash anyway.
final class CastSourceCache: Sendable {
    private struct State {
        var entries: [SHA256.Value: (bytes: [UInt8], used: UInt64)] = [:]
        var bytes = 0
        var clock: UInt64 = 0
    }
    private let state = Locked(State())
    let capacityBytes: Int

    init(capacityBytes: Int) { self.capacityBytes = capacityBytes }

    func get(_ hash: SHA256.Value) -> [UInt8]? {
        state.withLock { s in
            guard let e = s.entries[hash] else { return nil }
            s.clock += 1
            s.entries[hash] = (e.bytes, s.clock)
            return e.bytes
        }
    }

    /// Entries at most, whatever their size: bounds the eviction scan (under the lock every cast
    /// read takes) and the per-entry overhead, which tiny chunks would otherwise multiply.
    static let maxEntries = 64
    /// Sources smaller than this are not kept (cheap to read again; many would crowd the cache).
    static let minBytes = 4 << 10

    func put(_ hash: SHA256.Value, _ bytes: [UInt8]) {
        guard bytes.count >= Self.minBytes, bytes.count <= capacityBytes / 4 else { return }
        state.withLock { s in
            guard s.entries[hash] == nil else { return }
            // Evict the least recently used until it fits (at most 64 entries: a scan is cheap).
            while s.bytes + bytes.count > capacityBytes || s.entries.count >= Self.maxEntries,
                let oldest = s.entries.min(by: { $0.value.used < $1.value.used })
            {
                s.bytes -= oldest.value.bytes.count
                s.entries[oldest.key] = nil
            }
            s.clock += 1
            s.entries[hash] = (bytes, s.clock)
            s.bytes += bytes.count
        }
    }
}
