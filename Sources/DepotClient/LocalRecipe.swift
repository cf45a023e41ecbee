import DepotCore
import DepotFormats
import DepotStore
import Dispatch

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

    /// Reads the file once: whole-file SHA-256 on one core while this thread cuts chunks and
    /// hashes each (no chunk is copied). `progress` receives bytes read. With `onGroup`, the
    /// chunks cut so far are handed over about every `groupBytes` (and the rest at the end), so a
    /// push can negotiate and upload them while the file is still being read.
    public static func compute(
        path: String, parameters: ChunkerParameters, groupBytes: Int64 = 64 << 20, onGroup: ((RecipeGroup) -> Void)? = nil,
        isCancelled: () -> Bool = { Task.isCancelled }, progress: (Int) -> Void = { _ in }
    ) throws -> LocalRecipe {
        let stamp = try FileStamp(path)
        let file = try PosixFile(path: path, mode: .read)
        var cutter = ChunkCutter(parameters, planner: SafetensorsBoundaryPlanner())
        var chunkHash = SHA256()
        var chunkLength = 0
        var chunks: [ChunkRef] = []
        var widths: [UInt8] = []
        chunks.reserveCapacity(Int(stamp.size / Int64(parameters.averageSize)) + 16)
        let blockSize = 8 << 20
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: blockSize, alignment: 64)
        defer { buffer.deallocate() }
        let hashing = DispatchQueue(label: "depot.client.hash")
        let wholeBox = UnsafeSendableBox(whole: SHA256())
        var offset: Int64 = 0
        var handedOver = 0
        var groupStart: Int64 = 0
        func handOver(_ end: Int) {
            guard let onGroup, end > handedOver else { return }
            let group = RecipeGroup(
                first: handedOver, start: groupStart, chunks: Array(chunks[handedOver..<end]), widths: Array(widths[handedOver..<end]))
            groupStart += group.chunks.reduce(Int64(0)) { $0 + Int64($1.length) }
            handedOver = end
            onGroup(group)
        }
        while true {
            if isCancelled() { throw CancellationError() }
            let n = try file.readSome(into: buffer)
            if n == 0 { break }
            let block = UnsafeSendableBytes(UnsafeRawBufferPointer(rebasing: buffer[0..<n]))
            let done = DispatchGroup()
            hashing.async(group: done) { wholeBox.whole.update(block.bytes) }
            cutter.feed(block.bytes) { piece, width in
                if piece.count > 0 { chunkHash.update(piece) }
                chunkLength += piece.count
                if let width {
                    chunks.append(ChunkRef(hash: chunkHash.finalize(), length: chunkLength))
                    widths.append(UInt8(width))
                    chunkHash = SHA256()
                    chunkLength = 0
                }
            }
            done.wait()
            offset += Int64(n)
            progress(n)
            if offset - groupStart - Int64(chunkLength) >= groupBytes { handOver(chunks.count) }
        }
        if let width = cutter.finish() {
            chunks.append(ChunkRef(hash: chunkHash.finalize(), length: chunkLength))
            widths.append(UInt8(width))
        }
        handOver(chunks.count)
        guard offset == stamp.size, try FileStamp(path) == stamp else {
            throw ClientError("\(path) changed while it was being read; push it again once it is complete")
        }
        return LocalRecipe(
            path: path, size: offset, digest: Digest(bytes: wholeBox.whole.finalize()), chunks: chunks,
            widths: widths, chunker: cutter.version, stamp: stamp)
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

/// Holds a hasher used from a serial queue (one block at a time, joined before the next).
final class UnsafeSendableBox: @unchecked Sendable {
    var whole: SHA256
    init(whole: consuming SHA256) { self.whole = whole }
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
