public import ReflowEngine
import Foundation

/// The exact velocity field of the 1-rectified flow between N(0, I) and the empirical
/// distribution of a small dataset {x_i} (SlimFlow's `AnalyticFlow`, ALGORITHMS.md §6): with
/// x_t = t·x1 + (1 − t)·x0 (t = 0 noise, t = 1 data) the posterior of x1 given x_t = x weights
/// item i by w_i ∝ exp(−‖x − t·x_i‖²/(2(1 − t)²)), so
///
///     v(x, t) = E[x1 − x0 | x_t = x] = (Σ_i w_i·x_i − x)/(1 − t).
///
/// A teacher that needs no training, and a test oracle. The weights are a softmax computed in
/// Double with the maximum subtracted (no overflow at small 1 − t). At t = 1 exactly the field
/// is singular; times are clamped to 1 − 10⁻⁶.
public struct AnalyticFlow: VelocityField, Sendable {
    public let dimension: Int
    /// The dataset, [n, dimension] row-major.
    public let data: [Float]
    public var count: Int { data.count / dimension }

    /// A field over `data` ([n·dimension] floats) the caller has checked.
    init(checked data: [Float], dimension: Int) {
        self.dimension = dimension
        self.data = data
    }

    /// Throws when `data` is not a non-empty [n, d] set of finite values.
    public init(data: Tensor) throws {
        guard data.rank == 2, data.shape[0] > 0, data.shape[1] > 0 else {
            throw ODEError.invalidArgument("AnalyticFlow: data must be a non-empty [n, d] tensor, got \(data.shape)")
        }
        guard data.data.allSatisfy(\.isFinite) else { throw ODEError.invalidArgument("AnalyticFlow: data must be finite") }
        dimension = data.shape[1]
        self.data = data.data
    }

    /// The Gaussian mixture that every field here is a posterior of: item i contributes
    /// N(scale·x_i, variance·I). For one point x ([dimension] floats) returns the logsumexp of
    /// the logits −‖x − scale·x_i‖²/(2·variance) (`logits`, [count], is scratch); with `mean`
    /// ([dimension]) also the posterior mean Σ_i softmax_i·x_i (in Double, maximum subtracted).
    func posterior(_ x: UnsafePointer<Float>, scale: Double, variance: Double, logits: inout [Double],
                   mean: UnsafeMutablePointer<Double>?) -> Double {
        let d = dimension, n = count
        for i in 0..<n {
            var q = 0.0
            for c in 0..<d { let e = Double(x[c]) - scale * Double(data[i * d + c]); q += e * e }
            logits[i] = -q / (2 * variance)
        }
        let mx = logits.max() ?? 0
        var z = 0.0
        for i in 0..<n { logits[i] = Foundation.exp(logits[i] - mx); z += logits[i] }
        if let mean {
            for c in 0..<d { mean[c] = 0 }
            for i in 0..<n {
                let w = logits[i] / z
                for c in 0..<d { mean[c] += w * Double(data[i * d + c]) }
            }
        }
        return mx + Foundation.log(z)
    }

    /// Runs `body(x_r, E[x_i | x_r])` for every row of x ([rows, dimension]) under the mixture
    /// N(scale·x_i, variance·I).
    func forEachPosteriorMean(_ x: UnsafePointer<Float>, rows: Int, scale: Double, variance: Double,
                              _ body: (_ row: Int, _ mean: UnsafePointer<Double>) -> Void) {
        var logits = [Double](repeating: 0, count: count), mean = [Double](repeating: 0, count: dimension)
        mean.withUnsafeMutableBufferPointer { m in
            for r in 0..<rows {
                _ = posterior(x + r * dimension, scale: scale, variance: variance, logits: &logits, mean: m.baseAddress!)
                body(r, m.baseAddress!)
            }
        }
    }

    /// log p_t(x) up to a constant: logsumexp_i(−‖x − t·x_i‖²/(2(1 − t)²)) − d·log(1 − t).
    /// (The density of x_t is the mixture of N(t·x_i, (1 − t)²·I); used to check the field.)
    public func logDensity(_ x: [Float], t: Float) -> Double {
        let s = 1 - Double(min(t, 1 - 1e-6))
        var logits = [Double](repeating: 0, count: count)
        let lse = x.withUnsafeBufferPointer { posterior($0.baseAddress!, scale: Double(t), variance: s * s, logits: &logits, mean: nil) }
        return lse - Double(dimension) * Foundation.log(s)
    }

    public func velocity(_ x: UnsafePointer<Float>, count rows: Int, t: Float, into v: UnsafeMutablePointer<Float>) {
        let d = dimension, tt = Double(min(t, 1 - 1e-6)), s = 1 - tt
        forEachPosteriorMean(x, rows: rows, scale: tt, variance: s * s) { r, mean in
            for c in 0..<d { v[r * d + c] = Float((mean[c] - Double(x[r * d + c])) / s) }
        }
    }
}

extension AnalyticFlow {
    /// The exact ε-prediction field of a VP diffusion of the same dataset under `schedule`:
    /// with x_i = √ᾱ·x0 + √(1 − ᾱ)·ε the posterior of x0 weights item j by
    /// exp(−‖x − √ᾱ·x_j‖²/(2(1 − ᾱ))), and ε̂(x, i) = (x − √ᾱ·E[x0 | x])/√(1 − ᾱ). An oracle
    /// for DDIM sampling and inversion (a trained model's ε̂ approximates it).
    public func epsilonField(schedule: NoiseSchedule) -> AnalyticEpsilon { AnalyticEpsilon(flow: self, alphaBars: schedule.alphaBars) }
}

/// See ``AnalyticFlow/epsilonField(schedule:)``.
public struct AnalyticEpsilon: NoisePredictionField, Sendable {
    let flow: AnalyticFlow
    let alphaBars: [Double]
    public var dimension: Int { flow.dimension }

    public func epsilon(_ x: UnsafePointer<Float>, count rows: Int, index: Int, into eps: UnsafeMutablePointer<Float>) {
        let d = dimension
        let a = index < 0 ? 1 : alphaBars[min(index, alphaBars.count - 1)]
        let ra = a.squareRoot(), variance = max(1 - a, 1e-12), sigma = variance.squareRoot()
        flow.forEachPosteriorMean(x, rows: rows, scale: ra, variance: variance) { r, mean in
            for c in 0..<d { eps[r * d + c] = Float((Double(x[r * d + c]) - ra * mean[c]) / sigma) }
        }
    }
}
