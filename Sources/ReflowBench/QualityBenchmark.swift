import Foundation
import ReflowEngine
import ReflowNN
import ReflowFlow
import ReflowStore
import ReflowCodec

/// `reflowd bench toy-quality`: the full 2-D pipeline of `rf_torch.py toy --quality` with the same
/// settings — train a 1-rectified flow, generate reflow pairs with the 1-RF (Euler 100), train the
/// 2-RF initialised from the 1-RF with a fresh Adam, and evaluate both with 1, 2 and 100 Euler
/// steps (sliced W2 against fresh data, distance to the modes, straightness). One JSON line with
/// the timings and every metric.
public enum QualityBenchmark {
    /// A 640×640 picture in the paper's style: 300 trajectories of 100 Euler steps from noise
    /// (orange, start points black) over the data (gray). Straight lines mean a straight flow.
    static func trajectoryFigure(model: ModelSpec, weights: [String: Tensor], z0: Tensor, data: Tensor) throws -> [UInt8] {
        let n = min(300, z0.shape[0])
        let start = Tensor(shape: [n, 2], data: Array(z0.data.prefix(2 * n)))
        let sol = try ODESolver.solve(model: model, stateDict: weights, x: start, method: .euler(steps: 100),
                                      direction: .forward, threads: 1, recordTrajectory: true)
        var canvas = Canvas(width: 640, height: 640, window: (-6, 6, -6, 6))
        canvas.axes()
        canvas.scatter(Array(data.data.prefix(2 * 4000)), color: .gray, alpha: 0.3)
        let frames = sol.trajectory ?? []
        for i in 0..<n {
            for k in 1..<frames.count {
                let a = frames[k - 1].x, b = frames[k].x
                canvas.line(from: (a.data[2 * i], a.data[2 * i + 1]), to: (b.data[2 * i], b.data[2 * i + 1]), color: .orange, alpha: 0.35)
            }
        }
        canvas.scatter(start.data, color: .black, alpha: 0.8)
        canvas.scatter(sol.x.data, color: .blue, alpha: 0.8)
        return try canvas.png()
    }

    public static func run(_ args: [String]) throws -> String {
        let f = try Flags(args, allowed: ["threads", "train-steps", "reflow-pairs", "reflow-ode-steps", "reflow-steps",
                                          "sample-n", "seed", "batch", "width", "depth", "lr", "distill-steps", "rf3-steps", "figures", "data"], booleans: ["nfe-table"])
        let threads = try f.int("threads", default: 2, min: 1, max: 64)
        let trainSteps = try f.int("train-steps", default: 5000, min: 1, max: 10_000_000)
        let nPairs = try f.int("reflow-pairs", default: 50_000, min: 1, max: 10_000_000)
        let odeSteps = try f.int("reflow-ode-steps", default: 100, min: 1, max: 100_000)
        let reflowSteps = try f.int("reflow-steps", default: 5000, min: 1, max: 10_000_000)
        let sampleN = try f.int("sample-n", default: 10_000, min: 1, max: 1_000_000)
        // Beyond the peer's pipeline: one-step distillation of the 2-RF and a 3-RF, both from
        // pairs of the 2-RF (off by default so the timed pipeline matches rf_torch.py).
        let distillSteps = try f.int("distill-steps", default: 0, min: 0, max: 10_000_000)
        let rf3Steps = try f.int("rf3-steps", default: 0, min: 0, max: 10_000_000)
        // Optional directory for PNG figures (trajectories of the 1-RF and the 2-RF).
        let figures = f.values["figures"]
        let nfeTable = f.bool("nfe-table")
        let seed = UInt64(try f.int("seed", default: 0, min: 0))
        var config = TrainingConfig()
        config.model = ModelSpec(VelocityMLPConfig(dimension: 2, width: try f.int("width", default: 256, min: 1, max: 16384),
                                         depth: try f.int("depth", default: 3, min: 1, max: 64), activation: .silu))
        config.batchSize = try f.int("batch", default: 512, min: 1, max: 1 << 20)
        config.learningRate = try f.float("lr", default: 1e-3)
        config.emaDecay = nil  // as the peer: the raw weights are evaluated and reflowed
        if let kind = f.values["data"] {
            // A built-in target by name with its default parameters (e.g. twoMoons, checkerboard).
            do {
                config.data = .distribution(try JSONDecoder().decode(Distribution2D.self, from: Data(#"{"kind": "\#(kind)"}"#.utf8)))
            } catch {
                throw CLIError("--data: unknown distribution '\(kind)'; one of \(Distribution2D.kinds.joined(separator: ", "))")
            }
        }
        config.seed = seed
        if let (pointer, message) = config.validationError() { throw CLIError("invalid settings: \(pointer): \(message)") }
        BLAS.setLibraryThreads(1)
        let load = ForeignLoad()
        guard let data = config.data.distribution else { throw CLIError("--data: a built-in 2-D distribution is needed") }
        // Coverage: modes within 3 std for mixtures, support cells (curve pieces, squares) otherwise.
        func coverage(_ x: Tensor) throws -> ModeCoverage { try Metrics.supportCoverage(samples: x, distribution: data) }

        // Evaluation set: fresh noise and fresh data, shared by both models.
        var evalRng = Random(seed: seed &+ 1_000_001)
        let reference = data.sample(sampleN, rng: &evalRng)
        let z = evalRng.normal([sampleN, 2])
        func evaluate(_ weights: [String: Tensor], steps: [Int] = [1, 2, 100]) throws -> [String: Any] {
            var out = [String: Any]()
            for n in steps {
                let sol = try ODESolver.solve(model: config.model, stateDict: weights, x: z, method: .euler(steps: n),
                                              direction: .forward, threads: threads, recordTrajectory: n == 100)
                let cov = try coverage(sol.x)
                out["euler\(n)"] = ["swd": try Metrics.slicedWasserstein2(a: sol.x, b: reference, projections: 256, seed: 7),
                                    "mean_dist_to_mode": cov.meanDistance, "frac_within_3std": cov.fractionWithin,
                                    "modes_covered": cov.modesCovered, "mode_fractions": cov.fractions, "nfe": sol.nfe,
                                    "transport_cost": try Metrics.transportCost(z0: z, z1: sol.x)]
                if let traj = sol.trajectory {
                    out["straightness"] = try Metrics.straightness(trajectory: traj.map(\.x))
                }
            }
            return out
        }

        /// Euler pairs (z0 ~ N(0, I) from `seedOffset`, z1 = ODE(z0)) of a model, and the time taken.
        func makePairs(_ weights: [String: Tensor], seedOffset: UInt64) throws -> (Tensor, Tensor, Double) {
            var rng = Random(seed: seed &+ seedOffset)
            let z0 = rng.normal([nPairs, 2])
            let start = monotonicSeconds()
            let z1 = try ODESolver.solve(model: config.model, stateDict: weights, x: z0, method: .euler(steps: odeSteps),
                                         direction: .forward, threads: threads).x
            return (z0, z1, monotonicSeconds() - start)
        }
        /// Trains a student on stored pairs from the teacher's weights with its own batch stream.
        func trainOnPairs(_ c: TrainingConfig, seedOffset: UInt64, pairs: (Tensor, Tensor), from teacher: [String: Tensor],
                          steps: Int) throws -> (FlowTrainer, Float, Double) {
            var c = c
            c.seed = seed &+ seedOffset  // the initial weights are the teacher's; only the stream differs
            let start = monotonicSeconds()
            let student = try FlowTrainer(c, threads: threads, pairs: pairs, initialWeights: teacher)
            var loss: Float = 0
            for _ in 0..<steps { loss = student.trainStep() }
            return (student, loss, monotonicSeconds() - start)
        }

        // 1-RF.
        let t0 = monotonicSeconds()
        let rf1 = try FlowTrainer(config, threads: threads)
        var loss1: Float = 0
        for _ in 0..<trainSteps { loss1 = rf1.trainStep() }
        let trainSeconds = monotonicSeconds() - t0
        let w1 = rf1.model.stateDict()

        // Reflow pairs from the 1-RF (Euler, like the peer), then the 2-RF from the 1-RF weights.
        let (z0, z1, pairSeconds) = try makePairs(w1, seedOffset: 2_000_003)
        let (rf2, loss2, reflowSeconds) = try trainOnPairs(config, seedOffset: 6_000_001, pairs: (z0, z1), from: w1, steps: reflowSteps)

        var quality: [String: Any] = [:]
        var extraSeconds = [String: Double]()
        if distillSteps > 0 || rf3Steps > 0 {
            // Pairs of the 2-RF, from fresh noise.
            let w2 = rf2.model.stateDict()
            let (y0, y1, seconds) = try makePairs(w2, seedOffset: 3_000_017)
            extraSeconds["rf2_pair_gen_s"] = seconds
            if distillSteps > 0 {
                // k = 1 distillation (Liu et al. 2022 §2.2): train v(z0, 0) towards z1 − z0.
                var dc = config
                dc.timeSampler = .grid(k: 1, epsilon: 0)
                let (student, _, s) = try trainOnPairs(dc, seedOffset: 4_000_037, pairs: (y0, y1), from: w2, steps: distillSteps)
                extraSeconds["distill_train_s"] = s
                // A one-step student is only defined at t = 0: evaluate it with one Euler step.
                quality["rf2_distilled"] = try evaluate(student.model.stateDict(), steps: [1])
            }
            if rf3Steps > 0 {
                let (rf3, _, s) = try trainOnPairs(config, seedOffset: 5_000_011, pairs: (y0, y1), from: w2, steps: rf3Steps)
                extraSeconds["rf3_train_s"] = s
                quality["rf3"] = try evaluate(rf3.model.stateDict())
            }
        }
        let evalStart = monotonicSeconds()
        let q1 = try evaluate(w1), q2 = try evaluate(rf2.model.stateDict())
        let evalSeconds = monotonicSeconds() - evalStart
        quality["rf1"] = q1
        quality["rf2"] = q2
        if nfeTable {
            // NFE against quality for every solver, on the 1-RF and the 2-RF.
            let methods: [ODEMethod] = [.euler(steps: 1), .euler(steps: 2), .euler(steps: 4), .euler(steps: 8), .euler(steps: 32),
                                        .heun(steps: 1), .heun(steps: 4), .midpoint(steps: 4), .rfSolver2(steps: 1),
                                        .rfSolver2(steps: 4), .rk4(steps: 2), .rk4(steps: 8), .rk45(rtol: 1e-3, atol: 1e-3, maxNFE: 10_000),
                                        .rk45(rtol: 1e-5, atol: 1e-5, maxNFE: 10_000)]
            var table = [[String: Any]]()
            for (name, weights) in [("rf1", w1), ("rf2", rf2.model.stateDict())] {
                for m in methods {
                    let sol = try ODESolver.solve(model: config.model, stateDict: weights, x: z, method: m,
                                                  direction: .forward, threads: threads, blockRows: sampleN)
                    let cov = try coverage(sol.x)
                    table.append(["model": name, "method": m.name, "steps": m.steps ?? 0, "nfe": sol.nfe,
                                  "swd": try Metrics.slicedWasserstein2(a: sol.x, b: reference, projections: 256, seed: 7),
                                  "frac_within_3std": cov.fractionWithin, "mean_dist_to_mode": cov.meanDistance])
                }
            }
            quality["nfe_table"] = table
        }
        if let figures {
            try FileManager.default.createDirectory(atPath: figures, withIntermediateDirectories: true)
            let w2 = rf2.model.stateDict()
            for (name, weights) in [("rf1", w1), ("rf2", w2)] {
                try AtomicFile.write(try trajectoryFigure(model: config.model, weights: weights, z0: z, data: reference),
                                     to: figures + "/trajectories_\(name).png")
            }
        }
        // The finite-sample floor: a second, independent data sample against the reference.
        let second = data.sample(sampleN, rng: &evalRng)
        let baseCov = try coverage(second)
        quality["data"] = ["swd": try Metrics.slicedWasserstein2(a: second, b: reference, projections: 256, seed: 7),
                           "mean_dist_to_mode": baseCov.meanDistance, "frac_within_3std": baseCov.fractionWithin,
                           "modes_covered": baseCov.modesCovered, "mode_fractions": baseCov.fractions]
        return benchLine([
            "bench": "toy-quality", "peer_equivalent": "rf_torch.py toy --quality", "threads": threads,
            "config": ["data": data.kind, "distill_steps": distillSteps, "rf3_steps": rf3Steps, "train_steps": trainSteps, "reflow_pairs": nPairs, "reflow_ode_steps": odeSteps,
                       "reflow_steps": reflowSteps, "sample_n": sampleN, "seed": Int(seed), "batch": config.batchSize,
                       "width": config.model.mlp?.width ?? 0, "depth": config.model.mlp?.depth ?? 0, "lr": Double(config.learningRate)],
            "train_s": trainSeconds, "reflow_pair_gen_s": pairSeconds, "reflow_train_s": reflowSeconds,
            "evaluate_s": evalSeconds, "pipeline_s": trainSeconds + pairSeconds + reflowSeconds,
            "final_loss_1rf": Double(loss1), "final_loss_2rf": Double(loss2),
            "quality": quality, "extra_timings": extraSeconds, "foreign_load_cores": load.cores(),
        ])
    }
}
