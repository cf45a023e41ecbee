import DepotAPI
import DepotAuth
import DepotCatalog
import DepotCore
import DepotDeploy
import DepotPipelines
import DepotRegistry
import Foundation
import HTTPTypes
import Hummingbird

/// Deployments and rollouts, pipeline runs and jobs, the audit journal.
extension UIHandlers {
    // MARK: deployments

    func deploymentsPage(_ request: Request) async -> Response {
        await render(request) { v in
            let deployments = self.deployments
            let list = try await offload { try deployments.registry.store.catalog.read { try $0.deployments() } }
                .filter { v.may(.deployRead, $0.repository) }
            let rows: [HTML] = list.map { d in
                """
                <tr><td data-label="Deployment"><a href="\(Self.deploymentHref(d.repository, d.environment))">\(d.repository) · \(d.environment)</a></td>\
                <td data-label="Model">\(d.modelName)</td>\
                <td data-label="Stable" class="mono">\(d.stable.map(Self.short) ?? "—")</td>\
                <td data-label="Canary" class="mono">\(d.canary.map(Self.short) ?? "—")</td>\
                <td class="num" data-label="Canary share">\(d.weight)%</td></tr>
                """
            }
            return UIPage.response(
                title: "Deployments", viewer: v,
                """
                <h1>Deployments</h1>
                \(HTML.when(rows.isEmpty, "<p class=\"muted\">No deployments. Start one with <code>depot rollout start</code>.</p>"))
                <div class="scroll"><table class="stack"><thead><tr><th scope="col">Deployment</th><th scope="col">Model</th>\
                <th scope="col">Stable</th><th scope="col">Canary</th><th scope="col" class="num">Canary share</th></tr></thead>\
                <tbody>\(rows)</tbody></table></div>
                """)
        }
    }

    func deploymentPage(_ match: RouteMatch, _ request: Request) async -> Response {
        await render(request) { v in
            let repo = try Self.name(match)
            let env = match["environment"]
            let deployments = self.deployments
            let status = try await offload { try deployments.status(repo, env) }
            let d = status.deployment
            var body: HTML = """
                <p class="muted"><a href="/ui/deployments">Deployments</a> / <a href="\(Self.repoHref(repo.value))">\(repo.value)</a> /</p>
                <h1>\(repo.value) · \(env)</h1>
                """
            if let done = try UISession.query(request)["done"], ["resume", "promote", "abort"].contains(done) {
                body = "\(body)<p class=\"ok\" role=\"status\">\(done.capitalized) requested.</p>"
            }
            let stableLink: HTML =
                d.stable.map { "<a class=\"mono\" href=\"\(Self.artifactHref(repo.value, $0))\">\(Self.short($0))</a>" } ?? "—"
            let canaryLink: HTML =
                d.canary.map { "<a class=\"mono\" href=\"\(Self.artifactHref(repo.value, $0))\">\(Self.short($0))</a>" } ?? "—"
            body = """
                \(body)<dl class="facts panel">
                <dt>Model</dt><dd>\(d.modelName)</dd>
                <dt>Split</dt><dd>stable \(stableLink) \(100 - d.weight)% · canary \(canaryLink) \(d.weight)%</dd>
                <dt>Updated</dt><dd>\(Self.when(d.updatedAt))</dd></dl>
                <svg class="graph" role="img" aria-label="Traffic split: canary \(d.weight) percent" width="400" height="26" viewBox="0 0 400 26">\
                <title>Traffic split: canary \(d.weight)%</title><rect x="0" y="3" width="400" height="20" fill="#d0d7de"/>\
                <rect x="0" y="3" width="\(d.weight * 4)" height="20" fill="#0b57d0"/></svg>
                """
            if let r = status.rollout {
                let steps: [HTML] = r.steps.enumerated().map { i, w in
                    i == r.stepIndex ? "<strong>[\(w)%]</strong>" : "\(w)%"
                }
                body = """
                    \(body)<h2>Rollout #\(r.id): \(Self.state(r.state.rawValue))</h2>
                    <dl class="facts"><dt>Canary</dt><dd><a class="mono" href="\(Self.artifactHref(repo.value, r.canary))">\(r.canary)</a></dd>
                    <dt>Steps</dt><dd>\(HTML.join(steps, separator: " → "))</dd>
                    <dt>Analysis per step</dt><dd>\(r.analysisMs / 1000) s</dd>
                    <dt>Started by</dt><dd>\(r.startedBy) at \(Self.when(r.createdAt))</dd>
                    \(r.reason.map { "<dt>Reason</dt><dd>\($0)</dd>" as HTML } ?? "")</dl>
                    """
                let active = r.state == .running || r.state == .paused
                if active, v.may(.rollout, repo.value) {
                    var buttons: [HTML] = []
                    for (control, label, cls) in [
                        ("resume", "Resume", "secondary"), ("promote", "Promote now", ""), ("abort", "Abort", "danger"),
                    ] {
                        if control == "resume", r.state != .paused { continue }
                        buttons.append(
                            """
                            <form method="post" action="\(Self.deploymentHref(repo.value, env))/\(control)" class="panel actions">
                            <input type="hidden" name="csrf" value="\(v.csrf)">\(Self.reasonField(control))
                            <button type="submit" class="\(cls)">\(label)</button></form>
                            """)
                    }
                    body = "\(body)\(buttons)"
                }
            }
            body = "\(body)\(Self.checksChart(status.decisions))"
            let decisions: [HTML] = status.decisions.reversed().prefix(200).map { dc in
                """
                <tr><td data-label="When">\(Self.when(dc.at))</td><td data-label="Step">\(dc.stepIndex + 1) (\(dc.weight)%)</td>\
                <td data-label="Decision">\(Self.state(dc.decision))</td><td data-label="By">\(dc.actor)</td>\
                <td data-label="Reason">\(dc.reason ?? "")</td><td data-label="Measured">\(Self.measurementText(dc.measurements))</td></tr>
                """
            }
            let nodes: [HTML] = status.nodes.map { n in
                """
                <tr><td data-label="Node">\(n.node)</td><td data-label="Serves" class="mono">\(n.digest.map(Self.short) ?? "—")</td>\
                <td data-label="Version">\(n.version.map(String.init) ?? "—")</td><td data-label="State">\(n.state.map { Self.state($0.rawValue) } ?? "—")</td>\
                <td data-label="Reason">\(n.reason ?? "")</td><td data-label="Seen">\(Self.when(n.seenAt))</td></tr>
                """
            }
            body = """
                \(body)<h2>Decisions</h2>
                <div class="scroll"><table class="stack"><thead><tr><th scope="col">When</th><th scope="col">Step</th><th scope="col">Decision</th>\
                <th scope="col">By</th><th scope="col">Reason</th><th scope="col">Measured</th></tr></thead><tbody>\(decisions)</tbody></table></div>
                <h2>Nodes</h2>
                \(HTML.when(nodes.isEmpty, "<p class=\"muted\">No node has reported yet.</p>"))
                <div class="scroll"><table class="stack"><thead><tr><th scope="col">Node</th><th scope="col">Serves</th><th scope="col">Version</th>\
                <th scope="col">State</th><th scope="col">Reason</th><th scope="col">Seen</th></tr></thead><tbody>\(nodes)</tbody></table></div>
                """
            // A running rollout refreshes itself, but not under a viewer who may be typing a reason.
            let live = (status.rollout.map { $0.state == .running } ?? false) && !v.may(.rollout, repo.value)
            return UIPage.response(title: "\(repo.value) · \(env)", viewer: v, refreshSeconds: live ? 15 : nil, body)
        }
    }

    /// The reason box of a rollout command; resume takes none (the rollout API records none).
    static func reasonField(_ control: String) -> HTML {
        guard control != "resume" else { return "" }
        return """
            <div><label for="reason-\(control)">Reason to \(control)</label>\
            <input id="reason-\(control)" name="reason" type="text" maxlength="500"></div>
            """
    }

    /// One analysis measurement as stored with a decision.
    struct Measured {
        var check: String
        var canary: Double?
        var stable: Double?
        var outcome: String
    }

    static func measurements(_ json: String?) -> [Measured] {
        guard let json, let doc = try? WireJSON.decode(JSONValue.self, from: Array(json.utf8), what: "measurements") else { return [] }
        return (doc.object?["measurements"]?.array ?? []).prefix(32).compactMap { m in
            guard let o = m.object, let check = o["check"]?.string else { return nil }
            func number(_ v: JSONValue?) -> Double? {
                if case .double(let d) = v { return d }
                return v?.int.map(Double.init)
            }
            return Measured(check: check, canary: number(o["canary"]), stable: number(o["stable"]), outcome: o["outcome"]?.string ?? "")
        }
    }

    static func measurementText(_ json: String?) -> HTML {
        let ms = measurements(json)
        let parts: [HTML] = ms.map { m in
            let c = m.canary.map { String(format: "%.4g", $0) } ?? "?"
            let s = m.stable.map { String(format: "%.4g", $0) } ?? "?"
            return
                "\(m.check): canary \(c) / stable \(s) <span class=\"state-\(m.outcome == "pass" ? "succeeded" : m.outcome == "fail" ? "failed" : "paused")\">\(m.outcome)</span>"
        }
        return HTML.join(parts, separator: "<br>")
    }

    /// A line chart per check of the canary's measured value at each decision, with the stable
    /// version's value dashed beside it (inline SVG; a red point is a failed measurement).
    static func checksChart(_ decisions: [RolloutDecision]) -> HTML {
        var series: [String: [(at: Int64, canary: Double, stable: Double?, outcome: String)]] = [:]
        for d in decisions {
            for m in measurements(d.measurements) {
                if let v = m.canary, v.isFinite {
                    series[m.check, default: []].append((d.at, v, m.stable.flatMap { $0.isFinite ? $0 : nil }, m.outcome))
                }
            }
        }
        guard !series.isEmpty else { return "" }
        var charts: [HTML] = []
        for (check, points) in series.sorted(by: { $0.key < $1.key }).prefix(8) {
            let (w, h, left, pad) = (560.0, 150.0, 64.0, 20.0)
            let values = points.map(\.canary) + points.compactMap(\.stable)
            let t0 = Double(points.map(\.at).min()!)
            let t1 = Double(points.map(\.at).max()!)
            // Values come from Prometheus: any finite double. The range is made finite and
            // non-zero, and every coordinate is clamped before it becomes an Int.
            let v0 = max(-1e300, min(0, values.min()!))
            var v1 = min(1e300, values.max()!)
            if !(v1 - v0).isFinite || v1 - v0 < 1e-12 { v1 = v0 + max(abs(v0), 1) }
            let span = (v1 - v0).isFinite ? v1 - v0 : 1
            func px(_ d: Double) -> Int { d.isFinite ? Int(max(-1e6, min(1e6, d))) : 0 }
            func x(_ t: Int64) -> Int { px(left + (t1 > t0 ? (Double(t) - t0) / (t1 - t0) : 0.5) * (w - left - pad)) }
            func y(_ v: Double) -> Int { px(h - pad - (max(v0, min(v1, v)) - v0) / span * (h - 2 * pad)) }
            let canaryPath = points.map { "\(x($0.at)),\(y($0.canary))" }.joined(separator: " ")
            let stablePath = points.compactMap { p in p.stable.map { "\(x(p.at)),\(y($0))" } }.joined(separator: " ")
            let dots: [HTML] = points.map { p in
                "<circle class=\"\(p.outcome == "fail" ? "bad-point" : "good-point")\" cx=\"\(x(p.at))\" cy=\"\(y(p.canary))\" r=\"4\"><title>\(when(p.at)): canary \(axisLabel(p.canary)), stable \(p.stable.map(axisLabel) ?? "?") (\(p.outcome))</title></circle>"
            }
            charts.append(
                """
                <figure><figcaption>\(check): canary (solid) and stable (dashed) at each analysis</figcaption>
                <svg class="graph" role="img" aria-label="\(check) over time" width="\(Int(w))" height="\(Int(h))" viewBox="0 0 \(Int(w)) \(Int(h))">\
                <line class="axis" x1="\(Int(left))" y1="\(Int(h - pad))" x2="\(Int(w - pad))" y2="\(Int(h - pad))"/>\
                <line class="axis" x1="\(Int(left))" y1="\(Int(pad))" x2="\(Int(left))" y2="\(Int(h - pad))"/>\
                <text class="chart-text" x="4" y="\(Int(pad) + 4)">\(axisLabel(v1))</text>\
                <text class="chart-text" x="4" y="\(Int(h - pad) + 4)">\(axisLabel(v0))</text>\
                <polyline class="series stable" points="\(stablePath)"/><polyline class="series" points="\(canaryPath)"/>\(dots)</svg></figure>
                """)
        }
        return "<h2>Checks over time</h2>\(charts)"
    }

    static func axisLabel(_ v: Double) -> String {
        let a = abs(v)
        if a == 0 { return "0" }
        if a >= 1000 { return String(format: "%.0f", v) }
        if a >= 0.01 { return String(format: "%.3g", v) }
        return String(format: "%.1e", v)
    }

    func rolloutControl(_ match: RouteMatch, _ request: Request) async -> Response {
        await render(request) { _ in
            let repo = try Self.name(match)
            let env = match["environment"]
            let control = match["control"]
            guard ["resume", "promote", "abort"].contains(control) else {
                throw RegistryError(.invalidRequest, "a rollout can be resumed, promoted or aborted, not '\(control.prefix(20))'")
            }
            let form = try await UISession.form(request, limits: registry.uploads.limits)
            try UISession.checkPost(request, form: form)
            let reason = form["reason"].flatMap { $0.isEmpty ? nil : String($0.prefix(500)) }
            let actor = Self.actor(request)
            let deployments = self.deployments
            _ = try await offload { () -> Deployments.Status in
                switch control {
                case "resume": return try deployments.resume(repo, env, actor: actor)
                case "promote": return try deployments.promote(repo, env, actor: actor, reason: reason)
                default: return try deployments.abort(repo, env, actor: actor, reason: reason)
                }
            }
            return UIPage.redirect(Self.deploymentHref(repo.value, env) + "?done=" + control)
        }
    }

    // MARK: pipelines and jobs

    func jobsPage(_ request: Request) async -> Response {
        await render(request) { v in
            guard let jobs = self.jobs else {
                return UIPage.response(
                    title: "Jobs", viewer: v, "<h1>Jobs</h1><p class=\"muted\">No pipelines are configured on this registry.</p>")
            }
            let query = try UISession.query(request)
            let state = query["state"].flatMap { $0.isEmpty ? nil : $0 }
            let pipeline = query["pipeline"].flatMap { $0.isEmpty ? nil : $0 }
            let list = try await offload { try jobs.jobs(state: state, pipeline: pipeline, limit: 500) }
                .filter { canPull(v, $0.inputRepository) }
            // Runs, newest first, each with its jobs.
            var order: [Int64] = []
            var runs: [Int64: [JobRecord]] = [:]
            for j in list {
                if runs[j.runID] == nil { order.append(j.runID) }
                runs[j.runID, default: []].append(j)
            }
            let pipelines = Dictionary(jobs.pipelines.map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a })
            var sections: [HTML] = []
            for id in order.prefix(40) {
                let js = runs[id]!.sorted { $0.id < $1.id }
                let first = js[0]
                sections.append(
                    """
                    <h2>Run #\(id): \(first.pipeline)</h2>
                    <p class="muted">Input <a class="mono" href="\(Self.artifactHref(first.inputRepository, first.inputDigest))">\
                    \(first.inputRepository)@\(Self.short(first.inputDigest))</a> at \(Self.when(first.createdAt))</p>
                    \(Self.runGraph(id, js, pipelines[first.pipeline]))
                    """)
            }
            let states: [HTML] = ([""] + JobState.allCases.map(\.rawValue)).map { s in
                "<option value=\"\(s)\"\(s == (state ?? "") ? " selected" : "")>\(s.isEmpty ? "any" : s)</option>"
            }
            return UIPage.response(
                title: "Jobs", viewer: v,
                """
                <h1>Pipeline runs</h1>
                <form class="search" method="get" action="/ui/jobs">
                <div><label for="state">State</label><select id="state" name="state">\(states)</select></div>
                <div class="field"><label for="pipeline">Pipeline</label><input id="pipeline" name="pipeline" type="text" value="\(pipeline ?? "")"></div>
                <button type="submit" class="secondary">Filter</button></form>
                \(HTML.when(sections.isEmpty, "<p class=\"muted\">No jobs.</p>"))\(sections)
                """)
        }
    }

    /// A run's stages as a DAG (layers from the pipeline's `needs`), each node a job.
    static func runGraph(_ run: Int64, _ jobs: [JobRecord], _ pipeline: Pipeline?) -> HTML {
        var depth: [String: Int] = [:]
        for stage in pipeline?.stages ?? [] {
            depth[stage.name] = (stage.needs.compactMap { depth[$0] }.max() ?? -1) + 1
        }
        // The latest job of each stage (a retry is a new job).
        var latest: [String: JobRecord] = [:]
        for j in jobs { latest[j.stage] = j }
        var g = GraphSVG(label: "Stages of run \(run)", id: "run-\(run)")
        for j in latest.values.sorted(by: { (depth[$0.stage] ?? 0, $0.id) < (depth[$1.stage] ?? 0, $1.id) }) {
            g.nodes.append(
                .init(
                    id: j.stage, layer: depth[j.stage] ?? 0, title: j.stage,
                    subtitle: "\(j.state.rawValue) · attempt \(j.attempt)/\(j.maxAttempts)",
                    href: "/ui/jobs/\(j.id)", cssClass: "state-\(j.state.rawValue)"))
        }
        for stage in pipeline?.stages ?? [] where latest[stage.name] != nil {
            for need in stage.needs where latest[need] != nil { g.edges.append(.init(from: need, to: stage.name, label: "")) }
        }
        let rows: [HTML] = jobs.map { j in
            """
            <tr><td data-label="Job"><a href="/ui/jobs/\(j.id)">#\(j.id)</a></td><td data-label="Stage">\(j.stage)</td>\
            <td data-label="State">\(state(j.state.rawValue))</td><td data-label="Attempt">\(j.attempt)/\(j.maxAttempts)</td>\
            <td data-label="Reason">\(j.reason ?? "")</td></tr>
            """
        }
        return """
            \(g.render())
            <div class="scroll"><table class="stack"><thead><tr><th scope="col">Job</th><th scope="col">Stage</th><th scope="col">State</th>\
            <th scope="col">Attempt</th><th scope="col">Reason</th></tr></thead><tbody>\(rows)</tbody></table></div>
            """
    }

    func jobPage(_ match: RouteMatch, _ request: Request) async -> Response {
        await render(request) { v in
            guard let jobs = self.jobs else { throw RegistryError(.jobUnknown, "no pipelines are configured on this registry") }
            let id = try RequestParsing.integer(Substring(match["id"]), "job id", in: 1...Int64.max)
            let store = registry.store
            let job = try await offload { try jobs.job(id) }
            guard canPull(v, job.inputRepository) else {
                throw RegistryError(.denied, "requested access to the resource is denied: job \(id) works on a repository you may not read")
            }
            let log = try await offload { () -> String? in
                guard let d = job.logDigest.flatMap({ try? Digest(parsing: $0) }), let blob = try store.blob(d) else { return nil }
                // The last 64 KiB (where a failure's cause is), read as a range.
                let start = max(0, blob.size - (64 << 10))
                var bytes: [UInt8] = []
                try store.reader(d, range: start..<blob.size).forEach { bytes += $0 }
                return (start > 0 ? "… (earlier output cut)\n" : "") + String(decoding: bytes, as: UTF8.self)
            }
            let output: HTML =
                job.outputDigest.map {
                    "<a class=\"mono\" href=\"\(Self.artifactHref(job.inputRepository, $0))\">\($0)</a>"
                } ?? "—"
            return UIPage.response(
                title: "Job \(id)", viewer: v, refreshSeconds: job.isFinal ? nil : 10,
                """
                <p class="muted"><a href="/ui/jobs">Jobs</a> /</p>
                <h1>Job #\(id): \(job.pipeline) / \(job.stage)</h1>
                <dl class="facts panel">
                <dt>State</dt><dd>\(Self.state(job.state.rawValue))</dd>
                <dt>Attempt</dt><dd>\(job.attempt) of \(job.maxAttempts)</dd>
                <dt>Kind</dt><dd>\(job.kind)</dd>
                <dt>Input</dt><dd><a class="mono" href="\(Self.artifactHref(job.inputRepository, job.inputDigest))">\
                \(job.inputRepository)@\(Self.short(job.inputDigest))</a></dd>
                <dt>Output</dt><dd>\(output)\(job.memoized ? " (memoized)" : "")</dd>
                <dt>Runner</dt><dd>\(job.runner ?? "—")</dd>
                <dt>Created</dt><dd>\(Self.when(job.createdAt))</dd>
                <dt>Started</dt><dd>\(Self.when(job.startedAt))</dd>
                <dt>Finished</dt><dd>\(Self.when(job.finishedAt))</dd>
                <dt>Reason</dt><dd>\(job.reason ?? "—")</dd>
                </dl>
                <h2>Log</h2>
                \(log.map { "<pre>\($0)</pre>" as HTML } ?? "<p class=\"muted\">No log stored yet.</p>")
                """)
        }
    }

    // MARK: audit

    func auditPage(_ request: Request) async -> Response {
        await render(request) { v in
            let query = try UISession.query(request)
            func field(_ name: String) -> String? {
                query[name].flatMap { $0.isEmpty ? nil : String($0.prefix(200)) }
            }
            var filter = AuditFilter(
                repository: field("repository"), action: field("action"), since: try field("since").map { try Self.formTime($0) },
                until: try field("until").map { try Self.formTime($0, endOfMinute: true) })
            filter.actor = field("actor")
            filter.newestFirst = true
            filter.limit = 200
            let chosen = filter
            let registry = self.registry
            let entries = try await offload { try registry.auditLog(chosen) }
            let check = try await auditVerifications.result { try await offload { try registry.verifyAudit() } }
            let chain: HTML =
                check.intact
                ? "<p class=\"ok\" role=\"status\">Chain intact: \(check.entries) entries verified (head \(String((check.headHash ?? "").prefix(16)))…).</p>"
                : "<p class=\"error\" role=\"alert\">Chain broken at entry \(check.firstBrokenID.map(String.init) ?? "?"): \(check.problem ?? "")</p>"
            let rows: [HTML] = entries.map { e in
                let target: HTML
                if let r = e.repository, let d = e.digest, d.hasPrefix("sha256:") {
                    target = "<a href=\"\(Self.artifactHref(r, d))\">\(r)@\(Self.short(d))</a>"
                } else {
                    target = "\(e.repository ?? "")"
                }
                return """
                    <tr><td data-label="When">\(Self.when(e.at))</td><td data-label="Actor">\(e.actor)</td><td data-label="Action">\(e.action)</td>\
                    <td data-label="Target">\(target)\(e.tag.map { ":\($0)" } ?? "")</td>\
                    <td data-label="Details"><code>\(String((e.details ?? "").prefix(300)))</code></td></tr>
                    """
            }
            func input(_ name: String, _ label: String, type: String = "text") -> HTML {
                "<div><label for=\"\(name)\">\(label)</label><input id=\"\(name)\" name=\"\(name)\" type=\"\(type)\" value=\"\(field(name) ?? "")\"></div>"
            }
            return UIPage.response(
                title: "Audit", viewer: v,
                """
                <h1>Audit journal</h1>
                \(chain)
                <form class="search" method="get" action="/ui/audit">
                \(input("actor", "Actor")) \(input("action", "Action")) \(input("repository", "Repository"))
                \(input("since", "Since (UTC)", type: "datetime-local")) \(input("until", "Until (UTC)", type: "datetime-local"))
                <button type="submit" class="secondary">Filter</button></form>
                <p class="muted">Newest first, at most 200 entries; <code>depot audit</code> exports the whole journal.</p>
                <div class="scroll"><table class="stack"><thead><tr><th scope="col">When</th><th scope="col">Actor</th><th scope="col">Action</th>\
                <th scope="col">Target</th><th scope="col">Details</th></tr></thead><tbody>\(rows)</tbody></table></div>
                """)
        }
    }
}
