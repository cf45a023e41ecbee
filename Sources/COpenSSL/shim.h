// The low-level SHA-256 context (deprecated in OpenSSL 3 but kept) is the only way to carry a
// hash's midstate to another process: `ResumableSHA256`.
#define OPENSSL_SUPPRESS_DEPRECATED
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/crypto.h>
#include <openssl/x509.h>
#include <openssl/sha.h>
