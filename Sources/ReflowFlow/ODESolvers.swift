public import ReflowEngine
import Foundation
import Synchronization

// ODE solvers for the flow ODE dx/dt = v(x, t) of a rectified flow (see ``TimeConvention``):
// t = 0 is noise, t = 1 is data; `forward` integrates noise → data (t increasing), `backward`
// integrates data → noise (t decreasing, inversion / encoding) with a negative step h.
//
// Shapes: a block is x: [n, d] row-major (n = rows, d = field dimension), m = n·d floats.

/// An ODE integration method for ``ODESolver``.
///
/// Fixed-step methods use `steps` uniform steps over the interval; their cost is exactly
/// `steps × evaluationsPerStep` velocity evaluations (NFE) per point.
///
/// - `euler`: z ← z + h·v(z, t) (1 NFE/step, order 1). The sampler of Liu et al. 2022,
///   "Flow Straight and Fast" (arXiv:2209.03003), `ImageGeneration/sampling.py`.
/// - `heun`: explicit trapezoid rule, k1 = v(z, t), k2 = v(z + h·k1, t + h),
///   z ← z + (h/2)(k1 + k2) (2 NFE/step, order 2; Heun 1900, as in Karras et al. 2022).
/// - `midpoint`: explicit midpoint (RK2), z ← z + h·v(z + (h/2)·v(z, t), t + h/2)
///   (2 NFE/step, order 2).
/// - `rk4`: classical Runge–Kutta (Kutta 1901) (4 NFE/step, order 4).
/// - `rk45`: adaptive Dormand–Prince 5(4) with FSAL (Dormand & Prince 1980, "A family of embedded
///   Runge–Kutta formulae", J. Comput. Appl. Math. 6(1)); step-size control and initial step as in
///   Hairer, Nørsett & Wanner, "Solving ODEs I", §II.4, and `scipy.integrate.RK45`. The paper's
///   reflow pairs use rtol = atol = 1e-5. Throws ``ODEError/maxNFEExceeded(limit:t:target:)``
///   rather than exceed `maxNFE` evaluations per point. The state is Float32, so tolerances much
///   below ~1e-6 (relative to |x|) cannot be met and end in an error.
/// - `rfSolver2`: RF-Solver-2 of Wang et al., "Taming Rectified Flow for Inversion and Editing"
///   (ICML 2025, arXiv:2411.04746), in the paper's Taylor form (2 NFE/step, order 2):
///   v_i = v(z_i, t_i), z_mid = z_i + (h/2)·v_i, v_mid = v(z_mid, t_i + h/2),
///   v'_i = (v_mid − v_i)/(h/2), z_{i+1} = z_i + h·v_i + (h²/2)·v'_i.
///   Algebraically this is `midpoint`; only rounding differs.
/// - `remix`: the "new" few-step sampler of Lee et al. 2024, "Improving the Training of
///   Rectified Flows" (rfpp `generate.py --sampler new`), in reflowd's time convention: predict
///   the data x̂ = z + (1 − t)·v(z, t), then re-mix it with the **initial** noise z_a on the
///   straight line from (a, z_a) to (1, x̂): z_{t'} = ((t' − a)·x̂ + (1 − t')·z_a)/(1 − a)
///   (a = tStart; z_{t'} = t'·x̂ + (1 − t')·z_0 for a = 0). 1 NFE/step; forward only. On a
///   straight constant-velocity field it equals Euler. It differs from Euler's step by
///   (1 − t')/(1 − a)·(z_a − z + (t − a)·v), which vanishes on the first step (z = z_a, t = a)
///   and on the last (t' = 1): with 1 or 2 steps it *is* Euler, on any field; it differs from
///   3 steps on.
///
/// JSON: `{"kind": "euler", "steps": 100}`, `{"kind": "rk45", "rtol": 1e-5, "atol": 1e-5, "maxNFE": 10000}`
/// (absent rk45 fields take the paper's defaults; fixed-step methods need `steps`). Check
/// ``validationError()`` before use; the solvers also check and throw.
public enum ODEMethod: Codable, Sendable, Equatable {
    case euler(steps: Int)
    case heun(steps: Int)
    case midpoint(steps: Int)
    case rk4(steps: Int)
    case rk45(rtol: Double = 1e-5, atol: Double = 1e-5, maxNFE: Int = 10_000)
    case rfSolver2(steps: Int)
    case remix(steps: Int)
    /// Deterministic DDIM with trailing spacing over a VP diffusion model's schedule
    /// (``DDIM``); the only method of such a model, and refused for a rectified flow.
    case ddim(steps: Int)

    /// Largest accepted `steps` of a fixed-step method.
    public static let maxSteps = 100_000
    /// Largest accepted `maxNFE` of `rk45`.
    public static let maxNFELimit = 10_000_000

    /// The case name (`"euler"`, `"rk45"`, …), as in JSON.
    public var name: String {
        switch self {
        case .euler: "euler"
        case .heun: "heun"
        case .midpoint: "midpoint"
        case .rk4: "rk4"
        case .rk45: "rk45"
        case .rfSolver2: "rfSolver2"
        case .remix: "remix"
        case .ddim: "ddim"
        }
    }

    /// Number of steps of a fixed-step method; nil for `rk45`.
    public var steps: Int? {
        switch self {
        case .euler(let s), .heun(let s), .midpoint(let s), .rk4(let s), .rfSolver2(let s), .remix(let s), .ddim(let s): s
        case .rk45: nil
        }
    }

    /// Velocity evaluations per step of a fixed-step method; nil for `rk45`.
    public var evaluationsPerStep: Int? {
        switch self {
        case .euler, .remix, .ddim: 1
        case .heun, .midpoint, .rfSolver2: 2
        case .rk4: 4
        case .rk45: nil
        }
    }

    /// The exact NFE per point of a fixed-step method (steps × evaluations per step); nil for `rk45`.
    public var fixedNFE: Int? {
        guard let s = steps, let e = evaluationsPerStep else { return nil }
        return s * e
    }

    /// The first invalid parameter as a message, or nil when the method is usable.
    public func validationError() -> String? {
        switch self {
        case .euler(let s), .heun(let s), .midpoint(let s), .rk4(let s), .rfSolver2(let s), .remix(let s), .ddim(let s):
            if s < 1 || s > ODEMethod.maxSteps {
                return "\(name).steps must be in [1, \(ODEMethod.maxSteps)], got \(s)"
            }
        case .rk45(let rtol, let atol, let maxNFE):
            if !(rtol > 0 && rtol <= 1) { return "rk45.rtol must be a number in (0, 1], got \(rtol)" }
            if !(atol > 0 && atol.isFinite) { return "rk45.atol must be a positive finite number, got \(atol)" }
            if maxNFE < 1 || maxNFE > ODEMethod.maxNFELimit {
                return "rk45.maxNFE must be in [1, \(ODEMethod.maxNFELimit)], got \(maxNFE)"
            }
        }
        return nil
    }

    /// The invalid field as (JSON pointer relative to this object, message), or nil.
    public func validationPointer() -> (pointer: String, message: String)? {
        guard let message = validationError() else { return nil }
        switch self {
        case .rk45(let rtol, let atol, _):
            if !(rtol > 0 && rtol <= 1) { return ("/rtol", message) }
            if !(atol > 0 && atol.isFinite) { return ("/atol", message) }
            return ("/maxNFE", message)
        default: return ("/steps", message)
        }
    }

    enum CodingKeys: String, CodingKey { case kind, steps, rtol, atol, maxNFE }
    enum Kind: String, Codable { case euler, heun, midpoint, rk4, rk45, rfSolver2, remix, ddim }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        switch try c.decode(Kind.self, forKey: .kind) {
        case .euler: self = .euler(steps: try c.decode(Int.self, forKey: .steps))
        case .heun: self = .heun(steps: try c.decode(Int.self, forKey: .steps))
        case .midpoint: self = .midpoint(steps: try c.decode(Int.self, forKey: .steps))
        case .rk4: self = .rk4(steps: try c.decode(Int.self, forKey: .steps))
        case .rfSolver2: self = .rfSolver2(steps: try c.decode(Int.self, forKey: .steps))
        case .remix: self = .remix(steps: try c.decode(Int.self, forKey: .steps))
        case .ddim: self = .ddim(steps: try c.decode(Int.self, forKey: .steps))
        case .rk45:
            self = .rk45(rtol: try c.decodeIfPresent(Double.self, forKey: .rtol) ?? 1e-5,
                         atol: try c.decodeIfPresent(Double.self, forKey: .atol) ?? 1e-5,
                         maxNFE: try c.decodeIfPresent(Int.self, forKey: .maxNFE) ?? 10_000)
        }
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(Kind(rawValue: name)!, forKey: .kind)
        switch self {
        case .rk45(let rtol, let atol, let maxNFE):
            try c.encode(rtol, forKey: .rtol); try c.encode(atol, forKey: .atol); try c.encode(maxNFE, forKey: .maxNFE)
        default: try c.encode(steps!, forKey: .steps)
        }
    }
}

/// Which way to integrate: `forward` is noise → data (t increasing from tStart to tEnd),
/// `backward` is data → noise (t decreasing from tEnd to tStart; inversion / encoding).
public enum ODEDirection: String, Codable, Sendable {
    case forward, backward
}

/// Why an integration failed.
public enum ODEError: Error, Equatable, Sendable, CustomStringConvertible {
    /// A parameter or input is invalid (the message names it).
    case invalidArgument(String)
    /// `rk45` would need more than `limit` velocity evaluations per point; it stopped at time `t`
    /// before reaching `target`.
    case maxNFEExceeded(limit: Int, t: Double, target: Double)
    /// `rk45`'s step size fell below the resolution of t at time `t`.
    case stepSizeTooSmall(t: Double, step: Double)
    /// `rk45` met non-finite velocities or states (NaN/inf) near time `t` and could not recover
    /// by shrinking the step.
    case nonFinite(t: Double)
    /// The caller's `shouldStop` asked the solve to stop (between blocks).
    case interrupted

    public var description: String {
        switch self {
        case .invalidArgument(let m):
            return "ODE solver: \(m)"
        case .maxNFEExceeded(let limit, let t, let target):
            return "ODE solver: rk45 exceeded maxNFE = \(limit) velocity evaluations per point at t = \(t) "
                + "before reaching t = \(target); loosen rtol/atol or raise maxNFE"
        case .stepSizeTooSmall(let t, let step):
            return "ODE solver: rk45 step size \(step) at t = \(t) is below the resolution of t; "
                + "the tolerance may be too tight for Float32 states, or the field too stiff"
        case .nonFinite(let t):
            return "ODE solver: rk45 met non-finite values (NaN or inf) near t = \(t)"
        case .interrupted:
            return "ODE solver: interrupted"
        }
    }
}

/// Cost counters of one integration of one block.
public struct ODEStats: Sendable, Equatable, Codable {
    /// Velocity evaluations per point (each evaluation covers every point of the block).
    public var nfe: Int
    /// Accepted steps (all steps for a fixed-step method).
    public var acceptedSteps: Int
    /// Rejected steps (always 0 for a fixed-step method).
    public var rejectedSteps: Int

    public init(nfe: Int, acceptedSteps: Int, rejectedSteps: Int) {
        self.nfe = nfe
        self.acceptedSteps = acceptedSteps
        self.rejectedSteps = rejectedSteps
    }
}

/// The result of ``ODESolver/solve(config:stateDict:x:method:direction:threads:blockRows:tStart:tEnd:recordTrajectory:)``
/// or ``ODESolver/solve(field:x:method:direction:tStart:tEnd:recordTrajectory:)``.
public struct ODESolution: Sendable {
    /// The end states, [n, d].
    public var x: Tensor
    /// Velocity evaluations per point: exact for fixed-step methods; for `rk45` the maximum over
    /// blocks (each block adapts its own steps).
    public var nfe: Int
    /// NFE per point averaged over all points (equals ``nfe`` for fixed-step methods).
    public var nfeMean: Double
    /// Counters of every block, in row order.
    public var blocks: [ODEStats]
    /// With `recordTrajectory`: the state at the start and after every accepted step, with its
    /// time, in integration order (first entry t = start, last entry t = end exactly).
    public var trajectory: [(t: Float, x: Tensor)]?

    public init(x: Tensor, nfe: Int, nfeMean: Double, blocks: [ODEStats], trajectory: [(t: Float, x: Tensor)]?) {
        self.x = x
        self.nfe = nfe
        self.nfeMean = nfeMean
        self.blocks = blocks
        self.trajectory = trajectory
    }
}

/// Integrates dx/dt = v(x, t) for blocks of points (see ``ODEMethod`` for the methods and
/// ``TimeConvention`` for the meaning of t).
///
/// The interval is [tStart, tEnd] ⊆ [0, 1] (default [0, 1]; the paper's sampler starts at
/// t = ε = 1e-3). `forward` runs tStart → tEnd, `backward` runs tEnd → tStart with h < 0.
///
/// Fixed-step methods use the grid t_i = t_a + i·h, h = (t_b − t_a)/steps in Float32 (t_a, t_b the
/// start and end in integration order), with the last grid point set to t_b exactly. For the
/// forward interval [0, 1] this is exactly the grid of the original `EulerSampler`.
public enum ODESolver {
    /// Upper bound on the floats a recorded trajectory may hold (1 GiB).
    public static let maxTrajectoryFloats = 1 << 28

    // MARK: validation

    static func validate(method: ODEMethod, tStart: Float, tEnd: Float) throws {
        if let m = method.validationError() { throw ODEError.invalidArgument(m) }
        guard tStart.isFinite, tEnd.isFinite, tStart >= 0, tEnd <= 1, tStart < tEnd else {
            throw ODEError.invalidArgument("need 0 ≤ tStart < tEnd ≤ 1, got tStart = \(tStart), tEnd = \(tEnd)")
        }
        if let steps = method.steps, !((tEnd - tStart) / Float(2 * steps)).isNormal {
            throw ODEError.invalidArgument("the interval [\(tStart), \(tEnd)] is too short for \(steps) steps (the half step underflows)")
        }
    }

    static func validate(x: Tensor, dimension d: Int) throws {
        guard x.rank == 2, x.shape[1] == d else {
            throw ODEError.invalidArgument("x has shape \(x.shape), expected [rows, \(d)]")
        }
        if let i = x.data.firstIndex(where: { !$0.isFinite }) {
            throw ODEError.invalidArgument("x[\(i / d), \(i % d)] is \(x.data[i]); inputs must be finite")
        }
    }

    /// Whether `frames` recorded states of `floatsPerFrame` floats exceed ``maxTrajectoryFloats``.
    public static func trajectoryTooLarge(frames: Int, floatsPerFrame: Int) -> Bool {
        let (total, overflow) = frames.multipliedReportingOverflow(by: floatsPerFrame)
        return overflow || total > maxTrajectoryFloats
    }

    /// (start, end) in integration order.
    static func endpoints(_ direction: ODEDirection, _ tStart: Float, _ tEnd: Float) -> (Float, Float) {
        direction == .forward ? (tStart, tEnd) : (tEnd, tStart)
    }

    /// Time of grid point i of a fixed-step method with `steps` steps from `a` to `b`.
    @inline(__always)
    static func gridTime(_ i: Int, steps: Int, from a: Float, to b: Float, h: Float) -> Float {
        i == steps ? b : a + Float(i) * h
    }

    // MARK: one block

    /// Integrates one block x: [rows, field.dimension] in place and returns its counters.
    ///
    /// `record(k, t, x)` (optional) is called with the state before the first step (k = 0) and
    /// after every accepted step k = 1, 2, …; `x` is only valid during the call. The last call has
    /// t equal to the end of the interval exactly. Every point of the block sees the same
    /// arithmetic under fixed-step methods; under `rk45` the error norm (RMS over the whole
    /// block) and hence the steps are shared by the block, so results depend on which points
    /// are integrated together.
    ///
    /// Throws ``ODEError`` for invalid parameters, and for `rk45` failures (maxNFE, step size,
    /// non-finite values); on a throw `x` holds the state reached so far.
    public static func integrate<F: VelocityField>(
        _ field: F, x: UnsafeMutablePointer<Float>, rows: Int,
        method: ODEMethod, direction: ODEDirection, tStart: Float = 0, tEnd: Float = 1,
        record: ((_ step: Int, _ t: Float, _ x: UnsafePointer<Float>) -> Void)? = nil
    ) throws -> ODEStats {
        try validate(method: method, tStart: tStart, tEnd: tEnd)
        guard field.dimension >= 1 else {
            throw ODEError.invalidArgument("field dimension must be ≥ 1, got \(field.dimension)")
        }
        guard rows >= 0 else { throw ODEError.invalidArgument("rows must be ≥ 0, got \(rows)") }
        let (a, b) = endpoints(direction, tStart, tEnd)
        guard rows > 0 else {
            record?(0, a, UnsafePointer(x))
            return ODEStats(nfe: 0, acceptedSteps: 0, rejectedSteps: 0)
        }
        if case .remix = method, direction == .backward {
            throw ODEError.invalidArgument("remix predicts the data and re-mixes the initial noise: it integrates forward only")
        }
        if case .ddim = method {
            throw ODEError.invalidArgument("ddim steps a VP diffusion model's ε-prediction: a velocity field integrates with euler, heun, midpoint, rk4, rk45, rfSolver2 or remix")
        }
        if case .rk45(let rtol, let atol, let maxNFE) = method {
            return try dormandPrince(field, x: x, rows: rows, from: Double(a), to: Double(b),
                                     rtol: rtol, atol: atol, maxNFE: maxNFE, record: record)
        }
        return fixedStep(field, x: x, rows: rows, method: method, from: a, to: b, record: record)
    }

    /// Euler, Heun, midpoint, RK4 and RF-Solver-2 on the uniform grid from `a` to `b`.
    static func fixedStep<F: VelocityField>(
        _ field: F, x: UnsafeMutablePointer<Float>, rows: Int, method: ODEMethod, from a: Float, to b: Float,
        record: ((Int, Float, UnsafePointer<Float>) -> Void)?
    ) -> ODEStats {
        let steps = method.steps!, perStep = method.evaluationsPerStep!
        let m = rows * field.dimension
        let h = (b - a) / Float(steps)       // < 0 when integrating backward
        let half = h * 0.5
        // Scratch: k1…k4 and the stage input, each [rows, d] (remix: k1 and the initial state).
        var scratch = [Float](repeating: 0, count: (perStep + 1) * m)
        scratch.withUnsafeMutableBufferPointer { s in
            let k1 = s.baseAddress!, k2 = k1 + m, tmp = k1 + perStep * m
            if case .remix = method { tmp.update(from: x, count: m) }      // z_a
            let k3 = k2 + m, k4 = k3 + m       // only touched by rk4 (perStep = 4)
            record?(0, a, x)
            for i in 0..<steps {
                let t = gridTime(i, steps: steps, from: a, to: b, h: h)
                let tNext = gridTime(i + 1, steps: steps, from: a, to: b, h: h)
                let tMid = a + (Float(i) + 0.5) * h
                field.willEvaluate(step: i, evaluation: 0)
                field.velocity(x, count: rows, t: t, into: k1)                     // k1 = v(x, t)
                switch method {
                case .euler:
                    for j in 0..<m { x[j] += h * k1[j] }
                case .remix:
                    // x̂ = x + (1 − t)·v; x ← ((t' − a)·x̂ + (1 − t')·z_a)/(1 − a)
                    let toData = 1 - t, wHat = (tNext - a) / (1 - a), wInit = (1 - tNext) / (1 - a)
                    for j in 0..<m { x[j] = wHat * (x[j] + toData * k1[j]) + wInit * tmp[j] }
                case .heun:
                    for j in 0..<m { tmp[j] = x[j] + h * k1[j] }
                    field.willEvaluate(step: i, evaluation: 1)
                    field.velocity(tmp, count: rows, t: tNext, into: k2)           // k2 = v(x + h·k1, t + h)
                    for j in 0..<m { x[j] += half * (k1[j] + k2[j]) }
                case .midpoint:
                    for j in 0..<m { tmp[j] = x[j] + half * k1[j] }
                    field.willEvaluate(step: i, evaluation: 1)
                    field.velocity(tmp, count: rows, t: tMid, into: k2)            // k2 = v(x + h/2·k1, t + h/2)
                    for j in 0..<m { x[j] += h * k2[j] }
                case .rfSolver2:
                    // Wang et al. 2025, RF-Solver-2: first-order Taylor term from a finite difference.
                    for j in 0..<m { tmp[j] = x[j] + half * k1[j] }                 // z_mid
                    field.willEvaluate(step: i, evaluation: 1)
                    field.velocity(tmp, count: rows, t: tMid, into: k2)            // v_mid
                    let h2 = h * h * 0.5
                    for j in 0..<m {
                        let dv = (k2[j] - k1[j]) / half                             // v'_i
                        x[j] += h * k1[j] + h2 * dv
                    }
                case .rk4:
                    for j in 0..<m { tmp[j] = x[j] + half * k1[j] }
                    field.willEvaluate(step: i, evaluation: 1)
                    field.velocity(tmp, count: rows, t: tMid, into: k2)
                    for j in 0..<m { tmp[j] = x[j] + half * k2[j] }
                    field.willEvaluate(step: i, evaluation: 2)
                    field.velocity(tmp, count: rows, t: tMid, into: k3)
                    for j in 0..<m { tmp[j] = x[j] + h * k3[j] }
                    field.willEvaluate(step: i, evaluation: 3)
                    field.velocity(tmp, count: rows, t: tNext, into: k4)
                    let h6 = h / 6
                    for j in 0..<m { x[j] += h6 * (k1[j] + 2 * k2[j] + 2 * k3[j] + k4[j]) }
                case .rk45, .ddim:
                    preconditionFailure("unreachable: rk45 is adaptive, ddim is refused by integrate")
                }
                record?(i + 1, tNext, x)
            }
        }
        return ODEStats(nfe: steps * perStep, acceptedSteps: steps, rejectedSteps: 0)
    }

    // MARK: Dormand–Prince 5(4)

    /// Butcher tableau of Dormand & Prince (1980), as in scipy's RK45.
    static let dpC: [Double] = [0, 1.0 / 5, 3.0 / 10, 4.0 / 5, 8.0 / 9, 1]
    static let dpA: [[Double]] = [
        [],
        [1.0 / 5],
        [3.0 / 40, 9.0 / 40],
        [44.0 / 45, -56.0 / 15, 32.0 / 9],
        [19372.0 / 6561, -25360.0 / 2187, 64448.0 / 6561, -212.0 / 729],
        [9017.0 / 3168, -355.0 / 33, 46732.0 / 5247, 49.0 / 176, -5103.0 / 18656],
    ]
    /// 5th-order weights (the solution is propagated with these: local extrapolation).
    static let dpB: [Double] = [35.0 / 384, 0, 500.0 / 1113, 125.0 / 192, -2187.0 / 6784, 11.0 / 84]
    /// Error weights b − b̂ over the 7 stages (the 7th is v(x_new, t + h), reused as the next k1).
    static let dpE: [Double] = [-71.0 / 57600, 0, 71.0 / 16695, -71.0 / 1920, 17253.0 / 339200, -22.0 / 525, 1.0 / 40]

    static let safety = 0.9, minFactor = 0.2, maxFactor = 10.0
    /// −1/(q + 1) with q = 4, the order of the embedded error estimator.
    static let errorExponent = -1.0 / 5

    /// RMS norm over all m elements of `value[j] / scale[j]` (Double accumulation).
    @inline(__always)
    static func rmsNorm(_ m: Int, _ term: (Int) -> Double) -> Double {
        var s = 0.0
        for j in 0..<m { let e = term(j); s += e * e }
        return (s / Double(m)).squareRoot()
    }

    /// Adaptive Dormand–Prince 5(4) with FSAL on one block; time runs from `t0` to `t1` (either
    /// order). Error norm: RMS over the whole block of |err| / (atol + rtol·max(|y|, |y_new|)).
    static func dormandPrince<F: VelocityField>(
        _ field: F, x: UnsafeMutablePointer<Float>, rows: Int, from t0: Double, to t1: Double,
        rtol: Double, atol: Double, maxNFE: Int, record: ((Int, Float, UnsafePointer<Float>) -> Void)?
    ) throws -> ODEStats {
        let m = rows * field.dimension
        let direction: Double = t1 > t0 ? 1 : -1
        let interval = abs(t1 - t0)
        var nfe = 0, accepted = 0, rejected = 0
        // Scratch: K0…K6 (stages), y_new and the stage input, each [rows, d].
        var scratch = [Float](repeating: 0, count: 9 * m)
        return try scratch.withUnsafeMutableBufferPointer { s -> ODEStats in
            let base = s.baseAddress!
            let k = (0..<7).map { base + $0 * m }
            let yNew = base + 7 * m, tmp = base + 8 * m
            func stop(_ t: Double) -> ODEError { .maxNFEExceeded(limit: maxNFE, t: t, target: t1) }

            // f0 = v(y0, t0)
            guard nfe + 1 <= maxNFE else { throw stop(t0) }
            field.velocity(x, count: rows, t: Float(t0), into: k[0])
            nfe += 1

            // Initial step (Hairer–Nørsett–Wanner II.4; scipy `select_initial_step`), 1 NFE.
            guard nfe + 1 <= maxNFE else { throw stop(t0) }
            var hAbs: Double
            do {
                let k0 = k[0]
                let d0 = rmsNorm(m) { Double(x[$0]) / (atol + rtol * Double(abs(x[$0]))) }
                let d1 = rmsNorm(m) { Double(k0[$0]) / (atol + rtol * Double(abs(x[$0]))) }
                var h0 = (d0 < 1e-5 || d1 < 1e-5) ? 1e-6 : 0.01 * d0 / d1
                if !h0.isFinite { h0 = 1e-6 }
                h0 = min(h0, interval)
                let step = Float(h0 * direction)
                for j in 0..<m { tmp[j] = x[j] + step * k0[j] }
                field.velocity(tmp, count: rows, t: Float(t0 + h0 * direction), into: k[1])
                nfe += 1
                let k1 = k[1]
                let d2 = rmsNorm(m) { (Double(k1[$0]) - Double(k0[$0])) / (atol + rtol * Double(abs(x[$0]))) } / h0
                let h1: Double
                if d1 <= 1e-15 && d2 <= 1e-15 {
                    h1 = max(1e-6, h0 * 1e-3)
                } else {
                    h1 = Foundation.pow(0.01 / max(d1, d2), 1.0 / 5)
                }
                hAbs = min(100 * h0, h1.isNaN ? h0 : h1, interval)
            }

            record?(0, Float(t0), x)
            var t = t0
            var sawNonFinite = false
            let a = dpA, bw = dpB, ew = dpE, c = dpC
            while direction * (t1 - t) > 0 {
                // The field sees Float(t): steps below a few ulps of t cannot make progress.
                let minStep = 10 * Double(Float(abs(t)).ulp)
                if hAbs < minStep { hAbs = minStep }
                var stepRejected = false
                while true {
                    if hAbs < minStep {
                        if sawNonFinite { throw ODEError.nonFinite(t: t) }
                        throw ODEError.stepSizeTooSmall(t: t, step: hAbs * direction)
                    }
                    guard nfe + 6 <= maxNFE else { throw stop(t) }
                    var tNew = t + hAbs * direction
                    if direction * (tNew - t1) > 0 { tNew = t1 }
                    let h = tNew - t
                    hAbs = abs(h)
                    // Stages 1…5: K_s = v(y + h·Σ_{j<s} A_sj·K_j, t + C_s·h)
                    for st in 1..<6 {
                        let coef = a[st].map { Float(h * $0) }
                        for j in 0..<m {
                            var acc = x[j]
                            for q in 0..<st { acc += coef[q] * k[q][j] }
                            tmp[j] = acc
                        }
                        field.velocity(tmp, count: rows, t: Float(t + c[st] * h), into: k[st])
                    }
                    // y_new = y + h·Σ B_j·K_j (5th order)
                    let bc = bw.map { Float(h * $0) }
                    for j in 0..<m {
                        var acc = x[j]
                        for q in 0..<6 where q != 1 { acc += bc[q] * k[q][j] }
                        yNew[j] = acc
                    }
                    // FSAL stage: K6 = v(y_new, t + h), the next step's K0.
                    field.velocity(yNew, count: rows, t: Float(tNew), into: k[6])
                    nfe += 6
                    // err = h·Σ E_j·K_j; scale = atol + rtol·max(|y|, |y_new|)
                    let errNorm = rmsNorm(m) { j in
                        var e = 0.0
                        for q in 0..<7 where q != 1 { e += ew[q] * Double(k[q][j]) }
                        let sc = atol + rtol * Double(max(abs(x[j]), abs(yNew[j])))
                        return h * e / sc
                    }
                    if errNorm < 1 {
                        var factor = errNorm == 0 ? maxFactor : min(maxFactor, safety * Foundation.pow(errNorm, errorExponent))
                        if stepRejected { factor = min(1, factor) }
                        hAbs *= factor
                        x.update(from: yNew, count: m)
                        k[0].update(from: k[6], count: m)
                        t = tNew
                        accepted += 1
                        record?(accepted, Float(t), x)
                        break
                    }
                    if !errNorm.isFinite { sawNonFinite = true }
                    // errNorm ≥ 1 or NaN: shrink (by minFactor when the norm is not finite).
                    let shrink = errNorm.isFinite ? max(minFactor, safety * Foundation.pow(errNorm, errorExponent)) : minFactor
                    hAbs *= shrink
                    stepRejected = true
                    rejected += 1
                }
            }
            return ODEStats(nfe: nfe, acceptedSteps: accepted, rejectedSteps: rejected)
        }
    }

    // MARK: whole tensors

    /// Runs `body` with a pointer to `labels[lo...]` (nil without labels).
    static func labelRows<R>(_ labels: [Int32]?, _ lo: Int, _ body: (UnsafePointer<Int32>?) throws -> R) rethrows -> R {
        guard let labels else { return try body(nil) }
        return try labels.withUnsafeBufferPointer { try body($0.baseAddress! + lo) }
    }

    /// Integrates every row of x: [n, field.dimension] as one block on the calling thread
    /// (for analytic fields; `rk45` adapts its steps to the whole of `x`).
    public static func solve(
        field: some VelocityField, x: Tensor, method: ODEMethod, direction: ODEDirection,
        tStart: Float = 0, tEnd: Float = 1, recordTrajectory: Bool = false
    ) throws -> ODESolution {
        try validate(method: method, tStart: tStart, tEnd: tEnd)
        let d = field.dimension
        guard d >= 1 else { throw ODEError.invalidArgument("field dimension must be ≥ 1, got \(d)") }
        try validate(x: x, dimension: d)
        let n = x.shape[0]
        if recordTrajectory, let s = method.steps, trajectoryTooLarge(frames: s + 1, floatsPerFrame: n * d) {
            throw ODEError.invalidArgument("the trajectory would hold \((s + 1)) × \(n * d) floats (limit \(maxTrajectoryFloats))")
        }
        guard n > 0 else {
            let (a, _) = endpoints(direction, tStart, tEnd)
            return ODESolution(x: x, nfe: 0, nfeMean: 0, blocks: [],
                               trajectory: recordTrajectory ? [(t: a, x: x)] : nil)
        }
        var out = x
        var frames: [(t: Float, x: Tensor)] = []
        let stats = try out.data.withUnsafeMutableBufferPointer { buf in
            try integrate(field, x: buf.baseAddress!, rows: n, method: method, direction: direction,
                          tStart: tStart, tEnd: tEnd,
                          record: recordTrajectory ? { _, t, p in
                              frames.append((t: t, x: Tensor(shape: [n, d], data: Array(UnsafeBufferPointer(start: p, count: n * d)))))
                          } : nil)
        }
        return ODESolution(x: out, nfe: stats.nfe, nfeMean: Double(stats.nfe), blocks: [stats],
                           trajectory: recordTrajectory ? frames : nil)
    }

    /// Per-block outcome of the parallel driver.
    private final class BlockResults: Sendable {
        struct Slot: Sendable {
            var stats: Result<ODEStats, any Error>
            var frames: [(t: Float, x: [Float])]
        }
        let slots: Mutex<[Slot?]>
        init(_ count: Int) { slots = Mutex([Slot?](repeating: nil, count: count)) }
        func set(_ i: Int, _ s: Slot) { slots.withLock { $0[i] = s } }
    }

    /// Integrates every row of x: [n, D] through the velocity network given by `model` and
    /// `stateDict`, in parallel.
    ///
    /// Rows are cut into blocks of `blockRows`, which are spread over `threads` workers with
    /// `parallelChunks`; each worker builds its own ``NetworkVelocityField`` (own no-grad graph,
    /// single-threaded GEMMs) and integrates whole trajectories of its blocks, so a block's
    /// activations stay in cache. Results never depend on `threads`. Fixed-step methods give every
    /// row the same arithmetic, whatever the blocks. `rk45` adapts its steps per block (the error
    /// norm is an RMS over the block), so its results and NFE depend on `blockRows` (and on the
    /// other rows of the block); use one block (blockRows ≥ n) for scipy-like whole-batch control.
    ///
    /// `labels` ([n], optional) are the class labels of the rows for a conditional model, and
    /// `guidance` its classifier-free guidance scale α (see ``NetworkVelocityField/guidance``;
    /// nil evaluates the model once per stage with the labels).
    /// `features` (RF-Edit, ``FeatureSharing``) records into or injects from a feature cache at
    /// the network's sites; it needs a fixed-step flow method with the cache's evaluations per
    /// step, at least as many steps as the cache holds, and the cache's number of rows. Each
    /// worker keys its block's rows by their offset, so any `blockRows` and `threads` work.
    /// `shouldStop` is polled before each block: when it returns true the remaining blocks are
    /// skipped and the call throws ``ODEError/interrupted`` (a long solve stops within one block).
    ///
    /// Recording a trajectory stores (steps + 1) × n × d floats for a fixed-step method; for `rk45`
    /// it needs a single block, because blocks take different steps.
    ///
    /// Throws ``ODEError`` for invalid arguments (model, method, shapes, non-finite inputs,
    /// `threads` or `blockRows` < 1, interval) and `rk45` failures (of the first failing block in
    /// row order), and `StateDictError` for weights that do not fit `model`.
    public static func solve(
        model: ModelSpec, stateDict: [String: Tensor], x: Tensor, labels: [Int32]? = nil, guidance: Float? = nil, method: ODEMethod,
        interpolant: Interpolant = .rectifiedFlow,
        direction: ODEDirection, threads: Int, blockRows: Int = 1024,
        tStart: Float = 0, tEnd: Float = 1, recordTrajectory: Bool = false,
        features: FeatureSharing? = nil,
        shouldStop: (@Sendable () -> Bool)? = nil
    ) throws -> ODESolution {
        if let e = model.validationError() {
            throw ODEError.invalidArgument("model \(e.pointer): \(e.message)")
        }
        try validate(method: method, tStart: tStart, tEnd: tEnd)
        if let features, let problem = features.problem(method: method, direction: direction, rows: x.rank == 2 ? x.shape[0] : -1) {
            throw ODEError.invalidArgument(problem)
        }
        var plan: DDIMPlan?
        if let message = interpolant.methodError(method) { throw ODEError.invalidArgument(message) }
        if let vp = interpolant.diffusion, case .ddim(let n) = method {
            guard tStart == 0 && tEnd == 1 else { throw ODEError.invalidArgument("ddim runs the whole schedule: tStart 0, tEnd 1") }
            guard n <= vp.steps else { throw ODEError.invalidArgument("ddim.steps must be at most the schedule's \(vp.steps) steps, got \(n)") }
            plan = DDIMPlan(diffusion: vp, indices: DDIM.trailingIndices(steps: n, of: vp.steps), end: -1)
        }
        return try solveBlocks(model: model, stateDict: stateDict, x: x, labels: labels, guidance: guidance, method: method,
                               plan: plan, direction: direction, threads: threads, blockRows: blockRows, tStart: tStart, tEnd: tEnd,
                               recordTrajectory: recordTrajectory, features: features, shouldStop: shouldStop)
    }

    /// DDIM through a VP diffusion model between any two indices of its schedule (`plan`;
    /// ``DDIMPlan``), in parallel blocks as ``solve(model:stateDict:x:labels:guidance:method:interpolant:direction:threads:blockRows:tStart:tEnd:recordTrajectory:shouldStop:)``:
    /// forward from `plan.indices[0]` down to `plan.end`, backward (inversion) from `plan.end`
    /// up to `plan.indices[0]`. Trajectory frames carry the flow times of their indices.
    public static func solve(
        model: ModelSpec, stateDict: [String: Tensor], x: Tensor, labels: [Int32]? = nil, guidance: Float? = nil,
        plan: DDIMPlan, direction: ODEDirection, threads: Int, blockRows: Int = 1024, recordTrajectory: Bool = false,
        shouldStop: (@Sendable () -> Bool)? = nil
    ) throws -> ODESolution {
        if let e = model.validationError() {
            throw ODEError.invalidArgument("model \(e.pointer): \(e.message)")
        }
        if let m = plan.validationError() { throw ODEError.invalidArgument(m) }
        return try solveBlocks(model: model, stateDict: stateDict, x: x, labels: labels, guidance: guidance,
                               method: .ddim(steps: plan.indices.count), plan: plan, direction: direction, threads: threads,
                               blockRows: blockRows, tStart: 0, tEnd: 1, recordTrajectory: recordTrajectory, features: nil, shouldStop: shouldStop)
    }

    private static func solveBlocks(
        model: ModelSpec, stateDict: [String: Tensor], x: Tensor, labels: [Int32]?, guidance: Float?, method: ODEMethod,
        plan: DDIMPlan?, direction: ODEDirection, threads: Int, blockRows: Int,
        tStart: Float, tEnd: Float, recordTrajectory: Bool, features: FeatureSharing?, shouldStop: (@Sendable () -> Bool)?
    ) throws -> ODESolution {
        guard threads >= 1 else { throw ODEError.invalidArgument("threads must be ≥ 1, got \(threads)") }
        guard blockRows >= 1 else { throw ODEError.invalidArgument("blockRows must be ≥ 1, got \(blockRows)") }
        let d = model.pointSize
        try validate(x: x, dimension: d)
        if let labels, labels.count != x.shape[0] {
            throw ODEError.invalidArgument("labels has \(labels.count) entries for \(x.shape[0]) rows")
        }
        if let guidance {
            guard model.classes != nil else { throw ODEError.invalidArgument("guidance needs a class-conditional model") }
            guard guidance.isFinite else { throw ODEError.invalidArgument("guidance must be finite, got \(guidance)") }
        }
        _ = try model.makeNetwork(stateDict: stateDict)   // check the weights once, on the caller's thread
        let n = x.shape[0]
        let blocks = n == 0 ? 0 : (n - 1) / blockRows + 1
        let (a, b) = endpoints(direction, tStart, tEnd)
        let steps = method.steps
        if recordTrajectory {
            if steps == nil && blocks > 1 {
                throw ODEError.invalidArgument("recording an rk45 trajectory needs a single block "
                    + "(blockRows ≥ rows = \(n)): each block takes its own adaptive steps")
            }
            if let s = steps, trajectoryTooLarge(frames: s + 1, floatsPerFrame: n * d) {
                throw ODEError.invalidArgument("the trajectory would hold \(s + 1) × \(n * d) floats (limit \(maxTrajectoryFloats))")
            }
        }
        guard n > 0 else {
            return ODESolution(x: x, nfe: 0, nfeMean: 0, blocks: [], trajectory: recordTrajectory ? [(t: a, x: x)] : nil)
        }

        var out = x
        // Fixed-step trajectories: frame k holds all rows, [steps + 1, n, d]; workers write their rows.
        var frameStore = [Float](repeating: 0, count: recordTrajectory ? (steps.map { ($0 + 1) * n * d } ?? 0) : 0)
        let results = BlockResults(blocks)
        out.data.withUnsafeMutableBufferPointer { buf in
            frameStore.withUnsafeMutableBufferPointer { fbuf in
                let px = SendableMutablePointer(buf.baseAddress)
                let pf = SendableMutablePointer(fbuf.baseAddress)
                parallelChunks(count: blocks, threads: threads) { range in
                    let field: NetworkVelocityField
                    do {
                        field = try NetworkVelocityField(model: model, stateDict: stateDict)
                        field.guidance = guidance
                        field.tap = features.map { FeatureSharingTap($0, steps: steps ?? 0) }
                    } catch {
                        for blk in range { results.set(blk, .init(stats: .failure(error), frames: [])) }
                        return
                    }
                    var stopped = false
                    for blk in range {
                        if stopped || (shouldStop?() ?? false) {
                            stopped = true
                            results.set(blk, .init(stats: .failure(ODEError.interrupted), frames: []))
                            continue
                        }
                        let lo = blk * blockRows, rows = min(blockRows, n - lo)
                        var frames: [(t: Float, x: [Float])] = []
                        var recorder: ((Int, Float, UnsafePointer<Float>) -> Void)?
                        if recordTrajectory {
                            if steps != nil {
                                recorder = { k, _, p in
                                    (pf.base! + (k * n + lo) * d).update(from: p, count: rows * d)
                                }
                            } else {
                                recorder = { _, t, p in
                                    frames.append((t: t, x: Array(UnsafeBufferPointer(start: p, count: rows * d))))
                                }
                            }
                        }
                        do {
                            field.tap?.rowOffset = lo
                            field.tap?.blockRows = rows
                            let st = try labelRows(labels, lo) { field.labels = $0; defer { field.labels = nil }
                            if let plan {
                                return plan.run(NetworkNoiseField(field, plan.diffusion), x: px.base! + lo * d, rows: rows,
                                                direction: direction, record: recorder)
                            }
                            return try integrate(field, x: px.base! + lo * d, rows: rows, method: method,
                                                   direction: direction, tStart: tStart, tEnd: tEnd, record: recorder) }
                            if let failure = field.tap?.failure { throw ODEError.invalidArgument("feature sharing: \(failure)") }
                            if let features, features.mode == .record { features.cache.markRecorded(steps: steps ?? 0) }
                            results.set(blk, .init(stats: .success(st), frames: frames))
                        } catch {
                            results.set(blk, .init(stats: .failure(error), frames: []))
                        }
                    }
                }
            }
        }

        let slots = results.slots.withLock { $0 }
        var stats: [ODEStats] = []
        stats.reserveCapacity(blocks)
        for slot in slots {
            guard let slot else { throw ODEError.invalidArgument("internal: a block was not integrated") }
            stats.append(try slot.stats.get())
        }
        var nfeSum = 0.0
        for (blk, st) in stats.enumerated() {
            nfeSum += Double(st.nfe) * Double(min(blockRows, n - blk * blockRows))
        }
        var trajectory: [(t: Float, x: Tensor)]?
        if recordTrajectory {
            if let s = steps {
                let h = (b - a) / Float(s)
                trajectory = (0...s).map { k in
                    (t: plan?.frameTime(k, direction: direction) ?? gridTime(k, steps: s, from: a, to: b, h: h),
                     x: Tensor(shape: [n, d], data: Array(frameStore[(k * n * d)..<((k + 1) * n * d)])))
                }
            } else {
                trajectory = slots[0]!.frames.map { (t: $0.t, x: Tensor(shape: [n, d], data: $0.x)) }
            }
        }
        return ODESolution(x: out, nfe: stats.map(\.nfe).max() ?? 0, nfeMean: nfeSum / Double(n),
                           blocks: stats, trajectory: trajectory)
    }
}
