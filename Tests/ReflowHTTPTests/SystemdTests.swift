import Glibc
import Testing
@testable import ReflowHTTP

/// A datagram receiver standing in for systemd's notify socket.
private final class Receiver {
    let fd: Int32
    /// The value to put in NOTIFY_SOCKET ("/tmp/…" or "@…").
    let notifyName: String
    private let unlinkPath: String?

    /// Binds at a fresh filesystem path (abstract == false) or abstract name (abstract == true).
    init?(abstract: Bool) {
        let tag = "reflowd-sdnotify-\(getpid())-\(UInt32.random(in: 0 ... .max))"
        let name = abstract ? "@" + tag : "/tmp/" + tag + ".sock"
        var bytes = Array(name.utf8)
        if abstract { bytes[0] = 0 }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        guard bytes.count <= MemoryLayout.size(ofValue: address.sun_path) else { return nil }
        withUnsafeMutableBytes(of: &address.sun_path) { $0.copyBytes(from: bytes) }
        let length = socklen_t(MemoryLayout<sockaddr_un>.offset(of: \sockaddr_un.sun_path) ?? 2) +
            socklen_t(bytes.count)
        let fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { return nil }
        let rc = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) }
        }
        guard rc == 0 else { close(fd); return nil }
        // Bound receive timeout so a missing datagram fails the test instead of hanging it.
        var timeout = timeval(tv_sec: 2, tv_usec: 0)
        _ = setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        self.fd = fd
        self.notifyName = name
        self.unlinkPath = abstract ? nil : name
    }

    /// The next datagram as a string, or nil on timeout.
    func receive() -> String? {
        var buffer = [UInt8](repeating: 0, count: 4096)
        let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
        guard n >= 0 else { return nil }
        return String(decoding: buffer[0 ..< n], as: UTF8.self)
    }

    /// True if nothing is queued right now.
    func isEmpty() -> Bool {
        var byte: UInt8 = 0
        return recv(fd, &byte, 1, Int32(MSG_DONTWAIT)) < 0
    }

    deinit {
        close(fd)
        if let unlinkPath { unlink(unlinkPath) }
    }
}

/// Sets (or unsets, for nil) environment variables for the duration of `body`, then restores them.
private func withEnvironment<T>(_ values: [String: String?], _ body: () throws -> T) rethrows -> T {
    var saved: [String: String?] = [:]
    for (key, value) in values {
        saved[key] = getenv(key).map { String(cString: $0) }
        if let value { setenv(key, value, 1) } else { unsetenv(key) }
    }
    defer {
        for (key, value) in saved {
            if let value { setenv(key, value, 1) } else { unsetenv(key) }
        }
    }
    return try body()
}

@Suite("SystemdNotify", .serialized)
struct SystemdTests {
    @Test("no NOTIFY_SOCKET: every call is a no-op returning false")
    func absentSocket() {
        withEnvironment(["NOTIFY_SOCKET": nil]) {
            #expect(!SystemdNotify.send("READY=1"))
            #expect(!SystemdNotify.ready(status: "x"))
            #expect(!SystemdNotify.watchdog())
            #expect(!SystemdNotify.stopping())
        }
    }

    @Test("delivers exact payloads", arguments: [false, true])
    func delivers(abstract: Bool) throws {
        let receiver = try #require(Receiver(abstract: abstract))
        withEnvironment(["NOTIFY_SOCKET": receiver.notifyName]) {
            #expect(SystemdNotify.send("STATUS=hello"))
            #expect(receiver.receive() == "STATUS=hello")

            #expect(SystemdNotify.ready(status: "listening on 127.0.0.1:8080"))
            #expect(receiver.receive() == "READY=1\nSTATUS=listening on 127.0.0.1:8080")

            #expect(SystemdNotify.ready())
            #expect(receiver.receive() == "READY=1")

            #expect(SystemdNotify.watchdog())
            #expect(receiver.receive() == "WATCHDOG=1")

            #expect(SystemdNotify.stopping())
            #expect(receiver.receive() == "STOPPING=1")

            #expect(SystemdNotify.status("2 running\n3 queued"))
            #expect(receiver.receive() == "STATUS=2 running 3 queued")

            #expect(SystemdNotify.extendTimeout(seconds: 1.5))
            #expect(receiver.receive() == "EXTEND_TIMEOUT_USEC=1500000")
            #expect(!SystemdNotify.extendTimeout(seconds: -1))
            #expect(!SystemdNotify.extendTimeout(seconds: .nan))

            #expect(receiver.isEmpty())
        }
    }

    @Test("abstract name is exact: no trailing NULs in the address")
    func abstractExactLength() throws {
        let receiver = try #require(Receiver(abstract: true))
        // A longer name that merely starts with the receiver's name must not reach it.
        withEnvironment(["NOTIFY_SOCKET": receiver.notifyName + "x"]) {
            #expect(!SystemdNotify.send("READY=1"))
        }
        #expect(receiver.isEmpty())
    }

    @Test("malformed NOTIFY_SOCKET values fail without trapping")
    func malformedSocket() {
        let tooLong = "/tmp/" + String(repeating: "a", count: 200)
        for bad in ["", "@", "/", "relative/path", "tmp/x.sock", tooLong, "@" + String(repeating: "b", count: 200),
                    "/tmp/reflowd-does-not-exist-\(getpid()).sock"] {
            withEnvironment(["NOTIFY_SOCKET": bad]) {
                #expect(!SystemdNotify.send("READY=1"), "NOTIFY_SOCKET=\(bad.prefix(40))")
            }
        }
    }

    @Test("watchdogInterval parses WATCHDOG_USEC and honours WATCHDOG_PID")
    func watchdogInterval() {
        let me = "\(getpid())"
        withEnvironment(["WATCHDOG_USEC": "20000000", "WATCHDOG_PID": nil]) {
            #expect(SystemdNotify.watchdogInterval() == 20)
        }
        withEnvironment(["WATCHDOG_USEC": "30000000", "WATCHDOG_PID": me]) {
            #expect(SystemdNotify.watchdogInterval() == 30)
        }
        withEnvironment(["WATCHDOG_USEC": "500", "WATCHDOG_PID": nil]) {
            #expect(SystemdNotify.watchdogInterval() == 0.0005)
        }
        withEnvironment(["WATCHDOG_USEC": "20000000", "WATCHDOG_PID": "\(getpid() + 1)"]) {
            #expect(SystemdNotify.watchdogInterval() == nil)
        }
        withEnvironment(["WATCHDOG_USEC": "20000000", "WATCHDOG_PID": "nope"]) {
            #expect(SystemdNotify.watchdogInterval() == nil)
        }
        withEnvironment(["WATCHDOG_USEC": nil, "WATCHDOG_PID": nil]) {
            #expect(SystemdNotify.watchdogInterval() == nil)
        }
        for bad in ["", "0", "-5", "+5", " 5", "5 ", "2e7", "20.5", "abc", "18446744073709551615",
                    "99999999999999999999999"] {
            withEnvironment(["WATCHDOG_USEC": bad, "WATCHDOG_PID": nil]) {
                #expect(SystemdNotify.watchdogInterval() == nil, "WATCHDOG_USEC=\(bad)")
            }
        }
    }

    @Test("pure watchdog parser")
    func pureParser() {
        #expect(SystemdNotify.watchdogInterval(usec: "20000000", pid: nil, selfPID: 7) == 20)
        #expect(SystemdNotify.watchdogInterval(usec: "20000000", pid: "7", selfPID: 7) == 20)
        #expect(SystemdNotify.watchdogInterval(usec: "20000000", pid: "8", selfPID: 7) == nil)
        #expect(SystemdNotify.watchdogInterval(usec: "20000000", pid: "0", selfPID: 0) == nil)
        #expect(SystemdNotify.watchdogInterval(usec: nil, pid: "7", selfPID: 7) == nil)
        #expect(SystemdNotify.parseUnsigned("18446744073709551615") == .max)
        #expect(SystemdNotify.parseUnsigned("18446744073709551616") == nil)
    }
}
