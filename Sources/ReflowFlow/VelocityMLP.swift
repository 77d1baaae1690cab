public import ReflowEngine
public import ReflowAutograd
public import ReflowNN

/// Architecture of an MLP velocity field v(x, t): input `[x (dimension), t (1)]`, `depth`
/// hidden layers of `width`, output `dimension`. The same network as `rf_torch.py`'s `MLP`.
public struct VelocityMLPConfig: Codable, Sendable, Equatable {
    public var dimension: Int
    public var width: Int
    public var depth: Int
    public var activation: Activation

    public init(dimension: Int = 2, width: Int = 256, depth: Int = 3, activation: Activation = .silu) {
        self.dimension = dimension
        self.width = width
        self.depth = depth
        self.activation = activation
    }

    /// Layer sizes `[d + 1, width × depth, d]`.
    public var sizes: [Int] { [dimension + 1] + [Int](repeating: width, count: depth) + [dimension] }
}

/// An MLP velocity field. Parameter names are `layers.<i>.weight|bias` as in PyTorch.
public final class VelocityMLP: Module {
    public let config: VelocityMLPConfig
    public let mlp: MLP

    public init(_ config: VelocityMLPConfig, rng: inout Random) {
        self.config = config
        mlp = MLP(sizes: config.sizes, activation: config.activation, rng: &rng)
    }

    /// Builds the network and loads `stateDict` into it (throws on missing/mismatched tensors).
    public convenience init(_ config: VelocityMLPConfig, stateDict: [String: Tensor]) throws {
        var rng = Random(seed: 0)
        self.init(config, rng: &rng)
        try load(stateDict: stateDict)
    }

    public func namedParameters() -> [(name: String, parameter: Parameter)] { mlp.namedParameters() }

    /// packed: [B, d + 1] = [x_t, t] → v: [B, d]
    public func callAsFunction(packed: Var) -> Var { mlp(packed) }

    /// x: [B, d], t: [B] → v: [B, d]
    public func callAsFunction(_ x: Var, _ t: Var) -> Var {
        let g = x.graph
        return mlp(g.concat([x, g.reshape(t, [t.shape[0], 1])], axis: 1))
    }
}
