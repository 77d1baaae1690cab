import Foundation

// Multi-head self-attention over channels-first values (issue #9), the layout of the image
// layers: one image's q, k and v of a head are [d, S] blocks with S contiguous positions per
// channel, so every product below is one GEMM on strided rows, without transposing copies.
// Letters: N batch, C channels, S positions (H·W), h a head, d = C/heads its channels,
// a "unit" one (image, head) pair, u = n·heads + h.

/// Sizes of a self-attention op: qkv [N, 3C, S] → out [N, C, S] in `heads` heads of d = C/heads.
public struct AttentionShape: Sendable, Equatable, CustomStringConvertible {
    public var batch: Int
    /// C, the channels of each of q, k, v and of the output.
    public var channels: Int
    /// S, the positions attended over (H·W for images).
    public var positions: Int
    public var heads: Int

    public init(batch: Int, channels: Int, positions: Int, heads: Int) {
        self.batch = batch
        self.channels = channels
        self.positions = positions
        self.heads = heads
    }

    /// d = C / heads.
    public var headDim: Int { channels / max(heads, 1) }
    /// Independent (image, head) pairs.
    public var units: Int { batch * heads }
    /// Floats of one unit's attention matrix P (S·S).
    public var probsPerUnit: Int { positions * positions }
    /// 1/√d, the score scale.
    public var scale: Float { 1 / Float(headDim).squareRoot() }

    /// Why the sizes are not usable, or nil.
    public var problem: String? {
        if batch < 0 { return "negative batch \(batch)" }
        if channels < 1 { return "no channels" }
        if positions < 1 { return "no positions" }
        if heads < 1 { return "heads must be ≥ 1, got \(heads)" }
        if channels % heads != 0 { return "\(channels) channels do not split into \(heads) heads" }
        return nil
    }

    public var description: String { "N\(batch) C\(channels) S\(positions) heads \(heads)" }
}

/// Multi-head self-attention (Vaswani et al. 2017) on channels-first values, with q, k, v taken
/// from one fused projection qkv [N, 3C, S] (rows 0..<C are q, C..<2C k, 2C..<3C v; head h uses
/// channels h·d..<(h+1)·d of each):
///
///     P[i, j]   = softmax_j( Σ_c q[c, i]·k[c, j] / √d )      (per image and head)
///     out[c, i] = Σ_j P[i, j] · v[c, j]
///
/// In matrix form per unit, with Q, K, V, O the [d, S] blocks: P = softmax(QᵀK/√d), O = V·Pᵀ.
/// `value`, when given, is a separate v [N, C, S] used instead of qkv's v rows (value injection).
public enum AttentionKernel {
    @inline(__always)
    static func offsets(_ s: AttentionShape, _ u: Int) -> (qkv: Int, out: Int) {
        let n = u / s.heads, h = u % s.heads, d = s.headDim
        return ((n * 3 * s.channels + h * d) * s.positions, (n * s.channels + h * d) * s.positions)
    }

    /// Forward of units `units`. `probs` receives each unit's P: at `probs + u·S²` when
    /// `storeProbs` (a [N, heads, S, S] buffer kept for backward), else at `probs` itself
    /// (an S² scratch, overwritten per unit). Each unit is computed by the same serial GEMMs
    /// whatever the range, so results do not depend on how units are split across threads.
    public static func forward(qkv: UnsafePointer<Float>, value: UnsafePointer<Float>?, out: UnsafeMutablePointer<Float>,
                               probs: UnsafeMutablePointer<Float>, storeProbs: Bool, shape s: AttentionShape,
                               units: Range<Int>) {
        let d = s.headDim, sp = s.positions, cs = s.channels * sp
        for u in units {
            let (o, oo) = offsets(s, u)
            let q = qkv + o, k = q + cs
            let v = value.map { $0 + oo } ?? q + 2 * cs
            let p = storeProbs ? probs + u * s.probsPerUnit : probs
            // Scores [S, S] = Qᵀ·K / √d, then a row softmax (max subtracted) in place.
            BLAS.gemm(transA: true, transB: false, m: sp, n: sp, k: d, alpha: s.scale,
                      a: q, lda: sp, b: k, ldb: sp, c: p, ldc: sp)
            Kernels.softmaxForward(p, p, rows: sp, n: sp)
            // O [d, S] = V · Pᵀ.
            BLAS.gemm(transA: false, transB: true, m: d, n: sp, k: sp,
                      a: v, lda: sp, b: p, ldb: sp, c: out + oo, ldc: sp)
        }
    }

    /// Gradients of units `units` into dqkv [N, 3C, S], given dOut [N, C, S] and the stored P:
    ///
    ///     dV = dO · P                         (dO, dV: [d, S])
    ///     dP = dOᵀ · V                        ([S, S])
    ///     dZ = P ⊙ (dP − rowsum(dP ⊙ P))      (gradient of the scaled scores)
    ///     dQ = K · dZᵀ / √d,  dK = Q · dZ / √d
    ///
    /// Written when `accumulate` is false (every element of the units' rows), else added.
    /// With `valueGradient` false (v came from `value`), qkv's v rows get no gradient: they are
    /// zeroed when writing, left alone when accumulating. `scratch` holds S² floats.
    public static func backward(qkv: UnsafePointer<Float>, value: UnsafePointer<Float>?, probs: UnsafePointer<Float>,
                                dOut: UnsafePointer<Float>, dqkv: UnsafeMutablePointer<Float>,
                                accumulate: Bool, valueGradient: Bool, shape s: AttentionShape,
                                units: Range<Int>, scratch: UnsafeMutablePointer<Float>) {
        let d = s.headDim, sp = s.positions, cs = s.channels * sp
        let beta: Float = accumulate ? 1 : 0
        for u in units {
            let (o, oo) = offsets(s, u)
            let q = qkv + o, k = q + cs
            let v = value.map { $0 + oo } ?? q + 2 * cs
            let p = probs + u * s.probsPerUnit, g = dOut + oo
            let dq = dqkv + o, dk = dq + cs, dv = dk + cs
            if valueGradient {
                BLAS.gemm(transA: false, transB: false, m: d, n: sp, k: sp,
                          a: g, lda: sp, b: p, ldb: sp, beta: beta, c: dv, ldc: sp)
            } else if !accumulate {
                dv.update(repeating: 0, count: d * sp)
            }
            BLAS.gemm(transA: true, transB: false, m: sp, n: sp, k: d,
                      a: g, lda: sp, b: v, ldb: sp, c: scratch, ldc: sp)
            for i in 0..<sp {
                let pr = p + i * sp, dr = scratch + i * sp
                var r: Float = 0
                for j in 0..<sp { r += dr[j] * pr[j] }
                for j in 0..<sp { dr[j] = pr[j] * (dr[j] - r) }
            }
            BLAS.gemm(transA: false, transB: true, m: d, n: sp, k: sp, alpha: s.scale,
                      a: k, lda: sp, b: scratch, ldb: sp, beta: beta, c: dq, ldc: sp)
            BLAS.gemm(transA: false, transB: false, m: d, n: sp, k: sp, alpha: s.scale,
                      a: q, lda: sp, b: scratch, ldb: sp, beta: beta, c: dk, ldc: sp)
        }
    }
}

extension Oracle {
    /// Multi-head self-attention by direct loops in Double: qkv [N, 3C, S] (and optionally a
    /// replacement v [N, C, S]) → out [N, C, S]. See ``AttentionKernel``.
    public static func attention(qkv: [Float], value: [Float]? = nil, shape s: AttentionShape) -> [Float] {
        let (c, sp, d) = (s.channels, s.positions, s.headDim)
        var out = [Float](repeating: 0, count: s.batch * c * sp)
        let scale = 1 / Double(d).squareRoot()
        for n in 0..<s.batch {
            for h in 0..<s.heads {
                func q(_ ch: Int, _ i: Int) -> Double { Double(qkv[(n * 3 * c + h * d + ch) * sp + i]) }
                func k(_ ch: Int, _ i: Int) -> Double { Double(qkv[(n * 3 * c + c + h * d + ch) * sp + i]) }
                func v(_ ch: Int, _ i: Int) -> Double {
                    if let value { return Double(value[(n * c + h * d + ch) * sp + i]) }
                    return Double(qkv[(n * 3 * c + 2 * c + h * d + ch) * sp + i])
                }
                for i in 0..<sp {
                    var z = [Double](repeating: 0, count: sp)
                    for j in 0..<sp { for ch in 0..<d { z[j] += q(ch, i) * k(ch, j) }; z[j] *= scale }
                    let m = z.max() ?? 0
                    let e = z.map { Foundation.exp($0 - m) }
                    let total = e.reduce(0, +)
                    for ch in 0..<d {
                        var acc = 0.0
                        for j in 0..<sp { acc += e[j] / total * v(ch, j) }
                        out[(n * c + h * d + ch) * sp + i] = Float(acc)
                    }
                }
            }
        }
        return out
    }
}
