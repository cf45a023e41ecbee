import DepotCore
import DepotStore
import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// A local, bounded, least-recently-used cache of pulled files, whose chunks later pulls read
/// instead of fetching them: pulling v2 of a model after v1 moves only the chunks v2 changed.
///
/// Each entry is a whole verified file and its recipe, under `<root>/files/`:
///
///     <digest hex>          the file: a hard link to the pulled file (a copy when the cache is on
///                           another file system), so a pull writes each byte once
///     <digest hex>.recipe   its chunks, in the layout below
///
/// The recipe layout (version 1, little-endian):
///
///     offset  size
///          0     8  magic "DPCACHE1"
///          8     8  the file's size: the sum of the lengths
///         16     8  n, the number of chunks
///         24   36n  n × (SHA-256 of the chunk: 32 bytes, its length: UInt32)
///
/// An entry exists once its recipe does: the file is renamed into place first, the recipe
/// last. What a pull copies from an entry is checked by the pulled file's digest, because the
/// file is also the user's (a hard link shares its bytes: editing the pulled file in place
/// edits the entry): when that check fails, the pull hashes its chunks one by one, drops the
/// entries that gave a bad one and fetches those chunks again. Use
/// refreshes the recipe's modification time; `trim` removes the least recently used entries
/// until the files fit `maxBytes` (a file counts in full even when the user's link to it
/// shares its blocks).
///
/// Before this layout the cache held one file per chunk under `<root>/chunks/`; `trim` removes
/// those files (never read again), and nothing else there.
public final class ChunkCache: Sendable {
    public let root: String
    public let maxBytes: Int64
    /// Whether `add` links the pulled file (else it copies it). A caller that hands its pulled
    /// files to someone else (the runner gives a stage's input to the stage's uid with
    /// `chown`) must not share their inodes with the cache.
    public let linking: Bool

    static let magic: [UInt8] = Array("DPCACHE1".utf8)
    static let headerSize = 24
    static let entrySize = 36
    /// Bounds a recipe file read from disk: as many chunks as a registry recipe may have
    /// (`RecipeCommitter.maxEntries`), 36 MiB of recipe.
    static let maxChunks = 1 << 20

    public init(root: String, maxBytes: Int64, linking: Bool = true) throws {
        self.root = root
        self.maxBytes = maxBytes
        self.linking = linking
        do {
            try FileManager.default.createDirectory(atPath: root + "/files", withIntermediateDirectories: true)
        } catch {
            throw ClientError("cannot create the chunk cache at \(root): \(error.localizedDescription)")
        }
    }

    /// `$DEPOT_CACHE`, else `$XDG_CACHE_HOME/depot`, else `~/.cache/depot`.
    public static var defaultRoot: String {
        let env = ProcessInfo.processInfo.environment
        if let d = env["DEPOT_CACHE"], !d.isEmpty { return d }
        if let x = env["XDG_CACHE_HOME"], !x.isEmpty { return x + "/depot" }
        return NSHomeDirectory() + "/.cache/depot"
    }

    var filesDirectory: String { root + "/files" }
    func dataPath(_ entry: String) -> String { "\(root)/files/\(entry)" }
    func recipePath(_ entry: String) -> String { "\(root)/files/\(entry).recipe" }

    /// Where one chunk lies in an entry.
    public struct Location: Sendable, Equatable {
        /// The entry's name: its file's digest, hex.
        public var entry: String
        public var offset: Int64
        public var length: Int
    }

    /// Where the cache holds each chunk, read from every recipe once (~36 bytes a chunk
    /// cached: 12 MB for 20 GiB); a pull builds one and asks it for each of its files.
    public final class Index: Sendable {
        private let locations: Locked<[SHA256.Value: Location]>

        init(_ locations: [SHA256.Value: Location]) { self.locations = Locked(locations) }

        public var count: Int { locations.withLock { $0.count } }

        /// A cached copy of each of `wanted` the index knows.
        public func locate(_ wanted: some Sequence<SHA256.Value>) -> [SHA256.Value: Location] {
            locations.withLock { all in
                var found: [SHA256.Value: Location] = [:]
                for h in wanted { if let l = all[h] { found[h] = l } }
                return found
            }
        }

        /// Adds the chunks of an entry just added (those the index has no copy of yet).
        public func add(entry: String, recipe: [ChunkRef]) {
            locations.withLock { all in
                var offset: Int64 = 0
                for c in recipe {
                    if all[c.hash] == nil { all[c.hash] = Location(entry: entry, offset: offset, length: c.length) }
                    offset += Int64(c.length)
                }
            }
        }
    }

    public func index() -> Index {
        var all: [SHA256.Value: Location] = [:]
        for name in (try? FileSystem.list(filesDirectory)) ?? [] where name.hasSuffix(".recipe") {
            let entry = String(name.dropLast(".recipe".count))
            guard Self.isEntryName(entry), let recipe = readRecipe(entry) else { continue }
            var offset: Int64 = 0
            for c in recipe {
                if all[c.hash] == nil { all[c.hash] = Location(entry: entry, offset: offset, length: c.length) }
                offset += Int64(c.length)
            }
        }
        return Index(all)
    }

    /// A cached copy of each of `wanted` the cache has. Reads every recipe: for one-off
    /// lookups; a pull builds one `index()` and asks it for each file.
    public func locate(_ wanted: Set<SHA256.Value>) -> [SHA256.Value: Location] { index().locate(wanted) }

    static func isEntryName(_ s: String) -> Bool {
        s.utf8.count == 64 && s.utf8.allSatisfy { (0x30...0x39).contains($0) || (0x61...0x66).contains($0) }
    }

    /// An entry's recipe; nil when it is missing or not one. A recipe of this version that
    /// does not add up is dropped with its entry; another version's is left alone (a newer
    /// client may share the cache).
    func readRecipe(_ entry: String) -> [ChunkRef]? {
        guard let (file, id) = try? PosixFile.openRegular(path: recipePath(entry)), id.size >= Int64(Self.magic.count) else { return nil }
        var magic = [UInt8](repeating: 0, count: Self.magic.count)
        guard (try? magic.withUnsafeMutableBytes { try file.read(into: $0, at: 0) }) != nil, magic == Self.magic else { return nil }
        let size = id.size
        guard size >= Int64(Self.headerSize), (size - Int64(Self.headerSize)) % Int64(Self.entrySize) == 0,
            (size - Int64(Self.headerSize)) / Int64(Self.entrySize) <= Int64(Self.maxChunks)
        else {
            drop(entry)
            return nil
        }
        var bytes = [UInt8](repeating: 0, count: Int(size))
        guard (try? bytes.withUnsafeMutableBytes { try file.read(into: $0, at: 0) }) != nil else { return nil }
        let parsed = bytes.withUnsafeBytes { p -> [ChunkRef]? in
            let total = p.loadUnaligned(fromByteOffset: 8, as: UInt64.self).littleEndian
            let n = p.loadUnaligned(fromByteOffset: 16, as: UInt64.self).littleEndian
            guard n == UInt64((p.count - Self.headerSize) / Self.entrySize) else { return nil }
            var sum: UInt64 = 0
            var refs: [ChunkRef] = []
            refs.reserveCapacity(Int(n))
            for i in 0..<Int(n) {
                let at = Self.headerSize + i * Self.entrySize
                let length = p.loadUnaligned(fromByteOffset: at + 32, as: UInt32.self).littleEndian
                guard length > 0, length <= UInt32(ChunkerParameters.v1.maxSize) else { return nil }
                sum += UInt64(length) // ≤ 2^20 × 2^32: no overflow
                refs.append(ChunkRef(hash: SHA256.Value(bytes: UnsafeRawBufferPointer(rebasing: p[at..<(at + 32)])), length: Int(length)))
            }
            return sum == total ? refs : nil
        }
        if parsed == nil { drop(entry) }
        return parsed
    }

    /// An entry's file, open for reading; nil when it is gone (its recipe is then dropped too)
    /// or cannot be opened.
    public func open(_ entry: String) -> PosixFile? {
        guard Self.isEntryName(entry) else { return nil }
        do {
            guard let (file, _) = try PosixFile.openRegular(path: dataPath(entry)) else {
                drop(entry)
                return nil
            }
            return file
        } catch {
            return nil
        }
    }

    /// Marks entries recently used.
    public func touch(_ entries: some Sequence<String>) {
        for entry in entries where Self.isEntryName(entry) { utimes(recipePath(entry), nil) }
    }

    /// Adds a complete, verified file (open as `file`) whose chunks are `recipe`: a hard link
    /// to the open file itself (`/proc/self/fd`, so whatever is at its path by now does not
    /// matter) when `linking` and the cache is on its file system, else a copy
    /// (`copy_file_range`: the kernel copies, or shares the blocks where the file system can).
    /// Failures are ignored (false): the cache is an optimisation.
    @discardableResult
    public func add(file: PosixFile, digest: Digest, recipe: [ChunkRef]) -> Bool {
        // A file over the whole bound is not kept: trimming to fit would empty the cache.
        guard maxBytes > 0, recipe.count <= Self.maxChunks, let id = try? file.identity(), id.size <= maxBytes else { return false }
        let entry = digest.hex
        let temp = "\(filesDirectory)/.\(entry).\(getpid()).\(UInt32.random(in: 0...UInt32.max)).tmp"
        var linked = false
        if linking, linkat(AT_FDCWD, "/proc/self/fd/\(file.fd)", AT_FDCWD, temp, AT_SYMLINK_FOLLOW) == 0 {
            var st = stat()
            linked = lstat(temp, &st) == 0 && UInt64(st.st_ino) == id.inode && UInt64(st.st_dev) == id.device
            if !linked { unlink(temp) }
        }
        if !linked {
            guard let to = try? PosixFile(path: temp, mode: .createExclusive),
                PosixFile.copyRange(from: file, offset: 0, to: to, at: 0, length: id.size)
            else {
                unlink(temp)
                return false
            }
        }
        var bytes = Self.magic
        bytes.reserveCapacity(Self.headerSize + Self.entrySize * recipe.count)
        func put64(_ v: UInt64) { withUnsafeBytes(of: v.littleEndian) { bytes.append(contentsOf: $0) } }
        put64(UInt64(recipe.reduce(Int64(0)) { $0 + Int64($1.length) }))
        put64(UInt64(recipe.count))
        for c in recipe {
            withUnsafeBytes(of: c.hash.a.bigEndian) { bytes.append(contentsOf: $0) }
            withUnsafeBytes(of: c.hash.b.bigEndian) { bytes.append(contentsOf: $0) }
            withUnsafeBytes(of: c.hash.c.bigEndian) { bytes.append(contentsOf: $0) }
            withUnsafeBytes(of: c.hash.d.bigEndian) { bytes.append(contentsOf: $0) }
            withUnsafeBytes(of: UInt32(c.length).littleEndian) { bytes.append(contentsOf: $0) }
        }
        let recipeTemp = temp + ".recipe"
        guard let out = try? PosixFile(path: recipeTemp, mode: .createExclusive),
            (try? bytes.withUnsafeBytes { try out.write($0, at: 0) }) != nil,
            rename(temp, dataPath(entry)) == 0, rename(recipeTemp, recipePath(entry)) == 0
        else {
            unlink(temp)
            unlink(recipeTemp)
            return false
        }
        return true
    }

    /// Removes an entry, its recipe first. (Another process adding the same entry at that
    /// moment can leave a recipe without its file: `open` and `trim` drop such a recipe.)
    func drop(_ entry: String) {
        unlink(recipePath(entry))
        unlink(dataPath(entry))
    }

    /// Total bytes of entries' files.
    public func size() -> Int64 { entries().reduce(0) { $0 + $1.size } }

    /// Removes least recently used entries until the cache holds at most `maxBytes`; what an
    /// interrupted add left behind (its inode changed over an hour ago: `link` and `rename`
    /// change the change time, a pulled file's modification time may be old); recipes whose
    /// file is gone; and the older per-chunk layout. Returns the bytes removed.
    @discardableResult
    public func trim(now: Date = Date()) -> Int64 {
        var removed: Int64 = 0
        removed += removeLegacyChunks()
        let now = Int64(now.timeIntervalSince1970 * 1e9)
        let names = Set((try? FileSystem.list(filesDirectory)) ?? [])
        for name in names {
            let path = filesDirectory + "/" + name
            if name.hasSuffix(".recipe"), Self.isEntryName(String(name.dropLast(".recipe".count))) {
                if !names.contains(String(name.dropLast(".recipe".count))) { unlink(path) } // its file is gone
                continue
            }
            let leftover = name.hasPrefix(".") && (name.hasSuffix(".tmp") || name.hasSuffix(".tmp.recipe"))
            let orphan = Self.isEntryName(name) && !names.contains(name + ".recipe")
            guard leftover || orphan, let st = Self.fileStat(path), now - st.changed > 3_600_000_000_000 else { continue }
            if unlink(path) == 0 { removed += st.size }
        }
        var all = entries()
        var total = all.reduce(0) { $0 + $1.size }
        guard total > maxBytes else { return removed }
        all.sort { $0.used < $1.used }
        for e in all where total > maxBytes {
            drop(e.entry)
            total -= e.size
            removed += e.size
        }
        return removed
    }

    /// Removes what the older layout left: `chunks/<2 hex>/<64 hex>` files (and their
    /// `.<pid>.<n>.tmp` forms), nothing else, never through a link.
    private func removeLegacyChunks() -> Int64 {
        let base = root + "/chunks"
        var st = stat()
        guard lstat(base, &st) == 0, (st.st_mode & S_IFMT) == S_IFDIR, let subs = try? FileSystem.list(base) else { return 0 }
        var removed: Int64 = 0
        for sub in subs where sub.utf8.count == 2 && sub.utf8.allSatisfy({ (0x30...0x39).contains($0) || (0x61...0x66).contains($0) }) {
            let dir = base + "/" + sub
            guard lstat(dir, &st) == 0, (st.st_mode & S_IFMT) == S_IFDIR else { continue }
            for name in (try? FileSystem.list(dir)) ?? [] {
                let hex = String(name.prefix(64))
                guard Self.isEntryName(hex), hex.hasPrefix(sub), name == hex || (name.hasPrefix(hex + ".") && name.hasSuffix(".tmp")),
                    let file = Self.fileStat(dir + "/" + name), unlink(dir + "/" + name) == 0
                else { continue }
                removed += file.size
            }
            rmdir(dir)
        }
        rmdir(base)
        return removed
    }

    /// `lstat`: a regular file's size, modification and change times (ns); nil for anything else.
    static func fileStat(_ path: String) -> (size: Int64, modified: Int64, changed: Int64)? {
        var st = stat()
        guard lstat(path, &st) == 0, (st.st_mode & S_IFMT) == S_IFREG else { return nil }
        return (
            Int64(st.st_size), Int64(st.st_mtim.tv_sec) * 1_000_000_000 + Int64(st.st_mtim.tv_nsec),
            Int64(st.st_ctim.tv_sec) * 1_000_000_000 + Int64(st.st_ctim.tv_nsec)
        )
    }

    private func entries() -> [(entry: String, size: Int64, used: Int64)] {
        var out: [(String, Int64, Int64)] = []
        for name in (try? FileSystem.list(filesDirectory)) ?? [] where name.hasSuffix(".recipe") {
            let entry = String(name.dropLast(".recipe".count))
            guard Self.isEntryName(entry), let recipe = Self.fileStat(recipePath(entry)), let data = Self.fileStat(dataPath(entry)) else {
                continue
            }
            out.append((entry, data.size, recipe.modified))
        }
        return out
    }
}
