import Foundation

// Discrete VP (DDPM) diffusion: the noise schedule, DDIM's timestep spacing, and deterministic
// DDIM sampling and inversion of an ε-prediction field (issue #12's foundation).
//
// Convention. Diffusion models keep the DDPM index i ∈ {0, …, T − 1} (T = 1000): index 0 is the
// least noisy, x_i = √ᾱ_i·x0 + √(1 − ᾱ_i)·ε, and ᾱ decreases with i. Index −1 stands for clean
// data (ᾱ = 1, diffusers' `set_alpha_to_one`). Against reflowd's flow time (t = 0 noise, t = 1
// data) the direction is reversed: sampling runs from index T − 1 down to −1.

/// A VP noise schedule over `steps` discrete indices (wire JSON: `{"kind": "linear", "betaStart":
/// 0.0001, "betaEnd": 0.02}` or `{"kind": "cosine", "s": 0.008}`, with `steps` 1000 by default).
public enum NoiseSchedule: Codable, Sendable, Equatable {
    /// β_i linear from `betaStart` to `betaEnd` over the steps (Ho et al. 2020: 1e-4 → 0.02).
    case linear(betaStart: Double = 1e-4, betaEnd: Double = 0.02, steps: Int = 1000)
    /// ᾱ(i) = f(i)/f(0), f(i) = cos²(((i/T) + s)/(1 + s)·π/2), β_i = min(1 − ᾱ_i/ᾱ_{i−1}, 0.999)
    /// (Nichol & Dhariwal 2021, "Improved DDPM", Eq. 17), with i counted from 1 as in their code.
    case cosine(s: Double = 0.008, steps: Int = 1000)

    public var steps: Int {
        switch self {
        case .linear(_, _, let t), .cosine(_, let t): return t
        }
    }

    /// β_i for i = 0 ..< steps.
    public var betas: [Double] {
        switch self {
        case .linear(let b0, let b1, let t):
            guard t > 1 else { return [b0] }
            return (0..<t).map { b0 + (b1 - b0) * Double($0) / Double(t - 1) }
        case .cosine(let s, let t):
            func f(_ i: Double) -> Double {
                let c = Foundation.cos((i / Double(t) + s) / (1 + s) * Double.pi / 2)
                return c * c
            }
            return (0..<t).map { i in min(1 - f(Double(i + 1)) / f(Double(i)), 0.999) }
        }
    }

    /// ᾱ_i = Π_{j ≤ i} (1 − β_j) for i = 0 ..< steps (strictly decreasing, in (0, 1)).
    public var alphaBars: [Double] {
        var out = [Double](), p = 1.0
        for b in betas {
            p *= 1 - b
            out.append(p)
        }
        return out
    }

    /// The first invalid parameter as (JSON pointer, message), or nil.
    public func validationError() -> (pointer: String, message: String)? {
        switch self {
        case .linear(let b0, let b1, let t):
            if !(2...100_000).contains(t) { return ("/steps", "must be in [2, 100000], got \(t)") }
            if !(b0 > 0 && b0 < 1) { return ("/betaStart", "must be in (0, 1), got \(b0)") }
            if !(b1 > 0 && b1 < 1) { return ("/betaEnd", "must be in (0, 1), got \(b1)") }
        case .cosine(let s, let t):
            if !(2...100_000).contains(t) { return ("/steps", "must be in [2, 100000], got \(t)") }
            if !(s >= 0 && s <= 1) { return ("/s", "must be in [0, 1], got \(s)") }
        }
        return nil
    }

    enum CodingKeys: String, CodingKey { case kind, betaStart, betaEnd, s, steps }
    enum Kind: String, Codable { case linear, cosine }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        let steps = try c.decodeIfPresent(Int.self, forKey: .steps) ?? 1000
        switch try c.decode(Kind.self, forKey: .kind) {
        case .linear:
            self = .linear(betaStart: try c.decodeIfPresent(Double.self, forKey: .betaStart) ?? 1e-4,
                           betaEnd: try c.decodeIfPresent(Double.self, forKey: .betaEnd) ?? 0.02, steps: steps)
        case .cosine:
            self = .cosine(s: try c.decodeIfPresent(Double.self, forKey: .s) ?? 0.008, steps: steps)
        }
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        switch self {
        case .linear(let b0, let b1, let t):
            try c.encode(Kind.linear, forKey: .kind); try c.encode(b0, forKey: .betaStart)
            try c.encode(b1, forKey: .betaEnd); try c.encode(t, forKey: .steps)
        case .cosine(let s, let t):
            try c.encode(Kind.cosine, forKey: .kind); try c.encode(s, forKey: .s); try c.encode(t, forKey: .steps)
        }
    }
}

/// An ε-prediction field ε̂(x, i) of a VP diffusion model at DDPM index i, evaluated on a block
/// of points that share one index:
///
///     x: [count, dimension] row-major  →  ε̂: [count, dimension] row-major
public protocol NoisePredictionField {
    var dimension: Int { get }
    func epsilon(_ x: UnsafePointer<Float>, count: Int, index: Int, into eps: UnsafeMutablePointer<Float>)
}

/// Deterministic DDIM (Song et al. 2021, η = 0) on a ``NoiseSchedule``.
public enum DDIM {
    /// The N sampling indices of diffusers' "trailing" spacing, from the noisiest down:
    /// round(T − k·T/N) − 1 for k = 0 ..< N (N = 1: [T − 1]; N = 4 of 1000: [999, 749, 499, 249]).
    /// Each step goes to the next index, the last to −1 (clean data, ᾱ = 1).
    public static func trailingIndices(steps n: Int, of t: Int) -> [Int] {
        precondition(n >= 1 && n <= t, "DDIM.trailingIndices: need 1 ≤ N ≤ T")
        return (0..<n).map { k in Int((Double(t) - Double(k) * Double(t) / Double(n)).rounded()) - 1 }
    }

    /// ᾱ at index i, with ᾱ(−1) = 1.
    @inline(__always)
    static func alphaBar(_ bars: [Double], _ i: Int) -> Double { i < 0 ? 1 : bars[i] }

    /// One deterministic DDIM move of every row of x from index `from` to index `to` given ε̂:
    /// x̂0 = (x − √(1 − ᾱ_from)·ε̂)/√ᾱ_from, x ← √ᾱ_to·x̂0 + √(1 − ᾱ_to)·ε̂. Exact when ε̂ is the
    /// path's own constant noise. Works in both directions (sampling: to < from; inversion: to > from).
    public static func move(_ x: UnsafeMutablePointer<Float>, eps: UnsafePointer<Float>, count m: Int,
                            from: Int, to: Int, alphaBars bars: [Double]) {
        let af = alphaBar(bars, from), at = alphaBar(bars, to)
        let sf = (1 - af).squareRoot(), rf = af.squareRoot(), st = (1 - at).squareRoot(), rt = at.squareRoot()
        for j in 0..<m {
            let e = Double(eps[j])
            let x0 = (Double(x[j]) - sf * e) / rf
            x[j] = Float(rt * x0 + st * e)
        }
    }

    /// Samples x in place from the first of `indices` (descending; the noisiest) down to index
    /// `final` (−1: clean data): ε̂ is evaluated at each index on the current state. Returns the
    /// NFE per point.
    @discardableResult
    public static func sample<F: NoisePredictionField>(_ field: F, x: UnsafeMutablePointer<Float>, rows: Int,
                                                       indices: [Int], schedule: NoiseSchedule, final: Int = -1) -> Int {
        let bars = schedule.alphaBars, m = rows * field.dimension
        var eps = [Float](repeating: 0, count: m)
        for (k, i) in indices.enumerated() {
            let next = k + 1 < indices.count ? indices[k + 1] : final
            eps.withUnsafeMutableBufferPointer { e in
                field.epsilon(UnsafePointer(x), count: rows, index: i, into: e.baseAddress!)
                move(x, eps: e.baseAddress!, count: m, from: i, to: next, alphaBars: bars)
            }
        }
        return indices.count
    }

    /// DDIM inversion: maps x at index `start` (−1: clean data) up to the first of `indices`
    /// (the noisiest), the sampler's steps in reverse. Each move from index a to the next noisier index b uses
    /// ε̂(x_a, b), the current state at the target index (the usual DDIM-inversion
    /// approximation, as diffusers' `DDIMInverseScheduler`); exact when ε̂ is constant.
    @discardableResult
    public static func invert<F: NoisePredictionField>(_ field: F, x: UnsafeMutablePointer<Float>, rows: Int,
                                                       indices: [Int], schedule: NoiseSchedule, start: Int = -1) -> Int {
        let bars = schedule.alphaBars, m = rows * field.dimension
        var eps = [Float](repeating: 0, count: m)
        let ascending = Array(indices.reversed())
        var current = start
        for i in ascending {
            eps.withUnsafeMutableBufferPointer { e in
                field.epsilon(UnsafePointer(x), count: rows, index: i, into: e.baseAddress!)
                move(x, eps: e.baseAddress!, count: m, from: current, to: i, alphaBars: bars)
            }
            current = i
        }
        return indices.count
    }
}
