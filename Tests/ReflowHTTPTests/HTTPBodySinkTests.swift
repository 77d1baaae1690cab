import Foundation
import Glibc
import Synchronization
import Testing
@testable import ReflowHTTP

/// Collects a streamed body; refuses once more than `limit` bytes arrived.
final class CollectingSink: HTTPBodySink {
    let limit: Int
    let state = Mutex<(bytes: [UInt8], aborts: Int)>(([], 0))

    init(limit: Int = .max) { self.limit = limit }

    func write(_ bytes: UnsafeRawBufferPointer) -> HTTPResponse? {
        state.withLock { st -> HTTPResponse? in
            st.bytes.append(contentsOf: bytes)
            return st.bytes.count > limit ? .problem(status: 413, code: "too_large", detail: "over \(limit)") : nil
        }
    }

    func abort() { state.withLock { $0.aborts += 1 } }

    var bytes: [UInt8] { state.withLock { $0.bytes } }
    var aborts: Int { state.withLock { $0.aborts } }
}

/// Streams bodies of `PUT /up…` to sinks it records, refuses `PUT /no`, buffers the rest.
final class SinkPolicy: Sendable {
    let sinks = Mutex<[CollectingSink]>([])
    let calls = Mutex<[(String, Int?)]>([])
    let limit: Int

    init(limit: Int = .max) { self.limit = limit }

    var policy: @Sendable (HTTPRequestHead, Int?) -> HTTPBodyPolicy {
        { [self] head, length in
            calls.withLock { $0.append((head.target, length)) }
            if head.target == "/no" { return .refuse(.problem(status: 409, code: "no", detail: "refused from the head")) }
            guard head.target.hasPrefix("/up") else { return .buffer }
            let sink = CollectingSink(limit: limit)
            sinks.withLock { $0.append(sink) }
            return .stream(sink)
        }
    }

    var last: CollectingSink? { sinks.withLock { $0.last } }
}

@Suite("HTTP streamed request bodies")
struct HTTPBodySinkTests {
    static let body = (0..<5000).map { UInt8(truncatingIfNeeded: $0 &* 7) }

    static func chunked(_ body: [UInt8], pieces: Int) -> [UInt8] {
        var out = [UInt8]()
        let size = (body.count + pieces - 1) / pieces
        var i = 0
        while i < body.count {
            let piece = body[i..<min(body.count, i + size)]
            out += Array((String(piece.count, radix: 16) + "\r\n").utf8) + piece + [13, 10]
            i += size
        }
        return out + Array("0\r\n\r\n".utf8)
    }

    @Test("a streamed body goes to the sink, whatever the split; maxBodyBytes does not apply; nothing is buffered")
    func streams() throws {
        var limits = HTTPLimits()
        limits.maxBodyBytes = 1024
        let lengthFramed = Array("PUT /up HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n".utf8) + Self.body
        let chunkFramed = Array("PUT /up2 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n".utf8) + Self.chunked(Self.body, pieces: 3)
        for input in [lengthFramed, chunkFramed] {
            for step in [input.count, 1, 7, 512] {
                let policy = SinkPolicy()
                var p = HTTPParser(limits: limits, bodyPolicy: policy.policy)
                var events = [HTTPParseEvent]()
                var i = 0
                while i < input.count {
                    events += p.feed(Array(input[i..<min(input.count, i + step)]))
                    i += step
                }
                let sink = try #require(policy.last)
                guard events.count == 1, case .request(let r) = events[0] else { Issue.record("\(events)"); continue }
                #expect(r.body.isEmpty && r.bodySink === sink)
                #expect(sink.bytes == Self.body && sink.aborts == 0)
                #expect(p.bodyBytesBuffered == 0 && p.isIdle)
                // Content-Length is passed for length framing, nil for chunked.
                #expect(policy.calls.withLock { $0.map(\.1) } == [input == lengthFramed ? 5000 : nil])
                p.abandon()  // delivered: the handler owns the sink
                #expect(sink.aborts == 0)
            }
        }
    }

    @Test("the sink's refusal part-way, a framing error and an abandoned connection abort the sink once")
    func aborts() throws {
        let policy = SinkPolicy(limit: 3000)
        var p = HTTPParser(bodyPolicy: policy.policy)
        let events = p.feed(Array("PUT /up HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n".utf8) + Self.body)
        guard case .refused(let head, let response)? = events.last, events.count == 1 else { Issue.record("\(events)"); return }
        #expect(head.target == "/up" && response.status == 413 && p.failed)
        #expect(policy.last?.aborts == 1)

        var q = HTTPParser(bodyPolicy: policy.policy)
        let bad = q.feed(Array("PUT /up HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXX".utf8))
        guard case .error(let e)? = bad.last else { Issue.record("\(bad)"); return }
        #expect(e.status == 400 && policy.last?.aborts == 1 && policy.last?.bytes == Array("hello".utf8))

        var r = HTTPParser(bodyPolicy: policy.policy)
        #expect(r.feed(Array("PUT /up HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc".utf8)).isEmpty && r.isReadingBody)
        r.abandon()
        r.abandon()
        #expect(policy.last?.aborts == 1)
    }

    @Test("a policy refuses from the head (no 100 Continue, no body read); .buffer and bodiless requests are as before")
    func refuseAndBuffer() throws {
        let policy = SinkPolicy()
        var p = HTTPParser(bodyPolicy: policy.policy)
        let refused = p.feed(Array("PUT /no HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\nabc".utf8))
        guard refused.count == 1, case .refused(_, let response) = refused[0] else { Issue.record("\(refused)"); return }
        #expect(response.status == 409 && p.failed && p.bodyBytesBuffered == 0)

        var q = HTTPParser(bodyPolicy: policy.policy)
        let events = q.feed(Array("POST /other HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabcGET /up HTTP/1.1\r\nHost: x\r\n\r\n".utf8))
        let requests = events.compactMap { if case .request(let r) = $0 { r } else { nil } }
        #expect(requests.count == 2 && requests[0].body == Array("abc".utf8) && requests[0].bodySink == nil)
        #expect(requests[1].body.isEmpty && requests[1].bodySink == nil)
        // The policy is asked only for requests with a body.
        #expect(policy.calls.withLock { $0.map(\.0) } == ["/no", "/other"])
    }

    @Test("over a socket: the handler gets the sink; a client gone mid-body aborts it")
    func server() throws {
        let policy = SinkPolicy()
        var config = HTTPServerConfig()
        config.port = 0
        config.bodyPolicy = policy.policy
        let server = try HTTPServer(config: config) { req, _ in
            let streamed = (req.bodySink as? CollectingSink)?.bytes.count ?? -1
            return .text(200, "\(req.body.count) \(streamed)")
        }
        defer { server.stopAccepting(); server.closeAll() }
        let s = try RawSocket(port: server.port)
        s.send(Array("PUT /up HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n".utf8) + Self.body)
        #expect(s.read(until: "0 5000").text.hasSuffix("0 5000"))
        #expect(server.stats.bodyBytesBuffered == 0)
        do {
            let gone = try RawSocket(port: server.port)
            gone.send("PUT /up HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\nExpect: 100-continue\r\n\r\n")
            #expect(gone.read(until: "\r\n\r\n").text.hasPrefix("HTTP/1.1 100 Continue"))
            gone.send(Array(Self.body.prefix(100)))
        }
        let sink = try #require(policy.last)
        for _ in 0..<1000 where sink.aborts == 0 { usleep(2000) }
        #expect(sink.aborts == 1)
    }
}
