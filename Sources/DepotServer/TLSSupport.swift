import DepotClient
import DepotCore
import Dispatch
import Foundation
import HummingbirdCore
import HummingbirdTLS
import Logging
import NIOCore
import NIOSSL

/// The `server.tls:` section: the certificate the server presents and, optionally, the CA that
/// signs the certificates clients present (mutual TLS). See `config/depot.yaml`.
public struct TLSSettings: Sendable, Equatable {
    /// Whether the server asks connecting clients for a certificate.
    public enum ClientAuth: String, Sendable {
        /// Not asked for (the default).
        case none
        /// Asked for; a client without one still connects, one with a certificate the CA did
        /// not sign is refused.
        case optional
        /// A client without a certificate signed by `client_ca_file` is refused at the handshake.
        case require
    }

    /// PEM: the server's certificate first, then any intermediates.
    public var certFile: String
    /// PEM, unencrypted (the server restarts and reloads without anyone to type a passphrase).
    public var keyFile: String
    /// PEM: the CA certificates client certificates must chain to.
    public var clientCAFile: String?
    public var clientAuth = ClientAuth.none

    public init(certFile: String, keyFile: String, clientCAFile: String? = nil, clientAuth: ClientAuth = .none) {
        self.certFile = certFile
        self.keyFile = keyFile
        self.clientCAFile = clientCAFile
        self.clientAuth = clientAuth
    }

    /// Parses `server.tls` (a mapping); errors name the key.
    static func parse(_ raw: Any, _ reader: ConfigReader) throws -> TLSSettings {
        guard let m = raw as? [String: Any] else { throw reader.error("server.tls", "must be a mapping (cert_file, key_file, …)") }
        try reader.rejectUnknown(m, known: ConfigKeys.known("server.tls"), at: "server.tls.")
        func path(_ key: String) throws -> String? {
            guard let v = m[key] else { return nil }
            guard let s = v as? String, !s.isEmpty else { throw reader.error("server.tls.\(key)", "must be a file path") }
            return s
        }
        guard let cert = try path("cert_file") else {
            throw reader.error("server.tls.cert_file", "is required with server.tls (the server's PEM certificate chain)")
        }
        guard let key = try path("key_file") else {
            throw reader.error("server.tls.key_file", "is required with server.tls (the server's PEM private key)")
        }
        var settings = TLSSettings(certFile: cert, keyFile: key, clientCAFile: try path("client_ca_file"))
        if let raw = m["client_auth"] {
            // YAML 1.1 reads a bare `none`-like word as a string, but `off`/`no` as false: say what is accepted.
            guard let text = raw as? String, let mode = ClientAuth(rawValue: text) else {
                throw reader.error("server.tls.client_auth", "must be none, optional or require")
            }
            settings.clientAuth = mode
        }
        if settings.clientAuth != .none && settings.clientCAFile == nil {
            throw reader.error(
                "server.tls.client_auth",
                "\(settings.clientAuth.rawValue) needs server.tls.client_ca_file (the CA that signs client certificates)")
        }
        if settings.clientAuth == .none && settings.clientCAFile != nil {
            // A CA file that does nothing would look like protection it does not give.
            throw reader.error(
                "server.tls.client_ca_file", "is set but client_auth is none: set client_auth to optional or require, or remove it")
        }
        return settings
    }
}

/// The server's TLS state: its configuration, and the certificate and key presented to new
/// connections, which `reload()` (SIGHUP) replaces without closing the listener.
///
/// Why a per-handshake callback: a `NIOSSLContext` is immutable and Hummingbird 2.28's
/// `TLSChannel` builds one context from a `TLSConfiguration` when the server starts. Rather than
/// re-implementing its child channel to swap contexts, the configuration carries an
/// `sslContextCallback`, which NIOSSL calls at every ClientHello and whose answer (a certificate
/// chain and key) replaces the context's for that one handshake. The callback reads the current
/// pair from a lock, so a reload is one assignment: handshakes already done keep their
/// certificate, every later one gets the new pair. Trust roots for client certificates are not
/// part of that answer: a changed `client_ca_file` needs a restart.
public final class TLSCertificateStore: Sendable {
    /// A certificate chain with its private key, checked to belong together.
    struct Identity: Sendable {
        let chain: [NIOSSLCertificate]
        let key: NIOSSLPrivateKey
        /// For logs: commonName, serial number and expiry of the leaf.
        let summary: String
    }

    public let settings: TLSSettings
    /// The configuration Hummingbird's TLS channel is built from.
    public let configuration: TLSConfiguration
    private let current: Locked<Identity>
    private let logger: Logger
    private let hangup = Locked<(any DispatchSourceSignal)?>(nil)

    /// Loads and checks every file: a problem is an error naming the file and the fix.
    public init(settings: TLSSettings, logger: Logger) throws {
        self.settings = settings
        self.logger = logger
        let identity = try Self.loadIdentity(settings)
        let current = Locked(identity)
        self.current = current
        var c = TLSConfiguration.makeServerConfiguration(
            certificateChain: identity.chain.map { .certificate($0) }, privateKey: .privateKey(identity.key))
        c.minimumTLSVersion = .tlsv12
        // How long a closing connection waits for the peer's close_notify after sending its own
        // (the response is flushed before). NIOSSL's 5 s made every graceful stop wait 5 s for the
        // embedded runner's idle pooled connection, whose client does not answer it.
        c.shutdownTimeout = .seconds(1)
        if let caFile = settings.clientCAFile {
            let roots = try Self.certificates(caFile, key: "server.tls.client_ca_file")
            c.trustRoots = .certificates(roots)
            // Tells clients which CAs are accepted, so one holding several certificates picks the right one.
            c.sendCANameList = true
        }
        switch settings.clientAuth {
        case .none: c.certificateVerification = .none
        case .optional: c.certificateVerification = .optionalVerification
        // Client certificates name people or machines, not the host they connect from.
        case .require: c.certificateVerification = .noHostnameVerification
        }
        c.sslContextCallback = { _, promise in
            let identity = current.withLock { $0 }
            var override = NIOSSLContextConfigurationOverride()
            override.certificateChain = identity.chain.map { .certificate($0) }
            override.privateKey = .privateKey(identity.key)
            promise.succeed(override)
        }
        do { _ = try NIOSSLContext(configuration: c) } catch {
            throw DepotError.invalidArgument("TLS configuration (server.tls) is not usable: \(error)")
        }
        configuration = c
        logger.info("tls: serving \(identity.summary) from \(settings.certFile), client certificates: \(settings.clientAuth.rawValue)")
    }

    /// What new connections are served now (commonName, serial, expiry).
    public var currentSummary: String { current.withLock { $0.summary } }

    /// Re-reads the certificate and key files. On any problem the old pair keeps serving and
    /// the error is logged (and returned as false), so a half-copied file cannot take the
    /// server off the air.
    @discardableResult
    public func reload() -> Bool {
        do {
            let identity = try Self.loadIdentity(settings)
            current.withLock { $0 = identity }
            logger.notice("tls: reloaded: now serving \(identity.summary) from \(settings.certFile)")
            return true
        } catch {
            logger.error("tls: reload failed, still serving \(currentSummary): \(error)")
            return false
        }
    }

    /// Reloads on SIGHUP for the rest of the process's life. Installed before the server starts
    /// listening: a SIGHUP with no handler would end the process.
    public func reloadOnHangup() {
        signal(SIGHUP, SIG_IGN)
        let source = DispatchSource.makeSignalSource(signal: SIGHUP, queue: DispatchQueue(label: "depot.tls.reload"))
        source.setEventHandler { [weak self] in self?.reload() }
        source.resume()
        hangup.withLock { $0 = source }
    }

    /// HTTP/1 over TLS with `tls`, plain HTTP/1 without. Built here rather than with
    /// `HTTPServerBuilder.tls(_:tlsConfiguration:)` because that one is declared `throws`
    /// (the context is built later, when the server starts, and was already checked in `init`).
    static func serverBuilder(_ tls: TLSCertificateStore?, http1: HTTP1Channel.Configuration) -> HTTPServerBuilder {
        guard let tls else { return .http1(configuration: http1) }
        let configuration = tls.configuration
        return HTTPServerBuilder { responder in
            try TLSChannel(HTTP1Channel(responder: responder, configuration: http1), tlsConfiguration: configuration)
        }
    }

    static func loadIdentity(_ settings: TLSSettings) throws -> Identity {
        let chain = try certificates(settings.certFile, key: "server.tls.cert_file")
        let leaf = chain[0]
        let now = time(nil)
        if leaf.notValidAfter < now {
            throw DepotError.invalidArgument(
                "server.tls.cert_file \(settings.certFile): the certificate expired on \(date(leaf.notValidAfter)); install a renewed one")
        }
        let keyBytes = try read(settings.keyFile, key: "server.tls.key_file")
        let key: NIOSSLPrivateKey
        do { key = try NIOSSLPrivateKey(bytes: keyBytes, format: .pem) } catch {
            throw DepotError.invalidArgument(
                "server.tls.key_file \(settings.keyFile): not a PEM private key (\(error)); an encrypted key is not supported: "
                    + "decrypt it with `openssl pkey -in KEY -out KEY.plain`")
        }
        // BoringSSL refuses a key that does not match the certificate when both go into one
        // context: check it now rather than fail every handshake later.
        do {
            _ = try NIOSSLContext(
                configuration: .makeServerConfiguration(certificateChain: chain.map { .certificate($0) }, privateKey: .privateKey(key)))
        } catch {
            throw DepotError.invalidArgument(
                "server.tls.key_file \(settings.keyFile) does not belong to the certificate in \(settings.certFile) (\(error)); "
                    + "install the key the certificate was issued for")
        }
        let serial = leaf.serialNumber.map { String(format: "%02x", $0) }.joined()
        let name = (try? leaf.toDERBytes()).flatMap { X509Names.subjectCommonName(der: $0) } ?? "(no commonName)"
        return Identity(chain: chain, key: key, summary: "certificate CN=\(name) serial \(serial), valid until \(date(leaf.notValidAfter))")
    }

    /// Every certificate of a PEM file; at least one.
    static func certificates(_ path: String, key: String) throws -> [NIOSSLCertificate] {
        let bytes = try read(path, key: key)
        let certificates: [NIOSSLCertificate]
        do { certificates = try NIOSSLCertificate.fromPEMBytes(bytes) } catch {
            throw DepotError.invalidArgument(
                "\(key) \(path): not a PEM certificate file (\(error)); convert DER with `openssl x509 -inform der`")
        }
        guard !certificates.isEmpty else {
            throw DepotError.invalidArgument("\(key) \(path): no certificate in it (expected -----BEGIN CERTIFICATE-----)")
        }
        return certificates
    }

    static func read(_ path: String, key: String) throws -> [UInt8] {
        // A certificate file is small; a huge one is a wrong path (a device, a log), not a certificate.
        let limit = 1 << 20
        guard let handle = FileHandle(forReadingAtPath: path) else {
            let reason = FileManager.default.fileExists(atPath: path) ? "cannot be read (permissions?)" : "does not exist"
            throw DepotError.invalidArgument("\(key) \(path) \(reason); fix the path in the config file")
        }
        defer { try? handle.close() }
        let data: Data
        do { data = try handle.read(upToCount: limit + 1) ?? Data() } catch {
            throw DepotError.invalidArgument("\(key) \(path) cannot be read: \(error.localizedDescription)")
        }
        guard data.count <= limit else { throw DepotError.invalidArgument("\(key) \(path) is over 1 MiB: not a PEM file") }
        return [UInt8](data)
    }

    private static func date(_ t: time_t) -> String {
        ISO8601DateFormatter().string(from: Date(timeIntervalSince1970: TimeInterval(t)))
    }
}

extension DepotRequestContext {
    /// The subject commonName of the certificate the client presented on this connection, which
    /// the handshake verified against `server.tls.client_ca_file`; nil on plain HTTP or without
    /// a client certificate. Not yet mapped to an identity (authorization builds on it).
    public func clientCertificateCommonName() async -> String? {
        // `try?` flattens: nil without TLS (no NIOSSLHandler) and without a client certificate alike.
        guard let certificate = try? await channel.nioSSL_peerCertificate().get(), let der = try? certificate.toDERBytes() else {
            return nil
        }
        return X509Names.subjectCommonName(der: der)
    }
}

extension PipelineSetup {
    /// TLS of the embedded runner, which connects to this server's own listen address: the
    /// kernel delivers that connection locally, so the server's certificate (issued for the
    /// name clients use, perhaps not for this address) is not verified. It presents the client
    /// certificate of `$DEPOT_CLIENT_CERT`/`$DEPOT_CLIENT_KEY`, which `client_auth: require` needs.
    static func embeddedRunnerTLS(_ settings: TLSSettings?) throws -> ClientTLSOptions {
        var tls = ClientTLSOptions.fromEnvironment()
        guard let settings else { return tls }
        tls.verifyServer = false
        if settings.clientAuth == .require && tls.certificateFile == nil {
            throw DepotError.invalidArgument(
                "server.tls.client_auth is require, and the embedded pipeline runner connects to this server without a client "
                    + "certificate: set DEPOT_CLIENT_CERT and DEPOT_CLIENT_KEY for it, or set pipelines.runner.enabled: false")
        }
        return tls
    }
}
