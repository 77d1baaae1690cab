public import ReflowJobs
import Foundation

/// An RFC 9457 problem: every HTTP error, and a failed job's `error` in the API view.
public struct Problem: Codable, Sendable, Equatable, Error {
    public var type: String
    public var title: String
    public var status: Int
    public var detail: String
    /// Stable machine-readable key (tests and clients match on it).
    public var code: String
    public var pointer: String?
    public var instance: String?
    /// For `memory_budget`: the job's estimated peak, the budget, and the estimate's terms.
    public var estimateBytes: Int?
    public var budgetBytes: Int?
    public var estimate: [ResourceEstimate.Term]?

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
