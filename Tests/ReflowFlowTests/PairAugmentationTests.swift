import Foundation
import Testing
import ReflowEngine
@testable import ReflowFlow
import ReflowTestSupport

/// SlimFlow's annealing reflow and flip augmentation of stored pairs (issue #12).
@Suite("Pair augmentation: annealing and flips")
struct PairAugmentationTests {
    static func trainer(annealing: Annealing? = nil, flip: Bool = false, image: Bool = false) throws -> (FlowTrainer, Tensor, Tensor) {
        var c = TrainingConfig()
        c.model = image ? ModelSpec(VelocityMLPConfig(dimension: 6, width: 8, depth: 1, imageShape: [1, 2, 3]))
                        : ModelSpec(VelocityMLPConfig(dimension: 2, width: 8, depth: 1))
        if image { c.data = .normal(dimension: nil, std: 1) }
        c.annealing = annealing
        c.flipPairs = flip
        c.seed = 4
        let d = c.model.pointSize
        let z0 = randn([50, d], seed: 1), z1 = randn([50, d], seed: 2, mean: 3)
        return (try FlowTrainer(c, threads: 1, pairs: (z0, z1)), z0, z1)
    }

    @Test("β schedules: linear, exponential, cosine against hand values")
    func schedules() {
        let lin = Annealing(schedule: .linear, steps: 100), ex = Annealing(schedule: .exponential, steps: 100)
        let cs = Annealing(schedule: .cosine, steps: 100)
        #expect(lin.beta(step: 0) == 1 && lin.beta(step: 50) == 0.5 && lin.beta(step: 100) == 0 && lin.beta(step: 500) == 0)
        #expect(abs(ex.beta(step: 100) - Float(exp(-1.0))) < 1e-7 && ex.beta(step: 0) == 1)
        #expect(abs(cs.beta(step: 50) - 0.5) < 1e-7 && cs.beta(step: 0) == 1 && cs.beta(step: 100) == 0)
        #expect(Annealing(steps: 0).validationError()?.pointer == "/steps")
    }

    @Test("β = 0 draws exactly reflow's batch; β = 1 keeps the data and t but replaces the noise by fresh draws (a 1-RF on teacher samples)")
    func annealingEnds() throws {
        let (plain, z0, _) = try Self.trainer()
        let (annealed, _, _) = try Self.trainer(annealing: Annealing(schedule: .linear, steps: 10))
        let p = plain.batch(rows: 4000, seed: 7, step: 0)
        let late = annealed.batch(rows: 4000, seed: 7, step: 10)           // β = 0
        #expect(late.x0 == p.x0 && late.x1 == p.x1 && late.t == p.t && late.xt == p.xt, "same batch as reflow")
        let early = annealed.batch(rows: 4000, seed: 7, step: 0)           // β = 1
        #expect(early.x1 == p.x1 && early.t == p.t)
        let fresh = early.x0
        let mean = fresh.reduce(0, +) / Float(fresh.count)
        let std = (fresh.map { ($0 - mean) * ($0 - mean) }.reduce(0, +) / Float(fresh.count)).squareRoot()
        #expect(abs(mean) < 0.05 && abs(std - 1) < 0.05, "fresh N(0, I) noise")
        // Uncorrelated with the stored noise of the same rows.
        let corr = zip(fresh, p.x0).map { $0 * $1 }.reduce(0, +) / Float(fresh.count)
        #expect(abs(corr) < 0.05)
        #expect(!fresh.contains { v in z0.data.contains(v) }, "no stored noise value survives")
        // Half way (β = 0.5): √(1 − β²)·z + β·ε'.
        let mid = annealed.batch(rows: 4000, seed: 7, step: 5)
        let resid = zip(mid.x0, p.x0).map { $0 - (0.75 as Float).squareRoot() * $1 }
        let rstd = (resid.map { $0 * $0 }.reduce(0, +) / Float(resid.count)).squareRoot()
        #expect(abs(rstd - 0.5) < 0.03)
    }

    @Test("flip augmentation mirrors noise and data of the same rows, about half of them")
    func flips() throws {
        let (plain, _, _) = try Self.trainer(image: true)
        let (flipped, _, _) = try Self.trainer(flip: true, image: true)
        let p = plain.batch(rows: 2000, seed: 3, step: 0), f = flipped.batch(rows: 2000, seed: 3, step: 0)
        func mirror(_ row: ArraySlice<Float>) -> [Float] {
            let r = Array(row)
            return [r[2], r[1], r[0], r[5], r[4], r[3]]                      // [1, 2, 3]: each of 2 rows of 3 reversed
        }
        var count = 0
        for r in 0..<2000 {
            let range = (r * 6)..<(r * 6 + 6)
            let same = Array(f.x0[range]) == Array(p.x0[range]) && Array(f.x1[range]) == Array(p.x1[range])
            let both = Array(f.x0[range]) == mirror(p.x0[range]) && Array(f.x1[range]) == mirror(p.x1[range])
            #expect(same || both, "row \(r): noise and data are flipped together or not at all")
            if both && !same { count += 1 }
        }
        #expect(abs(Double(count) / 2000 - 0.5) < 0.05, "\(count) of 2000 flipped")
        var c = TrainingConfig()
        c.flipPairs = true
        #expect(throws: TrainerError.badConfig(pointer: "/flipPairs", message: "mirrors images: the model's points are not images"), "a 2-D model has no images to mirror") {
            try FlowTrainer(c, threads: 1, pairs: (randn([4, 2], seed: 1), randn([4, 2], seed: 2)))
        }
    }
}
