import Testing
@testable import ReflowHTTP

// MARK: - Helpers

/// SplitMix64: a tiny deterministic generator for splits and mutations.
private struct SplitMix {
    var state: UInt64
    init(_ seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
    /// Uniform in 0..<bound (bound > 0).
    mutating func below(_ bound: Int) -> Int { Int(next() % UInt64(bound)) }
}

/// Feeds `input` in the given pieces to a fresh parser; returns the concatenated events and the
/// final parser.
private func feedPieces(_ input: [UInt8], _ cuts: [Int], _ limits: HTTPLimits,
                        _ gate: (@Sendable (HTTPRequestHead) -> HTTPResponse?)? = nil) -> ([HTTPParseEvent], HTTPParser) {
    var parser = HTTPParser(limits: limits, headGate: gate)
    var events: [HTTPParseEvent] = []
    var start = 0
    for cut in cuts + [input.count] {
        events += parser.feed(Array(input[start..<cut]))
        start = cut
    }
    return (events, parser)
}

/// Random cut points (sorted, possibly repeated: empty feeds are part of the test).
private func randomCuts(_ count: Int, _ rng: inout SplitMix) -> [Int] {
    guard count > 0 else { return [] }
    return (0..<rng.below(min(count, 12) + 1)).map { _ in rng.below(count + 1) }.sorted()
}

/// Parses `input` whole, one byte at a time and in `splits` random splits, and expects the same
/// events and the same final parser state every time. Returns the events.
@discardableResult
private func parse(_ input: [UInt8], limits: HTTPLimits = HTTPLimits(), splits: Int = 8, seed: UInt64 = 1,
                   gate: (@Sendable (HTTPRequestHead) -> HTTPResponse?)? = nil,
                   sourceLocation: SourceLocation = #_sourceLocation) -> [HTTPParseEvent] {
    var whole = HTTPParser(limits: limits, headGate: gate)
    let expected = whole.feed(input)
    func same(_ events: [HTTPParseEvent], _ parser: HTTPParser, _ how: String) {
        #expect(events == expected, "\(how) differs from a whole feed", sourceLocation: sourceLocation)
        #expect(parser.failed == whole.failed && parser.isIdle == whole.isIdle
                && parser.isReadingBody == whole.isReadingBody
                && parser.bodyBytesBuffered == whole.bodyBytesBuffered, "\(how): final state differs",
                sourceLocation: sourceLocation)
    }
    let (bytewise, p1) = feedPieces(input, input.indices.map { $0 }, limits, gate)
    same(bytewise, p1, "byte-at-a-time")
    var rng = SplitMix(seed)
    for _ in 0..<splits {
        let (events, parser) = feedPieces(input, randomCuts(input.count, &rng), limits, gate)
        same(events, parser, "random split")
    }
    return expected
}

@discardableResult
private func parse(_ text: String, limits: HTTPLimits = HTTPLimits(),
                   gate: (@Sendable (HTTPRequestHead) -> HTTPResponse?)? = nil,
                   sourceLocation: SourceLocation = #_sourceLocation) -> [HTTPParseEvent] {
    parse(Array(text.utf8), limits: limits, gate: gate, sourceLocation: sourceLocation)
}

private func requests(_ events: [HTTPParseEvent]) -> [HTTPRequest] {
    events.compactMap { if case .request(let r) = $0 { r } else { nil } }
}

/// The status of the error event, if any (and it must be the last event).
private func errorStatus(_ events: [HTTPParseEvent]) -> Int? {
    guard case .error(let e)? = events.last else { return nil }
    return e.status
}

/// Parses `text` and expects exactly one request, returned.
private func single(_ text: String, limits: HTTPLimits = HTTPLimits(),
                    sourceLocation: SourceLocation = #_sourceLocation) -> HTTPRequest? {
    let events = parse(text, limits: limits, sourceLocation: sourceLocation)
    let rs = requests(events)
    #expect(events.count == 1 && rs.count == 1, "expected one request, got \(events)", sourceLocation: sourceLocation)
    return rs.first
}

private func limits(line: Int? = nil, headerBytes: Int? = nil, headerCount: Int? = nil, body: Int? = nil) -> HTTPLimits {
    var l = HTTPLimits()
    if let line { l.maxRequestLine = line }
    if let headerBytes { l.maxHeaderBytes = headerBytes }
    if let headerCount { l.maxHeaderCount = headerCount }
    if let body { l.maxBodyBytes = body }
    return l
}

/// One input that must be refused with `status`.
struct RejectCase: CustomTestStringConvertible, Sendable {
    var name: String
    var input: String
    var status: Int
    var limits = HTTPLimits()
    var testDescription: String { "\(name) → \(status)" }
}

// MARK: - Tests

@Suite("HTTPParser")
struct HTTPParserTests {
    @Test func validGet() throws {
        let r = try #require(single("GET /healthz?x=1 HTTP/1.1\r\nHost: x\r\n\r\n"))
        #expect(r.method == "GET" && r.target == "/healthz?x=1" && r.head.version == .http11)
        #expect(r.head.path == "/healthz" && r.head.query == "x=1")
        #expect(r.headers == HTTPHeaders([("Host", "x")]) && r.body.isEmpty && r.head.keepAlive)
        var p = HTTPParser()
        #expect(p.isIdle && !p.isReadingBody && !p.failed)
        _ = p.feed(Array("GET / HTTP/1.1\r\nHo".utf8))
        #expect(!p.isIdle && !p.isReadingBody)
        #expect(requests(p.feed(Array("st: x\r\n\r\n".utf8))).count == 1)
        #expect(p.isIdle)
    }

    @Test func fieldValuesTrimmedAndOrdered() throws {
        let r = try #require(single(
            "GET / HTTP/1.1\r\nHost:example.com:8080\r\nX-A: \t a  b \t\r\nx-a:\r\nX-Utf8: caf\u{e9}\r\nAccept: */*\r\n\r\n"))
        #expect(r.headers == HTTPHeaders([("Host", "example.com:8080"), ("X-A", "a  b"), ("x-a", ""),
                                          ("X-Utf8", "caf\u{e9}"), ("Accept", "*/*")]))
        #expect(r.headers.values("x-A") == ["a  b", ""])
    }

    @Test func headParsesLikeGet() throws {
        let r = try #require(single("HEAD /x HTTP/1.1\r\nHost: a\r\n\r\n"))
        #expect(r.method == "HEAD" && r.target == "/x" && r.body.isEmpty)
        // Methods are case-sensitive tokens, passed through as sent.
        #expect(try #require(single("get * HTTP/1.1\r\nHost: a\r\n\r\n")).method == "get")
    }

    @Test func postWithContentLength() throws {
        let r = try #require(single("POST /v1/jobs HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello"))
        #expect(r.method == "POST" && r.body == Array("hello".utf8))
        // Leading zeros, identical list values and identical repeated fields are one length.
        #expect(try #require(single("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 005\r\n\r\nhello")).body.count == 5)
        #expect(try #require(single("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3, 3\r\n\r\nabc")).body.count == 3)
        #expect(try #require(single(
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\ncontent-length: 3\r\n\r\nabc")).body.count == 3)
        #expect(try #require(single("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n")).body.isEmpty)
    }

    @Test func readingBodyState() {
        var p = HTTPParser()
        #expect(p.feed(Array("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\n\r\nab".utf8)).isEmpty)
        #expect(p.isReadingBody && !p.isIdle)
        #expect(requests(p.feed(Array("cd".utf8))).first?.body == Array("abcd".utf8))
        #expect(!p.isReadingBody && p.isIdle)
    }

    @Test func chunkedBodyWithExtensionsAndTrailers() throws {
        let body = "POST /u HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
            + "4;name=value\r\nWiki\r\n"
            + "5 ; a ; b = \"q \\\" x\"\r\npedia\r\n"
            + "E\r\n in\r\n\r\nchunks.\r\n"
            + "0;last\r\nX-Trailer: 1\r\nY:2\r\n\r\n"
        let r = try #require(single(body))
        #expect(r.body == Array("Wikipedia in\r\n\r\nchunks.".utf8))
        #expect(r.headers == HTTPHeaders([("Host", "a"), ("Transfer-Encoding", "chunked")]))  // trailers discarded
        // Case-insensitive coding, OWS, an empty list element; no trailers; uppercase hex.
        let r2 = try #require(single(
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: , Chunked \r\n\r\nA\r\n0123456789\r\n0\r\n\r\n"))
        #expect(r2.body == Array("0123456789".utf8))
        // Trailer limits: the trailer section is counted like a header section.
        let events = parse("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nA: 1\r\nB: 2\r\n\r\n",
                           limits: limits(headerCount: 2))
        #expect(errorStatus(events) == nil && requests(events).count == 1)
        #expect(errorStatus(parse("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n",
                                  limits: limits(headerCount: 2))) == 431)
    }

    @Test func pipelinedRequests() {
        let text = "GET /a HTTP/1.1\r\nHost: a\r\n\r\n"
            + "POST /b HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nxyz"
            + "PUT /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n"
            + "GET /d HTTP/1.1\r\nHo"
        let events = parse(text)
        let rs = requests(events)
        #expect(events.count == 3 && rs.map(\.target) == ["/a", "/b", "/c"])
        #expect(rs.map(\.body) == [[], Array("xyz".utf8), Array("hi".utf8)])
        var p = HTTPParser()
        _ = p.feed(Array(text.utf8))
        #expect(!p.isIdle && !p.failed)
        #expect(requests(p.feed(Array("st: a\r\n\r\n".utf8))).map(\.target) == ["/d"])
    }

    @Test func keepAliveRules() throws {
        func keepAlive(_ text: String) throws -> Bool { try #require(single(text)).head.keepAlive }
        #expect(try keepAlive("GET / HTTP/1.1\r\nHost: a\r\n\r\n"))
        #expect(try !keepAlive("GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"))
        #expect(try !keepAlive("GET / HTTP/1.1\r\nHost: a\r\nConnection: Keep-Alive, CLOSE\r\n\r\n"))
        #expect(try !keepAlive("GET / HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nConnection: close\r\n\r\n"))
        #expect(try keepAlive("GET / HTTP/1.1\r\nHost: a\r\nConnection: closed\r\n\r\n"))
        // HTTP/1.0: persistent only with keep-alive; Host may be omitted.
        let r10 = try #require(single("GET / HTTP/1.0\r\n\r\n"))
        #expect(r10.head.version == .http10 && !r10.head.keepAlive)
        #expect(try keepAlive("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"))
        #expect(try keepAlive("GET / HTTP/1.0\r\nconnection: foo, Keep-Alive\r\n\r\n"))
        #expect(try !keepAlive("GET / HTTP/1.0\r\nConnection: foo\r\n\r\n"))
    }

    @Test func expectContinueOrdering() throws {
        let head = "POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-Continue\r\nContent-Length: 3\r\n\r\n"
        var p = HTTPParser()
        let first = p.feed(Array(head.utf8))
        guard case .expectContinue(let h)? = first.first else {
            Issue.record("expected expectContinue, got \(first)")
            return
        }
        #expect(first.count == 1 && h.method == "POST" && p.isReadingBody)
        #expect(requests(p.feed(Array("abc".utf8))).first?.head == h)
        // The event comes before the request even when the body is in the same feed.
        let events = parse(head + "abc")
        #expect(events.count == 2 && events.first == .expectContinue(h) && requests(events).first?.body == Array("abc".utf8))
        // Chunked bodies too.
        let chunked = parse("POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nz\r\n0\r\n\r\n")
        #expect(chunked.count == 2 && { if case .expectContinue = chunked[0] { true } else { false } }())
        // No body, or HTTP/1.0 (RFC 9110 §10.1.1: ignore the expectation): no event.
        #expect(parse("POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 0\r\n\r\n").count == 1)
        #expect(parse("POST / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\nq").count == 1)
        // Unknown expectations are refused.
        #expect(errorStatus(parse("POST / HTTP/1.1\r\nHost: a\r\nExpect: 200-ok\r\nContent-Length: 1\r\n\r\nq")) == 417)
    }

    @Test func bodyTooLarge() {
        let l = limits(body: 10)
        // 413 straight after the head: no body byte needed, no expectContinue.
        var p = HTTPParser(limits: l)
        let events = p.feed(Array("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 11\r\n\r\n".utf8))
        #expect(events.count == 1 && errorStatus(events) == 413 && p.failed)
        var q = HTTPParser(limits: l)
        let withExpect = q.feed(Array("POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 11\r\n\r\n".utf8))
        #expect(withExpect.count == 1 && errorStatus(withExpect) == 413)
        #expect(requests(parse("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\n0123456789", limits: l)).count == 1)
        // Chunked: decided when the chunk size that would pass the limit arrives.
        let chunked = "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n6\r\n012345\r\n"
        #expect(errorStatus(parse(chunked + "5\r\n", limits: l)) == 413)
        #expect(requests(parse(chunked + "4\r\n0123\r\n0\r\n\r\n", limits: l)).first?.body.count == 10)
        #expect(errorStatus(parse(chunked + "7fffffffffffffff\r\n", limits: l)) == 413)
    }

    @Test func requestLineTooLong() {
        let l = limits(line: 30)
        let exact = "GET /" + String(repeating: "a", count: 16) + " HTTP/1.1"  // 30 bytes
        #expect(exact.utf8.count == 30)
        #expect(requests(parse(exact + "\r\nHost: a\r\n\r\n", limits: l)).count == 1)
        #expect(errorStatus(parse("GET /" + String(repeating: "a", count: 17) + " HTTP/1.1\r\nHost: a\r\n\r\n", limits: l)) == 414)
        // Decided as soon as the unfinished line passes the limit, without waiting for CRLF.
        var p = HTTPParser(limits: l)
        #expect(p.feed(Array(("GET /" + String(repeating: "a", count: 25)).utf8)).isEmpty)
        #expect(errorStatus(p.feed([0x61])) == 414)
        #expect(errorStatus(parse("GET /" + String(repeating: "a", count: 100), limits: l)) == 414)
    }

    @Test func headerSectionTooLarge() {
        // Size: field lines without their line endings ("A: 1234" is 7 bytes).
        let l = limits(headerBytes: 7 + 7)
        #expect(requests(parse("GET / HTTP/1.1\r\nHost: a\r\nA: 1234\r\n\r\n", limits: l)).count == 1)
        #expect(errorStatus(parse("GET / HTTP/1.1\r\nHost: a\r\nA: 12345\r\n\r\n", limits: l)) == 431)
        var p = HTTPParser(limits: l)
        #expect(errorStatus(p.feed(Array(("GET / HTTP/1.1\r\nHost: a\r\nA: " + String(repeating: "x", count: 50)).utf8))) == 431)
        // Count.
        let c = limits(headerCount: 3)
        #expect(requests(parse("GET / HTTP/1.1\r\nHost: a\r\nB: 1\r\nC: 2\r\n\r\n", limits: c)).count == 1)
        #expect(errorStatus(parse("GET / HTTP/1.1\r\nHost: a\r\nB: 1\r\nC: 2\r\nD: 3\r\n\r\n", limits: c)) == 431)
    }

    @Test func unsupportedVersions() {
        for v in ["HTTP/2.0", "HTTP/1.2", "HTTP/3.0", "HTTP/0.9"] {
            #expect(errorStatus(parse("GET / \(v)\r\nHost: a\r\n\r\n")) == 505, "\(v)")
        }
        for v in ["HTTP/1.10", "http/1.1", "HTTP/1", "HTTP/1.x", "HTTP/11", "HTTP/1.1 "] {
            #expect(errorStatus(parse("GET / \(v)\r\nHost: a\r\n\r\n")) == 400, "\(v)")
        }
    }

    @Test func lineEndingsAndEmptyLines() throws {
        // RFC 9112 §2.2: bare LF as a line end in the head; empty lines before the request line.
        #expect(try #require(single("GET / HTTP/1.1\nHost: a\n\n")).target == "/")
        #expect(try #require(single("\r\n\r\n\nGET / HTTP/1.1\r\nHost: a\r\n\r\n")).target == "/")
        var p = HTTPParser()
        #expect(p.feed(Array("\r\n".utf8)).isEmpty && p.isIdle)
        #expect(p.feed(Array("\r".utf8)).isEmpty && !p.isIdle)
    }

    @Test func hostValues() throws {
        for host in ["example.com", "example.com:8080", "127.0.0.1:80", "[::1]", "[::1]:8080", "[fe80::1%25eth0]:1",
                     "xn--caf-dma.example", "a:"] {
            #expect(requests(parse("GET / HTTP/1.1\r\nHost: \(host)\r\n\r\n")).count == 1, "\(host)")
        }
        // RFC 9112 §3.2: an empty Host is valid (no authority).
        #expect(try #require(single("GET / HTTP/1.1\r\nHost:\r\n\r\n")).headers["host"] == "")
        for host in ["a b", "a/b", "user@host", "[::1", "[::1]x", "[]", "host:port", "a:1:2", ":80", "a:123456", "a?b", "a#b",
                     "[::1/]"] {
            #expect(errorStatus(parse("GET / HTTP/1.1\r\nHost: \(host)\r\n\r\n")) == 400, "\(host)")
        }
    }

    @Test func controlCharactersAnywhereInLongValues() {
        // Long values are checked a word at a time: every position, next to obs-text, must count.
        for position in 0..<24 {
            var value = Array(repeating: UInt8(ascii: "a"), count: 24)
            value[(position + 5) % 24] = 0xC3  // obs-text (RFC 9110 §5.5) is allowed
            for byte: UInt8 in [0x00, 0x01, 0x08, 0x0A, 0x0D, 0x1F, 0x7F, 0x09, 0x20, 0x80, 0xFF] {
                var v = value
                v[position] = byte
                let input = Array("GET / HTTP/1.1\r\nHost: a\r\nX: ".utf8) + v + Array("z\r\n\r\n".utf8)
                var p = HTTPParser()
                let events = p.feed(input)
                let allowed = byte == 0x09 || byte == 0x20 || byte >= 0x80
                if byte == 0x0A {
                    // A bare LF ends the line early; "aaa…" on the next line has no colon.
                    #expect(errorStatus(events) == 400)
                } else {
                    #expect(allowed ? requests(events).count == 1 : errorStatus(events) == 400, "\(byte) at \(position)")
                }
            }
        }
    }

    static let rejects: [RejectCase] = [
        // Request line (RFC 9112 §3).
        RejectCase(name: "garbage request line", input: "HELLO\r\n\r\n", status: 400),
        RejectCase(name: "binary first byte (TLS)", input: "\u{16}\u{03}\u{01}", status: 400),
        RejectCase(name: "double space", input: "GET  / HTTP/1.1\r\nHost: a\r\n\r\n", status: 400),
        RejectCase(name: "double space before version", input: "GET /  HTTP/1.1\r\nHost: a\r\n\r\n", status: 400),
        RejectCase(name: "leading space", input: " GET / HTTP/1.1\r\nHost: a\r\n\r\n", status: 400),
        RejectCase(name: "tab separator", input: "GET\t/ HTTP/1.1\r\nHost: a\r\n\r\n", status: 400),
        RejectCase(name: "missing version", input: "GET /\r\nHost: a\r\n\r\n", status: 400),
        RejectCase(name: "control in target", input: "GET /a\u{1}b HTTP/1.1\r\nHost: a\r\n\r\n", status: 400),
        RejectCase(name: "non-ASCII target", input: "GET /caf\u{e9} HTTP/1.1\r\nHost: a\r\n\r\n", status: 400),
        RejectCase(name: "bad method char", input: "GE(T / HTTP/1.1\r\nHost: a\r\n\r\n", status: 400),
        RejectCase(name: "bare CR in request line", input: "GET /\r HTTP/1.1\r\nHost: a\r\n\r\n", status: 400),
        // Field lines (RFC 9112 §5).
        RejectCase(name: "obs-fold", input: "GET / HTTP/1.1\r\nHost: a\r\nX: 1\r\n 2\r\n\r\n", status: 400),
        RejectCase(name: "whitespace before first field", input: "GET / HTTP/1.1\r\n Host: a\r\n\r\n", status: 400),
        RejectCase(name: "space before colon", input: "GET / HTTP/1.1\r\nHost : a\r\n\r\n", status: 400),
        RejectCase(name: "tab before colon", input: "GET / HTTP/1.1\r\nHost\t: a\r\n\r\n", status: 400),
        RejectCase(name: "empty field name", input: "GET / HTTP/1.1\r\nHost: a\r\n: x\r\n\r\n", status: 400),
        RejectCase(name: "no colon", input: "GET / HTTP/1.1\r\nHost: a\r\nJunk\r\n\r\n", status: 400),
        RejectCase(name: "bad name char", input: "GET / HTTP/1.1\r\nHost: a\r\nX(y): 1\r\n\r\n", status: 400),
        RejectCase(name: "bare CR in head", input: "GET / HTTP/1.1\r\nHost: a\rX: y\r\n\r\n", status: 400),
        RejectCase(name: "bare CR ending", input: "GET / HTTP/1.1\r\nHost: a\r\r\n\r\n", status: 400),
        RejectCase(name: "NUL in value", input: "GET / HTTP/1.1\r\nHost: a\r\nX: a\u{0}b\r\n\r\n", status: 400),
        RejectCase(name: "control in value", input: "GET / HTTP/1.1\r\nHost: a\r\nX: a\u{1b}b\r\n\r\n", status: 400),
        RejectCase(name: "DEL in value", input: "GET / HTTP/1.1\r\nHost: a\r\nX: a\u{7f}\r\n\r\n", status: 400),
        // Host (RFC 9112 §3.2).
        RejectCase(name: "missing Host", input: "GET / HTTP/1.1\r\nX: a\r\n\r\n", status: 400),
        RejectCase(name: "two Hosts", input: "GET / HTTP/1.1\r\nHost: a\r\nhost: a\r\n\r\n", status: 400),
        RejectCase(name: "two Hosts in HTTP/1.0", input: "GET / HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n", status: 400),
        // Content-Length (RFC 9110 §8.6, RFC 9112 §6.3).
        RejectCase(name: "CL and TE", input: "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
                   status: 400),
        RejectCase(name: "differing CLs", input: "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n",
                   status: 400),
        RejectCase(name: "differing CL list", input: "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3, 4\r\n\r\n", status: 400),
        RejectCase(name: "CL with plus", input: "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +3\r\n\r\n", status: 400),
        RejectCase(name: "CL negative", input: "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n", status: 400),
        RejectCase(name: "CL non-digit", input: "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3a\r\n\r\n", status: 400),
        RejectCase(name: "CL hex", input: "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0x3\r\n\r\n", status: 400),
        RejectCase(name: "CL empty", input: "POST / HTTP/1.1\r\nHost: a\r\nContent-Length:\r\n\r\n", status: 400),
        RejectCase(name: "CL inner space", input: "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1 2\r\n\r\n", status: 400),
        RejectCase(name: "CL overflow",
                   input: "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999999\r\n\r\n", status: 400),
        // Transfer-Encoding (RFC 9112 §6.1, §6.3).
        RejectCase(name: "TE gzip", input: "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n", status: 501),
        RejectCase(name: "TE gzip, chunked", input: "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
                   status: 501),
        RejectCase(name: "TE chunked, gzip", input: "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
                   status: 400),
        RejectCase(name: "TE chunked twice", input: "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
                   status: 400),
        RejectCase(name: "TE empty", input: "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: \r\n\r\n", status: 400),
        RejectCase(name: "HTTP/1.0 with TE", input: "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", status: 400),
        // Chunked body (RFC 9112 §7.1).
        RejectCase(name: "chunk size overflow", input: chunkedHead + "ffffffffffffffffff\r\n", status: 400),
        RejectCase(name: "chunk size 16 digits over Int.max", input: chunkedHead + "8000000000000000\r\n", status: 400),
        RejectCase(name: "chunk size xx", input: chunkedHead + "xx\r\n", status: 400),
        RejectCase(name: "chunk size empty", input: chunkedHead + "\r\n", status: 400),
        RejectCase(name: "chunk size with sign", input: chunkedHead + "+3\r\nabc\r\n0\r\n\r\n", status: 400),
        RejectCase(name: "chunk size 0x", input: chunkedHead + "0x3\r\nabc\r\n0\r\n\r\n", status: 400),
        RejectCase(name: "NUL in chunk size", input: chunkedHead + "3\u{0}\r\nabc\r\n0\r\n\r\n", status: 400),
        RejectCase(name: "whitespace after chunk size", input: chunkedHead + "3 \r\nabc\r\n0\r\n\r\n", status: 400),
        RejectCase(name: "empty chunk extension", input: chunkedHead + "3;\r\nabc\r\n0\r\n\r\n", status: 400),
        RejectCase(name: "unterminated quoted extension", input: chunkedHead + "3;a=\"b\r\nabc\r\n0\r\n\r\n", status: 400),
        RejectCase(name: "bare LF after chunk size", input: chunkedHead + "3\nabc\r\n0\r\n\r\n", status: 400),
        RejectCase(name: "bad chunk terminator", input: chunkedHead + "3\r\nxxx__", status: 400),
        RejectCase(name: "chunk data too long", input: chunkedHead + "3\r\nxxxx\r\n0\r\n\r\n", status: 400),
        RejectCase(name: "chunk data LF only", input: chunkedHead + "3\r\nxxx\n0\r\n\r\n", status: 400),
        RejectCase(name: "obs-fold in trailer", input: chunkedHead + "0\r\nA: 1\r\n 2\r\n\r\n", status: 400),
        RejectCase(name: "bad trailer", input: chunkedHead + "0\r\nA : 1\r\n\r\n", status: 400),
        RejectCase(name: "bare LF in trailer", input: chunkedHead + "0\r\nA: 1\n\r\n", status: 400),
        RejectCase(name: "chunk-size line too long", input: chunkedHead + "1;a=" + String(repeating: "b", count: 5000) + "\r\n",
                   status: 400),
    ]
    static let chunkedHead = "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"

    @Test(arguments: rejects)
    func rejected(_ c: RejectCase) {
        let events = parse(c.input, limits: c.limits)
        #expect(errorStatus(events) == c.status, "\(events)")
        #expect(requests(events).isEmpty)
    }

    @Test func failedParserAcceptsNothing() {
        var p = HTTPParser()
        let events = p.feed(Array("GET / HTTP/1.1\r\nHost: a\r\n\r\nGET  / HTTP/1.1\r\n".utf8))
        #expect(events.count == 2 && requests(events).count == 1 && errorStatus(events) == 400)
        #expect(p.failed && !p.isIdle && !p.isReadingBody)
        #expect(p.feed(Array("GET / HTTP/1.1\r\nHost: a\r\n\r\n".utf8)).isEmpty && p.failed)
    }

    @Test func tokenCharacterSet() {
        // A method is a token (RFC 9110 §9.1, §5.6.2): exactly the tchar bytes are accepted in it.
        let tchars = Set("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ".utf8)
        for c in 0...255 {
            var p = HTTPParser()
            let events = p.feed([0x47, UInt8(c), 0x54] + Array(" / HTTP/1.1\r\nHost: a\r\n\r\n".utf8))
            #expect((requests(events).count == 1) == tchars.contains(UInt8(c)), "\(c)")
        }
    }

    /// Valid requests of every shape, the seeds of the fuzz test.
    static let corpus: [String] = [
        "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n",
        "POST /v1/jobs?x=1 HTTP/1.1\r\nHost: localhost:8080\r\nContent-Type: application/json\r\nContent-Length: 13\r\n\r\n{\"kind\":\"a\"}\n",
        "PUT /u HTTP/1.1\r\nHost: [::1]:80\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n4;a=b\r\nWiki\r\n5\r\npedia\r\n0\r\nT: 1\r\n\r\n",
        "GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET /2 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        "\r\nHEAD /x HTTP/1.1\nHost: a\nAccept: */*\n\n",
    ]

    @Test func fuzzedInputsMatchWholeFeeds() {
        var rng = SplitMix(2024)
        let small = limits(line: 64, headerBytes: 128, headerCount: 6, body: 64)
        let alphabet = Array("\r\n :;,0123456789aAfFxX\t\"\\-".utf8) + [0, 0x7F, 0x80, 0xFF]
        for round in 0..<2000 {
            var bytes = Array(Self.corpus[round % Self.corpus.count].utf8)
            for _ in 0..<(1 + rng.below(4)) {
                let at = rng.below(bytes.count + 1)
                let byte = rng.below(2) == 0 ? alphabet[rng.below(alphabet.count)] : UInt8(truncatingIfNeeded: rng.next())
                switch rng.below(3) {
                case 0 where at < bytes.count: bytes[at] = byte
                case 1: bytes.insert(byte, at: at)
                default: if at < bytes.count { bytes.remove(at: at) }
                }
            }
            let l = round % 3 == 0 ? small : HTTPLimits()
            var whole = HTTPParser(limits: l)
            let expected = whole.feed(bytes)
            if case .error? = expected.dropLast().first(where: { if case .error = $0 { true } else { false } }) {
                Issue.record("error before the last event: \(expected)")
            }
            let splits = round % 10 == 0 ? bytes.indices.map { $0 } : randomCuts(bytes.count, &rng)
            let (events, parser) = feedPieces(bytes, splits, l)
            #expect(events == expected, "round \(round): \(bytes)")
            #expect(parser.failed == whole.failed && parser.isIdle == whole.isIdle)
        }
    }

    // MARK: absolute-form (RFC 9112 §3.2.2)

    @Test("absolute-form targets are routed by their path and query; their authority wins over Host")
    func absoluteForm() throws {
        let cases: [(target: String, origin: String, authority: String)] = [
            ("http://127.0.0.1:8080/healthz", "/healthz", "127.0.0.1:8080"),
            ("http://example.com/v1/jobs?state=queued&limit=5", "/v1/jobs?state=queued&limit=5", "example.com"),
            ("HTTP://Example.COM:80/a/b", "/a/b", "Example.COM:80"),
            ("https://h/x", "/x", "h"),
            ("HtTpS://h:443/x?", "/x?", "h:443"),
            ("http://h", "/", "h"),
            ("http://h?q=1", "/?q=1", "h"),
            ("http://[::1]:9/p", "/p", "[::1]:9"),
            ("http://h:/p", "/p", "h:"),
        ]
        for c in cases {
            let r = try #require(single("GET \(c.target) HTTP/1.1\r\nHost: other.example\r\n\r\n"), "\(c.target)")
            #expect(r.target == c.origin && r.head.authority == c.authority, "\(c.target) → \(r.target) @ \(r.head.authority ?? "nil")")
            #expect(r.head.effectiveAuthority == c.authority)
        }
        let q = try #require(single("GET http://h:1/healthz?x=1&y=%20 HTTP/1.1\r\nHost: h:1\r\n\r\n"))
        #expect(q.head.path == "/healthz" && q.head.query == "x=1&y=%20")
        // Origin-form keeps Host as the authority; HTTP/1.0 may leave Host out.
        let o = try #require(single("GET /a HTTP/1.1\r\nHost: h:2\r\n\r\n"))
        #expect(o.head.authority == nil && o.head.effectiveAuthority == "h:2")
        #expect(try #require(single("GET http://h/a HTTP/1.0\r\n\r\n")).target == "/a")
        // A body and pipelining work as with origin-form.
        let events = parse("POST http://h/u HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabcGET http://h/v?w HTTP/1.1\r\nHost: h\r\n\r\n")
        #expect(requests(events).map(\.target) == ["/u", "/v?w"] && requests(events).first?.body == Array("abc".utf8))
        // Asterisk-form and CONNECT's authority-form are left as sent.
        #expect(try #require(single("OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n")).target == "*")
        #expect(try #require(single("CONNECT h:443 HTTP/1.1\r\nHost: h:443\r\n\r\n")).target == "h:443")
    }

    static let absoluteRejects: [RejectCase] = [
        RejectCase(name: "ftp scheme", input: "GET ftp://h/x HTTP/1.1\r\nHost: h\r\n\r\n", status: 400),
        RejectCase(name: "httpx scheme", input: "GET httpx://h/x HTTP/1.1\r\nHost: h\r\n\r\n", status: 400),
        RejectCase(name: "mailto URI", input: "GET mailto:a@b HTTP/1.1\r\nHost: h\r\n\r\n", status: 400),
        RejectCase(name: "relative path", input: "GET healthz HTTP/1.1\r\nHost: h\r\n\r\n", status: 400),
        RejectCase(name: "scheme without //", input: "GET http:/x HTTP/1.1\r\nHost: h\r\n\r\n", status: 400),
        RejectCase(name: "empty scheme", input: "GET ://h/x HTTP/1.1\r\nHost: h\r\n\r\n", status: 400),
        RejectCase(name: "empty authority", input: "GET http:///x HTTP/1.1\r\nHost: h\r\n\r\n", status: 400),
        RejectCase(name: "only a port", input: "GET http://:80/x HTTP/1.1\r\nHost: h\r\n\r\n", status: 400),
        RejectCase(name: "userinfo", input: "GET http://u:p@h/x HTTP/1.1\r\nHost: h\r\n\r\n", status: 400),
        RejectCase(name: "fragment", input: "GET http://h/x#f HTTP/1.1\r\nHost: h\r\n\r\n", status: 400),
        RejectCase(name: "bad port", input: "GET http://h:123456/x HTTP/1.1\r\nHost: h\r\n\r\n", status: 400),
        RejectCase(name: "bad host character", input: "GET http://h<x>/ HTTP/1.1\r\nHost: h\r\n\r\n", status: 400),
        RejectCase(name: "unclosed IP literal", input: "GET http://[::1/x HTTP/1.1\r\nHost: h\r\n\r\n", status: 400),
        RejectCase(name: "absolute-form without Host", input: "GET http://h/x HTTP/1.1\r\n\r\n", status: 400),
        RejectCase(name: "absolute-form with an invalid Host", input: "GET http://h/x HTTP/1.1\r\nHost: a b\r\n\r\n", status: 400),
        RejectCase(name: "absolute-form with two Hosts", input: "GET http://h/x HTTP/1.1\r\nHost: h\r\nHost: h\r\n\r\n", status: 400),
    ]

    @Test("invalid absolute-form targets and other schemes are 400", arguments: absoluteRejects)
    func absoluteFormRejects(_ c: RejectCase) {
        #expect(errorStatus(parse(c.input, limits: c.limits)) == c.status, "\(parse(c.input, limits: c.limits))")
    }

    // MARK: head gate

    /// Refuses any head without `Authorization` (as the API's bearer check does).
    static let gate: @Sendable (HTTPRequestHead) -> HTTPResponse? = { head in
        head.headers["Authorization"] == nil ? .problem(status: 401, code: "unauthorized", detail: "token") : nil
    }

    @Test("a refused head stops the parser before the body: no byte of it is buffered, no 100 Continue")
    func headGateStopsBeforeBody() throws {
        let body = String(repeating: "x", count: 3000)
        let unauthenticated = "POST /v1/checkpoints HTTP/1.1\r\nHost: h\r\nContent-Length: 61865984\r\n\r\n" + body
        let events = parse(unauthenticated, limits: limits(body: 64 << 20), gate: Self.gate)
        guard case .rejected(let head, let response)? = events.first else {
            Issue.record("expected a rejection, got \(events)")
            return
        }
        #expect(events.count == 1 && head.target == "/v1/checkpoints" && response.status == 401)
        var p = HTTPParser(limits: limits(body: 64 << 20), headGate: Self.gate)
        _ = p.feed(Array(unauthenticated.utf8))
        #expect(p.failed && p.bodyBytesBuffered == 0 && p.feed(Array(body.utf8)).isEmpty && p.bodyBytesBuffered == 0)
        // Under Expect: 100-continue the refusal comes instead of the expectation.
        let expecting = parse("PUT /u HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
                              gate: Self.gate)
        #expect(expecting.count == 1 && { if case .rejected = expecting[0] { true } else { false } }())
        // A refused request after an accepted one (pipelining): the first is delivered whole.
        let pipelined = parse("POST /a HTTP/1.1\r\nHost: h\r\nAuthorization: Bearer t\r\nContent-Length: 2\r\n\r\nokGET /b HTTP/1.1\r\nHost: h\r\n\r\n",
                              gate: Self.gate)
        #expect(requests(pipelined).map(\.body) == [Array("ok".utf8)] && pipelined.count == 2)
        if case .rejected(let h, _)? = pipelined.last { #expect(h.target == "/b") } else { Issue.record("\(pipelined)") }
        // Framing errors are still found first (the gate only sees well-framed heads).
        #expect(errorStatus(parse("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", gate: Self.gate)) == 400)
    }

    @Test("an accepted head reads its body as usual, and the buffered-bytes counter counts it")
    func headGateAccepts() throws {
        let chunked = "POST /a HTTP/1.1\r\nHost: h\r\nAuthorization: Bearer t\r\nExpect: 100-continue\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n3\r\nabc\r\n0\r\n\r\n"
        let events = parse(chunked, gate: Self.gate)
        #expect(events.count == 2 && requests(events).first?.body == Array("helloabc".utf8))
        if case .expectContinue? = events.first {} else { Issue.record("expected 100-continue first: \(events)") }
        var p = HTTPParser(headGate: Self.gate)
        _ = p.feed(Array(chunked.utf8))
        #expect(p.bodyBytesBuffered == 8)
        var q = HTTPParser(headGate: Self.gate)
        _ = q.feed(Array("POST /a HTTP/1.1\r\nHost: h\r\nAuthorization: x\r\nContent-Length: 10\r\n\r\n0123".utf8))
        #expect(q.bodyBytesBuffered == 4 && q.isReadingBody)
    }

    /// Prints the time to parse the small GET (best of several batches; no assertion on time).
    @Test func timing() {
        let request = Array("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n".utf8)
        var p = HTTPParser()
        var count = 0
        let batch = 50_000
        let clock = ContinuousClock()
        var best = Duration.seconds(1_000)
        for _ in 0..<6 {
            let elapsed = clock.measure {
                for _ in 0..<batch { count += p.feed(request).count }
            }
            best = min(best, elapsed)
        }
        #expect(count == 6 * batch)
        let ns = (Double(best.components.seconds) * 1e18 + Double(best.components.attoseconds)) / 1e9 / Double(batch)
        print("HTTPParser: small GET parsed in \(Int(ns.rounded())) ns (best of 6 × \(batch))")
    }
}
