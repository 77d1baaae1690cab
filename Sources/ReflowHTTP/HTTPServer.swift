import Glibc
import Dispatch
import Synchronization

/// Settings of an ``HTTPServer``.
public struct HTTPServerConfig: Sendable {
    /// Address to bind: an IPv4 or IPv6 literal or a host name (`::` binds every IPv6 and IPv4 address).
    public var host = "127.0.0.1"
    /// TCP port; 0 picks a free one (see ``HTTPServer/port``).
    public var port = 8080
    /// listen(2) backlog (≥ 128 so a burst of connections is not dropped: RELIABILITY.md H20).
    public var backlog = 512
    public var limits = HTTPLimits()
    /// Whole-header deadline from the first byte of a request (slowloris; not reset by each byte).
    public var headerTimeout: Double = 10
    /// Longest pause while a body is being received.
    public var bodyIdleTimeout: Double = 30
    /// How long an idle keep-alive connection stays open.
    public var keepAliveTimeout: Double = 60
    /// Connections beyond this are closed on accept.
    public var maxConnections = 4096
    /// Value of the `Server` header.
    public var serverName = "reflowd"
    /// A connection whose pending output makes no progress for this long is closed (slow readers).
    public var writeTimeout: Double = 30
    /// Blocking streamed responses (``HTTPResponse/Body/stream(_:)``: large files) open at once;
    /// more get 503 (each holds a thread while it runs).
    public var maxStreams = 64
    /// Push streams (``HTTPResponse/Body/push(_:)``: server-sent events) open at once; more get 503.
    /// They hold no thread, only their connection's buffers, so the cap is a memory bound.
    public var maxPushStreams = 4096
    /// Judges each request head before its body is read (authentication before the body): a
    /// response is sent with `Connection: close` and the connection is closed; the body is never
    /// buffered and `100 Continue` is never sent. See ``HTTPParser/init(limits:headGate:)``.
    public var headGate: (@Sendable (HTTPRequestHead) -> HTTPResponse?)? = nil
    /// Chooses, for each request with a body that passed the head gate, whether the body is
    /// buffered (bounded by ``HTTPLimits/maxBodyBytes``), streamed to an ``HTTPBodySink`` as it
    /// arrives (large uploads written to a file; the sink enforces its own cap), or refused from
    /// the head. Called with the head and its `Content-Length` (nil when chunked), on the
    /// connection's queue; it must be fast. Nil buffers every body. A sink whose request never
    /// reaches the handler (refused part-way, bad framing, timeout, the client gone) is aborted.
    public var bodyPolicy: (@Sendable (HTTPRequestHead, Int?) -> HTTPBodyPolicy)? = nil
    /// Speak TLS (HTTPS) on every accepted connection; nil is plain HTTP.
    public var tls: TLSContext? = nil
    /// A TLS connection whose handshake hasn't finished this long after accept is closed (TLS slowloris).
    public var tlsHandshakeTimeout: Double = 10

    public init() {}
}

/// A request handler. It returns the response, or nil after arranging to call
/// ``HTTPResponder/send(_:)`` later (long polls). It runs on the connection's serial queue, so it
/// must not block for long; slow work goes elsewhere and answers through the responder.
public typealias HTTPHandler = @Sendable (HTTPRequest, HTTPResponder) -> HTTPResponse?

/// Answers one request, once, from any thread.
public final class HTTPResponder: Sendable {
    let connection: Connection
    let request: HTTPRequestHead
    let answered = Atomic<Bool>(false)

    init(connection: Connection, request: HTTPRequestHead) {
        self.connection = connection
        self.request = request
    }

    /// Sends the response; later calls are ignored.
    public func send(_ response: HTTPResponse) {
        guard !answered.exchange(true, ordering: .acquiringAndReleasing) else { return }
        connection.queue.async { self.connection.respond(response, to: self.request) }
    }

    /// Whether the client has gone away (a long poll can stop waiting).
    public var isClosed: Bool { connection.closedFlag.load(ordering: .relaxed) }
}

/// Writes a streamed response body from a background thread.
public final class HTTPBodyWriter: Sendable {
    let connection: Connection
    let chunked: Bool
    let finished = Atomic<Bool>(false)

    init(connection: Connection, chunked: Bool) {
        self.connection = connection
        self.chunked = chunked
    }

    /// Queues `bytes` (as one chunk) and waits while more than 1 MiB is unsent.
    /// Returns false once the client has gone away (stop producing).
    @discardableResult
    public func write(_ bytes: [UInt8]) -> Bool {
        guard !bytes.isEmpty else { return !connection.closedFlag.load(ordering: .relaxed) }
        guard !finished.load(ordering: .relaxed), !connection.closedFlag.load(ordering: .relaxed) else { return false }
        let framed = chunked ? Array((String(bytes.count, radix: 16) + "\r\n").utf8) + bytes + [13, 10] : bytes
        // Counted before the hop to the connection queue, so a slow queue cannot let the
        // producer run ahead (the bytes are subtracted once they are in the output buffer).
        connection.inTransit.add(framed.count, ordering: .relaxed)
        connection.queue.async {
            self.connection.inTransit.subtract(framed.count, ordering: .relaxed)
            self.connection.enqueue(framed)
        }
        // Backpressure: wait (briefly, repeatedly) while the connection has too much unsent.
        while connection.unsent.load(ordering: .relaxed) + connection.inTransit.load(ordering: .relaxed) > 1 << 20
                && !connection.closedFlag.load(ordering: .relaxed) {
            usleep(2000)
        }
        return !connection.closedFlag.load(ordering: .relaxed)
    }

    /// False once the body is finished (or the request was HEAD) or the client has gone away.
    public var isOpen: Bool { !finished.load(ordering: .relaxed) && !connection.closedFlag.load(ordering: .relaxed) }

    /// Ends the body (idempotent; also done when the stream closure returns).
    public func finish() {
        guard !finished.exchange(true, ordering: .acquiringAndReleasing) else { return }
        connection.queue.async { self.connection.finishStream(chunked: self.chunked) }
    }
}

/// A push-streamed response body (``HTTPResponse/Body/push(_:)``): the producer sends chunks from
/// any thread and never blocks.
///
/// - ``send(_:)`` queues one chunk and returns at once; it returns false once the stream is
///   finished or the client has gone away.
/// - Backpressure: ``isWritable`` turns false while more than ``highWaterMark`` bytes wait to be
///   written to the client. A producer that sees it stops sending and calls ``whenWritable(_:)``,
///   which fires once the backlog has drained below ``lowWaterMark`` (or at once if it already
///   has). Nothing forces a producer to stop, but one that keeps sending to a client that does not
///   read is bounded by the server's write timeout, which closes the connection.
/// - ``onClose(_:)`` handlers run once, when the client disconnects or the connection closes
///   (also when it had closed before the handler was added); not after a normal ``finish()``.
/// - ``finish()`` ends the body (chunked: the last chunk; HTTP/1.0: the connection closes).
///
/// Chunks sent from several threads are written in the order the `send` calls happened; a
/// producer that needs a global order serialises its sends itself.
public final class HTTPStreamSink: Sendable {
    /// Above this many unsent bytes the sink is not writable.
    public static let highWaterMark = 256 * 1024
    /// ``whenWritable(_:)`` fires once the unsent bytes are at or below this.
    public static let lowWaterMark = 64 * 1024

    let connection: Connection
    let chunked: Bool
    private struct State {
        var finished = false
        var closed = false
        var onClose: [@Sendable () -> Void] = []
        var onWritable: [@Sendable () -> Void] = []
    }
    private let state = Mutex(State())
    /// Whether ``whenWritable(_:)`` handlers are waiting (read on every flush of the connection).
    let wantsWritable = Atomic<Bool>(false)
    /// The stream's slot in `maxPushStreams`, released once (finish or close).
    private let released = Atomic<Bool>(false)

    init(connection: Connection, chunked: Bool) {
        self.connection = connection
        self.chunked = chunked
    }

    /// Queues `bytes` as one chunk (an empty array sends nothing). Never blocks.
    /// - Returns: false once the stream is finished or the client has gone away.
    @discardableResult
    public func send(_ bytes: [UInt8]) -> Bool {
        guard !connection.closedFlag.load(ordering: .relaxed) else { return false }
        let framed = bytes.isEmpty ? [] : chunked ? Array((String(bytes.count, radix: 16) + "\r\n").utf8) + bytes + [13, 10] : bytes
        // Under the lock, so a chunk can never be queued behind the end of the body by a
        // concurrent finish().
        return state.withLock { st -> Bool in
            guard !st.finished, !st.closed else { return false }
            guard !framed.isEmpty else { return true }
            connection.inTransit.add(framed.count, ordering: .relaxed)
            connection.queue.async { [connection] in
                connection.inTransit.subtract(framed.count, ordering: .relaxed)
                connection.enqueue(framed)
            }
            return true
        }
    }

    /// False once the body is finished or the client has gone away.
    public var isOpen: Bool {
        !connection.closedFlag.load(ordering: .relaxed) && !state.withLock { $0.finished }
    }

    /// Bytes sent but not yet written to the socket.
    public var backlog: Int {
        connection.unsent.load(ordering: .relaxed) + connection.inTransit.load(ordering: .relaxed)
    }

    /// Whether the backlog is at most ``highWaterMark`` bytes.
    public var isWritable: Bool { backlog <= Self.highWaterMark }

    /// Calls `handler` once (on the connection's queue) when the backlog has drained to
    /// ``lowWaterMark`` or less; at once (asynchronously) if it already has. Never called if the
    /// stream closes first: ``onClose(_:)`` handlers run instead.
    public func whenWritable(_ handler: @escaping @Sendable () -> Void) {
        let added = state.withLock { st -> Bool in
            guard !st.closed, !st.finished else { return false }
            st.onWritable.append(handler)
            return true
        }
        guard added else { return }
        wantsWritable.store(true, ordering: .relaxed)
        // The backlog may already be small (or drain before the flag was seen): check on the queue.
        connection.queue.async { [self] in connection.checkWritable(self) }
    }

    /// Calls `handler` once when the client disconnects or the connection closes before the
    /// stream is finished; at once (asynchronously) if that has already happened.
    public func onClose(_ handler: @escaping @Sendable () -> Void) {
        let now = state.withLock { st -> Bool in
            if st.closed { return true }
            if st.finished { return false }
            st.onClose.append(handler)
            return false
        }
        if now { DispatchQueue.global().async(execute: handler) }
    }

    /// Ends the body (idempotent).
    public func finish() {
        let first = state.withLock { st -> Bool in
            guard !st.finished else { return false }
            st.finished = true
            st.onClose = []
            st.onWritable = []
            connection.queue.async { [self] in connection.finishPush(self) }
            return true
        }
        if first { release() }
    }

    /// The connection closed (on its queue): run the close handlers.
    func connectionClosed() {
        let handlers = state.withLock { st -> [@Sendable () -> Void] in
            guard !st.closed else { return [] }
            st.closed = true
            let h = st.finished ? [] : st.onClose
            st.onClose = []
            st.onWritable = []
            return h
        }
        release()
        for h in handlers { h() }
    }

    /// The backlog drained (on the connection's queue): run the writable handlers.
    func drained() {
        wantsWritable.store(false, ordering: .relaxed)
        let handlers = state.withLock { st -> [@Sendable () -> Void] in
            let h = st.onWritable
            st.onWritable = []
            return h
        }
        for h in handlers { h() }
    }

    private func release() {
        guard !released.exchange(true, ordering: .acquiringAndReleasing) else { return }
        connection.server.activePushStreams.subtract(1, ordering: .relaxed)
    }
}

/// Counters for metrics and tests.
public struct HTTPServerStats: Sendable {
    public var accepted: Int
    public var open: Int
    public var requests: Int
    public var acceptErrors: Int
    /// Request body bytes stored by the parsers of all connections (a request refused by the
    /// head gate adds nothing).
    public var bodyBytesBuffered: Int = 0
    /// Requests refused by ``HTTPServerConfig/headGate``.
    public var rejectedHeads: Int = 0
    /// Times accept ran out of descriptors (EMFILE, ENFILE, ENOBUFS, ENOMEM) and the listener
    /// backed off.
    public var acceptBackoffs: Int = 0
}

/// A hand-written HTTP/1.1 server over non-blocking POSIX sockets and Dispatch.
///
/// One listening socket (IPv4 or IPv6) with an accept loop on its own queue; each connection has
/// a serial queue, a read source, a write source used only when the kernel buffer is full, and a
/// 1-second timer that enforces the header deadline, body idle and keep-alive timeouts. Requests
/// of a connection are handled one at a time in arrival order, so pipelined requests are
/// answered in order (RFC 9112 §9.3.2). A framing error is answered and the connection is closed
/// with a lingering close (RFC 9112 §9.6). SIGPIPE is ignored and sends use MSG_NOSIGNAL
/// (OpenSSL writes with write(2), so ignoring SIGPIPE is what protects TLS connections).
///
/// With ``HTTPServerConfig/tls`` set, every connection is TLS: reads and writes go through a
/// ``TLSSession`` on the same non-blocking socket and the same Dispatch sources, and the handshake
/// must finish within ``HTTPServerConfig/tlsHandshakeTimeout``.
public final class HTTPServer: Sendable {
    public let config: HTTPServerConfig
    let handler: HTTPHandler
    let listenFD: Int32
    /// The bound port (useful with port 0).
    public let port: Int
    let acceptQueue = DispatchQueue(label: "reflowd.http.accept")
    /// Where connection queues run (see `Connection.init`).
    static let connectionPool = DispatchQueue.global(qos: .userInitiated)
    /// The listener's read source and whether it is suspended (EMFILE back-off). Only touched on `acceptQueue`.
    let acceptState = Mutex<(source: (any DispatchSourceRead)?, suspended: Bool)>((nil, false))
    let connections = Mutex<[Int32: Connection]>([:])
    let counters = Mutex(HTTPServerStats(accepted: 0, open: 0, requests: 0, acceptErrors: 0))
    /// `maxConnections`, lowered to leave 64 descriptors of RLIMIT_NOFILE for everything else
    /// (files, Dispatch internals): running out of descriptors inside libdispatch is fatal.
    let connectionLimit: Int
    /// Set by ``drain()``: new requests get `Connection: close`, idle connections are closed.
    let draining = Atomic<Bool>(false)
    /// Streamed responses in progress (bounded by `maxStreams`).
    let activeStreams = Atomic<Int>(0)
    /// Push streams in progress (bounded by `maxPushStreams`).
    let activePushStreams = Atomic<Int>(0)
    /// Tests only: while true, accept(2) is not called and fails with EMFILE instead, as when the
    /// descriptor table is full (the pending connections stay in the kernel's backlog).
    let simulateDescriptorExhaustion = Atomic<Bool>(false)

    /// Binds and starts accepting. Throws ``HTTPServerError`` with the failing call and errno.
    public init(config: HTTPServerConfig, handler: @escaping HTTPHandler) throws {
        signal(SIGPIPE, SIG_IGN)
        self.config = config
        var limit = rlimit()
        if getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 {
            // Use the hard limit when allowed (a soft limit of 1024 is common outside systemd).
            if limit.rlim_cur < limit.rlim_max {
                var raised = limit
                raised.rlim_cur = limit.rlim_max
                if setrlimit(Int32(RLIMIT_NOFILE.rawValue), &raised) == 0 { limit = raised }
            }
            let available = limit.rlim_cur == rlim_t.max ? Int.max : Int(clamping: limit.rlim_cur)
            connectionLimit = max(1, min(config.maxConnections, available - 64))
        } else {
            connectionLimit = config.maxConnections
        }
        self.handler = handler
        let (fd, port) = try Self.listen(host: config.host, port: config.port, backlog: config.backlog)
        listenFD = fd
        self.port = port
        let source = DispatchSource.makeReadSource(fileDescriptor: fd, queue: acceptQueue)
        acceptState.withLock { $0.source = source }
        source.setEventHandler { [weak self] in self?.acceptReady() }
        source.setCancelHandler { Glibc.close(fd) }
        source.resume()
    }

    public var stats: HTTPServerStats { counters.withLock { $0 } }

    /// Push streams (server-sent events) open now.
    public var openPushStreams: Int { activePushStreams.load(ordering: .relaxed) }

    /// Stops accepting and closes the listening socket; open connections continue.
    public func stopAccepting() {
        acceptQueue.sync {
            acceptState.withLock { st in
                guard let source = st.source else { return }
                if st.suspended { source.resume() }
                source.cancel()  // its cancel handler closes the listening socket
                st = (nil, false)
            }
        }
    }

    /// Graceful drain: every later response closes its connection, idle connections close now.
    public func drain() {
        draining.store(true, ordering: .relaxed)
        let all = connections.withLock { Array($0.values) }
        for c in all { c.queue.async { c.closeIfIdle() } }
    }

    /// Closes every connection at once.
    public func closeAll() {
        let all = connections.withLock { Array($0.values) }
        for c in all { c.queue.async { c.close() } }
    }

    public var openConnections: Int { connections.withLock { $0.count } }

    // MARK: accept

    func acceptReady() {
        while true {
            let fd: Int32
            if simulateDescriptorExhaustion.load(ordering: .relaxed) {
                fd = -1
                errno = EMFILE
            } else {
                fd = accept(listenFD, nil, nil)
            }
            if fd < 0 {
                let e = errno
                if e == EAGAIN || e == EWOULDBLOCK { return }
                if e == EINTR || e == ECONNABORTED { continue }
                counters.withLock { $0.acceptErrors += 1 }
                if e == EMFILE || e == ENFILE || e == ENOBUFS || e == ENOMEM {
                    // Out of descriptors: stop polling the listener for 100 ms instead of spinning
                    // (RELIABILITY.md S8); connections finishing meanwhile free descriptors.
                    let suspended = acceptState.withLock { st -> Bool in
                        guard let source = st.source, !st.suspended else { return false }
                        source.suspend()
                        st.suspended = true
                        return true
                    }
                    if suspended { counters.withLock { $0.acceptBackoffs += 1 } }
                    acceptQueue.asyncAfter(deadline: .now() + 0.1) { [self] in
                        acceptState.withLock { st in
                            guard let source = st.source, st.suspended else { return }
                            st.suspended = false
                            source.resume()
                        }
                    }
                }
                return
            }
            _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
            _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
            var one: Int32 = 1
            setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
            let admitted = connections.withLock { table -> Bool in
                guard table.count < connectionLimit else { return false }
                return true
            }
            guard admitted, let c = Connection(fd: fd, server: self) else { Glibc.close(fd); continue }
            connections.withLock { $0[fd] = c }
            counters.withLock { $0.accepted += 1; $0.open += 1 }
            c.start()
        }
    }

    func removed(_ fd: Int32) {
        connections.withLock { _ = $0.removeValue(forKey: fd) }
        counters.withLock { $0.open -= 1 }
    }

    // MARK: listen

    static func listen(host: String, port: Int, backlog: Int) throws -> (Int32, Int) {
        guard port >= 0 && port <= 65535 else { throw HTTPServerError(call: "bind", errno: EINVAL, detail: "port \(port)") }
        var hints = addrinfo()
        hints.ai_family = AF_UNSPEC
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV
        var res: UnsafeMutablePointer<addrinfo>?
        let rc = getaddrinfo(host, String(port), &hints, &res)
        guard rc == 0, let first = res else {
            throw HTTPServerError(call: "getaddrinfo", errno: 0, detail: "\(host): \(String(cString: gai_strerror(rc)))")
        }
        defer { freeaddrinfo(res) }
        var lastError = HTTPServerError(call: "socket", errno: 0, detail: host)
        var ai: UnsafeMutablePointer<addrinfo>? = first
        while let a = ai {
            defer { ai = a.pointee.ai_next }
            let fd = socket(a.pointee.ai_family, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
            if fd < 0 { lastError = HTTPServerError(call: "socket", errno: errno, detail: host); continue }
            var one: Int32 = 1
            setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
            if a.pointee.ai_family == AF_INET6 {
                var zero: Int32 = 0  // "::" also accepts IPv4 (dual stack)
                setsockopt(fd, Int32(IPPROTO_IPV6), IPV6_V6ONLY, &zero, socklen_t(MemoryLayout<Int32>.size))
            }
            if bind(fd, a.pointee.ai_addr, a.pointee.ai_addrlen) != 0 {
                lastError = HTTPServerError(call: "bind", errno: errno, detail: "\(host):\(port)")
                Glibc.close(fd)
                continue
            }
            if Glibc.listen(fd, Int32(max(128, backlog))) != 0 {
                lastError = HTTPServerError(call: "listen", errno: errno, detail: "\(host):\(port)")
                Glibc.close(fd)
                continue
            }
            var storage = sockaddr_storage()
            var len = socklen_t(MemoryLayout<sockaddr_storage>.size)
            let bound = withUnsafeMutablePointer(to: &storage) { p -> Int in
                p.withMemoryRebound(to: sockaddr.self, capacity: 1) { sa in
                    guard getsockname(fd, sa, &len) == 0 else { return port }
                    if sa.pointee.sa_family == sa_family_t(AF_INET) {
                        return sa.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { Int(UInt16(bigEndian: $0.pointee.sin_port)) }
                    }
                    return sa.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { Int(UInt16(bigEndian: $0.pointee.sin6_port)) }
                }
            }
            return (fd, bound)
        }
        throw lastError
    }
}

/// A socket call failed: which call, errno and what it was doing.
public struct HTTPServerError: Error, CustomStringConvertible, Sendable {
    public var call: String
    public var errno: Int32
    public var detail: String
    public var description: String {
        errno == 0 ? "\(call): \(detail)" : "\(call)(\(detail)): \(String(cString: strerror(errno))) (errno \(errno))"
    }
}

func monotonicNow() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) * 1e-9
}

/// One client connection. All mutable state is confined to `queue` (a serial queue): every
/// method below runs on it, which is what makes the `@unchecked Sendable` sound. The atomics
/// (`closedFlag`, `unsent`) are the only state read from other threads.
final class Connection: @unchecked Sendable {
    let fd: Int32
    /// Strong: an open connection keeps its server alive (the server's table keeps the
    /// connection until its descriptor is closed, so the cycle ends with the connection).
    let server: HTTPServer
    let queue: DispatchQueue
    let closedFlag = Atomic<Bool>(false)
    let unsent = Atomic<Int>(0)
    /// Stream bytes handed to `queue` but not yet in the output buffer.
    let inTransit = Atomic<Int>(0)
    private var lastWriteProgress = 0.0

    private var parser: HTTPParser
    private var readSource: (any DispatchSourceRead)?
    private var writeSource: (any DispatchSourceWrite)?
    private var writeArmed = false
    private var readPaused = false
    private var timer: (any DispatchSourceTimer)?
    private var out: [UInt8] = []
    private var outOffset = 0
    private enum Pending {
        case request(HTTPRequest), error(HTTPParseError), rejected(HTTPRequestHead, HTTPResponse)
        /// An error or a refusal: the connection closes after answering it.
        var isFinal: Bool { if case .request = self { false } else { true } }
    }
    /// The push stream being sent, if any (its sink learns about drains and the close).
    private var pushSink: HTTPStreamSink?
    private var pending: [Pending] = []
    private var pendingHead = 0
    private var inFlight = false
    private var inFlightVersion = HTTPVersion.http11
    private var inFlightKeepAlive = true
    private var closeAfterFlush = false
    private var lingering = false
    private var lingerDeadline = 0.0
    private var closed = false
    private var lastActivity: Double
    private var requestStart: Double?
    /// Dispatch sources still to be cancelled; the descriptor is closed when the last one is.
    private var liveSources = 0
    // 16 KiB per connection: 4,096 open connections cost 64 MiB of buffers.
    private var readBuffer = [UInt8](repeating: 0, count: 16 * 1024)
    /// The TLS state of an HTTPS connection (nil for plain HTTP).
    private let tls: TLSSession?
    private let acceptedAt: Double
    /// TLS: a read stopped because OpenSSL must write first; retry it when the socket is writable.
    private var readWantsWrite = false
    /// TLS: a write stopped because OpenSSL must read first; retry it when the socket is readable.
    private var writeWantsRead = false

    /// Nil when a TLS session can't be created (the caller closes the descriptor).
    init?(fd: Int32, server: HTTPServer) {
        self.fd = fd
        self.server = server
        if let context = server.config.tls {
            guard let session = TLSSession(context: context, fd: fd) else { return nil }
            tls = session
        } else {
            tls = nil
        }
        // Target the non-overcommitting global queue: at most one thread per core runs connection
        // work (a private serial queue targets an overcommit pool by default, which spawns a thread
        // per busy queue under load).
        queue = DispatchQueue(label: "reflowd.http.conn", target: HTTPServer.connectionPool)
        parser = HTTPParser(limits: server.config.limits, headGate: server.config.headGate, bodyPolicy: server.config.bodyPolicy)
        lastActivity = monotonicNow()
        acceptedAt = lastActivity
    }

    func start() {
        queue.async { [self] in
            guard !closed else { return }  // closed by a shutdown before it started
            let r = DispatchSource.makeReadSource(fileDescriptor: fd, queue: queue)
            r.setEventHandler { [unowned self] in self.readable() }
            r.setCancelHandler { [self] in self.sourceCancelled() }
            liveSources += 1
            readSource = r
            r.resume()
            let t = DispatchSource.makeTimerSource(queue: queue)
            t.schedule(deadline: .now() + 1, repeating: 1, leeway: .milliseconds(250))
            t.setEventHandler { [unowned self] in self.tick() }
            timer = t
            t.resume()
        }
    }

    // MARK: reading

    private func readable() {
        guard !closed else { return }
        if let tls, !lingering {
            readableTLS(tls)
            return
        }
        // Plain HTTP, or TLS after close_notify was sent while lingering: raw bytes to discard.
        let n = readBuffer.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
        if n < 0 {
            if errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR { return }
            close()
            return
        }
        received(n)
    }

    /// Reads through TLS until OpenSSL has nothing buffered: records already decrypted and
    /// buffered inside OpenSSL would not make the socket readable again.
    private func readableTLS(_ tls: TLSSession) {
        if writeWantsRead {
            writeWantsRead = false
            flush()
            if closed { return }
        }
        while true {
            let n = readBuffer.withUnsafeMutableBytes { tls.read($0.baseAddress!, $0.count) }
            if n < 0 {
                if errno == EAGAIN {
                    if tls.wantsWrite {
                        readWantsWrite = true
                        armWrite()
                    }
                    return
                }
                close()
                return
            }
            received(n)
            if n == 0 || closed || readPaused || lingering || tls.pending == 0 { return }
        }
    }

    /// Handles `n` bytes just read into `readBuffer` (0: the peer closed).
    private func received(_ n: Int) {
        if n == 0 {
            // Peer closed (or half-closed). Responses already owed can no longer be read reliably.
            // An event stream never ends by itself, so a client that closes its side is gone:
            // close now so that the producer hears of it (RFC 9112 §9.6 lets a server close).
            if lingering || (!inFlight && pendingCount == 0) || pushSink != nil { close() } else { pauseReading(); closeAfterFlush = true }
            return
        }
        lastActivity = monotonicNow()
        if lingering { return }  // discarding input after an error response
        // The header deadline runs from the first byte of a request, not from the last byte.
        if parser.isIdle { requestStart = lastActivity }
        let bufferedBefore = parser.bodyBytesBuffered
        let events = readBuffer.withUnsafeBytes { parser.feed(UnsafeRawBufferPointer(rebasing: $0[0..<n])) }
        if parser.isIdle { requestStart = nil }
        let buffered = parser.bodyBytesBuffered - bufferedBefore
        if buffered > 0 { server.counters.withLock { $0.bodyBytesBuffered += buffered } }
        for e in events {
            switch e {
            case .request(let r): pending.append(.request(r))
            case .rejected(let head, let response):
                // Refused from its head (authentication): answered in order, then closed; the
                // parser took none of the body and lingering discards whatever follows.
                server.counters.withLock { $0.rejectedHeads += 1 }
                pending.append(.rejected(head, response))
                pauseReading()
            case .refused(let head, let response):
                // Refused by the body policy or its sink (too large, no space): answered in
                // order like a gate's refusal, then closed; what was left of the body is discarded.
                pending.append(.rejected(head, response))
                pauseReading()
            case .error(let err):
                pending.append(.error(err))
                pauseReading()
            case .expectContinue:
                if !inFlight && pendingCount == 0 { enqueue(Array("HTTP/1.1 100 Continue\r\n\r\n".utf8)) }
            }
        }
        if pendingCount > 32 { pauseReading() }
        processNext()
    }

    private var pendingCount: Int { pending.count - pendingHead }

    private func pauseReading() {
        guard !readPaused, !closed, let r = readSource else { return }
        r.suspend()
        readPaused = true
    }

    private func resumeReading() {
        guard readPaused, let r = readSource, !closed else { return }
        readPaused = false
        r.resume()
        // Bytes OpenSSL already decrypted won't make the socket readable: read them now.
        if let tls, tls.pending > 0 { queue.async { [self] in readable() } }
    }

    // MARK: dispatching requests

    private func processNext() {
        while !inFlight && !closed && !closeAfterFlush && pendingCount > 0 {
            let item = pending[pendingHead]
            pendingHead += 1
            if pendingHead > 64 && pendingHead * 2 > pending.count {
                pending.removeFirst(pendingHead)
                pendingHead = 0
            }
            switch item {
            case .error(let e):
                inFlight = true
                inFlightVersion = .http11
                inFlightKeepAlive = false
                write(.problem(status: e.status, code: "http_\(e.status)", detail: e.message), head: nil, keepAlive: false)
                finishResponse(keepAlive: false)
            case .rejected(let head, let response):
                inFlight = true
                inFlightVersion = head.version
                inFlightKeepAlive = false
                if case .bytes = response.body {
                    write(response, head: head, keepAlive: false)
                } else {
                    write(.problem(status: 500, code: "http_500", detail: "a head gate answered with a streamed body"), head: head, keepAlive: false)
                }
                finishResponse(keepAlive: false)
            case .request(let r):
                server.counters.withLock { $0.requests += 1 }
                inFlight = true
                let responder = HTTPResponder(connection: self, request: r.head)
                if let response = server.handler(r, responder), !responder.answered.exchange(true, ordering: .acquiringAndReleasing) {
                    respond(response, to: r.head)
                }
            }
        }
        if readPaused && pendingCount <= 8 && !closeAfterFlush && !closed && !lingering {
            if pending.last?.isFinal != true { resumeReading() }
        }
    }

    /// Sends `response` to the in-flight request `head`.
    func respond(_ response: HTTPResponse, to head: HTTPRequestHead) {
        guard !closed else { return }
        let keepAlive = head.keepAlive && !server.draining.load(ordering: .relaxed) && !closeAfterFlush
        inFlightVersion = head.version
        inFlightKeepAlive = keepAlive
        switch response.body {
        case .bytes:
            write(response, head: head, keepAlive: keepAlive)
            finishResponse(keepAlive: keepAlive)
        case .stream(let produce):
            if head.method != "HEAD" {
                let active = server.activeStreams.add(1, ordering: .relaxed).newValue
                if active > server.config.maxStreams {
                    server.activeStreams.subtract(1, ordering: .relaxed)
                    refuseStream("\(server.config.maxStreams) streams are open; retry later", head: head, keepAlive: keepAlive)
                    return
                }
            }
            let chunked = head.version == .http11
            let keep = keepAlive && chunked  // an HTTP/1.0 stream ends by closing
            enqueue(response.head(version: head.version, contentLength: nil, keepAlive: keep, serverName: server.config.serverName))
            inFlightKeepAlive = keep
            let writer = HTTPBodyWriter(connection: self, chunked: chunked)
            if head.method == "HEAD" {
                // No body, but the producer still runs (with a finished writer) so that whatever
                // it owns (an open file) is released.
                writer.finished.store(true, ordering: .relaxed)
                DispatchQueue.global().async { produce(writer) }
                finishResponse(keepAlive: keep)
                return
            }
            let server = self.server
            DispatchQueue.global().async {
                produce(writer)
                writer.finish()
                server.activeStreams.subtract(1, ordering: .relaxed)
            }
        case .push(let start):
            if head.method == "HEAD" {
                // Same head, no body (RFC 9110 §9.3.2); the producer is never started.
                let keep = keepAlive && head.version == .http11
                enqueue(response.head(version: head.version, contentLength: nil, keepAlive: keep, serverName: server.config.serverName))
                finishResponse(keepAlive: keep)
                return
            }
            let active = server.activePushStreams.add(1, ordering: .relaxed).newValue
            if active > server.config.maxPushStreams {
                server.activePushStreams.subtract(1, ordering: .relaxed)
                refuseStream("\(server.config.maxPushStreams) event streams are open; retry later", head: head, keepAlive: keepAlive)
                return
            }
            let chunked = head.version == .http11
            let keep = keepAlive && chunked  // an HTTP/1.0 stream ends by closing
            enqueue(response.head(version: head.version, contentLength: nil, keepAlive: keep, serverName: server.config.serverName))
            inFlightKeepAlive = keep
            let sink = HTTPStreamSink(connection: self, chunked: chunked)
            if closed {
                sink.connectionClosed()  // releases the slot; nothing to start
                return
            }
            pushSink = sink
            start(sink)
        }
    }

    /// The producer finished a push stream (on the queue).
    func finishPush(_ sink: HTTPStreamSink) {
        guard pushSink === sink else { return }
        pushSink = nil
        finishStream(chunked: sink.chunked)
    }

    /// Runs the sink's writable handlers if the backlog is small enough (on the queue).
    func checkWritable(_ sink: HTTPStreamSink) {
        guard !closed, pushSink === sink, sink.wantsWritable.load(ordering: .relaxed) else { return }
        if (out.count - outOffset) + inTransit.load(ordering: .relaxed) <= HTTPStreamSink.lowWaterMark { sink.drained() }
    }

    private func write(_ response: HTTPResponse, head: HTTPRequestHead?, keepAlive: Bool) {
        guard case .bytes(let body) = response.body else { return }
        let version = head?.version ?? .http11
        var bytes = response.head(version: version, contentLength: body.count, keepAlive: keepAlive, serverName: server.config.serverName)
        if head?.method != "HEAD" { bytes += body }  // HEAD: same headers, no content (RFC 9110 §9.3.2)
        enqueue(bytes)
    }

    func finishStream(chunked: Bool) {
        guard !closed else { return }
        if chunked { enqueue(Array("0\r\n\r\n".utf8)) }
        finishResponse(keepAlive: inFlightKeepAlive && !closeAfterFlush)
    }

    /// Answers a stream request over its cap: 503 `too_many_streams` with `Retry-After: 5`.
    private func refuseStream(_ detail: String, head: HTTPRequestHead, keepAlive: Bool) {
        var busy = HTTPResponse.problem(status: 503, code: "too_many_streams", detail: detail)
        busy.headers.add("Retry-After", "5")
        write(busy, head: head, keepAlive: keepAlive)
        finishResponse(keepAlive: keepAlive)
    }

    private func finishResponse(keepAlive: Bool) {
        guard !closed else { return }
        inFlight = false
        lastActivity = monotonicNow()
        if !keepAlive {
            closeAfterFlush = true
            pauseReading()
            flush()
            return
        }
        processNext()
    }

    // MARK: writing

    func enqueue(_ bytes: [UInt8]) {
        guard !closed else { return }
        if outOffset == out.count {
            out.removeAll(keepingCapacity: true)
            outOffset = 0
            lastWriteProgress = monotonicNow()  // the clock for a stalled reader starts now
        }
        out += bytes
        unsent.store(out.count - outOffset, ordering: .relaxed)
        flush()
    }

    private func flush() {
        while outOffset < out.count {
            let n = out.withUnsafeBytes { p in
                if let tls { return tls.write(p.baseAddress! + outOffset, p.count - outOffset) }
                return send(fd, p.baseAddress! + outOffset, p.count - outOffset, Int32(MSG_NOSIGNAL))
            }
            if n < 0 {
                if errno == EINTR { continue }
                if errno == EAGAIN || errno == EWOULDBLOCK {
                    if let tls, tls.wantsRead {
                        // OpenSSL must read before it can write: retry from readable().
                        writeWantsRead = true
                        if readPaused, let r = readSource { readPaused = false; r.resume() }
                    } else {
                        armWrite()
                    }
                    unsent.store(out.count - outOffset, ordering: .relaxed)
                    return
                }
                close()
                return
            }
            outOffset += n
            lastWriteProgress = monotonicNow()
        }
        unsent.store(0, ordering: .relaxed)
        if let sink = pushSink, sink.wantsWritable.load(ordering: .relaxed) { checkWritable(sink) }
        if closeAfterFlush && !inFlight { startLingering() }
    }

    private func armWrite() {
        guard !writeArmed, !closed else { return }
        if writeSource == nil {
            let w = DispatchSource.makeWriteSource(fileDescriptor: fd, queue: queue)
            w.setEventHandler { [unowned self] in
                self.disarmWrite()
                if self.readWantsWrite {
                    self.readWantsWrite = false
                    self.readable()
                    if self.closed { return }
                }
                self.flush()
            }
            w.setCancelHandler { [self] in self.sourceCancelled() }
            liveSources += 1
            writeSource = w
        }
        writeArmed = true
        writeSource?.resume()
    }

    private func disarmWrite() {
        guard writeArmed else { return }
        writeArmed = false
        writeSource?.suspend()
    }

    /// After a final response on a closing connection: half-close, then read and discard for up
    /// to 2 s so the client sees the response instead of a reset (RFC 9112 §9.6). With TLS,
    /// close_notify is sent first; the discarded input is then read raw, without decrypting.
    private func startLingering() {
        guard !lingering, !closed else { return }
        lingering = true
        lingerDeadline = monotonicNow() + 2
        tls?.shutdown()
        shutdown(fd, Int32(SHUT_WR))
        resumeReading()
    }

    // MARK: timeouts and closing

    private func tick() {
        guard !closed else { return }
        let now = monotonicNow()
        if let tls, !tls.handshakeComplete {
            // TLS slowloris: no response, just close.
            if now - acceptedAt > server.config.tlsHandshakeTimeout { close() }
            return
        }
        if lingering {
            if now > lingerDeadline { close() }
            return
        }
        let config = server.config
        if outOffset < out.count {
            // Output is waiting: only a reader that stopped reading is timed out, whatever the state.
            if now - lastWriteProgress > config.writeTimeout { close() }
            return
        }
        if inFlight || closeAfterFlush { return }
        if parser.isReadingBody {
            if now - lastActivity > config.bodyIdleTimeout { timeout() }
        } else if !parser.isIdle, let start = requestStart {
            if now - start > config.headerTimeout { timeout() }
        } else if pendingCount == 0 && now - lastActivity > (server.draining.load(ordering: .relaxed) ? 0 : config.keepAliveTimeout) {
            close()
        }
    }

    private func timeout() {
        // 408 then close (RFC 9110 §15.5.9).
        pending.append(.error(HTTPParseError(status: 408, message: "the request did not arrive in time")))
        pauseReading()
        processNext()
    }

    func closeIfIdle() {
        if !inFlight && pendingCount == 0 && parser.isIdle && outOffset == out.count { close() }
    }

    func close() {
        guard !closed else { return }
        closed = true
        closedFlag.store(true, ordering: .relaxed)
        // Streamed bodies that will never reach the handler: the one being received, and those
        // of requests still waiting behind the one in flight.
        parser.abandon()
        while pendingHead < pending.count {
            if case .request(let r) = pending[pendingHead] { r.bodySink?.abort() }
            pendingHead += 1
        }
        if let sink = pushSink {
            pushSink = nil
            sink.connectionClosed()
        }
        tls?.shutdown()  // close_notify (once; the descriptor is closed after the sources are cancelled)
        timer?.cancel()
        if let w = writeSource {
            if !writeArmed { w.resume() }
            w.cancel()
        }
        if let r = readSource {
            if readPaused { r.resume() }
            r.cancel()
        }
        if liveSources == 0 { sourceCancelled() }
    }

    /// Closes the descriptor once no Dispatch source watches it (closing earlier could let a new
    /// connection reuse the number while a source still refers to it).
    private func sourceCancelled() {
        liveSources -= 1
        guard liveSources <= 0 else { return }
        server.removed(fd)  // before close(2): the number may be reused by the next accept
        Glibc.close(fd)
    }
}

extension String {
    /// Escapes `"` and `\` and drops control characters (for tiny JSON strings built by hand).
    var replacingQuotes: String {
        var s = ""
        for c in unicodeScalars {
            if c == "\"" || c == "\\" { s += "\\" + String(c) } else if c.value >= 0x20 { s.unicodeScalars.append(c) }
        }
        return s
    }
}
