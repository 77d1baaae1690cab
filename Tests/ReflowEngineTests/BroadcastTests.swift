import Foundation
import Testing
import ReflowEngine
import ReflowTestSupport

/// Naive NumPy broadcast shape (independent of Kernels.broadcastShape).
func naiveBroadcastShape(_ a: [Int], _ b: [Int]) -> [Int]? {
    let r = max(a.count, b.count)
    let pa = [Int](repeating: 1, count: r - a.count) + a, pb = [Int](repeating: 1, count: r - b.count) + b
    var out = [Int]()
    for (x, y) in zip(pa, pb) {
        if x == y { out.append(x) } else if x == 1 { out.append(y) } else if y == 1 { out.append(x) } else { return nil }
    }
    return out
}

/// Row-major multi-index of flat index `i` in `shape`.
func multiIndex(_ i: Int, _ shape: [Int]) -> [Int] {
    var idx = [Int](repeating: 0, count: shape.count)
    var rest = i
    for d in stride(from: shape.count - 1, through: 0, by: -1) {
        idx[d] = rest % shape[d]
        rest /= shape[d]
    }
    return idx
}

/// Element of `t` seen through broadcasting at output multi-index `idx` (rank of the output).
func broadcastElement(_ t: Tensor, _ idx: [Int]) -> Float {
    let off = idx.count - t.rank
    var flat = 0
    for d in 0..<t.rank { flat = flat * t.shape[d] + (t.shape[d] == 1 ? 0 : idx[d + off]) }
    return t.data[flat]
}

func naiveBinary(_ op: BinaryOp, _ a: Tensor, _ b: Tensor) -> Tensor {
    let shape = naiveBroadcastShape(a.shape, b.shape)!
    let n = Tensor.count(of: shape)
    return Tensor(shape: shape, data: (0..<n).map { i in
        let idx = multiIndex(i, shape)
        return op.apply(broadcastElement(a, idx), broadcastElement(b, idx))
    })
}

/// Naive Σ of `src` onto `dstShape` (dstShape broadcasts to src.shape).
func naiveSumToShape(_ src: Tensor, _ dstShape: [Int]) -> Tensor {
    var out = Tensor.zeros(dstShape)
    let off = src.rank - dstShape.count
    for i in 0..<src.count {
        let idx = multiIndex(i, src.shape)
        var flat = 0
        for d in 0..<dstShape.count { flat = flat * dstShape[d] + (dstShape[d] == 1 ? 0 : idx[d + off]) }
        out.data[flat] += src.data[i]
    }
    return out
}

func dot(_ a: Tensor, _ b: Tensor) -> Double {
    zip(a.data, b.data).reduce(0.0) { $0 + Double($1.0) * Double($1.1) }
}

let broadcastPairs: [([Int], [Int])] = [
    ([2, 3], [2, 3]),            // same shape
    ([4], [4]),
    ([], []),                    // scalars
    ([2, 3], []),                // scalar on the right
    ([], [2, 3]),                // scalar on the left
    ([2, 3], [1]),
    ([5, 4], [4]),               // suffix (bias)
    ([4], [5, 4]),               // suffix on the left
    ([2, 5, 4], [5, 4]),         // rank-2 suffix
    ([2, 5, 4], [1, 5, 4]),      // suffix with leading 1
    ([2, 1, 3], [4, 1]),         // middle-axis broadcast both ways → [2, 4, 3]
    ([4, 1], [2, 1, 3]),
    ([3, 1], [1, 4]),            // outer product
    ([1, 4], [3, 1]),
    ([2, 3, 4], [2, 1, 4]),      // middle axis
    ([2, 3, 4], [2, 3, 1]),      // last axis broadcast (inner stride 0)
    ([2, 3, 1], [2, 3, 4]),
    ([2, 1, 1], [1, 3, 4]),
    ([3, 1, 5], [1, 1]),
    ([1, 1, 1], [2, 3, 4]),
    ([2, 3, 4, 5], [3, 1, 5]),   // rank mismatch with a middle 1
    ([6], [2, 3, 1]),            // rank mismatch, full broadcast
    ([2, 0, 3], [3]),            // empty
]

@Suite("Broadcasting kernels")
struct BroadcastTests {
    @Test("broadcastShape agrees with a naive rule, and is symmetric")
    func shapes() {
        for (a, b) in broadcastPairs {
            #expect(Kernels.broadcastShape(a, b) == naiveBroadcastShape(a, b), "\(a) \(b)")
            #expect(Kernels.broadcastShape(a, b) == Kernels.broadcastShape(b, a), "\(a) \(b)")
        }
        #expect(Kernels.broadcastShape([2, 1, 3], [4, 1]) == [2, 4, 3])
        #expect(Kernels.broadcastShape([5, 4], [4]) == [5, 4])
        #expect(Kernels.broadcastShape([], [3]) == [3])
    }

    @Test("incompatible shapes give nil",
          arguments: [([2, 3], [3, 2]), ([3], [4]), ([2, 3, 4], [3, 3]), ([2, 1], [3, 3]), ([0], [2]), ([4, 2], [2, 4, 3])])
    func incompatible(_ pair: ([Int], [Int])) {
        #expect(Kernels.broadcastShape(pair.0, pair.1) == nil)
        #expect(Kernels.broadcastShape(pair.1, pair.0) == nil)
    }

    @Test("binaryForward matches index-by-index evaluation", arguments: BinaryOp.allCases)
    func binaryForward(_ op: BinaryOp) {
        for (i, (sa, sb)) in broadcastPairs.enumerated() {
            let a = randn(sa, seed: UInt64(2 * i + 1))
            var b = randn(sb, seed: UInt64(2 * i + 2))
            if op == .div { b = Tensor(shape: sb, data: b.data.map { $0 + ($0 >= 0 ? 0.5 : -0.5) }) }
            let got = a.binary(op, b)
            let want = naiveBinary(op, a, b)
            #expect(got.shape == want.shape, "\(sa) \(op) \(sb)")
            if got.shape == want.shape { expectBitwiseEqual(got, want, "\(sa) \(op) \(sb)") }
        }
    }

    @Test("threaded same-shape path equals the serial one")
    func threadedSameShape() {
        let a = randn([40_001], seed: 1), b = randu([40_001], seed: 2, low: 0.5, high: 2)
        for op in BinaryOp.allCases {
            expectBitwiseEqual(a.binary(op, b, threads: 2), a.binary(op, b, threads: 1), "\(op)")
            expectBitwiseEqual(a.binary(op, b, threads: 2), naiveBinary(op, a, b), "\(op)")
        }
        // Operators.
        let x = randn([2, 3], seed: 3), y = randn([3], seed: 4)
        expectBitwiseEqual(x + y, naiveBinary(.add, x, y))
        expectBitwiseEqual(x - y, naiveBinary(.sub, x, y))
        expectBitwiseEqual(x * y, naiveBinary(.mul, x, y))
        expectBitwiseEqual(x / y, naiveBinary(.div, x, y))
        expectBitwiseEqual(x * 2.5, Tensor(shape: [2, 3], data: x.data.map { $0 * 2.5 }))
    }

    @Test("sumToShape matches a naive reduction and accumulates with scale")
    func sumToShape() {
        for (i, (sa, sb)) in broadcastPairs.enumerated() {
            guard let big = naiveBroadcastShape(sa, sb) else { continue }
            for small in [sa, sb] where small.count <= big.count {
                let src = randn(big, seed: UInt64(100 + i))
                let base = randn(small, seed: UInt64(200 + i))
                var dst = base
                src.data.withUnsafeBufferPointer { ps in
                    dst.data.withUnsafeMutableBufferPointer { pd in
                        Kernels.sumToShape(ps.baseAddress!, big, pd.baseAddress!, small, scale: -0.5)
                    }
                }
                let want = base + naiveSumToShape(src, small) * -0.5
                expectClose(dst, want, atol: 1e-5, rtol: 1e-5, "\(big) → \(small)")
            }
        }
    }

    @Test("sumToShape and broadcastAdd are adjoint: ⟨broadcast(a), b⟩ = ⟨a, sumToShape(b)⟩")
    func adjointness() {
        for (i, (sa, sb)) in broadcastPairs.enumerated() {
            guard let big = naiveBroadcastShape(sa, sb), Tensor.count(of: big) > 0 else { continue }
            for small in [sa, sb] {
                let a = randn(small, seed: UInt64(300 + i)), b = randn(big, seed: UInt64(400 + i))
                var ba = Tensor.zeros(big)
                a.data.withUnsafeBufferPointer { pa in
                    ba.data.withUnsafeMutableBufferPointer { pb in
                        Kernels.broadcastAdd(pa.baseAddress!, small, pb.baseAddress!, big)
                    }
                }
                // broadcastAdd into zeros is the broadcast itself.
                expectBitwiseEqual(ba, naiveBinary(.add, a, Tensor.zeros(big)), "broadcast \(small) → \(big)")
                var sb2 = Tensor.zeros(small)
                b.data.withUnsafeBufferPointer { pb in
                    sb2.data.withUnsafeMutableBufferPointer { ps in
                        Kernels.sumToShape(pb.baseAddress!, big, ps.baseAddress!, small)
                    }
                }
                let lhs = dot(ba, b), rhs = dot(a, sb2)
                #expect(Swift.abs(lhs - rhs) <= 1e-5 * (1 + Swift.abs(lhs)), "\(small) ↔ \(big): \(lhs) vs \(rhs)")
            }
        }
        // broadcastAdd accumulates and scales.
        var dst = Tensor(shape: [2, 3], data: [1, 1, 1, 1, 1, 1])
        let src = Tensor(shape: [3], data: [1, 2, 3])
        src.data.withUnsafeBufferPointer { ps in
            dst.data.withUnsafeMutableBufferPointer { pd in
                Kernels.broadcastAdd(ps.baseAddress!, [3], pd.baseAddress!, [2, 3], scale: 2)
            }
        }
        #expect(dst.data == [3, 5, 7, 3, 5, 7])
    }

    @Test("Tensor.sum(axes:) matches a naive sum",
          arguments: [nil, [], [0], [1], [2], [0, 2], [1, 2], [0, 1, 2]] as [[Int]?])
    func tensorSum(_ axes: [Int]?) {
        let x = randn([2, 3, 4], seed: 11)
        let s = x.sum(axes: axes)
        let ax = axes ?? [0, 1, 2]
        let shape = [0, 1, 2].map { ax.contains($0) ? 1 : x.shape[$0] }
        #expect(s.shape == shape)
        var want = [Double](repeating: 0, count: Tensor.count(of: shape))
        for i in 0..<x.count {
            let idx = multiIndex(i, x.shape)
            var flat = 0
            for d in 0..<3 { flat = flat * shape[d] + (ax.contains(d) ? 0 : idx[d]) }
            want[flat] += Double(x.data[i])
        }
        expectClose(s, Tensor(shape: shape, data: want.map { Float($0) }), atol: 1e-5, rtol: 1e-5)
    }

    @Test func reducedShape() {
        #expect(Kernels.reducedShape([2, 3, 4], axes: [0, 2]) == [1, 3, 1])
        #expect(Kernels.reducedShape([2, 3, 4], axes: []) == [2, 3, 4])
    }
}

@Suite("Softmax kernel")
struct SoftmaxTests {
    func oracle(_ x: Tensor) -> Tensor {
        let n = x.shape.last!
        var out = [Float]()
        for r in 0..<(x.count / n) {
            let row = x.data[(r * n)..<((r + 1) * n)].map(Double.init)
            let m = row.max()!
            let e = row.map { Foundation.exp($0 - m) }
            let s = e.reduce(0, +)
            out += e.map { Float($0 / s) }
        }
        return Tensor(shape: x.shape, data: out)
    }

    @Test("rows sum to 1 and match a Double oracle", arguments: [[1, 1], [3, 5], [4, 17], [2, 3, 8], [7]])
    func matchesOracle(_ shape: [Int]) {
        let x = randn(shape, seed: 21, std: 3)
        let y = x.softmax()
        expectClose(y, oracle(x), atol: 1e-7, rtol: 1e-5)
        let n = shape.last!
        for r in 0..<(x.count / n) {
            let s = y.data[(r * n)..<((r + 1) * n)].reduce(0.0) { $0 + Double($1) }
            #expect(Swift.abs(s - 1) < 1e-6, "row \(r) sums to \(s)")
        }
    }

    @Test("stable for large inputs and invariant to row shifts")
    func stability() {
        let x = randn([3, 6], seed: 22, std: 2)
        let base = x.softmax()
        for shift: Float in [80, 1000, -1000] {
            let y = (x + Tensor(scalar: shift)).softmax()
            #expect(y.data.allSatisfy { $0.isFinite })
            expectClose(y, base, atol: 2e-5, rtol: 1e-3, "shift \(shift)")
        }
        // Huge spreads: one-hot, no NaN.
        let big = Tensor(shape: [2, 3], data: [1e30, 0, -1e30, 88, 89, 90])
        let y = big.softmax()
        #expect(y.data.allSatisfy { $0.isFinite })
        #expect(y.data[0] == 1 && y.data[1] == 0 && y.data[2] == 0)
        expectClose(y, oracle(big), atol: 1e-7, rtol: 1e-5)
    }

    @Test("backward is the softmax Jacobian-vector product (accumulating)")
    func backward() {
        let x = randn([3, 5], seed: 23), dy = randn([3, 5], seed: 24), dx0 = randn([3, 5], seed: 25)
        let y = x.softmax()
        var dx = dx0
        y.data.withUnsafeBufferPointer { py in dy.data.withUnsafeBufferPointer { pg in
            dx.data.withUnsafeMutableBufferPointer { pd in
                Kernels.softmaxBackward(py.baseAddress!, pg.baseAddress!, pd.baseAddress!, rows: 3, n: 5)
            }
        } }
        var want = dx0
        for r in 0..<3 {
            for i in 0..<5 {
                var s = 0.0
                for j in 0..<5 {
                    let yi = Double(y[r, i]), yj = Double(y[r, j])
                    s += (i == j ? yi * (1 - yi) : -yi * yj) * Double(dy[r, j])
                }
                want[r, i] += Float(s)
            }
        }
        expectClose(dx, want, atol: 1e-6, rtol: 1e-5)
    }
}
