import Foundation
import ReflowEngine
import ReflowNN
import ReflowFlow

/// `reflowd bench toy`: the training step and Euler sampling of `shared/peers/rf_torch.py toy`,
/// with the same flags and JSON keys (train_step.median_ms, sample.euler1.median_ms, …).
public enum ToyBenchmark {
    public static let flagNames = ["threads", "width", "depth", "batch", "steps", "warmup", "lr", "seed",
                                   "sample-n", "sample-reps", "sample-steps", "block-rows"]

    public static func run(_ args: [String]) throws -> String {
        let f = try Flags(args, allowed: flagNames)
        let threads = try f.int("threads", default: 2, min: 1, max: 64)
        var config = TrainingConfig()
        let mlp = VelocityMLPConfig(dimension: 2, width: try f.int("width", default: 256, min: 1, max: 16384),
                                         depth: try f.int("depth", default: 3, min: 1, max: 64), activation: .silu)
        config.model = ModelSpec(mlp)
        config.batchSize = try f.int("batch", default: 512, min: 1, max: 1 << 20)
        config.learningRate = try f.float("lr", default: 1e-3)
        config.emaDecay = nil  // the peer keeps no EMA
        config.seed = UInt64(try f.int("seed", default: 0, min: 0))
        if let (pointer, message) = config.validationError() { throw CLIError("invalid benchmark settings: \(pointer): \(message)") }
        let steps = try f.int("steps", default: 200, min: 1, max: 10_000_000)
        let warmup = try f.int("warmup", default: 20, min: 0, max: 10_000_000)
        let sampleN = try f.int("sample-n", default: 10_000, min: 1, max: 10_000_000)
        let sampleReps = try f.int("sample-reps", default: 5, min: 1, max: 1000)
        let blockRows = try f.int("block-rows", default: 1024, min: 1, max: 1 << 20)
        let sampleSteps = try f.string("sample-steps", default: "1,100").split(separator: ",").map { s -> Int in
            guard let v = Int(s), v >= 1, v <= 100_000 else { throw CLIError("--sample-steps must be a comma list of integers in [1, 100000]") }
            return v
        }

        BLAS.setLibraryThreads(1)
        let load = ForeignLoad()
        let trainer = try FlowTrainer(config, threads: threads)
        for _ in 0..<warmup { trainer.trainStep() }
        var times = [Double]()
        var loss: Float = 0
        let t0 = monotonicSeconds()
        for _ in 0..<steps {
            let s = monotonicSeconds()
            loss = trainer.trainStep()
            times.append(monotonicSeconds() - s)
        }
        let total = monotonicSeconds() - t0
        var train: [String: Any] = statsMs(times)
        let median = (train["median_ms"] as? Double ?? 1) / 1e3
        train["steps_per_s_median"] = 1 / median
        train["steps_per_s_overall"] = Double(steps) / total
        let gemmFlop = gemmFlopPerStep(mlp.sizes, batch: config.batchSize)
        train["gemm_gflop_per_step"] = gemmFlop / 1e9
        train["gemm_gflops_at_median"] = gemmFlop / median / 1e9

        var rng = Random(seed: 1234)
        let z = rng.normal([sampleN, 2])
        let sd = trainer.model.stateDict()
        var sample = [String: Any]()
        for n in sampleSteps {
            _ = try EulerSampler.sample(model: config.model, stateDict: sd, z0: z, steps: n, threads: threads,
                                        blockRows: blockRows)
            var ts = [Double]()
            for _ in 0..<sampleReps {
                let s = monotonicSeconds()
                _ = try EulerSampler.sample(model: config.model, stateDict: sd, z0: z, steps: n, threads: threads,
                                            blockRows: blockRows)
                ts.append(monotonicSeconds() - s)
            }
            var st: [String: Any] = statsMs(ts)
            let med = (st["median_ms"] as? Double ?? 1) / 1e3
            st["points_per_s"] = Double(sampleN) / med
            sample["euler\(n)"] = st
        }
        let out: [String: Any] = [
            "bench": "toy", "peer_equivalent": "rf_torch.py toy", "threads": threads,
            "openblas": BLAS.libraryConfig,
            "config": ["width": mlp.width, "depth": mlp.depth, "batch": config.batchSize,
                       "params": trainer.model.parameterCount, "lr": Double(config.learningRate),
                       "sample_n": sampleN, "block_rows": blockRows, "steps": steps, "warmup": warmup],
            "train_step": train, "sample": sample, "final_loss": Double(loss),
            "foreign_load_cores": load.cores(),
        ]
        return benchLine(out)
    }

    /// FLOPs of the GEMMs in one training step: forward, dW for every layer, dX for all but the
    /// first (the input needs no gradient).
    static func gemmFlopPerStep(_ sizes: [Int], batch: Int) -> Double {
        var total = 0.0
        for i in 0..<(sizes.count - 1) {
            let f = 2.0 * Double(batch) * Double(sizes[i]) * Double(sizes[i + 1])
            total += f * (i == 0 ? 2 : 3)
        }
        return total
    }
}
