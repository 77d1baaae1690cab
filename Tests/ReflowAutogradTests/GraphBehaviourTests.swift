import Foundation
import Testing
import ReflowAutograd
import ReflowEngine
import ReflowTestSupport

/// A 3-layer MLP-like computation with an MSE loss; returns the loss variable.
func recordMLPStep(_ g: Graph, _ ps: [Parameter], x: Tensor, target: Tensor) -> Var {
    var h = g.input(x, requiresGrad: false)
    for l in 0..<3 {
        h = g.linear(h, weight: g.parameter(ps[2 * l]), bias: g.parameter(ps[2 * l + 1]))
        if l < 2 { h = g.silu(h) }
    }
    let d = g.binary(.sub, h, g.constant(target))
    return g.mean(g.square(d))
}

func mlpParameters(seed: UInt64) -> [Parameter] {
    let sizes = [3, 16, 16, 2]
    var ps = [Parameter]()
    for l in 0..<3 {
        ps.append(Parameter(randn([sizes[l + 1], sizes[l]], seed: seed + UInt64(2 * l), std: 0.4)))
        ps.append(Parameter(randn([sizes[l + 1]], seed: seed + UInt64(2 * l + 1), std: 0.1)))
    }
    return ps
}

@Suite("Graph behaviour")
struct GraphBehaviourTests {
    @Test("a Var used twice accumulates both contributions (x·x, and x in two branches)")
    func varUsedTwice() {
        let x = randn([2, 3], seed: 1)
        let g = Graph()
        let v = g.input(x)
        g.backward(g.sum(g.binary(.mul, v, v)))
        expectClose(g.grad(v), x * 2, atol: 1e-6, rtol: 1e-6)

        let h = Graph()
        let w = h.input(x)
        h.backward(h.sum(h.binary(.add, h.unary(.sin, w), h.affine(w, scale: 3))))
        expectClose(h.grad(w), Tensor(shape: x.shape, data: x.data.map { Foundation.cos($0) + 3 }), atol: 1e-6, rtol: 1e-6)
        #expect(gradCheck(inputs: [x]) { g, v in g.binary(.mul, v[0], g.binary(.mul, v[0], v[0])) }.passed)
    }

    @Test("a parameter used twice gets one node, and its gradient sums both uses")
    func parameterUsedTwice() {
        let p = Parameter(randn([3], seed: 2))
        let g = Graph()
        let a = g.parameter(p)
        let before = g.nodeCount
        let b = g.parameter(p)
        #expect(a.id == b.id)
        #expect(g.nodeCount == before)
        // L = Σ p² + Σ p  →  dL/dp = 2p + 1
        g.backward(g.binary(.add, g.sum(g.binary(.mul, a, b)), g.sum(b)))
        expectClose(p.grad, Tensor(shape: [3], data: p.value.data.map { 2 * $0 + 1 }), atol: 1e-6, rtol: 1e-6)
        #expect(bitwiseEqual(g.grad(a), p.grad))
        // Distinct parameters get distinct nodes.
        let q = Parameter(randn([3], seed: 3))
        #expect(g.parameter(q).id != a.id)
    }

    @Test("parameter gradients accumulate across backward passes until zeroGrad")
    func parameterGradientsAccumulate() {
        let p = Parameter(randn([4], seed: 4))
        let g = Graph()
        func pass() {
            g.reset()
            g.backward(g.sum(g.square(g.parameter(p))))
        }
        pass()
        let once = p.grad
        expectClose(once, p.value * 2, atol: 1e-6, rtol: 1e-6)
        pass()
        expectClose(p.grad, once * 2, atol: 1e-6, rtol: 1e-6)
        p.zeroGrad()
        #expect(p.grad.data.allSatisfy { $0 == 0 })
        pass()
        #expect(bitwiseEqual(p.grad, once))
    }

    @Test("a second backward pass on the same graph: grad(_:) reports that pass, parameters add once more")
    func backwardTwice() {
        let p = Parameter(randn([3], seed: 21))
        let x = randn([3], seed: 22)
        let g = Graph()
        let vx = g.input(x), vp = g.parameter(p)
        let h = g.binary(.mul, vx, vp)                      // shared intermediate
        let l1 = g.sum(g.affine(h, scale: 2))               // dl1/dp = 2x, dl1/dx = 2p
        let l2 = g.sum(g.square(h))                         // dl2/dp = 2h·x, dl2/dx = 2h·p
        g.backward(l1)
        expectClose(g.grad(vx), p.value * 2, atol: 1e-6, rtol: 1e-6)
        expectClose(p.grad, x * 2, atol: 1e-6, rtol: 1e-6)
        g.backward(l2)
        // "The gradient of the last backward(_:)": only l2 for the input …
        let hv = x * p.value
        expectClose(g.grad(vx), hv * p.value * 2, atol: 1e-6, rtol: 1e-6)
        // … while the parameter holds the sum over both passes (dl1 + dl2, not 2·dl1 + dl2).
        expectClose(p.grad, x * 2 + hv * x * 2, atol: 1e-6, rtol: 1e-6)
        // The same root twice: the parameter gets exactly twice the single-pass gradient.
        p.zeroGrad()
        let h2 = Graph()
        let l = h2.sum(h2.affine(h2.binary(.mul, h2.input(x), h2.parameter(p)), scale: 2))
        h2.backward(l)
        h2.backward(l)
        expectClose(p.grad, x * 4, atol: 1e-6, rtol: 1e-6)
    }

    @Test("no-grad mode computes the same values and records no gradient")
    func noGrad() {
        let ps = mlpParameters(seed: 10)
        let x = randn([4, 3], seed: 5), t = randn([4, 2], seed: 6)
        let withGrad = Graph()
        let lossA = recordMLPStep(withGrad, ps, x: x, target: t)
        let off = Graph(gradEnabled: false)
        #expect(!off.isGradEnabled)
        let lossB = recordMLPStep(off, ps, x: x, target: t)
        #expect(lossA.value.data[0].bitPattern == lossB.value.data[0].bitPattern)
        // Nothing recorded for backward: even with gradients re-enabled, backward from a no-grad
        // root reaches no parameter and no input.
        let xin = off.input(x)
        let y = off.sum(off.square(xin))
        off.isGradEnabled = true
        off.backward(lossB)
        off.backward(y)
        for p in ps { #expect(p.grad.data.allSatisfy { $0 == 0 }) }
        #expect(off.grad(xin).data.allSatisfy { $0 == 0 })
    }

    @Test("inputs without requiresGrad and constants receive no gradient")
    func constantsGetNoGradient() {
        let g = Graph()
        let a = g.input(randn([3], seed: 7)), b = g.input(randn([3], seed: 8), requiresGrad: false)
        let c = g.constant(randn([3], seed: 9))
        g.backward(g.sum(g.binary(.mul, g.binary(.mul, a, b), c)))
        #expect(g.grad(b).data.allSatisfy { $0 == 0 } && g.grad(c).data.allSatisfy { $0 == 0 })
        expectClose(g.grad(a), b.value * c.value, atol: 1e-6, rtol: 1e-6)
        // A root that does not depend on anything differentiable: backward is a no-op.
        let h = Graph()
        let k = h.constant(randn([2], seed: 10))
        h.backward(h.sum(k))
        #expect(h.grad(k).data == [0, 0])
    }

    @Test("constant(shape:fill:) and mutate write pooled storage")
    func pooledConstants() {
        let g = Graph()
        let v = g.constant(shape: [2, 3]) { buf in for i in buf.indices { buf[i] = Float(i) } }
        #expect(v.value.data == [0, 1, 2, 3, 4, 5])
        g.mutate(v) { buf in buf[0] = 42 }
        #expect(v.value.data[0] == 42)
        #expect(g.sum(v).scalar == 57)
        var scratch = g.takeScratch(6)
        #expect(scratch.count == 6)
        g.releaseScratch(&scratch)
        #expect(scratch.isEmpty)
    }

    @Test("reset() and the same graph again gives bit-identical values and gradients")
    func resetRepeatable() {
        let ps = mlpParameters(seed: 20)
        let x = randn([8, 3], seed: 11), t = randn([8, 2], seed: 12)
        let g = Graph()
        var losses = [Float](), grads = [[Tensor]]()
        for _ in 0..<3 {
            g.reset()
            for p in ps { p.zeroGrad() }
            let loss = recordMLPStep(g, ps, x: x, target: t)
            g.backward(loss)
            losses.append(loss.scalar)
            grads.append(ps.map(\.grad))
        }
        #expect(losses.allSatisfy { $0.bitPattern == losses[0].bitPattern })
        for k in 1..<3 { for (a, b) in zip(grads[k], grads[0]) { expectBitwiseEqual(a, b) } }
        // And a brand-new graph agrees too.
        for p in ps { p.zeroGrad() }
        let fresh = Graph()
        let loss = recordMLPStep(fresh, ps, x: x, target: t)
        fresh.backward(loss)
        #expect(loss.scalar.bitPattern == losses[0].bitPattern)
        for (p, gr) in zip(ps, grads[0]) { expectBitwiseEqual(p.grad, gr) }
        #expect(g.nodeCount > 0)
        g.reset()
        #expect(g.nodeCount == 0)
    }

    @Test("first writes overwrite: stale pooled buffers and stale parameter gradients never leak in")
    func staleBuffersDoNotLeak() {
        let ps = mlpParameters(seed: 40)
        let x = randn([8, 3], seed: 15), t = randn([8, 2], seed: 16)
        // Reference on a fresh graph.
        for p in ps { p.zeroGrad() }
        let clean = Graph()
        let cleanLoss = recordMLPStep(clean, ps, x: x, target: t)
        clean.backward(cleanLoss)
        let want = ps.map(\.grad)
        // Poison: NaN in the pool for every size the step uses (all ≤ 300 elements), and NaN in
        // the parameters' gradient storage behind a zeroGrad().
        let g = Graph()
        for n in 1...300 {
            var bufs = (0..<4).map { _ in g.takeScratch(n) }
            for i in bufs.indices { bufs[i].withUnsafeMutableBufferPointer { $0.update(repeating: .nan) } }
            for i in bufs.indices { g.releaseScratch(&bufs[i]) }
        }
        for p in ps {
            p.grad = Tensor(shape: p.shape, repeating: .nan)
            p.zeroGrad()
        }
        let loss = recordMLPStep(g, ps, x: x, target: t)
        g.backward(loss)
        #expect(loss.scalar.bitPattern == cleanLoss.scalar.bitPattern)
        for (p, w) in zip(ps, want) { expectBitwiseEqual(p.grad, w) }
        // Intermediate gradients too (an input that needs a gradient).
        let h = Graph()
        for n in 1...64 {
            var b = h.takeScratch(n)
            b.withUnsafeMutableBufferPointer { $0.update(repeating: .nan) }
            h.releaseScratch(&b)
        }
        let xin = h.input(x)
        h.backward(h.sum(h.binary(.add, h.concat([h.silu(xin), h.reshape(xin, [8, 3])], axis: 1),
                                  h.softmax(h.concat([xin, xin], axis: 1)))))
        #expect(h.grad(xin).data.allSatisfy { $0.isFinite })
        #expect(gradCheck(inputs: [x]) { g, v in
            g.binary(.add, g.concat([g.silu(v[0]), g.reshape(v[0], [8, 3])], axis: 1), g.softmax(g.concat([v[0], v[0]], axis: 1)))
        }.passed)
    }

    @Test("a threads: 2 graph (split GEMMs, parallel elementwise) gives the single-threaded gradients")
    func threadedGraph() {
        // 256×160 = 40,960 elements (≥ the 32k elementwise threshold); the GEMMs are ≥ 2 MFLOP.
        let x = randn([256, 160], seed: 17, std: 0.5)
        let w = randn([64, 160], seed: 18, std: 0.1), w2 = randn([160, 64], seed: 19, std: 0.1)
        func run(_ threads: Int) -> (Float, [Tensor]) {
            let g = Graph(threads: threads)
            let vx = g.input(x), vw = g.input(w), vw2 = g.input(w2)
            let h = g.tanh(g.linear(g.silu(vx), weight: vw, bias: nil))          // [256, 64]
            let y = g.matmul(h, vw2, transB: true)                                // [256, 160]
            let loss = g.mean(g.square(g.binary(.sub, y, vx)))
            g.backward(loss)
            return (loss.scalar, [g.grad(vx), g.grad(vw), g.grad(vw2)])
        }
        let (l1, g1) = run(1), (l2, g2) = run(2)
        #expect(Swift.abs(l1 - l2) <= 1e-6 * Swift.abs(l1))
        for (a, b) in zip(g1, g2) { expectClose(b, a, atol: 1e-8, rtol: 1e-4) }
        let r = gradCheck(inputs: [x, w], options: GradCheckOptions(maxChecksPerTensor: 12, threads: 2)) { g, v in
            g.tanh(g.linear(g.silu(v[0]), weight: v[1], bias: nil))
        }
        #expect(r.passed, "\(r)")
    }

    @Test("buffers are reused: 2,000 recorded steps allocate nothing after step 2, results identical")
    func memoryStaysFlat() {
        let ps = mlpParameters(seed: 30)
        let x = randn([8, 3], seed: 13), t = randn([8, 2], seed: 14)
        let g = Graph()
        var afterStep2 = -1
        var firstLoss: Float = 0, firstGrads = [Tensor]()
        for step in 1...2000 {
            g.reset()
            for p in ps { p.zeroGrad() }
            let loss = recordMLPStep(g, ps, x: x, target: t)
            g.backward(loss)
            if step == 1 {
                firstLoss = loss.scalar
                firstGrads = ps.map(\.grad)
            } else if step == 2 || step == 2000 {
                #expect(loss.scalar.bitPattern == firstLoss.bitPattern, "step \(step)")
                for (p, gr) in zip(ps, firstGrads) { expectBitwiseEqual(p.grad, gr, "step \(step)") }
            }
            if step == 2 { afterStep2 = g.freshAllocations }
        }
        #expect(afterStep2 > 0)
        #expect(g.freshAllocations == afterStep2, "allocations grew from \(afterStep2) to \(g.freshAllocations)")
    }
}

@Suite("Frozen parameters")
struct FrozenParameterTests {
    @Test("a frozen parameter gets no gradient; the input's gradient through it is unchanged")
    func frozen() throws {
        let w = Parameter(randn([3, 4], seed: 1)), b = Parameter(randn([3], seed: 2))
        let x = randn([5, 4], seed: 3)
        func inputGradient(frozen: Bool) -> (Tensor, Bool) {
            w.isFrozen = frozen
            b.isFrozen = frozen
            let g = Graph(threads: 1, accumulatesIntoParameters: false)
            let xi = g.input(x)
            g.backward(g.sum(g.square(g.linear(xi, weight: g.parameter(w), bias: g.parameter(b)))))
            let hasWeightGrad = g.withParameterGradient(w) { $0 != nil }
            return (g.grad(xi), hasWeightGrad)
        }
        let (live, liveW) = inputGradient(frozen: false)
        let (cold, coldW) = inputGradient(frozen: true)
        #expect(liveW && !coldW)
        expectBitwiseEqual(cold, live)
        // A branch of only frozen weights and constants records no gradient at all.
        w.isFrozen = true
        let g = Graph(threads: 1, accumulatesIntoParameters: false)
        let out = g.linear(g.input(x, requiresGrad: false), weight: g.parameter(w), bias: nil)
        g.backward(g.sum(out))
        #expect(g.withParameterGradient(w) { $0 == nil })
        w.isFrozen = false
    }
}
