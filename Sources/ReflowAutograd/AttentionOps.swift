public import ReflowEngine

// The self-attention block's differentiable pieces (issue #9): multi-head self-attention on
// channels-first values, and dropout. Attention splits its (image, head) pairs across the
// graph's `threads`; each pair is computed by the same serial GEMMs whatever the split, so
// values do not depend on the thread count.

extension Graph {
    /// Multi-head self-attention of a fused projection qkv [N, 3C, *spatial] → [N, C, *spatial].
    ///
    /// Channels 0..<C of qkv are the queries, C..<2C the keys, 2C..<3C the values; head h
    /// uses channels h·d..<(h+1)·d of each (d = C/heads) and
    /// out[n, h·d + c, i] = Σ_j P[n, h, i, j] · v[n, h·d + c, j] with
    /// P = softmax_j(Σ_c q[c, i]·k[c, j] / √d) over the S = ∏ spatial positions. The spatial
    /// dims may be one (S) or several (H, W: no reshape needed around the op); they are kept.
    ///
    /// With gradients, the op keeps P (N·heads·S² floats) for the backward pass; without, it
    /// keeps nothing but an S² scratch per thread.
    ///
    /// **Value injection.** `valueOverride` [N, C, *spatial], when given, replaces v in the
    /// forward pass (it is a constant: no gradient flows to it, nor to qkv's v channels). To
    /// record the v that a pass used, slice channels 2C..<3C of qkv's value; in NCHW they are
    /// contiguous per image (`qkv.value.data[(n·3C + 2C)·S ..< (n·3C + 3C)·S]` for image n).
    public func attention(_ qkv: Var, heads: Int, valueOverride: Tensor? = nil) -> Var {
        let sq = values[qkv.id].shape
        precondition(sq.count >= 3 && sq[1] % 3 == 0, "attention: qkv must be [N, 3C, *spatial], got \(sq)")
        var outShape = sq
        outShape[1] = sq[1] / 3
        let s = AttentionShape(batch: sq[0], channels: sq[1] / 3, positions: sq[2...].reduce(1, *), heads: heads)
        precondition(s.problem == nil, "attention: \(s.problem!) (qkv \(sq))")
        if let vo = valueOverride {
            precondition(vo.shape == outShape, "attention: valueOverride \(vo.shape), expected \(outShape)")
        }
        let valueNode = valueOverride.map { constant($0) }
        let keep = isGradEnabled && needsGrad[qkv.id]
        let parts = max(1, min(threads, s.units))
        // P for backward (a hidden leaf, as GroupNorm's statistics), or a per-part scratch.
        let probs = keep ? record([s.batch, s.heads, s.positions, s.positions], .leaf, inputs: []) { _ in } : nil
        var scratch = keep ? [] : takeBuffer(parts * s.probsPerUnit)
        defer { if !keep { pool(scratch) } }
        let pv: UnsafePointer<Float>? = valueNode.map { v in read(v.id) { $0 } }  // storage outlives the call
        let pp: UnsafeMutablePointer<Float>? = probs.map { p in read(p.id) { UnsafeMutablePointer(mutating: $0) } }
        return read(qkv.id) { px in
            record(outShape, .attention(qkv: qkv.id, probs: probs?.id ?? -1, value: valueNode?.id, shape: s),
                   inputs: [qkv.id]) { py in
                scratch.withUnsafeMutableBufferPointer { sc in
                    let (sx, sv, sy) = (SendablePointer(px), SendablePointer(pv), SendableMutablePointer(py))
                    let sp = SendableMutablePointer(pp ?? sc.baseAddress)
                    parallelChunks(count: parts, threads: parts) { r in
                        for part in r {
                            let lo = s.units * part / parts, hi = s.units * (part + 1) / parts
                            AttentionKernel.forward(qkv: sx.base!, value: sv.base, out: sy.base!,
                                                    probs: keep ? sp.base! : sp.base! + part * s.probsPerUnit,
                                                    storeProbs: keep, shape: s, units: lo..<hi)
                        }
                    }
                }
            }
        }
    }

    /// Backward rule of ``attention(_:heads:valueOverride:)`` (called from `propagate`).
    func propagateAttention(_ id: Int, _ g: UnsafePointer<Float>) {
        guard case .attention(let x, let probs, let value, let s) = ops[id] else {
            preconditionFailure("propagateAttention: not an attention op")
        }
        let parts = max(1, min(threads, s.units))
        var scratch = takeBuffer(parts * s.probsPerUnit)
        defer { pool(scratch) }
        let pv: UnsafePointer<Float>? = value.map { v in read(v) { $0 } }  // storage outlives the call
        read(x) { px in read(probs) { pp in
            withGrad(x) { dx, fresh in
                scratch.withUnsafeMutableBufferPointer { sc in
                    let (sx, sv, sp, gp) = (SendablePointer(px), SendablePointer(pv), SendablePointer(pp), SendablePointer(g))
                    let (sdx, ssc) = (SendableMutablePointer(dx), SendableMutablePointer(sc.baseAddress!))
                    parallelChunks(count: parts, threads: parts) { r in
                        for part in r {
                            let lo = s.units * part / parts, hi = s.units * (part + 1) / parts
                            AttentionKernel.backward(qkv: sx.base!, value: sv.base, probs: sp.base!, dOut: gp.base!,
                                                     dqkv: sdx.base!, accumulate: !fresh, valueGradient: value == nil,
                                                     shape: s, units: lo..<hi, scratch: ssc.base! + part * s.probsPerUnit)
                        }
                    }
                }
            }
        } }
    }

    /// Inverted dropout: each element of x is zeroed with probability `p` and the kept ones are
    /// scaled by 1/(1 − p), so the expectation is x. The mask is drawn from
    /// `Random(seed: seed)` in element order: the same seed gives the same mask on every machine
    /// and thread count (callers vary the seed per step and per layer).
    ///
    /// **Convention:** dropout is the identity (x itself is returned) when `p == 0` and when the
    /// graph has gradients disabled (`isGradEnabled == false`), which is how this project runs
    /// inference (sampling, evaluation): no-grad means eval mode.
    ///
    /// A composite: x × a Float mask (0 or 1/(1 − p)) held in a pooled constant, so the gradient
    /// is the same mask times the incoming gradient. `p` must be in [0, 1).
    public func dropout(_ x: Var, p: Float, seed: UInt64) -> Var {
        precondition(p >= 0 && p < 1, "dropout: p must be in [0, 1), got \(p)")
        guard p > 0, isGradEnabled else { return x }
        let kept = 1 / (1 - p)
        let mask = constant(shape: values[x.id].shape) { m in
            var rng = Random(seed: seed)
            for i in m.indices { m[i] = rng.uniformFloat() < p ? 0 : kept }
        }
        return binary(.mul, x, mask)
    }
}
