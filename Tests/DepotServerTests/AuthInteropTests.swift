import DepotAPI
import DepotCore
import DepotTestSupport
import Foundation
import HTTPTypes
import HummingbirdTesting
import Testing

/// Real OCI clients with credentials against Depot with authentication on: skopeo (`--creds`),
/// oras-py (`login`, then the token flow), containerd's `ctr --user`, and the `depot` client
/// (`depot login` to a docker config file). Each is also refused without credentials.
@Suite(.serialized) struct AuthInteropTests {
    @Test func skopeoPushesAndPullsWithCredentialsAndIsRefusedWithout() async throws {
        let work = TempDir("skopeo-auth")
        _ = try await makeImageLayout(work.path + "/layout")
        try await withAuthRegistry { s in
            let reg = "127.0.0.1:\(s.port)"
            let ci = try await s.token("ci", .robot, [GrantSpec(role: .writer, repositories: ["team/**"])])
            let anonymous = try await run(
                "/usr/bin/skopeo", ["copy", "--dest-tls-verify=false", "oci:\(work.path)/layout:v1", "docker://\(reg)/team/image:v1"])
            #expect(anonymous.status != 0, "an anonymous push: \(anonymous.output)")
            let push = try await run(
                "/usr/bin/skopeo",
                [
                    "copy", "--dest-tls-verify=false", "--dest-creds", "ci:\(ci)", "oci:\(work.path)/layout:v1",
                    "docker://\(reg)/team/image:v1",
                ])
            #expect(push.status == 0, "\(push.output)")
            let elsewhere = try await run(
                "/usr/bin/skopeo",
                [
                    "copy", "--dest-tls-verify=false", "--dest-creds", "ci:\(ci)", "oci:\(work.path)/layout:v1",
                    "docker://\(reg)/other/image:v1",
                ])
            #expect(elsewhere.status != 0, "a push outside the token's repositories: \(elsewhere.output)")
            let inspect = try await run(
                "/usr/bin/skopeo", ["inspect", "--tls-verify=false", "--creds", "ci:\(ci)", "--raw", "docker://\(reg)/team/image:v1"])
            #expect(inspect.status == 0 && inspect.output.contains("schemaVersion"), "\(inspect.output)")
            let noCreds = try await run("/usr/bin/skopeo", ["inspect", "--tls-verify=false", "--raw", "docker://\(reg)/team/image:v1"])
            #expect(noCreds.status != 0, "\(noCreds.output)")
        }
    }

    @Test func orasLogsInAndRoundTripsAModel() async throws {
        let work = TempDir("oras-auth")
        try await withAuthRegistry { s in
            let maintainer = try await s.token("oras", .robot, [GrantSpec(role: .maintainer, repositories: ["interop/**"])])
            let r = try await run(
                "/usr/bin/env",
                [
                    "ORAS_USER=oras", "ORAS_PASSWORD=\(maintainer)", "python3", repoRoot + "/Tests/interop/oras_roundtrip.py",
                    "127.0.0.1:\(s.port)",
                    work.path,
                ])
            #expect(r.status == 0, "\(r.output)")
            #expect(r.output.contains("anonymous push refused") && r.output.contains("pulled both byte-identical"), "\(r.output)")
        }
    }

    @Test func containerdPullsWithUserCredentials() async throws {
        let work = TempDir("ctr-auth")
        _ = try await makeImageLayout(work.path + "/layout")
        try """
        version = 2
        root = "\(work.path)/root"
        state = "\(work.path)/state"
        [grpc]
          address = "\(work.path)/containerd.sock"
        """.write(toFile: work.path + "/config.toml", atomically: true, encoding: .utf8)
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
        try await withAuthRegistry { s in
            let reg = "127.0.0.1:\(s.port)"
            let add = UserAddRequest(name: "ops", password: "ops-password-1", grants: [GrantSpec(role: .reader, repositories: ["test/**"])])
            #expect(
                try await s.client.req(.post, "/depot/v1/admin/users", headers: bearer(s.admin), body: try WireJSON.encode(add)).status.code
                    == 201)
            let push = try await run(
                "/usr/bin/skopeo",
                [
                    "copy", "--dest-tls-verify=false", "--dest-creds", "x:\(s.admin)", "oci:\(work.path)/layout:v1",
                    "docker://\(reg)/test/hello:v1",
                ])
            #expect(push.status == 0, "\(push.output)")
            let sock = work.path + "/containerd.sock"
            let anonymous = try await run("/usr/bin/ctr", ["--address", sock, "images", "pull", "--plain-http", "\(reg)/test/hello:v1"])
            #expect(anonymous.status != 0, "an anonymous pull: \(anonymous.output)")
            let pull = try await run(
                "/usr/bin/ctr",
                ["--address", sock, "images", "pull", "--plain-http", "--user", "ops:ops-password-1", "\(reg)/test/hello:v1"])
            #expect(pull.status == 0, "\(pull.output)")
            #expect(pull.output.contains("unpacking"))
        }
    }

    @Test func theDepotClientLogsInAndUsesTheStoredCredentials() async throws {
        let home = TempDir("depot-login")
        try await withAuthRegistry { s in
            let ci = try await s.token("ci", .robot, [GrantSpec(role: .writer, repositories: ["team/**"])])
            let url = "http://127.0.0.1:\(s.port)"
            let depot = repoRoot + "/.build/debug/depot"
            try "weights".write(toFile: home.path + "/w.bin", atomically: true, encoding: .utf8)
            func cli(_ args: [String]) async throws -> (status: Int32, output: String) {
                try await run(
                    "/usr/bin/env", ["HOME=\(home.path)", "DEPOT_TOKEN=", "DEPOT_REGISTRY=\(url)", "DOCKER_CONFIG=", depot] + args)
            }
            let refused = try await cli(["push", "team/m:v1", home.path + "/w.bin", "--quiet"])
            #expect(refused.status != 0 && refused.output.contains("depot login"), "\(refused.output)")
            let bad = try await run(
                "/bin/sh", ["-c", "echo wrong-password | HOME=\(home.path) DEPOT_TOKEN= \(depot) login \(url) -u ci --password-stdin"])
            #expect(bad.status != 0, "\(bad.output)")
            let login = try await run(
                "/bin/sh", ["-c", "echo '\(ci)' | HOME=\(home.path) DEPOT_TOKEN= \(depot) login \(url) -u ci --password-stdin"])
            #expect(login.status == 0 && login.output.contains("Login Succeeded"), "\(login.output)")
            let attrs = try FileManager.default.attributesOfItem(atPath: home.path + "/.docker/config.json")
            #expect((attrs[.posixPermissions] as? Int) == 0o600)
            #expect(try await cli(["push", "team/m:v1", home.path + "/w.bin", "--quiet"]).status == 0)
            let who = try await cli(["whoami"])
            #expect(who.output.contains("token:ci"), "\(who.output)")
            #expect(try await cli(["logout"]).output.contains("Removed"))
            #expect(try await cli(["push", "team/m:v2", home.path + "/w.bin", "--quiet"]).status != 0)
        }
    }
}
