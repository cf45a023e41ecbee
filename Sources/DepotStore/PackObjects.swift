import DepotCatalog
import DepotCore
import Dispatch

/// The object store that holds sealed packs in S3 mode (`storage.backend: s3`). Implemented over
/// S3 by `DepotObjectStore.S3PackObjectStore`; the store only needs these few operations, each
/// synchronous (see `S3Client` for why that is safe here).
///
/// Why this seam and not a protocol over local files too: the local backend's crash handling is
/// about files (tails cut back to `committed_size`, unknown files quarantined, `ENOENT` told
/// apart from `EIO`), none of which exists for immutable objects, and it must stay exactly as it
/// is. So `PackFiles` keeps reading local packs with `pread` and, when the store has a
/// `PackObjectStore`, reads records from it instead; the appender, GC, recovery and fsck each have
/// one branch for "objects" where the two really differ (durability is an upload; a pack is
/// immutable once durable; deleting is a DELETE; presence is a listing or a HEAD).
public protocol PackObjectStore: Sendable {
    /// `s3://bucket/prefix`, for messages.
    var location: String { get }
    /// Fails with a message that says what to do when the store cannot be used (no bucket,
    /// refused credentials, unreachable endpoint).
    func checkReachable() throws
    /// Creates `key` from the first `size` bytes of `file`, only if no object has that key
    /// (a conditional write); throws `PackObjectConflict` when one does. Returns once the object is
    /// durable (the upload completed).
    func create(key: String, from file: PosixFile, size: Int64) throws
    /// Exactly `length` bytes at `offset` of `key`. A missing object throws `DepotError.io`.
    func read(key: String, offset: Int64, length: Int) throws -> [UInt8]
    /// Several reads in flight at once; one result per request, in order.
    func readMany(_ requests: [(key: String, offset: Int64, length: Int)]) -> [Result<[UInt8], any Error>]
    /// The object's size, or nil when there is no object with that key.
    func size(key: String) throws -> Int64?
    /// Deletes `key` (a missing one is fine).
    func delete(key: String) throws
    /// Every object whose key starts with `prefix`, with its size.
    func list(prefix: String, _ body: (_ key: String, _ size: Int64) throws -> Void) throws
}

/// A conditional create found the key taken: another writer (a second catalog on the same
/// prefix, or a catalog restored from a backup) owns an object there. Nothing was overwritten.
public struct PackObjectConflict: Error, CustomStringConvertible {
    public var key: String
    public init(key: String) { self.key = key }
    public var description: String { "an object already exists at \(key) (conditional write refused)" }
}

/// The read side of S3 mode: ranged GETs of single records, a bounded cache of hot records, and
/// read-ahead that fetches the records of a batch with few, coalesced GETs.
///
/// Every record fetched from the object store is verified fully (header against the index,
/// CRC-32C, decoding *and* SHA-256) before it is used the first time, whatever
/// `read_verification` says: bytes from another machine are hostile, CRC-32C only detects
/// accidents. A record in the cache has passed that check and is then read like a local one.
final class ObjectPacks: Sendable {
    let store: any PackObjectStore
    let cache: RecordCache
    /// Records closer than this are fetched with one GET (the gap is read and thrown away).
    static let coalesceGap: Int64 = 128 << 10
    /// The most one coalesced GET asks for.
    static let maxGet: Int64 = 8 << 20

    init(store: any PackObjectStore, cacheBytes: Int) {
        self.store = store
        cache = RecordCache(budget: cacheBytes)
    }

    static func key(_ pack: Int64) -> String { PackFormat.relativePath(pack) }

    /// Fills `header` and `payload` with the record at `offset` of `pack`. Returns true when the
    /// record has not been verified yet (the caller verifies with SHA-256, then `markVerified`).
    func readRecord(pack: Int64, at offset: Int64, header: UnsafeMutableRawBufferPointer, payload: UnsafeMutableRawBufferPointer) throws
        -> Bool
    {
        let total = header.count + payload.count
        let k = RecordCache.Key(pack: pack, offset: offset)
        let entry: RecordCache.Entry
        if let cached = cache.get(k), cached.bytes.count == total {
            entry = cached
        } else {
            let bytes = try store.read(key: Self.key(pack), offset: offset, length: total)
            guard bytes.count == total else {
                throw DepotError.io("\(store.location)\(Self.key(pack)): read \(bytes.count) bytes at \(offset), expected \(total)")
            }
            entry = RecordCache.Entry(bytes: bytes, verified: false)
            cache.put(k, entry)
        }
        entry.bytes.withUnsafeBytes { b in
            header.copyMemory(from: UnsafeRawBufferPointer(rebasing: b[0..<header.count]))
            payload.copyMemory(from: UnsafeRawBufferPointer(rebasing: b[header.count..<total]))
        }
        return !entry.verified
    }

    func markVerified(pack: Int64, at offset: Int64) { cache.markVerified(.init(pack: pack, offset: offset)) }

    /// Fetches the records at `locations` that are not cached, coalescing neighbours of one pack
    /// into one GET, all GETs in flight at once. Failures are ignored: the read that follows
    /// fetches the record alone and reports the error.
    func prefetch(_ locations: [ChunkLocation]) {
        // Worth it only when the cache can hold what is fetched.
        guard cache.budget >= 4 * Int(Self.maxGet) else { return }
        var byPack: [Int64: [ChunkLocation]] = [:]
        for l in locations where cache.get(.init(pack: l.pack, offset: l.offset), touch: false) == nil {
            byPack[l.pack, default: []].append(l)
        }
        guard !byPack.isEmpty else { return }
        var runs: [(pack: Int64, start: Int64, end: Int64, records: [ChunkLocation])] = []
        for (pack, locs) in byPack {
            for l in locs.sorted(by: { $0.offset < $1.offset }) {
                let end = l.offset + Int64(PackFormat.recordHeaderSize + l.storedLength)
                if var last = runs.last, last.pack == pack, l.offset >= last.end, l.offset - last.end <= Self.coalesceGap,
                    end - last.start <= Self.maxGet
                {
                    last.end = end
                    last.records.append(l)
                    runs[runs.count - 1] = last
                } else {
                    runs.append((pack, l.offset, end, [l]))
                }
            }
        }
        // Records fetched alone are read by the caller anyway; only runs of two or more save GETs.
        let worth = runs.filter { $0.records.count > 1 }
        guard !worth.isEmpty else { return }
        let results = store.readMany(worth.map { (Self.key($0.pack), $0.start, Int($0.end - $0.start)) })
        for (run, result) in zip(worth, results) {
            guard case .success(let bytes) = result, bytes.count == Int(run.end - run.start) else { continue }
            for l in run.records {
                let from = Int(l.offset - run.start)
                let to = from + PackFormat.recordHeaderSize + l.storedLength
                cache.put(.init(pack: l.pack, offset: l.offset), .init(bytes: Array(bytes[from..<to]), verified: false))
            }
        }
    }
}

/// A bounded cache of pack records (header + stored payload), by (pack, offset). Two
/// generations of at most half the budget each: hits in the old one move to the young one, and
/// when the young one is full it becomes the old one (the old one is dropped). That is LRU to
/// within a factor of two, with O(1) work per operation and no list to maintain.
final class RecordCache: Sendable {
    struct Key: Hashable, Sendable {
        var pack: Int64
        var offset: Int64
    }
    struct Entry: Sendable {
        var bytes: [UInt8]
        var verified: Bool
    }
    private struct State {
        var young: [Key: Entry] = [:]
        var old: [Key: Entry] = [:]
        var youngBytes = 0
    }
    let budget: Int
    private let state = Locked(State())

    init(budget: Int) { self.budget = max(0, budget) }

    func get(_ k: Key, touch: Bool = true) -> Entry? {
        state.withLock { s in
            if let e = s.young[k] { return e }
            guard let e = s.old[k] else { return nil }
            if touch {
                s.old.removeValue(forKey: k)
                Self.insertYoung(&s, k, e, half: budget / 2)
            }
            return e
        }
    }

    func put(_ k: Key, _ e: Entry) {
        guard e.bytes.count <= budget / 2 else { return }
        state.withLock { s in
            s.old.removeValue(forKey: k)
            Self.insertYoung(&s, k, e, half: budget / 2)
        }
    }

    private static func insertYoung(_ s: inout State, _ k: Key, _ e: Entry, half: Int) {
        if let previous = s.young.removeValue(forKey: k) { s.youngBytes -= previous.bytes.count }
        if s.youngBytes + e.bytes.count > half {
            s.old = s.young
            s.young = [:]
            s.youngBytes = 0
        }
        s.young[k] = e
        s.youngBytes += e.bytes.count
    }

    func remove(_ k: Key) {
        state.withLock { s in
            if let e = s.young.removeValue(forKey: k) { s.youngBytes -= e.bytes.count }
            s.old.removeValue(forKey: k)
        }
    }

    func markVerified(_ k: Key) {
        state.withLock { s in
            s.young[k]?.verified = true
            s.old[k]?.verified = true
        }
    }

    /// Drops every record of `pack` (GC deleted it).
    func remove(pack: Int64) {
        state.withLock { s in
            for k in s.young.keys where k.pack == pack { s.youngBytes -= s.young.removeValue(forKey: k)!.bytes.count }
            for k in s.old.keys where k.pack == pack { s.old.removeValue(forKey: k) }
        }
    }

    var bytes: Int { state.withLock { s in s.youngBytes + s.old.values.reduce(0) { $0 + $1.bytes.count } } }
}
