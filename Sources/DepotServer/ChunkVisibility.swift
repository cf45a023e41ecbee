import DepotAuth
import DepotCatalog
import DepotCore
import DepotRegistry
import Foundation

/// Chunk negotiation under authentication: knowing a chunk's hash is not access. A caller is told
/// a chunk is stored, and may commit a recipe naming it, only if a repository it may pull holds
/// a blob made of it, or it proved possession by uploading the chunk's bytes (which the server
/// hashed). Otherwise the chunk is "missing" (the client uploads it; dedup still stores it once),
/// so the missing-chunks answer is no oracle of other repositories' content and a leaked recipe
/// does not open a blob.
///
/// Proofs live in the catalog (`chunk_proofs`), so a chunk uploaded through one replica may be
/// named in a recipe committed through another; they are forgotten after the write grace period
/// (upload expiry), as the staged chunks they vouch for would be. A caller who may pull every
/// repository skips all of it.
final class ChunkVisibility: Sendable {
    let policy: AuthPolicy
    let db: Database

    init(policy: AuthPolicy, db: Database) {
        self.policy = policy
        self.db = db
    }

    /// Whether the principal may see every repository (then nothing here applies).
    func seesEverything(_ p: Principal) -> Bool {
        p.access == nil && p.grants.contains { $0.role.actions.contains(.pull) && $0.repositories.contains { $0.pattern == "**" } }
    }

    func recordProof(_ p: Principal, _ hashes: [SHA256.Value]) throws {
        guard !hashes.isEmpty, !seesEverything(p) else { return }
        let now = Int64(Date().timeIntervalSince1970 * 1000)
        try db.write { try $0.recordChunkProofs(principal: p.id, hashes, now: now) }
    }

    /// The hashes among `stored` (chunks the store has) the principal may not know of.
    func hidden(_ p: Principal, _ stored: [SHA256.Value]) throws -> [SHA256.Value] {
        guard !seesEverything(p) else { return [] }
        var out: [SHA256.Value] = []
        var seen = Set<SHA256.Value>()
        try db.read { conn in
            let mine = try conn.provenChunks(principal: p.id, stored)
            for h in stored where seen.insert(h).inserted && !mine.contains(h) {
                let repos = try conn.repositoriesHoldingChunk(h)
                if !repos.contains(where: { Authorizer.canPull(p, $0, policy: policy) }) { out.append(h) }
            }
        }
        return out
    }
}
