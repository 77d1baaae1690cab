import ReflowEngine
public import ReflowAutograd

/// The two halves of a data-parallel optimizer step that every trainer shares (the flow trainer,
/// the classifier trainer). Workers run forward and backward on their own graphs with
/// `accumulatesIntoParameters: false`; then ``sumGradients(_:workers:bins:threads:norm:)`` adds
/// their gradients into `Parameter.grad` and ``step(_:bins:threads:learningRate:gradScale:)``
/// updates the weights, both split over balanced bins of parameters
/// (``Optimizer/parallelBins(threads:)``), one bin per thread. Each parameter's gradient is summed
/// in worker order, so results depend on the worker count only.
public enum DataParallel {
    /// Adds every worker's gradient of each parameter into `Parameter.grad`. With `norm`, also
    /// returns the squared L2 norm of the summed gradients (per-bin sums added in bin order), for
    /// gradient clipping; else 0.
    @discardableResult
    public static func sumGradients(_ optimizer: Optimizer, workers: [Graph], bins: [[Int]], threads: Int, norm: Bool) -> Double {
        var partial = [Double](repeating: 0, count: bins.count)
        let shared = WorkerShared((named: optimizer.named, workers: workers, bins: bins))
        partial.withUnsafeMutableBufferPointer { pb in
            let out = SendableMutablePointer(pb.baseAddress)
            parallelChunks(count: bins.count, threads: threads) { range in
                for w in range {
                    var sumsq = 0.0
                    for i in shared.value.bins[w] {
                        let p = shared.value.named[i].parameter
                        let n = p.value.count
                        p.grad.data.withUnsafeMutableBufferPointer { acc in
                            for g in shared.value.workers {
                                g.withParameterGradient(p) { grad in
                                    guard let grad else { return }
                                    for j in 0..<n { acc[j] += grad[j] }
                                }
                            }
                            if norm { for j in 0..<n { sumsq += Double(acc[j]) * Double(acc[j]) } }
                        }
                    }
                    out.base![w] = sumsq
                }
            }
        }
        return partial.reduce(0, +)
    }

    /// One optimizer step from the summed gradients scaled by `gradScale` (clipping): the step
    /// counter once, then every bin's parameters on its own thread. Release the worker graphs'
    /// references to the weights first (`Graph.reset()`), so the update writes in place.
    public static func step(_ optimizer: Optimizer, bins: [[Int]], threads: Int, learningRate: Float, gradScale: Float = 1) {
        optimizer.beginStep()
        let shared = WorkerShared((optimizer: optimizer, bins: bins))
        parallelChunks(count: bins.count, threads: threads) { range in
            for w in range {
                for i in shared.value.bins[w] {
                    shared.value.optimizer.update(parameterAt: i, learningRate: learningRate, gradScale: gradScale)
                }
            }
        }
    }
}

extension DataParallel {
    /// One whole data-parallel optimizer step for trainers without clipping or EMA (the
    /// classifier's, the RIM's): worker w resets its graph and records `forward(graph, lo..<hi)`
    /// on its shard of `rows` (nothing for an empty shard), back-propagates the returned scalar
    /// (the shard's share of the batch loss, already scaled by 1/rows), then the gradients are
    /// summed in worker order, the optimizer steps at `learningRate` and the gradients are
    /// zeroed. Returns the shard losses summed in worker order.
    public static func trainStep(_ optimizer: Optimizer, workers: [Graph], bins: [[Int]], rows: Int, learningRate: Float,
                                 _ forward: @Sendable (Graph, Range<Int>) -> Var) -> Float {
        let threads = workers.count
        var losses = [Float](repeating: 0, count: threads)
        let shared = WorkerShared(workers)
        losses.withUnsafeMutableBufferPointer { lb in
            let out = SendableMutablePointer(lb.baseAddress)
            parallelChunks(count: threads, threads: threads) { range in
                for w in range {
                    let lo = rows * w / threads, hi = rows * (w + 1) / threads
                    let g = shared.value[w]
                    g.reset()
                    guard hi > lo else { continue }
                    let loss = forward(g, lo..<hi)
                    g.backward(loss)
                    out.base![w] = loss.scalar
                }
            }
        }
        sumGradients(optimizer, workers: workers, bins: bins, threads: threads, norm: false)
        for g in workers { g.reset() }
        step(optimizer, bins: bins, threads: threads, learningRate: learningRate)
        optimizer.zeroGrad()
        return losses.reduce(0, +)
    }
}
