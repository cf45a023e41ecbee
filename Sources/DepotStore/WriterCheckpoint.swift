import DepotCore

/// Where a `BlobWriter` stopped, so that another writer, in any process that shares the catalog
/// and the packs, goes on from there (a chunked upload whose PATCH requests land on different
/// replicas). The chunks cut so far are committed in the catalog as the recipe of one or more
/// unfinished *segment* blobs; what the checkpoint carries is the rest of the writer's state:
/// the whole-blob SHA-256 midstate, the bytes after the last chunk boundary (at most one chunk,
/// < the chunker's maximum size), and the counts for the final `WriteResult`.
///
/// Resuming replays the tail through a fresh chunker, whose state after a boundary depends only
/// on the bytes since that boundary, so the blob is cut exactly as one uninterrupted stream
/// would be: the same chunks, the same dedup, however the client split its requests.
///
/// Byte layout (version 2, integers little-endian):
///
///     offset size
///          0    4  magic "DWC2"
///          4    8  position: bytes written (Int64)
///         12   40  chunks, newChunks, newBytes, reusedBytes, storedBytes (5 × Int64)
///         52    2  n: chunker parameters version, UTF-8 (UInt16 length)
///       54+n    2  m: hash state (`ResumableSHA256.saved`) length (UInt16)
///     56+n+m    4  t: tail length (UInt32), then the tail's t bytes
///   60+n+m+t    2  p: boundary planner state (`BoundaryPlanner.savedState`) length (UInt16),
///                  then its p bytes (written only when there is state; 0 is read as none)
///
/// Version 1 ("DWC1") is the same without the planner state: written when there is none (every
/// upload that is not an ONNX model, and every one before 2026-12-05), so that older builds
/// still resume them; such an upload's planner replays the stored bytes. An older build refuses
/// a version 2 checkpoint ("start the upload over"): a chunked ONNX upload that straddles an
/// upgrade or a rollback starts over.
public struct WriterCheckpoint: Sendable, Equatable {
    public var position: Int64
    public var chunks = 0, newChunks = 0
    public var newBytes: Int64 = 0, reusedBytes: Int64 = 0, storedBytes: Int64 = 0
    public var chunker: String
    public var hash: [UInt8]
    public var tail: [UInt8]
    /// The boundary planner's state (empty: none; the planner replays the stored bytes).
    public var plannerState: [UInt8] = []

    /// Bytes covered by committed recipe rows: everything before the tail.
    public var committed: Int64 { position - Int64(tail.count) }

    static let magic: [UInt8] = Array("DWC2".utf8)
    static let magicVersion1: [UInt8] = Array("DWC1".utf8)
    /// A bound for decoding hostile bytes: planners save a few dozen.
    static let maxPlannerState = 4096
    /// Far above any chunker's maximum chunk size; a bound for decoding hostile bytes.
    static let maxTail = 16 << 20

    public init(position: Int64, chunker: String, hash: [UInt8], tail: [UInt8]) {
        self.position = position
        self.chunker = chunker
        self.hash = hash
        self.tail = tail
    }

    /// Version 2 only when there is planner state, so that builds from before it can still
    /// resume every other upload (a rolling upgrade or a rollback).
    public func encoded() -> [UInt8] {
        var out = plannerState.isEmpty ? Self.magicVersion1 : Self.magic
        func i64(_ v: Int64) { withUnsafeBytes(of: v.littleEndian) { out.append(contentsOf: $0) } }
        i64(position)
        for v in [Int64(chunks), Int64(newChunks), newBytes, reusedBytes, storedBytes] { i64(v) }
        let name = Array(chunker.utf8)
        withUnsafeBytes(of: UInt16(name.count).littleEndian) { out.append(contentsOf: $0) }
        out += name
        withUnsafeBytes(of: UInt16(hash.count).littleEndian) { out.append(contentsOf: $0) }
        out += hash
        withUnsafeBytes(of: UInt32(tail.count).littleEndian) { out.append(contentsOf: $0) }
        out += tail
        if !plannerState.isEmpty {
            precondition(plannerState.count <= Self.maxPlannerState, "a planner saved \(plannerState.count) bytes")
            withUnsafeBytes(of: UInt16(plannerState.count).littleEndian) { out.append(contentsOf: $0) }
            out += plannerState
        }
        return out
    }

    /// Decodes `bytes`, checking every length against what is left and every count for sense.
    public init(decoding bytes: [UInt8]) throws {
        var at = 0
        func take(_ n: Int) throws -> ArraySlice<UInt8> {
            guard n >= 0, n <= bytes.count - at else { throw DepotError.integrity("writer checkpoint is truncated") }
            defer { at += n }
            return bytes[at..<(at + n)]
        }
        func int(_ n: Int) throws -> UInt64 {
            var v: UInt64 = 0
            for (i, b) in try take(n).enumerated() { v |= UInt64(b) << (8 * UInt64(i)) }
            return v
        }
        let magic = Array(try take(4))
        guard magic == Self.magic || magic == Self.magicVersion1 else {
            throw DepotError.integrity("not a writer checkpoint (version 1 or 2)")
        }
        position = Int64(bitPattern: try int(8))
        let counts = try (0..<5).map { _ in Int64(bitPattern: try int(8)) }
        guard position >= 0, counts.allSatisfy({ $0 >= 0 }), counts[0] < Int64(Int.max), counts[1] <= counts[0] else {
            throw DepotError.integrity("writer checkpoint has a negative count")
        }
        chunks = Int(counts[0])
        newChunks = Int(counts[1])
        newBytes = counts[2]
        reusedBytes = counts[3]
        storedBytes = counts[4]
        guard let name = String(validating: Array(try take(Int(try int(2)))), as: UTF8.self) else {
            throw DepotError.integrity("writer checkpoint's chunker version is not UTF-8")
        }
        chunker = name
        hash = Array(try take(Int(try int(2))))
        let tailLength = Int(try int(4))
        guard tailLength <= Self.maxTail, Int64(tailLength) <= position else {
            throw DepotError.integrity("writer checkpoint's tail is too long")
        }
        tail = Array(try take(tailLength))
        if magic == Self.magic {
            let n = Int(try int(2))
            guard n <= Self.maxPlannerState else { throw DepotError.integrity("writer checkpoint's planner state is too long") }
            plannerState = Array(try take(n))
        }
        guard at == bytes.count else { throw DepotError.integrity("writer checkpoint has trailing bytes") }
    }
}

/// A committed part of a resumed blob: an unfinished blob whose recipe covers `range` of the
/// whole (absolute offsets). The final writer adopts these recipe rows when it finishes.
public struct PriorSegment: Sendable, Equatable {
    public var blobID: Int64
    public var range: Range<Int64>

    public init(blobID: Int64, range: Range<Int64>) {
        self.blobID = blobID
        self.range = range
    }
}
