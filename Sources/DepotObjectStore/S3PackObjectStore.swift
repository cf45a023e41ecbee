import DepotCore
import DepotStore
import NIOCore

/// The chunk store's `PackObjectStore` over S3: pack objects under `<prefix>packs/`, errors
/// mapped to the store's (`DepotError.io` for "missing" and transient failures, so a reader retries
/// with a fresh location once; `PackObjectConflict` for a refused conditional write;
/// `DepotError.storage` with the fix for configuration mistakes).
public final class S3PackObjectStore: PackObjectStore {
    public let client: S3Client

    public init(settings: S3Settings) throws {
        client = try S3Client(settings: settings)
    }

    public var location: String { client.settings.location }

    func mapped(_ error: any Error) -> any Error {
        guard let e = error as? S3Error else { return error }
        switch e.kind {
        case .exists: return error
        case .missing, .transient, .protocolViolation: return DepotError.io("object store: \(e)")
        case .credentials, .noBucket, .refused: return DepotError.storage("object store: \(e)")
        }
    }

    public func checkReachable() throws {
        do { try client.checkBucket() } catch { throw mapped(error) }
    }

    public func create(key: String, from file: PosixFile, size: Int64) throws {
        do {
            try client.upload(key: key, from: file, size: size)
        } catch let e as S3Error where e.kind == .exists {
            throw PackObjectConflict(key: location + key)
        } catch {
            throw mapped(error)
        }
    }

    public func read(key: String, offset: Int64, length: Int) throws -> [UInt8] {
        do {
            let buffer = try client.get(key: key, offset: offset, length: length)
            return Array(buffer.readableBytesView)
        } catch {
            throw mapped(error)
        }
    }

    public func readMany(_ requests: [(key: String, offset: Int64, length: Int)]) -> [Result<[UInt8], any Error>] {
        client.getMany(requests).map { r in
            r.map { Array($0.readableBytesView) }.mapError { mapped($0) }
        }
    }

    public func size(key: String) throws -> Int64? {
        do { return try client.head(key: key) } catch { throw mapped(error) }
    }

    public func delete(key: String) throws {
        do { try client.delete(key: key) } catch { throw mapped(error) }
    }

    public func list(prefix: String, _ body: (String, Int64) throws -> Void) throws {
        do { try client.list(prefix: prefix, body) } catch let e as S3Error { throw mapped(e) }
    }
}
