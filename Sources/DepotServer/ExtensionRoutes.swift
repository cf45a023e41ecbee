/// A parsed `/depot/v1/...` path (Depot's extension API; see docs/EXTENSION-API.md).
enum ExtensionRoute: Equatable {
    case info
    case missingChunks(String)
    case uploadChunks(String)
    case recipe(String, String)
    case fetchChunks(String, String)
    case metadata(String, String)
    case alias(String, String)
    case aliasHistory(String, String)
    case aliasRollback(String, String)
    case aliasResolve(String, String)
    case pin(String, String)
    case pins
    case lineage(String)
    case impact(String)
    case lineagePath
    case audit
    case auditVerify
    case events
    case deliveries
    case jobs
    case jobLease
    case pipelines
    case job(Int64)
    /// `/jobs/{id}/{start|heartbeat|complete|fail|cancel|retry|log|callback}`
    case jobAction(Int64, String)
    case deployments
    /// `repositories/<name>/deployments/<env>[/<action>[/<node>]]`
    case deployment(String, String, String?, String?)
    case served(String)

    var label: String {
        switch self {
        case .info: return "ext_info"
        case .missingChunks: return "ext_missing"
        case .uploadChunks: return "ext_chunks_upload"
        case .recipe: return "ext_recipe"
        case .fetchChunks: return "ext_chunks_fetch"
        case .metadata: return "ext_metadata"
        case .alias, .aliasHistory, .aliasRollback, .aliasResolve: return "ext_alias"
        case .pin, .pins: return "ext_pin"
        case .lineage, .impact, .lineagePath: return "ext_lineage"
        case .audit, .auditVerify: return "ext_audit"
        case .events, .deliveries: return "ext_events"
        case .jobs, .jobLease, .pipelines, .job, .jobAction: return "ext_jobs"
        case .deployments, .deployment, .served: return "ext_deploy"
        }
    }

    init?(path: String) {
        let prefix = "/depot/v1/"
        guard path.hasPrefix(prefix) else { return nil }
        let rest = Substring(path.dropFirst(prefix.count))
        switch rest {
        case "info":
            self = .info
            return
        case "pins":
            self = .pins
            return
        case "audit":
            self = .audit
            return
        case "audit/verify":
            self = .auditVerify
            return
        case "lineage/path":
            self = .lineagePath
            return
        case "events":
            self = .events
            return
        case "webhooks/deliveries":
            self = .deliveries
            return
        case "jobs":
            self = .jobs
            return
        case "jobs/lease":
            self = .jobLease
            return
        case "pipelines":
            self = .pipelines
            return
        case "deployments":
            self = .deployments
            return
        default: break
        }
        if rest.hasPrefix("jobs/") {
            let parts = rest.dropFirst("jobs/".count).split(separator: "/", omittingEmptySubsequences: false)
            guard let id = try? RequestParsing.integer(parts[0], "job id", in: 1...Int64.max) else { return nil }
            if parts.count == 1 {
                self = .job(id)
                return
            }
            let actions: Set<String> = ["start", "heartbeat", "complete", "fail", "cancel", "retry", "log", "callback"]
            guard parts.count == 2, actions.contains(String(parts[1])) else { return nil }
            self = .jobAction(id, String(parts[1]))
            return
        }
        if rest.hasPrefix("lineage/") {
            let tail = rest.dropFirst("lineage/".count)
            if tail.hasSuffix("/served") {
                self = .served(String(tail.dropLast("/served".count)))
                return
            }
            if tail.hasSuffix("/impact") {
                self = .impact(String(tail.dropLast("/impact".count)))
                return
            }
            guard !tail.contains("/") else { return nil }
            self = .lineage(String(tail))
            return
        }
        let repos = "repositories/"
        guard rest.hasPrefix(repos) else { return nil }
        let tail = rest.dropFirst(repos.count)
        if tail.hasSuffix("/chunks/missing") {
            self = .missingChunks(String(tail.dropLast("/chunks/missing".count)))
            return
        }
        // <name>/aliases/<alias>[/history|/rollback|/resolve]
        if let r = tail.range(of: "/aliases/", options: .backwards) {
            let name = String(tail[..<r.lowerBound])
            let parts = tail[r.upperBound...].split(separator: "/", omittingEmptySubsequences: false)
            if parts.count == 1, !parts[0].isEmpty {
                self = .alias(name, String(parts[0]))
                return
            }
            if parts.count == 2, !parts[0].isEmpty {
                switch parts[1] {
                case "history":
                    self = .aliasHistory(name, String(parts[0]))
                    return
                case "rollback":
                    self = .aliasRollback(name, String(parts[0]))
                    return
                case "resolve":
                    self = .aliasResolve(name, String(parts[0]))
                    return
                default: break
                }
            }
        }
        // <name>/deployments/<env>[/rollout|resume|promote|abort|resolve|nodes/<node>]
        // (only these shapes: a repository may itself have a `deployments` path component)
        if let r = tail.range(of: "/deployments/", options: .backwards) {
            let name = String(tail[..<r.lowerBound])
            let parts = tail[r.upperBound...].split(separator: "/", omittingEmptySubsequences: false).map(String.init)
            if !name.isEmpty, let env = parts.first, !env.isEmpty {
                switch parts.count {
                case 1:
                    self = .deployment(name, env, nil, nil)
                    return
                case 2 where ["rollout", "resume", "promote", "abort", "resolve"].contains(parts[1]):
                    self = .deployment(name, env, parts[1], nil)
                    return
                case 3 where parts[1] == "nodes" && !parts[2].isEmpty:
                    self = .deployment(name, env, "nodes", parts[2])
                    return
                default: break
                }
            }
        }
        if let r = tail.range(of: "/pins/", options: .backwards) {
            let ref = tail[r.upperBound...]
            if !ref.isEmpty, !ref.contains("/") {
                self = .pin(String(tail[..<r.lowerBound]), String(ref))
                return
            }
        }
        for (suffix, make) in [
            ("/recipe", { ExtensionRoute.recipe($0, $1) }), ("/chunks", { ExtensionRoute.fetchChunks($0, $1) }),
            ("/metadata", { ExtensionRoute.metadata($0, $1) }),
        ] as [(String, (String, String) -> ExtensionRoute)] {
            guard tail.hasSuffix(suffix) else { continue }
            let head = tail.dropLast(suffix.count)
            let marker = suffix == "/metadata" ? "/manifests/" : "/blobs/"
            guard let r = head.range(of: marker, options: .backwards) else { continue }
            let ref = head[r.upperBound...]
            guard !ref.isEmpty, !ref.contains("/") else { continue }
            self = make(String(head[..<r.lowerBound]), String(ref))
            return
        }
        if tail.hasSuffix("/chunks") {
            self = .uploadChunks(String(tail.dropLast("/chunks".count)))
            return
        }
        return nil
    }
}
