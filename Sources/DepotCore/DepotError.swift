/// Errors every layer can raise. Cases map onto OCI error codes at the HTTP layer and onto
/// one-line messages in the CLI; the associated text is meant for humans.
public enum DepotError: Error, Sendable, Equatable, CustomStringConvertible {
    case digestInvalid(String)
    case unsupportedDigest(String)
    case blobUnknown(String)
    case sizeInvalid(String)
    case rangeInvalid(String)
    /// Stored data does not match its hash: a chunk or blob is damaged.
    case integrity(String)
    /// The storage root or catalog cannot be used (missing, unwritable, newer format).
    case storage(String)
    /// An I/O error with the operation and errno text.
    case io(String)
    case invalidArgument(String)
    /// A chunk named by a recipe or request is not stored.
    case chunkUnknown(String)

    public var description: String {
        switch self {
        case .digestInvalid(let m): return "invalid digest: \(m)"
        case .unsupportedDigest(let m): return "unsupported digest: \(m)"
        case .blobUnknown(let m): return "blob unknown: \(m)"
        case .sizeInvalid(let m): return "size invalid: \(m)"
        case .rangeInvalid(let m): return "range invalid: \(m)"
        case .integrity(let m): return "integrity error: \(m)"
        case .storage(let m): return "storage error: \(m)"
        case .io(let m): return "I/O error: \(m)"
        case .invalidArgument(let m): return "invalid argument: \(m)"
        case .chunkUnknown(let m): return "chunk unknown: \(m)"
        }
    }
}
