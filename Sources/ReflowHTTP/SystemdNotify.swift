import Glibc

/// The sd_notify(3) protocol without libsystemd (ECOSYSTEM §4.1).
///
/// systemd passes the path of a datagram socket in `$NOTIFY_SOCKET`: either a filesystem path
/// ("/run/systemd/notify") or an abstract-namespace name written with a leading '@'. A state
/// change is one datagram of newline-separated `KEY=VALUE` lines. Outside systemd the variable
/// is absent and every call is a cheap no-op that returns false.
///
/// All functions are safe to call from any thread; none of them traps on malformed environment
/// data (it simply reports failure).
public enum SystemdNotify {
    /// Sends `state` (e.g. "READY=1\nSTATUS=listening") to `$NOTIFY_SOCKET`.
    /// Returns true only if the whole datagram was accepted by the kernel.
    @discardableResult
    public static func send(_ state: String) -> Bool {
        guard let socketPath = environment("NOTIFY_SOCKET") else { return false }
        return send(state, to: socketPath)
    }

    /// READY=1, sent once the listener is bound and state is loaded. `status` becomes STATUS=.
    @discardableResult
    public static func ready(status: String? = nil) -> Bool {
        send(message("READY=1", status: status))
    }

    /// STOPPING=1, sent when shutdown begins (SIGTERM), before draining jobs.
    @discardableResult
    public static func stopping(status: String? = nil) -> Bool {
        send(message("STOPPING=1", status: status))
    }

    /// WATCHDOG=1: the keep-alive ping. Send it every half `watchdogInterval()` seconds from the
    /// control queue, so that a wedged server stops pinging.
    @discardableResult
    public static func watchdog() -> Bool {
        send("WATCHDOG=1")
    }

    /// STATUS=<one line>, shown by `systemctl status` (e.g. "2 running, 3 queued").
    @discardableResult
    public static func status(_ text: String) -> Bool {
        send("STATUS=" + oneLine(text))
    }

    /// EXTEND_TIMEOUT_USEC=…: asks for more time during a slow start or stop (e.g. a checkpoint
    /// save while draining). Non-positive or non-finite values are ignored.
    @discardableResult
    public static func extendTimeout(seconds: Double) -> Bool {
        guard seconds.isFinite, seconds > 0, seconds < 1e12 else { return false }
        return send("EXTEND_TIMEOUT_USEC=\(UInt64((seconds * 1_000_000).rounded(.up)))")
    }

    /// The watchdog interval in seconds from `$WATCHDOG_USEC`, or nil if the watchdog is off, the
    /// value is malformed, or `$WATCHDOG_PID` is set and names another process (the variables
    /// were inherited, not meant for us). Callers ping at half this interval.
    public static func watchdogInterval() -> Double? {
        watchdogInterval(usec: environment("WATCHDOG_USEC"), pid: environment("WATCHDOG_PID"),
                         selfPID: Int64(getpid()))
    }

    // MARK: - Internals (internal for tests)

    /// Pure form of `watchdogInterval()`, mirroring sd_watchdog_enabled(3).
    static func watchdogInterval(usec: String?, pid: String?, selfPID: Int64) -> Double? {
        guard let usec, let micros = parseUnsigned(usec), micros > 0, micros < UInt64.max else { return nil }
        if let pid {
            guard let owner = parseUnsigned(pid), owner > 0, owner == UInt64(clamping: selfPID) else { return nil }
        }
        return Double(micros) / 1_000_000
    }

    /// Strict decimal parse: ASCII digits only, no sign, no whitespace, no overflow.
    static func parseUnsigned(_ text: String) -> UInt64? {
        guard !text.isEmpty else { return nil }
        var value: UInt64 = 0
        for c in text.utf8 {
            guard c >= 48, c <= 57 else { return nil }
            let (m, o1) = value.multipliedReportingOverflow(by: 10)
            let (s, o2) = m.addingReportingOverflow(UInt64(c - 48))
            guard !o1, !o2 else { return nil }
            value = s
        }
        return value
    }

    static func message(_ head: String, status: String?) -> String {
        guard let status else { return head }
        return head + "\nSTATUS=" + oneLine(status)
    }

    /// STATUS must be a single line; newlines would start a bogus KEY=VALUE.
    static func oneLine(_ text: String) -> String {
        String(text.map { $0 == "\n" || $0 == "\r" || $0 == "\r\n" ? " " : $0 })
    }

    static func environment(_ name: String) -> String? {
        guard let raw = getenv(name) else { return nil }
        return String(cString: raw)
    }

    /// Sends one datagram to `socketPath` ("/path" or "@abstract").
    static func send(_ state: String, to socketPath: String) -> Bool {
        var pathBytes = Array(socketPath.utf8)
        guard pathBytes.count >= 2, pathBytes[0] == UInt8(ascii: "/") || pathBytes[0] == UInt8(ascii: "@")
        else { return false }
        if pathBytes[0] == UInt8(ascii: "@") { pathBytes[0] = 0 }   // abstract namespace
        // A filesystem path must not contain NULs (the kernel would cut it short).
        if pathBytes[0] != 0, pathBytes.contains(0) { return false }

        var address = sockaddr_un()
        let capacity = MemoryLayout.size(ofValue: address.sun_path)
        guard pathBytes.count <= capacity else { return false }
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            raw.copyBytes(from: pathBytes)
        }
        // Family field plus the exact name length: for abstract names a full sizeof(sockaddr_un)
        // would make trailing NULs part of the name.
        let length = socklen_t(MemoryLayout<sockaddr_un>.offset(of: \sockaddr_un.sun_path) ?? 2) +
            socklen_t(pathBytes.count)

        let fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { return false }
        defer { close(fd) }

        let payload = Array(state.utf8)
        let flags = Int32(MSG_NOSIGNAL)
        var sent: Int
        repeat {
            sent = payload.withUnsafeBytes { bytes in
                withUnsafePointer(to: &address) { pointer in
                    pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { sa in
                        sendto(fd, bytes.baseAddress, bytes.count, flags, sa, length)
                    }
                }
            }
        } while sent < 0 && errno == EINTR
        return sent == payload.count
    }
}
