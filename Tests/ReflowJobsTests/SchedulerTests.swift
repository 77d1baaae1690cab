import Foundation
import Testing
@testable import ReflowJobs

/// The scheduler's state machine, without HTTP, threads or disks.
@Suite("Scheduler state machine")
struct SchedulerTests {
    static let spec = try! SpecParser.parse(Array(#"{"type": "train", "input": {"steps": 5}}"#.utf8))
    static let t0 = "2026-11-29T00:00:00.000Z"

    static func newRecord(_ n: Int) -> JobRecord {
        JobRecord(id: String(format: "job_%026d", n), type: "train", input: spec, createdAt: t0)
    }

    /// Submits `n` jobs through both phases; returns their ids.
    static func submit(_ s: inout Scheduler, _ range: Range<Int>) throws -> [String] {
        var ids = [String]()
        for n in range {
            let r = newRecord(n)
            #expect(s.reserveSubmission(id: r.id, idempotencyKey: nil, requestDigest: "d") == .reserved)
            let actions = try s.commitSubmission(r)
            #expect(actions.contains(.wakeWorker) && actions.contains(.status(id: r.id, state: .queued)))
            ids.append(r.id)
        }
        return ids
    }

    static func start(_ s: inout Scheduler, marker: String? = nil) -> JobRecord? {
        guard case .run(let r, let actions) = s.nextJob(now: t0, marker: { _ in marker }) else { return nil }
        // The attempt is persisted before anything else happens.
        #expect(actions.first == .persist(r))
        return r
    }

    @Test("a queued record of a kind this build does not know fails at load with unknown_type instead of waiting forever")
    func unknownKind() throws {
        var r = JobRecord(id: "job_00000000000000000000000009", type: "prune", input: nil, createdAt: Self.t0)
        r.version = 1
        var s = Scheduler(settings: SchedulerSettings())
        let actions = s.load([r], now: Self.t0, marker: { _ in nil })
        let loaded = try #require(s.record(r.id))
        #expect(loaded.state == .failed && loaded.error?.code == "unknown_type")
        #expect(actions.contains(.persist(loaded)) && s.queuePosition(r.id) == nil)
    }

    @Test("jobs run in submission order; each start counts an attempt and records the checkpoint marker")
    func queueOrder() throws {
        var s = Scheduler(settings: SchedulerSettings())
        let ids = try Self.submit(&s, 0..<3)
        #expect(s.queuePosition(ids[2]) == 2)
        let first = try #require(Self.start(&s, marker: "ckpt@1"))
        #expect(first.id == ids[0] && first.state == .running && first.attempts == 1 && first.attemptMarker == "ckpt@1")
        let actions = try s.jobFinished(first.id, outcome: .succeeded(JobResult(type: "train")), now: Self.t0)
        #expect(actions.first.map { if case .persist(let r) = $0 { return r.state == .succeeded } else { return false } } == true)
        #expect(actions.contains { if case .completed = $0 { return true } else { return false } })
        #expect(Self.start(&s)?.id == ids[1])
        #expect(Self.start(&s)?.id == ids[2])
        #expect(s.nextJob(now: Self.t0, marker: { _ in nil }) == .idle)
    }

    @Test("queue limit and idempotency: replay, mismatch, in flight, abort releases the key")
    func submissionRules() throws {
        var s = Scheduler(settings: SchedulerSettings(queueLimit: 1, maxAttempts: 3))
        var r = Self.newRecord(1)
        r.idempotencyKey = "k"
        r.requestDigest = "d1"
        #expect(s.reserveSubmission(id: r.id, idempotencyKey: "k", requestDigest: "d1") == .reserved)
        #expect(s.reserveSubmission(id: "job_other", idempotencyKey: "k", requestDigest: "d1") == .refused(.idempotencyInFlight))
        _ = try s.commitSubmission(r)
        #expect(s.reserveSubmission(id: "job_other", idempotencyKey: "k", requestDigest: "d1") == .replay(r))
        #expect(s.reserveSubmission(id: "job_other", idempotencyKey: "k", requestDigest: "d2") == .refused(.idempotencyMismatch(existing: r.id)))
        #expect(s.reserveSubmission(id: "job_x", idempotencyKey: nil, requestDigest: "d") == .refused(.queueFull(queued: 1, limit: 1)))
        // A submission that could not be stored releases its key.
        var t = Scheduler(settings: SchedulerSettings())
        #expect(t.reserveSubmission(id: "job_a", idempotencyKey: "k2", requestDigest: "d") == .reserved)
        t.abortSubmission(id: "job_a", idempotencyKey: "k2")
        #expect(t.reserveSubmission(id: "job_b", idempotencyKey: "k2", requestDigest: "d") == .reserved)
        // Committing the same record twice is an error, not a silent overwrite.
        #expect(throws: SchedulerError.self) { _ = try s.commitSubmission(r) }
    }

    @Test("cancel: a queued job is canceled at once; a running one is asked to stop and ends canceled")
    func cancel() throws {
        var s = Scheduler(settings: SchedulerSettings())
        let ids = try Self.submit(&s, 0..<2)
        let running = try #require(Self.start(&s))
        let (queuedOutcome, queuedActions) = s.cancel(ids[1], now: Self.t0)
        guard case .canceled(let c) = queuedOutcome else { Issue.record("\(queuedOutcome)"); return }
        #expect(c.state == .canceled && s.queuePosition(ids[1]) == nil && queuedActions.first == .persist(c))
        let (runOutcome, runActions) = s.cancel(running.id, now: Self.t0)
        guard case .canceling(let r) = runOutcome else { Issue.record("\(runOutcome)"); return }
        #expect(r.state == .canceling && runActions.contains(.requestStop(id: running.id)) && s.shouldStop(running.id))
        if case .already = s.cancel(running.id, now: Self.t0).0 {} else { Issue.record("second cancel is not 'already'") }
        _ = try s.jobFinished(running.id, outcome: .interrupted, now: Self.t0)
        #expect(s.record(running.id)?.state == .canceled)
        if case .finished = s.cancel(ids[0], now: Self.t0).0 { Issue.record("canceled is not finished") }
        if case .missing = s.cancel("job_nope", now: Self.t0).0 {} else { Issue.record("unknown job") }
    }

    @Test("shutdown: running jobs are asked to stop, interrupted ones go back to the queue with the attempt given back")
    func shutdownRequeue() throws {
        var s = Scheduler(settings: SchedulerSettings())
        let ids = try Self.submit(&s, 0..<2)
        let r = try #require(Self.start(&s))
        #expect(s.beginShutdown() == [.requestStop(id: r.id)])
        #expect(s.nextJob(now: Self.t0, marker: { _ in nil }) == .stopping)
        #expect(s.reserveSubmission(id: "job_z", idempotencyKey: nil, requestDigest: "d") == .refused(.draining))
        _ = try s.jobFinished(r.id, outcome: .interrupted, now: Self.t0)
        let back = try #require(s.record(r.id))
        #expect(back.state == .queued && back.attempts == 0 && s.queue == [ids[0], ids[1]])
    }

    @Test("a timed-out drain requeues running jobs for the exit; the late report of the worker is an error")
    func requeueForExit() throws {
        var s = Scheduler(settings: SchedulerSettings())
        _ = try Self.submit(&s, 0..<1)
        let r = try #require(Self.start(&s))
        _ = s.beginShutdown()
        let actions = s.requeueForExit(now: Self.t0)
        let requeued = try #require(s.record(r.id))
        #expect(requeued.state == .queued && requeued.attempts == 0 && actions.first == .persist(requeued))
        #expect(throws: SchedulerError.notRunning(id: r.id, state: .queued)) {
            _ = try s.jobFinished(r.id, outcome: .succeeded(JobResult(type: "train")), now: Self.t0)
        }
    }

    @Test("terminal states never move: finishing or progressing a finished job throws and changes nothing")
    func terminalImmutable() throws {
        for st in JobState.allCases where st.isTerminal {
            #expect(JobState.allCases.allSatisfy { !st.canMove(to: $0) })
        }
        var s = Scheduler(settings: SchedulerSettings())
        _ = try Self.submit(&s, 0..<1)
        let r = try #require(Self.start(&s))
        _ = try s.jobFinished(r.id, outcome: .failed(JobFailure(code: "diverged", message: "loss is nan")), now: Self.t0)
        let failed = try #require(s.record(r.id))
        #expect(failed.error == JobFailure(code: "diverged", message: "loss is nan"))
        #expect(throws: SchedulerError.self) { _ = try s.jobFinished(r.id, outcome: .interrupted, now: Self.t0) }
        #expect(throws: SchedulerError.self) { _ = try s.progress(r.id, JobProgressInfo(phase: "train", step: 1, total: 5, fraction: 0.2)) }
        #expect(throws: SchedulerError.unknownJob("job_nope")) { _ = try s.jobFinished("job_nope", outcome: .interrupted, now: Self.t0) }
        #expect(s.record(r.id) == failed, "a refused transition changes nothing")
        var moved = failed
        #expect(!moved.move(to: .queued, at: Self.t0) && moved == failed)
        if case .deleted = s.delete(r.id) {} else { Issue.record("a failed job can be deleted") }
    }

    @Test("crash loops: only restarts without checkpoint progress count towards maxAttempts")
    func crashLoop() throws {
        let maxAttempts = 3
        // A job killed with the server every attempt, but advancing its checkpoint each time,
        // is never failed: 10 kills, 10 requeues.
        var record = Self.newRecord(1)
        var step = 0
        for _ in 0..<10 {
            var s = Scheduler(settings: SchedulerSettings(queueLimit: 64, maxAttempts: maxAttempts))
            _ = s.load([record], now: Self.t0, marker: { _ in "ckpt@\(step)" })
            #expect(s.record(record.id)?.state == .queued)
            record = try #require(Self.start(&s, marker: "ckpt@\(step)"))
            step += 100  // the attempt wrote a newer checkpoint, then the server was killed
        }
        #expect(record.attempts == 10 && record.crashes == 0)
        // Without progress, the maxAttempts-th crash fails the job with crash_loop.
        var stuck = Self.newRecord(2)
        for attempt in 1...maxAttempts {
            var s = Scheduler(settings: SchedulerSettings(queueLimit: 64, maxAttempts: maxAttempts))
            let actions = s.load([stuck], now: Self.t0, marker: { _ in "ckpt@0" })
            let loaded = try #require(s.record(stuck.id))
            if attempt == 1 {
                #expect(loaded.state == .queued)  // never started yet
            } else if attempt <= maxAttempts - 1 {
                #expect(loaded.state == .queued && loaded.crashes == attempt - 1)
            }
            if loaded.state == .queued { stuck = try #require(Self.start(&s, marker: "ckpt@0")) }
            _ = actions
        }
        var s = Scheduler(settings: SchedulerSettings(queueLimit: 64, maxAttempts: maxAttempts))
        let actions = s.load([stuck], now: Self.t0, marker: { _ in "ckpt@0" })
        let failed = try #require(s.record(stuck.id))
        #expect(failed.state == .failed && failed.error?.code == "crash_loop" && failed.crashes == maxAttempts)
        #expect(actions.first == .persist(failed) && s.queue.isEmpty)
        // A job found canceling is canceled; the loaded queue keeps id order.
        var canceling = Self.newRecord(3)
        canceling.state = .canceling
        var t = Scheduler(settings: SchedulerSettings())
        _ = t.load([Self.newRecord(5), canceling, Self.newRecord(4)], now: Self.t0, marker: { _ in nil })
        #expect(t.record(canceling.id)?.state == .canceled && t.queue == [Self.newRecord(4).id, Self.newRecord(5).id])
    }

    @Test("records round-trip through JSON with the spec kept opaque; old records (problem errors, no crash count) load")
    func recordCoding() throws {
        var r = Self.newRecord(7)
        r.error = JobFailure(code: "io_error", message: "disk full")
        r.attemptMarker = "m"
        let data = try JSONEncoder().encode(r)
        #expect(try JSONDecoder().decode(JobRecord.self, from: data) == r)
        let object = try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
        #expect((object["input"] as? [String: Any])?["steps"] as? Int == 5 && object["type"] as? String == "train")
        #expect(Self.spec.type == "train")
        let legacy = #"{"id":"job_1","type":"train","state":"failed","done":true,"input":{"steps":5},"createdAt":"x","transitions":[],"attempts":3,"progress":null,"result":null,"error":{"type":"about:blank#crash_loop","title":"t","status":500,"detail":"died","code":"crash_loop"},"version":4}"#
        let old = try JSONDecoder().decode(JobRecord.self, from: Data(legacy.utf8))
        #expect(old.error == JobFailure(code: "crash_loop", message: "died") && old.crashes == 2 && old.input != nil)
        for v in [ResultValue.bool(true), .int(1), .double(0.5), .string("s"), .null, .array([.int(2)]), .object(["a": .bool(false)])] {
            #expect(try JSONDecoder().decode(ResultValue.self, from: JSONEncoder().encode(v)) == v)
        }
    }
}
