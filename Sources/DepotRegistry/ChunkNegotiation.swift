import DepotCatalog
import DepotCore
import DepotStore

/// Chunk negotiation scoped to repositories: a recipe commit links the new blob into the
/// repository; recipes and chunk records are served only for blobs visible in it.
extension Registry {
    /// Blob `digest` of `repository`, or BLOB_UNKNOWN.
    public func visibleBlob(_ repository: RepositoryName, _ digest: Digest) throws -> BlobRecord {
        guard let blob = try blob(repository, digest) else {
            throw RegistryError(.blobUnknown, "blob \(digest) is not in \(repository)")
        }
        return blob
    }

    /// Completes a recipe commit: verifies the digest, then links the blob into the repository.
    public func finishRecipeCommit(
        _ repository: RepositoryName, _ committer: RecipeCommitter, expecting digest: Digest, states: BlobHashStates? = nil
    ) throws -> BlobRecord {
        do {
            let record = try committer.finish(expecting: digest, states: states)
            try link(repository, digest)
            return record
        } catch let e as DepotError {
            if case .chunkUnknown(let m) = e { throw RegistryError(.chunkUnknown, m, kind: .invalid) }
            throw e
        }
    }
}
