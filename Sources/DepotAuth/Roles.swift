import DepotAPI

/// What each role may do. Roles are granted on repository globs (`Grant`); a route's action is
/// allowed when some grant's role has it and its globs cover the route's repository. The sets
/// are the policy users read in docs/AUTHORIZATION.md: change them there too.
extension RoleName {
    /// The role's actions (computed once: authorization reads them on every request).
    public var actions: Set<Action> { Self.table[self]! }

    static let table: [RoleName: Set<Action>] = Dictionary(uniqueKeysWithValues: allCases.map { ($0, $0.computedActions) })

    var computedActions: Set<Action> {
        switch self {
        // Look, do not touch: pull, list, and read deployments and jobs.
        case .reader: [.pull, .catalog, .deployRead, .jobsRead]
        // CI pushing models: reader plus push and tag.
        case .writer: [.pull, .catalog, .deployRead, .jobsRead, .push, .tag]
        // Owns repositories: writer plus delete, aliases, pins, rollback, job control and the journal.
        case .maintainer:
            [
                .pull, .catalog, .deployRead, .jobsRead, .push, .tag, .delete, .aliasMove, .rollback, .pin, .jobsManage,
                .auditRead,
            ]
        // Release managers: move `production`, roll back, drive rollouts; no pushing.
        case .deployer: [.pull, .catalog, .deployRead, .jobsRead, .aliasMove, .rollback, .rollout]
        // Auditors: read everything governance keeps, change nothing.
        case .auditor: [.pull, .catalog, .deployRead, .jobsRead, .auditRead]
        // Pipeline runners: lease and run jobs, read inputs, push outputs (under the job's lease).
        case .runner: [.pull, .push, .tag, .jobsRun, .jobsRead]
        // Serving nodes (`depot triton-sync`): pull what they serve and report it.
        case .node: [.pull, .deployRead, .nodesReport]
        case .admin: Set(Action.allCases)
        }
    }
}
