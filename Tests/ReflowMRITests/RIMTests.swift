import Foundation
import Testing
import ReflowEngine
import ReflowAutograd
import ReflowNN
import ReflowFlow
import ReflowTestSupport
@testable import ReflowMRI

/// A tiny single-coil problem set: phantoms of h×w under Gaussian masks.
private func problems(_ n: Int, h: Int = 12, w: Int = 12, seed: UInt64 = 1) throws -> [MRIProblem] {
    var rng = Random(seed: seed)
    let acq = Acquisition(mask: MaskSpec(kind: .gaussian2D, acceleration: 3, centerFraction: 0.1))
    return try (0..<n).map { _ in try acq.simulate(Phantoms.randomEllipses(height: h, width: w, seed: rng.next()).data, height: h, width: w, rng: &rng) }
}

@Suite("RIM")
struct RIMTests {
    @Test("the parameter count formula matches the built network for every cell and for cascades", arguments: RecurrentCellKind.allCases)
    func parameterCount(_ cell: RecurrentCellKind) {
        for (f, c) in [(4, 1), (16, 2), (32, 1)] {
            let config = RIMConfig(cell: cell, features: f, steps: 3, cascades: c)
            var rng = Random(seed: 1)
            #expect(RIMNetwork(config, rng: &rng).parameterCount == config.parameterCount, "\(cell) f \(f) cascades \(c)")
        }
    }

    @Test("state-dict names follow the documented layout and a network round-trips through its state dict")
    func stateDict() throws {
        var rng = Random(seed: 2)
        let net = RIMNetwork(RIMConfig(cell: .mgu, features: 4, steps: 2, cascades: 2), rng: &rng)
        let names = Set(net.stateDict().keys)
        for n in ["cascades.0.conv_in.weight", "cascades.0.conv_in.bias", "cascades.1.cell1.wf.weight", "cascades.1.cell2.uc.weight",
                  "cascades.0.conv_mid.weight", "cascades.1.conv_out.weight"] {
            #expect(names.contains(n), "\(n)")
        }
        #expect(!names.contains("cascades.0.conv_out.bias"), "the output convolution has no bias")
        let copy = try RIMNetwork(net.config, stateDict: net.stateDict())
        let p = try problems(2)
        let a = net.reconstruct(p, threads: 1), b = copy.reconstruct(p, threads: 1)
        #expect(a == b)
        var bad = net.stateDict()
        bad["cascades.0.conv_mid.weight"] = Tensor(shape: [1], data: [0])
        #expect(throws: StateDictError.self) { try RIMNetwork(net.config, stateDict: bad) }
    }

    @Test("loss weights are mridc's logspace(−1, 0, n) normalised: increasing, summing to 1, the last 10× the first")
    func lossWeights() {
        let w = RIMNetwork.lossWeights(8)
        #expect(w.count == 8)
        #expect(abs(w.reduce(0, +) - 1) < 1e-6)
        #expect(zip(w, w.dropFirst()).allSatisfy { $0 < $1 })
        #expect(abs(w[7] / w[0] - 10) < 1e-4)
        #expect(RIMNetwork.lossWeights(1) == [1])
    }

    @Test("with a zero output convolution every estimate is the zero-filled start; with weights, estimates move and depend on the data-consistency gradient")
    func updateRule() throws {
        var rng = Random(seed: 3)
        let net = RIMNetwork(RIMConfig(cell: .gru, features: 4, steps: 3), rng: &rng)
        let p = try problems(2)
        let (h, w) = (12, 12)
        func run(_ ps: [MRIProblem]) -> [Tensor] {
            let g = Graph(threads: 1, gradEnabled: false)
            let x0 = g.constant(shape: [ps.count, 2, h, w]) { b in
                for (i, q) in ps.enumerated() { ForwardModel.planes(q.zeroFilled, b.baseAddress! + i * 2 * h * w, h * w) }
            }
            return net.estimates(x0, models: ps.map(\.model), measurements: ps.map(\.measurements)).map(\.value)
        }
        let moving = run(p)
        #expect(moving.count == 3)
        #expect(moving[0] != moving[1] && moving[1] != moving[2])
        // Same start, other measurements: a different gradient changes the estimates.
        var q = p
        let sampled = try #require(q[0].model.mask.data.firstIndex(of: 1))
        q[0].measurements.data[2 * sampled] += 1
        #expect(run(q)[2] != moving[2])
        let out = net.blocks[0].convOut.weight
        out.value = Tensor(shape: out.value.shape, data: [Float](repeating: 0, count: out.value.count))
        let still = run(p)
        var zf = [Float]()
        for q in p { var b = [Float](repeating: 0, count: 2 * h * w); b.withUnsafeMutableBufferPointer { ForwardModel.planes(q.zeroFilled, $0.baseAddress!, h * w) }; zf += b }
        for e in still { #expect(e.data == zf) }
    }

    @Test("the RIM's gradient through all time steps (weights, cells, data consistency) matches finite differences at T = 1 and T = 3", arguments: RecurrentCellKind.allCases)
    func gradient(_ cell: RecurrentCellKind) throws {
        let p = try problems(1, h: 8, w: 8)
        let models = p.map(\.model), ys = p.map(\.measurements)
        var rng = Random(seed: 4)
        let x0 = rng.normal([1, 2, 8, 8], std: 0.5), proj = rng.normal([1, 2, 8, 8])
        for steps in [1, 3] {
            let net = RIMNetwork(RIMConfig(cell: cell, features: 3, steps: steps), rng: &rng)
            for q in net.parameters { q.value = rng.normal(q.value.shape, std: 0.2) }
            if steps > 1 {
                // Through time the ReLUs' kinks get dense enough that differences straddle them at
                // every step size; positive biases keep most units active (the recurrence, the
                // cells' gates and data consistency are what this checks).
                for (name, q) in net.namedParameters() where name.hasSuffix("bias") {
                    q.value = Tensor(shape: q.value.shape, data: q.value.data.map { $0 + 1 })
                }
            }
            /// L = Σ x_T ⊙ R (R a fixed random projection), accumulated in Double.
            func loss(_ grad: Bool) -> Double {
                let g = Graph(threads: 1, gradEnabled: grad)
                let out = net.estimates(g.constant(x0), models: models, measurements: ys).last!
                if grad { g.backward(g.sum(g.binary(.mul, out, g.constant(proj)))) }
                return zip(out.value.data, proj.data).reduce(0.0) { $0 + Double($1.0) * Double($1.1) }
            }
            for q in net.parameters { q.zeroGrad() }
            _ = loss(true)
            // ReLUs sit on every path, so a central difference may straddle a kink; it then
            // converges to the analytic value as the step shrinks. An element passes when one of
            // three steps agrees; a gradient 10 % off must fail nearly everywhere.
            var checked = 0, passed = 0, passedWrong = 0
            for (name, q) in net.namedParameters() {
                let grad = q.grad
                for k in (q.value.count <= 12 ? Array(0..<q.value.count) : (0..<12).map { _ in rng.int(below: q.value.count) }) {
                    let v = q.value.data[k]
                    let fds = [Float(1e-2), 1e-3, 1e-4].map { eps -> Double in
                        q.value.data[k] = v + eps; let a = loss(false)
                        q.value.data[k] = v - eps; let b = loss(false)
                        q.value.data[k] = v
                        return (a - b) / Double(2 * eps)
                    }
                    func ok(_ g: Double) -> Bool { fds.contains { abs($0 - g) <= 3e-2 * abs(g) + 3e-3 } }
                    checked += 1
                    if ok(Double(grad.data[k])) { passed += 1 } else { Issue.record("\(cell) T = \(steps) \(name)[\(k)]: analytic \(grad.data[k]), differences \(fds)") }
                    if abs(grad.data[k]) > 0.05 && ok(1.1 * Double(grad.data[k])) { passedWrong += 1 }
                }
            }
            #expect(passed == checked && checked > 60)
            #expect(passedWrong <= checked / 10, "\(passedWrong) of \(checked) accept a 10 % error")
        }
    }

    @Test("reconstruction is scale-equivariant (inputs are normalised by the zero-filled maximum) and independent of the thread count and chunking")
    func scaling() throws {
        var rng = Random(seed: 5)
        let net = RIMNetwork(RIMConfig(cell: .indrnn, features: 4, steps: 2), rng: &rng)
        let p = try problems(RIMNetwork.inferenceChunk + 3)
        let a = net.reconstruct(p, threads: 1), b = net.reconstruct(p, threads: 2)
        #expect(a == b)
        // Inference (a graph per time step) is the training graph's last estimate, bit for bit.
        let first = Array(p.prefix(4)), (h, w) = (12, 12)
        let g = Graph(threads: 1)
        let inputs: [(x0: ComplexTensor, y: ComplexTensor, scale: Float)] = first.map { RIMNetwork.scaled($0) }
        let x0 = g.constant(shape: [4, 2, h, w]) { buf in
            for i in 0..<4 { ForwardModel.planes(inputs[i].x0, buf.baseAddress! + i * 2 * h * w, h * w) }
        }
        let ys: [ComplexTensor] = inputs.map { $0.y }
        let last: Tensor = net.estimates(x0, models: first.map { $0.model }, measurements: ys).last!.value
        let inferred = net.reconstruct(first, threads: 1)
        for i in 0..<4 {
            var want = [Float](repeating: 0, count: 2 * h * w)
            let scale = inputs[i].scale, base = i * 2 * h * w
            for k in 0..<(h * w) {
                want[2 * k] = last.data[base + k] * scale
                want[2 * k + 1] = last.data[base + h * w + k] * scale
            }
            #expect(inferred[i].data == want, "image \(i)")
        }
        var scaled = p[0]
        for k in 0..<scaled.measurements.data.count { scaled.measurements.data[k] *= 4 }
        let s = net.reconstruct([scaled], threads: 1)[0]
        for k in 0..<s.data.count { #expect(abs(s.data[k] - 4 * a[0].data[k]) <= 1e-4 * max(1, abs(4 * a[0].data[k]))) }
    }
}

@Suite("RIM trainer")
struct RIMTrainerTests {
    func trainer(seed: UInt64 = 0, threads: Int = 2) throws -> RIMTrainer {
        try RIMTrainer(RIMConfig(cell: .gru, features: 4, steps: 2), images: .phantoms(height: 12, width: 12),
                       acquisition: Acquisition(mask: MaskSpec(kind: .gaussian2D, acceleration: 3, centerFraction: 0.1)),
                       batchSize: 4, learningRate: 3e-3, seed: seed, threads: threads)
    }

    @Test("a step's batch depends on the seed and the step only; masks are drawn per image")
    func batches() throws {
        let a = try trainer(), b = try trainer()
        let (x, y) = (a.batch(step: 3), b.batch(step: 3))
        #expect(x.map(\.measurements) == y.map(\.measurements))
        #expect(x.map(\.measurements) != a.batch(step: 4).map(\.measurements))
        #expect(x[0].model.mask != x[1].model.mask, "a fresh mask per image")
        #expect(try trainer(seed: 1).batch(step: 3).map(\.measurements) != x.map(\.measurements))
    }

    @Test("training lowers the loss, and a run resumed from a snapshot continues bit for bit")
    func resume() throws {
        let a = try trainer()
        let losses = (0..<120).map { _ in a.trainStep() }
        let (first, last) = (losses.prefix(5).reduce(0, +) / 5, losses.suffix(5).reduce(0, +) / 5)
        #expect(last < 0.8 * first, "mean loss of the first five steps \(first) → the last five \(last)")

        let b = try trainer(), c = try trainer()
        for _ in 0..<3 { b.trainStep() }
        try c.restore(b.snapshot())
        for _ in 0..<2 { b.trainStep(); c.trainStep() }
        #expect(b.network.stateDict() == c.network.stateDict())
        #expect(c.step == 5)
    }

    @Test("bad settings are refused with pointers")
    func refusals() {
        func code(_ make: () throws -> RIMTrainer) -> String? {
            do { _ = try make(); return nil } catch let e as TrainerError {
                if case .badConfig(let p, _) = e { return p }
                return "other"
            } catch { return "other" }
        }
        let acq = Acquisition()
        #expect(code { try RIMTrainer(RIMConfig(features: 0), images: .phantoms(height: 12, width: 12), acquisition: acq, batchSize: 2, learningRate: 1e-3, seed: 0, threads: 1) } == "/model/features")
        #expect(code { try RIMTrainer(RIMConfig(), images: .phantoms(height: 12, width: 12), acquisition: acq, batchSize: 0, learningRate: 1e-3, seed: 0, threads: 1) } == "/batchSize")
        let impossible = Acquisition(mask: MaskSpec(acceleration: 8, centerFraction: 0.9))
        #expect(code { try RIMTrainer(RIMConfig(), images: .phantoms(height: 12, width: 12), acquisition: impossible, batchSize: 2, learningRate: 1e-3, seed: 0, threads: 1) } == "/acquisition/mask/centerFraction")
    }
}

@Suite("Acquisition, TV, metrics")
struct AcquisitionTests {
    @Test("without noise y = M·F·x exactly; noise lands only on sampled points with the requested spread")
    func measure() throws {
        var rng = Random(seed: 6)
        let x = ComplexTensor(real: rng.normal([16, 16]), imag: rng.normal([16, 16]))
        let mask = try Mask.make(.gaussian2D, height: 16, width: 16, acceleration: 2, seed: 1)
        let clean = try Acquisition.measure(x, mask: mask, noise: 0, rng: &rng)
        #expect(clean.measurements == (try ForwardModel(mask: mask.values)).apply(x))
        let big = ComplexTensor(zeros: [64, 64])
        let m64 = try Mask.make(.gaussian2D, height: 64, width: 64, acceleration: 2, seed: 1)
        let noisy = try Acquisition.measure(big, mask: m64, noise: 0.5, rng: &rng)
        var s = 0.0, n = 0
        for k in 0..<(64 * 64) {
            if m64.values.data[k] == 0 {
                #expect(noisy.measurements.data[2 * k] == 0 && noisy.measurements.data[2 * k + 1] == 0)
            } else {
                s += Double(noisy.measurements.data[2 * k] * noisy.measurements.data[2 * k] + noisy.measurements.data[2 * k + 1] * noisy.measurements.data[2 * k + 1])
                n += 1
            }
        }
        #expect(abs((s / Double(n)).squareRoot() - 0.5) < 0.03, "complex noise std \((s / Double(n)).squareRoot())")
    }

    @Test("a smooth phase keeps the magnitude, varies slowly, and zero phase is real")
    func phase() {
        var rng = Random(seed: 7)
        let m = Phantoms.randomEllipses(height: 32, width: 32, seed: 1).data
        let z = Acquisition(phase: .smooth).complexImage(m, height: 32, width: 32, rng: &rng)
        for k in 0..<m.count { #expect(abs(z.magnitude.data[k] - m[k]) < 1e-5) }
        let phi = Acquisition.smoothPhase(height: 32, width: 32, rng: &rng)
        for r in 0..<32 { for c in 0..<31 { #expect(abs(phi[r * 32 + c + 1] - phi[r * 32 + c]) < 0.4) } }
        let real = Acquisition().complexImage(m, height: 32, width: 32, rng: &rng)
        #expect((0..<m.count).allSatisfy { real.data[2 * $0] == m[$0] && real.data[2 * $0 + 1] == 0 })
    }

    @Test("a fixed mask seed gives every image the same mask; without one each image draws its own")
    func maskSeeds() throws {
        var rng = Random(seed: 8)
        let m = [Float](repeating: 0.5, count: 256)
        let fixed = Acquisition(mask: MaskSpec(seed: 4))
        #expect(try fixed.simulate(m, height: 16, width: 16, rng: &rng).model.mask == (try fixed.simulate(m, height: 16, width: 16, rng: &rng)).model.mask)
        let fresh = Acquisition()
        #expect(try fresh.simulate(m, height: 16, width: 16, rng: &rng).model.mask != (try fresh.simulate(m, height: 16, width: 16, rng: &rng)).model.mask)
    }

    @Test("TV: zero for a constant image, H·d for a vertical edge of height d, and ½‖x−v‖² + τTV(x) of the prox below v's and its perturbations'")
    func totalVariation() {
        #expect(TotalVariation.value(ComplexTensor(real: Tensor(shape: [6, 6], data: [Float](repeating: 3, count: 36)))) == 0)
        var edge = [Float](repeating: 0, count: 48)
        for r in 0..<6 { for c in 4..<8 { edge[r * 8 + c] = 2 } }
        #expect(abs(TotalVariation.value(ComplexTensor(real: Tensor(shape: [6, 8], data: edge))) - 12) < 1e-9)
        var rng = Random(seed: 9)
        let v = ComplexTensor(real: rng.normal([10, 10]), imag: rng.normal([10, 10]))
        let tau = 0.3
        func f(_ x: ComplexTensor) -> Double {
            var s = 0.0
            for k in 0..<x.data.count { let d = Double(x.data[k] - v.data[k]); s += d * d }
            return s / 2 + tau * TotalVariation.value(x)
        }
        let x = TotalVariation.prox(v, tau: tau, iterations: 200)
        #expect(f(x) < f(v))
        #expect(f(x) <= f(TotalVariation.prox(v, tau: tau, iterations: 5)) + 1e-6)
        for trial in 0..<20 {
            var y = x
            let e = rng.normal([10, 10], std: 0.01).data
            for k in 0..<e.count { y.data[2 * k + trial % 2] += e[k] }
            #expect(f(x) <= f(y) + 1e-5, "perturbation \(trial)")
        }
    }

    @Test("CS with TV: ISTA and MFISTA decrease the objective at every iteration; FISTA reaches ISTA's optimum")
    func csTV() throws {
        let p = try problems(1, h: 16, w: 16)[0]
        let reg = CompressedSensing.Regularizer.tv(inner: 50)
        for method in [CompressedSensing.Method.ista, .mfista] {
            let r = CompressedSensing.reconstruct(p.model, p.measurements, lambda: 0.01, iterations: 40, method: method, regularizer: reg)
            for (a, b) in zip(r.objective, r.objective.dropFirst()) { #expect(b <= a + 1e-6, "\(method): \(a) → \(b)") }
        }
        let ista = CompressedSensing.reconstruct(p.model, p.measurements, lambda: 0.01, iterations: 400, method: .ista, regularizer: reg)
        let fista = CompressedSensing.reconstruct(p.model, p.measurements, lambda: 0.01, iterations: 200, method: .fista, regularizer: reg)
        #expect(abs(fista.objective.last! - ista.objective.last!) <= 1e-3 * ista.objective.last!)
        // The untraced run gives the traced run's iterate; onIterate sees every iterate.
        var seen = 0
        let quiet = CompressedSensing.reconstruct(p.model, p.measurements, lambda: 0.01, iterations: 200, method: .fista, regularizer: reg,
                                                  recordObjective: false, onIterate: { i, _ in seen = i })
        #expect(quiet.x == fista.x && seen == 200 && quiet.objective.count == 1)
        // A stop request ends the iterations (after 5 here).
        var asked = 0
        _ = CompressedSensing.reconstruct(p.model, p.measurements, lambda: 0.01, iterations: 200, method: .fista, regularizer: reg,
                                          recordObjective: false, shouldStop: { asked += 1; return asked > 5 }, onIterate: { i, _ in seen = i })
        #expect(seen == 5)
    }

    @Test("SSIM and PSNR known values: identical images (1, ∞), a constant shift on a constant image (the luminance term; 10·log10(L²/c²))")
    func knownMetrics() {
        var rng = Random(seed: 10)
        let a = rng.uniform([1, 16, 16], low: 0, high: 1).data
        #expect(ImageQuality.ssim(a, a, shape: [1, 16, 16], dataRange: 1) == 1)
        #expect(ImageQuality.psnr(a, a, dataRange: 1) == .infinity)
        let (v, c, l) = (0.4, 0.1, 1.0)
        let x = [Float](repeating: Float(v), count: 256), y = [Float](repeating: Float(v + c), count: 256)
        let c1 = (0.01 * l) * (0.01 * l)
        let want = (2 * v * (v + c) + c1) / (v * v + (v + c) * (v + c) + c1)
        #expect(abs(ImageQuality.ssim(x, y, shape: [1, 16, 16], dataRange: l)! - want) < 1e-6)
        #expect(abs(ImageQuality.psnr(x, y, dataRange: l) - 10 * log10(l * l / (c * c))) < 1e-4)
        // On complex images the metrics use magnitudes and the reference's maximum as the range.
        let ref = ComplexTensor(real: Tensor(shape: [16, 16], data: y))
        let m = ReconstructionMetrics.measure(ComplexTensor(real: Tensor(shape: [16, 16], data: x)), reference: ref)
        #expect(abs(m.psnr - 10 * log10((v + c) * (v + c) / (c * c))) < 1e-4)
        #expect(abs(m.nmse - c * c / ((v + c) * (v + c))) < 1e-6)
    }

    @Test("lesions are small bright regions inside the object; the lesion NMSE only sees them")
    func lesions() {
        var rng = Random(seed: 11)
        let img = Phantoms.randomEllipses(height: 32, width: 32, seed: 2).data
        let (out, region) = Phantoms.addLesions(img, height: 32, width: 32, count: 3, rng: &rng)
        let inside = region.indices.filter { region[$0] != 0 }
        #expect(inside.count > 3 && inside.count < 120, "\(inside.count) lesion pixels")
        for k in inside { #expect(out[k] >= img[k] && out[k] <= 1) }
        for k in region.indices where region[k] == 0 { #expect(out[k] == img[k]) }
        var wrongOutside = out
        for k in region.indices where region[k] == 0 { wrongOutside[k] += 0.3 }
        #expect(MRIMetrics.nmse(wrongOutside, out, region: region) == 0)
        #expect(MRIMetrics.nmse(img, out, region: region) > 0)
    }
}
