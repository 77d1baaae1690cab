/// A job's lifecycle state. `queued → running → succeeded | failed`, `queued → canceled`,
/// `running → canceling → canceled`, `running → queued` (shutdown or a crash of the server);
/// the three terminal states never change again.
public enum JobState: String, Codable, Sendable, CaseIterable {
    case queued, running, canceling, succeeded, failed, canceled

    /// `succeeded`, `failed` and `canceled`: the record never changes state again.
    public var isTerminal: Bool { self == .succeeded || self == .failed || self == .canceled }

    /// Whether `self → next` is an allowed transition.
    public func canMove(to next: JobState) -> Bool {
        switch (self, next) {
        case (.queued, .running), (.queued, .canceled): return true
        // A queued record this build cannot run (its kind is unknown): failed at load.
        case (.queued, .failed): return true
        case (.running, .succeeded), (.running, .failed), (.running, .canceling), (.running, .queued): return true
        case (.canceling, .canceled), (.canceling, .succeeded), (.canceling, .failed): return true
        default: return false
        }
    }
}

/// One state change and when it happened (RFC 3339 with milliseconds).
public struct JobTransition: Codable, Sendable, Equatable {
    public var state: JobState
    public var at: String

    public init(state: JobState, at: String) {
        self.state = state
        self.at = at
    }
}

/// Progress of a running job.
public struct JobProgressInfo: Codable, Sendable, Equatable {
    public var phase: String
    public var step: Int
    public var total: Int
    public var fraction: Double
    public var loss: Double?
    public var stepsPerSecond: Double?
    public var etaSeconds: Double?
    /// The latest named measurements the job reported (kept until it reports new ones).
    public var metrics: [String: Double]?

    public init(phase: String, step: Int, total: Int, fraction: Double, loss: Double? = nil,
                stepsPerSecond: Double? = nil, etaSeconds: Double? = nil, metrics: [String: Double]? = nil) {
        self.metrics = metrics
        self.phase = phase
        self.step = step
        self.total = total
        self.fraction = fraction
        self.loss = loss
        self.stepsPerSecond = stepsPerSecond
        self.etaSeconds = etaSeconds
    }
}

/// Why a job failed, as stored in its record: a stable code and a message for people.
///
/// The message names jobs and artifacts, never a server path. Codes: the ``JobError`` codes
/// (`invalid_input`, `resource_limit`, `io_error`, `diverged`), `crash_loop` (the server died
/// under the job `maxAttempts` times without checkpoint progress) and `job_failed` (anything else).
/// The HTTP layer maps it to an RFC 9457 problem; this type knows nothing about HTTP.
public struct JobFailure: Codable, Sendable, Equatable, Error, CustomStringConvertible {
    public var code: String
    public var message: String

    public init(code: String, message: String) {
        self.code = code
        self.message = message
    }

    /// The failure for a typed job error (``JobError/interrupted`` is not a failure, but maps to
    /// code `interrupted` if it ever is stored).
    public init(_ error: JobError) {
        self.init(code: error.code, message: error.description)
    }

    /// The server died under the job `attempts` times without any checkpoint progress.
    public static func crashLoop(attempts: Int) -> JobFailure {
        JobFailure(code: "crash_loop",
                   message: "the server stopped while running this job \(attempts) times without checkpoint progress; it is not retried again")
    }

    enum CodingKeys: String, CodingKey { case code, message, detail }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        code = try c.decode(String.self, forKey: .code)
        // Records written before 0.5 stored an RFC 9457 problem (`detail`) here.
        message = try c.decodeIfPresent(String.self, forKey: .message) ?? c.decodeIfPresent(String.self, forKey: .detail) ?? ""
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(code, forKey: .code)
        try c.encode(message, forKey: .message)
    }

    public var description: String { "\(code): \(message)" }
}
