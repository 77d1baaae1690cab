import COpenSSL
import Glibc

/// SHA-256 (FIPS 180-4) through OpenSSL's EVP digest interface.
///
/// ```swift
/// SHA256.hex(of: Array("abc".utf8))
/// // "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
///
/// var hasher = try SHA256.Hasher()
/// hasher.update(part1)
/// hasher.update(part2)
/// let hex = try hasher.finalizeHex()
/// ```
public enum SHA256 {
    /// Size of a SHA-256 digest in bytes.
    public static let digestByteCount = 32
    /// Chunk size used by ``hexOfFile(path:)``: 1 MiB.
    public static let fileChunkSize = 1 << 20

    /// Lower-case hex SHA-256 of a byte buffer.
    ///
    /// Digesting cannot fail on any input; the only failure mode is libcrypto itself being unable to
    /// allocate or initialise SHA-256 (out of memory, or a broken OpenSSL provider configuration),
    /// which traps with the OpenSSL error. Use ``Hasher`` to receive that as a thrown error instead.
    public static func hex(of buffer: UnsafeRawBufferPointer) -> String {
        var digest = [UInt8](repeating: 0, count: Int(EVP_MAX_MD_SIZE))
        var length: UInt32 = 0
        let ok = digest.withUnsafeMutableBufferPointer { out in
            EVP_Digest(buffer.baseAddress, buffer.count, out.baseAddress, &length, EVP_sha256(), nil)
        }
        guard ok == 1, Int(length) == digestByteCount else {
            let error = openSSLError("EVP_Digest")
            fatalError("\(error)")  // environment failure, independent of the input bytes
        }
        return hexString(digest[0..<digestByteCount])
    }

    /// Lower-case hex SHA-256 of any byte sequence (`[UInt8]`, `ArraySlice<UInt8>`, `"s".utf8`, ...).
    public static func hex(of bytes: some Sequence<UInt8>) -> String {
        if let result = bytes.withContiguousStorageIfAvailable({ hex(of: UnsafeRawBufferPointer($0)) }) {
            return result
        }
        return Array(bytes).withUnsafeBytes { hex(of: $0) }
    }

    /// Lower-case hex SHA-256 of a file's contents, read in 1 MiB chunks.
    ///
    /// - Throws: ``CodecError`` with source `.posix` naming the failing call (`open`, `read`) and
    ///   the path, or `.openSSL` if the digest cannot be initialised.
    public static func hexOfFile(path: String) throws -> String {
        var fd: Int32
        repeat { fd = open(path, O_RDONLY | O_CLOEXEC) } while fd < 0 && errno == EINTR
        guard fd >= 0 else { throw posixError("open", path: path) }
        defer { close(fd) }

        var hasher = try Hasher()
        var chunk = [UInt8](repeating: 0, count: fileChunkSize)
        while true {
            let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n < 0 {
                if errno == EINTR { continue }
                throw posixError("read", path: path)
            }
            if n == 0 { break }
            chunk.withUnsafeBytes { hasher.update(UnsafeRawBufferPointer(rebasing: $0[0..<n])) }
        }
        return try hasher.finalizeHex()
    }

    /// An incremental SHA-256 computation over an `EVP_MD_CTX`.
    ///
    /// Non-copyable because it owns the OpenSSL context (freed on `deinit`).
    /// ``finalizeHex()`` consumes the hasher.
    public struct Hasher: ~Copyable {
        private let context: OpaquePointer
        private var failure: CodecError?

        /// Creates a hasher (`EVP_MD_CTX_new` + `EVP_DigestInit_ex(EVP_sha256())`).
        /// - Throws: ``CodecError`` (source `.openSSL`) if OpenSSL cannot allocate or initialise.
        public init() throws {
            guard let ctx = EVP_MD_CTX_new() else { throw SHA256.openSSLError("EVP_MD_CTX_new") }
            guard EVP_DigestInit_ex(ctx, EVP_sha256(), nil) == 1 else {
                let error = SHA256.openSSLError("EVP_DigestInit_ex")
                EVP_MD_CTX_free(ctx)
                throw error
            }
            context = ctx
        }

        deinit { EVP_MD_CTX_free(context) }

        /// Feeds bytes. A libcrypto failure here is remembered and thrown by ``finalizeHex()``.
        public mutating func update(_ buffer: UnsafeRawBufferPointer) {
            guard failure == nil, buffer.count > 0 else { return }
            if EVP_DigestUpdate(context, buffer.baseAddress, buffer.count) != 1 {
                failure = SHA256.openSSLError("EVP_DigestUpdate")
            }
        }

        /// Feeds any byte sequence (`[UInt8]`, `ArraySlice<UInt8>`, `"s".utf8`, ...).
        public mutating func update(_ bytes: some Sequence<UInt8>) {
            let done: Void? = bytes.withContiguousStorageIfAvailable { update(UnsafeRawBufferPointer($0)) }
            if done == nil { Array(bytes).withUnsafeBytes { update($0) } }
        }

        /// Finishes the digest and returns it as 64 lower-case hex characters.
        /// - Throws: ``CodecError`` if an earlier update or `EVP_DigestFinal_ex` failed.
        public consuming func finalizeHex() throws -> String {
            if let failure { throw failure }
            var digest = [UInt8](repeating: 0, count: Int(EVP_MAX_MD_SIZE))
            var length: UInt32 = 0
            let ok = digest.withUnsafeMutableBufferPointer { EVP_DigestFinal_ex(context, $0.baseAddress, &length) }
            guard ok == 1, Int(length) == SHA256.digestByteCount else {
                throw SHA256.openSSLError("EVP_DigestFinal_ex")
            }
            return SHA256.hexString(digest[0..<SHA256.digestByteCount])
        }
    }

    static func hexString(_ bytes: some Collection<UInt8>) -> String {
        let digits = Array("0123456789abcdef".utf8)
        var out = [UInt8]()
        out.reserveCapacity(bytes.count * 2)
        for b in bytes {
            out.append(digits[Int(b >> 4)])
            out.append(digits[Int(b & 0x0f)])
        }
        return String(decoding: out, as: UTF8.self)
    }

    static func openSSLError(_ operation: String) -> CodecError {
        let code = ERR_get_error()
        ERR_clear_error()
        guard code != 0 else {
            return CodecError(operation: operation, source: .openSSL, detail: "no OpenSSL error queued")
        }
        var text = [CChar](repeating: 0, count: 256)
        ERR_error_string_n(code, &text, text.count)
        let detail = String(decoding: text.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        return CodecError(operation: operation, source: .openSSL,
                          code: Int32(truncatingIfNeeded: code), detail: detail)
    }

    static func posixError(_ operation: String, path: String) -> CodecError {
        let e = errno
        return CodecError(operation: operation, source: .posix, code: e,
                          detail: String(cString: strerror(e)), path: path)
    }
}
