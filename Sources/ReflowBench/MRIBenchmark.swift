import Foundation
import ReflowEngine
import ReflowNN
import ReflowFlow
import ReflowMRI

/// `reflowd bench mri`: the costs behind issue #14's timing claims, per image, on one
/// configuration (single coil, `size`², Gaussian-2D mask at R = 4, random ellipse phantoms):
/// a centred 2-D FFT pair, FISTA iterations with the Haar-ℓ1 and the TV penalty, RIM inference
/// for each cell (random weights: the cost does not depend on their values) and a RIM training
/// step. `docs/results/rim_torch.py` runs the same RIM inference and training step in PyTorch
/// with the same flags and keys.
public enum MRIBenchmark {
    public static let flagNames = ["threads", "size", "features", "steps", "batch", "train-batch", "reps", "cs-iterations"]

    public static func run(_ args: [String]) throws -> String {
        let f = try Flags(args, allowed: flagNames)
        let threads = try f.int("threads", default: 1, min: 1, max: 64)
        let size = try f.int("size", default: 28, min: 8, max: 256)
        let features = try f.int("features", default: 32, min: 1, max: 256)
        let steps = try f.int("steps", default: 8, min: 1, max: 64)
        let batch = try f.int("batch", default: 16, min: 1, max: 1024)
        let trainBatch = try f.int("train-batch", default: 8, min: 1, max: 1024)
        let reps = try f.int("reps", default: 5, min: 1, max: 1000)
        let csIterations = try f.int("cs-iterations", default: 100, min: 1, max: 10_000)
        BLAS.setLibraryThreads(1)

        var rng = Random(seed: 1)
        let acq = Acquisition(mask: MaskSpec(kind: .gaussian2D, acceleration: 4))
        let problems = try (0..<batch).map { _ in
            try acq.simulate(Phantoms.randomEllipses(height: size, width: size, seed: rng.next()).data, height: size, width: size, rng: &rng)
        }
        func perImage(_ n: Int, _ body: () -> Void) -> [String: Any] {
            body()  // warm-up (plans, caches)
            var ts = [Double]()
            for _ in 0..<reps {
                let s = monotonicSeconds()
                body()
                ts.append((monotonicSeconds() - s) / Double(n))
            }
            return statsMs(ts)
        }

        var out: [String: Any] = ["bench": "mri", "peer_equivalent": "docs/results/rim_torch.py", "threads": threads,
                                  "openblas": BLAS.libraryConfig,
                                  "config": ["size": size, "features": features, "steps": steps, "batch": batch,
                                             "train_batch": trainBatch, "reps": reps, "cs_iterations": csIterations]]
        let x = problems[0].reference!
        out["fft2d_pair_per_image"] = perImage(100) { for _ in 0..<100 { _ = FFT2D.inverse(FFT2D.forward(x)) } }
        for (name, reg) in [("wavelet", CompressedSensing.Regularizer.wavelet(levels: nil)), ("tv", .tv(inner: 20))] {
            out["cs_fista_\(name)_per_image"] = perImage(batch) {
                for p in problems {
                    _ = CompressedSensing.reconstruct(p.model, p.measurements, lambda: 0.01, iterations: csIterations, method: .fista,
                                                      regularizer: reg, recordObjective: false)
                }
            }
        }
        var rim = [String: Any]()
        for cell in RecurrentCellKind.allCases {
            let config = RIMConfig(cell: cell, features: features, steps: steps)
            var r = Random(seed: 2)
            let net = RIMNetwork(config, rng: &r)
            var st = perImage(batch) { _ = net.reconstruct(problems, threads: threads) }
            let gflop = 2 * Double(config.macsPerPixelStep * size * size * steps) / 1e9
            st["gflop_per_image"] = gflop
            st["approx_gflops"] = gflop / ((st["median_ms"] as? Double ?? 1) / 1e3)
            st["params"] = config.parameterCount
            rim[cell.rawValue] = st
        }
        out["rim_inference_per_image"] = rim
        let trainer = try RIMTrainer(RIMConfig(cell: .gru, features: features, steps: steps), images: .phantoms(height: size, width: size),
                                     acquisition: acq, batchSize: trainBatch, learningRate: 1e-3, seed: 0, threads: threads)
        trainer.trainStep()
        var ts = [Double]()
        for _ in 0..<reps {
            let s = monotonicSeconds()
            trainer.trainStep()
            ts.append(monotonicSeconds() - s)
        }
        out["rim_gru_train_step"] = statsMs(ts)
        return benchLine(out)
    }
}
