import Foundation
import Testing
import ReflowEngine
import ReflowAutograd
import ReflowNN
import ReflowTestSupport
@testable import ReflowMRI

private func randomComplex(_ shape: [Int], seed: UInt64) -> ComplexTensor {
    var rng = Random(seed: seed)
    return ComplexTensor(real: rng.normal(shape), imag: rng.normal(shape))
}

@Suite("MRI masks")
struct MaskTests {
    @Test("2-D masks hit the requested acceleration within 2 %; line masks take the nearest line count",
          arguments: MaskKind.allCases)
    func acceleration(_ kind: MaskKind) throws {
        for (h, w) in [(28, 28), (64, 64), (32, 48)] {
            for r in [4.0, 8.0] {
                let m = try Mask.make(kind, height: h, width: w, acceleration: r, seed: 3)
                if kind.isLineMask {
                    let columns = (0..<w).filter { c in (0..<h).allSatisfy { m.values.data[$0 * w + c] == 1 } }
                    #expect(columns.count == Int((Double(w) / r).rounded()), "\(kind) \(h)×\(w) R \(r)")
                    #expect(m.sampled == columns.count * h, "whole columns only")
                } else {
                    #expect(abs(m.acceleration - r) / r <= 0.02, "\(kind) \(h)×\(w) R \(r): got \(m.acceleration)")
                }
                #expect(m.values.data[(h / 2) * w + w / 2] == 1, "the centre of k-space is sampled")
                #expect(m.values.data.allSatisfy { $0 == 0 || $0 == 1 })
            }
        }
    }

    @Test("masks are reproducible from their seed and differ between seeds", arguments: MaskKind.allCases)
    func seeded(_ kind: MaskKind) throws {
        let a = try Mask.make(kind, height: 32, width: 32, acceleration: 4, seed: 1)
        let b = try Mask.make(kind, height: 32, width: 32, acceleration: 4, seed: 1)
        let c = try Mask.make(kind, height: 32, width: 32, acceleration: 4, seed: 2)
        #expect(a == b)
        #expect(a.values != c.values)
    }

    @Test("variable density: the 2-D masks sample the centre of k-space more densely than the edge")
    func density() throws {
        for kind in [MaskKind.gaussian2D, .poissonDisc] {
            let m = try Mask.make(kind, height: 64, width: 64, acceleration: 4, seed: 5)
            var inner = 0.0, innerN = 0.0, outer = 0.0, outerN = 0.0
            for r in 0..<64 { for c in 0..<64 {
                let d = (Double((r - 32) * (r - 32) + (c - 32) * (c - 32))).squareRoot()
                if d < 16 { inner += Double(m.values.data[r * 64 + c]); innerN += 1 } else if d > 24 { outer += Double(m.values.data[r * 64 + c]); outerN += 1 }
            } }
            #expect(inner / innerN > 1.5 * outer / outerN, "\(kind)")
        }
    }

    @Test("impossible masks are errors that name the field, never traps")
    func refusals() {
        for (h, w, r, f, word) in [(1, 28, 4.0, 0.08, "height"), (28, 5000, 4.0, 0.08, "height"), (28, 28, 0.5, 0.08, "acceleration"),
                                   (28, 28, .nan, 0.08, "acceleration"), (28, 28, 4, 1.5, "centerFraction"), (28, 28, 16, 0.9, "centre")] {
            #expect(throws: MRIError.self) { try Mask.make(.gaussian2D, height: h, width: w, acceleration: r, centerFraction: f, seed: 0) }
            #expect(Mask.problem(height: h, width: w, acceleration: r, centerFraction: f)?.contains(word) == true, "\(h) \(w) \(r) \(f)")
        }
    }
}

@Suite("MRI forward model")
struct ForwardModelTests {
    static func model(coils: Int?, seed: UInt64 = 7) throws -> ForwardModel {
        let mask = try Mask.make(.gaussian2D, height: 6, width: 5, acceleration: 2, seed: seed).values
        return try ForwardModel(mask: mask, sensitivities: coils.map { randomComplex([$0, 6, 5], seed: seed + 1) })
    }

    @Test("the adjoint: ⟨A·x, y⟩ = ⟨x, Aᴴ·y⟩ for one coil and for several", arguments: [nil, 1, 3])
    func adjoint(_ coils: Int?) throws {
        let a = try Self.model(coils: coils)
        let x = randomComplex([6, 5], seed: 1), y = randomComplex([coils ?? 1, 6, 5], seed: 2)
        let lhs = ComplexTensor.inner(a.apply(x), y), rhs = ComplexTensor.inner(x, a.adjoint(y))
        #expect(abs(lhs.re - rhs.re) < 1e-4 && abs(lhs.im - rhs.im) < 1e-4, "\(lhs) \(rhs)")
        // Off the mask the measurements are zero.
        let m = a.apply(x)
        for k in 0..<m.count where a.mask.data[k % 30] == 0 { #expect(m.data[2 * k] == 0 && m.data[2 * k + 1] == 0) }
    }

    @Test("the data-consistency gradient equals central finite differences of ½‖M·F·S·x − y‖²", arguments: [nil, 2])
    func gradient(_ coils: Int?) throws {
        let a = try Self.model(coils: coils)
        let x = randomComplex([6, 5], seed: 3), y = a.apply(randomComplex([6, 5], seed: 4))
        let g = a.gradient(x, y)
        let eps: Float = 1e-2
        for i in stride(from: 0, to: x.data.count, by: 3) {
            var p = x, q = x
            p.data[i] += eps
            q.data[i] -= eps
            let fd = (a.misfit(p, y) - a.misfit(q, y)) / Double(2 * eps)
            #expect(abs(fd - Double(g.data[i])) < 2e-3 * max(1, abs(fd)), "coordinate \(i): fd \(fd), analytic \(g.data[i])")
        }
        // Zero at the truth, and the zero-filled estimate is Aᴴy.
        let truth = randomComplex([6, 5], seed: 9)
        #expect(a.gradient(truth, a.apply(truth)).data.allSatisfy { abs($0) < 1e-5 })
    }

    @Test("mismatched shapes are errors")
    func shapes() {
        #expect(throws: MRIError.self) { try ForwardModel(mask: Tensor(shape: [30], data: [Float](repeating: 1, count: 30))) }
        #expect(throws: MRIError.self) {
            try ForwardModel(mask: Tensor(shape: [6, 5], data: [Float](repeating: 1, count: 30)), sensitivities: ComplexTensor(zeros: [2, 5, 6]))
        }
    }
}

@Suite("Compressed sensing (Haar ℓ1, ISTA / FISTA / MFISTA)")
struct CompressedSensingTests {
    @Test("Haar: orthonormal, inverse ∘ forward = identity, a constant image lives in the low-pass block")
    func haar() {
        for (h, w, levels) in [(16, 16, 4), (28, 28, 2), (12, 8, 2), (7, 5, 0)] {
            #expect(Haar2D.maxLevels(height: h, width: w) == levels)
            let x = randomComplex([h, w], seed: 3)
            let c = Haar2D.forward(x, levels: levels)
            let back = Haar2D.inverse(c, levels: levels)
            #expect(zip(back.data, x.data).allSatisfy { abs($0 - $1) < 1e-5 })
            #expect(abs(ComplexTensor.inner(c, c).re - ComplexTensor.inner(x, x).re) < 1e-4 * ComplexTensor.inner(x, x).re)
            let y = randomComplex([h, w], seed: 4)
            let lhs = ComplexTensor.inner(Haar2D.forward(x, levels: levels), y).re, rhs = ComplexTensor.inner(x, Haar2D.inverse(y, levels: levels)).re
            #expect(abs(lhs - rhs) < 1e-3, "adjoint")
            let one = ComplexTensor(real: Tensor(shape: [h, w], data: [Float](repeating: 1, count: h * w)))
            let k = Haar2D.forward(one, levels: levels)
            let (bh, bw) = (h >> levels, w >> levels)
            for r in 0..<h { for col in 0..<w where r >= bh || col >= bw { #expect(abs(k.data[2 * (r * w + col)]) < 1e-5) } }
        }
    }

    /// A 16×16 piecewise-constant phantom at R = 3, single coil, with a little noise.
    static func problem() throws -> (ForwardModel, ComplexTensor) {
        var img = [Float](repeating: 0, count: 256)
        for r in 4..<12 { for c in 3..<10 { img[r * 16 + c] = 1 } }
        for r in 8..<14 { for c in 9..<14 { img[r * 16 + c] = 0.5 } }
        let a = try ForwardModel(mask: try Mask.make(.gaussian2D, height: 16, width: 16, acceleration: 3, seed: 2).values)
        var y = a.apply(ComplexTensor(real: Tensor(shape: [16, 16], data: img)))
        var rng = Random(seed: 8)
        let noise = rng.normal([512], std: 0.01)
        for i in 0..<512 { y.data[i] += noise.data[i] }
        return (a, a.apply(a.adjoint(y)))     // keep y on the mask
    }

    @Test("ISTA and MFISTA decrease the objective at every iteration; FISTA reaches ISTA's converged objective within 1e-5")
    func convergence() throws {
        let (a, y) = try Self.problem()
        let lambda = 0.01
        let ista = CompressedSensing.reconstruct(a, y, lambda: lambda, iterations: 3000, method: .ista)
        let mfista = CompressedSensing.reconstruct(a, y, lambda: lambda, iterations: 300, method: .mfista)
        // Monotone up to the rounding of Float32 iterates (relative 1e-6; at convergence ISTA's
        // objective moves by a few 1e-8 either way).
        for run in [ista, mfista] {
            for k in 1..<run.objective.count { #expect(run.objective[k] <= run.objective[k - 1] * (1 + 1e-6), "iteration \(k)") }
        }
        // Far from convergence every step is a strict decrease.
        for k in 1...20 { #expect(ista.objective[k] < ista.objective[k - 1] && mfista.objective[k] <= mfista.objective[k - 1]) }
        let converged = ista.objective.last!
        let fista = CompressedSensing.reconstruct(a, y, lambda: lambda, iterations: 300, method: .fista)
        #expect(abs(fista.objective.last! - converged) <= 1e-5 * converged, "\(fista.objective.last!) vs \(converged)")
        #expect(abs(mfista.objective.last! - converged) <= 1e-5 * converged)
        #expect(fista.objective[50] < ista.objective[50], "FISTA is faster")
        #expect(converged < ista.objective[0], "better than zero-filled")
    }
}

@Suite("RIM recurrent cells")
struct RecurrentCellTests {
    /// Sets every weight of a 1×1, one-channel cell from `values` (in namedParameters order).
    static func scalarCell(_ kind: RecurrentCellKind, _ values: [Float]) -> RecurrentCell {
        var rng = Random(seed: 1)
        let cell = kind.make(input: 1, hidden: 1, kernel: 1, rng: &rng)
        for ((_, p), v) in zip(cell.namedParameters(), values) { p.value = Tensor(shape: p.value.shape, data: [v]) }
        return cell
    }

    static func step(_ cell: RecurrentCell, x: Float, h: Float) -> Float {
        let g = Graph(threads: 1, gradEnabled: false)
        return cell(g.input(Tensor(shape: [1, 1, 1, 1], data: [x])), g.input(Tensor(shape: [1, 1, 1, 1], data: [h]))).value.data[0]
    }

    @Test("each cell's step equals its equations computed by hand")
    func handStep() {
        func sig(_ v: Double) -> Double { 1 / (1 + Foundation.exp(-v)) }
        let (x, h) = (0.8, -0.5)
        // GRU: wr (w, b), ur, wz (w, b), uz, wn (w, b), un.
        let gru = Self.scalarCell(.gru, [0.5, 0.1, -0.3, 0.2, -0.2, 0.4, 0.7, 0.05, 0.6])
        #expect(gru.namedParameters().map(\.name) == ["wr.weight", "wr.bias", "ur.weight", "wz.weight", "wz.bias", "uz.weight", "wn.weight", "wn.bias", "un.weight"])
        let r = sig(0.5 * x + 0.1 - 0.3 * h), z = sig(0.2 * x - 0.2 + 0.4 * h), n = Foundation.tanh(0.7 * x + 0.05 + r * (0.6 * h))
        #expect(abs(Double(Self.step(gru, x: Float(x), h: Float(h))) - ((1 - z) * n + z * h)) < 1e-5)
        // MGU: wf (w, b), uf, wc (w, b), uc.
        let mgu = Self.scalarCell(.mgu, [0.9, -0.1, 0.3, -0.4, 0.2, 0.8])
        let f = sig(0.9 * x - 0.1 + 0.3 * h), c = Foundation.tanh(-0.4 * x + 0.2 + f * (0.8 * h))
        #expect(abs(Double(Self.step(mgu, x: Float(x), h: Float(h))) - (f * h + (1 - f) * c)) < 1e-5)
        // IndRNN: w (w, b), u.
        let ind = Self.scalarCell(.indrnn, [1.5, 0.2, -0.7])
        #expect(abs(Double(Self.step(ind, x: Float(x), h: Float(h))) - max(0, 1.5 * x + 0.2 - 0.7 * h)) < 1e-6)
        #expect(Self.step(ind, x: -1, h: 1) == 0, "ReLU")
    }

    @Test("gradients of every cell agree with finite differences (inputs, state and parameters)", arguments: RecurrentCellKind.allCases)
    func gradients(_ kind: RecurrentCellKind) {
        var rng = Random(seed: 4)
        let cell = kind.make(input: 3, hidden: 4, kernel: 3, rng: &rng)
        // Larger weights than the initialisation so the check sees non-trivial gates.
        for p in cell.parameters { p.value = rng.normal(p.value.shape, std: 0.5) }
        let x = rng.normal([2, 3, 5, 5]), h = rng.normal([2, 4, 5, 5])
        let r = gradCheck(inputs: [x, h], parameters: cell.parameters, options: GradCheckOptions(eps: 1e-2, atol: 2e-2, rtol: 2e-2)) { _, v in cell(v[0], v[1]) }
        #expect(r.passed, "\(kind): \(r)")
    }

    @Test("initialisations: GRU orthogonal, MGU Xavier-uniform bounds, IndRNN's small normal; multiply counts 3 : 2 : 1")
    func initialisation() {
        var rng = Random(seed: 9)
        let gru = RecurrentCellKind.gru.make(input: 8, hidden: 8, kernel: 1, rng: &rng)
        let w = gru.namedParameters().first { $0.name == "ur.weight" }!.parameter.value      // [8, 8, 1, 1]
        for i in 0..<8 { for j in 0..<8 {
            var d: Float = 0
            for k in 0..<8 { d += w.data[i * 8 + k] * w.data[j * 8 + k] }
            #expect(abs(d - (i == j ? 1 : 0)) < 1e-5)
        } }
        let mgu = RecurrentCellKind.mgu.make(input: 4, hidden: 6, kernel: 3, rng: &rng)
        let bound = Float((6.0 / Double(4 * 9 + 6 * 9)).squareRoot())
        #expect(mgu.namedParameters().first { $0.name == "wf.weight" }!.parameter.value.data.allSatisfy { abs($0) <= bound })
        let ind = RecurrentCellKind.indrnn.make(input: 4, hidden: 16, kernel: 3, rng: &rng)
        let u = ind.namedParameters().first { $0.name == "u" }!.parameter.value
        let std = (u.data.map { Double($0 * $0) }.reduce(0, +) / 16).squareRoot()
        #expect(std < 5 / (16.0 * 10), "N(0, 1/(C(1 + k²))) is small")
        #expect([RecurrentCellKind.gru, .mgu, .indrnn].map(\.gates) == [3, 2, 1])
    }
}

@Suite("Data consistency in the graph")
struct DataConsistencyTests {
    @Test("the graph's data-consistency gradient equals the forward model's per image, and back-propagates (gradient check)")
    func graphGradient() throws {
        let models = try (0..<2).map { try ForwardModel(mask: try Mask.make(.gaussian2D, height: 6, width: 8, acceleration: 2, seed: UInt64($0)).values) }
        let truth = (0..<2).map { randomComplex([6, 8], seed: 20 + UInt64($0)) }
        let y = zip(models, truth).map { $0.apply($1) }
        var rng = Random(seed: 3)
        let x = rng.normal([2, 2, 6, 8])
        let g = Graph(threads: 1, gradEnabled: false)
        let out = g.dataConsistencyGradient(g.input(x), models: models, measurements: y).value
        for i in 0..<2 {
            let xi = ComplexTensor(real: Tensor(shape: [6, 8], data: Array(x.data[(96 * i)..<(96 * i + 48)])),
                                   imag: Tensor(shape: [6, 8], data: Array(x.data[(96 * i + 48)..<(96 * i + 96)])))
            let want = models[i].gradient(xi, y[i])
            for k in 0..<48 {
                #expect(abs(out.data[96 * i + k] - want.data[2 * k]) < 1e-5 && abs(out.data[96 * i + 48 + k] - want.data[2 * k + 1]) < 1e-5)
            }
        }
        let r = gradCheck(inputs: [x]) { g, v in g.dataConsistencyGradient(v[0], models: models, measurements: y) }
        #expect(r.passed, "\(r)")
    }

    @Test("with complex coil sensitivities (multi-coil SENSE) the node still equals Sᴴ·F⁻¹·M·(M·F·S·x − y) and passes the gradient check")
    func multiCoil() throws {
        let mask = try Mask.make(.poissonDisc, height: 6, width: 8, acceleration: 2, seed: 4).values
        let s = randomComplex([3, 6, 8], seed: 31)
        let model = try ForwardModel(mask: mask, sensitivities: s)
        let y = model.apply(randomComplex([6, 8], seed: 32))
        var rng = Random(seed: 5)
        let x = rng.normal([1, 2, 6, 8])
        let g = Graph(threads: 1, gradEnabled: false)
        let out = g.dataConsistencyGradient(g.input(x), models: [model], measurements: [y]).value
        let xc = ComplexTensor(real: Tensor(shape: [6, 8], data: Array(x.data[0..<48])), imag: Tensor(shape: [6, 8], data: Array(x.data[48..<96])))
        let want = model.gradient(xc, y)
        for k in 0..<48 {
            #expect(abs(out.data[k] - want.data[2 * k]) < 1e-4 && abs(out.data[48 + k] - want.data[2 * k + 1]) < 1e-4)
        }
        let r = gradCheck(inputs: [x], options: GradCheckOptions(eps: 1e-2, atol: 1e-2, rtol: 1e-2)) { g, v in
            g.dataConsistencyGradient(v[0], models: [model], measurements: [y])
        }
        #expect(r.passed, "\(r)")
    }
}

@Suite("Phantoms and NMSE")
struct PhantomTests {
    @Test("the modified Shepp–Logan phantom has its known intensities: 1 on the skull, 0.2 in the brain, 0.3 in the top ellipse, 0 outside")
    func sheppLogan() {
        let n = 128
        let p = Phantoms.sheppLogan(height: n, width: n)
        func at(_ x: Double, _ y: Double) -> Float {
            let c = Int(((x + 1) * Double(n) - 1) / 2), r = Int(((1 - y) * Double(n) - 1) / 2)
            return p.data[r * n + c]
        }
        #expect(abs(at(0, 0.9) - 1) < 1e-6)
        #expect(abs(at(0, 0) - 0.2) < 1e-6)
        #expect(abs(at(0, 0.35) - 0.3) < 1e-6)
        #expect(at(0.95, 0.95) == 0)
        #expect(abs(at(0.22, 0) - 0) < 1e-6, "the right dark ellipse: 1 − 0.8 − 0.2")
        #expect(p.data.allSatisfy { $0 >= 0 && $0 <= 1 })
    }

    @Test("random phantoms are seeded, in [0, 1], and differ between seeds")
    func random() {
        let a = Phantoms.randomEllipses(height: 32, width: 32, seed: 1), b = Phantoms.randomEllipses(height: 32, width: 32, seed: 1)
        let c = Phantoms.randomEllipses(height: 32, width: 32, seed: 2)
        #expect(a == b && a != c)
        #expect(a.data.allSatisfy { $0 >= 0 && $0 <= 1 } && a.data.contains { $0 > 0.5 } && a.data[0] == 0)
    }

    @Test("NMSE: 0 for identical images, the hand value for a scaled copy, NaN when undefined")
    func nmse() {
        let x: [Float] = [1, 2, 3, 4]
        #expect(MRIMetrics.nmse(x, x) == 0)
        #expect(abs(MRIMetrics.nmse(x.map { $0 * 1.1 }, x) - 0.01) < 1e-6, "Float rounding of 1.1·x")
        #expect(MRIMetrics.nmse(x, [0, 0, 0, 0]).isNaN && MRIMetrics.nmse(x, [1]).isNaN)
    }
}
