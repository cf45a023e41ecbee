import DepotAuth
import DepotCatalog
import DepotCore
import DepotRegistry

/// Chunk negotiation under authentication: knowing a chunk's hash is not access. A caller is told
/// a chunk is stored, and may commit a recipe naming it, only if a repository it may pull holds
/// a blob made of it, or it proved possession by uploading the chunk's bytes (which the server
/// hashed). Otherwise the chunk is "missing" (the client uploads it; dedup still stores it once),
/// so the missing-chunks answer is no oracle of other repositories' content and a leaked recipe
/// does not open a blob.
///
/// Proofs live in this process (bounded; an upload and its commit go to one server). A caller
/// who may pull every repository skips all of it.
final class ChunkVisibility: Sendable {
    let policy: AuthPolicy
    let db: Database
    /// Chunks each principal uploaded, by principal id.
    private let proven = Locked<(byPrincipal: [String: Set<SHA256.Value>], count: Int)>(([:], 0))
    static let maxProofs = 1 << 20

    init(policy: AuthPolicy, db: Database) {
        self.policy = policy
        self.db = db
    }

    /// Whether the principal may see every repository (then nothing here applies).
    func seesEverything(_ p: Principal) -> Bool {
        p.access == nil && p.grants.contains { $0.role.actions.contains(.pull) && $0.repositories.contains { $0.pattern == "**" } }
    }

    func recordProof(_ p: Principal, _ hashes: [SHA256.Value]) {
        guard !hashes.isEmpty, !seesEverything(p) else { return }
        proven.withLock { state in
            if state.count + hashes.count > Self.maxProofs {
                // Forget everyone's proofs: a later commit then asks for the chunks again.
                state = ([:], 0)
            }
            var set = state.byPrincipal[p.id] ?? []
            for h in hashes where set.insert(h).inserted { state.count += 1 }
            state.byPrincipal[p.id] = set
        }
    }

    /// The hashes among `stored` (chunks the store has) the principal may not know of.
    func hidden(_ p: Principal, _ stored: [SHA256.Value]) throws -> [SHA256.Value] {
        guard !seesEverything(p) else { return [] }
        let mine = proven.withLock { $0.byPrincipal[p.id] ?? [] }
        var out: [SHA256.Value] = []
        var seen = Set<SHA256.Value>()
        try db.read { conn in
            for h in stored where seen.insert(h).inserted && !mine.contains(h) {
                let repos = try conn.repositoriesHoldingChunk(h)
                if !repos.contains(where: { Authorizer.canPull(p, $0, policy: policy) }) { out.append(h) }
            }
        }
        return out
    }
}
