import ReflowStore
import Foundation
import Synchronization

/// Free space of the data directory and the emergency reserve.
///
/// - The **floor** (`minFreeBytes`): below it `/readyz` answers 503 and submissions and uploads
///   get 507, so a full disk is visible before jobs fail on it.
/// - The **reserve**: a pre-allocated file (`dataDir/.reserve`, `posix_fallocate`). When a
///   record write fails with ENOSPC the reserve is deleted and the write retried, so the final
///   record of a job that filled the disk still reaches the disk. It is re-created once free
///   space is back above the floor.
public final class StorageGuard: Sendable {
    public let dataDir: String
    public let minFreeBytes: Int
    public let reserveBytes: Int
    /// Where the reserve lives.
    public var reservePath: String { dataDir + "/.reserve" }
    /// Free bytes for tests (nil: ask statvfs).
    let freeBytesOverride: Mutex<Int?> = Mutex(nil)

    public init(dataDir: String, minFreeBytes: Int, reserveBytes: Int) {
        self.dataDir = dataDir
        self.minFreeBytes = minFreeBytes
        self.reserveBytes = reserveBytes
    }

    /// Bytes available to the server on the data directory's file system (statvfs `f_bavail`).
    public func freeBytes() -> Int? {
        if let o = freeBytesOverride.withLock({ $0 }) { return o }
        var s = statvfs()
        guard statvfs(dataDir, &s) == 0 else { return nil }
        return Int(s.f_bavail) * Int(s.f_frsize)
    }

    /// Whether free space is below the configured floor (an unknown amount counts as low).
    public var isBelowFloor: Bool {
        guard minFreeBytes > 0 else { return false }
        guard let free = freeBytes() else { return true }
        return free < minFreeBytes
    }

    public var hasReserve: Bool {
        var st = stat()
        return stat(reservePath, &st) == 0 && Int(st.st_size) >= reserveBytes
    }

    /// Creates the reserve file if it is missing and space allows it (free space stays at or
    /// above the floor). Returns whether a reserve is in place.
    @discardableResult
    public func ensureReserve() -> Bool {
        guard reserveBytes > 0 else { return false }
        if hasReserve { return true }
        guard let free = freeBytes(), free - reserveBytes >= minFreeBytes else { return false }
        let fd = open(reservePath, O_WRONLY | O_CREAT | O_CLOEXEC, 0o600)
        guard fd >= 0 else { return false }
        let rc = posix_fallocate(fd, 0, off_t(reserveBytes))
        let synced = rc == 0 && fsync(fd) == 0
        close(fd)
        if !synced { unlink(reservePath); return false }
        return true
    }

    /// Deletes the reserve; returns whether there was one.
    @discardableResult
    public func releaseReserve() -> Bool {
        unlink(reservePath) == 0
    }

    /// Whether an error means "no space left" (ENOSPC or EDQUOT), as opposed to a broken store.
    public static func isOutOfSpace(_ error: any Error) -> Bool {
        if let e = error as? StoreError { return e.errno == ENOSPC || e.errno == EDQUOT }
        let ns = error as NSError
        if ns.domain == NSPOSIXErrorDomain { return ns.code == Int(ENOSPC) || ns.code == Int(EDQUOT) }
        if ns.domain == NSCocoaErrorDomain, ns.code == CocoaError.fileWriteOutOfSpace.rawValue { return true }
        if let underlying = ns.userInfo[NSUnderlyingErrorKey] as? NSError { return isOutOfSpace(underlying) }
        return false
    }
}
