public import ReflowEngine

/// The closed set of differentiable primitives. Everything else is composed from these.
enum Op {
    case leaf
    case unary(UnaryOp, Int)
    /// SiLU with σ(x) kept in node `sigmoid` (a hidden constant) for a cheap backward.
    case silu(Int, sigmoid: Int)
    case binary(BinaryOp, Int, Int)
    /// x · s + c (scalar affine).
    case affine(Int, scale: Float, shift: Float)
    /// y = op(A) · op(B), rank 2.
    case matmul(Int, Int, transA: Bool, transB: Bool)
    /// y[B, O] = x[B, I] · W[O, I]ᵀ + b[O]  (fused: one GEMM with the bias pre-filled).
    case linear(x: Int, weight: Int, bias: Int?)
    /// Sum over axes, keeping them as size-1 dims.
    case sum(Int, axes: [Int])
    /// Same elements, new shape.
    case reshape(Int)
    /// Concatenation along `axis`.
    case concat([Int], axis: Int)
    /// Softmax along the last axis.
    case softmax(Int)
    /// Image layers (ImageOps.swift): 2-D convolution, GroupNorm (+ fused SiLU), 2× up-sampling.
    case conv2d(x: Int, weight: Int, bias: Int?, shape: Conv2DShape)
    case groupNorm(x: Int, weight: Int, bias: Int, stats: Int, groups: Int, silu: Bool)
    case upsample2x(Int)
    /// Multi-head self-attention (AttentionOps.swift); P kept in node `probs` (a hidden leaf),
    /// `value` the constant node of a value override (qkv's v rows then get no gradient).
    case attention(qkv: Int, probs: Int, value: Int?, shape: AttentionShape)
    /// Per-row softmax cross-entropy of logits [B, K] against integer labels (LossOps.swift);
    /// the softmax is kept in node `probs` (a hidden leaf) for the backward pass.
    case softmaxCrossEntropy(logits: Int, probs: Int, labels: [Int32])
    /// y = A·x for a linear map given as code (the MRI forward model's AᴴA, FFTs, masks); the
    /// backward pass applies its adjoint.
    case linearMap(Int, adjoint: LinearMap)
}

/// A linear map on flat Float vectors, applied as `apply(input, output, count)` (count = the
/// number of floats of both; the map must be square). Used by ``Graph/linearMap(_:forward:adjoint:)``.
public struct LinearMap: @unchecked Sendable {
    public let apply: (UnsafePointer<Float>, UnsafeMutablePointer<Float>, Int) -> Void
    public init(_ apply: @escaping (UnsafePointer<Float>, UnsafeMutablePointer<Float>, Int) -> Void) { self.apply = apply }
}

extension Graph {
    // MARK: primitives

    /// y = A·x for a square linear map A given by `forward`, with `adjoint` applying Aᴴ (the
    /// gradient is dx = Aᴴ·dy). The shapes of x and y are equal. The caller vouches that the two
    /// are adjoint (tests check ⟨A·x, y⟩ = ⟨x, Aᴴ·y⟩ for each use).
    public func linearMap(_ x: Var, forward: LinearMap, adjoint: LinearMap) -> Var {
        let shape = values[x.id].shape, n = Tensor.count(of: shape)
        return read(x.id) { px in
            record(shape, .linearMap(x.id, adjoint: adjoint), inputs: [x.id]) { py in forward.apply(px, py, n) }
        }
    }

    /// Elementwise unary function.
    public func unary(_ op: UnaryOp, _ x: Var) -> Var {
        let shape = values[x.id].shape, n = values[x.id].count
        if op == .silu && isGradEnabled && needsGrad[x.id] {
            // Keep σ(x): the backward pass then needs no exp (2× cheaper overall).
            return read(x.id) { px in
                let s = record(shape, .leaf, inputs: []) { ps in
                    Kernels.unaryForward(.sigmoid, px, ps, count: n, threads: threads)
                }
                return read(s.id) { ps in
                    record(shape, .silu(x.id, sigmoid: s.id), inputs: [x.id]) { py in
                        Kernels.binaryForward(.mul, px, shape, ps, shape, py, shape, threads: threads)
                    }
                }
            }
        }
        return read(x.id) { px in
            record(shape, .unary(op, x.id), inputs: [x.id]) { py in
                Kernels.unaryForward(op, px, py, count: n, threads: threads)
            }
        }
    }

    /// Elementwise binary operation with NumPy broadcasting.
    public func binary(_ op: BinaryOp, _ a: Var, _ b: Var) -> Var {
        let sa = values[a.id].shape, sb = values[b.id].shape
        guard let out = Kernels.broadcastShape(sa, sb) else {
            preconditionFailure("\(op): shapes \(sa) and \(sb) do not broadcast")
        }
        return read(a.id) { pa in
            read(b.id) { pb in
                record(out, .binary(op, a.id, b.id), inputs: [a.id, b.id]) { po in
                    Kernels.binaryForward(op, pa, sa, pb, sb, po, out, threads: threads)
                }
            }
        }
    }

    /// x · scale + shift.
    public func affine(_ x: Var, scale: Float, shift: Float = 0) -> Var {
        let shape = values[x.id].shape, n = values[x.id].count
        return read(x.id) { px in
            record(shape, .affine(x.id, scale: scale, shift: shift), inputs: [x.id]) { py in
                for i in 0..<n { py[i] = px[i] * scale + shift }
            }
        }
    }

    /// Matrix product of rank-2 values: op(A)[M, K] · op(B)[K, N].
    public func matmul(_ a: Var, _ b: Var, transA: Bool = false, transB: Bool = false) -> Var {
        let sa = values[a.id].shape, sb = values[b.id].shape
        precondition(sa.count == 2 && sb.count == 2, "matmul: rank-2 operands, got \(sa) and \(sb)")
        let m = transA ? sa[1] : sa[0], k = transA ? sa[0] : sa[1]
        let k2 = transB ? sb[1] : sb[0], n = transB ? sb[0] : sb[1]
        precondition(k == k2, "matmul: op(A) [\(m), \(k)] × op(B) [\(k2), \(n)]")
        return read(a.id) { pa in
            read(b.id) { pb in
                record([m, n], .matmul(a.id, b.id, transA: transA, transB: transB), inputs: [a.id, b.id]) { pc in
                    BLAS.gemm(transA: transA, transB: transB, m: m, n: n, k: k, a: pa, lda: sa[1],
                              b: pb, ldb: sb[1], c: pc, ldc: n, threads: threads)
                }
            }
        }
    }

    /// Affine layer in PyTorch layout: x[B, I] · W[O, I]ᵀ + b[O] → [B, O].
    public func linear(_ x: Var, weight w: Var, bias b: Var?) -> Var {
        let sx = values[x.id].shape, sw = values[w.id].shape
        precondition(sx.count == 2 && sw.count == 2 && sx[1] == sw[1],
                     "linear: x \(sx) · Wᵀ with W \(sw)")
        let (bsz, inF, outF) = (sx[0], sx[1], sw[0])
        if let b { precondition(values[b.id].shape == [outF], "linear: bias \(values[b.id].shape) for \(outF) outputs") }
        var inputs = [x.id, w.id]
        if let b { inputs.append(b.id) }
        return read(x.id) { px in
            read(w.id) { pw in
                record([bsz, outF], .linear(x: x.id, weight: w.id, bias: b?.id), inputs: inputs) { py in
                    var beta: Float = 0
                    if let b {
                        read(b.id) { pb in
                            for r in 0..<bsz { (py + r * outF).update(from: pb, count: outF) }
                        }
                        beta = 1
                    }
                    BLAS.gemm(transA: false, transB: true, m: bsz, n: outF, k: inF, a: px, lda: inF,
                              b: pw, ldb: inF, beta: beta, c: py, ldc: outF, threads: threads)
                }
            }
        }
    }

    /// Sum over `axes` (size-1 dims kept); `nil` sums everything to shape `[]`.
    public func sum(_ x: Var, axes: [Int]? = nil, keepDims: Bool = false) -> Var {
        let shape = values[x.id].shape
        let ax = (axes ?? Array(0..<shape.count)).map { $0 < 0 ? $0 + shape.count : $0 }
        precondition(ax.allSatisfy { $0 >= 0 && $0 < shape.count }, "sum: axes \(ax) for shape \(shape)")
        let kept = Kernels.reducedShape(shape, axes: ax)
        let s = read(x.id) { px in
            record(kept, .sum(x.id, axes: ax), inputs: [x.id]) { po in
                po.update(repeating: 0, count: Tensor.count(of: kept))
                Kernels.sumToShape(px, shape, po, kept)
            }
        }
        if keepDims { return s }
        let dropped = axes == nil ? [] : kept.enumerated().filter { !ax.contains($0.offset) }.map(\.element)
        return reshape(s, dropped)
    }

    /// Same elements under a new shape.
    public func reshape(_ x: Var, _ shape: [Int]) -> Var {
        precondition(Tensor.count(of: shape) == values[x.id].count, "reshape: \(values[x.id].shape) -> \(shape)")
        let n = values[x.id].count
        return read(x.id) { px in
            record(shape, .reshape(x.id), inputs: [x.id]) { py in py.update(from: px, count: n) }
        }
    }

    /// Concatenation along `axis` (all other dims equal).
    public func concat(_ xs: [Var], axis: Int) -> Var {
        precondition(!xs.isEmpty, "concat: no inputs")
        let first = values[xs[0].id].shape
        let ax = axis < 0 ? axis + first.count : axis
        var out = first
        out[ax] = 0
        for v in xs {
            let s = values[v.id].shape
            precondition(s.count == first.count && (0..<s.count).allSatisfy { $0 == ax || s[$0] == first[$0] },
                         "concat: shapes \(xs.map { values[$0.id].shape }) along axis \(ax)")
            out[ax] += s[ax]
        }
        let outer = first[..<ax].reduce(1, *), inner = first[(ax + 1)...].reduce(1, *)
        let rowOut = out[ax] * inner
        return record(out, .concat(xs.map(\.id), axis: ax), inputs: xs.map(\.id)) { po in
            var offset = 0
            for v in xs {
                let w = values[v.id].shape[ax] * inner
                read(v.id) { pv in
                    for o in 0..<outer { (po + o * rowOut + offset).update(from: pv + o * w, count: w) }
                }
                offset += w
            }
        }
    }

    /// Softmax along the last axis.
    public func softmax(_ x: Var) -> Var {
        let shape = values[x.id].shape
        let n = shape.last ?? 1, rows = values[x.id].count / max(n, 1)
        return read(x.id) { px in
            record(shape, .softmax(x.id), inputs: [x.id]) { py in
                Kernels.softmaxForward(px, py, rows: rows, n: n)
            }
        }
    }

    // MARK: backward rules

    /// Propagates the gradient `g` of node `id` to its inputs.
    func propagate(_ id: Int, _ g: UnsafePointer<Float>) {
        let shape = values[id].shape, n = values[id].count
        switch ops[id] {
        case .leaf:
            break
        case .unary(let op, let x):
            read(x) { px in read(id) { py in
                withGrad(x) { dx, fresh in
                    Kernels.unaryBackward(op, x: px, y: py, dy: g, dx: dx, count: n, accumulate: !fresh, threads: threads)
                }
            } }
        case .silu(let x, let sNode):
            read(sNode) { ps in read(id) { py in
                withGrad(x) { dx, fresh in
                    Kernels.siluBackwardSaved(sigmoid: ps, y: py, dy: g, dx: dx, count: n, accumulate: !fresh, threads: threads)
                }
            } }
        case .binary(let op, let a, let b):
            binaryBackward(op, a, b, shape, g)
        case .affine(let x, let scale, _):
            withGrad(x) { dx, fresh in
                if fresh { for i in 0..<n { dx[i] = scale * g[i] } } else { for i in 0..<n { dx[i] += scale * g[i] } }
            }
        case .matmul(let a, let b, let ta, let tb):
            let sa = values[a].shape, sb = values[b].shape
            let m = shape[0], nn = shape[1], k = ta ? sa[0] : sa[1]
            // C = op(A)·op(B):  dop(A) = dC·op(B)ᵀ,  dop(B) = op(A)ᵀ·dC
            read(b) { pb in
                withGrad(a) { da, fresh in
                    let beta: Float = fresh ? 0 : 1
                    if !ta {  // dA[M,K] += dC[M,N] · op(B)ᵀ
                        BLAS.gemm(transA: false, transB: !tb, m: m, n: k, k: nn, a: g, lda: nn, b: pb, ldb: sb[1],
                                  beta: beta, c: da, ldc: sa[1], threads: threads)
                    } else {  // dA[K,M] += op(B) · dCᵀ
                        BLAS.gemm(transA: tb, transB: true, m: k, n: m, k: nn, a: pb, lda: sb[1], b: g, ldb: nn,
                                  beta: beta, c: da, ldc: sa[1], threads: threads)
                    }
                }
            }
            read(a) { pa in
                withGrad(b) { db, fresh in
                    let beta: Float = fresh ? 0 : 1
                    if !tb {  // dB[K,N] += op(A)ᵀ · dC
                        BLAS.gemm(transA: !ta, transB: false, m: k, n: nn, k: m, a: pa, lda: sa[1], b: g, ldb: nn,
                                  beta: beta, c: db, ldc: sb[1], threads: threads)
                    } else {  // dB[N,K] += dCᵀ · op(A)
                        BLAS.gemm(transA: true, transB: ta, m: nn, n: k, k: m, a: g, lda: nn, b: pa, ldb: sa[1],
                                  beta: beta, c: db, ldc: sb[1], threads: threads)
                    }
                }
            }
        case .linear(let x, let w, let b):
            let sx = values[x].shape, outF = shape[1]
            let (bsz, inF) = (sx[0], sx[1])
            // dx[B, I] += dy[B, O] · W[O, I]
            read(w) { pw in
                withGrad(x) { dx, fresh in
                    BLAS.gemm(transA: false, transB: false, m: bsz, n: inF, k: outF, a: g, lda: outF, b: pw, ldb: inF,
                              beta: fresh ? 0 : 1, c: dx, ldc: inF, threads: threads)
                }
            }
            // dW[O, I] += dyᵀ[O, B] · x[B, I]
            read(x) { px in
                withGrad(w) { dw, fresh in
                    BLAS.gemm(transA: true, transB: false, m: outF, n: inF, k: bsz, a: g, lda: outF, b: px, ldb: inF,
                              beta: fresh ? 0 : 1, c: dw, ldc: inF, threads: threads)
                }
            }
            // db[O] += Σ_B dy
            if let b {
                accumulateGrad(b) { db in Kernels.sumToShape(g, shape, db, [outF]) }
            }
        case .sum(let x, _):
            accumulateGrad(x) { dx in Kernels.broadcastAdd(g, shape, dx, values[x].shape) }
        case .reshape(let x):
            withGrad(x) { dx, fresh in
                if fresh { dx.update(from: g, count: n) } else { for i in 0..<n { dx[i] += g[i] } }
            }
        case .concat(let xs, let ax):
            let outer = shape[..<ax].reduce(1, *), inner = shape[(ax + 1)...].reduce(1, *)
            let rowOut = shape[ax] * inner
            var offset = 0
            for x in xs {
                let w = values[x].shape[ax] * inner
                accumulateGrad(x) { dx in
                    for o in 0..<outer {
                        let src = g + o * rowOut + offset, dst = dx + o * w
                        for j in 0..<w { dst[j] += src[j] }
                    }
                }
                offset += w
            }
        case .conv2d, .groupNorm, .upsample2x:
            propagateImageOp(id, g)
        case .attention:
            propagateAttention(id, g)
        case .softmaxCrossEntropy:
            propagateCrossEntropy(id, g)
        case .linearMap(let x, let adjoint):
            var tmp = [Float](repeating: 0, count: n)
            tmp.withUnsafeMutableBufferPointer { adjoint.apply(g, $0.baseAddress!, n) }
            accumulateGrad(x) { dx in for i in 0..<n { dx[i] += tmp[i] } }
        case .softmax(let x):
            let nLast = shape.last ?? 1
            read(id) { py in
                accumulateGrad(x) { dx in Kernels.softmaxBackward(py, g, dx, rows: n / max(nLast, 1), n: nLast) }
            }
        }
    }

    private func binaryBackward(_ op: BinaryOp, _ a: Int, _ b: Int, _ shape: [Int], _ g: UnsafePointer<Float>) {
        let sa = values[a].shape, sb = values[b].shape, n = Tensor.count(of: shape)
        switch op {
        case .add, .sub:
            accumulateGrad(a) { da in Kernels.sumToShape(g, shape, da, sa) }
            accumulateGrad(b) { db in Kernels.sumToShape(g, shape, db, sb, scale: op == .add ? 1 : -1) }
        case .mul, .div:
            // Elementwise partials in the output shape, then reduce to each input's shape.
            var tmp = takeBuffer(n)
            defer { pool(tmp) }
            tmp.withUnsafeMutableBufferPointer { t in
                let t = t.baseAddress!
                if needsGrad[a] {
                    read(b) { pb in
                        // d/da (a·b) = b ;  d/da (a/b) = 1/b
                        Kernels.binaryForward(op == .mul ? .mul : .div, g, shape, pb, sb, t, shape)
                    }
                    accumulateGrad(a) { da in Kernels.sumToShape(t, shape, da, sa) }
                }
                if needsGrad[b] {
                    read(a) { pa in
                        Kernels.binaryForward(.mul, g, shape, pa, sa, t, shape)  // g·a
                    }
                    if op == .div {
                        // d/db (a/b) = −a/b²
                        read(b) { pb in
                            Kernels.binaryForward(.div, t, shape, pb, sb, t, shape)
                            Kernels.binaryForward(.div, t, shape, pb, sb, t, shape)
                        }
                        accumulateGrad(b) { db in Kernels.sumToShape(t, shape, db, sb, scale: -1) }
                    } else {
                        accumulateGrad(b) { db in Kernels.sumToShape(t, shape, db, sb) }
                    }
                }
            }
        }
    }
}
