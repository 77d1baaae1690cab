import ReflowEngine
import Foundation

// Classification loss as one primitive: composing log(softmax(x)) would lose precision (and
// reach log 0) for confident logits, and would keep two [B, K] intermediates for backward.

extension Graph {
    /// Per-row softmax cross-entropy: logits [B, K], `labels` B class indices in 0..<K → [B] with
    ///
    ///     loss[b] = log Σ_k exp(z[b, k]) − z[b, labels[b]]
    ///
    /// computed with the row maximum subtracted (no overflow for large logits). Backward:
    /// dz[b, k] = g[b] · (softmax(z)[b, k] − 1[k = labels[b]]). The softmax is kept for the
    /// backward pass in a hidden [B, K] leaf (only when gradients are recorded).
    ///
    /// Reduce with ``mean(_:axes:keepDims:)`` for the usual batch-mean loss, or scale a
    /// shard's ``sum(_:axes:keepDims:)`` by 1/B for data-parallel training.
    ///
    /// - Precondition: logits are rank 2 with K ≥ 1 and every label is in 0..<K (callers check
    ///   user data before it reaches a graph).
    public func softmaxCrossEntropy(_ logits: Var, labels: [Int32]) -> Var {
        let s = values[logits.id].shape
        precondition(s.count == 2 && s[1] >= 1, "softmaxCrossEntropy: logits must be [B, K], got \(s)")
        let (b, k) = (s[0], s[1])
        precondition(labels.count == b, "softmaxCrossEntropy: \(labels.count) labels for \(b) rows")
        precondition(labels.allSatisfy { $0 >= 0 && Int($0) < k }, "softmaxCrossEntropy: labels must be in 0..<\(k)")
        let keep = isGradEnabled && needsGrad[logits.id]
        // Softmax of every row (kept for backward, or a scratch buffer).
        let probs = keep ? record([b, k], .leaf, inputs: []) { _ in } : nil
        var scratch = keep ? [] : takeBuffer(b * k)
        defer { if !keep { pool(scratch) } }
        func forward(_ pp: UnsafeMutablePointer<Float>) -> Var {
            read(logits.id) { px in
                record([b], .softmaxCrossEntropy(logits: logits.id, probs: probs?.id ?? -1, labels: labels),
                       inputs: [logits.id]) { py in
                    for r in 0..<b {
                        let xr = px + r * k, pr = pp + r * k
                        var m = -Float.infinity
                        for j in 0..<k { m = Swift.max(m, xr[j]) }
                        var sum: Double = 0
                        for j in 0..<k {
                            let e = Foundation.exp(xr[j] - m)
                            pr[j] = e
                            sum += Double(e)
                        }
                        let inv = Float(1 / sum)
                        for j in 0..<k { pr[j] *= inv }
                        py[r] = Float(Foundation.log(sum)) + m - xr[Int(labels[r])]
                    }
                }
            }
        }
        if let probs { return read(probs.id) { forward(UnsafeMutablePointer(mutating: $0)) } }
        return scratch.withUnsafeMutableBufferPointer { forward($0.baseAddress!) }
    }

    func propagateCrossEntropy(_ id: Int, _ g: UnsafePointer<Float>) {
        guard case .softmaxCrossEntropy(let x, let probs, let labels) = ops[id] else { return }
        let s = values[x].shape
        let (b, k) = (s[0], s[1])
        read(probs) { pp in
            withGrad(x) { dx, fresh in
                for r in 0..<b {
                    let pr = pp + r * k, dr = dx + r * k, gr = g[r], y = Int(labels[r])
                    if fresh {
                        for j in 0..<k { dr[j] = gr * pr[j] }
                    } else {
                        for j in 0..<k { dr[j] += gr * pr[j] }
                    }
                    dr[y] -= gr
                }
            }
        }
    }
}
