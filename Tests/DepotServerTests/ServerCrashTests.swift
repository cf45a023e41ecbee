import DepotCore
import DepotTestSupport
import Foundation
import Testing

/// A free TCP port on 127.0.0.1 (bound once, then released).
func freePort() -> Int {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    defer { close(fd) }
    var addr = sockaddr_in()
    addr.sin_family = sa_family_t(AF_INET)
    addr.sin_port = 0
    addr.sin_addr.s_addr = inet_addr("127.0.0.1")
    _ = withUnsafePointer(to: &addr) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
    }
    var len = socklen_t(MemoryLayout<sockaddr_in>.size)
    _ = withUnsafeMutablePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) } }
    return Int(UInt16(bigEndian: addr.sin_port))
}

/// `depot serve` as a child process, as an operator runs it.
final class ServerProcess {
    let process = Process()
    let port: Int

    init(storage: String, port: Int = freePort(), config: String? = nil, log: String? = nil) throws {
        self.port = port
        process.executableURL = URL(fileURLWithPath: repoRoot + "/.build/debug/depot")
        process.arguments =
            ["serve", "--storage", storage, "--listen", "127.0.0.1:\(port)", "--log-level", log == nil ? "warning" : "info"]
            + (config.map { ["--config", $0] } ?? [])
        process.standardOutput = FileHandle.nullDevice
        if let log {
            FileManager.default.createFile(atPath: log, contents: nil)
            let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: log))
            handle.seekToEndOfFile()
            process.standardOutput = handle
            process.standardError = handle
        } else {
            process.standardError = FileHandle.nullDevice
        }
        try process.run()
    }

    var url: String { "http://127.0.0.1:\(port)" }

    /// Waits until /healthz answers.
    func waitReady() async throws {
        for _ in 0..<100 {
            let r = try await run("/usr/bin/curl", ["-sf", "\(url)/healthz"], timeout: 5)
            if r.status == 0 { return }
            try await Task.sleep(for: .milliseconds(100))
        }
        throw CancellationError()
    }

    func kill9() {
        kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
    }

    func stop() {
        process.terminate()
        process.waitUntilExit()
    }
}

@Suite(.serialized) struct ServerCrashTests {
    /// The server is SIGKILLed while a real client pushes artifacts (monolithic and chunked
    /// uploads, then manifests), many times. After a restart every manifest the server had
    /// acknowledged resolves by tag and every blob reads back intact; `depot fsck` is clean.
    @Test func sigkillDuringPushesLosesNoAcknowledgedManifest() async throws {
        let dir = TempDir("crash")
        let storage = dir.path + "/store"
        let acks = dir.path + "/acks.txt"
        FileManager.default.createFile(atPath: acks, contents: nil)
        var total = 0
        var unfinished: [String] = []
        // Eight rounds, and more (up to sixteen, each giving the pusher longer) while too few
        // pushes were acknowledged to test anything: a loaded machine acknowledges fewer per round.
        var round = 0
        while round < 8 || (total < 4 && round < 16) {
            defer { round += 1 }
            let server = try ServerProcess(storage: storage)
            try await server.waitReady()
            // An upload left open when the server dies, with one acknowledged PATCH: its session
            // is in the catalog, so the client resumes it after the restart.
            let open = try await run(
                "/usr/bin/curl", ["-s", "-D", "-", "-o", "/dev/null", "-X", "POST", "\(server.url)/v2/crash/model/blobs/uploads/"])
            if let line = open.output.split(separator: "\r\n").first(where: { $0.lowercased().hasPrefix("location:") }) {
                let location = line.split(separator: " ", maxSplits: 1)[1].trimmingCharacters(in: .whitespaces)
                let patch = try await run(
                    "/usr/bin/curl",
                    ["-s", "-o", "/dev/null", "-w", "%{http_code}", "-X", "PATCH", "--data-binary", "partial", "\(server.url)\(location)"])
                if patch.output == "202" { unfinished.append(location) }
            }
            let pusher = Process()
            pusher.executableURL = URL(fileURLWithPath: "/usr/bin/env")
            pusher.arguments = ["python3", repoRoot + "/Tests/interop/crash_pusher.py", "push", server.url, "\(round + 1)"]
            let out = Pipe()
            pusher.standardOutput = out
            pusher.standardError = FileHandle.nullDevice
            try pusher.run()
            try await Task.sleep(for: .milliseconds(Int.random(in: 700...2500) + (round >= 8 ? 3000 : 0)))
            server.kill9()
            let text = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            pusher.waitUntilExit()
            let lines = text.split(separator: "\n").filter { $0.hasPrefix("ACK ") }
            total += lines.count
            let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: acks))
            handle.seekToEndOfFile()
            handle.write(Data(lines.map { $0 + "\n" }.joined().utf8))
            try handle.close()
        }
        #expect(total >= 4, "too few acknowledged pushes to test anything (a loaded machine acknowledges fewer per round)")
        let server = try ServerProcess(storage: storage)
        try await server.waitReady()
        #expect(unfinished.count == round)
        let partial = Digest.of(Array("partial".utf8))
        for location in unfinished {
            let r = try await run("/usr/bin/curl", ["-s", "-o", "/dev/null", "-D", "-", "\(server.url)\(location)"])
            #expect(r.output.hasPrefix("HTTP/1.1 204"), "upload \(location) after a crash: \(r.output)")
            #expect(r.output.lowercased().contains("range: 0-6"), "its acknowledged 7 bytes: \(r.output)")
            let put = try await run(
                "/usr/bin/curl", ["-s", "-o", "/dev/null", "-w", "%{http_code}", "-X", "PUT", "\(server.url)\(location)?digest=\(partial)"])
            #expect(put.output == "201", "upload \(location) completes after the restart")
        }
        let verify = try await run("/usr/bin/env", ["python3", repoRoot + "/Tests/interop/crash_pusher.py", "verify", server.url, acks])
        #expect(verify.status == 0, "\(verify.output)")
        #expect(verify.output.contains("verified \(total) acknowledged"))
        server.stop()
        let fsck = try await run(repoRoot + "/.build/debug/depot", ["fsck", "--storage", storage])
        #expect(fsck.status == 0, "\(fsck.output)")
    }
}
