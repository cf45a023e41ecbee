import DepotCore

/// A registry error: an OCI distribution error code (the wire vocabulary clients match on), what
/// kind of failure it is, and a message that says what to do. No HTTP here: the server's edge
/// maps the kind to a status (`DepotServer/ErrorStatus.swift`); other front ends may map it
/// differently.
public struct RegistryError: Error, Sendable, Equatable, CustomStringConvertible {
    public enum Code: String, Sendable, CaseIterable {
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
        /// The operation is not supported (a method an endpoint does not take).
        case unsupported = "UNSUPPORTED"
        case tooManyRequests = "TOOMANYREQUESTS"
        case tagInvalid = "TAG_INVALID"
        case unavailable = "UNAVAILABLE"
        /// Depot extension: a request the API cannot take as it is (a missing or malformed field,
        /// parameter or body). The message names what to change.
        case invalidRequest = "INVALID_REQUEST"
        /// Depot extension: a chunk named by a recipe or a fetch is not stored (or not in that blob).
        case chunkUnknown = "CHUNK_UNKNOWN"
        /// Depot extension: no job with that id.
        case jobUnknown = "JOB_UNKNOWN"
        /// Depot extension: the request conflicts with the object's state (e.g. a job's lease was lost).
        case conflict = "CONFLICT"
    }

    /// What kind of failure, independent of any protocol.
    public enum Kind: String, Sendable, CaseIterable {
        /// The request is malformed or names something invalid; the caller must change it.
        case invalid
        case notFound
        /// The operation does not exist for this resource.
        case unsupportedOperation
        /// The client sent too slowly; what arrived is kept.
        case timedOut
        /// The resource's state forbids it now (a lost lease, an active rollout).
        case conflict
        /// A compare-and-swap lost: the resource moved since the caller looked.
        case preconditionFailed
        case tooLarge
        /// A byte range outside what exists.
        case rangeNotSatisfiable
        case rateLimited
        case unauthorized
        case denied
        /// Temporarily unable (busy storage, memory budget): retrying later may succeed.
        case busy
        case storageFull
        /// Stored data failed its checks.
        case damaged
        /// A fault of the registry itself.
        case failed
    }

    public var code: Code
    public var kind: Kind
    public var message: String
    public var detail: String?

    public init(_ code: Code, _ message: String, kind: Kind? = nil, detail: String? = nil) {
        self.code = code
        self.message = message
        self.detail = detail
        self.kind = kind ?? Self.defaultKind(code)
    }

    /// The kind a code implies when the thrower says nothing more.
    public static func defaultKind(_ code: Code) -> Kind {
        switch code {
        case .blobUnknown, .blobUploadUnknown, .manifestUnknown, .nameUnknown, .chunkUnknown, .jobUnknown: return .notFound
        case .conflict: return .conflict
        case .unauthorized: return .unauthorized
        case .denied: return .denied
        case .unsupported: return .unsupportedOperation
        case .tooManyRequests: return .rateLimited
        case .rangeInvalid: return .rangeNotSatisfiable
        case .unavailable: return .busy
        case .blobUploadInvalid, .digestInvalid, .manifestBlobUnknown, .manifestInvalid, .nameInvalid, .sizeInvalid, .tagInvalid,
            .invalidRequest:
            return .invalid
        }
    }

    public var description: String { "\(code.rawValue): \(message)" }

    /// Maps lower-layer errors onto OCI codes.
    public static func from(_ error: any Error) -> RegistryError {
        if let e = error as? RegistryError { return e }
        guard let e = error as? DepotError else {
            return RegistryError(.unavailable, "internal error: \(error)", kind: .failed)
        }
        switch e {
        case .digestInvalid(let m): return RegistryError(.digestInvalid, m)
        case .unsupportedDigest(let m): return RegistryError(.digestInvalid, m)
        case .blobUnknown(let m): return RegistryError(.blobUnknown, m)
        case .sizeInvalid(let m): return RegistryError(.sizeInvalid, m)
        case .rangeInvalid(let m): return RegistryError(.rangeInvalid, m)
        case .invalidArgument(let m): return RegistryError(.blobUploadInvalid, m)
        case .chunkUnknown(let m): return RegistryError(.chunkUnknown, m)
        case .integrity(let m): return RegistryError(.unavailable, "stored data is damaged: \(m)", kind: .damaged)
        case .storage(let m), .io(let m):
            if m.contains("no space left") || m.contains("disk full") {
                return RegistryError(.unavailable, "storage is full: \(m)", kind: .storageFull)
            }
            if m.contains("stayed locked by another connection") {
                return RegistryError(.unavailable, "storage busy: \(m)", kind: .busy)
            }
            return RegistryError(.unavailable, "storage error: \(m)", kind: .failed)
        }
    }
}
