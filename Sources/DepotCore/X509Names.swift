import COpenSSL

/// Names read out of X.509 certificates with libcrypto: the server logs which certificate it
/// serves, and the TLS layer reports the subject of a verified client certificate.
public enum X509Names {
    /// The subject's commonName (the last one, the most specific, when there are several) of a
    /// DER-encoded certificate; nil when the bytes are not a certificate or the subject has none.
    public static func subjectCommonName(der: [UInt8]) -> String? {
        der.withUnsafeBufferPointer { buffer -> String? in
            var cursor: UnsafePointer<UInt8>? = buffer.baseAddress
            guard let certificate = d2i_X509(nil, &cursor, buffer.count) else { return nil }
            defer { X509_free(certificate) }
            guard let name = X509_get_subject_name(certificate) else { return nil }
            var last: Int32 = -1
            while true {
                let next = X509_NAME_get_index_by_NID(name, NID_commonName, last)
                if next < 0 { break }
                last = next
            }
            guard last >= 0, let entry = X509_NAME_get_entry(name, last), let data = X509_NAME_ENTRY_get_data(entry) else {
                return nil
            }
            var utf8: UnsafeMutablePointer<UInt8>?
            let count = ASN1_STRING_to_UTF8(&utf8, data)
            guard count >= 0, let utf8 else { return nil }
            defer { CRYPTO_free(utf8, #fileID, #line) }
            return String(decoding: UnsafeBufferPointer(start: utf8, count: Int(count)), as: UTF8.self)
        }
    }
}
