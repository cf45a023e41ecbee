/// A small layered graph drawn as inline SVG on the server (no Graphviz process, no script):
/// lineage around an artifact, a pipeline run's stages. Nodes carry a layer (a row, top to
/// bottom); within a row they keep the order given, which callers make stable (nearest first).
/// Every node is a link with a text alternative, so the graph works with the keyboard and a
/// screen reader, and each page also lists the same nodes as a table.
///
/// Layout cost is linear in nodes + edges; callers bound both (`maxNodes`).
struct GraphSVG {
    struct Node {
        var id: String
        var layer: Int
        /// Up to two lines; the first is the name.
        var title: String
        var subtitle: String
        var href: String?
        /// Extra CSS class: `focus` for the artifact the page is about, `state-…` for job states.
        var cssClass: String = ""
    }

    struct Edge {
        var from: String
        var to: String
        var label: String
    }

    static let maxNodes = 120
    static let nodeWidth = 210
    static let nodeHeight = 46
    static let columnGap = 24
    static let rowGap = 64
    static let margin = 12

    var nodes: [Node] = []
    var edges: [Edge] = []
    /// What the graph shows, for the `<title>`/`aria-label` of the whole figure.
    var label: String
    /// Unique on the page (several graphs on one page each have their own arrow marker).
    var id = "g"

    func render() -> HTML {
        guard !nodes.isEmpty else { return "" }
        let layers = Set(nodes.map(\.layer)).sorted()
        var row: [Int: Int] = [:]
        for (i, l) in layers.enumerated() { row[l] = i }
        var columnsInRow: [Int: Int] = [:]
        var position: [String: (x: Int, y: Int)] = [:]
        for n in nodes where position[n.id] == nil {
            let r = row[n.layer]!
            let c = columnsInRow[r, default: 0]
            columnsInRow[r] = c + 1
            position[n.id] = (Self.margin + c * (Self.nodeWidth + Self.columnGap), Self.margin + r * (Self.nodeHeight + Self.rowGap))
        }
        let widest = columnsInRow.values.max() ?? 1
        // Centre each row under the widest one.
        for n in nodes {
            let r = row[n.layer]!
            let shift = (widest - columnsInRow[r]!) * (Self.nodeWidth + Self.columnGap) / 2
            if let p = position[n.id] { position[n.id] = (p.x + shift, p.y) }
        }
        let width = Self.margin * 2 + widest * Self.nodeWidth + (widest - 1) * Self.columnGap
        let height = Self.margin * 2 + layers.count * Self.nodeHeight + (layers.count - 1) * Self.rowGap
        var parts: [HTML] = []
        parts.append(
            """
            <defs><marker id="arrow-\(id)" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" markerHeight="7" orient="auto-start-reverse">\
            <path d="M0,0 L10,5 L0,10 z" fill="#57606a"/></marker></defs>
            """)
        for e in edges {
            guard let a = position[e.from], let b = position[e.to] else { continue }
            // From the bottom of the upper box to the top of the lower one (or across a row).
            let (x1, y1, x2, y2): (Int, Int, Int, Int)
            if a.y < b.y {
                (x1, y1, x2, y2) = (a.x + Self.nodeWidth / 2, a.y + Self.nodeHeight, b.x + Self.nodeWidth / 2, b.y)
            } else if a.y > b.y {
                (x1, y1, x2, y2) = (a.x + Self.nodeWidth / 2, a.y, b.x + Self.nodeWidth / 2, b.y + Self.nodeHeight)
            } else {
                let right = a.x < b.x
                (x1, y1, x2, y2) = (
                    right ? a.x + Self.nodeWidth : a.x, a.y + Self.nodeHeight / 2, right ? b.x : b.x + Self.nodeWidth,
                    b.y + Self.nodeHeight / 2
                )
            }
            parts.append("<line class=\"edge\" x1=\"\(x1)\" y1=\"\(y1)\" x2=\"\(x2)\" y2=\"\(y2)\" marker-end=\"url(#arrow-\(id))\"/>")
            if !e.label.isEmpty {
                parts.append(
                    "<text class=\"edge-label\" x=\"\((x1 + x2) / 2 + 6)\" y=\"\((y1 + y2) / 2 + 4)\">\(Self.clip(e.label, 30))</text>")
            }
        }
        for n in nodes {
            guard let p = position[n.id] else { continue }
            let box: HTML = """
                <rect x="\(p.x)" y="\(p.y)" width="\(Self.nodeWidth)" height="\(Self.nodeHeight)" rx="6"/>\
                <text x="\(p.x + 8)" y="\(p.y + 19)">\(Self.clip(n.title, 30))</text>\
                <text x="\(p.x + 8)" y="\(p.y + 36)" class="sub">\(Self.clip(n.subtitle, 32))</text>
                """
            let cls = "node" + (n.cssClass.isEmpty ? "" : " " + n.cssClass)
            if let href = n.href {
                parts.append(
                    "<g class=\"\(cls)\"><a href=\"\(href)\" aria-label=\"\(n.title) \(n.subtitle)\"><title>\(n.title) \(n.subtitle)</title>\(box)</a></g>"
                )
            } else {
                parts.append("<g class=\"\(cls)\"><title>\(n.title) \(n.subtitle)</title>\(box)</g>")
            }
        }
        // With links inside, the figure is a group (an image's children are hidden from
        // assistive technology, and its links would be focusable but unnamed).
        let linked = nodes.contains { $0.href != nil }
        return """
            <div class="scroll"><svg class="graph" xmlns="http://www.w3.org/2000/svg" role="\(linked ? "group" : "img")" aria-label="\(label)" \
            width="\(width)" height="\(height)" viewBox="0 0 \(width) \(height)"><title>\(label)</title>\(HTML.join(parts))</svg></div>
            """
    }

    /// Shortens text for a box (the full text is in the node's title and the table beside it).
    static func clip(_ s: String, _ n: Int) -> String {
        s.count <= n ? s : String(s.prefix(n - 1)) + "…"
    }
}
