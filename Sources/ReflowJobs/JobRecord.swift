import Foundation

/// The durable record of a job (`jobs/<id>/job.json`). It is what the scheduler owns; the HTTP
/// API builds its own view from it (queue position, links, failures as problem+json).
///
/// The spec is kept opaque: it is stored as the `input` of its `{"type", "input"}` encoding, and
/// read back through ``JobSpec``'s `Codable` conformance.
public struct JobRecord: Codable, Sendable, Equatable {
    public var id: String
    /// The job type (`train`, `reflow`, …) or `upload` for an uploaded checkpoint.
    public var type: String
    public var state: JobState
    /// The prepared spec; nil for uploads.
    public var input: JobSpec?
    public var createdAt: String
    public var transitions: [JobTransition]
    /// Times the job has started running (a graceful shutdown gives its attempt back).
    public var attempts: Int
    /// Attempts that ended with the server dying under the job *without checkpoint progress*;
    /// the job fails with `crash_loop` when this reaches `maxAttempts`.
    public var crashes: Int
    /// Fingerprint of the job's checkpoint files when the current attempt started (nil: none).
    /// A crashed attempt whose files changed since made progress and is not counted in `crashes`.
    public var attemptMarker: String?
    public var progress: JobProgressInfo?
    public var result: JobResult?
    public var error: JobFailure?
    public var idempotencyKey: String?
    /// SHA-256 of the request body that created the job (checks idempotent replays).
    public var requestDigest: String?
    /// Bumped on every change (the API's ETag and long-poll condition; stale writes are skipped).
    public var version: Int

    /// Whether the job is in a terminal state.
    public var done: Bool { state.isTerminal }

    /// A new queued record (version 1).
    public init(id: String, type: String, input: JobSpec?, createdAt: String) {
        self.id = id
        self.type = type
        self.state = .queued
        self.input = input
        self.createdAt = createdAt
        self.transitions = [JobTransition(state: .queued, at: createdAt)]
        self.attempts = 0
        self.crashes = 0
        self.version = 1
    }

    enum CodingKeys: String, CodingKey {
        case id, type, state, input, createdAt, transitions, attempts, crashes, attemptMarker, progress, result, error
        case idempotencyKey, requestDigest, version
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        id = try c.decode(String.self, forKey: .id)
        type = try c.decode(String.self, forKey: .type)
        state = try c.decode(JobState.self, forKey: .state)
        // The stored spec is the spec as it was prepared; decoded without re-validating.
        if c.contains(.input), try !c.decodeNil(forKey: .input), JobKinds.named(type) != nil {
            input = try JobSpec(type: type, input: try c.superDecoder(forKey: .input))
        } else {
            input = nil
        }
        createdAt = try c.decode(String.self, forKey: .createdAt)
        transitions = try c.decode([JobTransition].self, forKey: .transitions)
        attempts = try c.decode(Int.self, forKey: .attempts)
        // Records from before crash counting: every attempt but the current one was a crash.
        crashes = try c.decodeIfPresent(Int.self, forKey: .crashes) ?? max(0, attempts - 1)
        attemptMarker = try c.decodeIfPresent(String.self, forKey: .attemptMarker)
        progress = try c.decodeIfPresent(JobProgressInfo.self, forKey: .progress)
        result = try c.decodeIfPresent(JobResult.self, forKey: .result)
        error = try c.decodeIfPresent(JobFailure.self, forKey: .error)
        idempotencyKey = try c.decodeIfPresent(String.self, forKey: .idempotencyKey)
        requestDigest = try c.decodeIfPresent(String.self, forKey: .requestDigest)
        version = try c.decode(Int.self, forKey: .version)
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(id, forKey: .id)
        try c.encode(type, forKey: .type)
        try c.encode(state, forKey: .state)
        if let input { try input.encodeInput(to: c.superEncoder(forKey: .input)) } else { try c.encodeNil(forKey: .input) }
        try c.encode(createdAt, forKey: .createdAt)
        try c.encode(transitions, forKey: .transitions)
        try c.encode(attempts, forKey: .attempts)
        try c.encode(crashes, forKey: .crashes)
        try c.encodeIfPresent(attemptMarker, forKey: .attemptMarker)
        try c.encode(progress, forKey: .progress)
        try c.encode(result, forKey: .result)
        try c.encode(error, forKey: .error)
        try c.encodeIfPresent(idempotencyKey, forKey: .idempotencyKey)
        try c.encodeIfPresent(requestDigest, forKey: .requestDigest)
        try c.encode(version, forKey: .version)
    }

    /// Moves to `next` if the state machine allows it, records when, and bumps the version.
    /// Returns false (and changes nothing) for an illegal transition.
    public mutating func move(to next: JobState, at: String) -> Bool {
        guard state.canMove(to: next) else { return false }
        state = next
        transitions.append(JobTransition(state: next, at: at))
        version += 1
        return true
    }
}
