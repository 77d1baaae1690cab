import CFFTW
import Foundation
import Synchronization

/// Complex values as interleaved (re, im) Float pairs in row-major order: `shape` counts complex
/// elements, `data` holds 2·∏shape floats. The MRI forward model (issue #14) works on planes
/// [.., H, W] of it.
public struct ComplexTensor: Sendable, Equatable {
    public var shape: [Int]
    public var data: [Float]

    /// Number of complex elements.
    public var count: Int { shape.reduce(1, *) }

    /// Wraps interleaved pairs; `data.count` must be 2·∏shape.
    public init(shape: [Int], data: [Float]) {
        precondition(data.count == 2 * shape.reduce(1, *), "ComplexTensor: \(data.count) floats for shape \(shape)")
        self.shape = shape
        self.data = data
    }

    /// Zeros of `shape`.
    public init(zeros shape: [Int]) {
        self.init(shape: shape, data: [Float](repeating: 0, count: 2 * shape.reduce(1, *)))
    }

    /// real + i·imag (imag zero when nil).
    public init(real: Tensor, imag: Tensor? = nil) {
        precondition(imag == nil || imag!.shape == real.shape, "ComplexTensor: real \(real.shape) and imag \(imag!.shape) differ")
        var d = [Float](repeating: 0, count: 2 * real.count)
        for i in 0..<real.count {
            d[2 * i] = real.data[i]
            if let imag { d[2 * i + 1] = imag.data[i] }
        }
        self.init(shape: real.shape, data: d)
    }

    /// |z| per element.
    public var magnitude: Tensor {
        var m = [Float](repeating: 0, count: count)
        for i in 0..<count {
            let (re, im) = (data[2 * i], data[2 * i + 1])
            m[i] = (re * re + im * im).squareRoot()
        }
        return Tensor(shape: shape, data: m)
    }

    /// Σ a_k · conj(b_k) in Double (the inner product ⟨a, b⟩, linear in the first argument).
    public static func inner(_ a: ComplexTensor, _ b: ComplexTensor) -> (re: Double, im: Double) {
        precondition(a.shape == b.shape, "ComplexTensor.inner: shapes \(a.shape) and \(b.shape)")
        var re = 0.0, im = 0.0
        for k in stride(from: 0, to: a.data.count, by: 2) {
            let (ar, ai, br, bi) = (Double(a.data[k]), Double(a.data[k + 1]), Double(b.data[k]), Double(b.data[k + 1]))
            re += ar * br + ai * bi
            im += ai * br - ar * bi
        }
        return (re, im)
    }
}

/// The centred, orthonormal 2-D discrete Fourier transform of each [H, W] plane (the last two
/// axes) of a ``ComplexTensor``, as MRI code writes it (fastMRI's `fft2c`):
///
///     forward: X = fftshift(F(ifftshift(x))) / √(H·W),   F_kl = Σ_mn x_mn · e^{−2πi(km/H + ln/W)}
///     inverse: x = fftshift(G(ifftshift(X))) / √(H·W),   G the same sum with e^{+2πi(…)}
///
/// Orthonormal means `inverse` is the adjoint of `forward` and both preserve the 2-norm; centred
/// means k-space index (H/2, W/2) (integer division) is the zero frequency, and the image origin
/// is likewise at the centre. Any H, W ≥ 1, odd or even (ifftshift and fftshift differ for odd
/// sizes). Executed by FFTW (single precision); plans are made once per (H, W, direction) with
/// `FFTW_ESTIMATE` under a lock and reused from any thread.
public enum FFT2D {
    public enum Direction: Sendable { case forward, inverse }

    /// X = centred orthonormal DFT of every plane of x (x: [.., H, W], rank ≥ 2).
    public static func forward(_ x: ComplexTensor) -> ComplexTensor { transform(x, .forward) }

    /// x = centred orthonormal inverse DFT of every plane of X; the adjoint (and inverse) of ``forward(_:)``.
    public static func inverse(_ x: ComplexTensor) -> ComplexTensor { transform(x, .inverse) }

    /// Plans by (H, W, direction), stored as their pointer bits (FFTW plans are immutable once
    /// made and may be executed concurrently with the new-array interface).
    private static let plans = Mutex<[PlanKey: UInt]>([:])
    private struct PlanKey: Hashable { var h: Int, w: Int, forward: Bool }

    private static func plan(_ h: Int, _ w: Int, _ d: Direction) -> fftwf_plan {
        let key = PlanKey(h: h, w: w, forward: d == .forward)
        return plans.withLock { cache -> fftwf_plan in
            if let bits = cache[key], let p = fftwf_plan(bitPattern: bits) { return p }
            // Plan on scratch arrays from fftwf_malloc: execution on other fftwf_malloc'd arrays
            // then has the alignment the plan assumes.
            let a = fftwf_alloc_complex(h * w)!, b = fftwf_alloc_complex(h * w)!
            defer { fftwf_free(a); fftwf_free(b) }
            let p = fftwf_plan_dft_2d(Int32(h), Int32(w), a, b, d == .forward ? FFTW_FORWARD : FFTW_BACKWARD, FFTW_ESTIMATE)!
            cache[key] = UInt(bitPattern: p)
            return p
        }
    }

    static func transform(_ x: ComplexTensor, _ d: Direction) -> ComplexTensor {
        precondition(x.shape.count >= 2, "FFT2D: needs [.., H, W], got \(x.shape)")
        let h = x.shape[x.shape.count - 2], w = x.shape[x.shape.count - 1]
        let planes = x.count / max(1, h * w)
        guard h * w > 0 else { return x }
        let p = plan(h, w, d)
        let scale = Float(1 / Double(h * w).squareRoot())
        let inBuf = fftwf_alloc_complex(h * w)!, outBuf = fftwf_alloc_complex(h * w)!
        defer { fftwf_free(inBuf); fftwf_free(outBuf) }
        let inF = UnsafeMutableRawPointer(inBuf).bindMemory(to: Float.self, capacity: 2 * h * w)
        let outF = UnsafeMutableRawPointer(outBuf).bindMemory(to: Float.self, capacity: 2 * h * w)
        // numpy's conventions: ifftshift(x)[j] = x[(j + n/2) mod n] (a roll by −⌊n/2⌋) and
        // fftshift(x)[j] = x[(j + ⌈n/2⌉) mod n] (a roll by ⌊n/2⌋); they differ for odd n.
        var out = ComplexTensor(zeros: x.shape)
        x.data.withUnsafeBufferPointer { src in
            out.data.withUnsafeMutableBufferPointer { dst in
                for plane in 0..<planes {
                    let base = 2 * plane * h * w
                    for r in 0..<h {
                        let sr = (r + h / 2) % h
                        for c in 0..<w {
                            let sc = (c + w / 2) % w
                            inF[2 * (r * w + c)] = src[base + 2 * (sr * w + sc)]
                            inF[2 * (r * w + c) + 1] = src[base + 2 * (sr * w + sc) + 1]
                        }
                    }
                    fftwf_execute_dft(p, inBuf, outBuf)
                    for r in 0..<h {
                        let sr = (r + (h + 1) / 2) % h
                        for c in 0..<w {
                            let sc = (c + (w + 1) / 2) % w
                            dst[base + 2 * (r * w + c)] = outF[2 * (sr * w + sc)] * scale
                            dst[base + 2 * (r * w + c) + 1] = outF[2 * (sr * w + sc) + 1] * scale
                        }
                    }
                }
            }
        }
        return out
    }
}
