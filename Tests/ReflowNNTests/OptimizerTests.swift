import Foundation
import Testing
import ReflowAutograd
import ReflowEngine
import ReflowNN
import ReflowTestSupport

/// Hand-written PyTorch update rules in Double (torch.optim.SGD / Adam / AdamW, dampening 0,
/// amsgrad off, maximize off).
struct ReferenceOptimizer {
    let kind: OptimizerKind
    var p: [Double]
    var buf: [Double]? = nil
    var m: [Double], v: [Double]
    var t = 0

    init(_ kind: OptimizerKind, _ p: [Double]) {
        self.kind = kind
        self.p = p
        m = [Double](repeating: 0, count: p.count)
        v = m
    }

    mutating func step(_ g: [Double], lr: Double) {
        t += 1
        switch kind {
        case .sgd(let mu, let nesterov, let wd):
            var d = zip(g, p).map { $0 + Double(wd) * $1 }
            if mu != 0 {
                if let b = buf { buf = zip(b, d).map { Double(mu) * $0 + $1 } } else { buf = d }
                d = nesterov ? zip(d, buf!).map { $0 + Double(mu) * $1 } : buf!
            }
            p = zip(p, d).map { $0 - lr * $1 }
        case .adam(let b1, let b2, let eps, let wd), .adamW(let b1, let b2, let eps, let wd):
            var gg = g
            if case .adamW = kind {
                p = p.map { $0 * (1 - lr * Double(wd)) }
            } else {
                gg = zip(g, p).map { $0 + Double(wd) * $1 }
            }
            let (b1, b2, eps) = (Double(b1), Double(b2), Double(eps))
            m = zip(m, gg).map { b1 * $0 + (1 - b1) * $1 }
            v = zip(v, gg).map { b2 * $0 + (1 - b2) * $1 * $1 }
            let bc1 = 1 - Foundation.pow(b1, Double(t)), bc2 = 1 - Foundation.pow(b2, Double(t))
            for i in p.indices {
                let denom = v[i].squareRoot() / bc2.squareRoot() + eps
                p[i] -= lr / bc1 * m[i] / denom
            }
        }
    }
}

let fixedGradients: [[Double]] = [[0.1, -0.3, 0.2], [-0.2, 0.4, 0.05], [0.3, 0.1, -0.4]]
let initialWeights: [Double] = [1.0, -2.0, 0.5]

@Suite("Optimizers vs hand-computed PyTorch updates")
struct OptimizerTests {
    static let kinds: [(String, OptimizerKind, Float)] = [
        ("SGD", .sgd(), 0.1),
        ("SGD momentum", .sgd(momentum: 0.9), 0.1),
        ("SGD nesterov", .sgd(momentum: 0.9, nesterov: true), 0.1),
        ("SGD weight decay", .sgd(weightDecay: 0.1), 0.1),
        ("SGD momentum + weight decay", .sgd(momentum: 0.5, weightDecay: 0.1), 0.1),
        ("Adam", .adam(), 0.05),
        ("Adam large eps (ε outside √)", .adam(eps: 1e-2), 0.05),
        ("Adam β", .adam(beta1: 0.5, beta2: 0.9), 0.05),
        ("Adam L2 weight decay", .adam(weightDecay: 0.1), 0.05),
        ("AdamW", .adamW(weightDecay: 0.1), 0.05),
        ("AdamW default decay", .adamW(), 0.05),
    ]

    @Test("3 steps on a 3-element parameter", arguments: kinds)
    func threeSteps(_ c: (String, OptimizerKind, Float)) {
        let (name, kind, lr) = c
        let p = Parameter(Tensor(shape: [3], data: initialWeights.map { Float($0) }))
        let opt = Optimizer(kind, parameters: [("w", p)])
        var ref = ReferenceOptimizer(kind, initialWeights)
        for (t, g) in fixedGradients.enumerated() {
            p.grad = Tensor(shape: [3], data: g.map { Float($0) })
            opt.step(learningRate: lr)
            ref.step(g, lr: Double(lr))
            #expect(opt.step == t + 1)
            for i in 0..<3 {
                #expect(Swift.abs(Double(p.value.data[i]) - ref.p[i]) <= 2e-6 * max(1, Swift.abs(ref.p[i])),
                        "\(name) step \(t + 1) [\(i)]: \(p.value.data[i]) vs \(ref.p[i])")
            }
        }
        // The optimizer moved the weights (the check is not vacuous).
        #expect(zip(p.value.data, initialWeights).contains { Double($0) != $1 })
    }

    @Test("vectorised and scalar paths agree (11 elements: 8 lanes + tail)", arguments: [OptimizerKind.adam(weightDecay: 0.01), .adamW(), .sgd(momentum: 0.9, nesterov: true)])
    func longParameter(_ kind: OptimizerKind) {
        let w0 = randn([11], seed: 1)
        let p = Parameter(w0)
        let opt = Optimizer(kind, parameters: [("w", p)])
        var ref = ReferenceOptimizer(kind, w0.data.map(Double.init))
        for s in 0..<3 {
            let g = randn([11], seed: UInt64(10 + s))
            p.grad = g
            opt.step(learningRate: 0.01)
            ref.step(g.data.map(Double.init), lr: 0.01)
        }
        for i in 0..<11 {
            #expect(Swift.abs(Double(p.value.data[i]) - ref.p[i]) <= 2e-6 * max(1, Swift.abs(ref.p[i])), "[\(i)]")
        }
        // Element 9 (tail) behaves exactly like element 1 (lane) on identical data.
        let q = Parameter(Tensor(shape: [10], data: [Float](repeating: 0.7, count: 10)))
        let o2 = Optimizer(kind, parameters: [("q", q)])
        q.grad = Tensor(shape: [10], data: [Float](repeating: -0.3, count: 10))
        o2.step(learningRate: 0.01)
        #expect(Set(q.value.data.map(\.bitPattern)).count == 1)
    }

    @Test func adamFirstStepIsSignLike() {
        // With bias correction the first Adam step is lr·g/(|g| + ε) ≈ lr·sign(g).
        let p = Parameter(Tensor(shape: [3], data: [0, 0, 0]))
        let opt = Optimizer(.adam(), parameters: [("w", p)])
        p.grad = Tensor(shape: [3], data: [1e-3, -5, 0.2])
        opt.step(learningRate: 0.1)
        for (w, want) in zip(p.value.data, [Float(-0.1), 0.1, -0.1]) { #expect(Swift.abs(w - want) < 1e-5) }
    }

    @Test func zeroGradAndModule() {
        var rng = Random(seed: 2)
        let mlp = MLP(sizes: [2, 3, 1], rng: &rng)
        let opt = Optimizer(.sgd(), module: mlp)
        #expect(opt.named.map(\.name) == mlp.namedParameters().map(\.name))
        for p in mlp.parameters { p.grad = Tensor(shape: p.shape, repeating: 1) }
        opt.zeroGrad()
        #expect(mlp.parameters.allSatisfy { $0.grad.data.allSatisfy { $0 == 0 } })
        for p in mlp.parameters { p.grad = Tensor(shape: p.shape, repeating: 1) }
        mlp.zeroGrad()
        #expect(mlp.parameters.allSatisfy { $0.grad.data.allSatisfy { $0 == 0 } })
    }
}

@Suite("Optimizer state")
struct OptimizerStateTests {
    func makeModel() -> MLP {
        var rng = Random(seed: 3)
        return MLP(sizes: [3, 5, 2], rng: &rng)
    }

    func setGradients(_ m: MLP, seed: UInt64) {
        for (i, p) in m.parameters.enumerated() { p.grad = randn(p.shape, seed: seed &+ UInt64(i)) }
    }

    @Test("round trip through stateTensors / load continues identically",
          arguments: [OptimizerKind.adam(), .adamW(weightDecay: 0.05), .sgd(momentum: 0.9)])
    func roundTrip(_ kind: OptimizerKind) throws {
        let a = makeModel(), b = makeModel()
        let optA = Optimizer(kind, module: a)
        for s in 0..<3 { setGradients(a, seed: UInt64(100 * s)); optA.step(learningRate: 0.01) }
        let saved = optA.stateTensors()
        let slots: [String] = { if case .sgd = kind { return ["momentum_buffer"] } else { return ["exp_avg", "exp_avg_sq"] } }()
        #expect(saved.map(\.name) == a.namedParameters().flatMap { n in slots.map { n.name + "." + $0 } })
        try b.load(stateDict: a.stateDict())
        let optB = Optimizer(kind, module: b)
        try optB.load(stateTensors: Dictionary(uniqueKeysWithValues: saved.map { ($0.name, $0.tensor) }), step: optA.step)
        #expect(optB.step == 3)
        for s in 3..<5 {
            setGradients(a, seed: UInt64(100 * s)); optA.step(learningRate: 0.01)
            setGradients(b, seed: UInt64(100 * s)); optB.step(learningRate: 0.01)
        }
        for (pa, pb) in zip(a.parameters, b.parameters) { expectBitwiseEqual(pa.value, pb.value) }
        for (sa, sb) in zip(optA.stateTensors(), optB.stateTensors()) { expectBitwiseEqual(sa.tensor, sb.tensor, sa.name) }
    }

    @Test func sgdWithoutMomentumHasNoState() throws {
        let opt = Optimizer(.sgd(), module: makeModel())
        #expect(opt.stateTensors().isEmpty)
        try opt.load(stateTensors: [:], step: 7)
        #expect(opt.step == 7)
    }

    @Test("failed loads throw and change nothing")
    func failedLoads() throws {
        let m = makeModel()
        let opt = Optimizer(.adam(), module: m)
        setGradients(m, seed: 1)
        opt.step(learningRate: 0.01)
        let before = opt.stateTensors()
        var good = Dictionary(uniqueKeysWithValues: before.map { ($0.name, Tensor(shape: $0.tensor.shape, repeating: 9)) })

        var missing = good
        missing.removeValue(forKey: "layers.1.bias.exp_avg_sq")
        #expect(throws: OptimizerStateError.self) { try opt.load(stateTensors: missing, step: 5) }
        var wrongShape = good
        wrongShape["layers.0.weight.exp_avg"] = Tensor.zeros([3, 5])
        #expect(throws: OptimizerStateError.self) { try opt.load(stateTensors: wrongShape, step: 5) }
        #expect(throws: OptimizerStateError.self) { try opt.load(stateTensors: good, step: -1) }

        #expect(opt.step == 1)
        for (x, y) in zip(opt.stateTensors(), before) { expectBitwiseEqual(x.tensor, y.tensor, x.name) }
        // Errors name the offending tensor.
        do { try opt.load(stateTensors: missing, step: 5) } catch { #expect("\(error)".contains("layers.1.bias.exp_avg_sq")) }
        // Extra tensors are ignored; a complete dict loads.
        good["unrelated"] = Tensor.zeros([1])
        try opt.load(stateTensors: good, step: 5)
        #expect(opt.step == 5)
        #expect(opt.stateTensors().allSatisfy { $0.tensor.data.allSatisfy { $0 == 9 } })
    }
}

@Suite("Gradient clipping, schedules, EMA")
struct TrainingUtilityTests {
    @Test func clipGradNormScalesToMaxNorm() {
        let a = Parameter(Tensor.zeros([2])), b = Parameter(Tensor.zeros([1]))
        func setGrads() {
            a.grad = Tensor(shape: [2], data: [3, 4])
            b.grad = Tensor(shape: [1], data: [12])
        }
        setGrads()
        let norm = clipGradNorm([a, b], maxNorm: 6.5)
        #expect(Swift.abs(norm - 13) < 1e-6)
        let f: Float = 6.5 / (13 + 1e-6)
        expectClose(a.grad, Tensor(shape: [2], data: [3 * f, 4 * f]), atol: 0, rtol: 1e-6)
        expectClose(b.grad, Tensor(shape: [1], data: [12 * f]), atol: 0, rtol: 1e-6)
        let after = (a.grad.data + b.grad.data).reduce(0.0) { $0 + Double($1) * Double($1) }.squareRoot()
        #expect(Swift.abs(after - 6.5) < 1e-5)
        // Below the limit: untouched, bit for bit.
        setGrads()
        #expect(Swift.abs(clipGradNorm([a, b], maxNorm: 20) - 13) < 1e-6)
        #expect(a.grad.data == [3, 4] && b.grad.data == [12])
        // Zero gradients stay zero (no division by zero).
        a.grad = Tensor.zeros([2]); b.grad = Tensor.zeros([1])
        #expect(clipGradNorm([a, b], maxNorm: 1) == 0)
        #expect(a.grad.data == [0, 0])
    }

    @Test func schedules() {
        let base: Float = 0.1
        for s in [0, 1, 100, 10_000] { #expect(LRSchedule.constant.learningRate(base: base, step: s) == base) }
        let warm = LRSchedule.linearWarmup(warmupSteps: 4)
        #expect((0..<6).map { warm.learningRate(base: base, step: $0) } == [0.025, 0.05, 0.075, 0.1, 0.1, 0.1].map { Float($0) })
        #expect(LRSchedule.linearWarmup(warmupSteps: 0).learningRate(base: base, step: 0) == base)

        let cos = LRSchedule.cosine(warmupSteps: 2, totalSteps: 12, minFactor: 0.1)
        #expect(cos.learningRate(base: base, step: 0) == base / 2)
        #expect(cos.learningRate(base: base, step: 1) == base)
        #expect(cos.learningRate(base: base, step: 2) == base)                                 // decay starts at 1
        #expect(Swift.abs(cos.learningRate(base: base, step: 7) - base * 0.55) < 1e-7)         // midpoint
        #expect(Swift.abs(cos.learningRate(base: base, step: 12) - base * 0.1) < 1e-8)         // end: minFactor
        #expect(Swift.abs(cos.learningRate(base: base, step: 1000) - base * 0.1) < 1e-8)       // stays there
        let lrs = (2...12).map { cos.learningRate(base: base, step: $0) }
        #expect(zip(lrs, lrs.dropFirst()).allSatisfy { $0 > $1 }, "cosine decay must be strictly decreasing")
        let plain = LRSchedule.cosine(warmupSteps: 0, totalSteps: 4)
        #expect(plain.learningRate(base: 1, step: 0) == 1)
        #expect(Swift.abs(plain.learningRate(base: 1, step: 2) - 0.5) < 1e-7)
        #expect(Swift.abs(plain.learningRate(base: 1, step: 4)) < 1e-7)

        #expect(LRSchedule.constant.validationError() == nil)
        #expect(LRSchedule.linearWarmup(warmupSteps: -1).validationError() != nil)
        #expect(LRSchedule.cosine(warmupSteps: 5, totalSteps: 5).validationError() != nil)
        #expect(LRSchedule.cosine(warmupSteps: 0, totalSteps: 5, minFactor: 1.5).validationError() != nil)
        #expect(cos.validationError() == nil)
    }

    @Test func emaUpdateFormula() throws {
        var rng = Random(seed: 4)
        let lin = Linear(2, 3, rng: &rng)
        let w0 = lin.weight.value, b0 = lin.bias!.value
        let ema = EMA(decay: 0.9, module: lin)
        #expect(bitwiseEqual(ema.shadow["weight"]!, w0))
        let w1 = randn([3, 2], seed: 5), w2 = randn([3, 2], seed: 6)
        lin.weight.value = w1
        ema.update(from: lin)
        lin.weight.value = w2
        ema.update(from: lin)
        var want = [Float]()
        for i in 0..<6 {
            let s1 = 0.9 * Double(w0.data[i]) + 0.1 * Double(w1.data[i])
            want.append(Float(0.9 * s1 + 0.1 * Double(w2.data[i])))
        }
        expectClose(ema.shadow["weight"]!, Tensor(shape: [3, 2], data: want), atol: 1e-6, rtol: 1e-6)
        expectClose(ema.shadow["bias"]!, b0, atol: 1e-6, rtol: 1e-6)   // unchanged weights stay put
        // The live weights are untouched by the EMA.
        #expect(bitwiseEqual(lin.weight.value, w2))

        // load: names and shapes must match; a failed load changes nothing.
        let before = ema.shadow
        #expect(throws: StateDictError.missing("ema.bias")) { try ema.load(["weight": w1]) }
        #expect(throws: StateDictError.shapeMismatch(name: "ema.weight", expected: [3, 2], found: [2, 3])) {
            try ema.load(["weight": Tensor.zeros([2, 3]), "bias": b0])
        }
        #expect(ema.shadow == before)
        try ema.load(["weight": w1, "bias": b0])
        #expect(bitwiseEqual(ema.shadow["weight"]!, w1))
    }
}

@Suite("Optimizer split updates")
struct OptimizerSplitTests {
    static func model(_ seed: UInt64) -> MLP {
        var rng = Random(seed: seed)
        let m = MLP(sizes: [3, 16, 5], activation: .silu, rng: &rng)
        for p in m.parameters { p.grad = rng.normal(p.shape) }
        return m
    }

    @Test("beginStep + per-parameter updates in any order equal step(), bit for bit",
          arguments: [OptimizerKind.adam(weightDecay: 0.01), .adamW(), .sgd(momentum: 0.9, nesterov: true)])
    func splitEqualsWhole(kind: OptimizerKind) {
        let a = Self.model(3), b = Self.model(3)
        let oa = Optimizer(kind, module: a), ob = Optimizer(kind, module: b)
        for _ in 0..<3 {
            oa.step(learningRate: 0.01)
            ob.beginStep()
            for i in ob.named.indices.reversed() { ob.update(parameterAt: i, learningRate: 0.01) }
        }
        for (x, y) in zip(a.parameters, b.parameters) { #expect(x.value.data == y.value.data) }
    }

    @Test("gradScale s equals stepping on s·grad (clipping folded into the update)")
    func gradScale() {
        let a = Self.model(4), b = Self.model(4)
        for p in b.parameters { p.grad = p.grad * 0.5 }
        let oa = Optimizer(.adam(), module: a), ob = Optimizer(.adam(), module: b)
        oa.beginStep()
        for i in oa.named.indices { oa.update(parameterAt: i, learningRate: 0.01, gradScale: 0.5) }
        ob.step(learningRate: 0.01)
        for (x, y) in zip(a.parameters, b.parameters) { #expect(x.value.data == y.value.data) }
    }

    @Test("parallelBins covers every parameter once and balances sizes")
    func bins() {
        let m = Self.model(5)
        let o = Optimizer(.adam(), module: m)
        let bins = o.parallelBins(threads: 2)
        #expect(bins.flatMap { $0 }.sorted() == Array(o.named.indices))
        let loads = bins.map { $0.reduce(0) { $0 + o.named[$1].parameter.value.count } }
        #expect(loads.max()! - loads.min()! <= o.named.map { $0.parameter.value.count }.max()!)
    }
}
