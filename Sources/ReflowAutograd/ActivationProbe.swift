public import ReflowEngine

/// Counts dead ReLU pre-activations per named layer during forward passes (the dynamic
/// dead-neuron rate of Liu et al., "AP: Selective Activation for De-sparsifying Pruned Neural
/// Networks", TMLR 2023; docs/JOBS.md defines it).
///
/// Attach one to a graph (``Graph/probe``); every ``Graph/activation(_:_:name:)`` with ReLU then
/// adds, for its layer, the number of (sample, unit) pre-activations ≤ 0 and their total, and
/// marks which units were positive at least once. A unit is a feature of a `[B, F]` layer and a
/// channel of a `[B, C, H, W]` layer (whose positions all count as pairs). Not thread-safe: one
/// probe per graph, combined with ``merge(_:)``.
public final class ActivationProbe {
    /// What one ReLU layer showed.
    public struct Layer: Sendable, Equatable {
        /// (sample, unit[, position]) pre-activations ≤ 0.
        public var nonPositive: Int = 0
        /// All counted pre-activations.
        public var total: Int = 0
        /// Per unit: positive for at least one counted input.
        public var everPositive: [Bool] = []

        /// nonPositive / total: the layer's dynamic dead-neuron rate.
        public var rate: Double { total == 0 ? 0 : Double(nonPositive) / Double(total) }
        /// Units never positive on any counted input (dead for the whole sample).
        public var deadUnits: Int { everPositive.reduce(0) { $0 + ($1 ? 0 : 1) } }
    }

    /// Layers in the order they were first seen.
    public private(set) var order: [String] = []
    public private(set) var layers: [String: Layer] = [:]

    public init() {}

    /// Adds the pre-activations `x` (shape `[B, F]` or `[B, C, …]`) of layer `name`.
    public func record(_ name: String, _ x: Tensor) {
        let b = x.shape.first ?? 1, units = x.shape.count >= 2 ? x.shape[1] : 1
        let spatial = x.count / max(1, b * units)
        var l = layers[name] ?? Layer()
        if layers[name] == nil { order.append(name) }
        if l.everPositive.count != units { l.everPositive = [Bool](repeating: false, count: units) }
        var dead = 0
        x.data.withUnsafeBufferPointer { p in
            for r in 0..<b {
                for u in 0..<units {
                    let base = (r * units + u) * spatial
                    var anyPositive = false
                    for s in 0..<spatial {
                        if p[base + s] > 0 { anyPositive = true } else { dead += 1 }
                    }
                    if anyPositive { l.everPositive[u] = true }
                }
            }
        }
        l.nonPositive += dead
        l.total += x.count
        layers[name] = l
    }

    /// Adds another probe's counts (layers matched by name; units must agree).
    public func merge(_ other: ActivationProbe) {
        for name in other.order {
            guard let o = other.layers[name] else { continue }
            guard var l = layers[name] else { order.append(name); layers[name] = o; continue }
            l.nonPositive += o.nonPositive
            l.total += o.total
            if l.everPositive.count == o.everPositive.count {
                for i in l.everPositive.indices where o.everPositive[i] { l.everPositive[i] = true }
            }
            layers[name] = l
        }
    }

    /// Dead pre-activations over all layers / all counted pre-activations.
    public var overallRate: Double {
        let t = layers.values.reduce(0) { $0 + $1.total }
        return t == 0 ? 0 : Double(layers.values.reduce(0) { $0 + $1.nonPositive }) / Double(t)
    }
}

extension Graph {
    /// `op(x)`; with ReLU and a ``probe`` attached, also counts `x` under `name` first.
    public func activation(_ op: UnaryOp, _ x: Var, name: String) -> Var {
        if op == .relu, let probe { probe.record(name, values[x.id]) }
        return unary(op, x)
    }
}
