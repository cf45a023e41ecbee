import DepotCatalog
import DepotCore
import DepotStore
import Foundation

/// Request counters, latency histograms and byte counters exposed in Prometheus' text format
/// at `GET /metrics`.
public final class ServerMetrics: Sendable {
    private struct Key: Hashable {
        let route: String
        let method: String
        let status: Int
    }
    private struct RouteKey: Hashable {
        let route: String
        let method: String
    }
    private let requests = Locked<[Key: Int]>([:])
    /// Until the response head: a blob GET's body streams after it, so its histogram is the
    /// time to the first byte; an upload's handler reads the whole body first, so its is the push.
    private let latency = Locked<[RouteKey: Histogram]>([:])
    /// Upload requests' time waiting for body bytes from the network (`receive` stage).
    private let receiving = Locked(Histogram())
    private let bytes = Locked((received: Int64(0), sent: Int64(0)))

    /// This replica's leadership of the background services (`depot_leader`); nil: not reported.
    let leadership: Leadership?

    public init(leadership: Leadership? = nil) { self.leadership = leadership }

    func record(route: String, method: String, status: Int, seconds: Double) {
        requests.withLock { $0[Key(route: route, method: method, status: status), default: 0] += 1 }
        latency.withLock { $0[RouteKey(route: route, method: method), default: Histogram()].observe(seconds) }
    }

    /// One upload request's time waiting for the client's bytes.
    func receivedBody(waitingSeconds: Double) { receiving.withLock { $0.observe(waitingSeconds) } }

    func received(_ n: Int) { bytes.withLock { $0.received += Int64(n) } }
    func sent(_ n: Int) { bytes.withLock { $0.sent += Int64(n) } }

    /// The exposition text, with gauges supplied by the caller and the store's push stages.
    func render(
        gauges: [(name: String, help: String, value: Double)], counters: [(name: String, help: String, value: Int64)] = [],
        pushStages: [(stage: PushStage, histogram: Histogram)] = []
    ) -> String {
        var out = "# HELP depot_build_info This build of Depot (always 1).\n# TYPE depot_build_info gauge\n"
        out += "depot_build_info{version=\"\(BuildInfo.version)\",catalog_schema=\"\(Database.schemaVersion)\"} 1\n"
        out += "# HELP depot_http_requests_total HTTP requests by route, method and status.\n# TYPE depot_http_requests_total counter\n"
        for (k, v) in requests.withLock({ $0 }).sorted(by: {
            ($0.key.route, $0.key.method, $0.key.status) < ($1.key.route, $1.key.method, $1.key.status)
        }) {
            out += "depot_http_requests_total{route=\"\(k.route)\",method=\"\(k.method)\",status=\"\(k.status)\"} \(v)\n"
        }
        out += """
            # HELP depot_http_request_duration_seconds Time from a request's arrival to its response head, by route and method \
            (a blob GET's body streams after it).
            # TYPE depot_http_request_duration_seconds histogram

            """
        for (k, h) in latency.withLock({ $0 }).sorted(by: { ($0.key.route, $0.key.method) < ($1.key.route, $1.key.method) }) {
            out += h.exposition(name: "depot_http_request_duration_seconds", labels: "route=\"\(k.route)\",method=\"\(k.method)\"")
        }
        out += """
            # HELP depot_push_stage_seconds Time a blob write spent per stage, summed over its threads, one observation per \
            write or upload part; receive: an upload request waiting for the client's bytes.
            # TYPE depot_push_stage_seconds histogram

            """
        let waiting = receiving.withLock { $0 }
        if waiting.count > 0 { out += waiting.exposition(name: "depot_push_stage_seconds", labels: "stage=\"receive\"") }
        for (stage, h) in pushStages {
            out += h.exposition(name: "depot_push_stage_seconds", labels: "stage=\"\(stage.rawValue)\"")
        }
        let b = bytes.withLock { $0 }
        out +=
            "# HELP depot_http_received_bytes_total Request body bytes received.\n# TYPE depot_http_received_bytes_total counter\ndepot_http_received_bytes_total \(b.received)\n"
        out +=
            "# HELP depot_http_sent_bytes_total Blob and manifest bytes sent.\n# TYPE depot_http_sent_bytes_total counter\ndepot_http_sent_bytes_total \(b.sent)\n"
        for c in counters { out += "# HELP \(c.name) \(c.help)\n# TYPE \(c.name) counter\n\(c.name) \(c.value)\n" }
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
