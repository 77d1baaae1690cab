import Testing
import ReflowAutograd
import ReflowEngine
import ReflowTestSupport

/// Image layers (issue #9): values against direct Double oracles, gradients against finite
/// differences, and the thread split (forward values do not depend on it).
@Suite("Image ops: conv2d, GroupNorm(+SiLU), up-sampling")
struct ImageOpsTests {
    struct ConvCase: CustomStringConvertible, Sendable {
        var n, c, o, h, w, k, stride, padding: Int
        var dilation = 1
        var description: String { "N\(n) C\(c)→\(o) \(h)×\(w) k\(k) s\(stride) p\(padding) d\(dilation)" }
    }

    static let convCases: [ConvCase] = [
        ConvCase(n: 2, c: 3, o: 4, h: 5, w: 7, k: 3, stride: 1, padding: 1),
        ConvCase(n: 3, c: 2, o: 3, h: 7, w: 6, k: 3, stride: 2, padding: 1),
        ConvCase(n: 2, c: 4, o: 5, h: 5, w: 5, k: 1, stride: 1, padding: 0),   // pointwise fast path
        ConvCase(n: 1, c: 2, o: 2, h: 6, w: 5, k: 3, stride: 2, padding: 0),
        ConvCase(n: 2, c: 1, o: 3, h: 4, w: 4, k: 1, stride: 2, padding: 1),
        ConvCase(n: 2, c: 2, o: 3, h: 7, w: 6, k: 3, stride: 1, padding: 2, dilation: 2),   // the RIM's dilated 3×3
    ]

    @Test("conv2d value matches the direct oracle", arguments: convCases)
    func convValue(_ cs: ConvCase) {
        let x = randn([cs.n, cs.c, cs.h, cs.w], seed: 1), w = randn([cs.o, cs.c, cs.k, cs.k], seed: 2), b = randn([cs.o], seed: 3)
        let s = Conv2DShape(batch: cs.n, inChannels: cs.c, outChannels: cs.o, height: cs.h, width: cs.w,
                            kernelH: cs.k, kernelW: cs.k, stride: cs.stride, padding: cs.padding, dilation: cs.dilation)
        let want = Oracle.conv2d(x: x.data, weight: w.data, bias: b.data, shape: s)
        var outs: [[Float]] = []
        for threads in [1, 2] {
            let g = Graph(threads: threads, gradEnabled: false)
            let y = g.conv2d(g.constant(x), weight: g.constant(w), bias: g.constant(b), stride: cs.stride, padding: cs.padding, dilation: cs.dilation)
            #expect(y.shape == [cs.n, cs.o, s.outHeight, s.outWidth])
            let err = zip(y.value.data, want).map { abs($0 - $1) }.max() ?? 0
            #expect(err < 1e-4, "\(cs) threads \(threads): max err \(err)")
            outs.append(y.value.data)
        }
        #expect(outs[0] == outs[1], "\(cs): the thread split changed the forward values")
    }

    @Test("conv2d gradients (x, weight, bias) by finite differences", arguments: convCases)
    func convGradients(_ cs: ConvCase) {
        let x = randn([cs.n, cs.c, cs.h, cs.w], seed: 4), w = randn([cs.o, cs.c, cs.k, cs.k], seed: 5), b = randn([cs.o], seed: 6)
        for threads in [1, 2] {
            let r = gradCheck(inputs: [x, w, b], options: GradCheckOptions(threads: threads)) { g, v in
                g.conv2d(v[0], weight: v[1], bias: v[2], stride: cs.stride, padding: cs.padding, dilation: cs.dilation)
            }
            #expect(r.passed, "\(cs) threads \(threads): \(r)")
        }
        // Without a bias, and with x as a constant (only the weight gradient flows).
        let r = gradCheck(inputs: [w]) { g, v in
            g.conv2d(g.constant(x), weight: v[0], bias: nil, stride: cs.stride, padding: cs.padding, dilation: cs.dilation)
        }
        #expect(r.passed, "\(cs) weight only: \(r)")
    }

    @Test("conv2d backward matches the oracle's exact gradients")
    func convBackwardOracle() {
        let cs = ConvCase(n: 3, c: 3, o: 4, h: 6, w: 5, k: 3, stride: 2, padding: 1)
        let x = randn([cs.n, cs.c, cs.h, cs.w], seed: 7), w = randn([cs.o, cs.c, 3, 3], seed: 8), b = randn([cs.o], seed: 9)
        let s = Conv2DShape(batch: cs.n, inChannels: cs.c, outChannels: cs.o, height: cs.h, width: cs.w,
                            kernelH: 3, kernelW: 3, stride: 2, padding: 1)
        let dy = randn([cs.n, cs.o, s.outHeight, s.outWidth], seed: 10)
        let want = Oracle.conv2dBackward(x: x.data, weight: w.data, dy: dy.data, shape: s)
        let g = Graph(threads: 2)
        let (vx, vw, vb) = (g.input(x), g.input(w), g.input(b))
        let y = g.conv2d(vx, weight: vw, bias: vb, stride: 2, padding: 1)
        g.backward(g.sum(g.binary(.mul, y, g.constant(dy))))
        for (got, exp, name) in [(g.grad(vx).data, want.dx, "dx"), (g.grad(vw).data, want.dweight, "dw"), (g.grad(vb).data, want.dbias, "db")] {
            let err = zip(got, exp).map { abs($0 - $1) }.max() ?? 0
            #expect(err < 1e-4, "\(name): max err \(err)")
        }
    }

    @Test("GroupNorm value matches the oracle, with and without fused SiLU", arguments: [false, true])
    func groupNormValue(_ silu: Bool) {
        let (n, c, h, w, groups) = (3, 6, 4, 5, 3)
        let x = randn([n, c, h, w], seed: 11).data.map { $0 * 3 + 5 }  // |mean| ≫ std: the variance must not cancel
        let wt = randn([c], seed: 12), bs = randn([c], seed: 13)
        let want = Oracle.groupNorm(x: x, weight: wt.data, bias: bs.data, batch: n, channels: c, spatial: h * w,
                                    groups: groups, eps: 1e-5, silu: silu)
        var outs: [[Float]] = []
        for threads in [1, 2] {
            let g = Graph(threads: threads, gradEnabled: false)
            let y = g.groupNorm(g.constant(Tensor(shape: [n, c, h, w], data: x)), groups: groups,
                                weight: g.constant(wt), bias: g.constant(bs), silu: silu)
            let err = zip(y.value.data, want).map { abs($0 - $1) }.max() ?? 0
            #expect(err < 1e-4, "threads \(threads): max err \(err)")
            outs.append(y.value.data)
        }
        #expect(outs[0] == outs[1])
    }

    @Test("GroupNorm gradients by finite differences", arguments: [false, true])
    func groupNormGradients(_ silu: Bool) {
        let x = randn([2, 4, 3, 5], seed: 14), wt = randn([4], seed: 15), bs = randn([4], seed: 16)
        for threads in [1, 2] {
            let r = gradCheck(inputs: [x, wt, bs], options: GradCheckOptions(eps: 5e-3, threads: threads)) { g, v in
                g.groupNorm(v[0], groups: 2, weight: v[1], bias: v[2], silu: silu)
            }
            #expect(r.passed, "silu \(silu) threads \(threads): \(r)")
        }
        // Gradient flowing twice into x (GroupNorm output added to its input) accumulates.
        let r = gradCheck(inputs: [x, wt, bs]) { g, v in
            g.binary(.add, g.groupNorm(v[0], groups: 4, weight: v[1], bias: v[2], silu: silu), g.square(v[0]))
        }
        #expect(r.passed, "accumulating: \(r)")
    }

    @Test("GroupNorm agrees with the composite LayerNorm-style formula")
    func groupNormComposite() {
        let x = randn([2, 4, 3, 3], seed: 17), wt = randn([4], seed: 18), bs = randn([4], seed: 19)
        let g = Graph(gradEnabled: false)
        let fused = g.groupNorm(g.constant(x), groups: 2, weight: g.constant(wt), bias: g.constant(bs)).value
        let grouped = g.reshape(g.constant(x), [2, 2, 18])
        let n = g.reshape(g.normalize(grouped, axes: [2], eps: 1e-5), [2, 4, 3, 3])
        let comp = g.binary(.add, g.binary(.mul, n, g.reshape(g.constant(wt), [1, 4, 1, 1])), g.reshape(g.constant(bs), [1, 4, 1, 1])).value
        let err = zip(fused.data, comp.data).map { abs($0 - $1) }.max() ?? 0
        #expect(err < 1e-5, "max err \(err)")
    }

    @Test("nearest 2× up-sampling: value and gradient")
    func upsample() {
        let x = randn([2, 3, 3, 4], seed: 20)
        let g = Graph(gradEnabled: false)
        let y = g.upsample2x(g.constant(x)).value
        #expect(y.shape == [2, 3, 6, 8])
        var ok = true
        for p in 0..<6 { for i in 0..<6 { for j in 0..<8 {
            ok = ok && y.data[(p * 6 + i) * 8 + j] == x.data[(p * 3 + i / 2) * 4 + j / 2]
        } } }
        #expect(ok)
        let r = gradCheck(inputs: [x]) { g, v in g.upsample2x(v[0]) }
        #expect(r.passed, "\(r)")
    }
}

@Suite("Average pooling")
struct AvgPoolTests {
    @Test("avgPool2x2 equals the naive 2×2 mean and its gradients pass finite differences")
    func avgPool() {
        let x = randn([2, 3, 4, 6], seed: 21)
        let g = Graph(gradEnabled: false)
        let y = g.avgPool2x2(g.constant(x)).value
        #expect(y.shape == [2, 3, 2, 3])
        for n in 0..<2 { for c in 0..<3 { for i in 0..<2 { for j in 0..<3 {
            func at(_ h: Int, _ w: Int) -> Float { x.data[((n * 3 + c) * 4 + h) * 6 + w] }
            let want = (at(2 * i, 2 * j) + at(2 * i, 2 * j + 1) + at(2 * i + 1, 2 * j) + at(2 * i + 1, 2 * j + 1)) / 4
            #expect(abs(y.data[((n * 3 + c) * 2 + i) * 3 + j] - want) < 1e-6)
        } } } }
        let r = gradCheck(inputs: [x]) { g, v in g.avgPool2x2(v[0]) }
        #expect(r.passed, "\(r)")
    }
}
