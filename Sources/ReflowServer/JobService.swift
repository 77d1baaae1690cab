public import ReflowJobs
import ReflowStore
import ReflowEngine
import ReflowCodec
import Foundation
import Synchronization

/// Settings of the job side of the server.
public struct JobSettings: Sendable {
    /// Root of the durable state: `jobs/<id>/job.json` plus each job's files.
    public var dataDir: String
    /// Jobs that run at once.
    public var workers = 1
    /// Compute threads per running job. `workers × computeThreads` is the machine's compute
    /// budget (the BLAS library itself runs single-threaded; reflowd's engine owns the threads).
    public var computeThreads = 2
    /// Queued jobs beyond this are refused with 429.
    public var queueLimit = 64
    /// A job that has started this many times without finishing (the server died under it) fails.
    public var maxAttempts = 3
    /// Nice value of compute threads (> 0 keeps the HTTP side responsive during training).
    public var computeNice: Int32 = 5

    public init(dataDir: String) { self.dataDir = dataDir }
}

/// A server-sent event of a job.
public struct JobEvent: Sendable {
    public var seq: Int
    public var name: String
    public var data: String
}

/// The durable job store and scheduler.
///
/// Every record lives in memory (a `Mutex`-protected table) and on disk as
/// `jobs/<id>/job.json`, written atomically (temp → fsync → rename → fsync(dir)). A submission
/// is acknowledged only after its record is on disk (RELIABILITY.md D1). Worker threads take
/// jobs in FIFO order and run them with ``JobRunner``; on startup, jobs found running are
/// queued again and resume from their checkpoints, unless they already crashed the server
/// `maxAttempts` times (D4, D5). An unreadable record stops the server (D7).
public final class JobService: Sendable {
    public let settings: JobSettings
    let jobsDir: String

    struct State {
        var records: [String: JobRecord] = [:]
        /// Ids in creation order (ids are time-sortable; the list keeps insertion order exactly).
        var order: [String] = []
        var queue: [String] = []
        var cancelRequested: Set<String> = []
        var events: [String: [JobEvent]] = [:]
        var nextSeq: [String: Int] = [:]
        var lastProgressEvent: [String: Double] = [:]
        var lastProgressPersist: [String: Double] = [:]
        var idempotency: [String: String] = [:]
        var stopping = false
        var running = 0
        var rate: [String: (time: Double, step: Int)] = [:]
        var stepsTotal = 0
        var lastCountedStep: [String: Int] = [:]
        var finishedByTypeState: [String: Int] = [:]
        /// Deleted jobs: a late persist of their record is skipped (it would recreate the directory).
        var deleted: Set<String> = []
    }
    let state = Mutex(State())
    let wake = DispatchSemaphore(value: 0)
    /// Serialises record writes; holds the version last written per job, so an older state never
    /// overwrites a newer one (without reading the file back).
    let persistLock = Mutex<[String: Int]>([:])
    let workersDone = DispatchGroup()
    /// Called after every record change (metrics, tests).
    let onChange: @Sendable (JobRecord) -> Void
    /// Pushes every appended event to the job's SSE subscribers.
    public let eventHub = JobEventHub()

    /// Loads every record under `dataDir/jobs` and requeues interrupted jobs. Throws (and the
    /// server must not start) when a record cannot be read.
    public init(settings: JobSettings, onChange: @escaping @Sendable (JobRecord) -> Void = { _ in }) throws {
        self.settings = settings
        self.onChange = onChange
        jobsDir = settings.dataDir + "/jobs"
        try FileManager.default.createDirectory(atPath: jobsDir, withIntermediateDirectories: true)
        try load()
    }

    // MARK: loading

    private func load() throws {
        let names = try FileManager.default.contentsOfDirectory(atPath: jobsDir).sorted()
        var records = [JobRecord]()
        for name in names {
            let dir = jobsDir + "/" + name
            var isDir: ObjCBool = false
            guard FileManager.default.fileExists(atPath: dir, isDirectory: &isDir), isDir.boolValue else { continue }
            let path = dir + "/job.json"
            guard FileManager.default.fileExists(atPath: path) else {
                // A directory without a record is a submission that was never acknowledged.
                try? FileManager.default.removeItem(atPath: dir)
                continue
            }
            let bytes: [UInt8]
            do { bytes = try AtomicFile.read(path: path, maxBytes: 64 << 20) } catch {
                throw ServerStartError("cannot read job record \(path): \(error)")
            }
            do {
                let r = try JSONDecoder().decode(JobRecord.self, from: Data(bytes))
                guard r.id == name else { throw ServerStartError("record \(path) names job \(r.id)") }
                records.append(r)
            } catch let e as ServerStartError {
                throw e
            } catch {
                throw ServerStartError("job record \(path) is corrupt (\(error)); move it away to start without it")
            }
        }
        records.sort { $0.id < $1.id }
        let now = Clock.now()
        var changed = [JobRecord]()
        for var r in records {
            switch r.state {
            case .running:
                if r.attempts >= settings.maxAttempts {
                    _ = r.move(to: .failed, at: now)
                    r.error = Problem(status: 500, code: "crash_loop", title: "Job crashed the server",
                                      detail: "the server stopped while running this job \(r.attempts) times; it is not retried again")
                } else {
                    _ = r.move(to: .queued, at: now)
                }
                changed.append(r)
            case .canceling:
                r.state = .canceled
                r.transitions.append(JobTransition(state: .canceled, at: now))
                r.version += 1
                changed.append(r)
            default: break
            }
            state.withLock { s in
                s.records[r.id] = r
                s.order.append(r.id)
                if r.state == .queued { s.queue.append(r.id) }
                if let k = r.idempotencyKey { s.idempotency[k] = r.id }
            }
        }
        for r in changed { try persist(r) }
        let queued = state.withLock { $0.queue.count }
        for _ in 0..<queued { wake.signal() }
    }

    // MARK: persistence

    func directory(_ id: String) -> String { jobsDir + "/" + id }

    /// Writes the record durably. Serialised, and never overwrites a newer version.
    func persist(_ r: JobRecord) throws {
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys]
        let bytes = Array(try e.encode(r))
        try persistLock.withLock { written in
            if state.withLock({ $0.deleted.contains(r.id) }) { return }
            if let prev = written[r.id], prev > r.version { return }
            try AtomicFile.write(bytes, to: directory(r.id) + "/job.json")
            written[r.id] = r.version
        }
    }

    /// Persists a state change; a storage failure here is fatal (RELIABILITY.md D3: never
    /// continue as if an unwritten transition had happened).
    func persistOrDie(_ r: JobRecord) {
        do { try persist(r) } catch {
            FileHandle.standardError.write(Data("reflowd: FATAL: cannot persist job \(r.id): \(error)\n".utf8))
            exit(75)
        }
    }

    // MARK: queries

    public func record(_ id: String) -> JobRecord? { state.withLock { $0.records[id] } }

    /// Jobs newest first, filtered, after the cursor (an id), at most `limit`.
    public func list(states: Set<JobState>?, types: Set<String>?, limit: Int, after cursor: String?) -> (items: [JobRecord], next: String?) {
        state.withLock { s in
            var out = [JobRecord]()
            var started = cursor == nil
            var next: String?
            for id in s.order.reversed() {
                if !started { if id == cursor { started = true }; continue }
                guard let r = s.records[id] else { continue }
                if let states, !states.contains(r.state) { continue }
                if let types, !types.contains(r.type) { continue }
                if out.count == limit { next = out.last?.id; break }
                out.append(r)
            }
            return (out, next)
        }
    }

    public func queuePosition(_ id: String) -> Int? { state.withLock { $0.queue.firstIndex(of: id) } }

    public var counts: [JobState: Int] {
        state.withLock { s in
            var c = [JobState: Int]()
            for r in s.records.values { c[r.state, default: 0] += 1 }
            return c
        }
    }

    public var queueLength: Int { state.withLock { $0.queue.count } }
    public var stepsTotal: Int { state.withLock { $0.stepsTotal } }
    public var isStopping: Bool { state.withLock { $0.stopping } }

    /// Events of a job after `seq` (and whether older events were dropped).
    public func events(_ id: String, after seq: Int) -> (events: [JobEvent], gap: Bool) {
        state.withLock { s in
            let all = s.events[id] ?? []
            let gap = (all.first.map { $0.seq > seq + 1 } ?? false) && seq > 0
            return (all.filter { $0.seq > seq }, gap)
        }
    }

    // MARK: submission

    public enum SubmitOutcome: Sendable {
        case created(JobRecord)
        case replayed(JobRecord)
    }

    /// Creates a job from a prepared spec; returns once the record is durable.
    public func submit(_ spec: JobSpec, idempotencyKey: String?, requestDigest: String) throws(Problem) -> SubmitOutcome {
        let now = Clock.now()
        let id = Identifiers.newJobID()
        var record = JobRecord(id: id, type: spec.type.rawValue, input: spec, createdAt: now)
        record.idempotencyKey = idempotencyKey
        record.requestDigest = requestDigest
        // Reserve the key and the queue slot under the lock, write outside it.
        let reserved: Result<Void, Problem> = state.withLock { s in
            if s.stopping { return .failure(Problem(status: 503, code: "draining", title: "Server is shutting down", detail: "the server is draining and accepts no new jobs")) }
            if let k = idempotencyKey, let existing = s.idempotency[k] {
                guard let r = s.records[existing] else {
                    return .failure(Problem(status: 409, code: "idempotency_in_flight", title: "Request in progress", detail: "a request with this Idempotency-Key is still being processed"))
                }
                if r.requestDigest == requestDigest { return .failure(Problem(status: 200, code: "replay:" + r.id, title: "", detail: "")) }
                return .failure(Problem(status: 422, code: "idempotency_mismatch", title: "Idempotency-Key reused",
                                        detail: "this Idempotency-Key was used for a different request body (job \(r.id))"))
            }
            if s.queue.count >= settings.queueLimit {
                return .failure(Problem(status: 429, code: "queue_full", title: "Queue full", detail: "\(s.queue.count) jobs are queued (limit \(settings.queueLimit)); retry later"))
            }
            if let k = idempotencyKey { s.idempotency[k] = id }
            return .success(())
        }
        if case .failure(let p) = reserved {
            if p.status == 200, p.code.hasPrefix("replay:"), let r = self.record(String(p.code.dropFirst(7))) { return .replayed(r) }
            throw p
        }
        do {
            try FileManager.default.createDirectory(atPath: directory(id), withIntermediateDirectories: true)
            try persist(record)
            // The new directory's entry in jobs/ must be durable too (RELIABILITY.md D1/D2).
            try AtomicFile.syncDirectory(jobsDir)
        } catch {
            state.withLock { s in if let k = idempotencyKey { s.idempotency[k] = nil } }
            try? FileManager.default.removeItem(atPath: directory(id))
            throw Problem(status: 503, code: "storage_unavailable", title: "Storage unavailable", detail: "the job could not be stored durably")
        }
        state.withLock { s in
            s.records[id] = record
            s.order.append(id)
            s.queue.append(id)
        }
        appendEvent(id, "status", #"{"state":"queued"}"#)
        log(id, "queued")
        onChange(record)
        wake.signal()
        return .created(record)
    }

    /// Stores an uploaded model checkpoint as a succeeded `upload` job (usable as `{"job": id}`).
    public func importCheckpoint(bytes: [UInt8]) throws -> JobRecord {
        let now = Clock.now()
        let id = Identifiers.newJobID()
        var r = JobRecord(id: id, type: "upload", input: nil, createdAt: now)
        r.state = .succeeded
        r.transitions = [JobTransition(state: .succeeded, at: now)]
        try FileManager.default.createDirectory(atPath: directory(id), withIntermediateDirectories: true)
        let path = directory(id) + "/" + ArtifactName.model
        try AtomicFile.write(bytes, to: path)
        try AtomicFile.write(Array("\(SHA256.hex(of: bytes))  \(ArtifactName.model)\n".utf8), to: path + ".sha256")
        try persist(r)
        state.withLock { s in
            s.records[id] = r
            s.order.append(id)
        }
        onChange(r)
        return r
    }

    // MARK: cancel / delete

    public enum CancelOutcome: Sendable { case canceled(JobRecord), canceling(JobRecord), already(JobRecord), finished(JobRecord), missing }

    public func cancel(_ id: String) -> CancelOutcome {
        let now = Clock.now()
        let outcome: CancelOutcome = state.withLock { s in
            guard var r = s.records[id] else { return .missing }
            switch r.state {
            case .queued:
                _ = r.move(to: .canceled, at: now)
                s.queue.removeAll { $0 == id }
                s.records[id] = r
                return .canceled(r)
            case .running:
                _ = r.move(to: .canceling, at: now)
                s.cancelRequested.insert(id)
                s.records[id] = r
                return .canceling(r)
            case .canceling, .canceled: return .already(r)
            case .succeeded, .failed: return .finished(r)
            }
        }
        switch outcome {
        case .canceled(let r), .canceling(let r):
            persistOrDie(r)
            appendEvent(id, "status", #"{"state":"\#(r.state.rawValue)"}"#)
            log(id, r.state.rawValue)
            onChange(r)
            if r.state == .canceled { finished(r) }
        default: break
        }
        return outcome
    }

    public enum DeleteOutcome: Sendable { case deleted, active(JobState), missing }

    /// Removes a terminal job and its files.
    public func delete(_ id: String) -> DeleteOutcome {
        let outcome: DeleteOutcome = state.withLock { s in
            guard let r = s.records[id] else { return .missing }
            guard r.state.isTerminal else { return .active(r.state) }
            s.records[id] = nil
            s.order.removeAll { $0 == id }
            s.events[id] = nil
            if let k = r.idempotencyKey { s.idempotency[k] = nil }
            s.lastCountedStep[id] = nil
            return .deleted
        }
        if case .deleted = outcome {
            // Under the persist lock, so an in-flight write of the final record cannot race the
            // removal. The record goes first so a crash mid-delete never leaves a record without files.
            persistLock.withLock { _ in
                state.withLock { _ = $0.deleted.insert(id) }
                try? FileManager.default.removeItem(atPath: directory(id) + "/job.json")
                try? FileManager.default.removeItem(atPath: directory(id))
            }
        }
        return outcome
    }

    // MARK: events and logs

    /// Event ids start from the boot time in milliseconds × 1000, so an id from before a restart
    /// is always older than every event after it (Last-Event-ID then replays the new history).
    let seqBase = Int(Date().timeIntervalSince1970 * 1000) * 1000

    func appendEvent(_ id: String, _ name: String, _ data: String) {
        state.withLock { s in
            let seq = (s.nextSeq[id] ?? seqBase) + 1
            s.nextSeq[id] = seq
            var list = s.events[id] ?? []
            list.append(JobEvent(seq: seq, name: name, data: data))
            if list.count > 1024 { list.removeFirst(list.count - 1024) }
            s.events[id] = list
            eventHub.publish(id, list[list.count - 1])  // under the lock: subscribers see seq order
        }
    }

    /// Appends a timestamped line to the job's `log.txt` (and an SSE `log` event).
    func log(_ id: String, _ line: String) {
        let text = Clock.now() + " " + line + "\n"
        let path = directory(id) + "/log.txt"
        // O_APPEND: lines from the API and worker threads never overwrite each other. The log is
        // informational: a failed write is dropped, never fatal.
        let fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0o644)
        if fd >= 0 {
            let bytes = Array(text.utf8)
            _ = bytes.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
            close(fd)
        }
        let escaped = String(decoding: (try? JSONEncoder().encode(line)) ?? Data(), as: UTF8.self)
        appendEvent(id, "log", #"{"line":\#(escaped)}"#)
    }

    // MARK: workers

    /// Starts the worker threads.
    public func start() {
        for i in 0..<settings.workers {
            workersDone.enter()
            let t = Thread { [self] in
                // Compute threads inherit this nice value (Linux threads are scheduled separately).
                // PRIO_PROCESS with who = 0 is the calling thread on Linux (threads have their own nice).
                setpriority(__priority_which_t(PRIO_PROCESS.rawValue), 0, settings.computeNice)
                workerLoop()
                workersDone.leave()
            }
            t.name = "reflowd-worker-\(i)"
            t.stackSize = 16 << 20
            t.start()
        }
    }

    /// Stops taking jobs, asks running jobs to checkpoint and stop (they are requeued and resume
    /// on the next start), and waits up to `timeout` seconds. Returns whether all stopped.
    @discardableResult
    public func shutdown(timeout: Double) -> Bool {
        state.withLock { $0.stopping = true }
        for _ in 0..<settings.workers { wake.signal() }
        return workersDone.wait(timeout: .now() + timeout) == .success
    }

    /// For a graceful stop that timed out with jobs still running (a long sample or evaluate
    /// does not stop mid-solve): their current attempt is not a crash, so it is given back on
    /// disk before the process exits and a deploy never counts towards `maxAttempts`.
    public func forgiveRunningAttempts() {
        let running = state.withLock { s in s.records.values.filter { $0.state == .running || $0.state == .canceling } }
        for var r in running {
            r.attempts = max(0, r.attempts - 1)
            r.version += 1
            try? persist(r)
        }
    }

    private func workerLoop() {
        while true {
            wake.wait()
            let next: String? = state.withLock { s in
                if s.stopping { return nil }
                guard !s.queue.isEmpty else { return "" }
                s.running += 1
                return s.queue.removeFirst()
            }
            guard let id = next else { return }
            if id.isEmpty { continue }
            run(id)
            state.withLock { $0.running -= 1 }
        }
    }

    private func run(_ id: String) {
        let now = Clock.now()
        guard var r = state.withLock({ s -> JobRecord? in
            guard var r = s.records[id], r.state == .queued, let _ = r.input else { return nil }
            _ = r.move(to: .running, at: now)
            r.attempts += 1
            s.records[id] = r
            return r
        }), let spec = r.input else { return }
        // The attempt is counted on disk before any work, so a job that kills the process is
        // eventually failed instead of crash-looping (RELIABILITY.md D5).
        persistOrDie(r)
        appendEvent(id, "status", #"{"state":"running"}"#)
        log(id, "running (attempt \(r.attempts)) with \(settings.computeThreads) compute threads")
        onChange(r)
        let context = JobContext(directory: directory(id), threads: settings.computeThreads, resolver: ServerResolver(service: self),
                                 progress: { [self] p in progress(id, p) },
                                 shouldStop: { [self] in state.withLock { $0.stopping || $0.cancelRequested.contains(id) } })
        let outcome: Result<JobResult, any Error>
        do { outcome = .success(try JobRunner.run(spec, context: context)) } catch { outcome = .failure(error) }
        let end = Clock.now()
        r = state.withLock { s in
            var r = s.records[id]!
            let cancel = s.cancelRequested.remove(id) != nil
            switch outcome {
            case .success(let result):
                r.result = result
                _ = r.move(to: .succeeded, at: end)
                if var p = r.progress { p.fraction = 1; p.etaSeconds = 0; r.progress = p }
            case .failure(JobError.interrupted) where cancel:
                _ = r.move(to: .canceled, at: end)
            case .failure(JobError.interrupted):
                // Shutdown: back to the queue; this attempt does not count as a crash.
                _ = r.move(to: .queued, at: end)
                r.attempts -= 1
            case .failure(let e):
                _ = r.move(to: .failed, at: end)
                r.error = Problem(status: 500, code: "job_failed", title: "Job failed", detail: "\(e)")
            }
            s.rate[id] = nil
            s.records[id] = r
            return r
        }
        persistOrDie(r)
        appendEvent(id, "status", #"{"state":"\#(r.state.rawValue)"}"#)
        log(id, r.state.rawValue + (r.error.map { ": " + $0.detail } ?? ""))
        onChange(r)
        if r.state.isTerminal { finished(r) }
    }

    private func finished(_ r: JobRecord) {
        state.withLock { $0.finishedByTypeState[r.type + "|" + r.state.rawValue, default: 0] += 1 }
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys]
        appendEvent(r.id, "completed", String(decoding: (try? e.encode(r)) ?? Data(), as: UTF8.self))
    }

    /// Terminal jobs finished since start, by "type|state".
    public var finishedCounts: [String: Int] { state.withLock { $0.finishedByTypeState } }

    private func progress(_ id: String, _ p: JobProgress) {
        let t = monotonicSeconds()
        let (record, emit, persistNow): (JobRecord?, Bool, Bool) = state.withLock { s in
            guard var r = s.records[id] else { return (nil, false, false) }
            var rate: Double?
            if let prev = s.rate[id], prev.step < p.done, t > prev.time {
                rate = Double(p.done - prev.step) / (t - prev.time)
            }
            if p.phase != "pairs" && p.phase != "evaluate" && p.phase != "sample" && p.phase != "invert" {
                let last = s.lastCountedStep[id] ?? p.done
                s.stepsTotal += max(0, p.done - last)
                s.lastCountedStep[id] = p.done
            }
            if s.rate[id] == nil || t - s.rate[id]!.time > 1 || p.phase != r.progress?.phase { s.rate[id] = (t, p.done) }
            let keepRate = rate ?? r.progress?.stepsPerSecond
            let fraction = p.total > 0 ? Double(p.done) / Double(p.total) : 0
            let eta = keepRate.flatMap { $0 > 0 ? Double(p.total - p.done) / $0 : nil }
            r.progress = JobProgressInfo(phase: p.phase, step: p.done, total: p.total, fraction: fraction, loss: p.loss,
                                         stepsPerSecond: keepRate, etaSeconds: eta)
            r.version += 1
            s.records[id] = r
            let emit = t - (s.lastProgressEvent[id] ?? 0) >= 0.5 || p.done == p.total
            if emit { s.lastProgressEvent[id] = t }
            let persistNow = t - (s.lastProgressPersist[id] ?? 0) >= 5
            if persistNow { s.lastProgressPersist[id] = t }
            return (r, emit, persistNow)
        }
        guard let record, let progress = record.progress else { return }
        if emit {
            let e = JSONEncoder()
            e.outputFormatting = [.sortedKeys]
            appendEvent(id, "progress", String(decoding: (try? e.encode(progress)) ?? Data(), as: UTF8.self))
            onChange(record)
        }
        if persistNow { try? persist(record) }
    }
}

/// The server failed to start (a bad store or config); the message says what to fix.
public struct ServerStartError: Error, CustomStringConvertible {
    public let description: String
    public init(_ d: String) { description = d }
}


/// Resolves `{"job": id}` references to finished jobs of this server; file paths are refused
/// (no user string ever becomes a path: RELIABILITY.md S1).
struct ServerResolver: ArtifactResolver {
    let service: JobService

    func path(for ref: ArtifactRef, kind: ArtifactKind) throws(SpecError) -> String {
        switch ref {
        case .path:
            throw SpecError(pointer: "/path", message: "file paths are not accepted by the server; upload the file or refer to a job with {\"job\": id}")
        case .job(let id, let artifact):
            guard Identifiers.isJobID(id), let r = service.record(id) else {
                throw SpecError(pointer: "/job", message: "no job '\(id.prefix(40))'")
            }
            guard r.state == .succeeded else {
                throw SpecError(pointer: "/job", message: "job \(id) is \(r.state.rawValue); it must have succeeded")
            }
            let name = (artifact ?? kind.rawValue) == "pairs" ? ArtifactName.pairs : ArtifactName.model
            let path = service.directory(id) + "/" + name
            guard FileManager.default.fileExists(atPath: path) else {
                throw SpecError(pointer: "/job", message: "job \(id) (\(r.type)) has no \(name)")
            }
            return path
        }
    }
}
