/// A failure inside ReflowCodec, with enough context to act on it.
///
/// Every codec call that can fail reports *which* underlying call failed (`operation`, e.g.
/// `"inflate"` or `"EVP_DigestInit_ex"`), which library it belongs to, the library's numeric code
/// when there is one, and a human-readable detail (zlib's `msg`, OpenSSL's error string, or
/// `strerror`). Codecs never trap on caller-supplied bytes; they throw this instead.
public struct CodecError: Error, CustomStringConvertible, Sendable, Equatable {
    /// Where a failure came from.
    public enum Source: String, Sendable, Equatable {
        /// zlib (`code` is a zlib return code such as `Z_DATA_ERROR`).
        case zlib
        /// OpenSSL libcrypto (`code` is the first `ERR_get_error()` value, truncated to 32 bits).
        case openSSL
        /// A POSIX call (`code` is `errno`).
        case posix
        /// The caller's arguments or data were rejected before any library call.
        case input
    }

    /// The call or step that failed, e.g. `"inflate"`, `"EVP_DigestUpdate"`, `"open"`.
    public var operation: String
    /// The library the failing call belongs to.
    public var source: Source
    /// The library's numeric result code, when it has one.
    public var code: Int32?
    /// Human-readable explanation (library message, `strerror`, or a validation message).
    public var detail: String
    /// The file involved, for file-based operations.
    public var path: String?

    /// Creates an error value.
    public init(operation: String, source: Source, code: Int32? = nil, detail: String, path: String? = nil) {
        self.operation = operation
        self.source = source
        self.code = code
        self.detail = detail
        self.path = path
    }

    public var description: String {
        var s = "ReflowCodec: \(operation) failed"
        if let path { s += " for '\(path)'" }
        switch (source, code) {
        case (.zlib, let c?): s += " (zlib \(CodecError.zlibCodeName(c)))"
        case (.openSSL, let c?): s += " (OpenSSL error 0x\(String(UInt32(bitPattern: c), radix: 16)))"
        case (.posix, let c?): s += " (errno \(c))"
        default: break
        }
        return s + ": " + detail
    }

    static func input(_ operation: String, _ detail: String) -> CodecError {
        CodecError(operation: operation, source: .input, detail: detail)
    }

    /// Symbolic name of a zlib return code, for messages.
    static func zlibCodeName(_ code: Int32) -> String {
        switch code {
        case 0: return "Z_OK"
        case 1: return "Z_STREAM_END"
        case 2: return "Z_NEED_DICT"
        case -1: return "Z_ERRNO"
        case -2: return "Z_STREAM_ERROR"
        case -3: return "Z_DATA_ERROR"
        case -4: return "Z_MEM_ERROR"
        case -5: return "Z_BUF_ERROR"
        case -6: return "Z_VERSION_ERROR"
        default: return "code \(code)"
        }
    }
}
