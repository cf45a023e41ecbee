import DepotCatalog
import DepotCore

/// What opening a store repaired.
public struct RecoveryReport: Sendable, Equatable {
    /// Bytes cut from pack tails that no committed index row named (writes in flight at a crash).
    public var truncatedBytes: Int64 = 0
    public var truncatedPacks = 0
    /// Pack files with no catalog row (created just before a crash), removed.
    public var orphanPacksRemoved = 0
    /// Index rows dropped because their bytes were missing (damage; fsck reports affected blobs).
    public var droppedChunkRows = 0
    public var emptyPacksRemoved = 0

    public var isClean: Bool { self == RecoveryReport() }
}

/// Crash repair, run when a store is opened for writing (it holds the store lock).
///
/// Invariant kept by `PackAppender`: a pack's `committed_size` and the index rows pointing
/// into it are committed only after those bytes were fsynced. So after a crash a pack file can
/// only be *longer* than recorded (an unacknowledged tail), which is cut. A file *shorter* than
/// recorded means the disk lost acknowledged data: the rows past its end are dropped, and fsck
/// names the blobs that lost chunks.
enum Recovery {
    static func run(catalog: Database, files: PackFiles) throws -> RecoveryReport {
        var report = RecoveryReport()
        let packs = try catalog.read { try $0.packs() }
        let known = Set(packs.map(\.id))

        // Pack files the catalog never recorded.
        let packsDir = files.root + "/packs"
        if FileSystem.isDirectory(packsDir) {
            for sub in try FileSystem.list(packsDir) where FileSystem.isDirectory(packsDir + "/" + sub) {
                for name in try FileSystem.list(packsDir + "/" + sub) {
                    guard let id = PackFormat.id(fromFileName: name), !known.contains(id) else { continue }
                    try FileSystem.remove(packsDir + "/" + sub + "/" + name)
                    report.orphanPacksRemoved += 1
                }
            }
        }

        let usage = try catalog.read { try $0.packUsage(headerSize: PackFormat.recordHeaderSize) }
        for pack in packs {
            let path = files.path(pack.id)
            let chunkCount = usage[pack.id]?.chunks ?? 0
            guard FileSystem.exists(path) else {
                let dropped = try catalog.write { conn -> Int in
                    let n = try conn.dropChunks(inPack: pack.id)
                    try conn.deletePack(pack.id)
                    return n
                }
                report.droppedChunkRows += dropped
                continue
            }
            if chunkCount == 0 {
                // Nothing indexed in it: an empty or never-committed pack. The file goes first,
                // which frees space even when the disk is full; a row left without its file is
                // cleaned up by the branch above on the next open.
                try FileSystem.remove(path)
                try catalog.write { try $0.deletePack(pack.id) }
                report.emptyPacksRemoved += 1
                continue
            }
            let file = try PosixFile(path: path, mode: .readWrite)
            let size = try file.size()
            if size > pack.committedSize {
                try file.truncate(to: pack.committedSize)
                try file.sync()
                report.truncatedBytes += size - pack.committedSize
                report.truncatedPacks += 1
            } else if size < pack.committedSize {
                report.droppedChunkRows += try catalog.write { conn -> Int in
                    let n = try conn.dropChunks(inPack: pack.id, beyond: size, headerSize: PackFormat.recordHeaderSize)
                    try conn.setPack(pack.id, committedSize: size)
                    return n
                }
            }
        }
        // Appends always go to a fresh pack after a restart.
        try catalog.write { try $0.sealAllPacks() }
        return report
    }
}
