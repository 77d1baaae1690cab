import Foundation
import Testing
import ReflowHTTP
import ReflowJobs
import ReflowCodec
import ReflowFlow
@testable import ReflowServer

/// An in-process server on an ephemeral port with its own data directory.
final class TestServer {
    let dir: String
    let jobs: JobService
    let api: API
    let http: HTTPServer
    var port: Int { http.port }

    init(token: String? = nil, queueLimit: Int = 64, dir: String? = nil, start: Bool = true,
         configure: (inout JobSettings) -> Void = { _ in }) throws {
        self.dir = dir ?? NSTemporaryDirectory() + "reflowd-api-\(UUID().uuidString)"
        var settings = JobSettings(dataDir: self.dir)
        settings.computeThreads = 1
        settings.queueLimit = queueLimit
        settings.computeNice = 0
        configure(&settings)
        jobs = try JobService(settings: settings)
        let api = API(jobs: jobs, token: token)
        self.api = api
        var config = HTTPServerConfig()
        config.port = 0
        http = try HTTPServer(config: config) { req, responder in api.handle(req, responder) }
        if start { jobs.start() }
    }

    func client() throws -> TestClient { try TestClient(port: port) }

    /// Polls until the job is terminal (or 60 s pass) and returns its JSON.
    func waitDone(_ id: String, client c: TestClient) throws -> [String: Any] {
        for _ in 0..<600 {
            let r = try c.request("GET", "/v1/jobs/\(id)?wait=5")
            let j = try r.json()
            if j["done"] as? Bool == true { return j }
        }
        throw ClientError("job \(id) did not finish")
    }

    func stop(keepFiles: Bool = false) {
        http.stopAccepting()
        http.closeAll()
        jobs.shutdown(timeout: 30)
        if !keepFiles { try? FileManager.default.removeItem(atPath: dir) }
    }
}

let tinyTrain = #"{"type": "train", "input": {"model": {"width": 16, "depth": 2}, "batchSize": 32, "steps": 60, "logEvery": 10, "previewPoints": 100}}"#

@Suite("API v1", .serialized)
struct APITests {
    @Test("health, readiness, metrics and discovery")
    func probes() throws {
        let s = try TestServer()
        defer { s.stop() }
        let c = try s.client()
        let h = try c.request("GET", "/healthz")
        #expect(h.status == 200 && h.text == #"{"status":"ok"}"# && h.header("X-Request-Id") != nil)
        #expect(try c.request("GET", "/readyz").status == 200)
        #expect(try c.request("GET", "/").json()["api"] as? String == "/v1")
        let m = try c.request("GET", "/metrics")
        #expect(m.status == 200 && m.header("Content-Type")?.hasPrefix("text/plain; version=0.0.4") == true)
        #expect(m.text.contains("reflowd_http_requests_total{method=\"GET\",route=\"/healthz\",code=\"200\"} 1"))
        #expect(m.text.contains("reflowd_jobs{state=\"queued\"} 0") && m.text.contains("process_open_fds"))
        let head = try c.request("HEAD", "/healthz")
        #expect(head.status == 200 && head.header("Content-Length") == "15" && head.body.isEmpty)
    }

    @Test("errors are problem+json with a stable code: 404, 405 + Allow, 400 malformed, 422 with the pointer, 415")
    func errors() throws {
        let s = try TestServer()
        defer { s.stop() }
        let c = try s.client()
        let nf = try c.request("GET", "/v1/nope")
        #expect(nf.status == 404 && nf.header("Content-Type") == "application/problem+json")
        #expect(try nf.json()["code"] as? String == "not_found")
        let na = try c.request("PUT", "/v1/jobs")
        #expect(na.status == 405 && na.header("Allow") == "GET, POST")
        let bad = try c.json("POST", "/v1/jobs", "{nope")
        #expect(try bad.status == 400 && (bad.json()["code"] as? String) == "malformed_json")
        let invalid = try c.json("POST", "/v1/jobs", #"{"type": "train", "input": {"steps": 0}}"#)
        let body = try invalid.json()
        #expect(invalid.status == 422 && body["code"] as? String == "validation_failed" && body["pointer"] as? String == "/input/steps")
        let unknown = try c.json("POST", "/v1/jobs", #"{"type": "train", "input": {"learningrate": 1}}"#)
        #expect(try unknown.json()["pointer"] as? String == "/input/learningrate")
        let ref = try c.json("POST", "/v1/jobs", #"{"type": "sample", "input": {"model": {"job": "job_00000000000000000000000000"}}}"#)
        #expect(try ref.status == 422 && (ref.json()["pointer"] as? String) == "/input/model/job")
        let path = try c.json("POST", "/v1/jobs", #"{"type": "sample", "input": {"model": {"path": "/etc/passwd"}}}"#)
        #expect(try path.status == 422 && (path.json()["pointer"] as? String) == "/input/model/path")
        let media = try c.request("POST", "/v1/jobs", headers: [("Content-Type", "text/plain")], body: Array(tinyTrain.utf8))
        #expect(media.status == 415)
        #expect(try c.request("GET", "/v1/jobs/../../etc/passwd").status == 404)
        #expect(try c.request("GET", "/v1/jobs/job_%2e%2e").status == 404)
        #expect(try c.request("GET", "/v1/jobs?limit=0").status == 400)
        #expect(try c.request("GET", "/v1/jobs?=").status == 400)
        #expect(try c.request("GET", "/v1/jobs?&&").status == 200)
        #expect(try c.request("GET", "/v1/jobs?cursor=x").status == 400)
        // Deeply nested and oversized bodies are refused and the server stays up.
        let deep = String(repeating: "[", count: 100_000) + String(repeating: "]", count: 100_000)
        #expect(try [400, 422].contains(c.json("POST", "/v1/jobs", deep).status))
        #expect(try c.request("GET", "/healthz").status == 200)
    }

    @Test("the audit's regressions: strict JSON (trailing comma, duplicate key) is 400 and nothing is queued; the memory budget refuses an oversized spec with its estimate")
    func auditRegressions() throws {
        let s = try TestServer { $0.memoryBudgetBytes = 1 << 30 }
        defer { s.stop() }
        let c = try s.client()
        for body in [#"{"type": "train", "input": {"steps": 5,}}"#, #"{"type": "train", "input": {"steps": 5, "steps": 9999999}}"#] {
            let r = try c.json("POST", "/v1/jobs", body)
            #expect(try r.status == 400 && r.json()["code"] as? String == "malformed_json", "\(body)")
        }
        let huge = try c.json("POST", "/v1/jobs", #"{"type":"train","input":{"steps":10,"model":{"width":16384,"depth":64},"batchSize":1048576}}"#)
        let p = try huge.json()
        #expect(huge.status == 422 && p["code"] as? String == "memory_budget", "\(p)")
        #expect((p["estimateBytes"] as? Int ?? 0) > (p["budgetBytes"] as? Int ?? Int.max) && p["budgetBytes"] as? Int == 1 << 30)
        #expect((p["estimate"] as? [[String: Any]])?.isEmpty == false)
        #expect(try c.request("GET", "/v1/jobs").json()["items"] as? [Any] == nil
                || (try c.request("GET", "/v1/jobs").json()["items"] as? [Any])?.isEmpty == true, "nothing was queued")
        // A small job fits the same budget.
        #expect(try c.json("POST", "/v1/jobs", tinyTrain).status == 202)
    }

    @Test("a train job runs to success: 202 + Location, progress, long poll, artifacts, images, logs, events, delete")
    func trainLifecycle() throws {
        let s = try TestServer()
        defer { s.stop() }
        let c = try s.client()
        let post = try c.json("POST", "/v1/jobs", tinyTrain)
        #expect(post.status == 202)
        let job = try post.json()
        let id = try #require(job["id"] as? String)
        #expect(post.header("Location") == "/v1/jobs/\(id)")
        #expect((job["input"] as? [String: Any])?["learningRate"] != nil, "input echoes the defaults")
        #expect(["queued", "running"].contains(job["state"] as? String))
        let done = try s.waitDone(id, client: c)
        #expect(done["state"] as? String == "succeeded")
        let progress = try #require(done["progress"] as? [String: Any])
        #expect(progress["step"] as? Int == 60 && progress["total"] as? Int == 60)
        let transitions = (done["transitions"] as? [[String: Any]])?.compactMap { $0["state"] as? String }
        #expect(transitions == ["queued", "running", "succeeded"])
        // ETag / 304.
        let get = try c.request("GET", "/v1/jobs/\(id)")
        let etag = try #require(get.header("ETag"))
        #expect(try c.request("GET", "/v1/jobs/\(id)", headers: [("If-None-Match", etag)]).status == 304)
        // Artifacts with ETag and ranges.
        let list = try c.request("GET", "/v1/jobs/\(id)/artifacts").json()
        let names = (list["items"] as? [[String: Any]])?.compactMap { $0["name"] as? String } ?? []
        #expect(names.contains("model.safetensors") && names.contains("loss.csv"))
        let model = try c.request("GET", "/v1/jobs/\(id)/artifacts/model.safetensors")
        #expect(model.status == 200 && model.header("ETag")?.hasPrefix("\"sha256:") == true)
        let part = try c.request("GET", "/v1/jobs/\(id)/artifacts/model.safetensors", headers: [("Range", "bytes=10-19")])
        #expect(part.status == 206 && part.body == Array(model.body[10...19]) && part.header("Content-Range") == "bytes 10-19/\(model.body.count)")
        #expect(try c.request("GET", "/v1/jobs/\(id)/artifacts/model.safetensors", headers: [("Range", "bytes=999999999-")]).status == 416)
        #expect(try c.request("GET", "/v1/jobs/\(id)/artifacts/model.safetensors", headers: [("If-None-Match", model.header("ETag")!)]).status == 304)
        #expect(try c.request("GET", "/v1/jobs/\(id)/artifacts/..%2fjob.json").status == 404)
        let png = try c.request("GET", "/v1/jobs/\(id)/images/grid.png")
        #expect(png.status == 200 && png.header("Content-Type") == "image/png" && png.body.prefix(4) == [0x89, 0x50, 0x4e, 0x47])
        #expect(try c.request("GET", "/v1/jobs/\(id)/images").json()["items"] != nil)
        let logs = try c.request("GET", "/v1/jobs/\(id)/logs")
        #expect(logs.text.contains("running") && logs.text.contains("succeeded"))
        // SSE replays the history and ends with `completed`.
        let events = try c.request("GET", "/v1/jobs/\(id)/events", headers: [("Accept", "text/event-stream")])
        #expect(events.header("Content-Type") == "text/event-stream")
        #expect(events.text.contains("event: status") && events.text.contains("event: completed"))
        let ids = events.text.split(separator: "\n").filter { $0.hasPrefix("id: ") }.compactMap { Int($0.dropFirst(4)) }
        #expect(ids.count >= 4 && ids == ids.sorted() && Set(ids).count == ids.count)
        let resumed = try c.request("GET", "/v1/jobs/\(id)/events", headers: [("Last-Event-ID", String(ids[2]))])
        #expect(!resumed.text.contains("id: \(ids[0])\n") && !resumed.text.contains("id: \(ids[2])\n"))
        #expect(resumed.text.contains("id: \(ids[3])\n") && resumed.text.contains("event: completed"))
        let headEvents = try c.request("HEAD", "/v1/jobs/\(id)/events")
        #expect(headEvents.status == 200 && headEvents.header("Content-Type") == "text/event-stream")
        // Checkpoints.
        let ckpts = try c.request("GET", "/v1/checkpoints").json()
        #expect(((ckpts["items"] as? [[String: Any]]) ?? []).contains { $0["id"] as? String == id })
        let info = try c.request("GET", "/v1/checkpoints/\(id)").json()
        #expect(info["step"] as? Int == 60 && (info["sha256"] as? String)?.count == 64)
        let file = try c.request("GET", "/v1/checkpoints/\(id)/file")
        #expect(file.body == model.body)
        // Upload it back: a new id usable as a model reference.
        let up = try c.request("POST", "/v1/checkpoints", headers: [("Content-Type", "application/octet-stream")], body: file.body)
        #expect(up.status == 201)
        let upID = try #require(try up.json()["id"] as? String)
        let sample = try c.json("POST", "/v1/jobs", #"{"type": "sample", "input": {"model": {"job": "\#(upID)"}, "n": 50, "solver": {"kind": "euler", "steps": 4}, "trajectories": 10}}"#,
                                headers: [("Prefer", "wait=30")])
        #expect(try sample.status == 200 && (sample.json()["state"] as? String) == "succeeded")
        #expect(try c.request("POST", "/v1/checkpoints", headers: [("Content-Type", "application/octet-stream")], body: Array("junk".utf8)).status == 422)
        // Delete.
        #expect(try c.request("DELETE", "/v1/jobs/\(id)").status == 204)
        #expect(try c.request("GET", "/v1/jobs/\(id)").status == 404)
        #expect(!FileManager.default.fileExists(atPath: s.dir + "/jobs/\(id)"))
    }

    @Test("class labels over HTTP: a conditional model samples per class; bad labels and guidance are 422 problem+json with the pointer")
    func conditionalLabels() throws {
        let s = try TestServer()
        defer { s.stop() }
        let c = try s.client()
        let train = try c.json("POST", "/v1/jobs", #"{"type": "train", "input": {"model": {"width": 16, "depth": 2, "classes": 3}, "data": {"kind": "threeGaussians"}, "batchSize": 32, "steps": 30, "previewPoints": 0}}"#)
        #expect(train.status == 202)
        let id = try #require(try train.json()["id"] as? String)
        #expect(try s.waitDone(id, client: c)["state"] as? String == "succeeded")
        let ok = try c.json("POST", "/v1/jobs", #"{"type": "sample", "input": {"model": {"job": "\#(id)"}, "perClass": 4, "guidance": 2, "trajectories": 0}}"#)
        let echoed = try ok.json()["input"] as? [String: Any]
        #expect(ok.status == 202 && echoed?["n"] as? Int == 12, "perClass × classes")
        let sid = try #require(try ok.json()["id"] as? String)
        #expect(try s.waitDone(sid, client: c)["state"] as? String == "succeeded")
        #expect(try c.request("GET", "/v1/jobs/\(sid)/artifacts/labels.npy").status == 200)
        for (body, pointer) in [
            (#"{"type": "sample", "input": {"model": {"job": "\#(id)"}, "labels": [0, 3]}}"#, "/input/labels/1"),
            (#"{"type": "sample", "input": {"model": {"job": "\#(id)"}, "labels": [0], "perClass": 1}}"#, "/input/perClass"),
            (#"{"type": "train", "input": {"model": {"classes": 3}, "data": {"kind": "normal"}}}"#, "/input/model/classes"),
        ] {
            let r = try c.json("POST", "/v1/jobs", body)
            #expect(r.status == 422 && r.header("Content-Type") == "application/problem+json")
            #expect(try r.json()["pointer"] as? String == pointer)
        }
        // An unconditional model takes no labels and no guidance.
        let plain = try c.json("POST", "/v1/jobs", tinyTrain)
        let pid = try #require(try plain.json()["id"] as? String)
        _ = try s.waitDone(pid, client: c)
        for (key, value) in [("labels", "[0]"), ("guidance", "2")] {
            let r = try c.json("POST", "/v1/jobs", #"{"type": "sample", "input": {"model": {"job": "\#(pid)"}, "\#(key)": \#(value)}}"#)
            #expect(try r.status == 422 && r.json()["pointer"] as? String == "/input/\(key)")
        }
    }

    @Test("image uploads to invert and edit: a malformed or mis-sized PNG is a 422 with its pointer and no job; a good one is edited and served")
    func imageUploads() throws {
        let s = try TestServer()
        defer { s.stop() }
        let c = try s.client()
        let model = #"{"kind": "unet", "channels": [4, 8], "blocksPerLevel": 1, "groups": 2, "timeFeatures": 8, "timeEmbedding": 16, "attentionResolutions": [14], "classes": 10}"#
        let train = try c.json("POST", "/v1/jobs", #"{"type": "train", "input": {"model": \#(model), "data": {"kind": "images", "dataset": "builtin:shapes", "limit": 64}, "batchSize": 4, "steps": 2, "previewPoints": 0}}"#)
        let id = try #require(try train.json()["id"] as? String)
        #expect(try s.waitDone(id, client: c)["state"] as? String == "succeeded")
        func png(_ side: Int) throws -> String {
            Data(try PNG.encodeGray(width: side, height: side, pixels: [UInt8](repeating: 128, count: side * side))).base64EncodedString()
        }
        let jobsBefore = try (c.request("GET", "/v1/jobs").json()["items"] as? [Any])?.count
        for (kind, images, message) in [("invert", "[\"bm90IGEgcG5n\"]", "PNG"), ("edit", "[\"\(try png(16))\"]", "16×16"), ("edit", "[\"%%\"]", "base64")] {
            let target = kind == "edit" ? #", "targetLabels": [1]"# : ""
            let r = try c.json("POST", "/v1/jobs", #"{"type": "\#(kind)", "input": {"model": {"job": "\#(id)"}, "images": {"png": \#(images)}\#(target)}}"#)
            #expect(r.status == 422 && r.header("Content-Type") == "application/problem+json", "\(kind)")
            let body = try r.json()
            #expect(body["pointer"] as? String == "/input/images/png/0" && (body["detail"] as? String ?? "").contains(message), "\(body)")
        }
        #expect(try (c.request("GET", "/v1/jobs").json()["items"] as? [Any])?.count == jobsBefore, "refused uploads create no job")
        let edit = try c.json("POST", "/v1/jobs", #"{"type": "edit", "input": {"model": {"job": "\#(id)"}, "images": {"png": ["\#(try png(28))"]}, "sourceLabels": [0], "targetLabels": [1], "solver": {"kind": "rfSolver2", "steps": 2}, "inject": 1}}"#)
        #expect(edit.status == 202)
        let eid = try #require(try edit.json()["id"] as? String)
        #expect(try s.waitDone(eid, client: c)["state"] as? String == "succeeded")
        #expect(try c.request("GET", "/v1/jobs/\(eid)/images/edited.png").status == 200)
        #expect(try c.request("GET", "/v1/jobs/\(eid)/artifacts/edited.npy").status == 200)
    }

    @Test("k-space uploads to reconstruct: wrong dtype, bad shape and NaN are 422s with the reason and no job; a good upload is reconstructed and served")
    func kspaceUploads() throws {
        let s = try TestServer()
        defer { s.stop() }
        let c = try s.client()
        func b64(_ a: NPYArray) -> String { Data(a.bytes()).base64EncodedString() }
        var nan = [Float](repeating: 0.5, count: 2 * 256)
        nan[9] = .nan
        let cases: [(NPYArray, String)] = [
            (NPYArray(dtype: .float32, shape: [16, 16], values: [Float](repeating: 1, count: 256)), "'<f4' is not accepted"),
            (NPYArray(dtype: .complex64, shape: [2, 1, 16, 16], values: [Float](repeating: 1, count: 1024)), "[H, W] or [n, H, W]"),
            (NPYArray(dtype: .complex64, shape: [16, 16], values: nan), "element 4 (imaginary part): non-finite"),
        ]
        let jobsBefore = try (c.request("GET", "/v1/jobs").json()["items"] as? [Any])?.count
        for (array, message) in cases {
            let r = try c.json("POST", "/v1/jobs", #"{"type": "reconstruct", "input": {"method": {"kind": "zeroFilled"}, "kspace": "\#(b64(array))"}}"#)
            #expect(r.status == 422 && r.header("Content-Type") == "application/problem+json")
            let body = try r.json()
            #expect(body["pointer"] as? String == "/input/kspace" && (body["detail"] as? String ?? "").contains(message), "\(body)")
        }
        #expect(try (c.request("GET", "/v1/jobs").json()["items"] as? [Any])?.count == jobsBefore, "refused uploads create no job")
        let good = NPYArray(dtype: .complex64, shape: [16, 16], values: (0..<512).map { Float($0 % 7) - 3 })
        let r = try c.json("POST", "/v1/jobs", #"{"type": "reconstruct", "input": {"method": {"kind": "cs", "iterations": 5}, "kspace": "\#(b64(good))"}}"#)
        #expect(r.status == 202)
        let id = try #require(try r.json()["id"] as? String)
        #expect(try s.waitDone(id, client: c)["state"] as? String == "succeeded")
        #expect(try c.request("GET", "/v1/jobs/\(id)/images/reconstructed.png").status == 200)
        let npy = try c.request("GET", "/v1/jobs/\(id)/artifacts/reconstructed.npy")
        #expect(npy.status == 200 && (try? NPYArray.parse(npy.body, name: "r"))?.shape == [1, 16, 16])
    }

    @Test("cancel: a queued job is canceled at once, a running one goes through canceling; terminal jobs refuse")
    func cancel() throws {
        let s = try TestServer()
        defer { s.stop() }
        let c = try s.client()
        let long = #"{"type": "train", "input": {"model": {"width": 16, "depth": 2}, "batchSize": 32, "steps": 10000000, "logEvery": 10, "checkpointEvery": 100}}"#
        let a = try #require(try c.json("POST", "/v1/jobs", long).json()["id"] as? String)
        let b = try #require(try c.json("POST", "/v1/jobs", long).json()["id"] as? String)
        // b is first in the queue once a has left it (a busy machine may take a moment to start a).
        for _ in 0..<500 where (try c.request("GET", "/v1/jobs/\(a)").json()["state"] as? String) == "queued" { usleep(20_000) }
        let queued = try c.request("GET", "/v1/jobs/\(b)").json()
        #expect(queued["state"] as? String == "queued" && queued["queuePosition"] as? Int == 0)
        let cb = try c.request("POST", "/v1/jobs/\(b)/cancel")
        #expect(try cb.status == 202 && (cb.json()["state"] as? String) == "canceled")
        #expect(try c.request("POST", "/v1/jobs/\(b)/cancel").status == 200)
        // Wait until a is running, then cancel it.
        for _ in 0..<200 where (try c.request("GET", "/v1/jobs/\(a)").json()["state"] as? String) != "running" { usleep(20_000) }
        #expect(try c.request("DELETE", "/v1/jobs/\(a)").status == 409)
        let ca = try c.request("POST", "/v1/jobs/\(a)/cancel")
        #expect(try ca.status == 202 && (ca.json()["state"] as? String) == "canceling")
        let done = try s.waitDone(a, client: c)
        #expect(done["state"] as? String == "canceled")
        #expect(try c.request("POST", "/v1/jobs/\(a)/cancel").status == 200)
        // Filters and pagination.
        let page = try c.request("GET", "/v1/jobs?limit=1").json()
        let next = try #require(page["nextCursor"] as? String)
        let rest = try c.request("GET", "/v1/jobs?limit=1&cursor=\(next)").json()
        #expect(((rest["items"] as? [[String: Any]])?.first?["id"] as? String) == a)
        #expect(try ((c.request("GET", "/v1/jobs?state=canceled").json()["items"] as? [Any])?.count) == 2)
        #expect(try ((c.request("GET", "/v1/jobs?state=succeeded").json()["items"] as? [Any])?.count) == 0)
    }

    @Test("Idempotency-Key replays the same job; another body with the key is 422; a full queue is 429 + Retry-After")
    func idempotencyAndQueue() throws {
        let s = try TestServer(queueLimit: 1, start: false)
        defer { s.stop() }
        let c = try s.client()
        let first = try c.json("POST", "/v1/jobs", tinyTrain, headers: [("Idempotency-Key", "abc")])
        let again = try c.json("POST", "/v1/jobs", tinyTrain, headers: [("Idempotency-Key", "abc")])
        #expect(first.status == 202 && again.header("Idempotent-Replayed") == "true")
        #expect(try first.json()["id"] as? String == again.json()["id"] as? String)
        let other = try c.json("POST", "/v1/jobs", tinyTrain.replacingOccurrences(of: "60", with: "61"), headers: [("Idempotency-Key", "abc")])
        #expect(try other.status == 422 && (other.json()["code"] as? String) == "idempotency_mismatch")
        let full = try c.json("POST", "/v1/jobs", tinyTrain)
        #expect(full.status == 429 && full.header("Retry-After") != nil)
    }

    @Test("a replay is answered with the first job even when the spec would be refused now (its reference was deleted)")
    func replayAfterDeletedReference() throws {
        let s = try TestServer()
        defer { s.stop() }
        let c = try s.client()
        let teacher = try #require(try c.json("POST", "/v1/jobs", tinyTrain).json()["id"] as? String)
        _ = try s.waitDone(teacher, client: c)
        let sample = #"{"type": "sample", "input": {"model": {"job": "\#(teacher)"}, "n": 50, "trajectories": 0}}"#
        let first = try c.json("POST", "/v1/jobs", sample, headers: [("Idempotency-Key", "k1")])
        #expect(first.status == 202)
        let id = try #require(try first.json()["id"] as? String)
        _ = try s.waitDone(id, client: c)
        #expect(try c.request("DELETE", "/v1/jobs/\(teacher)").status == 204)
        let fresh = try c.json("POST", "/v1/jobs", sample)
        #expect(fresh.status == 422, "without the key the spec is checked again and its model is gone")
        let again = try c.json("POST", "/v1/jobs", sample, headers: [("Idempotency-Key", "k1")])
        let replayedID = try again.json()["id"] as? String
        #expect(again.header("Idempotent-Replayed") == "true" && replayedID == id)
    }

    @Test("bearer auth: 401 without or with a wrong token; health stays open")
    func auth() throws {
        let s = try TestServer(token: "s3cret")
        defer { s.stop() }
        let c = try s.client()
        let r = try c.request("GET", "/v1/jobs")
        #expect(r.status == 401 && r.header("WWW-Authenticate") != nil)
        #expect(try c.request("GET", "/v1/jobs", headers: [("Authorization", "Bearer nope")]).status == 401)
        #expect(try c.request("GET", "/v1/jobs", headers: [("Authorization", "Bearer s3cret")]).status == 200)
        #expect(try c.request("GET", "/healthz").status == 200)
    }

    @Test("a chain over the API: train → reflow (RK45 pairs) → distill → evaluate")
    func chain() throws {
        let s = try TestServer()
        defer { s.stop() }
        let c = try s.client()
        let t = try #require(try c.json("POST", "/v1/jobs", tinyTrain).json()["id"] as? String)
        #expect(try s.waitDone(t, client: c)["state"] as? String == "succeeded")
        let r = try #require(try c.json("POST", "/v1/jobs", #"{"type": "reflow", "input": {"teacher": {"job": "\#(t)"}, "pairs": 300, "steps": 40, "batchSize": 32, "previewPoints": 0}}"#).json()["id"] as? String)
        let rj = try s.waitDone(r, client: c)
        #expect(rj["state"] as? String == "succeeded", "\(rj)")
        let d = try #require(try c.json("POST", "/v1/jobs", #"{"type": "distill", "input": {"teacher": {"job": "\#(r)"}, "pairsFrom": {"job": "\#(r)"}, "steps": 20, "batchSize": 32, "previewPoints": 0}}"#).json()["id"] as? String)
        #expect(try s.waitDone(d, client: c)["state"] as? String == "succeeded")
        let e = try c.json("POST", "/v1/jobs", #"{"type": "evaluate", "input": {"model": {"job": "\#(d)"}, "n": 200, "solvers": [{"kind": "euler", "steps": 1}]}}"#,
                           headers: [("Prefer", "wait=60")])
        let ej = try e.json()
        #expect(e.status == 200 && ej["state"] as? String == "succeeded")
        #expect(((ej["result"] as? [String: Any])?["evaluation"] as? [String: Any])?["straightness"] != nil)
    }

    @Test("restart: a job found running is requeued and resumes; an unreadable record refuses to start")
    func restart() throws {
        let dir = NSTemporaryDirectory() + "reflowd-restart-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let s1 = try TestServer(dir: dir)
        let c = try s1.client()
        let spec = #"{"type": "train", "input": {"model": {"width": 16, "depth": 2}, "batchSize": 32, "steps": 400, "logEvery": 10, "checkpointEvery": 50, "previewPoints": 0}}"#
        let id = try #require(try c.json("POST", "/v1/jobs", spec).json()["id"] as? String)
        for _ in 0..<500 {
            let p = try c.request("GET", "/v1/jobs/\(id)").json()["progress"] as? [String: Any]
            if (p?["step"] as? Int ?? 0) >= 100 { break }
            usleep(10_000)
        }
        // A graceful stop checkpoints and requeues.
        s1.http.stopAccepting()
        s1.http.closeAll()
        #expect(s1.jobs.shutdown(timeout: 30))
        let stored = try JSONDecoder().decode(JobRecord.self, from: Data(contentsOf: URL(fileURLWithPath: dir + "/jobs/\(id)/job.json")))
        #expect(stored.state == .queued && stored.attempts == 0)
        let s2 = try TestServer(dir: dir)
        let c2 = try s2.client()
        let done = try s2.waitDone(id, client: c2)
        #expect(done["state"] as? String == "succeeded")
        let result = try #require(done["result"] as? [String: Any])
        #expect(((result["training"] as? [String: Any])?["resumedFromStep"] as? Int ?? 0) >= 50)
        s2.http.stopAccepting(); s2.http.closeAll(); s2.jobs.shutdown(timeout: 10)
        // Corrupt a record: the store refuses to open.
        try Data("{garbage".utf8).write(to: URL(fileURLWithPath: dir + "/jobs/\(id)/job.json"))
        #expect(throws: ServerStartError.self) { _ = try JobService(settings: JobSettings(dataDir: dir)) }
    }

    @Test("state machine: terminal states never move; allowed transitions only")
    func stateMachine() {
        for s in JobState.allCases where s.isTerminal {
            #expect(JobState.allCases.allSatisfy { !s.canMove(to: $0) })
        }
        #expect(JobState.queued.canMove(to: .running) && !JobState.queued.canMove(to: .succeeded))
        #expect(JobState.running.canMove(to: .canceling) && !JobState.canceling.canMove(to: .running))
        #expect(Identifiers.isJobID(Identifiers.newJobID()) && !Identifiers.isJobID("job_../../etc"))
        let a = Identifiers.newJobID()
        usleep(2000)
        #expect(a < Identifiers.newJobID(), "ids sort by creation time")
    }
}
