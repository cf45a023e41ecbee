import ArgumentParser
import DepotAPI
import DepotClient
import DepotCore
import Foundation

/// `depot login`: checks credentials against the registry and stores them where docker,
/// skopeo and oras find them too.
struct Login: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract:
            "Log in to a registry: check the credentials and store them (~/.docker/config.json, mode 0600, or its credential helper).",
        discussion: "A robot token logs in with any user name and the token as the password.")

    @Argument(help: "Registry host[:port] or URL (default: $DEPOT_REGISTRY, else 127.0.0.1:5000).") var server: String?
    @Option(name: .shortAndLong, help: "User name (any name with a token).") var username: String
    @Flag(help: "Read the password or token from stdin (else $DEPOT_PASSWORD).") var passwordStdin = false
    @Flag(help: "Allow plain http to a registry that is not on this machine.") var plainHttp = false

    func run() async throws {
        var options = RegistryOptions()
        options.registry = server
        options.plainHttp = plainHttp
        let url = options.url
        var password = ProcessInfo.processInfo.environment["DEPOT_PASSWORD"] ?? ""
        if passwordStdin { password = (readLine(strippingNewline: true) ?? "").trimmingCharacters(in: .whitespacesAndNewlines) }
        guard !password.isEmpty else { fail("no password: pass --password-stdin (or set DEPOT_PASSWORD)") }
        let credential = RegistryCredential.basic(user: username, password: password)
        if url.hasPrefix("http://"), !plainHttp, let host = URL(string: url)?.host, !RegistryConnection.isLoopback(host) {
            fail("\(url) is plain http to another machine: use https://, or pass --plain-http if you mean it")
        }
        RegistryConnection.tuneMemory()
        let c: RegistryConnection
        do { c = try RegistryConnection(url: url, credential: credential, attempts: 2) } catch { fail("\(error)") }
        do {
            try await c.checkAPI()
            await c.shutdown()
        } catch {
            await c.shutdown()
            fail("login to \(url) failed: \(error)")
        }
        let key = DockerConfig.key(forRegistry: url)
        do { try DockerConfig().store(host: key, user: username, password: password) } catch { fail("\(error)") }
        print("Login Succeeded (\(key))")
    }
}

struct Logout: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Forget the stored credentials of a registry.")
    @Argument(help: "Registry host[:port] or URL (default: $DEPOT_REGISTRY, else 127.0.0.1:5000).") var server: String?

    func run() async throws {
        var options = RegistryOptions()
        options.registry = server
        let key = DockerConfig.key(forRegistry: options.url)
        do {
            print(try DockerConfig().erase(host: key) ? "Removed login credentials for \(key)" : "Not logged in to \(key)")
        } catch { fail("\(error)") }
    }
}

struct WhoAmICommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "whoami", abstract: "Who the registry takes you to be, and what you may do.")
    @Flag(help: "Machine-readable output.") var json = false
    @OptionGroup var registry: RegistryOptions

    func run() async throws {
        await runClient(registry) { c in
            let w = try await c.request(.GET, Routes[.whoami].path(), as: WhoAmI.self)
            if json { return printJSON(w) }
            print(w.authEnabled ? w.principal : "\(w.principal) (authentication is off on this registry)")
            for g in w.grants { print("  \(g.role.rawValue) on \(g.repositories.joined(separator: ", "))") }
            if let l = w.labels { print("  job labels: \(l.joined(separator: ", "))") }
            if let d = w.deployments { print("  deployments: \(d.joined(separator: ", "))") }
        }
    }
}

struct Admin: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Users and tokens (over the API; needs an admin credential, e.g. DEPOT_TOKEN=<bootstrap token>).",
        subcommands: [AdminUser.self, AdminToken.self])
}

struct AdminUser: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "user", abstract: "Add, remove and list users.", subcommands: [Add.self, Remove.self, ListUsers.self])

    struct Add: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Add a user, or replace its password and grants.")
        @Argument var name: String
        @Option(help: "Role: \(RoleName.allCases.map(\.rawValue).joined(separator: ", ")).") var role: RoleName
        @Option(parsing: .upToNextOption, help: "Repository patterns the role applies to (* one component, ** any depth).")
        var repositories: [String] = ["**"]
        @Flag(help: "Read the password from stdin (else $DEPOT_PASSWORD).") var passwordStdin = false
        @OptionGroup var registry: RegistryOptions

        func run() async throws {
            var password = ProcessInfo.processInfo.environment["DEPOT_PASSWORD"] ?? ""
            if passwordStdin { password = (readLine(strippingNewline: true) ?? "").trimmingCharacters(in: .whitespacesAndNewlines) }
            guard !password.isEmpty else { fail("no password: pass --password-stdin (or set DEPOT_PASSWORD)") }
            await runClient(registry) { c in
                let body = UserAddRequest(name: name, password: password, grants: [GrantSpec(role: role, repositories: repositories)])
                let u = try await c.request(.POST, Routes[.userAdd].path(), body: body, as: UserInfo.self)
                print("user \(u.name): \(role.rawValue) on \(repositories.joined(separator: ", "))")
            }
        }
    }

    struct Remove: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Remove a user.")
        @Argument var name: String
        @OptionGroup var registry: RegistryOptions

        func run() async throws {
            await runClient(registry) { c in
                try await c.delete(Routes[.userRemove].path(["user": name]))
                print("removed user \(name)")
            }
        }
    }

    struct ListUsers: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "list", abstract: "List users and their grants.")
        @Flag(help: "Machine-readable output.") var json = false
        @OptionGroup var registry: RegistryOptions

        func run() async throws {
            await runClient(registry) { c in
                let users = try await c.request(.GET, Routes[.users].path(), as: [UserInfo].self)
                if json { return printJSON(users) }
                for u in users {
                    print(
                        "\(u.name)  \(u.grants.map { "\($0.role.rawValue) on \($0.repositories.joined(separator: ","))" }.joined(separator: "; "))"
                    )
                }
            }
        }
    }
}

extension RoleName: ExpressibleByArgument {}
extension TokenKind: ExpressibleByArgument {}

struct AdminToken: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "token", abstract: "Create, revoke and list robot, runner and node tokens.",
        subcommands: [Create.self, Revoke.self, ListTokens.self])

    struct Create: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Create a token; its secret is printed once and never again.")
        @Option(help: "Name (unique among tokens that are not revoked).") var name: String
        @Option(help: "Role: \(RoleName.allCases.map(\.rawValue).joined(separator: ", ")).") var role: RoleName
        @Option(parsing: .upToNextOption, help: "Repository patterns the role applies to (* one component, ** any depth).")
        var repositories: [String] = ["**"]
        @Option(help: "robot, runner or node (default: runner for the runner role, node for the node role, else robot).") var kind:
            TokenKind?
        @Option(parsing: .upToNextOption, help: "Runner tokens: the job labels it may lease.") var labels: [String] = []
        @Option(parsing: .upToNextOption, help: "Node tokens: the deployments it serves (repository/environment patterns).")
        var deployments: [String] = []
        @Option(help: "Lifetime: 30d, 12h, 90m (default: no expiry).") var expires: String?
        @Flag(help: "Machine-readable output.") var json = false
        @OptionGroup var registry: RegistryOptions

        func run() async throws {
            var seconds: Int64?
            if let expires {
                guard let s = DurationText.seconds(expires) else { fail("--expires '\(expires)' is not a duration like 30d, 12h or 90m") }
                seconds = Int64(s)
            }
            let kind = self.kind ?? (role == .runner ? .runner : role == .node ? .node : .robot)
            let body = TokenCreateRequest(
                name: name, kind: kind, grants: [GrantSpec(role: role, repositories: repositories)], labels: labels.isEmpty ? nil : labels,
                deployments: deployments.isEmpty ? nil : deployments, expiresInSeconds: seconds)
            await runClient(registry) { c in
                let t = try await c.request(.POST, Routes[.tokenCreate].path(), body: body, as: TokenInfo.self)
                if json { return printJSON(t) }
                print("token \(t.name) (\(t.id)), \(t.kind.rawValue), \(role.rawValue) on \(repositories.joined(separator: ", "))")
                print("secret (shown once; store it now): \(t.secret ?? "")")
            }
        }
    }

    struct Revoke: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Revoke a token by id or name (it stops working at once).")
        @Argument var token: String
        @OptionGroup var registry: RegistryOptions

        func run() async throws {
            await runClient(registry) { c in
                let t = try await c.request(.DELETE, Routes[.tokenRevoke].path(["token": token]), as: TokenInfo.self)
                print("revoked token \(t.name) (\(t.id))")
            }
        }
    }

    struct ListTokens: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "list", abstract: "List tokens (never their secrets).")
        @Flag(help: "Include revoked and expired tokens.") var all = false
        @Flag(help: "Machine-readable output.") var json = false
        @OptionGroup var registry: RegistryOptions

        func run() async throws {
            await runClient(registry) { c in
                let tokens = try await c.request(.GET, Routes[.tokens].path() + (all ? "?all=true" : ""), as: [TokenInfo].self)
                if json { return printJSON(tokens) }
                for t in tokens {
                    let state =
                        t.revokedAtMs != nil
                        ? "revoked" : t.expiresAtMs.map { "expires \(Date(timeIntervalSince1970: Double($0) / 1000))" } ?? "no expiry"
                    print(
                        "\(t.id)  \(t.name)  \(t.kind.rawValue)  \(t.grants.map { "\($0.role.rawValue) on \($0.repositories.joined(separator: ","))" }.joined(separator: "; "))  \(state)"
                    )
                }
            }
        }
    }
}
