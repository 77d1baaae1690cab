import Glibc
import COpenSSL

/// Loading a certificate or private key, or creating the OpenSSL context, failed.
public struct TLSError: Error, CustomStringConvertible, Sendable {
    /// What was being done, naming the file involved.
    public var message: String
    /// The OpenSSL error queue, oldest first, joined by "; " (may be empty).
    public var openSSLErrors: String

    public var description: String { openSSLErrors.isEmpty ? message : "\(message): \(openSSLErrors)" }
}

/// Drains the calling thread's OpenSSL error queue into one line, and the raw codes.
func drainOpenSSLErrors() -> (text: String, codes: [UInt]) {
    var parts: [String] = []
    var codes: [UInt] = []
    var buf = [CChar](repeating: 0, count: 256)
    while true {
        let e = ERR_get_error()
        if e == 0 { break }
        codes.append(e)
        ERR_error_string_n(e, &buf, buf.count)
        parts.append(String(decoding: buf.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self))
    }
    return (parts.joined(separator: "; "), codes)
}

/// A server-side TLS configuration: an OpenSSL `SSL_CTX` with a certificate chain and its key.
///
/// Protocols: TLS 1.2 and 1.3 (older ones are refused); OpenSSL's default cipher list and security
/// level are kept; renegotiation is off (RELIABILITY.md S5).
///
/// `@unchecked Sendable`: the context is configured completely in `init` and never changed
/// afterwards, and OpenSSL allows one `SSL_CTX` to create sessions from many threads at once.
public final class TLSContext: @unchecked Sendable {
    let ctx: OpaquePointer
    /// Things worth logging that don't stop the server (a key file readable by group or others).
    public let warnings: [String]

    /// Loads the PEM certificate chain (leaf first) and the PEM private key, and checks that they
    /// match. Throws ``TLSError`` naming the file and carrying OpenSSL's error text.
    public init(certificateFile: String, privateKeyFile: String) throws {
        ERR_clear_error()
        guard let ctx = SSL_CTX_new(TLS_server_method()) else {
            throw TLSError(message: "SSL_CTX_new failed", openSSLErrors: drainOpenSSLErrors().text)
        }
        let mismatch = "the TLS private key '\(privateKeyFile)' does not match the certificate '\(certificateFile)'"
        func fail(_ message: String) -> TLSError {
            let (text, codes) = drainOpenSSLErrors()
            // SSL_CTX_use_PrivateKey_file already compares the key with the certificate.
            let keyMismatch = codes.contains { ERR_GET_LIB($0) == ERR_LIB_X509 && ERR_GET_REASON($0) == X509_R_KEY_VALUES_MISMATCH }
            SSL_CTX_free(ctx)
            return TLSError(message: keyMismatch ? mismatch : message, openSSLErrors: text)
        }
        guard reflow_ssl_ctx_set_min_tls12(ctx) == 1 else { throw fail("cannot set the minimum protocol to TLS 1.2") }
        reflow_ssl_ctx_set_server_options(ctx)
        reflow_ssl_ctx_set_partial_write_modes(ctx)
        guard SSL_CTX_use_certificate_chain_file(ctx, certificateFile) == 1 else {
            throw fail("cannot load the TLS certificate chain from '\(certificateFile)'")
        }
        guard SSL_CTX_use_PrivateKey_file(ctx, privateKeyFile, SSL_FILETYPE_PEM) == 1 else {
            throw fail("cannot load the TLS private key from '\(privateKeyFile)'")
        }
        guard SSL_CTX_check_private_key(ctx) == 1 else {
            throw fail(mismatch)
        }
        self.ctx = ctx
        warnings = Self.keyFileWarnings(privateKeyFile)
    }

    deinit { SSL_CTX_free(ctx) }

    /// The lowest protocol version accepted (`TLS1_2_VERSION`, 0x0303).
    var minProtocolVersion: Int { Int(reflow_ssl_ctx_get_min_proto_version(ctx)) }

    static func keyFileWarnings(_ path: String) -> [String] {
        var st = stat()
        guard stat(path, &st) == 0 else { return [] }
        let mode = st.st_mode & 0o777
        guard mode & 0o077 != 0 else { return [] }
        return ["the TLS private key '\(path)' is readable by group or others (mode \(String(mode, radix: 8))); chmod 600 it"]
    }
}

/// One TLS connection over a non-blocking socket, with POSIX-like `read`/`write`.
///
/// Not thread-safe: used only on its connection's serial queue. Every call clears the thread's
/// OpenSSL error queue before and after a failure, since that queue is per thread and Dispatch
/// runs many connections on the same threads (a stale entry would make `SSL_get_error` lie).
final class TLSSession {
    let context: TLSContext
    let ssl: OpaquePointer
    /// The last `read`/`write` returned EAGAIN because OpenSSL must write to the socket first
    /// (e.g. handshake messages while the send buffer is full): retry when writable.
    private(set) var wantsWrite = false
    /// The last `read`/`write` returned EAGAIN because OpenSSL must read from the socket first.
    private(set) var wantsRead = false
    private var fatal = false
    private var shutDown = false
    private var established = false

    init?(context: TLSContext, fd: Int32) {
        guard let ssl = SSL_new(context.ctx) else { ERR_clear_error(); return nil }
        guard SSL_set_fd(ssl, fd) == 1 else { SSL_free(ssl); ERR_clear_error(); return nil }
        SSL_set_accept_state(ssl)
        self.context = context
        self.ssl = ssl
    }

    deinit { SSL_free(ssl) }

    /// Whether the handshake has finished.
    var handshakeComplete: Bool {
        if !established && SSL_is_init_finished(ssl) == 1 { established = true }
        return established
    }

    /// Decrypted bytes buffered inside OpenSSL (the socket won't signal them again).
    var pending: Int { Int(SSL_pending(ssl)) }

    /// >0 bytes read, 0 at EOF, -1 with errno EAGAIN (see ``wantsWrite``) or EIO (fatal).
    func read(_ p: UnsafeMutableRawPointer, _ n: Int) -> Int {
        guard !fatal else { errno = EIO; return -1 }
        ERR_clear_error()
        var got = 0
        let rc = SSL_read_ex(ssl, p, n, &got)
        if rc == 1 { wantsRead = false; wantsWrite = false; return got }
        return failed(rc)
    }

    /// >0 bytes written, -1 with errno EAGAIN (see ``wantsRead``/``wantsWrite``) or EIO (fatal).
    func write(_ p: UnsafeRawPointer, _ n: Int) -> Int {
        guard !fatal else { errno = EIO; return -1 }
        ERR_clear_error()
        var put = 0
        let rc = SSL_write_ex(ssl, p, n, &put)
        if rc == 1 { wantsRead = false; wantsWrite = false; return put }
        return failed(rc)
    }

    private func failed(_ rc: Int32) -> Int {
        let e = SSL_get_error(ssl, rc)
        wantsRead = e == SSL_ERROR_WANT_READ
        wantsWrite = e == SSL_ERROR_WANT_WRITE
        if wantsRead || wantsWrite { errno = EAGAIN; return -1 }
        ERR_clear_error()
        if e == SSL_ERROR_ZERO_RETURN { return 0 }
        fatal = true  // SSL_ERROR_SSL / SSL_ERROR_SYSCALL: no further I/O, no SSL_shutdown
        errno = EIO
        return -1
    }

    /// Sends close_notify once (best effort; the result is ignored). Skipped after a fatal error
    /// or before the handshake has finished.
    func shutdown() {
        guard !shutDown, !fatal, handshakeComplete else { return }
        shutDown = true
        ERR_clear_error()
        _ = SSL_shutdown(ssl)
        ERR_clear_error()
    }
}
