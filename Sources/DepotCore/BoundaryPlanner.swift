/// Supplies format-aware chunk boundaries while a blob streams through the chunker.
///
/// The writer shows the planner every buffer (in order) before chunking it, then asks for
/// the next forced boundary. A planner for safetensors, say, parses the header from the
/// first bytes and answers with the start offset of every tensor, so tensors dedup intact
/// after header edits or reordering. Between forced boundaries the chunker cuts by content.
///
/// A boundary must depend only on the bytes before it was reported, never on how the stream
/// was split into buffers: the registry and the client cut the same file alike, and an upload
/// resumed in another process cuts as one stream would.
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
    /// Whether a writer resumed in another process must replay the stored bytes of the blob,
    /// from its start, into a fresh planner (after `restore`) for it to answer as after one
    /// stream: true while it still reads a header, say. Replay stops as soon as this is false.
    var wantsBytes: Bool { get }
    /// The planner's state for a writer checkpoint, when replaying would cost too much: taken
    /// after every byte written so far was observed, for a resumed writer whose chunks start
    /// at `committed` (it re-feeds the bytes from there; a restored planner ignores bytes it
    /// has seen). Nil (the default) when the planner has none and relies on replay.
    func savedState(committed: Int64) -> [UInt8]?
    /// Restores what `savedState` returned (read back from the catalog: checked, never
    /// trusted); throws `DepotError.invalidArgument` on bytes it cannot have written (the
    /// upload then starts over: not damage in the store).
    mutating func restore(_ state: [UInt8]) throws
}

extension BoundaryPlanner {
    public func savedState(committed: Int64) -> [UInt8]? { nil }
    public mutating func restore(_ state: [UInt8]) throws {
        throw DepotError.invalidArgument("this upload's saved chunking state is for another planner; start the upload over")
    }
}
