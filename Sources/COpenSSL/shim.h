// OpenSSL 3: EVP digests (checkpoint SHA-256) and TLS for ReflowHTTP.
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/err.h>
#include <openssl/crypto.h>
#include <openssl/rand.h>

// Function forms of OpenSSL macros that Swift cannot import (TLS, ReflowHTTP/TLS.swift).
static inline int reflow_ssl_ctx_set_min_tls12(SSL_CTX *ctx) {
    return (int)SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
}
static inline int reflow_ssl_ctx_get_min_proto_version(SSL_CTX *ctx) {
    return (int)SSL_CTX_get_min_proto_version(ctx);
}
/// No TLS 1.2 renegotiation; a peer's EOF without close_notify reads as a clean EOF.
static inline void reflow_ssl_ctx_set_server_options(SSL_CTX *ctx) {
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_IGNORE_UNEXPECTED_EOF);
}
/// SSL_write may write part of the buffer, and a retry may pass a moved (grown) buffer.
static inline void reflow_ssl_ctx_set_partial_write_modes(SSL_CTX *ctx) {
    SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
}
