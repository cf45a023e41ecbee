import DepotCatalog
import DepotCore

#if canImport(Glibc)
    import Glibc
#endif

/// What opening a store does when acknowledged data is missing or unreadable.
public enum DamagePolicy: Sendable, Equatable {
    /// Refuse to open and change nothing (`depot serve`, `depot gc`, writers). A pack volume that
    /// comes up late, or a permission or I/O error, must never turn into dropped index rows.
    case refuse
    /// Open, leave the damage as it is and list it in `RecoveryReport.problems`, so that
    /// `depot fsck` can name every blob affected.
    case report
    /// Drop the index rows of bytes that are really gone (pack missing with ENOENT, or shorter
    /// than its committed size), listing every complete blob that lost chunks:
    /// `depot fsck --repair`, an operator's explicit decision.
    case repair
}

/// What opening a store repaired or found.
public struct RecoveryReport: Sendable, Equatable, Codable {
    /// Bytes cut from pack tails that no committed index row named (writes in flight at a crash).
    public var truncatedBytes: Int64 = 0
    public var truncatedPacks = 0
    /// Pack files the catalog has no row for, moved (never deleted) into `packs/quarantine/`:
    /// their paths there, relative to the storage root.
    public var quarantinedPacks: [String] = []
    /// Packs with no index rows whose file holds nothing but its 16-byte header, removed.
    public var emptyPacksRemoved = 0
    /// Pack deletions GC had committed to (row marked, no index rows) but not finished: done now.
    public var gcDeletionsFinished = 0
    /// Damage found and left in place (`.report`), one line each naming the pack.
    public var problems: [String] = []
    /// `.repair` only: index rows dropped because their bytes are gone ...
    public var droppedChunkRows = 0
    /// ... and the complete blobs that lost chunks with them (digests, sorted).
    public var lostBlobs: [String] = []
    /// S3 mode, `depot fsck`: objects under the prefix's `packs/` that no catalog row names (left
    /// alone: with a shared or restored catalog they may belong to another writer).
    public var unknownObjects: [String] = []

    public var isClean: Bool { self == RecoveryReport() }

    /// One line for logs and the CLI.
    public var summary: String {
        var parts = [
            "cut \(truncatedBytes) byte(s) from \(truncatedPacks) pack tail(s)",
            "moved \(quarantinedPacks.count) unknown pack file(s) to \(Recovery.quarantineDirectory)/",
            "removed \(emptyPacksRemoved) empty pack(s)", "finished \(gcDeletionsFinished) pack deletion(s) of GC",
        ]
        if !problems.isEmpty { parts.append("found \(problems.count) damaged pack(s), left as they are") }
        if !unknownObjects.isEmpty { parts.append("found \(unknownObjects.count) object(s) no catalog row names, left as they are") }
        if droppedChunkRows > 0 || !lostBlobs.isEmpty {
            parts.append("dropped \(droppedChunkRows) index row(s) of lost data, affecting \(lostBlobs.count) blob(s)")
        }
        return parts.joined(separator: ", ")
    }

    public init() {}

    enum CodingKeys: String, CodingKey {
        case truncatedBytes = "truncated_bytes"
        case truncatedPacks = "truncated_packs"
        case quarantinedPacks = "quarantined_packs"
        case emptyPacksRemoved = "empty_packs_removed"
        case gcDeletionsFinished = "gc_deletions_finished"
        case problems
        case droppedChunkRows = "dropped_chunk_rows"
        case lostBlobs = "lost_blobs"
        case unknownObjects = "unknown_objects"
    }
}

/// Crash repair, run when a store is opened for writing (it holds the store lock).
///
/// Invariant kept by `PackAppender`: a pack's `committed_size` and the index rows pointing
/// into it are committed only after those bytes were fsynced. So after a crash a pack file can
/// only be *longer* than recorded (an unacknowledged tail), which is cut.
///
/// Everything else is not a crash but lost or unreachable *acknowledged* data, and recovery never
/// deletes on its own: a pack that is missing (ENOENT) or unreadable (any other errno: EACCES,
/// EIO, a mount that is not up yet), or shorter than recorded, makes the open refuse (see
/// `DamagePolicy`); pack files the catalog does not know are moved to `packs/quarantine/`. The
/// only pack files recovery unlinks are ones holding nothing but a header, and ones GC marked
/// for deletion (no index row names them) before a crash stopped it.
enum Recovery {
    static let quarantineDirectory = "packs/quarantine"

    static func fix(_ root: String) -> String {
        "If the packs volume is not mounted (or not readable), mount it (or fix its permissions) and restart; "
            + "if the data is really lost, run `depot fsck --repair --storage \(root)` to drop the index rows "
            + "(it lists every affected blob)."
    }

    /// Before the catalog is opened (which would create an empty one): a missing `catalog.db`
    /// next to pack files is refused under every policy. There is no repair without the catalog.
    static func checkCatalogPresent(root: String) throws {
        let path = root + "/catalog.db"
        switch FileSystem.probe(path) {
        case .file, .directory, .other: return
        case .failed(let code):
            throw DepotError.storage(
                "\(path) is unreadable (\(FileSystem.Probe.errnoName(code))). Nothing was changed; "
                    + "if its volume is not mounted (or not readable), mount it (or fix its permissions) and restart")
        case .missing:
            let onDisk = try packFilesOnDisk(root: root)
            guard onDisk.isEmpty else { throw catalogLost(root: root, packFiles: onDisk.count, missing: true) }
        }
    }

    static func catalogLost(root: String, packFiles: Int, missing: Bool, catalog: String? = nil) -> DepotError {
        let name = catalog ?? "\(root)/catalog.db"
        let what = missing ? "\(name) is missing" : "catalog \(name) records no packs"
        return DepotError.storage(
            """
            \(what) but packs/ holds \(packFiles) pack file(s): the catalog may live on a volume that is not mounted, \
            or was recreated or restored from before those packs were written. Nothing was changed. Restore the matching \
            catalog.db and restart; to start an empty store instead, move packs/ aside first.
            """)
    }

    /// Pack files under `packs/<xx>/`, by id (relative paths). `packs/quarantine/` is skipped.
    static func packFilesOnDisk(root: String) throws -> [Int64: String] {
        let packsDir = root + "/packs"
        switch FileSystem.probe(packsDir) {
        case .missing: return [:]
        case .directory: break
        case .failed(let code):
            throw DepotError.storage("\(packsDir) is unreadable (\(FileSystem.Probe.errnoName(code))). Nothing was changed. \(fix(root))")
        case .file, .other:
            throw DepotError.storage("\(packsDir) is not a directory. Nothing was changed")
        }
        func unreadable(_ rel: String, _ why: String) -> DepotError {
            DepotError.storage("\(root)/\(rel) is unreadable (\(why)). Nothing was changed. \(fix(root))")
        }
        if let code = FileSystem.openErrno(packsDir) { throw unreadable("packs", FileSystem.Probe.errnoName(code)) }
        var out: [Int64: String] = [:]
        for sub in try FileSystem.list(packsDir) where sub != "quarantine" {
            let rel = "packs/" + sub
            switch FileSystem.probe(root + "/" + rel) {
            case .directory: break
            case .failed(let code): throw unreadable(rel, FileSystem.Probe.errnoName(code))
            case .file, .other, .missing: continue
            }
            if let code = FileSystem.openErrno(root + "/" + rel) { throw unreadable(rel, FileSystem.Probe.errnoName(code)) }
            for name in try FileSystem.list(root + "/" + rel) {
                guard let id = PackFormat.id(fromFileName: name) else { continue }
                out[id] = rel + "/" + name
            }
        }
        return out
    }

    /// What the catalog's view of one pack file turned out to be.
    private enum Found {
        case present(size: Int64)
        case missing
        case unreadable(String)
    }

    static func run(catalog: Database, files: PackFiles, policy: DamagePolicy) throws -> RecoveryReport {
        var report = RecoveryReport()
        let root = files.root
        let packs = try catalog.read { try $0.packs() }
        let known = Set(packs.map(\.id))
        let onDisk = try packFilesOnDisk(root: root)
        if packs.isEmpty && !onDisk.isEmpty {
            throw catalogLost(root: root, packFiles: onDisk.count, missing: false, catalog: catalog.path)
        }
        let usage = try catalog.read { try $0.packUsage(headerSize: PackFormat.recordHeaderSize) }

        // 1. Look, change nothing: every pack the catalog knows.
        var found: [Int64: Found] = [:]
        var problems: [String] = []
        var unrepairable: [String] = []
        for pack in packs {
            let rel = PackFormat.relativePath(pack.id)
            let chunks = usage[pack.id]?.chunks ?? 0
            let state: Found
            switch FileSystem.probe(files.path(pack.id)) {
            case .missing: state = .missing
            case .failed(let code): state = .unreadable(FileSystem.Probe.errnoName(code))
            case .directory, .other: state = .unreadable("not a regular file")
            case .file(let size):
                if let code = FileSystem.openErrno(files.path(pack.id)) {
                    state = code == ENOENT ? .missing : .unreadable(FileSystem.Probe.errnoName(code))
                } else {
                    state = .present(size: size)
                }
            }
            found[pack.id] = state
            guard chunks > 0 else { continue } // nothing acknowledged lives in it
            switch state {
            case .missing:
                problems.append("\(rel) is referenced by the catalog (\(chunks) chunk(s)) but missing (ENOENT)")
            case .unreadable(let why):
                let line = "\(rel) is referenced by the catalog (\(chunks) chunk(s)) but unreadable (\(why))"
                problems.append(line)
                unrepairable.append(line)
            case .present(let size) where size < pack.committedSize:
                problems.append(
                    "\(rel) is \(size) bytes but the catalog recorded \(pack.committedSize) durable bytes "
                        + "(acknowledged data is missing from its end)")
            case .present: break
            }
        }
        if !problems.isEmpty {
            switch policy {
            case .refuse:
                let shown = problems.prefix(5).joined(separator: "; ")
                let more = problems.count > 5 ? "; and \(problems.count - 5) more" : ""
                throw DepotError.storage("store \(root): \(shown)\(more). Nothing was changed. \(fix(root))")
            case .report:
                report.problems = problems
            case .repair:
                guard unrepairable.isEmpty else {
                    throw DepotError.storage(
                        """
                        \(unrepairable.joined(separator: "; ")). fsck --repair drops index rows only for packs that are gone \
                        (ENOENT) or short; fix the file's access (or mount its volume), or, if it is really lost, move it away \
                        and run fsck --repair again. Nothing was changed.
                        """)
                }
            }
        }

        // 2. Pack files the catalog never recorded: a crash between GC's row delete and its
        // unlink, or a catalog older than the packs. Moved aside, never deleted.
        for (id, rel) in onDisk.sorted(by: { $0.key < $1.key }) where !known.contains(id) {
            report.quarantinedPacks.append(try quarantine(rel, root: root))
        }

        // 3. Repairs that lose nothing acknowledged, and (`.repair` only) dropping lost rows.
        var lost = Set<String>()
        for pack in packs {
            let chunkCount = usage[pack.id]?.chunks ?? 0
            if pack.deleting && chunkCount == 0 {
                // GC decided, in a transaction that checked no index row names it, and crashed
                // before finishing: the catalog itself says these bytes are garbage.
                switch found[pack.id]! {
                case .unreadable: continue // leave it for a later open that can see it
                case .present: try FileSystem.remove(files.path(pack.id))
                case .missing: break
                }
                try catalog.write { try $0.deletePack(pack.id) }
                report.gcDeletionsFinished += 1
                continue
            }
            switch found[pack.id]! {
            case .unreadable:
                continue // reported above (or refused)
            case .missing:
                if chunkCount == 0 {
                    try catalog.write { try $0.deletePack(pack.id) } // nothing was in it
                } else if policy == .repair {
                    report.droppedChunkRows += try catalog.write { conn -> Int in
                        for d in try conn.blobs(usingPack: pack.id, beyond: 0, headerSize: PackFormat.recordHeaderSize) {
                            lost.insert(d.description)
                        }
                        let n = try conn.dropChunks(inPack: pack.id)
                        try conn.deletePack(pack.id)
                        return n
                    }
                }
            case .present(let size):
                let path = files.path(pack.id)
                if chunkCount == 0 && size <= Int64(PackFormat.fileHeaderSize) {
                    // Holds no record at all. The file goes first, which frees its inode even on a
                    // full disk; a row left without its file is dropped by the branch above next time.
                    try FileSystem.remove(path)
                    try catalog.write { try $0.deletePack(pack.id) }
                    report.emptyPacksRemoved += 1
                } else if size > pack.committedSize {
                    // An unacknowledged tail: appended, never fsynced-then-committed.
                    let file = try PosixFile(path: path, mode: .readWrite)
                    try file.truncate(to: pack.committedSize)
                    try file.sync()
                    report.truncatedBytes += size - pack.committedSize
                    report.truncatedPacks += 1
                } else if size < pack.committedSize && policy == .repair {
                    report.droppedChunkRows += try catalog.write { conn -> Int in
                        for d in try conn.blobs(usingPack: pack.id, beyond: size, headerSize: PackFormat.recordHeaderSize) {
                            lost.insert(d.description)
                        }
                        let n = try conn.dropChunks(inPack: pack.id, beyond: size, headerSize: PackFormat.recordHeaderSize)
                        try conn.setPack(pack.id, committedSize: size)
                        return n
                    }
                }
            }
        }
        if policy == .repair {
            // Casts of dropped chunks can never be decoded: dropped too, their blobs named.
            let casts = try catalog.write { try $0.dropCastsWithMissingSources() }
            report.droppedChunkRows += casts.count
            lost.formUnion(casts.blobs.map(\.description))
        }
        report.lostBlobs = lost.sorted()
        // Appends always go to a fresh pack after a restart.
        try catalog.write { try $0.sealAllPacks() }
        return report
    }

    /// Moves `rel` (a pack file) into `packs/quarantine/` under a name not taken yet, durably.
    static func quarantine(_ rel: String, root: String) throws -> String {
        let dir = root + "/" + quarantineDirectory
        if FileSystem.probe(dir) != .directory {
            try FileSystem.createDirectory(dir)
            try FileSystem.syncDirectory(root + "/packs")
        }
        let name = String(rel.split(separator: "/").last!)
        var target = name
        var n = 0
        while FileSystem.probe(dir + "/" + target) != .missing {
            n += 1
            guard n < 10_000 else { throw DepotError.storage("\(dir) has no free name for \(name); empty it") }
            target = "\(name).\(n)"
        }
        let source = root + "/" + rel
        try FileSystem.rename(source, dir + "/" + target)
        try FileSystem.syncDirectory(dir)
        try FileSystem.syncDirectory(String(source[..<source.lastIndex(of: "/")!]))
        return quarantineDirectory + "/" + target
    }
}
