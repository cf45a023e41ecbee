import DepotAPI
import DepotAuth
import DepotCatalog
import DepotCore
import DepotDeploy
import DepotRegistry
import Foundation
import HTTPTypes
import Hummingbird

/// The artifact page (files, metadata, annotations, tags, referrers, lineage graph, impact) and
/// the alias page (history, rollback, time travel).
extension UIHandlers {
    /// How far the artifact page's lineage graph reaches each way, and how many nodes it draws.
    static let lineageDepth = 6
    static let lineageNodes = 50
    /// Moves of an alias a page reads and shows.
    static let historyShown = 500
    /// Moves the timeline lists.
    static let historyListed = 200

    func artifact(_ match: RouteMatch, _ request: Request) async -> Response {
        await render(request) { v in
            let repo = try Self.name(match)
            let digest = try RequestParsing.digest(match["digest"])
            let registry = self.registry
            let deployments = self.deployments
            let mayDeploy = v.may(.deployRead, repo.value)
            let data = try await offload { () -> ArtifactData in
                let m = try registry.manifest(repo, .digest(digest))
                var d = ArtifactData(manifest: m)
                d.tags = try registry.tags(repo, pointingAt: digest)
                d.metadata = try registry.metadataDocument(digest)
                d.referrers = try registry.referrers(repo, digest, artifactType: nil, limit: 50)
                d.ancestors = try registry.lineage(of: digest, up: true, depth: Self.lineageDepth, limit: Self.lineageNodes)
                d.descendants = try registry.lineage(of: digest, up: false, depth: Self.lineageDepth, limit: Self.lineageNodes)
                d.impact = try registry.impactSummary(of: digest)
                if mayDeploy { d.served = try deployments.served(digest: digest) }
                // Names for the graph: each node's repository and a tag there. A node is a link only
                // when its manifest is in the repository it is named by (an ancestor's repository is
                // whatever the child's pusher declared; that it exists elsewhere is not for this page).
                for (nodes, up) in [(d.ancestors, true), (d.descendants, false)] {
                    for n in nodes where n.stored {
                        guard let name = try? RepositoryName(Self.nodeRepository(n, up: up)),
                            (try? registry.manifest(name, .digest(n.digest))) != nil
                        else { continue }
                        d.present.insert(n.digest)
                        d.nodeTags[n.digest] = try registry.tags(name, pointingAt: n.digest).first
                    }
                }
                return d
            }
            // Lineage beyond a repository the viewer may not pull is that repository's business.
            // An edge's facts (run, dataset, relation) belong to the repository its child was
            // pushed to; an ancestor is also named by the repository its child's pusher declared.
            // The walk stops at the first level where either is not the viewer's to read.
            func visible(_ nodes: [LineageNode], up: Bool) -> [LineageNode] {
                let hidden = nodes.filter { n in
                    !canPull(v, n.edge.repository) || !canPull(v, Self.nodeRepository(n, up: up))
                }.map(\.depth).min()
                return hidden.map { h in nodes.filter { $0.depth < h } } ?? nodes
            }
            let ancestors = visible(data.ancestors, up: true)
            let descendants = visible(data.descendants, up: false)
            let a = Self.annotations(data.manifest.annotationsJSON)
            let host = request.head.authority ?? "REGISTRY"
            let tags: [HTML] = data.tags.map { "<a class=\"pill alias\" href=\"\(Self.aliasHref(repo.value, $0))\">\($0)</a>" }
            let annotationRows: [HTML] = a.sorted { $0.key < $1.key }.map {
                "<tr><th scope=\"row\"><code>\($0.key)</code></th><td>\($0.value)</td></tr>"
            }
            var body: HTML = """
                <p class="muted"><a href="/ui">Models</a> / <a href="\(Self.repoHref(repo.value))">\(repo.value)</a> /</p>
                <h1>\(repo.value)<span class="muted">@</span><span class="mono">\(Self.short(digest))</span></h1>
                <dl class="facts panel">
                <dt>Digest</dt><dd class="mono">\(digest.description)</dd>
                <dt>Type</dt><dd>\(Self.typeLabel(data.manifest.artifactType, data.manifest.mediaType))</dd>
                <dt>Tags and aliases</dt><dd>\(tags.isEmpty ? "none" : HTML.join(tags, separator: " "))</dd>
                <dt>Pull</dt><dd><code>depot pull \(host)/\(repo.value)@\(digest.description) ./model</code></dd>
                </dl>
                """
            body = "\(body)\(Self.filesSection(data.metadata))"
            body = """
                \(body)<h2>Annotations</h2>
                \(annotationRows.isEmpty ? "<p class=\"muted\">None.</p>" : "<div class=\"scroll\"><table><tbody>\(annotationRows)</tbody></table></div>" as HTML)
                """
            // Lineage graph: ancestors above (nearest last), the artifact, descendants below.
            var graph = GraphSVG(label: "Lineage of \(repo.value)@\(Self.short(digest))")
            graph.nodes.append(
                .init(
                    id: digest.description, layer: 0, title: data.tags.first.map { "\(repo.value):\($0)" } ?? repo.value,
                    subtitle: Self.short(digest), href: nil, cssClass: "focus"))
            for (nodes, up) in [(ancestors, true), (descendants, false)] {
                for n in nodes where !graph.nodes.contains(where: { $0.id == n.digest.description }) {
                    let r = Self.nodeRepository(n, up: up)
                    let title = data.nodeTags[n.digest].map { "\(r):\($0)" } ?? r
                    graph.nodes.append(
                        .init(
                            id: n.digest.description, layer: up ? -n.depth : n.depth, title: title,
                            subtitle: Self.short(n.digest) + (data.present.contains(n.digest) ? "" : " (not here)"),
                            href: data.present.contains(n.digest) ? Self.artifactHref(r, n.digest.description) : nil))
                }
                for n in nodes {
                    graph.edges.append(
                        .init(from: n.edge.parent.description, to: n.edge.child.description, label: n.edge.relation))
                }
            }
            let lineageRows: [HTML] = (ancestors.map { ($0, true) } + descendants.map { ($0, false) }).map { n, up in
                let r = Self.nodeRepository(n, up: up)
                let link: HTML =
                    data.present.contains(n.digest)
                    ? "<a class=\"mono\" href=\"\(Self.artifactHref(r, n.digest.description))\">\(r)@\(Self.short(n.digest))</a>"
                    : "<span class=\"mono\">\(r)@\(Self.short(n.digest))</span>"
                return """
                    <tr><td data-label="Direction">\(up ? "ancestor" : "descendant") (\(n.depth))</td><td data-label="Artifact">\(link)</td>\
                    <td data-label="Relation">\(n.edge.relation)\(n.edge.verifiedJob != nil ? " ✓ verified" : "")</td>\
                    <td data-label="Run">\(n.edge.run ?? "")</td><td data-label="Dataset">\(n.edge.dataset ?? "")</td></tr>
                    """
            }
            body = """
                \(body)<h2 id="lineage">Lineage</h2>
                \(lineageRows.isEmpty ? "<p class=\"muted\">No recorded parents or derived artifacts.</p>" : graph.render())
                \(lineageRows.isEmpty ? "" : "<div class=\"scroll\"><table class=\"stack\"><thead><tr><th scope=\"col\">Direction (depth)</th><th scope=\"col\">Artifact</th><th scope=\"col\">Relation</th><th scope=\"col\">Run</th><th scope=\"col\">Dataset</th></tr></thead><tbody>\(lineageRows)</tbody></table></div>" as HTML)
                """
            // Impact: what serves this artifact or anything built from it.
            let impactTags: [HTML] = (data.impact?.tags ?? []).filter { canPull(v, $0.repository) }.map { t in
                """
                <li><a href="\(Self.aliasHref(t.repository, t.tag))">\(t.repository):\(t.tag)</a> → \
                <a class="mono" href="\(Self.artifactHref(t.repository, t.digest.description))">\(Self.short(t.digest))</a></li>
                """
            }
            // The count covers every repository: shown only to a viewer who may read them all.
            let derivedLine: HTML =
                v.may(.pull)
                ? "<p>\(data.impact?.derived ?? 0)\(data.impact?.more == true ? " or more" : "") artifact\(data.impact?.derived == 1 ? "" : "s") derived from this one.</p>"
                : ""
            let served: [HTML] = data.served.filter { v.may(.deployRead, $0.repository) }.map { s in
                """
                <li><a href="\(Self.deploymentHref(s.repository, s.environment))">\(s.repository) · \(s.environment)</a>: \
                \(s.role) at \(s.weight)% from \(Self.when(s.from)) \(s.to.map { "to \(Self.when($0))" } ?? "until now")</li>
                """
            }
            body = """
                \(body)<h2>Impact</h2>
                \(derivedLine)
                \(impactTags.isEmpty ? "<p class=\"muted\">No tag or alias resolves to it or to anything derived from it.</p>" : "<p>Tags and aliases serving it or its descendants:</p><ul>\(impactTags)</ul>" as HTML)
                \(HTML.when(data.impact?.more == true, "<p class=\"hint\">Over 2,000 artifacts derive from it: the tags above are those of the nearest 2,000 (at most 200); <code>depot lineage REF --impact</code> lists them all.</p>"))
                \(served.isEmpty ? "" : "<p>Served by deployments:</p><ul>\(served)</ul>" as HTML)
                """
            let refRows: [HTML] = data.referrers.map { r in
                """
                <tr><td data-label="Referrer"><a class="mono" href="\(Self.artifactHref(repo.value, r.digest.description))">\(Self.short(r.digest))</a></td>\
                <td data-label="Type">\(r.artifactType ?? r.mediaType)</td><td class="num" data-label="Size">\(ByteCount.text(r.size))</td></tr>
                """
            }
            body = """
                \(body)<h2>Referrers</h2>
                \(refRows.isEmpty ? "<p class=\"muted\">No signatures, SBOMs or other referrers.</p>" : "<div class=\"scroll\"><table class=\"stack\"><thead><tr><th scope=\"col\">Referrer</th><th scope=\"col\">Type</th><th scope=\"col\" class=\"num\">Size</th></tr></thead><tbody>\(refRows)</tbody></table></div>" as HTML)
                """
            return UIPage.response(title: "\(repo.value)@\(Self.short(digest))", viewer: v, body)
        }
    }

    struct ArtifactData: Sendable {
        var manifest: ManifestRecord
        var tags: [String] = []
        var metadata: String?
        var referrers: [Descriptor] = []
        var ancestors: [LineageNode] = []
        var descendants: [LineageNode] = []
        var impact: (derived: Int, more: Bool, tags: [TagTarget])?
        var served: [ServedInterval] = []
        var nodeTags: [Digest: String] = [:]
        /// Lineage nodes whose manifest is in the repository they are named by.
        var present: Set<Digest> = []
        init(manifest: ManifestRecord) { self.manifest = manifest }
    }

    /// The repository a lineage node lives in: an ancestor is named by the edge's declared
    /// parent (`repo@digest`), a descendant by where it was pushed.
    static func nodeRepository(_ n: LineageNode, up: Bool) -> String {
        guard up else { return n.edge.repository }
        let ref = n.edge.parentRef
        return ref.firstIndex(of: "@").map { String(ref[..<$0]) } ?? ref
    }

    /// The files of a manifest with what their readers extracted.
    static func filesSection(_ metadata: String?) -> HTML {
        guard let metadata, let doc = try? WireJSON.decode(JSONValue.self, from: Array(metadata.utf8), what: "metadata") else {
            return "<h2>Files</h2><p class=\"muted\">No file of a known format.</p>"
        }
        var rows: [HTML] = []
        for file in doc.object?["files"]?.array?.prefix(200) ?? [] {
            guard let f = file.object else { continue }
            var details: [HTML] = []
            if let e = f["error"]?.string { details.append("<span class=\"error\">\(e)</span>") }
            if let p = f["parameters"]?.int { details.append("\(p.formatted()) parameters") }
            if let n = f["tensor_count"]?.int { details.append("\(n) tensors") }
            if let d = f["dtypes"]?.object {
                details.append("dtypes \(d.sorted { $0.key < $1.key }.map { "\($0.key)×\($0.value.int ?? 0)" }.joined(separator: ", "))")
            }
            if let o = f["opsets"]?.array {
                let text = o.prefix(8).compactMap { x -> String? in
                    guard let v = x.object?["version"]?.int else { return nil }
                    let dom = x.object?["domain"]?.string ?? ""
                    return (dom.isEmpty ? "ai.onnx" : dom) + " \(v)"
                }
                details.append("opset \(text.joined(separator: ", "))")
            }
            for key in ["inputs", "outputs"] {
                if let io = f[key]?.array, !io.isEmpty {
                    let names = io.prefix(8).map { x -> String in
                        let o = x.object ?? [:]
                        let name = o["name"]?.string ?? "?"
                        let type = o["dtype"]?.string ?? o["elem_type"]?.string ?? o["type"]?.string ?? ""
                        let shape =
                            o["shape"]?.array.map {
                                "[" + $0.map { $0.int.map(String.init) ?? $0.string ?? "?" }.joined(separator: ",") + "]"
                            } ?? ""
                        return "\(name) \(type)\(shape)"
                    }
                    details.append("\(key): \(names.joined(separator: "; "))")
                }
            }
            for key in ["producer", "framework", "torch_version", "graph_name"] {
                if let s = f[key]?.string { details.append("\(key) \(s)") }
            }
            rows.append(
                """
                <tr><td data-label="File"><code>\(f["path"]?.string ?? "?")</code></td><td data-label="Format">\(f["format"]?.string ?? "—")</td>\
                <td class="num" data-label="Size">\(ByteCount.text(f["size"]?.int ?? 0))</td><td data-label="Details">\(HTML.join(details, separator: "<br>"))</td></tr>
                """)
        }
        var triton: HTML = ""
        if let t = doc.object?["triton"]?.object {
            let items: [HTML] = t.sorted { $0.key < $1.key }.prefix(20).compactMap { k, v in
                let text = v.string ?? v.int.map(String.init) ?? (v.array.map { "\($0.count) entries" })
                return text.map { "<dt>\(k)</dt><dd>\($0)</dd>" }
            }
            triton = "<h3>Triton configuration</h3><dl class=\"facts panel\">\(items)</dl>"
        }
        return """
            <h2>Files</h2>
            <div class="scroll"><table class="stack"><thead><tr><th scope="col">File</th><th scope="col">Format</th><th scope="col" class="num">Size</th>\
            <th scope="col">Details</th></tr></thead><tbody>\(rows)</tbody></table></div>\(triton)
            """
    }

    // MARK: aliases

    func alias(_ match: RouteMatch, _ request: Request) async -> Response {
        await render(request) { v in
            let repo = try Self.name(match)
            let alias = match["alias"]
            let registry = self.registry
            let query = try UISession.query(request)
            var at: Int64?
            if let raw = query["at"], !raw.isEmpty {
                // <input type="datetime-local"> sends 2026-05-03T14:00 (no zone): read as UTC.
                at = try Self.formTime(raw)
            }
            // The newest moves only: a tag moved a hundred thousand times is one page, not a scan.
            let moves = try await offload { try registry.aliasHistory(repo, alias, newest: Self.historyShown) }
            guard !moves.isEmpty else { throw RegistryError(.manifestUnknown, "\(repo):\(alias) has no history: no such tag or alias") }
            let current = moves.last?.to
            var pointedAt: Digest??
            if let at { pointedAt = .some(try await offload { try registry.resolve(repo, alias, at: at) }) }
            let items: [HTML] = moves.reversed().prefix(Self.historyListed).map { m in
                let from: HTML =
                    m.from.map { "<a class=\"mono\" href=\"\(Self.artifactHref(repo.value, $0.description))\">\(Self.short($0))</a>" }
                    ?? "nothing"
                let to: HTML =
                    m.to.map { "<a class=\"mono\" href=\"\(Self.artifactHref(repo.value, $0.description))\">\(Self.short($0))</a>" }
                    ?? "deleted"
                return """
                    <li><strong>\(Self.when(m.at))</strong> · \(m.actor)<br>\(from) → \(to)\
                    \(m.reason.map { "<br><span class=\"muted\">Reason: \($0)</span>" as HTML } ?? "")</li>
                    """
            }
            // Earlier digests the alias can go back to, most recent first (what rollback accepts).
            var earlier: [(Digest, Int64)] = []
            var offered: Set<Digest> = []
            for (i, m) in moves.enumerated().dropLast().reversed() where earlier.count < 50 {
                // With the time the alias moved away from it.
                if let d = m.to, d != current, offered.insert(d).inserted { earlier.append((d, moves[i + 1].at)) }
            }
            var body: HTML = """
                <p class="muted"><a href="/ui">Models</a> / <a href="\(Self.repoHref(repo.value))">\(repo.value)</a> /</p>
                <h1>\(repo.value):\(alias)</h1>
                """
            // Only a digest is echoed: a crafted link cannot put its own words in the banner.
            if let moved = query["rolled-back"].flatMap({ try? Digest(parsing: $0) }) {
                body = "\(body)<p class=\"ok\" role=\"status\">Rolled back: \(repo.value):\(alias) now points at \(Self.short(moved)).</p>"
            }
            body = """
                \(body)<dl class="facts panel"><dt>Points at</dt><dd>\
                \(current.map { "<a class=\"mono\" href=\"\(Self.artifactHref(repo.value, $0.description))\">\($0.description)</a>" as HTML } ?? "nothing (deleted)")</dd>\
                <dt>Moves</dt><dd>\(moves.count >= Self.historyShown ? "\(Self.historyShown) or more (the newest \(Self.historyListed) below; depot history lists all)" : "\(moves.count)")</dd></dl>
                """
            // A deleted alias cannot be rolled back (it points nowhere): no form for it.
            if v.may(.rollback, repo.value), current != nil, !earlier.isEmpty {
                let options: [HTML] = earlier.prefix(50).enumerated().map { i, e in
                    "<option value=\"\(e.0.description)\"\(i == 0 ? " selected" : "")>\(Self.short(e.0)) (until \(Self.when(e.1)))</option>"
                }
                body = """
                    \(body)<h2>Roll back</h2>
                    <form method="post" action="\(Self.aliasHref(repo.value, alias))/rollback" class="panel">
                    <input type="hidden" name="csrf" value="\(v.csrf)">
                    <input type="hidden" name="expect" value="\(current?.description ?? "")">
                    <p><label for="to">Move \(alias) back to</label><select id="to" name="to">\(options)</select></p>
                    <p><label for="reason">Reason (recorded in the history and the audit journal)</label>\
                    <input id="reason" name="reason" type="text" required maxlength="500"></p>
                    <p><input id="confirm" name="confirm" type="checkbox" value="yes" required> \
                    <label for="confirm" class="inline-label">I confirm: \(repo.value):\(alias) will point at the chosen digest for every client.</label></p>
                    <p><button type="submit" class="danger">Roll back \(alias)</button></p>
                    </form>
                    """
            }
            let atValue = at.map {
                Self.when($0).replacingOccurrences(of: " UTC", with: "").replacingOccurrences(of: " ", with: "T").prefix(16)
            }
            var travel: HTML = ""
            if let at, let pointed = pointedAt {
                travel =
                    pointed.map { d in
                        "<p role=\"status\">At \(Self.when(at)), \(alias) pointed at <a class=\"mono\" href=\"\(Self.artifactHref(repo.value, d.description))\">\(d.description)</a>.</p>"
                    } ?? "<p role=\"status\">At \(Self.when(at)), \(alias) pointed at nothing.</p>"
            }
            body = """
                \(body)<h2>Time travel</h2>
                <form method="get" action="\(Self.aliasHref(repo.value, alias))" class="search">
                <div class="field"><label for="at">What did \(alias) point at on (UTC)</label>\
                <input id="at" name="at" type="datetime-local" value="\(atValue.map(String.init) ?? "")"></div>
                <button type="submit" class="secondary">Show</button></form>
                \(travel)
                <h2>History</h2>
                <ol class="timeline">\(items)</ol>
                """
            return UIPage.response(title: "\(repo.value):\(alias)", viewer: v, body)
        }
    }

    func rollback(_ match: RouteMatch, _ request: Request) async -> Response {
        await render(request) { _ in
            let repo = try Self.name(match)
            let alias = match["alias"]
            let form = try await UISession.form(request, limits: registry.uploads.limits)
            try UISession.checkPost(request, form: form)
            guard form["confirm"] == "yes" else {
                throw RegistryError(.invalidRequest, "tick the confirmation box to roll \(alias) back")
            }
            guard let reason = form["reason"]?.trimmingCharacters(in: .whitespacesAndNewlines), !reason.isEmpty, reason.utf8.count <= 1000
            else {
                throw RegistryError(.invalidRequest, "a rollback needs a reason (at most 1,000 bytes)")
            }
            let to = try form["to"].map { try RequestParsing.digest($0) }
            let actor = Self.actor(request)
            let registry = self.registry
            // The page showed the alias at `expect`: if it moved since, the choice was made on
            // stale facts. The rollback's compare-and-swap refuses it (in its transaction).
            let expect = try form["expect"].flatMap { $0.isEmpty ? nil : try RequestParsing.digest($0) }
            let r = try await offload {
                try registry.rollback(repo, alias, to: to, steps: 1, actor: actor, reason: reason, expect: expect)
            }
            return UIPage.redirect(Self.aliasHref(repo.value, alias) + "?rolled-back=" + HTML.urlComponent(r.to.description))
        }
    }
}
