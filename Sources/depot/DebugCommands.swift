import ArgumentParser
import DepotCore
import DepotStore
import Foundation

/// Hidden commands used by the crash tests.
struct Debug: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Test helpers (not for production use).", shouldDisplay: false,
        subcommands: [WriteLoop.self])

    /// Writes deterministic pseudo-random blobs forever (or `--count`), printing
    /// `ACK <index> <digest> <size>` only after each blob is durable. A crash test kills it
    /// at random moments and checks that every acknowledged blob survives.
    struct WriteLoop: ParsableCommand {
        @OptionGroup var storage: StorageOptions
        @Option var seed: UInt64 = 1
        @Option var count: Int = 1_000_000
        @Option(help: "Smallest blob size in bytes.") var minSize: Int = 0
        @Option(help: "Largest blob size in bytes.") var maxSize: Int = 3 << 20
        @Flag(help: "Also run GC after every blob.") var gc = false

        func run() throws {
            var options = StoreOptions()
            options.flushBytes = 1 << 20   // many small group commits: more crash points
            options.packTargetSize = 4 << 20
            options.writeGraceSeconds = 0
            let store = reportingErrors { try ChunkStore(root: storage.storage, options: options, create: true) }
            for i in 0..<count {
                let size = minSize + TestData.size(seed: seed, index: i, max: max(1, maxSize - minSize))
                let result = reportingErrors { () -> WriteResult in
                    let writer = try store.makeWriter()
                    try TestData.generate(seed: seed, index: i, size: size) { try writer.write($0) }
                    let r = try writer.finish(retain: "write-loop")
                    if gc { _ = try store.collectGarbage() }
                    return r
                }
                FileHandleOutput.stdout("ACK \(i) \(result.digest) \(result.size)\n")
            }
        }
    }
}

/// Deterministic test content with shared runs, so blobs deduplicate against each other.
public enum TestData {
    public static func size(seed: UInt64, index: Int, max: Int) -> Int {
        var s = seed &* 0x9E37_79B9_7F4A_7C15 &+ UInt64(index)
        return Int(next(&s) % UInt64(max))
    }

    /// Produces `size` bytes in 64 KiB pieces: each piece is one of 32 shared patterns or unique.
    public static func generate(seed: UInt64, index: Int, size: Int, _ sink: (UnsafeRawBufferPointer) throws -> Void) rethrows {
        var piece = [UInt64](repeating: 0, count: 8192)
        var s = seed ^ (UInt64(index) &* 0xD1B5_4A32_D192_ED03)
        var produced = 0
        while produced < size {
            let choice = next(&s) % 4
            var p = choice == 0 ? next(&s) : seed &+ (next(&s) % 32)   // 3 in 4 pieces are shared
            for k in 0..<piece.count { piece[k] = next(&p) }
            let n = min(size - produced, 65_536 - Int(next(&s) % 4096))
            try piece.withUnsafeBytes { try sink(UnsafeRawBufferPointer(rebasing: $0[0..<n])) }
            produced += n
        }
    }

    @inline(__always) static func next(_ s: inout UInt64) -> UInt64 {
        s &+= 0x9E37_79B9_7F4A_7C15
        var z = s
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
