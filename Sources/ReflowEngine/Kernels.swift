internal import Foundation

// Dimension letters used in shape comments across the engine (docs/NUMERICS.md):
//   B batch, D features, C channels, H/W spatial; t is flow time.
// Every kernel below has a naive oracle in `Oracle` or a finite-difference check in the tests.

/// Unary elementwise operations with known derivatives.
public enum UnaryOp: String, Sendable, CaseIterable, Codable {
    case relu, silu, tanh, sigmoid, gelu, exp, log, sqrt, sin, cos, square, abs

    /// Scalar reference (the oracle for the vectorised kernels).
    public func reference(_ x: Float) -> Float {
        let d = Double(x)
        switch self {
        case .relu: return max(x, 0)
        case .silu: return Float(d / (1 + Foundation.exp(-d)))
        case .tanh: return Float(Foundation.tanh(d))
        case .sigmoid: return Float(1 / (1 + Foundation.exp(-d)))
        case .gelu: return Float(0.5 * d * (1 + Foundation.erf(d / 2.0.squareRoot())))
        case .exp: return Float(Foundation.exp(d))
        case .log: return Float(Foundation.log(d))
        case .sqrt: return Float(d.squareRoot())
        case .sin: return Float(Foundation.sin(d))
        case .cos: return Float(Foundation.cos(d))
        case .square: return x * x
        case .abs: return Swift.abs(x)
        }
    }
}

/// Binary elementwise operations (with NumPy broadcasting).
public enum BinaryOp: String, Sendable, CaseIterable, Codable {
    case add, sub, mul, div

    @inline(__always) public func apply(_ a: Float, _ b: Float) -> Float {
        switch self {
        case .add: return a + b
        case .sub: return a - b
        case .mul: return a * b
        case .div: return a / b
        }
    }
}

/// Forward/backward kernel pairs on raw buffers. Elementwise kernels split work across `threads`
/// when there is enough of it (≥ 32k elements); results do not depend on the thread count.
public enum Kernels {
    /// Elements below which elementwise kernels stay on the calling thread.
    public static let parallelThreshold = 1 << 15

    // MARK: unary

    /// y = f(x), elementwise.  x, y: [N]
    public static func unaryForward(_ op: UnaryOp, _ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>,
                                    count: Int, threads: Int = 1) {
        let px = SendablePointer(x), py = SendableMutablePointer(y)
        parallelChunks(count: count, threads: count >= parallelThreshold ? threads : 1, grain: 64) { r in
            unaryForwardSerial(op, px.base! + r.lowerBound, py.base! + r.lowerBound, r.count)
        }
    }

    static func unaryForwardSerial(_ op: UnaryOp, _ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, _ n: Int) {
        switch op {
        case .relu: map8(x, y, n) { $0.replacing(with: 0, where: $0 .< 0) }
        case .silu: map8(x, y, n) { $0 * sigmoid8($0) }
        case .sigmoid: map8(x, y, n) { sigmoid8($0) }
        case .tanh: map8(x, y, n) { tanh8($0) }
        case .exp: map8(x, y, n) { exp8Full($0) }
        case .square: for i in 0..<n { y[i] = x[i] * x[i] }
        case .abs: for i in 0..<n { y[i] = Swift.abs(x[i]) }
        case .sqrt: for i in 0..<n { y[i] = x[i].squareRoot() }
        case .log: for i in 0..<n { y[i] = Foundation.log(x[i]) }
        case .sin: for i in 0..<n { y[i] = Foundation.sin(x[i]) }
        case .cos: for i in 0..<n { y[i] = Foundation.cos(x[i]) }
        case .gelu:
            for i in 0..<n { y[i] = 0.5 * x[i] * (1 + Foundation.erf(x[i] * 0.707_106_77)) }
        }
    }

    /// dx += f'(x) · dy (or dx = f'(x) · dy when `accumulate` is false), given x and y = f(x).  All: [N]
    public static func unaryBackward(_ op: UnaryOp, x: UnsafePointer<Float>, y: UnsafePointer<Float>,
                                     dy: UnsafePointer<Float>, dx: UnsafeMutablePointer<Float>,
                                     count: Int, accumulate: Bool = true, threads: Int = 1) {
        let px = SendablePointer(x), py = SendablePointer(y), pdy = SendablePointer(dy)
        let pdx = SendableMutablePointer(dx)
        parallelChunks(count: count, threads: count >= parallelThreshold ? threads : 1, grain: 64) { r in
            let o = r.lowerBound
            unaryBackwardSerial(op, px.base! + o, py.base! + o, pdy.base! + o, pdx.base! + o, r.count, accumulate)
        }
    }

    static func unaryBackwardSerial(_ op: UnaryOp, _ x: UnsafePointer<Float>, _ y: UnsafePointer<Float>,
                                    _ dy: UnsafePointer<Float>, _ dx: UnsafeMutablePointer<Float>, _ n: Int,
                                    _ accumulate: Bool) {
        // The vectorised rules take `accumulate` directly; the scalar ones add into a zeroed buffer.
        switch op {
        case .relu, .silu, .sigmoid, .tanh, .exp: break
        default: if !accumulate { dx.update(repeating: 0, count: n) }
        }
        switch op {
        case .relu: zipApply8(x, dy, dx, n, accumulate: accumulate) { x, g in g.replacing(with: 0, where: x .<= 0) }
        case .silu:
            // d/dx x·σ(x) = σ + x·σ·(1 − σ)
            zipApply8(x, dy, dx, n, accumulate: accumulate) { x, g in
                let s = sigmoid8(x)
                return g * (s + x * s * (F8(repeating: 1) - s))
            }
        case .sigmoid: zipApply8(y, dy, dx, n, accumulate: accumulate) { y, g in g * y * (F8(repeating: 1) - y) }
        case .tanh: zipApply8(y, dy, dx, n, accumulate: accumulate) { y, g in g * (F8(repeating: 1) - y * y) }
        case .exp: zipApply8(y, dy, dx, n, accumulate: accumulate) { y, g in g * y }
        case .square: for i in 0..<n { dx[i] += 2 * x[i] * dy[i] }
        case .abs: for i in 0..<n { dx[i] += (x[i] > 0 ? 1 : (x[i] < 0 ? -1 : 0)) * dy[i] }
        case .sqrt: for i in 0..<n { dx[i] += dy[i] * 0.5 / y[i] }
        case .log: for i in 0..<n { dx[i] += dy[i] / x[i] }
        case .sin: for i in 0..<n { dx[i] += dy[i] * Foundation.cos(x[i]) }
        case .cos: for i in 0..<n { dx[i] -= dy[i] * Foundation.sin(x[i]) }
        case .gelu:
            // Φ(x) + x·φ(x)
            for i in 0..<n {
                let v = x[i]
                let cdf = 0.5 * (1 + Foundation.erf(v * 0.707_106_77))
                let pdf = Foundation.exp(-0.5 * v * v) * 0.398_942_28
                dx[i] += dy[i] * (cdf + v * pdf)
            }
        }
    }

    /// SiLU backward from the saved σ and y = x·σ: dx (+)= dy·(σ + y·(1 − σ)).  All: [N]
    public static func siluBackwardSaved(sigmoid s: UnsafePointer<Float>, y: UnsafePointer<Float>,
                                         dy: UnsafePointer<Float>, dx: UnsafeMutablePointer<Float>,
                                         count: Int, accumulate: Bool, threads: Int = 1) {
        let ps = SendablePointer(s), py = SendablePointer(y), pg = SendablePointer(dy)
        let pdx = SendableMutablePointer(dx)
        parallelChunks(count: count, threads: count >= parallelThreshold ? threads : 1, grain: 64) { r in
            let s = ps.base!, y = py.base!, g = pg.base!, dx = pdx.base!
            if accumulate {
                for i in r { dx[i] += g[i] * (s[i] + y[i] * (1 - s[i])) }
            } else {
                for i in r { dx[i] = g[i] * (s[i] + y[i] * (1 - s[i])) }
            }
        }
    }

    // MARK: broadcasting

    /// NumPy broadcast of two shapes, or nil when they are incompatible.
    public static func broadcastShape(_ a: [Int], _ b: [Int]) -> [Int]? {
        let r = max(a.count, b.count)
        var out = [Int](repeating: 1, count: r)
        for i in 0..<r {
            let da = i < r - a.count ? 1 : a[i - (r - a.count)]
            let db = i < r - b.count ? 1 : b[i - (r - b.count)]
            if da == db || db == 1 { out[i] = da } else if da == 1 { out[i] = db } else { return nil }
        }
        return out
    }

    /// Element strides of `shape` seen through the broadcast to `outShape` (0 on broadcast dims).
    public static func broadcastStrides(_ shape: [Int], to outShape: [Int]) -> [Int] {
        let r = outShape.count
        let own = Tensor.strides(of: shape)
        var s = [Int](repeating: 0, count: r)
        for i in 0..<shape.count {
            let oi = i + (r - shape.count)
            s[oi] = shape[i] == 1 && outShape[oi] != 1 ? 0 : own[i]
        }
        return s
    }

    /// Visits `shape` in row-major order one innermost row at a time: `body(offsets, n)` with the
    /// starting element offset of every operand (from its `strides`) and the row length `n`; the
    /// operands' innermost strides are `strides[k].last`.
    static func walkRows(_ shape: [Int], _ strides: [[Int]], _ body: ([Int], Int) -> Void) {
        let r = shape.count
        if r == 0 { body([Int](repeating: 0, count: strides.count), 1); return }
        if shape.contains(0) { return }
        let inner = shape[r - 1]
        var idx = [Int](repeating: 0, count: r)
        var offs = [Int](repeating: 0, count: strides.count)
        while true {
            body(offs, inner)
            var d = r - 2
            while d >= 0 {
                idx[d] += 1
                for k in 0..<strides.count { offs[k] += strides[k][d] }
                if idx[d] < shape[d] { break }
                for k in 0..<strides.count { offs[k] -= strides[k][d] * shape[d] }
                idx[d] = 0
                d -= 1
            }
            if d < 0 { return }
        }
    }

    /// out = a ∘ b with broadcasting.  a: shapeA, b: shapeB, out: broadcastShape(shapeA, shapeB)
    public static func binaryForward(_ op: BinaryOp, _ a: UnsafePointer<Float>, _ shapeA: [Int],
                                     _ b: UnsafePointer<Float>, _ shapeB: [Int],
                                     _ out: UnsafeMutablePointer<Float>, _ outShape: [Int], threads: Int = 1) {
        let n = Tensor.count(of: outShape)
        let na = Tensor.count(of: shapeA), nb = Tensor.count(of: shapeB)
        if na == n && nb == n {
            let pa = SendablePointer(a), pb = SendablePointer(b), po = SendableMutablePointer(out)
            parallelChunks(count: n, threads: n >= parallelThreshold ? threads : 1, grain: 64) { r in
                let a = pa.base!, b = pb.base!, o = po.base!
                switch op {
                case .add: for i in r { o[i] = a[i] + b[i] }
                case .sub: for i in r { o[i] = a[i] - b[i] }
                case .mul: for i in r { o[i] = a[i] * b[i] }
                case .div: for i in r { o[i] = a[i] / b[i] }
                }
            }
            return
        }
        if na == n && isSuffix(shapeB, of: outShape) && nb > 0 {
            // b tiles along the leading dims (e.g. a bias [D] added to [B, D]).
            for row in 0..<(n / nb) {
                let ao = a + row * nb, oo = out + row * nb
                switch op {
                case .add: for j in 0..<nb { oo[j] = ao[j] + b[j] }
                case .sub: for j in 0..<nb { oo[j] = ao[j] - b[j] }
                case .mul: for j in 0..<nb { oo[j] = ao[j] * b[j] }
                case .div: for j in 0..<nb { oo[j] = ao[j] / b[j] }
                }
            }
            return
        }
        let sa = broadcastStrides(shapeA, to: outShape), sb = broadcastStrides(shapeB, to: outShape)
        let so = Tensor.strides(of: outShape)
        walkRows(outShape, [sa, sb, so]) { offs, len in
            let ia = sa.last ?? 0, ib = sb.last ?? 0
            let pa = a + offs[0], pb = b + offs[1], po = out + offs[2]
            for j in 0..<len { po[j] = op.apply(pa[j * ia], pb[j * ib]) }
        }
    }

    /// True when `s` (after dropping leading 1s) equals the trailing dims of `full`.
    static func isSuffix(_ s: [Int], of full: [Int]) -> Bool {
        var t = s[...]
        while let f = t.first, f == 1, t.count > 0 { t = t.dropFirst() }
        if t.count > full.count { return false }
        return Array(t) == Array(full.suffix(t.count))
    }

    /// dst[shape dstShape] += Σ over broadcast dims of src[shape srcShape]  (the adjoint of broadcasting;
    /// `dstShape` must broadcast to `srcShape`), optionally scaled.
    public static func sumToShape(_ src: UnsafePointer<Float>, _ srcShape: [Int],
                                  _ dst: UnsafeMutablePointer<Float>, _ dstShape: [Int], scale: Float = 1) {
        let n = Tensor.count(of: srcShape), nd = Tensor.count(of: dstShape)
        if n == nd {
            if scale == 1 { for i in 0..<n { dst[i] += src[i] } } else { for i in 0..<n { dst[i] += scale * src[i] } }
            return
        }
        if isSuffix(dstShape, of: srcShape) && nd > 0 {
            for row in 0..<(n / nd) {
                let s = src + row * nd
                for j in 0..<nd { dst[j] += scale * s[j] }
            }
            return
        }
        let sd = broadcastStrides(dstShape, to: srcShape), ss = Tensor.strides(of: srcShape)
        walkRows(srcShape, [ss, sd]) { offs, len in
            let ps = src + offs[0], pd = dst + offs[1], id = sd.last ?? 0
            if id == 0 {
                var acc: Float = 0
                for j in 0..<len { acc += ps[j] }
                pd[0] += scale * acc
            } else {
                for j in 0..<len { pd[j * id] += scale * ps[j] }
            }
        }
    }

    /// dst[shape dstShape] += scale · broadcast(src[shape srcShape]) (the adjoint of a sum).
    public static func broadcastAdd(_ src: UnsafePointer<Float>, _ srcShape: [Int],
                                    _ dst: UnsafeMutablePointer<Float>, _ dstShape: [Int], scale: Float = 1) {
        let ss = broadcastStrides(srcShape, to: dstShape), sd = Tensor.strides(of: dstShape)
        walkRows(dstShape, [ss, sd]) { offs, len in
            let ps = src + offs[0], pd = dst + offs[1], i = ss.last ?? 0
            for j in 0..<len { pd[j] += scale * ps[j * i] }
        }
    }

    /// Shape after summing `axes` (kept as size-1 dims).
    public static func reducedShape(_ shape: [Int], axes: [Int]) -> [Int] {
        var s = shape
        for a in axes { s[a] = 1 }
        return s
    }

    // MARK: softmax (last axis)

    /// y = softmax(x) along the last axis.  x, y: [R, N]
    public static func softmaxForward(_ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, rows: Int, n: Int) {
        for r in 0..<rows {
            let xr = x + r * n, yr = y + r * n
            var m = -Float.infinity
            for j in 0..<n { m = max(m, xr[j]) }
            var s: Float = 0
            for j in 0..<n { let e = Foundation.exp(xr[j] - m); yr[j] = e; s += e }
            let inv = 1 / s
            for j in 0..<n { yr[j] *= inv }
        }
    }

    /// dx += y ⊙ (dy − ⟨dy, y⟩) per row.  [R, N]
    public static func softmaxBackward(_ y: UnsafePointer<Float>, _ dy: UnsafePointer<Float>,
                                       _ dx: UnsafeMutablePointer<Float>, rows: Int, n: Int) {
        for r in 0..<rows {
            let yr = y + r * n, gr = dy + r * n, dr = dx + r * n
            var d: Float = 0
            for j in 0..<n { d += gr[j] * yr[j] }
            for j in 0..<n { dr[j] += yr[j] * (gr[j] - d) }
        }
    }
}

// MARK: - Tensor-level conveniences (no autodiff)

extension Tensor {
    /// Elementwise `op` with broadcasting.
    public func binary(_ op: BinaryOp, _ other: Tensor, threads: Int = 1) -> Tensor {
        guard let outShape = Kernels.broadcastShape(shape, other.shape) else {
            preconditionFailure("\(op): shapes \(shape) and \(other.shape) do not broadcast")
        }
        return data.withUnsafeBufferPointer { a in
            other.data.withUnsafeBufferPointer { b in
                Tensor(shape: outShape) { o in
                    Kernels.binaryForward(op, a.baseAddress!, shape, b.baseAddress!, other.shape,
                                          o.baseAddress!, outShape, threads: threads)
                }
            }
        }
    }

    /// Elementwise unary map.
    public func map(_ op: UnaryOp, threads: Int = 1) -> Tensor {
        data.withUnsafeBufferPointer { x in
            Tensor(shape: shape) { y in
                Kernels.unaryForward(op, x.baseAddress!, y.baseAddress!, count: count, threads: threads)
            }
        }
    }

    /// Sum over `axes` (kept as size-1 dims), or over everything when `axes` is nil.
    public func sum(axes: [Int]? = nil) -> Tensor {
        let ax = axes ?? Array(0..<rank)
        let outShape = Kernels.reducedShape(shape, axes: ax)
        var out = Tensor.zeros(outShape)
        data.withUnsafeBufferPointer { x in
            out.data.withUnsafeMutableBufferPointer { o in
                Kernels.sumToShape(x.baseAddress!, shape, o.baseAddress!, outShape)
            }
        }
        return out
    }

    /// Softmax along the last axis.
    public func softmax() -> Tensor {
        let n = shape.last ?? 1
        return data.withUnsafeBufferPointer { x in
            Tensor(shape: shape) { y in
                Kernels.softmaxForward(x.baseAddress!, y.baseAddress!, rows: count / max(n, 1), n: n)
            }
        }
    }

    public static func + (a: Tensor, b: Tensor) -> Tensor { a.binary(.add, b) }
    public static func - (a: Tensor, b: Tensor) -> Tensor { a.binary(.sub, b) }
    public static func * (a: Tensor, b: Tensor) -> Tensor { a.binary(.mul, b) }
    public static func / (a: Tensor, b: Tensor) -> Tensor { a.binary(.div, b) }
    public static func * (a: Tensor, s: Float) -> Tensor { Tensor(shape: a.shape, data: a.data.map { $0 * s }) }
}
