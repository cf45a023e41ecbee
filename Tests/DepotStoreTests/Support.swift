import DepotCore
import DepotStore
import Foundation

extension ChunkStore {
    /// Writes `bytes` in pieces of `piece` bytes.
    func write(_ bytes: [UInt8], piece: Int = 1 << 20, planner: (any BoundaryPlanner)? = nil, retain: String? = nil) throws -> WriteResult {
        let w = try makeWriter(planner: planner)
        var i = 0
        while i < bytes.count {
            let n = min(piece, bytes.count - i)
            try bytes.withUnsafeBytes { try w.write(UnsafeRawBufferPointer(rebasing: $0[i..<(i + n)])) }
            i += n
        }
        return try w.finish(retain: retain)
    }

    func readAll(_ digest: Digest, range: Range<Int64>? = nil) throws -> [UInt8] {
        var out: [UInt8] = []
        try reader(digest, range: range).forEach { out.append(contentsOf: $0) }
        return out
    }
}

/// The path of the built `depot` executable (next to the test bundle).
var depotExecutable: String {
    let candidates = [
        Bundle.main.bundleURL.appendingPathComponent("depot").path,
        Bundle.main.bundleURL.deletingLastPathComponent().appendingPathComponent("depot").path,
        FileManager.default.currentDirectoryPath + "/.build/debug/depot",
    ]
    return candidates.first { FileManager.default.isExecutableFile(atPath: $0) } ?? candidates.last!
}
