import DepotCore
import DepotStore
import Foundation

/// A fresh temporary directory, removed when the value goes away.
final class TempDir {
    let path: String
    init(_ name: String = "depot-test") {
        path = NSTemporaryDirectory() + "/\(name)-\(UUID().uuidString.prefix(8))"
        try! FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    }
    deinit { try? FileManager.default.removeItem(atPath: path) }
}

/// Deterministic pseudo-random bytes (SplitMix64).
func randomBytes(_ count: Int, seed: UInt64) -> [UInt8] {
    var s = seed
    var out = [UInt8](repeating: 0, count: count)
    out.withUnsafeMutableBytes { raw in
        let words = count / 8
        let p = raw.baseAddress!
        for i in 0..<words { p.storeBytes(of: SyntheticContent.next(&s), toByteOffset: i * 8, as: UInt64.self) }
        for i in (words * 8)..<count { raw[i] = UInt8(truncatingIfNeeded: i &* 131 &+ Int(seed)) }
    }
    return out
}

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
