import DepotAPI
import DepotAuth
import DepotCore
import Foundation
import Testing

@Suite struct RepositoryGlobTests {
    @Test func starStaysInOneComponentAndDoubleStarCrossesThem() throws {
        let one = try RepositoryGlob("models/*")
        #expect(one.matches("models/resnet"))
        #expect(!one.matches("models/a/b"))
        #expect(!one.matches("models"))
        #expect(!one.matches("modelsx/a"))
        let tree = try RepositoryGlob("models/**")
        #expect(tree.matches("models"))
        #expect(tree.matches("models/a/b/c"))
        #expect(!tree.matches("modelsx"))
        #expect(!tree.matches("other/models/a"))
        let mid = try RepositoryGlob("team-*/prod/**")
        #expect(mid.matches("team-a/prod/x/y"))
        #expect(!mid.matches("team-a/dev/x"))
        #expect(!mid.matches("team/a/prod/x"))
        #expect(try RepositoryGlob("**").matches("anything/at/all"))
        #expect(try RepositoryGlob("a/b").matches("a/b"))
        #expect(!(try RepositoryGlob("a/b")).matches("a/b/c"))
    }

    @Test func badPatternsAreRefusedWithAReason() {
        for bad in ["", "Models/*", "a b", "a/***", String(repeating: "a", count: 256), "a?b"] {
            #expect(throws: DepotError.self, "\(bad)") { try RepositoryGlob(bad) }
        }
    }

    @Test func hostilePatternsMatchInBoundedTime() throws {
        // Many stars against a long near-miss: quadratic at worst, never exponential.
        let g = try RepositoryGlob(String(repeating: "*a", count: 100) + "b")
        let name = String(repeating: "a", count: 255)
        #expect(!g.matches(name))
    }
}

@Suite struct AuthorizerTests {
    let policy = AuthPolicy(anonymousPull: [try! RepositoryGlob("public/**")])

    func principal(_ role: RoleName, _ repos: [String]) throws -> Principal {
        Principal(kind: .user, name: "u", grants: [Grant(role: role, repositories: try repos.map(RepositoryGlob.init))])
    }

    @Test func denyByDefault() {
        for action in Action.allCases where !action.isOpen {
            let d = Authorizer.decide(.anonymous, AccessRequest(action, repository: "models/x"), policy: policy)
            #expect(d == .authenticate, "\(action)")
        }
        let nobody = Principal(kind: .user, name: "nobody")
        for action in Action.allCases where !action.isOpen && action != .authenticated {
            guard case .deny = Authorizer.decide(nobody, AccessRequest(action, repository: "models/x"), policy: policy) else {
                Issue.record("\(action) allowed without grants")
                continue
            }
        }
    }

    @Test func anonymousPullOnlyWhereThePolicyOpensIt() {
        #expect(Authorizer.decide(.anonymous, AccessRequest(.pull, repository: "public/a"), policy: policy) == .allow)
        #expect(Authorizer.decide(.anonymous, AccessRequest(.push, repository: "public/a"), policy: policy) == .authenticate)
        #expect(Authorizer.decide(.anonymous, AccessRequest(.pull, repository: "private/a"), policy: policy) == .authenticate)
    }

    @Test func rolesGiveTheirActionsOnlyOnTheirRepositories() throws {
        let writer = try principal(.writer, ["models/**"])
        #expect(Authorizer.decide(writer, AccessRequest(.push, repository: "models/a"), policy: policy) == .allow)
        #expect(Authorizer.decide(writer, AccessRequest(.tag, repository: "models/a"), policy: policy) == .allow)
        #expect(Authorizer.decide(writer, AccessRequest(.push, repository: "other/a"), policy: policy) != .allow)
        #expect(Authorizer.decide(writer, AccessRequest(.delete, repository: "models/a"), policy: policy) != .allow)
        #expect(Authorizer.decide(writer, AccessRequest(.aliasMove, repository: "models/a"), policy: policy) != .allow)
        let deployer = try principal(.deployer, ["models/**"])
        #expect(Authorizer.decide(deployer, AccessRequest(.rollout, repository: "models/a"), policy: policy) == .allow)
        #expect(Authorizer.decide(deployer, AccessRequest(.push, repository: "models/a"), policy: policy) != .allow)
    }

    @Test func routesWithoutARepositoryNeedTheActionEverywhere() throws {
        let scoped = try principal(.maintainer, ["models/**"])
        #expect(Authorizer.decide(scoped, AccessRequest(.auditRead), policy: policy) != .allow)
        let global = try principal(.auditor, ["**"])
        #expect(Authorizer.decide(global, AccessRequest(.auditRead), policy: policy) == .allow)
        // The catalog is filtered per repository, so any grant of it suffices.
        #expect(Authorizer.decide(scoped, AccessRequest(.catalog), policy: policy) == .allow)
    }

    @Test func nodeTokensReportOnlyForTheirDeployments() throws {
        let node = Principal(
            kind: .token, name: "n1", tokenKind: .node, grants: [Grant(role: .node, repositories: [try RepositoryGlob("**")])],
            deployments: [try RepositoryGlob("models/a/production")])
        #expect(
            Authorizer.decide(node, AccessRequest(.nodesReport, repository: "models/a", deployment: "models/a/production"), policy: policy)
                == .allow)
        #expect(
            Authorizer.decide(node, AccessRequest(.nodesReport, repository: "models/b", deployment: "models/b/production"), policy: policy)
                != .allow)
    }

    @Test func bearerTokensCarryOnlyTheirAccessClaim() throws {
        // An admin's identity, but the token was issued for pull on one repository.
        let t = Principal(
            kind: .user, name: "root", grants: [Grant(role: .admin, repositories: [try RepositoryGlob("**")])],
            access: [AccessEntry(type: "repository", name: "models/a", actions: ["pull"])])
        #expect(Authorizer.decide(t, AccessRequest(.pull, repository: "models/a"), policy: policy) == .allow)
        #expect(Authorizer.decide(t, AccessRequest(.push, repository: "models/a"), policy: policy) != .allow)
        #expect(Authorizer.decide(t, AccessRequest(.pull, repository: "models/b"), policy: policy) != .allow)
        #expect(Authorizer.decide(t, AccessRequest(.admin), policy: policy) != .allow)
    }

    @Test func tokenRequestsAreIntersectedWithGrantsAndNeverCarryDepotActions() throws {
        let writer = try principal(.writer, ["models/**"])
        #expect(Authorizer.grantable(writer, repository: "models/a", wanted: ["pull", "push"], policy: policy) == ["pull", "push", "tag"])
        #expect(Authorizer.grantable(writer, repository: "models/a", wanted: ["delete"], policy: policy) == [])
        #expect(Authorizer.grantable(writer, repository: "other/a", wanted: ["pull", "push"], policy: policy) == [])
        let admin = try principal(.admin, ["**"])
        #expect(
            Authorizer.grantable(admin, repository: "m/a", wanted: ["alias.move", "rollout", "*"], policy: policy) == [
                "pull", "push", "tag", "delete",
            ])
        #expect(Authorizer.grantable(.anonymous, repository: "public/x", wanted: ["pull", "push"], policy: policy) == ["pull"])
    }
}

@Suite struct CredentialTests {
    @Test func headersParseOrFailClearly() throws {
        #expect(try Credential.parse(nil) == .none)
        #expect(try Credential.parse("Bearer abc.def") == .bearer("abc.def"))
        let basic = "Basic " + Data("alice:pa:ss".utf8).base64EncodedString()
        #expect(try Credential.parse(basic) == .basic(user: "alice", password: "pa:ss"))
        for bad in [
            "Bearer", "Digest x", "Basic !!!", "Basic " + Data("nocolon".utf8).base64EncodedString(), "Bearer a\u{7}b",
            "Bearer " + String(repeating: "a", count: 9000),
        ] {
            #expect(throws: DepotError.self, "\(bad.prefix(20))") { try Credential.parse(bad) }
        }
    }

    @Test func passwordsHashWithASaltAndVerifyOnlyTheRightPassword() throws {
        let a = try PasswordHash.make("correct horse", iterations: 1000)
        let b = try PasswordHash.make("correct horse", iterations: 1000)
        #expect(a != b, "salted")
        #expect(PasswordHash.verify("correct horse", against: a))
        #expect(!PasswordHash.verify("correct horsf", against: a))
        #expect(!PasswordHash.verify("correct horse", against: "pbkdf2-sha256$1000$garbage"))
        #expect(!PasswordHash.verify("x", against: ""))
        #expect(throws: DepotError.self) { try PasswordHash.make("short") }
    }

    @Test func tokenSecretsAreRandomAndRecognisable() {
        let a = TokenSecret.generate()
        let b = TokenSecret.generate()
        #expect(a != b)
        #expect(TokenSecret.looksLikeSecret(a))
        #expect(!TokenSecret.looksLikeSecret("dpt_short"))
        #expect(TokenSecret.hash(a) != TokenSecret.hash(b))
    }
}
