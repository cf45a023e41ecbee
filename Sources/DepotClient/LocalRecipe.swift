import DepotCore
import DepotFormats
import DepotStore
import Dispatch
import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// A local file cut into chunks exactly as the registry's store would cut it.
public struct LocalRecipe: Sendable {
    public var path: String
    public var size: Int64
    public var digest: Digest
    public var chunks: [ChunkRef]
    /// Element-width hint per chunk (for the byte-plane codecs).
    var widths: [UInt8]
    /// The chunker version recorded with the recipe.
    public var chunker: String
    /// Modification time and size when read, to detect a file changing during a push.
    var stamp: FileStamp
    /// The whole-file SHA-256 states at every stride (nil for a file of one stride or less):
    /// sent with the recipe so the server checks the digest in parallel segments.
    public var hashStates: BlobHashStates?

    /// Reads the file once, in two stages that overlap on two cores: this thread reads a block
    /// and cuts it into chunks (only the boundaries) while a hashing thread computes the previous
    /// block's whole-file and chunk SHA-256s together, two streams at a time (`SHA256Lanes`), so
    /// the two hashes cost about what one did. No chunk is copied. `progress` receives bytes
    /// read. With `onGroup`, the chunks hashed so far are handed over about every `groupBytes`
    /// (and the rest at the end), so a push can negotiate and upload them while the file is
    /// still being read.
    public static func compute(
        path: String, parameters: ChunkerParameters, groupBytes: Int64 = 64 << 20, onGroup: ((RecipeGroup) -> Void)? = nil,
        isCancelled: () -> Bool = { Task.isCancelled }, progress: (Int) -> Void = { _ in }
    ) throws -> LocalRecipe {
        let stamp = try FileStamp(path)
        let file = try PosixFile(path: path, mode: .read)
        var cutter = ChunkCutter(parameters, planner: ModelFileBoundaryPlanner())
        var chunks: [ChunkRef] = []
        var widths: [UInt8] = []
        chunks.reserveCapacity(Int(stamp.size / Int64(parameters.averageSize)) + 16)
        let blockSize = 8 << 20
        // Two blocks: one being cut while the other is hashed.
        let blocks = [
            UnsafeMutableRawBufferPointer.allocate(byteCount: blockSize, alignment: 64),
            UnsafeMutableRawBufferPointer.allocate(byteCount: blockSize, alignment: 64),
        ]
        let hashing = DispatchQueue(label: "depot.client.hash")
        let state = RecipeHashState(size: stamp.size)
        var pending: DispatchGroup?
        defer {
            pending?.wait() // the hashing thread may still read a block
            for b in blocks { b.deallocate() }
        }
        var offset: Int64 = 0
        var handedOver = 0
        var groupStart: Int64 = 0
        var hashedThrough: Int64 = 0 // the end of the blocks whose chunks are in `chunks`
        var pendingEnd: Int64 = 0 // the end of the block being hashed
        func handOver(_ end: Int) {
            guard let onGroup, end > handedOver else { return }
            let group = RecipeGroup(
                first: handedOver, start: groupStart, chunks: Array(chunks[handedOver..<end]), widths: Array(widths[handedOver..<end]))
            groupStart += group.chunks.reduce(Int64(0)) { $0 + Int64($1.length) }
            handedOver = end
            onGroup(group)
        }
        // Waits for the block being hashed and takes the chunks it completed.
        func collect() {
            guard let p = pending else { return }
            p.wait()
            pending = nil
            for (chunk, width) in state.finished {
                chunks.append(chunk)
                widths.append(width)
            }
            hashedThrough = pendingEnd
            state.finished.removeAll(keepingCapacity: true)
        }
        var which = 0
        while true {
            if isCancelled() { throw CancellationError() }
            let n = try file.readSome(into: blocks[which])
            if n == 0 { break }
            let block = UnsafeSendableBytes(UnsafeRawBufferPointer(rebasing: blocks[which][0..<n]))
            var pieces: [RecipeHashState.Piece] = []
            cutter.feed(block.bytes) { piece, width in pieces.append(.init(count: piece.count, width: width.map(UInt8.init))) }
            collect()
            // Measured by blocks hashed, not by chunks completed: the chunk still open at a
            // block's end must not hold a group back a whole block more.
            if hashedThrough - groupStart >= groupBytes { handOver(chunks.count) }
            let task = DispatchGroup()
            let cut = pieces
            hashing.async(group: task) { state.hash(block.bytes, cut) }
            pending = task
            which ^= 1
            offset += Int64(n)
            pendingEnd = offset
            progress(n)
        }
        collect()
        if let width = cutter.finish() {
            chunks.append(ChunkRef(hash: state.chunk.finalize(), length: state.chunkLength))
            widths.append(UInt8(width))
        }
        handOver(chunks.count)
        guard offset == stamp.size, try FileStamp(path) == stamp else {
            throw ClientError("\(path) changed while it was being read; push it again once it is complete")
        }
        return LocalRecipe(
            path: path, size: offset, digest: Digest(bytes: state.whole.finalize()), chunks: chunks,
            widths: widths, chunker: cutter.version, stamp: stamp,
            hashStates: state.stride.map { BlobHashStates(stride: $0, states: state.states) })
    }

    /// Offsets of the chunks.
    var offsets: [Int64] {
        var out = [Int64]()
        var at: Int64 = 0
        out.reserveCapacity(chunks.count)
        for c in chunks {
            out.append(at)
            at += Int64(c.length)
        }
        return out
    }
}

/// Consecutive chunks of a recipe being computed: the `first` chunk's index and its offset
/// (`start`) in the file.
public struct RecipeGroup: Sendable {
    public var first: Int
    public var start: Int64
    public var chunks: [ChunkRef]
    var widths: [UInt8]

    /// The offset of each chunk in the file.
    var offsets: [Int64] {
        var out = [Int64]()
        out.reserveCapacity(chunks.count)
        var at = start
        for c in chunks {
            out.append(at)
            at += Int64(c.length)
        }
        return out
    }
}

/// The hashing stage of `LocalRecipe.compute`: the whole-file and current-chunk hashes, and the
/// chunks completed since the cutting thread last took them. Used by one block's task at a time;
/// the cutting thread reads it only after waiting for that task (the wait orders the accesses).
final class RecipeHashState: @unchecked Sendable {
    /// A piece of a block as the cutter gave it: its length, and the chunk's width hint when the
    /// piece ends a chunk. A block's pieces cover it in order.
    struct Piece: Sendable {
        var count: Int
        var width: UInt8?
    }

    var whole = ResumableSHA256()
    var chunk = ResumableSHA256()
    var chunkLength = 0
    var finished: [(ChunkRef, UInt8)] = []
    /// `BlobHashStates`: the stride, the states so far, and where the next one is taken.
    let stride: Int64?
    var states: [SHA256.Value] = []
    private var hashed: Int64 = 0
    private var nextBoundary: Int64?
    private let size: Int64

    init(size: Int64) {
        self.size = size
        // DEPOT_HASH_STATES=0 leaves them out (benchmarks compare the server's check both ways).
        let off = ProcessInfo.processInfo.environment["DEPOT_HASH_STATES"] == "0"
        stride = off ? nil : BlobHashStates.stride(forSize: size)
        nextBoundary = stride
    }

    func hash(_ block: UnsafeRawBufferPointer, _ pieces: [Piece]) {
        var at = 0
        for piece in pieces {
            var bytes = UnsafeRawBufferPointer(rebasing: block[at..<(at + piece.count)])
            // The whole-file state at each stride boundary inside the file.
            while let boundary = nextBoundary, let stride, hashed + Int64(bytes.count) >= boundary {
                let head = UnsafeRawBufferPointer(rebasing: bytes[..<Int(boundary - hashed)])
                SHA256Lanes.update(&whole, head, &chunk, head)
                hashed = boundary
                states.append(whole.midstate)
                bytes = UnsafeRawBufferPointer(rebasing: bytes[head.count...])
                nextBoundary = boundary + stride < size ? boundary + stride : nil
            }
            SHA256Lanes.update(&whole, bytes, &chunk, bytes)
            hashed += Int64(bytes.count)
            chunkLength += piece.count
            at += piece.count
            if let width = piece.width {
                finished.append((ChunkRef(hash: chunk.finalize(), length: chunkLength), width))
                chunk = ResumableSHA256()
                chunkLength = 0
            }
        }
        precondition(at == block.count, "the cutter's pieces cover the block")
    }
}

/// Size and modification time of a file.
struct FileStamp: Equatable, Sendable {
    var size: Int64
    var modified: Int64
    var modifiedNanos: Int64

    init(_ path: String) throws {
        var st = stat()
        guard stat(path, &st) == 0 else { throw ClientError("cannot read \(path): \(String(cString: strerror(errno)))") }
        guard (st.st_mode & S_IFMT) == S_IFREG else { throw ClientError("\(path) is not a regular file") }
        size = Int64(st.st_size)
        modified = Int64(st.st_mtim.tv_sec)
        modifiedNanos = Int64(st.st_mtim.tv_nsec)
    }
}
