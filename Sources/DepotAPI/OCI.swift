import DepotCore
import Foundation

/// The OCI image and distribution documents, as Codable types shared by the registry (which
/// parses what clients push), the client (which builds what it pushes) and the CLI.
///
/// Decoding is strict about types (a `size` that is not an integer, an annotation value that is
/// not a string: `DocumentError` with the field's path) and lenient about unknown fields, as the
/// image spec requires. Encoding sorts keys and leaves slashes unescaped, so the same value always
/// gives the same bytes (and digest).

/// A content descriptor: what a manifest says about a blob or another manifest.
public struct OCIDescriptor: Codable, Sendable, Equatable {
    public var mediaType: String
    public var digest: Digest
    public var size: Int64
    public var artifactType: String?
    public var annotations: [String: String]?
    public var urls: [String]?
    public var platform: OCIPlatform?

    public init(
        mediaType: String, digest: Digest, size: Int64, artifactType: String? = nil, annotations: [String: String]? = nil,
        urls: [String]? = nil, platform: OCIPlatform? = nil
    ) {
        self.mediaType = mediaType
        self.digest = digest
        self.size = size
        self.artifactType = artifactType
        self.annotations = annotations
        self.urls = urls
        self.platform = platform
    }
}

/// The platform of an index entry.
public struct OCIPlatform: Codable, Sendable, Equatable {
    public var architecture: String
    public var os: String
    public var variant: String?

    public init(architecture: String, os: String, variant: String? = nil) {
        self.architecture = architecture
        self.os = os
        self.variant = variant
    }

    enum CodingKeys: String, CodingKey {
        case architecture, os, variant
    }
}

/// An image manifest or an index, in one shape: the registry reads a pushed document into this
/// and then checks which kind it is (`ManifestParser`); the client builds one of the two kinds.
public struct OCIManifestDocument: Codable, Sendable, Equatable {
    public var schemaVersion: Int?
    public var mediaType: String?
    public var artifactType: String?
    /// Image manifests: the config blob and the layers.
    public var config: OCIDescriptor?
    public var layers: [OCIDescriptor]?
    /// Indexes: the child manifests.
    public var manifests: [OCIDescriptor]?
    public var subject: OCIDescriptor?
    public var annotations: [String: String]?

    public init(
        schemaVersion: Int? = 2, mediaType: String?, artifactType: String? = nil, config: OCIDescriptor? = nil,
        layers: [OCIDescriptor]? = nil, manifests: [OCIDescriptor]? = nil, subject: OCIDescriptor? = nil,
        annotations: [String: String]? = nil
    ) {
        self.schemaVersion = schemaVersion
        self.mediaType = mediaType
        self.artifactType = artifactType
        self.config = config
        self.layers = layers
        self.manifests = manifests
        self.subject = subject
        self.annotations = annotations
    }

    /// An image manifest.
    public static func image(
        config: OCIDescriptor, layers: [OCIDescriptor], artifactType: String? = nil, subject: OCIDescriptor? = nil,
        annotations: [String: String]? = nil
    ) -> Self {
        Self(
            mediaType: MediaType.ociManifest, artifactType: artifactType, config: config, layers: layers, subject: subject,
            annotations: annotations)
    }
}

/// The error body every OCI error response carries: `{"errors": [{"code", "message", "detail"}]}`.
public struct OCIErrorBody: Codable, Sendable, Equatable {
    public struct Entry: Codable, Sendable, Equatable {
        public var code: String
        public var message: String
        /// Free-form in the spec; Depot sends a string (or `{}` when there is none).
        public var detail: String?

        public init(code: String, message: String, detail: String? = nil) {
            self.code = code
            self.message = message
            self.detail = detail
        }

        enum CodingKeys: String, CodingKey {
            case code, message, detail
        }

        public init(from decoder: any Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            code = try c.decode(String.self, forKey: .code)
            message = try c.decodeIfPresent(String.self, forKey: .message) ?? ""
            // Other registries send objects or arrays here: keep only a string.
            detail = try? c.decodeIfPresent(String.self, forKey: .detail)
        }

        public func encode(to encoder: any Encoder) throws {
            var c = encoder.container(keyedBy: CodingKeys.self)
            try c.encode(code, forKey: .code)
            try c.encode(message, forKey: .message)
            if let detail { try c.encode(detail, forKey: .detail) } else { try c.encode([String: String](), forKey: .detail) }
        }
    }

    public var errors: [Entry]

    public init(_ errors: [Entry]) { self.errors = errors }
}

/// The referrers API answer: an index of the manifests whose subject is the given digest.
public struct OCIReferrersIndex: Codable, Sendable, Equatable {
    public var schemaVersion = 2
    public var mediaType = MediaType.ociIndex
    public var manifests: [OCIDescriptor]

    public init(manifests: [OCIDescriptor]) { self.manifests = manifests }
}

/// `GET /v2/<name>/tags/list`.
public struct TagList: Codable, Sendable, Equatable {
    public var name: String
    public var tags: [String]

    public init(name: String, tags: [String]) {
        self.name = name
        self.tags = tags
    }
}

/// `GET /v2/_catalog`.
public struct RepositoryList: Codable, Sendable, Equatable {
    public var repositories: [String]

    public init(repositories: [String]) { self.repositories = repositories }
}

/// A JSON document that could not be read as the type it should be: which field, and why.
public struct DocumentError: Error, Sendable, CustomStringConvertible {
    public var message: String
    public var description: String { message }
}

/// JSON in and out with the project's conventions.
public enum WireJSON {
    /// Sorted keys, unescaped slashes: stable bytes for a value.
    public static func encode<T: Encodable>(_ value: T) throws -> [UInt8] {
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return Array(try e.encode(value))
    }

    /// Decodes `bytes` as `T`; a failure names the field (`layers[2].size: expected Int64`).
    public static func decode<T: Decodable>(_ type: T.Type, from bytes: some Collection<UInt8>, what: String) throws -> T {
        do {
            return try JSONDecoder().decode(T.self, from: Data(bytes))
        } catch let error as DecodingError {
            throw DocumentError(message: "\(what): \(describe(error))")
        }
    }

    /// "layers[2].size: expected an integer" rather than DecodingError's debug text.
    public static func describe(_ error: DecodingError) -> String {
        func path(_ keys: [any CodingKey]) -> String {
            var out = ""
            for k in keys {
                if let i = k.intValue { out += "[\(i)]" } else { out += (out.isEmpty ? "" : ".") + k.stringValue }
            }
            return out.isEmpty ? "the document" : out
        }
        switch error {
        case .typeMismatch(let type, let c): return "\(path(c.codingPath)): expected \(typeName(type))"
        case .valueNotFound(let type, let c): return "\(path(c.codingPath)): expected \(typeName(type)), found null"
        case .keyNotFound(let key, let c): return "\(path(c.codingPath + [key])) is missing"
        case .dataCorrupted(let c):
            // Nested errors (a digest that does not parse) carry their own message.
            let why = c.underlyingError.map { "\($0)" } ?? c.debugDescription
            return c.codingPath.isEmpty ? "not valid JSON (\(why))" : "\(path(c.codingPath)): \(why)"
        @unknown default: return "\(error)"
        }
    }

    static func typeName(_ type: Any.Type) -> String {
        switch type {
        case is String.Type: return "a string"
        case is Int.Type, is Int64.Type, is Int32.Type, is UInt64.Type: return "an integer"
        case is Bool.Type: return "a boolean"
        case is Double.Type: return "a number"
        default:
            let name = "\(type)"
            if name.hasPrefix("Array") { return "an array" }
            if name.hasPrefix("Dictionary") { return "an object" }
            return "an object"
        }
    }
}
