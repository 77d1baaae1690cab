import Foundation
import ReflowEngine
import ReflowNN
import ReflowFlow

/// `reflowd bench gemm`: GFLOP/s of BLAS.gemm (engine threading) on the MLP shapes, to compare
/// with shared/peers/sgemm_bench.c on the same shapes; and `bench kernels`: elementwise ns/element.
public enum KernelBenchmark {
    public static func gemm(_ args: [String]) throws -> String {
        let f = try Flags(args, allowed: ["threads", "m", "n", "k", "op", "reps", "min-seconds"])
        let threads = try f.int("threads", default: 2, min: 1, max: 64)
        let m = try f.int("m", default: 1024, min: 1, max: 16384), n = try f.int("n", default: 1024, min: 1, max: 16384)
        let k = try f.int("k", default: 1024, min: 1, max: 16384)
        let op = f.string("op", default: "NN")
        guard op.count == 2, op.allSatisfy({ $0 == "N" || $0 == "T" }) else { throw CLIError("--op must be NN, NT, TN or TT") }
        let ta = op.first == "T", tb = op.last == "T"
        let reps = try f.int("reps", default: 7, min: 1, max: 1000)
        let minSeconds = Double(try f.float("min-seconds", default: 0.1))
        guard minSeconds > 0 && minSeconds <= 60 else { throw CLIError("--min-seconds must be in (0, 60]") }
        BLAS.setLibraryThreads(1)
        var rng = Random(seed: 1)
        let a = rng.uniform([m * k], low: -0.5, high: 0.5), b = rng.uniform([k * n], low: -0.5, high: 0.5)
        var c = Tensor.zeros([m * n])
        let flop = 2.0 * Double(m) * Double(n) * Double(k)
        func call() {
            a.data.withUnsafeBufferPointer { pa in
                b.data.withUnsafeBufferPointer { pb in
                    c.data.withUnsafeMutableBufferPointer { pc in
                        BLAS.gemm(transA: ta, transB: tb, m: m, n: n, k: k, a: pa.baseAddress!, lda: ta ? m : k,
                                  b: pb.baseAddress!, ldb: tb ? k : n, c: pc.baseAddress!, ldc: n, threads: threads)
                    }
                }
            }
        }
        var iters = 1
        while true {
            let t0 = monotonicSeconds()
            for _ in 0..<iters { call() }
            let dt = monotonicSeconds() - t0
            if dt >= minSeconds { break }
            iters = dt < minSeconds / 20 ? iters * 10 : Int(Double(iters) * minSeconds * 1.2 / dt) + 1
        }
        var g = [Double]()
        for _ in 0..<reps {
            let t0 = monotonicSeconds()
            for _ in 0..<iters { call() }
            g.append(flop * Double(iters) / (monotonicSeconds() - t0) / 1e9)
        }
        g.sort()
        return benchLine(["bench": "gemm", "M": m, "N": n, "K": k, "op": op, "threads": threads,
                         "median_gflops": g[g.count / 2], "min": g[0], "max": g[g.count - 1]])
    }

    public static func kernels(_ args: [String]) throws -> String {
        let f = try Flags(args, allowed: ["count", "reps"])
        let count = try f.int("count", default: 1024 * 256, min: 8, max: 1 << 28)
        let reps = try f.int("reps", default: 200, min: 1, max: 100_000)
        var rng = Random(seed: 2)
        let x = rng.uniform([count], low: -6, high: 6)
        var y = Tensor.zeros([count])
        var out = [String: Any]()
        for op in [UnaryOp.silu, .relu, .tanh, .sigmoid] {
            var ts = [Double]()
            for _ in 0..<reps {
                let t0 = monotonicSeconds()
                x.data.withUnsafeBufferPointer { px in
                    y.data.withUnsafeMutableBufferPointer { py in
                        Kernels.unaryForward(op, px.baseAddress!, py.baseAddress!, count: count)
                    }
                }
                ts.append(monotonicSeconds() - t0)
            }
            ts.sort()
            out[op.rawValue + "_ns_per_element"] = ts[ts.count / 2] / Double(count) * 1e9
        }
        out["bench"] = "kernels"
        out["count"] = count
        return benchLine(out)
    }
}

/// `reflowd bench pairs`: reflow pair generation — n noise points integrated by the toy MLP
/// (3 × 256 SiLU, PyTorch init) with Euler, as the reflow stage of `rf_torch.py --quality` does.
public enum PairsBenchmark {
    public static func run(_ args: [String]) throws -> String {
        let f = try Flags(args, allowed: ["threads", "pairs", "steps", "reps", "width", "depth"])
        let threads = try f.int("threads", default: 2, min: 1, max: 64)
        let n = try f.int("pairs", default: 50_000, min: 1, max: 10_000_000)
        let steps = try f.int("steps", default: 100, min: 1, max: 100_000)
        let reps = try f.int("reps", default: 3, min: 1, max: 100)
        let config = VelocityMLPConfig(dimension: 2, width: try f.int("width", default: 256, min: 1, max: 16384),
                                       depth: try f.int("depth", default: 3, min: 1, max: 64), activation: .silu)
        BLAS.setLibraryThreads(1)
        let load = ForeignLoad()
        var rng = Random(seed: 0)
        let weights = VelocityMLP(config, rng: &rng).stateDict()
        let z0 = rng.normal([n, 2])
        var times = [Double]()
        for _ in 0..<reps {
            let t0 = monotonicSeconds()
            _ = try ODESolver.solve(model: ModelSpec(config), stateDict: weights, x: z0, method: .euler(steps: steps),
                                    direction: .forward, threads: threads)
            times.append(monotonicSeconds() - t0)
        }
        var st: [String: Any] = statsMs(times)
        let median = (st["median_ms"] as? Double ?? 1) / 1e3
        let flop = 2.0 * Double(n) * Double(steps) * Double(zip(config.sizes, config.sizes.dropFirst()).reduce(0) { $0 + $1.0 * $1.1 })
        st["pairs_per_s"] = Double(n) / median
        st["gflops"] = flop / median / 1e9
        return benchLine(["bench": "pairs", "peer_equivalent": "rf_torch.py --quality reflow_pair_gen_s", "threads": threads,
                         "pairs": n, "euler_steps": steps, "generate": st, "foreign_load_cores": load.cores()])
    }
}
