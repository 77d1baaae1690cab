import Foundation
import Testing
import ReflowAutograd
import ReflowEngine
import ReflowTestSupport

/// Inputs on which each unary op is differentiable and well conditioned.
func unaryInput(_ op: UnaryOp, seed: UInt64) -> Tensor {
    switch op {
    case .log, .sqrt: return randu([3, 5], seed: seed, low: 0.5, high: 2)
    default: return randn([3, 5], seed: seed)
    }
}

/// A tensor bounded away from zero (denominators).
func awayFromZero(_ shape: [Int], seed: UInt64) -> Tensor {
    let u = randu(shape, seed: seed, low: 0.5, high: 2)
    let s = randn(shape, seed: seed &+ 1000)
    return Tensor(shape: shape, data: zip(u.data, s.data).map { $1 < 0 ? -$0 : $0 })
}

func expectPasses(_ r: GradCheckReport, _ what: @autoclosure () -> String = "",
                  sourceLocation: SourceLocation = #_sourceLocation) {
    #expect(r.passed, "\(what()) \(r)", sourceLocation: sourceLocation)
}

@Suite("Finite-difference checks of every primitive")
struct PrimitiveGradientTests {
    @Test("unary", arguments: UnaryOp.allCases)
    func unary(_ op: UnaryOp) {
        let x = unaryInput(op, seed: 1)
        let kinks: [Float] = (op == .relu || op == .abs) ? [0] : []
        expectPasses(gradCheck(inputs: [x], options: GradCheckOptions(kinks: kinks)) { g, v in g.unary(op, v[0]) }, "\(op)")
        // Composite sugar names map to the same primitive.
        switch op {
        case .relu, .silu, .tanh, .sigmoid, .gelu, .exp, .log, .sqrt, .square:
            let a = Graph(), xa = a.input(x)
            let viaName: Var
            switch op {
            case .relu: viaName = a.relu(xa)
            case .silu: viaName = a.silu(xa)
            case .tanh: viaName = a.tanh(xa)
            case .sigmoid: viaName = a.sigmoid(xa)
            case .gelu: viaName = a.gelu(xa)
            case .exp: viaName = a.exp(xa)
            case .log: viaName = a.log(xa)
            case .sqrt: viaName = a.sqrt(xa)
            default: viaName = a.square(xa)
            }
            #expect(bitwiseEqual(viaName.value, a.unary(op, xa).value))
        default: break
        }
    }

    static let broadcastPairs: [([Int], [Int])] = [
        ([3, 4], [3, 4]), ([3, 4], [4]), ([4], [3, 4]), ([2, 1, 3], [4, 1]), ([4, 1], [2, 1, 3]),
        ([3, 1], [1, 4]), ([2, 3], []), ([], [2, 3]), ([2, 3, 4], [2, 1, 4]), ([2, 3, 1], [3, 5]),
    ]

    @Test("binary with broadcasting in both directions", arguments: BinaryOp.allCases)
    func binary(_ op: BinaryOp) {
        for (i, (sa, sb)) in Self.broadcastPairs.enumerated() {
            let a = randn(sa, seed: UInt64(10 + i))
            let b = op == .div ? awayFromZero(sb, seed: UInt64(20 + i)) : randn(sb, seed: UInt64(20 + i))
            expectPasses(gradCheck(inputs: [a, b]) { g, v in g.binary(op, v[0], v[1]) }, "\(sa) \(op) \(sb)")
        }
    }

    @Test func operatorsSugar() {
        let a = randn([2, 3], seed: 1), b = awayFromZero([2, 3], seed: 2)
        expectPasses(gradCheck(inputs: [a, b]) { _, v in (v[0] + v[1]) * v[0] - v[1] / v[0].graph.affine(v[1], scale: 1, shift: 0) })
        expectPasses(gradCheck(inputs: [a]) { _, v in -(2 * v[0] * 3 + 1.5) - 0.25 })
    }

    @Test("affine", arguments: [(Float(-1.5), Float(0.3)), (2, 0), (0, 1)])
    func affine(_ p: (Float, Float)) {
        let x = randn([4, 3], seed: 3)
        expectPasses(gradCheck(inputs: [x]) { g, v in g.affine(v[0], scale: p.0, shift: p.1) }, "\(p)")
        let g = Graph()
        let out = g.affine(g.input(x), scale: p.0, shift: p.1).value
        for i in 0..<x.count { #expect(out.data[i] == x.data[i] * p.0 + p.1) }
    }

    @Test("matmul, all transposes, small and BLAS-sized",
          arguments: [(false, false), (false, true), (true, false), (true, true)])
    func matmul(_ t: (Bool, Bool)) {
        for (m, k, n) in [(2, 3, 4), (10, 12, 9), (1, 9, 1)] {
            let a = randn(t.0 ? [k, m] : [m, k], seed: UInt64(m + k))
            let b = randn(t.1 ? [n, k] : [k, n], seed: UInt64(k + n + 100))
            expectPasses(gradCheck(inputs: [a, b]) { g, v in g.matmul(v[0], v[1], transA: t.0, transB: t.1) },
                         "m\(m) k\(k) n\(n) \(t)")
        }
    }

    @Test("linear with and without bias", arguments: [true, false])
    func linear(_ withBias: Bool) {
        for (b, i, o) in [(4, 6, 5), (8, 12, 10), (3, 2, 1)] {
            let x = randn([b, i], seed: 1), w = randn([o, i], seed: 2), bias = randn([o], seed: 3)
            let r = gradCheck(inputs: withBias ? [x, w, bias] : [x, w]) { g, v in
                g.linear(v[0], weight: v[1], bias: withBias ? v[2] : nil)
            }
            expectPasses(r, "\(b)x\(i)→\(o) bias \(withBias)")
            // Forward equals x·Wᵀ + b.
            let g = Graph()
            let y = g.linear(g.input(x), weight: g.input(w), bias: withBias ? g.input(bias) : nil).value
            var want = BLAS.matmul(x, w, transB: true)
            if withBias { want = want + bias }
            expectClose(y, want, atol: 1e-5, rtol: 1e-5)
        }
    }

    @Test("sum over axes, with and without keepDims",
          arguments: [nil, [0], [1], [2], [0, 2], [-1], [0, 1, 2]] as [[Int]?], [false, true])
    func sum(_ axes: [Int]?, _ keepDims: Bool) {
        let x = randn([2, 3, 4], seed: 4)
        let g = Graph()
        let s = g.sum(g.input(x), axes: axes, keepDims: keepDims)
        let ax = (axes ?? [0, 1, 2]).map { $0 < 0 ? $0 + 3 : $0 }
        let expectedShape: [Int] = keepDims ? (0..<3).map { ax.contains($0) ? 1 : x.shape[$0] }
            : (axes == nil ? [] : (0..<3).filter { !ax.contains($0) }.map { x.shape[$0] })
        #expect(s.shape == expectedShape)
        #expect(s.value.data == x.sum(axes: ax).data)
        expectPasses(gradCheck(inputs: [x]) { g, v in g.sum(v[0], axes: axes, keepDims: keepDims) }, "\(String(describing: axes)) \(keepDims)")
    }

    @Test func reshape() {
        let x = randn([2, 3, 4], seed: 5)
        expectPasses(gradCheck(inputs: [x]) { g, v in g.unary(.tanh, g.reshape(v[0], [6, 4])) })
        expectPasses(gradCheck(inputs: [x]) { g, v in g.reshape(v[0], [24]) })
        let g = Graph()
        let r = g.reshape(g.input(x), [4, 6])
        #expect(r.shape == [4, 6] && r.value.data == x.data)
    }

    @Test("concat of 3 inputs", arguments: [0, 1, 2, -1])
    func concat(_ axis: Int) {
        let ax = axis < 0 ? axis + 3 : axis
        let shapes: [[Int]] = (1...3).map { w in (0..<3).map { $0 == ax ? w : [2, 3, 2][$0] } }
        let xs = shapes.enumerated().map { randn($0.element, seed: UInt64(30 + $0.offset)) }
        expectPasses(gradCheck(inputs: xs) { g, v in g.concat(v, axis: axis) }, "axis \(axis)")
        // Forward: element placement.
        let g = Graph()
        let c = g.concat(xs.map { g.input($0) }, axis: axis).value
        var expectedShape = [2, 3, 2]
        expectedShape[ax] = 6
        #expect(c.shape == expectedShape)
        for i0 in 0..<c.shape[0] {
            for i1 in 0..<c.shape[1] {
                for i2 in 0..<c.shape[2] {
                    var idx = [i0, i1, i2]
                    var part = 0
                    while idx[ax] >= xs[part].shape[ax] { idx[ax] -= xs[part].shape[ax]; part += 1 }
                    #expect(c[i0, i1, i2] == xs[part][idx[0], idx[1], idx[2]])
                }
            }
        }
    }

    @Test func softmax() {
        let x = randn([3, 5], seed: 6, std: 2)
        expectPasses(gradCheck(inputs: [x]) { g, v in g.softmax(v[0]) })
        let x3 = randn([2, 2, 4], seed: 7)
        expectPasses(gradCheck(inputs: [x3]) { g, v in g.softmax(v[0]) })
    }
}

@Suite("Finite-difference checks of composites")
struct CompositeGradientTests {
    @Test("mean", arguments: [nil, [0], [1], [0, 1], [-1]] as [[Int]?])
    func mean(_ axes: [Int]?) {
        let x = randn([3, 4], seed: 8)
        expectPasses(gradCheck(inputs: [x]) { g, v in g.mean(v[0], axes: axes) })
        expectPasses(gradCheck(inputs: [x]) { g, v in g.mean(v[0], axes: axes, keepDims: true) })
        let g = Graph()
        let m = g.mean(g.input(x), axes: axes)
        let ax = (axes ?? [0, 1]).map { $0 < 0 ? $0 + 2 : $0 }
        let n = ax.reduce(1) { $0 * x.shape[$1] }
        expectClose(m.value.reshaped([m.value.count]), (x.sum(axes: ax) * (1 / Float(n))).reshaped([m.value.count]),
                    atol: 1e-6, rtol: 1e-6)
    }

    @Test("variance", arguments: [[1], [0], [0, 2], [2]])
    func variance(_ axes: [Int]) {
        let x = randn([3, 4, 5], seed: 9)
        expectPasses(gradCheck(inputs: [x]) { g, v in g.variance(v[0], axes: axes) }, "\(axes)")
        // Forward: biased variance.
        let g = Graph()
        let v = g.variance(g.input(x), axes: axes).value
        let mu = x.sum(axes: axes) * (1 / Float(axes.reduce(1) { $0 * x.shape[$1] }))
        let d = x - mu
        let want = (d * d).sum(axes: axes) * (1 / Float(axes.reduce(1) { $0 * x.shape[$1] }))
        expectClose(v, want, atol: 1e-6, rtol: 1e-5)
    }

    @Test("normalize", arguments: [[1], [0, 2], [2]])
    func normalize(_ axes: [Int]) {
        let x = randn([2, 4, 5], seed: 10, std: 1.5, mean: 0.3)
        expectPasses(gradCheck(inputs: [x]) { g, v in g.normalize(v[0], axes: axes, eps: 1e-5) }, "\(axes)")
    }

    @Test func logSoftmax() {
        let x = randn([3, 6], seed: 11)
        expectPasses(gradCheck(inputs: [x]) { g, v in g.logSoftmax(v[0]) })
        let g = Graph()
        let y = g.logSoftmax(g.input(x)).value
        for r in 0..<3 {
            let row = (0..<6).map { Double(x[r, $0]) }
            let lse = Foundation.log(row.map { Foundation.exp($0) }.reduce(0, +))
            for j in 0..<6 { #expect(Swift.abs(Double(y[r, j]) - (row[j] - lse)) < 1e-5) }
        }
    }

    @Test("a small MLP end to end, including parameters")
    func mlpLike() {
        let w1 = Parameter(randn([6, 3], seed: 12, std: 0.5)), b1 = Parameter(randn([6], seed: 13, std: 0.1))
        let w2 = Parameter(randn([2, 6], seed: 14, std: 0.5))
        let x = randn([4, 3], seed: 15)
        let r = gradCheck(inputs: [x], parameters: [w1, b1, w2]) { g, v in
            let h = g.silu(g.linear(v[0], weight: g.parameter(w1), bias: g.parameter(b1)))
            return g.linear(h, weight: g.parameter(w2), bias: nil)
        }
        expectPasses(r)
        // The check leaves parameters as they were, with zero gradients.
        #expect(w1.value == randn([6, 3], seed: 12, std: 0.5))
        #expect(w1.grad.data.allSatisfy { $0 == 0 })
    }
}

@Suite("gradCheck itself")
struct GradCheckSelfTests {
    @Test("detects a wrong gradient")
    func detectsWrongGradient() {
        // f(x) = x ⊙ c with c a constant equal to x: the graph says df/dx = x, the truth is 2x.
        let x = randn([5], seed: 16)
        let r = gradCheck(inputs: [x]) { g, v in g.binary(.mul, v[0], g.constant(v[0].value)) }
        #expect(!r.passed)
        #expect(r.failures.count >= 3)
    }

    @Test("skips kinks and caps the number of checked elements")
    func kinksAndCap() {
        var x = randn([100], seed: 17)
        x.data[3] = 0
        x.data[50] = 0.001
        let r = gradCheck(inputs: [x], options: GradCheckOptions(maxChecksPerTensor: 100, kinks: [0])) { g, v in g.relu(v[0]) }
        #expect(r.passed, "\(r)")
        #expect(r.skipped >= 2 && r.checked + r.skipped == 100)
        let capped = gradCheck(inputs: [x], options: GradCheckOptions(maxChecksPerTensor: 10, kinks: [0])) { g, v in g.relu(v[0]) }
        #expect(capped.checked + capped.skipped == 10)
    }
}

@Suite("The linear-map op")
struct LinearMapOpTests {
    @Test("y = A·x by code, backward by the given adjoint (a random matrix and its transpose); a wrong adjoint fails the check")
    func linearMap() {
        let a = randn([12, 12], seed: 4)
        func map(_ transposed: Bool) -> LinearMap {
            LinearMap { x, y, n in
                for i in 0..<n {
                    var s: Float = 0
                    for j in 0..<n { s += (transposed ? a.data[j * n + i] : a.data[i * n + j]) * x[j] }
                    y[i] = s
                }
            }
        }
        let x = randn([3, 4], seed: 5)
        let g = Graph(threads: 1, gradEnabled: false)
        let y = g.linearMap(g.input(x), forward: map(false), adjoint: map(true)).value
        #expect(y.shape == [3, 4])
        for i in 0..<12 {
            let want = (0..<12).reduce(Float(0)) { $0 + a.data[i * 12 + $1] * x.data[$1] }
            #expect(abs(y.data[i] - want) < 1e-5)
        }
        #expect(gradCheck(inputs: [x]) { g, v in g.linearMap(v[0], forward: map(false), adjoint: map(true)) }.passed)
        #expect(!gradCheck(inputs: [x]) { g, v in g.linearMap(v[0], forward: map(false), adjoint: map(false)) }.passed)
    }
}
