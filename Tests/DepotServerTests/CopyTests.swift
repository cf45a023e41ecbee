import DepotCore
import DepotRegistry
import DepotTestSupport
import Foundation
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// `depot cp` as operators run it: between two live Depots (only the chunks the destination
/// lacks move; digest, lineage and referrers kept), and through a plain OCI registry (CNCF
/// distribution) and back, bit-identical.
@Suite("depot cp", .serialized)
struct CopyTests {
    static let depot = repoRoot + "/.build/debug/depot"

    @Test func betweenTwoDepotsOnlyWhatTheDestinationLacksMoves() async throws {
        let dir = TempDir("depot-cp")
        try await withRegistry { _, a, portA in
            let d = try await pushFamily(portA, dir.path)
            let attach = try await run(
                Self.depot,
                [
                    "attach", "127.0.0.1:\(portA)/team/llm:v2", dir.path + "/v1.safetensors", "--artifact-type",
                    "application/vnd.example.eval+json", "--json",
                ])
            #expect(attach.status == 0, "\(attach.output)")
            let report = try #require(try ClientProcessTests.json(attach.output)["digest"] as? String)
            try await withRegistry { _, b, portB in
                let src = "127.0.0.1:\(portA)/team/llm"
                let dst = "localhost:\(portB)/team/llm"
                let first = try await run(Self.depot, ["cp", src + ":v1", dst, "--json"])
                #expect(first.status == 0, "\(first.output)")
                let one = try ClientProcessTests.json(first.output)
                #expect(one["mode"] as? String == "chunked" && one["digest"] as? String == d[0].description)
                // v2 differs from v1 in its last two tensors (512 KiB): about that crosses.
                let second = try await run(Self.depot, ["cp", src + ":v2", dst, "--json", "--referrers"])
                #expect(second.status == 0, "\(second.output)")
                let two = try ClientProcessTests.json(second.output)
                let sent = try #require(two["bytes_sent"] as? Int)
                let lacked = 2 * (256 << 10)
                #expect(sent <= lacked + lacked / 10 + (16 << 10), "sent \(sent) for \(lacked) the destination lacked")
                #expect(sent >= lacked * 9 / 10, "random tensors must move: sent \(sent)")
                let repo = try RepositoryName("team/llm")
                #expect(try b.manifest(repo, .tag("v2")).digest == d[1], "the digest is kept")
                #expect(try b.lineage(of: d[1], up: true).first?.digest == d[0], "the lineage is kept")
                let discovered = try await run(Self.depot, ["discover", dst + ":v2", "--json"])
                #expect(discovered.output.contains(report), "the referrer was copied: \(discovered.output)")
                // Run again: nothing is missing, only requests and the manifest cross.
                let again = try await run(Self.depot, ["cp", src + ":v2", dst, "--json"])
                #expect(try #require(try ClientProcessTests.json(again.output)["bytes_sent"] as? Int) < 8 << 10, "\(again.output)")
                // By digest, to another repository and tag.
                let byDigest = try await run(Self.depot, ["cp", "\(src)@\(d[2])", "localhost:\(portB)/team/copy:latest", "--quiet"])
                #expect(byDigest.status == 0, "\(byDigest.output)")
                #expect(try b.manifest(try RepositoryName("team/copy"), .tag("latest")).digest == d[2])
                let pulled = try await run(Self.depot, ["pull", "localhost:\(portB)/team/copy:latest", "-o", dir.path + "/out", "--quiet"])
                #expect(pulled.status == 0, "\(pulled.output)")
                #expect(sameFile(dir.path + "/out/v3.safetensors", dir.path + "/v3.safetensors"))
                // Refusals: a missing source (3), a digest that is not the source's (2).
                let missing = try await run(Self.depot, ["cp", src + ":v9", dst])
                #expect(missing.status == 3, "\(missing.output)")
                let wrong = try await run(Self.depot, ["cp", "\(src)@\(d[0])", "\(dst)@\(d[1])"])
                #expect(wrong.status == 2, "\(wrong.output)")
                _ = a
            }
        }
    }

    @Test(.enabled(if: FileManager.default.isExecutableFile(atPath: "/usr/bin/docker-registry")))
    func throughAPlainOCIRegistryAndBackBitIdentical() async throws {
        let dir = TempDir("depot-cp-dist")
        let distribution = try await DistributionProcess(dir: dir.path, port: 21_000 + Int(getpid() % 9_000))
        defer { distribution.stop() }
        let port = distribution.port
        try await withRegistry { _, _, portA in
            let d = try await pushFamily(portA, dir.path)
            let out = try await run(Self.depot, ["cp", "127.0.0.1:\(portA)/team/llm:v2", "127.0.0.1:\(port)/mirror/llm", "--json"])
            #expect(out.status == 0, "\(out.output)")
            let summary = try ClientProcessTests.json(out.output)
            #expect(summary["mode"] as? String == "oci" && summary["digest"] as? String == d[1].description)
            let raw = try await run(
                "/usr/bin/curl",
                [
                    "-sf", "-H", "Accept: application/vnd.oci.image.manifest.v1+json", "-o", dir.path + "/manifest.json",
                    "http://127.0.0.1:\(port)/v2/mirror/llm/manifests/v2",
                ])
            #expect(raw.status == 0, "\(raw.output)")
            let bytes = try [UInt8](Data(contentsOf: URL(fileURLWithPath: dir.path + "/manifest.json")))
            #expect(Digest.of(bytes) == d[1], "distribution holds the same manifest bytes")
            try await withRegistry { _, b, portB in
                let back = try await run(Self.depot, ["cp", "127.0.0.1:\(port)/mirror/llm:v2", "localhost:\(portB)/team/llm", "--quiet"])
                #expect(back.status == 0, "\(back.output)")
                #expect(try b.manifest(try RepositoryName("team/llm"), .tag("v2")).digest == d[1])
                let pulled = try await run(Self.depot, ["pull", "localhost:\(portB)/team/llm:v2", "-o", dir.path + "/back", "--quiet"])
                #expect(pulled.status == 0, "\(pulled.output)")
                #expect(sameFile(dir.path + "/back/v2.safetensors", dir.path + "/v2.safetensors"))
            }
        }
    }

    /// Air-gapped transfer: Depot -> an OCI layout directory (skopeo reads the same manifest
    /// bytes) -> another Depot, where the second version sends about its changed bytes.
    @Test(.enabled(if: FileManager.default.isExecutableFile(atPath: "/usr/bin/skopeo")))
    func toAnOCILayoutAndBack() async throws {
        let dir = TempDir("depot-cp-layout")
        let layout = dir.path + "/usb/models"
        try await withRegistry { _, _, portA in
            let d = try await pushFamily(portA, dir.path)
            for v in ["v1", "v2"] {
                let out = try await run(Self.depot, ["cp", "127.0.0.1:\(portA)/team/llm:\(v)", "oci-layout:" + layout])
                #expect(out.status == 0, "\(out.output)")
            }
            let raw = try await run("/usr/bin/skopeo", ["inspect", "--raw", "oci:\(layout):v2"])
            #expect(raw.status == 0, "\(raw.output)")
            #expect(Digest.of(Array(raw.output.trimmingCharacters(in: .newlines).utf8)) == d[1], "skopeo reads the same manifest")
            try await withRegistry { _, b, portB in
                let first = try await run(Self.depot, ["cp", "oci-layout:\(layout):v1", "localhost:\(portB)/team/llm", "--json"])
                #expect(first.status == 0, "\(first.output)")
                let second = try await run(Self.depot, ["cp", "oci-layout:\(layout):v2", "localhost:\(portB)/team/llm", "--json"])
                #expect(second.status == 0, "\(second.output)")
                let sent = try #require(try ClientProcessTests.json(second.output)["bytes_sent"] as? Int)
                let lacked = 2 * (256 << 10)
                #expect(sent <= lacked + lacked / 10 + (16 << 10), "sent \(sent) for \(lacked) the destination lacked")
                let repo = try RepositoryName("team/llm")
                #expect(try b.manifest(repo, .tag("v1")).digest == d[0] && b.manifest(repo, .tag("v2")).digest == d[1])
                let pulled = try await run(Self.depot, ["pull", "localhost:\(portB)/team/llm:v2", "-o", dir.path + "/out", "--quiet"])
                #expect(pulled.status == 0 && sameFile(dir.path + "/out/v2.safetensors", dir.path + "/v2.safetensors"))
                // A layout without the tag, and a damaged blob, are refused with what to do.
                let none = try await run(Self.depot, ["cp", "oci-layout:\(layout):v9", "localhost:\(portB)/team/llm"])
                #expect(none.status == 1 && none.output.contains("no manifest named v9"), "\(none.output)")
                let blob = layout + "/blobs/sha256/" + d[0].hex
                try Data("tampered".utf8).write(to: URL(fileURLWithPath: blob))
                let damaged = try await run(Self.depot, ["cp", "oci-layout:\(layout):v1", "localhost:\(portB)/team/other"])
                #expect(damaged.status == 1 && damaged.output.contains("damaged"), "\(damaged.output)")
            }
        }
    }
}
