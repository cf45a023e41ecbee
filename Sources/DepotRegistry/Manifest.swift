import DepotCore
import Foundation

/// A content descriptor as it appears in manifests and referrers responses.
public struct Descriptor: Sendable, Equatable {
    public var mediaType: String
    public var digest: Digest
    public var size: Int64
    public var artifactType: String?
    public var annotations: [String: String]?
    public var urls: [String]?

    public init(mediaType: String, digest: Digest, size: Int64, artifactType: String? = nil, annotations: [String: String]? = nil) {
        self.mediaType = mediaType
        self.digest = digest
        self.size = size
        self.artifactType = artifactType
        self.annotations = annotations
    }

    public var json: [String: Any] {
        var o: [String: Any] = ["mediaType": mediaType, "digest": digest.description, "size": size]
        if let artifactType { o["artifactType"] = artifactType }
        if let annotations, !annotations.isEmpty { o["annotations"] = annotations }
        return o
    }
}

/// What Depot needs to know about a pushed manifest: its kind, what it references, its subject.
public struct ParsedManifest: Sendable {
    public var mediaType: String
    /// `artifactType`, or for an image manifest without one, its config media type (as the referrers API reports).
    public var artifactType: String?
    /// Blobs (config and layers) for image manifests.
    public var blobs: [Descriptor]
    /// Child manifests for indexes.
    public var manifests: [Descriptor]
    public var subject: Descriptor?
    public var annotations: [String: String]?
}

/// Parses and validates manifests as the OCI image spec and Docker schema 2 define them.
public enum ManifestParser {
    /// The largest manifest accepted.
    public static let maxSize = 4 << 20

    public static func parse(_ bytes: [UInt8], contentType: String?) throws -> ParsedManifest {
        guard bytes.count <= maxSize else {
            throw RegistryError(.sizeInvalid, "manifest is \(bytes.count) bytes; the limit is \(maxSize)", status: 413)
        }
        guard let object = try? JSONSerialization.jsonObject(with: Data(bytes)) as? [String: Any] else {
            throw RegistryError(.manifestInvalid, "manifest is not a JSON object")
        }
        guard (object["schemaVersion"] as? Int) == 2 else {
            throw RegistryError(.manifestInvalid, "manifest schemaVersion must be 2")
        }
        let bodyType = object["mediaType"] as? String
        if object["mediaType"] != nil && bodyType == nil {
            throw RegistryError(.manifestInvalid, "manifest mediaType must be a string")
        }
        let header = contentType.map { String($0.split(separator: ";")[0]).trimmingCharacters(in: .whitespaces) }
            .flatMap { $0.isEmpty ? nil : $0 }
        if let header, let bodyType, header != bodyType {
            throw RegistryError(.manifestInvalid, "Content-Type \(header) does not match the manifest's mediaType \(bodyType)")
        }
        var mediaType = header ?? bodyType
        if mediaType == nil {
            // No declared type: infer the OCI shape (the spec says mediaType SHOULD be set).
            mediaType = object["manifests"] != nil ? MediaType.ociIndex : MediaType.ociManifest
        }
        guard let type = mediaType, MediaType.manifests.contains(type) else {
            throw RegistryError(.manifestInvalid, "unsupported manifest media type '\(mediaType ?? "")'")
        }
        var parsed = ParsedManifest(mediaType: type, artifactType: nil, blobs: [], manifests: [], subject: nil)
        parsed.annotations = try stringMap(object["annotations"], "annotations")
        if let a = object["artifactType"] {
            guard let s = a as? String, Self.isMediaType(s) else {
                throw RegistryError(.manifestInvalid, "artifactType must be a media type (type/subtype, at most 255 characters)")
            }
            parsed.artifactType = s
        }
        if let s = object["subject"] { parsed.subject = try descriptor(s, "subject") }

        if MediaType.imageManifests.contains(type) {
            guard object["manifests"] == nil else { throw RegistryError(.manifestInvalid, "an image manifest has no 'manifests'") }
            guard let configObject = object["config"] else { throw RegistryError(.manifestInvalid, "image manifest lacks 'config'") }
            let config = try descriptor(configObject, "config")
            guard let layers = object["layers"] as? [Any] else {
                throw RegistryError(.manifestInvalid, "image manifest lacks a 'layers' array")
            }
            parsed.blobs = [config]
            for (i, l) in layers.enumerated() { parsed.blobs.append(try descriptor(l, "layers[\(i)]")) }
            if parsed.artifactType == nil { parsed.artifactType = config.mediaType }
        } else {
            guard let manifests = object["manifests"] as? [Any] else {
                throw RegistryError(.manifestInvalid, "index lacks a 'manifests' array")
            }
            for (i, m) in manifests.enumerated() { parsed.manifests.append(try descriptor(m, "manifests[\(i)]")) }
        }
        return parsed
    }

    static func descriptor(_ value: Any, _ what: String) throws -> Descriptor {
        guard let o = value as? [String: Any] else { throw RegistryError(.manifestInvalid, "\(what) is not a descriptor object") }
        guard let mediaType = o["mediaType"] as? String, Self.isMediaType(mediaType) else {
            throw RegistryError(.manifestInvalid, "\(what) lacks a mediaType (type/subtype, at most 255 characters)")
        }
        guard let digestText = o["digest"] as? String else { throw RegistryError(.manifestInvalid, "\(what) lacks a digest") }
        let digest: Digest
        do { digest = try Digest(parsing: digestText) } catch {
            throw RegistryError(.digestInvalid, "\(what): \(error)")
        }
        guard let size = o["size"] as? Int, size >= 0 else {
            throw RegistryError(.manifestInvalid, "\(what) needs a non-negative integer size")
        }
        var d = Descriptor(mediaType: mediaType, digest: digest, size: Int64(size))
        d.annotations = try stringMap(o["annotations"], "\(what).annotations")
        if let a = o["artifactType"] {
            guard let t = a as? String, Self.isMediaType(t) else {
                throw RegistryError(.manifestInvalid, "\(what).artifactType must be a media type")
            }
            d.artifactType = t
        }
        d.urls = o["urls"] as? [String]
        return d
    }

    /// A media type as the OCI image spec restricts it (RFC 6838): `type/subtype`, each part 1–127
    /// of `[A-Za-z0-9!#$&^_.+-]` starting alphanumeric. Bounded, so an artifactType cannot be a
    /// multi-megabyte string copied into every event, audit row and referrers answer.
    static func isMediaType(_ text: String) -> Bool {
        let parts = text.utf8.split(separator: UInt8(ascii: "/"), omittingEmptySubsequences: false)
        guard parts.count == 2 else { return false }
        return parts.allSatisfy { part in
            guard let first = part.first, part.count <= 127, isAlnum(first) else { return false }
            return part.allSatisfy { isAlnum($0) || "!#$&^_.+-".utf8.contains($0) }
        }
    }

    private static func isAlnum(_ c: UInt8) -> Bool {
        (c >= 0x30 && c <= 0x39) || (c >= 0x41 && c <= 0x5A) || (c >= 0x61 && c <= 0x7A)
    }

    static func stringMap(_ value: Any?, _ what: String) throws -> [String: String]? {
        guard let value else { return nil }
        guard let m = value as? [String: Any] else { throw RegistryError(.manifestInvalid, "\(what) must be an object of strings") }
        var out: [String: String] = [:]
        for (k, v) in m {
            guard let s = v as? String else { throw RegistryError(.manifestInvalid, "\(what).\(k) must be a string") }
            out[k] = s
        }
        return out
    }
}
