import DepotCore
import Foundation
import NIOSSL

/// How a client trusts the registry's HTTPS certificate and which certificate it presents.
public struct ClientTLSOptions: Sendable, Equatable {
    /// PEM CA certificates trusted besides the system's (a registry with a private CA).
    public var caFile: String?
    /// PEM client certificate and its key, for a registry with `server.tls.client_auth`.
    public var certificateFile: String?
    public var keyFile: String?
    /// False only for a connection a server makes to its own listener (the embedded runner):
    /// the kernel delivers that locally, there is no one in between to verify away.
    public var verifyServer = true

    public init(caFile: String? = nil, certificateFile: String? = nil, keyFile: String? = nil) {
        self.caFile = caFile
        self.certificateFile = certificateFile
        self.keyFile = keyFile
    }

    /// `caFile` (a flag) if given, else `$DEPOT_CA_FILE`; the client certificate from
    /// `$DEPOT_CLIENT_CERT` and `$DEPOT_CLIENT_KEY`.
    public static func fromEnvironment(caFile: String? = nil) -> ClientTLSOptions {
        let env = ProcessInfo.processInfo.environment
        func value(_ name: String) -> String? { env[name].flatMap { $0.isEmpty ? nil : $0 } }
        return ClientTLSOptions(
            caFile: caFile ?? value("DEPOT_CA_FILE"), certificateFile: value("DEPOT_CLIENT_CERT"), keyFile: value("DEPOT_CLIENT_KEY"))
    }

    /// The HTTP client's TLS configuration; a file that cannot be used is an error naming it.
    func configuration() throws -> TLSConfiguration {
        var c = TLSConfiguration.makeClientConfiguration()
        if let caFile {
            let roots: [NIOSSLCertificate]
            do { roots = try NIOSSLCertificate.fromPEMFile(caFile) } catch {
                throw ClientError("CA file \(caFile) (--ca-file / DEPOT_CA_FILE) cannot be used: \(error); it must be PEM certificates")
            }
            guard !roots.isEmpty else { throw ClientError("CA file \(caFile) (--ca-file / DEPOT_CA_FILE) holds no PEM certificate") }
            c.additionalTrustRoots = [.certificates(roots)]
        }
        switch (certificateFile, keyFile) {
        case (nil, nil): break
        case (let cert?, let key?):
            do {
                c.certificateChain = try NIOSSLCertificate.fromPEMFile(cert).map { .certificate($0) }
                c.privateKey = .privateKey(try NIOSSLPrivateKey(file: key, format: .pem))
            } catch {
                throw ClientError("client certificate \(cert) / key \(key) (DEPOT_CLIENT_CERT, DEPOT_CLIENT_KEY) cannot be used: \(error)")
            }
        default:
            throw ClientError("DEPOT_CLIENT_CERT and DEPOT_CLIENT_KEY go together: set both or neither")
        }
        if !verifyServer { c.certificateVerification = .none }
        return c
    }

    /// A user-facing explanation of a TLS failure, nil for other errors. These are not
    /// transient: retrying cannot make a certificate trusted.
    static func explain(_ error: any Error) -> String? {
        let text = "\(error)"
        if text.contains("CERTIFICATE_VERIFY_FAILED") {
            return "the registry's TLS certificate is not trusted (\(text)); if a private CA issued it, "
                + "pass --ca-file CA.pem or set DEPOT_CA_FILE"
        }
        if text.contains("failedToValidateHostname") || text.contains("unableToValidateCertificate") {
            return "the registry's TLS certificate does not name the host in the registry URL (\(text)); use the name it was issued for"
        }
        if text.contains("CERTIFICATE_REQUIRED") || text.contains("HANDSHAKE_FAILURE") || text.contains("BAD_CERTIFICATE")
            || text.contains("UNKNOWN_CA")
        {
            return "the registry refused the TLS handshake (\(text)); if it requires a client certificate, "
                + "set DEPOT_CLIENT_CERT and DEPOT_CLIENT_KEY"
        }
        return nil
    }
}
