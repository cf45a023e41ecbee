import DepotCore
import DepotRegistry
import DepotStore
import DepotTestSupport
import Foundation
import Testing

@testable import DepotClient

#if canImport(Glibc)
    import Glibc
#endif

/// The `depot` binary as users run it: killed mid-transfer and run again, against a plain
/// OCI registry (CNCF distribution), and into a full disk.
@Suite("Client processes", .serialized)
struct ClientProcessTests {
    static var depot: String { repoRoot + "/.build/debug/depot" }

    /// Starts `depot` with arguments; returns the process.
    static func start(_ arguments: [String], env: [String: String] = [:]) throws -> Process {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: depot)
        p.arguments = arguments
        p.environment = ProcessInfo.processInfo.environment.merging(env) { $1 }
        p.standardOutput = FileHandle.nullDevice
        p.standardError = FileHandle.nullDevice
        try p.run()
        return p
    }

    /// Waits until `condition` holds or the process ends (false), polling.
    static func waitFor(_ process: Process, timeout: TimeInterval = 60, _ condition: () throws -> Bool) async throws -> Bool {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if try condition() { return true }
            if !process.isRunning { return false }
            try await Task.sleep(nanoseconds: 20_000_000)
        }
        return false
    }

    static func json(_ output: String) throws -> [String: Any] {
        let start = try #require(output.firstIndex(of: "{"))
        return try #require(try JSONSerialization.jsonObject(with: Data(output[start...].utf8)) as? [String: Any])
    }

    @Test func aKilledPushOrPullResumesMovingOnlyWhatIsMissing() async throws {
        let dir = TempDir("depot-resume")
        let size = 48 << 20
        try Data(fastRandom(size, seed: 11)).write(to: URL(fileURLWithPath: dir.path + "/big.bin"))
        try await withRegistry { _, registry, port in
            let url = "http://127.0.0.1:\(port)"
            // Push with one batch at a time; kill it once the server holds a third of the chunks.
            let first = try Self.start(["push", "big/model:v1", dir.path + "/big.bin", "--registry", url, "--jobs", "1", "--quiet"])
            let killed = try await Self.waitFor(first) { try registry.store.stats().chunkBytes >= Int64(size / 3) }
            kill(first.processIdentifier, SIGKILL)
            first.waitUntilExit()
            #expect(killed, "the push finished before it could be killed")
            let stored = try registry.store.stats().chunkBytes

            let again = try await run(Self.depot, ["push", "big/model:v1", dir.path + "/big.bin", "--registry", url, "--json"])
            #expect(again.status == 0, "\(again.output)")
            let sent = try Self.json(again.output)["bytes_sent"] as? Int ?? -1
            #expect(sent > 0 && Int64(sent) <= Int64(size) - stored + (1 << 20), "resumed push sent \(sent) with \(stored) already stored")

            // Pull, killed once its partial file holds a third; the rerun fetches only the rest.
            let cache = dir.path + "/cache"
            let pullProcess = try Self.start([
                "pull", "big/model:v1", "-o", dir.path + "/out", "--registry", url, "--cache", cache,
                "--jobs", "1", "--quiet",
            ])
            let partials = dir.path + "/out/.depot-partial"
            let written = { () -> Int64 in // bytes allocated to the partial file (it is sparse until written)
                ((try? FileManager.default.contentsOfDirectory(atPath: partials)) ?? []).reduce(Int64(0)) { total, f in
                    var st = stat()
                    return total + (stat(partials + "/" + f, &st) == 0 ? Int64(st.st_blocks) * 512 : 0)
                }
            }
            let pullKilled = try await Self.waitFor(pullProcess) { written() >= Int64(size / 3) }
            kill(pullProcess.processIdentifier, SIGKILL)
            pullProcess.waitUntilExit()
            #expect(pullKilled, "the pull finished before it could be killed")
            #expect(!FileManager.default.fileExists(atPath: dir.path + "/out/big.bin"))
            let have = written()
            #expect(have < Int64(size), "killed before it had everything")
            let resumed = try await run(
                Self.depot, ["pull", "big/model:v1", "-o", dir.path + "/out", "--registry", url, "--cache", cache, "--json"])
            #expect(resumed.status == 0, "\(resumed.output)")
            let received = try Self.json(resumed.output)["bytes_received"] as? Int ?? -1
            #expect(Int64(received) <= Int64(size) - have + (1 << 20), "resumed pull received \(received) with \(have) in place")
            #expect(sameFile(dir.path + "/out/big.bin", dir.path + "/big.bin"))
        }
    }

    @Test(.enabled(if: FileManager.default.isExecutableFile(atPath: "/usr/bin/docker-registry")))
    func aPlainOCIRegistryWorksThroughTheStandardAPI() async throws {
        let dir = TempDir("depot-dist")
        let distribution = try await DistributionProcess(dir: dir.path, port: 20_000 + Int(getpid() % 10_000))
        defer { distribution.stop() }
        let url = distribution.url

        try makeCheckpoint(dir.path + "/m.safetensors", tensors: 4, tensorBytes: 1 << 20)
        let pushed = try await run(Self.depot, ["push", "plain/model:v1", dir.path + "/m.safetensors", "--registry", url, "--json"])
        #expect(pushed.status == 0, "\(pushed.output)")
        #expect(try Self.json(pushed.output)["mode"] as? String == "oci")
        let pulled = try await run(
            Self.depot,
            [
                "pull", "plain/model:v1", "-o", dir.path + "/out", "--registry", url, "--json",
                "--cache", dir.path + "/cache",
            ])
        #expect(pulled.status == 0, "\(pulled.output)")
        #expect(sameFile(dir.path + "/out/m.safetensors", dir.path + "/m.safetensors"))
        let inspect = try await run(Self.depot, ["inspect", "plain/model:v1", "--registry", url])
        #expect(inspect.output.contains("m.safetensors"))
    }

    @Test(.enabled(if: canMountTmpfs()))
    func aFullDiskWhilePullingLeavesNothingHalfWritten() async throws {
        let dir = TempDir("depot-full")
        try Data(fastRandom(12 << 20, seed: 21)).write(to: URL(fileURLWithPath: dir.path + "/w.bin"))
        let small = dir.path + "/small"
        try FileManager.default.createDirectory(atPath: small, withIntermediateDirectories: true)
        guard mount("tmpfs", small, "tmpfs", 0, "size=8m") == 0 else { return }
        defer { umount(small) }
        try await withRegistry { _, _, port in
            let url = "http://127.0.0.1:\(port)"
            let pushed = try await run(Self.depot, ["push", "r/w:v1", dir.path + "/w.bin", "--registry", url, "--quiet"])
            #expect(pushed.status == 0, "\(pushed.output)")
            let pulled = try await run(
                Self.depot,
                [
                    "pull", "r/w:v1", "-o", small + "/out", "--registry", url, "--quiet",
                    "--cache", dir.path + "/cache",
                ])
            #expect(pulled.status == 1)
            #expect(pulled.output.contains("No space left") || pulled.output.contains("no space"), "\(pulled.output)")
            #expect(pulled.output.split(separator: "\n").count == 1, "one line: \(pulled.output)")
            #expect(!FileManager.default.fileExists(atPath: small + "/out/w.bin"))
            let partial = (try? FileManager.default.contentsOfDirectory(atPath: small + "/out/.depot-partial")) ?? []
            #expect(partial.isEmpty)
        }
    }
}

/// Whether this process may mount a small tmpfs (root in a container usually can).
func canMountTmpfs() -> Bool {
    let dir = NSTemporaryDirectory() + "/depot-client-mount-probe-\(getpid())"
    try? FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    defer {
        _ = umount(dir)
        try? FileManager.default.removeItem(atPath: dir)
    }
    return mount("tmpfs", dir, "tmpfs", 0, "size=1m") == 0
}

/// CNCF distribution (Debian `docker-registry`) on a loopback port, storing under `dir/data`: a
/// plain OCI registry without Depot's extension, for the tests that need one.
final class DistributionProcess {
    let process = Process()
    let port: Int
    var url: String { "http://127.0.0.1:\(port)" }

    init(dir: String, port: Int) async throws {
        self.port = port
        try """
        version: 0.1
        log:
          level: error
        storage:
          filesystem:
            rootdirectory: \(dir)/data
        http:
          addr: 127.0.0.1:\(port)
        """.write(toFile: dir + "/config.yml", atomically: true, encoding: .utf8)
        process.executableURL = URL(fileURLWithPath: "/usr/bin/docker-registry")
        process.arguments = ["serve", dir + "/config.yml"]
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        var up = false
        for _ in 0..<100 where !up {
            up = (try? await run("/usr/bin/curl", ["-sf", url + "/v2/"]))?.status == 0
            if !up { try await Task.sleep(nanoseconds: 50_000_000) }
        }
        if !up {
            stop()
            throw ClientError("distribution did not start on port \(port)")
        }
    }

    func stop() {
        process.terminate()
        process.waitUntilExit()
    }
}
