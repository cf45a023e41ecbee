import CDepotSupport

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
        if let code = FaultInjection.check(.open, path) { throw PosixFile.error("open", path, code) }
        let fd = open(path, flags | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw PosixFile.error("open", path) }
        self.fd = fd
    }

    /// Takes ownership of an open descriptor (closed with this object).
    public init(adopting fd: Int32, path: String) {
        self.fd = fd
        self.path = path
    }

    /// What `fstat` says of an open file.
    public struct Identity: Sendable, Equatable {
        public var size: Int64
        public var links: Int
        public var owner: UInt32
        public var device: UInt64
        public var inode: UInt64
    }

    public func identity() throws -> Identity {
        var st = stat()
        guard fstat(fd, &st) == 0 else { throw PosixFile.error("stat", path) }
        return Identity(
            size: Int64(st.st_size), links: Int(st.st_nlink), owner: UInt32(st.st_uid), device: UInt64(st.st_dev),
            inode: UInt64(st.st_ino))
    }

    /// Opens an existing regular file without following a symbolic link at `path` and without
    /// blocking on a FIFO. Nil when nothing is there, or something that is not a regular file
    /// (a link, a FIFO, a directory); throws on any other failure (EACCES, EIO).
    public static func openRegular(path: String, writable: Bool = false) throws -> (PosixFile, Identity)? {
        let fd = open(path, (writable ? O_RDWR : O_RDONLY) | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC)
        guard fd >= 0 else {
            if [ENOENT, ELOOP, ENOTDIR, EISDIR, ENXIO].contains(errno) { return nil }
            throw PosixFile.error("open", path)
        }
        let file = PosixFile(adopting: fd, path: path)
        var st = stat()
        guard fstat(fd, &st) == 0 else { throw PosixFile.error("stat", path) }
        guard (st.st_mode & S_IFMT) == S_IFREG else { return nil }
        return (file, try file.identity())
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
        if let code = FaultInjection.check(.write, path) { throw PosixFile.error("write", path, code) }
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
        if let code = FaultInjection.check(.write, path) { throw PosixFile.error("write", path, code) }
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
        if let code = FaultInjection.check(.write, path) {
            // A full disk usually fails part-way: the header lands, the payload does not.
            _ = pwrite(fd, first.baseAddress, first.count, off_t(offset))
            throw PosixFile.error("write", path, code)
        }
        var a = first
        var b = second
        var position = offset
        while a.count + b.count > 0 {
            var iov = [
                iovec(iov_base: UnsafeMutableRawPointer(mutating: a.baseAddress), iov_len: a.count),
                iovec(iov_base: UnsafeMutableRawPointer(mutating: b.baseAddress), iov_len: b.count),
            ]
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
        if let code = FaultInjection.check(.read, path) { throw PosixFile.error("read", path, code) }
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
        if let code = FaultInjection.check(.read, path) { throw PosixFile.error("read", path, code) }
        var a = first
        var b = second
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

    /// Reads up to `limit` bytes at `offset` into the front of `buffer`; returns how many (0 at
    /// the end of the file).
    public func read(into buffer: UnsafeMutableRawBufferPointer, at offset: Int64, upTo limit: Int) throws -> Int {
        if let code = FaultInjection.check(.read, path) { throw PosixFile.error("read", path, code) }
        while true {
            let n = pread(fd, buffer.baseAddress!, min(limit, buffer.count), off_t(offset))
            if n < 0 {
                if errno == EINTR { continue }
                throw PosixFile.error("read", path)
            }
            return n
        }
    }

    /// Reads up to `buffer.count` bytes sequentially; returns 0 at end of file.
    public func readSome(into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
        if let code = FaultInjection.check(.read, path) { throw PosixFile.error("read", path, code) }
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
        if let code = FaultInjection.check(.fdatasync, path) { throw PosixFile.error("fsync", path, code) }
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

    /// Copies `length` bytes of `from` at `offset` to `to` at `at`: in the kernel
    /// (`copy_file_range`) where it can, else through a buffer. False when `from` is short or
    /// a read or write fails.
    public static func copyRange(from: PosixFile, offset: Int64, to: PosixFile, at: Int64, length: Int64) -> Bool {
        var done: Int64 = 0
        while done < length {
            let n = depot_copy_file_range(from.fd, offset + done, to.fd, at + done, min(length - done, 1 << 30))
            if n > 0 {
                done += n
                continue
            }
            if n == 0 { return false } // `from` ends early
            if n == -Int64(EINTR) { continue }
            guard [EXDEV, EINVAL, ENOSYS, EOPNOTSUPP].contains(Int32(-n)) else { return false }
            // Not between these two files: through a buffer.
            let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 4 << 20, alignment: 64)
            defer { buffer.deallocate() }
            while done < length {
                let slot = UnsafeMutableRawBufferPointer(rebasing: buffer[0..<Int(min(Int64(buffer.count), length - done))])
                guard (try? from.read(into: slot, at: offset + done)) != nil,
                    (try? to.write(UnsafeRawBufferPointer(slot), at: at + done)) != nil
                else { return false }
                done += Int64(slot.count)
            }
        }
        return true
    }
}

/// Small file-system helpers used by several layers.
public enum FileSystem {
    /// Whether `path` exists. Any error (EACCES, EIO, ...) reads as "no": never use this to
    /// decide that data is gone; use `probe`, which tells ENOENT apart from everything else.
    public static func exists(_ path: String) -> Bool { access(path, F_OK) == 0 }

    /// What `stat(2)` says about a path. Only `.missing` (ENOENT) means "not there"; a failure
    /// with any other errno (EACCES, EIO, ENOTCONN on a network mount, ...) is `.failed`.
    public enum Probe: Equatable, Sendable {
        case file(size: Int64)
        case directory
        /// Exists but is neither a regular file nor a directory.
        case other
        case missing
        case failed(errno: Int32)

        /// "ENOENT", "EACCES", "EIO", ... for messages.
        public static func errnoName(_ code: Int32) -> String {
            switch code {
            case ENOENT: return "ENOENT"
            case EACCES: return "EACCES"
            case EPERM: return "EPERM"
            case EIO: return "EIO"
            case ENOSPC: return "ENOSPC"
            case ENOTDIR: return "ENOTDIR"
            case ENOTCONN: return "ENOTCONN"
            case ESTALE: return "ESTALE"
            default: return "errno \(code)"
            }
        }
    }

    /// Opens `path` for reading and closes it again: nil when that works, else the errno.
    public static func openErrno(_ path: String) -> Int32? {
        if let code = FaultInjection.check(.open, path) { return code }
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return errno }
        close(fd)
        return nil
    }

    public static func probe(_ path: String) -> Probe {
        if let code = FaultInjection.check(.stat, path) { return code == ENOENT ? .missing : .failed(errno: code) }
        var st = stat()
        guard stat(path, &st) == 0 else {
            let code = errno
            return code == ENOENT ? .missing : .failed(errno: code)
        }
        switch st.st_mode & S_IFMT {
        case S_IFREG: return .file(size: Int64(st.st_size))
        case S_IFDIR: return .directory
        default: return .other
        }
    }

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
        if let code = FaultInjection.check(.fdatasync, path) { throw PosixFile.error("fsync", path, code) }
        let fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else { throw PosixFile.error("open", path) }
        defer { close(fd) }
        guard fsync(fd) == 0 else { throw PosixFile.error("fsync", path) }
    }

    /// Whether the current process may create files in `path`.
    public static func isWritable(_ path: String) -> Bool { access(path, W_OK) == 0 }

    /// Names in a directory (no "." / "..").
    public static func list(_ path: String) throws -> [String] {
        if let code = FaultInjection.check(.open, path) { throw PosixFile.error("opendir", path, code) }
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
