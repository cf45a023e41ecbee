import DepotCatalog
import DepotCore

/// Opening a store whose packs are objects (S3 mode).
///
/// The invariant there: a pack's object is uploaded (the upload *completed*) before the
/// transaction that commits the rows naming its bytes, and a pack is sealed by that same
/// transaction. So there are no tails to cut and nothing to fsync; the local directory holds only
/// staging copies of packs being written, which a restart discards (none was acknowledged).
///
/// As for local packs, recovery never deletes acknowledged data on its own: a missing or short
/// object is refused (serving), reported (`depot fsck`) or has its rows dropped (`fsck --repair`).
/// Objects no row names are listed by fsck, never deleted: with several catalogs or a restored
/// catalog on one prefix they may be someone else's. The only objects deleted are those of
/// packs GC had marked (`sealed = 2`, no chunk row), whose deletion a crash interrupted.
extension Recovery {
    static func runObjects(catalog: Database, files: PackFiles, objects: ObjectPacks, policy: DamagePolicy) throws -> (
        RecoveryReport, [Int64: String]
    ) {
        var report = RecoveryReport()
        let root = files.root
        let store = objects.store
        let local = try packFilesOnDisk(root: root)
        guard local.isEmpty else {
            throw DepotError.storage(
                """
                \(root)/packs holds \(local.count) local pack file(s) but storage.backend is s3 (\(store.location)): this store's \
                data is on local disk. Nothing was changed. Set storage.backend back to local (moving a local store into a bucket is \
                not supported yet).
                """)
        }
        try store.checkReachable()
        // Staging copies of packs being written when the process stopped: never acknowledged.
        let staging = root + "/staging"
        if FileSystem.isDirectory(staging) {
            for name in try FileSystem.list(staging) { try FileSystem.remove(staging + "/" + name) }
        }
        let packs = try catalog.read { try $0.packs() }
        let usage = try catalog.read { try $0.packUsage(headerSize: PackFormat.recordHeaderSize) }
        var damaged: [Int64: String] = [:]

        if policy == .refuse {
            // Serving does not list a bucket that may hold millions of objects; it checks that the
            // newest pack is there, which catches a wrong bucket, prefix or endpoint at once.
            if let newest = try catalog.read({ try $0.newestPackWithChunks() }) {
                let key = ObjectPacks.key(newest)
                let committed = packs.first { $0.id == newest }?.committedSize ?? 0
                let size = try store.size(key: key)
                if size == nil || size! < committed {
                    throw DepotError.storage(
                        """
                        \(store.location)\(key) is referenced by the catalog (\(usage[newest]?.chunks ?? 0) chunk(s)) but \
                        \(size == nil ? "missing" : "shorter than the \(committed) bytes recorded"). Nothing was changed. Check \
                        storage.s3 endpoint, bucket and prefix; if the data is really lost, run `depot fsck --repair` to drop the \
                        index rows (it lists every affected blob).
                        """)
                }
            }
        } else {
            var listed: [String: Int64] = [:]
            try store.list(prefix: "packs/") { key, size in listed[key] = size }
            var problems: [String] = []
            let known = Set(packs.map { ObjectPacks.key($0.id) })
            report.unknownObjects = listed.keys.filter { !known.contains($0) }.sorted().map { store.location + $0 }
            for pack in packs {
                let chunks = usage[pack.id]?.chunks ?? 0
                guard chunks > 0 else { continue }
                let key = ObjectPacks.key(pack.id)
                // A listing may lag on some stores: confirm an absence with a HEAD.
                let size = try listed[key] ?? store.size(key: key)
                if let size, size >= pack.committedSize { continue }
                let why = size == nil ? "missing" : "\(size!) bytes, shorter than the \(pack.committedSize) recorded"
                problems.append("\(store.location)\(key) is referenced by the catalog (\(chunks) chunk(s)) but \(why)")
                damaged[pack.id] = "pack object \(store.location)\(key) is \(why)"
                if policy == .repair {
                    var lost = Set(report.lostBlobs)
                    report.droppedChunkRows += try catalog.write { conn -> Int in
                        let keep = size ?? 0
                        for d in try conn.blobs(usingPack: pack.id, beyond: keep, headerSize: PackFormat.recordHeaderSize) {
                            lost.insert(d.description)
                        }
                        if size == nil {
                            let n = try conn.dropChunks(inPack: pack.id)
                            try conn.deletePack(pack.id)
                            return n
                        }
                        let n = try conn.dropChunks(inPack: pack.id, beyond: keep, headerSize: PackFormat.recordHeaderSize)
                        try conn.setPack(pack.id, committedSize: keep)
                        return n
                    }
                    report.lostBlobs = lost.sorted()
                }
            }
            if policy == .report { report.problems = problems }
            if policy == .repair {
                // Casts of dropped chunks can never be decoded: dropped too, their blobs named.
                let casts = try catalog.write { try $0.dropCastsWithMissingSources() }
                report.droppedChunkRows += casts.count
                report.lostBlobs = Set(report.lostBlobs).union(casts.blobs.map(\.description)).sorted()
            }
        }

        // GC deletions a crash interrupted: the catalog itself says no row names these bytes.
        for pack in packs where pack.deleting && (usage[pack.id]?.chunks ?? 0) == 0 {
            try store.delete(key: ObjectPacks.key(pack.id))
            try catalog.write { try $0.deletePack(pack.id) }
            report.gcDeletionsFinished += 1
        }
        return (report, policy == .repair ? [:] : damaged)
    }
}
