import DepotCore
import Foundation

/// Secret values of the config: a key that holds a secret (a webhook's `secret`; the catalog's
/// password and the object store's keys use the same) may instead be given as `<key>_env`, the
/// name of an environment variable holding it, or `<key>_file`, a file holding it (a Kubernetes or
/// Docker secret mounted as a file). Keys that name key files (`server.tls.key_file`,
/// `signing.key_file`, `auth.signing_key_file`, `auth.bootstrap_token_file`) are files already.
extension ConfigReader {
    /// The three ways a secret key may be given.
    static func secretKeys(_ key: String) -> Set<String> { [key, key + "_env", key + "_file"] }

    /// The secret `key` of mapping `m` (at dotted path `at`): inline, from the environment variable
    /// `<key>_env` names, or from the file `<key>_file` names (`SecretFile`); nil when none is given.
    /// Giving more than one is an error, as is an empty value.
    func secret(_ m: [String: Any], _ key: String, at: String) throws -> String? {
        let given = [key, key + "_env", key + "_file"].filter { m[$0] != nil }
        guard given.count <= 1 else {
            throw error("\(at).\(key)", "is given \(given.count) ways (\(given.joined(separator: ", "))): give one")
        }
        guard let which = given.first else { return nil }
        guard let text = m[which] as? String, !text.isEmpty else { throw error("\(at).\(which)", "must be a non-empty string") }
        switch which {
        case key + "_env":
            guard let value = environment[text], !value.isEmpty else {
                throw error("\(at).\(which)", "names \(text), which is not set or empty")
            }
            return value
        case key + "_file":
            do {
                let (value, warning) = try SecretFile.load(text)
                secretFiles.append(text)
                if let warning { warnings.append("\(at).\(which): \(warning)") }
                return value
            } catch let e as SecretFile.Refusal {
                throw error("\(at).\(which)", e.message)
            }
        default:
            return text
        }
    }
}

/// Reading a secret from a file, as `*_file` keys do.
enum SecretFile {
    /// Largest secret file read (a password, a token, a PEM key are far smaller).
    static let maxBytes = 64 << 10

    struct Refusal: Error {
        let message: String
    }

    /// The secret in `path`: a regular file (symbolic links followed, as Kubernetes mounts
    /// Secrets), at most 64 KiB of UTF-8, without one trailing newline (`\n` or `\r\n`), not empty.
    /// A file every user may write is refused (anyone could replace the secret); one every user
    /// may read is accepted with a warning (Docker's secrets are 0444; Kubernetes: defaultMode 0440
    /// with fsGroup).
    static func load(_ path: String) throws -> (value: String, warning: String?) {
        let fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK)
        guard fd >= 0 else { throw Refusal(message: "cannot open \(path): \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0 else { throw Refusal(message: "cannot stat \(path): \(String(cString: strerror(errno)))") }
        guard st.st_mode & S_IFMT == S_IFREG else { throw Refusal(message: "\(path) is not a regular file") }
        let mode = String(st.st_mode & 0o7777, radix: 8)
        guard st.st_mode & S_IWOTH == 0 else {
            throw Refusal(message: "\(path) may be written by every user (mode 0\(mode)): anyone could replace the secret; chmod o-w")
        }
        guard st.st_size <= maxBytes else {
            throw Refusal(message: "\(path) is \(st.st_size) bytes; a secret file holds at most \(maxBytes)")
        }
        var bytes = [UInt8](repeating: 0, count: maxBytes + 1)
        var count = 0
        while count < bytes.count {
            let n = bytes.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress! + count, $0.count - count) }
            if n < 0 && errno == EINTR { continue }
            guard n >= 0 else { throw Refusal(message: "cannot read \(path): \(String(cString: strerror(errno)))") }
            if n == 0 { break }
            count += n
        }
        guard count <= maxBytes else { throw Refusal(message: "\(path) holds more than \(maxBytes) bytes") }
        bytes.removeSubrange(count...)
        if bytes.last == 0x0a {
            bytes.removeLast()
            if bytes.last == 0x0d { bytes.removeLast() }
        }
        guard let value = String(validating: bytes, as: UTF8.self) else { throw Refusal(message: "\(path) is not UTF-8 text") }
        guard !value.isEmpty else { throw Refusal(message: "\(path) is empty") }
        let warning =
            st.st_mode & S_IROTH != 0
            ? "\(path) may be read by every user (mode 0\(mode)); chmod o-r (Kubernetes: defaultMode 0440 and the pod's fsGroup)"
            : nil
        return (value, warning)
    }
}
