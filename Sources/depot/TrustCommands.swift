import ArgumentParser
import DepotAPI
import DepotClient
import DepotCore
import DepotTrust
import Foundation

/// `NAME=FILE` or `FILE` (named after the file, without its extension).
func loadTrustedKey(_ spec: String) throws -> TrustedKey {
    if let eq = spec.firstIndex(of: "="), eq != spec.startIndex {
        return try TrustedKey.load(name: String(spec[..<eq]), path: String(spec[spec.index(after: eq)...]))
    }
    let base = ((spec as NSString).lastPathComponent as NSString).deletingPathExtension
    return try TrustedKey.load(name: base.isEmpty ? "key" : base, path: spec)
}

struct Sign: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Sign an artifact: push a signature (an OCI referrer of its manifest) made with your private key.",
        discussion:
            "The signature covers the manifest digest, so it travels with the artifact through any OCI copy. Create a key with `depot key generate --out release.pem`; give its public half (`depot key show --key release.pem`) to the registry's signing.trusted_keys and to nodes."
    )
    @Argument(help: "[HOST/]REPO:TAG or [HOST/]REPO@sha256:...", transform: ArtifactReference.argument) var source: ArtifactReference
    @OptionGroup var registry: RegistryOptions
    @Option(help: "Your ECDSA P-256 private key (PEM).") var key: String
    @Option(help: "The name you sign as (a hint shown by verify; policies name keys, not this).") var signer: String?

    func run() async throws {
        let signingKey: SigningKey
        do { signingKey = try SigningKey.load(path: key) } catch { fail("\(error)") }
        await runClient(registry, for: [source]) { connection in
            let m = try await connection.manifest(source.repository, source.version)
            let now = Int64(Date().timeIntervalSince1970 * 1000)
            let signature = try await connection.pushSignature(source.repository, subject: m, key: signingKey, signer: signer, nowMs: now)
            print("signed \(source.repository)@\(m.digest) with key \(signingKey.keyID.prefix(16)): signature \(signature)")
        }
    }
}

struct Verify: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Verify an artifact's signatures, here with your keys (--key) or as the registry sees them (--policy).",
        discussion:
            "With --key, signatures are checked on this machine against the given public keys; the registry is not trusted. Without --key, the registry reports which of its trusted keys signed the artifact and what each environment's deploy policy says; --policy ENV exits 1 unless ENV's policy is satisfied."
    )
    @Argument(help: "[HOST/]REPO:TAG or [HOST/]REPO@sha256:...", transform: ArtifactReference.argument) var source: ArtifactReference
    @OptionGroup var registry: RegistryOptions
    @Option(name: .customLong("key"), help: "A public key (PEM) as NAME=FILE or FILE; repeatable. Exit 1 unless one verifies.")
    var keys: [String] = []
    @Option(help: "Exit 1 unless this environment's deploy policy accepts the artifact (the registry's verdict).") var policy: String?
    @Flag(help: "Machine-readable output.") var json = false

    struct Checked: Encodable {
        var manifest: String
        var verified: Bool
        var keys: [String]
        var signer: String?
        var job: Int64?
        var pipeline: String?
        var stage: String?
        var reason: String?
    }

    func run() async throws {
        let trusted: [TrustedKey]
        do { trusted = try keys.map(loadTrustedKey) } catch { fail("\(error)") }
        await runClient(registry, for: [source]) { connection in
            let m = try await connection.manifest(source.repository, source.version)
            if !trusted.isEmpty {
                let checks = try await connection.checkSignatures(source.repository, m.digest, verifier: SignatureVerifier(keys: trusted))
                let rows = checks.map { c in
                    let s = c.verified.first?.statement
                    return Checked(
                        manifest: c.manifest.description, verified: !c.verified.isEmpty, keys: c.verified.map(\.key), signer: s?.signer,
                        job: s?.pipeline?.job, pipeline: s?.pipeline?.pipeline, stage: s?.pipeline?.stage, reason: c.failure)
                }
                if json { printJSON(rows) } else { Self.print(rows, digest: m.digest) }
                guard rows.contains(where: \.verified) else {
                    throw ClientError("\(source.repository)@\(m.digest) has no signature by \(trusted.map(\.name).joined(separator: ", "))")
                }
                return
            }
            let answer = try await connection.request(
                .GET, Routes[.signatures].path(name: source.repository, ["reference": m.digest.description]), as: SignatureListAnswer.self)
            if json {
                printJSON(answer)
            } else {
                Self.print(
                    answer.signatures.map {
                        Checked(
                            manifest: $0.manifest.description, verified: $0.verified, keys: $0.key.map { [$0] } ?? [], signer: $0.signer,
                            job: $0.job, pipeline: $0.pipeline, stage: $0.stage, reason: $0.reason)
                    }, digest: m.digest)
                for v in answer.policies { Swift.print("policy \(v.environment): \(v.allowed ? "allowed" : "REFUSED") (\(v.reason))") }
            }
            if let policy {
                guard let v = answer.policies.first(where: { $0.environment == policy }) else {
                    if !json { Swift.print("policy \(policy): none configured (any digest may be rolled out)") }
                    return
                }
                guard v.allowed else { throw ClientError("the \(policy) deploy policy refuses \(m.digest): \(v.reason)") }
            }
        }
    }

    static func print(_ rows: [Checked], digest: Digest) {
        Swift.print("\(digest): \(rows.count) signature(s)")
        for r in rows {
            var line = "  \(r.manifest.prefix(19))  "
            if r.verified {
                line += "verified by \(r.keys.joined(separator: ", "))"
                if let job = r.job { line += "  job \(job) (\(r.pipeline ?? "?")/\(r.stage ?? "?"))" }
                if let s = r.signer { line += "  signer \(s)" }
            } else {
                line += "NOT verified: \(r.reason ?? "no trusted key")"
            }
            Swift.print(line)
        }
    }
}

struct KeyCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "key", abstract: "Signing keys: create one, or show a public key.",
        subcommands: [KeyGenerate.self, KeyShow.self])
}

struct KeyGenerate: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "generate", abstract: "Create an ECDSA P-256 private key (PEM, mode 0600) and print its public key.")
    @Option(help: "Where to write the private key (must not exist).") var out: String

    func run() throws {
        guard !FileManager.default.fileExists(atPath: out) else { fail("\(out) exists: choose another path") }
        let key = SigningKey.generate()
        do { try PrivateFile.create(out, Array(key.pem.utf8)) } catch { fail("cannot write \(out): \(error)") }
        print(key.publicKeyPEM, terminator: key.publicKeyPEM.hasSuffix("\n") ? "" : "\n")
    }
}

struct KeyShow: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "show",
        abstract: "Print a public key: of a private key file (--key), or the registry's pipeline key.",
        discussion:
            "Nodes should get the pipeline key out of band: fetching it from the registry they verify against proves nothing if that registry is compromised."
    )
    @Option(help: "A private or public key file (PEM).") var key: String?
    @OptionGroup var registry: RegistryOptions
    @Option(help: "Also write the public key to this file.") var out: String?

    func run() async throws {
        var pem = ""
        if let key {
            do { pem = try TrustedKey.load(name: "key", path: key).pem } catch { fail("\(error)") }
        } else {
            await runClient(registry) { connection in
                let answer = try await connection.request(.GET, Routes[.signingKey].path(), as: SigningKeyAnswer.self)
                pem = answer.publicKeyPEM
                FileHandle.standardError.write(Data("the registry's \(answer.name) key, id \(answer.keyID)\n".utf8))
            }
        }
        if let out {
            do { try pem.write(toFile: out, atomically: true, encoding: .utf8) } catch { fail("cannot write \(out): \(error)") }
        }
        print(pem, terminator: pem.hasSuffix("\n") ? "" : "\n")
    }
}
