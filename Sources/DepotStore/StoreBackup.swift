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
    /// The catalog snapshot's size.
    public var catalogBytes: Int64
    /// Key files copied (`keys/`, `auth/`), relative to the root.
    public var keyFiles: [String]
    /// Snapshots taken: more than one when GC deleted a pack the first snapshot named before
    /// it was copied.
    public var attempts: Int

    enum CodingKeys: String, CodingKey {
        case destination, packs, attempts
        case packBytes = "pack_bytes"
        case catalogBytes = "catalog_bytes"
        case keyFiles = "key_files"
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
/// 4. The catalog gets its final name, then `FORMAT`, only once every pack is fsynced: a backup
///    cut short is never mistaken for a store (no `FORMAT`), and never holds a catalog whose
///    packs are missing.
///
/// The source store is only read: no lock is taken and nothing under its root is written.
public enum StoreBackup {
    /// Directories under the root copied file by file besides the catalog and packs: the
    /// pipeline signing key (`keys/`) and the token signing key (`auth/`). Without them the
    /// restored registry would sign with new keys, and deploy policies that trust the old key
    /// id would refuse its new outputs.
    static let keyDirectories = ["keys", "auth"]

    /// The catalog snapshot's name until every pack is in place.
    static let partialCatalog = "catalog.db.partial"

    /// Copies the store at `root` into `destination`, a directory that must not exist yet (or
    /// be empty), outside the store. `afterSnapshot` runs after each catalog snapshot, before
    /// any pack is copied (tests run GC there).
    public static func run(
        root: String, to destination: String, options: StoreOptions = StoreOptions(), maxAttempts: Int = 5,
        afterSnapshot: ((Int) throws -> Void)? = nil
    ) throws -> BackupReport {
        let store = try ChunkStore(root: root, options: options, readOnly: true)
        if case .postgres = store.catalog.location {
            try store.catalog.copySQLiteSnapshot(to: "") // refuses, saying what to do instead
        }
        let dest = try prepareDestination(destination, root: root)
        let partial = dest + "/" + partialCatalog
        var copied: [Int64: Int64] = [:] // pack id -> bytes in the backup's copy
        var missingBefore = Set<Int64>()
        var attempt = 0
        while true {
            attempt += 1
            if FileSystem.probe(partial) != .missing { try FileSystem.remove(partial) }
            try store.catalog.copySQLiteSnapshot(to: partial)
            try afterSnapshot?(attempt)
            let snapshot = try Database(location: .sqlite(path: partial), readOnly: true)
            let (packs, usage) = try snapshot.snapshot { conn in
                (try conn.packs(), try conn.packUsage(headerSize: PackFormat.recordHeaderSize))
            }
            var missing = Set<Int64>()
            var wanted = Set<Int64>()
            for pack in packs where !pack.deleting {
                let holdsChunks = (usage[pack.id]?.chunks ?? 0) > 0
                let rel = PackFormat.relativePath(pack.id)
                let source: PosixFile
                do {
                    source = try PosixFile(path: root + "/" + rel, mode: .read)
                } catch {
                    guard FileSystem.probe(root + "/" + rel) == .missing else { throw error }
                    // Recovery drops the row of an empty pack whose file is gone; one that holds
                    // chunks was deleted by GC after the snapshot (or is lost: see below).
                    if holdsChunks { missing.insert(pack.id) }
                    continue
                }
                wanted.insert(pack.id)
                copied[pack.id] = try copyPack(source, rel: rel, committed: pack.committedSize, into: dest, have: copied[pack.id] ?? 0)
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
                        + "(storage.backend: s3, where the bucket keeps them: back up the catalog only). The partial backup in "
                        + "\(dest) is not a store")
            }
            guard attempt < maxAttempts else {
                throw DepotError.storage(
                    "packs kept disappearing under the backup (\(attempt) catalog snapshots, GC deleting packs each time): "
                        + "run it again between GC passes. The partial backup in \(dest) is not a store")
            }
            missingBefore = missing
        }
        for dir in Set(copied.keys.map { dest + "/" + PackFormat.relativePath($0).split(separator: "/").dropLast().joined(separator: "/") })
        {
            try FileSystem.syncDirectory(dir)
        }
        try FileSystem.syncDirectory(dest + "/packs")
        let catalogBytes = try syncFile(partial)
        try FileSystem.rename(partial, dest + "/catalog.db")
        var keyFiles: [String] = []
        for dir in keyDirectories where FileSystem.isDirectory(root + "/" + dir) {
            try FileSystem.createDirectory(dest + "/" + dir)
            _ = chmod(dest + "/" + dir, 0o700)
            for name in try FileSystem.list(root + "/" + dir).sorted() {
                let rel = dir + "/" + name
                guard let (file, identity) = try PosixFile.openRegular(path: root + "/" + rel) else { continue }
                try copyWhole(file, size: identity.size, to: dest + "/" + rel, mode: 0o600) // secrets
                keyFiles.append(rel)
            }
            try FileSystem.syncDirectory(dest + "/" + dir)
        }
        let format = try PosixFile(path: root + "/FORMAT", mode: .read)
        try copyWhole(format, size: try format.size(), to: dest + "/FORMAT", mode: 0o644)
        try FileSystem.syncDirectory(dest)
        return BackupReport(
            destination: dest, packs: copied.count, packBytes: copied.values.reduce(0, +), catalogBytes: catalogBytes,
            keyFiles: keyFiles.sorted(), attempts: attempt)
    }

    /// The destination made (mode 0700: it holds the signing keys), or an empty directory
    /// that exists; refused inside the store, around it, or holding anything. Checked before
    /// anything is created.
    static func prepareDestination(_ destination: String, root: String) throws -> String {
        guard !destination.isEmpty else { throw DepotError.invalidArgument("backup destination is empty") }
        guard let rootPath = realPath(root) else { throw DepotError.storage("storage root \(root) does not exist") }
        let dest = try resolvedForCreation(destination)
        if dest == rootPath || dest.hasPrefix(rootPath + "/") || rootPath.hasPrefix(dest + "/") {
            throw DepotError.invalidArgument(
                "backup destination \(destination) is inside the store \(root) or contains it: name a directory elsewhere "
                    + "(ideally on another disk)")
        }
        switch FileSystem.probe(dest) {
        case .missing:
            try FileSystem.createDirectory(dest)
            _ = chmod(dest, 0o700)
        case .directory:
            guard try FileSystem.list(dest).isEmpty else {
                throw DepotError.invalidArgument(
                    "backup destination \(destination) is not empty: name a new directory (a backup is a whole store, never merged into another)"
                )
            }
        case .file, .other:
            throw DepotError.invalidArgument("backup destination \(destination) exists and is not a directory")
        case .failed(let code):
            throw DepotError.storage("backup destination \(destination) is unreadable (\(FileSystem.Probe.errnoName(code)))")
        }
        return dest
    }

    /// `path` made absolute with its existing part's links resolved (`realpath`), the part that
    /// does not exist yet appended as written (without `.` or `..`, which are refused).
    static func resolvedForCreation(_ path: String) throws -> String {
        var absolute = path
        if !path.hasPrefix("/") {
            guard let cwd = getcwd(nil, 0) else { throw DepotError.io("getcwd failed (errno \(errno))") }
            defer { free(cwd) }
            absolute = String(cString: cwd) + "/" + path
        }
        var existing = absolute
        var rest: [Substring] = []
        while realPath(existing) == nil {
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

    /// Brings the backup's copy of a pack to `committed` bytes: only the bytes past `have` are
    /// copied (in the kernel where it can), then the file is fsynced. Returns its length.
    private static func copyPack(_ source: PosixFile, rel: String, committed: Int64, into dest: String, have: Int64) throws -> Int64 {
        let path = dest + "/" + rel
        if have == 0 { try FileSystem.createDirectory(String(path[..<path.lastIndex(of: "/")!])) }
        let target = try PosixFile(path: path, mode: have == 0 ? .createExclusive : .readWrite)
        if have > committed {
            // A snapshot never records a smaller committed size for a pack than an earlier one;
            // cut it anyway rather than keep bytes no row describes.
            try target.truncate(to: committed)
        } else if have < committed {
            guard PosixFile.copyRange(from: source, offset: have, to: target, at: have, length: committed - have) else {
                let size = (try? source.size()) ?? -1
                if size >= 0 && size < committed {
                    throw DepotError.storage(
                        "\(source.path) is \(size) bytes but the catalog recorded \(committed) durable bytes: the store is "
                            + "damaged (run `depot fsck`); nothing was backed up from it")
                }
                throw DepotError.io("copying \(source.path) to \(path) failed (errno \(errno)); is \(dest) full?")
            }
        }
        try target.sync()
        return committed
    }

    private static func copyWhole(_ source: PosixFile, size: Int64, to path: String, mode: UInt32) throws {
        let target = try PosixFile(path: path, mode: .createExclusive)
        _ = fchmod(target.fd, mode_t(mode))
        guard PosixFile.copyRange(from: source, offset: 0, to: target, at: 0, length: size) else {
            throw DepotError.io("copying \(source.path) to \(path) failed (errno \(errno))")
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
}
