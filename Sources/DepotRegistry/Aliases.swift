import DepotAPI
import DepotCatalog
import DepotCore
import Foundation

/// Aliases are tags with memory: every move is journaled (from, to, actor, time, reason), a
/// move can require the current digest (compare-and-swap), protected aliases move only through
/// these calls, and the journal answers "what did it point at, at time T" and rollbacks.
extension Registry {
    /// Points `alias` at `digest` (a manifest of the repository). With `expect`, the alias must
    /// currently point there (412 otherwise).
    @discardableResult
    public func setAlias(
        _ repository: RepositoryName, _ alias: String, to digest: Digest, expect: Digest? = nil,
        actor: String, reason: String?, action: String = "alias"
    ) throws -> Digest? {
        guard Reference.isValidTag(alias) else { throw RegistryError(.tagInvalid, "'\(alias.prefix(200))' is not a valid tag") }
        let previous = try db.write { conn in
            try setAlias(conn, repository, alias, to: digest, expect: expect, actor: actor, reason: reason, action: action)
        }
        cache.invalidate()
        return previous
    }

    /// `setAlias` inside the caller's transaction (so a deployment's state and its alias move
    /// together). The caller invalidates caches with `aliasesChanged()` after committing.
    @discardableResult
    public func setAlias(
        _ conn: any CatalogConnection, _ repository: RepositoryName, _ alias: String, to digest: Digest, expect: Digest? = nil,
        actor: String, reason: String?, action: String = "alias"
    ) throws -> Digest? {
        guard Reference.isValidTag(alias) else { throw RegistryError(.tagInvalid, "'\(alias.prefix(200))' is not a valid tag") }
        // Before the existence check: a delete of the manifest takes it first too, so it either
        // committed (the check fails) or waits for this move and then sees the alias.
        try conn.lock(.appends)
        guard let repo = try conn.repositoryID(repository.value) else {
            throw RegistryError(.nameUnknown, "repository \(repository) is not known")
        }
        guard try conn.manifestExists(repo: repo, digest) else {
            throw RegistryError(.manifestUnknown, "manifest \(digest) is not in \(repository)")
        }
        let current = try checkTagMove(
            conn, repo: repo, repository, alias, to: digest, actor: Actor(actor, viaAliasAPI: true), expect: expect)
        guard current != digest else { return current }
        let now = Self.nowMillis()
        try conn.setTag(repo: repo, alias, to: digest, actor: actor, reason: reason, now: now)
        var details: [String: JSONValue] = [:]
        if let current { details["from"] = .string(current.description) }
        if let reason { details["reason"] = .string(reason) }
        try conn.appendAudit(
            at: now, actor: actor, action: action, repository: repository.value,
            digest: digest.description, tag: alias, details: details)
        var event: [String: JSONValue] = [
            "tag": .string(alias), "digest": .string(digest.description), "actor": .string(actor), "alias": true, "action": .string(action),
        ]
        if let current { event["previous"] = .string(current.description) }
        if let reason { event["reason"] = .string(reason) }
        try conn.appendEvent(type: "tag.moved", at: now, repository: repository.value, fields: event)
        return current
    }

    /// Drops cached tag resolutions after an alias moved inside a caller's transaction.
    public func aliasesChanged() { cache.invalidate() }

    /// Every move of the alias, oldest first.
    public func aliasHistory(_ repository: RepositoryName, _ alias: String, newest: Int? = nil) throws -> [TagMove] {
        try db.read { conn in
            guard let repo = try conn.repositoryID(repository.value) else {
                throw RegistryError(.nameUnknown, "repository \(repository) is not known")
            }
            return try conn.tagHistory(repo: repo, alias, newest: newest)
        }
    }

    /// Moves the alias back: to `to` (a digest it pointed at before), or `steps` moves back in
    /// its journal (1 = the digest before the current one). Returns (from, to).
    public func rollback(
        _ repository: RepositoryName, _ alias: String, to target: Digest? = nil, steps: Int = 1,
        actor: String, reason: String?, expect: Digest? = nil
    ) throws -> (from: Digest, to: Digest) {
        guard steps >= 1 else { throw RegistryError(.invalidRequest, "steps must be at least 1") }
        let history = try aliasHistory(repository, alias)
        guard let current = history.last?.to else {
            throw RegistryError(.manifestUnknown, "\(repository):\(alias) does not point anywhere now; nothing to roll back")
        }
        // The caller decided on `expect` (a page showing the alias there): a move since is refused.
        if let expect, expect != current {
            throw RegistryError(
                .denied, "\(repository):\(alias) is at \(current), not \(expect): it moved since; reload and choose again",
                kind: .preconditionFailed)
        }
        // The digests the alias pointed at, most recent first, without the current one.
        var earlier: [Digest] = []
        for move in history.dropLast().reversed() {
            if let d = move.to, d != current, earlier.last != d { earlier.append(d) }
        }
        let destination: Digest
        if let target {
            guard earlier.contains(target) else {
                throw RegistryError(.manifestUnknown, "\(repository):\(alias) never pointed at \(target)")
            }
            destination = target
        } else {
            guard earlier.count >= steps else {
                throw RegistryError(
                    .manifestUnknown,
                    earlier.isEmpty
                        ? "\(repository):\(alias) has no earlier digest in its history; nothing to roll back to"
                        : "\(repository):\(alias) has only \(earlier.count) earlier digest(s) in its history")
            }
            destination = earlier[steps - 1]
        }
        do {
            try setAlias(
                repository, alias, to: destination, expect: expect ?? current, actor: actor,
                reason: reason ?? "rollback", action: "rollback")
        } catch let e as RegistryError where e.code == .manifestUnknown {
            throw RegistryError(.manifestUnknown, "\(destination) was deleted since \(alias) pointed at it; pick another with --to")
        }
        return (current, destination)
    }

    /// What the alias pointed at, at `time` (milliseconds since 1970); nil before it existed or
    /// while it was deleted.
    public func resolve(_ repository: RepositoryName, _ alias: String, at time: Int64) throws -> Digest? {
        var answer: Digest?
        for move in try aliasHistory(repository, alias) where move.at <= time { answer = move.to }
        return answer
    }
}
