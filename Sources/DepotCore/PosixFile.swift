#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// An open file descriptor with the few POSIX operations the store and client need,
/// each turning errno into a `DepotError.io` that names the path and the operation.
public final class PosixFile: @unchecked Sendable {
    public let path: String
    public let fd: Int32

    public enum Mode: Sendable { case read, readWrite, createReadWrite, createExclusive }

    public init(path: String, mode: Mode) throws {
        self.path = path
        let flags: Int32
        switch mode {
        case .read: flags = O_RDONLY
        case .readWrite: flags = O_RDWR
        case .createReadWrite: flags = O_RDWR | O_CREAT
        case .createExclusive: flags = O_RDWR | O_CREAT | O_EXCL
        }
        let fd = open(path, flags | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw PosixFile.error("open", path) }
        self.fd = fd
    }

    deinit { close(fd) }

    public static func error(_ op: String, _ path: String, _ code: Int32 = errno) -> DepotError {
        if code == ENOSPC { return .io("\(op) \(path): no space left on device") }
        return .io("\(op) \(path): \(String(cString: strerror(code)))")
    }

    public func size() throws -> Int64 {
        var st = stat()
        guard fstat(fd, &st) == 0 else { throw PosixFile.error("stat", path) }
        return Int64(st.st_size)
    }

    /// Writes all bytes at `offset`.
    public func write(_ bytes: UnsafeRawBufferPointer, at offset: Int64) throws {
        var done = 0
        while done < bytes.count {
            let n = pwrite(fd, bytes.baseAddress! + done, bytes.count - done, off_t(offset) + off_t(done))
            if n < 0 {
                if errno == EINTR { continue }
                throw PosixFile.error("write", path)
            }
            done += n
        }
    }

    /// Appends at the current end using a sequential write.
    public func write(_ bytes: UnsafeRawBufferPointer) throws {
        var done = 0
        while done < bytes.count {
            let n = Glibc.write(fd, bytes.baseAddress! + done, bytes.count - done)
            if n < 0 {
                if errno == EINTR { continue }
                throw PosixFile.error("write", path)
            }
            done += n
        }
    }

    /// Writes two buffers at `offset` with one `pwritev` (a record header and its payload,
    /// without copying them together).
    public func write(_ first: UnsafeRawBufferPointer, _ second: UnsafeRawBufferPointer, at offset: Int64) throws {
        var a = first, b = second
        var position = offset
        while a.count + b.count > 0 {
            var iov = [iovec(iov_base: UnsafeMutableRawPointer(mutating: a.baseAddress), iov_len: a.count),
                       iovec(iov_base: UnsafeMutableRawPointer(mutating: b.baseAddress), iov_len: b.count)]
            let n = pwritev(fd, &iov, 2, off_t(position))
            if n < 0 {
                if errno == EINTR { continue }
                throw PosixFile.error("write", path)
            }
            let fromA = min(n, a.count)
            a = UnsafeRawBufferPointer(rebasing: a[fromA...])
            b = UnsafeRawBufferPointer(rebasing: b[(n - fromA)...])
            position += Int64(n)
        }
    }

    /// Reads exactly `into.count` bytes at `offset`; throws if the file is shorter.
    public func read(into buffer: UnsafeMutableRawBufferPointer, at offset: Int64) throws {
        var done = 0
        while done < buffer.count {
            let n = pread(fd, buffer.baseAddress! + done, buffer.count - done, off_t(offset) + off_t(done))
            if n < 0 {
                if errno == EINTR { continue }
                throw PosixFile.error("read", path)
            }
            if n == 0 { throw DepotError.io("read \(path): unexpected end of file at \(offset + Int64(done))") }
            done += n
        }
    }

    /// Reads exactly `first.count + second.count` bytes at `offset` into two buffers (`preadv`).
    public func read(into first: UnsafeMutableRawBufferPointer, _ second: UnsafeMutableRawBufferPointer, at offset: Int64) throws {
        var a = first, b = second
        var position = offset
        while a.count + b.count > 0 {
            var iov = [iovec(iov_base: a.baseAddress, iov_len: a.count), iovec(iov_base: b.baseAddress, iov_len: b.count)]
            let n = preadv(fd, &iov, 2, off_t(position))
            if n < 0 {
                if errno == EINTR { continue }
                throw PosixFile.error("read", path)
            }
            if n == 0 { throw DepotError.io("read \(path): unexpected end of file at \(position)") }
            let fromA = min(n, a.count)
            a = UnsafeMutableRawBufferPointer(rebasing: a[fromA...])
            b = UnsafeMutableRawBufferPointer(rebasing: b[(n - fromA)...])
            position += Int64(n)
        }
    }

    /// Reads up to `buffer.count` bytes sequentially; returns 0 at end of file.
    public func readSome(into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
        while true {
            let n = Glibc.read(fd, buffer.baseAddress!, buffer.count)
            if n < 0 {
                if errno == EINTR { continue }
                throw PosixFile.error("read", path)
            }
            return n
        }
    }

    public func sync() throws {
        guard fdatasync(fd) == 0 else { throw PosixFile.error("fsync", path) }
    }

    public func truncate(to length: Int64) throws {
        guard ftruncate(fd, off_t(length)) == 0 else { throw PosixFile.error("truncate", path) }
    }

    public func seekToEnd() throws -> Int64 {
        let r = lseek(fd, 0, SEEK_END)
        guard r >= 0 else { throw PosixFile.error("seek", path) }
        return Int64(r)
    }
}

/// Small file-system helpers used by several layers.
public enum FileSystem {
    public static func exists(_ path: String) -> Bool { access(path, F_OK) == 0 }

    public static func isDirectory(_ path: String) -> Bool {
        var st = stat()
        return stat(path, &st) == 0 && (st.st_mode & S_IFMT) == S_IFDIR
    }

    /// `mkdir -p`.
    public static func createDirectory(_ path: String) throws {
        if isDirectory(path) { return }
        var prefix = path.hasPrefix("/") ? "/" : ""
        for part in path.split(separator: "/") {
            prefix += part + "/"
            if mkdir(prefix, 0o755) != 0 && errno != EEXIST {
                throw PosixFile.error("mkdir", prefix)
            }
        }
        guard isDirectory(path) else { throw DepotError.io("mkdir \(path): not a directory") }
    }

    public static func remove(_ path: String) throws {
        guard unlink(path) == 0 || errno == ENOENT else { throw PosixFile.error("unlink", path) }
    }

    public static func rename(_ from: String, _ to: String) throws {
        guard Glibc.rename(from, to) == 0 else { throw PosixFile.error("rename", from) }
    }

    /// fsyncs a directory so that a create/rename/unlink inside it is durable.
    public static func syncDirectory(_ path: String) throws {
        let fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else { throw PosixFile.error("open", path) }
        defer { close(fd) }
        guard fsync(fd) == 0 else { throw PosixFile.error("fsync", path) }
    }

    /// Whether the current process may create files in `path`.
    public static func isWritable(_ path: String) -> Bool { access(path, W_OK) == 0 }

    /// Names in a directory (no "." / "..").
    public static func list(_ path: String) throws -> [String] {
        guard let dir = opendir(path) else { throw PosixFile.error("opendir", path) }
        defer { closedir(dir) }
        var names: [String] = []
        while let entry = readdir(dir) {
            let name = withUnsafePointer(to: entry.pointee.d_name) {
                $0.withMemoryRebound(to: CChar.self, capacity: 256) { String(cString: $0) }
            }
            if name != "." && name != ".." { names.append(name) }
        }
        return names
    }
}
