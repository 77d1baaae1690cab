import Foundation
import Glibc
import Testing
@testable import ReflowHTTP

/// Runs a program; returns (exit status, stdout, stderr). stderr goes to a file so a chatty
/// program can't block on a full pipe while stdout is being read.
private func run(_ program: String, _ args: [String]) throws -> (status: Int32, out: String, err: String) {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: program)
    p.arguments = args
    let out = Pipe()
    let errPath = NSTemporaryDirectory() + "reflowd-tls-err-\(UUID().uuidString)"
    _ = FileManager.default.createFile(atPath: errPath, contents: nil)
    defer { try? FileManager.default.removeItem(atPath: errPath) }
    let errHandle = try FileHandle(forWritingTo: URL(fileURLWithPath: errPath))
    p.standardOutput = out
    p.standardError = errHandle
    p.standardInput = FileHandle.nullDevice
    try p.run()
    let data = out.fileHandleForReading.readDataToEndOfFile()
    p.waitUntilExit()
    try? errHandle.close()
    let err = (try? String(contentsOfFile: errPath, encoding: .utf8)) ?? ""
    return (p.terminationStatus, String(decoding: data, as: UTF8.self), err)
}

/// The absolute path of a program on PATH, or nil.
private func which(_ name: String) -> String? {
    for dir in (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin").split(separator: ":") {
        let path = "\(dir)/\(name)"
        if access(path, X_OK) == 0 { return path }
    }
    return nil
}

/// A temp dir with a self-signed certificate (c.pem) and its key (k.pem), made by the openssl CLI.
private final class CertDir {
    let dir: String
    let openssl: String
    var cert: String { dir + "/c.pem" }
    var key: String { dir + "/k.pem" }

    /// Nil (with a printed note) when the openssl CLI is missing: the test is then skipped.
    init?() throws {
        guard let openssl = which("openssl") else {
            print("TLSTests: skipped, no openssl CLI on PATH")
            return nil
        }
        self.openssl = openssl
        dir = NSTemporaryDirectory() + "reflowd-tls-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let r = try run(openssl, ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert,
                                  "-days", "1", "-subj", "/CN=localhost"])
        guard r.status == 0 else { throw TestFailure("openssl req failed: \(r.err)") }
        chmod(key, 0o600)
    }

    deinit { try? FileManager.default.removeItem(atPath: dir) }
}

private struct TestFailure: Error, CustomStringConvertible {
    var description: String
    init(_ d: String) { description = d }
}

/// Connects a blocking TCP socket to 127.0.0.1:port with a receive timeout.
private func connectRaw(_ port: Int, receiveTimeout: Int = 5) throws -> Int32 {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { throw TestFailure("socket: \(errno)") }
    var tv = timeval(tv_sec: receiveTimeout, tv_usec: 0)
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
    var a = sockaddr_in()
    a.sin_family = sa_family_t(AF_INET)
    a.sin_port = UInt16(port).bigEndian
    a.sin_addr.s_addr = inet_addr("127.0.0.1")
    let rc = withUnsafePointer(to: &a) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
    }
    guard rc == 0 else { close(fd); throw TestFailure("connect: \(errno)") }
    return fd
}

/// Reads until EOF, a reset or the receive timeout; returns (bytes read, closed by the server).
private func readUntilClosed(_ fd: Int32) -> (Int, Bool) {
    var total = 0
    var buf = [UInt8](repeating: 0, count: 4096)
    while true {
        let n = buf.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
        if n > 0 { total += n; continue }
        if n == 0 { return (total, true) }
        if errno == EINTR { continue }
        return (total, errno == ECONNRESET)  // EAGAIN: the receive timeout expired, still open
    }
}

@Suite("TLS", .serialized)
struct TLSTests {
    /// A TLS server whose handler answers "hello <path>", `/big` with 4 MiB, and POST with the body size.
    private func startServer(_ certs: CertDir, handshakeTimeout: Double = 10) throws -> HTTPServer {
        var config = HTTPServerConfig()
        config.port = 0
        config.tls = try TLSContext(certificateFile: certs.cert, privateKeyFile: certs.key)
        config.tlsHandshakeTimeout = handshakeTimeout
        return try HTTPServer(config: config) { req, _ in
            if req.method == "POST" { return .text(200, "got \(req.body.count)") }
            if req.head.path == "/big" {
                return HTTPResponse(status: 200, body: (0 ..< 4 << 20).map { UInt8(truncatingIfNeeded: $0 &* 31) })
            }
            return .text(200, "hello \(req.head.path)")
        }
    }

    private func curl() -> String? {
        guard let c = which("curl") else { print("TLSTests: skipped, no curl on PATH"); return nil }
        return c
    }

    @Test("a GET over TLS 1.2 and 1.3 gets its body; the minimum protocol is TLS 1.2")
    func servesOverTLS() throws {
        guard let certs = try CertDir(), let curl = curl() else { return }
        let server = try startServer(certs)
        defer { server.stopAccepting(); server.closeAll() }
        #expect(server.config.tls?.minProtocolVersion == 0x0303)
        let url = "https://127.0.0.1:\(server.port)/x"
        let r = try run(curl, ["-sSk", "--max-time", "10", url])
        #expect(r.status == 0 && r.out == "hello /x", "\(r)")
        let v12 = try run(curl, ["-sSk", "--max-time", "10", "--tlsv1.2", "--tls-max", "1.2", "-w", " %{ssl_verify_result}", url])
        #expect(v12.status == 0 && v12.out.hasPrefix("hello /x"), "\(v12)")
        let v13 = try run(curl, ["-sSk", "--max-time", "10", "--tlsv1.3", url])
        #expect(v13.status == 0 && v13.out == "hello /x", "\(v13)")
    }

    @Test("TLS 1.0 and 1.1 are refused")
    func refusesOldProtocols() throws {
        guard let certs = try CertDir(), let curl = curl() else { return }
        let server = try startServer(certs)
        defer { server.stopAccepting(); server.closeAll() }
        let url = "https://127.0.0.1:\(server.port)/x"
        let r = try run(curl, ["-sSk", "--max-time", "10", "--tlsv1", "--tls-max", "1.1", url])
        #expect(r.status != 0 && !r.out.contains("hello"), "\(r)")
        // Also with a client that is itself willing to speak TLS 1.1 (security level 0).
        let s = try run(certs.openssl, ["s_client", "-connect", "127.0.0.1:\(server.port)", "-tls1_1",
                                        "-cipher", "DEFAULT@SECLEVEL=0"])
        #expect(s.status != 0, "\(s.out.suffix(500)) \(s.err.suffix(500))")
        // The server is still fine.
        let ok = try run(curl, ["-sSk", "--max-time", "10", url])
        #expect(ok.out == "hello /x", "\(ok)")
    }

    @Test("two requests share one TLS connection (keep-alive)")
    func keepAlive() throws {
        guard let certs = try CertDir(), let curl = curl() else { return }
        let server = try startServer(certs)
        defer { server.stopAccepting(); server.closeAll() }
        let base = "https://127.0.0.1:\(server.port)"
        let before = server.stats.accepted
        let r = try run(curl, ["-sSk", "--max-time", "10", base + "/a", base + "/b"])
        #expect(r.status == 0 && r.out == "hello /ahello /b", "\(r)")
        #expect(server.stats.accepted - before == 1)
        #expect(server.stats.requests >= 2)
    }

    @Test("a plain-HTTP request to the TLS port is closed, and TLS still works afterwards")
    func plainHTTPOnTLSPort() throws {
        guard let certs = try CertDir(), let curl = curl() else { return }
        let server = try startServer(certs)
        defer { server.stopAccepting(); server.closeAll() }
        let fd = try connectRaw(server.port)
        defer { close(fd) }
        let request = Array("GET /x HTTP/1.1\r\nHost: localhost\r\n\r\n".utf8)
        #expect(request.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) } == request.count)
        let (_, closedByServer) = readUntilClosed(fd)
        #expect(closedByServer)
        let r = try run(curl, ["-sSk", "--max-time", "10", "https://127.0.0.1:\(server.port)/after"])
        #expect(r.status == 0 && r.out == "hello /after", "\(r)")
    }

    @Test("a client that connects and sends nothing is closed after the handshake timeout")
    func handshakeTimeout() throws {
        guard let certs = try CertDir() else { return }
        let server = try startServer(certs, handshakeTimeout: 1)
        defer { server.stopAccepting(); server.closeAll() }
        let fd = try connectRaw(server.port, receiveTimeout: 8)
        defer { close(fd) }
        let start = monotonicNow()
        let (bytes, closedByServer) = readUntilClosed(fd)
        let elapsed = monotonicNow() - start
        #expect(closedByServer && bytes == 0)
        #expect(elapsed >= 0.9 && elapsed < 4, "closed after \(elapsed) s")
        // The connection is gone from the server's table too.
        for _ in 0 ..< 50 where server.openConnections > 0 { usleep(20_000) }
        #expect(server.openConnections == 0)
    }

    @Test("large bodies in both directions (partial TLS writes, several records per read)")
    func largeBodies() throws {
        guard let certs = try CertDir(), let curl = curl() else { return }
        let server = try startServer(certs)
        defer { server.stopAccepting(); server.closeAll() }
        let base = "https://127.0.0.1:\(server.port)"
        let big = try run(curl, ["-sSk", "--max-time", "30", "-o", "/dev/null", "-w", "%{http_code} %{size_download}", base + "/big"])
        #expect(big.out == "200 \(4 << 20)", "\(big)")
        // A slow reader: the kernel buffer fills, TLS writes hit EAGAIN and resume on writability.
        let slow = try run(curl, ["-sSk", "--max-time", "30", "--limit-rate", "2M", "-o", "/dev/null", "-w", "%{http_code} %{size_download}", base + "/big"])
        #expect(slow.out == "200 \(4 << 20)", "\(slow)")
        let upload = certs.dir + "/upload.bin"
        try Data((0 ..< 3_000_000).map { UInt8(truncatingIfNeeded: $0 &* 7) }).write(to: URL(fileURLWithPath: upload))
        let post = try run(curl, ["-sSk", "--max-time", "30", "--data-binary", "@" + upload, base + "/up"])
        #expect(post.out == "got 3000000", "\(post)")
    }

    @Test("TLSContext names the file for a missing certificate or key and refuses a key that doesn't match")
    func contextErrors() throws {
        guard let certs = try CertDir() else { return }
        let missing = certs.dir + "/nope.pem"
        do {
            _ = try TLSContext(certificateFile: missing, privateKeyFile: certs.key)
            Issue.record("a missing certificate was accepted")
        } catch let e as TLSError {
            #expect(e.description.contains("certificate") && e.description.contains(missing), "\(e)")
            #expect(!e.openSSLErrors.isEmpty, "\(e)")
        }
        do {
            _ = try TLSContext(certificateFile: certs.cert, privateKeyFile: missing)
            Issue.record("a missing key was accepted")
        } catch let e as TLSError {
            #expect(e.description.contains("private key") && e.description.contains(missing), "\(e)")
        }
        let otherKey = certs.dir + "/other.pem"
        let g = try run(certs.openssl, ["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", otherKey])
        try #require(g.status == 0, "\(g.err)")
        do {
            _ = try TLSContext(certificateFile: certs.cert, privateKeyFile: otherKey)
            Issue.record("a key that doesn't match the certificate was accepted")
        } catch let e as TLSError {
            #expect(e.description.contains("does not match") && e.description.contains(otherKey), "\(e)")
        }
        // A good pair loads; a group/world-readable key only warns.
        chmod(certs.key, 0o600)
        #expect(try TLSContext(certificateFile: certs.cert, privateKeyFile: certs.key).warnings.isEmpty)
        chmod(certs.key, 0o644)
        let warned = try TLSContext(certificateFile: certs.cert, privateKeyFile: certs.key).warnings
        #expect(warned.count == 1 && warned[0].contains("644"), "\(warned)")
    }
}
