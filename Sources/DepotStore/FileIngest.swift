import DepotCore

extension ChunkStore {
    /// Streams a file into the store (1 MiB reads), with safetensors-aware boundaries.
    public func writeFile(_ path: String, planner: (any BoundaryPlanner)? = nil) throws -> WriteResult {
        let file = try PosixFile(path: path, mode: .read)
        let writer = try makeWriter(planner: planner)
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 20, alignment: 64)
        defer { buffer.deallocate() }
        do {
            while true {
                let n = try file.readSome(into: buffer)
                if n == 0 { break }
                try writer.write(UnsafeRawBufferPointer(rebasing: buffer[0..<n]))
            }
            return try writer.finish()
        } catch {
            writer.abort()
            throw error
        }
    }
}
