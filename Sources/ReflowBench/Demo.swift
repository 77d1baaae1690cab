import Foundation
import ReflowEngine
import ReflowNN
import ReflowFlow
import ReflowStore
import ReflowCodec

/// `reflowd demo`: trains a 1-rectified flow on a built-in 2-D distribution (8 Gaussians by
/// default; `--config` chooses π0 and π1), checkpoints it
/// (periodically and at the end, resumable with `--resume`), samples with 1 and 100 Euler steps
/// from the EMA weights, and writes `checkpoint.safetensors`, `samples.png` and `summary.json`.
public enum Demo {
    public static func run(_ args: [String], log: (String) -> Void) throws -> String {
        let f = try Flags(args, allowed: ["out", "steps", "threads", "config", "checkpoint-every", "samples"],
                          booleans: ["resume"])
        let out = f.string("out", default: "var/demo")
        let steps = try f.int("steps", default: 3000, min: 1, max: 10_000_000)
        let threads = try f.int("threads", default: 2, min: 1, max: 64)
        let every = try f.int("checkpoint-every", default: 1000, min: 1, max: 10_000_000)
        let nSamples = try f.int("samples", default: 5000, min: 1, max: 1_000_000)
        var config = TrainingConfig()
        if let path = f.values["config"] {
            guard let data = FileManager.default.contents(atPath: path) else { throw CLIError("cannot read config file '\(path)'") }
            do { config = try TrainingConfig.decodePartial(from: Array(data)) } catch {
                throw CLIError("config '\(path)': \(describe(error))")
            }
        }
        if let (pointer, message) = config.validationError() {
            throw CLIError("config: \(pointer): \(message)")
        }
        guard config.model.pointSize == 2, let distribution = config.data.distribution else {
            throw CLIError("config: /data: the demo needs a built-in 2-D distribution and a 2-D model")
        }
        try FileManager.default.createDirectory(atPath: out, withIntermediateDirectories: true)
        BLAS.setLibraryThreads(1)

        let ckpt = out + "/checkpoint.safetensors"
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        let configJSON = String(decoding: try encoder.encode(config), as: UTF8.self)
        let meta = ["reflowd.arch": String(decoding: try encoder.encode(config.model), as: UTF8.self),
                    "reflowd.config": configJSON]
        let trainer: FlowTrainer
        if f.bool("resume"), FileManager.default.fileExists(atPath: ckpt) {
            let snapshot = try Checkpoint.read(path: ckpt)
            // Resuming under a different configuration would silently mix two runs.
            guard snapshot.metadata["reflowd.config"] == configJSON else {
                throw CLIError("--resume: \(ckpt) was written with a different configuration; use the same --config or another --out")
            }
            guard snapshot.step <= steps else {
                throw CLIError("--resume: \(ckpt) is already at step \(snapshot.step), beyond --steps \(steps)")
            }
            trainer = try FlowTrainer(config, threads: threads, restoring: snapshot)
            log("resumed from \(ckpt) at step \(trainer.step)")
        } else {
            trainer = try FlowTrainer(config, threads: threads)
        }
        func save() throws -> String {
            var s = trainer.snapshot()
            s.metadata.merge(meta) { _, new in new }
            return try Checkpoint.write(s, to: ckpt)
        }
        let t0 = monotonicSeconds()
        var losses = [Float]()
        var recent = [Float]()
        while trainer.step < steps {
            let l = trainer.trainStep()
            recent.append(l)
            if trainer.step % 100 == 0 || trainer.step == steps {
                losses.append(recent.reduce(0, +) / Float(recent.count))
                recent.removeAll()
            }
            if trainer.step % 500 == 0 { log("step \(trainer.step)/\(steps) loss \(losses.last ?? l)") }
            if trainer.step % every == 0 && trainer.step < steps { _ = try save() }
        }
        let trainSeconds = monotonicSeconds() - t0
        let digest = try save()

        // Sample from the EMA weights (the model a researcher would ship).
        let weights = trainer.ema?.shadow ?? trainer.model.stateDict()
        var rng = Random(seed: config.seed &+ 2)
        let z0 = try config.source.sampler(pointSize: 2) { _ in throw CLIError("the demo source must be built in") }.sample(nSamples, rng: &rng)
        let ts = monotonicSeconds()
        let one = try EulerSampler.sample(model: config.model, stateDict: weights, z0: z0, steps: 1, threads: threads)
        let hundred = try EulerSampler.sample(model: config.model, stateDict: weights, z0: z0, steps: 100, threads: threads)
        let sampleSeconds = monotonicSeconds() - ts
        var dataRng = Random(seed: config.seed &+ 3)
        let data = distribution.sample(nSamples, rng: &dataRng)

        // samples.png: three panels — data, 1-step Euler, 100-step Euler, on a window that holds
        // the data with a margin.
        let extent = data.data.reduce(Float(1)) { max($0, abs($1)) }
        let panel = 360, lim = extent * 1.3 + 0.5
        var canvas = Canvas(width: panel * 3, height: panel, window: (-lim, lim * 5, -lim, lim))
        let shift = 2 * lim
        func shifted(_ t: Tensor, by k: Int) -> [Float] {
            var v = t.data
            for i in stride(from: 0, to: v.count, by: 2) { v[i] += Float(k) * shift }
            return v
        }
        canvas.axes()
        canvas.scatter(shifted(data, by: 0), color: .gray, alpha: 0.4)
        canvas.scatter(shifted(one, by: 1), color: .orange, alpha: 0.4)
        canvas.scatter(shifted(hundred, by: 2), color: .blue, alpha: 0.4)
        for k in 1..<3 { canvas.line(from: (Float(k) * shift - lim, -lim), to: (Float(k) * shift - lim, lim), color: .black, alpha: 1) }
        try AtomicFile.write(try canvas.png(), to: out + "/samples.png")

        let summary: [String: Any] = [
            "steps": trainer.step, "threads": threads, "train_seconds": trainSeconds,
            "loss_every_100_steps": losses.map { Double($0) },
            "checkpoint": ckpt, "checkpoint_sha256": digest,
            "sample_seconds": sampleSeconds, "samples": nSamples,
            // A diverged run has non-finite samples; its metrics are reported as null, not thrown.
            "euler1": (try? coverage(one, distribution)) ?? NSNull(), "euler100": (try? coverage(hundred, distribution)) ?? NSNull(),
            "data": (try? coverage(data, distribution)) ?? NSNull(),
            "sliced_w2": ["euler1": (try? Metrics.slicedWasserstein2(a: one, b: data, seed: 7)) ?? Double.nan,
                          "euler100": (try? Metrics.slicedWasserstein2(a: hundred, b: data, seed: 7)) ?? Double.nan],
            "png": out + "/samples.png",
        ]
        let line = jsonLine(summary)
        try AtomicFile.write(Array((line + "\n").utf8), to: out + "/summary.json")
        log("wrote \(ckpt) (+ .sha256), \(out)/samples.png and \(out)/summary.json")
        return line
    }

    /// Mean distance to the data's support and the fraction of points inside a support cell
    /// (within 3 std of a mode for the Gaussian mixtures).
    static func coverage(_ x: Tensor, _ data: Distribution2D) throws -> [String: Double] {
        let c = try Metrics.supportCoverage(samples: x, distribution: data)
        return ["mean_distance_to_support": c.meanDistance, "fraction_in_support": c.fractionWithin,
                "cells_covered": Double(c.modesCovered)]
    }

    static func describe(_ error: any Error) -> String {
        switch error {
        case DecodingError.typeMismatch(_, let c), DecodingError.valueNotFound(_, let c),
             DecodingError.dataCorrupted(let c):
            return "/" + c.codingPath.map(\.stringValue).joined(separator: "/") + ": " + c.debugDescription
        case DecodingError.keyNotFound(let k, let c):
            return "/" + (c.codingPath + [k]).map(\.stringValue).joined(separator: "/") + ": missing"
        default:
            return "\(error)"
        }
    }
}
