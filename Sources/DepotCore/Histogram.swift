/// A Prometheus histogram of durations in seconds: a count per bucket, the sum and the count.
///
/// Buckets are fixed when it is made (Prometheus needs the same `le` labels on every scrape);
/// an observation lands in the first bucket whose upper bound is at least the value, or in the
/// implicit `+Inf` bucket. Counts are kept per bucket and made cumulative only when written,
/// so `observe` is one short scan and three additions. Not synchronized: owners keep it under
/// their lock (`Locked`).
public struct Histogram: Sendable, Equatable {
    /// From half a millisecond (a manifest GET from the cache) to five minutes (a large blob
    /// pushed over a slow link).
    public static let latencyBounds: [Double] = [
        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300,
    ]

    public let bounds: [Double]
    /// Observations per bucket (not cumulative); the last entry is the `+Inf` bucket.
    public private(set) var counts: [UInt64]
    public private(set) var sum: Double = 0
    public private(set) var count: UInt64 = 0

    /// `bounds` must be ascending.
    public init(bounds: [Double] = Histogram.latencyBounds) {
        precondition(zip(bounds, bounds.dropFirst()).allSatisfy { $0 < $1 }, "histogram bounds must ascend")
        self.bounds = bounds
        counts = Array(repeating: 0, count: bounds.count + 1)
    }

    /// Records one value. A value that is not finite or is negative (a clock that stepped back)
    /// counts in the lowest bucket and adds nothing to the sum, so the sum stays meaningful.
    public mutating func observe(_ value: Double) {
        let v = value.isFinite && value > 0 ? value : 0
        var i = 0
        while i < bounds.count && v > bounds[i] { i += 1 }
        counts[i] &+= 1
        count &+= 1
        sum += v
    }

    /// The exposition lines of this histogram as `name` with `labels` (`key="value"` pairs, already
    /// escaped, comma-separated; empty for none): cumulative `_bucket` lines, then `_sum` and `_count`.
    public func exposition(name: String, labels: String) -> String {
        let prefix = labels.isEmpty ? "" : labels + ","
        var out = ""
        var cumulative: UInt64 = 0
        for (i, bound) in bounds.enumerated() {
            cumulative &+= counts[i]
            out += "\(name)_bucket{\(prefix)le=\"\(Self.format(bound))\"} \(cumulative)\n"
        }
        cumulative &+= counts[bounds.count]
        out += "\(name)_bucket{\(prefix)le=\"+Inf\"} \(cumulative)\n"
        let braces = labels.isEmpty ? "" : "{\(labels)}"
        out += "\(name)_sum\(braces) \(Self.format(sum))\n"
        out += "\(name)_count\(braces) \(count)\n"
        return out
    }

    /// A number as Prometheus writes it: integers without a fraction, others in Swift's
    /// shortest round-tripping form.
    static func format(_ v: Double) -> String {
        if v == v.rounded(), abs(v) < 1e15 { return String(Int64(v)) }
        return "\(v)"
    }
}
