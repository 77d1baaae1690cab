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
        run(field, x: x, rows: rows, indices: indices, alphaBars: schedule.alphaBars, end: final, direction: .forward, record: nil)
    }

    /// DDIM inversion: maps x at index `start` (−1: clean data) up to the first of `indices`
    /// (the noisiest), the sampler's steps in reverse. Each move from index a to the next noisier index b uses
    /// ε̂(x_a, b), the current state at the target index (the usual DDIM-inversion
    /// approximation, as diffusers' `DDIMInverseScheduler`); exact when ε̂ is constant.
    @discardableResult
    public static func invert<F: NoisePredictionField>(_ field: F, x: UnsafeMutablePointer<Float>, rows: Int,
                                                       indices: [Int], schedule: NoiseSchedule, start: Int = -1) -> Int {
        run(field, x: x, rows: rows, indices: indices, alphaBars: schedule.alphaBars, end: start, direction: .backward, record: nil)
    }

    /// The loop of ``sample(_:x:rows:indices:schedule:final:)`` (forward) and
    /// ``invert(_:x:rows:indices:schedule:start:)`` (backward); `record(k, x)` sees the state
    /// before the first move (k = 0) and after move k. Returns the NFE per point.
    static func run<F: NoisePredictionField>(_ field: F, x: UnsafeMutablePointer<Float>, rows: Int, indices: [Int],
                                             alphaBars bars: [Double], end: Int, direction: ODEDirection,
                                             record: ((Int, UnsafePointer<Float>) -> Void)?) -> Int {
        let m = rows * field.dimension
        var eps = [Float](repeating: 0, count: m)
        // (from, to, evaluated at) per move.
        var moves: [(Int, Int, Int)] = []
        if direction == .forward {
            for (k, i) in indices.enumerated() { moves.append((i, k + 1 < indices.count ? indices[k + 1] : end, i)) }
        } else {
            var current = end
            for i in indices.reversed() { moves.append((current, i, i)); current = i }
        }
        record?(0, UnsafePointer(x))
        for (k, mv) in moves.enumerated() {
            eps.withUnsafeMutableBufferPointer { e in
                field.epsilon(UnsafePointer(x), count: rows, index: mv.2, into: e.baseAddress!)
                move(x, eps: e.baseAddress!, count: m, from: mv.0, to: mv.1, alphaBars: bars)
            }
            record?(k + 1, UnsafePointer(x))
        }
        return moves.count
    }
}

/// Which indices a DDIM solve visits: `indices` descending (the noisiest first) and `end`, the
/// index after the last (−1: clean data). Forward runs from `indices[0]` down to `end`, backward
/// (inversion) from `end` up to `indices[0]`. N-step sampling is
/// `DDIMPlan(diffusion:, indices: DDIM.trailingIndices(steps: N, of: T), end: -1)`; a phase of
/// phased Rectified Diffusion is a plan between two inner indices.
public struct DDIMPlan: Sendable {
    public var diffusion: VPDiffusion
    public var indices: [Int]
    public var end: Int

    public init(diffusion: VPDiffusion, indices: [Int], end: Int) {
        self.diffusion = diffusion
        self.indices = indices
        self.end = end
    }

    /// `steps` moves from index `from` down to `to`, spaced evenly (rounded) on the index grid:
    /// round(from − k·(from − to)/steps) for k = 0 ..< steps, then `to`.
    public static func between(_ diffusion: VPDiffusion, from: Int, to: Int, steps: Int) -> DDIMPlan {
        let n = max(1, min(steps, from - to))
        let idx = (0..<n).map { k in Int((Double(from) - Double(k) * Double(from - to) / Double(n)).rounded()) }
        return DDIMPlan(diffusion: diffusion, indices: idx, end: to)
    }

    /// A message when the indices are not strictly descending within the schedule, nil otherwise.
    public func validationError() -> String? {
        let t = diffusion.steps
        guard let first = indices.first, first < t, end >= -1, end < indices.last! else {
            return "a DDIM plan needs indices in [0, \(t - 1)] above its end index ≥ −1"
        }
        for k in 1..<max(1, indices.count) where indices[k] >= indices[k - 1] { return "DDIM indices must descend strictly" }
        return nil
    }

    /// The flow time of trajectory frame k (``VPDiffusion/flowTime(index:)``).
    public func frameTime(_ k: Int, direction: ODEDirection) -> Float {
        let visited = indices + [end]
        return diffusion.flowTime(index: direction == .forward ? visited[k] : visited[visited.count - 1 - k])
    }

    /// Runs the plan on one block; `record(k, t, x)` as ``ODESolver/integrate(_:x:rows:method:direction:tStart:tEnd:record:)``.
    func run<F: NoisePredictionField>(_ field: F, x: UnsafeMutablePointer<Float>, rows: Int, direction: ODEDirection,
                                      record: ((Int, Float, UnsafePointer<Float>) -> Void)?) -> ODEStats {
        let nfe = DDIM.run(field, x: x, rows: rows, indices: indices, alphaBars: diffusion.alphaBars, end: end,
                           direction: direction, record: record.map { r in { k, p in r(k, frameTime(k, direction: direction), p) } })
        return ODEStats(nfe: nfe, acceptedSteps: nfe, rejectedSteps: 0)
    }
}

/// A VP diffusion network as a ``NoisePredictionField``: the network (through a
/// ``NetworkVelocityField``, so labels and classifier-free guidance apply to its raw output)
/// evaluated at the network time of the index, v-predictions converted to ε̂.
public struct NetworkNoiseField: NoisePredictionField {
    public let network: NetworkVelocityField
    public let diffusion: VPDiffusion

    public init(_ network: NetworkVelocityField, _ diffusion: VPDiffusion) {
        self.network = network
        self.diffusion = diffusion
    }

    public var dimension: Int { network.dimension }

    public func epsilon(_ x: UnsafePointer<Float>, count: Int, index: Int, into eps: UnsafeMutablePointer<Float>) {
        network.velocity(x, count: count, t: diffusion.networkTime(index: index), into: eps)
        diffusion.epsilon(from: eps, x: x, count: count * dimension, index: index)
    }
}

extension Interpolant {
    /// Why `method` cannot integrate a model trained with this interpolant, or nil: a diffusion
    /// model samples with `ddim` only, a rectified flow with anything else.
    public func methodError(_ method: ODEMethod) -> String? {
        switch (self, method) {
        case (.rectifiedFlow, .ddim):
            return "ddim steps a VP diffusion model; this model is a rectified flow (use euler, heun, midpoint, rk4, rk45, rfSolver2 or remix)"
        case (.diffusion, .ddim): return nil
        case (.diffusion, _):
            return "this model is a VP diffusion model: it samples with {\"kind\": \"ddim\", \"steps\": N}, not \(method.name)"
        default: return nil
        }
    }

    /// The fixed-step method of `steps` NFE that suits this interpolant: Euler for a flow,
    /// DDIM for a diffusion model (the first-order solvers of each).
    public func firstOrderMethod(steps: Int) -> ODEMethod {
        diffusion == nil ? .euler(steps: steps) : .ddim(steps: min(steps, diffusion!.steps))
    }
}
