import Foundation
import Testing
import ReflowJobs
@testable import ReflowServer

@Suite("Server config and store recovery")
struct ConfigTests {
    @Test("defaults < file < environment < flags; invalid values name their pointer")
    func precedence() throws {
        let dir = NSTemporaryDirectory() + "reflowd-config-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let file = dir + "/c.json"
        try #"{"port": 9000, "workers": 2, "http": {"backlog": 1024}}"#.write(toFile: file, atomically: true, encoding: .utf8)
        let c = try Serve.configuration(["--config", file, "--port", "9100"], environment: ["REFLOWD_PORT": "9050", "REFLOWD_WORKERS": "3"])
        #expect(c.port == 9100 && c.workers == 3 && c.http.backlog == 1024 && c.http.maxBodyBytes == 64 << 20 && c.host == "127.0.0.1")
        #expect(throws: ServerStartError.self) { try Serve.configuration(["--port", "x"], environment: [:]) }
        #expect(throws: ServerStartError.self) { try Serve.configuration(["--nope", "1"], environment: [:]) }
        do { _ = try Serve.configuration([], environment: ["REFLOWD_COMPUTE_THREADS": "0"]); Issue.record("accepted 0 threads") } catch {
            #expect(error.description.contains("/computeThreads"))
        }
        try #"{"http": {"backlog": 5}}"#.write(toFile: file, atomically: true, encoding: .utf8)
        do { _ = try Serve.configuration(["--config", file], environment: [:]); Issue.record("accepted backlog 5") } catch {
            #expect(error.description.contains("/http/backlog"))
        }
        // The shipped config file parses and equals the defaults.
        let shipped = try JSONDecoder().decode(ServerConfig.self, from: Data(contentsOf: URL(fileURLWithPath: repoRoot + "/config/reflowd.json")))
        #expect(shipped == ServerConfig())
    }

    @Test("a job that died with the server maxAttempts times is failed (crash_loop), not retried; canceling becomes canceled")
    func crashLoop() throws {
        let dir = NSTemporaryDirectory() + "reflowd-poison-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let spec = try SpecParser.parse(Array(#"{"type": "train", "input": {"steps": 5}}"#.utf8))
        func store(_ state: JobState, attempts: Int) throws -> String {
            let id = Identifiers.newJobID()
            var r = JobRecord(id: id, type: "train", input: spec, createdAt: "2026-11-29T00:00:00.000Z")
            r.state = state
            r.attempts = attempts
            // Every attempt before the last one died without checkpoint progress.
            r.crashes = max(0, attempts - 1)
            try FileManager.default.createDirectory(atPath: dir + "/jobs/" + id, withIntermediateDirectories: true)
            try JSONEncoder().encode(r).write(to: URL(fileURLWithPath: dir + "/jobs/\(id)/job.json"))
            usleep(2000)
            return id
        }
        let poisoned = try store(.running, attempts: 3)
        let retried = try store(.running, attempts: 1)
        let canceling = try store(.canceling, attempts: 1)
        // Killed 5 times, but its checkpoint changed since the last attempt started: not a crash loop.
        let progressing = try store(.running, attempts: 5)
        var p = try JSONDecoder().decode(JobRecord.self, from: Data(contentsOf: URL(fileURLWithPath: dir + "/jobs/\(progressing)/job.json")))
        p.crashes = 2
        p.attemptMarker = "checkpoint.safetensors:1:1:1.0"
        try JSONEncoder().encode(p).write(to: URL(fileURLWithPath: dir + "/jobs/\(progressing)/job.json"))
        try Data("newer checkpoint".utf8).write(to: URL(fileURLWithPath: dir + "/jobs/\(progressing)/checkpoint.safetensors"))
        var settings = JobSettings(dataDir: dir)
        settings.maxAttempts = 3
        let service = try JobService(settings: settings)
        #expect(service.record(poisoned)?.state == .failed && service.record(poisoned)?.error?.code == "crash_loop")
        #expect(service.record(retried)?.state == .queued && service.queuePosition(retried) == 0)
        #expect(service.record(canceling)?.state == .canceled)
        #expect(service.record(progressing)?.state == .queued && service.record(progressing)?.crashes == 2)
        // The recovery was written back.
        let onDisk = try JSONDecoder().decode(JobRecord.self, from: Data(contentsOf: URL(fileURLWithPath: dir + "/jobs/\(poisoned)/job.json")))
        #expect(onDisk.state == .failed)
        // A directory without a record (a submission never acknowledged) is removed.
        try FileManager.default.createDirectory(atPath: dir + "/jobs/job_stray", withIntermediateDirectories: true)
        _ = try JobService(settings: settings)
        #expect(!FileManager.default.fileExists(atPath: dir + "/jobs/job_stray"))
    }
}
