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
            options.flushBytes = 1 << 20 // many small group commits: more crash points
            options.packTargetSize = 4 << 20
            options.writeGraceSeconds = 0
            let store = reportingErrors { try ChunkStore(root: storage.storage, options: storage.options(options), create: true) }
            for i in 0..<count {
                let size = minSize + SyntheticContent.size(seed: seed, index: i, max: max(1, maxSize - minSize))
                let result = reportingErrors { () -> WriteResult in
                    let writer = try store.makeWriter()
                    try SyntheticContent.generate(seed: seed, index: i, size: size) { try writer.write($0) }
                    let r = try writer.finish(retain: "write-loop")
                    if gc { _ = try store.collectGarbage() }
                    return r
                }
                FileHandleOutput.stdout("ACK \(i) \(result.digest) \(result.size)\n")
            }
        }
    }
}
