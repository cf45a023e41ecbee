import DepotRegistry

/// The one table from domain errors to HTTP: each `RegistryError.Kind` has its status here and
/// nowhere else (domain modules throw kinds, never statuses). The OCI error code travels in the
/// body unchanged.
enum ErrorStatus {
    static func of(_ kind: RegistryError.Kind) -> Int {
        switch kind {
        case .invalid: return 400
        case .unauthorized: return 401
        case .denied: return 403
        case .notFound: return 404
        case .unsupportedOperation: return 405
        case .timedOut: return 408
        case .conflict: return 409
        case .preconditionFailed: return 412
        case .tooLarge: return 413
        case .rangeNotSatisfiable: return 416
        case .rateLimited: return 429
        case .failed, .damaged: return 500
        case .busy: return 503
        case .storageFull: return 507
        }
    }

    static func of(_ error: RegistryError) -> Int { of(error.kind) }
}
