import DepotCore
import DepotServer
import DepotTestSupport
import Foundation
import Testing

/// `storage.backend` and `storage.s3` (packs in S3-compatible object storage).
@Suite struct ObjectStorageConfigTests {
    @Test func theS3SectionParsesAndReadsItsSecretsFromEnvironmentOrFiles() throws {
        let dir = TempDir("s3cfg")
        try "  secret-from-file\n".write(toFile: dir.path + "/secret", atomically: true, encoding: .utf8)
        let c = try ServerConfig.parse(
            """
            storage:
              backend: s3
              s3:
                endpoint: http://127.0.0.1:9000
                bucket: depot-packs
                region: eu-west-1
                prefix: prod
                access_key_env: MY_KEY
                secret_key_file: \(dir.path)/secret
                part_size_mib: 8
                cache_mib: 32
            """, path: "t.yaml")
        #expect(c.storageBackend == "s3")
        let s3 = try #require(c.s3)
        #expect(s3.prefix == "prod/")
        #expect(c.storeOptions.recordCacheBytes == 32 << 20)
        let settings = try s3.settings(environment: ["MY_KEY": "key-from-env"])
        #expect(settings.accessKey == "key-from-env" && settings.secretKey == "secret-from-file")
        #expect(settings.partSize == 8 << 20 && settings.region == "eu-west-1" && settings.bucket == "depot-packs")
        // A variable that is not set names itself and the alternative.
        #expect { try s3.settings(environment: [:]) } throws: { "\($0)".contains("MY_KEY") && "\($0)".contains("access_key_file") }
        // The local backend stays the default and needs no object store.
        #expect(try ServerConfig.parse("storage:\n  root: x\n", path: "t.yaml").makeObjectStore() == nil)
    }

    @Test func mistakesNameTheKey() {
        for (yaml, key) in [
            ("storage:\n  backend: s3\n", "storage.s3"),
            ("storage:\n  backend: gcs\n", "storage.backend"),
            ("storage:\n  s3:\n    bucket: b\n", "storage.s3.endpoint"),
            ("storage:\n  s3:\n    endpoint: http://h\n    bucket: b\n    part_size_mib: 1\n", "storage.s3.part_size_mib"),
            ("storage:\n  s3:\n    endpoint: http://h\n    bucket: b\n    acces_key_env: K\n", "storage.s3.acces_key_env"),
        ] {
            #expect { try ServerConfig.parse(yaml, path: "t.yaml") } throws: { "\($0)".contains(key) }
        }
    }
}
