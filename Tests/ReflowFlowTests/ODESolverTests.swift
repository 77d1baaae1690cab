import Foundation
import Testing
import ReflowAutograd
import ReflowEngine
import ReflowFlow
import ReflowNN
import ReflowTestSupport

/// Fields with closed-form flows (references in Double) and the checks of ODESolvers.swift.
@Suite("ODESolver")
struct ODESolverTests {
    init() { BLAS.setLibraryThreads(1) }

    // MARK: fields and exact solutions

    /// dx/dt = −x·cos t, elementwise: x(t) = x(s)·exp(−(sin t − sin s)).
    static let cosField = AnalyticVelocity(dimension: 1, pointwise: { x, t, v in v[0] = -x[0] * Foundation.cos(t) })
    static func cosExact(_ xs: Double, from s: Double, to t: Double) -> Double {
        xs * Foundation.exp(-(Foundation.sin(t) - Foundation.sin(s)))
    }

    /// dx/dt = x², elementwise: x(t) = x(s) / (1 − x(s)·(t − s)).
    static let squareField = AnalyticVelocity(dimension: 1, pointwise: { x, _, v in v[0] = x[0] * x[0] })
    static func squareExact(_ xs: Double, from s: Double, to t: Double) -> Double { xs / (1 - xs * (t - s)) }

    /// A spiral: z' = c·(1 + t)·z for z = x + iy, c = 0.2 + 5i (rows [x, y]);
    /// z(t) = z(s)·exp(c·(G(t) − G(s))), G(t) = t + t²/2. Curved enough that RK4's error stays
    /// far above Float32 rounding up to 64 steps.
    static let spiralC = (re: 0.2, im: 5.0)
    static let spiralField = AnalyticVelocity(dimension: 2, pointwise: { x, t, v in
        let g = 1 + t, cr = Float(spiralC.re), ci = Float(spiralC.im)
        v[0] = g * (cr * x[0] - ci * x[1])
        v[1] = g * (cr * x[1] + ci * x[0])
    })
    static func spiralExact(_ x: Double, _ y: Double, from s: Double, to t: Double) -> (Double, Double) {
        let dg = (t + t * t / 2) - (s + s * s / 2)
        let mag = Foundation.exp(spiralC.re * dg), ang = spiralC.im * dg
        let (c, sn) = (Foundation.cos(ang), Foundation.sin(ang))
        return (mag * (x * c - y * sn), mag * (x * sn + y * c))
    }

    enum Problem: String, CaseIterable, CustomTestStringConvertible {
        case cos, square, spiral
        var testDescription: String { rawValue }
        var field: AnalyticVelocity {
            switch self {
            case .cos: ODESolverTests.cosField
            case .square: ODESolverTests.squareField
            case .spiral: ODESolverTests.spiralField
            }
        }
        var start: Tensor {
            switch self {
            case .cos: Tensor(shape: [3, 1], data: [1, -2, 0.5])
            case .square: Tensor(shape: [4, 1], data: [0.5, 0.8, -1, 0.3])
            case .spiral: Tensor(shape: [3, 2], data: [1, 0, 0.3, -0.7, -1.2, 0.4])
            }
        }
        /// The exact state at t of the trajectory through `x` at s, in Double.
        func exact(_ x: Tensor, from s: Double, to t: Double) -> [Double] {
            switch self {
            case .cos: return x.data.map { ODESolverTests.cosExact(Double($0), from: s, to: t) }
            case .square: return x.data.map { ODESolverTests.squareExact(Double($0), from: s, to: t) }
            case .spiral:
                var out: [Double] = []
                for r in 0..<x.shape[0] {
                    let (a, b) = ODESolverTests.spiralExact(Double(x[r, 0]), Double(x[r, 1]), from: s, to: t)
                    out += [a, b]
                }
                return out
            }
        }
    }

    static func maxError(_ a: Tensor, _ ref: [Double]) -> Double {
        zip(a.data, ref).reduce(0) { max($0, Swift.abs(Double($1.0) - $1.1)) }
    }

    /// Least-squares slope of log(error) against log(N) (the observed order is −slope).
    static func observedOrder(_ ns: [Int], _ errors: [Double]) -> Double {
        let xs = ns.map { Foundation.log(Double($0)) }, ys = errors.map { Foundation.log($0) }
        let mx = xs.reduce(0, +) / Double(xs.count), my = ys.reduce(0, +) / Double(ys.count)
        let sxy = zip(xs, ys).reduce(0) { $0 + ($1.0 - mx) * ($1.1 - my) }
        let sxx = xs.reduce(0) { $0 + ($1 - mx) * ($1 - mx) }
        return -sxy / sxx
    }

    static func allFixed(steps n: Int) -> [ODEMethod] {
        [.euler(steps: n), .heun(steps: n), .midpoint(steps: n), .rk4(steps: n), .rfSolver2(steps: n)]
    }

    // MARK: the exact Gaussian → Gaussian rectified flow

    @Test("Gaussian→Gaussian RF field: v is the derivative of the flow map (central FD) and equals x1 − x0")
    func gaussianFieldIsTheFlow() throws {
        let mu: [Float] = [1.5, -0.5], sigma: Float = 0.4
        let f = try AnalyticVelocity.gaussianRectifiedFlow(mean: mu, std: sigma)
        let x0: [Double] = [0.7, -1.3]
        func flow(_ t: Double) -> [Double] {
            (0..<2).map { (1 - t + t * Double(sigma)) * x0[$0] + t * Double(mu[$0]) }
        }
        for t in [0.0, 0.1, 0.37, 0.5, 0.9, 1.0] {
            let xt = flow(t).map(Float.init)
            var v = [Float](repeating: 0, count: 2)
            f.velocity(xt, count: 1, t: Float(t), into: &v)
            let eps = 1e-4
            let lo = flow(Swift.max(0, t - eps)), hi = flow(Swift.min(1, t + eps))
            let span = Swift.min(1, t + eps) - Swift.max(0, t - eps)
            for c in 0..<2 {
                let fd = (hi[c] - lo[c]) / span
                #expect(Swift.abs(Double(v[c]) - fd) < 1e-5, "t \(t) coord \(c): v \(v[c]) vs FD \(fd)")
                // Straight coupling x1 = μ + σ·x0: the velocity along the path is x1 − x0.
                let x1 = Double(mu[c]) + Double(sigma) * x0[c]
                #expect(Swift.abs(Double(v[c]) - (x1 - x0[c])) < 1e-5)
            }
        }
        #expect(throws: ODEError.self) { try AnalyticVelocity.gaussianRectifiedFlow(mean: [0], std: 0) }
        #expect(throws: ODEError.self) { try AnalyticVelocity.gaussianRectifiedFlow(mean: [], std: 1) }
    }

    @Test("on the straight Gaussian RF every method is exact, even with one step, both directions")
    func straightFlowIsExact() throws {
        let mu: [Float] = [2, -1, 0.5], sigma: Float = 1.7
        let f = try AnalyticVelocity.gaussianRectifiedFlow(mean: mu, std: sigma)
        let x0 = randn([16, 3], seed: 11)
        var x1 = x0
        for r in 0..<16 { for c in 0..<3 { x1[r, c] = mu[c] + sigma * x0[r, c] } }
        for method in Self.allFixed(steps: 1) + Self.allFixed(steps: 3) + [.rk45(rtol: 1e-4, atol: 1e-4)] {
            let fwd = try ODESolver.solve(field: f, x: x0, method: method, direction: .forward)
            expectClose(fwd.x, x1, atol: 2e-5, rtol: 2e-5, "\(method) forward")
            let back = try ODESolver.solve(field: f, x: x1, method: method, direction: .backward)
            expectClose(back.x, x0, atol: 2e-5, rtol: 2e-5, "\(method) backward")
        }
    }

    // MARK: orders of convergence

    @Test("fixed-step solvers converge at their theoretical order (log-log slope over N = 8…64)",
          arguments: [("euler", 1.0), ("heun", 2.0), ("midpoint", 2.0), ("rfSolver2", 2.0), ("rk4", 4.0)])
    func convergenceOrder(_ name: String, _ order: Double) throws {
        let ns = [8, 16, 32, 64]
        func method(_ n: Int) -> ODEMethod {
            switch name {
            case "euler": .euler(steps: n)
            case "heun": .heun(steps: n)
            case "midpoint": .midpoint(steps: n)
            case "rfSolver2": .rfSolver2(steps: n)
            default: .rk4(steps: n)
            }
        }
        // RK4 needs the curved spiral so that its error at N = 64 (≈ 2e-5) stays far above
        // Float32 rounding; on it the low-order methods are still pre-asymptotic at N = 8.
        // x² is pre-asymptotic for Euler at these N (observed order 0.68), so only −x·cos t.
        let problems: [Problem] = name == "rk4" ? [.spiral] : [.cos]
        for p in problems {
            let ref = p.exact(p.start, from: 0, to: 1)
            var errors: [Double] = []
            for n in ns {
                let sol = try ODESolver.solve(field: p.field, x: p.start, method: method(n), direction: .forward)
                errors.append(Self.maxError(sol.x, ref))
            }
            let observed = Self.observedOrder(ns, errors)
            #expect(Swift.abs(observed - order) < 0.3, "\(name) on \(p): observed order \(observed), errors \(errors)")
            #expect(errors.allSatisfy { $0 > 1e-5 }, "\(name) on \(p): errors \(errors) reach Float32 rounding")
            for i in 1..<errors.count { #expect(errors[i] < errors[i - 1]) }
        }
    }

    @Test("backward solves converge to the exact inverse flow at the same order")
    func backwardConvergence() throws {
        let p = Problem.cos
        let x1 = Tensor(shape: [3, 1], data: p.exact(p.start, from: 0, to: 1).map(Float.init))
        let ref = p.start.data.map(Double.init)
        for (method, order) in [(ODEMethod.euler(steps: 0), 1.0), (.rfSolver2(steps: 0), 2.0), (.heun(steps: 0), 2.0)] {
            var errors: [Double] = []
            for n in [8, 16, 32, 64] {
                let m: ODEMethod = switch method {
                case .euler: .euler(steps: n)
                case .heun: .heun(steps: n)
                default: .rfSolver2(steps: n)
                }
                errors.append(Self.maxError(try ODESolver.solve(field: p.field, x: x1, method: m, direction: .backward).x, ref))
            }
            let observed = Self.observedOrder([8, 16, 32, 64], errors)
            #expect(Swift.abs(observed - order) < 0.3, "\(method.name) backward: order \(observed), errors \(errors)")
        }
    }

    @Test("an ε start (t ∈ [1e-3, 1]) integrates from ε: forward and backward match the exact flow")
    func epsilonStart() throws {
        let p = Problem.spiral, eps: Float = 1e-3
        let ref = p.exact(p.start, from: Double(eps), to: 1)
        let sol = try ODESolver.solve(field: p.field, x: p.start, method: .rk4(steps: 256), direction: .forward,
                                      tStart: eps, recordTrajectory: true)
        #expect(Self.maxError(sol.x, ref) < 1e-4)
        #expect(sol.trajectory?.first?.t == eps)
        #expect(sol.trajectory?.last?.t == 1)
        let x1 = Tensor(shape: p.start.shape, data: ref.map(Float.init))
        let back = try ODESolver.solve(field: p.field, x: x1, method: .rk45(rtol: 1e-6, atol: 1e-6), direction: .backward,
                                       tStart: eps, recordTrajectory: true)
        #expect(Self.maxError(back.x, p.start.data.map(Double.init)) < 1e-4)
        #expect(back.trajectory?.first?.t == 1)
        #expect(back.trajectory?.last?.t == eps)
    }

    // MARK: RF-Solver-2

    @Test("RF-Solver-2 (Taylor form) equals explicit midpoint to 1e-6")
    func rfSolver2IsMidpoint() throws {
        for p in Problem.allCases {
            for n in [1, 4, 16, 64] {
                for dir in [ODEDirection.forward, .backward] {
                    let a = try ODESolver.solve(field: p.field, x: p.start, method: .rfSolver2(steps: n), direction: dir)
                    let b = try ODESolver.solve(field: p.field, x: p.start, method: .midpoint(steps: n), direction: dir)
                    expectClose(a.x, b.x, atol: 1e-6, rtol: 1e-6, "\(p) N \(n) \(dir)")
                    #expect(a.nfe == b.nfe)
                }
            }
        }
    }

    @Test("RF-Solver-2 with N steps beats Euler with 2N steps (equal NFE), forward and inversion")
    func rfSolver2BeatsEuler() throws {
        for p in Problem.allCases {
            let ref1 = p.exact(p.start, from: 0, to: 1)
            let x1 = Tensor(shape: p.start.shape, data: ref1.map(Float.init))
            // N ≥ 8: at N = 4 the spiral (|h·λ| ≈ 2.5) and the backward x² (h·2x = 2) are outside
            // both methods' stability regions, where neither error means anything.
            for n in [8, 16, 32] {
                let rf = try ODESolver.solve(field: p.field, x: p.start, method: .rfSolver2(steps: n), direction: .forward)
                let eu = try ODESolver.solve(field: p.field, x: p.start, method: .euler(steps: 2 * n), direction: .forward)
                #expect(rf.nfe == eu.nfe)
                #expect(Self.maxError(rf.x, ref1) < Self.maxError(eu.x, ref1), "\(p) N \(n) forward")
                // Inversion (data → noise), as in the paper's reconstruction experiments.
                let rfb = try ODESolver.solve(field: p.field, x: x1, method: .rfSolver2(steps: n), direction: .backward)
                let eub = try ODESolver.solve(field: p.field, x: x1, method: .euler(steps: 2 * n), direction: .backward)
                let ref0 = p.start.data.map(Double.init)
                #expect(Self.maxError(rfb.x, ref0) < Self.maxError(eub.x, ref0), "\(p) N \(n) backward")
            }
        }
    }

    // MARK: RK45

    @Test("RK45 meets its tolerance (error ≤ 10·(atol + rtol·|y|)) and NFE grows as it tightens")
    func rk45Tolerance() throws {
        for p in Problem.allCases {
            let ref = p.exact(p.start, from: 0, to: 1)
            var lastNFE = 0, firstNFE = 0
            for tol in [1e-3, 1e-4, 1e-5, 1e-6] {
                let sol = try ODESolver.solve(field: p.field, x: p.start, method: .rk45(rtol: tol, atol: tol, maxNFE: 100_000),
                                              direction: .forward)
                for (a, r) in zip(sol.x.data, ref) {
                    #expect(Swift.abs(Double(a) - r) <= 10 * (tol + tol * Swift.abs(r)), "\(p) tol \(tol): \(a) vs \(r)")
                }
                let st = sol.blocks[0]
                #expect(sol.nfe == 2 + 6 * (st.acceptedSteps + st.rejectedSteps))
                #expect(sol.nfe >= lastNFE, "\(p) tol \(tol): NFE \(sol.nfe) after \(lastNFE)")
                if tol == 1e-3 { firstNFE = sol.nfe }
                lastNFE = sol.nfe
            }
            #expect(lastNFE > firstNFE, "\(p): NFE \(firstNFE) at 1e-3, \(lastNFE) at 1e-6")
        }
    }

    @Test("RK45 takes the same steps as scipy.integrate.solve_ivp(method='RK45') on a smooth problem")
    func rk45MatchesScipyStepCounts() throws {
        // scipy 1.17.1, solve_ivp(f, (0, 1), y0, method="RK45", rtol=r, atol=r) → (nfev, steps):
        //   f = −y·cos t, y0 = [1, −2, 0.5]:        r = 1e-3 → (14, 2), 1e-4 → (20, 3), 1e-5 → (20, 3)
        //   f = y²,       y0 = [0.5, 0.8, −1, 0.3]: r = 1e-3 → (26, 3), 1e-5 → (68, 7)
        // (At r = 1e-6 the Float32 rounding of the stages, ~1e-4 of the tolerance-scaled error on
        // the tiny first step, caps the first growth factor below scipy's 10: 32 NFE vs 26.)
        let cases: [(Problem, Double, Int, Int)] = [(.cos, 1e-3, 14, 2), (.cos, 1e-4, 20, 3), (.cos, 1e-5, 20, 3),
                                                    (.square, 1e-3, 26, 3), (.square, 1e-5, 68, 7)]
        for (p, tol, nfev, steps) in cases {
            let sol = try ODESolver.solve(field: p.field, x: p.start, method: .rk45(rtol: tol, atol: tol), direction: .forward)
            #expect(sol.nfe == nfev, "\(p) tol \(tol)")
            #expect(sol.blocks[0].acceptedSteps == steps, "\(p) tol \(tol)")
        }
    }

    @Test("forward then backward returns the start: error shrinks with N; RK45 at 1e-6 within 1e-4")
    func forwardBackwardRoundTrip() throws {
        for p in [Problem.square, .spiral] {
            for i in 0..<5 {
                var errors: [Double] = []
                for n in [8, 32] {
                    let m = Self.allFixed(steps: n)[i]
                    let fwd = try ODESolver.solve(field: p.field, x: p.start, method: m, direction: .forward)
                    let back = try ODESolver.solve(field: p.field, x: fwd.x, method: m, direction: .backward)
                    errors.append(Self.maxError(back.x, p.start.data.map(Double.init)))
                }
                #expect(errors[1] < errors[0] / 2, "\(p) \(Self.allFixed(steps: 1)[i].name): \(errors)")
            }
            let m = ODEMethod.rk45(rtol: 1e-6, atol: 1e-6)
            let fwd = try ODESolver.solve(field: p.field, x: p.start, method: m, direction: .forward)
            let back = try ODESolver.solve(field: p.field, x: fwd.x, method: m, direction: .backward)
            #expect(Self.maxError(back.x, p.start.data.map(Double.init)) < 1e-4, "\(p) rk45")
        }
    }

    // MARK: NFE and trajectories

    /// Counts evaluations (and the points they covered) of an inner field.
    final class CountingField: VelocityField {
        let inner: AnalyticVelocity
        var calls = 0, times: [Float] = []
        init(_ inner: AnalyticVelocity) { self.inner = inner }
        var dimension: Int { inner.dimension }
        func velocity(_ x: UnsafePointer<Float>, count: Int, t: Float, into v: UnsafeMutablePointer<Float>) {
            calls += 1
            times.append(t)
            inner.velocity(x, count: count, t: t, into: v)
        }
    }

    @Test("NFE is exact: fixed-step methods use steps × stages evaluations, RK45 counts every call")
    func nfeAccounting() throws {
        for method in Self.allFixed(steps: 7) + [.rk45(rtol: 1e-5, atol: 1e-5), .rk45(rtol: 1e-3, atol: 1e-6)] {
            for dir in [ODEDirection.forward, .backward] {
                let f = CountingField(Self.spiralField)
                let sol = try ODESolver.solve(field: f, x: Problem.spiral.start, method: method, direction: dir)
                #expect(sol.nfe == f.calls, "\(method) \(dir)")
                #expect(sol.nfeMean == Double(f.calls))
                if let fixed = method.fixedNFE { #expect(f.calls == fixed) }
                // Every evaluation is inside the interval.
                #expect(f.times.allSatisfy { $0 >= 0 && $0 <= 1 }, "\(method) \(dir): \(f.times)")
            }
        }
        #expect(ODEMethod.euler(steps: 7).fixedNFE == 7)
        #expect(ODEMethod.heun(steps: 7).fixedNFE == 14)
        #expect(ODEMethod.midpoint(steps: 7).fixedNFE == 14)
        #expect(ODEMethod.rfSolver2(steps: 7).fixedNFE == 14)
        #expect(ODEMethod.rk4(steps: 7).fixedNFE == 28)
        #expect(ODEMethod.rk45().fixedNFE == nil)
    }

    @Test("Euler evaluates at t_i = i/N forward and 1 − i/N backward")
    func eulerTimeGrid() throws {
        let f = CountingField(Self.cosField)
        _ = try ODESolver.solve(field: f, x: Problem.cos.start, method: .euler(steps: 4), direction: .forward)
        #expect(f.times == [0, 0.25, 0.5, 0.75])
        let g = CountingField(Self.cosField)
        _ = try ODESolver.solve(field: g, x: Problem.cos.start, method: .euler(steps: 4), direction: .backward)
        #expect(g.times == [1, 0.75, 0.5, 0.25])
        let h = CountingField(Self.cosField)
        _ = try ODESolver.solve(field: h, x: Problem.cos.start, method: .midpoint(steps: 2), direction: .forward)
        #expect(h.times == [0, 0.25, 0.5, 0.75])
    }

    @Test("trajectories hold the start and every accepted step, end exactly at the interval end")
    func trajectories() throws {
        let p = Problem.spiral
        for method in Self.allFixed(steps: 5) + [.rk45(rtol: 1e-4, atol: 1e-4)] {
            for dir in [ODEDirection.forward, .backward] {
                let sol = try ODESolver.solve(field: p.field, x: p.start, method: method, direction: dir, recordTrajectory: true)
                let traj = try #require(sol.trajectory)
                #expect(traj.count == sol.blocks[0].acceptedSteps + 1)
                if let s = method.steps { #expect(traj.count == s + 1) }
                #expect(traj.first!.t == (dir == .forward ? 0 : 1))
                #expect(traj.last!.t == (dir == .forward ? 1 : 0))
                expectBitwiseEqual(traj.first!.x, p.start)
                expectBitwiseEqual(traj.last!.x, sol.x)
                for i in 1..<traj.count {
                    #expect(dir == .forward ? traj[i].t > traj[i - 1].t : traj[i].t < traj[i - 1].t)
                }
                let plain = try ODESolver.solve(field: p.field, x: p.start, method: method, direction: dir)
                expectBitwiseEqual(plain.x, sol.x)
                #expect(plain.trajectory == nil)
            }
        }
    }

    // MARK: validation

    @Test("invalid methods have a validation message and make every entry point throw")
    func invalidMethods() throws {
        let bad: [ODEMethod] = [
            .euler(steps: 0), .heun(steps: -1), .midpoint(steps: 0), .rk4(steps: ODEMethod.maxSteps + 1), .rfSolver2(steps: 0),
            .rk45(rtol: 0, atol: 1e-5, maxNFE: 100), .rk45(rtol: -1e-3, atol: 1e-5, maxNFE: 100),
            .rk45(rtol: .nan, atol: 1e-5, maxNFE: 100), .rk45(rtol: .infinity, atol: 1e-5, maxNFE: 100),
            .rk45(rtol: 1e-5, atol: 0, maxNFE: 100), .rk45(rtol: 1e-5, atol: .nan, maxNFE: 100),
            .rk45(rtol: 1e-5, atol: .infinity, maxNFE: 100), .rk45(rtol: 1e-5, atol: 1e-5, maxNFE: 0),
        ]
        let sd = Self.model(seed: 1)
        let z = Tensor.zeros([3, 2])
        for m in bad {
            let msg = try #require(m.validationError(), "\(m)")
            #expect(msg.hasPrefix(m.name + "."), "\(msg)")
            do {
                _ = try ODESolver.solve(field: Self.spiralField, x: z, method: m, direction: .forward)
                Issue.record("\(m) did not throw")
            } catch let e as ODEError {
                #expect(e == .invalidArgument(msg))
                #expect(e.description.contains(msg))
            }
            #expect(throws: ODEError.invalidArgument(msg)) {
                try ODESolver.solve(model: ModelSpec(Self.config), stateDict: sd, x: z, method: m, direction: .backward, threads: 2)
            }
            var block = [Float](repeating: 0, count: 6)
            #expect(throws: ODEError.invalidArgument(msg)) {
                try ODESolver.integrate(Self.spiralField, x: &block, rows: 3, method: m, direction: .forward)
            }
        }
        for m in Self.allFixed(steps: 1) + Self.allFixed(steps: ODEMethod.maxSteps) + [.rk45(), .rk45(rtol: 1, atol: 1e9, maxNFE: 1)] {
            #expect(m.validationError() == nil, "\(m)")
        }
        #expect(throws: ODEError.self) {
            try EulerSampler.sample(model: ModelSpec(Self.config), stateDict: sd, z0: z, steps: 0, threads: 1)
        }
    }

    @Test("bad inputs throw clear errors: shapes, non-finite x, interval, threads, blockRows, config")
    func invalidInputs() throws {
        let sd = Self.model(seed: 2)
        func message(_ body: () throws -> Void) -> String? {
            do { try body(); return nil } catch let e as ODEError {
                if case .invalidArgument(let m) = e { return m }
                return nil
            } catch { return nil }
        }
        let m = ODEMethod.euler(steps: 2)
        #expect(message { _ = try ODESolver.solve(field: Self.spiralField, x: Tensor.zeros([3, 3]), method: m, direction: .forward) }?
            .contains("expected [rows, 2]") == true)
        #expect(message { _ = try ODESolver.solve(field: Self.spiralField, x: Tensor.zeros([6]), method: m, direction: .forward) } != nil)
        var nanX = Tensor.zeros([3, 2]); nanX[1, 1] = .nan
        #expect(message { _ = try ODESolver.solve(field: Self.spiralField, x: nanX, method: m, direction: .forward) }?
            .contains("x[1, 1]") == true)
        #expect(message { _ = try ODESolver.solve(model: ModelSpec(Self.config), stateDict: sd, x: nanX, method: m, direction: .forward, threads: 1) } != nil)
        for (a, b) in [(Float(0.5), Float(0.5)), (0.7, 0.2), (-0.1, 1), (0, 1.5), (.nan, 1), (0, .infinity)] {
            #expect(message { _ = try ODESolver.solve(field: Self.spiralField, x: Tensor.zeros([3, 2]), method: m, direction: .forward,
                                                      tStart: a, tEnd: b) }?.contains("tStart") == true, "\(a) \(b)")
        }
        #expect(message { _ = try ODESolver.solve(model: ModelSpec(Self.config), stateDict: sd, x: Tensor.zeros([3, 2]), method: m,
                                                  direction: .forward, threads: 0) }?.contains("threads") == true)
        #expect(message { _ = try ODESolver.solve(model: ModelSpec(Self.config), stateDict: sd, x: Tensor.zeros([3, 2]), method: m,
                                                  direction: .forward, threads: 1, blockRows: 0) }?.contains("blockRows") == true)
        #expect(message { _ = try ODESolver.solve(model: ModelSpec(Self.config), stateDict: sd, x: Tensor.zeros([3, 3]), method: m,
                                                  direction: .forward, threads: 1) }?.contains("expected [rows, 2]") == true)
        var badConfig = Self.config; badConfig.depth = 0
        #expect(message { _ = try ODESolver.solve(model: ModelSpec(badConfig), stateDict: sd, x: Tensor.zeros([3, 2]), method: m,
                                                  direction: .forward, threads: 1) }?.contains("/depth") == true)
        #expect(message { _ = try ODESolver.solve(model: ModelSpec(Self.config), stateDict: sd, x: Tensor.zeros([3, 2]),
                                                  method: .rk45(), direction: .forward, threads: 1, blockRows: 2,
                                                  recordTrajectory: true) }?.contains("single block") == true)
        #expect(message { _ = try ODESolver.solve(model: ModelSpec(Self.config), stateDict: sd, x: Tensor.zeros([2000, 2]),
                                                  method: .euler(steps: 100_000), direction: .forward, threads: 1,
                                                  recordTrajectory: true) }?.contains("limit") == true)
        var missing = sd; missing.removeValue(forKey: "layers.0.weight")
        #expect(throws: StateDictError.missing("layers.0.weight")) {
            try ODESolver.solve(model: ModelSpec(Self.config), stateDict: missing, x: Tensor.zeros([3, 2]), method: m, direction: .forward, threads: 2)
        }
        // No rows: nothing to do, no evaluation.
        let empty = try ODESolver.solve(model: ModelSpec(Self.config), stateDict: sd, x: Tensor.zeros([0, 2]), method: .rk45(),
                                        direction: .forward, threads: 2)
        #expect(empty.x.shape == [0, 2] && empty.nfe == 0)
    }

    @Test("exceeding maxNFE and non-finite velocities give clear RK45 errors")
    func rk45Failures() throws {
        let p = Problem.spiral
        do {
            _ = try ODESolver.solve(field: p.field, x: p.start, method: .rk45(rtol: 1e-6, atol: 1e-6, maxNFE: 40), direction: .forward)
            Issue.record("maxNFE 40 was enough?")
        } catch let e as ODEError {
            guard case .maxNFEExceeded(let limit, let t, let target) = e else { Issue.record("\(e)"); return }
            #expect(limit == 40 && t < 1 && target == 1)
            #expect(e.description.contains("maxNFE = 40"))
        }
        // The counting field never sees more than maxNFE evaluations.
        let f = CountingField(p.field)
        #expect(throws: ODEError.self) {
            try ODESolver.solve(field: f, x: p.start, method: .rk45(rtol: 1e-6, atol: 1e-6, maxNFE: 100), direction: .backward)
        }
        #expect(f.calls <= 100)
        for limit in [1, 2, 7] {
            #expect(throws: ODEError.self) {
                try ODESolver.solve(field: p.field, x: p.start, method: .rk45(rtol: 1e-3, atol: 1e-3, maxNFE: limit), direction: .forward)
            }
        }
        // The MLP driver reports it too.
        #expect(throws: ODEError.self) {
            try ODESolver.solve(model: ModelSpec(Self.config), stateDict: Self.model(seed: 3), x: randn([9, 2], seed: 4),
                                method: .rk45(rtol: 1e-6, atol: 1e-6, maxNFE: 8), direction: .forward, threads: 2, blockRows: 4)
        }
        // A field that turns NaN after t = 0.5.
        let nanField = AnalyticVelocity(dimension: 1, pointwise: { x, t, v in v[0] = t > 0.5 ? .nan : x[0] })
        do {
            _ = try ODESolver.solve(field: nanField, x: Tensor(shape: [1, 1], data: [1]), method: .rk45(maxNFE: 100_000),
                                    direction: .forward)
            Issue.record("a NaN field did not throw")
        } catch let e as ODEError {
            guard case .nonFinite(let t) = e else { Issue.record("\(e)"); return }
            #expect(t <= 0.5 && t > 0.3, "\(t)")
            #expect(e.description.contains("non-finite"))
        }
        // A blow-up (x' = x², x(0) = 2 explodes at t = 0.5): the step size collapses.
        #expect(throws: ODEError.self) {
            try ODESolver.solve(field: Self.squareField, x: Tensor(shape: [1, 1], data: [2]), method: .rk45(maxNFE: 1_000_000),
                                direction: .forward)
        }
    }

    @Test("ODEMethod and ODEDirection round-trip through JSON; rk45 has the paper's defaults")
    func codable() throws {
        let methods: [ODEMethod] = Self.allFixed(steps: 12) + [.rk45(), .rk45(rtol: 1e-3, atol: 1e-6, maxNFE: 500)]
        let data = try JSONEncoder().encode(methods)
        #expect(try JSONDecoder().decode([ODEMethod].self, from: data) == methods)
        #expect(try JSONDecoder().decode(ODEMethod.self, from: Data(#"{"kind":"euler","steps":100}"#.utf8)) == .euler(steps: 100))
        #expect(try JSONDecoder().decode(ODEMethod.self, from: Data(#"{"kind":"rk45"}"#.utf8)) == .rk45(rtol: 1e-5, atol: 1e-5, maxNFE: 10_000))
        #expect(throws: DecodingError.self) { try JSONDecoder().decode(ODEMethod.self, from: Data(#"{"kind":"heun"}"#.utf8)) }
        #expect(ODEMethod.rk45(rtol: 2, atol: 1, maxNFE: 5).validationPointer()?.pointer == "/rtol")
        #expect(ODEMethod.euler(steps: 0).validationPointer()?.pointer == "/steps")
        #expect(try JSONDecoder().decode(ODEDirection.self, from: Data(#""backward""#.utf8)) == .backward)
        #expect(ODEMethod.rk45() == .rk45(rtol: 1e-5, atol: 1e-5, maxNFE: 10_000))
    }

    // MARK: the MLP driver

    static let config = VelocityMLPConfig(dimension: 2, width: 16, depth: 2)

    static func model(seed: UInt64, config: VelocityMLPConfig = config) -> [String: Tensor] {
        var rng = Random(seed: seed)
        return VelocityMLP(config, rng: &rng).stateDict()
    }

    /// Euler written directly against the graph (the original EulerSampler loop), either direction.
    static func handEuler(_ config: VelocityMLPConfig, _ sd: [String: Tensor], _ z0: Tensor, steps: Int,
                          backward: Bool = false) throws -> Tensor {
        let net = try VelocityMLP(config, stateDict: sd)
        let g = Graph(threads: 1, gradEnabled: false)
        let n = z0.shape[0], d = config.dimension
        var x = z0
        let dt = (backward ? -1 : 1) / Float(steps)
        for i in 0..<steps {
            g.reset()
            let t = (backward ? 1 : 0) + Float(i) * dt
            var packed = Tensor.zeros([n, d + 1])
            for r in 0..<n {
                for c in 0..<d { packed[r, c] = x[r, c] }
                packed[r, d] = t
            }
            let v = net(packed: g.constant(packed)).value
            for j in 0..<(n * d) { x.data[j] += dt * v.data[j] }
        }
        return x
    }

    @Test("MLP driver: Euler matches the hand-written loop (bit for bit at equal GEMM shapes) and EulerSampler, both directions")
    func mlpEulerMatchesHandLoop() throws {
        let sd = Self.model(seed: 5)
        let z0 = randn([23, 2], seed: 6)
        for steps in [1, 6] {
            let sol = try ODESolver.solve(model: ModelSpec(Self.config), stateDict: sd, x: z0, method: .euler(steps: steps),
                                          direction: .forward, threads: 2, blockRows: 5)
            let hand = try Self.handEuler(Self.config, sd, z0, steps: steps)
            // Blocks of 5 rows run other GEMM shapes than the whole batch of 23 (M = 5 even takes
            // the engine's own small-M loop), and BLAS promises no bitwise equality across shapes:
            // OpenBLAS's Prescott kernels round element 29 differently (−0.07400045 vs
            // −0.07400042). Same arithmetic up to summation order, so a tolerance of a few ulp
            // per step. docs/NUMERICS.md, "Bitwise equality and BLAS kernels".
            expectClose(sol.x, hand, atol: 1e-6, rtol: 1e-5, "blockRows 5 vs whole batch, steps \(steps)")
            // EulerSampler runs the whole batch as one block, the same GEMM shapes and thread split
            // as the hand loop: that is bit for bit under every kernel.
            expectBitwiseEqual(try EulerSampler.sample(model: ModelSpec(Self.config), stateDict: sd, z0: z0, steps: steps, threads: 1),
                               hand, "EulerSampler vs hand loop, steps \(steps)")
            #expect(sol.nfe == steps && sol.nfeMean == Double(steps) && sol.blocks.count == 5)
            let back = try ODESolver.solve(model: ModelSpec(Self.config), stateDict: sd, x: z0, method: .euler(steps: steps),
                                           direction: .backward, threads: 1)
            expectBitwiseEqual(back.x, try Self.handEuler(Self.config, sd, z0, steps: steps, backward: true), "backward \(steps)")
        }
    }

    @Test("MLP driver: threads 1 and 2 give identical results for every method", arguments: [3, 1024])
    func mlpThreadIndependence(_ blockRows: Int) throws {
        let sd = Self.model(seed: 7)
        let z0 = randn([20, 2], seed: 8)
        for method in Self.allFixed(steps: 3) + [.rk45(rtol: 1e-4, atol: 1e-4)] {
            for dir in [ODEDirection.forward, .backward] {
                let rec = blockRows >= 20 || method.steps != nil
                let one = try ODESolver.solve(model: ModelSpec(Self.config), stateDict: sd, x: z0, method: method, direction: dir,
                                              threads: 1, blockRows: blockRows, recordTrajectory: rec)
                let two = try ODESolver.solve(model: ModelSpec(Self.config), stateDict: sd, x: z0, method: method, direction: dir,
                                              threads: 2, blockRows: blockRows, recordTrajectory: rec)
                expectBitwiseEqual(one.x, two.x, "\(method) \(dir) blockRows \(blockRows)")
                #expect(one.blocks == two.blocks && one.nfe == two.nfe && one.nfeMean == two.nfeMean)
                #expect(one.trajectory?.count == two.trajectory?.count)
                for (a, b) in zip(one.trajectory ?? [], two.trajectory ?? []) {
                    #expect(a.t == b.t)
                    expectBitwiseEqual(a.x, b.x)
                }
                if rec { expectBitwiseEqual(try #require(one.trajectory?.last).x, one.x) }
                if let fixed = method.fixedNFE { #expect(one.nfe == fixed && one.nfeMean == Double(fixed)) }
                #expect(one.nfeMean <= Double(one.nfe))
            }
        }
    }

    @Test("MLP driver equals the single-block solver over an MLPVelocityField; fixed-step rows do not depend on blocks")
    func mlpDriverMatchesFieldSolve() throws {
        // Width 8: every GEMM runs in the engine's own loops, whose arithmetic per row does not
        // depend on how many rows a block has (see EulerSamplerTests).
        let tiny = VelocityMLPConfig(dimension: 2, width: 8, depth: 2)
        let sd = Self.model(seed: 9, config: tiny)
        let z0 = randn([17, 2], seed: 10)
        let field = try NetworkVelocityField(model: ModelSpec(tiny), stateDict: sd)
        #expect(field.dimension == 2)
        for method in Self.allFixed(steps: 4) + [.rk45(rtol: 1e-4, atol: 1e-4)] {
            let whole = try ODESolver.solve(field: field, x: z0, method: method, direction: .backward)
            let driver = try ODESolver.solve(model: ModelSpec(tiny), stateDict: sd, x: z0, method: method, direction: .backward,
                                             threads: 2, blockRows: 1024)
            expectBitwiseEqual(whole.x, driver.x, "\(method)")
            #expect(whole.nfe == driver.nfe)
            if method.steps != nil {
                let blocked = try ODESolver.solve(model: ModelSpec(tiny), stateDict: sd, x: z0, method: method, direction: .backward,
                                                  threads: 2, blockRows: 4)
                expectBitwiseEqual(whole.x, blocked.x, "\(method) blockRows 4")
            }
        }
    }

    @Test("MLP driver: RK45 per-block adaptivity, NFE bookkeeping and a forward/backward round trip")
    func mlpRK45() throws {
        let sd = Self.model(seed: 11)
        let z0 = randn([30, 2], seed: 12)
        let m = ODEMethod.rk45(rtol: 1e-6, atol: 1e-6)
        let fwd = try ODESolver.solve(model: ModelSpec(Self.config), stateDict: sd, x: z0, method: m, direction: .forward,
                                      threads: 2, blockRows: 8)
        #expect(fwd.blocks.count == 4)
        #expect(fwd.nfe == fwd.blocks.map(\.nfe).max())
        let mean = (8.0 * Double(fwd.blocks[0].nfe + fwd.blocks[1].nfe + fwd.blocks[2].nfe) + 6.0 * Double(fwd.blocks[3].nfe)) / 30
        #expect(Swift.abs(fwd.nfeMean - mean) < 1e-12)
        for b in fwd.blocks { #expect(b.nfe == 2 + 6 * (b.acceptedSteps + b.rejectedSteps)) }
        let back = try ODESolver.solve(model: ModelSpec(Self.config), stateDict: sd, x: fwd.x, method: m, direction: .backward,
                                       threads: 2, blockRows: 8)
        expectClose(back.x, z0, atol: 1e-4, rtol: 0)
        // Against a fine RK4 reference.
        let ref = try ODESolver.solve(model: ModelSpec(Self.config), stateDict: sd, x: z0, method: .rk4(steps: 200), direction: .forward,
                                      threads: 2)
        expectClose(fwd.x, ref.x, atol: 2e-5, rtol: 2e-5)
    }
}
