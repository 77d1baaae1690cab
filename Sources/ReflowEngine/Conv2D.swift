// 2-D convolution kernels (issue #9's engine layer): PyTorch's `conv2d` (a cross-correlation)
// on NCHW tensors, by im2col + one GEMM per image, with the backward pass by GEMMs + col2im.
// Letters: N batch, C input channels, O output channels, H×W input, KH×KW kernel, P = OH·OW
// output positions, K = C·KH·KW (one column of the unfolded input).

/// The geometry of one 2-D convolution: input [N, C, H, W], weight [O, C, KH, KW], symmetric
/// zero padding and one stride for both axes; output [N, O, OH, OW] with
/// OH = (H + 2·padding − KH) / stride + 1 (floor), likewise OW.
public struct Conv2DShape: Sendable, Equatable {
    public var batch: Int, inChannels: Int, outChannels: Int
    public var height: Int, width: Int
    public var kernelH: Int, kernelW: Int
    public var stride: Int, padding: Int
    /// Spacing of the kernel taps (1: a plain convolution; 2: a 3×3 kernel spans 5×5, as the
    /// RIM's dilated convolution).
    public var dilation: Int

    public init(batch: Int, inChannels: Int, outChannels: Int, height: Int, width: Int,
                kernelH: Int, kernelW: Int, stride: Int = 1, padding: Int = 0, dilation: Int = 1) {
        self.batch = batch; self.inChannels = inChannels; self.outChannels = outChannels
        self.height = height; self.width = width; self.kernelH = kernelH; self.kernelW = kernelW
        self.stride = stride; self.padding = padding; self.dilation = dilation
    }

    /// The kernel's extent in the input: dilation·(k − 1) + 1.
    public var spanH: Int { dilation * (kernelH - 1) + 1 }
    public var spanW: Int { dilation * (kernelW - 1) + 1 }
    public var outHeight: Int { (height + 2 * padding - spanH) / stride + 1 }
    public var outWidth: Int { (width + 2 * padding - spanW) / stride + 1 }
    /// K: rows of the unfolded input (and columns of the weight matrix).
    public var patchSize: Int { inChannels * kernelH * kernelW }
    /// P: output positions per image.
    public var positions: Int { outHeight * outWidth }
    public var inputCount: Int { batch * inChannels * height * width }
    public var outputCount: Int { batch * outChannels * positions }
    public var weightCount: Int { outChannels * patchSize }
    /// A 1×1 convolution with stride 1 and no padding: the image itself is the unfolded input.
    public var isPointwise: Bool { kernelH == 1 && kernelW == 1 && stride == 1 && padding == 0 }
    /// Floats of the im2col scratch buffer (one image at a time; 0 for a pointwise convolution).
    public var scratchCount: Int { isPointwise ? 0 : patchSize * positions }
    /// Multiply-adds of the forward pass (the backward pass costs about twice as many).
    public var multiplyAdds: Int { batch * outChannels * positions * patchSize }

    /// Why the geometry is unusable, or nil. (User input is validated against this at the
    /// boundary; the kernels treat a bad shape as a programmer error.)
    public var problem: String? {
        if [batch, inChannels, outChannels, height, width, kernelH, kernelW, stride, dilation].contains(where: { $0 < 1 }) || padding < 0 {
            return "sizes, kernel, stride and dilation must be ≥ 1 and padding ≥ 0"
        }
        if height + 2 * padding < spanH || width + 2 * padding < spanW { return "the kernel is larger than the padded input" }
        return nil
    }
}

public enum Conv2D {
    /// Unfolds one image x: [C, H, W] into cols: [K, P]; row (c, i, j) holds
    /// x[c, oh·stride − padding + i·dilation, ow·stride − padding + j·dilation] (0 outside the image).
    /// The output columns xo ∈ [lo, hi) whose input column xo·stride − padding + j·dilation lies in [0, width).
    @inline(__always)
    static func validRange(_ j: Int, _ s: Conv2DShape, width w: Int, outWidth ow: Int) -> (Int, Int) {
        let off = s.padding - j * s.dilation         // ix = xo·stride − off
        let lo = off <= 0 ? 0 : (off + s.stride - 1) / s.stride
        let last = w - 1 + off                       // ix ≤ w − 1  ⇔  xo·stride ≤ last
        let hi = last < 0 ? 0 : last / s.stride + 1
        return (min(lo, ow), max(min(hi, ow), min(lo, ow)))
    }

    public static func im2col(_ x: UnsafePointer<Float>, _ s: Conv2DShape, into cols: UnsafeMutablePointer<Float>) {
        let (h, w, oh, ow) = (s.height, s.width, s.outHeight, s.outWidth)
        var row = 0
        for c in 0..<s.inChannels {
            let plane = x + c * h * w
            for i in 0..<s.kernelH {
                for j in 0..<s.kernelW {
                    let out = cols + row * oh * ow
                    for y in 0..<oh {
                        let iy = y * s.stride - s.padding + i * s.dilation
                        let dst = out + y * ow
                        if iy < 0 || iy >= h {
                            dst.update(repeating: 0, count: ow)
                            continue
                        }
                        // Valid outputs xo ∈ [lo, hi): 0 ≤ xo·stride − padding + j < w. Zero the
                        // borders, copy the interior without per-element bounds checks.
                        let (lo, hi) = validRange(j, s, width: w, outWidth: ow)
                        let src = plane + iy * w - s.padding + j * s.dilation
                        if lo > 0 { dst.update(repeating: 0, count: lo) }
                        if hi < ow { (dst + hi).update(repeating: 0, count: ow - hi) }
                        if s.stride == 1 {
                            if hi > lo { (dst + lo).update(from: src + lo, count: hi - lo) }
                        } else {
                            var xo = lo
                            while xo < hi { dst[xo] = src[xo * s.stride]; xo += 1 }
                        }
                    }
                    row += 1
                }
            }
        }
    }

    /// The adjoint of ``im2col(_:_:into:)``: adds cols: [K, P] back into dx: [C, H, W].
    public static func col2im(_ cols: UnsafePointer<Float>, _ s: Conv2DShape, addingInto dx: UnsafeMutablePointer<Float>) {
        let (h, w, oh, ow) = (s.height, s.width, s.outHeight, s.outWidth)
        var row = 0
        for c in 0..<s.inChannels {
            let plane = dx + c * h * w
            for i in 0..<s.kernelH {
                for j in 0..<s.kernelW {
                    let src = cols + row * oh * ow
                    for y in 0..<oh {
                        let iy = y * s.stride - s.padding + i * s.dilation
                        if iy < 0 || iy >= h { continue }
                        let (lo, hi) = validRange(j, s, width: w, outWidth: ow)
                        let dst = plane + iy * w - s.padding + j * s.dilation
                        let from = src + y * ow
                        if s.stride == 1 {
                            var xo = lo
                            while xo < hi { dst[xo] += from[xo]; xo += 1 }
                        } else {
                            var xo = lo
                            while xo < hi { dst[xo * s.stride] += from[xo]; xo += 1 }
                        }
                    }
                    row += 1
                }
            }
        }
    }

    /// y = conv2d(x, weight) + bias:
    ///
    ///     x: [N, C, H, W], weight: [O, K], bias: [O] or nil → y: [N, O, OH, OW]
    ///     per image: y[n] = weight[O, K] · im2col(x[n])[K, P] (+ bias per row)
    ///
    /// `scratch` holds ``Conv2DShape/scratchCount`` floats.
    public static func forward(x: UnsafePointer<Float>, weight: UnsafePointer<Float>, bias: UnsafePointer<Float>?,
                               y: UnsafeMutablePointer<Float>, shape s: Conv2DShape, scratch: UnsafeMutablePointer<Float>?,
                               images: Range<Int>? = nil) {
        precondition(s.problem == nil, "Conv2D.forward: \(s.problem!)")
        let k = s.patchSize, p = s.positions, o = s.outChannels
        for n in images ?? 0..<s.batch {
            let xn = x + n * s.inChannels * s.height * s.width, yn = y + n * o * p
            let cols: UnsafePointer<Float>
            if s.isPointwise { cols = xn } else { im2col(xn, s, into: scratch!); cols = UnsafePointer(scratch!) }
            BLAS.gemm(transA: false, transB: false, m: o, n: p, k: k, a: weight, lda: k, b: cols, ldb: p, c: yn, ldc: p)
            if let bias { for r in 0..<o { let b = bias[r]; for q in 0..<p { yn[r * p + q] += b } } }
        }
    }

    /// Gradients of ``forward(x:weight:bias:y:shape:scratch:)`` given dy: [N, O, OH, OW]:
    ///
    ///     dweight[O, K] += Σ_n dy[n][O, P] · im2col(x[n])ᵀ[P, K]
    ///     dbias[O]      += Σ_n Σ_P dy[n]
    ///     dx[n]         += col2im(weightᵀ[K, O] · dy[n][O, P])
    ///
    /// Each output is optional (nil skips it); all accumulate. `scratch` holds
    /// ``Conv2DShape/scratchCount`` floats.
    public static func backward(x: UnsafePointer<Float>, weight: UnsafePointer<Float>, dy: UnsafePointer<Float>,
                                dx: UnsafeMutablePointer<Float>?, dweight: UnsafeMutablePointer<Float>?,
                                dbias: UnsafeMutablePointer<Float>?, shape s: Conv2DShape,
                                scratch: UnsafeMutablePointer<Float>?, images: Range<Int>? = nil) {
        precondition(s.problem == nil, "Conv2D.backward: \(s.problem!)")
        let k = s.patchSize, p = s.positions, o = s.outChannels, imageSize = s.inChannels * s.height * s.width
        for n in images ?? 0..<s.batch {
            let dyn = dy + n * o * p
            if let dbias {
                for r in 0..<o {
                    var acc: Float = 0
                    for q in 0..<p { acc += dyn[r * p + q] }
                    dbias[r] += acc
                }
            }
            if let dweight {
                let cols: UnsafePointer<Float>
                if s.isPointwise { cols = x + n * imageSize } else { im2col(x + n * imageSize, s, into: scratch!); cols = UnsafePointer(scratch!) }
                BLAS.gemm(transA: false, transB: true, m: o, n: k, k: p, a: dyn, lda: p, b: cols, ldb: p,
                          beta: 1, c: dweight, ldc: k)
            }
            if let dx {
                if s.isPointwise {
                    // dx[n][C, P] += Wᵀ[C, O] · dy[n][O, P]
                    BLAS.gemm(transA: true, transB: false, m: k, n: p, k: o, a: weight, lda: k, b: dyn, ldb: p,
                              beta: 1, c: dx + n * imageSize, ldc: p)
                } else {
                    BLAS.gemm(transA: true, transB: false, m: k, n: p, k: o, a: weight, lda: k, b: dyn, ldb: p,
                              c: scratch!, ldc: p)
                    col2im(scratch!, s, addingInto: dx + n * imageSize)
                }
            }
        }
    }
}

extension Oracle {
    /// Direct 2-D convolution in Double accumulation (the oracle of ``Conv2D/forward``):
    /// y[n, o, oy, ox] = bias[o] + Σ_{c,i,j} w[o, c, i, j] · x[n, c, oy·s − p + i·d, ox·s − p + j·d].
    public static func conv2d(x: [Float], weight: [Float], bias: [Float]?, shape s: Conv2DShape) -> [Float] {
        var y = [Float](repeating: 0, count: s.outputCount)
        let (oh, ow) = (s.outHeight, s.outWidth)
        for n in 0..<s.batch {
            for o in 0..<s.outChannels {
                for oy in 0..<oh {
                    for ox in 0..<ow {
                        var acc = Double(bias?[o] ?? 0)
                        for c in 0..<s.inChannels {
                            for i in 0..<s.kernelH {
                                for j in 0..<s.kernelW {
                                    let iy = oy * s.stride - s.padding + i * s.dilation, ix = ox * s.stride - s.padding + j * s.dilation
                                    guard iy >= 0, iy < s.height, ix >= 0, ix < s.width else { continue }
                                    let xv = x[((n * s.inChannels + c) * s.height + iy) * s.width + ix]
                                    let wv = weight[((o * s.inChannels + c) * s.kernelH + i) * s.kernelW + j]
                                    acc += Double(xv) * Double(wv)
                                }
                            }
                        }
                        y[((n * s.outChannels + o) * oh + oy) * ow + ox] = Float(acc)
                    }
                }
            }
        }
        return y
    }

    /// The exact gradients of ``conv2d(x:weight:bias:shape:)`` for an upstream dy, by the same
    /// loops transposed (Double accumulation): (dx, dweight, dbias).
    public static func conv2dBackward(x: [Float], weight: [Float], dy: [Float], shape s: Conv2DShape)
        -> (dx: [Float], dweight: [Float], dbias: [Float]) {
        var dx = [Double](repeating: 0, count: s.inputCount), dw = [Double](repeating: 0, count: s.weightCount)
        var db = [Double](repeating: 0, count: s.outChannels)
        let (oh, ow) = (s.outHeight, s.outWidth)
        for n in 0..<s.batch {
            for o in 0..<s.outChannels {
                for oy in 0..<oh {
                    for ox in 0..<ow {
                        let g = Double(dy[((n * s.outChannels + o) * oh + oy) * ow + ox])
                        db[o] += g
                        for c in 0..<s.inChannels {
                            for i in 0..<s.kernelH {
                                for j in 0..<s.kernelW {
                                    let iy = oy * s.stride - s.padding + i * s.dilation, ix = ox * s.stride - s.padding + j * s.dilation
                                    guard iy >= 0, iy < s.height, ix >= 0, ix < s.width else { continue }
                                    let xi = ((n * s.inChannels + c) * s.height + iy) * s.width + ix
                                    let wi = ((o * s.inChannels + c) * s.kernelH + i) * s.kernelW + j
                                    dx[xi] += g * Double(weight[wi])
                                    dw[wi] += g * Double(x[xi])
                                }
                            }
                        }
                    }
                }
            }
        }
        return (dx.map(Float.init), dw.map(Float.init), db.map(Float.init))
    }
}
