/// What this build is, for `depot --version` and `/metrics` (`depot_build_info`).
public enum BuildInfo {
    /// Raised when a release is tagged; `-dev` between releases.
    public static let version = "0.2.0-dev"
}
