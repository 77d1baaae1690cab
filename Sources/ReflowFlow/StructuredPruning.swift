public import ReflowEngine
public import ReflowNN
import ReflowAutograd

/// A layer whose output units (rows of a linear weight, filters of a convolution) can be
/// removed, and where its outputs are consumed: `next`'s input units (columns of a linear
/// weight in blocks of `block` — the positions of a flattened feature map — or input channels
/// of a convolution without padding).
public struct UnitLink: Sendable, Equatable {
    /// Parameter prefix of the pruned layer (`layers.0`, `convs.1`).
    public var layer: String
    /// Parameter prefix of the consumer.
    public var next: String
    /// Inputs of `next` per unit of `layer` (1, or H·W when a conv map is flattened).
    public var block: Int

    public init(layer: String, next: String, block: Int = 1) {
        self.layer = layer
        self.next = next
        self.block = block
    }
}

/// A model whose hidden units can be removed, giving a physically smaller model of the same kind.
public protocol UnitPrunable {
    /// The prunable layers in forward order, each with its consumer.
    var unitLinks: [UnitLink] { get }
    /// The activation between a layer and its consumer.
    var unitActivation: Activation { get }
    /// The same architecture with `units[layer]` output units for the listed layers.
    func resized(_ units: [String: Int]) -> Self
}

public enum StructuredPruning {
    /// What structured pruning kept.
    public struct Outcome: Sendable {
        public var weights: [String: Tensor]
        /// Kept unit indices (of the original layer) per pruned layer.
        public var kept: [String: [Int]]
    }

    /// Removes `fraction` of the units of each layer in `layers` (all links when nil) with the
    /// smallest L1 norm of their incoming weights (``Pruning/unitNorms(_:)``), layer by layer in
    /// forward order, and cuts the matching inputs of each consumer.
    ///
    /// A removed unit whose incoming weights are all zero outputs the constant act(bias); that
    /// constant's contribution is folded into the consumer's bias, so removing units that are
    /// already pruned away leaves the network's function unchanged (exactly so for linear
    /// consumers and for convolutions without padding, the only consumers these models have).
    public static func prune(weights: [String: Tensor], links: [UnitLink], layers: Set<String>?, fraction: Double,
                             activation: Activation) -> Outcome {
        var w = weights
        var kept = [String: [Int]]()
        for link in links where layers?.contains(link.layer) ?? true {
            guard let weight = w[link.layer + ".weight"], let nextWeight = w[link.next + ".weight"] else { continue }
            let keep = Pruning.keptUnits(norms: Pruning.unitNorms(weight), fraction: fraction)
            kept[link.layer] = keep
            let bias = w[link.layer + ".bias"]
            // Constant outputs of removed all-zero units, folded into the consumer's bias.
            let removed = Set(0..<weight.shape[0]).subtracting(keep).sorted()
            let per = weight.count / max(1, weight.shape[0])
            let constant = removed.filter { u in (0..<per).allSatisfy { weight.data[u * per + $0] == 0 } }
            if !constant.isEmpty, var nb = w[link.next + ".bias"] {
                let a = act(activation, constant.map { bias?.data[$0] ?? 0 })
                let rows = nextWeight.shape[0], cols = nextWeight.count / max(1, rows)
                let unit = cols / max(1, weight.shape[0])           // inputs of `next` per unit (block × kernel)
                for r in 0..<rows {
                    var s = 0.0
                    for (ci, u) in constant.enumerated() {
                        for j in 0..<unit { s += Double(nextWeight.data[r * cols + u * unit + j]) * Double(a[ci]) }
                    }
                    nb.data[r] += Float(s)
                }
                w[link.next + ".bias"] = nb
            }
            w[link.layer + ".weight"] = Pruning.selectOutputs(weight, keep)
            if let bias { w[link.layer + ".bias"] = Pruning.selectOutputs(bias, keep) }
            w[link.next + ".weight"] = Pruning.selectInputs(nextWeight, keep, block: link.block)
        }
        return Outcome(weights: w, kept: kept)
    }

    /// The activation applied to constants, with the graph's own kernel (same rounding).
    static func act(_ a: Activation, _ x: [Float]) -> [Float] {
        let g = Graph(threads: 1, gradEnabled: false)
        return g.unary(a.op, g.constant(Tensor(shape: [x.count], data: x))).value.data
    }
}

extension ClassifierConfig: UnitPrunable {
    /// MLP: every hidden layer; LeNet: both convolutions and every hidden layer. (The CNN's
    /// two convolutions per level share one width, so it has no links.)
    public var unitLinks: [UnitLink] {
        switch kind {
        case .mlp:
            return hidden.indices.map { UnitLink(layer: "layers.\($0)", next: $0 + 1 < hidden.count ? "layers.\($0 + 1)" : "head") }
        case .lenet:
            let s = imageShape ?? [1, 28, 28]
            let side = ClassifierConfig.lenetSide(s[1]) * ClassifierConfig.lenetSide(s[2])
            return [UnitLink(layer: "convs.0", next: "convs.1"), UnitLink(layer: "convs.1", next: "layers.0", block: side)]
                + hidden.indices.map { UnitLink(layer: "layers.\($0)", next: $0 + 1 < hidden.count ? "layers.\($0 + 1)" : "head") }
        case .cnn:
            return []
        }
    }

    public var unitActivation: Activation { activation }

    public func resized(_ units: [String: Int]) -> ClassifierConfig {
        var c = self
        for (i, h) in hidden.enumerated() { c.hidden[i] = units["layers.\(i)"] ?? h }
        if kind == .lenet { for (j, ch) in channels.enumerated() { c.channels[j] = units["convs.\(j)"] ?? ch } }
        return c
    }
}

extension VelocityMLPConfig: UnitPrunable {
    /// Every hidden layer (the output layer keeps the data's dimension); for a class-conditional
    /// MLP not the first, whose units also receive the label embedding.
    public var unitLinks: [UnitLink] {
        let n = hiddenWidths.count
        return ((classes == nil ? 0 : 1)..<n).map { UnitLink(layer: "layers.\($0)", next: "layers.\($0 + 1)") }
    }

    public var unitActivation: Activation { activation }

    public func resized(_ units: [String: Int]) -> VelocityMLPConfig {
        var c = self
        c.widths = hiddenWidths.enumerated().map { units["layers.\($0.offset)"] ?? $0.element }
        return c
    }
}
