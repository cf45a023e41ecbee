import DepotAPI
import DepotCore
import DepotFormats

/// A local file as a `ByteSource`, so the client runs the registry's own format readers before
/// it uploads anything (a safetensors file whose header lies is refused before a byte moves).
public struct LocalFileSource: ByteSource {
    let file: PosixFile
    public let size: Int64

    public init(path: String) throws {
        file = try PosixFile(path: path, mode: .read)
        size = try file.size()
    }

    public func read(at offset: Int64, count: Int) throws -> [UInt8] {
        let n = Int(max(0, min(Int64(count), size - offset)))
        guard offset >= 0, n > 0 else { return [] }
        var out = [UInt8](repeating: 0, count: n)
        try out.withUnsafeMutableBytes { try file.read(into: $0, at: offset) }
        return out
    }
}

extension ArtifactFiles {
    /// The format each file is recognised as (nil when unknown), by the registry's readers.
    /// Throws for a safetensors file whose header lies: the registry would refuse the push.
    static func detectFormats(_ files: [ArtifactFile], platform: String?) throws -> [String?] {
        try files.map { f in
            do {
                let meta = try FormatInspector.inspect(
                    path: f.relativePath, source: try LocalFileSource(path: f.localPath), platform: platform)
                return meta?["format"]?.string
            } catch let e as DepotError {
                if f.relativePath.lowercased().hasSuffix(".safetensors") {
                    throw ClientError("\(f.localPath) is not a valid safetensors file: \(e)")
                }
                return nil
            }
        }
    }
}
