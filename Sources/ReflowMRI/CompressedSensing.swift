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

    /// The penalty R of F(x) = ½‖A·x − y‖² + λ·R(x).
    public enum Regularizer: Sendable, Equatable {
        /// R(x) = ‖Ψx‖₁ with Ψ the orthonormal Haar transform of `levels` levels (nil: as many as
        /// the sides allow). Its prox is exact (soft thresholding of the coefficients).
        case wavelet(levels: Int?)
        /// R(x) = isotropic total variation Σ_pixels √(|∂₁x|² + |∂₂x|²) (forward differences,
        /// none across the border; complex differences by magnitude). Its prox is computed by
        /// `inner` iterations of Beck & Teboulle's fast gradient projection on the dual (FGP,
        /// IEEE TIP 18(11), 2009).
        case tv(inner: Int)
    }

    /// F(x) = ½‖A·x − y‖² + λ·R(x).
    public static func objective(_ a: ForwardModel, _ x: ComplexTensor, _ y: ComplexTensor, lambda: Double,
                                 regularizer: Regularizer) -> Double {
        switch regularizer {
        case .wavelet(let levels):
            let lv = levels ?? Haar2D.maxLevels(height: x.shape[0], width: x.shape[1])
            return a.misfit(x, y) + lambda * l1(Haar2D.forward(x, levels: lv))
        case .tv:
            return a.misfit(x, y) + lambda * TotalVariation.value(x)
        }
    }

    /// F(x) with the Haar ℓ1 penalty.
    public static func objective(_ a: ForwardModel, _ x: ComplexTensor, _ y: ComplexTensor, lambda: Double, levels: Int) -> Double {
        objective(a, x, y, lambda: lambda, regularizer: .wavelet(levels: levels))
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

    /// prox of τ·R.
    static func prox(_ v: ComplexTensor, tau: Double, regularizer: Regularizer) -> ComplexTensor {
        switch regularizer {
        case .wavelet(let levels):
            return prox(v, tau: tau, levels: levels ?? Haar2D.maxLevels(height: v.shape[0], width: v.shape[1]))
        case .tv(let inner):
            return TotalVariation.prox(v, tau: tau, iterations: inner)
        }
    }

    /// Runs `iterations` of `method` from the zero-filled image with the Haar ℓ1 penalty.
    /// `levels` nil: as many Haar levels as the image's sides allow.
    public static func reconstruct(_ a: ForwardModel, _ y: ComplexTensor, lambda: Double, iterations: Int,
                                   method: Method = .fista, levels: Int? = nil) -> Result {
        reconstruct(a, y, lambda: lambda, iterations: iterations, method: method, regularizer: .wavelet(levels: levels))
    }

    /// Runs `iterations` of `method` from the zero-filled image. `recordObjective` false skips
    /// evaluating F after each iteration where the method does not need it (ISTA, FISTA: for
    /// timing; `objective` then holds only the start). `onIterate` sees each iterate (1-based);
    /// `shouldStop` true ends the iterations early (a job being cancelled).
    public static func reconstruct(_ a: ForwardModel, _ y: ComplexTensor, lambda: Double, iterations: Int,
                                   method: Method = .fista, regularizer: Regularizer, recordObjective: Bool = true,
                                   shouldStop: (() -> Bool)? = nil,
                                   onIterate: ((Int, ComplexTensor) -> Void)? = nil) -> Result {
        let L = lipschitz(a), step = Float(1 / L), tau = lambda / L
        var x = a.adjoint(y)
        let needF = recordObjective || method == .mfista
        var f = needF ? objective(a, x, y, lambda: lambda, regularizer: regularizer) : .nan
        var history = [f]
        var z = x, t = 1.0
        func proxStep(_ p: ComplexTensor) -> ComplexTensor {
            let g = a.gradient(p, y)
            var v = p
            for i in 0..<v.data.count { v.data[i] -= step * g.data[i] }
            return prox(v, tau: tau, regularizer: regularizer)
        }
        for it in 0..<max(0, iterations) {
            if let shouldStop, shouldStop() { break }   // the caller sees the stop and discards x
            switch method {
            case .ista:
                x = proxStep(x)
                if needF { f = objective(a, x, y, lambda: lambda, regularizer: regularizer) }
            case .fista, .mfista:
                let u = proxStep(z)
                let tNext = (1 + (1 + 4 * t * t).squareRoot()) / 2
                let previous = x
                let fu = needF ? objective(a, u, y, lambda: lambda, regularizer: regularizer) : .nan
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
            if recordObjective { history.append(f) }
            onIterate?(it + 1, x)
        }
        return Result(x: x, objective: history)
    }
}

/// Isotropic total variation of a complex image [H, W] and its proximal operator.
///
/// With forward differences p_ij = x_ij − x_{i+1,j} (i < H − 1) and q_ij = x_ij − x_{i,j+1}
/// (j < W − 1), zero past the border, TV(x) = Σ_ij √(|p_ij|² + |q_ij|²). The prox
/// argmin_x ½‖x − v‖² + τ·TV(x) is v − τ·L(p, q) for the dual (p, q) maximised by FGP over
/// the set |p_ij|² + |q_ij|² ≤ 1, where L(p, q)_ij = p_ij + q_ij − p_{i−1,j} − q_{i,j−1} is the
/// adjoint of the differences (Beck & Teboulle 2009, step 1/(8τ)).
public enum TotalVariation {
    /// TV(x) of [H, W].
    public static func value(_ x: ComplexTensor) -> Double {
        let (h, w) = (x.shape[0], x.shape[1])
        var s = 0.0
        for i in 0..<h {
            for j in 0..<w {
                let k = i * w + j
                var m = 0.0
                if i + 1 < h { let k2 = k + w; m += sq(x, k, k2) }
                if j + 1 < w { m += sq(x, k, k + 1) }
                s += m.squareRoot()
            }
        }
        return s
    }

    @inline(__always) static func sq(_ x: ComplexTensor, _ a: Int, _ b: Int) -> Double {
        let dr = Double(x.data[2 * a] - x.data[2 * b]), di = Double(x.data[2 * a + 1] - x.data[2 * b + 1])
        return dr * dr + di * di
    }

    /// out = v − λ·L(p, q), all interleaved complex [H·W].
    @inline(__always)
    static func residual(_ v: UnsafePointer<Float>, _ p: UnsafePointer<Float>, _ q: UnsafePointer<Float>, lambda: Float,
                         _ out: UnsafeMutablePointer<Float>, h: Int, w: Int) {
        for i in 0..<h {
            for j in 0..<w {
                let k = 2 * (i * w + j)
                for c in 0..<2 {
                    var l = p[k + c] + q[k + c]
                    if i > 0 { l -= p[k - 2 * w + c] }
                    if j > 0 { l -= q[k - 2 + c] }
                    out[k + c] = v[k + c] - lambda * l
                }
            }
        }
    }

    /// argmin_x ½‖x − v‖² + τ·TV(x) by `iterations` of FGP (0 or τ ≤ 0: v itself).
    public static func prox(_ v: ComplexTensor, tau: Double, iterations: Int) -> ComplexTensor {
        guard tau > 0, iterations > 0 else { return v }
        let (h, w) = (v.shape[0], v.shape[1]), n = 2 * h * w
        let lam = Float(tau), c = 1 / (8 * lam)
        // (p, q): the dual iterate; (pOld, qOld) the previous one; (r, s) the extrapolated point.
        var buffers = [Float](repeating: 0, count: 7 * n)
        var out = v
        buffers.withUnsafeMutableBufferPointer { b in
            let base = b.baseAddress!
            var (p, q, pOld, qOld) = (base, base + n, base + 2 * n, base + 3 * n)
            let (r, s, x) = (base + 4 * n, base + 5 * n, base + 6 * n)
            var t: Float = 1
            v.data.withUnsafeBufferPointer { vb in
                for _ in 0..<iterations {
                    // x = v − λ·L(r, s); (p, q) ← P[(r, s) + (1/(8λ))·Lᵀx], Lᵀx the forward differences.
                    residual(vb.baseAddress!, r, s, lambda: lam, x, h: h, w: w)
                    swap(&p, &pOld)
                    swap(&q, &qOld)
                    for i in 0..<h {
                        for j in 0..<w {
                            let k = 2 * (i * w + j)
                            var a0: Float = 0, a1: Float = 0, b0: Float = 0, b1: Float = 0
                            if i + 1 < h {
                                a0 = r[k] + c * (x[k] - x[k + 2 * w]); a1 = r[k + 1] + c * (x[k + 1] - x[k + 2 * w + 1])
                            }
                            if j + 1 < w {
                                b0 = s[k] + c * (x[k] - x[k + 2]); b1 = s[k + 1] + c * (x[k + 1] - x[k + 3])
                            }
                            let m = 1 / max(1, (a0 * a0 + a1 * a1 + b0 * b0 + b1 * b1).squareRoot())
                            p[k] = a0 * m; p[k + 1] = a1 * m
                            q[k] = b0 * m; q[k + 1] = b1 * m
                        }
                    }
                    let tNext = (1 + (1 + 4 * t * t).squareRoot()) / 2
                    let f = (t - 1) / tNext
                    for k in 0..<n {
                        r[k] = p[k] + f * (p[k] - pOld[k])
                        s[k] = q[k] + f * (q[k] - qOld[k])
                    }
                    t = tNext
                }
                out.data.withUnsafeMutableBufferPointer { o in residual(vb.baseAddress!, p, q, lambda: lam, o.baseAddress!, h: h, w: w) }
            }
        }
        return out
    }
}
