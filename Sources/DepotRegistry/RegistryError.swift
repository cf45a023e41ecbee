import DepotCore

/// An error with an OCI distribution error code, its HTTP status and a human message.
public struct RegistryError: Error, Sendable, Equatable, CustomStringConvertible {
    public enum Code: String, Sendable {
        case blobUnknown = "BLOB_UNKNOWN"
        case blobUploadInvalid = "BLOB_UPLOAD_INVALID"
        case blobUploadUnknown = "BLOB_UPLOAD_UNKNOWN"
        case digestInvalid = "DIGEST_INVALID"
        case manifestBlobUnknown = "MANIFEST_BLOB_UNKNOWN"
        case manifestInvalid = "MANIFEST_INVALID"
        case manifestUnknown = "MANIFEST_UNKNOWN"
        case nameInvalid = "NAME_INVALID"
        case nameUnknown = "NAME_UNKNOWN"
        case sizeInvalid = "SIZE_INVALID"
        case rangeInvalid = "RANGE_INVALID"
        case unauthorized = "UNAUTHORIZED"
        case denied = "DENIED"
        case unsupported = "UNSUPPORTED"
        case tooManyRequests = "TOOMANYREQUESTS"
        case tagInvalid = "TAG_INVALID"
        case unavailable = "UNAVAILABLE"
        /// Depot extension: a chunk named by a recipe or a fetch is not stored (or not in that blob).
        case chunkUnknown = "CHUNK_UNKNOWN"
        /// Depot extension: no job with that id.
        case jobUnknown = "JOB_UNKNOWN"
        /// Depot extension: the request conflicts with the object's state (e.g. a job's lease was lost).
        case conflict = "CONFLICT"
    }

    public var code: Code
    public var status: Int
    public var message: String
    public var detail: String?

    public init(_ code: Code, _ message: String, status: Int? = nil, detail: String? = nil) {
        self.code = code
        self.message = message
        self.detail = detail
        self.status = status ?? Self.defaultStatus(code)
    }

    static func defaultStatus(_ code: Code) -> Int {
        switch code {
        case .blobUnknown, .blobUploadUnknown, .manifestUnknown, .nameUnknown, .chunkUnknown, .jobUnknown: return 404
        case .conflict: return 409
        case .unauthorized: return 401
        case .denied: return 403
        case .unsupported: return 415
        case .tooManyRequests: return 429
        case .rangeInvalid: return 416
        case .unavailable: return 503
        default: return 400
        }
    }

    public var description: String { "\(code.rawValue): \(message)" }

    /// Maps lower-layer errors onto OCI codes.
    public static func from(_ error: any Error) -> RegistryError {
        if let e = error as? RegistryError { return e }
        guard let e = error as? DepotError else {
            return RegistryError(.unavailable, "internal error: \(error)", status: 500)
        }
        switch e {
        case .digestInvalid(let m): return RegistryError(.digestInvalid, m)
        case .unsupportedDigest(let m): return RegistryError(.digestInvalid, m)
        case .blobUnknown(let m): return RegistryError(.blobUnknown, m)
        case .sizeInvalid(let m): return RegistryError(.sizeInvalid, m)
        case .rangeInvalid(let m): return RegistryError(.rangeInvalid, m)
        case .invalidArgument(let m): return RegistryError(.blobUploadInvalid, m)
        case .chunkUnknown(let m): return RegistryError(.chunkUnknown, m)
        case .integrity(let m): return RegistryError(.unavailable, "stored data is damaged: \(m)", status: 500)
        case .storage(let m), .io(let m):
            if m.contains("no space left") || m.contains("disk full") {
                return RegistryError(.unavailable, "storage is full: \(m)", status: 507)
            }
            if m.contains("stayed locked by another connection") {
                return RegistryError(.unavailable, "storage busy: \(m)", status: 503) // retryable
            }
            return RegistryError(.unavailable, "storage error: \(m)", status: 500)
        }
    }
}
