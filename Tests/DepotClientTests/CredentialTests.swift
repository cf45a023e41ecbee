import DepotAPI
import DepotTestSupport
import Foundation
import Testing

@testable import DepotClient

/// The docker config file `depot login` shares with docker, skopeo and oras, and the parsing of
/// Bearer challenges.
@Suite struct DockerConfigTests {
    @Test func storeReadEraseKeepOtherKeysAndThePrivateMode() throws {
        let dir = TempDir("docker-config")
        let path = dir.path + "/sub/config.json"
        try FileManager.default.createDirectory(atPath: dir.path + "/sub", withIntermediateDirectories: true)
        try #"{"auths":{"other.example:443":{"auth":"eDp5"}},"proxies":{"default":{}}}"#.write(
            toFile: path, atomically: true, encoding: .utf8)
        let config = DockerConfig(path: path)
        #expect(try config.credential(for: "127.0.0.1:5000") == nil)
        try config.store(host: "127.0.0.1:5000", user: "alice", password: "p:w d")
        #expect(try config.credential(for: "127.0.0.1:5000") == .basic(user: "alice", password: "p:w d"))
        #expect(try config.credential(for: "other.example:443") == .basic(user: "x", password: "y"))
        let text = try String(contentsOfFile: path, encoding: .utf8)
        #expect(text.contains("proxies"), "other keys kept")
        #expect((try FileManager.default.attributesOfItem(atPath: path)[.posixPermissions] as? Int) == 0o600)
        #expect(try config.erase(host: "127.0.0.1:5000"))
        #expect(try config.erase(host: "127.0.0.1:5000") == false)
        #expect(try config.credential(for: "127.0.0.1:5000") == nil)
        #expect(try config.credential(for: "other.example:443") != nil)
    }

    @Test func aBrokenConfigFileIsAClearErrorNotACrash() throws {
        let dir = TempDir("docker-config-bad")
        let path = dir.path + "/config.json"
        try "{not json".write(toFile: path, atomically: true, encoding: .utf8)
        #expect(throws: ClientError.self) { try DockerConfig(path: path).credential(for: "h") }
        // A helper name that is not a plain name is never run.
        try #"{"credsStore":"../../bin/sh"}"#.write(toFile: path, atomically: true, encoding: .utf8)
        #expect(throws: ClientError.self) { try DockerConfig(path: path).credential(for: "h") }
    }

    @Test func registryKeysAreHostAndPort() {
        #expect(DockerConfig.key(forRegistry: "https://depot.example.com:5000/") == "depot.example.com:5000")
        #expect(DockerConfig.key(forRegistry: "http://127.0.0.1:5000") == "127.0.0.1:5000")
        #expect(DockerConfig.key(forRegistry: "depot.example.com") == "depot.example.com")
    }
}

@Suite struct BearerChallengeTests {
    @Test func parsesTheDistributionChallenge() throws {
        let c = try #require(
            BearerChallenge(#"Bearer realm="https://auth.example.com/token",service="registry",scope="repository:a/b:pull,push""#))
        #expect(c.realm == "https://auth.example.com/token" && c.service == "registry" && c.scope == "repository:a/b:pull,push")
        #expect(BearerChallenge(#"Basic realm="x""#) == nil)
        #expect(BearerChallenge(#"Bearer service="x""#) == nil, "no realm")
        #expect(BearerChallenge(#"Bearer realm="unterminated"#) == nil)
        let many = "Bearer " + (0..<40).map { "k\($0)=\"v\"" }.joined(separator: ",") + #",realm="x""#
        #expect(BearerChallenge(many) == nil, "bounded")
    }

    @Test func originsCompareSchemeHostAndPort() {
        #expect(RegistryConnection.origin("http://127.0.0.1:5000/v2/") == RegistryConnection.origin("http://127.0.0.1:5000"))
        #expect(RegistryConnection.origin("https://a.example/x") == RegistryConnection.origin("https://a.example:443"))
        #expect(RegistryConnection.origin("https://storage.example/blob") != RegistryConnection.origin("https://a.example"))
        #expect(RegistryConnection.origin("http://a.example") != RegistryConnection.origin("https://a.example"))
    }
}
