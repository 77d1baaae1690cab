/// Header fields in arrival order. Names compare case-insensitively (RFC 9110 §5.1).
public struct HTTPHeaders: Sendable, Equatable, Sequence {
    public private(set) var fields: [(name: String, value: String)] = []

    public init() {}
    public init(_ fields: [(String, String)]) { self.fields = fields.map { (name: $0.0, value: $0.1) } }

    public mutating func add(_ name: String, _ value: String) { fields.append((name, value)) }

    /// Replaces every field called `name` with one field.
    public mutating func set(_ name: String, _ value: String) {
        remove(name)
        fields.append((name, value))
    }

    public mutating func remove(_ name: String) {
        fields.removeAll { Self.same($0.name, name) }
    }

    /// The first value of `name`, or nil.
    public subscript(_ name: String) -> String? { fields.first { Self.same($0.name, name) }?.value }

    /// Every value of `name`, in order.
    public func values(_ name: String) -> [String] { fields.filter { Self.same($0.name, name) }.map(\.value) }

    public func contains(_ name: String) -> Bool { fields.contains { Self.same($0.name, name) } }

    public var count: Int { fields.count }

    public func makeIterator() -> IndexingIterator<[(name: String, value: String)]> { fields.makeIterator() }

    /// ASCII case-insensitive comparison (field names are ASCII tokens).
    public static func same(_ a: String, _ b: String) -> Bool {
        let x = a.utf8, y = b.utf8
        guard x.count == y.count else { return false }
        @inline(__always) func lower(_ c: UInt8) -> UInt8 { c >= 65 && c <= 90 ? c + 32 : c }
        return zip(x, y).allSatisfy { lower($0) == lower($1) }
    }

    public static func == (a: HTTPHeaders, b: HTTPHeaders) -> Bool {
        a.fields.count == b.fields.count && zip(a.fields, b.fields).allSatisfy { $0.name == $1.name && $0.value == $1.value }
    }
}

/// HTTP version of a request (1.0 or 1.1; the parser answers others with 505).
public struct HTTPVersion: Sendable, Equatable, CustomStringConvertible {
    public var major: Int, minor: Int
    public init(_ major: Int, _ minor: Int) { self.major = major; self.minor = minor }
    public static let http10 = HTTPVersion(1, 0), http11 = HTTPVersion(1, 1)
    public var description: String { "HTTP/\(major).\(minor)" }
}

/// The request line and header section.
public struct HTTPRequestHead: Sendable, Equatable {
    /// The method token as sent (methods are case-sensitive: RFC 9110 §9.1).
    public var method: String
    /// The request-target in origin-form (`/path?query`) for routing: exactly as sent, except that
    /// an absolute-form target (`http://host:port/path?query`) is reduced to its path and query
    /// (RFC 9112 §3.2.2; its authority is in ``authority``). Asterisk-form (`*`) and authority-form
    /// (CONNECT) targets are kept as sent.
    public var target: String
    /// The authority of an absolute-form request-target, or nil for the other forms. When present
    /// it takes precedence over `Host` as the target's host (RFC 9112 §3.2.2, §7.2).
    public var authority: String?
    public var version: HTTPVersion
    public var headers: HTTPHeaders
    /// Whether the connection stays open after the response (HTTP/1.1 unless `Connection: close`;
    /// HTTP/1.0 only with `Connection: keep-alive`).
    public var keepAlive: Bool

    public init(method: String, target: String, version: HTTPVersion, headers: HTTPHeaders, keepAlive: Bool,
                authority: String? = nil) {
        self.method = method
        self.target = target
        self.authority = authority
        self.version = version
        self.headers = headers
        self.keepAlive = keepAlive
    }

    /// The host the request is for: the absolute-form authority when the target had one,
    /// otherwise the `Host` field (RFC 9112 §3.2.2, §7.2); nil for an HTTP/1.0 request without
    /// either.
    public var effectiveAuthority: String? { authority ?? headers["Host"] }

    /// The path part of the target (before `?`), not percent-decoded.
    public var path: Substring {
        target.firstIndex(of: "?").map { target[..<$0] } ?? target[...]
    }

    /// The query part of the target (after `?`), or "".
    public var query: Substring {
        target.firstIndex(of: "?").map { target[target.index(after: $0)...] } ?? ""
    }
}

/// A complete request: head plus the whole body (bodies are bounded by ``HTTPLimits/maxBodyBytes``),
/// or head plus the sink that received a streamed body (``HTTPBodyPolicy/stream(_:)``).
public struct HTTPRequest: Sendable, Equatable {
    public var head: HTTPRequestHead
    /// The buffered body; empty when the body was streamed to ``bodySink``.
    public var body: [UInt8]
    /// The sink that received the whole body, when the body policy streamed it. The handler owns
    /// it from here on: the server never calls ``HTTPBodySink/abort()`` for a delivered request.
    public var bodySink: (any HTTPBodySink)?

    public init(head: HTTPRequestHead, body: [UInt8], bodySink: (any HTTPBodySink)? = nil) {
        self.head = head
        self.body = body
        self.bodySink = bodySink
    }

    public var method: String { head.method }
    public var target: String { head.target }
    public var headers: HTTPHeaders { head.headers }

    /// Requests compare by head and body; sinks by identity.
    public static func == (a: HTTPRequest, b: HTTPRequest) -> Bool {
        a.head == b.head && a.body == b.body && a.bodySink.map(ObjectIdentifier.init) == b.bodySink.map(ObjectIdentifier.init)
    }
}

/// Receives a request body piece by piece as it arrives, instead of the parser buffering it
/// (large uploads streamed to a file). Chosen per request by ``HTTPServerConfig/bodyPolicy``.
///
/// The parser calls ``write(_:)`` on the connection's queue, in order, with every body byte
/// (chunked framing removed); then either the request reaches the handler with
/// ``HTTPRequest/bodySink`` set, or ``abort()`` is called once.
public protocol HTTPBodySink: AnyObject, Sendable {
    /// Takes the next piece of the body. It runs on the connection's queue, so it must be quick
    /// (a `write(2)` to a file is). Returns nil to go on, or a final response that refuses the
    /// request (too large, out of space): the parser stops reading, the response is sent with
    /// `Connection: close`, and ``abort()`` follows.
    func write(_ bytes: UnsafeRawBufferPointer) -> HTTPResponse?
    /// The request will not reach the handler: the sink refused it, the framing turned out
    /// invalid, or the connection closed or timed out part-way. Release whatever was written.
    /// Called at most once, never for a request that reached the handler.
    func abort()
}

/// What the parser does with the body of one request (``HTTPServerConfig/bodyPolicy``).
public enum HTTPBodyPolicy: Sendable {
    /// Buffer it in memory, bounded by ``HTTPLimits/maxBodyBytes`` (what happens without a policy).
    case buffer
    /// Hand it to the sink as it arrives; ``HTTPLimits/maxBodyBytes`` does not apply (the sink
    /// enforces its own cap). The request reaches the handler with an empty ``HTTPRequest/body``
    /// and ``HTTPRequest/bodySink`` set.
    case stream(any HTTPBodySink)
    /// Refuse the request from its head, before any body byte is read and before
    /// `100 Continue`: the response is sent and the connection closed.
    case refuse(HTTPResponse)
}

/// Size limits the parser enforces, with the status each one answers.
public struct HTTPLimits: Sendable, Equatable {
    /// Longest request line (method + target + version); longer → 414 (RFC 9112 §3 recommends ≥ 8000).
    public var maxRequestLine = 8192
    /// Largest header section (all field lines) → 431.
    public var maxHeaderBytes = 32 * 1024
    /// Most header fields → 431.
    public var maxHeaderCount = 100
    /// Largest request body → 413, decided from Content-Length before reading (chunked: while reading).
    public var maxBodyBytes = 16 * 1024 * 1024

    public init() {}
}

/// Why the bytes on a connection cannot be a valid request. The server answers `status` and
/// closes the connection: after a framing error nothing that follows can be trusted (RFC 9112 §6.1, §11.2).
public struct HTTPParseError: Error, Sendable, Equatable, CustomStringConvertible {
    /// 400, 408, 413, 414, 417, 431, 501 or 505.
    public var status: Int
    public var message: String
    public init(status: Int, message: String) {
        self.status = status
        self.message = message
    }
    public var description: String { "\(status): \(message)" }
}

/// What the parser found in the bytes fed so far.
public enum HTTPParseEvent: Sendable, Equatable {
    /// The head gate refused a request (``HTTPParser/init(limits:headGate:)``): send the response
    /// and close the connection. Nothing of the body was read; the parser accepts no more input.
    case rejected(HTTPRequestHead, HTTPResponse)
    /// A request's head arrived with `Expect: 100-continue` and its body is still to come: the
    /// server sends `100 Continue` (or a final status decided from the head; RFC 9110 §10.1.1).
    case expectContinue(HTTPRequestHead)
    /// A complete request. Several may come from one feed (pipelining); answer them in order.
    case request(HTTPRequest)
    /// The body policy refused a request from its head, or its body sink refused the body
    /// part-way (``HTTPBodySink/write(_:)``): send the response and close the connection. The
    /// parser accepts no more input.
    case refused(HTTPRequestHead, HTTPResponse)
    /// The input is invalid; answer `status` and close. The parser accepts no more input.
    case error(HTTPParseError)
}

extension HTTPParseEvent {
    /// Events compare by value; a rejection or refusal compares its head and the response's status, header
    /// fields and byte body (a streamed body never comes from a gate).
    public static func == (a: HTTPParseEvent, b: HTTPParseEvent) -> Bool {
        switch (a, b) {
        case let (.expectContinue(x), .expectContinue(y)): return x == y
        case let (.request(x), .request(y)): return x == y
        case let (.error(x), .error(y)): return x == y
        case let (.rejected(h1, r1), .rejected(h2, r2)), let (.refused(h1, r1), .refused(h2, r2)):
            guard h1 == h2, r1.status == r2.status, r1.headers == r2.headers else { return false }
            if case .bytes(let x) = r1.body, case .bytes(let y) = r2.body { return x == y }
            return false
        default: return false
        }
    }
}
