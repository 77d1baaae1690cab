import Foundation
import Testing
import ReflowEngine
@testable import ReflowFlow
import ReflowTestSupport

/// Asserts that `body` throws a MetricError for `argument`.
private func expectMetricError(_ argument: String, _ fragment: String = "",
                               sourceLocation: SourceLocation = #_sourceLocation,
                               _ body: () throws -> Any) {
    do {
        let v = try body()
        Issue.record("expected a MetricError for \(argument), got \(v)", sourceLocation: sourceLocation)
    } catch let error as MetricError {
        #expect(error.argument == argument, "\(error)", sourceLocation: sourceLocation)
        #expect(fragment.isEmpty || error.message.contains(fragment), "\(error)", sourceLocation: sourceLocation)
    } catch {
        Issue.record("expected a MetricError, got \(error)", sourceLocation: sourceLocation)
    }
}

private func points(_ rows: [[Float]]) -> Tensor {
    Tensor(shape: [rows.count, rows.first?.count ?? 0], data: rows.flatMap { $0 })
}

/// States z_i = f(t_i) for every row of a base set of points.
private func trajectory(_ n: Int, times: [Double], _ f: (Int, Double) -> (Double, Double)) -> [Tensor] {
    times.map { t in
        Tensor(shape: [n, 2], data: (0..<n).flatMap { r -> [Float] in let p = f(r, t); return [Float(p.0), Float(p.1)] })
    }
}

private func uniformTimes(_ steps: Int) -> [Double] { (0...steps).map { Double($0) / Double(steps) } }

@Suite("Metrics: straightness and transport cost")
struct StraightnessTests {
    @Test("exact straight constant-speed paths have straightness 0")
    func straightIsZero() throws {
        // Integer states: every difference is exact.
        let z0 = points([[0, 0], [3, -1], [-2, 5]]), dir = points([[1, 2], [-4, 0], [7, 7]])
        let traj = (0...8).map { i in Tensor(shape: [3, 2], data: (0..<6).map { z0.data[$0] + Float(i) * dir.data[$0] }) }
        #expect(try Metrics.straightness(trajectory: traj) == 0)
        // Random endpoints, Float-rounded states: ≈ 0.
        let a = randn([200, 2], seed: 1), b = randn([200, 2], seed: 2, std: 3)
        let lerp = uniformTimes(50).map { t in
            Tensor(shape: [200, 2], data: (0..<400).map { Float(t) * b.data[$0] + Float(1 - t) * a.data[$0] })
        }
        #expect(try Metrics.straightness(trajectory: lerp) < 1e-8)
        // Straight but accelerating: z = t²·e gives (N² − 1)/(3N²)·‖e‖² exactly in the discrete estimator.
        for n in [1, 2, 10, 100] {
            let traj = trajectory(1, times: uniformTimes(n)) { _, t in (3 * t * t, 4 * t * t) }
            let expected = Double(n * n - 1) / Double(3 * n * n) * 25
            #expect(abs(try Metrics.straightness(trajectory: traj) - expected) < 1e-5 * (1 + expected), "N = \(n)")
        }
    }

    @Test("a quarter-circle arc matches the analytic value R²(π²/4 − 2) and its discrete form")
    func circularArc() throws {
        for r in [1.0, 2.5] {
            for n in [4, 32, 200] {
                let traj = trajectory(5, times: uniformTimes(n)) { k, t in
                    let a = Double.pi / 2 * t + Double(k)  // different starting angles per point, same S
                    return (r * cos(a), r * sin(a))
                }
                let s = try Metrics.straightness(trajectory: traj)
                // Chord velocities have length N·2R·sin(π/(4N)) and mean z_N − z_0 (‖·‖² = 2R²).
                let discrete = 4 * Double(n * n) * r * r * pow(sin(Double.pi / (4 * Double(n))), 2) - 2 * r * r
                #expect(abs(s - discrete) < 2e-4 * r * r, "R \(r) N \(n): \(s) vs \(discrete)")
                if n == 200 {
                    let continuous = r * r * (Double.pi * Double.pi / 4 - 2)
                    #expect(abs(s - continuous) < 1e-3 * r * r, "continuous \(continuous)")
                }
                #expect(s > 0.4 * r * r)
            }
        }
    }

    @Test("explicit times: uniform times reproduce the grid formula; non-uniform straight paths give 0")
    func explicitTimes() throws {
        let arc = trajectory(4, times: uniformTimes(16)) { k, t in (cos(2 * t + Double(k)), sin(2 * t)) }
        let s0 = try Metrics.straightness(trajectory: arc)
        let s1 = try Metrics.straightness(trajectory: arc, times: uniformTimes(16))
        #expect(abs(s0 - s1) < 1e-12 * (1 + s0))
        // Straight constant-speed path sampled on a non-uniform grid (t from ε = 1e-3 to 1).
        let times = [0.001, 0.01, 0.05, 0.2, 0.21, 0.5, 0.9, 1.0]
        let line = trajectory(3, times: times) { k, t in (Double(k) + 2 * t, -3 * t) }
        #expect(try Metrics.straightness(trajectory: line, times: times) < 1e-9)
        #expect(try Metrics.straightness(trajectory: line) > 1)  // the uniform-grid assumption is wrong here
        // Time-rescaling invariance of the relative form: times scaled ×3 give the same value on a curve.
        let curve = trajectory(2, times: times) { k, t in (t * t + Double(k), sin(3 * t)) }
        let a = try Metrics.straightness(trajectory: curve, times: times)
        let b = try Metrics.straightness(trajectory: curve, times: times.map { 3 * $0 + 1 })
        #expect(a > 0 && abs(a / 9 - b) < 1e-9 * a, "a/9 \(a / 9) vs b \(b)")  // velocities scale by 1/3
    }

    @Test("straightness argument errors")
    func straightnessErrors() {
        let z = randn([4, 2], seed: 1)
        expectMetricError("trajectory", "at least 2") { try Metrics.straightness(trajectory: [z]) }
        expectMetricError("trajectory[2]", "shape") { try Metrics.straightness(trajectory: [z, z, randn([5, 2], seed: 2)]) }
        var bad = z; bad.data[5] = .nan
        expectMetricError("trajectory[1]", "row 2") { try Metrics.straightness(trajectory: [z, bad]) }
        expectMetricError("trajectory[0]", "no points") { try Metrics.straightness(trajectory: [.zeros([0, 2]), .zeros([0, 2])]) }
        expectMetricError("times", "needs 3") { try Metrics.straightness(trajectory: [z, z, z], times: [0, 1]) }
        expectMetricError("times[2]", "increase") { try Metrics.straightness(trajectory: [z, z, z], times: [0, 0.5, 0.5]) }
        expectMetricError("times[1]", "finite") { try Metrics.straightness(trajectory: [z, z, z], times: [0, .nan, 1]) }
        expectMetricError("trajectory[0]", "scalar") { try Metrics.straightness(trajectory: [Tensor(scalar: 1), Tensor(scalar: 2)]) }
    }

    @Test("transport cost: hand-computed values and shape errors")
    func transportCost() throws {
        let z0 = points([[0, 0], [1, 1]]), z1 = points([[3, 4], [1, 2]])
        #expect(try Metrics.transportCost(z0: z0, z1: z1) == 13)  // (25 + 1) / 2
        #expect(try Metrics.transportCost(z0: z0, z1: z0) == 0)
        // Rank 1 = points in 1-D; higher ranks flatten features.
        #expect(try Metrics.transportCost(z0: Tensor(shape: [3], data: [0, 1, 2]), z1: Tensor(shape: [3], data: [1, 1, 0])) == 5.0 / 3)
        #expect(try Metrics.transportCost(z0: .zeros([2, 2, 2]), z1: .ones([2, 2, 2])) == 4)
        expectMetricError("z1", "differs") { try Metrics.transportCost(z0: z0, z1: points([[1, 2]])) }
        expectMetricError("z0", "no points") { try Metrics.transportCost(z0: .zeros([0, 2]), z1: .zeros([0, 2])) }
        expectMetricError("z1", "non-finite") { try Metrics.transportCost(z0: z0, z1: points([[1, 2], [.infinity, 0]])) }
    }

    @Test("relative transport cost: swapped pairs, optimal pairings, brute force, limits")
    func relativeTransportCost() throws {
        let swapped = try Metrics.relativeTransportCost(z0: points([[0, 0], [10, 0]]), z1: points([[10, 0], [0, 0]]))
        #expect(swapped.pairedCost == 100 && swapped.optimalCost == 0 && swapped.excess == 100 && swapped.assignment == [1, 0])
        // Sorted 1-D sets: the monotone (identity) coupling is optimal for a convex cost.
        let a = (0..<50).map { Float($0) * 0.3 }, b = (0..<50).map { Float($0 * $0) * 0.01 - 3 }
        let sorted = try Metrics.relativeTransportCost(z0: Tensor(shape: [50, 1], data: a), z1: Tensor(shape: [50, 1], data: b))
        #expect(sorted.excess == 0 && sorted.assignment == Array(0..<50))
        // Brute force over all 7! permutations.
        for seed in UInt64(1)...4 {
            let z0 = randn([7, 2], seed: seed), z1 = randn([7, 2], seed: seed + 100, mean: 1)
            let r = try Metrics.relativeTransportCost(z0: z0, z1: z1)
            var best = Double.infinity
            func cost(_ i: Int, _ j: Int) -> Double {
                let dx = Double(z1.data[2 * j]) - Double(z0.data[2 * i]), dy = Double(z1.data[2 * j + 1]) - Double(z0.data[2 * i + 1])
                return dx * dx + dy * dy
            }
            func permute(_ k: Int, _ used: inout [Bool], _ acc: Double) {
                if k == 7 { best = min(best, acc); return }
                for j in 0..<7 where !used[j] { used[j] = true; permute(k + 1, &used, acc + cost(k, j)); used[j] = false }
            }
            var used = [Bool](repeating: false, count: 7)
            permute(0, &used, 0)
            #expect(abs(r.optimalCost - best / 7) < 1e-12, "seed \(seed): \(r.optimalCost) vs \(best / 7)")
            #expect(Set(r.assignment) == Set(0..<7))
            let paired = try Metrics.transportCost(z0: z0, z1: z1)
            #expect(abs(r.pairedCost - paired) < 1e-12 && r.excess >= 0)
        }
        // 512 points: a permutation, optimal ≤ paired, and an independent coupling has a clear excess.
        let z0 = randn([512, 2], seed: 7), z1 = randn([512, 2], seed: 8)
        let big = try Metrics.relativeTransportCost(z0: z0, z1: z1)
        #expect(Set(big.assignment).count == 512)
        #expect(big.excess > 1 && big.optimalCost < big.pairedCost)
        expectMetricError("z0", "exceed the assignment limit of 512") {
            try Metrics.relativeTransportCost(z0: randn([513, 2], seed: 1), z1: randn([513, 2], seed: 2))
        }
        #expect(Metrics.optimalAssignment(cost: [], n: 0) == [])
        #expect(Metrics.optimalAssignment(cost: [4, 1, 3, 2, 0, 5, 3, 2, 2], n: 3) == [1, 0, 2])  // cost 1 + 2 + 2
    }
}

@Suite("Metrics: distances between point sets")
struct DistanceTests {
    @Test("sliced W2 of a set with itself (and a permutation of it) is 0")
    func swSelf() throws {
        let a = randn([1000, 2], seed: 3)
        #expect(try Metrics.slicedWasserstein2(a: a, b: a) == 0)
        let perm = Tensor(shape: [1000, 2], data: (0..<1000).reversed().flatMap { [a.data[2 * $0], a.data[2 * $0 + 1]] })
        #expect(try Metrics.slicedWasserstein2(a: a, b: perm) < 1e-12)
        // Every point repeated twice: the same empirical distribution.
        let doubled = Tensor(shape: [2000, 2], data: a.data + a.data)
        #expect(try Metrics.slicedWasserstein2(a: a, b: doubled) < 1e-12)
    }

    @Test("sliced W2 between N(0, 1) and N(m, 1) is ≈ |m| in 1-D and ‖m‖/√d in 2-D")
    func swShift() throws {
        let n = 5000
        for m: Float in [0.5, 2] {
            let a = randn([n, 1], seed: 10), b = randn([n, 1], seed: 11, mean: m)
            let sw = try Metrics.slicedWasserstein2(a: a, b: b, projections: 16)
            #expect(abs(sw - Double(m)) < 0.03, "1-D m \(m): \(sw)")
            // 2-D: shift (m, m) has ‖m‖/√2 = m; shift (m, 0) has m/√2.
            let a2 = randn([n, 2], seed: 12), diag = randn([n, 2], seed: 13, mean: m)
            var axis = randn([n, 2], seed: 14)
            for i in 0..<n { axis.data[2 * i] += m }
            let swDiag = try Metrics.slicedWasserstein2(a: a2, b: diag, projections: 512, seed: 3, threads: 2)
            let swAxis = try Metrics.slicedWasserstein2(a: a2, b: axis, projections: 512, seed: 3, threads: 2)
            #expect(abs(swDiag / Double(m) - 1) < 0.06 + 0.03 / Double(m), "diag m \(m): \(swDiag)")
            #expect(abs(swAxis / (Double(m) / 2.0.squareRoot()) - 1) < 0.06 + 0.03 / Double(m), "axis m \(m): \(swAxis)")
        }
    }

    @Test("sliced W2 of unequal sizes uses exact quantile matching")
    func swUnequal() throws {
        // F_a⁻¹ = 0 on (0, ½], 1 on (½, 1]; F_b⁻¹ = 0, ½, 1 on thirds: ∫ diff² = 2 · (1/6) · ¼ = 1/12.
        let a = Tensor(shape: [2], data: [1, 0]), b = Tensor(shape: [3], data: [0.5, 1, 0])
        for seed in UInt64(0)..<3 {
            #expect(abs(try Metrics.slicedWasserstein2(a: a, b: b, projections: 3, seed: seed) - (1.0 / 12).squareRoot()) < 1e-12)
        }
        // Equal sizes: the quantile merge is the point-for-point formula.
        var rng = Random(seed: 5)
        let x = (0..<300).map { _ in rng.normal() }.sorted(), y = (0..<300).map { _ in rng.normal() + 1 }.sorted()
        #expect(abs(Metrics.quantileW2Squared(x, y) - Metrics.meanSquaredDifference(x, y)) < 1e-12)
        // Large unequal samples of the same law agree with the equal-size estimate.
        let p = randn([6000, 2], seed: 20), q = randn([4000, 2], seed: 21, mean: 1)
        let q6 = randn([6000, 2], seed: 22, mean: 1)
        let unequal = try Metrics.slicedWasserstein2(a: p, b: q), equal = try Metrics.slicedWasserstein2(a: p, b: q6)
        #expect(abs(unequal - equal) < 0.05, "\(unequal) vs \(equal)")
    }

    @Test("sliced W2 is deterministic in the seed and rejects bad arguments")
    func swDeterminismAndErrors() throws {
        let a = randn([500, 2], seed: 1), b = randn([500, 2], seed: 2, mean: 0.5)
        let s1 = try Metrics.slicedWasserstein2(a: a, b: b, seed: 9), s2 = try Metrics.slicedWasserstein2(a: a, b: b, seed: 9)
        #expect(s1 == s2)
        #expect(s1 != (try Metrics.slicedWasserstein2(a: a, b: b, seed: 10)))
        // Thread counts do not change a bit, for equal and unequal sizes.
        let c = randn([333, 2], seed: 3)
        for threads in [2, 3, 8] {
            #expect(try Metrics.slicedWasserstein2(a: a, b: b, seed: 9, threads: threads) == s1)
            #expect(try Metrics.slicedWasserstein2(a: a, b: c, seed: 9, threads: threads)
                    == (try Metrics.slicedWasserstein2(a: a, b: c, seed: 9)))
        }
        expectMetricError("b", "features") { try Metrics.slicedWasserstein2(a: a, b: randn([500, 3], seed: 1)) }
        expectMetricError("projections") { try Metrics.slicedWasserstein2(a: a, b: b, projections: 0) }
        expectMetricError("a", "no points") { try Metrics.slicedWasserstein2(a: .zeros([0, 2]), b: b) }
        var nan = b; nan.data[0] = .nan
        expectMetricError("b", "row 0") { try Metrics.slicedWasserstein2(a: a, b: nan) }
    }

    @Test("energy distance: 0 for identical sets, ≥ 0, hand-computed values, grows with the shift")
    func energy() throws {
        let a = randn([400, 2], seed: 1)
        #expect(try Metrics.energyDistance(a: a, b: a) < 1e-12)
        // 1-D hand values: a = {0}, b = {1}: 2·1 − 0 − 0 = 2; a = {0}, b = {0, 2}: 2·1 − 0 − 1 = 1.
        #expect(try Metrics.energyDistance(a: Tensor(shape: [1], data: [0]), b: Tensor(shape: [1], data: [1])) == 2)
        #expect(abs(try Metrics.energyDistance(a: Tensor(shape: [1], data: [0]), b: Tensor(shape: [2], data: [0, 2])) - 1) < 1e-15)
        // 2-D: a = {(0,0), (3,4)}, b = {(0,0)}: E|X−Y| = 2.5, E|X−X'| = 2.5, E|Y−Y'| = 0 → 2.5.
        #expect(abs(try Metrics.energyDistance(a: points([[0, 0], [3, 4]]), b: points([[0, 0]])) - 2.5) < 1e-15)
        var previous = -1.0
        for m: Float in [0, 0.25, 0.5, 1, 2] {
            let e = try Metrics.energyDistance(a: a, b: randn([300, 2], seed: 2, mean: m))
            #expect(e >= 0 && e > previous, "shift \(m): \(e)")
            previous = e
        }
        for seed in UInt64(0)..<5 {
            let e = try Metrics.energyDistance(a: randn([37, 3], seed: seed), b: randn([53, 3], seed: seed + 9, std: 1.1))
            #expect(e >= 0)
        }
    }

    @Test("energy distance subsamples above maxPoints deterministically")
    func energySubsample() throws {
        let a = randn([3000, 2], seed: 4), b = randn([2500, 2], seed: 5, mean: 0.5)
        let s1 = try Metrics.energyDistance(a: a, b: b, maxPoints: 800, seed: 1)
        let s2 = try Metrics.energyDistance(a: a, b: b, maxPoints: 800, seed: 1)
        let s3 = try Metrics.energyDistance(a: a, b: b, maxPoints: 800, seed: 2)
        let full = try Metrics.energyDistance(a: a, b: b, maxPoints: 3000)
        #expect(s1 == s2 && s1 != s3)
        for threads in [2, 3] {
            #expect(try Metrics.energyDistance(a: a, b: b, maxPoints: 800, seed: 1, threads: threads) == s1)
            #expect(try Metrics.energyDistance(a: randn([7, 2], seed: 1), b: randn([130, 2], seed: 2), threads: threads)
                    == (try Metrics.energyDistance(a: randn([7, 2], seed: 1), b: randn([130, 2], seed: 2))))
        }
        #expect(abs(s1 - full) < 0.25 * full, "subsampled \(s1) vs full \(full)")
        // Below the cap nothing is subsampled: the seed does not matter.
        #expect(try Metrics.energyDistance(a: a, b: b, maxPoints: 3000, seed: 7) == full)
        expectMetricError("maxPoints") { try Metrics.energyDistance(a: a, b: b, maxPoints: 0) }
        expectMetricError("b", "features") { try Metrics.energyDistance(a: a, b: randn([10, 1], seed: 1)) }
    }
}

@Suite("Metrics: coverage")
struct CoverageTests {
    @Test("mode coverage on hand-made points (strict 3·std radius as rf_torch mode_stats)")
    func handMade() throws {
        let s = points([[0, 0], [1, 1], [2.9, 0], [3, 0], [10, 0], [50, 50]])
        let r = try Metrics.modeCoverage(samples: s, centers: [(0, 0), (10, 0)], std: 1)
        #expect(r.counts == [3, 1] && r.sampleCount == 6)
        #expect(r.fractions == [0.5, 1.0 / 6])
        #expect(abs(r.fractionWithin - 4.0 / 6) < 1e-15)
        let meanDistance = (0 + 2.0.squareRoot() + Double(Float(2.9)) + 3 + 0 + 4100.0.squareRoot()) / 6
        #expect(abs(r.meanDistance - meanDistance) < 1e-12)
        #expect(r.modesCovered == 2)  // threshold 0.2 / 2 = 0.1
        #expect(try Metrics.modeCoverage(samples: s, centers: [(0, 0), (10, 0)], std: 1, minShare: 1).modesCovered == 1)
        // A mode with no samples is never covered, even with minShare 0.
        let three = try Metrics.modeCoverage(samples: s, centers: [(0, 0), (10, 0), (-20, 0)], std: 1, minShare: 0)
        #expect(three.counts == [3, 1, 0] && three.modesCovered == 2)
        // A wider radius catches (3, 0); ties go to the first centre.
        let wide = try Metrics.modeCoverage(samples: points([[3, 0], [5, 0]]), centers: [(0, 0), (10, 0)], std: 1, radiusInStd: 5.5)
        #expect(wide.counts == [2, 0])
        #expect(try Metrics.modeCoverage(samples: s, centers: [(0, 0)], std: 1).modesCovered == 1)
    }

    @Test("samples of the 8 Gaussians cover all 8 modes; a collapsed sampler covers none")
    func eightGaussians() throws {
        var rng = Random(seed: 3)
        let d = Distribution2D.gaussianRing()
        let x = d.sample(20_000, rng: &rng)
        let r = try Metrics.modeCoverage(samples: x, centers: d.modeCenters!, std: d.modeStd!)
        #expect(r.modesCovered == 8)
        #expect(r.fractionWithin > 0.985, "2-D Gaussian within 3σ: 1 − e^{−4.5} ≈ 0.989, got \(r.fractionWithin)")
        #expect(r.fractions.allSatisfy { abs($0 - 0.989 / 8) < 0.012 })
        #expect(abs(r.meanDistance - 0.1 * (Double.pi / 2).squareRoot()) < 0.003)  // Rayleigh mean σ√(π/2)
        #expect(try Metrics.supportCoverage(samples: x, distribution: d) == r)
        let collapsed = try Metrics.modeCoverage(samples: randn([1000, 2], seed: 1, std: 0.2), centers: d.modeCenters!, std: 0.1)
        #expect(collapsed.modesCovered == 0 && collapsed.fractionWithin == 0 && collapsed.meanDistance > 3.5)
        // Half the modes only.
        let half = Tensor(shape: [x.shape[0], 2], data: x.data.enumerated().map { i, v in i % 2 == 0 && v < 0 ? -v : v })
        #expect(try Metrics.modeCoverage(samples: half, centers: d.modeCenters!, std: 0.1).modesCovered < 8)
    }

    @Test("support coverage of the continuous shapes: data covers every cell, collapsed samples none")
    func continuous() throws {
        for d in [Distribution2D.twoMoons(), .checkerboard(), .spirals(), .rings(), .checkerboard(squares: 5, extent: 2)] {
            var rng = Random(seed: 8)
            let r = try Metrics.supportCoverage(samples: d.sample(20_000, rng: &rng), distribution: d)
            #expect(r.modesCovered == d.supportCellCount, "\(d.kind)")
            #expect(r.fractionWithin > 0.98, "\(d.kind): \(r.fractionWithin)")
            #expect(r.counts.count == d.supportCellCount)
            let point = Tensor(shape: [50, 2], repeating: 0.3)
            let c = try Metrics.supportCoverage(samples: point, distribution: d)
            #expect(c.modesCovered <= 1 && c.counts.filter { $0 > 0 }.count <= 1)
        }
        // The moons' centre is off the support (1.32 from both arcs at scale 3).
        let m = try Metrics.supportCoverage(samples: .zeros([10, 2]), distribution: .twoMoons())
        #expect(m.fractionWithin == 0 && abs(m.meanDistance - 3 * (1 - (0.3125 as Double).squareRoot())) < 1e-6)
    }

    @Test("coverage argument errors")
    func errors() {
        let s = randn([10, 2], seed: 1)
        expectMetricError("samples", "[n, 2]") { try Metrics.modeCoverage(samples: randn([10, 3], seed: 1), centers: [(0, 0)], std: 1) }
        expectMetricError("centers", "at least one") { try Metrics.modeCoverage(samples: s, centers: [], std: 1) }
        expectMetricError("centers[1]", "finite") { try Metrics.modeCoverage(samples: s, centers: [(0, 0), (.nan, 0)], std: 1) }
        expectMetricError("std") { try Metrics.modeCoverage(samples: s, centers: [(0, 0)], std: -1) }
        expectMetricError("radiusInStd") { try Metrics.modeCoverage(samples: s, centers: [(0, 0)], std: 1, radiusInStd: .infinity) }
        expectMetricError("minShare") { try Metrics.modeCoverage(samples: s, centers: [(0, 0)], std: 1, minShare: 2) }
        expectMetricError("distribution/std") { try Metrics.supportCoverage(samples: s, distribution: .gaussianRing(std: -1)) }
        expectMetricError("distribution/radii/0") { try Metrics.supportCoverage(samples: s, distribution: .rings(radii: [-1])) }
        expectMetricError("samples", "no points") { try Metrics.supportCoverage(samples: .zeros([0, 2]), distribution: .rings()) }
    }
}

