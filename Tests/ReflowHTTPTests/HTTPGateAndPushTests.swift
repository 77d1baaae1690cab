import Foundation
import Glibc
import Synchronization
import Testing
@testable import ReflowHTTP

/// Polls `condition` every millisecond until it holds or `seconds` pass; returns whether it held.
func eventually(within seconds: Double = 10, _ condition: () -> Bool) -> Bool {
    let deadline = monotonicNow() + seconds
    while monotonicNow() < deadline {
        if condition() { return true }
        usleep(1000)
    }
    return condition()
}

/// The number of threads of this process (`Threads:` in /proc/self/status).
func processThreads() -> Int {
    guard let text = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8),
          let line = text.split(separator: "\n").first(where: { $0.hasPrefix("Threads:") }) else { return -1 }
    return Int(line.dropFirst(8).trimmingCharacters(in: .whitespaces)) ?? -1
}

/// A test handler's hold on push sinks.
final class SinkBox: Sendable {
    let sinks = Mutex<[HTTPStreamSink]>([])
    let closed = Atomic<Int>(0)
    var count: Int { sinks.withLock { $0.count } }
    var all: [HTTPStreamSink] { sinks.withLock { $0 } }
}

/// A server whose `/push` route opens a push stream kept in `box`; other targets echo.
func pushServer(_ box: SinkBox, _ edit: (inout HTTPServerConfig) -> Void = { _ in }) throws -> HTTPServer {
    var c = HTTPServerConfig()
    c.port = 0
    edit(&c)
    return try HTTPServer(config: c) { req, _ in
        if req.head.path == "/push" {
            var h = HTTPHeaders()
            h.add("Content-Type", "text/event-stream")
            return HTTPResponse(status: 200, headers: h, push: { sink in
                sink.onClose { box.closed.add(1, ordering: .relaxed) }
                box.sinks.withLock { $0.append(sink) }
                sink.send(Array("ready\n".utf8))
            })
        }
        return .text(200, "\(req.method) \(req.target) \(req.body.count)")
    }
}

/// The gate the API installs, reduced to its shape: every path but /open needs `Bearer t`.
let bearerGate: @Sendable (HTTPRequestHead) -> HTTPResponse? = { head in
    if head.path == "/open" { return nil }
    if let v = head.headers["Authorization"], v.lowercased() == "bearer t" { return nil }
    var r = HTTPResponse.problem(status: 401, code: "unauthorized", detail: "send Authorization: Bearer <token>")
    r.headers.add("WWW-Authenticate", "Bearer realm=\"test\"")
    return r
}

@Suite("HTTP head gate, absolute-form, push streams, accept back-off", .serialized)
struct HTTPGateAndPushTests {
    @Test("an unauthenticated 59 MiB upload is answered 401 from its head and closed; no body byte is buffered")
    func unauthenticatedUploadRefusedFromHead() throws {
        let server = try echoServer {
            $0.limits.maxBodyBytes = 64 << 20
            $0.headGate = bearerGate
        }
        defer { server.stopAccepting(); server.closeAll() }
        // Headers only: the body is never sent, and the answer must not wait for it.
        let s = try RawSocket(port: server.port)
        s.send("POST /upload HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\nContent-Length: 61865984\r\n\r\n")
        let r = s.read()
        #expect(r.text.hasPrefix("HTTP/1.1 401 Unauthorized\r\n") && r.closed, "\(r.text.prefix(200))")
        #expect(r.text.contains("WWW-Authenticate: Bearer") && r.text.contains("application/problem+json")
                && r.text.contains("Connection: close"))
        // With the first 64 KiB of the body sent along: still refused, still nothing buffered.
        let t = try RawSocket(port: server.port)
        t.send(Array("POST /upload HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer wrong\r\nContent-Length: 61865984\r\n\r\n".utf8)
               + [UInt8](repeating: 7, count: 64 * 1024))
        let tr = t.read()
        #expect(tr.text.hasPrefix("HTTP/1.1 401") && tr.closed, "\(tr.text.prefix(200))")
        // Expect: 100-continue is not acknowledged for a refused head.
        let u = try RawSocket(port: server.port)
        u.send("POST /upload HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 61865984\r\n\r\n")
        let ur = u.read()
        #expect(ur.text.hasPrefix("HTTP/1.1 401") && !ur.text.contains("100 Continue") && ur.closed, "\(ur.text.prefix(200))")
        #expect(server.stats.bodyBytesBuffered == 0 && server.stats.rejectedHeads == 3)
        // The counter does count: an authenticated body is buffered, an open route needs no token.
        let ok = try RawSocket(port: server.port)
        ok.send("POST /upload HTTP/1.1\r\nHost: x\r\nAuthorization: BEARER t\r\nContent-Length: 5\r\n\r\nhello")
        #expect(ok.read(until: "POST /upload 5").text.contains("200 OK"))
        ok.send("GET /open HTTP/1.1\r\nHost: x\r\n\r\n")
        #expect(ok.read(until: "GET /open 0").text.contains("200 OK"))
        #expect(server.stats.bodyBytesBuffered == 5 && server.stats.rejectedHeads == 3)
    }

    @Test("pipelined: a refused request is answered after the ones before it, then the connection closes")
    func refusalKeepsOrder() throws {
        let server = try echoServer { $0.headGate = bearerGate }
        defer { server.stopAccepting(); server.closeAll() }
        let s = try RawSocket(port: server.port)
        s.send("GET /open HTTP/1.1\r\nHost: x\r\n\r\nPOST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabcGET /open HTTP/1.1\r\nHost: x\r\n\r\n")
        let r = s.read()
        let first = try #require(r.text.range(of: "GET /open 0")), refused = try #require(r.text.range(of: "HTTP/1.1 401"))
        #expect(first.lowerBound < refused.lowerBound && r.closed)
        #expect(r.text.components(separatedBy: "GET /open 0").count == 2, "the request after the refusal is not answered")
        #expect(server.stats.bodyBytesBuffered == 0)
    }

    @Test("absolute-form request lines are routed by path and query over a socket")
    func absoluteFormOverSocket() throws {
        let server = try echoServer()
        defer { server.stopAccepting(); server.closeAll() }
        let s = try RawSocket(port: server.port)
        s.send("GET http://127.0.0.1:\(server.port)/healthz?x=1 HTTP/1.1\r\nHost: 127.0.0.1:\(server.port)\r\n\r\n")
        #expect(s.read(until: "/healthz?x=1 0").text.contains("200 OK"))
        let bad = try RawSocket(port: server.port)
        bad.send("GET ftp://127.0.0.1/healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        let r = bad.read()
        #expect(r.text.hasPrefix("HTTP/1.1 400") && r.closed)
    }

    @Test("push stream: chunks from several threads arrive whole and in send order; finish ends the body; HEAD starts nothing")
    func pushStreamOrderAndFinish() throws {
        let box = SinkBox()
        let server = try pushServer(box)
        defer { server.stopAccepting(); server.closeAll() }
        let s = try RawSocket(port: server.port)
        s.send("GET /push HTTP/1.1\r\nHost: x\r\n\r\n")
        #expect(s.read(until: "ready\n").text.contains("Transfer-Encoding: chunked"))
        let sink = try #require(box.all.first)
        // Sends serialised by a lock but made from many threads (as the event hub does).
        let lock = Mutex(0)
        DispatchQueue.concurrentPerform(iterations: 200) { _ in
            lock.withLock { n in
                sink.send(Array("e\(n);".utf8))
                n += 1
            }
        }
        sink.finish()
        #expect(!sink.send(Array("late".utf8)))
        let r = s.read(until: "0\r\n\r\n")
        let payload = r.text.split(separator: "\r\n").enumerated().filter { $0.offset % 2 == 1 }.map(\.element).joined()
        #expect(payload == (0..<200).map { "e\($0);" }.joined(), "\(r.text.prefix(300))")
        // The connection stays usable after the stream (keep-alive).
        s.send("GET /after HTTP/1.1\r\nHost: x\r\n\r\n")
        #expect(s.read(until: "GET /after 0").text.contains("200 OK"))
        #expect(eventually { server.openPushStreams == 0 })
        let h = try RawSocket(port: server.port)
        h.send("HEAD /push HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        let hr = h.read()
        #expect(hr.text.hasPrefix("HTTP/1.1 200") && hr.text.hasSuffix("\r\n\r\n") && hr.closed && box.count == 1)
    }

    @Test("push stream: a client that disconnects is reported to the producer, and its slot is released")
    func pushStreamDisconnect() throws {
        let box = SinkBox()
        let server = try pushServer(box)
        defer { server.stopAccepting(); server.closeAll() }
        var s: RawSocket? = try RawSocket(port: server.port)
        s?.send("GET /push HTTP/1.1\r\nHost: x\r\n\r\n")
        #expect(s?.read(until: "ready\n").text.contains("200 OK") == true)
        #expect(server.openPushStreams == 1)
        s = nil  // close(2)
        #expect(eventually { box.closed.load(ordering: .relaxed) == 1 }, "onClose not called")
        #expect(eventually { server.openPushStreams == 0 })
        let sink = try #require(box.all.first)
        #expect(!sink.isOpen && !sink.send(Array("x".utf8)))
        // A handler added after the close runs too.
        let late = Atomic<Bool>(false)
        sink.onClose { late.store(true, ordering: .relaxed) }
        #expect(eventually { late.load(ordering: .relaxed) })
    }

    @Test("push stream backpressure: a client that does not read makes the sink unwritable; reading fires whenWritable")
    func pushStreamBackpressure() throws {
        let box = SinkBox()
        let server = try pushServer(box)
        defer { server.stopAccepting(); server.closeAll() }
        let s = try RawSocket(port: server.port)
        s.send("GET /push HTTP/1.1\r\nHost: x\r\n\r\n")
        #expect(s.read(until: "ready\n").text.contains("200 OK"))
        let sink = try #require(box.all.first)
        let chunk = [UInt8](repeating: UInt8(ascii: "z"), count: 16 * 1024)
        var sent = 0
        // The kernel buffers hold a few MiB at most: the sink must report unwritable before 64 MiB.
        #expect(eventually(within: 20) {
            if sink.isWritable { sink.send(chunk); sent += chunk.count }
            return !sink.isWritable
        }, "still writable after \(sent) bytes")
        #expect(sent < 64 << 20)
        let fired = Atomic<Bool>(false)
        sink.whenWritable { fired.store(true, ordering: .relaxed) }
        let firedEarly = fired.load(ordering: .relaxed)
        #expect(!firedEarly)
        // Drain: read everything that was sent; the handler fires on the way.
        var received = 0
        var buffer = [UInt8](repeating: 0, count: 1 << 20)
        #expect(eventually(within: 30) {
            while true {  // everything readable now, then look again
                let n = buffer.withUnsafeMutableBytes { recv(s.fd, $0.baseAddress, $0.count, Int32(MSG_DONTWAIT)) }
                if n <= 0 { break }
                received += n
            }
            return fired.load(ordering: .relaxed)
        }, "received \(received) of about \(sent) bytes; backlog \(sink.backlog)")
        #expect(sink.isWritable && received > 0)
    }

    @Test("1,000 idle push streams hold no threads; one broadcast reaches every client in order")
    func thousandIdlePushStreams() throws {
        let box = SinkBox()
        let server = try pushServer(box)
        defer { server.stopAccepting(); server.closeAll() }
        let before = processThreads()
        var clients = [RawSocket]()
        for _ in 0..<1000 {
            let c = try RawSocket(port: server.port)
            c.send("GET /push HTTP/1.1\r\nHost: x\r\n\r\n")
            clients.append(c)
        }
        #expect(eventually(within: 30) { box.count == 1000 }, "\(box.count) streams open")
        #expect(server.openPushStreams == 1000)
        let during = processThreads()
        #expect(during - before < 32, "threads \(before) → \(during) with 1,000 open streams")
        for i in 0..<5 { for sink in box.all { sink.send(Array("m\(i)\n".utf8)) } }
        for sink in box.all { sink.finish() }
        for (k, c) in clients.enumerated() {
            let r = c.read(until: "0\r\n\r\n")
            let order = ["ready", "m0", "m1", "m2", "m3", "m4"].compactMap { r.text.range(of: $0 + "\n")?.lowerBound }
            #expect(order.count == 6 && order == order.sorted(), "client \(k): \(r.text.suffix(200))")
        }
        print("push streams: threads \(before) before, \(during) with 1,000 idle streams open")
    }

    @Test("push streams beyond maxPushStreams get 503 + Retry-After")
    func pushStreamCap() throws {
        let box = SinkBox()
        let server = try pushServer(box) { $0.maxPushStreams = 2 }
        defer { server.stopAccepting(); server.closeAll() }
        let a = try RawSocket(port: server.port), b = try RawSocket(port: server.port), c = try RawSocket(port: server.port)
        for s in [a, b] { s.send("GET /push HTTP/1.1\r\nHost: x\r\n\r\n"); _ = s.read(until: "ready\n") }
        c.send("GET /push HTTP/1.1\r\nHost: x\r\n\r\n")
        let r = c.read(until: "too_many_streams")
        #expect(r.text.hasPrefix("HTTP/1.1 503") && r.text.contains("Retry-After: 5"))
    }

    @Test("EMFILE on accept: the listener backs off (one failed accept per 100 ms, no spin) and serves once descriptors free up")
    func acceptBackoffOnEMFILE() throws {
        let server = try echoServer()
        defer {
            server.simulateDescriptorExhaustion.store(false, ordering: .relaxed)
            server.stopAccepting()
            server.closeAll()
        }
        server.simulateDescriptorExhaustion.store(true, ordering: .relaxed)
        let start = monotonicNow()
        // The kernel completes the handshake; the connection waits in the backlog.
        let s = try RawSocket(port: server.port)
        s.send("GET /waiting HTTP/1.1\r\nHost: x\r\n\r\n")
        #expect(eventually { server.stats.acceptBackoffs >= 3 }, "back-offs: \(server.stats.acceptBackoffs)")
        let stats = server.stats
        let elapsed = monotonicNow() - start
        // Every failed accept suspends the listener for 100 ms: errors never outrun back-offs,
        // and three back-offs take at least two 100 ms pauses.
        #expect(stats.acceptErrors == stats.acceptBackoffs, "\(stats)")
        #expect(elapsed >= 0.2 - 0.01, "\(stats.acceptBackoffs) back-offs in \(elapsed) s")
        #expect(stats.accepted == 0 && server.openConnections == 0)
        // Descriptors free up: the waiting connection is accepted and answered, new ones too.
        server.simulateDescriptorExhaustion.store(false, ordering: .relaxed)
        #expect(s.read(until: "GET /waiting 0").text.contains("200 OK"))
        let t = try RawSocket(port: server.port)
        t.send("GET /next HTTP/1.1\r\nHost: x\r\n\r\n")
        #expect(t.read(until: "GET /next 0").text.contains("200 OK"))
    }
}
