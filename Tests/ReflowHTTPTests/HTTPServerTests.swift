import Foundation
import Glibc
import Testing
@testable import ReflowHTTP

/// A raw TCP connection for socket-level tests: send exact bytes, read whatever comes back.
final class RawSocket {
    let fd: Int32

    init(port: Int, host: String = "127.0.0.1") throws {
        var hints = addrinfo()
        hints.ai_family = AF_UNSPEC
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        var res: UnsafeMutablePointer<addrinfo>?
        guard getaddrinfo(host, String(port), &hints, &res) == 0, let a = res else { throw TestError("getaddrinfo") }
        defer { freeaddrinfo(res) }
        fd = socket(a.pointee.ai_family, Int32(SOCK_STREAM.rawValue), 0)
        var tv = timeval(tv_sec: 5, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        guard connect(fd, a.pointee.ai_addr, a.pointee.ai_addrlen) == 0 else { close(fd); throw TestError("connect errno \(errno)") }
    }

    deinit { close(fd) }

    func send(_ s: String) { send(Array(s.utf8)) }
    func send(_ b: [UInt8]) { _ = b.withUnsafeBytes { Glibc.send(fd, $0.baseAddress, b.count, Int32(MSG_NOSIGNAL)) } }

    /// Reads until the peer closes, `until` appears, or the timeout (5 s) passes.
    func read(until marker: String? = nil, max: Int = 1 << 20) -> (text: String, closed: Bool) {
        var out = [UInt8]()
        var buf = [UInt8](repeating: 0, count: 65536)
        while out.count < max {
            let n = buf.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n == 0 { return (String(decoding: out, as: UTF8.self), true) }
            if n < 0 { break }
            out += buf[0..<n]
            if let marker, String(decoding: out, as: UTF8.self).components(separatedBy: marker).count > 1 { break }
        }
        return (String(decoding: out, as: UTF8.self), false)
    }
}

struct TestError: Error, CustomStringConvertible {
    let description: String
    init(_ d: String) { description = d }
}

/// Starts a server whose handler echoes method, target and body length.
func echoServer(_ edit: (inout HTTPServerConfig) -> Void = { _ in }) throws -> HTTPServer {
    var c = HTTPServerConfig()
    c.port = 0
    edit(&c)
    return try HTTPServer(config: c) { req, responder in
        if req.target == "/slow" {
            DispatchQueue.global().asyncAfter(deadline: .now() + 0.2) { responder.send(.text(200, "slow")) }
            return nil
        }
        if req.target == "/stream" {
            return HTTPResponse(status: 200) { w in
                for i in 0..<3 { w.write(Array("part\(i);".utf8)) }
            }
        }
        return .text(200, "\(req.method) \(req.target) \(req.body.count)")
    }
}

@Suite("HTTP server (sockets)", .serialized)
struct HTTPServerTests {
    @Test("keep-alive and pipelining: responses come back in request order, the slow one included")
    func pipelining() throws {
        let server = try echoServer()
        defer { server.stopAccepting(); server.closeAll() }
        let s = try RawSocket(port: server.port)
        s.send("GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /slow HTTP/1.1\r\nHost: x\r\n\r\nPOST /c HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc")
        let r = s.read(until: "POST /c 3")
        let a = try #require(r.text.range(of: "GET /a 0")), slow = try #require(r.text.range(of: "slow")), c = try #require(r.text.range(of: "POST /c 3"))
        #expect(a.lowerBound < slow.lowerBound && slow.lowerBound < c.lowerBound)
        #expect(!r.closed)
    }

    @Test("HTTP/1.0 closes after the response unless keep-alive; HEAD has headers but no body")
    func versionsAndHead() throws {
        let server = try echoServer()
        defer { server.stopAccepting(); server.closeAll() }
        let s = try RawSocket(port: server.port)
        s.send("GET /x HTTP/1.0\r\n\r\n")
        let r = s.read()
        #expect(r.text.hasPrefix("HTTP/1.1 200") && r.text.hasSuffix("GET /x 0") && r.closed)
        let k = try RawSocket(port: server.port)
        k.send("GET /x HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        let kr = k.read(until: "GET /x 0")
        #expect(kr.text.contains("Connection: keep-alive") && !kr.closed)
        let h = try RawSocket(port: server.port)
        h.send("HEAD /x HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        let hr = h.read()
        #expect(hr.text.contains("Content-Length: 9") && hr.text.hasSuffix("\r\n\r\n") && hr.closed)
    }

    @Test("framing errors are answered with problem+json and the connection is closed (CL+TE, bad host)")
    func framingErrors() throws {
        let server = try echoServer()
        defer { server.stopAccepting(); server.closeAll() }
        for bad in ["POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
                    "GET / HTTP/1.1\r\n\r\n", "GET / HTTP/1.1\r\nHost: x\r\nBad Header: y\r\n\r\n",
                    "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab"] {
            let s = try RawSocket(port: server.port)
            s.send(bad)
            let r = s.read()
            #expect(r.text.hasPrefix("HTTP/1.1 400") && r.text.contains("application/problem+json") && r.closed, "\(bad.debugDescription) → \(r.text.prefix(60))")
        }
        // The server is still healthy.
        let s = try RawSocket(port: server.port)
        s.send("GET /ok HTTP/1.1\r\nHost: x\r\n\r\n")
        #expect(s.read(until: "GET /ok 0").text.contains("200 OK"))
    }

    @Test("413 from Content-Length before the body, also under Expect: 100-continue; 100 Continue for an acceptable body")
    func bodyLimitsAndContinue() throws {
        let server = try echoServer { $0.limits.maxBodyBytes = 1000 }
        defer { server.stopAccepting(); server.closeAll() }
        let s = try RawSocket(port: server.port)
        s.send("POST /big HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\nExpect: 100-continue\r\n\r\n")
        let r = s.read()
        #expect(r.text.hasPrefix("HTTP/1.1 413") && !r.text.contains("100 Continue") && r.closed)
        let c = try RawSocket(port: server.port)
        c.send("POST /ok HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
        #expect(c.read(until: "\r\n\r\n").text.hasPrefix("HTTP/1.1 100 Continue"))
        c.send("hello")
        #expect(c.read(until: "POST /ok 5").text.contains("200 OK"))
        let long = try RawSocket(port: server.port)
        long.send("GET /" + String(repeating: "a", count: 9000) + " HTTP/1.1\r\nHost: x\r\n\r\n")
        #expect(long.read().text.hasPrefix("HTTP/1.1 414"))
    }

    @Test("slowloris: a head that does not complete within the header deadline gets 408 and is closed; idle keep-alive closes")
    func timeouts() throws {
        let server = try echoServer { $0.headerTimeout = 1; $0.keepAliveTimeout = 1 }
        defer { server.stopAccepting(); server.closeAll() }
        let s = try RawSocket(port: server.port)
        let start = Date()
        s.send("GET / HTTP/1.1\r\nHost: x\r\n")
        for _ in 0..<4 { usleep(300_000); s.send("X-A: b\r\n") }  // trickling bytes does not extend the deadline
        let r = s.read()
        #expect(r.text.hasPrefix("HTTP/1.1 408") && r.closed)
        #expect(Date().timeIntervalSince(start) < 4)
        let idle = try RawSocket(port: server.port)
        idle.send("GET /k HTTP/1.1\r\nHost: x\r\n\r\n")
        _ = idle.read(until: "GET /k 0")
        let t0 = Date()
        #expect(idle.read().closed)
        #expect(Date().timeIntervalSince(t0) < 4)
    }

    @Test("streamed responses are chunked; a client that disconnects mid-request does not disturb the server")
    func streamingAndDisconnects() throws {
        let server = try echoServer()
        defer { server.stopAccepting(); server.closeAll() }
        let s = try RawSocket(port: server.port)
        s.send("GET /stream HTTP/1.1\r\nHost: x\r\n\r\n")
        let r = s.read(until: "0\r\n\r\n")
        #expect(r.text.contains("Transfer-Encoding: chunked") && r.text.contains("6\r\npart0;\r\n") && r.text.hasSuffix("0\r\n\r\n"))
        for _ in 0..<20 {
            let d = try RawSocket(port: server.port)
            d.send("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\npartial")
        }
        usleep(200_000)
        let ok = try RawSocket(port: server.port)
        ok.send("GET /after HTTP/1.1\r\nHost: x\r\n\r\n")
        #expect(ok.read(until: "GET /after 0").text.contains("200 OK"))
        #expect(server.stats.acceptErrors == 0)
    }

    @Test("IPv6 loopback works; a busy port fails with the call and errno")
    func addresses() throws {
        let v6 = try echoServer { $0.host = "::1" }
        defer { v6.stopAccepting(); v6.closeAll() }
        let s = try RawSocket(port: v6.port, host: "::1")
        s.send("GET /six HTTP/1.1\r\nHost: [::1]\r\n\r\n")
        #expect(s.read(until: "GET /six 0").text.contains("200 OK"))
        #expect(throws: HTTPServerError.self) { _ = try echoServer { $0.port = v6.port; $0.host = "::1" } }
    }
}
