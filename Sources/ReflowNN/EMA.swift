public import ReflowEngine

/// Exponential moving average of a module's weights: shadow ← d·shadow + (1 − d)·θ after each step.
public final class EMA {
    public let decay: Float
    /// Averaged weights by parameter name.
    public private(set) var shadow: [String: Tensor]

    public init(decay: Float, module: some Module) {
        precondition(decay >= 0 && decay < 1, "EMA: decay must be in [0, 1)")
        self.decay = decay
        shadow = module.stateDict()
    }

    /// Restarts the average at the module's current weights (e.g. after loading a teacher).
    public func resetAverage(to module: some Module) {
        shadow = module.stateDict()
    }

    /// Folds the module's current weights into the average.
    public func update(from module: some Module) {
        let d = decay
        for (name, p) in module.namedParameters() {
            guard var s = shadow.removeValue(forKey: name) else { continue }
            p.value.data.withUnsafeBufferPointer { w in
                s.data.withUnsafeMutableBufferPointer { s in
                    for j in s.indices { s[j] = d * s[j] + (1 - d) * w[j] }
                }
            }
            shadow[name] = s
        }
    }

    /// Zeroes the masked entries of the average (pruned weights stay 0 in it: 0·d + 0·(1 − d)).
    public func apply(_ masks: PruneMasks) {
        for (name, m) in masks.masks {
            guard var s = shadow.removeValue(forKey: name) else { continue }
            if s.shape == m.shape {
                s.data.withUnsafeMutableBufferPointer { v in m.data.withUnsafeBufferPointer { mb in for j in v.indices where mb[j] == 0 { v[j] = 0 } } }
            }
            shadow[name] = s
        }
    }

    /// Replaces the average (e.g. from a checkpoint). Names and shapes must match the current one.
    public func load(_ tensors: [String: Tensor]) throws {
        for (k, v) in shadow {
            guard let t = tensors[k] else { throw StateDictError.missing("ema." + k) }
            guard t.shape == v.shape else { throw StateDictError.shapeMismatch(name: "ema." + k, expected: v.shape, found: t.shape) }
        }
        for k in shadow.keys { shadow[k] = tensors[k] }
    }
}
