import Foundation


/// Learning-rate schedules. Wire JSON: `{"kind": "constant"}`, `{"kind": "linearWarmup", "warmupSteps": 100}`,
/// `{"kind": "cosine", "warmupSteps": 100, "totalSteps": 5000, "minFactor": 0}`.
public enum LRSchedule: Codable, Sendable, Equatable {
    /// The base rate throughout.
    case constant
    /// Linear ramp from base/warmupSteps to base over `warmupSteps`, then constant.
    case linearWarmup(warmupSteps: Int)
    /// Linear warm-up, then half-cosine decay from base to `minFactor`·base at `totalSteps`.
    case cosine(warmupSteps: Int, totalSteps: Int, minFactor: Float = 0)

    /// The rate for 0-based `step` (the step about to be taken).
    public func learningRate(base: Float, step: Int) -> Float {
        switch self {
        case .constant:
            return base
        case .linearWarmup(let w):
            return w > 0 && step < w ? base * Float(step + 1) / Float(w) : base
        case .cosine(let w, let total, let minFactor):
            if w > 0 && step < w { return base * Float(step + 1) / Float(w) }
            let span = max(1, total - w)
            let progress = min(1, Double(step - w) / Double(span))
            let c = 0.5 * (1 + Foundation.cos(Double.pi * progress))
            return base * (minFactor + (1 - minFactor) * Float(c))
        }
    }

    /// Checks the schedule's integers; returns a message for invalid ones.
    public func validationError() -> String? {
        switch self {
        case .constant: return nil
        case .linearWarmup(let w): return w < 0 ? "warmupSteps must be ≥ 0" : nil
        case .cosine(let w, let t, let m):
            if w < 0 { return "warmupSteps must be ≥ 0" }
            if t <= w { return "totalSteps must exceed warmupSteps" }
            if !(m >= 0 && m <= 1) { return "minFactor must be in [0, 1]" }
            return nil
        }
    }

    /// The invalid field as (JSON pointer relative to this object, message), or nil.
    public func validationPointer() -> (pointer: String, message: String)? {
        guard let m = validationError() else { return nil }
        if m.hasPrefix("warmupSteps") { return ("/warmupSteps", m) }
        if m.hasPrefix("totalSteps") { return ("/totalSteps", m) }
        return ("/minFactor", m)
    }

    enum CodingKeys: String, CodingKey { case kind, warmupSteps, totalSteps, minFactor }
    enum Kind: String, Codable { case constant, linearWarmup, cosine }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        switch try c.decode(Kind.self, forKey: .kind) {
        case .constant: self = .constant
        case .linearWarmup: self = .linearWarmup(warmupSteps: try c.decode(Int.self, forKey: .warmupSteps))
        case .cosine:
            self = .cosine(warmupSteps: try c.decodeIfPresent(Int.self, forKey: .warmupSteps) ?? 0,
                           totalSteps: try c.decode(Int.self, forKey: .totalSteps),
                           minFactor: try c.decodeIfPresent(Float.self, forKey: .minFactor) ?? 0)
        }
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        switch self {
        case .constant: try c.encode(Kind.constant, forKey: .kind)
        case .linearWarmup(let w): try c.encode(Kind.linearWarmup, forKey: .kind); try c.encode(w, forKey: .warmupSteps)
        case .cosine(let w, let t, let m):
            try c.encode(Kind.cosine, forKey: .kind); try c.encode(w, forKey: .warmupSteps); try c.encode(t, forKey: .totalSteps)
            try c.encode(m, forKey: .minFactor)
        }
    }
}
