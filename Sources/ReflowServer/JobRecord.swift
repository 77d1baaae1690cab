public import ReflowJobs
import Foundation

/// A job's lifecycle state. `queued → running → succeeded | failed`, `queued → canceled`,
/// `running → canceling → canceled`; the three terminal states never change again.
public enum JobState: String, Codable, Sendable, CaseIterable {
    case queued, running, canceling, succeeded, failed, canceled

    public var isTerminal: Bool { self == .succeeded || self == .failed || self == .canceled }

    /// Whether `self → next` is an allowed transition (RELIABILITY.md D6).
    public func canMove(to next: JobState) -> Bool {
        switch (self, next) {
        case (.queued, .running), (.queued, .canceled): return true
        case (.running, .succeeded), (.running, .failed), (.running, .canceling), (.running, .queued): return true
        case (.canceling, .canceled), (.canceling, .succeeded), (.canceling, .failed): return true
        default: return false
        }
    }
}

/// One state change and when it happened.
public struct JobTransition: Codable, Sendable, Equatable {
    public var state: JobState
    public var at: String
}

/// Progress of a running job, as the API shows it.
public struct JobProgressInfo: Codable, Sendable, Equatable {
    public var phase: String
    public var step: Int
    public var total: Int
    public var fraction: Double
    public var loss: Double?
    public var stepsPerSecond: Double?
    public var etaSeconds: Double?
}

/// An RFC 9457 problem, used for HTTP errors and for a failed job's `error`.
public struct Problem: Codable, Sendable, Equatable, Error {
    public var type: String
    public var title: String
    public var status: Int
    public var detail: String
    /// Stable machine-readable key (tests and clients match on it).
    public var code: String
    public var pointer: String?
    public var instance: String?

    public init(status: Int, code: String, title: String, detail: String, pointer: String? = nil, instance: String? = nil) {
        self.type = "about:blank#" + code
        self.title = title
        self.status = status
        self.detail = detail
        self.code = code
        self.pointer = pointer
        self.instance = instance
    }
}

/// The durable record of a job (`jobs/<id>/job.json`), which is also the API's job object.
public struct JobRecord: Codable, Sendable, Equatable {
    public var id: String
    /// `train`, `reflow`, … (a ``JobType``), or `upload` for an uploaded checkpoint.
    public var type: String
    public var state: JobState
    /// The filled-in spec (the API's `input`); nil for uploads.
    public var input: JobSpec?
    public var createdAt: String
    public var transitions: [JobTransition]
    /// Times the job has started running (a crash-looping job fails after `maxAttempts`).
    public var attempts: Int
    public var progress: JobProgressInfo?
    public var result: JobResult?
    public var error: Problem?
    public var idempotencyKey: String?
    /// SHA-256 of the request body that created the job (checks idempotent replays).
    public var requestDigest: String?
    /// Bumped on every change (the ETag of `GET /v1/jobs/{id}` and the long-poll condition).
    public var version: Int

    public var done: Bool { state.isTerminal }

    enum CodingKeys: String, CodingKey {
        case id, type, state, input, createdAt, transitions, attempts, progress, result, error, idempotencyKey, requestDigest, version, done
    }

    public init(id: String, type: String, input: JobSpec?, createdAt: String) {
        self.id = id
        self.type = type
        self.state = .queued
        self.input = input
        self.createdAt = createdAt
        self.transitions = [JobTransition(state: .queued, at: createdAt)]
        self.attempts = 0
        self.version = 1
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        id = try c.decode(String.self, forKey: .id)
        type = try c.decode(String.self, forKey: .type)
        state = try c.decode(JobState.self, forKey: .state)
        // The stored spec is the spec as it was prepared; decode without re-validating.
        if JobKinds.named(type) != nil, c.contains(.input), try !c.decodeNil(forKey: .input) {
            input = try JobSpec(type: type, input: try c.superDecoder(forKey: .input))
        } else {
            input = nil
        }
        createdAt = try c.decode(String.self, forKey: .createdAt)
        transitions = try c.decode([JobTransition].self, forKey: .transitions)
        attempts = try c.decode(Int.self, forKey: .attempts)
        progress = try c.decodeIfPresent(JobProgressInfo.self, forKey: .progress)
        result = try c.decodeIfPresent(JobResult.self, forKey: .result)
        error = try c.decodeIfPresent(Problem.self, forKey: .error)
        idempotencyKey = try c.decodeIfPresent(String.self, forKey: .idempotencyKey)
        requestDigest = try c.decodeIfPresent(String.self, forKey: .requestDigest)
        version = try c.decode(Int.self, forKey: .version)
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(id, forKey: .id)
        try c.encode(type, forKey: .type)
        try c.encode(state, forKey: .state)
        try c.encode(done, forKey: .done)
        if let input { try input.encodeInput(to: c.superEncoder(forKey: .input)) } else { try c.encodeNil(forKey: .input) }
        try c.encode(createdAt, forKey: .createdAt)
        try c.encode(transitions, forKey: .transitions)
        try c.encode(attempts, forKey: .attempts)
        try c.encode(progress, forKey: .progress)
        try c.encode(result, forKey: .result)
        try c.encode(error, forKey: .error)
        try c.encodeIfPresent(idempotencyKey, forKey: .idempotencyKey)
        try c.encodeIfPresent(requestDigest, forKey: .requestDigest)
        try c.encode(version, forKey: .version)
    }

    /// Moves to `next` (if allowed) and records when.
    mutating func move(to next: JobState, at: String) -> Bool {
        guard state.canMove(to: next) else { return false }
        state = next
        transitions.append(JobTransition(state: next, at: at))
        version += 1
        return true
    }
}

/// Time-sortable identifiers: `job_` + 26 lower-case Crockford base32 characters of a UUIDv7
/// (48-bit millisecond timestamp, version and variant bits, random rest).
public enum Identifiers {
    static let alphabet = Array("0123456789abcdefghjkmnpqrstvwxyz".utf8)

    public static func newJobID() -> String { "job_" + uuid7Base32() }

    static func uuid7Base32() -> String {
        var bytes = [UInt8](repeating: 0, count: 16)
        var g = SystemRandomNumberGenerator()
        for i in 0..<16 { bytes[i] = UInt8.random(in: 0...255, using: &g) }
        let ms = UInt64(Date().timeIntervalSince1970 * 1000)
        for i in 0..<6 { bytes[i] = UInt8((ms >> (8 * (5 - UInt64(i)))) & 0xff) }
        bytes[6] = (bytes[6] & 0x0f) | 0x70
        bytes[8] = (bytes[8] & 0x3f) | 0x80
        // 128 bits → 26 base32 digits (the first carries 3 bits).
        var out = [UInt8]()
        var acc: UInt32 = 0, bits = 2  // pad to 130 bits with two leading zero bits
        for b in bytes {
            acc = (acc << 8) | UInt32(b)
            bits += 8
            while bits >= 5 {
                bits -= 5
                out.append(alphabet[Int((acc >> UInt32(bits)) & 31)])
            }
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// Whether `s` has the shape of an id this server generates (`job_` + 26 base32 characters).
    public static func isJobID(_ s: String) -> Bool {
        let u = Array(s.utf8)
        guard u.count == 30, s.hasPrefix("job_") else { return false }
        return u[4...].allSatisfy { alphabet.contains($0) }
    }
}

/// RFC 3339 UTC timestamps with milliseconds.
enum Clock {
    static func now() -> String { format(Date()) }

    static func format(_ d: Date) -> String {
        let ms = Int64((d.timeIntervalSince1970 * 1000).rounded(.down))
        var t = time_t(ms / 1000)
        var tm = tm()
        gmtime_r(&t, &tm)
        return String(format: "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", Int(tm.tm_year) + 1900, Int(tm.tm_mon) + 1, Int(tm.tm_mday),
                      Int(tm.tm_hour), Int(tm.tm_min), Int(tm.tm_sec), Int(ms % 1000))
    }
}
