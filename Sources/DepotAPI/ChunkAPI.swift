/// `GET /depot/v1/info`: whether a registry speaks Depot's chunk negotiation, and its parameters.
/// A client cuts chunks only when `chunker.version` is the one it implements, so both sides
/// produce the same chunks.
public struct ExtensionInfo: Codable, Sendable, Equatable {
    public struct Chunker: Codable, Sendable, Equatable {
        public var version: String
        public var minSize: Int
        public var averageSize: Int
        public var maxSize: Int
        /// Format-aware boundary planners the server applies (`safetensors-v1`).
        public var boundaries: [String]

        public init(version: String, minSize: Int, averageSize: Int, maxSize: Int, boundaries: [String]) {
            self.version = version
            self.minSize = minSize
            self.averageSize = averageSize
            self.maxSize = maxSize
            self.boundaries = boundaries
        }

        enum CodingKeys: String, CodingKey {
            case version, boundaries
            case minSize = "min_size"
            case averageSize = "average_size"
            case maxSize = "max_size"
        }
    }

    public var api: String
    public var chunker: Chunker
    /// The chunk record layout of uploads and fetches (`dpkr-v1`).
    public var recordFormat: String
    /// Most hashes one `chunks/missing` query may carry.
    public var maxHashesPerQuery: Int
    /// Most chunks one fetch may ask for.
    public var maxHashesPerFetch: Int

    public init(chunker: Chunker, recordFormat: String, maxHashesPerQuery: Int, maxHashesPerFetch: Int) {
        api = "depot/v1"
        self.chunker = chunker
        self.recordFormat = recordFormat
        self.maxHashesPerQuery = maxHashesPerQuery
        self.maxHashesPerFetch = maxHashesPerFetch
    }

    public var chunkerVersion: String { chunker.version }

    enum CodingKeys: String, CodingKey {
        case api, chunker
        case recordFormat = "record_format"
        case maxHashesPerQuery = "max_hashes_per_query"
        case maxHashesPerFetch = "max_hashes_per_fetch"
    }
}

/// `POST …/repositories/{name}/chunks`: how many records arrived, and how many were new.
public struct ChunkUploadAnswer: Codable, Sendable, Equatable {
    public var received: Int
    public var stored: Int

    public init(received: Int, stored: Int) {
        self.received = received
        self.stored = stored
    }
}
