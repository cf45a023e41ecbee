import DepotAPI
import Foundation

/// Where metric values come from (Prometheus over HTTP in the server).
public protocol MetricsSource: Sendable {
    /// The scalar value of an instant query: nil when it has no data (empty result or NaN).
    /// Throws when the source cannot be asked (unreachable, query refused).
    func value(_ promql: String) async throws -> Double?
}

/// One check's measurement at one analysis.
public struct Measurement: Sendable, Equatable {
    public enum Outcome: String, Sendable { case pass, inconclusive, fail, skipped }
    public var check: String
    public var canary: Double?
    public var stable: Double?
    public var outcome: Outcome
    public var detail: String

    /// As recorded in a decision. A value that is not finite (Prometheus answers `NaN` for 0/0)
    /// has no JSON form and is left out; `detail` says what was seen.
    public var json: JSONValue {
        var o: [String: JSONValue] = ["check": .string(check), "outcome": .string(outcome.rawValue), "detail": .string(detail)]
        if let canary, canary.isFinite { o["canary"] = .double(canary) }
        if let stable, stable.isFinite { o["stable"] = .double(stable) }
        return .object(o)
    }
}

/// Evaluates a policy's checks for a canary against the stable version.
public enum CanaryAnalysis {
    public struct Context: Sendable {
        public var model: String
        public var canaryVersion: Int
        public var stableVersion: Int?
        /// The canary's share now: at 100% no node serves the stable version, so comparisons with it are skipped.
        public var weight: Int
        /// `{{window}}`: this rollout's analysis interval, as a Prometheus duration.
        public var window: String
        public init(model: String, canaryVersion: Int, stableVersion: Int?, weight: Int, analysisSeconds: Double) {
            self.model = model
            self.canaryVersion = canaryVersion
            self.stableVersion = stableVersion
            self.weight = weight
            window = "\(max(1, Int(min(analysisSeconds, 7 * 86400).rounded())))s"
        }
    }

    public static func measure(_ policy: CanaryPolicy, _ context: Context, source: any MetricsSource) async -> [Measurement] {
        var out: [Measurement] = []
        for check in policy.checks {
            out.append(await measure(check, policy, context, source))
        }
        return out
    }

    static func measure(_ check: MetricCheck, _ policy: CanaryPolicy, _ c: Context, _ source: any MetricsSource) async -> Measurement {
        func query(_ version: Int) -> String {
            check.render(model: c.model, version: version, canaryVersion: c.canaryVersion, stableVersion: c.stableVersion, window: c.window)
        }
        var m = Measurement(check: check.name, canary: nil, stable: nil, outcome: .pass, detail: "")
        do {
            m.canary = try await source.value(query(c.canaryVersion))
            if check.needsStable, let sv = c.stableVersion { m.stable = try await source.value(query(sv)) }
        } catch {
            m.outcome = .inconclusive
            m.detail = "metrics unavailable: \(error)"
            return m
        }
        guard let v = m.canary else {
            m.outcome = check.optional ? .skipped : .inconclusive
            m.detail = "no data for the canary"
            return m
        }
        if let max = check.max, v > max {
            m.outcome = .fail
            m.detail = "\(fmt(v)) > max \(fmt(max))"
            return m
        }
        if let min = check.min, v < min {
            m.outcome = .fail
            m.detail = "\(fmt(v)) < min \(fmt(min))"
            return m
        }
        if check.needsStable {
            guard let s = m.stable else {
                m.outcome = check.optional || c.weight >= 100 ? .skipped : .inconclusive
                m.detail =
                    c.stableVersion == nil
                    ? "no stable version to compare with"
                    : c.weight >= 100 ? "no stable traffic at 100% to compare with" : "no data for the stable version"
                return m
            }
            let ratio = s > 0 ? v / s : (v > 0 ? Double.infinity : 1)
            if let r = check.maxRatio, ratio > r {
                m.outcome = .fail
                m.detail = "canary \(fmt(v)) is \(fmt(ratio))× stable \(fmt(s)) > \(fmt(r))×"
                return m
            }
            if let r = check.pauseRatio, ratio > r {
                m.outcome = .inconclusive
                m.detail = "canary \(fmt(v)) is \(fmt(ratio))× stable \(fmt(s)) > \(fmt(r))×"
                return m
            }
            m.detail = "canary \(fmt(v)) is \(fmt(ratio))× stable \(fmt(s))"
        }
        if let p = check.pauseAbove, v > p {
            m.outcome = .inconclusive
            m.detail = "\(fmt(v)) > pause threshold \(fmt(p))"
            return m
        }
        if let p = check.pauseBelow, v < p {
            m.outcome = .inconclusive
            m.detail = "\(fmt(v)) < pause threshold \(fmt(p))"
            return m
        }
        if m.detail.isEmpty { m.detail = "\(fmt(v)) within thresholds" }
        return m
    }

    static func fmt(_ v: Double) -> String {
        if v.isInfinite { return "∞" }
        return v == v.rounded() && abs(v) < 1e9 ? String(Int(v)) : String(format: "%.4g", v)
    }
}
