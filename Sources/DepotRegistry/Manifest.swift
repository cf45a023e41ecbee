import DepotAPI
import DepotCore
import Foundation

/// A content descriptor as it appears in manifests and referrers responses (the shared wire type).
public typealias Descriptor = OCIDescriptor

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
            throw RegistryError(.sizeInvalid, "manifest is \(bytes.count) bytes; the limit is \(maxSize)", kind: .tooLarge)
        }
        let object: OCIManifestDocument
        do {
            object = try WireJSON.decode(OCIManifestDocument.self, from: bytes, what: "manifest")
        } catch let e as DocumentError {
            throw RegistryError(.manifestInvalid, e.message)
        } catch let e as DepotError {
            throw RegistryError.from(e) // a descriptor's digest: DIGEST_INVALID
        }
        guard object.schemaVersion == 2 else {
            throw RegistryError(.manifestInvalid, "manifest schemaVersion must be 2")
        }
        let bodyType = object.mediaType
        let header = contentType.map { String($0.split(separator: ";")[0]).trimmingCharacters(in: .whitespaces) }
            .flatMap { $0.isEmpty ? nil : $0 }
        if let header, let bodyType, header != bodyType {
            throw RegistryError(.manifestInvalid, "Content-Type \(header) does not match the manifest's mediaType \(bodyType)")
        }
        // No declared type: infer the OCI shape (the spec says mediaType SHOULD be set).
        let mediaType = header ?? bodyType ?? (object.manifests != nil ? MediaType.ociIndex : MediaType.ociManifest)
        guard MediaType.manifests.contains(mediaType) else {
            throw RegistryError(.manifestInvalid, "unsupported manifest media type '\(mediaType.prefix(255))'")
        }
        var parsed = ParsedManifest(mediaType: mediaType, artifactType: nil, blobs: [], manifests: [], subject: nil)
        parsed.annotations = object.annotations
        if let a = object.artifactType {
            guard Self.isMediaType(a) else {
                throw RegistryError(.manifestInvalid, "artifactType must be a media type (type/subtype, at most 255 characters)")
            }
            parsed.artifactType = a
        }
        if let s = object.subject { parsed.subject = try checked(s, "subject") }

        if MediaType.imageManifests.contains(mediaType) {
            guard object.manifests == nil else { throw RegistryError(.manifestInvalid, "an image manifest has no 'manifests'") }
            guard let configObject = object.config else { throw RegistryError(.manifestInvalid, "image manifest lacks 'config'") }
            let config = try checked(configObject, "config")
            guard let layers = object.layers else {
                throw RegistryError(.manifestInvalid, "image manifest lacks a 'layers' array")
            }
            parsed.blobs = [config]
            for (i, l) in layers.enumerated() { parsed.blobs.append(try checked(l, "layers[\(i)]")) }
            if parsed.artifactType == nil { parsed.artifactType = config.mediaType }
        } else {
            guard let manifests = object.manifests else {
                throw RegistryError(.manifestInvalid, "index lacks a 'manifests' array")
            }
            for (i, m) in manifests.enumerated() { parsed.manifests.append(try checked(m, "manifests[\(i)]")) }
        }
        return parsed
    }

    /// What the types alone do not say: media types are bounded RFC 6838 names, sizes are not negative.
    static func checked(_ d: OCIDescriptor, _ what: String) throws -> OCIDescriptor {
        guard Self.isMediaType(d.mediaType) else {
            throw RegistryError(.manifestInvalid, "\(what) lacks a mediaType (type/subtype, at most 255 characters)")
        }
        guard d.size >= 0 else { throw RegistryError(.manifestInvalid, "\(what) needs a non-negative integer size") }
        if let t = d.artifactType, !Self.isMediaType(t) {
            throw RegistryError(.manifestInvalid, "\(what).artifactType must be a media type")
        }
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
}
