import Foundation

// Kernels of the image layers (issue #9) on NCHW tensors: GroupNorm with an optional fused SiLU,
// nearest-neighbour 2× up-sampling. Letters: N batch, C channels, G groups, S = H·W spatial
// positions, M = (C/G)·S values per (image, group) block — contiguous in NCHW, which is one
// reason for the layout (docs/BENCHMARKS.md, "Layout and convolution algorithm").

/// Group normalisation (Wu & He 2018), PyTorch's `nn.GroupNorm` semantics: per image and group,
/// mean and biased variance over the group's channels and positions,
/// y = (x − μ)/√(σ² + eps) · weight[c] + bias[c]; with `silu`, y = z·σ(z) of that z (GroupNorm
/// followed by SiLU, fused so the normalised tensor is never stored).
public enum GroupNormKernel {
    /// Sums of a contiguous block in SIMD lanes (8 partial sums, then a fixed-order fold).
    @inline(__always)
    static func sumAndSquares(_ p: UnsafePointer<Float>, _ n: Int) -> (Double, Double) {
        var s = SIMD8<Float>(), q = SIMD8<Float>()
        var i = 0
        while i + 8 <= n {
            let v = UnsafeRawPointer(p + i).loadUnaligned(as: SIMD8<Float>.self)
            s += v
            q += v * v
            i += 8
        }
        var ds = 0.0, dq = 0.0
        for l in 0..<8 { ds += Double(s[l]); dq += Double(q[l]) }
        while i < n { let v = Double(p[i]); ds += v; dq += v * v; i += 1 }
        return (ds, dq)
    }

    /// x, y: [N, C, S]; weight, bias: [C]; stats: [N, G, 2] receives (mean, rstd) per block.
    /// Runs images `images` only (callers split the batch across threads).
    public static func forward(x: UnsafePointer<Float>, weight: UnsafePointer<Float>, bias: UnsafePointer<Float>,
                               y: UnsafeMutablePointer<Float>, stats: UnsafeMutablePointer<Float>,
                               channels c: Int, spatial s: Int, groups g: Int, eps: Float, silu: Bool,
                               images: Range<Int>) {
        let cpg = c / g, m = cpg * s
        for n in images {
            for gi in 0..<g {
                let base = (n * c + gi * cpg) * s
                // Two passes in Double for the variance: E[x²] − E[x]² loses digits when |μ| ≫ σ.
                let (sum, _) = sumAndSquares(x + base, m)
                let mean = sum / Double(m)
                var v8 = SIMD8<Float>(), i = 0
                let mf = Float(mean)
                while i + 8 <= m {
                    let d = UnsafeRawPointer(x + base + i).loadUnaligned(as: SIMD8<Float>.self) - mf
                    v8 += d * d
                    i += 8
                }
                var v = 0.0
                for l in 0..<8 { v += Double(v8[l]) }
                while i < m { let d = Double(x[base + i]) - mean; v += d * d; i += 1 }
                let rstd = 1 / (v / Double(m) + Double(eps)).squareRoot()
                stats[(n * g + gi) * 2] = mf
                stats[(n * g + gi) * 2 + 1] = Float(rstd)
                let r = Float(rstd)
                for cc in 0..<cpg {
                    let ch = gi * cpg + cc
                    let a = r * weight[ch], b = bias[ch] - mf * r * weight[ch]
                    let src = x + base + cc * s, dst = y + base + cc * s
                    if silu {
                        Kernels.affineSiLU(src, dst, s, scale: a, shift: b)
                    } else {
                        for k in 0..<s { dst[k] = src[k] * a + b }
                    }
                }
            }
        }
    }

    /// Gradients for images `images`, given dy: [N, C, S]:
    ///
    ///     z = x̂·w + b, x̂ = (x − μ)·rstd;  dz = dy (or dy·σ(z)(1 + z(1 − σ(z))) with SiLU)
    ///     dweight[c] += Σ dz·x̂,  dbias[c] += Σ dz
    ///     dx = rstd · (dẑ − mean(dẑ) − x̂ · mean(dẑ·x̂)),  dẑ = dz·w[c]   (means over the block)
    ///
    /// `dx` is written (not accumulated) when `overwriteDx`, else added to. `scratch` holds S floats.
    public static func backward(x: UnsafePointer<Float>, weight: UnsafePointer<Float>, bias: UnsafePointer<Float>,
                                stats: UnsafePointer<Float>, dy: UnsafePointer<Float>,
                                dx: UnsafeMutablePointer<Float>?, overwriteDx: Bool,
                                dweight: UnsafeMutablePointer<Float>?, dbias: UnsafeMutablePointer<Float>?,
                                channels c: Int, spatial s: Int, groups g: Int, silu: Bool,
                                images: Range<Int>, scratch: UnsafeMutablePointer<Float>) {
        let cpg = c / g, m = cpg * s
        for n in images {
            for gi in 0..<g {
                let base = (n * c + gi * cpg) * s
                let mean = stats[(n * g + gi) * 2], rstd = stats[(n * g + gi) * 2 + 1]
                // Pass 1: per channel, dz (into scratch), Σdz, Σdz·x̂; block sums of dẑ and dẑ·x̂.
                var sumD = 0.0, sumDX = 0.0
                for cc in 0..<cpg {
                    let ch = gi * cpg + cc
                    let src = x + base + cc * s, gy = dy + base + cc * s
                    let dz = dzFor(src, gy, scratch, s, mean: mean, rstd: rstd, w: weight[ch], b: bias[ch], silu: silu)
                    var d8 = SIMD8<Float>(), dx8 = SIMD8<Float>(), k = 0
                    while k + 8 <= s {
                        let dv = UnsafeRawPointer(dz + k).loadUnaligned(as: SIMD8<Float>.self)
                        let xv = (UnsafeRawPointer(src + k).loadUnaligned(as: SIMD8<Float>.self) - mean) * rstd
                        d8 += dv
                        dx8 += dv * xv
                        k += 8
                    }
                    var sd = 0.0, sdx = 0.0
                    for l in 0..<8 { sd += Double(d8[l]); sdx += Double(dx8[l]) }
                    while k < s {
                        let xv = (src[k] - mean) * rstd
                        sd += Double(dz[k]); sdx += Double(dz[k] * xv); k += 1
                    }
                    dbias?[ch] += Float(sd)
                    dweight?[ch] += Float(sdx)
                    sumD += sd * Double(weight[ch])
                    sumDX += sdx * Double(weight[ch])
                }
                guard let dx else { continue }
                // Pass 2: dx (dz recomputed per channel: cheaper than an M-float buffer per block).
                let md = Float(sumD / Double(m)), mdx = Float(sumDX / Double(m))
                for cc in 0..<cpg {
                    let ch = gi * cpg + cc
                    let src = x + base + cc * s, gy = dy + base + cc * s, out = dx + base + cc * s
                    let dz = dzFor(src, gy, scratch, s, mean: mean, rstd: rstd, w: weight[ch], b: bias[ch], silu: silu)
                    let w = weight[ch]
                    for k in 0..<s {
                        let xh = (src[k] - mean) * rstd
                        let v = rstd * (dz[k] * w - md - xh * mdx)
                        if overwriteDx { out[k] = v } else { out[k] += v }
                    }
                }
            }
        }
    }

    /// dz of one channel: dy itself, or dy·SiLU′(z) written to `scratch`.
    @inline(__always)
    static func dzFor(_ src: UnsafePointer<Float>, _ gy: UnsafePointer<Float>, _ scratch: UnsafeMutablePointer<Float>,
                      _ s: Int, mean: Float, rstd: Float, w: Float, b: Float, silu: Bool) -> UnsafePointer<Float> {
        guard silu else { return gy }
        let a = rstd * w, c = b - mean * rstd * w
        Kernels.siluGradAffine(src, gy, scratch, s, scale: a, shift: c)
        return UnsafePointer(scratch)
    }
}

extension Kernels {
    /// dst = SiLU(src·scale + shift), n values.
    public static func affineSiLU(_ src: UnsafePointer<Float>, _ dst: UnsafeMutablePointer<Float>, _ n: Int,
                                  scale: Float, shift: Float) {
        var k = 0
        while k + 8 <= n {
            let z = UnsafeRawPointer(src + k).loadUnaligned(as: SIMD8<Float>.self) * scale + shift
            UnsafeMutableRawPointer(dst + k).storeBytes(of: z * sigmoid8(z), as: SIMD8<Float>.self)
            k += 8
        }
        while k < n {
            let z = src[k] * scale + shift
            dst[k] = z * sigmoid8(SIMD8(repeating: z))[0]
            k += 1
        }
    }

    /// out = dy · SiLU′(z), z = src·scale + shift; SiLU′(z) = σ(z)·(1 + z·(1 − σ(z))).
    public static func siluGradAffine(_ src: UnsafePointer<Float>, _ dy: UnsafePointer<Float>,
                                      _ out: UnsafeMutablePointer<Float>, _ n: Int, scale: Float, shift: Float) {
        var k = 0
        while k + 8 <= n {
            let z = UnsafeRawPointer(src + k).loadUnaligned(as: SIMD8<Float>.self) * scale + shift
            let sg = sigmoid8(z)
            let d = UnsafeRawPointer(dy + k).loadUnaligned(as: SIMD8<Float>.self)
            UnsafeMutableRawPointer(out + k).storeBytes(of: d * sg * (1 + z * (1 - sg)), as: SIMD8<Float>.self)
            k += 8
        }
        while k < n {
            let z = src[k] * scale + shift
            let sg = sigmoid8(SIMD8(repeating: z))[0]
            out[k] = dy[k] * sg * (1 + z * (1 - sg))
            k += 1
        }
    }
}

/// Nearest-neighbour 2× up-sampling of [P, H, W] planes (P = N·C): y[p, 2i + a, 2j + b] = x[p, i, j]
/// (PyTorch `F.interpolate(scale_factor=2, mode="nearest")`).
public enum Upsample2x {
    /// x: [P, H, W] → y: [P, 2H, 2W], planes `planes`.
    public static func forward(_ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, height h: Int, width w: Int,
                               planes: Range<Int>) {
        for p in planes {
            let src = x + p * h * w, dst = y + p * 4 * h * w
            for i in 0..<h {
                let row = dst + 2 * i * 2 * w
                for j in 0..<w { let v = src[i * w + j]; row[2 * j] = v; row[2 * j + 1] = v }
                (row + 2 * w).update(from: row, count: 2 * w)
            }
        }
    }

    /// dx[p, i, j] (+)= Σ_{a,b} dy[p, 2i + a, 2j + b].
    public static func backward(_ dy: UnsafePointer<Float>, _ dx: UnsafeMutablePointer<Float>, height h: Int, width w: Int,
                                accumulate: Bool, planes: Range<Int>) {
        for p in planes {
            let src = dy + p * 4 * h * w, dst = dx + p * h * w
            for i in 0..<h {
                let r0 = src + 2 * i * 2 * w, r1 = r0 + 2 * w
                for j in 0..<w {
                    let v = r0[2 * j] + r0[2 * j + 1] + r1[2 * j] + r1[2 * j + 1]
                    if accumulate { dst[i * w + j] += v } else { dst[i * w + j] = v }
                }
            }
        }
    }
}

extension Oracle {
    /// GroupNorm (+ optional SiLU) in Double: x [N, C, S] → y.
    public static func groupNorm(x: [Float], weight: [Float], bias: [Float], batch: Int, channels c: Int,
                                 spatial s: Int, groups g: Int, eps: Float, silu: Bool) -> [Float] {
        var y = [Float](repeating: 0, count: x.count)
        let cpg = c / g
        for n in 0..<batch {
            for gi in 0..<g {
                var vals = [Double]()
                for cc in 0..<cpg { for k in 0..<s { vals.append(Double(x[(n * c + gi * cpg + cc) * s + k])) } }
                let mean = vals.reduce(0, +) / Double(vals.count)
                let v = vals.map { ($0 - mean) * ($0 - mean) }.reduce(0, +) / Double(vals.count)
                for cc in 0..<cpg {
                    let ch = gi * cpg + cc
                    for k in 0..<s {
                        let i = (n * c + ch) * s + k
                        let z = (Double(x[i]) - mean) / (v + Double(eps)).squareRoot() * Double(weight[ch]) + Double(bias[ch])
                        y[i] = Float(silu ? z / (1 + Foundation.exp(-z)) : z)
                    }
                }
            }
        }
        return y
    }
}
