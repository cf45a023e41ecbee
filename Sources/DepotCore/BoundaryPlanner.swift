/// Supplies format-aware chunk boundaries while a blob streams through the chunker.
///
/// The writer shows the planner every buffer (in order) before chunking it, then asks for
/// the next forced boundary. A planner for safetensors, say, parses the header from the
/// first bytes and answers with the start offset of every tensor, so tensors dedup intact
/// after header edits or reordering. Between forced boundaries the chunker cuts by content.
public protocol BoundaryPlanner: Sendable {
    /// Observes `bytes`, which start at absolute offset `offset` of the stream.
    mutating func observe(_ bytes: UnsafeRawBufferPointer, at offset: Int64)
    /// The smallest forced boundary `>= offset`, if one is known.
    func nextBoundary(atOrAfter offset: Int64) -> Int64?
    /// Element width in bytes of the data at `offset` (4 for fp32, 2 for fp16/bf16, 1 when unknown),
    /// a hint for the byte-plane compression codecs.
    func elementWidth(at offset: Int64) -> Int
    /// A short tag recorded with the recipe's chunker version (e.g. `safetensors`), nil if inactive.
    var tag: String? { get }
    /// Whether it still reads the stream's first bytes (a header). A writer resumed in another
    /// process replays the stored bytes of the blob into a fresh planner until this is false.
    var wantsBytes: Bool { get }
}
