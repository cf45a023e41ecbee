import DepotAPI
import DepotCatalog
import DepotCore

/// Pins: a pinned manifest, everything it references and the manifests of its lineage
/// ancestors are kept by garbage collection, and deleting any of them is refused (in every
/// repository: a pin protects content). A pin is removed only through the repository that made it.
extension Registry {
    /// Pins the manifest `reference` names; returns its digest.
    @discardableResult
    public func pin(_ repository: RepositoryName, _ reference: Reference, reason: String?, actor: String) throws -> Digest {
        let digest = try manifest(repository, reference).digest
        try db.write { conn in
            // Resolved above outside the transaction: checked again under the lock every manifest
            // delete takes first, so a pin never lands on a manifest deleted meanwhile.
            try conn.lock(.appends)
            guard let repo = try conn.repositoryID(repository.value) else {
                throw RegistryError(.nameUnknown, "repository \(repository) is not known")
            }
            guard try conn.manifestExists(repo: repo, digest) else {
                throw RegistryError(.manifestUnknown, "manifest \(digest) is not in \(repository) (deleted meanwhile)")
            }
            if try conn.pin(digest, repo: repo, reason: reason, actor: actor, now: Self.nowMillis()) {
                try conn.appendAudit(
                    at: Self.nowMillis(), actor: actor, action: "pin", repository: repository.value,
                    digest: digest.description, tag: nil, details: reason.map { ["reason": .string($0)] })
            }
        }
        return digest
    }

    /// Removes a pin; false when the digest was not pinned.
    @discardableResult
    public func unpin(_ repository: RepositoryName, _ reference: Reference, actor: String) throws -> Digest {
        let digest: Digest
        if case .digest(let d) = reference { digest = d } else { digest = try manifest(repository, reference).digest }
        let removed = try db.write { conn -> Bool in
            guard let repo = try conn.repositoryID(repository.value) else {
                throw RegistryError(.nameUnknown, "repository \(repository) is not known")
            }
            guard try conn.unpin(digest, repo: repo) else { return false }
            try conn.appendAudit(
                at: Self.nowMillis(), actor: actor, action: "unpin", repository: repository.value,
                digest: digest.description, tag: nil, details: nil)
            return true
        }
        guard removed else { throw RegistryError(.manifestUnknown, "\(digest) is not pinned in \(repository)") }
        return digest
    }

    /// Every pin.
    public func pins() throws -> [(digest: Digest, repository: String, reason: String?, actor: String, at: Int64)] {
        try db.read { try $0.pins() }
    }
}
