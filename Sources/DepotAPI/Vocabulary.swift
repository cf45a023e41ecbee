/// The words client, server, CLI, pipelines and hooks share. Each is defined once, here; a value
/// read from a request, a row or a file is parsed into one of these types at the edge, so code
/// past the edge never compares bare strings.
///
/// Raw values are wire and storage values: changing one is a breaking change of the API and of
/// the catalog (`hooks/builtin/depot_hook.py` mirrors some; `hooks/tests/test_vocabulary.py` checks they agree).

/// The state of a pipeline job. Transitions (`JobQueue`): queued → leased → running →
/// succeeded | failed | cancelled; a lost lease goes back to queued; retry makes a new job.
public enum JobState: String, Codable, Sendable, CaseIterable {
    case queued, leased, running, succeeded, failed, cancelled

    /// A job in one of these states never changes again.
    public var isFinal: Bool { self == .succeeded || self == .failed || self == .cancelled }
    /// A runner holds the job (its lease token is valid).
    public var isHeld: Bool { self == .leased || self == .running }
    public static let active: [JobState] = [.queued, .leased, .running]
    public static let final: [JobState] = [.succeeded, .failed, .cancelled]
}

/// The state of a canary rollout. running ⇄ paused → promoted | rolled-back | aborted.
public enum RolloutState: String, Codable, Sendable, CaseIterable {
    case running, paused, promoted
    case rolledBack = "rolled-back"
    case aborted

    /// At most one rollout per deployment is active (a unique index enforces it).
    public var isActive: Bool { self == .running || self == .paused }
    public static let active: [RolloutState] = [.running, .paused]
}

/// What a Triton node reports after loading a version (`depot triton-sync`).
public enum NodeState: String, Codable, Sendable, CaseIterable {
    case ready, failed
}

/// How an artifact derives from its parent (`dev.depot.lineage.relation`).
public enum LineageRelation: String, Codable, Sendable, CaseIterable, Comparable {
    case trainedFrom = "trained-from"
    case fineTunedFrom = "fine-tuned-from"
    case convertedFrom = "converted-from"
    case compiledFrom = "compiled-from"
    case quantizedFrom = "quantized-from"
    case packagedFrom = "packaged-from"
    /// The default when none is given.
    case derivedFrom = "derived-from"

    public static func < (a: Self, b: Self) -> Bool { a.rawValue < b.rawValue }
    /// "compiled-from, converted-from, …" for error messages and help texts.
    public static var list: String { allCases.sorted().map(\.rawValue).joined(separator: ", ") }
}

/// Annotation keys Depot reads and writes on manifests.
public enum Annotation {
    public static let prefix = "dev.depot."
    /// Lineage: the parent (`repo@sha256:…`), how this derives from it, and provenance.
    public enum Lineage {
        public static let prefix = "dev.depot.lineage."
        public static let from = "dev.depot.lineage.from"
        public static let relation = "dev.depot.lineage.relation"
        public static let run = "dev.depot.lineage.run"
        public static let dataset = "dev.depot.lineage.dataset"
        public static let commit = "dev.depot.lineage.commit"
        /// The job that produced the artifact.
        public static let job = "dev.depot.lineage.job"
    }
    /// Metrics recorded at push: `dev.depot.metric.<name>`.
    public static let metricPrefix = "dev.depot.metric."
    /// The platform an engine plan was built for (TensorRT).
    public static let platform = "dev.depot.platform"
    /// On a stage's output: which pipeline, stage and memo key made it.
    public enum Job {
        public static let prefix = "dev.depot.job."
        public static let pipeline = "dev.depot.job.pipeline"
        public static let stage = "dev.depot.job.stage"
        public static let key = "dev.depot.job.key"
    }
}
