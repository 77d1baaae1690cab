public import ReflowEngine
import Foundation

/// How training draws flow times t (see ``TimeConvention``: t = 0 noise, t = 1 data).
/// Wire JSON: `{"kind": "uniform", "epsilon": 0.001}`, `{"kind": "uShaped", "a": 4}`,
/// `{"kind": "logitNormal", "mean": 0, "std": 1}`, `{"kind": "grid", "k": 2}`.
public enum TimeSampler: Codable, Sendable, Equatable {
    /// t ~ U[ε, 1] (Liu et al. 2022 use ε = 1e-3 so the network never sees exactly t = 0).
    case uniform(epsilon: Float = 0)
    /// The U-shaped density p(t) ∝ e^{a t} + e^{a(1−t)} of rfpp (Lee et al. 2024, `t_dist.py`):
    /// s = ln(1 + u(e^a − 1))/a, t = s or 1 − s with probability ½ each, then t ← t(1 − 2·10⁻⁵) + 10⁻⁵.
    /// Symmetric about ½, so rfpp's reversed time convention does not change it.
    case uShaped(a: Float = 4)
    /// t = σ(m + s·n), n ~ N(0, 1) (the logit-normal of SD3 / Esser et al. 2024).
    case logitNormal(mean: Float = 0, std: Float = 1)
    /// t uniform on the grid {0, 1/k, …, (k−1)/k}, mapped to t(1 − ε) + ε: k-step distillation
    /// (Liu et al. 2022 §2.2). k = 1 trains at t = ε only.
    case grid(k: Int, epsilon: Float = 0)

    /// One sample.
    public func sample(_ rng: inout Random) -> Float {
        switch self {
        case .uniform(let eps):
            return eps + (1 - eps) * rng.uniformFloat()
        case .uShaped(let a):
            let u = rng.uniformDouble(), flip = rng.uniformFloat() < 0.5
            let s = Float(Foundation.log1p(u * Foundation.expm1(Double(a))) / Double(a))
            let t = flip ? 1 - s : s
            return t * (1 - 2e-5) + 1e-5
        case .logitNormal(let m, let s):
            let z = Double(m) + Double(s) * rng.normal()
            return Float(1 / (1 + Foundation.exp(-z)))
        case .grid(let k, let eps):
            let t = Float(rng.int(below: k)) / Float(k)
            return t * (1 - eps) + eps
        }
    }

    /// A message for invalid parameters, or nil.
    public func validationError() -> (pointer: String, message: String)? {
        switch self {
        case .uniform(let eps):
            if !(eps >= 0 && eps < 1) { return ("/epsilon", "must be in [0, 1), got \(eps)") }
        case .uShaped(let a):
            if !(a > 0 && a <= 50) { return ("/a", "must be in (0, 50], got \(a)") }
        case .logitNormal(let m, let s):
            if !m.isFinite { return ("/mean", "must be a finite number") }
            if !(s > 0 && s.isFinite) { return ("/std", "must be a positive number, got \(s)") }
        case .grid(let k, let eps):
            if k < 1 || k > 1_000_000 { return ("/k", "must be in [1, 1000000], got \(k)") }
            if !(eps >= 0 && eps < 1) { return ("/epsilon", "must be in [0, 1), got \(eps)") }
        }
        return nil
    }

    enum CodingKeys: String, CodingKey { case kind, epsilon, a, mean, std, k }
    enum Kind: String, Codable { case uniform, uShaped, logitNormal, grid }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        switch try c.decode(Kind.self, forKey: .kind) {
        case .uniform: self = .uniform(epsilon: try c.decodeIfPresent(Float.self, forKey: .epsilon) ?? 0)
        case .uShaped: self = .uShaped(a: try c.decodeIfPresent(Float.self, forKey: .a) ?? 4)
        case .logitNormal:
            self = .logitNormal(mean: try c.decodeIfPresent(Float.self, forKey: .mean) ?? 0,
                                std: try c.decodeIfPresent(Float.self, forKey: .std) ?? 1)
        case .grid:
            self = .grid(k: try c.decode(Int.self, forKey: .k), epsilon: try c.decodeIfPresent(Float.self, forKey: .epsilon) ?? 0)
        }
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        switch self {
        case .uniform(let e): try c.encode(Kind.uniform, forKey: .kind); try c.encode(e, forKey: .epsilon)
        case .uShaped(let a): try c.encode(Kind.uShaped, forKey: .kind); try c.encode(a, forKey: .a)
        case .logitNormal(let m, let s):
            try c.encode(Kind.logitNormal, forKey: .kind); try c.encode(m, forKey: .mean); try c.encode(s, forKey: .std)
        case .grid(let k, let e): try c.encode(Kind.grid, forKey: .kind); try c.encode(k, forKey: .k); try c.encode(e, forKey: .epsilon)
        }
    }
}
