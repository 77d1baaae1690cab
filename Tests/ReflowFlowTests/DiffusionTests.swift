import Foundation
import Testing
import ReflowEngine
@testable import ReflowFlow
import ReflowTestSupport

/// VP schedules, DDIM and the analytic fields (issue #12's foundation).
@Suite("Diffusion: schedules, DDIM, analytic fields")
struct DiffusionTests {
    /// ε̂ = the fixed noise of each row, whatever x and the index.
    struct ConstantEpsilon: NoisePredictionField {
        let noise: [Float]
        let dimension: Int
        func epsilon(_ x: UnsafePointer<Float>, count: Int, index: Int, into eps: UnsafeMutablePointer<Float>) {
            for j in 0..<(count * dimension) { eps[j] = noise[j] }
        }
    }

    @Test("β schedules against hand values; ᾱ decreasing")
    func schedules() throws {
        let lin = NoiseSchedule.linear()
        let b = lin.betas, a = lin.alphaBars
        #expect(b.count == 1000 && b[0] == 1e-4 && abs(b[999] - 0.02) < 1e-15)
        #expect(abs(b[1] - (1e-4 + 0.0199 / 999)) < 1e-15)
        #expect(abs(a[0] - 0.9999) < 1e-15 && abs(a[1] - 0.9999 * (1 - b[1])) < 1e-15)
        // ᾱ_999 of DDPM's linear schedule ≈ 4.04e-5.
        #expect(abs(a[999] - 4.0358e-5) < 1e-8)
        let cos = NoiseSchedule.cosine()
        let cb = cos.betas, ca = cos.alphaBars
        let f0 = pow(Foundation.cos(0.008 / 1.008 * Double.pi / 2), 2), f1 = pow(Foundation.cos((0.001 + 0.008) / 1.008 * Double.pi / 2), 2)
        #expect(abs(cb[0] - (1 - f1 / f0)) < 1e-15)
        #expect(cb[999] == 0.999, "clipped at the end")
        for s in [a, ca] { #expect(zip(s, s.dropFirst()).allSatisfy { $0 > $1 } && s.allSatisfy { $0 > 0 && $0 < 1 }) }
        #expect(NoiseSchedule.linear(steps: 1).validationError()?.pointer == "/steps")
        #expect(try JSONDecoder().decode(NoiseSchedule.self, from: Data(#"{"kind": "cosine"}"#.utf8)) == .cosine())
    }

    @Test("trailing spacing: [999], [999, 499], [999, 749, 499, 249], and every index at N = T")
    func trailing() {
        #expect(DDIM.trailingIndices(steps: 1, of: 1000) == [999])
        #expect(DDIM.trailingIndices(steps: 2, of: 1000) == [999, 499])
        #expect(DDIM.trailingIndices(steps: 4, of: 1000) == [999, 749, 499, 249])
        #expect(DDIM.trailingIndices(steps: 1000, of: 1000) == Array((0..<1000).reversed()))
    }

    @Test("DDIM is exact for a constant-ε field: one step, several steps, and inversion then sampling")
    func constantEpsilon() throws {
        let d = 3, n = 4
        let x0 = randn([n, d], seed: 1), noise = randn([n, d], seed: 2)
        let field = ConstantEpsilon(noise: noise.data, dimension: d)
        for schedule in [NoiseSchedule.linear(), .cosine()] {
            let a = schedule.alphaBars[999]
            for steps in [1, 2, 4, 25] {
                var x = (0..<(n * d)).map { Float(a.squareRoot() * Double(x0.data[$0]) + (1 - a).squareRoot() * Double(noise.data[$0])) }
                let nfe = x.withUnsafeMutableBufferPointer {
                    DDIM.sample(field, x: $0.baseAddress!, rows: n, indices: DDIM.trailingIndices(steps: steps, of: 1000), schedule: schedule)
                }
                #expect(nfe == steps)
                expectClose(Tensor(shape: [n, d], data: x), x0, atol: 2e-3, rtol: 1e-3)
            }
            // Inversion reaches the noisy state of the same path, and sampling returns the data.
            var x = x0.data
            let idx = DDIM.trailingIndices(steps: 10, of: 1000)
            x.withUnsafeMutableBufferPointer { _ = DDIM.invert(field, x: $0.baseAddress!, rows: n, indices: idx, schedule: schedule) }
            let want = (0..<(n * d)).map { Float(a.squareRoot() * Double(x0.data[$0]) + (1 - a).squareRoot() * Double(noise.data[$0])) }
            expectClose(Tensor(shape: [n, d], data: x), Tensor(shape: [n, d], data: want), atol: 1e-4, rtol: 1e-4)
            x.withUnsafeMutableBufferPointer { _ = DDIM.sample(field, x: $0.baseAddress!, rows: n, indices: idx, schedule: schedule) }
            expectClose(Tensor(shape: [n, d], data: x), x0, atol: 2e-3, rtol: 1e-3)
        }
    }

    @Test("inversion then sampling on the analytic VP ε-field of a small dataset: the error falls about as 1/N")
    func analyticRoundTrip() throws {
        var rng = Random(seed: 3)
        let data = rng.normal([8, 2], std: 1.5)
        let flow = try AnalyticFlow(data: data)
        let schedule = NoiseSchedule.linear()
        let field = flow.epsilonField(schedule: schedule)
        // Round trips between index 249 (partly noised data) and 999: the exact field is smooth
        // there (at index −1 it maps every noise onto a data point, so clean off-data points
        // cannot come back).
        let a = schedule.alphaBars[249]
        let noise = rng.normal([8, 2])
        let start = (0..<16).map { Float(a.squareRoot() * Double(data.data[$0]) + (1 - a).squareRoot() * Double(noise.data[$0])) }
        func error(_ steps: Int) -> Double {
            var x = start
            let idx = (0..<steps).map { 999 - $0 * 750 / steps }
            x.withUnsafeMutableBufferPointer { b in
                DDIM.invert(field, x: b.baseAddress!, rows: 8, indices: idx, schedule: schedule, start: 249)
                DDIM.sample(field, x: b.baseAddress!, rows: 8, indices: idx, schedule: schedule, final: 249)
            }
            return zip(x, start).map { Double($0 - $1) * Double($0 - $1) }.reduce(0, +).squareRoot()
        }
        let e10 = error(10), e20 = error(20), e40 = error(40)
        #expect(e10 > 1e-3, "a real discretisation error: \(e10)")
        #expect(e20 / e10 > 0.25 && e20 / e10 < 0.75, "halving the step roughly halves the error: \(e10) → \(e20)")
        #expect(e40 / e20 > 0.25 && e40 / e20 < 0.75, "\(e20) → \(e40)")
    }

    @Test("the analytic flow's velocity equals (E[x1|x] − x)/(1 − t) with E[x1|x] from finite differences of log p_t")
    func analyticFlowAgainstFiniteDifferences() throws {
        var rng = Random(seed: 4)
        let flow = try AnalyticFlow(data: rng.normal([5, 3]))
        for t: Float in [0.2, 0.5, 0.8] {
            let x = rng.normal([1, 3]).data
            var v = [Float](repeating: 0, count: 3)
            x.withUnsafeBufferPointer { xp in v.withUnsafeMutableBufferPointer { flow.velocity(xp.baseAddress!, count: 1, t: t, into: $0.baseAddress!) } }
            // ∇log p_t by central differences; E[x1|x] = (x + (1 − t)²·∇log p_t)/t.
            let h: Float = 1e-2, s = Double(1 - t)
            for c in 0..<3 {
                var xp = x, xm = x
                xp[c] += h
                xm[c] -= h
                let grad = (flow.logDensity(xp, t: t) - flow.logDensity(xm, t: t)) / Double(xp[c] - xm[c])
                let mean = (Double(x[c]) + s * s * grad) / Double(t)
                let want = (mean - Double(x[c])) / s
                #expect(abs(Double(v[c]) - want) < 2e-3 * max(1, abs(want)), "t = \(t), c = \(c): \(v[c]) vs \(want)")
            }
        }
        #expect(throws: ODEError.self) { try AnalyticFlow(data: Tensor(shape: [0, 2], data: [])) }
    }
}
