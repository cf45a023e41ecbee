import DepotCore
import DepotRegistry
import DepotTestSupport
import Foundation
import HTTPTypes
import HummingbirdTesting
import Testing

/// Runs a command on a GCD thread (never blocking the concurrency pool the server needs).
func run(_ executable: String, _ arguments: [String], cwd: String? = nil, timeout: TimeInterval = 120) async throws -> (
    status: Int32, output: String
) {
    try await withCheckedThrowingContinuation { continuation in
        // Serial queues of their own: they over-commit, so a saturated global pool never delays them.
        DispatchQueue(label: "test.run").async {
            let p = Process()
            p.executableURL = URL(fileURLWithPath: executable)
            p.arguments = arguments
            if let cwd { p.currentDirectoryURL = URL(fileURLWithPath: cwd) }
            let out = Pipe()
            p.standardOutput = out
            p.standardError = out
            do { try p.run() } catch { return continuation.resume(throwing: error) }
            let killer = DispatchWorkItem { if p.isRunning { p.terminate() } }
            DispatchQueue(label: "test.run.killer").asyncAfter(deadline: .now() + timeout, execute: killer)
            let data = out.fileHandleForReading.readDataToEndOfFile()
            p.waitUntilExit()
            killer.cancel()
            continuation.resume(returning: (p.terminationStatus, String(decoding: data, as: UTF8.self)))
        }
    }
}

/// The repository root (tests run from it under `swift test`).
let repoRoot = FileManager.default.currentDirectoryPath

/// Writes a minimal OCI image layout (one gzip tar layer, an image config, a manifest tagged v1)
/// with the system's tar, and returns the manifest digest.
func makeImageLayout(_ dir: String) async throws -> Digest {
    let fm = FileManager.default
    try fm.createDirectory(atPath: dir + "/blobs/sha256", withIntermediateDirectories: true)
    try fm.createDirectory(atPath: dir + "/rootfs", withIntermediateDirectories: true)
    try "hello from depot\n".write(toFile: dir + "/rootfs/hello.txt", atomically: true, encoding: .utf8)
    let tar = try await run("/bin/tar", ["-C", dir + "/rootfs", "-czf", dir + "/layer.tgz", "."])
    #expect(tar.status == 0)
    let layer = [UInt8](try Data(contentsOf: URL(fileURLWithPath: dir + "/layer.tgz")))
    let diff = try await run("/bin/sh", ["-c", "gunzip -c \(dir)/layer.tgz | sha256sum | cut -d' ' -f1"])
    func put(_ bytes: [UInt8]) throws -> Digest {
        let d = Digest.of(bytes)
        try Data(bytes).write(to: URL(fileURLWithPath: "\(dir)/blobs/sha256/\(d.hex)"))
        return d
    }
    let config = Array(
        "{\"architecture\":\"amd64\",\"os\":\"linux\",\"rootfs\":{\"type\":\"layers\",\"diff_ids\":[\"sha256:\(diff.output.trimmingCharacters(in: .whitespacesAndNewlines))\"]}}"
            .utf8)
    let cd = try put(config)
    let ld = try put(layer)
    let manifest = Array(
        """
        {"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"\(cd)","size":\(config.count)},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"\(ld)","size":\(layer.count)}]}
        """.utf8)
    let md = try put(manifest)
    try """
    {"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"\(md)","size":\(manifest.count),"annotations":{"org.opencontainers.image.ref.name":"v1"}}]}
    """.write(toFile: dir + "/index.json", atomically: true, encoding: .utf8)
    try "{\"imageLayoutVersion\":\"1.0.0\"}".write(toFile: dir + "/oci-layout", atomically: true, encoding: .utf8)
    try fm.removeItem(atPath: dir + "/rootfs")
    try fm.removeItem(atPath: dir + "/layer.tgz")
    return md
}

/// Real OCI clients against a live Depot: skopeo and containerd from Debian, oras from PyPI.
@Suite(.serialized) struct InteropTests {
    @Test func skopeoCopiesAnImageInAndOutWithItsDigestUnchangedAndMountsAcrossRepositories() async throws {
        let work = TempDir("skopeo")
        let manifest = try await makeImageLayout(work.path + "/layout")
        try await withRegistry { c, registry, port in
            let reg = "127.0.0.1:\(port)"
            let push = try await run(
                "/usr/bin/skopeo", ["copy", "--dest-tls-verify=false", "oci:\(work.path)/layout:v1", "docker://\(reg)/test/image:v1"])
            #expect(push.status == 0, "\(push.output)")
            let raw = try await run("/usr/bin/skopeo", ["inspect", "--tls-verify=false", "--raw", "docker://\(reg)/test/image:v1"])
            #expect(Digest.of(Array(raw.output.utf8)) == manifest)
            let tags = try await run("/usr/bin/skopeo", ["list-tags", "--tls-verify=false", "docker://\(reg)/test/image"])
            #expect(tags.output.contains("\"v1\""))
            // Registry to registry: the layer is mounted, not uploaded again.
            let before = try await c.req(.get, "/metrics").text
            let copy = try await run(
                "/usr/bin/skopeo",
                [
                    "copy", "--src-tls-verify=false", "--dest-tls-verify=false",
                    "docker://\(reg)/test/image:v1", "docker://\(reg)/test/copy:v1",
                ])
            #expect(copy.status == 0, "\(copy.output)")
            let after = try await c.req(.get, "/metrics").text
            func mounts(_ text: String) -> Int {
                text.split(separator: "\n").first {
                    $0.hasPrefix("depot_http_requests_total{route=\"uploadStart\",method=\"POST\",status=\"201\"}")
                }
                .flatMap { Int($0.split(separator: " ").last!) } ?? 0
            }
            #expect(mounts(after) - mounts(before) == 1, "the layer is mounted (skopeo re-uploads the config)")
            let pulled = try await run(
                "/usr/bin/skopeo", ["copy", "--src-tls-verify=false", "docker://\(reg)/test/copy:v1", "oci:\(work.path)/out:v1"])
            #expect(pulled.status == 0, "\(pulled.output)")
            let original = try FileManager.default.contentsOfDirectory(atPath: work.path + "/layout/blobs/sha256").sorted()
            let copied = try FileManager.default.contentsOfDirectory(atPath: work.path + "/out/blobs/sha256").sorted()
            #expect(original == copied)
            for name in original {
                #expect(
                    FileManager.default.contentsEqual(
                        atPath: "\(work.path)/layout/blobs/sha256/\(name)", andPath: "\(work.path)/out/blobs/sha256/\(name)"))
            }
            _ = registry
        }
    }

    @Test func orasPushesAndPullsAMultiFileModelMonolithicAndChunked() async throws {
        let work = TempDir("oras")
        try await withRegistry { _, _, port in
            let r = try await run(
                "/usr/bin/env", ["python3", repoRoot + "/Tests/interop/oras_roundtrip.py", "127.0.0.1:\(port)", work.path])
            #expect(r.status == 0, "\(r.output)")
            #expect(r.output.contains("pulled both byte-identical"))
        }
    }

    /// What `depot push` writes is a plain OCI artifact: oras pulls it by its title annotations
    /// and skopeo reads its manifest.
    @Test func orasAndSkopeoReadAnArtifactPushedByTheDepotClient() async throws {
        let work = TempDir("oras-depot")
        try makeCheckpoint(work.path + "/model.safetensors", tensors: 4, tensorBytes: 256 << 10)
        try "{\"architectures\": [\"Tiny\"]}".write(toFile: work.path + "/config.json", atomically: true, encoding: .utf8)
        try await withRegistry { _, _, port in
            _ = try await push(port, "interop/depot-model", "v1", [work.path + "/model.safetensors", work.path + "/config.json"])
            let script = """
                import oras.client, os, sys
                os.makedirs(sys.argv[2], exist_ok=True)
                c = oras.client.OrasClient(hostname=sys.argv[1], insecure=True)
                files = c.pull(target=sys.argv[1] + "/interop/depot-model:v1", outdir=sys.argv[2])
                print(sorted(os.path.basename(f) for f in files))
                """
            let r = try await run("/usr/bin/env", ["python3", "-c", script, "127.0.0.1:\(port)", work.path + "/oras-out"])
            #expect(r.status == 0, "\(r.output)")
            #expect(sameFile(work.path + "/oras-out/model.safetensors", work.path + "/model.safetensors"))
            #expect(sameFile(work.path + "/oras-out/config.json", work.path + "/config.json"))
            let s = try await run(
                "/usr/bin/skopeo", ["inspect", "--tls-verify=false", "--raw", "docker://127.0.0.1:\(port)/interop/depot-model:v1"])
            #expect(s.status == 0, "\(s.output)")
            #expect(s.output.contains("application/vnd.cncf.model.manifest.v1+json"))
        }
    }

    /// Referrers both ways: oras-py attaches an SBOM to a model `depot push`ed, `depot discover`
    /// lists it (tree and JSON) and `depot pull` reads it by digest; `depot attach` attaches an
    /// evaluation report, which the referrers API shows to oras-py's client and oras-py pulls.
    @Test func attachAndDiscoverInteroperateWithOras() async throws {
        let work = TempDir("referrers")
        try makeCheckpoint(work.path + "/model.safetensors", tensors: 2, tensorBytes: 64 << 10)
        try "{\"spdxVersion\": \"SPDX-2.3\"}".write(toFile: work.path + "/sbom.json", atomically: true, encoding: .utf8)
        try "{\"accuracy\": 0.93}".write(toFile: work.path + "/eval.json", atomically: true, encoding: .utf8)
        let depot = repoRoot + "/.build/debug/depot"
        try await withRegistry { _, _, port in
            let host = "127.0.0.1:\(port)"
            let subject = try await push(port, "interop/refs", "v1", [work.path + "/model.safetensors"]).digest
            // 1. oras-py attaches (its config media type is the referrer's artifactType).
            let script = """
                import oras.client, oras.oci, os, sys, json
                host, subject, size = sys.argv[1], sys.argv[2], int(sys.argv[3])
                os.chdir(sys.argv[4])
                c = oras.client.OrasClient(hostname=host, insecure=True)
                s = oras.oci.Subject(mediaType="application/vnd.oci.image.manifest.v1+json", digest=subject, size=size)
                r = c.push(target=host + "/interop/refs:sbom", files=["sbom.json"], subject=s,
                           manifest_config="config.json:application/spdx+json")
                print(r.status_code)
                """
            try "{}".write(toFile: work.path + "/config.json", atomically: true, encoding: .utf8)
            let manifestSize = try await run(
                "/usr/bin/env",
                [
                    "curl", "-sf", "http://\(host)/v2/interop/refs/manifests/v1", "-H",
                    "Accept: application/vnd.oci.image.manifest.v1+json", "-o", work.path + "/m.json",
                ])
            #expect(manifestSize.status == 0)
            let size = try Data(contentsOf: URL(fileURLWithPath: work.path + "/m.json")).count
            let attached = try await run("/usr/bin/env", ["python3", "-c", script, host, subject, "\(size)", work.path])
            #expect(attached.status == 0 && attached.output.contains("201"), "\(attached.output)")
            let tree = try await run(depot, ["discover", "\(host)/interop/refs:v1"])
            #expect(tree.status == 0 && tree.output.contains("application/spdx+json"), "\(tree.output)")
            let json = try await run(depot, ["discover", "\(host)/interop/refs:v1", "--json", "--artifact-type", "application/spdx+json"])
            let doc = try #require(try JSONSerialization.jsonObject(with: Data(json.output.utf8)) as? [String: Any], "\(json.output)")
            let referrers = try #require(doc["referrers"] as? [[String: Any]])
            #expect(referrers.count == 1 && referrers[0]["artifact_type"] as? String == "application/spdx+json")
            let sbomDigest = try #require(referrers[0]["digest"] as? String)
            let pulled = try await run(depot, ["pull", "\(host)/interop/refs@\(sbomDigest)", "-o", work.path + "/sbom-out", "--quiet"])
            #expect(pulled.status == 0, "\(pulled.output)")
            #expect(sameFile(work.path + "/sbom-out/sbom.json", work.path + "/sbom.json"))

            // 2. depot attaches; oras-py sees it through the referrers API and pulls it.
            let attach = try await run(
                depot,
                [
                    "attach", "\(host)/interop/refs:v1", work.path + "/eval.json", "--artifact-type", "application/vnd.example.eval+json",
                    "--json",
                ])
            #expect(attach.status == 0, "\(attach.output)")
            let evalDigest = try #require(try ClientProcessTests.json(attach.output)["digest"] as? String)
            let read = """
                import oras.client, os, sys
                host, subject, want, out = sys.argv[1:5]
                c = oras.client.OrasClient(hostname=host, insecure=True)
                index = c.do_request(f"http://{host}/v2/interop/refs/referrers/{subject}").json()
                found = [m for m in index["manifests"] if m["digest"] == want]
                assert found and found[0]["artifactType"] == "application/vnd.example.eval+json", index
                files = c.pull(target=f"{host}/interop/refs@{want}", outdir=out)
                print(sorted(os.path.basename(f) for f in files))
                """
            let r = try await run("/usr/bin/env", ["python3", "-c", read, host, subject, evalDigest, work.path + "/eval-out"])
            #expect(r.status == 0, "\(r.output)")
            #expect(sameFile(work.path + "/eval-out/eval.json", work.path + "/eval.json"))
            let both = try await run(depot, ["discover", "\(host)/interop/refs:v1", "--json"])
            #expect(both.output.contains(evalDigest) && both.output.contains(sbomDigest), "\(both.output)")
            // A media type that is not one is refused before anything is sent.
            let bad = try await run(
                depot, ["attach", "\(host)/interop/refs:v1", work.path + "/eval.json", "--artifact-type", "not a type"])
            #expect(bad.status == 2, "\(bad.output)")
        }
    }

    @Test func containerdPullsAndUnpacksAnImagePushedBySkopeo() async throws {
        let work = TempDir("ctr")
        _ = try await makeImageLayout(work.path + "/layout")
        let config = """
            version = 2
            root = "\(work.path)/root"
            state = "\(work.path)/state"
            [grpc]
              address = "\(work.path)/containerd.sock"
            """
        try config.write(toFile: work.path + "/config.toml", atomically: true, encoding: .utf8)
        let daemon = Process()
        daemon.executableURL = URL(fileURLWithPath: "/usr/bin/containerd")
        daemon.arguments = ["--config", work.path + "/config.toml"]
        daemon.standardOutput = FileHandle.nullDevice
        daemon.standardError = FileHandle.nullDevice
        try daemon.run()
        defer {
            daemon.terminate()
            daemon.waitUntilExit()
        }
        for _ in 0..<50 where !FileManager.default.fileExists(atPath: work.path + "/containerd.sock") {
            try await Task.sleep(for: .milliseconds(100))
        }
        try await withRegistry { _, _, port in
            let reg = "127.0.0.1:\(port)"
            let push = try await run(
                "/usr/bin/skopeo", ["copy", "--dest-tls-verify=false", "oci:\(work.path)/layout:v1", "docker://\(reg)/test/hello:v1"])
            #expect(push.status == 0, "\(push.output)")
            let sock = work.path + "/containerd.sock"
            let pull = try await run("/usr/bin/ctr", ["--address", sock, "images", "pull", "--plain-http", "\(reg)/test/hello:v1"])
            #expect(pull.status == 0, "\(pull.output)")
            #expect(pull.output.contains("unpacking"))
            let ls = try await run("/usr/bin/ctr", ["--address", sock, "images", "ls", "-q"])
            #expect(ls.output.contains("\(reg)/test/hello:v1"))
        }
    }
}
