import DepotCore
import DepotTestSupport
import Foundation
import Hummingbird
import HummingbirdTesting
import Logging
import Testing

@testable import DepotServer

/// A test PKI made with the system's openssl: a CA, two server certificates for 127.0.0.1 and
/// localhost (serials 1001 and 1002, CN depot-server-1 and -2), a client certificate (CN
/// runner-7) and one from a CA the server does not trust.
struct TestPKI {
    let dir: String
    func path(_ name: String) -> String { "\(dir)/\(name)" }

    static func make(_ dir: String) async throws -> TestPKI {
        let script = """
            set -e
            cd '\(dir)'
            printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\\nextendedKeyUsage=serverAuth\\n' > server.ext
            printf 'extendedKeyUsage=clientAuth\\n' > client.ext
            ca() { openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout $1.key -out $1.crt -days 3 -subj "/CN=$2"; }
            leaf() {
                openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout $1.key -out $1.csr -subj "/CN=$2"
                openssl x509 -req -in $1.csr -CA $4.crt -CAkey $4.key -set_serial $3 -days 2 -extfile $5 -out $1.crt
            }
            ca ca 'Depot Test CA'
            ca otherca 'Untrusted CA'
            leaf server1 depot-server-1 1001 ca server.ext
            leaf server2 depot-server-2 1002 ca server.ext
            leaf client runner-7 2001 ca client.ext
            leaf stranger stranger 3001 otherca client.ext
            mkdir certs && cp ca.crt certs/ca.crt
            """
        let r = try await run("/bin/sh", ["-c", script])
        try #require(r.status == 0, "openssl: \(r.output)")
        return TestPKI(dir: dir)
    }
}

/// `depot serve` with `server.tls` as a child process (SIGHUP must reach a real process), its
/// output in a log file; stopped by PID.
final class TLSServerProcess {
    let process = Process()
    let port = freePort()
    let logPath: String

    /// `tls` is the body of the `server.tls` mapping, one `key: value` a line.
    init(dir: String, tls: [String: String], environment: [String: String] = [:], pipelines: Bool = false) throws {
        let config = "\(dir)/depot-\(port).yaml"
        logPath = "\(dir)/server-\(port).log"
        var yaml = "server:\n  tls:\n"
        for (key, value) in tls.sorted(by: { $0.key < $1.key }) { yaml += "    \(key): '\(value)'\n" }
        if !pipelines { yaml += "pipelines:\n  directory: ''\n" }
        try yaml.write(toFile: config, atomically: true, encoding: .utf8)
        process.executableURL = URL(fileURLWithPath: repoRoot + "/.build/debug/depot")
        process.arguments = [
            "serve", "--storage", "\(dir)/storage-\(port)", "--listen", "127.0.0.1:\(port)", "--config", config, "--log-level", "info",
        ]
        process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
        FileManager.default.createFile(atPath: logPath, contents: nil)
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: logPath))
        process.standardOutput = handle
        process.standardError = handle
        try process.run()
    }

    var url: String { "https://127.0.0.1:\(port)" }
    var log: String { (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? "" }

    /// Waits until the server logs that it listens (false if it exits first).
    func waitListening() async throws -> Bool {
        for _ in 0..<300 {
            if log.contains("depot listening on") { return true }
            if !process.isRunning { return false }
            try await Task.sleep(for: .milliseconds(100))
        }
        return false
    }

    /// Waits until `text` occurs `count` times in the log.
    func waitForLog(_ text: String, count: Int) async throws -> Bool {
        for _ in 0..<100 {
            if log.components(separatedBy: text).count - 1 >= count { return true }
            try await Task.sleep(for: .milliseconds(100))
        }
        return false
    }

    func stop() {
        if process.isRunning { kill(process.processIdentifier, SIGTERM) }
        process.waitUntilExit()
    }
}

@Suite("TLS", .serialized)
struct TLSTests {
    static var depot: String { repoRoot + "/.build/debug/depot" }

    /// Serial and subject of the certificate a new TLS connection to `port` is served.
    static func servedCertificate(_ port: Int, _ pki: TestPKI) async throws -> String {
        let r = try await run(
            "/bin/sh",
            [
                "-c",
                "openssl s_client -connect 127.0.0.1:\(port) -CAfile '\(pki.path("ca.crt"))' </dev/null 2>/dev/null"
                    + " | openssl x509 -noout -serial -subject",
            ], timeout: 20)
        return r.output
    }

    @Test func theDepotClientPushesAndPullsOverHTTPSWithTheCAFileAndIsRefusedWithoutIt() async throws {
        let dir = TempDir("depot-tls")
        let pki = try await TestPKI.make(dir.path)
        let server = try TLSServerProcess(dir: dir.path, tls: ["cert_file": pki.path("server1.crt"), "key_file": pki.path("server1.key")])
        defer { server.stop() }
        #expect(try await server.waitListening(), "\(server.log)")
        #expect(server.log.contains("CN=depot-server-1 serial 03e9"), "the start-up log names the certificate: \(server.log)")

        try FileManager.default.createDirectory(atPath: dir.path + "/model", withIntermediateDirectories: true)
        try Data(randomBytes(3 << 20, seed: 7)).write(to: URL(fileURLWithPath: dir.path + "/model/weights.bin"))
        try Data("{\"layers\":2}".utf8).write(to: URL(fileURLWithPath: dir.path + "/model/config.json"))
        let push = try await run(
            Self.depot, ["push", "tls/model:v1", dir.path + "/model", "--registry", server.url, "--ca-file", pki.path("ca.crt"), "--quiet"])
        #expect(push.status == 0, "\(push.output)")
        // The CA from the environment, as runners and triton-sync get it.
        let pull = try await run(
            "/usr/bin/env",
            [
                "DEPOT_CA_FILE=\(pki.path("ca.crt"))", "DEPOT_CACHE=\(dir.path)/cache", Self.depot, "pull", "tls/model:v1", "-o",
                dir.path + "/out", "--registry", server.url,
            ])
        #expect(pull.status == 0, "\(pull.output)")
        for name in ["model/weights.bin", "model/config.json"] {
            let original = dir.path + "/" + name
            let pulled = [dir.path + "/out/" + name, dir.path + "/out/" + String(name.dropFirst("model/".count))]
            #expect(pulled.contains { FileManager.default.contentsEqual(atPath: original, andPath: $0) }, "\(name) pulled intact")
        }

        // Without the CA: refused at the handshake, once (no retries), with the fix in the message.
        let refused = try await run(
            "/usr/bin/env",
            [
                "-u", "DEPOT_CA_FILE", "DEPOT_CACHE=\(dir.path)/cache2", Self.depot, "pull", "tls/model:v1", "-o", dir.path + "/out2",
                "--registry", server.url,
            ])
        #expect(refused.status != 0)
        // "not trusted" is ClientTLSOptions.explain's wording: the same classification makes
        // RegistryConnection.isTransient false, so the error is not retried (no timing asserted:
        // under a loaded CI run one attempt alone can take seconds).
        #expect(refused.output.contains("not trusted") && refused.output.contains("--ca-file"), "\(refused.output)")
        #expect(!FileManager.default.fileExists(atPath: dir.path + "/out2/weights.bin"))

        // A CA file that is not one is an error naming it, before any connection.
        let badCA = try await run(
            Self.depot, ["pull", "tls/model:v1", "-o", dir.path + "/out3", "--registry", server.url, "--ca-file", pki.path("server.ext")])
        #expect(badCA.status != 0)
        #expect(badCA.output.contains(pki.path("server.ext")), "\(badCA.output)")
        #expect(server.process.isRunning)
    }

    @Test func sighupServesANewCertificateToNewConnectionsAndABadReplacementKeepsTheOld() async throws {
        let dir = TempDir("depot-tls-reload")
        let pki = try await TestPKI.make(dir.path)
        let cert = dir.path + "/live.crt"
        let key = dir.path + "/live.key"
        func install(_ certFrom: String, _ keyFrom: String) throws {
            for (from, to) in [(certFrom, cert), (keyFrom, key)] {
                try? FileManager.default.removeItem(atPath: to)
                try FileManager.default.copyItem(atPath: pki.path(from), toPath: to)
            }
        }
        try install("server1.crt", "server1.key")
        let server = try TLSServerProcess(dir: dir.path, tls: ["cert_file": cert, "key_file": key])
        defer { server.stop() }
        #expect(try await server.waitListening(), "\(server.log)")
        let pid = server.process.processIdentifier
        let first = try await Self.servedCertificate(server.port, pki)
        #expect(first.contains("serial=03E9") && first.contains("depot-server-1"), "\(first)")

        // A new certificate and key, then SIGHUP: new connections get it.
        try install("server2.crt", "server2.key")
        kill(pid, SIGHUP)
        #expect(try await server.waitForLog("tls: reloaded", count: 1), "\(server.log)")
        let second = try await Self.servedCertificate(server.port, pki)
        #expect(second.contains("serial=03EA") && second.contains("depot-server-2"), "\(second)")

        // Bad replacements: a truncated certificate, then a key of another certificate. Each reload
        // fails, is logged, and the previous certificate keeps serving on the same listener.
        try Data("-----BEGIN CERTIFICATE-----\nMIIB\n".utf8).write(to: URL(fileURLWithPath: cert))
        kill(pid, SIGHUP)
        #expect(try await server.waitForLog("tls: reload failed", count: 1), "\(server.log)")
        #expect(server.log.contains(cert), "the error names the file: \(server.log)")
        try install("server1.crt", "server2.key")
        kill(pid, SIGHUP)
        #expect(try await server.waitForLog("tls: reload failed", count: 2), "\(server.log)")
        #expect(server.log.contains("does not belong to the certificate"), "\(server.log)")
        let kept = try await Self.servedCertificate(server.port, pki)
        #expect(kept.contains("serial=03EA") && kept.contains("depot-server-2"), "\(kept)")
        #expect(server.process.isRunning && server.process.processIdentifier == pid)
        let health = try await run("/usr/bin/curl", ["-sf", "--cacert", pki.path("ca.crt"), server.url + "/healthz"], timeout: 20)
        #expect(health.status == 0, "\(health.output)")
    }

    @Test func clientAuthRequireRefusesAClientWithoutAValidCertificateAndOptionalOnlyABadOne() async throws {
        let dir = TempDir("depot-mtls")
        let pki = try await TestPKI.make(dir.path)
        let base = ["cert_file": pki.path("server1.crt"), "key_file": pki.path("server1.key"), "client_ca_file": pki.path("ca.crt")]
        func curl(_ server: TLSServerProcess, _ certificate: String?) async throws -> Int32 {
            var args = ["-s", "-o", "/dev/null", "-w", "%{http_code}", "--fail", "--cacert", pki.path("ca.crt")]
            if let certificate { args += ["--cert", pki.path(certificate + ".crt"), "--key", pki.path(certificate + ".key")] }
            return try await run("/usr/bin/curl", args + [server.url + "/v2/"], timeout: 20).status
        }

        let require = try TLSServerProcess(dir: dir.path, tls: base.merging(["client_auth": "require"]) { $1 })
        defer { require.stop() }
        #expect(try await require.waitListening(), "\(require.log)")
        #expect(try await curl(require, nil) != 0, "no client certificate: refused")
        #expect(try await curl(require, "stranger") != 0, "a certificate from another CA: refused")
        #expect(try await curl(require, "client") == 0, "a certificate from the client CA: served")
        // The depot client presents one from the environment.
        let ls = try await run(
            "/usr/bin/env",
            [
                "DEPOT_CA_FILE=\(pki.path("ca.crt"))", "DEPOT_CLIENT_CERT=\(pki.path("client.crt"))",
                "DEPOT_CLIENT_KEY=\(pki.path("client.key"))", Self.depot, "ls", "--registry", require.url,
            ])
        #expect(ls.status == 0, "\(ls.output)")
        require.stop()

        let optional = try TLSServerProcess(dir: dir.path, tls: base.merging(["client_auth": "optional"]) { $1 })
        defer { optional.stop() }
        #expect(try await optional.waitListening(), "\(optional.log)")
        #expect(try await curl(optional, nil) == 0, "no client certificate: allowed")
        #expect(try await curl(optional, "client") == 0)
        #expect(try await curl(optional, "stranger") != 0, "a certificate that fails verification: refused")
    }

    @Test func requireWithTheEmbeddedRunnerNeedsItsClientCertificate() async throws {
        let dir = TempDir("depot-mtls-runner")
        let pki = try await TestPKI.make(dir.path)
        let tls = [
            "cert_file": pki.path("server1.crt"), "key_file": pki.path("server1.key"), "client_ca_file": pki.path("ca.crt"),
            "client_auth": "require",
        ]
        // config/pipelines has a pipeline, so the embedded runner starts and connects to the server.
        let refused = try TLSServerProcess(dir: dir.path, tls: tls, pipelines: true)
        defer { refused.stop() }
        refused.process.waitUntilExit()
        #expect(refused.process.terminationStatus != 0)
        #expect(refused.log.contains("DEPOT_CLIENT_CERT"), "\(refused.log)")

        let started = try TLSServerProcess(
            dir: dir.path, tls: tls,
            environment: ["DEPOT_CLIENT_CERT": pki.path("client.crt"), "DEPOT_CLIENT_KEY": pki.path("client.key")], pipelines: true)
        defer { started.stop() }
        #expect(try await started.waitListening(), "\(started.log)")
        // The runner leases over https with its certificate: its lease requests reach the route table.
        var leased = false
        for _ in 0..<50 where !leased {
            let metrics = try await run(
                "/usr/bin/curl",
                [
                    "-sf", "--cacert", pki.path("ca.crt"), "--cert", pki.path("client.crt"), "--key", pki.path("client.key"),
                    started.url + "/metrics",
                ],
                timeout: 20)
            leased = metrics.output.split(separator: "\n").contains { $0.contains("route=\"jobLease\"") && $0.contains("status=\"2") }
            if !leased { try await Task.sleep(for: .milliseconds(200)) }
        }
        #expect(leased, "\(started.log)")
    }

    @Test func skopeoPushesAnImageOverHTTPSTrustingTheCA() async throws {
        let dir = TempDir("depot-tls-skopeo")
        let pki = try await TestPKI.make(dir.path)
        let manifest = try await makeImageLayout(dir.path + "/layout")
        let server = try TLSServerProcess(dir: dir.path, tls: ["cert_file": pki.path("server1.crt"), "key_file": pki.path("server1.key")])
        defer { server.stop() }
        #expect(try await server.waitListening(), "\(server.log)")
        let reg = "127.0.0.1:\(server.port)"
        let push = try await run(
            "/usr/bin/skopeo", ["copy", "--dest-cert-dir", pki.path("certs"), "oci:\(dir.path)/layout:v1", "docker://\(reg)/tls/image:v1"])
        #expect(push.status == 0, "\(push.output)")
        let raw = try await run("/usr/bin/skopeo", ["inspect", "--cert-dir", pki.path("certs"), "--raw", "docker://\(reg)/tls/image:v1"])
        #expect(Digest.of(Array(raw.output.utf8)) == manifest, "\(raw.output)")
        // Without the CA skopeo verifies against the system's roots and is refused.
        let untrusted = try await run("/usr/bin/skopeo", ["inspect", "--raw", "docker://\(reg)/tls/image:v1"])
        #expect(untrusted.status != 0)
        #expect(untrusted.output.contains("certificate"), "\(untrusted.output)")
    }

    @Test func badCertificateFilesStopStartUpNamingTheFile() async throws {
        let dir = TempDir("depot-tls-bad")
        let pki = try await TestPKI.make(dir.path)
        let logger = Logger(label: "test")
        func problem(_ settings: TLSSettings) -> String {
            do {
                _ = try TLSCertificateStore(settings: settings, logger: logger)
                return "accepted"
            } catch { return "\(error)" }
        }
        let missing = problem(TLSSettings(certFile: dir.path + "/nope.crt", keyFile: pki.path("server1.key")))
        #expect(
            missing.contains("server.tls.cert_file") && missing.contains("nope.crt") && missing.contains("does not exist"), "\(missing)")
        let notPEM = problem(TLSSettings(certFile: pki.path("server.ext"), keyFile: pki.path("server1.key")))
        #expect(notPEM.contains("server.ext") && notPEM.contains("not a PEM certificate"), "\(notPEM)")
        let keyIsCert = problem(TLSSettings(certFile: pki.path("server1.crt"), keyFile: pki.path("server1.crt")))
        #expect(keyIsCert.contains("server.tls.key_file") && keyIsCert.contains("not a PEM private key"), "\(keyIsCert)")
        let wrongKey = problem(TLSSettings(certFile: pki.path("server1.crt"), keyFile: pki.path("server2.key")))
        #expect(wrongKey.contains("does not belong to the certificate"), "\(wrongKey)")
        let badCA = problem(
            TLSSettings(
                certFile: pki.path("server1.crt"), keyFile: pki.path("server1.key"), clientCAFile: pki.path("client.ext"),
                clientAuth: .require))
        #expect(badCA.contains("server.tls.client_ca_file"), "\(badCA)")
        #expect(problem(TLSSettings(certFile: pki.path("server1.crt"), keyFile: pki.path("server1.key"))) == "accepted")

        // The command exits 1 with the message, no crash and no listener.
        let server = try TLSServerProcess(dir: dir.path, tls: ["cert_file": pki.path("server1.crt"), "key_file": pki.path("server2.key")])
        server.process.waitUntilExit()
        #expect(server.process.terminationStatus == 1, "\(server.log)")
        #expect(server.log.contains("does not belong to the certificate") && server.log.contains(pki.path("server2.key")), "\(server.log)")
    }

    @Test func tlsSettingsParseAndBadOnesNameTheKey() throws {
        let good = try ServerConfig.parse(
            """
            server:
              tls:
                cert_file: a.crt
                key_file: a.key
                client_ca_file: ca.crt
                client_auth: optional
            """, path: "t.yaml")
        #expect(good.tls == TLSSettings(certFile: "a.crt", keyFile: "a.key", clientCAFile: "ca.crt", clientAuth: .optional))
        #expect(try ServerConfig.parse("server:\n  listen: 127.0.0.1:5000\n", path: "t.yaml").tls == nil)
        // The commented-out example in the shipped config/depot.yaml is valid once uncommented.
        let shipped = try String(contentsOfFile: repoRoot + "/config/depot.yaml", encoding: .utf8).split(separator: "\n")
        let start = try #require(shipped.firstIndex(of: "  # tls:"))
        let example = shipped[(start + 1)...].prefix { $0.hasPrefix("  #   ") }.filter { !$0.hasPrefix("  #   #") }
        let uncommented = try ServerConfig.parse(
            "server:\n  tls:\n" + example.map { "    " + $0.dropFirst("  #   ".count) }.joined(separator: "\n"), path: "example")
        #expect(
            uncommented.tls
                == TLSSettings(
                    certFile: "/etc/depot/tls/server.crt", keyFile: "/etc/depot/tls/server.key",
                    clientCAFile: "/etc/depot/tls/clients-ca.crt", clientAuth: .require))
        let cases: [(String, String)] = [
            ("server:\n  tls:\n    cert_file: a.crt\n    key_file: a.key\n    certfile: b\n", "server.tls.certfile is not a known setting"),
            ("server:\n  tls:\n    key_file: a.key\n", "server.tls.cert_file is required"),
            ("server:\n  tls:\n    cert_file: a.crt\n", "server.tls.key_file is required"),
            ("server:\n  tls:\n    cert_file: a.crt\n    key_file: 5\n", "server.tls.key_file must be a file path"),
            (
                "server:\n  tls:\n    cert_file: a.crt\n    key_file: a.key\n    client_auth: always\n",
                "server.tls.client_auth must be none, optional or require"
            ),
            ("server:\n  tls:\n    cert_file: a.crt\n    key_file: a.key\n    client_auth: require\n", "needs server.tls.client_ca_file"),
            (
                "server:\n  tls:\n    cert_file: a.crt\n    key_file: a.key\n    client_ca_file: ca.crt\n",
                "client_ca_file is set but client_auth is none"
            ),
            ("server:\n  tls: yes\n", "server.tls must be a mapping"),
        ]
        for (yaml, message) in cases {
            #expect(throws: DepotError.self) { try ServerConfig.parse(yaml, path: "t.yaml") }
            do { _ = try ServerConfig.parse(yaml, path: "t.yaml") } catch { #expect("\(error)".contains(message), "\(error)") }
        }
    }

    /// The verified client certificate's subject reaches the request context (for authorization).
    @Test func theRequestContextCarriesTheClientCertificateCommonName() async throws {
        let dir = TempDir("depot-tls-cn")
        let pki = try await TestPKI.make(dir.path)
        let store = try TLSCertificateStore(
            settings: TLSSettings(
                certFile: pki.path("server1.crt"), keyFile: pki.path("server1.key"), clientCAFile: pki.path("ca.crt"), clientAuth: .optional
            ),
            logger: Logger(label: "test"))
        let router = Router(context: DepotRequestContext.self)
        router.get("/who") { _, context in await context.clientCertificateCommonName() ?? "anonymous" }
        let app = Application(
            router: router, server: TLSCertificateStore.serverBuilder(store, http1: .init()),
            configuration: .init(address: .hostname("127.0.0.1", port: 0)))
        try await app.test(.live) { client in
            let port = try #require(client.port)
            let url = "https://127.0.0.1:\(port)/who"
            let named = try await run(
                "/usr/bin/curl",
                ["-sf", "--cacert", pki.path("ca.crt"), "--cert", pki.path("client.crt"), "--key", pki.path("client.key"), url],
                timeout: 20)
            #expect(named.output == "runner-7", "\(named.output)")
            let anonymous = try await run("/usr/bin/curl", ["-sf", "--cacert", pki.path("ca.crt"), url], timeout: 20)
            #expect(anonymous.output == "anonymous", "\(anonymous.output)")
        }
    }
}
