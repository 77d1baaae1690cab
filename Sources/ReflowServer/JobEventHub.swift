import ReflowHTTP
import ReflowEngine
import Foundation
import ReflowJobs
import Synchronization

/// Fans job events out to push subscribers (the SSE streams of `GET /v1/jobs/{id}/events`).
///
/// ``JobService`` publishes every event it appends, in sequence order, while it holds its state
/// lock; the hub hands the event to each subscriber of that job, which writes it to its
/// ``HTTPStreamSink`` without blocking. So an open stream costs no thread: it is an entry in a
/// per-job list plus its connection's buffers. One shared timer (not one per stream) sends the
/// `: keep-alive` comments, ends the streams of deleted jobs and, for a finished job whose
/// history was lost in a restart, sends `completed` from the record.
///
/// Lock order: `JobService.state` → subscriber → sink. The hub's own lock is never held while a
/// subscriber's is taken, and neither is held while the job service is called.
public final class JobEventHub: Sendable {
    /// After this long without an event a stream gets a `: keep-alive` comment (docs/API.md: 15 s).
    public let heartbeatInterval: Double
    /// The shared timer's period.
    let tickInterval: Double
    private let subscribers = Mutex<[String: [ObjectIdentifier: JobEventStream]]>([:])
    private let timer = Mutex<(any DispatchSourceTimer)?>(nil)

    /// - Parameters:
    ///   - heartbeatInterval: seconds without an event before a keep-alive comment.
    ///   - tickInterval: period of the shared timer (heartbeats, deleted and finished jobs).
    public init(heartbeatInterval: Double = 15, tickInterval: Double = 1) {
        self.heartbeatInterval = heartbeatInterval
        self.tickInterval = tickInterval
    }

    deinit { timer.withLock { $0?.cancel() } }

    /// Subscribers of all jobs.
    public var subscriberCount: Int { subscribers.withLock { $0.values.reduce(0) { $0 + $1.count } } }

    /// Hands `event` of job `id` to its subscribers. Called by ``JobService`` under its state
    /// lock, once per event and in sequence order; never blocks.
    func publish(_ id: String, _ event: JobEvent) {
        guard let list = subscribers.withLock({ $0[id].map { Array($0.values) } }) else { return }
        let frame = Array(JobEventStream.frame(event).utf8)  // encoded once for every subscriber
        for s in list { s.deliver(event, frame: frame) }
    }

    func subscribe(_ stream: JobEventStream) {
        subscribers.withLock { $0[stream.jobID, default: [:]][ObjectIdentifier(stream)] = stream }
        startTimer()
    }

    func unsubscribe(_ stream: JobEventStream) {
        subscribers.withLock { table in
            table[stream.jobID]?[ObjectIdentifier(stream)] = nil
            if table[stream.jobID]?.isEmpty == true { table[stream.jobID] = nil }
        }
    }

    private func startTimer() {
        timer.withLock { t in
            guard t == nil else { return }
            let source = DispatchSource.makeTimerSource(queue: .global())
            source.schedule(deadline: .now() + tickInterval, repeating: tickInterval, leeway: .milliseconds(100))
            source.setEventHandler { [weak self] in self?.tick() }
            source.resume()
            t = source
        }
    }

    private func tick() {
        let all = subscribers.withLock { $0.values.flatMap(\.values) }
        let now = monotonicSeconds()
        for s in all { s.tick(now: now, heartbeat: heartbeatInterval) }
    }
}

/// One SSE stream of one job: replays the job's buffered events after `Last-Event-ID`, then
/// follows live events pushed by the ``JobEventHub``, in order and without gaps or duplicates
/// (events are deduplicated by id across the replay and the live feed).
///
/// A client that reads too slowly is not buffered without bound: once its sink is over the high
/// water mark, live events are skipped, and when it has drained the stream catches up from the
/// job's event buffer (which keeps the last 1,024 events). If events were dropped from that
/// buffer meanwhile, an `event: error` with `history_dropped` is sent first, as at the start.
final class JobEventStream: Sendable {
    let jobID: String
    private let hub: JobEventHub
    private let sink: HTTPStreamSink
    private let history: @Sendable (Int) -> (events: [JobEvent], gap: Bool)
    private let record: @Sendable () -> JobRecord?

    private enum Mode {
        /// Fetching the buffered history; live events wait here (in order).
        case catchingUp([JobEvent])
        case live
        /// The client is slow: live events are skipped and fetched from the history later.
        case stalled
        case done
    }
    private struct State {
        var mode = Mode.catchingUp([])
        var lastSeq: Int
        var lastWrite: Double
        var doneSince: Double?
    }
    private let state: Mutex<State>

    /// Starts a stream on `sink` for the events of `jobID` after `lastEventID` (0: all).
    /// Returns at once; the stream runs until `completed`, the job's deletion or the client leaving.
    static func start(hub: JobEventHub, jobID: String, after lastEventID: Int, sink: HTTPStreamSink,
                      history: @escaping @Sendable (Int) -> (events: [JobEvent], gap: Bool),
                      record: @escaping @Sendable () -> JobRecord?) {
        let s = JobEventStream(hub: hub, jobID: jobID, after: lastEventID, sink: sink, history: history, record: record)
        // Subscribe before reading the history: an event appended in between is then in the
        // history, in the live queue or in both (deduplicated by id), never in neither.
        hub.subscribe(s)
        sink.onClose { [weak s] in s?.stop(finishSink: false) }
        s.catchUp(start: true)
    }

    private init(hub: JobEventHub, jobID: String, after lastEventID: Int, sink: HTTPStreamSink,
                 history: @escaping @Sendable (Int) -> (events: [JobEvent], gap: Bool),
                 record: @escaping @Sendable () -> JobRecord?) {
        self.hub = hub
        self.jobID = jobID
        self.sink = sink
        self.history = history
        self.record = record
        state = Mutex(State(lastSeq: max(0, lastEventID), lastWrite: monotonicSeconds()))
    }

    static func frame(_ e: JobEvent) -> String { "id: \(e.seq)\nevent: \(e.name)\ndata: \(e.data)\n\n" }
    static let historyDropped = "event: error\ndata: {\"code\":\"history_dropped\"}\n\n"

    /// Sends the buffered events after the last one sent, then the live events that arrived
    /// meanwhile, and goes live (or stalls again if the client is still slow).
    private func catchUp(start: Bool) {
        let after = state.withLock { $0.lastSeq }
        let (buffered, gap) = history(after)
        // An unfinished job whose history is gone (a restart) is followed live; a finished one
        // with no history at all gets `completed` from its record at once (docs/API.md).
        let finishedWithoutHistory: JobRecord? = start && buffered.isEmpty ? record().flatMap { $0.done ? $0 : nil } : nil
        let stop = state.withLock { st -> Bool in
            guard case .catchingUp(let queued) = st.mode else { return false }
            var out = gap ? Self.historyDropped : ""
            var completed = false
            for e in buffered + queued where e.seq > st.lastSeq && !completed {
                out += Self.frame(e)
                st.lastSeq = e.seq
                if e.name == "completed" { completed = true }
            }
            if !completed, let r = finishedWithoutHistory, queued.isEmpty {
                out += "event: completed\ndata: \(Self.recordJSON(r))\n\n"
                completed = true
            }
            if !out.isEmpty {
                sink.send(Array(out.utf8))
                st.lastWrite = monotonicSeconds()
            }
            if completed {
                st.mode = .done
                sink.finish()
                return true
            }
            stallOrGoLive(&st)
            return false
        }
        if stop { hub.unsubscribe(self) }
    }

    /// Live unless the sink is over its high water mark; then stalled until it drains.
    private func stallOrGoLive(_ st: inout State) {
        if sink.isWritable {
            st.mode = .live
        } else {
            st.mode = .stalled
            sink.whenWritable { [weak self] in self?.resume() }
        }
    }

    private func resume() {
        let go = state.withLock { st -> Bool in
            guard case .stalled = st.mode else { return false }
            st.mode = .catchingUp([])
            return true
        }
        if go { catchUp(start: false) }
    }

    /// A live event of this job and its encoded frame (from the hub, under the job service's
    /// lock: in order).
    func deliver(_ e: JobEvent, frame: [UInt8]) {
        let stop = state.withLock { st -> Bool in
            switch st.mode {
            case .catchingUp(var queued):
                queued.append(e)
                st.mode = .catchingUp(queued)
                return false
            case .live:
                guard e.seq > st.lastSeq else { return false }
                sink.send(frame)
                st.lastSeq = e.seq
                st.lastWrite = monotonicSeconds()
                if e.name == "completed" {
                    st.mode = .done
                    sink.finish()
                    return true
                }
                stallOrGoLive(&st)
                return false
            case .stalled, .done:
                return false
            }
        }
        if stop { hub.unsubscribe(self) }
    }

    /// The shared timer: keep-alive comments, deleted jobs, finished jobs without `completed`.
    func tick(now: Double, heartbeat: Double) {
        let r = record()
        let stop = state.withLock { st -> Bool in
            guard case .live = st.mode else { return false }
            guard let r else {
                // The job was deleted: its stream ends (docs/API.md).
                st.mode = .done
                sink.finish()
                return true
            }
            if r.done {
                // `completed` follows the final state by a durable write; if it has not come
                // within 2 s (its history was lost), send it from the record.
                if let since = st.doneSince {
                    if now - since > 2 {
                        sink.send(Array("event: completed\ndata: \(Self.recordJSON(r))\n\n".utf8))
                        st.mode = .done
                        sink.finish()
                        return true
                    }
                } else {
                    st.doneSince = now
                }
            }
            if now - st.lastWrite >= heartbeat {
                sink.send(Array(": keep-alive\n\n".utf8))
                st.lastWrite = now
            }
            return false
        }
        if stop { hub.unsubscribe(self) }
    }

    /// Ends the stream (the client left, or the server stops it).
    func stop(finishSink: Bool) {
        state.withLock { st in
            st.mode = .done
            if finishSink { sink.finish() }
        }
        hub.unsubscribe(self)
    }

    static func recordJSON(_ r: JobRecord) -> String {
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys]
        return String(decoding: (try? e.encode(JobView(record: r, queuePosition: nil))) ?? Data(), as: UTF8.self)
    }
}
