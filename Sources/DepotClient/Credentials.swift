import DepotAPI
import DepotCore
import Foundation

/// What the client authenticates with.
public enum RegistryCredential: Sendable, Equatable {
    /// A Depot token secret (`DEPOT_TOKEN`, a robot, runner or node token): `Bearer <secret>`.
    case token(String)
    /// A user name and password (or any name and a token), from `depot login` or `docker login`:
    /// sent as Basic, and to a token endpoint when a registry answers with a Bearer challenge.
    case basic(user: String, password: String)

    var authorization: String {
        switch self {
        case .token(let t): return "Bearer \(t)"
        case .basic(let u, let p): return "Basic " + Data("\(u):\(p)".utf8).base64EncodedString()
        }
    }

    /// Basic credentials for a token endpoint (a token goes as the password, any name).
    var basicForTokenEndpoint: String {
        switch self {
        case .token(let t): return "Basic " + Data("depot:\(t)".utf8).base64EncodedString()
        case .basic: return authorization
        }
    }
}

/// `~/.docker/config.json` (or `$DOCKER_CONFIG/config.json`): the credential store `docker
/// login`, skopeo, oras and containerd's tools share. `auths[host].auth` holds base64
/// `user:password`; `credsStore` / `credHelpers[host]` name a `docker-credential-<helper>`
/// program that keeps them instead. Other keys of the file are kept as they are.
public struct DockerConfig {
    public let path: String

    public init(path: String? = nil) {
        let env = ProcessInfo.processInfo.environment
        if let path {
            self.path = path
        } else if let dir = env["DOCKER_CONFIG"], !dir.isEmpty {
            self.path = dir + "/config.json"
        } else {
            self.path = (env["HOME"] ?? NSHomeDirectory()) + "/.docker/config.json"
        }
    }

    /// `host[:port]` of a registry URL: the key docker uses in `auths`.
    public static func key(forRegistry url: String) -> String {
        var s = url
        if let r = s.range(of: "://") { s = String(s[r.upperBound...]) }
        if let slash = s.firstIndex(of: "/") { s = String(s[..<slash]) }
        return s
    }

    func load() throws -> [String: JSONValue] {
        guard let data = FileManager.default.contents(atPath: path) else { return [:] }
        guard data.count <= 4 << 20 else { throw ClientError("\(path) is larger than 4 MiB: not a docker config") }
        do { return try WireJSON.decode([String: JSONValue].self, from: Array(data), what: path) } catch {
            throw ClientError("\(path) is not valid JSON (\(error)): fix or move it")
        }
    }

    /// The helper that stores credentials for `host`, if the file names one.
    func helper(for host: String, in config: [String: JSONValue]) -> String? {
        if let h = config["credHelpers"]?[host]?.string, !h.isEmpty { return h }
        if let s = config["credsStore"]?.string, !s.isEmpty { return s }
        return nil
    }

    /// The stored credential for `host`, or nil.
    public func credential(for host: String) throws -> RegistryCredential? {
        let config = try load()
        if let helper = helper(for: host, in: config) {
            let out = try Self.runHelper(helper, "get", input: host)
            guard let answer = try? WireJSON.decode([String: String].self, from: out, what: "credential helper answer"),
                let user = answer["Username"], let secret = answer["Secret"], !secret.isEmpty
            else { return nil }
            return .basic(user: user, password: secret)
        }
        guard let auth = config["auths"]?[host]?["auth"]?.string, let data = Data(base64Encoded: auth),
            let text = String(data: data, encoding: .utf8), let colon = text.firstIndex(of: ":")
        else { return nil }
        return .basic(user: String(text[..<colon]), password: String(text[text.index(after: colon)...]))
    }

    /// Stores `user`/`password` for `host`: through the helper if one is configured, else in the
    /// file (mode 0600, written to a temporary file and renamed, so a crash never leaves half
    /// a file and other processes never see it readable).
    public func store(host: String, user: String, password: String) throws {
        var config = try load()
        if let helper = helper(for: host, in: config) {
            let body = try WireJSON.encode(["ServerURL": host, "Username": user, "Secret": password])
            _ = try Self.runHelper(helper, "store", input: String(decoding: body, as: UTF8.self))
            return
        }
        var auths: [String: JSONValue] = [:]
        if case .object(let o)? = config["auths"] { auths = o }
        let encoded: JSONValue = .string(Data("\(user):\(password)".utf8).base64EncodedString())
        auths[host] = JSONValue.object(["auth": encoded])
        config["auths"] = .object(auths)
        try write(config)
    }

    /// Forgets `host`; false if nothing was stored.
    public func erase(host: String) throws -> Bool {
        var config = try load()
        if let helper = helper(for: host, in: config) {
            _ = try Self.runHelper(helper, "erase", input: host)
            return true
        }
        guard case .object(var auths)? = config["auths"], auths[host] != nil else { return false }
        auths[host] = nil
        config["auths"] = .object(auths)
        try write(config)
        return true
    }

    func write(_ config: [String: JSONValue]) throws {
        let fm = FileManager.default
        let dir = (path as NSString).deletingLastPathComponent
        try fm.createDirectory(atPath: dir, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        let tmp = path + ".tmp-\(getpid())"
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        unlink(tmp) // a leftover of a crashed login
        do { try PrivateFile.create(tmp, Array(try encoder.encode(config))) } catch { throw ClientError("\(error)") }
        guard rename(tmp, path) == 0 else {
            unlink(tmp)
            throw ClientError("cannot replace \(path): \(String(cString: strerror(errno)))")
        }
    }

    /// Runs `docker-credential-<helper> <verb>` with `input` on stdin; its stdout.
    static func runHelper(_ helper: String, _ verb: String, input: String) throws -> [UInt8] {
        guard helper.utf8.allSatisfy({ ($0 >= 0x61 && $0 <= 0x7A) || ($0 >= 0x30 && $0 <= 0x39) || $0 == 0x2D || $0 == 0x5F }) else {
            throw ClientError("credential helper name '\(helper.prefix(40))' is not a plain name")
        }
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = ["docker-credential-\(helper)", verb]
        let stdin = Pipe()
        let stdout = Pipe()
        p.standardInput = stdin
        p.standardOutput = stdout
        p.standardError = FileHandle.nullDevice
        // A helper that exits without reading its input must not kill us with SIGPIPE.
        signal(SIGPIPE, SIG_IGN)
        do { try p.run() } catch { throw ClientError("cannot run docker-credential-\(helper): \(error.localizedDescription)") }
        stdin.fileHandleForWriting.write(Data(input.utf8))
        try? stdin.fileHandleForWriting.close()
        let out = stdout.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        guard p.terminationStatus == 0 else {
            if verb == "get" { return Array("{}".utf8) }
            throw ClientError("docker-credential-\(helper) \(verb) failed (exit \(p.terminationStatus))")
        }
        return Array(out.prefix(1 << 20))
    }
}

/// A `WWW-Authenticate: Bearer realm="…",service="…",scope="…"` challenge.
struct BearerChallenge: Equatable {
    var realm: String
    var service: String?
    var scope: String?

    /// Parses the header; nil when it is not a Bearer challenge with a realm.
    init?(_ header: String) {
        let trimmed = header.trimmingCharacters(in: .whitespaces)
        guard trimmed.lowercased().hasPrefix("bearer ") else { return nil }
        var params: [String: String] = [:]
        var rest = Substring(trimmed.dropFirst(7))
        // key="value" pairs separated by commas; values may contain commas (scopes do).
        while let eq = rest.firstIndex(of: "=") {
            let key = rest[..<eq].trimmingCharacters(in: CharacterSet(charactersIn: " ,")).lowercased()
            var after = rest[rest.index(after: eq)...]
            var value = ""
            if after.first == "\"" {
                after = after.dropFirst()
                guard let close = after.firstIndex(of: "\"") else { return nil }
                value = String(after[..<close])
                rest = after[after.index(after: close)...]
            } else {
                let end = after.firstIndex(of: ",") ?? after.endIndex
                value = String(after[..<end])
                rest = after[end...]
            }
            params[key] = value
            if params.count > 16 { return nil }
        }
        guard let realm = params["realm"], !realm.isEmpty else { return nil }
        self.realm = realm
        service = params["service"]
        scope = params["scope"]
    }
}
