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
