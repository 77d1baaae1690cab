import Testing
import ReflowEngine
import ReflowAutograd
@testable import ReflowNN
import ReflowTestSupport

/// Masks as flat 0/1 arrays, for readable expectations.
private func flat(_ m: PruneMasks, _ name: String) -> [Float] { m.masks[name]!.data }

@Suite("Pruning selection")
struct PruningSelectionTests {
    // Two 2×2 tensors: global ranks all 8 weights together, layer-wise each tensor alone.
    let weights: [String: Tensor] = [
        "a.weight": Tensor(shape: [2, 2], data: [1.0, -0.5, 0.3, 2.0]),
        "b.weight": Tensor(shape: [2, 2], data: [0.2, 0.05, -1.0, 0.15]),
    ]
    let names = ["a.weight", "b.weight"]

    @Test("global magnitude removes the smallest |w| over all tensors; layer-wise the smallest of each")
    func globalAgainstLayerwise() {
        var rng = Random(seed: 1)
        var g = PruneMasks(dense: names, weights: weights)
        let rg = Pruning.prune(&g, names: names, weights: weights, fraction: 0.25, scope: .global, rng: &rng)
        // 25 % of 8 = 2: |0.05| and |0.15|, both in b.
        #expect(flat(g, "a.weight") == [1, 1, 1, 1] && flat(g, "b.weight") == [1, 0, 1, 0])
        #expect(rg == PruneStepReport(base: 2, ap: 0))
        var l = PruneMasks(dense: names, weights: weights)
        Pruning.prune(&l, names: names, weights: weights, fraction: 0.25, scope: .layerwise, rng: &rng)
        // 25 % of each 4 = 1: |0.3| in a, |0.05| in b.
        #expect(flat(l, "a.weight") == [1, 1, 0, 1] && flat(l, "b.weight") == [1, 0, 1, 1])
        // A second step ranks survivors only: 50 % of the 6 left = 3 → 0.2, 0.3, 0.5 go.
        Pruning.prune(&g, names: names, weights: weights, fraction: 0.5, scope: .global, rng: &rng)
        #expect(flat(g, "a.weight") == [1, 0, 0, 1] && flat(g, "b.weight") == [0, 0, 1, 0])
        #expect(g.aliveCount == 3 && abs(g.sparsity - 5.0 / 8.0) < 1e-12 && g.sparsity("b.weight") == 0.75)
        // Masked weights are zero after applying, others unchanged.
        let w = g.applied(to: weights)
        #expect(w["a.weight"]!.data == [1.0, 0, 0, 2.0] && w["b.weight"]!.data == [0, 0, -1.0, 0])
    }

    @Test("random selection removes exactly the count, only survivors, and is seeded")
    func random() {
        var r1 = Random(seed: 7), r2 = Random(seed: 7)
        var a = PruneMasks(dense: names, weights: weights), b = a
        Pruning.prune(&a, names: names, weights: weights, fraction: 0.5, criterion: .random, rng: &r1)
        Pruning.prune(&b, names: names, weights: weights, fraction: 0.5, criterion: .random, rng: &r2)
        #expect(a == b && a.aliveCount == 4)
        Pruning.prune(&a, names: names, weights: weights, fraction: 0.5, criterion: .random, rng: &r1)
        #expect(a.aliveCount == 2)
        for n in names { for j in 0..<4 where flat(a, n)[j] == 1 { #expect(flat(b, n)[j] == 1, "only survivors are pruned") } }
    }

    // w_T and w_0 of one tensor: movement |w_T − w_0| = [0.1, 0.05, 0.2, 0.5, 0.05, 0.3].
    let wT = ["w": Tensor(shape: [6], data: [-0.1, -0.5, 0.3, -0.2, 0.05, -0.4])]
    let w0 = ["w": Tensor(shape: [6], data: [0.0, -0.45, 0.1, 0.3, 0.0, -0.1])]

    func ap(_ selection: APSelection, fraction: Double, apFraction: Double) -> (PruneMasks, PruneStepReport) {
        var m = PruneMasks(dense: ["w"], weights: wT)
        var rng = Random(seed: 3)
        let r = Pruning.prune(&m, names: ["w"], weights: wT, start: w0, fraction: fraction, apFraction: apFraction,
                              ap: selection, rng: &rng)
        return (m, r)
    }

    @Test("AP removes negative weights with the least movement; the ablations pick by |w|, at random, or positive weights")
    func apSelection() {
        // AP only (no base share): negatives are 0, 1, 3, 5 with movements 0.1, 0.05, 0.5, 0.3 → 1 and 0.
        let (m, r) = ap(.movement, fraction: 2.0 / 6, apFraction: 2.0 / 6)
        #expect(flat(m, "w") == [0, 0, 1, 1, 1, 1] && r == PruneStepReport(base: 0, ap: 2))
        // By |w| among negatives (0.1, 0.5, 0.2, 0.4) → 0 and 3.
        #expect(flat(ap(.magnitude, fraction: 2.0 / 6, apFraction: 2.0 / 6).0, "w") == [0, 1, 1, 0, 1, 1])
        // Positive weights (2, 4) by movement → both.
        #expect(flat(ap(.positive, fraction: 2.0 / 6, apFraction: 2.0 / 6).0, "w") == [1, 1, 0, 1, 0, 1])
        // Random: two of the four negatives, never a positive one.
        let rnd = flat(ap(.random, fraction: 2.0 / 6, apFraction: 2.0 / 6).0, "w")
        #expect(rnd.filter { $0 == 0 }.count == 2 && rnd[2] == 1 && rnd[4] == 1)
        // Base and AP together: half of 6 = 3, one by AP. Magnitude takes |0.05| (4) and |0.1| (0);
        // AP then takes the least-moved surviving negative: 1 (0.05).
        let (both, rb) = ap(.movement, fraction: 0.5, apFraction: 1.0 / 6)
        #expect(flat(both, "w") == [0, 0, 1, 1, 0, 1] && rb == PruneStepReport(base: 2, ap: 1))
    }

    @Test("the cycle schedule reaches the target: 20 % per cycle to 95 % is 14 cycles, the last one shorter")
    func schedule() {
        let f = Pruning.schedule(target: 0.95, rate: 0.2)
        #expect(f.count == 14 && f.dropLast().allSatisfy { $0 == 0.2 } && f.last! < 0.2)
        let remaining = f.reduce(1.0) { $0 * (1 - $1) }
        #expect(abs(remaining - 0.05) < 1e-12)
        #expect(Pruning.schedule(target: 0, rate: 0.2).isEmpty)
        #expect(Pruning.schedule(target: 0.2, rate: 0.2) == [0.2])
    }

    @Test("unit norms, kept units and the row/column selection of structured pruning")
    func units() {
        let w = Tensor(shape: [3, 2], data: [1, -1, 0, 0, 0.5, 0.25])
        #expect(Pruning.unitNorms(w) == [2, 0, 0.75])
        #expect(Pruning.keptUnits(norms: [2, 0, 0.75], fraction: 1.0 / 3) == [0, 2])
        #expect(Pruning.keptUnits(norms: [1, 1], fraction: 0.99) == [1], "at least one unit stays; ties remove the lower index")
        #expect(Pruning.selectOutputs(w, [0, 2]).data == [1, -1, 0.5, 0.25])
        // A [2, 6] consumer of 3 units in blocks of 2 (a flattened 3-channel map of 2 positions).
        let next = Tensor(shape: [2, 6], data: (0..<12).map(Float.init))
        let cut = Pruning.selectInputs(next, [0, 2], block: 2)
        #expect(cut.shape == [2, 4] && cut.data == [0, 1, 4, 5, 6, 7, 10, 11])
        // A conv consumer [O, C, 1, 2]: input channels 0 and 2.
        let conv = Tensor(shape: [1, 3, 1, 2], data: [0, 1, 2, 3, 4, 5])
        #expect(Pruning.selectInputs(conv, [0, 2]).shape == [1, 2, 1, 2] && Pruning.selectInputs(conv, [0, 2]).data == [0, 1, 4, 5])
    }
}

@Suite("Masked optimizers")
struct MaskedOptimizerTests {
    @Test("pruned weights and their optimizer state stay exactly zero through steps (Adam with L2, AdamW, SGD with momentum)",
          arguments: [OptimizerKind.adam(weightDecay: 0.1), .adamW(weightDecay: 0.1), .sgd(momentum: 0.9, weightDecay: 0.05)])
    func masksHold(kind: OptimizerKind) throws {
        var rng = Random(seed: 11)
        let layer = Linear(4, 3, rng: &rng)
        let opt = Optimizer(kind, module: layer)
        let x = randn([5, 4], seed: 2)
        func step() {
            let g = Graph()
            let y = layer(g.constant(x))
            g.backward(g.sum(g.square(y)))
            opt.step(learningRate: 0.05)
            opt.zeroGrad()
        }
        step()   // moments are nonzero everywhere before the mask arrives
        var mask = Tensor.ones([3, 4])
        for j in [0, 5, 6, 11] { mask.data[j] = 0 }
        let before = layer.weight.value
        try opt.setMasks(PruneMasks(["weight": mask]))
        for _ in 0..<5 { step() }
        let state = Dictionary(uniqueKeysWithValues: opt.stateTensors().map { ($0.name, $0.tensor) })
        for j in 0..<12 {
            if mask.data[j] == 0 {
                #expect(layer.weight.value.data[j] == 0, "weight \(j)")
                for (name, t) in state where name.hasPrefix("weight.") { #expect(t.data[j] == 0, "\(name)[\(j)]") }
            } else {
                #expect(layer.weight.value.data[j] != before.data[j], "unmasked weight \(j) still trains")
            }
        }
        #expect(layer.bias!.value.data.allSatisfy { $0 != 0 }, "the bias has no mask")
        // Bad masks are refused and change nothing.
        #expect(throws: StateDictError.self) { try opt.setMasks(PruneMasks(["nope": mask])) }
        #expect(throws: StateDictError.self) { try opt.setMasks(PruneMasks(["weight": Tensor.ones([4, 3])])) }
        #expect(opt.masks[0] != nil)
    }

    @Test("EMA averages keep masked entries at zero")
    func ema() {
        var rng = Random(seed: 1)
        let layer = Linear(2, 2, rng: &rng)
        let e = EMA(decay: 0.9, module: layer)
        let m = Tensor(shape: [2, 2], data: [1, 0, 0, 1])
        e.apply(PruneMasks(["weight": m]))
        #expect(e.shadow["weight"]!.data[1] == 0 && e.shadow["weight"]!.data[2] == 0 && e.shadow["weight"]!.data[0] != 0)
    }
}

@Suite("Dead-neuron probe")
struct ActivationProbeTests {
    @Test("the dead-neuron rate of a hand-built layer equals the hand count; zero counts as dead; units never positive are dead units")
    func handCount() {
        let g = Graph(gradEnabled: false)
        let probe = ActivationProbe()
        g.probe = probe
        // [3 samples, 4 units]; ≤ 0 entries: row 0: 2 (incl. an exact 0), row 1: 3, row 2: 2 → 7 of 12.
        let x = g.constant(Tensor(shape: [3, 4], data: [1, 0, -2, 3,
                                                         -1, -1, 0.5, -3,
                                                         2, -0.1, 4, -5]))
        let y = g.activation(.relu, x, name: "l")
        #expect(y.value.data == [1, 0, 0, 3, 0, 0, 0.5, 0, 2, 0, 4, 0])
        let l = probe.layers["l"]!
        #expect(l.nonPositive == 7 && l.total == 12 && abs(l.rate - 7.0 / 12.0) < 1e-12)
        #expect(l.deadUnits == 1, "unit 1 is ≤ 0 for every sample")
        // A conv map [1, 2, 1, 3]: channel 0 has one positive position, channel 1 none.
        _ = g.activation(.relu, g.constant(Tensor(shape: [1, 2, 1, 3], data: [-1, 2, -3, -1, 0, -2])), name: "c")
        let c = probe.layers["c"]!
        #expect(c.nonPositive == 5 && c.total == 6 && c.everPositive == [true, false])
        #expect(abs(probe.overallRate - 12.0 / 18.0) < 1e-12 && probe.order == ["l", "c"])
        // Other activations are not counted.
        _ = g.activation(.silu, x, name: "s")
        #expect(probe.layers["s"] == nil)
        // Merging adds counts and ORs the units.
        let other = ActivationProbe()
        other.record("l", Tensor(shape: [1, 4], data: [-1, 1, -1, -1]))
        probe.merge(other)
        #expect(probe.layers["l"]!.nonPositive == 10 && probe.layers["l"]!.total == 16 && probe.layers["l"]!.deadUnits == 0)
    }
}
