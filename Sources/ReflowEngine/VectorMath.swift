// Vectorised transcendental functions on SIMD8<Float> (AVX2 width on the target machine).
// glibc's scalar expf costs ~15 cycles; the MLP step evaluates ~400k sigmoids, so SiLU/sigmoid/
// tanh use this Cephes-style exp (range reduction by ln 2, degree-6 polynomial, max rel. error
// ~2 ulp on [-87, 88]); tests compare it with Foundation's exp.

@usableFromInline typealias F8 = SIMD8<Float>

/// a·b + c. Built with `-DREFLOWD_FMA` (the Makefile adds it together with `-target-cpu haswell`)
/// this is one fused multiply-add instruction; without it, a multiply and an add, because
/// `addingProduct` on a CPU without FMA becomes one libm `fmaf` call per lane.
@inline(__always) @usableFromInline
func fma8(_ a: F8, _ b: F8, _ c: F8) -> F8 {
    #if REFLOWD_FMA
    return c.addingProduct(a, b)
    #else
    return a * b + c
    #endif
}

/// e^x for the activations (sigmoid, tanh, SiLU): outside [-87.3, 88.3] it saturates at the
/// clamp values (finite), which is all they need. ``exp8Full(_:)`` is the exp of the `exp` op.
@inline(__always) @usableFromInline
func exp8(_ xIn: F8) -> F8 {
    // Clamp with compare+blend: SIMD `clamped(lowerBound:upperBound:)` does not vectorise (2× slower).
    var x = xIn.replacing(with: F8(repeating: -87.3), where: xIn .< F8(repeating: -87.3))
    x = x.replacing(with: F8(repeating: 88.3), where: x .> F8(repeating: 88.3))
    let (er, t) = exp8Reduced(x)
    // 2^n: the low mantissa bits of t hold n (biased by 0x4B400000).
    let bits = unsafeBitCast(t, to: SIMD8<UInt32>.self)
    let pow2 = unsafeBitCast((bits &+ SIMD8<UInt32>(repeating: 127 &- 0x4B40_0000)) &<< 23, to: F8.self)
    return er * pow2
}

/// e^x over the whole Float range: correct up to ln(FLT_MAX) ≈ 88.72 (where ``exp8(_:)`` stops
/// at e^88.3), +inf above it, and gradual underflow to 0 below -87.3. One multiply dearer than
/// ``exp8(_:)``: 2^n is applied as 2^(n>>1)·2^(n − n>>1), two normal factors for n ∈ [-150, 129],
/// so the product rounds once instead of the exponent field wrapping.
@inline(__always) @usableFromInline
func exp8Full(_ xIn: F8) -> F8 {
    // Outside [-104, 89] the result is 0 or +inf anyway (e^-104 < FLT_TRUE_MIN/2, e^89 > FLT_MAX).
    var x = xIn.replacing(with: F8(repeating: -104), where: xIn .< F8(repeating: -104))
    x = x.replacing(with: F8(repeating: 89), where: x .> F8(repeating: 89))
    let (er, t) = exp8Reduced(x)
    let n = unsafeBitCast(t, to: SIMD8<Int32>.self) &- SIMD8<Int32>(repeating: 0x4B40_0000)
    let n1 = n &>> 1, n2 = n &- n1
    let p1 = unsafeBitCast((n1 &+ SIMD8<Int32>(repeating: 127)) &<< 23, to: F8.self)
    let p2 = unsafeBitCast((n2 &+ SIMD8<Int32>(repeating: 127)) &<< 23, to: F8.self)
    return (er * p1) * p2
}

/// Range reduction and polynomial shared by the exps: returns e^r (r = x − n·ln2, |r| ≤ ln2/2)
/// and t, whose low mantissa bits hold n = round(x / ln2) biased by 0x4B400000.
@inline(__always) @usableFromInline
func exp8Reduced(_ x: F8) -> (er: F8, t: F8) {
    // n = round(x / ln2) via the 1.5·2^23 magic-number trick; fx = n as float.
    let magic = F8(repeating: 12_582_912)
    let t = fma8(x, F8(repeating: 1.442_695_04), magic)
    let fx = t - magic
    var r = fma8(fx, F8(repeating: -0.693_359_375), x)
    r = fma8(fx, F8(repeating: 2.121_944_4e-4), r)
    var p = F8(repeating: 1.987_569_15e-4)
    p = fma8(p, r, F8(repeating: 1.398_199_95e-3))
    p = fma8(p, r, F8(repeating: 8.333_451_9e-3))
    p = fma8(p, r, F8(repeating: 4.166_579_59e-2))
    p = fma8(p, r, F8(repeating: 1.666_666_55e-1))
    p = fma8(p, r, F8(repeating: 5.000_000_1e-1))
    let er = fma8(p, r * r, r) + F8(repeating: 1)
    return (er, t)
}

@inline(__always) @usableFromInline
func sigmoid8(_ x: F8) -> F8 {
    F8(repeating: 1) / (F8(repeating: 1) + exp8(-x))
}

@inline(__always) @usableFromInline
func tanh8(_ x: F8) -> F8 {
    // tanh(x) = 1 − 2 / (e^{2x} + 1); saturates correctly through exp8's clamp.
    F8(repeating: 1) - F8(repeating: 2) / (exp8(x + x) + F8(repeating: 1))
}

@inline(__always) @usableFromInline
func scalarExp(_ x: Float) -> Float { exp8Full(F8(repeating: x))[0] }

/// Scalar entry points of the vector math (used by tests and tails).
public enum VectorMath {
    /// √x lane-wise for x ≥ 0 (relative error ≈ 1e-7; see `sqrt8`).
    @inlinable public static func sqrt(_ x: SIMD8<Float>) -> SIMD8<Float> { sqrt8(x) }

    public static func exp(_ x: Float) -> Float { scalarExp(x) }
    public static func sigmoid(_ x: Float) -> Float { sigmoid8(F8(repeating: x))[0] }
    public static func tanh(_ x: Float) -> Float { tanh8(F8(repeating: x))[0] }
}

/// Applies `f8` to `count` elements, 8 at a time, with a zero-padded tail.
@inline(__always) @usableFromInline
func map8(_ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, _ count: Int, _ f8: (F8) -> F8) {
    let rx = UnsafeRawPointer(x), ry = UnsafeMutableRawPointer(y)
    var i = 0
    while i + 8 <= count {
        ry.storeBytes(of: f8(rx.loadUnaligned(fromByteOffset: i * 4, as: F8.self)), toByteOffset: i * 4, as: F8.self)
        i += 8
    }
    if i < count {
        var v = F8()
        for j in 0..<(count - i) { v[j] = x[i + j] }
        let r = f8(v)
        for j in 0..<(count - i) { y[i + j] = r[j] }
    }
}

/// Like ``map8`` with two inputs (e.g. x and the upstream gradient), adding into `out`
/// (`accumulate`) or overwriting it.
@inline(__always) @usableFromInline
func zipApply8(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, _ out: UnsafeMutablePointer<Float>,
               _ count: Int, accumulate: Bool, _ f8: (F8, F8) -> F8) {
    let ra = UnsafeRawPointer(a), rb = UnsafeRawPointer(b), ro = UnsafeMutableRawPointer(out)
    var i = 0
    if accumulate {
        while i + 8 <= count {
            let o = ro.loadUnaligned(fromByteOffset: i * 4, as: F8.self)
            let v = f8(ra.loadUnaligned(fromByteOffset: i * 4, as: F8.self), rb.loadUnaligned(fromByteOffset: i * 4, as: F8.self))
            ro.storeBytes(of: o + v, toByteOffset: i * 4, as: F8.self)
            i += 8
        }
    } else {
        while i + 8 <= count {
            let v = f8(ra.loadUnaligned(fromByteOffset: i * 4, as: F8.self), rb.loadUnaligned(fromByteOffset: i * 4, as: F8.self))
            ro.storeBytes(of: v, toByteOffset: i * 4, as: F8.self)
            i += 8
        }
    }
    if i < count {
        var va = F8(), vb = F8()
        for j in 0..<(count - i) { va[j] = a[i + j]; vb[j] = b[i + j] }
        let r = f8(va, vb)
        for j in 0..<(count - i) { out[i + j] = (accumulate ? out[i + j] : 0) + r[j] }
    }
}

/// √x for x ≥ 0, vectorised (SIMD `squareRoot()` is scalarised into eight `sqrtf` calls):
/// an inverse-square-root bit estimate refined by three Newton steps (relative error ≈ 1e-7),
/// then √x = x · (1/√x). Subnormal inputs are scaled by 2²⁴ first (the estimate would overflow
/// in the Newton steps); ±0, +∞ and negative inputs give ±0, +∞ and NaN as IEEE sqrt does.
@inline(__always) @usableFromInline
func sqrt8(_ x: F8) -> F8 {
    let small = x .< F8(repeating: Float.leastNormalMagnitude)
    let xs = x * F8(repeating: 1).replacing(with: 16_777_216, where: small)
    let bits = unsafeBitCast(xs, to: SIMD8<UInt32>.self)
    var y = unsafeBitCast(SIMD8<UInt32>(repeating: 0x5F37_5A86) &- (bits &>> 1), to: F8.self)
    let half = xs * F8(repeating: 0.5)
    for _ in 0..<3 { y = y * fma8(-half, y * y, F8(repeating: 1.5)) }
    let r = xs * y * F8(repeating: 1).replacing(with: 1.0 / 4096, where: small)
    // √±0 = ±0, √+∞ = +∞, √(x < 0) = NaN (as IEEE sqrt).
    return r.replacing(with: x, where: (x .== 0) .| (x .== F8(repeating: .infinity)))
        .replacing(with: .nan, where: x .< 0)
}
