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

/// The web UI's pages (docs/UI.md): server-rendered HTML over the same domain calls as the
/// `/depot/v1` handlers. No page needs JavaScript; forms post with a CSRF token. The gate in
/// `OCIResponder` has already authorized the route's action; pages hide what the viewer may not
/// see (repositories it may not pull) and offer only actions it may take.
struct UIHandlers: RouteHandlers {
    let registry: Registry
    let auth: AuthService?
    let jobs: JobQueue?
    let deployments: Deployments
    let scheme: String
    /// The audit page shows the chain's state; one verification at a time, reused for 30 s.
    let auditVerifications = SharedRecentResult<AuditVerification>(maxAge: .seconds(30))
    /// A repository's stored bytes after dedup walks all its chunks: computed at most every ten
    /// minutes per repository (1,000 repositories remembered), whoever asks.
    let storedBytes = Locked<[String: (bytes: Int64, atMs: Int64)]>([:])

    // MARK: plumbing

    func viewer(_ request: Request) -> UIViewer {
        let enabled = auth?.enabled ?? false
        var csrf = UISession.csrfToken(request)
        var newCookie: String?
        if csrf == nil {
            newCookie = UISession.newCSRFCookieValue()
            csrf = newCookie
        }
        return UIViewer(
            principal: Caller.principal ?? .anonymous, authEnabled: enabled, policy: auth?.policy ?? AuthPolicy(), csrf: csrf ?? "",
            newCSRFCookie: newCookie, secureCookies: scheme == "https")
    }

    /// Runs a page; an error becomes an HTML error page with the registry's message.
    func render(_ request: Request, _ page: (UIViewer) async throws -> Response) async -> Response {
        let v = viewer(request)
        do { return try await page(v) } catch {
            return UIPage.error(RegistryError.from(error), viewer: v)
        }
    }

    func canPull(_ v: UIViewer, _ repository: String) -> Bool { v.may(.pull, repository) }

    /// The gate's answer to a page request without a (valid) credential: the login page, which
    /// brings the viewer back here afterwards. A stale session cookie is cleared.
    func loginRedirect(_ request: Request, clearSession: Bool) -> Response {
        var target = request.uri.path
        if let q = request.uri.query, !q.isEmpty { target += "?" + q }
        let next = request.method == .get ? UISession.safeNext(target) : "/ui"
        let cookies = clearSession ? [UISession.setCookie(UISession.sessionCookie, "", maxAge: 0, secure: scheme == "https")] : []
        return UIPage.redirect("/ui/login?next=" + HTML.urlComponent(next), cookies: cookies)
    }

    /// The gate's answer to a page the viewer may not see: an HTML 403 naming what is missing.
    func refusal(_ request: Request, _ principal: Principal, _ e: RegistryError) -> Response {
        var v = viewer(request)
        v.principal = principal
        return UIPage.error(e, viewer: v)
    }

    // MARK: formatting

    static func when(_ ms: Int64?) -> String {
        guard let ms else { return "—" }
        let f = DateFormatter()
        f.locale = Locale(identifier: "en_US_POSIX")
        f.timeZone = TimeZone(identifier: "UTC")
        f.dateFormat = "yyyy-MM-dd HH:mm:ss"
        return f.string(from: Date(timeIntervalSince1970: Double(ms) / 1000)) + " UTC"
    }

    static func short(_ d: Digest) -> String { short(d.description) }
    static func short(_ d: String) -> String {
        guard let colon = d.firstIndex(of: ":") else { return String(d.prefix(19)) }
        return String(d[..<colon]) + ":" + String(d[d.index(after: colon)...].prefix(12))
    }

    static func repoHref(_ name: String) -> String { "/ui/repositories/" + HTML.namePath(name) }
    static func artifactHref(_ repo: String, _ digest: String) -> String {
        repoHref(repo) + "/-/artifacts/" + HTML.urlComponent(digest)
    }
    static func aliasHref(_ repo: String, _ alias: String) -> String { repoHref(repo) + "/-/aliases/" + HTML.urlComponent(alias) }
    static func deploymentHref(_ repo: String, _ env: String) -> String {
        repoHref(repo) + "/-/deployments/" + HTML.urlComponent(env)
    }

    static func annotations(_ json: String?) -> [String: String] {
        guard let json else { return [:] }
        return (try? WireJSON.decode([String: String].self, from: Array(json.utf8), what: "annotations")) ?? [:]
    }

    static func typeLabel(_ artifactType: String?, _ mediaType: String) -> String {
        let t = artifactType ?? mediaType
        // application/vnd.depot.model.config.v1+json → depot.model.config.v1
        var s = Substring(t)
        if s.hasPrefix("application/vnd.") { s = s.dropFirst("application/vnd.".count) }
        if let plus = s.firstIndex(of: "+") { s = s[..<plus] }
        return String(s)
    }

    static func state(_ s: String) -> HTML { "<span class=\"state-\(s)\">\(s)</span>" }

    // MARK: static

    func style() -> Response {
        var headers = UIPage.securityHeaders
        headers[.cacheControl] = "public, max-age=300"
        return Reply.bytes(Array(UIPage.stylesheet.utf8), contentType: "text/css; charset=utf-8", headers: headers)
    }

    // MARK: login and logout

    func loginPage(_ request: Request, message: String? = nil, status: Int = 200) async -> Response {
        await render(request) { v in
            let next = UISession.safeNext(try UISession.query(request)["next"])
            guard v.authEnabled else { return UIPage.redirect(next) }
            let alert: HTML = message.map { "<p class=\"error\" role=\"alert\">\($0)</p>" } ?? ""
            return UIPage.response(
                title: "Log in", viewer: v, status: status,
                """
                <h1>Log in to Depot</h1>
                \(alert)
                <form method="post" action="/ui/login" class="panel">
                <input type="hidden" name="csrf" value="\(v.csrf)"><input type="hidden" name="next" value="\(next)">
                <p><label for="user">User name</label><input id="user" name="user" type="text" autocomplete="username" required></p>
                <p><label for="password">Password or token</label>\
                <input id="password" name="password" type="password" autocomplete="current-password" required aria-describedby="pw-hint">
                <span id="pw-hint" class="hint">A robot token (dpt_…) works too, with any user name.</span></p>
                <p><button type="submit">Log in</button></p>
                </form>
                """)
        }
    }

    func loginSubmit(_ request: Request) async -> Response {
        let form: [String: String]
        do {
            form = try await UISession.form(request, limits: registry.uploads.limits)
            try UISession.checkPost(request, form: form)
        } catch {
            return await loginPage(request, message: RegistryError.from(error).message, status: 400)
        }
        guard let auth, auth.enabled else { return UIPage.redirect("/ui") }
        let next = UISession.safeNext(form["next"])
        do {
            let (session, _) = try await auth.openSession(user: form["user"] ?? "", password: form["password"] ?? "")
            return UIPage.redirect(
                next,
                cookies: [
                    UISession.setCookie(UISession.sessionCookie, session, maxAge: auth.sessionSeconds, secure: scheme == "https")
                ])
        } catch let f as AuthService.Failure {
            return await loginPage(request, message: f.message, status: 401)
        } catch {
            return await loginPage(request, message: RegistryError.from(error).message, status: ErrorStatus.of(RegistryError.from(error)))
        }
    }

    func logout(_ request: Request) async -> Response {
        await render(request) { _ in
            let form = try await UISession.form(request, limits: registry.uploads.limits)
            try UISession.checkPost(request, form: form)
            return UIPage.redirect(
                "/ui/login", cookies: [UISession.setCookie(UISession.sessionCookie, "", maxAge: 0, secure: scheme == "https")])
        }
    }

    // MARK: models: search and repositories

    func home(_ request: Request) async -> Response {
        await render(request) { v in
            let params = try UISession.query(request)
            let q = params["q"] ?? ""
            let registry = self.registry
            var body: HTML = """
                <h1>Models</h1>
                <form class="search" role="search" method="get" action="/ui">
                <div class="field"><label for="q">Search models</label>\
                <input id="q" name="q" type="search" value="\(q)" aria-describedby="q-hint">
                <p id="q-hint" class="hint">Words match repository names. Filters: <code>run:exp-42</code> <code>dataset:…</code> \
                <code>owner:…</code> <code>format:onnx</code> <code>opset:17</code> <code>dtype:F16</code> <code>type:…</code> \
                <code>backend:…</code> <code>annotation.KEY:VALUE</code>.</p></div>
                <button type="submit">Search</button>
                </form>
                """
            if q.trimmingCharacters(in: .whitespaces).isEmpty {
                let after = params["after"]
                let listed = try await offload { try registry.repositorySummaries(nameContains: nil, after: after, limit: 100) }
                let repos = listed.filter { canPull(v, $0.name) }
                let rows: [HTML] = repos.map { r in
                    """
                    <tr><td data-label="Repository"><a href="\(Self.repoHref(r.name))">\(r.name)</a></td>\
                    <td class="num" data-label="Artifacts">\(r.artifacts)</td>\
                    <td class="num" data-label="Size">\(ByteCount.text(r.logicalBytes))</td>\
                    <td data-label="Last push">\(Self.when(r.lastPush))</td></tr>
                    """
                }
                body = """
                    \(body)<h2>Repositories</h2>
                    \(HTML.when(rows.isEmpty, "<p class=\"muted\">No repositories you may read yet. Push one with <code>depot push</code>.</p>"))
                    <div class="scroll"><table class="stack"><thead><tr><th scope="col">Repository</th><th scope="col" class="num">Artifacts</th>\
                    <th scope="col" class="num">Size</th><th scope="col">Last push</th></tr></thead><tbody>\(rows)</tbody></table></div>
                    \(HTML.when(listed.count >= 100, "<p><a href=\"/ui?after=\(HTML.urlComponent(listed.last?.name ?? ""))\">More repositories</a></p>"))
                    """
            } else {
                let query = try ArtifactFacts.parseQuery(q, limit: Self.pageSize)
                let start = try Self.before(request)
                // Pages of what the viewer may read: matches in other repositories are skipped
                // (a few pages at most), and the next page starts after the last row shown, so
                // neither the rows nor the link say anything about what was skipped.
                let found = try await offload { () -> [ArtifactRow] in
                    var shown: [ArtifactRow] = []
                    var cursor = start
                    for _ in 0..<10 {
                        var page = query
                        page.before = cursor
                        let rows = try registry.searchArtifacts(page)
                        shown += rows.filter { canPull(v, $0.repository) }.prefix(Self.pageSize - shown.count)
                        guard rows.count == Self.pageSize, shown.count < Self.pageSize, let last = rows.last else { break }
                        cursor = last.cursor
                    }
                    return shown
                }
                // Words alone also name repositories: list those (however old their last push),
                // since artifacts are searched among the newest candidates only.
                var repoList: HTML = ""
                if query.facts.isEmpty, start == nil, let longest = query.names.max(by: { $0.count < $1.count }) {
                    let names = query.names.map { $0.lowercased() }
                    let repos = try await offload { try registry.repositorySummaries(nameContains: longest, after: nil, limit: 200) }
                        .filter { r in canPull(v, r.name) && names.allSatisfy { r.name.lowercased().contains($0) } }
                    let items: [HTML] = repos.prefix(50).map { "<li><a href=\"\(Self.repoHref($0.name))\">\($0.name)</a></li>" }
                    repoList = HTML.when(!items.isEmpty, "<h2>Repositories</h2><ul>\(items)</ul>")
                }
                body = """
                    \(body)\(repoList)<h2>Artifacts for <q>\(q)</q>\(start == nil ? "" : " (older)")</h2>
                    \(Self.artifactTable(found, showRepository: true))
                    \(Self.olderLink(found, base: "/ui?q=" + HTML.urlComponent(q) + "&"))
                    <p class="hint">A search checks the newest 20,000 candidates of its most selective filter; add filters to reach older ones.</p>
                    """
            }
            return UIPage.response(title: "Models", viewer: v, body)
        }
    }

    /// A time a page's form sent: RFC 3339 or milliseconds, or a `datetime-local` value
    /// (`2026-05-03T14:00`, seconds and fractions optional, no zone: read as UTC). `endOfMinute`
    /// makes a value without seconds mean the end of that minute (an "until" bound).
    static func formTime(_ raw: String, endOfMinute: Bool = false) throws -> Int64 {
        var text = raw
        let hasZone = text.hasSuffix("Z") || text.hasSuffix("z") || text.dropFirst(19).contains { $0 == "+" || $0 == "-" }
        let looksLocal = text.count >= 16 && text.dropFirst(10).first == "T"
        if looksLocal && !hasZone { text += "Z" }
        let minutesOnly = looksLocal && !hasZone && raw.count == 16
        if minutesOnly { text = raw + ":00Z" }
        let ms = try Self.time(text)
        return minutesOnly && endOfMinute ? ms + 59_999 : ms
    }

    /// Rows per page of artifacts (a search, a repository); older ones are a link away.
    static let pageSize = 50

    /// `?before=`: the position the next page of a newest-first list starts after.
    static func before(_ request: Request) throws -> ArtifactCursor? {
        guard let text = try UISession.query(request)["before"] else { return nil }
        guard let c = ArtifactCursor(text: text) else {
            throw RegistryError(.invalidRequest, "before must be a position from an Older link (MS.REPO.HEX)")
        }
        return c
    }

    /// "Older" after a full page: the next page starts after its last row.
    static func olderLink(_ rows: [ArtifactRow], base: String) -> HTML {
        guard rows.count >= pageSize, let last = rows.last else { return "" }
        return "<p><a href=\"\(base)before=\(last.cursor.text)\">Older artifacts</a></p>"
    }

    static func artifactTable(_ rows: [ArtifactRow], showRepository: Bool) -> HTML {
        guard !rows.isEmpty else { return "<p class=\"muted\">Nothing found.</p>" }
        let body: [HTML] = rows.map { r in
            let a = annotations(r.annotationsJSON)
            let tags: [HTML] = r.tags.map { "<a class=\"pill\" href=\"\(aliasHref(r.repository, $0))\">\($0)</a>" }
            let repo: HTML =
                showRepository ? "<td data-label=\"Repository\"><a href=\"\(repoHref(r.repository))\">\(r.repository)</a></td>" : ""
            return """
                <tr>\(repo)<td data-label="Artifact"><a class="mono" href="\(artifactHref(r.repository, r.digest.description))">\
                \(short(r.digest))</a></td><td data-label="Tags">\(tags)</td>\
                <td data-label="Type">\(typeLabel(r.artifactType, r.mediaType))</td>\
                <td data-label="Run">\(a[Annotation.Lineage.run] ?? "")</td><td data-label="Pushed">\(when(r.createdAt))</td></tr>
                """
        }
        let repoHead: HTML = showRepository ? "<th scope=\"col\">Repository</th>" : ""
        return """
            <div class="scroll"><table class="stack"><thead><tr>\(repoHead)<th scope="col">Artifact</th><th scope="col">Tags</th>\
            <th scope="col">Type</th><th scope="col">Run</th><th scope="col">Pushed</th></tr></thead><tbody>\(body)</tbody></table></div>
            """
    }

    func repository(_ match: RouteMatch, _ request: Request) async -> Response {
        await render(request) { v in
            let repo = try Self.name(match)
            let registry = self.registry
            let before = try Self.before(request)
            let (overview, tagRows) = try await offload {
                () -> ((artifacts: [ArtifactRow], summary: RepositorySummary?), [(String, Digest)]) in
                let o = try registry.repositoryOverview(repo, before: before, limit: Self.pageSize)
                return (o, try registry.tagTargets(repo, limit: 200).map { ($0.tag, $0.digest) })
            }
            let nowMs = Int64(Date().timeIntervalSince1970 * 1000)
            var stored = storedBytes.withLock { $0[repo.value] }.flatMap { nowMs - $0.atMs < 600_000 ? $0.bytes : nil }
            if stored == nil {
                let bytes = try await offload { try registry.repositoryStoredBytes(repo) }
                storedBytes.withLock { cache in
                    if cache.count >= 1000 { cache.removeAll(keepingCapacity: true) }
                    cache[repo.value] = (bytes, nowMs)
                }
                stored = bytes
            }
            let storedTotal = stored ?? 0
            let logical = overview.summary?.logicalBytes ?? 0
            let saved = logical > 0 ? max(0, 100 - Double(storedTotal) * 100 / Double(logical)) : 0
            let tagItems: [HTML] = tagRows.map { t, d in
                """
                <tr><td data-label="Tag"><a href="\(Self.aliasHref(repo.value, t))">\(t)</a></td>\
                <td data-label="Artifact"><a class="mono" href="\(Self.artifactHref(repo.value, d.description))">\(Self.short(d))</a></td></tr>
                """
            }
            let host = request.head.authority ?? "REGISTRY"
            return UIPage.response(
                title: repo.value, viewer: v,
                """
                <p class="muted"><a href="/ui">Models</a> /</p>
                <h1>\(repo.value)</h1>
                <dl class="facts panel">
                <dt>Artifacts</dt><dd>\(overview.summary?.artifacts ?? 0)</dd>
                <dt>Size (what clients download)</dt><dd>\(ByteCount.text(logical))</dd>
                <dt>Stored after dedup</dt><dd>\(ByteCount.text(storedTotal)) \
                <span class="muted">(\(String(format: "%.0f", saved))% saved by chunk dedup and compression)</span></dd>
                <dt>Last push</dt><dd>\(Self.when(overview.summary?.lastPush))</dd>
                <dt>Pull</dt><dd><code>depot pull \(host)/\(repo.value):TAG ./model</code></dd>
                </dl>
                <h2>Tags and aliases</h2>
                \(HTML.when(tagItems.isEmpty, "<p class=\"muted\">No tags.</p>"))
                <div class="scroll"><table class="stack"><thead><tr><th scope="col">Tag</th><th scope="col">Artifact</th></tr></thead>\
                <tbody>\(tagItems)</tbody></table></div>
                <h2>Artifacts</h2>
                \(Self.artifactTable(overview.artifacts, showRepository: false))
                \(Self.olderLink(overview.artifacts, base: Self.repoHref(repo.value) + "?"))
                """)
        }
    }
}
