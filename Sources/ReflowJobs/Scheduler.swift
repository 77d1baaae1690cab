/// Limits the scheduler enforces.
public struct SchedulerSettings: Sendable, Equatable {
    /// Queued jobs beyond this are refused.
    public var queueLimit: Int
    /// Attempts without checkpoint progress (the server died under the job) before `crash_loop`.
    public var maxAttempts: Int

    public init(queueLimit: Int = 64, maxAttempts: Int = 3) {
        self.queueLimit = queueLimit
        self.maxAttempts = maxAttempts
    }
}

/// Something the owner of a ``Scheduler`` must do, in the order given.
public enum SchedulerAction: Sendable, Equatable {
    /// Write the record durably before carrying out the actions after it.
    case persist(JobRecord)
    /// Publish a `status` event for the job's new state.
    case status(id: String, state: JobState)
    /// Append a line to the job's log.
    case log(id: String, line: String)
    /// The job reached a terminal state (the `completed` event, metrics).
    case completed(JobRecord)
    /// The record changed (for observers such as metrics and caches).
    case changed(JobRecord)
    /// A job was queued: wake one worker.
    case wakeWorker
    /// Ask the running job to checkpoint and stop at its next safe point.
    case requestStop(id: String)
}

/// A transition the scheduler refused; the caller logs it (it is never silently ignored).
public enum SchedulerError: Error, Equatable, Sendable, CustomStringConvertible {
    case unknownJob(String)
    case illegalTransition(id: String, from: JobState, to: JobState)
    case notRunning(id: String, state: JobState)

    public var description: String {
        switch self {
        case .unknownJob(let id): return "scheduler: no job \(id)"
        case .illegalTransition(let id, let from, let to): return "scheduler: job \(id) cannot move from \(from.rawValue) to \(to.rawValue)"
        case .notRunning(let id, let state): return "scheduler: job \(id) is \(state.rawValue), not running"
        }
    }
}

/// The job scheduler as a value: a state machine over job records whose mutating methods
/// return the ``SchedulerAction``s to carry out (persist, publish, wake a worker, stop a job).
///
/// It does no I/O and takes no locks; the owner (the server's `JobService`) holds it under a
/// mutex and executes the actions outside it. Every transition is checked: an illegal one
/// throws ``SchedulerError`` and leaves the state unchanged.
public struct Scheduler: Sendable {
    public let settings: SchedulerSettings
    public private(set) var records: [String: JobRecord] = [:]
    /// Ids in creation order.
    public private(set) var order: [String] = []
    /// Queued ids, first to run first.
    public private(set) var queue: [String] = []
    /// Jobs a worker is running (state `running` or `canceling`).
    public private(set) var running: Set<String> = []
    /// Running jobs asked to stop because the user canceled them.
    public private(set) var cancelRequested: Set<String> = []
    /// Idempotency-Key → job id (reserved while a submission is being written).
    public private(set) var idempotency: [String: String] = [:]
    /// True once shutdown began: no job starts any more and submissions are refused.
    public private(set) var stopping = false

    public init(settings: SchedulerSettings) { self.settings = settings }

    // MARK: queries

    public func record(_ id: String) -> JobRecord? { records[id] }
    public func queuePosition(_ id: String) -> Int? { queue.firstIndex(of: id) }
    /// Whether the running job should stop at its next safe point (cancel or shutdown).
    public func shouldStop(_ id: String) -> Bool { stopping || cancelRequested.contains(id) }

    // MARK: start-up

    /// Takes the records read from disk. A job found `running` died with the server: it is
    /// queued again, unless this was its `maxAttempts`-th crash without checkpoint progress
    /// (`marker(id)` is the fingerprint of its checkpoint files now, compared with the one taken
    /// when the attempt started). A job found `canceling` is canceled.
    public mutating func load(_ loaded: [JobRecord], now: String, marker: (String) -> String?) -> [SchedulerAction] {
        var actions = [SchedulerAction]()
        for var r in loaded.sorted(by: { $0.id < $1.id }) where records[r.id] == nil {
            switch r.state {
            case .running:
                let progressed = marker(r.id) != r.attemptMarker
                if !progressed { r.crashes += 1 }
                if r.crashes >= settings.maxAttempts {
                    _ = r.move(to: .failed, at: now)
                    r.error = .crashLoop(attempts: r.crashes)
                    actions += [.persist(r), .log(id: r.id, line: "failed: \(r.error!.message)"), .completed(r)]
                } else {
                    _ = r.move(to: .queued, at: now)
                    actions += [.persist(r), .log(id: r.id, line: progressed
                        ? "queued again after a server restart (the last attempt made checkpoint progress)"
                        : "queued again after a server restart (\(r.crashes) attempt(s) without progress of \(settings.maxAttempts))")]
                }
            case .canceling:
                // The stop request was acknowledged; the run it stopped is gone.
                r.state = .canceled
                r.transitions.append(JobTransition(state: .canceled, at: now))
                r.version += 1
                actions += [.persist(r), .completed(r)]
            case .queued where r.input == nil:
                // A record this build cannot run (a kind it does not know, from a newer
                // release): failed loudly instead of queued forever.
                _ = r.move(to: .failed, at: now)
                r.error = JobFailure(code: "unknown_type", message: "this server has no job kind \"\(r.type)\" (one of \(JobKinds.names.joined(separator: ", ")))")
                actions += [.persist(r), .log(id: r.id, line: "failed: \(r.error!.message)"), .completed(r)]
            default: break
            }
            records[r.id] = r
            order.append(r.id)
            if r.state == .queued {
                queue.append(r.id)
                actions.append(.wakeWorker)
            }
            if let k = r.idempotencyKey { idempotency[k] = r.id }
        }
        return actions
    }

    // MARK: submission

    /// Why a submission was not reserved.
    public enum Refusal: Sendable, Equatable {
        case draining
        case idempotencyInFlight
        case idempotencyMismatch(existing: String)
        case queueFull(queued: Int, limit: Int)
    }

    public enum Reservation: Sendable, Equatable {
        /// Write the record durably, then call ``commitSubmission(_:)`` (or ``abortSubmission(id:idempotencyKey:)``).
        case reserved
        /// Same key, same body: the earlier job.
        case replay(JobRecord)
        case refused(Refusal)
    }

    /// First phase of a submission: checks the queue limit and the idempotency key, and reserves the key.
    public mutating func reserveSubmission(id: String, idempotencyKey: String?, requestDigest: String) -> Reservation {
        if stopping { return .refused(.draining) }
        if let k = idempotencyKey, let existing = idempotency[k] {
            guard let r = records[existing] else { return .refused(.idempotencyInFlight) }
            return r.requestDigest == requestDigest ? .replay(r) : .refused(.idempotencyMismatch(existing: r.id))
        }
        if queue.count >= settings.queueLimit { return .refused(.queueFull(queued: queue.count, limit: settings.queueLimit)) }
        if let k = idempotencyKey { idempotency[k] = id }
        return .reserved
    }

    /// The job an earlier request with this Idempotency-Key and the same body created, if any:
    /// a replay is answered with it before the body is checked again (the jobs it references
    /// or the memory budget may have changed since).
    public func replay(idempotencyKey k: String, requestDigest: String) -> JobRecord? {
        guard let id = idempotency[k], let r = records[id], r.requestDigest == requestDigest else { return nil }
        return r
    }

    /// The reserved submission could not be stored: releases its key.
    public mutating func abortSubmission(id: String, idempotencyKey: String?) {
        if let k = idempotencyKey, idempotency[k] == id { idempotency[k] = nil }
    }

    /// Second phase: the record is durable; the job joins the queue.
    public mutating func commitSubmission(_ record: JobRecord) throws(SchedulerError) -> [SchedulerAction] {
        guard record.state == .queued else { throw .illegalTransition(id: record.id, from: record.state, to: .queued) }
        guard records[record.id] == nil else { throw .illegalTransition(id: record.id, from: records[record.id]!.state, to: .queued) }
        records[record.id] = record
        order.append(record.id)
        queue.append(record.id)
        return [.status(id: record.id, state: .queued), .log(id: record.id, line: "queued"), .changed(record), .wakeWorker]
    }

    /// Adds a record that is already terminal and durable (an uploaded checkpoint).
    public mutating func addFinished(_ record: JobRecord) throws(SchedulerError) -> [SchedulerAction] {
        guard record.state.isTerminal, records[record.id] == nil else {
            throw .illegalTransition(id: record.id, from: record.state, to: record.state)
        }
        records[record.id] = record
        order.append(record.id)
        return [.changed(record)]
    }

    // MARK: running

    /// What a free worker should do.
    public enum Next: Sendable, Equatable {
        /// Carry out the actions (the record is persisted first), then run the job.
        case run(JobRecord, [SchedulerAction])
        case idle
        case stopping
    }

    /// A worker is free: the first queued job moves to `running`, its attempt is counted, and
    /// the fingerprint of its checkpoint files (`marker`) is recorded for the crash-loop rule.
    public mutating func nextJob(now: String, marker: (String) -> String?) -> Next {
        if stopping { return .stopping }
        while !queue.isEmpty {
            let id = queue.removeFirst()
            guard var r = records[id], r.state == .queued, r.input != nil else { continue }
            _ = r.move(to: .running, at: now)
            r.attempts += 1
            r.attemptMarker = marker(id)
            records[id] = r
            running.insert(id)
            return .run(r, [.persist(r), .status(id: id, state: .running), .changed(r)])
        }
        return .idle
    }

    /// How a run ended.
    public enum Outcome: Sendable, Equatable {
        case succeeded(JobResult)
        case failed(JobFailure)
        /// The run stopped at a safe point because ``shouldStop(_:)`` said so.
        case interrupted
    }

    /// A worker finished running `id`. A user cancel turns an interruption into `canceled`; a
    /// shutdown puts the job back in the queue and gives the attempt back.
    public mutating func jobFinished(_ id: String, outcome: Outcome, now: String) throws(SchedulerError) -> [SchedulerAction] {
        guard var r = records[id] else { throw .unknownJob(id) }
        guard running.contains(id), r.state == .running || r.state == .canceling else { throw .notRunning(id: id, state: r.state) }
        let canceled = cancelRequested.contains(id)
        let next: JobState
        switch outcome {
        case .succeeded: next = .succeeded
        case .failed: next = .failed
        case .interrupted: next = canceled ? .canceled : .queued
        }
        guard r.state.canMove(to: next) else { throw .illegalTransition(id: id, from: r.state, to: next) }
        running.remove(id)
        cancelRequested.remove(id)
        _ = r.move(to: next, at: now)
        switch outcome {
        case .succeeded(let result):
            r.result = result
            if var p = r.progress { p.fraction = 1; p.etaSeconds = 0; r.progress = p }
        case .failed(let failure):
            r.error = failure
        case .interrupted where next == .queued:
            // Shutdown: not a crash, and the attempt does not count.
            r.attempts = max(0, r.attempts - 1)
            queue.insert(id, at: 0)
        case .interrupted: break
        }
        records[id] = r
        var actions: [SchedulerAction] = [.persist(r), .status(id: id, state: r.state),
                                          .log(id: id, line: r.state.rawValue + (r.error.map { ": " + $0.description } ?? "")),
                                          .changed(r)]
        if r.state.isTerminal { actions.append(.completed(r)) }
        return actions
    }

    /// Progress of a running job; returns the updated record (the caller decides when to persist it).
    public mutating func progress(_ id: String, _ info: JobProgressInfo) throws(SchedulerError) -> JobRecord {
        guard var r = records[id] else { throw .unknownJob(id) }
        guard r.state == .running || r.state == .canceling else { throw .notRunning(id: id, state: r.state) }
        r.progress = info
        r.version += 1
        records[id] = r
        return r
    }

    // MARK: cancel and delete

    public enum CancelOutcome: Sendable, Equatable {
        case canceled(JobRecord), canceling(JobRecord), already(JobRecord), finished(JobRecord), missing
    }

    /// Cancels a queued job at once; asks a running one to stop (it becomes `canceled` when its
    /// worker reports the interruption).
    public mutating func cancel(_ id: String, now: String) -> (CancelOutcome, [SchedulerAction]) {
        guard var r = records[id] else { return (.missing, []) }
        switch r.state {
        case .queued:
            _ = r.move(to: .canceled, at: now)
            queue.removeAll { $0 == id }
            records[id] = r
            return (.canceled(r), [.persist(r), .status(id: id, state: .canceled), .log(id: id, line: "canceled"), .changed(r), .completed(r)])
        case .running:
            _ = r.move(to: .canceling, at: now)
            cancelRequested.insert(id)
            records[id] = r
            return (.canceling(r), [.persist(r), .requestStop(id: id), .status(id: id, state: .canceling),
                                    .log(id: id, line: "canceling"), .changed(r)])
        case .canceling, .canceled: return (.already(r), [])
        case .succeeded, .failed: return (.finished(r), [])
        }
    }

    public enum DeleteOutcome: Sendable, Equatable { case deleted(JobRecord), active(JobState), missing }

    /// Forgets a terminal job (the caller removes its files).
    public mutating func delete(_ id: String) -> DeleteOutcome {
        guard let r = records[id] else { return .missing }
        guard r.state.isTerminal else { return .active(r.state) }
        records[id] = nil
        order.removeAll { $0 == id }
        if let k = r.idempotencyKey, idempotency[k] == id { idempotency[k] = nil }
        return .deleted(r)
    }

    // MARK: shutdown

    /// Stops starting jobs and asks every running job to checkpoint and stop.
    public mutating func beginShutdown() -> [SchedulerAction] {
        stopping = true
        return running.sorted().map { .requestStop(id: $0) }
    }

    /// The drain timed out with jobs still running and the process is about to exit: their
    /// records go back to `queued` (the attempt is given back; they resume from their last
    /// checkpoint on the next start). A `canceling` job stays so and is canceled on the next start.
    /// Workers that report later get ``SchedulerError/notRunning(id:state:)``.
    public mutating func requeueForExit(now: String) -> [SchedulerAction] {
        var actions = [SchedulerAction]()
        for id in running.sorted() {
            guard var r = records[id] else { continue }
            running.remove(id)
            guard r.state == .running, r.move(to: .queued, at: now) else { continue }
            r.attempts = max(0, r.attempts - 1)
            records[id] = r
            queue.insert(id, at: 0)
            actions += [.persist(r), .log(id: id, line: "queued again: the server stopped before the job reached a safe point")]
        }
        return actions
    }
}
