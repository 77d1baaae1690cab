import Foundation
import Testing
import Glibc
import ReflowJobs
@testable import ReflowServer

/// The repository root (this file is Tests/ReflowServerTests/ProcessTests.swift).
let repoRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path

/// The release binary `make test` builds before running the tests.
func reflowdBinary() throws -> String {
    let path = repoRoot + "/.build/release/reflowd"
    guard FileManager.default.isExecutableFile(atPath: path) else {
        throw ClientError("\(path) is missing: run `swift build -c release` first (`make test` does)")
    }
    return path
}

/// A `reflowd serve` child process on an ephemeral port.
final class ServerProcess {
    let process = Process()
    let stderr = Pipe()
    private(set) var port = 0
    var log = ""

    init(dataDir: String, extra: [String] = [], environment: [String: String] = [:], fileLimit: Int? = nil) throws {
        let args = ["serve", "--port", "0", "--data-dir", dataDir, "--compute-threads", "1"] + extra
        if let fileLimit {
            // Run under a low descriptor limit (RLIMIT_NOFILE) through the shell's ulimit.
            process.executableURL = URL(fileURLWithPath: "/bin/bash")
            process.arguments = ["-c", "ulimit -n \(fileLimit) && exec \"$0\" \"$@\"", try reflowdBinary()] + args
        } else {
            process.executableURL = URL(fileURLWithPath: try reflowdBinary())
            process.arguments = args
        }
        if !environment.isEmpty { process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 } }
        process.standardError = stderr
        process.standardOutput = FileHandle.nullDevice
        try process.run()
        // The startup line names the port: "listening on http://127.0.0.1:PORT (...)".
        let handle = stderr.fileHandleForReading
        let deadline = Date().addingTimeInterval(30)
        while port == 0 && Date() < deadline {
            let data = handle.availableData
            if data.isEmpty { break }
            log += String(decoding: data, as: UTF8.self)
            if let r = log.range(of: #"listening on http://127\.0\.0\.1:(\d+)"#, options: .regularExpression) {
                port = Int(log[r].split(separator: ":").last ?? "") ?? 0
            }
        }
        guard port > 0 else { process.terminate(); throw ClientError("server did not start: \(log)") }
    }

    func kill9() { _ = signalAndWait(SIGKILL) }

    /// SIGTERM, then the exit status (-1 if it did not exit within 60 s).
    func terminate() -> Int32 { signalAndWait(SIGTERM) }

    /// Sends `sig` and reaps the child with waitpid(2) directly: Foundation's own reaping of
    /// children was seen to leave a zombie and hang `waitUntilExit` here.
    private var exitStatus: Int32?

    private func signalAndWait(_ sig: Int32) -> Int32 {
        if let exitStatus { return exitStatus }  // never signal a reaped (and possibly reused) pid
        let status = reap(sig)
        exitStatus = status
        return status
    }

    private func reap(_ sig: Int32) -> Int32 {
        let pid = process.processIdentifier
        Glibc.kill(pid, sig)
        let deadline = Date().addingTimeInterval(60)
        while Date() < deadline {
            var status: Int32 = 0
            let r = waitpid(pid, &status, WNOHANG)
            if r == pid { return (status & 0x7f) == 0 ? (status >> 8) & 0xff : 128 + (status & 0x7f) }
            if r < 0 {
                // Already reaped by Foundation, which may not have recorded it yet (seen under
                // load: isRunning still true right after ECHILD); wait for its bookkeeping.
                if process.isRunning { usleep(10_000); continue }
                return process.terminationStatus
            }
            usleep(10_000)
        }
        return -1
    }
}

@Suite("Server process", .serialized)
struct ProcessTests {
    @Test("SIGKILL mid-training: after a restart no acknowledged job is lost and the job resumes from its checkpoint")
    func crashAndResume() throws {
        let dir = NSTemporaryDirectory() + "reflowd-crash-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let first = try ServerProcess(dataDir: dir)
        let c = try TestClient(port: first.port)
        let spec = #"{"type": "train", "input": {"model": {"width": 32, "depth": 2}, "batchSize": 64, "steps": 3000, "logEvery": 10, "checkpointEvery": 100, "previewPoints": 0}}"#
        var ids = [String]()
        for _ in 0..<3 {
            let r = try c.json("POST", "/v1/jobs", spec)
            #expect(r.status == 202)
            ids.append(try #require(try r.json()["id"] as? String))
        }
        // Wait until the first job is past a checkpoint, then kill the process without warning.
        var step = 0
        for _ in 0..<1000 where step < 300 {
            step = ((try c.request("GET", "/v1/jobs/\(ids[0])").json()["progress"] as? [String: Any])?["step"] as? Int) ?? 0
            usleep(10_000)
        }
        #expect(step >= 300)
        first.kill9()
        let stored = try JSONDecoder().decode(JobRecord.self, from: Data(contentsOf: URL(fileURLWithPath: dir + "/jobs/\(ids[0])/job.json")))
        #expect(stored.state == .running && stored.attempts == 1)

        let second = try ServerProcess(dataDir: dir)
        defer { _ = second.terminate() }
        let c2 = try TestClient(port: second.port)
        let list = try c2.request("GET", "/v1/jobs").json()
        let listed = Set(((list["items"] as? [[String: Any]]) ?? []).compactMap { $0["id"] as? String })
        #expect(listed == Set(ids), "every acknowledged job survives kill -9")
        var done: [String: Any] = [:]
        for _ in 0..<600 {
            done = try c2.request("GET", "/v1/jobs/\(ids[0])?wait=5").json()
            if done["done"] as? Bool == true { break }
        }
        #expect(done["state"] as? String == "succeeded")
        let training = (done["result"] as? [String: Any])?["training"] as? [String: Any]
        #expect((training?["resumedFromStep"] as? Int ?? 0) >= 100, "resumed from a checkpoint, not from scratch")
        #expect(done["attempts"] as? Int == 2)
        // SIGTERM: the running job is requeued (not failed) and the process exits 0.
        #expect(second.terminate() == 0)
        let after = try JSONDecoder().decode(JobRecord.self, from: Data(contentsOf: URL(fileURLWithPath: dir + "/jobs/\(ids[1])/job.json")))
        #expect(after.state == .queued || after.state == .succeeded)
    }

    @Test("SIGKILL during an IMP prune job: after a restart it resumes at its cycle (finished cycles are kept, not redone)")
    func pruneCrashResumesAtCycle() throws {
        let dir = NSTemporaryDirectory() + "reflowd-prune-crash-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let first = try ServerProcess(dataDir: dir)
        let c = try TestClient(port: first.port)
        let classify = #"{"type": "classify", "input": {"data": {"kind": "images", "dataset": "builtin:shapes", "limit": 600}, "test": {"dataset": "builtin:shapes", "split": "test", "limit": 200}, "model": {"kind": "mlp", "hidden": [256, 128]}, "batchSize": 64, "steps": 20}}"#
        let cls = try #require(try c.json("POST", "/v1/jobs", classify, headers: [("Prefer", "wait=120")]).json()["id"] as? String)
        let prune = #"{"type": "prune", "input": {"model": {"job": "\#(cls)"}, "sparsity": 0.83, "rate": 0.3, "ap": {"enabled": true}, "retrain": {"steps": 600, "checkpointEvery": 100, "logEvery": 10}, "dnr": {"samples": 100}, "evaluation": {"n": 100}}}"#
        let r = try c.json("POST", "/v1/jobs", prune)
        #expect(r.status == 202, "\(r.text)")
        let id = try #require(try r.json()["id"] as? String)
        // Wait until cycle 2 has finished (its measurements arrive as progress metrics), then kill.
        var cycle = 0.0
        for _ in 0..<6000 where cycle < 2 {
            let progress = try c.request("GET", "/v1/jobs/\(id)").json()["progress"] as? [String: Any]
            cycle = (progress?["metrics"] as? [String: Any])?["cycle"] as? Double ?? 0
            usleep(10_000)
        }
        #expect(cycle >= 2)
        first.kill9()
        let statePath = dir + "/jobs/\(id)/pruning.json"
        let before = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: statePath))) as? [String: Any]
        let savedCycles = ((before?["summary"] as? [String: Any])?["cycles"] as? [[String: Any]]) ?? []
        #expect(savedCycles.count >= 3)

        let second = try ServerProcess(dataDir: dir)
        defer { _ = second.terminate() }
        let c2 = try TestClient(port: second.port)
        var done: [String: Any] = [:]
        for _ in 0..<600 {
            done = try c2.request("GET", "/v1/jobs/\(id)?wait=5").json()
            if done["done"] as? Bool == true { break }
        }
        #expect(done["state"] as? String == "succeeded", "\(done["error"] ?? "")")
        #expect(done["attempts"] as? Int == 2)
        let cycles = (((done["result"] as? [String: Any])?["pruning"] as? [String: Any])?["cycles"] as? [[String: Any]]) ?? []
        #expect(cycles.count == 6, "cycles 0…5 (30 % per cycle to 83 %)")
        for (i, saved) in savedCycles.enumerated() where i < cycles.count {
            #expect(cycles[i]["seconds"] as? Double == saved["seconds"] as? Double, "cycle \(i) was kept, not run again")
        }
    }

    @Test("SIGTERM during a long solve with a short drain timeout: exit 0 (no crash in OpenBLAS teardown), the job is queued again on restart")
    func drainTimeout() throws {
        let dir = NSTemporaryDirectory() + "reflowd-drain-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let config = dir + "-config.json"
        defer { try? FileManager.default.removeItem(atPath: config) }
        try Data(#"{"shutdownTimeoutSeconds": 0.5}"#.utf8).write(to: URL(fileURLWithPath: config))
        for round in 0..<2 {
            let server = try ServerProcess(dataDir: dir, extra: ["--config", config])
            let c = try TestClient(port: server.port)
            let train = #"{"type": "train", "input": {"model": {"width": 64, "depth": 2}, "batchSize": 32, "steps": 20, "previewPoints": 0}}"#
            let model = try #require(try c.json("POST", "/v1/jobs", train, headers: [("Prefer", "wait=60")]).json()["id"] as? String)
            let sample = #"{"type": "sample", "input": {"model": {"job": "\#(model)"}, "n": 1000000, "trajectories": 0, "solver": {"kind": "rk45", "rtol": 1e-6, "atol": 1e-6, "maxNFE": 100000}}}"#
            let r = try c.json("POST", "/v1/jobs", sample)
            #expect(r.status == 202, "\(r.text)")
            let id = try #require(try r.json()["id"] as? String)
            var state = ""
            let deadline = Date().addingTimeInterval(60)
            while state != "running" && Date() < deadline {
                state = try c.request("GET", "/v1/jobs/\(id)?wait=1").json()["state"] as? String ?? ""
            }
            #expect(state == "running")
            let status = server.terminate()
            #expect(status == 0, "round \(round): exit status \(status)\n\(server.log)")
            let stored = try JSONDecoder().decode(JobRecord.self, from: Data(contentsOf: URL(fileURLWithPath: dir + "/jobs/\(id)/job.json")))
            #expect(stored.state == .queued && stored.attempts == 0, "round \(round): \(stored.state) attempts \(stored.attempts)")
            // On restart the job is queued (or already running again) and was not failed.
            let again = try ServerProcess(dataDir: dir, extra: ["--config", config])
            let c2 = try TestClient(port: again.port)
            let s = try c2.request("GET", "/v1/jobs/\(id)").json()["state"] as? String
            #expect(s == "queued" || s == "running")
            _ = try c2.request("POST", "/v1/jobs/\(id)/cancel")
            #expect(again.terminate() == 0)
        }
    }

    @Test("the README's curl sessions run as written: train, reflow, distill, sample, download the PNG",
          arguments: [("curl-session", "samples.png"), ("curl-session-images", "grid.png"), ("curl-session-mri", "comparison.png")])
    func readmeSession(block: String, picture: String) throws {
        let readme = try String(contentsOfFile: repoRoot + "/README.md", encoding: .utf8)
        guard let start = readme.range(of: "<!-- \(block) -->"), let end = readme.range(of: "<!-- /\(block) -->") else {
            Issue.record("README.md has no <!-- \(block) --> block")
            return
        }
        var script = String(readme[start.upperBound..<end.lowerBound])
        script = script.replacingOccurrences(of: "```sh", with: "").replacingOccurrences(of: "```", with: "")
        let dir = NSTemporaryDirectory() + "reflowd-readme-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let server = try ServerProcess(dataDir: dir + "/data")
        defer { _ = server.terminate() }
        let bash = Process()
        bash.executableURL = URL(fileURLWithPath: "/bin/bash")
        bash.arguments = ["-euo", "pipefail", "-c", script]
        bash.currentDirectoryURL = URL(fileURLWithPath: dir)
        bash.environment = ProcessInfo.processInfo.environment.merging(["BASE": "http://127.0.0.1:\(server.port)"]) { $1 }
        let out = Pipe()
        bash.standardOutput = out
        bash.standardError = out
        try bash.run()
        let output = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        bash.waitUntilExit()
        #expect(bash.terminationStatus == 0, "the README session failed:\n\(output.suffix(3000))")
        let png = try Data(contentsOf: URL(fileURLWithPath: dir + "/" + picture))
        #expect(png.prefix(4) == Data([0x89, 0x50, 0x4e, 0x47]))
    }

    @Test("bad configuration stops the server with the setting's pointer; an unreadable store too")
    func startErrors() throws {
        let dir = NSTemporaryDirectory() + "reflowd-start-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: dir) }
        func run(_ args: [String]) throws -> (Int32, String) {
            let p = Process()
            p.executableURL = URL(fileURLWithPath: try reflowdBinary())
            p.arguments = args
            let err = Pipe()
            p.standardError = err
            p.standardOutput = FileHandle.nullDevice
            try p.run()
            let text = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            p.waitUntilExit()
            return (p.terminationStatus, text)
        }
        let (code, text) = try run(["serve", "--port", "99999", "--data-dir", dir])
        #expect(code == 2 && text.contains("/port"))
        try FileManager.default.createDirectory(atPath: dir + "/jobs/job_01m8km7r66e3wsyhf1vpkfjy9y", withIntermediateDirectories: true)
        try Data("not json".utf8).write(to: URL(fileURLWithPath: dir + "/jobs/job_01m8km7r66e3wsyhf1vpkfjy9y/job.json"))
        let (code2, text2) = try run(["serve", "--port", "0", "--data-dir", dir])
        #expect(code2 == 1 && text2.contains("corrupt"), "\(text2)")
    }

    @Test("a low descriptor limit: connections beyond its headroom are closed on accept; the server keeps serving")
    func descriptorExhaustion() throws {
        let dir = NSTemporaryDirectory() + "reflowd-emfile-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: dir) }
        // 128 descriptors: at most 64 connections are admitted, the rest are closed on accept.
        let server = try ServerProcess(dataDir: dir, fileLimit: 128)
        defer { _ = server.terminate() }
        var clients = [TestClient]()
        for _ in 0..<200 { if let c = try? TestClient(port: server.port, timeout: 2) { clients.append(c) } }
        // Some of these were accepted, the rest wait in the backlog or were refused; none crashed the server.
        let opened = clients.count
        clients.removeAll()
        usleep(300_000)
        if !server.process.isRunning {
            let rest = String(decoding: server.stderr.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            Issue.record("server died (status \(server.process.terminationStatus), reason \(server.process.terminationReason.rawValue)) after \(opened) connections: \(server.log)\(rest.suffix(3000))")
        }
        let c = try TestClient(port: server.port)
        #expect(try c.request("GET", "/healthz").status == 200)
        #expect(server.process.isRunning)
    }

    @Test("sd_notify: READY=1 once listening, STOPPING=1 on SIGTERM (NOTIFY_SOCKET datagrams)")
    func systemdNotify() throws {
        let dir = NSTemporaryDirectory() + "reflowd-notify-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let path = dir + "/notify.sock"
        let fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue), 0)
        defer { close(fd) }
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &addr.sun_path) { raw in
            for (i, b) in path.utf8.enumerated() where i < raw.count - 1 { raw[i] = b }
        }
        let bound = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) } }
        #expect(bound == 0)
        var tv = timeval(tv_sec: 10, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        func receive() -> String {
            var buf = [UInt8](repeating: 0, count: 4096)
            let n = buf.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            return n > 0 ? String(decoding: buf[0..<n], as: UTF8.self) : ""
        }
        let server = try ServerProcess(dataDir: dir + "/data", environment: ["NOTIFY_SOCKET": path])
        #expect(receive().contains("READY=1"))
        #expect(server.terminate() == 0)
        #expect(receive().contains("STOPPING=1"))
    }
}
