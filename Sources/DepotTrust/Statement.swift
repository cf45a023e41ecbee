import DepotCore
import Foundation

/// What a signature says: this digest, signed by this key, made this way. Only the digest is
/// checked against the artifact being verified; the rest is provenance a policy or a person reads.
public struct SignedStatement: Codable, Sendable, Equatable {
    /// `SignatureFormat.statementType`: a payload of another kind is never accepted as this one.
    public var type: String
    public var subject: Subject
    /// The name the signer gave itself (`pipeline`, `release`, a person). A hint: policies name
    /// keys, and a key's name comes from the verifier's configuration, never from here.
    public var signer: String?
    /// Set on signatures the registry makes for a pipeline stage's output.
    public var pipeline: PipelineClaim?
    public var createdMs: Int64

    public struct Subject: Codable, Sendable, Equatable {
        public var digest: Digest
        public var mediaType: String?
        /// Where it was signed (informational: a copy elsewhere is the same digest).
        public var repository: String?
        public init(digest: Digest, mediaType: String? = nil, repository: String? = nil) {
            self.digest = digest
            self.mediaType = mediaType
            self.repository = repository
        }
        enum CodingKeys: String, CodingKey {
            case digest
            case mediaType = "media_type"
            case repository
        }
    }

    /// How a pipeline produced the subject: which stage of which pipeline, which job, from which
    /// input, run by which identity (the runner holding the job's lease).
    public struct PipelineClaim: Codable, Sendable, Equatable {
        public var pipeline: String
        public var stage: String
        public var job: Int64
        public var input: Digest
        public var inputRepository: String
        public var runner: String?
        public init(pipeline: String, stage: String, job: Int64, input: Digest, inputRepository: String, runner: String?) {
            self.pipeline = pipeline
            self.stage = stage
            self.job = job
            self.input = input
            self.inputRepository = inputRepository
            self.runner = runner
        }
        enum CodingKeys: String, CodingKey {
            case pipeline, stage, job, input
            case inputRepository = "input_repository"
            case runner
        }
    }

    public init(subject: Subject, signer: String?, pipeline: PipelineClaim? = nil, createdMs: Int64) {
        type = SignatureFormat.statementType
        self.subject = subject
        self.signer = signer
        self.pipeline = pipeline
        self.createdMs = createdMs
    }

    enum CodingKeys: String, CodingKey {
        case type = "_type"
        case subject, signer, pipeline
        case createdMs = "created_ms"
    }
}
