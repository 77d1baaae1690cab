import Foundation
import Testing
import Glibc
import Synchronization
import ReflowJobs
import ReflowStore
@testable import ReflowServer

/// Whether this process may mount a tmpfs (root in a sandbox that allows mounts).
let canMountTmpfs: Bool = {
    guard geteuid() == 0 else { return false }
    let dir = NSTemporaryDirectory() + "reflowd-mountprobe-\(getpid())"
    mkdir(dir, 0o700)
    defer { rmdir(dir) }
    guard mount("tmpfs", dir, "tmpfs", 0, "size=64k") == 0 else { return false }
    umount(dir)
    return true
}()

/// A 4 MiB tmpfs, unmounted by `close()`.
final class SmallFilesystem {
    let path: String
    init(bytes: Int = 4 << 20) throws {
        path = NSTemporaryDirectory() + "reflowd-small-\(UUID().uuidString)"
        guard mkdir(path, 0o700) == 0, mount("tmpfs", path, "tmpfs", 0, "size=\(bytes)") == 0 else {
            throw ClientError("mount tmpfs on \(path): errno \(errno)")
        }
    }
    func free() -> Int {
        var s = statvfs()
        statvfs(path, &s)
        return Int(s.f_bavail) * Int(s.f_frsize)
    }
    /// Allocates a filler file leaving about `leave` bytes free (0: fills every block).
    func fill(leaving leave: Int, name: String = "filler") {
        let fd = open(path + "/" + name, O_WRONLY | O_CREAT | O_APPEND, 0o600)
        defer { Glibc.close(fd) }
        let want = free() - leave
        if want > 0 { _ = posix_fallocate(fd, lseek(fd, 0, SEEK_END), off_t(want)) }
        if leave == 0 {
            var chunk = [UInt8](repeating: 1, count: 4096)
            while chunk.withUnsafeMutableBytes({ write(fd, $0.baseAddress, $0.count) }) > 0 {}
        }
    }
    func unfill(name: String = "filler") { unlink(path + "/" + name) }
    func close() {
        umount2(path, Int32(MNT_DETACH))
        rmdir(path)
    }
}

/// Writes records with AtomicFile, or fails with the next queued errno.
final class FlakyWriter: Sendable {
    let failures = Mutex<[Int32]>([])
    let always = Atomic<Int32>(0)
    func fail(_ errnos: Int32...) { failures.withLock { $0 += errnos } }
    var writer: RecordWriter {
        { [self] bytes, path in
            let e = failures.withLock { $0.isEmpty ? always.load(ordering: .relaxed) : $0.removeFirst() }
            if e != 0 { throw StoreError(call: "write", errno: e, message: String(cString: strerror(e)), path: path + ".tmp-1-ab") }
            try AtomicFile.write(bytes, to: path)
        }
    }
}

let smallTrain = #"{"type": "train", "input": {"model": {"width": 16, "depth": 2}, "batchSize": 32, "steps": 20, "logEvery": 10, "previewPoints": 0}}"#

func storedRecord(_ dir: String, _ id: String) throws -> JobRecord {
    try JSONDecoder().decode(JobRecord.self, from: Data(contentsOf: URL(fileURLWithPath: dir + "/jobs/\(id)/job.json")))
}

@Suite("Storage: disk full, leftovers, paths", .serialized)
struct StorageTests {
    @Test("a record write that fails with ENOSPC releases the reserve and succeeds; still full: kept in memory and written later; EIO is fatal")
    func recordWriteOutOfSpace() throws {
        let dir = NSTemporaryDirectory() + "reflowd-enospc-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let flaky = FlakyWriter()
        let fatal = Mutex<[String]>([])
        var settings = JobSettings(dataDir: dir)
        settings.minFreeBytes = 0
        settings.reserveBytes = 64 << 10
        let jobs = try JobService(settings: settings, writer: flaky.writer, onFatal: { m in fatal.withLock { $0.append(m) } })
        #expect(jobs.storage.hasReserve)
        let spec = try SpecParser.parse(Array(smallTrain.utf8))
        func submit() throws -> String {
            guard case .created(let r) = try jobs.submit(spec, idempotencyKey: nil, requestDigest: UUID().uuidString) else { throw ClientError("not created") }
            return r.id
        }
        // 1. One ENOSPC: the reserve goes, the retry writes the record.
        let a = try submit()
        flaky.fail(ENOSPC)
        if case .canceled = jobs.cancel(a) {} else { Issue.record("not canceled") }
        #expect(try storedRecord(dir, a).state == .canceled)
        #expect(!jobs.storage.hasReserve && jobs.unsavedCount == 0)
        jobs.maintainStorage()
        #expect(jobs.storage.hasReserve, "the reserve comes back once there is space")
        // 2. Full even after the reserve: the process stays up, the record waits in memory.
        let b = try submit()
        flaky.always.store(ENOSPC, ordering: .relaxed)
        _ = jobs.cancel(b)
        #expect(jobs.record(b)?.state == .canceled && jobs.unsavedCount == 1)
        #expect(try storedRecord(dir, b).state == .queued)
        jobs.maintainStorage()
        #expect(jobs.unsavedCount == 1)
        flaky.always.store(0, ordering: .relaxed)
        jobs.maintainStorage()
        #expect(try jobs.unsavedCount == 0 && (try storedRecord(dir, b).state) == .canceled)
        // A submission that cannot be stored for lack of space is 507 and leaves nothing behind.
        flaky.fail(ENOSPC, ENOSPC)
        jobs.storage.releaseReserve()
        #expect(throws: Problem.self) { _ = try submit() }
        do { _ = try submit(); Issue.record("stored on a full disk") } catch let e as Problem { #expect(e.status == 507 && e.code == "insufficient_storage") }
        #expect(fatal.withLock { $0.isEmpty })
        // 3. EIO means the store is broken: fatal.
        let c = try submit()
        flaky.fail(EIO)
        _ = jobs.cancel(c)
        #expect(fatal.withLock { $0.count == 1 && $0[0].contains(c) })
    }

    @Test("startup removes temporary files left by kill -9; every job directory holds its canonical spec.json")
    func leftoversAndSpec() throws {
        let s = try TestServer(start: false)
        defer { s.stop() }
        let c = try s.client()
        let r = try c.json("POST", "/v1/jobs", smallTrain)
        #expect(r.status == 202)
        let id = try #require(try r.json()["id"] as? String)
        let jobDir = s.dir + "/jobs/" + id
        let spec = try SpecParser.parse(Array(smallTrain.utf8))
        #expect(FileManager.default.contents(atPath: jobDir + "/spec.json").map(Array.init) == SpecParser.canonicalJSON(spec))
        let stray = [jobDir + "/.job.json.tmp-4242-9fa0", jobDir + "/.checkpoint.safetensors.tmp-17-ab12", s.dir + "/upload-1234.safetensors"]
        for p in stray { #expect(FileManager.default.createFile(atPath: p, contents: Data("x".utf8))) }
        let reopened = try JobService(settings: JobSettings(dataDir: s.dir))
        for p in stray { #expect(!FileManager.default.fileExists(atPath: p), "\(p) survived the restart") }
        #expect(reopened.record(id)?.state == .queued)
        #expect(FileManager.default.fileExists(atPath: jobDir + "/spec.json") && FileManager.default.fileExists(atPath: jobDir + "/job.json"))
    }

    @Test("no error a client sees names a server path")
    func noPathsInErrors() throws {
        let s = try TestServer()
        defer { s.stop() }
        let c = try s.client()
        var bodies = [String]()
        // A trained model, then its file corrupted on disk: referencing it fails in validation.
        let trained = try #require(try c.json("POST", "/v1/jobs", smallTrain).json()["id"] as? String)
        #expect(try s.waitDone(trained, client: c)["state"] as? String == "succeeded")
        try Data("not a checkpoint".utf8).write(to: URL(fileURLWithPath: s.dir + "/jobs/\(trained)/model.safetensors"))
        let responses = [
            try c.request("POST", "/v1/checkpoints", body: Array("garbage, not safetensors".utf8)),
            try c.request("POST", "/v1/checkpoints", body: [UInt8](repeating: 0, count: 64)),
            try c.request("POST", "/v1/checkpoints"),
            try c.json("POST", "/v1/jobs", #"{"type": "sample", "input": {"model": {"job": "\#(trained)"}, "n": 10}}"#),
            try c.json("POST", "/v1/jobs", #"{"type": "sample", "input": {"model": {"path": "\#(s.dir)/jobs/\#(trained)/model.safetensors"}}}"#),
            try c.request("GET", "/v1/jobs/\(trained)/artifacts/samples.npy"),
        ]
        for r in responses {
            #expect(r.status >= 400, "\(r.status) \(r.text)")
            bodies.append(r.text)
        }
        #expect(responses[0].status == 422 && responses[3].status == 422)
        bodies.append(try c.request("GET", "/v1/jobs").text)
        for b in bodies { #expect(!b.contains(s.dir) && !b.contains(".tmp-"), "a response shows a path: \(b.prefix(400))") }
        // Job failures are redacted as well (a storage error of the run names the artifact only).
        let f = s.jobs.failure(for: StoreError(call: "write", errno: ENOSPC, message: "No space left on device",
                                               path: s.dir + "/jobs/\(trained)/.checkpoint.safetensors.tmp-12-9af0"))
        #expect(f.code == "io_error" && f.message.contains("checkpoint.safetensors") && f.message.contains("disk full") && !f.message.contains(s.dir) && !f.message.contains(".tmp-"))
        let g = s.jobs.failure(for: JobError.invalidInput("\(s.dir)/jobs/\(trained)/model.safetensors is not a checkpoint"))
        #expect(g.code == "invalid_input" && g.message == "\(trained)/model.safetensors is not a checkpoint")
    }

    @Test("GET /v1/checkpoints reads each checkpoint once; a changed file is read again")
    func checkpointCache() throws {
        let s = try TestServer()
        defer { s.stop() }
        let c = try s.client()
        let id = try #require(try c.json("POST", "/v1/jobs", smallTrain).json()["id"] as? String)
        #expect(try s.waitDone(id, client: c)["state"] as? String == "succeeded")
        let first = try c.request("GET", "/v1/checkpoints")
        #expect(first.status == 200 && first.text.contains(id))
        let reads = s.api.checkpointReads.load(ordering: .relaxed)
        #expect(reads == 1)
        let second = try c.request("GET", "/v1/checkpoints")
        #expect(second.text == first.text)
        #expect(try c.request("GET", "/v1/checkpoints/\(id)").status == 200)
        #expect(s.api.checkpointReads.load(ordering: .relaxed) == reads, "cached: no file read again")
        // Replacing the file (a new inode) invalidates the entry.
        let path = s.dir + "/jobs/\(id)/model.safetensors"
        try AtomicFile.write(try AtomicFile.read(path: path, maxBytes: 1 << 30), to: path)
        _ = try c.request("GET", "/v1/checkpoints")
        #expect(s.api.checkpointReads.load(ordering: .relaxed) == reads + 1)
    }

    @Test("disk full on a real 4 MiB tmpfs: the job fails with io_error, reads keep working, readyz 503, uploads and submissions 507, a restart on a full disk works",
          .enabled(if: canMountTmpfs, "needs root and mount(2)"))
    func diskFull() throws {
        let fs = try SmallFilesystem()
        defer { fs.close() }
        let dir = fs.path + "/data"
        let floor = 1 << 20
        func configure(_ s: inout JobSettings) { s.minFreeBytes = floor; s.reserveBytes = 256 << 10 }
        let s1 = try TestServer(dir: dir, configure: configure)
        let c = try s1.client()
        #expect(try c.request("GET", "/readyz").status == 200)
        #expect(s1.jobs.storage.hasReserve)
        // 1. A job whose model (weights, EMA, Adam moments ≈ 8 MiB) does not fit.
        let big = #"{"type": "train", "input": {"model": {"width": 512, "depth": 3}, "batchSize": 8, "steps": 2, "logEvery": 1, "previewPoints": 0}}"#
        let bigID = try #require(try c.json("POST", "/v1/jobs", big).json()["id"] as? String)
        let failed = try s1.waitDone(bigID, client: c)
        #expect(failed["state"] as? String == "failed")
        let error = try #require(failed["error"] as? [String: Any])
        #expect(error["code"] as? String == "io_error")
        let detail = error["detail"] as? String ?? ""
        #expect(detail.contains("disk full") && !detail.contains(dir) && !detail.contains(fs.path), "\(detail)")
        #expect(try c.request("GET", "/healthz").status == 200 && (try c.request("GET", "/v1/jobs").status) == 200)
        #expect(try storedRecord(dir, bigID).state == .failed, "the final record reached the disk")
        // 2. Below the floor: not ready, new work refused with 507, reads still served.
        fs.fill(leaving: floor / 2)
        let ready = try c.request("GET", "/readyz")
        #expect(try ready.status == 503 && (try ready.json()["code"] as? String) == "insufficient_storage")
        let submit = try c.json("POST", "/v1/jobs", smallTrain)
        #expect(try submit.status == 507 && (try submit.json()["code"] as? String) == "insufficient_storage")
        let upload = try c.request("POST", "/v1/checkpoints", body: Array("anything".utf8))
        #expect(upload.status == 507 && upload.header("Retry-After") != nil)
        #expect(try c.request("GET", "/v1/jobs/\(bigID)").status == 200)
        for r in [ready, submit, upload] { #expect(!r.text.contains(fs.path)) }
        s1.stop(keepFiles: true)
        // 3. A job the server "died" under, then the disk filled up completely: the restart must
        //    write its requeued record (the reserve is released for it) and keep serving.
        let ghost = Identifiers.newJobID()
        var rec = JobRecord(id: ghost, type: "train", input: try SpecParser.parse(Array(smallTrain.utf8)), createdAt: Clock.now())
        rec.state = .running
        rec.attempts = 1
        try FileManager.default.createDirectory(atPath: dir + "/jobs/" + ghost, withIntermediateDirectories: true)
        try AtomicFile.write(Array(try JSONEncoder().encode(rec)), to: dir + "/jobs/\(ghost)/job.json")
        fs.fill(leaving: 0, name: "filler2")
        #expect(fs.free() < 64 << 10)
        let s2 = try TestServer(dir: dir, configure: configure)
        defer { s2.stop() }
        let c2 = try s2.client()
        #expect(try storedRecord(dir, ghost).state == .queued && s2.jobs.unsavedCount == 0)
        #expect(try c2.request("GET", "/readyz").status == 503)
        #expect(try c2.request("GET", "/v1/jobs/\(ghost)").json()["state"] as? String == "queued", "held while the disk is full")
        // 4. Space returns: the reserve is re-created and the held job runs.
        fs.unfill(name: "filler2")
        fs.unfill()
        s2.jobs.maintainStorage()
        #expect(try s2.jobs.storage.hasReserve && (try c2.request("GET", "/readyz").status) == 200)
        #expect(try s2.waitDone(ghost, client: c2)["state"] as? String == "succeeded")
    }
}
