import DepotAPI
import DepotCatalog
import DepotCore
import DepotFormats
import DepotStore
import Foundation

/// What a registry garbage collection did: manifests nothing keeps, then the store's sweep.
public struct RegistryGCReport: Sendable, Codable {
    public var manifestsDeleted: Int
    public var store: GCReport

    enum CodingKeys: String, CodingKey {
        case manifestsDeleted = "manifests_deleted"
        case store
    }
}

extension Registry {
    /// Deletes manifests nothing keeps — untagged, unpinned, not an ancestor of a pinned
    /// manifest, not listed by a kept index, not a referrer of a kept manifest, older than
    /// `untaggedGraceSeconds` — then collects the store (whose roots are the blobs every
    /// remaining manifest references, declared-live blobs and recent writes). Audited.
    /// `now`: milliseconds since 1970, like every catalog time.
    public func collectGarbage(untaggedGraceSeconds: Int64? = nil, now: Int64? = nil, actor: String = "gc") throws -> RegistryGCReport {
        // A whole-second cutoff, as when the catalog counted seconds (before migration 9).
        let clock = (now ?? Self.now()) / 1000 * 1000
        let grace = (untaggedGraceSeconds ?? store.options.writeGraceSeconds) * 1000
        var deleted = 0
        // Usually nothing is garbage: found without the lock, and then no lock is taken.
        if try !db.read({ try $0.unkeptManifests(createdBefore: clock - grace, limit: 1) }).isEmpty {
            while true {
                // A batch a transaction: the appends lock it holds stops every push, tag and
                // audit write on every replica meanwhile, so it is held for one batch at a time.
                let batch = try db.write { conn -> Int in
                    // Before computing what nothing keeps: a tag, pin or deployment another
                    // replica is adding now commits first and is seen (see CatalogLock.appends).
                    try conn.lock(.appends)
                    let doomed = try conn.unkeptManifests(createdBefore: clock - grace, limit: Self.gcManifestBatch)
                    try conn.deleteManifests(doomed)
                    return doomed.count
                }
                deleted += batch
                if batch < Self.gcManifestBatch { break }
            }
        }
        if deleted > 0 { cache.invalidate() }
        // Safetensors files are scanned for fp16/bf16 tensors that are casts of stored fp32 ones.
        let report = try store.collectGarbage(now: now, tensors: store.options.castDedup ? SafetensorsLayout() : nil)
        try db.write { conn in
            try conn.appendAudit(
                at: Self.nowMillis(), actor: actor, action: "gc", repository: nil, digest: nil, tag: nil,
                details: [
                    "manifests_deleted": JSONValue(deleted), "blobs_deleted": JSONValue(report.blobsDeleted),
                    "chunks_deleted": JSONValue(report.chunksDeleted), "pack_bytes_freed": JSONValue(report.packBytesFreed),
                    "cast_chunks_derived": JSONValue(report.casts?.chunksDerived ?? 0),
                ])
        }
        return RegistryGCReport(manifestsDeleted: deleted, store: report)
    }

    /// Manifests one registry GC transaction deletes at most.
    static let gcManifestBatch = 500

    /// Audit journal entries matching `filter`, oldest first.
    public func auditLog(_ filter: AuditFilter) throws -> [AuditEntry] {
        try db.read { try $0.auditEntries(filter) }
    }

    /// Recomputes the audit hash chain.
    public func verifyAudit() throws -> AuditVerification {
        try db.read { try $0.verifyAudit() }
    }
}

extension Registry {
    /// Events after `cursor` (the outbox), oldest first.
    public func events(after cursor: Int64, limit: Int) throws -> [EventRecord] {
        try db.read { try $0.events(after: cursor, limit: limit) }
    }

    /// Webhook delivery attempts, oldest first (the newest `limit`).
    public func deliveries(webhook: String?, limit: Int) throws -> [DepotCatalog.DeliveryRecord] {
        try db.read { try $0.deliveries(webhook: webhook, limit: limit) }
    }
}
