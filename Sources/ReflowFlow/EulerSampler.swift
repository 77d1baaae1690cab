public import ReflowEngine
import ReflowAutograd
import ReflowNN

/// Euler integration of dx/dt = v(x, t) from t = 0 to 1 in `steps` uniform steps (see
/// ``TimeConvention``). Points are independent, so the batch is cut into blocks of `blockRows`
/// that are spread over `threads` workers; each worker runs whole trajectories for its blocks on
/// its own no-grad graph with single-threaded GEMMs, keeping a block's activations in cache.
/// Results do not depend on `threads` (every row sees the same arithmetic).
public enum EulerSampler {
    /// z0: [N, d] → x1: [N, d]
    public static func sample(config: VelocityMLPConfig, stateDict: [String: Tensor], z0: Tensor,
                              steps: Int, threads: Int, blockRows: Int = 1024) throws -> Tensor {
        precondition(steps >= 1, "EulerSampler: steps must be ≥ 1")
        let d = config.dimension
        precondition(z0.rank == 2 && z0.shape[1] == d, "EulerSampler: z0 \(z0.shape) for dimension \(d)")
        _ = try VelocityMLP(config, stateDict: stateDict)  // validate once on the caller's thread
        let n = z0.shape[0]
        var out = z0
        let blocks = (n + blockRows - 1) / blockRows
        out.data.withUnsafeMutableBufferPointer { buf in
            let po = SendableMutablePointer(buf.baseAddress)
            parallelChunks(count: blocks, threads: threads) { range in
                // Weights are shared copy-on-write; only this worker's graph and buffers are new.
                guard let model = try? VelocityMLP(config, stateDict: stateDict) else { return }
                let graph = Graph(threads: 1, gradEnabled: false)
                let dt = 1 / Float(steps)
                for blk in range {
                    let lo = blk * blockRows, rows = min(blockRows, n - lo)
                    let x = po.base! + lo * d
                    for i in 0..<steps {
                        graph.reset()
                        let t = Float(i) * dt
                        let input = graph.constant(shape: [rows, d + 1]) { inp in
                            for r in 0..<rows {
                                for c in 0..<d { inp[r * (d + 1) + c] = x[r * d + c] }
                                inp[r * (d + 1) + d] = t
                            }
                        }
                        let v = model(packed: input)
                        v.graph.read(v.id) { pv in
                            for j in 0..<(rows * d) { x[j] += dt * pv[j] }
                        }
                    }
                }
                graph.reset()
            }
        }
        return out
    }
}
