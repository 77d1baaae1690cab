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

    enum CodingKeys: String, CodingKey { case dimension, width, depth, activation }

    /// Decodes a partial JSON object; absent keys keep their defaults.
    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        dimension = try c.decodeIfPresent(Int.self, forKey: .dimension) ?? 2
        width = try c.decodeIfPresent(Int.self, forKey: .width) ?? 256
        depth = try c.decodeIfPresent(Int.self, forKey: .depth) ?? 3
        activation = try c.decodeIfPresent(Activation.self, forKey: .activation) ?? .silu
    }

    /// The first invalid field as (JSON pointer relative to this object, message).
    public func validationError() -> (pointer: String, message: String)? {
        if dimension < 1 || dimension > 1 << 16 { return ("/dimension", "must be in [1, 65536], got \(dimension)") }
        if width < 1 || width > 1 << 14 { return ("/width", "must be in [1, 16384], got \(width)") }
        if depth < 1 || depth > 64 { return ("/depth", "must be in [1, 64], got \(depth)") }
        return nil
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

    /// Builds the network directly from `stateDict` (no random initialisation). Throws when a
    /// tensor is missing, unexpected or of the wrong shape for `config`.
    public init(_ config: VelocityMLPConfig, stateDict: [String: Tensor]) throws {
        self.config = config
        let sizes = config.sizes
        var layers = [Linear]()
        for i in 0..<(sizes.count - 1) {
            let wName = "layers.\(i).weight", bName = "layers.\(i).bias"
            guard let w = stateDict[wName] else { throw StateDictError.missing(wName) }
            guard let b = stateDict[bName] else { throw StateDictError.missing(bName) }
            guard w.shape == [sizes[i + 1], sizes[i]] else {
                throw StateDictError.shapeMismatch(name: wName, expected: [sizes[i + 1], sizes[i]], found: w.shape)
            }
            layers.append(try Linear(weight: w, bias: b))
        }
        let expected = Set((0..<(sizes.count - 1)).flatMap { ["layers.\($0).weight", "layers.\($0).bias"] })
        if let extra = stateDict.keys.sorted().first(where: { !expected.contains($0) }) { throw StateDictError.unexpected(extra) }
        mlp = try MLP(layers: layers, activation: config.activation)
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
