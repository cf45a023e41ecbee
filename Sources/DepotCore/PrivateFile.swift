#if canImport(Glibc)
    import Glibc
#endif

/// Secrets on disk (a token signing key, stored registry credentials): created with mode 0600
/// by `open` itself, so the file is never readable by others, not even between its creation and
/// a later chmod (FileManager's attributes are applied after the file exists). `O_EXCL` and
/// `O_NOFOLLOW`: an existing file or a symlink planted at the path is refused, not written through.
public enum PrivateFile {
    public static func create(_ path: String, _ bytes: [UInt8]) throws {
        let fd = open(path, O_CREAT | O_EXCL | O_WRONLY | O_NOFOLLOW | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw DepotError.io("cannot create \(path): \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        var done = 0
        while done < bytes.count {
            let n = bytes[done...].withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
            if n < 0, errno == EINTR { continue }
            guard n > 0 else { throw DepotError.io("cannot write \(path): \(String(cString: strerror(errno)))") }
            done += n
        }
        guard fsync(fd) == 0 else { throw DepotError.io("cannot fsync \(path): \(String(cString: strerror(errno)))") }
    }
}
