public import ReflowJobs
import ReflowStore
import ReflowEngine
import ReflowCodec
import ReflowFlow
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
    /// A job the server died under this many times without checkpoint progress fails (`crash_loop`).
    public var maxAttempts = 3
    /// Nice value of compute threads (> 0 keeps the HTTP side responsive during training).
    public var computeNice: Int32 = 5
    /// Below this many free bytes on the data directory's file system, `/readyz` is 503,
    /// submissions and uploads get 507, and queued jobs wait (0 disables the floor).
    public var minFreeBytes = 100 << 20
    /// Size of the emergency reserve file (`dataDir/.reserve`), released to write final records
    /// when the disk is full (0: no reserve).
    public var reserveBytes = 1 << 20
    /// Peak memory one job may plan to use; a submission whose estimate exceeds it gets 422.
    public var memoryBudgetBytes = Int.max
    /// Named image datasets (uploads, the config's map, built-ins); nil knows only the built-ins.
    public var datasets: DatasetStore? = nil

    public init(dataDir: String) { self.dataDir = dataDir }

    var schedulerSettings: SchedulerSettings { SchedulerSettings(queueLimit: queueLimit, maxAttempts: maxAttempts) }
}

/// A server-sent event of a job.
public struct JobEvent: Sendable {
    public var seq: Int
    public var name: String
    public var data: String
}

/// Writes a record file durably (injected by tests to simulate failing disks).
public typealias RecordWriter = @Sendable (_ bytes: [UInt8], _ path: String) throws -> Void

/// The durable job store: runs the ``Scheduler`` state machine and carries out its actions.
///
/// Every record lives in memory (the scheduler, under a `Mutex`) and on disk as
/// `jobs/<id>/job.json`, written atomically (temp → fsync → rename → fsync(dir)). A submission
/// is acknowledged only after its `spec.json` and record are on disk. Worker threads take jobs
/// in FIFO order and run them with ``JobRunner``; on startup, jobs found running are queued
/// again and resume from their checkpoints, unless they crashed the server `maxAttempts` times
/// without checkpoint progress. An unreadable record stops the server.
///
/// A record write that fails for lack of space releases the reserve file and is retried; if it
/// still fails the record is kept in memory and written again once space returns. Any other
/// write failure means the store is broken and stops the process (exit 75).
public final class JobService: Sendable {
    public let settings: JobSettings
    let jobsDir: String
    public let storage: StorageGuard

    struct State {
        var scheduler: Scheduler
        var events: [String: [JobEvent]] = [:]
        var nextSeq: [String: Int] = [:]
        var lastProgressEvent: [String: Double] = [:]
        var lastProgressPersist: [String: Double] = [:]
        var rate: [String: (time: Double, step: Int)] = [:]
        var stepsTotal = 0
        var lastCountedStep: [String: Int] = [:]
        var finishedByTypeState: [String: Int] = [:]
        /// Deleted jobs: a late persist of their record is skipped (it would recreate the directory).
        var deleted: Set<String> = []
        /// Records whose write failed for lack of space (written again by ``maintainStorage()``).
        var unsaved: [String: JobRecord] = [:]
        /// A worker left a queued job alone because free space was below the floor.
        var heldForSpace = false
    }
    let state: Mutex<State>
    /// Running jobs asked to stop (read by the runner between steps, without the main lock).
    let stopFlags = Mutex<Set<String>>([])
    let wake = DispatchSemaphore(value: 0)
    /// Serialises record writes; holds the version last written per job, so an older state never
    /// overwrites a newer one (without reading the file back).
    let persistLock = Mutex<[String: Int]>([:])
    let workersDone = DispatchGroup()
    /// Called after every record change (metrics, tests).
    let onChange: @Sendable (JobRecord) -> Void
    let writer: RecordWriter
    /// Called when the store is broken (a record write failed with anything but "no space").
    let onFatal: @Sendable (String) -> Void
    /// Pushes every appended event to the job's SSE subscribers.
    public let eventHub = JobEventHub()

    /// Loads every record under `dataDir/jobs`, removes temporary files left by a kill, and
    /// requeues interrupted jobs. Throws (and the server must not start) when a record cannot be read.
    public init(settings: JobSettings, onChange: @escaping @Sendable (JobRecord) -> Void = { _ in },
                writer: @escaping RecordWriter = JobService.atomicWriter,
                onFatal: @escaping @Sendable (String) -> Void = JobService.exitBrokenStore) throws {
        self.settings = settings
        self.onChange = onChange
        self.writer = writer
        self.onFatal = onFatal
        jobsDir = settings.dataDir + "/jobs"
        storage = StorageGuard(dataDir: settings.dataDir, minFreeBytes: settings.minFreeBytes, reserveBytes: settings.reserveBytes)
        state = Mutex(State(scheduler: Scheduler(settings: settings.schedulerSettings)))
        try FileManager.default.createDirectory(atPath: jobsDir, withIntermediateDirectories: true)
        try load()
        storage.ensureReserve()
    }

    /// The default writer: ``AtomicFile`` (temp → fsync → rename → fsync(dir)).
    public static let atomicWriter: RecordWriter = { bytes, path in try AtomicFile.write(bytes, to: path) }

    /// The default `onFatal`: logs and leaves at once with status 75 (EX_TEMPFAIL), without
    /// running atexit handlers while compute threads may still be inside OpenBLAS.
    public static let exitBrokenStore: @Sendable (String) -> Void = { message in
        FileHandle.standardError.write(Data("reflowd: FATAL: \(message)\n".utf8))
        _exit(75)
    }

    // MARK: loading

    /// Removes temporary files a kill left behind in `dir` (``JobDirectory/isLeftover(_:)``);
    /// returns how many.
    @discardableResult
    static func removeLeftovers(in dir: String) -> Int { JobDirectory(path: dir).removeTemporaries().count }

    private func load() throws {
        var leftovers = Self.removeLeftovers(in: settings.dataDir)
        let names = try FileManager.default.contentsOfDirectory(atPath: jobsDir).sorted()
        var records = [JobRecord]()
        for name in names {
            let jd = JobDirectory(jobsRoot: jobsDir, id: name), dir = jd.path
            var isDir: ObjCBool = false
            guard FileManager.default.fileExists(atPath: dir, isDirectory: &isDir), isDir.boolValue else { continue }
            leftovers += Self.removeLeftovers(in: dir)
            let path = jd.record
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
        if leftovers > 0 { Self.warn("removed \(leftovers) temporary file(s) left by an interrupted write") }
        let now = Clock.now()
        let actions = state.withLock { $0.scheduler.load(records, now: now, marker: progressMarker) }
        execute(actions)
    }

    // MARK: actions

    /// Carries out the scheduler's actions in order (outside the state lock).
    func execute(_ actions: [SchedulerAction]) {
        for action in actions {
            switch action {
            case .persist(let r): persistOrDefer(r)
            case .status(let id, let s): appendEvent(id, "status", #"{"state":"\#(s.rawValue)"}"#)
            case .log(let id, let line): log(id, line)
            case .completed(let r): finished(r)
            case .changed(let r): onChange(r)
            case .wakeWorker: wake.signal()
            case .requestStop(let id): _ = stopFlags.withLock { $0.insert(id) }
            }
        }
    }

    static func warn(_ message: String) {
        FileHandle.standardError.write(Data("reflowd: warning: \(message)\n".utf8))
    }

    // MARK: persistence

    /// The layout of a job's directory (``JobDirectory`` owns every file name).
    func jobDirectory(_ id: String) -> JobDirectory { JobDirectory(jobsRoot: jobsDir, id: id) }
    func directory(_ id: String) -> String { jobDirectory(id).path }

    /// Fingerprint of a job's progress files (checkpoint, pairs, model): name, inode, size and
    /// mtime. An attempt whose fingerprint changed made progress (the crash-loop rule).
    func progressMarker(_ id: String) -> String? {
        var parts = [String]()
        for name in [JobDirectory.Name.checkpoint, JobDirectory.Name.pairs, JobDirectory.Name.model] {
            var st = stat()
            if stat(jobDirectory(id).file(name), &st) == 0 {
                parts.append("\(name):\(st.st_ino):\(st.st_size):\(st.st_mtim.tv_sec).\(st.st_mtim.tv_nsec)")
            }
        }
        return parts.isEmpty ? nil : parts.joined(separator: ",")
    }

    /// Writes the record durably. Serialised, and never overwrites a newer version. A write that
    /// fails for lack of space releases the reserve and is tried once more.
    /// `useReserve`: a write that fails for lack of space may release the emergency reserve.
    /// Only state transitions may (a progress note is informational and must not use up the
    /// space a final record needs).
    func persist(_ r: JobRecord, useReserve: Bool = true) throws {
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys]
        let bytes = Array(try e.encode(r))
        let path = jobDirectory(r.id).record
        try persistLock.withLock { written in
            if state.withLock({ $0.deleted.contains(r.id) }) { return }
            if let prev = written[r.id], prev > r.version { return }
            do { try writer(bytes, path) } catch where StorageGuard.isOutOfSpace(error) {
                guard useReserve, storage.releaseReserve() else { throw error }
                Self.warn("disk full while writing the record of job \(r.id); released the \(settings.reserveBytes)-byte reserve")
                try writer(bytes, path)
            }
            written[r.id] = r.version
        }
        state.withLock { s in if let u = s.unsaved[r.id], u.version <= r.version { s.unsaved[r.id] = nil } }
    }

    /// Persists a state change. Out of space: the record stays in memory and is written again
    /// when space returns (a restart before that finds the previous record, which is safe:
    /// a running job is queued again). Any other failure means the store is broken: never
    /// continue as if an unwritten transition had happened.
    func persistOrDefer(_ r: JobRecord) {
        do { try persist(r) } catch where StorageGuard.isOutOfSpace(error) {
            state.withLock { s in if (s.unsaved[r.id]?.version ?? 0) < r.version { s.unsaved[r.id] = r } }
            Self.warn("disk full: the record of job \(r.id) (\(r.state.rawValue)) is kept in memory until space returns")
        } catch {
            onFatal("cannot persist job \(r.id): \(error)")
        }
    }

    /// Writes records that failed for lack of space, re-creates the reserve once free space is
    /// back above the floor, and releases workers held for space. Runs every 2 s.
    public func maintainStorage() {
        let pending = state.withLock { Array($0.unsaved.values) }
        for r in pending.sorted(by: { $0.id < $1.id }) { persistOrDefer(r) }
        guard !storage.isBelowFloor else { return }
        storage.ensureReserve()
        let release = state.withLock { s -> Int in
            guard s.heldForSpace else { return 0 }
            s.heldForSpace = false
            return s.scheduler.queue.count
        }
        for _ in 0..<release { wake.signal() }
    }

    /// Records not yet written because the disk was full.
    public var unsavedCount: Int { state.withLock { $0.unsaved.count } }

    private func scheduleMaintenance() {
        DispatchQueue.global(qos: .utility).asyncAfter(deadline: .now() + 2) { [weak self] in
            guard let self, !self.isStopping else { return }
            self.maintainStorage()
            self.scheduleMaintenance()
        }
    }

    // MARK: errors shown to clients

    /// A message with server paths removed: files of a job become `job_…/name`, temporary names
    /// their final name, anything else under the data directory `<dataDir>/…`.
    func redact(_ message: String) -> String {
        var m = message.replacingOccurrences(of: jobsDir + "/", with: "")
        m = m.replacingOccurrences(of: settings.dataDir, with: "<dataDir>")
        if let abs = try? FileManager.default.destinationOfSymbolicLink(atPath: settings.dataDir), !abs.isEmpty {
            m = m.replacingOccurrences(of: abs, with: "<dataDir>")
        }
        // ".model.safetensors.tmp-123-9fa0" → "model.safetensors"
        return m.replacingOccurrences(of: #"\.([A-Za-z0-9_.-]+?)\.tmp-[0-9]+-[0-9a-f]+"#, with: "$1", options: .regularExpression)
    }

    /// The stored failure of a run that threw `error`: typed job errors keep their code; storage
    /// errors become `io_error` naming the file (never its path).
    func failure(for error: any Error) -> JobFailure {
        if let e = error as? JobError { return JobFailure(code: e.code, message: redact(e.description)) }
        if let e = error as? StoreError {
            let base = redact(String(e.path.split(separator: "/").last ?? ""))
            if StorageGuard.isOutOfSpace(e) {
                return JobFailure(code: "io_error", message: "disk full: could not write \(base) (\(e.call): \(e.message), errno \(e.errno)); free space and submit the job again")
            }
            return JobFailure(code: "io_error", message: "\(e.call) of \(base) failed: \(e.message) (errno \(e.errno))")
        }
        if StorageGuard.isOutOfSpace(error) {
            return JobFailure(code: "io_error", message: "disk full: a file of the job could not be written; free space and submit the job again")
        }
        return JobFailure(code: "job_failed", message: redact("\(error)"))
    }

    // MARK: queries

    public func record(_ id: String) -> JobRecord? { state.withLock { $0.scheduler.record(id) } }

    /// Whether a queued or running job's input names the dataset `name` (`"dataset": name`), so
    /// the dataset store refuses to replace or delete it under the job.
    public func usesDataset(_ name: String) -> Bool {
        let needle = "\"dataset\":\"\(name)\""
        let active = list(states: [.queued, .running, .canceling], types: nil, limit: Int.max, after: nil).items
        return active.contains { r in
            guard let input = r.input, let data = try? JSONEncoder().encode(input) else { return false }
            return String(decoding: data, as: UTF8.self).contains(needle)
        }
    }

    /// Jobs newest first, filtered, after the cursor (an id), at most `limit`.
    public func list(states: Set<JobState>?, types: Set<String>?, limit: Int, after cursor: String?) -> (items: [JobRecord], next: String?) {
        state.withLock { s in
            var out = [JobRecord]()
            var started = cursor == nil
            var next: String?
            for id in s.scheduler.order.reversed() {
                if !started { if id == cursor { started = true }; continue }
                guard let r = s.scheduler.records[id] else { continue }
                if let states, !states.contains(r.state) { continue }
                if let types, !types.contains(r.type) { continue }
                if out.count == limit { next = out.last?.id; break }
                out.append(r)
            }
            return (out, next)
        }
    }

    public func queuePosition(_ id: String) -> Int? { state.withLock { $0.scheduler.queuePosition(id) } }

    public var counts: [JobState: Int] {
        state.withLock { s in
            var c = [JobState: Int]()
            for r in s.scheduler.records.values { c[r.state, default: 0] += 1 }
            return c
        }
    }

    public var queueLength: Int { state.withLock { $0.scheduler.queue.count } }
    public var stepsTotal: Int { state.withLock { $0.stepsTotal } }
    public var isStopping: Bool { state.withLock { $0.scheduler.stopping } }

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

    static func insufficientStorage(_ what: String) -> Problem {
        Problem(status: 507, code: "insufficient_storage", title: "Insufficient storage",
                detail: "the server's disk is too full to store \(what); retry once space has been freed")
    }

    /// The job an earlier submission with this key and body created (see ``Scheduler/replay(idempotencyKey:requestDigest:)``).
    public func replayedRecord(idempotencyKey: String, requestDigest: String) -> JobRecord? {
        state.withLock { $0.scheduler.replay(idempotencyKey: idempotencyKey, requestDigest: requestDigest) }
    }

    /// Creates a job from a prepared spec; returns once `spec.json` and the record are durable.
    public func submit(_ spec: JobSpec, idempotencyKey: String?, requestDigest: String) throws(Problem) -> SubmitOutcome {
        let now = Clock.now()
        let id = Identifiers.newJobID()
        var record = JobRecord(id: id, type: spec.type, input: spec, createdAt: now)
        record.idempotencyKey = idempotencyKey
        record.requestDigest = requestDigest
        let reservation = state.withLock { $0.scheduler.reserveSubmission(id: id, idempotencyKey: idempotencyKey, requestDigest: requestDigest) }
        switch reservation {
        case .reserved: break
        case .replay(let r): return .replayed(r)
        case .refused(.draining):
            throw Problem(status: 503, code: "draining", title: "Server is shutting down", detail: "the server is draining and accepts no new jobs")
        case .refused(.idempotencyInFlight):
            throw Problem(status: 409, code: "idempotency_in_flight", title: "Request in progress", detail: "a request with this Idempotency-Key is still being processed")
        case .refused(.idempotencyMismatch(let existing)):
            throw Problem(status: 422, code: "idempotency_mismatch", title: "Idempotency-Key reused",
                          detail: "this Idempotency-Key was used for a different request body (job \(existing))")
        case .refused(.queueFull(let queued, let limit)):
            throw Problem(status: 429, code: "queue_full", title: "Queue full", detail: "\(queued) jobs are queued (limit \(limit)); retry later")
        }
        if storage.isBelowFloor {
            state.withLock { $0.scheduler.abortSubmission(id: id, idempotencyKey: idempotencyKey) }
            throw Self.insufficientStorage("a new job")
        }
        do {
            try FileManager.default.createDirectory(atPath: directory(id), withIntermediateDirectories: true)
            // The canonical spec (the docs promise spec.json in every job directory), then the
            // record; the directory fsync of the record write covers both entries.
            try AtomicFile.write(SpecParser.canonicalJSON(spec), to: jobDirectory(id).spec)
            try persist(record)
            // The new directory's entry in jobs/ must be durable too.
            try AtomicFile.syncDirectory(jobsDir)
        } catch {
            state.withLock { $0.scheduler.abortSubmission(id: id, idempotencyKey: idempotencyKey) }
            try? FileManager.default.removeItem(atPath: directory(id))
            if StorageGuard.isOutOfSpace(error) { throw Self.insufficientStorage("a new job") }
            Self.warn("cannot store job \(id): \(error)")
            throw Problem(status: 503, code: "storage_unavailable", title: "Storage unavailable", detail: "the job could not be stored durably")
        }
        let actions: [SchedulerAction]
        do { actions = try state.withLock { s throws(SchedulerError) in try s.scheduler.commitSubmission(record) } } catch {
            Self.warn("\(error)")
            throw Problem(status: 500, code: "internal_error", title: "Internal error", detail: "job \(id) could not be queued")
        }
        execute(actions)
        return .created(record)
    }

    /// Why an upload was not stored.
    public enum ImportFailure: Error, Sendable {
        /// Not a reflowd model checkpoint (the message names no path).
        case invalid(String)
        case outOfSpace
        case storage
    }

    /// Stores an uploaded model checkpoint as a succeeded `upload` job (usable as `{"job": id}`).
    /// The file is written into the new job's directory and validated there (one write).
    public func importCheckpoint(bytes: [UInt8]) throws(ImportFailure) -> JobRecord {
        if storage.isBelowFloor { throw .outOfSpace }
        let now = Clock.now()
        let id = Identifiers.newJobID()
        var r = JobRecord(id: id, type: "upload", input: nil, createdAt: now)
        r.state = .succeeded
        r.transitions = [JobTransition(state: .succeeded, at: now)]
        let dir = directory(id)
        let path = jobDirectory(id).model
        do {
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
            try AtomicFile.write(bytes, to: path)
        } catch {
            try? FileManager.default.removeItem(atPath: dir)
            throw StorageGuard.isOutOfSpace(error) ? .outOfSpace : .storage
        }
        do { _ = try ModelArtifact.read(path: path) } catch {
            try? FileManager.default.removeItem(atPath: dir)
            throw .invalid("\(error)".replacingOccurrences(of: path, with: "the uploaded checkpoint"))
        }
        do {
            try AtomicFile.write(Array("\(SHA256.hex(of: bytes))  \(JobDirectory.Name.model)\n".utf8), to: path + ".sha256")
            try persist(r)
            try AtomicFile.syncDirectory(jobsDir)
        } catch {
            try? FileManager.default.removeItem(atPath: dir)
            throw StorageGuard.isOutOfSpace(error) ? .outOfSpace : .storage
        }
        do { execute(try state.withLock { s throws(SchedulerError) in try s.scheduler.addFinished(r) }) } catch {
            Self.warn("\(error)")
            throw .storage
        }
        return r
    }

    // MARK: cancel / delete

    public typealias CancelOutcome = Scheduler.CancelOutcome

    public func cancel(_ id: String) -> CancelOutcome {
        let now = Clock.now()
        let (outcome, actions) = state.withLock { $0.scheduler.cancel(id, now: now) }
        execute(actions)
        return outcome
    }

    public enum DeleteOutcome: Sendable { case deleted, active(JobState), missing }

    /// Removes a terminal job and its files.
    public func delete(_ id: String) -> DeleteOutcome {
        let outcome: DeleteOutcome = state.withLock { s in
            switch s.scheduler.delete(id) {
            case .missing: return .missing
            case .active(let st): return .active(st)
            case .deleted:
                s.events[id] = nil
                s.lastCountedStep[id] = nil
                s.unsaved[id] = nil
                return .deleted
            }
        }
        if case .deleted = outcome {
            // Under the persist lock, so an in-flight write of the final record cannot race the
            // removal. The record goes first so a crash mid-delete never leaves a record without files.
            persistLock.withLock { _ in
                state.withLock { _ = $0.deleted.insert(id) }
                try? FileManager.default.removeItem(atPath: jobDirectory(id).record)
                try? FileManager.default.removeItem(atPath: directory(id))
            }
        }
        return outcome
    }

    // MARK: events and logs

    /// Event ids start from the boot time in milliseconds × 1000, so an id from before a restart
    /// is always older than every event after it (Last-Event-ID then replays the new history).
    let seqBase = Int(Date().timeIntervalSince1970 * 1000) * 1000

    /// The single place where job events are produced.
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
        let path = jobDirectory(id).log
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

    /// Sets the calling thread's nice value (Linux schedules threads separately, and threads
    /// created afterwards inherit it). Returns nil on success, else a warning naming errno.
    static func applyNice(_ nice: Int32) -> String? {
        guard nice != 0 else { return nil }
        // PRIO_PROCESS with who = 0 is the calling thread on Linux.
        guard setpriority(__priority_which_t(PRIO_PROCESS.rawValue), 0, nice) == 0 else {
            let e = errno
            return "setpriority(PRIO_PROCESS, 0, \(nice)) failed: \(String(cString: strerror(e))) (errno \(e)); compute threads run at the HTTP side's priority (under systemd, allow setpriority in SystemCallFilter=; see deploy/README.md)"
        }
        return nil
    }

    /// Starts the worker threads and the storage check.
    public func start() {
        for i in 0..<settings.workers {
            workersDone.enter()
            let t = Thread { [self] in
                if let warning = Self.applyNice(settings.computeNice) { Self.warn(warning) }
                workerLoop()
                workersDone.leave()
            }
            t.name = "reflowd-worker-\(i)"
            t.stackSize = 16 << 20
            t.start()
        }
        scheduleMaintenance()
    }

    /// Stops taking jobs, asks running jobs to checkpoint and stop (they are requeued and resume
    /// on the next start), and waits up to `timeout` seconds. Returns whether all stopped.
    @discardableResult
    public func shutdown(timeout: Double) -> Bool {
        execute(state.withLock { $0.scheduler.beginShutdown() })
        for _ in 0..<settings.workers { wake.signal() }
        return workersDone.wait(timeout: .now() + timeout) == .success
    }

    /// For a graceful stop that timed out with jobs still running (a long sample does not stop
    /// mid-solve): their records go back to `queued` on disk, with the attempt given back, so
    /// they resume from their last checkpoint on the next start. The caller then leaves with
    /// `_exit` (no atexit handlers or static destructors while compute threads still run).
    public func requeueRunningForExit() {
        execute(state.withLock { $0.scheduler.requeueForExit(now: Clock.now()) })
    }

    private func workerLoop() {
        while true {
            wake.wait()
            if storage.isBelowFloor {
                // Do not start work that would fill the disk further; maintainStorage wakes us.
                let queued = state.withLock { s -> Bool in
                    guard !s.scheduler.stopping else { return false }
                    s.heldForSpace = true
                    return true
                }
                if queued { continue }
            }
            let next = state.withLock { $0.scheduler.nextJob(now: Clock.now(), marker: progressMarker) }
            switch next {
            case .stopping: return
            case .idle: continue
            case .run(let r, let actions):
                execute(actions)
                run(r)
            }
        }
    }

    private func run(_ r: JobRecord) {
        let id = r.id
        guard let spec = r.input else { return }
        log(id, "running (attempt \(r.attempts)) with \(settings.computeThreads) compute threads")
        let context = JobContext(directory: directory(id), threads: settings.computeThreads, resolver: ServerResolver(service: self),
                                 progress: { [self] p in progress(id, p) },
                                 shouldStop: { [self] in stopFlags.withLock { $0.contains(id) } },
                                 hiddenPaths: [jobsDir + "/", settings.dataDir + "/"])
        let outcome: Scheduler.Outcome
        do { outcome = .succeeded(try JobRunner.run(spec, context: context)) } catch JobError.interrupted {
            outcome = .interrupted
        } catch {
            outcome = .failed(failure(for: error))
        }
        let end = Clock.now()
        let actions: [SchedulerAction]
        do {
            actions = try state.withLock { s throws(SchedulerError) in
                s.rate[id] = nil
                return try s.scheduler.jobFinished(id, outcome: outcome, now: end)
            }
        } catch {
            // For example, the record went back to the queue for a process exit meanwhile.
            Self.warn("\(error) (run outcome \(outcome.label) not applied)")
            actions = []
        }
        _ = stopFlags.withLock { $0.remove(id) }
        execute(actions)
    }

    private func finished(_ r: JobRecord) {
        state.withLock { $0.finishedByTypeState[r.type + "|" + r.state.rawValue, default: 0] += 1 }
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys]
        appendEvent(r.id, "completed", String(decoding: (try? e.encode(JobView(record: r, queuePosition: nil))) ?? Data(), as: UTF8.self))
    }

    /// Terminal jobs finished since start, by "type|state".
    public var finishedCounts: [String: Int] { state.withLock { $0.finishedByTypeState } }

    private func progress(_ id: String, _ p: JobProgress) {
        let t = monotonicSeconds()
        let updated: Result<(JobRecord, Bool, Bool), SchedulerError> = state.withLock { s in
            guard let current = s.scheduler.record(id) else { return .failure(.unknownJob(id)) }
            var rate: Double?
            if let prev = s.rate[id], prev.step < p.done, t > prev.time {
                rate = Double(p.done - prev.step) / (t - prev.time)
            }
            if JobKinds.isTrainingPhase(p.phase) {
                let last = s.lastCountedStep[id] ?? p.done
                s.stepsTotal += max(0, p.done - last)
                s.lastCountedStep[id] = p.done
            }
            if s.rate[id] == nil || t - s.rate[id]!.time > 1 || p.phase != current.progress?.phase { s.rate[id] = (t, p.done) }
            let keepRate = rate ?? current.progress?.stepsPerSecond
            let fraction = p.total > 0 ? Double(p.done) / Double(p.total) : 0
            let eta = keepRate.flatMap { $0 > 0 ? Double(p.total - p.done) / $0 : nil }
            let info = JobProgressInfo(phase: p.phase, step: p.done, total: p.total, fraction: fraction, loss: p.loss,
                                       stepsPerSecond: keepRate, etaSeconds: eta, metrics: p.metrics ?? current.progress?.metrics)
            let r: JobRecord
            do throws(SchedulerError) { r = try s.scheduler.progress(id, info) } catch { return .failure(error) }
            // Reports with measurements are never throttled away (a prune cycle's DNR is one event).
            let emit = t - (s.lastProgressEvent[id] ?? 0) >= 0.5 || p.done == p.total || p.metrics != nil
            if emit { s.lastProgressEvent[id] = t }
            let persistNow = t - (s.lastProgressPersist[id] ?? 0) >= 5
            if persistNow { s.lastProgressPersist[id] = t }
            return .success((r, emit, persistNow))
        }
        let record: JobRecord, emit: Bool, persistNow: Bool
        switch updated {
        case .success(let v): (record, emit, persistNow) = v
        case .failure(let e):
            Self.warn("progress of job \(id) dropped: \(e)")
            return
        }
        guard let progress = record.progress else { return }
        if emit {
            let e = JSONEncoder()
            e.outputFormatting = [.sortedKeys]
            appendEvent(id, "progress", String(decoding: (try? e.encode(progress)) ?? Data(), as: UTF8.self))
            onChange(record)
        }
        // Progress is informational: a failed write is retried with the next one, never fatal.
        if persistNow { try? persist(record, useReserve: false) }
    }
}

extension Scheduler.Outcome {
    var label: String {
        switch self {
        case .succeeded: return "succeeded"
        case .failed(let f): return "failed (\(f.code))"
        case .interrupted: return "interrupted"
        }
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

    func dataset(_ name: String) throws(SpecError) -> DatasetLocation {
        guard let store = service.settings.datasets else {
            do { return try BuiltinImageSets.locate(name) } catch { throw SpecError(pointer: "/dataset", message: "\(error)") }
        }
        do { return try store.resolve(name) } catch { throw SpecError(pointer: "/dataset", message: error.message) }
    }

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
            let wanted = artifact ?? (kind == .points ? "samples" : kind.rawValue)
            guard let path = service.jobDirectory(id).artifactFile(wanted),
                  FileManager.default.fileExists(atPath: path) else {
                throw SpecError(pointer: "/job", message: "job \(id) (\(r.type)) has no \(wanted)")
            }
            return path
        }
    }
}
