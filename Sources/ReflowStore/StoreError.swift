import Glibc

/// A failed file-system call, with the call, `errno`, its `strerror` text and the path.
///
/// ```
/// ReflowStore: open failed for '/no/such/dir/.x.tmp-1234-9f3a…': No such file or directory (errno 2)
/// ```
public struct StoreError: Error, CustomStringConvertible, Sendable, Equatable {
    /// The system call or step that failed: `"open"`, `"write"`, `"fsync"`, `"close"`, `"rename"`,
    /// `"fsync(directory)"`, `"fstat"`, `"read"`, or `"path"` / `"size"` for validation failures.
    public var call: String
    /// `errno` at the time of failure (0 for validation failures that have no errno).
    public var errno: Int32
    /// `strerror(errno)`, or a validation message when `errno` is 0.
    public var message: String
    /// The path the call operated on.
    public var path: String

    /// Creates an error value.
    public init(call: String, errno: Int32, message: String, path: String) {
        self.call = call
        self.errno = errno
        self.message = message
        self.path = path
    }

    /// Captures the current `errno` for `call` on `path`.
    static func posix(_ call: String, path: String) -> StoreError {
        let code = Glibc.errno
        return StoreError(call: call, errno: code, message: String(cString: strerror(code)), path: path)
    }

    public var description: String {
        errno != 0
            ? "ReflowStore: \(call) failed for '\(path)': \(message) (errno \(errno))"
            : "ReflowStore: \(call) failed for '\(path)': \(message)"
    }
}
