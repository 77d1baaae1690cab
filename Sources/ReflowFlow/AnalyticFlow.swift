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

    /// Throws when `data` is not a non-empty [n, d] set of finite values.
    public init(data: Tensor) throws {
        guard data.rank == 2, data.shape[0] > 0, data.shape[1] > 0 else {
            throw ODEError.invalidArgument("AnalyticFlow: data must be a non-empty [n, d] tensor, got \(data.shape)")
        }
        guard data.data.allSatisfy(\.isFinite) else { throw ODEError.invalidArgument("AnalyticFlow: data must be finite") }
        dimension = data.shape[1]
        self.data = data.data
    }

    /// log p_t(x) up to a constant: logsumexp_i(−‖x − t·x_i‖²/(2(1 − t)²)) − d·log(1 − t).
    /// (The density of x_t is the mixture of N(t·x_i, (1 − t)²·I); used to check the field.)
    public func logDensity(_ x: [Float], t: Float) -> Double {
        let s = 1 - Double(min(t, 1 - 1e-6)), d = dimension
        var logits = [Double](repeating: 0, count: count)
        for i in 0..<count {
            var q = 0.0
            for c in 0..<d { let e = Double(x[c]) - Double(t) * Double(data[i * d + c]); q += e * e }
            logits[i] = -q / (2 * s * s)
        }
        let mx = logits.max() ?? 0
        return mx + Foundation.log(logits.reduce(0) { $0 + Foundation.exp($1 - mx) }) - Double(d) * Foundation.log(s)
    }

    public func velocity(_ x: UnsafePointer<Float>, count rows: Int, t: Float, into v: UnsafeMutablePointer<Float>) {
        let d = dimension, n = count
        let tt = Double(min(t, 1 - 1e-6)), s = 1 - tt
        var logits = [Double](repeating: 0, count: n)
        var mean = [Double](repeating: 0, count: d)
        for r in 0..<rows {
            let xr = x + r * d
            for i in 0..<n {
                var q = 0.0
                for c in 0..<d { let e = Double(xr[c]) - tt * Double(data[i * d + c]); q += e * e }
                logits[i] = -q / (2 * s * s)
            }
            let mx = logits.max() ?? 0
            var z = 0.0
            for i in 0..<n { logits[i] = Foundation.exp(logits[i] - mx); z += logits[i] }
            for c in 0..<d { mean[c] = 0 }
            for i in 0..<n {
                let w = logits[i] / z
                for c in 0..<d { mean[c] += w * Double(data[i * d + c]) }
            }
            for c in 0..<d { v[r * d + c] = Float((mean[c] - Double(xr[c])) / s) }
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
        let d = dimension, n = flow.count, data = flow.data
        let a = index < 0 ? 1 : alphaBars[min(index, alphaBars.count - 1)]
        let ra = a.squareRoot(), var2 = max(1 - a, 1e-12)
        var logits = [Double](repeating: 0, count: n), mean = [Double](repeating: 0, count: d)
        for r in 0..<rows {
            let xr = x + r * d
            for j in 0..<n {
                var q = 0.0
                for c in 0..<d { let e = Double(xr[c]) - ra * Double(data[j * d + c]); q += e * e }
                logits[j] = -q / (2 * var2)
            }
            let mx = logits.max() ?? 0
            var z = 0.0
            for j in 0..<n { logits[j] = Foundation.exp(logits[j] - mx); z += logits[j] }
            for c in 0..<d { mean[c] = 0 }
            for j in 0..<n {
                let w = logits[j] / z
                for c in 0..<d { mean[c] += w * Double(data[j * d + c]) }
            }
            for c in 0..<d { eps[r * d + c] = Float((Double(xr[c]) - ra * mean[c]) / var2.squareRoot()) }
        }
    }
}
