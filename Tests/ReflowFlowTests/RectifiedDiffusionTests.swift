import Foundation
import Testing
import ReflowEngine
import ReflowNN
import ReflowAutograd
@testable import ReflowFlow
import ReflowTestSupport

/// VP diffusion as an interpolant, DDIM through networks, phased rectification and the
/// first-order-ness metric (issue #12).
@Suite("Rectified Diffusion: VP interpolant, DDIM plans, phases, first-order-ness")
struct RectifiedDiffusionTests {
    init() { BLAS.setLibraryThreads(1) }

    /// ε̂ = a fixed multiple of the state plus a per-index offset: not constant along a path.
    struct DriftingEpsilon: NoisePredictionField {
        let dimension: Int
        func epsilon(_ x: UnsafePointer<Float>, count: Int, index: Int, into eps: UnsafeMutablePointer<Float>) {
            for j in 0..<(count * dimension) { eps[j] = 0.9 * x[j] + Float(index) * 1e-3 }
        }
    }

    @Test("interpolant wire forms: the flow stays the string of earlier releases; vp round-trips; unknown kinds are errors")
    func wire() throws {
        let e = JSONEncoder()
        #expect(String(decoding: try e.encode(Interpolant.rectifiedFlow), as: UTF8.self) == #""rectifiedFlow""#)
        let vp = try JSONDecoder().decode(Interpolant.self, from: Data(#"{"kind": "vp", "prediction": "v", "schedule": {"kind": "cosine"}}"#.utf8))
        #expect(vp == .diffusion(VPDiffusion(schedule: .cosine(), prediction: .v)))
        #expect(try JSONDecoder().decode(Interpolant.self, from: try e.encode(vp)) == vp)
        #expect(try JSONDecoder().decode(Interpolant.self, from: Data(#"{"kind": "vp"}"#.utf8)) == .diffusion(VPDiffusion()))
        #expect(throws: DecodingError.self) { try JSONDecoder().decode(Interpolant.self, from: Data(#"{"kind": "ve"}"#.utf8)) }
        #expect(throws: DecodingError.self) { try JSONDecoder().decode(Interpolant.self, from: Data(#""vp""#.utf8)) }
        #expect(Interpolant.diffusion(VPDiffusion(schedule: .linear(steps: 1))).validationError()?.pointer == "/schedule/steps")
    }

    @Test("VP fill: index T − 1 − ⌊t·T⌋ (trailing DDIM's on a k-grid), network time 1 − (i + ½)/T, x_i and the ε / v targets by hand; the data-space factor")
    func fill() throws {
        let d = 3, rows = 4
        let x0 = randn([rows, d], seed: 1), x1 = randn([rows, d], seed: 2)
        let ts: [Float] = [0, 0.25, 0.9995, 1]
        for prediction in DiffusionPrediction.allCases {
            let vp = VPDiffusion(prediction: prediction)
            let interp = Interpolant.diffusion(vp)
            var t = ts, xt = [Float](repeating: 0, count: rows * d), target = xt
            x0.data.withUnsafeBufferPointer { a in x1.data.withUnsafeBufferPointer { b in
                t.withUnsafeMutableBufferPointer { tb in xt.withUnsafeMutableBufferPointer { xb in target.withUnsafeMutableBufferPointer { gb in
                    interp.fill(x0: a.baseAddress!, x1: b.baseAddress!, t: tb.baseAddress!, rows: rows, size: d, xt: xb.baseAddress!, target: gb.baseAddress!)
                } } } } }
            let indices = [999, 749, 0, 0]
            for r in 0..<rows {
                let i = indices[r]
                #expect(vp.index(flowTime: ts[r]) == i)
                #expect(t[r] == Float(1 - (Double(i) + 0.5) / 1000))
                #expect(vp.index(networkTime: t[r]) == i)
                #expect(vp.index(flowTime: vp.flowTime(index: i)) == i)
                let bar = vp.alphaBars[i], a = Float(bar.squareRoot()), s = Float((1 - bar).squareRoot())
                for c in 0..<d {
                    let e = x0.data[r * d + c], x = x1.data[r * d + c]
                    #expect(xt[r * d + c] == a * x + s * e)
                    #expect(target[r * d + c] == (prediction == .epsilon ? e : a * e - s * x))
                }
                // The factor maps an output error to the error of x̂0: perturb the target by δ.
                let scale = interp.dataScale(networkTime: t[r]), delta: Float = 1e-2
                let predicted: (Float) -> Float = { out in
                    prediction == .epsilon ? (xt[r * d] - s * out) / a : a * xt[r * d] - s * out
                }
                let err = abs(predicted(target[r * d] + delta) - predicted(target[r * d]))
                #expect(abs(err - scale * delta) <= 1e-3 * max(1, scale * delta))
            }
            // v → ε: ε̂ = σ·x + α·v̂ recovers the noise from the exact v target.
            var v = target
            let i = 750, bar = vp.alphaBars[i]
            let xi = (0..<(rows * d)).map { Float(bar.squareRoot()) * x1.data[$0] + Float((1 - bar).squareRoot()) * x0.data[$0] }
            let vt = (0..<(rows * d)).map { Float(bar.squareRoot()) * x0.data[$0] - Float((1 - bar).squareRoot()) * x1.data[$0] }
            v = prediction == .v ? vt : x0.data
            xi.withUnsafeBufferPointer { xb in v.withUnsafeMutableBufferPointer { vb in vp.epsilon(from: vb.baseAddress!, x: xb.baseAddress!, count: rows * d, index: i) } }
            expectClose(Tensor(shape: [rows, d], data: v), x0, atol: 1e-5, rtol: 1e-5)
        }
        #expect(Interpolant.rectifiedFlow.dataScale(networkTime: 0.25) == 0.75)
    }

    @Test("element-wise pseudo-Huber: hand value per sample, and its gradient against finite differences")
    func elementwiseHuber() throws {
        let pred = randn([3, 4], seed: 3), target = randn([3, 4], seed: 4)
        let loss = Loss.elementwisePseudoHuber(c: 0.1)
        let g = Graph(threads: 1, gradEnabled: false)
        let value = loss(g.constant(pred), g.constant(target)).scalar
        var hand = 0.0
        for j in 0..<12 { let dlt = Double(pred.data[j] - target.data[j]); hand += ((dlt * dlt + 0.01).squareRoot() - 0.1) / 4 }
        #expect(abs(Double(value) - hand / 3) < 1e-5)
        let r = gradCheck(inputs: [pred, target], options: GradCheckOptions(eps: 1e-3, atol: 2e-3, rtol: 2e-2)) { _, xs in loss(xs[0], xs[1]) }
        #expect(r.passed, "\(r)")
        let json = try JSONDecoder().decode(Loss.self, from: Data(#"{"kind": "elementwisePseudoHuber"}"#.utf8))
        #expect(json == .elementwisePseudoHuber(c: 1e-3))
        #expect(Loss.elementwisePseudoHuber(c: 0).validationError() != nil)
    }

    @Test("DDIM through a network: ODESolver equals DDIM.sample / DDIM.invert on its noise field, bit for bit across threads; mismatched methods are refused")
    func networkDDIM() throws {
        let d = 2, n = 37
        for prediction in DiffusionPrediction.allCases {
            let vp = VPDiffusion(prediction: prediction)
            let model = ModelSpec(VelocityMLPConfig(dimension: d, width: 16, depth: 2, timeInput: .sinusoidal(features: 8, scale: 1000)))
            var rng = Random(seed: 5)
            let net = model.config.makeNetwork(rng: &rng)
            let weights = net.stateDict()
            let z = randn([n, d], seed: 6)
            let sol = try ODESolver.solve(model: model, stateDict: weights, x: z, method: .ddim(steps: 4), interpolant: .diffusion(vp),
                                          direction: .forward, threads: 2, blockRows: 8, recordTrajectory: true)
            var ref = z.data
            let field = NetworkNoiseField(NetworkVelocityField(network: try model.makeNetwork(stateDict: weights)), vp)
            ref.withUnsafeMutableBufferPointer { _ = DDIM.sample(field, x: $0.baseAddress!, rows: n, indices: [999, 749, 499, 249], schedule: vp.schedule) }
            // (One block of 37 rows against blocks of 8: BLAS may round other shapes differently.)
            expectClose(sol.x, Tensor(shape: [n, d], data: ref), atol: 1e-4, rtol: 1e-5)
            #expect(sol.nfe == 4 && sol.trajectory?.map(\.t) == [0, 0.25, 0.5, 0.75, 1])
            let one = try ODESolver.solve(model: model, stateDict: weights, x: z, method: .ddim(steps: 4), interpolant: .diffusion(vp),
                                          direction: .forward, threads: 1, blockRows: 8)
            expectBitwiseEqual(one.x, sol.x, "the same blocks give the same bits on any number of threads")
            // Backward is DDIM inversion of the same field.
            let back = try ODESolver.solve(model: model, stateDict: weights, x: z, method: .ddim(steps: 4), interpolant: .diffusion(vp),
                                           direction: .backward, threads: 1, blockRows: 64)
            var inv = z.data
            inv.withUnsafeMutableBufferPointer { _ = DDIM.invert(field, x: $0.baseAddress!, rows: n, indices: [999, 749, 499, 249], schedule: vp.schedule) }
            expectClose(back.x, Tensor(shape: [n, d], data: inv), atol: 1e-4, rtol: 1e-5)
            // A flow solver on the diffusion model, DDIM on a flow: refused with the reason.
            #expect(throws: ODEError.self) {
                try ODESolver.solve(model: model, stateDict: weights, x: z, method: .euler(steps: 4), interpolant: .diffusion(vp), direction: .forward, threads: 1)
            }
            #expect(throws: ODEError.self) {
                try ODESolver.solve(model: model, stateDict: weights, x: z, method: .ddim(steps: 4), direction: .forward, threads: 1)
            }
            #expect(throws: ODEError.self) {
                try ODESolver.solve(model: model, stateDict: weights, x: z, method: .ddim(steps: 1001), interpolant: .diffusion(vp), direction: .forward, threads: 1)
            }
        }
    }

    @Test("phase bounds; the phased fill puts x_u on the constant-ε path, recovers ε, and one DDIM move lands on the phase end")
    func phased() throws {
        let b = PhasedRectification.boundaries(phases: 4, steps: 1000)
        #expect(b.map(\.start) == [999, 749, 499, 249] && b.map(\.end) == [749, 499, 249, -1])
        #expect(PhasedRectification.boundaries(phases: 1, steps: 1000).map(\.end) == [-1])
        let vp = VPDiffusion(), d = 3, rows = 4
        let data = randn([rows, d], seed: 7), noise = randn([rows, d], seed: 8)
        let phase: [Int32] = [0, 1, 2, 3]
        func point(_ i: Int, _ j: Int) -> Float {
            let bar = vp.alphaBar(i)
            return Float(bar.squareRoot()) * data.data[j] + Float((1 - bar).squareRoot()) * noise.data[j]
        }
        var xs = [Float](repeating: 0, count: rows * d), xe = xs
        for r in 0..<rows { for c in 0..<d { xs[r * d + c] = point(b[r].start, r * d + c); xe[r * d + c] = point(b[r].end, r * d + c) } }
        var t: [Float] = [0, 0.5, 0.999, 0.3], xu = xs, target = xs, scale = [Float](repeating: 0, count: rows)
        phase.withUnsafeBufferPointer { p in xs.withUnsafeBufferPointer { a in xe.withUnsafeBufferPointer { e in
            t.withUnsafeMutableBufferPointer { tb in xu.withUnsafeMutableBufferPointer { u in target.withUnsafeMutableBufferPointer { g in
                scale.withUnsafeMutableBufferPointer { sc in
                    PhasedRectification.fill(vp, bounds: b, phase: p.baseAddress!, xs: a.baseAddress!, xe: e.baseAddress!, t: tb.baseAddress!,
                                             rows: rows, size: d, xu: u.baseAddress!, target: g.baseAddress!, scale: sc.baseAddress!)
                } } } } } } }
        expectClose(Tensor(shape: [rows, d], data: target), noise, atol: 2e-3, rtol: 2e-3)
        for r in 0..<rows {
            let u = vp.index(networkTime: t[r])
            #expect(u > b[r].end && u <= b[r].start)
            for c in 0..<d { #expect(abs(xu[r * d + c] - point(u, r * d + c)) < 1e-4) }
            // One DDIM move from u with ε̂ = ε' + δ lands δ·scale away from x_e.
            for delta: Float in [0, 0.01] {
                var x = Array(xu[(r * d)..<((r + 1) * d)])
                let eps = Array(target[(r * d)..<((r + 1) * d)]).map { $0 + delta }
                x.withUnsafeMutableBufferPointer { xb in eps.withUnsafeBufferPointer { eb in
                    DDIM.move(xb.baseAddress!, eps: eb.baseAddress!, count: d, from: u, to: b[r].end, alphaBars: vp.alphaBars)
                } }
                for c in 0..<d { #expect(abs(abs(x[c] - xe[r * d + c]) - delta * scale[r]) < 1e-3) }
            }
        }
    }

    @Test("phased fill for a v-prediction student: its target's ε̂ is ε', and the factor maps a v error to the phase-end error")
    func phasedV() throws {
        let vp = VPDiffusion(schedule: .cosine(), prediction: .v), eps = VPDiffusion(schedule: .cosine())
        let b = PhasedRectification.boundaries(phases: 2, steps: 1000), d = 3, rows = 2
        let data = randn([rows, d], seed: 13), noise = randn([rows, d], seed: 14)
        func point(_ i: Int, _ j: Int) -> Float {
            let bar = vp.alphaBar(i)
            return Float(bar.squareRoot()) * data.data[j] + Float((1 - bar).squareRoot()) * noise.data[j]
        }
        var xs = [Float](repeating: 0, count: rows * d), xe = xs
        for r in 0..<rows { for c in 0..<d { xs[r * d + c] = point(b[r].start, r * d + c); xe[r * d + c] = point(b[r].end, r * d + c) } }
        let phase: [Int32] = [0, 1]
        func fill(_ v: VPDiffusion) -> (xu: [Float], target: [Float], scale: [Float], t: [Float]) {
            var t: [Float] = [0.4, 0.6], xu = xs, target = xs, scale = [Float](repeating: 0, count: rows)
            phase.withUnsafeBufferPointer { p in xs.withUnsafeBufferPointer { a in xe.withUnsafeBufferPointer { e in
                t.withUnsafeMutableBufferPointer { tb in xu.withUnsafeMutableBufferPointer { u in target.withUnsafeMutableBufferPointer { g in
                    scale.withUnsafeMutableBufferPointer { sc in
                        PhasedRectification.fill(v, bounds: b, phase: p.baseAddress!, xs: a.baseAddress!, xe: e.baseAddress!, t: tb.baseAddress!,
                                                 rows: rows, size: d, xu: u.baseAddress!, target: g.baseAddress!, scale: sc.baseAddress!)
                    } } } } } } }
            return (xu, target, scale, t)
        }
        let fv = fill(vp), fe = fill(eps)
        #expect(fv.xu == fe.xu && fv.t == fe.t)
        for r in 0..<rows {
            let u = vp.index(networkTime: fv.t[r])
            // ε̂ from the v target is the ε target.
            var out = Array(fv.target[(r * d)..<((r + 1) * d)])
            let x = Array(fv.xu[(r * d)..<((r + 1) * d)])
            x.withUnsafeBufferPointer { xb in out.withUnsafeMutableBufferPointer { vp.epsilon(from: $0.baseAddress!, x: xb.baseAddress!, count: d, index: u) } }
            for c in 0..<d { #expect(abs(out[c] - fe.target[r * d + c]) < 1e-4) }
            // A v error δ moves the phase end by δ·scale.
            let delta: Float = 0.01
            var shifted = Array(fv.target[(r * d)..<((r + 1) * d)]).map { $0 + delta }
            x.withUnsafeBufferPointer { xb in shifted.withUnsafeMutableBufferPointer { vp.epsilon(from: $0.baseAddress!, x: xb.baseAddress!, count: d, index: u) } }
            var moved = x
            moved.withUnsafeMutableBufferPointer { mb in shifted.withUnsafeBufferPointer { eb in
                DDIM.move(mb.baseAddress!, eps: eb.baseAddress!, count: d, from: u, to: b[r].end, alphaBars: vp.alphaBars)
            } }
            for c in 0..<d { #expect(abs(abs(moved[c] - xe[r * d + c]) - delta * fv.scale[r]) < 1e-3) }
        }
    }

    @Test("first-order-ness: 0 on a constant-ε field, positive on a drifting one, equal to a direct sum over the ε̂ the moves used")
    func firstOrderness() throws {
        let vp = VPDiffusion(), d = 2, rows = 5, steps = 8
        let idx = DDIM.trailingIndices(steps: steps, of: 1000)
        func frames<F: NoisePredictionField>(_ f: F, start: [Float]) -> [[Float]] {
            var x = start, out: [[Float]] = []
            x.withUnsafeMutableBufferPointer { xb in
                _ = DDIM.run(f, x: xb.baseAddress!, rows: rows, indices: idx, alphaBars: vp.alphaBars, end: -1, direction: .forward) { _, p in
                    out.append(Array(UnsafeBufferPointer(start: p, count: rows * d)))
                }
            }
            return out
        }
        let z = randn([rows, d], seed: 9).data
        let constant = frames(DiffusionTests.ConstantEpsilon(noise: randn([rows, d], seed: 10).data, dimension: d), start: z)
        #expect(FirstOrderness.measure(vp, indices: idx, frames: constant, dimension: d) < 1e-6)
        let drifting = frames(DriftingEpsilon(dimension: d), start: z)
        let measured = FirstOrderness.measure(vp, indices: idx, frames: drifting, dimension: d)
        // Direct: ε̂ evaluated on each frame (as the moves did) against ε* from the ends.
        let visited = idx + [-1], b0 = vp.alphaBar(999)
        var direct = 0.0
        for k in 0..<steps {
            for j in 0..<(rows * d) {
                let epsHat = 0.9 * Double(drifting[k][j]) + Double(Float(visited[k]) * 1e-3)
                let epsStar = (Double(drifting[0][j]) - b0.squareRoot() * Double(drifting[steps][j])) / (1 - b0).squareRoot()
                direct += (epsHat - epsStar) * (epsHat - epsStar)
            }
        }
        direct /= Double(steps * rows * d)
        #expect(measured > 1e-3 && abs(measured - direct) <= 1e-3 * direct)
    }
}

@Suite("Losses: L1")
struct L1LossTests {
    @Test("l1 is the mean absolute difference; its wire form round-trips")
    func l1() throws {
        let pred = randn([2, 3], seed: 11), target = randn([2, 3], seed: 12)
        let g = Graph(threads: 1, gradEnabled: false)
        let value = Loss.l1(g.constant(pred), g.constant(target)).scalar
        let hand = zip(pred.data, target.data).map { Double(abs($0 - $1)) }.reduce(0, +) / 6
        #expect(abs(Double(value) - hand) < 1e-6)
        let l = try JSONDecoder().decode(Loss.self, from: Data(#"{"kind": "l1"}"#.utf8))
        #expect(l == .l1)
        #expect(try JSONDecoder().decode(Loss.self, from: try JSONEncoder().encode(l)) == .l1)
    }
}
