import Foundation
import Testing
import ReflowAutograd
import ReflowEngine
import ReflowNN
@testable import ReflowFlow
import ReflowTestSupport

/// Class conditioning, classifier-free guidance, the rfpp sampler and losses (issue #11).
@Suite("Conditioning and guidance")
struct ConditioningTests {
    static let config = VelocityMLPConfig(dimension: 3, width: 16, depth: 2, timeInput: .sinusoidal(features: 8, scale: 10), classes: 4)

    /// v of `field` at (x, t) for rows with `labels`.
    static func velocity(_ field: NetworkVelocityField, _ x: Tensor, t: Float, labels: [Int32]?, guidance: Float?) -> [Float] {
        let n = x.shape[0]
        var v = [Float](repeating: 0, count: x.count)
        field.guidance = guidance
        x.data.withUnsafeBufferPointer { xp in
            v.withUnsafeMutableBufferPointer { vp in
                LabelBuffer.with(labels) { lp in
                    field.labels = lp
                    field.velocity(xp.baseAddress!, count: n, t: t, into: vp.baseAddress!)
                    field.labels = nil
                }
            }
        }
        return v
    }

    static func maxRelative(_ a: [Float], _ b: [Float]) -> Float {
        let scale = b.map(abs).max() ?? 1
        return zip(a, b).map { abs($0 - $1) }.max()! / max(scale, 1e-30)
    }

    @Test("guidance α = 1 is the conditional velocity, α = 0 the unconditional one, α = 2 their extrapolation (MLP and U-Net)")
    func guidanceEndpoints() throws {
        var rng = Random(seed: 3)
        let unet = UNetConfig(imageShape: [1, 8, 8], channels: [8], blocksPerLevel: 1, groups: 4, classes: 3)
        for (spec, labels) in [(ModelSpec(Self.config), [Int32]([0, 3, 1, 2, 2])), (ModelSpec(unet), [Int32]([2, 0, 1, 1, 0]))] {
            let net = spec.makeNetwork(rng: &rng)
            let field = NetworkVelocityField(network: net)
            let x = randn([5, spec.pointSize], seed: 4)
            let conditional = Self.velocity(field, x, t: 0.3, labels: labels, guidance: nil)
            let null = Self.velocity(field, x, t: 0.3, labels: nil, guidance: nil)
            #expect(Self.maxRelative(conditional, null) > 1e-3, "labels change the velocity")
            #expect(Self.maxRelative(Self.velocity(field, x, t: 0.3, labels: labels, guidance: 1), conditional) < 1e-6)
            #expect(Self.maxRelative(Self.velocity(field, x, t: 0.3, labels: labels, guidance: 0), null) < 1e-6)
            let two = Self.velocity(field, x, t: 0.3, labels: labels, guidance: 2)
            #expect(Self.maxRelative(two, zip(conditional, null).map { 2 * $0 - $1 }) < 1e-5)
        }
    }

    @Test("conditional MLP: embedding shape, parameter count, state-dict round trip, null label = no labels, unconditional weights unchanged")
    func conditionalMLP() throws {
        var rng = Random(seed: 11)
        let net = ModelSpec(Self.config).makeNetwork(rng: &rng)
        let sd = net.stateDict()
        #expect(sd["labelEmbedding.weight"]?.shape == [5, 16])
        #expect(sd.values.reduce(0) { $0 + $1.count } == Self.config.parameterCount)
        let again = try ModelSpec(Self.config).makeNetwork(stateDict: sd)
        let x = randn([4, 3], seed: 12), t: [Float] = [0.1, 0.5, 0.9, 0.2]
        expectBitwiseEqual(again.velocity(x: x, t: t, labels: [0, 1, 2, 3]), net.velocity(x: x, t: t, labels: [0, 1, 2, 3]))
        expectBitwiseEqual(net.velocity(x: x, t: t, labels: [4, 4, 4, 4]), net.velocity(x: x, t: t, labels: nil))
        var missing = sd
        missing["labelEmbedding.weight"] = nil
        #expect(throws: StateDictError.missing("labelEmbedding.weight")) { try ModelSpec(Self.config).makeNetwork(stateDict: missing) }
        // The label embedding is drawn after the layers: an unconditional config keeps its weights.
        var plain = Self.config
        plain.classes = nil
        var r1 = Random(seed: 11)
        let base = ModelSpec(plain).makeNetwork(rng: &r1).stateDict()
        for (k, v) in base { expectBitwiseEqual(sd[k]!, v, k) }
        #expect(plain.validationError() == nil && VelocityMLPConfig(classes: 0).validationError()?.pointer == "/classes")
    }

    @Test("label dropout replaces the configured fraction of labels by the null label")
    func labelDropout() throws {
        for p: Float in [0, 0.3, 1] {
            var c = TrainingConfig()
            c.data = .distribution(.gaussianRing(count: 8))
            c.model = ModelSpec(VelocityMLPConfig(dimension: 2, width: 8, depth: 1, classes: 8))
            c.labelDropout = p
            let trainer = try FlowTrainer(c, threads: 1)
            let labels = try #require(trainer.fixedSample(rows: 100_000, seed: 5).labels)
            let null = Double(labels.filter { $0 == 8 }.count) / Double(labels.count)
            #expect(abs(null - Double(p)) < 4 * (Double(p) * (1 - Double(p)) / 1e5).squareRoot() + 1e-9, "p = \(p): \(null)")
            #expect(labels.allSatisfy { (0...8).contains($0) })
            if p == 0 { #expect(Set(labels).count == 8, "all classes appear") }
        }
        // An unconditional model gets no labels; a conditional one needs labelled data.
        var plain = TrainingConfig()
        plain.data = .distribution(.gaussianRing(count: 8))
        plain.model = ModelSpec(VelocityMLPConfig(dimension: 2, width: 8, depth: 1))
        #expect(try FlowTrainer(plain, threads: 1).fixedSample(rows: 10, seed: 1).labels == nil)
        var unlabelled = TrainingConfig()
        unlabelled.data = .normal(dimension: 2, std: 1)
        unlabelled.model = ModelSpec(VelocityMLPConfig(dimension: 2, width: 8, depth: 1, classes: 3))
        #expect(throws: TrainerError.badConfig(pointer: "/model/classes", message: "a class-conditional model needs labelled training data; the data has no labels")) {
            try FlowTrainer(unlabelled, threads: 1)
        }
        var tooFew = plain
        tooFew.model = ModelSpec(VelocityMLPConfig(dimension: 2, width: 8, depth: 1, classes: 4))
        #expect(throws: TrainerError.self) { try FlowTrainer(tooFew, threads: 1) }
    }

    @Test("the remix sampler equals Euler on a straight constant-speed field, differs on a curved one, and refuses to run backward")
    func remixSampler() throws {
        let straight = try AnalyticVelocity.gaussianRectifiedFlow(mean: [1, -2, 0.5], std: 0.5)
        let x = randn([6, 3], seed: 21)
        for steps in [1, 2, 4, 7] {
            let e = try ODESolver.solve(field: straight, x: x, method: .euler(steps: steps), direction: .forward)
            let r = try ODESolver.solve(field: straight, x: x, method: .remix(steps: steps), direction: .forward, recordTrajectory: true)
            expectClose(r.x, e.x, atol: 1e-5, rtol: 1e-5)
            #expect(r.nfe == steps)
            // Every intermediate state lies on the straight path too.
            for (k, frame) in (r.trajectory ?? []).enumerated() {
                let t = Float(k) / Float(steps)
                let onPath = Tensor(shape: x.shape, data: (0..<x.count).map { j in
                    let mu: [Float] = [1, -2, 0.5]
                    return (1 - t + t * 0.5) * x.data[j] + t * mu[j % 3]
                })
                expectClose(frame.x, onPath, atol: 1e-5, rtol: 1e-5)
            }
            // From tStart > 0 the re-mix uses the state at tStart.
            let e2 = try ODESolver.solve(field: straight, x: x, method: .euler(steps: steps), direction: .forward, tStart: 0.2)
            let r2 = try ODESolver.solve(field: straight, x: x, method: .remix(steps: steps), direction: .forward, tStart: 0.2)
            expectClose(r2.x, e2.x, atol: 1e-5, rtol: 1e-5)
        }
        let curved = AnalyticVelocity(dimension: 1, pointwise: { x, t, v in v[0] = -x[0] * 3 * t + 0.5 })
        let x1 = Tensor(shape: [1, 1], data: [1])
        let e = try ODESolver.solve(field: curved, x: x1, method: .euler(steps: 3), direction: .forward)
        let r = try ODESolver.solve(field: curved, x: x1, method: .remix(steps: 3), direction: .forward)
        #expect(abs(e.x.data[0] - r.x.data[0]) > 1e-3)
        // With 1 or 2 steps the correction (1 − t')(z_a − z + (t − a)·v) vanishes: Euler on any field.
        for steps in [1, 2] {
            for a: Float in [0, 0.3] {
                let e = try ODESolver.solve(field: curved, x: x1, method: .euler(steps: steps), direction: .forward, tStart: a)
                let r = try ODESolver.solve(field: curved, x: x1, method: .remix(steps: steps), direction: .forward, tStart: a)
                #expect(abs(e.x.data[0] - r.x.data[0]) < 1e-6, "\(steps) steps from \(a)")
            }
        }
        #expect(throws: ODEError.self) { try ODESolver.solve(field: curved, x: x1, method: .remix(steps: 3), direction: .backward) }
        #expect(try JSONDecoder().decode(ODEMethod.self, from: Data(#"{"kind": "remix", "steps": 2}"#.utf8)) == .remix(steps: 2))
    }

    @Test("intersection noise: hand values, and atypical (long, autocorrelated) noise for smooth data")
    func intersectionNoise() throws {
        let x0 = Tensor(shape: [2, 4], data: [1, 0, 0, 0, 0, 1, 0, 0])
        let x1 = Tensor(shape: [2, 4], data: [2, 2, 2, 2, 0, 0, 0, 0])
        let r = try Metrics.intersectionNoise(x0: x0, x1: x1, times: [0.5])
        // Fresh: both rows have norm 1 → 1/√4 = 0.5 and no lag-1 products.
        #expect(abs(r.fresh.normOverSqrtD - 0.5) < 1e-12 && r.fresh.lag1Autocorrelation == 0)
        // t = 0.5 → w = 1: row 0 → [3, 2, 2, 2] (‖·‖² = 21, lag 14); row 1 → [−2, −1, −2, −2] (13, 8).
        let c = r.crossing[0]
        #expect(abs(c.normOverSqrtD - ((21.0).squareRoot() / 2 + (13.0).squareRoot() / 2) / 2) < 1e-12)
        #expect(abs(c.lag1Autocorrelation - (14.0 / 21 + 8.0 / 13) / 2) < 1e-12)
        // Gaussian noise and smooth images (constant rows): the crossing noise is far from typical.
        var rng = Random(seed: 2)
        let n = 200, d = 256
        let z = rng.normal([n, d])
        let smooth = Tensor(shape: [n, d], data: (0..<(n * d)).map { Float(($0 / d) % 7) - 3 })
        let s = try Metrics.intersectionNoise(x0: z, x1: smooth, times: [0.5, 0.9])
        #expect(abs(s.fresh.normOverSqrtD - 1) < 0.02 && abs(s.fresh.lag1Autocorrelation) < 0.02)
        #expect(s.crossing[1].normOverSqrtD > 5 && s.crossing[1].lag1Autocorrelation > 0.9)
        #expect(throws: MetricError.self) { try Metrics.intersectionNoise(x0: z, x1: smooth, times: [1]) }
    }

    @Test("LPIPS on classifier activations: zero for identical images, positive otherwise, unit-normalised channels, gradients by finite differences")
    func lpips() throws {
        var rng = Random(seed: 31)
        let cfg = ClassifierConfig(kind: .cnn, channels: [4], features: 8, activation: .silu, imageShape: [1, 8, 8], classes: 3)
        let net = cfg.makeNetwork(rng: &rng)
        let a = randn([2, 64], seed: 32), b = randn([2, 64], seed: 33)
        let g = Graph(threads: 1, gradEnabled: false)
        let same = PerceptualLoss.lpips(net, g.input(a), g.input(a)).value.data
        #expect(same == [0, 0])
        let diff = PerceptualLoss.lpips(net, g.input(a), g.input(b)).value.data
        #expect(diff.count == 2 && diff.allSatisfy { $0 > 0 })
        let u = PerceptualLoss.unitNormalised(g.input(Tensor(shape: [1, 2], data: [3, 4]))).value.data
        #expect(abs(u[0] - 0.6) < 1e-6 && abs(u[1] - 0.8) < 1e-6)
        let r = gradCheck(inputs: [a, b]) { g, v in g.sum(PerceptualLoss.lpips(net, v[0], v[1])) }
        #expect(r.passed, "\(r)")
    }

    @Test("the perceptual premetric: zero for the exact velocity; t·base + LPIPS(x̂, x1)/(1 − t) with x̂ = x_t + (1 − t)·v")
    func perceptualPremetric() throws {
        var rng = Random(seed: 41)
        let cfg = ClassifierConfig(kind: .cnn, channels: [4], features: 8, activation: .silu, imageShape: [1, 8, 8], classes: 3)
        let net = cfg.makeNetwork(rng: &rng)
        let rows = 3, d = 64
        let x0 = randn([rows, d], seed: 42), x1 = randu([rows, d], seed: 43, low: -1, high: 1)
        let t: [Float] = [0.1, 0.5, 0.8]
        var xt = [Float](repeating: 0, count: rows * d), target = xt
        for r in 0..<rows { for j in 0..<d {
            xt[r * d + j] = t[r] * x1.data[r * d + j] + (1 - t[r]) * x0.data[r * d + j]
            target[r * d + j] = x1.data[r * d + j] - x0.data[r * d + j]
        } }
        let loss = Loss.scaledPseudoHuber(scaling: .d)
        for form in PerceptualLoss.Form.allCases {
            let p = PerceptualLoss(classifier: .job(id: "f", artifact: nil), form: form, weight: 2)
            func value(_ v: Tensor) -> Float {
                let g = Graph(threads: 1, gradEnabled: false)
                return xt.withUnsafeBufferPointer { xp in x1.data.withUnsafeBufferPointer { x1p in t.withUnsafeBufferPointer { tp in
                    p(net, loss: loss, v: g.input(v), target: g.input(Tensor(shape: [rows, d], data: target)), xt: xp.baseAddress!,
                      x1: x1p.baseAddress!, t: tp.baseAddress!, rows: rows).value.data[0]
                } } }
            }
            #expect(abs(value(Tensor(shape: [rows, d], data: target))) < 1e-6, "\(form): the exact velocity predicts x1")
            // An oracle from the parts.
            let v = randn([rows, d], seed: 44)
            let g = Graph(threads: 1, gradEnabled: false)
            let base = loss.perSample(g.input(v), g.input(Tensor(shape: [rows, d], data: target))).value.data
            let xhat = Tensor(shape: [rows, d], data: (0..<(rows * d)).map { xt[$0] + (1 - t[$0 / d]) * v.data[$0] })
            let lp = PerceptualLoss.lpips(net, g.input(xhat), g.input(x1)).value.data
            var want: Float = 0
            for r in 0..<rows {
                let divisor: Float = form == .lpipsHuber ? 1 : 1 - t[r]
                want += (t[r] * base[r] + 2 * lp[r] / divisor) / Float(rows)
            }
            #expect(abs(value(v) - want) < 1e-5 * max(1, abs(want)), "\(form)")
        }
    }
}
