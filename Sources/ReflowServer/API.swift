public import ReflowHTTP
import ReflowJobs
import ReflowFlow
import ReflowStore
import ReflowMRI
import ReflowCodec
import ReflowEngine
import Foundation
import Synchronization

/// The v1 HTTP API (docs/API.md, docs/openapi.json): routes requests to the ``JobService``.
///
/// Every error is an RFC 9457 problem+json body with a stable `code`; every response carries
/// `X-Request-Id`. Ids and file names in paths are checked against what the server generates
/// (`job_` + base32, fixed artifact names), so no user text ever becomes a path.
public final class API: Sendable {
    public let jobs: JobService
    /// Uploaded, configured and built-in datasets (nil: the dataset routes answer 503).
    public let datasets: DatasetStore?
    public let metrics = HTTPMetrics()
    /// SHA-256 of the bearer token, when auth is on.
    let tokenDigest: [UInt8]?
    let requestCounter = Atomic<Int>(0)
    let version: String
    let openConnections: @Sendable () -> Int

    /// Route templates for metrics and the OpenAPI drift test.
    public static let routes: [(method: String, template: String)] = [
        ("GET", "/healthz"), ("GET", "/readyz"), ("GET", "/metrics"), ("GET", "/"),
        ("POST", "/v1/jobs"), ("GET", "/v1/jobs"), ("GET", "/v1/jobs/{id}"), ("DELETE", "/v1/jobs/{id}"),
        ("POST", "/v1/jobs/{id}/cancel"), ("GET", "/v1/jobs/{id}/events"), ("GET", "/v1/jobs/{id}/logs"),
        ("GET", "/v1/jobs/{id}/images"), ("GET", "/v1/jobs/{id}/images/{name}"),
        ("GET", "/v1/jobs/{id}/artifacts"), ("GET", "/v1/jobs/{id}/artifacts/{name}"),
        ("GET", "/v1/checkpoints"), ("GET", "/v1/checkpoints/{id}"), ("GET", "/v1/checkpoints/{id}/file"),
        ("POST", "/v1/checkpoints"),
        ("GET", "/v1/datasets"), ("GET", "/v1/datasets/{name}"), ("PUT", "/v1/datasets/{name}"), ("DELETE", "/v1/datasets/{name}"),
        ("PUT", "/v1/datasets/{name}/files/{file}"),
    ]

    public init(jobs: JobService, token: String?, version: String = "0.4.0", datasets: DatasetStore? = nil,
                openConnections: @escaping @Sendable () -> Int = { 0 }) {
        self.jobs = jobs
        self.datasets = datasets
        self.tokenDigest = token.map { Array(SHA256.hex(of: $0.utf8).utf8) }
        self.version = version
        self.openConnections = openConnections
    }

    // MARK: entry point

    /// The ``HTTPHandler`` of the server.
    public func handle(_ request: HTTPRequest, _ responder: HTTPResponder) -> HTTPResponse? {
        let start = monotonicSeconds()
        let requestID = "req_" + String(requestCounter.add(1, ordering: .relaxed).newValue, radix: 36)
        var routeName = "unmatched"
        let method = request.method
        let finish: @Sendable (HTTPResponse, String) -> HTTPResponse = { [metrics] r, route in
            var r = r
            r.headers.add("X-Request-Id", requestID)
            metrics.record(method: method, route: route, code: r.status, seconds: monotonicSeconds() - start)
            return r
        }
        let result: Routed
        do {
            result = try route(request, responder, &routeName)
        } catch {
            return finish(problem(error, instance: String(request.head.path)), routeName)
        }
        switch result {
        case .now(let r): return finish(r, routeName)
        case .later(let register):
            // The route answers later (long poll, Prefer: wait); it hands back its response here.
            let name = routeName
            register { r in responder.send(finish(r, name)) }
            return nil
        }
    }

    enum Routed {
        case now(HTTPResponse)
        case later((@escaping @Sendable (HTTPResponse) -> Void) -> Void)
    }

    private func route(_ req: HTTPRequest, _ responder: HTTPResponder, _ route: inout String) throws(Problem) -> Routed {
        let path = String(req.head.path)
        let parts = path.split(separator: "/", omittingEmptySubsequences: false).map(String.init)
        let m = req.method == "HEAD" ? "GET" : req.method
        func allow(_ methods: String...) throws(Problem) {
            guard methods.contains(m) else {
                throw Problem(status: 405, code: "method_not_allowed", title: "Method not allowed",
                              detail: "\(req.method) is not allowed here; allowed: \(methods.joined(separator: ", "))")
            }
        }
        switch path {
        case "/healthz":
            route = "/healthz"; try allow("GET")
            return .now(json(200, #"{"status":"ok"}"#))
        case "/readyz":
            route = "/readyz"; try allow("GET")
            if jobs.isStopping { throw Problem(status: 503, code: "draining", title: "Not ready", detail: "the server is shutting down") }
            if !FileManager.default.isWritableFile(atPath: jobs.jobsDir) {
                throw Problem(status: 503, code: "storage_unavailable", title: "Not ready", detail: "the data directory is not writable")
            }
            if jobs.storage.isBelowFloor {
                throw Problem(status: 503, code: "insufficient_storage", title: "Not ready",
                              detail: "free space on the data directory's file system is below minFreeBytes (\(jobs.storage.minFreeBytes) bytes)")
            }
            return .now(json(200, #"{"status":"ready"}"#))
        case "/metrics":
            route = "/metrics"; try allow("GET")
            try authorize(req)
            return .now(HTTPResponse.text(200, renderMetrics(), contentType: "text/plain; version=0.0.4; charset=utf-8"))
        case "/":
            route = "/"; try allow("GET")
            return .now(json(200, #"{"name":"reflowd","version":"\#(version)","api":"/v1","docs":"https://github.com/reflowd (docs/API.md)","jobTypes":[\#(JobKinds.names.map { "\"\($0)\"" }.joined(separator: ","))]}"#))
        default: break
        }
        guard parts.count >= 3, parts[0] == "", parts[1] == "v1" else {
            throw Problem(status: 404, code: "not_found", title: "Not found", detail: "no route for \(path.prefix(200))")
        }
        try authorize(req)
        let rest = Array(parts[2...])
        switch rest.first {
        case "jobs":
            if rest.count == 1 {
                route = "/v1/jobs"
                try allow("GET", "POST")
                return m == "POST" ? try submit(req, responder) : .now(try list(req))
            }
            let id = rest[1]
            guard Identifiers.isJobID(id), let record = jobs.record(id) else {
                route = rest.count == 2 ? "/v1/jobs/{id}" : "/v1/jobs/{id}/" + rest[2]
                throw Problem(status: 404, code: "job_not_found", title: "Job not found", detail: "no job '\(id.prefix(64))'")
            }
            if rest.count == 2 {
                route = "/v1/jobs/{id}"
                try allow("GET", "DELETE")
                return m == "DELETE" ? .now(try delete(id)) : try get(req, record, responder)
            }
            switch (rest[2], rest.count) {
            case ("cancel", 3):
                route = "/v1/jobs/{id}/cancel"; try allow("POST")
                return .now(try cancel(id))
            case ("events", 3):
                route = "/v1/jobs/{id}/events"; try allow("GET")
                return .now(try events(req, id))
            case ("logs", 3):
                route = "/v1/jobs/{id}/logs"; try allow("GET")
                return .now(try file(req, id: id, name: "log.txt", contentType: "text/plain; charset=utf-8", missingOK: true))
            case ("images", 3):
                route = "/v1/jobs/{id}/images"; try allow("GET")
                return .now(try images(record))
            case ("images", 4):
                route = "/v1/jobs/{id}/images/{name}"; try allow("GET")
                var name = rest[3]
                if name == "grid.png" { name = "samples.png" }
                guard Self.imageNames.contains(name) || Self.isSolverGrid(name) else {
                    throw Problem(status: 404, code: "image_not_found", title: "Image not found", detail: "images are \(Self.imageNames.joined(separator: ", ")), grid.png and an image evaluation's samples_<solver>.png")
                }
                return .now(try file(req, id: id, name: name, contentType: "image/png", disposition: "inline; filename=\"\(id)-\(name)\""))
            case ("artifacts", 3):
                route = "/v1/jobs/{id}/artifacts"; try allow("GET")
                return .now(try artifacts(id))
            case ("artifacts", 4):
                route = "/v1/jobs/{id}/artifacts/{name}"; try allow("GET")
                let name = rest[3]
                guard Self.artifactNames.contains(name) else {
                    throw Problem(status: 404, code: "artifact_not_found", title: "Artifact not found", detail: "no artifact '\(name.prefix(64))'")
                }
                return .now(try file(req, id: id, name: name, contentType: Self.contentType(name),
                                     disposition: "attachment; filename=\"\(id)-\(name)\""))
            default:
                throw Problem(status: 404, code: "not_found", title: "Not found", detail: "no route for \(path.prefix(200))")
            }
        case "checkpoints":
            if rest.count == 1 {
                route = "/v1/checkpoints"
                try allow("GET", "POST")
                return .now(m == "POST" ? try upload(req) : try checkpoints())
            }
            let id = rest[1]
            route = rest.count == 2 ? "/v1/checkpoints/{id}" : "/v1/checkpoints/{id}/file"
            try allow("GET")
            guard Identifiers.isJobID(id), let r = jobs.record(id), r.state == .succeeded,
                  FileManager.default.fileExists(atPath: jobs.jobDirectory(id).model) else {
                throw Problem(status: 404, code: "checkpoint_not_found", title: "Checkpoint not found", detail: "no checkpoint '\(id.prefix(64))'")
            }
            if rest.count == 2 { return .now(try checkpointInfo(r)) }
            guard rest.count == 3, rest[2] == "file" else {
                throw Problem(status: 404, code: "not_found", title: "Not found", detail: "no route for \(path.prefix(200))")
            }
            return .now(try file(req, id: id, name: JobDirectory.Name.model, contentType: "application/octet-stream",
                                 disposition: "attachment; filename=\"\(id).safetensors\""))
        case "datasets":
            return try datasetRoute(req, rest, &route)
        default:
            throw Problem(status: 404, code: "not_found", title: "Not found", detail: "no route for \(path.prefix(200))")
        }
    }

    /// Every image any registered job kind writes (the images route serves only these names).
    static let imageNames = JobKinds.outputNames.filter { $0.hasSuffix(".png") }

    /// `samples_<solver>[-<steps>][_<k>].png`, the per-solver grids of an image `evaluate` job: a
    /// fixed prefix and suffix around [A-Za-z0-9_-] only, so the name cannot leave the job directory.
    static func isSolverGrid(_ name: String) -> Bool {
        guard name.hasPrefix("samples_"), name.hasSuffix(".png"), name.utf8.count <= 80 else { return false }
        let middle = name.utf8.dropFirst(8).dropLast(4)
        return !middle.isEmpty && middle.allSatisfy { ($0 >= 97 && $0 <= 122) || ($0 >= 65 && $0 <= 90) || ($0 >= 48 && $0 <= 57) || $0 == 45 || $0 == 95 }
    }
    /// Every file a client may download from a job directory (from ``JobDirectory`` and the
    /// registry: no user string becomes a path), plus the job's log.
    static let artifactNames = JobDirectory.servableNames + [JobDirectory.Name.log]

    static func contentType(_ name: String) -> String {
        if name.hasSuffix(".png") { return "image/png" }
        if name.hasSuffix(".json") { return "application/json" }
        if name.hasSuffix(".csv") { return "text/csv; charset=utf-8" }
        if name.hasSuffix(".txt") { return "text/plain; charset=utf-8" }
        return "application/octet-stream"
    }

    // MARK: helpers

    func json(_ status: Int, _ body: String) -> HTTPResponse {
        HTTPResponse.text(status, body, contentType: "application/json")
    }

    func json<T: Encodable>(_ status: Int, _ value: T) -> HTTPResponse {
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys]
        var h = HTTPHeaders()
        h.add("Content-Type", "application/json")
        return HTTPResponse(status: status, headers: h, body: (try? Array(e.encode(value))) ?? Array("{}".utf8))
    }

    func problem(_ p: Problem, instance: String) -> HTTPResponse {
        var p = p
        p.instance = p.instance ?? instance
        var r = json(p.status, p)
        r.headers.set("Content-Type", "application/problem+json")
        if p.status == 405, let allowed = p.detail.components(separatedBy: "allowed: ").last { r.headers.add("Allow", allowed) }
        if p.status == 429 || p.status == 503 || p.status == 507 { r.headers.add("Retry-After", "5") }
        if p.status == 401 { r.headers.add("WWW-Authenticate", "Bearer realm=\"reflowd\"") }
        return r
    }

    /// Bearer-token check; the digests are compared in constant time (RELIABILITY.md S4).
    func authorize(_ req: HTTPRequest) throws(Problem) {
        guard let problem = authorizationProblem(req.headers) else { return }
        throw problem
    }

    /// Whether a request for `path` needs the token: `/metrics` and everything under `/v1/`.
    /// `/healthz`, `/readyz`, `/` and unknown paths (404) stay open, as in ``route``.
    static func needsToken(path: Substring) -> Bool {
        path == "/metrics" || path.hasPrefix("/v1/")
    }

    /// The 401 for headers without the right `Authorization: Bearer <token>`, or nil. The scheme
    /// is matched case-insensitively (RFC 9110 §11.1), the credentials after one or more spaces
    /// (§11.4); the token's SHA-256 is compared with the configured one in constant time.
    func authorizationProblem(_ headers: HTTPHeaders) -> Problem? {
        guard let tokenDigest else { return nil }
        let header = headers["Authorization"] ?? ""
        var given = ""
        if let space = header.firstIndex(of: " "), header[..<space].lowercased() == "bearer" {
            given = String(header[space...].drop { $0 == " " })
        }
        let digest = Array(SHA256.hex(of: given.utf8).utf8)
        var diff: UInt8 = 0
        for (a, b) in zip(digest, tokenDigest) { diff |= a ^ b }
        guard diff == 0, !given.isEmpty else {
            return Problem(status: 401, code: "unauthorized", title: "Unauthorized", detail: "send Authorization: Bearer <token>")
        }
        return nil
    }

    /// The ``HTTPServerConfig/headGate`` of the server: answers 401 from the request head alone,
    /// before any body byte is read, so an unauthenticated upload is never buffered; the
    /// connection is then closed. Requests that pass are checked again by ``authorize(_:)``.
    @Sendable public func headGate(_ head: HTTPRequestHead) -> HTTPResponse? {
        guard tokenDigest != nil, Self.needsToken(path: head.path), let p = authorizationProblem(head.headers) else { return nil }
        let requestID = "req_" + String(requestCounter.add(1, ordering: .relaxed).newValue, radix: 36)
        var r = problem(p, instance: String(head.path.prefix(200)))
        r.headers.add("X-Request-Id", requestID)
        metrics.record(method: head.method, route: "unauthenticated", code: 401, seconds: 0)
        return r
    }

    func view(_ r: JobRecord) -> JobView { JobView(record: r, queuePosition: r.state == .queued ? jobs.queuePosition(r.id) : nil) }

    /// Encoded job objects by id, valid for one (version, queue position): status polls are the
    /// hottest route and JSONEncoder costs far more than the rest of a request.
    let encodedJobs = Mutex<[String: (version: Int, position: Int?, bytes: [UInt8])]>([:])

    func jobJSON(_ r: JobRecord) -> [UInt8] {
        let v = view(r)
        if let hit = encodedJobs.withLock({ $0[r.id] }), hit.version == r.version, hit.position == v.queuePosition { return hit.bytes }
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys]
        let bytes = (try? Array(e.encode(v))) ?? Array("{}".utf8)
        encodedJobs.withLock { cache in
            if cache.count >= 4096 { cache.removeAll(keepingCapacity: true) }
            cache[r.id] = (r.version, v.queuePosition, bytes)
        }
        return bytes
    }

    static func queryItems(_ q: Substring) -> [(String, String)] {
        q.split(separator: "&").compactMap { item in
            let kv = item.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            guard let key = kv.first else { return nil }
            let k = String(key).removingPercentEncoding ?? String(key)
            let v = kv.count > 1 ? (String(kv[1]).replacingOccurrences(of: "+", with: " ").removingPercentEncoding ?? String(kv[1])) : ""
            return (k, v)
        }
    }

    // MARK: jobs

    func submit(_ req: HTTPRequest, _ responder: HTTPResponder) throws(Problem) -> Routed {
        if let ct = req.headers["Content-Type"], !ct.lowercased().hasPrefix("application/json"),
           !ct.lowercased().hasPrefix("application/x-www-form-urlencoded") {
            throw Problem(status: 415, code: "unsupported_media_type", title: "Unsupported media type",
                          detail: "send the job as JSON: curl -H 'Content-Type: application/json' --data-binary @spec.json")
        }
        let key = req.headers["Idempotency-Key"]
        if let key, key.isEmpty || key.utf8.count > 255 {
            throw Problem(status: 400, code: "bad_idempotency_key", title: "Bad Idempotency-Key", detail: "must be 1 to 255 characters")
        }
        let requestDigest = SHA256.hex(of: req.body)
        let outcome: JobService.SubmitOutcome
        if let key, let earlier = jobs.replayedRecord(idempotencyKey: key, requestDigest: requestDigest) {
            // A replay gets the job the first request created, whatever has changed since (a
            // deleted reference, a lower memory budget): the request was already accepted.
            outcome = .replayed(earlier)
        } else {
            outcome = try jobs.submit(try checkedSpec(req.body), idempotencyKey: key, requestDigest: requestDigest)
        }
        let record: JobRecord, replayed: Bool
        switch outcome {
        case .created(let r): record = r; replayed = false
        case .replayed(let r): record = r; replayed = true
        }
        @Sendable func response(_ r: JobRecord, applied: Bool) -> HTTPResponse {
            var resp = json(r.done && applied ? 200 : 202, view(r))
            resp.headers.add("Location", "/v1/jobs/" + r.id)
            if replayed { resp.headers.add("Idempotent-Replayed", "true") }
            if applied {
                let w = Self.preferWait(req) ?? 0
                resp.headers.add("Preference-Applied", "wait=" + (w == w.rounded() ? String(Int(w)) : String(w)))
            }
            return resp
        }
        guard let wait = Self.preferWait(req), wait > 0 else { return .now(response(record, applied: false)) }
        let id = record.id
        return .later { [jobs] send in
            Self.poll(until: monotonicSeconds() + wait, responder: responder, check: { jobs.record(id).flatMap { $0.done ? $0 : nil } }) { done in
                send(response(done ?? jobs.record(id) ?? record, applied: done != nil))
            }
        }
    }

    /// A submitted body as a prepared spec within the memory budget: 400 for a body that is not
    /// one strict JSON object, 422 with the pointer for an invalid spec or reference, 422
    /// `memory_budget` with the estimate above the budget.
    func checkedSpec(_ body: [UInt8]) throws(Problem) -> JobSpec {
        let spec: JobSpec
        do { spec = try SpecParser.parse(body) } catch {
            // Not one strict RFC 8259 document, or not an object at all: 400; otherwise 422.
            let malformed = error.malformed || error.pointer.isEmpty
            throw Problem(status: malformed ? 400 : 422, code: malformed ? "malformed_json" : "validation_failed",
                          title: malformed ? "Malformed request body" : "Request validation failed",
                          detail: error.pointer.isEmpty ? error.message : "\(error.pointer): \(error.message)",
                          pointer: malformed ? nil : error.pointer)
        }
        let prepared: JobSpec
        do { prepared = try JobRunner.prepare(spec, resolver: ServerResolver(service: jobs)) } catch {
            throw Problem(status: 422, code: "validation_failed", title: "Request validation failed",
                          detail: "\(error.pointer): \(jobs.redact(error.message))", pointer: error.pointer)
        }
        // The memory budget (docs/JOBS.md): refuse now what would kill the process later.
        let budget = jobs.settings.memoryBudgetBytes
        let estimate: ResourceEstimate
        do { estimate = try JobRunner.estimate(prepared, resolver: ServerResolver(service: jobs), threads: jobs.settings.computeThreads) } catch {
            throw Problem(status: 422, code: "validation_failed", title: "Request validation failed",
                          detail: "\(error.pointer): \(jobs.redact(error.message))", pointer: error.pointer)
        }
        if estimate.peakBytes > budget {
            var p = Problem(status: 422, code: "memory_budget", title: "Job exceeds the memory budget",
                            detail: MemoryBudget.refusal(estimate, budget: budget), pointer: "/input")
            p.estimateBytes = estimate.peakBytes
            p.budgetBytes = budget
            p.estimate = estimate.terms
            throw p
        }
        return prepared
    }

    /// `Prefer: wait=N` (RFC 7240), capped at 60 s.
    static func preferWait(_ req: HTTPRequest) -> Double? {
        for v in req.headers.values("Prefer") {
            for part in v.split(separator: ",") {
                let p = part.trimmingCharacters(in: .whitespaces)
                if p.hasPrefix("wait="), let n = Double(p.dropFirst(5)), n >= 0 { return min(60, n) }
            }
        }
        return nil
    }

    /// Checks `check` every 50 ms without holding a thread until it returns a value, the
    /// deadline passes or the client leaves; then calls `done`.
    static func poll<T: Sendable>(until deadline: Double, responder: HTTPResponder, check: @escaping @Sendable () -> T?,
                                  done: @escaping @Sendable (T?) -> Void) {
        if let v = check() { done(v); return }
        if monotonicSeconds() >= deadline || responder.isClosed { done(nil); return }
        DispatchQueue.global().asyncAfter(deadline: .now() + 0.05) {
            poll(until: deadline, responder: responder, check: check, done: done)
        }
    }

    func list(_ req: HTTPRequest) throws(Problem) -> HTTPResponse {
        var states: Set<JobState>?, types: Set<String>?, limit = 50, cursor: String?
        for (k, v) in Self.queryItems(req.head.query) {
            switch k {
            case "state", "status":
                var s = Set<JobState>()
                for name in v.split(separator: ",") {
                    guard let st = JobState(rawValue: String(name)) else {
                        throw Problem(status: 400, code: "bad_query", title: "Bad query", detail: "state must be among \(JobState.allCases.map(\.rawValue).joined(separator: ","))")
                    }
                    s.insert(st)
                }
                states = s
            case "type": types = Set(v.split(separator: ",").map(String.init))
            case "limit":
                guard let n = Int(v), n >= 1, n <= 500 else { throw Problem(status: 400, code: "bad_query", title: "Bad query", detail: "limit must be in [1, 500]") }
                limit = n
            case "cursor":
                guard Identifiers.isJobID(v) else { throw Problem(status: 400, code: "bad_cursor", title: "Bad cursor", detail: "cursor must be a job id from nextCursor") }
                cursor = v
            default:
                throw Problem(status: 400, code: "bad_query", title: "Bad query", detail: "unknown parameter '\(k.prefix(40))' (state, type, limit, cursor)")
            }
        }
        let page = jobs.list(states: states, types: types, limit: limit, after: cursor)
        struct Page: Encodable { let items: [JobView]; let nextCursor: String? }
        var r = json(200, Page(items: page.items.map(view), nextCursor: page.next))
        if let next = page.next { r.headers.add("Link", "</v1/jobs?limit=\(limit)&cursor=\(next)>; rel=\"next\"") }
        return r
    }

    func get(_ req: HTTPRequest, _ record: JobRecord, _ responder: HTTPResponder) throws(Problem) -> Routed {
        let etag = "\"v\(record.version)\""
        var wait: Double = 0
        for (k, v) in Self.queryItems(req.head.query) {
            guard k == "wait", let n = Double(v), n >= 0 else {
                throw Problem(status: 400, code: "bad_query", title: "Bad query", detail: "the only parameter is wait=SECONDS (≤ 60)")
            }
            wait = min(60, n)
        }
        @Sendable func respond(_ r: JobRecord) -> HTTPResponse {
            var h = HTTPHeaders()
            h.add("Content-Type", "application/json")
            var resp = HTTPResponse(status: 200, headers: h, body: jobJSON(r))
            resp.headers.add("ETag", "\"v\(r.version)\"")
            resp.headers.add("Cache-Control", "no-cache")
            return resp
        }
        if wait == 0 || record.done {
            if req.headers["If-None-Match"] == etag {
                var h = HTTPHeaders()
                h.add("ETag", etag)
                return .now(HTTPResponse(status: 304, headers: h))
            }
            return .now(respond(record))
        }
        // Long poll: answer when the state or the progress step changes, or the job finishes.
        let id = record.id, state = record.state, step = record.progress?.step
        return .later { [jobs] send in
            API.poll(until: monotonicSeconds() + wait, responder: responder, check: { () -> JobRecord? in
                guard let r = jobs.record(id) else { return nil }
                return r.state != state || r.progress?.step != step ? r : nil
            }) { changed in
                send(respond(changed ?? jobs.record(id) ?? record))
            }
        }
    }

    func cancel(_ id: String) throws(Problem) -> HTTPResponse {
        switch jobs.cancel(id) {
        case .canceled(let r), .canceling(let r): return json(202, view(r))
        case .already(let r): return json(200, view(r))
        case .finished(let r):
            throw Problem(status: 409, code: "job_finished", title: "Job already finished", detail: "job \(id) has \(r.state.rawValue)")
        case .missing: throw Problem(status: 404, code: "job_not_found", title: "Job not found", detail: "no job '\(id)'")
        }
    }

    func delete(_ id: String) throws(Problem) -> HTTPResponse {
        switch jobs.delete(id) {
        case .deleted: return HTTPResponse(status: 204)
        case .active(let s):
            throw Problem(status: 409, code: "job_active", title: "Job is active", detail: "job \(id) is \(s.rawValue); cancel it first")
        case .missing: throw Problem(status: 404, code: "job_not_found", title: "Job not found", detail: "no job '\(id)'")
        }
    }

    /// Server-sent events (docs/API.md): the buffered events after `Last-Event-ID` are replayed,
    /// then live events are pushed by the job service through its ``JobEventHub``. The stream is
    /// a push body: it holds no thread while it waits (see ``JobEventStream``).
    func events(_ req: HTTPRequest, _ id: String) throws(Problem) -> HTTPResponse {
        if let accept = req.headers["Accept"], !accept.contains("text/event-stream"), !accept.contains("*/*") {
            throw Problem(status: 406, code: "not_acceptable", title: "Not acceptable", detail: "this route sends text/event-stream")
        }
        let last = Int(req.headers["Last-Event-ID"] ?? "") ?? 0
        var h = HTTPHeaders()
        h.add("Content-Type", "text/event-stream")
        h.add("Cache-Control", "no-cache")
        let jobs = self.jobs
        return HTTPResponse(status: 200, headers: h, push: { sink in
            JobEventStream.start(hub: jobs.eventHub, jobID: id, after: last, sink: sink,
                                 history: { jobs.events(id, after: $0) }, record: { jobs.record(id) })
        })
    }

    func images(_ r: JobRecord) throws(Problem) -> HTTPResponse {
        // The job kind's own image manifest (uploads have none).
        let manifest = JobKinds.named(r.type)?.outputs.filter(\.isImage).map(\.name) ?? []
        var present = manifest.filter { FileManager.default.fileExists(atPath: jobs.jobDirectory(r.id).file($0)) }
        // An image evaluation's per-solver grids.
        present += ((try? FileManager.default.contentsOfDirectory(atPath: jobs.directory(r.id))) ?? []).filter(Self.isSolverGrid).sorted()
        struct Item: Encodable { let name: String; let url: String }
        struct List: Encodable { let items: [Item] }
        return json(200, List(items: present.map { Item(name: $0, url: "/v1/jobs/\(r.id)/images/\($0)") }))
    }

    func artifacts(_ id: String) throws(Problem) -> HTTPResponse {
        let dir = jobs.directory(id)
        let names = ((try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? []).filter { Self.artifactNames.contains($0) }.sorted()
        struct Item: Encodable { let name: String; let bytes: Int; let url: String }
        struct List: Encodable { let items: [Item] }
        let items = names.map { n -> Item in
            let size = (try? FileManager.default.attributesOfItem(atPath: jobs.jobDirectory(id).file(n))[.size] as? Int) ?? 0
            return Item(name: n, bytes: size, url: "/v1/jobs/\(id)/artifacts/\(n)")
        }
        return json(200, List(items: items))
    }

    /// Serves a job file with an ETag (`"sha256:…"` for model checkpoints, which carry a digest
    /// sidecar; modification time and size for other files), `If-None-Match`, and single byte ranges
    /// (RFC 9110 §14) so `curl -C -` resumes. Files up to 4 MiB are sent whole, larger ones streamed.
    func file(_ req: HTTPRequest, id: String, name: String, contentType: String, disposition: String? = nil,
              missingOK: Bool = false) throws(Problem) -> HTTPResponse {
        let path = jobs.jobDirectory(id).file(name)
        let fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC)
        guard fd >= 0 else {
            if missingOK { return HTTPResponse.text(200, "", contentType: contentType) }
            throw Problem(status: 404, code: "artifact_not_found", title: "Not found", detail: "job \(id) has no \(name) (yet)")
        }
        var st = stat()
        guard fstat(fd, &st) == 0, (st.st_mode & S_IFMT) == S_IFREG else {
            close(fd)
            throw Problem(status: 404, code: "artifact_not_found", title: "Not found", detail: "job \(id) has no \(name)")
        }
        let size = Int(st.st_size)
        let etag: String
        if let sidecar = try? AtomicFile.read(path: path + ".sha256", maxBytes: 200), sidecar.count >= 64, name == JobDirectory.Name.model {
            etag = "\"sha256:" + String(decoding: sidecar.prefix(64), as: UTF8.self) + "\""
        } else {
            etag = "\"\(st.st_mtim.tv_sec)-\(st.st_mtim.tv_nsec)-\(size)\""
        }
        var h = HTTPHeaders()
        h.add("Content-Type", contentType)
        h.add("ETag", etag)
        h.add("Accept-Ranges", "bytes")
        if let disposition { h.add("Content-Disposition", disposition) }
        if let inm = req.headers["If-None-Match"], inm == etag || inm == "*" {
            close(fd)
            return HTTPResponse(status: 304, headers: h)
        }
        var start = 0, end = size - 1, status = 200
        if let range = req.headers["Range"], req.headers["If-Range"].map({ $0 == etag }) ?? true {
            guard let r = Self.parseRange(range, size: size) else {
                close(fd)
                var p = HTTPResponse(status: 416, headers: h)
                p.headers.add("Content-Range", "bytes */\(size)")
                return p
            }
            (start, end, status) = (r.0, r.1, 206)
            h.add("Content-Range", "bytes \(start)-\(end)/\(size)")
        }
        let length = max(0, end - start + 1)
        let (first, last) = (start, end)
        if length <= 4 << 20 {
            var bytes = [UInt8](repeating: 0, count: length)
            let n = bytes.withUnsafeMutableBytes { pread(fd, $0.baseAddress, length, off_t(start)) }
            close(fd)
            guard n == length else { throw Problem(status: 500, code: "read_failed", title: "Read failed", detail: "could not read \(name)") }
            return HTTPResponse(status: status, headers: h, body: bytes)
        }
        h.add("X-Content-Length", String(length))
        let descriptor = fd
        return HTTPResponse(status: status, headers: h) { writer in
            defer { close(descriptor) }
            var offset = first
            var buffer = [UInt8](repeating: 0, count: 256 << 10)
            while offset <= last {
                let want = min(buffer.count, last - offset + 1)
                let n = buffer.withUnsafeMutableBytes { pread(descriptor, $0.baseAddress, want, off_t(offset)) }
                if n <= 0 { return }
                if !writer.write(Array(buffer[0..<n])) { return }
                offset += n
            }
        }
    }

    /// `bytes=a-b`, `bytes=a-`, `bytes=-n` (one range); nil when unsatisfiable or malformed.
    static func parseRange(_ header: String, size: Int) -> (Int, Int)? {
        guard header.hasPrefix("bytes="), size > 0 else { return nil }
        let spec = header.dropFirst(6)
        guard !spec.contains(","), let dash = spec.firstIndex(of: "-") else { return nil }
        let a = spec[..<dash], b = spec[spec.index(after: dash)...]
        if a.isEmpty {
            guard let n = Int(b), n > 0 else { return nil }
            return (max(0, size - n), size - 1)
        }
        guard let s = Int(a), s >= 0, s < size else { return nil }
        if b.isEmpty { return (s, size - 1) }
        guard let e = Int(b), e >= s else { return nil }
        return (s, min(e, size - 1))
    }

    // MARK: checkpoints

    struct CheckpointInfo: Encodable, Sendable {
        let id: String
        let type: String
        let bytes: Int
        let sha256: String?
        let step: Int?
        let model: ModelSpec?
        /// A RIM's architecture (its checkpoints carry no velocity-model spec).
        let rim: RIMConfig?
        let createdAt: String
        let url: String
    }

    func checkpointInfo(_ r: JobRecord) throws(Problem) -> HTTPResponse { json(200, describe(r)) }

    /// Checkpoint metadata by job id, valid while the record version and the file (inode, size,
    /// mtime) are unchanged: listing checkpoints reads and hashes no file it has seen before.
    let checkpointCache = Mutex<[String: (key: String, info: CheckpointInfo)]>([:])
    /// Checkpoint files read for their metadata (the cache's misses; tests check it).
    let checkpointReads = Atomic<Int>(0)

    func describe(_ r: JobRecord) -> CheckpointInfo {
        let path = jobs.jobDirectory(r.id).model
        var st = stat()
        let found = stat(path, &st) == 0
        let key = found ? "\(r.version):\(st.st_ino):\(st.st_size):\(st.st_mtim.tv_sec).\(st.st_mtim.tv_nsec)" : "missing"
        if let hit = checkpointCache.withLock({ $0[r.id] }), hit.key == key { return hit.info }
        checkpointReads.add(1, ordering: .relaxed)
        let size = found ? Int(st.st_size) : 0
        let sha = (try? AtomicFile.read(path: path + ".sha256", maxBytes: 200)).map { String(decoding: $0.prefix(64), as: UTF8.self) }
        let art = try? ModelArtifact.read(path: path)
        var step = art?.snapshot.step, rim: RIMConfig? = nil
        if art == nil, let snap = try? Checkpoint.read(path: path), let text = snap.metadata[RIMConfig.metadataKey] {
            step = snap.step
            rim = try? JSONDecoder().decode(RIMConfig.self, from: Data(text.utf8))
        }
        let info = CheckpointInfo(id: r.id, type: r.type, bytes: size, sha256: sha, step: step, model: art?.model, rim: rim,
                                  createdAt: r.createdAt, url: "/v1/checkpoints/\(r.id)/file")
        checkpointCache.withLock { cache in
            if cache.count >= 4096 { cache.removeAll(keepingCapacity: true) }
            cache[r.id] = (key, info)
        }
        return info
    }

    func checkpoints() throws(Problem) -> HTTPResponse {
        let page = jobs.list(states: [.succeeded], types: nil, limit: 500, after: nil)
        let items = page.items.filter { FileManager.default.fileExists(atPath: jobs.jobDirectory($0.id).model) }
        struct List: Encodable { let items: [CheckpointInfo] }
        return json(200, List(items: items.map(describe)))
    }

    /// `POST /v1/checkpoints` with a safetensors body written by reflowd (it must carry the model
    /// metadata): stored as a succeeded `upload` job whose id works as `{"job": id}` in specs.
    func upload(_ req: HTTPRequest) throws(Problem) -> HTTPResponse {
        guard !req.body.isEmpty else {
            throw Problem(status: 422, code: "invalid_checkpoint", title: "Invalid checkpoint", detail: "the body is empty; send the file with curl --data-binary @model.safetensors")
        }
        let r: JobRecord
        do { r = try jobs.importCheckpoint(bytes: req.body) } catch {
            switch error {
            case .invalid(let message):
                throw Problem(status: 422, code: "invalid_checkpoint", title: "Invalid checkpoint", detail: message)
            case .outOfSpace: throw JobService.insufficientStorage("the checkpoint")
            case .storage:
                throw Problem(status: 503, code: "storage_unavailable", title: "Storage unavailable", detail: "the checkpoint could not be stored")
            }
        }
        var resp = json(201, describe(r))
        resp.headers.add("Location", "/v1/checkpoints/\(r.id)")
        return resp
    }

    // MARK: metrics

    func renderMetrics() -> String {
        var out = ""
        out += "# HELP reflowd_build_info Build information.\n# TYPE reflowd_build_info gauge\nreflowd_build_info{version=\"\(version)\"} 1\n"
        out += BLASKernel.current.prometheus  // OpenBLAS kernel in use and whether reflowd corrected it (ReflowEngine/BLASKernel.swift)
        out += "# HELP reflowd_jobs Jobs by state.\n# TYPE reflowd_jobs gauge\n"
        let counts = jobs.counts
        for s in JobState.allCases { out += "reflowd_jobs{state=\"\(s.rawValue)\"} \(counts[s] ?? 0)\n" }
        out += "# HELP reflowd_jobs_total Jobs finished since start, by type and final state.\n# TYPE reflowd_jobs_total counter\n"
        for (k, v) in jobs.finishedCounts.sorted(by: { $0.key < $1.key }) {
            let p = k.split(separator: "|")
            out += "reflowd_jobs_total{type=\"\(p[0])\",state=\"\(p[1])\"} \(v)\n"
        }
        out += "# HELP reflowd_queue_length Jobs waiting to run.\n# TYPE reflowd_queue_length gauge\nreflowd_queue_length \(jobs.queueLength)\n"
        out += "# HELP reflowd_train_steps_total Optimizer steps run since start.\n# TYPE reflowd_train_steps_total counter\nreflowd_train_steps_total \(jobs.stepsTotal)\n"
        out += "# HELP reflowd_train_steps_per_second Steps per second of running jobs.\n# TYPE reflowd_train_steps_per_second gauge\n"
        for r in jobs.list(states: [.running, .canceling], types: nil, limit: 500, after: nil).items {
            if let rate = r.progress?.stepsPerSecond { out += "reflowd_train_steps_per_second{job=\"\(r.id)\"} \(rate)\n" }
        }
        out += "# HELP reflowd_http_connections_open Open HTTP connections.\n# TYPE reflowd_http_connections_open gauge\nreflowd_http_connections_open \(openConnections())\n"
        metrics.render(into: &out)
        metrics.renderProcess(into: &out)
        return out
    }
}
