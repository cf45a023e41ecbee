import DepotCore
import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// A local, bounded, least-recently-used cache of raw chunks, one file per chunk under
/// `<root>/chunks/<2 hex>/<64 hex>`. Entries are written to a temporary name and renamed, and
/// every read is verified against the chunk's SHA-256 by the caller: a damaged entry is
/// removed and fetched again. Use (reads) refreshes an entry's modification time; `trim`
/// removes the least recently used entries until the cache fits `maxBytes`.
public final class ChunkCache: Sendable {
    public let root: String
    public let maxBytes: Int64

    public init(root: String, maxBytes: Int64) throws {
        self.root = root
        self.maxBytes = maxBytes
        do {
            try FileManager.default.createDirectory(atPath: root + "/chunks", withIntermediateDirectories: true)
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

    func path(_ hash: SHA256.Value) -> String {
        let hex = hash.hex
        return "\(root)/chunks/\(hex.prefix(2))/\(hex)"
    }

    func contains(_ hash: SHA256.Value) -> Bool { access(path(hash), F_OK) == 0 }

    /// Reads a verified entry into `output` (its exact length). False when absent or damaged
    /// (a damaged entry is removed).
    func read(_ hash: SHA256.Value, into output: UnsafeMutableRawBufferPointer) -> Bool {
        let p = path(hash)
        guard let file = try? PosixFile(path: p, mode: .read) else { return false }
        guard (try? file.size()) == Int64(output.count), (try? file.read(into: output, at: 0)) != nil,
            SHA256.hash(UnsafeRawBufferPointer(output)) == hash
        else {
            unlink(p)
            return false
        }
        utimes(p, nil) // recently used
        return true
    }

    /// Stores a verified chunk. Failures (a full disk) are ignored: the cache is an optimisation.
    func write(_ hash: SHA256.Value, _ bytes: UnsafeRawBufferPointer) {
        let p = path(hash)
        let dir = String(p[..<p.lastIndex(of: "/")!])
        mkdir(dir, 0o755)
        let temp = "\(p).\(getpid()).\(UInt32.random(in: 0...UInt32.max)).tmp"
        guard let file = try? PosixFile(path: temp, mode: .createExclusive) else { return }
        if (try? file.write(bytes)) != nil {
            rename(temp, p)
        } else {
            unlink(temp)
        }
    }

    func remove(_ hash: SHA256.Value) { unlink(path(hash)) }

    /// Total bytes of entries.
    public func size() -> Int64 { entries().reduce(0) { $0 + $1.size } }

    /// Removes least recently used entries until the cache holds at most `maxBytes`.
    /// Returns the bytes removed.
    @discardableResult
    public func trim() -> Int64 {
        var all = entries()
        var total = all.reduce(0) { $0 + $1.size }
        guard total > maxBytes else { return 0 }
        all.sort { $0.used < $1.used }
        var removed: Int64 = 0
        for e in all where total > maxBytes {
            if unlink(e.path) == 0 {
                total -= e.size
                removed += e.size
            }
        }
        return removed
    }

    private func entries() -> [(path: String, size: Int64, used: Int64)] {
        var out: [(String, Int64, Int64)] = []
        let base = root + "/chunks"
        for sub in (try? FileSystem.list(base)) ?? [] {
            let dir = base + "/" + sub
            for name in (try? FileSystem.list(dir)) ?? [] {
                var st = stat()
                let p = dir + "/" + name
                if stat(p, &st) == 0, (st.st_mode & S_IFMT) == S_IFREG {
                    out.append((p, Int64(st.st_size), Int64(st.st_mtim.tv_sec) * 1_000_000_000 + Int64(st.st_mtim.tv_nsec)))
                }
            }
        }
        return out
    }
}
