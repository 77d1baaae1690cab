import Foundation
import Testing
import ReflowAutograd
import ReflowEngine
import ReflowNN
import ReflowTestSupport

/// Runs `layer` on `x` in a fresh no-grad graph.
func forward(_ layer: some Layer, _ x: Tensor) -> Tensor {
    let g = Graph(gradEnabled: false)
    return layer(g.input(x)).value
}

@Suite("Layers")
struct LayerTests {
    @Test func linearForwardInitAndGradients() {
        var rng = Random(seed: 1)
        let lin = Linear(4, 3, rng: &rng)
        #expect(lin.weight.shape == [3, 4] && lin.bias?.shape == [3])
        let bound = 1 / Float(4).squareRoot()
        #expect(lin.weight.value.data.allSatisfy { Swift.abs($0) <= bound })
        #expect(lin.bias!.value.data.allSatisfy { Swift.abs($0) <= bound })
        #expect(lin.namedParameters().map(\.name) == ["weight", "bias"])
        let x = randn([5, 4], seed: 2)
        expectClose(forward(lin, x), BLAS.matmul(x, lin.weight.value, transB: true) + lin.bias!.value, atol: 1e-6, rtol: 1e-5)
        let r = gradCheck(inputs: [x], parameters: [lin.weight, lin.bias!]) { _, v in lin(v[0]) }
        #expect(r.passed, "\(r)")
        let noBias = Linear(4, 2, bias: false, rng: &rng)
        #expect(noBias.bias == nil && noBias.namedParameters().map(\.name) == ["weight"])
        let r2 = gradCheck(inputs: [x], parameters: [noBias.weight]) { _, v in noBias(v[0]) }
        #expect(r2.passed, "\(r2)")
    }

    @Test("MLP gradients for every activation", arguments: Activation.allCases)
    func mlpGradients(_ act: Activation) {
        var rng = Random(seed: 3)
        let mlp = MLP(sizes: [3, 8, 8, 2], activation: act, rng: &rng)
        let x = randn([4, 3], seed: 4)
        // relu: a smaller step so no pre-activation is crossed (kinks are inside the net).
        let opts = GradCheckOptions(eps: act == .relu ? 1e-3 : 1e-2)
        let r = gradCheck(inputs: [x], parameters: mlp.parameters, options: opts) { _, v in mlp(v[0]) }
        #expect(r.passed, "\(act): \(r)")
    }

    @Test func mlpLayoutAndNames() {
        var rng = Random(seed: 5)
        let mlp = MLP(sizes: [3, 16, 8, 2], rng: &rng)
        #expect(mlp.activation == .silu)
        let named = mlp.namedParameters()
        #expect(named.map(\.name) == ["layers.0.weight", "layers.0.bias", "layers.1.weight", "layers.1.bias",
                                      "layers.2.weight", "layers.2.bias"])
        #expect(named.map(\.parameter.shape) == [[16, 3], [16], [8, 16], [8], [2, 8], [2]])
        #expect(mlp.parameterCount == 16 * 3 + 16 + 8 * 16 + 8 + 2 * 8 + 2)
        // Forward: Linear → silu → Linear → silu → Linear (no activation at the end).
        let x = randn([5, 3], seed: 6)
        var h = x
        for (i, l) in mlp.layers.enumerated() {
            h = BLAS.matmul(h, l.weight.value, transB: true) + l.bias!.value
            if i < 2 { h = Tensor(shape: h.shape, data: h.data.map { $0 / (1 + Foundation.exp(-$0)) }) }
        }
        expectClose(forward(mlp, x), h, atol: 1e-5, rtol: 1e-4)
    }

    @Test func sinusoidalTimeEmbedding() {
        let emb = SinusoidalTimeEmbedding(dimension: 8)
        #expect(emb.namedParameters().isEmpty)
        let t = Tensor(shape: [4], data: [0, 0.25, 0.5, 1])
        let g = Graph()
        let y = emb(g.input(t)).value
        #expect(y.shape == [4, 8])
        for b in 0..<4 {
            for i in 0..<4 {
                let w = Foundation.pow(10_000.0, -Double(i) / 4) * 1000
                let a = Double(t.data[b]) * w
                #expect(Swift.abs(Double(y[b, i]) - Foundation.cos(a)) < 2e-4, "cos b\(b) i\(i)")
                #expect(Swift.abs(Double(y[b, 4 + i]) - Foundation.sin(a)) < 2e-4, "sin b\(b) i\(i)")
            }
        }
        // [B, 1] input works too.
        let y2 = emb(g.input(t.reshaped([4, 1]))).value
        #expect(bitwiseEqual(y2, y))
        // Gradient w.r.t. t, with a scale that keeps finite differences meaningful.
        let small = SinusoidalTimeEmbedding(dimension: 6, scale: 2, maxPeriod: 100)
        let r = gradCheck(inputs: [randu([5], seed: 7)], options: GradCheckOptions(eps: 1e-3)) { _, v in small(v[0]) }
        #expect(r.passed, "\(r)")
    }

    @Test func layerNormForwardAndStatistics() {
        let ln = LayerNorm(6)
        #expect(ln.namedParameters().map(\.name) == ["weight", "bias"])
        let x = randn([4, 6], seed: 8, std: 3, mean: 2)
        // Default affine: each row has mean 0 and (biased) variance 1 up to eps.
        let y = forward(ln, x)
        for r in 0..<4 {
            let row = (0..<6).map { Double(y[r, $0]) }
            let mean = row.reduce(0, +) / 6
            let variance = row.map { ($0 - mean) * ($0 - mean) }.reduce(0, +) / 6
            #expect(Swift.abs(mean) < 1e-6, "row \(r) mean \(mean)")
            #expect(Swift.abs(variance - 1) < 1e-4, "row \(r) variance \(variance)")
        }
        // Non-default affine vs a Double oracle.
        ln.weight.value = randn([6], seed: 9)
        ln.bias.value = randn([6], seed: 10)
        let y2 = forward(ln, x)
        var want = [Float]()
        for r in 0..<4 {
            let row = (0..<6).map { Double(x[r, $0]) }
            let mean = row.reduce(0, +) / 6
            let variance = row.map { ($0 - mean) * ($0 - mean) }.reduce(0, +) / 6
            for j in 0..<6 {
                want.append(Float((row[j] - mean) / (variance + 1e-5).squareRoot() * Double(ln.weight.value.data[j])
                                  + Double(ln.bias.value.data[j])))
            }
        }
        expectClose(y2, Tensor(shape: [4, 6], data: want), atol: 1e-5, rtol: 1e-5)
        let r = gradCheck(inputs: [x], parameters: [ln.weight, ln.bias]) { _, v in ln(v[0]) }
        #expect(r.passed, "\(r)")
        // Rank 3: normalises the last axis only.
        let x3 = randn([2, 3, 6], seed: 11)
        expectClose(forward(ln, x3).reshaped([6, 6]), forward(ln, x3.reshaped([6, 6])), atol: 0, rtol: 0)
    }

    @Test func groupNorm() {
        let gn = GroupNorm(groups: 2, channels: 4)
        gn.weight.value = randn([4], seed: 12)
        gn.bias.value = randn([4], seed: 13)
        let x = randn([2, 4, 3, 3], seed: 14, std: 2, mean: 1)
        let y = forward(gn, x)
        #expect(y.shape == [2, 4, 3, 3])
        // Oracle: statistics over (2 channels × 3 × 3) per sample and group.
        var want = Tensor.zeros([2, 4, 3, 3])
        for b in 0..<2 {
            for grp in 0..<2 {
                var vals = [Double]()
                for c in (2 * grp)..<(2 * grp + 2) { for i in 0..<3 { for j in 0..<3 { vals.append(Double(x[b, c, i, j])) } } }
                let mean = vals.reduce(0, +) / 18
                let variance = vals.map { ($0 - mean) * ($0 - mean) }.reduce(0, +) / 18
                for c in (2 * grp)..<(2 * grp + 2) {
                    for i in 0..<3 {
                        for j in 0..<3 {
                            want[b, c, i, j] = Float((Double(x[b, c, i, j]) - mean) / (variance + 1e-5).squareRoot()
                                                     * Double(gn.weight.value.data[c]) + Double(gn.bias.value.data[c]))
                        }
                    }
                }
            }
        }
        expectClose(y, want, atol: 1e-5, rtol: 1e-5)
        let r = gradCheck(inputs: [x], parameters: [gn.weight, gn.bias],
                          options: GradCheckOptions(maxChecksPerTensor: 72)) { _, v in gn(v[0]) }
        #expect(r.passed, "\(r)")
        // One group per channel equals per-channel normalisation (InstanceNorm) — groups matter.
        let inst = GroupNorm(groups: 4, channels: 4)
        let yi = forward(inst, x)
        #expect(!bitwiseEqual(yi, forward(GroupNorm(groups: 2, channels: 4), x)))
    }
}

@Suite("Losses")
struct LossTests {
    let pred = Tensor(shape: [3, 2], data: [1, 2, 3, 4, 5, 6])
    let target = Tensor(shape: [3, 2], data: [1.5, 1, 3, 2, 7, 6.5])

    func evaluate(_ loss: Loss, _ p: Tensor, _ t: Tensor) -> Float {
        let g = Graph()
        return loss(g.input(p), g.input(t)).scalar
    }

    @Test func mse() {
        // d = [-0.5, 1, 0, 2, -2, -0.5] → Σd² = 0.25 + 1 + 0 + 4 + 4 + 0.25 = 9.5, mean over 6.
        #expect(Swift.abs(evaluate(.mse, pred, target) - 9.5 / 6) < 1e-6)
        let r = gradCheck(inputs: [randn([4, 3], seed: 1), randn([4, 3], seed: 2)]) { g, v in Loss.mse(v[0], v[1]) }
        #expect(r.passed, "\(r)")
    }

    @Test func pseudoHuber() {
        let c: Float = 0.5
        // Per sample Σd²: 1.25, 4, 4.25 → √(s + c²) − c, averaged.
        let want = ([1.25, 4, 4.25] as [Double]).map { ($0 + 0.25).squareRoot() - 0.5 }.reduce(0, +) / 3
        #expect(Swift.abs(Double(evaluate(.pseudoHuber(c: c), pred, target)) - want) < 1e-6)
        let r = gradCheck(inputs: [randn([4, 3], seed: 3), randn([4, 3], seed: 4)]) { g, v in Loss.pseudoHuber(c: 0.1)(v[0], v[1]) }
        #expect(r.passed, "\(r)")
        // Rank 3 inputs flatten all non-batch dims; rank 1 treats each element as a sample.
        let p3 = randn([2, 2, 3], seed: 5), t3 = randn([2, 2, 3], seed: 6)
        let flat = evaluate(.pseudoHuber(c: c), p3.reshaped([2, 6]), t3.reshaped([2, 6]))
        #expect(evaluate(.pseudoHuber(c: c), p3, t3) == flat)
        let p1 = Tensor(shape: [2], data: [1, 2]), t1 = Tensor(shape: [2], data: [0, 0])
        let h1: Double = (1.25 as Double).squareRoot() - 0.5, h2: Double = (4.25 as Double).squareRoot() - 0.5
        let want1 = (h1 + h2) / 2
        #expect(Swift.abs(Double(evaluate(.pseudoHuber(c: c), p1, t1)) - want1) < 1e-6)
    }

    @Test("rfpp's pseudo-Huber: c = 0.00054·d (or ·√d), divided by d; value and gradient by hand")
    func scaledPseudoHuber() throws {
        // Per sample Σd²: 1.25, 4, 4.25 over d = 2 features.
        for (scaling, c) in [(HuberScaling.d, 0.00054 * 2.0), (.sqrtD, 0.00054 * (2.0).squareRoot())] {
            let want = ([1.25, 4, 4.25] as [Double]).map { (($0 + c * c).squareRoot() - c) / 2 }.reduce(0, +) / 3
            #expect(Swift.abs(Double(evaluate(.scaledPseudoHuber(scaling: scaling), pred, target)) - want) < 1e-6)
        }
        // Gradient by hand: ∂/∂pred_j of (√(‖δ‖² + c²) − c)/(d·B) = δ_j / (d·B·√(‖δ‖² + c²)).
        let p = Tensor(shape: [1, 4], data: [1, -2, 0.5, 0]), t = Tensor(shape: [1, 4], data: [0, 0, 0, 0])
        let g = Graph(threads: 1)
        let vp = g.input(p), vt = g.input(t, requiresGrad: false)
        g.backward(Loss.scaledPseudoHuber(scaling: .d)(vp, vt))
        let c: Float = 0.00054 * 4, norm = (1 + 4 + 0.25 + c * c).squareRoot()
        let grad = g.grad(vp).data
        for j in 0..<4 { #expect(Swift.abs(grad[j] - p.data[j] / (4 * norm)) < 1e-6) }
        let r = gradCheck(inputs: [randn([4, 3], seed: 3), randn([4, 3], seed: 4)]) { g, v in Loss.scaledPseudoHuber(scaling: .sqrtD)(v[0], v[1]) }
        #expect(r.passed, "\(r)")
        // Per-sample values average to the loss.
        let g2 = Graph(threads: 1, gradEnabled: false)
        let per = Loss.scaledPseudoHuber(scaling: .d).perSample(g2.input(pred), g2.input(target)).value.data
        #expect(Swift.abs(per.reduce(0, +) / 3 - evaluate(.scaledPseudoHuber(scaling: .d), pred, target)) < 1e-7)
        // Wire form: scaling instead of c; both at once is refused.
        #expect(try JSONDecoder().decode(Loss.self, from: Data(#"{"kind": "pseudoHuber", "scaling": "sqrtD"}"#.utf8)) == .scaledPseudoHuber(scaling: .sqrtD))
        #expect(throws: DecodingError.self) { try JSONDecoder().decode(Loss.self, from: Data(#"{"kind": "pseudoHuber", "scaling": "d", "c": 1}"#.utf8)) }
        let back = try JSONDecoder().decode(Loss.self, from: try JSONEncoder().encode(Loss.scaledPseudoHuber(scaling: .d)))
        #expect(back == .scaledPseudoHuber(scaling: .d))
    }

    @Test func validation() {
        #expect(Loss.mse.validationError() == nil)
        #expect(Loss.pseudoHuber(c: 0.03).validationError() == nil)
        #expect(Loss.pseudoHuber(c: 0).validationError() != nil)
        #expect(Loss.pseudoHuber(c: -1).validationError() != nil)
        #expect(Loss.pseudoHuber(c: .nan).validationError() != nil)
        #expect(Loss.pseudoHuber(c: .infinity).validationError() != nil)
    }
}
