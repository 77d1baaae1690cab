#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// An incremental, strict HTTP/1.1 request parser (RFC 9112) for a server reading from a socket.
///
/// Feed it bytes as they arrive, split anywhere; it returns the ``HTTPParseEvent``s those bytes
/// completed, in order. The events do not depend on how the input was split: feeding a stream
/// whole, one byte at a time or in any other pieces yields the same events.
///
/// What it accepts (everything else is an ``HTTPParseEvent/error(_:)``, after which the parser
/// takes no more input — the server answers the status and closes, RFC 9112 §11.2):
/// - Request line `method SP request-target SP HTTP-version` (RFC 9112 §3), single spaces, method a
///   token, target visible ASCII; HTTP/1.0 and HTTP/1.1 (other versions → 505). Empty lines before
///   a request line are ignored (RFC 9112 §2.2).
/// - Request targets in origin-form (`/path?query`), asterisk-form (`*`), authority-form (CONNECT)
///   and absolute-form (`http://host:port/path?query`, RFC 9112 §3.2.2). An absolute-form target
///   must use the `http` or `https` scheme (case-insensitive), have a valid non-empty host and no
///   userinfo (RFC 9110 §4.2.1, §4.2.4) and no fragment; it is reduced to its origin-form (an empty
///   path becomes `/`) and its authority is reported in ``HTTPRequestHead/authority``, taking
///   precedence over `Host` (RFC 9112 §3.2.2, §7.2). `Host` is still required and checked.
/// - Lines end in CRLF; in the head a bare LF is also accepted (RFC 9112 §2.2), a bare CR is not.
///   Inside a chunked body (chunk-size lines, trailers) only CRLF is accepted.
/// - Field lines `name ":" OWS value OWS` (RFC 9112 §5); no obs-fold, no whitespace before the
///   colon, no control characters except HTAB in values.
/// - Exactly one valid `Host` in HTTP/1.1 (RFC 9112 §3.2).
/// - Bodies framed by `Content-Length` or by `Transfer-Encoding: chunked` alone (RFC 9112 §6);
///   no framing means no body. Both at once is rejected (RFC 9112 §6.1 allows that).
/// - `Expect: 100-continue` on an HTTP/1.1 request with a body (Content-Length > 0 or chunked)
///   yields ``HTTPParseEvent/expectContinue(_:)`` right after the head, before the body — also
///   when the body is already in the same feed, so events never depend on the split (sending
///   100 Continue then is harmless). Other expectations → 417 (RFC 9110 §10.1.1).
/// - Limits from ``HTTPLimits``: request line → 414, header (and trailer) section bytes or field
///   count → 431, body → 413 (from Content-Length before any body byte, or while reading chunks).
/// - An optional head gate (``init(limits:headGate:bodyPolicy:)``) judges each complete, well-framed head before
///   any of its body is accepted and before `100 Continue`: a response from it becomes
///   ``HTTPParseEvent/rejected(_:_:)``, after which the parser takes no more input, so the body of a
///   refused request (an unauthenticated upload) is never buffered.
/// - An optional body policy (same initializer) chooses, for each request with a body, to buffer
///   it (the default), to stream it to an ``HTTPBodySink`` (then `maxBodyBytes` does not apply:
///   the sink enforces its own cap and may refuse part-way, which yields
///   ``HTTPParseEvent/refused(_:_:)``), or to refuse it from its head.
///
/// The parser never traps on input: no force-unwraps, every size is overflow-checked.
public struct HTTPParser: Sendable {
    private enum State: UInt8, Sendable {
        case requestLine, headers, body, chunkSize, chunkData, chunkCR, chunkLF, trailers, failed
    }

    /// Framing-relevant facts gathered from the field lines of one head, judged when it ends.
    private struct Facts: Sendable {
        var hostCount = 0
        var hostInvalid = false
        var contentLengthSeen = false
        var contentLengthInvalid = false
        var contentLength = 0
        var transferEncoding = false
        var codings = 0
        var lastCodingChunked = false
        var chunkedNotLast = false
        var unknownCoding = false
        var close = false
        var keepAlive = false
        var expectContinue = false
        var unknownExpectation = false
    }

    private let limits: HTTPLimits
    private let headGate: (@Sendable (HTTPRequestHead) -> HTTPResponse?)?
    private let bodyPolicy: (@Sendable (HTTPRequestHead, Int?) -> HTTPBodyPolicy)?
    private var state = State.requestLine
    /// The unfinished line carried over to the next feed (never body bytes: those are consumed).
    private var pending: [UInt8] = []
    /// How many bytes of `pending` are known to contain no LF (so a long line fed in small pieces
    /// is scanned once, not once per feed).
    private var scanned = 0
    // The head being read.
    private var method = ""
    private var target = ""
    /// The authority of an absolute-form target (nil for the other forms).
    private var targetAuthority: String?
    private var version = HTTPVersion.http11
    private var headers = HTTPHeaders()
    private var facts = Facts()
    /// Bytes (without line endings) and number of the field lines so far in the current header
    /// or trailer section.
    private var sectionBytes = 0
    private var sectionCount = 0
    // The request whose body is being read.
    private var head: HTTPRequestHead?
    private var body: [UInt8] = []
    /// Where the body of the current request goes instead of `body` (a streamed body).
    private var sink: (any HTTPBodySink)?
    /// Body bytes still to come (Content-Length) or left in the current chunk.
    private var remaining = 0
    /// Body bytes stored so far over the parser's life (all requests): what a refused request
    /// did not cost is visible here (tests, metrics).
    public private(set) var bodyBytesBuffered = 0

    /// The longest chunk-size line (size plus extensions) accepted; longer → 400.
    private static var maxChunkLine: Int { 4096 }
    /// At most this much body storage is reserved up front from a Content-Length (the rest grows
    /// as bytes really arrive, so a large announced length costs nothing until it is sent).
    private static var maxReserve: Int { 1 << 20 }

    /// A parser for one connection.
    /// - Parameters:
    ///   - limits: the sizes beyond which requests are refused (414, 431, 413).
    ///   - headGate: called once per request when its head is complete and validly framed, before
    ///     any body byte is accepted and before `Expect: 100-continue` is acknowledged. Returning a
    ///     response refuses the request: the parser emits ``HTTPParseEvent/rejected(_:_:)`` and
    ///     stops, so the body is never buffered. It must be fast and must not block (it runs on the
    ///     connection's queue).
    ///   - bodyPolicy: called after the head gate for each request that has a body, with its
    ///     `Content-Length` (nil when chunked), before any body byte is accepted and before
    ///     `Expect: 100-continue` is acknowledged. See ``HTTPBodyPolicy``. It must be fast.
    public init(limits: HTTPLimits = HTTPLimits(), headGate: (@Sendable (HTTPRequestHead) -> HTTPResponse?)? = nil,
                bodyPolicy: (@Sendable (HTTPRequestHead, Int?) -> HTTPBodyPolicy)? = nil) {
        self.limits = limits
        self.headGate = headGate
        self.bodyPolicy = bodyPolicy
    }

    /// True when no partial request is buffered (between requests): the server applies the
    /// keep-alive idle timeout then, the header deadline otherwise. False after an error.
    public var isIdle: Bool { state == .requestLine && pending.isEmpty }

    /// True while the head of the current request is complete and its body (or the trailer
    /// section of a chunked body) is being read: the body idle timeout applies.
    public var isReadingBody: Bool {
        switch state {
        case .body, .chunkSize, .chunkData, .chunkCR, .chunkLF, .trailers: true
        case .requestLine, .headers, .failed: false
        }
    }

    /// True after an ``HTTPParseEvent/error(_:)``, ``HTTPParseEvent/rejected(_:_:)`` or
    /// ``HTTPParseEvent/refused(_:_:)`` event: no further input is accepted (`feed(_:)` returns `[]`).
    public var failed: Bool { state == .failed }

    /// The connection is closing: a body being streamed to a sink will never complete, so the
    /// sink is aborted (``HTTPBodySink/abort()``). Nothing else changes.
    public mutating func abandon() {
        if let sink {
            self.sink = nil
            sink.abort()
        }
    }

    /// Consumes `bytes` (any split, down to one byte at a time) and returns the events they
    /// completed, in order: possibly several requests (pipelining), at most one error (last).
    ///
    /// Bytes after a complete request are kept for the next one. The buffer is not retained.
    public mutating func feed(_ bytes: UnsafeRawBufferPointer) -> [HTTPParseEvent] {
        if state == .failed { return [] }
        var events: [HTTPParseEvent] = []
        if pending.isEmpty {
            let used = run(bytes, &events)
            if state != .failed, used < bytes.count, let base = bytes.baseAddress {
                pending.append(contentsOf: UnsafeRawBufferPointer(start: base + used, count: bytes.count - used))
            }
        } else {
            var buffer = pending
            pending = []
            buffer.append(contentsOf: bytes)
            let used = buffer.withUnsafeBytes { run($0, &events) }
            if state != .failed {
                buffer.removeSubrange(0..<min(used, buffer.count))
                pending = buffer
            }
        }
        if state == .failed { pending = [] }
        return events
    }

    /// Consumes `bytes`; see `feed(_:)`.
    public mutating func feed(_ bytes: [UInt8]) -> [HTTPParseEvent] {
        bytes.withUnsafeBytes { feed($0) }
    }

    // MARK: - The scanner

    /// Parses as much of `p` as possible; returns how many bytes were consumed (the rest is an
    /// unfinished line to be retried with more input). On error the state is `.failed`.
    private mutating func run(_ p: UnsafeRawBufferPointer, _ events: inout [HTTPParseEvent]) -> Int {
        let n = p.count
        guard n > 0, let raw = p.baseAddress else { return 0 }
        let s = raw.assumingMemoryBound(to: UInt8.self)
        var i = 0
        var resume = scanned
        scanned = 0
        while i < n {
            switch state {
            case .requestLine, .headers, .trailers, .chunkSize:
                // Not even the start of a request (a TLS handshake, binary noise): refuse at
                // once rather than waiting for a line end or the length limit.
                if state == .requestLine {
                    let c = s[i]
                    if c != cr && c != lf && !isTchar(c) {
                        fail(Self.bad("not an HTTP request line"), &events)
                        return n
                    }
                }
                let from = i + resume
                resume = 0
                guard let hit = memchr(raw + from, Int32(lf), n - from) else {
                    // An unfinished line: decide the length limit now (a trailing CR may
                    // still be the start of CRLF, so it does not count).
                    var length = n - i
                    if s[n - 1] == cr { length -= 1 }
                    if let error = lengthError(length) {
                        fail(error, &events)
                        return n
                    }
                    scanned = n - i
                    return i
                }
                let lineFeed = raw.distance(to: UnsafeRawPointer(hit))
                var end = lineFeed
                let crlf = end > i && s[end - 1] == cr
                if crlf { end -= 1 }
                if let error = lengthError(end - i) {
                    fail(error, &events)
                    return n
                }
                if let error = line(s, i, end, crlf, &events) {
                    fail(error, &events)
                    return n
                }
                i = lineFeed + 1
            case .body:
                let take = min(remaining, n - i)
                if !store(s + i, take, &events) { return n }
                i += take
                remaining -= take
                if remaining == 0 { completeRequest(&events) }
            case .chunkData:
                let take = min(remaining, n - i)
                if !store(s + i, take, &events) { return n }
                i += take
                remaining -= take
                if remaining == 0 { state = .chunkCR }
            case .chunkCR, .chunkLF:
                // RFC 9112 §7.1: chunk-data is followed by exactly CRLF.
                let expected = state == .chunkCR ? cr : lf
                if s[i] != expected {
                    fail(Self.bad("chunk data not followed by CRLF"), &events)
                    return n
                }
                state = state == .chunkCR ? .chunkLF : .chunkSize
                i += 1
            case .failed:
                return n
            }
        }
        return i
    }

    /// Stores `count` body bytes: buffered, or written to the sink. False when the sink refused
    /// them (the parser has failed with ``HTTPParseEvent/refused(_:_:)``).
    private mutating func store(_ p: UnsafePointer<UInt8>, _ count: Int, _ events: inout [HTTPParseEvent]) -> Bool {
        guard let sink else {
            body.append(contentsOf: UnsafeBufferPointer(start: p, count: count))
            bodyBytesBuffered += count
            return true
        }
        guard let refusal = sink.write(UnsafeRawBufferPointer(start: p, count: count)) else { return true }
        if let head { events.append(.refused(head, refusal)) }
        self.sink = nil
        sink.abort()
        state = .failed
        head = nil
        body = []
        headers = HTTPHeaders()
        return false
    }

    /// The limit a line of `length` bytes (without its line ending) breaks in the current state.
    private func lengthError(_ length: Int) -> HTTPParseError? {
        switch state {
        case .requestLine:
            // RFC 9112 §3: a server receiving a request-target longer than it wishes to parse
            // responds 414.
            return length > limits.maxRequestLine
                ? HTTPParseError(status: 414, message: "request line longer than \(limits.maxRequestLine) bytes") : nil
        case .headers, .trailers:
            // RFC 6585 §5: 431 Request Header Fields Too Large.
            return length > limits.maxHeaderBytes - sectionBytes
                ? HTTPParseError(status: 431, message: "header section larger than \(limits.maxHeaderBytes) bytes") : nil
        case .chunkSize:
            return length > Self.maxChunkLine ? Self.bad("chunk-size line too long") : nil
        case .body, .chunkData, .chunkCR, .chunkLF, .failed:
            return nil
        }
    }

    /// Handles one complete line `s[a..<b]` (line ending removed; `crlf` says whether it was CRLF).
    private mutating func line(_ s: UnsafePointer<UInt8>, _ a: Int, _ b: Int, _ crlf: Bool,
                               _ events: inout [HTTPParseEvent]) -> HTTPParseError? {
        switch state {
        case .requestLine:
            return requestLine(s, a, b)
        case .headers:
            if a == b { return finishHead(&events) }
            return fieldLine(s, a, b)
        case .chunkSize:
            guard crlf else { return Self.bad("chunk-size line not ended by CRLF") }
            return chunkSizeLine(s, a, b)
        case .trailers:
            guard crlf else { return Self.bad("trailer line not ended by CRLF") }
            if a == b {
                completeRequest(&events)
                return nil
            }
            return trailerLine(s, a, b)
        case .body, .chunkData, .chunkCR, .chunkLF, .failed:
            return nil
        }
    }

    // MARK: - Request line (RFC 9112 §3)

    private mutating func requestLine(_ s: UnsafePointer<UInt8>, _ a: Int, _ b: Int) -> HTTPParseError? {
        // RFC 9112 §2.2: a server SHOULD ignore at least one empty line before the request-line.
        if a == b { return nil }
        var k = a
        while k < b && isTchar(s[k]) { k += 1 }
        guard k > a, k < b, s[k] == sp else { return Self.badLine(s, a, b, "invalid method") }
        let methodEnd = k
        k += 1
        let targetStart = k
        guard let space = memchr(s + k, Int32(sp), b - k) else { return Self.badLine(s, a, b, "invalid request-target") }
        k = UnsafeRawPointer(s).distance(to: UnsafeRawPointer(space))
        guard k > targetStart, Self.visible(s, targetStart, k) else {
            return Self.badLine(s, a, b, "invalid request-target")
        }
        let targetEnd = k
        k += 1
        // HTTP-version = "HTTP/" DIGIT "." DIGIT (RFC 9112 §2.3), case-sensitive.
        guard b - k == 8, s[k] == 0x48, s[k + 1] == 0x54, s[k + 2] == 0x54, s[k + 3] == 0x50, s[k + 4] == 0x2F,
              s[k + 6] == 0x2E else {
            return Self.badLine(s, a, b, "invalid HTTP version")
        }
        let major = s[k + 5] &- 0x30, minor = s[k + 7] &- 0x30
        guard major <= 9, minor <= 9 else { return Self.badLine(s, a, b, "invalid HTTP version") }
        guard major == 1, minor <= 1 else {
            return HTTPParseError(status: 505, message: "HTTP version \(major).\(minor) not supported")
        }
        method = Self.knownMethod(s, a, methodEnd - a) ?? Self.string(s, a, methodEnd)
        targetAuthority = nil
        // RFC 9112 §3.2: origin-form starts with "/", asterisk-form is "*" and authority-form is
        // only for CONNECT; anything else must be absolute-form (§3.2.2).
        if s[targetStart] != slash && !(targetEnd - targetStart == 1 && s[targetStart] == star) && method != "CONNECT" {
            switch Self.absoluteForm(s, targetStart, targetEnd) {
            case .success(let parts):
                target = parts.origin
                targetAuthority = parts.authority
            case .failure(let error):
                return error
            }
        } else {
            target = Self.string(s, targetStart, targetEnd)
        }
        version = minor == 1 ? .http11 : .http10
        headers = HTTPHeaders()
        facts = Facts()
        sectionBytes = 0
        sectionCount = 0
        state = .headers
        return nil
    }

    /// Splits an absolute-form request-target (RFC 9112 §3.2.2) `s[a..<b]` into its authority and
    /// the equivalent origin-form (`path-abempty [ "?" query ]`, an empty path as `/`).
    ///
    /// Only the `http` and `https` schemes are served (RFC 9110 §4.2.1, §4.2.2; scheme names are
    /// case-insensitive, RFC 3986 §3.1). The authority must be a valid `uri-host [ ":" port ]`
    /// without userinfo (RFC 9110 §4.2.4: a recipient treats userinfo as an error) and with a
    /// non-empty host (§4.2.1: such a URI MUST be rejected as invalid). A request-target carries no
    /// fragment (RFC 9112 §3.2).
    private static func absoluteForm(_ s: UnsafePointer<UInt8>, _ a: Int, _ b: Int)
        -> Result<(authority: String, origin: String), HTTPParseError> {
        // scheme = ALPHA *( ALPHA / DIGIT / "+" / "-" / "." ) (RFC 3986 §3.1)
        var k = a
        while k < b, s[k] != colon {
            let c = s[k] | 0x20
            let alpha = c >= 0x61 && c <= 0x7A
            guard alpha || (k > a && (s[k] &- 0x30 <= 9 || s[k] == 0x2B || s[k] == 0x2D || s[k] == 0x2E)) else {
                return .failure(bad("invalid request-target"))
            }
            k += 1
        }
        guard k < b, k > a else { return .failure(bad("invalid request-target")) }
        let scheme = k - a
        guard (scheme == 4 && equalsLower(s, a, "http")) || (scheme == 5 && equalsLower(s, a, "https")) else {
            return .failure(bad("unsupported URI scheme in request-target (only http and https)"))
        }
        k += 1
        guard b - k >= 2, s[k] == slash, s[k + 1] == slash else {
            return .failure(bad("absolute-form request-target without authority"))
        }
        k += 2
        if memchr(s + k, Int32(hash), b - k) != nil { return .failure(bad("fragment in request-target")) }
        let authorityStart = k
        while k < b && s[k] != slash && s[k] != question {
            if s[k] == at { return .failure(bad("userinfo in request-target")) }
            k += 1
        }
        guard k > authorityStart, s[authorityStart] != colon, validHost(s, authorityStart, k) else {
            return .failure(bad("invalid authority in request-target"))
        }
        let authority = string(s, authorityStart, k)
        let origin = k == b || s[k] == question ? "/" + string(s, k, b) : string(s, k, b)
        return .success((authority, origin))
    }

    /// 400 for a bad request line, naming a bare CR when that is the cause.
    private static func badLine(_ s: UnsafePointer<UInt8>, _ a: Int, _ b: Int, _ message: String) -> HTTPParseError {
        var k = a
        while k < b {
            if s[k] == cr { return bad("bare CR in request line") }
            k += 1
        }
        return bad(message)
    }

    // MARK: - Field lines (RFC 9112 §5, RFC 9110 §5)

    /// Splits and checks `name ":" OWS value OWS`; on success returns the end of the name and
    /// the bounds of the trimmed value.
    private static func splitField(_ s: UnsafePointer<UInt8>, _ a: Int, _ b: Int,
                                   _ nameEnd: inout Int, _ valueStart: inout Int, _ valueEnd: inout Int) -> HTTPParseError? {
        // RFC 9112 §5.2: obs-fold (and whitespace before the first field, §2.2) → 400.
        if s[a] == sp || s[a] == tab { return bad("obsolete line folding or leading whitespace in field line") }
        var k = a
        while k < b && isTchar(s[k]) { k += 1 }
        guard k < b else { return bad("field line without colon") }
        let c = s[k]
        if c != colon {
            // RFC 9112 §5.1: no whitespace between field name and colon; MUST reject with 400.
            if c == sp || c == tab { return bad("whitespace between field name and colon") }
            if c == cr { return bad("bare CR in field line") }
            return bad("invalid character in field name")
        }
        guard k > a else { return bad("empty field name") }
        nameEnd = k
        k += 1
        while k < b && (s[k] == sp || s[k] == tab) { k += 1 }
        valueStart = k
        // field-vchar = VCHAR / obs-text, with SP and HTAB inside (RFC 9110 §5.5): one fast
        // pass, then a second look only when something is wrong (to name it).
        if !fieldValueValid(s, k, b) {
            while k < b {
                let c = s[k]
                if c == cr { return bad("bare CR in field value") }
                if c == 0 { return bad("NUL in field value") }
                if (c < sp && c != tab) || c == del { break }
                k += 1
            }
            return bad("control character in field value")
        }
        var end = b
        while end > valueStart && (s[end - 1] == sp || s[end - 1] == tab) { end -= 1 }
        valueEnd = end
        return nil
    }

    /// Counts a field line against the header (or trailer) section limits.
    private mutating func countField(_ length: Int) -> HTTPParseError? {
        guard sectionCount < limits.maxHeaderCount else {
            return HTTPParseError(status: 431, message: "more than \(limits.maxHeaderCount) header fields")
        }
        sectionCount += 1
        sectionBytes += length  // lengthError already kept this within limits.maxHeaderBytes
        return nil
    }

    private mutating func fieldLine(_ s: UnsafePointer<UInt8>, _ a: Int, _ b: Int) -> HTTPParseError? {
        var nameEnd = a, valueStart = a, valueEnd = a
        if let error = Self.splitField(s, a, b, &nameEnd, &valueStart, &valueEnd) { return error }
        if let error = countField(b - a) { return error }
        switch nameEnd - a {
        case 4 where Self.equalsLower(s, a, "host"):
            facts.hostCount += 1
            if !Self.validHost(s, valueStart, valueEnd) { facts.hostInvalid = true }
        case 6 where Self.equalsLower(s, a, "expect"):
            // RFC 9110 §10.1.1: 100-continue is the only expectation defined.
            Self.forEachElement(s, valueStart, valueEnd) { x, y in
                if y == x { return }
                if y - x == 12 && Self.equalsLower(s, x, "100-continue") {
                    facts.expectContinue = true
                } else {
                    facts.unknownExpectation = true
                }
            }
        case 10 where Self.equalsLower(s, a, "connection"):
            // RFC 9112 §9.3: connection options are case-insensitive tokens in a list.
            Self.forEachElement(s, valueStart, valueEnd) { x, y in
                if y - x == 5 && Self.equalsLower(s, x, "close") { facts.close = true }
                if y - x == 10 && Self.equalsLower(s, x, "keep-alive") { facts.keepAlive = true }
            }
        case 14 where Self.equalsLower(s, a, "content-length"):
            contentLength(s, valueStart, valueEnd)
        case 17 where Self.equalsLower(s, a, "transfer-encoding"):
            // The codings of every Transfer-Encoding line form one list, in order (RFC 9110 §5.3).
            facts.transferEncoding = true
            Self.forEachElement(s, valueStart, valueEnd) { x, y in
                if y == x { return }
                if facts.lastCodingChunked { facts.chunkedNotLast = true }
                let chunked = y - x == 7 && Self.equalsLower(s, x, "chunked")
                facts.lastCodingChunked = chunked
                if !chunked { facts.unknownCoding = true }
                facts.codings += 1
            }
        default:
            break
        }
        let name = Self.knownName(s, a, nameEnd - a) ?? Self.string(s, a, nameEnd)
        headers.add(name, Self.string(s, valueStart, valueEnd))
        return nil
    }

    /// Content-Length = 1*DIGIT (RFC 9110 §8.6). A list or repeated field is accepted only when
    /// every value is the same number; anything else makes the framing invalid (RFC 9112 §6.3).
    private mutating func contentLength(_ s: UnsafePointer<UInt8>, _ a: Int, _ b: Int) {
        Self.forEachElement(s, a, b) { x, y in
            guard y > x else { facts.contentLengthInvalid = true; return }
            var value = 0
            var k = x
            while k < y {
                let digit = s[k] &- 0x30
                guard digit <= 9 else { facts.contentLengthInvalid = true; return }
                let (times10, o1) = value.multipliedReportingOverflow(by: 10)
                let (sum, o2) = times10.addingReportingOverflow(Int(digit))
                guard !o1 && !o2 else { facts.contentLengthInvalid = true; return }
                value = sum
                k += 1
            }
            if facts.contentLengthSeen && facts.contentLength != value { facts.contentLengthInvalid = true }
            facts.contentLengthSeen = true
            facts.contentLength = value
        }
    }

    /// Judges the head once its empty line arrived and moves on to the body (or completes the request).
    private mutating func finishHead(_ events: inout [HTTPParseEvent]) -> HTTPParseError? {
        let f = facts
        let http11 = version.minor == 1
        // RFC 9112 §3.2: 400 for an HTTP/1.1 request lacking Host, with several, or an invalid one.
        if http11 && f.hostCount == 0 { return Self.bad("missing Host header") }
        if f.hostCount > 1 { return Self.bad("more than one Host header") }
        if f.hostInvalid { return Self.bad("invalid Host header") }
        var chunked = false
        if f.transferEncoding {
            // RFC 9112 §6.1: a server MAY reject a request with both Transfer-Encoding and
            // Content-Length (a smuggling vector); an HTTP/1.0 request with Transfer-Encoding has
            // faulty framing.
            if f.contentLengthSeen { return Self.bad("both Transfer-Encoding and Content-Length") }
            if !http11 { return Self.bad("Transfer-Encoding in an HTTP/1.0 request") }
            // RFC 9112 §6.3: chunked not final (or applied twice, §6.1) → 400. Other codings are
            // not implemented (RFC 9112 §6.1: 501).
            if f.codings == 0 || f.chunkedNotLast { return Self.bad("chunked is not the final transfer coding") }
            if f.unknownCoding {
                return HTTPParseError(status: 501, message: "transfer coding not implemented (only chunked)")
            }
            chunked = true
        }
        if f.contentLengthInvalid { return Self.bad("invalid Content-Length") }
        let length = f.contentLength
        // RFC 9112 §9.3: HTTP/1.1 persists unless "close"; HTTP/1.0 only with "keep-alive".
        let keepAlive = http11 ? !f.close : (f.keepAlive && !f.close)
        let head = HTTPRequestHead(method: method, target: target, version: version,
                                   headers: headers, keepAlive: keepAlive, authority: targetAuthority)
        // The gate sees the head before any body byte is stored and before 100 Continue, so a
        // refused upload costs its header section only.
        if let headGate, let refusal = headGate(head) {
            events.append(.rejected(head, refusal))
            state = .failed
            self.head = nil
            body = []
            headers = HTTPHeaders()
            return nil
        }
        // The body policy: buffer (below), stream to a sink (no maxBodyBytes), or refuse now.
        if let bodyPolicy, chunked || length > 0, !f.unknownExpectation {
            switch bodyPolicy(head, chunked ? nil : length) {
            case .buffer:
                break
            case .stream(let s):
                sink = s
            case .refuse(let refusal):
                events.append(.refused(head, refusal))
                state = .failed
                self.head = nil
                body = []
                headers = HTTPHeaders()
                return nil
            }
        }
        if sink == nil && length > limits.maxBodyBytes {
            return HTTPParseError(status: 413, message: "body larger than \(limits.maxBodyBytes) bytes")
        }
        // RFC 9110 §10.1.1: 417 for an expectation the server cannot meet.
        if f.unknownExpectation { return HTTPParseError(status: 417, message: "unsupported expectation") }
        headers = HTTPHeaders()
        // RFC 9110 §10.1.1: a server MUST ignore a 100-continue expectation in HTTP/1.0.
        let expect = f.expectContinue && http11
        if chunked {
            if expect { events.append(.expectContinue(head)) }
            self.head = head
            state = .chunkSize
        } else if length > 0 {
            if expect { events.append(.expectContinue(head)) }
            self.head = head
            if sink == nil { body.reserveCapacity(min(length, Self.maxReserve)) }
            remaining = length
            state = .body
        } else {
            // RFC 9112 §6.3: a request without Content-Length or Transfer-Encoding has no body
            // (the body policy was not asked, so there is no sink).
            events.append(.request(HTTPRequest(head: head, body: [])))
            state = .requestLine
        }
        return nil
    }

    private mutating func completeRequest(_ events: inout [HTTPParseEvent]) {
        if let head {
            let bytes = body
            body = []
            // The handler owns the sink from here (the parser never aborts it now).
            events.append(.request(HTTPRequest(head: head, body: bytes, bodySink: sink)))
        }
        sink = nil
        head = nil
        state = .requestLine
    }

    private mutating func fail(_ error: HTTPParseError, _ events: inout [HTTPParseEvent]) {
        events.append(.error(error))
        abandon()
        state = .failed
        head = nil
        body = []
        headers = HTTPHeaders()
    }

    // MARK: - Chunked body (RFC 9112 §7.1)

    /// chunk-size [ chunk-ext ] (CRLF already removed).
    private mutating func chunkSizeLine(_ s: UnsafePointer<UInt8>, _ a: Int, _ b: Int) -> HTTPParseError? {
        var k = a
        var size = 0
        while k < b, let digit = Self.hexValue(s[k]) {
            let (times16, o1) = size.multipliedReportingOverflow(by: 16)
            let (sum, o2) = times16.addingReportingOverflow(digit)
            guard !o1 && !o2 else { return Self.bad("chunk size overflows") }
            size = sum
            k += 1
        }
        guard k > a else { return Self.bad("invalid chunk size") }
        // Extensions are allowed and ignored (RFC 9112 §7.1.1), but must be well-formed.
        guard Self.validChunkExtensions(s, k, b) else { return Self.bad("invalid chunk size or extension") }
        if size == 0 {
            sectionBytes = 0
            sectionCount = 0
            state = .trailers
            return nil
        }
        guard sink != nil || size <= limits.maxBodyBytes - body.count else {
            return HTTPParseError(status: 413, message: "body larger than \(limits.maxBodyBytes) bytes")
        }
        remaining = size
        state = .chunkData
        return nil
    }

    /// `*( BWS ";" BWS name [ BWS "=" BWS ( token / quoted-string ) ] )` over `s[a..<b]`.
    private static func validChunkExtensions(_ s: UnsafePointer<UInt8>, _ a: Int, _ b: Int) -> Bool {
        var k = a
        @inline(__always) func skipWhitespace(_ k: inout Int) {
            while k < b && (s[k] == sp || s[k] == tab) { k += 1 }
        }
        while k < b {
            skipWhitespace(&k)
            guard k < b, s[k] == semicolon else { return false }
            k += 1
            skipWhitespace(&k)
            let nameStart = k
            while k < b && isTchar(s[k]) { k += 1 }
            guard k > nameStart else { return false }
            var j = k
            skipWhitespace(&j)
            if j < b && s[j] == equals {
                k = j + 1
                skipWhitespace(&k)
                if k < b && s[k] == quote {
                    k += 1
                    var closed = false
                    while k < b {
                        let c = s[k]
                        if c == quote {
                            k += 1
                            closed = true
                            break
                        }
                        if c == backslash {
                            // quoted-pair = "\" ( HTAB / SP / VCHAR / obs-text )
                            k += 1
                            guard k < b, s[k] == tab || (s[k] >= sp && s[k] != del) else { return false }
                        } else {
                            // qdtext = HTAB / SP / %x21 / %x23-5B / %x5D-7E / obs-text
                            guard c == tab || (c >= sp && c != del) else { return false }
                        }
                        k += 1
                    }
                    guard closed else { return false }
                } else {
                    let valueStart = k
                    while k < b && isTchar(s[k]) { k += 1 }
                    guard k > valueStart else { return false }
                }
            } else if j == b && j > k {
                return false  // whitespace at the end of the line
            }
        }
        return true
    }

    /// A trailer field: checked like a header field and counted against the same limits, then
    /// discarded (RFC 9112 §7.1.2 lets a recipient discard trailers).
    private mutating func trailerLine(_ s: UnsafePointer<UInt8>, _ a: Int, _ b: Int) -> HTTPParseError? {
        var nameEnd = a, valueStart = a, valueEnd = a
        if let error = Self.splitField(s, a, b, &nameEnd, &valueStart, &valueEnd) { return error }
        return countField(b - a)
    }

    // MARK: - Byte helpers

    @inline(__always) private static func bad(_ message: String) -> HTTPParseError {
        HTTPParseError(status: 400, message: message)
    }

    @inline(__always) private static func string(_ s: UnsafePointer<UInt8>, _ a: Int, _ b: Int) -> String {
        String(decoding: UnsafeBufferPointer(start: s + a, count: b - a), as: UTF8.self)
    }

    /// Whether `s[a..<a+literal.count]` is exactly `literal`. The caller checked the length.
    @inline(__always) private static func matches(_ s: UnsafePointer<UInt8>, _ a: Int, _ literal: StaticString) -> Bool {
        memcmp(s + a, literal.utf8Start, literal.utf8CodeUnitCount) == 0
    }

    /// The common methods as string literals (no decoding or allocation); nil for others.
    private static func knownMethod(_ s: UnsafePointer<UInt8>, _ a: Int, _ length: Int) -> String? {
        switch length {
        case 3: if matches(s, a, "GET") { return "GET" }; if matches(s, a, "PUT") { return "PUT" }
        case 4: if matches(s, a, "POST") { return "POST" }; if matches(s, a, "HEAD") { return "HEAD" }
        case 5: if matches(s, a, "PATCH") { return "PATCH" }
        case 6: if matches(s, a, "DELETE") { return "DELETE" }
        case 7: if matches(s, a, "OPTIONS") { return "OPTIONS" }
        default: break
        }
        return nil
    }

    /// Common field names, spelled exactly as sent (canonical or lowercase), as string literals.
    private static func knownName(_ s: UnsafePointer<UInt8>, _ a: Int, _ length: Int) -> String? {
        switch length {
        case 4: if matches(s, a, "Host") { return "Host" }; if matches(s, a, "host") { return "host" }
        case 6: if matches(s, a, "Accept") { return "Accept" }; if matches(s, a, "accept") { return "accept" }
        case 10:
            if matches(s, a, "User-Agent") { return "User-Agent" }; if matches(s, a, "user-agent") { return "user-agent" }
            if matches(s, a, "Connection") { return "Connection" }; if matches(s, a, "connection") { return "connection" }
        case 12: if matches(s, a, "Content-Type") { return "Content-Type" }; if matches(s, a, "content-type") { return "content-type" }
        case 13: if matches(s, a, "Authorization") { return "Authorization" }; if matches(s, a, "authorization") { return "authorization" }
        case 14:
            if matches(s, a, "Content-Length") { return "Content-Length" }
            if matches(s, a, "content-length") { return "content-length" }
        case 15:
            if matches(s, a, "Accept-Encoding") { return "Accept-Encoding" }
            if matches(s, a, "accept-encoding") { return "accept-encoding" }
        default: break
        }
        return nil
    }

    /// Whether `s[a..<a+literal.count]` equals the lowercase ASCII `literal`, ignoring case. The
    /// caller checked the length. OR-ing 0x20 folds only letters here: the other bytes that fold
    /// onto a literal's `-`, `0` or `1` are control characters, which never reach this point.
    @inline(__always) private static func equalsLower(_ s: UnsafePointer<UInt8>, _ a: Int, _ literal: StaticString) -> Bool {
        let l = literal.utf8Start
        var k = 0
        while k < literal.utf8CodeUnitCount {
            if s[a + k] | 0x20 != l[k] { return false }
            k += 1
        }
        return true
    }

    /// Calls `body` with the bounds of each element of the comma-separated list in `s[a..<b]`,
    /// OWS trimmed (RFC 9110 §5.6.1); empty elements are passed too (as `x == y`).
    @inline(__always) private static func forEachElement(_ s: UnsafePointer<UInt8>, _ a: Int, _ b: Int,
                                                         _ body: (Int, Int) -> Void) {
        var k = a
        while true {
            while k < b && (s[k] == sp || s[k] == tab) { k += 1 }
            let start = k
            while k < b && s[k] != comma { k += 1 }
            var end = k
            while end > start && (s[end - 1] == sp || s[end - 1] == tab) { end -= 1 }
            body(start, end)
            if k >= b { return }
            k += 1
        }
    }

    /// Host = uri-host [ ":" port ] (RFC 9110 §7.2, RFC 3986 §3.2.2): a reg-name or IPv4 address,
    /// or an IP-literal in brackets; the port at most 5 digits. Empty is allowed (RFC 9112 §3.2).
    private static func validHost(_ s: UnsafePointer<UInt8>, _ a: Int, _ b: Int) -> Bool {
        if a == b { return true }
        var k = a
        if s[a] == bracketOpen {
            k += 1
            let start = k
            while k < b && s[k] != bracketClose {
                guard hasClass(s[k], 4) else { return false }
                k += 1
            }
            guard k < b, k > start else { return false }
            k += 1
        } else {
            let start = k
            while k < b && s[k] != colon {
                guard hasClass(s[k], 2) else { return false }
                k += 1
            }
            guard k > start else { return false }
        }
        if k == b { return true }
        guard s[k] == colon, b - k - 1 <= 5 else { return false }
        k += 1
        while k < b {
            guard s[k] &- 0x30 <= 9 else { return false }
            k += 1
        }
        return true
    }

    @inline(__always) private static func hexValue(_ c: UInt8) -> Int? {
        switch c {
        case 0x30...0x39: Int(c &- 0x30)
        case 0x41...0x46: Int(c &- 0x37)
        case 0x61...0x66: Int(c &- 0x57)
        default: nil
        }
    }

    /// Whether every byte of `s[a..<b]` is a field-vchar, SP or HTAB (no CTL but HTAB, no DEL).
    /// Eight bytes at a time: a word with no byte below 0x20 and none equal to 0x7F is fine
    /// (the classic "has less than" bit trick); a flagged word (usually a tab) is checked bytewise.
    @inline(__always) private static func fieldValueValid(_ s: UnsafePointer<UInt8>, _ a: Int, _ b: Int) -> Bool {
        let ones: UInt64 = 0x0101_0101_0101_0101, highs: UInt64 = 0x8080_8080_8080_8080
        let raw = UnsafeRawPointer(s)
        var k = a
        while b - k >= 8 {
            let x = raw.loadUnaligned(fromByteOffset: k, as: UInt64.self)
            let y = x ^ (ones &* 0x7F)
            if ((x &- ones &* 0x20) & ~x | (y &- ones) & ~y) & highs != 0 && !controlFree(s, k, k + 8) {
                return false
            }
            k += 8
        }
        return controlFree(s, k, b)
    }

    @inline(__always) private static func controlFree(_ s: UnsafePointer<UInt8>, _ a: Int, _ b: Int) -> Bool {
        var bad: UInt8 = 0
        var k = a
        while k < b {
            let c = s[k]
            bad |= (c < sp ? 1 : 0) & (c != tab ? 1 : 0) | (c == del ? 1 : 0)
            k += 1
        }
        return bad == 0
    }

    /// Whether every byte of `s[a..<b]` is VCHAR (%x21-7E).
    @inline(__always) private static func visible(_ s: UnsafePointer<UInt8>, _ a: Int, _ b: Int) -> Bool {
        var bad: UInt8 = 0
        var k = a
        while k < b {
            let c = s[k]
            bad |= (c &- 0x21 > 0x5D ? 1 : 0)
            k += 1
        }
        return bad == 0
    }
}

// MARK: - Byte classes

private let cr: UInt8 = 0x0D
private let lf: UInt8 = 0x0A
private let sp: UInt8 = 0x20
private let tab: UInt8 = 0x09
private let del: UInt8 = 0x7F
private let colon: UInt8 = 0x3A
private let comma: UInt8 = 0x2C
private let semicolon: UInt8 = 0x3B
private let equals: UInt8 = 0x3D
private let quote: UInt8 = 0x22
private let backslash: UInt8 = 0x5C
private let bracketOpen: UInt8 = 0x5B
private let bracketClose: UInt8 = 0x5D
private let slash: UInt8 = 0x2F
private let star: UInt8 = 0x2A
private let hash: UInt8 = 0x23
private let question: UInt8 = 0x3F
private let at: UInt8 = 0x40

/// Classes of the 128 ASCII bytes, one character per byte: 0x40 | flags, where flag 1 is tchar
/// (RFC 9110 §5.6.2), 2 a reg-name character (unreserved / sub-delims / "%", RFC 3986 §3.2.2) and
/// 4 an IP-literal character (the same plus ":"). A literal, so the lookup needs no initialization.
private var asciiClasses: StaticString {
    "@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@G@AGGGGFFGGFGG@GGGGGGGGGGDF@F@@@GGGGGGGGGGGGGGGGGGGGGGGGGG@@@AGAGGGGGGGGGGGGGGGGGGGGGGGGGG@A@G@"
}

@inline(__always) private func hasClass(_ c: UInt8, _ flag: UInt8) -> Bool {
    c < 128 && asciiClasses.utf8Start[Int(c)] & flag != 0
}

/// tchar = "!" / "#" / "$" / "%" / "&" / "'" / "*" / "+" / "-" / "." / "^" / "_" / "`" / "|" / "~"
/// / DIGIT / ALPHA (RFC 9110 §5.6.2).
@inline(__always) private func isTchar(_ c: UInt8) -> Bool { hasClass(c, 1) }
