import DepotCatalog
import DepotCore

#if canImport(Glibc)
    import Glibc
#endif

/// What `StoreBackup.run` copied.
public struct BackupReport: Sendable, Codable, Equatable {
    public var destination: String
    /// Packs copied (their committed bytes), and those bytes.
    public var packs: Int
    public var packBytes: Int64
    /// The catalog snapshot's size, and when it was taken (milliseconds since 1970).
    public var catalogBytes: Int64
    public var snapshotAt: Int64
    /// Key files copied (`keys/`, `auth/`), relative to the root; entries there that are not
    /// regular files (nor links to one) were skipped and are named here.
    public var keyFiles: [String]
    public var skipped: [String]
    /// Catalog snapshots taken: more than one when GC deleted a pack the first one named before
    /// it was copied.
    public var attempts: Int
    /// The copy is on the store's own file system: it does not survive a loss of that disk (and
    /// where the file system shares blocks between copies, not even damage to a shared block).
    public var sameFileSystem: Bool

    enum CodingKeys: String, CodingKey {
        case destination, packs, attempts, skipped
        case packBytes = "pack_bytes"
        case catalogBytes = "catalog_bytes"
        case snapshotAt = "snapshot_at"
        case keyFiles = "key_files"
        case sameFileSystem = "same_file_system"
    }
}

/// An online backup of an embedded store (SQLite catalog, packs under `packs/`) into a new
/// directory that is itself a store: `depot serve --storage DEST` or `depot fsck --storage DEST`
/// open it as they open the original.
///
/// Why it is consistent while a server writes and collects:
/// 1. The catalog is copied first, as one committed state (`VACUUM INTO`, a read transaction).
/// 2. Every pack that snapshot names is copied up to the `committed_size` the snapshot records.
///    Packs are append-only and nothing below a committed size ever changes, so those bytes are
///    exactly what the snapshot's rows describe: later appends are past them, and the tail a
///    crash leaves is never copied.
/// 3. GC may delete a pack (after moving its live chunks into a new pack) between the snapshot and
///    the copy. The copy then finds ENOENT for a pack the snapshot says holds chunks, and takes
///    a new snapshot, which names the new pack instead; packs already copied keep their bytes
///    (ids are never reused) and only what is new or longer is copied. A pack missing from two
///    snapshots in a row is not a race but damage (or packs that live in an object store), and
///    the backup stops, naming it.
/// 4. `BACKUP-INCOMPLETE` is written into the destination first and removed last, after the
///    catalog, the keys and `FORMAT`, each fsynced: a store refuses to open a root that has it,
///    so a backup cut short (killed, a full disk) is never served as a registry.
///
/// The source is only read: no file under its root is created, and none written but SQLite's
/// shared-memory index (`catalog.db-shm`, which its readers update), and only where it exists.
/// With the server stopped (nothing holds `LOCK`) a shared lock on `LOCK` keeps one from starting
/// during the snapshot, and a catalog without a WAL is read as an unchanging file.
public enum StoreBackup {
    /// Directories under the root copied file by file besides the catalog and packs: the
    /// pipeline signing key (`keys/`) and the token signing key (`auth/`). Without them the
    /// restored registry would sign with new keys, and deploy policies that trust the old key
    /// id would refuse its new outputs.
    static let keyDirectories = ["keys", "auth"]

    /// The catalog snapshot's name until every pack is in place.
    static let partialCatalog = "catalog.db.partial"

    /// In a backup's root until it is complete; `ChunkStore` refuses to open such a root.
    public static let incompleteMarker = "BACKUP-INCOMPLETE"

    /// What the backup was, for the operator who finds it later.
    static let infoFile = "BACKUP.json"

    /// A key file larger than this is not a key: refused rather than read into memory.
    static let maxKeyFileBytes = 1 << 20

    /// Copies the store at `root` into `destination`, a directory that must not exist yet (or be
    /// an empty one of this user's, writable by no one else), outside the store.
    public static func run(
        root: String, to destination: String, options: StoreOptions = StoreOptions(), maxAttempts: Int = 5
    ) throws -> BackupReport {
        try run(root: root, to: destination, options: options, maxAttempts: maxAttempts, beforePackCopy: nil)
    }

    /// `beforePackCopy(attempt, index)` runs before the index-th pack of each snapshot is copied
    /// (tests run GC there).
    static func run(
        root: String, to destination: String, options: StoreOptions, maxAttempts: Int,
        beforePackCopy: ((Int, Int) throws -> Void)?
    ) throws -> BackupReport {
        let catalogPath = root + "/catalog.db"
        if case .postgres = options.catalog ?? Database.location(forPath: catalogPath) {
            throw DepotError.invalidArgument(
                "the catalog is in PostgreSQL; `depot backup` copies the embedded SQLite store only. Back the database up "
                    + "with pg_dump or a base backup first, then the packs (docs/SCALE.md, \"Backups\")")
        }
        guard case .file = FileSystem.probe(root + "/FORMAT"), case .file = FileSystem.probe(catalogPath) else {
            throw DepotError.storage("\(root) is not a Depot store with an SQLite catalog (no FORMAT or catalog.db)")
        }
        let (dest, sameFileSystem) = try prepareDestination(destination, root: root)
        let notAStore = "; \(dest) is not a store: delete it"
        do {
            try PrivateFile.create(
                dest + "/" + incompleteMarker,
                Array("An unfinished `depot backup` of \(root): not a store. Delete this directory.\n".utf8))
            try FileSystem.syncDirectory(dest)
            var report = try copy(root: root, into: dest, maxAttempts: maxAttempts, beforePackCopy: beforePackCopy)
            report.sameFileSystem = sameFileSystem
            let info =
                "{\"source\": \(jsonString(root)), \"depot_version\": \(jsonString(BuildInfo.version)), "
                + "\"snapshot_at_ms\": \(report.snapshotAt), \"packs\": \(report.packs), \"pack_bytes\": \(report.packBytes)}\n"
            try PrivateFile.create(dest + "/" + infoFile, Array(info.utf8))
            try FileSystem.syncDirectory(dest)
            try FileSystem.remove(dest + "/" + incompleteMarker)
            try FileSystem.syncDirectory(dest)
            return report
        } catch let error as DepotError {
            // Every failure past this point leaves a directory that must not be taken for a backup.
            if case .io(let m) = error { throw DepotError.io(m + notAStore) }
            if case .storage(let m) = error { throw DepotError.storage(m + notAStore) }
            throw error
        }
    }

    private static func copy(
        root: String, into dest: String, maxAttempts: Int, beforePackCopy: ((Int, Int) throws -> Void)?
    ) throws -> BackupReport {
        let partial = dest + "/" + partialCatalog
        var copied: [Int64: Int64] = [:] // pack id -> bytes in the backup's copy
        var missingBefore = Set<Int64>()
        var attempt = 0
        var snapshotAt: Int64 = 0
        while true {
            attempt += 1
            // A server that starts while an unchanging catalog is read can change it under the
            // read: then the snapshot is taken again, with the server running.
            for _ in 0..<3 {
                try FileSystem.remove(partial)
                try FileSystem.remove(partial + "-journal")
                try PrivateFile.create(partial, []) // 0600: the catalog holds password and token hashes
                snapshotAt = PackAppender.now()
                if try snapshotCatalog(root: root, to: partial) { break }
            }
            let snapshot = try Database(location: .sqlite(path: partial), readOnly: true)
            let (packs, usage) = try snapshot.snapshot { conn in
                (try conn.packs(), try conn.packUsage(headerSize: PackFormat.recordHeaderSize))
            }
            var missing = Set<Int64>()
            var wanted = Set<Int64>()
            for (index, pack) in packs.enumerated() where !pack.deleting {
                try beforePackCopy?(attempt, index)
                let rel = PackFormat.relativePath(pack.id)
                if let have = copied[pack.id], have >= pack.committedSize {
                    // Copied whole by an earlier snapshot: its bytes are these (GC may have
                    // deleted the source since; the copy stays good).
                    if have > pack.committedSize {
                        try PosixFile(path: dest + "/" + rel, mode: .readWrite).truncate(to: pack.committedSize)
                    }
                    copied[pack.id] = pack.committedSize
                    wanted.insert(pack.id)
                    continue
                }
                let source: PosixFile
                do {
                    source = try PosixFile(path: root + "/" + rel, mode: .read)
                } catch {
                    guard FileSystem.probe(root + "/" + rel) == .missing else { throw error }
                    // Recovery drops the row of an empty pack whose file is gone; one that holds
                    // chunks was deleted by GC after the snapshot (or is lost: see below).
                    if (usage[pack.id]?.chunks ?? 0) > 0 { missing.insert(pack.id) }
                    continue
                }
                wanted.insert(pack.id)
                copied[pack.id] = try copyPack(source, rel: rel, committed: pack.committedSize, into: dest, have: copied[pack.id])
            }
            // Copies of packs this snapshot no longer names (GC deleted them since the last one).
            for id in Set(copied.keys).subtracting(wanted) {
                try FileSystem.remove(dest + "/" + PackFormat.relativePath(id))
                copied[id] = nil
            }
            if missing.isEmpty { break }
            if let lost = missing.intersection(missingBefore).min() {
                throw DepotError.storage(
                    "\(root)/\(PackFormat.relativePath(lost)) holds chunks the catalog names but is missing in two snapshots in a row: "
                        + "the store is damaged (run `depot fsck --storage \(root)`), or its packs live in an object store "
                        + "(storage.backend: s3, where the bucket keeps them and only the catalog is backed up)")
            }
            guard attempt < maxAttempts else {
                throw DepotError.storage(
                    "packs kept disappearing under the backup (\(attempt) catalog snapshots, GC deleting packs each time): "
                        + "run it again between GC passes")
            }
            missingBefore = missing
        }
        for dir in Set(copied.keys.map { dest + "/" + PackFormat.relativePath($0).split(separator: "/").dropLast().joined(separator: "/") })
        {
            try FileSystem.syncDirectory(dir)
        }
        if FileSystem.isDirectory(dest + "/packs") { try FileSystem.syncDirectory(dest + "/packs") }
        let (keyFiles, skipped) = try copyKeys(root: root, into: dest)
        let catalogBytes = try syncFile(partial)
        try FileSystem.rename(partial, dest + "/catalog.db")
        let format = try PosixFile(path: root + "/FORMAT", mode: .read)
        try copyWhole(format, size: try format.size(), to: dest + "/FORMAT")
        try FileSystem.syncDirectory(dest)
        return BackupReport(
            destination: dest, packs: copied.count, packBytes: copied.values.reduce(0, +), catalogBytes: catalogBytes,
            snapshotAt: snapshotAt, keyFiles: keyFiles.sorted(), skipped: skipped.sorted(), attempts: attempt, sameFileSystem: false)
    }

    /// Snapshots the catalog into `partial`. With a server running (it holds `LOCK`), SQLite's
    /// `-wal` and `-shm` exist and a read-only connection only reads. With none (a shared lock on
    /// `LOCK` is granted, and held while the snapshot is taken so that none starts meanwhile):
    /// a catalog without a WAL to read is opened as immutable, which creates nothing beside it;
    /// one whose server left its WAL (a stop without a checkpoint) is read through the `-wal` and
    /// `-shm` it left, as a running server's readers do. A WAL without its `-shm` is refused: a
    /// read would create one.
    /// Returns false when the snapshot may be torn: the catalog was read as unchanging, with no
    /// `LOCK` to hold, and a server created one meanwhile (a store served for the first time).
    private static func snapshotCatalog(root: String, to partial: String) throws -> Bool {
        let catalogPath = root + "/catalog.db"
        let lockFD = open(root + "/LOCK", O_RDONLY | O_CLOEXEC | O_NOFOLLOW)
        defer { if lockFD >= 0 { close(lockFD) } }
        let stopped = lockFD < 0 ? errno == ENOENT : flock(lockFD, LOCK_SH | LOCK_NB) == 0
        var unchanging = false
        if stopped {
            let walSize: Int64
            if case .file(let size) = FileSystem.probe(catalogPath + "-wal") { walSize = size } else { walSize = 0 }
            unchanging = walSize == 0
            if !unchanging, FileSystem.probe(catalogPath + "-shm") == .missing {
                throw DepotError.storage(
                    "the registry on \(root) is stopped and left catalog.db-wal (\(walSize) bytes) without catalog.db-shm: "
                        + "reading it would create that file; start the registry and back up while it runs")
            }
        }
        try Database.copySQLiteSnapshot(of: catalogPath, to: partial, unchanging: unchanging)
        return !(unchanging && lockFD < 0 && FileSystem.probe(root + "/LOCK") != .missing)
    }

    /// Copies the regular files in `keys/` and `auth/` (links to regular files followed, as a
    /// mounted secret has them), each created 0600 in a 0700 directory. Returns the files copied
    /// and the entries skipped (names starting with `.` are a mount's internals, skipped silently).
    private static func copyKeys(root: String, into dest: String) throws -> (copied: [String], skipped: [String]) {
        var copied: [String] = []
        var skipped: [String] = []
        for dir in keyDirectories where FileSystem.isDirectory(root + "/" + dir) {
            guard mkdir(dest + "/" + dir, 0o700) == 0 else { throw PosixFile.error("mkdir", dest + "/" + dir) }
            for name in try FileSystem.list(root + "/" + dir).sorted() where !name.hasPrefix(".") {
                let rel = dir + "/" + name
                let fd = open(root + "/" + rel, O_RDONLY | O_NONBLOCK | O_CLOEXEC)
                guard fd >= 0 else { throw PosixFile.error("open", root + "/" + rel) }
                let file = PosixFile(adopting: fd, path: root + "/" + rel)
                var st = stat()
                guard fstat(fd, &st) == 0 else { throw PosixFile.error("stat", file.path) }
                guard (st.st_mode & S_IFMT) == S_IFREG else {
                    skipped.append(rel)
                    continue
                }
                guard st.st_size <= maxKeyFileBytes else {
                    throw DepotError.storage("\(file.path) is \(st.st_size) bytes: not a key file; move it out of \(dir)/")
                }
                var bytes = [UInt8](repeating: 0, count: Int(st.st_size))
                let n = try bytes.withUnsafeMutableBytes { try file.read(into: $0, at: 0, upTo: $0.count) }
                try PrivateFile.create(dest + "/" + rel, Array(bytes[0..<n]))
                copied.append(rel)
            }
            try FileSystem.syncDirectory(dest + "/" + dir)
        }
        return (copied, skipped)
    }

    /// The destination made (mode 0700), or an existing empty directory of this user's that no
    /// one else may write into (so no one can plant a link in it while the backup runs); refused
    /// inside the store or around it, compared by device and inode (a bind mount is the same
    /// directory). Checked before anything is created. Returns its real path and whether it is
    /// on the store's file system.
    static func prepareDestination(_ destination: String, root: String) throws -> (String, sameFileSystem: Bool) {
        guard !destination.isEmpty else { throw DepotError.invalidArgument("backup destination is empty") }
        guard let rootPath = realPath(root), let rootID = fileID(rootPath) else {
            throw DepotError.storage("storage root \(root) does not exist")
        }
        let dest = try resolvedForCreation(destination)
        let inside = { () -> Bool in
            // Any existing ancestor of the destination (itself included) that is the root.
            var path = dest
            while true {
                if let id = fileID(path), id == rootID { return true }
                guard let slash = path.lastIndex(of: "/"), path != "/" else { return false }
                path = slash == path.startIndex ? "/" : String(path[..<slash])
            }
        }()
        let around = { () -> Bool in
            // The destination, when it exists, as an ancestor of the root.
            guard let destID = fileID(dest) else { return false }
            var path = rootPath
            while let slash = path.lastIndex(of: "/"), path != "/" {
                path = slash == path.startIndex ? "/" : String(path[..<slash])
                if fileID(path) == destID { return true }
            }
            return false
        }()
        if inside || around {
            throw DepotError.invalidArgument(
                "backup destination \(destination) is inside the store \(root) or contains it: name a directory elsewhere "
                    + "(ideally on another disk)")
        }
        var st = stat()
        if lstat(dest, &st) != 0 {
            guard errno == ENOENT else { throw PosixFile.error("stat", dest) }
            let parent = dest.lastIndex(of: "/").map { $0 == dest.startIndex ? "/" : String(dest[..<$0]) } ?? "."
            try FileSystem.createDirectory(parent)
            guard mkdir(dest, 0o700) == 0 else { throw PosixFile.error("mkdir", dest) }
            try FileSystem.syncDirectory(parent)
        } else {
            guard (st.st_mode & S_IFMT) == S_IFDIR else {
                throw DepotError.invalidArgument("backup destination \(destination) exists and is not a directory")
            }
            guard st.st_uid == geteuid(), st.st_mode & 0o022 == 0 else {
                throw DepotError.invalidArgument(
                    "backup destination \(destination) must be a directory of this user's that no one else can write into "
                        + "(chown it, then chmod 700), or a new one")
            }
            guard try FileSystem.list(dest).isEmpty else {
                throw DepotError.invalidArgument(
                    "backup destination \(destination) is not empty: name a new directory (a backup is a whole store, never merged into another)"
                )
            }
        }
        return (dest, fileID(dest)?.device == rootID.device)
    }

    /// `path` made absolute with its existing part's links resolved (`realpath`), the part that
    /// does not exist yet appended as written: without `.`, `..`, or a dangling link (where
    /// `mkdir` would create the link's target), which are refused.
    static func resolvedForCreation(_ path: String) throws -> String {
        var absolute = path
        if !path.hasPrefix("/") {
            guard let cwd = getcwd(nil, 0) else { throw PosixFile.error("getcwd", ".") }
            defer { free(cwd) }
            absolute = String(cString: cwd) + "/" + path
        }
        var existing = absolute
        var rest: [Substring] = []
        while realPath(existing) == nil {
            var st = stat()
            if lstat(existing, &st) == 0 {
                throw DepotError.invalidArgument("backup destination \(path): \(existing) is a link to nothing; name a real directory")
            }
            guard let slash = existing.lastIndex(of: "/"), existing != "/" else { break }
            rest.insert(existing[existing.index(after: slash)...], at: 0)
            existing = slash == existing.startIndex ? "/" : String(existing[..<slash])
        }
        guard let base = realPath(existing) else { throw DepotError.storage("backup destination \(path) cannot be resolved") }
        let tail = rest.filter { !$0.isEmpty }
        guard !tail.contains(where: { $0 == "." || $0 == ".." }) else {
            throw DepotError.invalidArgument("backup destination \(path): name the new directory without . or ..")
        }
        return tail.isEmpty ? base : (base == "/" ? "" : base) + "/" + tail.joined(separator: "/")
    }

    /// Brings the backup's copy of a pack to `committed` bytes, created by this backup (`have`
    /// nil) or grown from `have`: only the bytes past it are copied (in the kernel where it can),
    /// then the file is fsynced. Returns its length.
    private static func copyPack(_ source: PosixFile, rel: String, committed: Int64, into dest: String, have: Int64?) throws -> Int64 {
        let path = dest + "/" + rel
        if have == nil {
            let dir = String(path[..<path.lastIndex(of: "/")!])
            if !FileSystem.isDirectory(dir) { try FileSystem.createDirectory(dir) }
        }
        let target = try PosixFile(path: path, mode: have == nil ? .createExclusive : .readWrite)
        let from = have ?? 0
        if from < committed {
            guard PosixFile.copyRange(from: source, offset: from, to: target, at: from, length: committed - from) else {
                let code = errno
                let size = (try? source.size()) ?? -1
                if size >= 0 && size < committed {
                    throw DepotError.storage(
                        "\(source.path) is \(size) bytes but the catalog recorded \(committed) durable bytes: the store is "
                            + "damaged (run `depot fsck`)")
                }
                throw DepotError.io("copying \(source.path) to \(path) failed (\(FileSystem.Probe.errnoName(code)))")
            }
        }
        try target.sync()
        return committed
    }

    private static func copyWhole(_ source: PosixFile, size: Int64, to path: String) throws {
        let target = try PosixFile(path: path, mode: .createExclusive)
        guard PosixFile.copyRange(from: source, offset: 0, to: target, at: 0, length: size) else {
            throw DepotError.io("copying \(source.path) to \(path) failed (\(FileSystem.Probe.errnoName(errno)))")
        }
        try target.sync()
    }

    private static func syncFile(_ path: String) throws -> Int64 {
        let file = try PosixFile(path: path, mode: .readWrite)
        try file.sync()
        return try file.size()
    }

    private static func realPath(_ path: String) -> String? {
        guard let resolved = realpath(path, nil) else { return nil }
        defer { free(resolved) }
        return String(cString: resolved)
    }

    private struct FileID: Equatable {
        var device: UInt64
        var inode: UInt64
    }

    private static func fileID(_ path: String) -> FileID? {
        var st = stat()
        guard stat(path, &st) == 0 else { return nil }
        return FileID(device: UInt64(st.st_dev), inode: UInt64(st.st_ino))
    }

    private static func jsonString(_ s: String) -> String {
        var out = "\""
        for c in s.unicodeScalars {
            switch c {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case _ where c.value < 0x20:
                let hex = String(c.value, radix: 16)
                out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
            default: out.unicodeScalars.append(c)
            }
        }
        return out + "\""
    }
}
