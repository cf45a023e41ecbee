import DepotCore

/// Media types of the CNCF ModelPack specification (model-spec) and Depot's artifact types.
public enum ModelMediaType {
    public static let manifest = "application/vnd.cncf.model.manifest.v1+json"
    public static let config = "application/vnd.cncf.model.config.v1+json"
    public static let weight = "application/vnd.cncf.model.weight.v1.raw"
    public static let weightConfig = "application/vnd.cncf.model.weight.config.v1.raw"
    public static let doc = "application/vnd.cncf.model.doc.v1.raw"
    public static let code = "application/vnd.cncf.model.code.v1.raw"
    public static let tensorrtPlan = "application/vnd.depot.tensorrt.plan.v1"
    public static let tritonBundle = "application/vnd.depot.triton.bundle.v1"
    public static let onnx = "application/vnd.depot.onnx.v1"
    /// Layer annotations that carry a file's path inside the artifact.
    public static let filepath = "org.cncf.model.filepath"
    public static let title = "org.opencontainers.image.title"
}

/// The ModelPack config blob `depot push` writes: what the model is and its layers' digests.
public struct ModelConfig: Codable, Sendable, Equatable {
    public struct Descriptor: Codable, Sendable, Equatable {
        public var createdAt: String
        public var name: String
        public var version: String
    }
    public struct Config: Codable, Sendable, Equatable {
        /// Weight formats, comma-separated (`safetensors`, `onnx,pytorch`).
        public var format: String
    }
    public struct ModelFS: Codable, Sendable, Equatable {
        public var type = "layers"
        public var diffIds: [Digest]
    }

    public var descriptor: Descriptor
    public var config: Config
    public var modelfs: ModelFS

    public init(createdAt: String, name: String, version: String, format: String, layers: [Digest]) {
        descriptor = Descriptor(createdAt: createdAt, name: name, version: version)
        config = Config(format: format)
        modelfs = ModelFS(diffIds: layers)
    }
}
