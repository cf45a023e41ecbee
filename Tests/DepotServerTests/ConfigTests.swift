import DepotCore
import DepotServer
import Foundation
import Testing

@Suite struct ConfigTests {
    func load(_ yaml: String) throws -> ServerConfig {
        let dir = TempDir("cfg")
        let path = dir.path + "/depot.yaml"
        try yaml.write(toFile: path, atomically: true, encoding: .utf8)
        return try ServerConfig.load(path)
    }

    @Test func theShippedConfigLoadsAndEqualsTheDefaults() throws {
        let shipped = try ServerConfig.load(repoRoot + "/config/depot.yaml")
        #expect(shipped == ServerConfig())
    }

    @Test func settingsOverrideDefaults() throws {
        let c = try load(
            "server:\n  listen: 0.0.0.0:6000\nstorage:\n  root: /data\n  compression: off\n  flush_mib: 8\nuploads:\n  timeout_seconds: 60\n"
        )
        #expect(c.listenHost == "0.0.0.0")
        #expect(c.listenPort == 6000)
        #expect(c.storageRoot == "/data")
        #expect(c.storeOptions.compression.mode == .off)
        #expect(c.storeOptions.flushBytes == 8 << 20)
        #expect(c.uploads.idleTimeoutSeconds == 60)
    }

    @Test func badConfigsNameTheKey() throws {
        for (yaml, key) in [
            ("storage:\n  compresion: auto\n", "storage.compresion"),
            ("storage:\n  pack_target_mib: 0\n", "storage.pack_target_mib"),
            ("server:\n  listen: nowhere\n", "nowhere"),
            ("uploads:\n  timeout_seconds: fast\n", "timeout_seconds"),
            ("bogus: 1\n", "bogus"),
        ] {
            do {
                _ = try load(yaml)
                Issue.record("accepted \(yaml)")
            } catch let e as DepotError {
                #expect("\(e)".contains(key), "\(e)")
            }
        }
    }
}
