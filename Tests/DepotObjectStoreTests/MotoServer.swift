import DepotCore
import DepotObjectStore
import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// A real `moto_server` (PyPI `moto[server]`, an S3 emulator) on a loopback port, one per test,
/// with a fresh bucket. Found as `$DEPOT_MOTO_SERVER`, on `PATH`, or in the e2e venv
/// (`scripts/install-deps.sh --test` installs it there).
final class MotoServer: @unchecked Sendable {
    let process: Process
    let port: Int
    let settings: S3Settings

    static let executable: String? = {
        let env = ProcessInfo.processInfo.environment
        var candidates: [String] = []
        if let explicit = env["DEPOT_MOTO_SERVER"] { candidates.append(explicit) }
        for dir in (env["PATH"] ?? "").split(separator: ":") { candidates.append("\(dir)/moto_server") }
        let venv = env["DEPOT_E2E_VENV"] ?? (NSHomeDirectory() + "/.cache/depot/e2e-venv")
        candidates.append(venv + "/bin/moto_server")
        return candidates.first { FileManager.default.isExecutableFile(atPath: $0) }
    }()

    static let skipMessage =
        "moto_server is not installed (pip install 'moto[server]', or scripts/install-deps.sh --test): S3 tests skipped"

    init(prefix: String = "depot/") throws {
        guard let executable = Self.executable else { throw DepotError.storage(Self.skipMessage) }
        var lastError: (any Error)?
        for _ in 0..<5 {
            let port = Self.freePort()
            let p = Process()
            p.executableURL = URL(fileURLWithPath: executable)
            p.arguments = ["-H", "127.0.0.1", "-p", String(port)]
            p.standardOutput = FileHandle.nullDevice
            p.standardError = FileHandle.nullDevice
            try p.run()
            var settings = S3Settings(
                endpoint: "http://127.0.0.1:\(port)", bucket: "depot-test", region: "us-east-1", prefix: prefix, accessKey: "test-key",
                secretKey: "test-secret")
            settings.partSize = 5 << 20
            let client = try S3Client(settings: settings)
            // Ready when it answers; a port taken meanwhile makes it exit, and the next one is tried.
            for _ in 0..<300 where p.isRunning {
                do {
                    try client.createBucket()
                    self.process = p
                    self.port = port
                    self.settings = settings
                    return
                } catch {
                    lastError = error
                    usleep(100_000)
                }
            }
            kill(p.processIdentifier, SIGKILL)
            p.waitUntilExit()
        }
        throw DepotError.storage("moto_server did not start: \(String(describing: lastError))")
    }

    deinit {
        // SIGKILL: the test process may hand its children a mask that blocks SIGTERM.
        kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
    }

    func client() throws -> S3Client { try S3Client(settings: settings) }

    /// A port nothing listens on now (bound to 0, read, closed).
    static func freePort() -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        addr.sin_port = 0
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, len) } }
        _ = withUnsafeMutablePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) } }
        return Int(UInt16(bigEndian: addr.sin_port))
    }
}
