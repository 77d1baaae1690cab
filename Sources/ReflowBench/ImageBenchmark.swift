import Foundation
import ReflowEngine
import ReflowNN
import ReflowFlow

/// `reflowd bench image`: the U-Net training step and one-step sampling of
/// `shared/peers/rf_torch.py image`, with the same flags and JSON keys (train_step.median_ms,
/// sample.euler1_batch64.median_ms, …), plus the process's peak resident memory during training.
public enum ImageBenchmark {
    public static let flagNames = ["threads", "batch", "steps", "warmup", "lr", "seed", "ch", "nb", "pool",
                                   "sample-batch", "sample-steps", "sample-reps"]

    public static func run(_ args: [String]) throws -> String {
        let f = try Flags(args, allowed: flagNames)
        let threads = try f.int("threads", default: 2, min: 1, max: 64)
        let ch = f.string("ch", default: "32,64").split(separator: ",").compactMap { Int($0) }
        guard ch.count == 2, ch.allSatisfy({ $0 >= 1 && $0 <= 1024 }) else { throw CLIError("--ch must be two channel counts, e.g. 32,64") }
        var unet = UNetConfig()
        unet.channels = ch
        unet.blocksPerLevel = try f.int("nb", default: 2, min: 1, max: 16)
        var config = TrainingConfig()
        config.model = ModelSpec(unet)
        config.batchSize = try f.int("batch", default: 64, min: 1, max: 4096)
        config.learningRate = try f.float("lr", default: 2e-4)
        config.emaDecay = nil  // the peer keeps no EMA
        config.seed = UInt64(try f.int("seed", default: 0, min: 0))
        // The peer's data: a pool of synthetic stroke images.
        let pool = try f.int("pool", default: 2048, min: 1, max: 1_000_000)
        let strokes = try BuiltinImages.strokes(count: pool, seed: 7)
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("reflowd-bench-image-\(getpid())")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let npy = dir.appendingPathComponent("images.npy")
        let images = strokes.tensor(Array(0..<pool))
        try Data(PointFiles.npyBytes(Tensor(shape: [pool, images.count / pool], data: images.data))).write(to: npy)
        config.data = .points(.path(npy.path))
        if let (pointer, message) = config.validationError() { throw CLIError("invalid benchmark settings: \(pointer): \(message)") }
        let steps = try f.int("steps", default: 20, min: 1, max: 1_000_000)
        let warmup = try f.int("warmup", default: 3, min: 0, max: 1_000_000)
        let sampleBatch = try f.int("sample-batch", default: 64, min: 1, max: 100_000)
        let sampleReps = try f.int("sample-reps", default: 5, min: 1, max: 1000)
        let sampleSteps = try f.string("sample-steps", default: "1").split(separator: ",").map { s -> Int in
            guard let v = Int(s), v >= 1, v <= 100_000 else { throw CLIError("--sample-steps must be a comma list of integers in [1, 100000]") }
            return v
        }

        BLAS.setLibraryThreads(1)
        let load = ForeignLoad()
        let rssBefore = PeakMemory.currentBytes()
        let trainer = try FlowTrainer(config, threads: threads) { $0 == .path(npy.path) ? npy.path : "" }
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
        let peakTrain = PeakMemory.peakBytes()
        var train: [String: Any] = statsMs(times)
        let median = (train["median_ms"] as? Double ?? 1) / 1e3
        train["steps_per_s_median"] = 1 / median
        train["steps_per_s_overall"] = Double(steps) / total
        train["images_per_s"] = Double(config.batchSize) / median
        let fwd = 2 * Double(unet.forwardFlopsPerRow) * Double(config.batchSize)
        train["fwd_gflop_per_batch"] = fwd / 1e9
        train["approx_gflops_3x_fwd"] = 3 * fwd / median / 1e9

        var rng = Random(seed: 1234)
        let z = rng.normal([sampleBatch, config.model.pointSize])
        let sd = trainer.model.stateDict()
        let blockRows = max(1, (sampleBatch + threads - 1) / threads)
        var sample = [String: Any]()
        for n in sampleSteps {
            _ = try EulerSampler.sample(model: config.model, stateDict: sd, z0: z, steps: n, threads: threads, blockRows: blockRows)
            var ts = [Double]()
            for _ in 0..<sampleReps {
                let s = monotonicSeconds()
                _ = try EulerSampler.sample(model: config.model, stateDict: sd, z0: z, steps: n, threads: threads, blockRows: blockRows)
                ts.append(monotonicSeconds() - s)
            }
            var st: [String: Any] = statsMs(ts)
            let med = (st["median_ms"] as? Double ?? 1) / 1e3
            st["images_per_s"] = Double(sampleBatch) / med
            st["approx_gflops"] = Double(n) * 2 * Double(unet.forwardFlopsPerRow) * Double(sampleBatch) / med / 1e9
            sample["euler\(n)_batch\(sampleBatch)"] = st
        }
        let out: [String: Any] = [
            "bench": "image", "peer_equivalent": "rf_torch.py image", "threads": threads,
            "openblas": BLAS.libraryConfig,
            "config": ["ch": ch, "nb": unet.blocksPerLevel, "batch": config.batchSize, "params": trainer.model.parameterCount,
                       "lr": Double(config.learningRate), "pool": pool, "steps": steps, "warmup": warmup,
                       "layout": "NCHW", "conv": "per-image im2col + SGEMM (1x1: direct SGEMM)"],
            "train_step": train, "sample": sample, "final_loss": Double(loss),
            "memory": ["peak_rss_mb": Double(peakTrain) / 1_048_576, "rss_before_train_mb": Double(rssBefore) / 1_048_576],
            "foreign_load_cores": load.cores(),
        ]
        return benchLine(out)
    }
}

/// Resident memory of this process from /proc/self/status (Linux).
enum PeakMemory {
    /// VmHWM: the peak resident set size so far.
    static func peakBytes() -> Int { field("VmHWM:") }
    /// VmRSS: the resident set size now.
    static func currentBytes() -> Int { field("VmRSS:") }

    static func field(_ name: String) -> Int {
        guard let text = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8) else { return 0 }
        for line in text.split(separator: "\n") where line.hasPrefix(name) {
            let kb = line.split(separator: " ", omittingEmptySubsequences: true).dropFirst().first.flatMap { Int($0) } ?? 0
            return kb * 1024
        }
        return 0
    }
}
