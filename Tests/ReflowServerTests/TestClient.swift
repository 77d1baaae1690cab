import Foundation
import Glibc

/// A response as read off the socket.
struct RawResponse {
    var status: Int
    var headers: [(String, String)]
    var body: [UInt8]

    func header(_ name: String) -> String? { headers.first { $0.0.lowercased() == name.lowercased() }?.1 }
    var text: String { String(decoding: body, as: UTF8.self) }
    func json() throws -> [String: Any] {
        guard let o = try JSONSerialization.jsonObject(with: Data(body)) as? [String: Any] else { throw ClientError("not a JSON object: \(text.prefix(200))") }
        return o
    }
}

struct ClientError: Error, CustomStringConvertible {
    let description: String
    init(_ d: String) { description = d }
}

/// A minimal blocking HTTP/1.1 client over a TCP socket, for tests (keeps the connection open
/// across requests; reads Content-Length, chunked and close-delimited bodies).
final class TestClient {
    let fd: Int32
    var buffer: [UInt8] = []

    init(port: Int, host: String = "127.0.0.1", timeout: Double = 30) throws {
        var hints = addrinfo()
        hints.ai_family = AF_UNSPEC
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        var res: UnsafeMutablePointer<addrinfo>?
        guard getaddrinfo(host, String(port), &hints, &res) == 0, let a = res else { throw ClientError("getaddrinfo \(host)") }
        defer { freeaddrinfo(res) }
        fd = socket(a.pointee.ai_family, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw ClientError("socket: errno \(errno)") }
        var tv = timeval(tv_sec: Int(timeout), tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        guard connect(fd, a.pointee.ai_addr, a.pointee.ai_addrlen) == 0 else {
            let e = errno
            Glibc.close(fd)
            throw ClientError("connect: errno \(e)")
        }
    }

    deinit { Glibc.close(fd) }

    func send(_ bytes: [UInt8]) throws {
        var off = 0
        while off < bytes.count {
            let n = bytes.withUnsafeBytes { Glibc.send(fd, $0.baseAddress! + off, bytes.count - off, Int32(MSG_NOSIGNAL)) }
            guard n > 0 else { throw ClientError("send: errno \(errno)") }
            off += n
        }
    }

    func send(_ text: String) throws { try send(Array(text.utf8)) }

    /// Reads more bytes; false on EOF.
    func fill() throws -> Bool {
        var chunk = [UInt8](repeating: 0, count: 65536)
        let n = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
        if n < 0 { throw ClientError("recv: errno \(errno)") }
        if n == 0 { return false }
        buffer += chunk[0..<n]
        return true
    }

    /// Whether the server has closed the connection (reads until EOF or timeout).
    func isClosedByServer() -> Bool {
        while true {
            guard let more = try? fill() else { return false }
            if !more { return true }
        }
    }

    func line() throws -> String {
        while true {
            if let i = buffer.firstIndex(of: 10) {
                var l = Array(buffer[..<i])
                buffer.removeFirst(i + 1)
                if l.last == 13 { l.removeLast() }
                return String(decoding: l, as: UTF8.self)
            }
            guard try fill() else { throw ClientError("EOF while reading a line") }
        }
    }

    func take(_ n: Int) throws -> [UInt8] {
        while buffer.count < n { guard try fill() else { throw ClientError("EOF in body") } }
        let out = Array(buffer[..<n])
        buffer.removeFirst(n)
        return out
    }

    /// Reads one response (skipping 100 Continue). `head` true for responses to HEAD.
    func read(head: Bool = false) throws -> RawResponse {
        while true {
            let status = try line()
            let parts = status.split(separator: " ", maxSplits: 2)
            guard parts.count >= 2, let code = Int(parts[1]) else { throw ClientError("bad status line '\(status)'") }
            var headers = [(String, String)]()
            while true {
                let l = try line()
                if l.isEmpty { break }
                if let c = l.firstIndex(of: ":") {
                    headers.append((String(l[..<c]), l[l.index(after: c)...].trimmingCharacters(in: .whitespaces)))
                }
            }
            if code == 100 { continue }
            var r = RawResponse(status: code, headers: headers, body: [])
            if head || code == 204 || code == 304 { return r }
            if let cl = r.header("Content-Length"), let n = Int(cl) {
                r.body = try take(n)
            } else if r.header("Transfer-Encoding")?.lowercased() == "chunked" {
                while true {
                    let sizeLine = try line()
                    guard let size = Int(sizeLine.split(separator: ";")[0], radix: 16) else { throw ClientError("bad chunk size") }
                    if size == 0 { _ = try line(); break }
                    r.body += try take(size)
                    _ = try line()
                }
            } else {
                while try fill() {}
                r.body = buffer
                buffer = []
            }
            return r
        }
    }

    /// Sends a request and reads its response.
    func request(_ method: String, _ target: String, headers: [(String, String)] = [], body: [UInt8] = []) throws -> RawResponse {
        var s = "\(method) \(target) HTTP/1.1\r\nHost: test\r\n"
        for (k, v) in headers { s += "\(k): \(v)\r\n" }
        if !body.isEmpty || method == "POST" || method == "PUT" { s += "Content-Length: \(body.count)\r\n" }
        s += "\r\n"
        try send(Array(s.utf8) + body)
        return try read(head: method == "HEAD")
    }

    func json(_ method: String, _ target: String, _ body: String, headers: [(String, String)] = []) throws -> RawResponse {
        try request(method, target, headers: [("Content-Type", "application/json")] + headers, body: Array(body.utf8))
    }
}
