/// The body of `GET /readyz`: 200 with `ready: true` when this server can serve requests (its
/// catalog answers a query and its pack storage is readable), else 503 with `ready: false` and
/// the failed checks' errors. `/healthz` only says the process answers.
public struct ReadinessReport: Codable, Sendable, Equatable {
    public var ready: Bool
    /// Every dependency checked, in a fixed order.
    public var checks: [Check]

    public struct Check: Codable, Sendable, Equatable {
        /// "catalog", "storage", …
        public var name: String
        public var ok: Bool
        /// What failed (absent when ok).
        public var error: String?

        public init(name: String, ok: Bool, error: String? = nil) {
            self.name = name
            self.ok = ok
            self.error = error
        }
    }

    public init(ready: Bool, checks: [Check]) {
        self.ready = ready
        self.checks = checks
    }
}
