import ArgumentParser
import DepotCore
import DepotFormats
import DepotRegistry
import DepotServer
import DepotStore
import Foundation

struct Stats: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Print the sizes of a store.")
    @OptionGroup var storage: StorageOptions
    @Flag(help: "Machine-readable output.") var json = false

    func run() throws {
        let (stats, casts) = reportingErrors { () -> (StoreStats, (chunks: Int, bytes: Int64)) in
            let store = try ChunkStore(root: storage.storage, options: storage.options(), readOnly: true)
            return (try store.stats(), try store.castStats())
        }
        if json { return printJSON(StatsOutput(stats: stats, castChunks: casts.chunks, castChunkBytes: casts.bytes)) }
        let ratio = stats.storedBytes > 0 ? Double(stats.logicalBytes) / Double(stats.storedBytes) : 0
        print(
            """
            blobs           \(stats.blobs)
            logical bytes   \(stats.logicalBytes) (\(formatBytes(stats.logicalBytes)))
            stored bytes    \(stats.storedBytes) (\(formatBytes(stats.storedBytes)))
            ratio           \(String(format: "%.3f", ratio))
            chunks          \(stats.chunks) (\(formatBytes(stats.chunkBytes)) raw, \(formatBytes(stats.chunkStoredBytes)) stored)
            cast chunks     \(casts.chunks) (\(formatBytes(casts.bytes)) as casts of fp32 chunks)
            packs           \(stats.packs)
            unfinished      \(stats.unfinishedWrites)
            """)
    }
}

struct Fsck: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Verify every chunk and blob of a store.",
        discussion: """
            Exit status 0 when clean, 1 when damage is found, 2 when the store can't be checked. Damage is reported, \
            never repaired, unless --repair is given: then the index rows of pack data that is really gone (a pack file \
            missing, or shorter than the catalog recorded) are dropped and every blob that lost chunks is listed.
            """)
    @OptionGroup var storage: StorageOptions
    @Flag(help: "Machine-readable output.") var json = false
    @Flag(help: "Verify chunks only; skip re-hashing whole blobs.") var quick = false
    @Flag(help: "Drop the index rows of lost pack data (missing or short pack files) and list the blobs affected.")
    var repair = false
    @Option(help: "A config file: its storage.root and, with storage.backend: s3, its bucket (packs as objects).")
    var config: String?
    @Flag(help: "S3 mode: also fetch and verify every record and blob (default: objects' presence and size, and recipes).")
    var deep = false

    func run() throws {
        let (checked, recovery) = { () -> (FsckReport, RecoveryReport) in
            do {
                let (root, options, objects) = try storage.resolve(config: config)
                let store = try ChunkStore(root: root, options: options, ifDamaged: repair ? .repair : .report, objects: objects)
                return (try store.fsck(verifyBlobDigests: !quick, deep: deep), store.recovery)
            } catch let e as DepotError { fail(e.description, code: 2) } catch { fail("\(error)", code: 2) }
        }()
        var report = checked
        report.recovery = recovery.isClean ? nil : recovery
        if json {
            printJSON(report)
        } else {
            if !recovery.isClean { print("on open: \(recovery.summary)") }
            for p in recovery.quarantinedPacks { print("QUARANTINED \(p) (no catalog row; kept, not deleted)") }
            for p in recovery.problems { print("DAMAGED \(p)") }
            for o in recovery.unknownObjects { print("UNKNOWN \(o) (no catalog row names it; kept, not deleted)") }
            if !recovery.problems.isEmpty, let config {
                print(
                    "  if storage.s3 names the wrong endpoint, bucket or prefix, fix that and rerun; if the objects are really lost, "
                        + "`depot fsck --repair --config \(config)` drops their index rows")
            } else if !recovery.problems.isEmpty {
                print(
                    "  if the packs volume is not mounted or readable, fix that and rerun; if the data is really lost, "
                        + "`depot fsck --repair --storage \(storage.storage)` drops its index rows")
            }
            for b in recovery.lostBlobs { print("LOST blob \(b): index rows of its missing chunks were dropped") }
            print("checked \(report.chunksChecked) chunks (\(formatBytes(report.bytesVerified))) and \(report.blobsChecked) blobs")
            for d in report.damagedChunks {
                print("DAMAGED chunk \(d.chunk): \(d.reason)")
                for b in d.blobs { print("  affects blob \(b)") }
            }
            for (blob, reason) in report.damagedBlobs.sorted(by: { $0.key < $1.key }) { print("DAMAGED blob \(blob): \(reason)") }
            print(report.isClean ? "clean" : "damage found: \(report.affectedBlobs.count) blob(s) affected")
        }
        if !report.isClean { throw ExitCode(1) }
    }
}

struct Backup: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Copy a store into a new directory while it serves: one catalog snapshot and the packs it names.",
        discussion: """
            Runs beside `depot serve` on the same storage root, or with it stopped; it takes no lock while copying \
            and creates nothing under the root. The copy is a store of its own, with the signing keys kept under \
            the root (keys/, auth/): to restore, stop the registry and serve from the copy, or move the whole \
            directory into place (never copy catalog.db alone over a root that still has catalog.db-wal). It holds \
            the registry as of the snapshot: users, tokens and tags deleted since come back. Not copied: the \
            configuration, TLS files, the bootstrap token, and keys configured outside the root. --verify then \
            checks every chunk and blob of the copy, reading only. The embedded store only: with a PostgreSQL \
            catalog or packs in S3, use pg_dump and the bucket's versioning (docs/SCALE.md, "Backups").
            """)
    @OptionGroup var storage: StorageOptions
    @Argument(help: "A new directory (or an empty one of yours, mode 700) outside the storage root; on another disk, to survive this one.")
    var destination: String
    @Option(help: "A config file: back up its storage.root.") var config: String?
    @Flag(help: "Verify the copy: every chunk's SHA-256 and every blob's digest, as `depot fsck` does.") var verify = false
    @Flag(help: "Machine-readable output.") var json = false

    struct Output: Encodable {
        var backup: BackupReport
        /// The backup's wall time, and the verification's.
        var seconds: Double
        var verifySeconds: Double?
        var verified: FsckReport?
        /// Signing keys the configuration keeps outside the storage root: not in the copy.
        var keysNotCopied: [String]

        enum CodingKeys: String, CodingKey {
            case backup, seconds, verified
            case verifySeconds = "verify_seconds"
            case keysNotCopied = "keys_not_copied"
        }
    }

    static func seconds(since start: ContinuousClock.Instant) -> Double {
        let elapsed = start.duration(to: .now)
        return Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
    }

    func run() throws {
        let start = ContinuousClock.now
        var keysNotCopied: [String] = []
        let report = reportingErrors { () -> BackupReport in
            let (root, options, objects) = try storage.resolve(config: config)
            guard objects == nil else {
                throw DepotError.invalidArgument(
                    "\(root)'s packs are in an object store (storage.backend: s3): the bucket keeps them (turn its versioning "
                        + "on) and the catalog is backed up on its own (docs/SCALE.md, \"Backups\")")
            }
            if let config {
                let loaded = try ServerConfig.load(config)
                // Keys under the root's keys/ and auth/ are copied; ones configured elsewhere are not.
                let rootPrefix = URL(fileURLWithPath: root).standardizedFileURL.path + "/"
                keysNotCopied = [loaded.signing.keyFile, loaded.auth.signingKeyFile].filter {
                    let path = URL(fileURLWithPath: $0).standardizedFileURL.path
                    return !$0.isEmpty && !path.hasPrefix(rootPrefix + "keys/") && !path.hasPrefix(rootPrefix + "auth/")
                }
            }
            return try StoreBackup.run(root: root, to: destination, options: options)
        }
        let seconds = Self.seconds(since: start)
        let verifyStart = ContinuousClock.now
        let verified =
            verify
            ? reportingErrors { () -> FsckReport in
                // Read-only: no recovery, no migration, nothing written into the copy.
                try ChunkStore(root: report.destination, readOnly: true).fsck()
            } : nil
        let verifySeconds = verify ? Self.seconds(since: verifyStart) : nil
        if json {
            printJSON(
                Output(backup: report, seconds: seconds, verifySeconds: verifySeconds, verified: verified, keysNotCopied: keysNotCopied))
        } else {
            print(
                "backed up \(report.packs) packs (\(formatBytes(report.packBytes))), the catalog (\(formatBytes(report.catalogBytes)))"
                    + (report.keyFiles.isEmpty ? "" : " and \(report.keyFiles.joined(separator: ", "))")
                    + " to \(report.destination) in \(String(format: "%.1f", seconds)) s"
                    + (report.attempts > 1 ? " (\(report.attempts) catalog snapshots: GC deleted packs meanwhile)" : ""))
            for s in report.skipped { print("not copied: \(s) (not a regular file)") }
            for k in keysNotCopied { print("not copied: \(k) (a key configured outside the storage root: back it up with your secrets)") }
            if report.sameFileSystem {
                print("note: the copy is on the store's own file system; it does not survive the loss of that disk")
            }
            if let verified {
                print(
                    "verified \(verified.chunksChecked) chunks (\(formatBytes(verified.bytesVerified))) and \(verified.blobsChecked) blobs "
                        + "in \(String(format: "%.1f", verifySeconds ?? 0)) s: "
                        + (verified.isClean ? "clean" : "DAMAGE FOUND (run `depot fsck --storage \(report.destination)` for details)"))
            }
        }
        if let verified, !verified.isClean { throw ExitCode(1) }
    }
}

struct GC: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "gc",
        abstract:
            "Collect garbage: unkept manifests (untagged, unpinned, no pinned descendant), then unrooted blobs, unreferenced chunks, sparse packs."
    )
    @OptionGroup var storage: StorageOptions
    @Flag(help: "Machine-readable output.") var json = false
    @Option(help: "Unfinished writes and untagged manifests younger than this many seconds are kept.") var grace: Int64 = 24 * 3600
    @Option(help: "A config file: its storage.root and, with storage.backend: s3, its bucket (packs as objects).")
    var config: String?

    func run() throws {
        let report = reportingErrors { () -> RegistryGCReport in
            var (root, options, objects) = try storage.resolve(config: config)
            options.writeGraceSeconds = grace
            let store = try ChunkStore(root: root, options: options, objects: objects)
            return try Registry(store: store).collectGarbage(untaggedGraceSeconds: grace, actor: "depot gc")
        }
        if json { return printJSON(report) }
        let s = report.store
        print(
            "deleted \(report.manifestsDeleted) unkept manifest(s), \(s.blobsDeleted) blob(s), \(s.chunksDeleted) chunk(s) (\(formatBytes(s.chunkBytesFreed)))"
        )
        print(
            "compacted \(s.packsCompacted) pack(s) (\(s.chunksMoved) chunks moved), deleted \(s.packsDeleted) pack(s) (\(formatBytes(s.packBytesFreed)) freed)"
        )
        if let c = s.casts {
            print(
                "casts: scanned \(c.blobsScanned) blob(s), \(c.chunksDerived) chunk(s) of \(c.tensorsMatched) fp16/bf16 tensor(s) (\(formatBytes(c.bytesDerived))) stored as casts of fp32 chunks, \(s.castChunksMaterialized) stored plain again"
            )
            if let why = c.firstFailure {
                FileHandleOutput.stderr(
                    "warning: cast-aware dedup skipped \(c.failures) unreadable blob(s) or candidate(s), e.g. \(why); run `depot fsck`\n")
            }
        }
        for d in s.damagedChunks {
            FileHandleOutput.stderr("warning: skipped damaged chunk \(d.chunk) in pack \(d.pack): \(d.reason)\n")
        }
    }
}

struct Blob: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Store and read raw blobs (store-level tools; the registry API comes on top).",
        subcommands: [Put.self, Get.self])

    struct Put: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Store files as blobs and declare them live.")
        @OptionGroup var storage: StorageOptions
        @Flag(help: "Machine-readable output.") var json = false
        @Argument(help: "Files to store.") var files: [String]

        func run() throws {
            let store = reportingErrors { try ChunkStore(root: storage.storage, options: storage.options(), create: true) }
            var results: [WriteResult] = []
            for path in files {
                let result = reportingErrors { () -> WriteResult in
                    let r = try store.writeFile(path, planner: ModelFileBoundaryPlanner())
                    try store.retain(r.digest, reason: "depot blob put \(path)")
                    return r
                }
                results.append(result)
                if !json {
                    print(
                        "\(result.digest)  \(path)  \(result.size) bytes, \(result.newBytes) new, \(result.reusedBytes) reused, \(result.storedBytes) stored"
                    )
                }
            }
            if json { printJSON(results.map(WriteSummary.init)) }
        }
    }

    struct Get: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Write a blob (or a byte range of it) to a file or stdout.")
        @OptionGroup var storage: StorageOptions
        @Argument(help: "The blob's digest (sha256:...).") var digest: String
        @Option(name: .shortAndLong, help: "Output file (default: stdout).") var output: String?
        @Option(help: "Byte range FIRST-LAST (inclusive), as in HTTP.") var range: String?

        func run() throws {
            reportingErrors {
                let d = try Digest(parsing: digest)
                let store = try ChunkStore(root: storage.storage, options: storage.options(), readOnly: true)
                var r: Range<Int64>?
                if let range {
                    let parts = range.split(separator: "-", omittingEmptySubsequences: false)
                    guard parts.count == 2, let a = Int64(parts[0]), let b = Int64(parts[1]), a <= b else {
                        throw DepotError.rangeInvalid("'\(range)' is not FIRST-LAST")
                    }
                    r = a..<(b + 1)
                }
                let reader = try store.reader(d, range: r)
                let out = try output.map { try OutputFile(path: $0) }
                try reader.forEach { bytes in
                    if let out { try out.write(bytes) } else { FileHandle.standardOutput.write(Data(bytes)) }
                }
                try out?.commit()
            }
        }
    }
}

/// A JSON summary of one write.
// swift-format-ignore: AlwaysUseLowerCamelCase
// The field names are the JSON keys of `depot store put --json`.
struct WriteSummary: Encodable {
    let digest: String, size: Int64, chunks: Int, new_chunks: Int, new_bytes: Int64, reused_bytes: Int64, stored_bytes: Int64,
        chunker: String
    init(_ r: WriteResult) {
        digest = r.digest.description
        size = r.size
        chunks = r.chunks
        new_chunks = r.newChunks
        new_bytes = r.newBytes
        reused_bytes = r.reusedBytes
        stored_bytes = r.storedBytes
        chunker = r.chunker
    }
}

/// `depot stats --json`: the store's sizes and, beside them, its cast chunks.
struct StatsOutput: Encodable {
    let stats: StoreStats
    let castChunks: Int
    let castChunkBytes: Int64

    enum Keys: String, CodingKey {
        case castChunks = "cast_chunks"
        case castChunkBytes = "cast_chunk_bytes"
    }

    func encode(to encoder: any Encoder) throws {
        try stats.encode(to: encoder)
        var c = encoder.container(keyedBy: Keys.self)
        try c.encode(castChunks, forKey: .castChunks)
        try c.encode(castChunkBytes, forKey: .castChunkBytes)
    }
}

/// Writes to `<path>.partial`, fsyncs and renames into place on `commit`, so a failed
/// command never leaves a half-written file under the final name.
final class OutputFile {
    let path: String
    let file: PosixFile
    /// A device or pipe (`-o /dev/null`, a FIFO) is written in place: renaming a file over it
    /// would replace the device node (as root, `/dev/null` itself).
    let direct: Bool
    init(path: String) throws {
        self.path = path
        direct = FileSystem.probe(path) == .other
        if direct {
            file = try PosixFile(path: path, mode: .readWrite)
        } else {
            file = try PosixFile(path: path + ".partial", mode: .createReadWrite)
            try file.truncate(to: 0)
        }
    }
    func write(_ bytes: [UInt8]) throws { try bytes.withUnsafeBytes { try file.write($0) } }
    func commit() throws {
        guard !direct else { return }
        try file.sync()
        try FileSystem.rename(path + ".partial", path)
    }
}

extension StorageOptions {
    /// The storage root, options and (S3 mode) object store: `--storage` alone, or a config file.
    func resolve(config path: String?) throws -> (root: String, options: StoreOptions, objects: (any PackObjectStore)?) {
        guard let path else { return (storage, options(), nil) }
        let config = try ServerConfig.load(path)
        var o = config.storeOptions
        o.catalog = try config.catalog.location()
        return (config.storageRoot, options(o), try config.makeObjectStore())
    }
}
