import Foundation
import Testing
@testable import ReflowEngine
import ReflowTestSupport

/// Grid over [lo, hi] with an irregular step plus a few special points.
func grid(_ lo: Double, _ hi: Double, step: Double, extra: [Float] = []) -> [Float] {
    var xs = [Float]()
    var x = lo
    while x <= hi { xs.append(Float(x)); x += step }
    return xs + extra.filter { Double($0) >= lo && Double($0) <= hi }
}

/// Exact derivative f'(x) in Double (oracle for the backward kernels).
func derivative(_ op: UnaryOp, _ x: Float) -> Double {
    let d = Double(x)
    switch op {
    case .relu: return d > 0 ? 1 : 0
    case .silu:
        let s = 1 / (1 + Foundation.exp(-d))
        return s + d * s * (1 - s)
    case .tanh: let t = Foundation.tanh(d); return 1 - t * t
    case .sigmoid: let s = 1 / (1 + Foundation.exp(-d)); return s * (1 - s)
    case .gelu: return 0.5 * (1 + Foundation.erf(d / 2.0.squareRoot())) + d * Foundation.exp(-0.5 * d * d) / (2 * Double.pi).squareRoot()
    case .exp: return Foundation.exp(d)
    case .log: return 1 / d
    case .sqrt: return 0.5 / d.squareRoot()
    case .sin: return Foundation.cos(d)
    case .cos: return -Foundation.sin(d)
    case .square: return 2 * d
    case .abs: return d > 0 ? 1 : (d < 0 ? -1 : 0)
    }
}

/// The input domain on which each op is checked.
func domain(_ op: UnaryOp) -> [Float] {
    let special: [Float] = [0, -0.0, 1e-30, -1e-30, 1e-6, -1e-6, 0.5, -0.5, 1, -1, 20, -20, 87.9, -87.9, 88, -87]
    switch op {
    case .log, .sqrt:
        // Positive, geometric from 1e-30 to 1e30, plus a linear stretch.
        var xs = [Float]()
        var x = 1e-30
        while x < 1e30 { xs.append(Float(x)); x *= 1.37 }
        return xs + grid(0.01, 10, step: 0.0137)
    case .exp:
        // Past ±88.7 the reference is +inf / subnormal / 0 too.
        return grid(-110, 90, step: 0.0731, extra: special + [88.72, 88.73, -103.9])
    case .sin, .cos:
        return grid(-30, 30, step: 0.0173, extra: special)
    case .square:
        return grid(-1e4, 1e4, step: 7.31, extra: special)
    default:
        return grid(-90, 90, step: 0.0731, extra: special)
    }
}

/// Tolerance: |y − ref| ≤ atol + rtol·|ref|.
func tolerance(_ op: UnaryOp) -> (atol: Float, rtol: Float) {
    switch op {
    case .relu, .abs, .square, .sqrt: return (0, 0)         // exact
    case .exp: return (Float.leastNonzeroMagnitude, 3e-7)   // one subnormal rounding below e^-87.3
    case .log: return (0, 2.4e-7)
    case .sin, .cos: return (1.2e-7, 2.4e-7)
    case .sigmoid, .silu: return (1e-30, 6e-7)
    // tanh = 1 − 2/(e^{2x} + 1) is accurate in absolute terms only (~1 ulp of 1) near 0.
    case .tanh: return (2.4e-7, 6e-7)
    // 0.5·x·(1 + erf(x/√2)) in Float cancels for x ≲ −4: absolute error ~1e-7 there.
    case .gelu: return (1.5e-7, 2.4e-6)
    }
}

func runUnary(_ op: UnaryOp, _ xs: [Float], threads: Int = 1) -> [Float] {
    var y = [Float](repeating: .nan, count: xs.count)
    xs.withUnsafeBufferPointer { px in
        y.withUnsafeMutableBufferPointer { py in
            Kernels.unaryForward(op, px.baseAddress!, py.baseAddress!, count: xs.count, threads: threads)
        }
    }
    return y
}

@Suite("Unary kernels")
struct UnaryKernelTests {
    @Test("forward matches UnaryOp.reference", arguments: UnaryOp.allCases)
    func forwardMatchesReference(_ op: UnaryOp) {
        let xs = domain(op)
        let ys = runUnary(op, xs)
        let tol = tolerance(op)
        var bad = [String]()
        for (x, y) in zip(xs, ys) {
            let r = op.reference(x)
            if y == r { continue }   // includes matching infinities
            if y.isNaN || !(Swift.abs(y - r) <= tol.atol + tol.rtol * Swift.abs(r)) {
                bad.append("x=\(x): \(y) vs \(r)")
            }
        }
        #expect(bad.isEmpty, "\(op): \(bad.count)/\(xs.count) off, e.g. \(bad.prefix(5))")
    }

    @Test("saturating ops stay finite and correct far out (|x| ≤ 90, beyond exp's range)",
          arguments: [UnaryOp.sigmoid, .tanh, .silu, .relu, .gelu])
    func saturation(_ op: UnaryOp) {
        let xs: [Float] = [-90, -89.5, -88.7, -88.3, -87.5, -50, 50, 87.5, 88.3, 88.7, 89.5, 90]
        let ys = runUnary(op, xs)
        for (x, y) in zip(xs, ys) {
            #expect(y.isFinite, "\(op)(\(x)) = \(y)")
            let r = op.reference(x)
            #expect(Swift.abs(y - r) <= 1e-30 + 1e-6 * Swift.abs(r), "\(op)(\(x)) = \(y), reference \(r)")
        }
    }

    @Test("exp: finite, monotone and never NaN out to ±90")
    func expFarOut() {
        let xs = grid(-90, 90, step: 0.01)
        let ys = runUnary(.exp, xs)
        #expect(ys.allSatisfy { !$0.isNaN && $0 >= 0 })
        #expect(zip(ys, ys.dropFirst()).allSatisfy { $0 <= $1 }, "exp kernel is not monotone")
    }

    @Test("exp overflows like the reference above ln(FLT_MAX) ≈ 88.72")
    func expAboveRange() {
        // Between 88.0 and 88.72 the true value is a finite Float; above it, +inf.
        let xs: [Float] = [88.1, 88.3, 88.5, 88.7, 88.72, 88.75, 89, 90]
        let ys = runUnary(.exp, xs)
        for (x, y) in zip(xs, ys) {
            let r = UnaryOp.exp.reference(x)
            if r.isInfinite {
                #expect(y == .infinity, "exp(\(x)) = \(y), reference +inf")
            } else {
                #expect(Swift.abs(y - r) <= 3e-7 * r, "exp(\(x)) = \(y), reference \(r)")
            }
        }
    }

    @Test("tails and the threaded path give the same results as the serial loop", arguments: UnaryOp.allCases)
    func threadedAndTails(_ op: UnaryOp) {
        // 40_003 elements: above the 32k parallel threshold, not a multiple of 8 or of the grain.
        var rng = Random(seed: 99)
        let n = 40_003
        let xs: [Float] = (0..<n).map { _ in
            let u = rng.uniformFloat() * 8 - 4
            return (op == .log || op == .sqrt) ? Swift.abs(u) + 1e-3 : u
        }
        let serial = runUnary(op, xs, threads: 1)
        let threaded = runUnary(op, xs, threads: 2)
        #expect(zip(serial, threaded).allSatisfy { $0.bitPattern == $1.bitPattern })
        // Every length 0…17 (vector body + tail) agrees elementwise with the long run.
        for len in 0...17 {
            let part = runUnary(op, Array(xs[5..<(5 + len)]))
            #expect(zip(part, serial[5..<(5 + len)]).allSatisfy { $0.bitPattern == $1.bitPattern }, "\(op) length \(len)")
        }
    }

    @Test("backward accumulates f'(x)·dy into dx", arguments: UnaryOp.allCases)
    func backwardMatchesDerivative(_ op: UnaryOp) {
        var xs = domain(op).filter { Swift.abs($0) <= 60 }
        if op == .relu || op == .abs { xs = xs.filter { $0 != 0 } }  // derivative convention checked separately
        let n = xs.count
        let ys = runUnary(op, xs)
        var rng = Random(seed: 5)
        let dy: [Float] = (0..<n).map { _ in Float(rng.normal()) }
        let dx0: [Float] = (0..<n).map { _ in Float(rng.normal()) }
        var dx = dx0
        xs.withUnsafeBufferPointer { px in ys.withUnsafeBufferPointer { py in dy.withUnsafeBufferPointer { pdy in
            dx.withUnsafeMutableBufferPointer { pdx in
                Kernels.unaryBackward(op, x: px.baseAddress!, y: py.baseAddress!, dy: pdy.baseAddress!,
                                      dx: pdx.baseAddress!, count: n)
            }
        } } }
        var bad = [String]()
        for i in 0..<n {
            let ref = Double(dx0[i]) + derivative(op, xs[i]) * Double(dy[i])
            let scale = Swift.abs(derivative(op, xs[i]) * Double(dy[i])) + Swift.abs(Double(dx0[i]))
            // sigmoid' and tanh' are computed from y (as PyTorch does): 1 − y loses ~1 ulp of 1.
            let fromY: Double = (op == .sigmoid || op == .tanh) ? 4e-7 * Swift.abs(Double(dy[i])) : 0
            let tol = 2e-6 * scale + fromY + 1e-30
            if !(Swift.abs(Double(dx[i]) - ref) <= tol) { bad.append("x=\(xs[i]): \(dx[i]) vs \(ref)") }
        }
        #expect(bad.isEmpty, "\(op): \(bad.count)/\(n) off, e.g. \(bad.prefix(5))")
    }

    @Test("backward overwrite mode (accumulate: false) ignores dx's old contents", arguments: UnaryOp.allCases)
    func backwardOverwrite(_ op: UnaryOp) {
        for n in [1, 7, 8, 13, 40] {
            let xs = (op == .log || op == .sqrt) ? randu([n], seed: 3, low: 0.2, high: 3).data : randn([n], seed: 3, std: 2).data
            let ys = runUnary(op, xs), dy = randn([n], seed: 4).data
            var over = [Float](repeating: .nan, count: n), acc = [Float](repeating: 0, count: n)
            xs.withUnsafeBufferPointer { px in ys.withUnsafeBufferPointer { py in dy.withUnsafeBufferPointer { pdy in
                over.withUnsafeMutableBufferPointer { pdx in
                    Kernels.unaryBackward(op, x: px.baseAddress!, y: py.baseAddress!, dy: pdy.baseAddress!,
                                          dx: pdx.baseAddress!, count: n, accumulate: false)
                }
                acc.withUnsafeMutableBufferPointer { pdx in
                    Kernels.unaryBackward(op, x: px.baseAddress!, y: py.baseAddress!, dy: pdy.baseAddress!,
                                          dx: pdx.baseAddress!, count: n, accumulate: true)
                }
            } } }
            #expect(over == acc, "\(op) n \(n): \(over) vs \(acc)")
        }
    }

    @Test func kinkConventions() {
        // relu'(0) = 0 and abs'(0) = 0 (subgradient choices documented by the kernels).
        for op in [UnaryOp.relu, .abs] {
            let x: [Float] = [0, 0, 0, 0, 0, 0, 0, 0, 0], y = runUnary(op, x)
            let dy = [Float](repeating: 1, count: 9)
            var dx = [Float](repeating: 0, count: 9)
            x.withUnsafeBufferPointer { px in y.withUnsafeBufferPointer { py in dy.withUnsafeBufferPointer { pdy in
                dx.withUnsafeMutableBufferPointer { pdx in
                    Kernels.unaryBackward(op, x: px.baseAddress!, y: py.baseAddress!, dy: pdy.baseAddress!,
                                          dx: pdx.baseAddress!, count: 9)
                }
            } } }
            #expect(dx.allSatisfy { $0 == 0 }, "\(op)'(0) = \(dx)")
        }
    }

    @Test func tensorMapUsesTheKernel() {
        let x = randn([3, 5], seed: 8)
        let y = x.map(.tanh)
        #expect(y.shape == [3, 5])
        for i in 0..<x.count { #expect(Swift.abs(y.data[i] - Foundation.tanh(x.data[i])) <= 1e-6) }
    }
}

@Suite("VectorMath")
struct VectorMathTests {
    @Test("exp relative error < 3e-7 on [-87, 88]")
    func expAccuracy() {
        var worst = 0.0, worstX: Float = 0
        var x: Float = -87
        let step: Float = 175.0 / 1_000_003
        var i = 0
        while x <= 88 {
            let r = Foundation.exp(Double(x))
            let e = Swift.abs(Double(VectorMath.exp(x)) - r) / r
            if !(e <= worst) { worst = e; worstX = x }
            i += 1
            x = -87 + Float(i) * step
        }
        // Plus every Float in a few narrow windows (range-reduction boundaries, near 0).
        for center: Float in [0, 0.3465736, -0.3465736, 1, 88, -87] {
            var v = center
            for _ in 0..<2000 {
                let r = Foundation.exp(Double(v))
                let e = Swift.abs(Double(VectorMath.exp(v)) - r) / r
                if !(e <= worst) { worst = e; worstX = v }
                v = v.nextDown
            }
        }
        #expect(worst < 3e-7, "max relative error \(worst) at x = \(worstX)")
    }

    @Test("exp underflows gradually below -87.3 (to subnormals, then 0)")
    func expUnderflow() {
        let xs = grid(-110, -87, step: 0.0173)
        let ys = runUnary(.exp, xs)
        for (x, y) in zip(xs, ys) {
            let r = UnaryOp.exp.reference(x)
            // One rounding of the true value: half a subnormal ulp plus the polynomial's relative error.
            #expect(Swift.abs(y - r) <= 3e-7 * r + Float.leastNonzeroMagnitude, "exp(\(x)) = \(y), reference \(r)")
        }
        #expect(runUnary(.exp, [-200, -104, .infinity, -.infinity, 200]) == [0, 0, .infinity, 0, .infinity])
    }

    @Test("the exp op's kernel equals the activations' exp bit for bit on [-87.3, 88.3]")
    func fullExpAgreesWithActivationExp() {
        var x: Float = -87.3
        var mismatches = 0
        while x <= 88.3 {
            let v = F8(repeating: x)
            if exp8Full(v)[0].bitPattern != exp8(v)[0].bitPattern { mismatches += 1 }
            x += 0.000_731 * max(1, Swift.abs(x))
        }
        #expect(mismatches == 0)
    }

    @Test func sigmoidAndTanhScalars() {
        for x: Float in [-90, -10, -1, 0, 0.25, 1, 10, 90] {
            let s = 1 / (1 + Foundation.exp(-Double(x)))
            #expect(Swift.abs(Double(VectorMath.sigmoid(x)) - s) <= 6e-7 * s + 1e-30)
            let t = Foundation.tanh(Double(x))
            #expect(Swift.abs(Double(VectorMath.tanh(x)) - t) <= 6e-7 * Swift.abs(t) + 1e-30)
        }
        #expect(VectorMath.tanh(0) == 0)
        #expect(VectorMath.sigmoid(0) == 0.5)
    }
}

@Suite("VectorMath.sqrt")
struct VectorSqrtTests {
    @Test("matches Float.squareRoot to 2e-7 relative from 0 through subnormals to 3e38")
    func accuracy() {
        var xs: [Float] = [0, Float.leastNonzeroMagnitude, 1e-44, 1e-40, Float.leastNormalMagnitude, 1e-30, 1e-10, 0.25, 1, 2, 3, 1e10, 1e30, 3e38]
        var rng = Random(seed: 3)
        for _ in 0..<2000 { xs.append(Float(Foundation.exp(Double(rng.uniformFloat()) * 170 - 85))) }
        for x in xs {
            let got = VectorMath.sqrt(SIMD8(repeating: x))[0], want = x.squareRoot()
            #expect(got.isFinite, "sqrt(\(x)) = \(got)")
            #expect(abs(got - want) <= 2e-7 * want, "sqrt(\(x)) = \(got), want \(want)")
        }
    }

    @Test("IEEE special values: ±0, +∞, negatives and NaN")
    func specialValues() {
        let v = VectorMath.sqrt(SIMD8<Float>(0, -0.0, .infinity, -1, -1e-40, .nan, -.infinity, 4))
        #expect(v[0] == 0 && v[0].sign == .plus)
        #expect(v[1] == 0 && v[1].sign == .minus)
        #expect(v[2] == .infinity)
        #expect(v[3].isNaN && v[4].isNaN && v[5].isNaN && v[6].isNaN)
        #expect(abs(v[7] - 2) <= 4e-7)
    }
}
