public import ReflowEngine
import Foundation

/// The orthonormal 2-D Haar wavelet transform of complex images [H, W] (real and imaginary parts
/// transformed alike), `levels` deep: each level splits the current low-pass block by
/// a = (x₀ + x₁)/√2, d = (x₀ − x₁)/√2 along the rows, then along the columns. Orthonormal, so the
/// inverse is the adjoint. A level needs even sides; ``maxLevels(height:width:)`` says how many fit.
public enum Haar2D {
    /// Levels whose blocks keep even sides (28×28: 2, 64×64: 6, odd sides: 0).
    public static func maxLevels(height: Int, width: Int) -> Int {
        var (h, w, l) = (height, width, 0)
        while h % 2 == 0 && w % 2 == 0 && h >= 2 && w >= 2 { h /= 2; w /= 2; l += 1 }
        return l
    }

    public static func forward(_ x: ComplexTensor, levels: Int) -> ComplexTensor { transform(x, levels: levels, inverse: false) }
    public static func inverse(_ x: ComplexTensor, levels: Int) -> ComplexTensor { transform(x, levels: levels, inverse: true) }

    static func transform(_ x: ComplexTensor, levels: Int, inverse: Bool) -> ComplexTensor {
        let (h, w) = (x.shape[0], x.shape[1])
        let depth = min(levels, maxLevels(height: h, width: w))
        var d = x.data
        let s = Float(0.5.squareRoot())
        var tmp = [Float](repeating: 0, count: 2 * max(h, w))
        // One 1-D step on `n` complex values at `start` with `stride` (in complex elements).
        func step(_ start: Int, _ stride: Int, _ n: Int) {
            let half = n / 2
            for k in 0..<half {
                let (i0, i1) = (start + (2 * k) * stride, start + (2 * k + 1) * stride)
                let (ia, id) = (start + k * stride, start + (half + k) * stride)
                if inverse {
                    for c in 0..<2 {
                        tmp[2 * (2 * k) + c] = (d[2 * ia + c] + d[2 * id + c]) * s
                        tmp[2 * (2 * k + 1) + c] = (d[2 * ia + c] - d[2 * id + c]) * s
                    }
                } else {
                    for c in 0..<2 {
                        tmp[2 * k + c] = (d[2 * i0 + c] + d[2 * i1 + c]) * s
                        tmp[2 * (half + k) + c] = (d[2 * i0 + c] - d[2 * i1 + c]) * s
                    }
                }
            }
            for k in 0..<n { for c in 0..<2 { d[2 * (start + k * stride) + c] = tmp[2 * k + c] } }
        }
        let sizes = (0..<depth).map { (h >> $0, w >> $0) }
        for (bh, bw) in (inverse ? sizes.reversed() : sizes) {
            if inverse {
                for c in 0..<bw { step(c, w, bh) }          // columns first, undoing the forward order
                for r in 0..<bh { step(r * w, 1, bw) }
            } else {
                for r in 0..<bh { step(r * w, 1, bw) }
                for c in 0..<bw { step(c, w, bh) }
            }
        }
        return ComplexTensor(shape: x.shape, data: d)
    }
}

/// Compressed-sensing reconstruction: min_x ½‖A·x − y‖² + λ‖Ψx‖₁ with A the ``ForwardModel`` and Ψ
/// the orthonormal Haar transform (the ℓ1 of a complex coefficient is its magnitude), by proximal
/// gradient (Beck & Teboulle 2009, "A Fast Iterative Shrinkage-Thresholding Algorithm for Linear
/// Inverse Problems", SIAM J. Imaging Sci. 2(1); MFISTA from their TIP 2009 paper on TV).
public enum CompressedSensing {
    public enum Method: String, Codable, Sendable, CaseIterable {
        /// x ← prox(x − ∇f(x)/L): monotone, O(1/k).
        case ista
        /// Nesterov momentum: O(1/k²), not monotone.
        case fista
        /// Monotone FISTA: keeps the better of the prox step and the previous iterate.
        case mfista
    }

    /// One run's iterates: the final image and the objective after every iteration (index 0 is
    /// the start, the zero-filled image Aᴴy).
    public struct Result: Sendable {
        public var x: ComplexTensor
        public var objective: [Double]
    }

    /// L, a Lipschitz constant of ∇½‖A·x − y‖²: the largest Σ_c |S_c|² over pixels (1 for a single coil).
    public static func lipschitz(_ a: ForwardModel) -> Double {
        guard let s = a.sensitivities else { return 1 }
        let n = a.mask.count
        var best = 0.0
        for i in 0..<n {
            var sum = 0.0
            for c in 0..<s.shape[0] {
                let (re, im) = (Double(s.data[2 * (c * n + i)]), Double(s.data[2 * (c * n + i) + 1]))
                sum += re * re + im * im
            }
            best = max(best, sum)
        }
        return max(best, 1e-12)
    }

    /// F(x) = ½‖A·x − y‖² + λ‖Ψx‖₁.
    public static func objective(_ a: ForwardModel, _ x: ComplexTensor, _ y: ComplexTensor, lambda: Double, levels: Int) -> Double {
        a.misfit(x, y) + lambda * l1(Haar2D.forward(x, levels: levels))
    }

    static func l1(_ w: ComplexTensor) -> Double {
        var s = 0.0
        for k in 0..<w.count { s += (Double(w.data[2 * k]) * Double(w.data[2 * k]) + Double(w.data[2 * k + 1]) * Double(w.data[2 * k + 1])).squareRoot() }
        return s
    }

    /// prox of τ‖Ψ·‖₁: Ψᵀ soft(Ψv, τ), soft shrinking each complex coefficient's magnitude by τ.
    static func prox(_ v: ComplexTensor, tau: Double, levels: Int) -> ComplexTensor {
        var w = Haar2D.forward(v, levels: levels)
        for k in 0..<w.count {
            let (re, im) = (Double(w.data[2 * k]), Double(w.data[2 * k + 1]))
            let m = (re * re + im * im).squareRoot()
            let f = m > tau ? (1 - tau / m) : 0
            w.data[2 * k] = Float(re * f)
            w.data[2 * k + 1] = Float(im * f)
        }
        return Haar2D.inverse(w, levels: levels)
    }

    /// Runs `iterations` of `method` from the zero-filled image. `levels` nil: as many Haar levels
    /// as the image's sides allow.
    public static func reconstruct(_ a: ForwardModel, _ y: ComplexTensor, lambda: Double, iterations: Int,
                                   method: Method = .fista, levels: Int? = nil) -> Result {
        let lv = levels ?? Haar2D.maxLevels(height: a.mask.shape[0], width: a.mask.shape[1])
        let L = lipschitz(a), step = Float(1 / L), tau = lambda / L
        var x = a.adjoint(y)
        var f = objective(a, x, y, lambda: lambda, levels: lv)
        var history = [f]
        var z = x, t = 1.0
        func proxStep(_ p: ComplexTensor) -> ComplexTensor {
            let g = a.gradient(p, y)
            var v = p
            for i in 0..<v.data.count { v.data[i] -= step * g.data[i] }
            return prox(v, tau: tau, levels: lv)
        }
        for _ in 0..<max(0, iterations) {
            switch method {
            case .ista:
                x = proxStep(x)
                f = objective(a, x, y, lambda: lambda, levels: lv)
            case .fista, .mfista:
                let u = proxStep(z)
                let tNext = (1 + (1 + 4 * t * t).squareRoot()) / 2
                let previous = x
                let fu = objective(a, u, y, lambda: lambda, levels: lv)
                if method == .fista || fu <= f {
                    x = u
                    f = fu
                }
                // z = x + (t/t')(u − x) + ((t − 1)/t')(x − x_prev); for FISTA x = u and the middle term vanishes.
                let (c1, c2) = (Float(t / tNext), Float((t - 1) / tNext))
                for i in 0..<z.data.count {
                    z.data[i] = x.data[i] + c1 * (u.data[i] - x.data[i]) + c2 * (x.data[i] - previous.data[i])
                }
                t = tNext
            }
            history.append(f)
        }
        return Result(x: x, objective: history)
    }
}
