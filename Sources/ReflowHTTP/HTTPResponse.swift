import Glibc
import Synchronization

/// A response. `body` is either bytes (sent with `Content-Length`) or a stream (sent with
/// `Transfer-Encoding: chunked` to HTTP/1.1 clients, close-delimited to HTTP/1.0 ones): a
/// blocking writer for large files, or a push sink for server-sent events.
public struct HTTPResponse: Sendable {
    public var status: Int
    public var headers: HTTPHeaders
    public var body: Body

    public enum Body: Sendable {
        case bytes([UInt8])
        /// Called once on a background thread with a writer; it writes the body and returns
        /// (or calls ``HTTPBodyWriter/finish()`` earlier). Writes block while the client is slow.
        case stream(@Sendable (HTTPBodyWriter) -> Void)
        /// Called once on the connection's queue with a sink, right after the head is queued; it
        /// must not block. The producer keeps the sink and pushes chunks from any thread (server-sent
        /// events); an open push stream holds no thread. See ``HTTPStreamSink``.
        case push(@Sendable (HTTPStreamSink) -> Void)
    }

    public init(status: Int, headers: HTTPHeaders = HTTPHeaders(), body: [UInt8] = []) {
        self.status = status
        self.headers = headers
        self.body = .bytes(body)
    }

    public init(status: Int, headers: HTTPHeaders = HTTPHeaders(), stream: @escaping @Sendable (HTTPBodyWriter) -> Void) {
        self.status = status
        self.headers = headers
        self.body = .stream(stream)
    }

    /// A push-streamed response: `start` receives the ``HTTPStreamSink`` and returns at once; the
    /// body is whatever is sent through the sink until ``HTTPStreamSink/finish()``.
    public init(status: Int, headers: HTTPHeaders = HTTPHeaders(), push start: @escaping @Sendable (HTTPStreamSink) -> Void) {
        self.status = status
        self.headers = headers
        self.body = .push(start)
    }

    /// A response with a UTF-8 text body and its content type.
    public static func text(_ status: Int, _ text: String, contentType: String = "text/plain; charset=utf-8") -> HTTPResponse {
        var h = HTTPHeaders()
        h.add("Content-Type", contentType)
        return HTTPResponse(status: status, headers: h, body: Array(text.utf8))
    }

    /// An RFC 9457 problem+json response for errors the HTTP layer answers itself (framing
    /// errors, timeouts, the stream cap). The API builds its own problems with more fields.
    public static func problem(status: Int, code: String, detail: String) -> HTTPResponse {
        var h = HTTPHeaders()
        h.add("Content-Type", "application/problem+json")
        let body = "{\"type\":\"about:blank#\(code)\",\"title\":\"\(reason(status))\",\"status\":\(status),\"detail\":\"\(detail.replacingQuotes)\",\"code\":\"\(code)\"}"
        return HTTPResponse(status: status, headers: h, body: Array(body.utf8))
    }

    /// The standard reason phrase of a status code.
    public static func reason(_ status: Int) -> String {
        switch status {
        case 100: "Continue"
        case 200: "OK"
        case 201: "Created"
        case 202: "Accepted"
        case 204: "No Content"
        case 206: "Partial Content"
        case 304: "Not Modified"
        case 400: "Bad Request"
        case 401: "Unauthorized"
        case 403: "Forbidden"
        case 404: "Not Found"
        case 405: "Method Not Allowed"
        case 406: "Not Acceptable"
        case 408: "Request Timeout"
        case 409: "Conflict"
        case 410: "Gone"
        case 411: "Length Required"
        case 412: "Precondition Failed"
        case 413: "Content Too Large"
        case 414: "URI Too Long"
        case 415: "Unsupported Media Type"
        case 416: "Range Not Satisfiable"
        case 417: "Expectation Failed"
        case 422: "Unprocessable Content"
        case 428: "Precondition Required"
        case 429: "Too Many Requests"
        case 431: "Request Header Fields Too Large"
        case 500: "Internal Server Error"
        case 501: "Not Implemented"
        case 503: "Service Unavailable"
        case 505: "HTTP Version Not Supported"
        default: "Status \(status)"
        }
    }
}

/// IMF-fixdate (RFC 9110 §5.6.7) of the current second, cached per second.
enum HTTPDate {
    private static let cache = Mutex<(Int, String)>((0, ""))

    static func now() -> String {
        var t = time(nil)
        let second = Int(t)
        if let hit = cache.withLock({ $0.0 == second ? $0.1 : nil }) { return hit }
        let s = format(&t)
        cache.withLock { $0 = (second, s) }
        return s
    }

    static func format(_ t: inout time_t) -> String {
        var tm = Glibc.tm()
        gmtime_r(&t, &tm)
        var buf = [CChar](repeating: 0, count: 64)
        let n = strftime(&buf, 64, "%a, %d %b %Y %H:%M:%S GMT", &tm)
        return String(decoding: buf.prefix(n).map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    /// The IMF-fixdate of a Unix time (for Last-Modified).
    static func string(unixTime: Int) -> String {
        var t = time_t(unixTime)
        return format(&t)
    }
}

extension HTTPResponse {
    /// The status line and header section, with `Date`, `Server`, framing and `Connection` added.
    /// `contentLength` nil means chunked (HTTP/1.1) or close-delimited (HTTP/1.0).
    func head(version: HTTPVersion, contentLength: Int?, keepAlive: Bool, serverName: String) -> [UInt8] {
        var s = "HTTP/1.1 \(status) \(HTTPResponse.reason(status))\r\n"
        s += "Server: \(serverName)\r\nDate: \(HTTPDate.now())\r\n"
        for (name, value) in headers.fields {
            if HTTPHeaders.same(name, "Content-Length") || HTTPHeaders.same(name, "Transfer-Encoding")
                || HTTPHeaders.same(name, "Connection") { continue }
            s += name + ": " + value + "\r\n"
        }
        if status >= 200 && status != 204 && status != 304 {
            if let contentLength {
                s += "Content-Length: \(contentLength)\r\n"
            } else if version == .http11 {
                s += "Transfer-Encoding: chunked\r\n"
            }
        }
        if !keepAlive {
            s += "Connection: close\r\n"
        } else if version == .http10 {
            s += "Connection: keep-alive\r\n"
        }
        s += "\r\n"
        return Array(s.utf8)
    }
}
