import DepotAPI
import DepotAuth
import DepotRegistry
import Foundation
import HTTPTypes
import Hummingbird

/// Who is looking at a page and what they may do: decides which links and buttons a page shows
/// (the gate decides what a request may do; a page only avoids offering what would be refused).
struct UIViewer: Sendable {
    var principal: Principal
    /// Authentication is on (there is a login and a logout).
    var authEnabled: Bool
    var policy: AuthPolicy
    /// The form token of this viewer's pages.
    var csrf: String
    /// A new `depot_csrf` cookie to set with the page (authentication off, first visit).
    var newCSRFCookie: String?
    var secureCookies: Bool

    func may(_ action: Action, _ repository: String? = nil) -> Bool {
        guard authEnabled else { return true }
        return Authorizer.decide(principal, AccessRequest(action, repository: repository), policy: policy) == .allow
    }
}

/// The page chrome: header with navigation, main landmark, stylesheet, security headers.
enum UIPage {
    static func response(
        title: String, viewer: UIViewer, status: Int = 200, refreshSeconds: Int? = nil, _ body: HTML
    ) -> Response {
        var nav: [HTML] = ["<a href=\"/ui\">Models</a>"]
        if viewer.may(.deployRead) { nav.append("<a href=\"/ui/deployments\">Deployments</a>") }
        if viewer.may(.jobsRead) { nav.append("<a href=\"/ui/jobs\">Jobs</a>") }
        if viewer.may(.auditRead) { nav.append("<a href=\"/ui/audit\">Audit</a>") }
        var account: HTML = ""
        if viewer.authEnabled {
            if viewer.principal.isAuthenticated {
                account = """
                    <form class="inline" method="post" action="/ui/logout"><input type="hidden" name="csrf" value="\(viewer.csrf)">\
                    <span class="who">\(viewer.principal.id)</span> <button type="submit" class="link">Log out</button></form>
                    """
            } else {
                account = "<a href=\"/ui/login\">Log in</a>"
            }
        }
        let refresh: HTML = refreshSeconds.map { "<meta http-equiv=\"refresh\" content=\"\($0)\">" } ?? ""
        let page: HTML = """
            <!doctype html>
            <html lang="en"><head><meta charset="utf-8">
            <meta name="viewport" content="width=device-width, initial-scale=1">
            \(refresh)<title>\(title) · Depot</title>
            <link rel="stylesheet" href="/ui/style.css">
            </head><body>
            <a class="skip" href="#main">Skip to content</a>
            <header><nav aria-label="Main"><a class="brand" href="/ui">Depot</a> \(HTML.join(nav, separator: " "))</nav>\
            <div class="account">\(account)</div></header>
            <main id="main" tabindex="-1">
            \(body)
            </main>
            </body></html>
            """
        var headers = securityHeaders
        headers[.contentType] = "text/html; charset=utf-8"
        if let c = viewer.newCSRFCookie {
            headers[.setCookie] = UISession.setCookie(UISession.csrfCookie, c, maxAge: 86400 * 30, secure: viewer.secureCookies)
        }
        return Reply.bytes(page.bytes, status: status, contentType: "text/html; charset=utf-8", headers: headers)
    }

    /// No scripts at all; styles only from the stylesheet; forms only to this server; never framed.
    static var securityHeaders: HTTPFields {
        [
            HTTPField.Name("Content-Security-Policy")!:
                "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
            HTTPField.Name("X-Content-Type-Options")!: "nosniff",
            HTTPField.Name("Referrer-Policy")!: "same-origin",
            .cacheControl: "no-store",
        ]
    }

    static func redirect(_ location: String, cookies: [String] = []) -> Response {
        var headers = securityHeaders
        headers[.location] = location
        for c in cookies { headers.append(HTTPField(name: .setCookie, value: c)) }
        return Response(status: .seeOther, headers: headers)
    }

    /// An error page: the registry's message, the code and what to do.
    static func error(_ e: RegistryError, viewer: UIViewer) -> Response {
        let status = ErrorStatus.of(e)
        return response(
            title: "Error \(status)", viewer: viewer, status: status,
            """
            <h1>\(status == 404 ? "Not found" : status == 403 ? "Not allowed" : "Something went wrong")</h1>
            <p class="error" role="alert">\(e.message)</p>
            <p class="muted">Code: <code>\(e.code.rawValue)</code>. <a href="/ui">Back to the models</a>.</p>
            """)
    }

    static let stylesheet = """
        :root { --fg: #1b1f24; --muted: #4d5661; --bg: #ffffff; --panel: #f4f6f8; --line: #d0d7de; --link: #0b57d0;
          --accent: #0b57d0; --ok: #116329; --bad: #a40e26; --warn: #7d4e00; }
        * { box-sizing: border-box; }
        body { margin: 0; font: 16px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: var(--fg); background: var(--bg); }
        a { color: var(--link); }
        a:focus-visible, button:focus-visible, input:focus-visible, select:focus-visible, main:focus-visible {
          outline: 3px solid #1b1f24; outline-offset: 2px; box-shadow: 0 0 0 5px #ffbf47; }
        header a:focus-visible, header button:focus-visible { outline-color: #ffbf47; box-shadow: none; }
        .skip { position: absolute; left: -9999px; }
        .skip:focus { left: 8px; top: 8px; background: #fff; padding: 6px 10px; z-index: 10; }
        header { display: flex; flex-wrap: wrap; justify-content: space-between; align-items: center; gap: 8px;
          padding: 10px 16px; background: #0d1b2a; color: #fff; }
        header a, header .who { color: #fff; }
        header nav a { margin-right: 14px; text-decoration: none; }
        header nav a:hover { text-decoration: underline; }
        header .brand { font-weight: 700; font-size: 1.15em; }
        header button.link { color: #fff; }
        main { padding: 16px; max-width: 1200px; margin: 0 auto; }
        h1 { font-size: 1.5em; margin: 0.2em 0 0.5em; overflow-wrap: anywhere; }
        h2 { font-size: 1.2em; margin-top: 1.6em; border-bottom: 1px solid var(--line); padding-bottom: 4px; }
        code, .mono { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: 0.92em; overflow-wrap: anywhere; }
        .muted { color: var(--muted); }
        .error { color: var(--bad); font-weight: 600; }
        .ok { color: var(--ok); font-weight: 600; }
        .warn { color: var(--warn); font-weight: 600; }
        .scroll { overflow-x: auto; }
        table { border-collapse: collapse; width: 100%; margin: 8px 0; }
        th, td { text-align: left; padding: 6px 8px; border-bottom: 1px solid var(--line); vertical-align: top; }
        th { background: var(--panel); font-weight: 600; }
        td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
        form.search { display: flex; flex-wrap: wrap; gap: 8px; align-items: flex-end; margin: 8px 0 16px; }
        form.search .field { flex: 1 1 320px; }
        label { display: block; font-weight: 600; margin-bottom: 4px; }
        input[type=text], input[type=search], input[type=password], input[type=datetime-local], select {
          width: 100%; padding: 8px; font: inherit; color: var(--fg); border: 1px solid #6e7781; border-radius: 4px; background: #fff; }
        button, .button { font: inherit; padding: 8px 14px; border-radius: 4px; border: 1px solid var(--accent);
          background: var(--accent); color: #fff; cursor: pointer; text-decoration: none; display: inline-block; }
        button.secondary { background: #fff; color: var(--accent); }
        button.danger { background: var(--bad); border-color: var(--bad); }
        button.link { background: none; border: none; padding: 0; color: var(--link); text-decoration: underline; }
        form.inline { display: inline; }
        label.inline-label { display: inline; font-weight: 400; }
        .hint { color: var(--muted); font-size: 0.9em; margin: 4px 0 0; }
        .panel { background: var(--panel); border: 1px solid var(--line); border-radius: 6px; padding: 10px 14px; margin: 10px 0; }
        .pill { display: inline-block; padding: 1px 8px; border-radius: 10px; background: #ddf4ff; color: #0a3069; font-size: 0.85em;
          margin: 1px 2px; }
        .pill.alias { background: #fff1c2; color: #4d2d00; }
        .state-succeeded, .state-promoted, .state-ready, .state-delivered { color: var(--ok); font-weight: 600; }
        .state-failed, .state-rolled-back, .state-aborted, .state-cancelled, .state-gave-up { color: var(--bad); font-weight: 600; }
        .state-running, .state-leased, .state-queued, .state-paused { color: var(--warn); font-weight: 600; }
        dl.facts { display: grid; grid-template-columns: max-content 1fr; gap: 4px 16px; margin: 8px 0; }
        dl.facts dt { font-weight: 600; }
        dl.facts dd { margin: 0; overflow-wrap: anywhere; }
        pre { background: var(--panel); padding: 10px; overflow-x: auto; border-radius: 4px; }
        ol.timeline { list-style: none; padding: 0; border-left: 3px solid var(--line); margin-left: 8px; }
        ol.timeline li { margin: 0 0 14px; padding-left: 14px; position: relative; }
        ol.timeline li::before { content: ""; position: absolute; left: -9px; top: 6px; width: 12px; height: 12px;
          border-radius: 50%; background: var(--accent); }
        svg.graph { max-width: 100%; height: auto; border: 1px solid var(--line); border-radius: 6px; background: #fff; }
        .scroll > svg.graph { max-width: none; }
        svg .node rect { fill: #f4f8ff; stroke: #0b57d0; stroke-width: 1.5; }
        svg .node.focus rect { fill: #fff1c2; stroke: #7d4e00; stroke-width: 2.5; }
        svg .node text { fill: #1b1f24; font-size: 12px; font-family: system-ui, sans-serif; }
        svg .node.state-succeeded rect { fill: #dafbe1; stroke: #116329; }
        svg .node.state-failed rect, svg .node.state-cancelled rect { fill: #ffebe9; stroke: #a40e26; }
        svg .node.state-running rect, svg .node.state-leased rect, svg .node.state-queued rect { fill: #fff8c5; stroke: #7d4e00; }
        svg .node text { font-weight: 400; }
        svg .node a:focus rect { stroke: #1b1f24; stroke-width: 4; }
        svg .edge { stroke: #57606a; stroke-width: 1.5; fill: none; }
        svg .edge-label { fill: #4d5661; font-size: 11px; font-family: system-ui, sans-serif; }
        svg .axis { stroke: #8c959f; stroke-width: 1; }
        svg .series { fill: none; stroke: #0b57d0; stroke-width: 2; }
        svg .series.stable { stroke: #57606a; stroke-dasharray: 5 4; }
        svg .bad-point { fill: #a40e26; }
        svg .good-point { fill: #116329; }
        svg .chart-text { fill: #4d5661; font-size: 11px; font-family: system-ui, sans-serif; }
        .actions { display: flex; flex-wrap: wrap; gap: 8px; align-items: flex-end; }
        @media (max-width: 640px) {
          body { font-size: 15px; }
          main { padding: 10px; }
          dl.facts { grid-template-columns: 1fr; }
          table.stack thead { display: none; }
          table.stack tr { display: block; border-bottom: 1px solid var(--line); padding: 6px 0; }
          table.stack td { display: block; border: none; padding: 2px 4px; }
          table.stack td[data-label]::before { content: attr(data-label) ": "; font-weight: 600; }
        }
        """
}
