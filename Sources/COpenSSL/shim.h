// OpenSSL 3: EVP digests now (checkpoint SHA-256), TLS later (#4).
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/err.h>
#include <openssl/crypto.h>
#include <openssl/rand.h>
