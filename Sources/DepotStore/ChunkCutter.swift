import DepotCore

/// Cuts a byte stream into chunks: content-defined boundaries from the `Chunker`, plus the
/// forced boundaries of an optional `BoundaryPlanner` (e.g. safetensors tensor starts).
/// The store's writer and the client use this same code, so both cut identical chunks.
public struct ChunkCutter {
    private var chunker: Chunker
    public private(set) var planner: (any BoundaryPlanner)?
    private var nextForced: Int64?
    private var cuts: [Int] = []
    /// Bytes fed so far.
    public private(set) var position: Int64 = 0
    /// Offset of the first byte of the chunk being cut.
    private var chunkStart: Int64 = 0

    /// A cutter whose first byte is at `position` of the stream, at a chunk boundary (a writer
    /// resumed where an earlier one committed its last chunk).
    public init(_ parameters: ChunkerParameters, planner: (any BoundaryPlanner)?, position: Int64 = 0) {
        chunker = Chunker(parameters)
        self.planner = planner
        self.position = position
        chunkStart = position
    }

    /// The chunker's parameters version, without the planner's tag.
    public var parametersVersion: String { chunker.parameters.version }

    /// The recipe's chunker version: the parameters plus the planner's tag when it cut.
    public var version: String {
        var v = chunker.parameters.version
        if let tag = planner?.tag { v += "+" + tag }
        return v
    }

    /// Feeds the next bytes. `piece(bytes, width)` receives consecutive pieces of the stream;
    /// a chunk is the concatenation of pieces up to one with a non-nil `width` (the planner's
    /// element-width hint for that chunk). A piece may be empty when a forced boundary ends
    /// the pending chunk.
    public mutating func feed(
        _ bytes: UnsafeRawBufferPointer,
        _ piece: (UnsafeRawBufferPointer, _ endsChunkWithWidth: Int?) throws -> Void
    ) rethrows {
        guard bytes.count > 0 else { return }
        if planner != nil {
            planner!.observe(bytes, at: position)
            nextForced = planner!.nextBoundary(atOrAfter: position)
        }
        var rest = bytes
        var at = position
        while !rest.isEmpty {
            if let f = nextForced, f == at {
                if chunker.cut() {
                    try piece(UnsafeRawBufferPointer(rebasing: rest[0..<0]), width(at: chunkStart))
                    chunkStart = at
                }
                nextForced = planner?.nextBoundary(atOrAfter: at + 1)
                continue
            }
            var take = rest.count
            if let f = nextForced, f > at, f - at < Int64(take) { take = Int(f - at) }
            let segment = UnsafeRawBufferPointer(rebasing: rest[0..<take])
            cuts.removeAll(keepingCapacity: true)
            chunker.scan(segment, cuts: &cuts)
            var previous = 0
            for cut in cuts {
                try piece(UnsafeRawBufferPointer(rebasing: segment[previous..<cut]), width(at: chunkStart))
                chunkStart = at + Int64(cut)
                previous = cut
            }
            if previous < segment.count { try piece(UnsafeRawBufferPointer(rebasing: segment[previous...]), nil) }
            at += Int64(take)
            rest = UnsafeRawBufferPointer(rebasing: rest[take...])
        }
        position = at
        if let f = nextForced, f == at {
            if chunker.cut() {
                try piece(UnsafeRawBufferPointer(rebasing: bytes[bytes.count...]), width(at: chunkStart))
                chunkStart = at
            }
            nextForced = planner?.nextBoundary(atOrAfter: at + 1)
        }
    }

    /// Ends the stream: the final chunk's width hint when one is pending (the caller ends it).
    public mutating func finish() -> Int? { chunker.cut() ? width(at: chunkStart) : nil }

    private func width(at offset: Int64) -> Int { planner?.elementWidth(at: offset) ?? 1 }
}
