// Rectified Diffusion (Wang et al., ICLR 2025, "Straightness Is Not Your Need"): what a VP
// diffusion student trains on. Ordinary rectification needs no code of its own: a `vp`
// interpolant on a teacher's stored (noise, sample) pairs trains with the paired noise (x_i =
// √ᾱ_i·x0* + √(1 − ᾱ_i)·ε*), and `lossSpace: "data"` with the element-wise pseudo-Huber loss
// compares x̂0 with x0* as their train.py does. This file holds the phased variant and the
// first-order-ness metric.
//
// Notation (DDPM index i, ``VPDiffusion``): α_i = √ᾱ_i, σ_i = √(1 − ᾱ_i), s_i = σ_i/α_i (the
// noise-to-signal ratio; 0 at i = −1). DDIM is exact on y = x/α as a function of s when ε̂ is
// constant: y(s) = x0* + s·ε*. A "first-order" model keeps ε̂ constant along its trajectories.

/// Where a training loss compares prediction and target.
public enum LossSpace: String, Codable, Sendable, CaseIterable {
    /// The network's output against its regression target (velocity, ε or v).
    case output
    /// The data each output predicts (x̂1 = x_t + (1 − t)·v̂ for a flow, x̂0 for a VP model,
    /// the phase end for phased rectification): the output error times a per-row factor.
    case data
}

/// Phased Rectified Diffusion (the paper's `train_phased.py`, with the pairs made once instead
/// of online): the DDPM index range is cut into K phases at diffusers' trailing indices of K
/// steps, phase p running from index start_p = round(T − p·T/K) − 1 down to end_p =
/// start_{p+1} (−1 for the last). A stored pair of phase p (pair j has phase j mod K) is a real
/// item noised to start_p with fresh noise (z0 = x_s) and the teacher's DDIM from there to end_p
/// (z1 = x_e). Training draws u in (end_p, start_p], puts x_u on the constant-ε path between them,
///
///     ε' = (x_e/α_e − x_s/α_s)/(s_e − s_s),   x_u = α_u·(x_s/α_s + (s_u − s_s)·ε'),
///
/// and regresses ε̂(x_u, u) on ε' (a v-prediction student: on v' = α_u·ε' − σ_u·x0', with
/// x0' = (x_u − σ_u·ε')/α_u the path's data, so that its ε̂ = σ_u·x_u + α_u·v̂ is ε'). One DDIM
/// step from u to end_p then lands on x̂_e = α_e·(x_u/α_u + (s_e − s_u)·ε̂), whose error is
/// α_e·(s_u − s_e)·(ε̂ − ε') (times α_u for a v error): that is the factor
/// `lossSpace: "data"` applies (the paper's pseudo-Huber on x̂_e).
public enum PhasedRectification {
    /// Largest number of phases accepted.
    public static let maxPhases = 100

    /// (start, end) indices of the K phases, noisiest first.
    public static func boundaries(phases k: Int, steps t: Int) -> [(start: Int, end: Int)] {
        let starts = DDIM.trailingIndices(steps: k, of: t)
        return starts.enumerated().map { p, s in (s, p + 1 < k ? starts[p + 1] : -1) }
    }

    /// Forms x_u, the target ε', the network time of u and the data-space factor for `rows`
    /// rows; row r is a pair of phase `phase[r]` and `t[r]` ∈ [0, 1) picks u uniformly in the
    /// phase's (end, start] (u = end + 1 + ⌊t·(start − end)⌋), then becomes u's network time.
    ///
    ///     xs, xe: [rows, size]   t: [rows] (in, out)   →   xu, target: [rows, size]   scale: [rows] (optional)
    public static func fill(_ vp: VPDiffusion, bounds: [(start: Int, end: Int)], phase: UnsafePointer<Int32>,
                            xs: UnsafePointer<Float>, xe: UnsafePointer<Float>, t: UnsafeMutablePointer<Float>,
                            rows: Int, size: Int, xu: UnsafeMutablePointer<Float>, target: UnsafeMutablePointer<Float>,
                            scale: UnsafeMutablePointer<Float>?) {
        for r in 0..<rows {
            let (s, e) = bounds[Int(phase[r])]
            let span = s - e
            let u = min(s, e + 1 + Int((Double(t[r]) * Double(span)).rounded(.down)))
            t[r] = vp.networkTime(index: u)
            let bs = vp.alphaBar(s), be = vp.alphaBar(e), bu = vp.alphaBar(u)
            let aS = bs.squareRoot(), aE = be.squareRoot(), aU = bu.squareRoot()
            let sS = (1 - bs).squareRoot() / aS, sE = (1 - be).squareRoot() / aE, sU = (1 - bu).squareRoot() / aU
            let v = vp.prediction == .v, sigU = (1 - bu).squareRoot()
            scale?[r] = Float(aE * (sU - sE) * (v ? aU : 1))
            let o = r * size
            for c in 0..<size {
                let ys = Double(xs[o + c]) / aS, ye = Double(xe[o + c]) / aE
                let eps = (ye - ys) / (sE - sS)
                let x = aU * (ys + (sU - sS) * eps)
                xu[o + c] = Float(x)
                if v {
                    let data = (x - sigU * eps) / aU
                    target[o + c] = Float(aU * eps - sigU * data)
                } else {
                    target[o + c] = Float(eps)
                }
            }
        }
    }
}

/// The first-order-ness of DDIM trajectories (Rectified Diffusion's claim test):
/// E_k E_rows ‖ε̂_k − ε*‖²/d over the moves k of a DDIM trajectory, where ε̂_k is the noise
/// prediction the move from index i_k used and ε* = (x_start − α_start·x_end)/σ_start the one
/// constant noise that joins the trajectory's start and end (for a sample from pure noise, the
/// paired noise of Rectified Diffusion up to α_start ≈ 0). 0 exactly when ε̂ is constant along
/// the trajectory, i.e. when one DDIM step from the start lands on the end.
public enum FirstOrderness {
    /// `frames`: [N + 1] states [rows·d] of a forward DDIM trajectory over `indices` (then −1).
    /// ε̂_k is recovered from consecutive frames (a DDIM move is linear in ε̂):
    /// ε̂ = (α_{k+1}·x_k − α_k·x_{k+1})/(α_{k+1}·σ_k − α_k·σ_{k+1}).
    public static func measure(_ vp: VPDiffusion, indices: [Int], frames: [[Float]], dimension d: Int) -> Double {
        let visited = indices + [-1]
        guard frames.count == visited.count, let first = frames.first, let last = frames.last, d > 0, !first.isEmpty else { return 0 }
        let b0 = vp.alphaBar(visited[0]), a0 = b0.squareRoot(), s0 = (1 - b0).squareRoot()
        guard s0 > 0 else { return 0 }
        var total = 0.0
        for k in 0..<(visited.count - 1) {
            let bk = vp.alphaBar(visited[k]), bn = vp.alphaBar(visited[k + 1])
            let ak = bk.squareRoot(), sk = (1 - bk).squareRoot(), an = bn.squareRoot(), sn = (1 - bn).squareRoot()
            let den = an * sk - ak * sn
            let xk = frames[k], xn = frames[k + 1]
            var sum = 0.0
            for j in 0..<xk.count {
                let epsHat = (an * Double(xk[j]) - ak * Double(xn[j])) / den
                let epsStar = (Double(first[j]) - a0 * Double(last[j])) / s0
                sum += (epsHat - epsStar) * (epsHat - epsStar)
            }
            total += sum / Double(xk.count)
        }
        return total / Double(visited.count - 1)
    }
}
