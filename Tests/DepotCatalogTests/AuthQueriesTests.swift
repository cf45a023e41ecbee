import DepotAPI
import DepotCore
import Foundation
import Testing

@testable import DepotCatalog

@Suite struct AuthQueriesTests {
    func token(_ id: String, _ name: String, secret: String, expires: Int64? = nil) -> TokenRecord {
        TokenRecord(
            id: id, name: name, kind: .runner, secretHash: Array(secret.utf8).withUnsafeBytes { SHA256.hash($0) },
            grants: [GrantSpec(role: .runner, repositories: ["models/**"])], labels: ["gpu"], deployments: nil, createdAt: 1000,
            createdBy: "token:admin", expiresAt: expires)
    }

    @Test func tokensRoundTripAreFoundByHashAndNamesAreUniqueWhileUnrevoked() throws {
        let (db, dir) = try makeCatalog()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let t = token("tk_1", "gpu-1", secret: "s1")
        #expect(try db.write { try $0.insertToken(t) })
        #expect(try db.write { try $0.insertToken(token("tk_2", "gpu-1", secret: "s2")) } == false, "name taken")
        let found = try #require(try db.read { try $0.token(secretHash: t.secretHash) })
        #expect(found == t)
        #expect(found.isValid(at: 5000))
        let revoked = try #require(try db.write { try $0.revokeToken("gpu-1", at: 2000) })
        #expect(revoked.id == "tk_1" && revoked.revokedAt == 2000)
        #expect(try db.read { try $0.token(secretHash: t.secretHash) }?.isValid(at: 5000) == false)
        // Revoked: the name is free again; the old row stays for the audit journal.
        #expect(try db.write { try $0.insertToken(token("tk_2", "gpu-1", secret: "s2")) })
        #expect(try db.read { try $0.tokens() }.count == 2)
        #expect(try db.write { try $0.revokeToken("no-such", at: 3000) } == nil)
        #expect(token("tk_3", "x", secret: "s3", expires: 4000).isValid(at: 3999))
        #expect(!token("tk_3", "x", secret: "s3", expires: 4000).isValid(at: 4000))
    }

    @Test func usersAreReplacedByNameAndRemoved() throws {
        let (db, dir) = try makeCatalog()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        #expect(try db.read { try $0.hasCredentials() } == false)
        let u = UserRecord(name: "alice", passwordHash: "h1", grants: [GrantSpec(role: .reader)], createdAt: 1, createdBy: "x")
        try db.write { try $0.putUser(u) }
        var v = u
        v.passwordHash = "h2"
        try db.write { try $0.putUser(v) }
        #expect(try db.read { try $0.user(named: "alice") }?.passwordHash == "h2")
        #expect(try db.read { try $0.hasCredentials() })
        #expect(try db.write { try $0.removeUser(named: "alice") })
        #expect(try db.write { try $0.removeUser(named: "alice") } == false)
    }
}
