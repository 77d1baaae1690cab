import ReflowJobs
import Foundation

/// A job as the API shows it (`GET /v1/jobs/{id}`, lists, SSE `completed`): the stored record's
/// public fields, its failure as an RFC 9457 problem, its queue position and links.
///
/// The wire format is docs/API.md's job object; scheduler-internal fields of the record
/// (`crashes`, `attemptMarker`) are not shown.
struct JobView: Encodable {
    let record: JobRecord
    let queuePosition: Int?

    enum Keys: String, CodingKey {
        case id, type, state, done, input, createdAt, transitions, attempts, progress, result, error
        case idempotencyKey, requestDigest, version, queuePosition, urls
    }

    /// The problem+json form of a stored failure. The status says what kind of failure it was:
    /// 422 for input the job cannot use or a limit it would exceed, 500 otherwise.
    static func problem(_ f: JobFailure, id: String) -> Problem {
        let (status, title): (Int, String)
        switch f.code {
        case "invalid_input": (status, title) = (422, "Job input unusable")
        case "resource_limit": (status, title) = (422, "Job exceeded a limit")
        case "io_error": (status, title) = (500, "Job storage error")
        case "diverged": (status, title) = (500, "Job diverged")
        case "crash_loop": (status, title) = (500, "Job crashed the server")
        default: (status, title) = (500, "Job failed")
        }
        return Problem(status: status, code: f.code, title: title, detail: f.message, instance: "/v1/jobs/" + id)
    }

    func encode(to encoder: any Encoder) throws {
        let r = record
        var c = encoder.container(keyedBy: Keys.self)
        try c.encode(r.id, forKey: .id)
        try c.encode(r.type, forKey: .type)
        try c.encode(r.state, forKey: .state)
        try c.encode(r.done, forKey: .done)
        if let input = r.input { try input.encodeInput(to: c.superEncoder(forKey: .input)) } else { try c.encodeNil(forKey: .input) }
        try c.encode(r.createdAt, forKey: .createdAt)
        try c.encode(r.transitions, forKey: .transitions)
        try c.encode(r.attempts, forKey: .attempts)
        try c.encode(r.progress, forKey: .progress)
        try c.encode(r.result, forKey: .result)
        try c.encode(r.error.map { Self.problem($0, id: r.id) }, forKey: .error)
        try c.encodeIfPresent(r.idempotencyKey, forKey: .idempotencyKey)
        try c.encodeIfPresent(r.requestDigest, forKey: .requestDigest)
        try c.encode(r.version, forKey: .version)
        try c.encode(queuePosition, forKey: .queuePosition)
        let base = "/v1/jobs/" + r.id
        try c.encode(["self": base, "cancel": base + "/cancel", "events": base + "/events", "logs": base + "/logs",
                      "images": base + "/images", "artifacts": base + "/artifacts"], forKey: .urls)
    }
}
