import Foundation
import Glibc
import Testing
import ReflowHTTP
@testable import ReflowServer

/// An in-process server wired as `reflowd serve` wires it (the API's head gate installed).
/// Jobs are not started unless asked, so submitted jobs stay queued and their streams idle.
final class GatedServer {
    let dir = NSTemporaryDirectory() + "reflowd-sse-\(UUID().uuidString)"
    let jobs: JobService
    let api: API
    let http: HTTPServer
    var port: Int { http.port }

    init(token: String? = nil, start: Bool = false, maxBodyBytes: Int = 64 << 20) throws {
        var settings = JobSettings(dataDir: dir)
        settings.computeThreads = 1
        settings.computeNice = 0
        jobs = try JobService(settings: settings)
        let api = API(jobs: jobs, token: token)
        self.api = api
        var config = HTTPServerConfig()
        config.port = 0
        config.limits.maxBodyBytes = maxBodyBytes
        config.headGate = api.headGate
        http = try HTTPServer(config: config) { req, responder in api.handle(req, responder) }
        if start { jobs.start() }
    }

    func stop() {
        http.stopAccepting()
        http.closeAll()
        jobs.shutdown(timeout: 30)
        try? FileManager.default.removeItem(atPath: dir)
    }
}

/// Polls `condition` every millisecond until it holds or `seconds` pass.
private func eventually(within seconds: Double = 20, _ condition: () -> Bool) -> Bool {
    let deadline = Date().addingTimeInterval(seconds)
    while Date() < deadline {
        if condition() { return true }
        usleep(1000)
    }
    return condition()
}

/// Threads of this process (`Threads:` in /proc/self/status).
private func threadCount() -> Int {
    guard let text = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8),
          let line = text.split(separator: "\n").first(where: { $0.hasPrefix("Threads:") }) else { return -1 }
    return Int(line.dropFirst(8).trimmingCharacters(in: .whitespaces)) ?? -1
}

/// The events of an SSE body: (id, event, data); comments and `retry` are skipped.
private func sseEvents(_ body: String) -> [(id: Int?, event: String, data: String)] {
    body.components(separatedBy: "\n\n").compactMap { frame in
        var id: Int?, event = "message", data: String?
        for line in frame.split(separator: "\n") {
            if line.hasPrefix("id: ") { id = Int(line.dropFirst(4)) }
            if line.hasPrefix("event: ") { event = String(line.dropFirst(7)) }
            if line.hasPrefix("data: ") { data = String(line.dropFirst(6)) }
        }
        return data.map { (id, event, $0) }
    }
}

@Suite("SSE push streams and authentication from the head", .serialized)
struct EventStreamTests {
    @Test("1,000 idle SSE streams cost no threads, and every stream gets every event in order, without gaps, ending with completed")
    func thousandIdleStreams() throws {
        let s = try GatedServer()
        defer { s.stop() }
        let submit = try TestClient(port: s.port)
        let created = try submit.json("POST", "/v1/jobs", tinyTrain)
        #expect(created.status == 202)
        let id = try #require(try created.json()["id"] as? String)
        let before = threadCount()
        var clients = [TestClient]()
        for _ in 0..<1000 {
            let c = try TestClient(port: s.port)
            try c.send("GET /v1/jobs/\(id)/events HTTP/1.1\r\nHost: test\r\nAccept: text/event-stream\r\n\r\n")
            clients.append(c)
        }
        #expect(eventually { s.jobs.eventHub.subscriberCount == 1000 }, "\(s.jobs.eventHub.subscriberCount) subscribed")
        #expect(s.http.openPushStreams == 1000)
        let during = threadCount()
        #expect(during - before < 32, "threads \(before) → \(during) with 1,000 streams open")
        // Live events from two threads at once, then the end of the job.
        let jobs = s.jobs
        DispatchQueue.concurrentPerform(iterations: 2) { t in
            for k in 0..<50 { jobs.appendEvent(id, "log", #"{"line":"t\#(t)-\#(k)"}"#) }
        }
        #expect(try submit.request("POST", "/v1/jobs/\(id)/cancel").status == 202)
        for (n, c) in clients.enumerated() {
            let r = try c.read()
            #expect(r.status == 200 && r.header("Content-Type") == "text/event-stream")
            let events = sseEvents(r.text)
            let ids = events.compactMap(\.id)
            #expect(ids.count == events.count && ids.count == 2 + 100 + 3, "client \(n): \(events.count) events")
            #expect(zip(ids, ids.dropFirst()).allSatisfy { $1 == $0 + 1 }, "client \(n): ids not consecutive")
            #expect(events.first?.event == "status" && events.last?.event == "completed", "client \(n)")
            for t in 0..<2 {
                let lines = events.filter { $0.data.contains("\"t\(t)-") }.map(\.data)
                #expect(lines == (0..<50).map { #"{"line":"t\#(t)-\#($0)"}"# }, "client \(n), thread \(t)")
            }
        }
        #expect(eventually { s.jobs.eventHub.subscriberCount == 0 && s.http.openPushStreams == 0 })
        print("SSE: threads \(before) before, \(during) with 1,000 streams open")
    }

    @Test("Last-Event-ID replays what follows it; a client that leaves is unsubscribed; history_dropped after a gap")
    func replayResumeAndLeave() throws {
        let s = try GatedServer()
        defer { s.stop() }
        let c = try TestClient(port: s.port)
        let id = try #require(try c.json("POST", "/v1/jobs", tinyTrain).json()["id"] as? String)
        let first = s.jobs.events(id, after: 0).events.map(\.seq)
        #expect(first.count == 2)
        // A stream opened after the first event starts at the second, then follows live ones.
        var live: TestClient? = try TestClient(port: s.port)
        try live?.send("GET /v1/jobs/\(id)/events HTTP/1.1\r\nHost: test\r\nLast-Event-ID: \(first[0])\r\n\r\n")
        #expect(eventually { s.jobs.eventHub.subscriberCount == 1 })
        s.jobs.appendEvent(id, "log", #"{"line":"live"}"#)
        var text = ""
        #expect(eventually {
            if let more = try? live?.fill(), more { text = String(decoding: live?.buffer ?? [], as: UTF8.self) }
            return text.contains("live")
        })
        // Raw bytes: the head and the chunk framing use CRLF ("\r\n" is one Character in Swift).
        let seen = sseEvents(text.replacingOccurrences(of: "\r\n", with: "\n")).compactMap(\.id)
        #expect(seen.first == first[1] && seen.count == 2, "\(text)")
        live = nil
        #expect(eventually { s.jobs.eventHub.subscriberCount == 0 && s.http.openPushStreams == 0 })
        // 1,100 more events: the buffer keeps 1,024, so an old Last-Event-ID gets history_dropped first.
        for k in 0..<1100 { s.jobs.appendEvent(id, "log", #"{"line":"\#(k)"}"#) }
        _ = s.jobs.cancel(id)
        let late = try TestClient(port: s.port).request("GET", "/v1/jobs/\(id)/events", headers: [("Last-Event-ID", String(first[0]))])
        let events = sseEvents(late.text)
        #expect(events.first?.event == "error" && events.first?.data == #"{"code":"history_dropped"}"#)
        #expect(events.count == 1 + 1024 && events.last?.event == "completed")
    }

    @Test("auth from the head: a 59 MiB upload without a token is refused before its body; bearer in any case; open routes stay open")
    func authenticationFromHead() throws {
        let s = try GatedServer(token: "s3cret")
        defer { s.stop() }
        let c = try TestClient(port: s.port, timeout: 10)
        try c.send("POST /v1/checkpoints HTTP/1.1\r\nHost: test\r\nContent-Type: application/octet-stream\r\nContent-Length: 61865984\r\n\r\n")
        let r = try c.read()
        #expect(r.status == 401 && r.header("WWW-Authenticate")?.hasPrefix("Bearer") == true)
        let code = try r.json()["code"] as? String
        #expect(r.header("Content-Type") == "application/problem+json" && code == "unauthorized")
        #expect(r.header("Connection") == "close" && c.isClosedByServer())
        #expect(s.http.stats.bodyBytesBuffered == 0 && s.http.stats.rejectedHeads == 1)
        for header in ["bearer s3cret", "BEARER s3cret", "Bearer  s3cret"] {
            #expect(try TestClient(port: s.port).request("GET", "/v1/jobs", headers: [("Authorization", header)]).status == 200, "\(header)")
        }
        for header in ["Bearer nope", "Basic s3cret", "Bearer", "s3cret", "Bearers3cret"] {
            let refused = try TestClient(port: s.port).request("GET", "/v1/jobs", headers: [("Authorization", header)])
            #expect(refused.status == 401, "\(header)")
        }
        let open = try TestClient(port: s.port)
        #expect(try open.request("GET", "/healthz").status == 200)
        #expect(try open.request("GET", "/readyz").status == 200)
        #expect(try open.request("GET", "/").status == 200)
        #expect(try open.request("GET", "/nowhere").status == 404)
        #expect(try TestClient(port: s.port).request("GET", "/metrics").status == 401)
        // Absolute-form targets are routed (and gated) by their path.
        #expect(try TestClient(port: s.port).request("GET", "http://test/v1/jobs").status == 401)
        #expect(try open.request("GET", "http://127.0.0.1:\(s.port)/healthz").status == 200)
        #expect(try open.request("GET", "http://test/v1/jobs?limit=1", headers: [("Authorization", "bearer s3cret")]).status == 200)
        // An authenticated upload is read as before (and its bytes are counted).
        let up = try TestClient(port: s.port).request("POST", "/v1/checkpoints", headers: [("Authorization", "Bearer s3cret")],
                                                       body: Array("not a model".utf8))
        #expect(up.status == 422 && s.http.stats.bodyBytesBuffered == 11)
    }
}
