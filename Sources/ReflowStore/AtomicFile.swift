import Glibc

/// Crash-safe whole-file replacement and bounded whole-file reads, over raw POSIX calls.
///
/// `write(_:to:)` follows the classic durable-replace protocol: the
/// bytes go to a temporary file in the *same directory* (so `rename` stays on one file system and is
/// atomic), the file is `fsync`ed, renamed over the destination, and the directory is `fsync`ed so
/// the new directory entry itself survives a crash. Readers therefore see either the old file or
/// the complete new one, never a torn write.
public enum AtomicFile {
    /// Largest single `write(2)` request (Linux caps one call at 0x7ffff000 bytes anyway).
    static let maxWriteStep = 1 << 30

    /// Atomically replaces the file at `path` with `bytes`.
    ///
    /// - Parameters:
    ///   - bytes: New contents.
    ///   - path: Destination; its directory must exist. Permissions of a new file are `0644 & ~umask`.
    /// - Throws: ``StoreError`` naming the failed call, errno and path. On any failure before the
    ///   rename, the temporary file is removed and the destination is untouched.
    public static func write(_ bytes: [UInt8], to path: String) throws {
        try bytes.withUnsafeBytes { try write($0, to: path) }
    }

    /// Atomically replaces the file at `path` with the bytes in `buffer`. Same protocol as the `[UInt8]` overload.
    public static func write(_ buffer: UnsafeRawBufferPointer, to path: String) throws {
        let (directory, base) = try split(path)
        let random = String(UInt64.random(in: 0...UInt64.max), radix: 16)
        let tempName = ".\(base).tmp-\(getpid())-\(random)"
        let tempPath = directory == "/" ? "/" + tempName : directory + "/" + tempName

        var fd: Int32
        repeat {
            fd = open(tempPath, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o644)
        } while fd < 0 && Glibc.errno == EINTR
        guard fd >= 0 else { throw StoreError.posix("open", path: tempPath) }
        // Keep the permission bits of the file being replaced (a 0600 key stays 0600).
        var existing = stat()
        if stat(path, &existing) == 0 { _ = fchmod(fd, existing.st_mode & 0o7777) }

        var fdOpen = true
        var renamed = false
        defer {
            if fdOpen { close(fd) }
            if !renamed { unlink(tempPath) }
        }

        var offset = 0
        while offset < buffer.count {
            let step = min(buffer.count - offset, maxWriteStep)
            let n = Glibc.write(fd, buffer.baseAddress.map { $0 + offset }, step)
            if n < 0 {
                if Glibc.errno == EINTR { continue }
                throw StoreError.posix("write", path: tempPath)
            }
            if n == 0 {  // should not happen for a regular file; avoid spinning forever
                throw StoreError(call: "write", errno: EIO, message: "write returned 0 bytes", path: tempPath)
            }
            offset += n
        }
        guard fsync(fd) == 0 else { throw StoreError.posix("fsync", path: tempPath) }
        fdOpen = false
        // close() must not be retried on EINTR on Linux: the descriptor is already released.
        guard close(fd) == 0 else { throw StoreError.posix("close", path: tempPath) }
        guard rename(tempPath, path) == 0 else { throw StoreError.posix("rename", path: path) }
        renamed = true
        try syncDirectory(directory)
    }

    /// Reads a whole file, refusing files larger than `maxBytes` before allocating for them.
    ///
    /// - Throws: ``StoreError`` for I/O failures, or with call `"size"` when the file is larger than
    ///   `maxBytes` (checked with `fstat` first and again while reading, in case it grows).
    public static func read(path: String, maxBytes: Int) throws -> [UInt8] {
        var fd: Int32
        repeat { fd = open(path, O_RDONLY | O_CLOEXEC) } while fd < 0 && Glibc.errno == EINTR
        guard fd >= 0 else { throw StoreError.posix("open", path: path) }
        defer { close(fd) }

        var info = stat()
        guard fstat(fd, &info) == 0 else { throw StoreError.posix("fstat", path: path) }
        let size = max(0, Int(info.st_size))  // 0 for pipes and other non-regular files
        guard size <= maxBytes else { throw tooLarge(path: path, limit: maxBytes, size: size) }

        // Read straight into the result for the size fstat reported, then keep reading in chunks
        // in case the file grew since (still bounded by maxBytes).
        var out = [UInt8](repeating: 0, count: size)
        var filled = 0
        while filled < size {
            let n = out.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress.map { $0 + filled }, size - filled) }
            if n < 0 {
                if Glibc.errno == EINTR { continue }
                throw StoreError.posix("read", path: path)
            }
            if n == 0 { break }  // file shrank
            filled += n
        }
        if filled < size { out.removeLast(size - filled); return out }

        var chunk = [UInt8](repeating: 0, count: 1 << 16)
        while true {
            let n = chunk.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
            if n < 0 {
                if Glibc.errno == EINTR { continue }
                throw StoreError.posix("read", path: path)
            }
            if n == 0 { return out }
            guard n <= maxBytes - out.count else {
                throw tooLarge(path: path, limit: maxBytes, size: nil)
            }
            out.append(contentsOf: chunk[0..<n])
        }
    }

    private static func tooLarge(path: String, limit: Int, size: Int?) -> StoreError {
        let what = size.map { "file is \($0) bytes" } ?? "file grew while reading"
        return StoreError(call: "size", errno: 0, message: "\(what), limit is \(limit) bytes", path: path)
    }

    /// Splits `path` into (directory, basename); rejects paths without a file name.
    static func split(_ path: String) throws -> (directory: String, base: String) {
        let utf8 = Array(path.utf8)
        guard !utf8.isEmpty, utf8.last != UInt8(ascii: "/"), !utf8.contains(0) else {
            throw StoreError(call: "path", errno: EINVAL, message: "not a file path", path: path)
        }
        guard let slash = utf8.lastIndex(of: UInt8(ascii: "/")) else { return (".", path) }
        let base = String(decoding: utf8[(slash + 1)...], as: UTF8.self)
        guard base != ".", base != ".." else {
            throw StoreError(call: "path", errno: EINVAL, message: "not a file path", path: path)
        }
        let directory = slash == 0 ? "/" : String(decoding: utf8[..<slash], as: UTF8.self)
        return (directory, base)
    }

    /// `fsync` on the directory makes the rename itself durable.
    public static func syncDirectory(_ directory: String) throws {
        var dfd: Int32
        repeat { dfd = open(directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC) } while dfd < 0 && Glibc.errno == EINTR
        guard dfd >= 0 else { throw StoreError.posix("open(directory)", path: directory) }
        defer { close(dfd) }
        guard fsync(dfd) == 0 else { throw StoreError.posix("fsync(directory)", path: directory) }
    }
}
