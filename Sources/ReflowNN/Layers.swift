public import ReflowEngine
public import ReflowAutograd
import Foundation

/// Pointwise nonlinearities selectable by configuration (wire JSON: `"silu"`, …).
public enum Activation: String, Codable, Sendable, CaseIterable {
    case relu, silu, tanh, gelu, sigmoid

    public var op: UnaryOp {
        switch self {
        case .relu: return .relu
        case .silu: return .silu
        case .tanh: return .tanh
        case .gelu: return .gelu
        case .sigmoid: return .sigmoid
        }
    }
}

/// y = x·Wᵀ + b with W `[out, in]` (PyTorch `nn.Linear`, including its default initialisation
/// U(−1/√in, 1/√in) for weight and bias).
public final class Linear: Layer {
    public let weight: Parameter
    public let bias: Parameter?
    public let inputFeatures: Int, outputFeatures: Int

    public init(_ inputFeatures: Int, _ outputFeatures: Int, bias: Bool = true, rng: inout Random) {
        precondition(inputFeatures > 0 && outputFeatures > 0, "Linear: sizes must be positive")
        self.inputFeatures = inputFeatures
        self.outputFeatures = outputFeatures
        let bound = 1 / Float(inputFeatures).squareRoot()
        weight = Parameter(rng.uniform([outputFeatures, inputFeatures], low: -bound, high: bound))
        self.bias = bias ? Parameter(rng.uniform([outputFeatures], low: -bound, high: bound)) : nil
    }

    /// A layer with the given weights (`[out, in]`) and bias (`[out]`); no random draws.
    public init(weight: Tensor, bias: Tensor?) throws {
        guard weight.rank == 2, weight.shape[0] > 0, weight.shape[1] > 0 else {
            throw StateDictError.shapeMismatch(name: "weight", expected: [-1, -1], found: weight.shape)
        }
        if let bias, bias.shape != [weight.shape[0]] {
            throw StateDictError.shapeMismatch(name: "bias", expected: [weight.shape[0]], found: bias.shape)
        }
        outputFeatures = weight.shape[0]
        inputFeatures = weight.shape[1]
        self.weight = Parameter(weight)
        self.bias = bias.map { Parameter($0) }
    }

    public func namedParameters() -> [(name: String, parameter: Parameter)] {
        var p: [(name: String, parameter: Parameter)] = [("weight", weight)]
        if let bias { p.append(("bias", bias)) }
        return p
    }

    /// x: [B, in] → [B, out]
    public func callAsFunction(_ x: Var) -> Var {
        let g = x.graph
        return g.linear(x, weight: g.parameter(weight), bias: bias.map { g.parameter($0) })
    }
}

/// A multilayer perceptron: Linear → act → … → Linear (no activation after the last layer).
/// Parameters are named `layers.<i>.weight` / `layers.<i>.bias` (a PyTorch `nn.ModuleList`).
public final class MLP: Layer {
    public let layers: [Linear]
    public let activation: Activation

    /// `sizes` = [in, hidden…, out]; e.g. `[3, 256, 256, 256, 2]` has three hidden layers.
    public init(sizes: [Int], activation: Activation = .silu, rng: inout Random) {
        precondition(sizes.count >= 2, "MLP: need at least input and output sizes")
        var ls = [Linear]()
        for i in 0..<(sizes.count - 1) { ls.append(Linear(sizes[i], sizes[i + 1], rng: &rng)) }
        layers = ls
        self.activation = activation
    }

    /// An MLP made of existing layers (their sizes must chain).
    public init(layers: [Linear], activation: Activation) throws {
        guard !layers.isEmpty else { throw StateDictError.missing("layers.0.weight") }
        for i in 1..<max(1, layers.count) where layers[i].inputFeatures != layers[i - 1].outputFeatures {
            throw StateDictError.shapeMismatch(name: "layers.\(i).weight", expected: [layers[i].outputFeatures, layers[i - 1].outputFeatures],
                                               found: layers[i].weight.shape)
        }
        self.layers = layers
        self.activation = activation
    }

    public func namedParameters() -> [(name: String, parameter: Parameter)] {
        layers.enumerated().flatMap { prefixed("layers.\($0.offset)", $0.element.namedParameters()) }
    }

    /// x: [B, in] → [B, out]
    public func callAsFunction(_ x: Var) -> Var {
        var h = x
        for (i, l) in layers.enumerated() {
            h = l(h)
            if i < layers.count - 1 { h = x.graph.activation(activation.op, h, name: "layers.\(i)") }
        }
        return h
    }
}

/// Transformer-style embedding of flow time: `[cos(ω_i·s·t), sin(ω_i·s·t)]`, ω_i = P^(−i/half),
/// with `scale` s (1000 maps t ∈ [0, 1] onto DDPM-like step numbers) and `maxPeriod` P.
/// No parameters. t: [B] → [B, dim]
public final class SinusoidalTimeEmbedding: Module {
    public let dimension: Int, scale: Float, maxPeriod: Float
    let frequencies: Tensor  // [1, half]

    public init(dimension: Int, scale: Float = 1000, maxPeriod: Float = 10_000) {
        precondition(dimension >= 2 && dimension % 2 == 0, "SinusoidalTimeEmbedding: dimension must be even ≥ 2")
        self.dimension = dimension
        self.scale = scale
        self.maxPeriod = maxPeriod
        let half = dimension / 2
        frequencies = Tensor(shape: [1, half], data: (0..<half).map {
            Float(Foundation.exp(-Foundation.log(Double(maxPeriod)) * Double($0) / Double(half))) * scale
        })
    }

    public func namedParameters() -> [(name: String, parameter: Parameter)] { [] }

    public func callAsFunction(_ t: Var) -> Var {
        let g = t.graph
        let b = t.shape.count == 1 ? t.shape[0] : t.value.count
        let angles = g.binary(.mul, g.reshape(t, [b, 1]), g.constant(frequencies))  // [B, half]
        return g.concat([g.unary(.cos, angles), g.unary(.sin, angles)], axis: 1)
    }
}

/// Layer normalisation over the last dimension with elementwise affine (`weight`, `bias`).
public final class LayerNorm: Layer {
    public let weight: Parameter, bias: Parameter
    public let eps: Float

    public init(_ features: Int, eps: Float = 1e-5) {
        weight = Parameter(Tensor.ones([features]))
        bias = Parameter(Tensor.zeros([features]))
        self.eps = eps
    }

    public func namedParameters() -> [(name: String, parameter: Parameter)] { [("weight", weight), ("bias", bias)] }

    /// x: [..., D] → same shape
    public func callAsFunction(_ x: Var) -> Var {
        let g = x.graph
        let n = g.normalize(x, axes: [x.shape.count - 1], eps: eps)
        return g.binary(.add, g.binary(.mul, n, g.parameter(weight)), g.parameter(bias))
    }
}

/// Group normalisation (Wu & He 2018) for `[B, C, …]` inputs with per-channel affine.
public final class GroupNorm: Layer {
    public let groups: Int, channels: Int
    public let weight: Parameter, bias: Parameter
    public let eps: Float

    public init(groups: Int, channels: Int, eps: Float = 1e-5) {
        precondition(groups > 0 && channels % groups == 0, "GroupNorm: \(channels) channels in \(groups) groups")
        self.groups = groups
        self.channels = channels
        weight = Parameter(Tensor.ones([channels]))
        bias = Parameter(Tensor.zeros([channels]))
        self.eps = eps
    }

    public func namedParameters() -> [(name: String, parameter: Parameter)] { [("weight", weight), ("bias", bias)] }

    /// x: [B, C, *spatial] → same shape (one fused kernel: see `Graph.groupNorm`).
    public func callAsFunction(_ x: Var) -> Var { callAsFunction(x, silu: false) }

    /// GroupNorm, then SiLU when `silu` (fused: the normalised tensor is never stored).
    public func callAsFunction(_ x: Var, silu: Bool) -> Var {
        let g = x.graph
        precondition(x.shape.count >= 2 && x.shape[1] == channels, "GroupNorm: input \(x.shape) with \(channels) channels")
        return g.groupNorm(x, groups: groups, weight: g.parameter(weight), bias: g.parameter(bias), eps: eps, silu: silu)
    }
}

/// 2-D convolution on NCHW inputs with PyTorch `nn.Conv2d` names (`weight` [O, C, KH, KW],
/// `bias` [O]) and default initialisation (U(−1/√fan_in, 1/√fan_in) for both).
public final class Conv2d: Layer {
    public let weight: Parameter
    public let bias: Parameter?
    public let stride: Int, padding: Int
    /// Spacing of the kernel taps (1: a plain convolution).
    public let dilation: Int

    public init(_ inChannels: Int, _ outChannels: Int, kernel: Int, stride: Int = 1, padding: Int = 0, dilation: Int = 1,
                bias: Bool = true, rng: inout Random) {
        precondition(inChannels > 0 && outChannels > 0 && kernel > 0 && stride > 0 && padding >= 0 && dilation > 0, "Conv2d: bad geometry")
        let bound = 1 / Float(inChannels * kernel * kernel).squareRoot()
        weight = Parameter(rng.uniform([outChannels, inChannels, kernel, kernel], low: -bound, high: bound))
        self.bias = bias ? Parameter(rng.uniform([outChannels], low: -bound, high: bound)) : nil
        self.stride = stride
        self.padding = padding
        self.dilation = dilation
    }

    /// A layer holding the given tensors (shapes checked by the caller's state-dict loading).
    public init(weight: Tensor, bias: Tensor?, stride: Int = 1, padding: Int = 0, dilation: Int = 1) {
        self.weight = Parameter(weight)
        self.bias = bias.map { Parameter($0) }
        self.stride = stride
        self.padding = padding
        self.dilation = dilation
    }

    public func namedParameters() -> [(name: String, parameter: Parameter)] {
        var p: [(name: String, parameter: Parameter)] = [("weight", weight)]
        if let bias { p.append(("bias", bias)) }
        return p
    }

    /// x: [N, C, H, W] → [N, O, OH, OW]
    public func callAsFunction(_ x: Var) -> Var {
        let g = x.graph
        return g.conv2d(x, weight: g.parameter(weight), bias: bias.map { g.parameter($0) }, stride: stride, padding: padding, dilation: dilation)
    }
}
