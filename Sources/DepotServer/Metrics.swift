import DepotCatalog
import DepotCore
import Foundation

/// Request and byte counters exposed in Prometheus' text format at `GET /metrics`.
public final class ServerMetrics: Sendable {
    private struct Key: Hashable {
        let route: String
        let method: String
        let status: Int
    }
    private let requests = Locked<[Key: Int]>([:])
    private let bytes = Locked((received: Int64(0), sent: Int64(0)))

    /// This replica's leadership of the background services (`depot_leader`); nil: not reported.
    let leadership: Leadership?

    public init(leadership: Leadership? = nil) { self.leadership = leadership }

    func record(route: String, method: String, status: Int) {
        requests.withLock { $0[Key(route: route, method: method, status: status), default: 0] += 1 }
    }

    func received(_ n: Int) { bytes.withLock { $0.received += Int64(n) } }
    func sent(_ n: Int) { bytes.withLock { $0.sent += Int64(n) } }

    /// The exposition text, with gauges supplied by the caller.
    func render(gauges: [(name: String, help: String, value: Double)]) -> String {
        var out = "# HELP depot_http_requests_total HTTP requests by route, method and status.\n# TYPE depot_http_requests_total counter\n"
        for (k, v) in requests.withLock({ $0 }).sorted(by: {
            ($0.key.route, $0.key.method, $0.key.status) < ($1.key.route, $1.key.method, $1.key.status)
        }) {
            out += "depot_http_requests_total{route=\"\(k.route)\",method=\"\(k.method)\",status=\"\(k.status)\"} \(v)\n"
        }
        let b = bytes.withLock { $0 }
        out +=
            "# HELP depot_http_received_bytes_total Request body bytes received.\n# TYPE depot_http_received_bytes_total counter\ndepot_http_received_bytes_total \(b.received)\n"
        out +=
            "# HELP depot_http_sent_bytes_total Blob and manifest bytes sent.\n# TYPE depot_http_sent_bytes_total counter\ndepot_http_sent_bytes_total \(b.sent)\n"
        var gauges = gauges
        if let leadership {
            gauges.append(
                (
                    "depot_leader", "1 while this replica runs the background services (GC, webhooks, scheduler, canary).",
                    leadership.isLeader ? 1 : 0
                ))
        }
        for g in gauges {
            out += "# HELP \(g.name) \(g.help)\n# TYPE \(g.name) gauge\n\(g.name) \(Int64(g.value))\n"
        }
        return out
    }
}
