import Foundation
import ReflowEngine
import ReflowNN
import ReflowFlow

/// `reflowd bench toy-quality`: the full 2-D pipeline of `rf_torch.py toy --quality` with the same
/// settings — train a 1-rectified flow, generate reflow pairs with the 1-RF (Euler 100), train the
/// 2-RF initialised from the 1-RF with a fresh Adam, and evaluate both with 1, 2 and 100 Euler
/// steps (sliced W2 against fresh data, distance to the modes, straightness). One JSON line with
/// the timings and every metric.
public enum QualityBenchmark {
    public static func run(_ args: [String]) throws -> String {
        let f = try Flags(args, allowed: ["threads", "train-steps", "reflow-pairs", "reflow-ode-steps", "reflow-steps",
                                          "sample-n", "seed", "batch", "width", "depth", "lr"])
        let threads = try f.int("threads", default: 2, min: 1, max: 64)
        let trainSteps = try f.int("train-steps", default: 5000, min: 1, max: 10_000_000)
        let nPairs = try f.int("reflow-pairs", default: 50_000, min: 1, max: 10_000_000)
        let odeSteps = try f.int("reflow-ode-steps", default: 100, min: 1, max: 100_000)
        let reflowSteps = try f.int("reflow-steps", default: 5000, min: 1, max: 10_000_000)
        let sampleN = try f.int("sample-n", default: 10_000, min: 1, max: 1_000_000)
        let seed = UInt64(try f.int("seed", default: 0, min: 0))
        var config = ToyTrainingConfig()
        config.model = VelocityMLPConfig(dimension: 2, width: try f.int("width", default: 256, min: 1, max: 16384),
                                         depth: try f.int("depth", default: 3, min: 1, max: 64), activation: .silu)
        config.batchSize = try f.int("batch", default: 512, min: 1, max: 1 << 20)
        config.learningRate = try f.float("lr", default: 1e-3)
        config.emaDecay = nil  // as the peer: the raw weights are evaluated and reflowed
        config.seed = seed
        if let (pointer, message) = config.validationError() { throw CLIError("invalid settings: \(pointer): \(message)") }
        BLAS.setLibraryThreads(1)
        let load = ForeignLoad()
        let data = config.data
        guard let centers = data.modeCenters, let modeStd = data.modeStd else { throw CLIError("the quality benchmark needs a Gaussian-mixture target") }

        // Evaluation set: fresh noise and fresh data, shared by both models.
        var evalRng = Random(seed: seed &+ 1_000_001)
        let reference = data.sample(sampleN, rng: &evalRng)
        let z = evalRng.normal([sampleN, 2])
        func evaluate(_ weights: [String: Tensor]) throws -> [String: Any] {
            var out = [String: Any]()
            for n in [1, 2, 100] {
                let sol = try ODESolver.solve(config: config.model, stateDict: weights, x: z, method: .euler(steps: n),
                                              direction: .forward, threads: threads, recordTrajectory: n == 100)
                let cov = try Metrics.modeCoverage(samples: sol.x, centers: centers, std: modeStd)
                out["euler\(n)"] = ["swd": try Metrics.slicedWasserstein2(a: sol.x, b: reference, projections: 256, seed: 7),
                                    "mean_dist_to_mode": cov.meanDistance, "frac_within_3std": cov.fractionWithin,
                                    "modes_covered": cov.modesCovered, "nfe": sol.nfe]
                if let traj = sol.trajectory {
                    out["straightness"] = try Metrics.straightness(trajectory: traj.map(\.x))
                    out["transport_cost"] = try Metrics.transportCost(z0: z, z1: sol.x)
                }
            }
            return out
        }

        // 1-RF.
        var t0 = now()
        let rf1 = ToyTrainer(config, threads: threads)
        var loss1: Float = 0
        for _ in 0..<trainSteps { loss1 = rf1.trainStep() }
        let trainSeconds = now() - t0
        let w1 = rf1.model.stateDict()

        // Reflow pairs from the 1-RF (Euler, like the peer), then the 2-RF from the 1-RF weights.
        var pairRng = Random(seed: seed &+ 2_000_003)
        let z0 = pairRng.normal([nPairs, 2])
        t0 = now()
        let z1 = try ODESolver.solve(config: config.model, stateDict: w1, x: z0, method: .euler(steps: odeSteps),
                                     direction: .forward, threads: threads).x
        let pairSeconds = now() - t0
        t0 = now()
        let rf2 = try ToyTrainer(config, threads: threads, pairs: (z0, z1), initialWeights: w1)
        var loss2: Float = 0
        for _ in 0..<reflowSteps { loss2 = rf2.trainStep() }
        let reflowSeconds = now() - t0

        t0 = now()
        let q1 = try evaluate(w1), q2 = try evaluate(rf2.model.stateDict())
        let evalSeconds = now() - t0
        return jsonLine([
            "bench": "toy-quality", "peer_equivalent": "rf_torch.py toy --quality", "threads": threads,
            "config": ["train_steps": trainSteps, "reflow_pairs": nPairs, "reflow_ode_steps": odeSteps,
                       "reflow_steps": reflowSteps, "sample_n": sampleN, "seed": Int(seed), "batch": config.batchSize,
                       "width": config.model.width, "depth": config.model.depth, "lr": Double(config.learningRate)],
            "train_s": trainSeconds, "reflow_pair_gen_s": pairSeconds, "reflow_train_s": reflowSeconds,
            "evaluate_s": evalSeconds, "pipeline_s": trainSeconds + pairSeconds + reflowSeconds,
            "final_loss_1rf": Double(loss1), "final_loss_2rf": Double(loss2),
            "quality": ["rf1": q1, "rf2": q2], "foreign_load_cores": load.cores(),
        ])
    }
}
