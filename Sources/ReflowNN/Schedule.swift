import Foundation


/// Learning-rate schedules (wire JSON is the Codable form).
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
}
