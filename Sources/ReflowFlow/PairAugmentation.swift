import ReflowEngine
public import ReflowNN
import Foundation

/// SlimFlow's annealing reflow (Zhu, Liu & Liu 2024, ALGORITHMS.md §6): at optimizer step k the
/// stored noise z of every pair is perturbed as z̃ = √(1 − β_k²)·z + β_k·ε' with fresh ε' ~
/// N(0, I), so training moves from a 1-RF on the teacher's samples (β = 1: the noise is
/// independent of the data) to plain reflow (β = 0). Wire JSON: `{"schedule": "linear", "steps":
/// 3000}` (K = `steps`).
public struct Annealing: Codable, Sendable, Equatable, Validatable {
    public enum Schedule: String, Codable, Sendable, CaseIterable {
        /// β_k = 1 − min(1, k/K) (SlimFlow's default).
        case linear
        /// β_k = exp(−k/K).
        case exponential
        /// β_k = ½(1 + cos(π·min(1, k/K))).
        case cosine
    }
    public var schedule: Schedule = .linear
    /// K, the steps over which β goes from 1 to 0 (linear, cosine) or falls by e (exponential).
    public var steps: Int

    public init(schedule: Schedule = .linear, steps: Int) {
        self.schedule = schedule
        self.steps = steps
    }

    enum CodingKeys: String, CodingKey { case schedule, steps }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        schedule = try c.decodeIfPresent(Schedule.self, forKey: .schedule) ?? .linear
        steps = try c.decode(Int.self, forKey: .steps)
    }

    /// β at optimizer step k.
    public func beta(step k: Int) -> Float {
        let r = Double(k) / Double(max(1, steps))
        switch schedule {
        case .linear: return Float(1 - min(1, r))
        case .exponential: return Float(Foundation.exp(-r))
        case .cosine: return Float(0.5 * (1 + Foundation.cos(Double.pi * min(1, r))))
        }
    }

    public func validationError() -> FieldError? { Validation.range("/steps", steps, 1, 100_000_000) }
}

/// Mirrors each row of an image batch left to right: x: [rows, C·H·W] with `shape` [C, H, W].
enum HorizontalFlip {
    static func flip(_ x: UnsafeMutablePointer<Float>, shape: [Int]) {
        let c = shape[0], h = shape[1], w = shape[2]
        for ch in 0..<c {
            for y in 0..<h {
                let row = x + (ch * h + y) * w
                var a = 0, b = w - 1
                while a < b { let tmp = row[a]; row[a] = row[b]; row[b] = tmp; a += 1; b -= 1 }
            }
        }
    }
}
