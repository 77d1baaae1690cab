import ReflowEngine

// Differentiable image layers on NCHW values. Each splits the batch across the graph's
// `threads` (images are independent), with per-thread partial sums for weight gradients added
// in thread order afterwards, so results depend only on the thread count.

extension Graph {
    /// PyTorch `F.conv2d` (cross-correlation): x [N, C, H, W], weight [O, C, KH, KW], bias [O] or
    /// nil → [N, O, OH, OW] with OH = (H + 2·padding − KH)/stride + 1. im2col + GEMM per image
    /// (docs/BENCHMARKS.md says why); 1×1 stride-1 convolutions are a plain GEMM per image.
    public func conv2d(_ x: Var, weight w: Var, bias b: Var?, stride: Int = 1, padding: Int = 0, dilation: Int = 1) -> Var {
        let sx = values[x.id].shape, sw = values[w.id].shape
        precondition(sx.count == 4 && sw.count == 4 && sx[1] == sw[1],
                     "conv2d: x \(sx) with weight \(sw) (NCHW and [O, C, KH, KW])")
        let s = Conv2DShape(batch: sx[0], inChannels: sx[1], outChannels: sw[0], height: sx[2], width: sx[3],
                            kernelH: sw[2], kernelW: sw[3], stride: stride, padding: padding, dilation: dilation)
        precondition(s.problem == nil, "conv2d: \(s.problem!) (x \(sx), weight \(sw))")
        if let b { precondition(values[b.id].shape == [sw[0]], "conv2d: bias \(values[b.id].shape) for \(sw[0]) outputs") }
        var inputs = [x.id, w.id]
        if let b { inputs.append(b.id) }
        let parts = min(threads, s.batch)
        var scratch = takeBuffer(max(1, s.scratchCount * parts))
        defer { pool(scratch) }
        return read(x.id) { px in read(w.id) { pw in
            let pb: UnsafePointer<Float>? = b.map { b in read(b.id) { $0 } }  // storage outlives the call
            return record([s.batch, s.outChannels, s.outHeight, s.outWidth],
                          .conv2d(x: x.id, weight: w.id, bias: b?.id, shape: s), inputs: inputs) { py in
                scratch.withUnsafeMutableBufferPointer { sc in
                    let (sx, sw, sy, sp) = (SendablePointer(px), SendablePointer(pw), SendableMutablePointer(py),
                                            SendableMutablePointer(sc.baseAddress!))
                    let sb = SendablePointer(pb)
                    parallelChunks(count: parts, threads: parts) { r in
                        for part in r {
                            let lo = s.batch * part / parts, hi = s.batch * (part + 1) / parts
                            Conv2D.forward(x: sx.base!, weight: sw.base!, bias: sb.base, y: sy.base!, shape: s,
                                           scratch: s.scratchCount > 0 ? sp.base! + part * s.scratchCount : nil,
                                           images: lo..<hi)
                        }
                    }
                }
            }
        } }
    }

    /// GroupNorm over `groups` channel groups of x [N, C, *spatial] with per-channel weight and
    /// bias [C] (eps 1e-5 as PyTorch); with `silu`, SiLU of the result, fused (no intermediate
    /// is stored: the backward pass recomputes the normalised value from x and the saved
    /// per-group mean and 1/σ).
    public func groupNorm(_ x: Var, groups: Int, weight w: Var, bias b: Var, eps: Float = 1e-5, silu: Bool = false) -> Var {
        let sx = values[x.id].shape
        precondition(sx.count >= 2 && groups >= 1 && sx[1] % groups == 0, "groupNorm: \(sx) in \(groups) groups")
        let (n, c) = (sx[0], sx[1]), sp = sx[2...].reduce(1, *)
        precondition(values[w.id].shape == [c] && values[b.id].shape == [c], "groupNorm: weight/bias must be [\(c)]")
        let stats = record([n, groups, 2], .leaf, inputs: []) { _ in }
        let parts = min(threads, n)
        return read(x.id) { px in read(w.id) { pw in read(b.id) { pb in read(stats.id) { pst in
            record(sx, .groupNorm(x: x.id, weight: w.id, bias: b.id, stats: stats.id, groups: groups, silu: silu),
                   inputs: [x.id, w.id, b.id]) { py in
                let (a, ww, bb, y, st) = (SendablePointer(px), SendablePointer(pw), SendablePointer(pb),
                                          SendableMutablePointer(py), SendableMutablePointer(UnsafeMutablePointer(mutating: pst)))
                parallelChunks(count: n, threads: parts) { r in
                    GroupNormKernel.forward(x: a.base!, weight: ww.base!, bias: bb.base!, y: y.base!, stats: st.base!,
                                            channels: c, spatial: sp, groups: groups, eps: eps, silu: silu, images: r)
                }
            }
        } } } }
    }

    /// Nearest-neighbour 2× up-sampling of x [N, C, H, W] → [N, C, 2H, 2W].
    public func upsample2x(_ x: Var) -> Var {
        let sx = values[x.id].shape
        precondition(sx.count == 4, "upsample2x: NCHW input, got \(sx)")
        let planes = sx[0] * sx[1], (h, w) = (sx[2], sx[3])
        return read(x.id) { px in
            record([sx[0], sx[1], 2 * h, 2 * w], .upsample2x(x.id), inputs: [x.id]) { py in
                let (a, y) = (SendablePointer(px), SendableMutablePointer(py))
                parallelChunks(count: planes, threads: threads, grain: 8) { r in
                    Upsample2x.forward(a.base!, y.base!, height: h, width: w, planes: r)
                }
            }
        }
    }

    /// Backward rules of the image ops (called from `propagate`).
    func propagateImageOp(_ id: Int, _ g: UnsafePointer<Float>) {
        let gp = SendablePointer(g)
        switch ops[id] {
        case .conv2d(let x, let w, let b, let s):
            let parts = min(threads, s.batch)
            let wantW = needsGrad[w], wantB = b.map { needsGrad[$0] } ?? false
            // Per-part partial sums of dW and db (part 0 writes straight into the gradient when alone).
            var partial = takeZeroBuffer(max(1, parts * (s.weightCount + s.outChannels)))
            var scratch = takeBuffer(max(1, s.scratchCount * parts))
            defer { pool(partial); pool(scratch) }
            read(x) { px in read(w) { pw in
                let run = { (dx: UnsafeMutablePointer<Float>?) in
                    partial.withUnsafeMutableBufferPointer { pt in scratch.withUnsafeMutableBufferPointer { sc in
                        let (sx, sw, sdx, spt, ssc) = (SendablePointer(px), SendablePointer(pw), SendableMutablePointer(dx),
                                                       SendableMutablePointer(pt.baseAddress!), SendableMutablePointer(sc.baseAddress!))
                        parallelChunks(count: parts, threads: parts) { r in
                            for part in r {
                                let lo = s.batch * part / parts, hi = s.batch * (part + 1) / parts
                                let dw = spt.base! + part * (s.weightCount + s.outChannels)
                                Conv2D.backward(x: sx.base!, weight: sw.base!, dy: gp.base!, dx: sdx.base,
                                                dweight: wantW ? dw : nil, dbias: wantB ? dw + s.weightCount : nil,
                                                shape: s, scratch: s.scratchCount > 0 ? ssc.base! + part * s.scratchCount : nil,
                                                images: lo..<hi)
                            }
                        }
                    } }
                }
                if needsGrad[x] { accumulateGrad(x) { dx in run(dx) } } else { run(nil) }
            } }
            partial.withUnsafeBufferPointer { pt in
                let stride = s.weightCount + s.outChannels
                if wantW {
                    accumulateGrad(w) { dw in
                        for part in 0..<parts { let src = pt.baseAddress! + part * stride; for i in 0..<s.weightCount { dw[i] += src[i] } }
                    }
                }
                if let b, wantB {
                    accumulateGrad(b) { db in
                        for part in 0..<parts {
                            let src = pt.baseAddress! + part * stride + s.weightCount
                            for i in 0..<s.outChannels { db[i] += src[i] }
                        }
                    }
                }
            }
        case .groupNorm(let x, let w, let b, let st, let groups, let silu):
            let sx = values[x].shape
            let (n, c) = (sx[0], sx[1]), sp = sx[2...].reduce(1, *)
            let parts = min(threads, n)
            var partial = takeZeroBuffer(parts * 2 * c)
            var scratch = takeBuffer(max(1, sp) * parts)
            defer { pool(partial); pool(scratch) }
            read(x) { px in read(w) { pw in read(b) { pb in read(st) { pst in
                let run = { (dx: UnsafeMutablePointer<Float>?, overwrite: Bool) in
                    partial.withUnsafeMutableBufferPointer { pt in scratch.withUnsafeMutableBufferPointer { sc in
                        let (a, ww, bb, ss) = (SendablePointer(px), SendablePointer(pw), SendablePointer(pb), SendablePointer(pst))
                        let (sdx, spt, ssc) = (SendableMutablePointer(dx), SendableMutablePointer(pt.baseAddress!),
                                               SendableMutablePointer(sc.baseAddress!))
                        parallelChunks(count: parts, threads: parts) { r in
                            for part in r {
                                let lo = n * part / parts, hi = n * (part + 1) / parts
                                GroupNormKernel.backward(x: a.base!, weight: ww.base!, bias: bb.base!, stats: ss.base!, dy: gp.base!,
                                                         dx: sdx.base, overwriteDx: overwrite,
                                                         dweight: spt.base! + part * 2 * c, dbias: spt.base! + part * 2 * c + c,
                                                         channels: c, spatial: sp, groups: groups, silu: silu,
                                                         images: lo..<hi, scratch: ssc.base! + part * max(1, sp))
                            }
                        }
                    } }
                }
                if needsGrad[x] { withGrad(x) { dx, fresh in run(dx, fresh) } } else { run(nil, false) }
            } } } }
            partial.withUnsafeBufferPointer { pt in
                for (node, off) in [(w, 0), (b, c)] where needsGrad[node] {
                    accumulateGrad(node) { d in
                        for part in 0..<parts { let src = pt.baseAddress! + part * 2 * c + off; for i in 0..<c { d[i] += src[i] } }
                    }
                }
            }
        case .upsample2x(let x):
            let sx = values[x].shape
            let planes = sx[0] * sx[1], (h, w) = (sx[2], sx[3])
            withGrad(x) { dx, fresh in
                let sdx = SendableMutablePointer(dx)
                parallelChunks(count: planes, threads: threads, grain: 8) { r in
                    Upsample2x.backward(gp.base!, sdx.base!, height: h, width: w, accumulate: !fresh, planes: r)
                }
            }
        default:
            preconditionFailure("propagateImageOp: not an image op")
        }
    }
}
