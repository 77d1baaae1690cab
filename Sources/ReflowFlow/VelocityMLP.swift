public import ReflowEngine
public import ReflowAutograd
public import ReflowNN
import Foundation

/// How the flow time t enters a ``VelocityMLP``: appended as one raw scalar (the network of
/// `rf_torch.py` and the paper's 2-D code) or as fixed sinusoidal features (the transformer
/// position encoding used by DDPM-style networks: `[cos(ω_i·t), sin(ω_i·t)]`, ω_i = scale ·
/// 10000^(−i/half), i < half = features/2). Neither adds parameters; only the first layer's
/// input width changes. Wire JSON: `{"kind": "raw"}`, `{"kind": "sinusoidal", "features": 16, "scale": 1000}`.
public enum TimeInput: Codable, Sendable, Equatable {
    case raw
    case sinusoidal(features: Int = 16, scale: Float = 1000)

    /// Number of input columns the time occupies.
    public var width: Int {
        switch self {
        case .raw: return 1
        case .sinusoidal(let f, _): return f
        }
    }

    /// Writes the ``width`` time features of `t` to `out[0..<width]`.
    @inline(__always)
    public func write(_ t: Float, to out: UnsafeMutablePointer<Float>) {
        switch self {
        case .raw: out[0] = t
        case .sinusoidal(let f, let scale):
            let half = f / 2
            for i in 0..<half {
                // Frequencies in Double so every platform rounds the same way before the Float cast.
                let omega = Double(scale) * Foundation.exp(-Foundation.log(10_000.0) * Double(i) / Double(half))
                let angle = omega * Double(t)
                out[i] = Float(Foundation.cos(angle))
                out[half + i] = Float(Foundation.sin(angle))
            }
        }
    }

    public func validationError() -> (pointer: String, message: String)? {
        if case .sinusoidal(let f, let scale) = self {
            if f < 2 || f > 1024 || f % 2 != 0 { return ("/features", "must be an even number in [2, 1024], got \(f)") }
            if !(scale > 0 && scale <= 1e6) { return ("/scale", "must be in (0, 1e6], got \(scale)") }
        }
        return nil
    }

    enum CodingKeys: String, CodingKey { case kind, features, scale }
    enum Kind: String, Codable { case raw, sinusoidal }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        switch try c.decode(Kind.self, forKey: .kind) {
        case .raw: self = .raw
        case .sinusoidal:
            self = .sinusoidal(features: try c.decodeIfPresent(Int.self, forKey: .features) ?? 16,
                               scale: try c.decodeIfPresent(Float.self, forKey: .scale) ?? 1000)
        }
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        switch self {
        case .raw: try c.encode(Kind.raw, forKey: .kind)
        case .sinusoidal(let f, let s):
            try c.encode(Kind.sinusoidal, forKey: .kind); try c.encode(f, forKey: .features); try c.encode(s, forKey: .scale)
        }
    }
}

/// Architecture of an MLP velocity field v(x, t): input `[x (dimension), time features]`
/// (see ``TimeInput``), `depth` hidden layers of `width`, output `dimension`. With the raw time
/// input it is the same network as `rf_torch.py`'s `MLP`.
public struct VelocityMLPConfig: Codable, Sendable, Equatable {
    public var dimension: Int
    public var width: Int
    public var depth: Int
    public var activation: Activation
    public var timeInput: TimeInput
    /// Per-layer hidden widths, replacing `width × depth` (what structured pruning produces:
    /// layers of different widths); nil means `depth` layers of `width`.
    public var widths: [Int]?
    /// [C, H, W] when the points are images (C·H·W = `dimension`): the network is the same MLP
    /// on flattened pixels, but jobs treat its points as images (grids, image evaluation).
    public var imageShape: [Int]?
    /// Class labels 0..<classes (nil: unconditional). A label embedding `labelEmbedding.weight`
    /// ([classes + 1, first hidden width], the last row the null label of classifier-free
    /// guidance) is added to the first layer's pre-activation: the time enters as input
    /// features, so this is the MLP's "embedding added to the time embedding" (equivalently a
    /// one-hot label input).
    public var classes: Int?

    public init(dimension: Int = 2, width: Int = 256, depth: Int = 3, activation: Activation = .silu,
                timeInput: TimeInput = .raw, widths: [Int]? = nil, imageShape: [Int]? = nil, classes: Int? = nil) {
        self.dimension = dimension
        self.width = width
        self.depth = depth
        self.activation = activation
        self.timeInput = timeInput
        self.widths = widths
        self.imageShape = imageShape
        self.classes = classes
    }

    enum CodingKeys: String, CodingKey { case dimension, width, depth, activation, timeInput, widths, imageShape, classes }

    /// The hidden widths, first to last.
    public var hiddenWidths: [Int] { widths ?? [Int](repeating: width, count: depth) }

    /// Columns of the packed network input: `dimension` + the time features.
    public var inputWidth: Int { dimension + timeInput.width }

    /// Packs rows `[x_r, φ(t)]` into `input` ([count, inputWidth]) from `x` ([count, dimension]).
    @inline(__always)
    public func pack(x: UnsafePointer<Float>, count: Int, t: Float, into input: UnsafeMutablePointer<Float>) {
        let d = dimension, w = inputWidth
        for r in 0..<count {
            for c in 0..<d { input[r * w + c] = x[r * d + c] }
            timeInput.write(t, to: input + r * w + d)
        }
    }

    /// Decodes a partial JSON object; absent keys keep their defaults.
    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        dimension = try c.decodeIfPresent(Int.self, forKey: .dimension) ?? 2
        width = try c.decodeIfPresent(Int.self, forKey: .width) ?? 256
        depth = try c.decodeIfPresent(Int.self, forKey: .depth) ?? 3
        activation = try c.decodeIfPresent(Activation.self, forKey: .activation) ?? .silu
        timeInput = try c.decodeIfPresent(TimeInput.self, forKey: .timeInput) ?? .raw
        widths = try c.decodeIfPresent([Int].self, forKey: .widths)
        imageShape = try c.decodeIfPresent([Int].self, forKey: .imageShape)
        classes = try c.decodeIfPresent(Int.self, forKey: .classes)
    }

    /// The first invalid field as (JSON pointer relative to this object, message).
    public func validationError() -> (pointer: String, message: String)? {
        if dimension < 1 || dimension > 1 << 16 { return ("/dimension", "must be in [1, 65536], got \(dimension)") }
        if width < 1 || width > 1 << 14 { return ("/width", "must be in [1, 16384], got \(width)") }
        if depth < 1 || depth > 64 { return ("/depth", "must be in [1, 64], got \(depth)") }
        if let e = timeInput.validationError() { return ("/timeInput" + e.pointer, e.message) }
        if let w = widths {
            if !(1...64).contains(w.count) { return ("/widths", "must list 1 to 64 hidden widths, got \(w.count)") }
            for (i, x) in w.enumerated() where !(1...(1 << 14)).contains(x) { return ("/widths/\(i)", "must be in [1, 16384], got \(x)") }
        }
        if let s = imageShape {
            guard s.count == 3 else { return ("/imageShape", "must be [channels, height, width]") }
            if !(1...4).contains(s[0]) { return ("/imageShape/0", "channels must be 1 to 4, got \(s[0])") }
            for i in 1...2 where !(2...256).contains(s[i]) { return ("/imageShape/\(i)", "must be in [2, 256], got \(s[i])") }
            if s.reduce(1, *) != dimension { return ("/imageShape", "holds \(s.reduce(1, *)) values per image, dimension is \(dimension)") }
        }
        if let k = classes, !(1...100_000).contains(k) { return ("/classes", "must be in [1, 100000], got \(k)") }
        return nil
    }

    /// Layer sizes `[inputWidth, hidden widths…, d]`.
    public var sizes: [Int] { [inputWidth] + hiddenWidths + [dimension] }
}

/// An MLP velocity field. Parameter names are `layers.<i>.weight|bias` as in PyTorch, plus
/// `labelEmbedding.weight` for a class-conditional config (see ``VelocityMLPConfig/classes``).
public final class VelocityMLP: VelocityNetwork {
    public let config: VelocityMLPConfig
    public let mlp: MLP
    /// [classes + 1, first hidden width] for a conditional config; nil otherwise.
    public let labelEmbedding: Parameter?

    public init(_ config: VelocityMLPConfig, rng: inout Random) {
        self.config = config
        mlp = MLP(sizes: config.sizes, activation: config.activation, rng: &rng)
        // Drawn after the layers, so an unconditional config keeps the weights a seed always gave;
        // the bound of the first layer's bias (as if the one-hot label were more inputs).
        let bound = 1 / Float(config.inputWidth).squareRoot()
        labelEmbedding = config.classes.map { Parameter(rng.uniform([$0 + 1, config.sizes[1]], low: -bound, high: bound)) }
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
        var expected = Set((0..<(sizes.count - 1)).flatMap { ["layers.\($0).weight", "layers.\($0).bias"] })
        if let k = config.classes {
            let name = "labelEmbedding.weight"
            guard let e = stateDict[name] else { throw StateDictError.missing(name) }
            guard e.shape == [k + 1, sizes[1]] else { throw StateDictError.shapeMismatch(name: name, expected: [k + 1, sizes[1]], found: e.shape) }
            labelEmbedding = Parameter(e)
            expected.insert(name)
        } else {
            labelEmbedding = nil
        }
        if let extra = stateDict.keys.sorted().first(where: { !expected.contains($0) }) { throw StateDictError.unexpected(extra) }
        mlp = try MLP(layers: layers, activation: config.activation)
    }

    public func namedParameters() -> [(name: String, parameter: Parameter)] {
        mlp.namedParameters() + (labelEmbedding.map { [(name: "labelEmbedding.weight", parameter: $0)] } ?? [])
    }

    public var spec: ModelSpec { ModelSpec(config) }

    /// x: [rows, d], t: [rows], labels: [rows] or nil → v: [rows, d]; packs `[x_r, φ(t_r)]` into
    /// one constant. For a conditional config a label equal to `classes` (or nil labels) is the
    /// null label of classifier-free guidance; an unconditional one ignores `labels`.
    public func velocity(_ graph: Graph, x: UnsafePointer<Float>, t: UnsafePointer<Float>,
                         labels: UnsafePointer<Int32>?, rows: Int) -> Var {
        velocity(graph, x: x, t: t, labels: labels, rows: rows, tap: nil)
    }

    /// The pass with RF-Edit's feature sharing: `tap` is offered each hidden layer's output after
    /// its nonlinearity (site `layers.i`, the i-th hidden layer).
    public func velocity(_ graph: Graph, x: UnsafePointer<Float>, t: UnsafePointer<Float>,
                         labels: UnsafePointer<Int32>?, rows: Int, tap: (any FeatureTap)?) -> Var {
        let d = config.dimension, w = config.inputWidth, time = config.timeInput
        let input = graph.constant(shape: [rows, w]) { inp in
            let p = inp.baseAddress!
            for r in 0..<rows {
                for c in 0..<d { p[r * w + c] = x[r * d + c] }
                time.write(t[r], to: p + r * w + d)
            }
        }
        if tap == nil && labelEmbedding == nil { return mlp(input) }
        let layers = mlp.layers
        var h = layers[0](input)
        if let labelEmbedding, let k = config.classes {
            // First layer plus the label's embedding row, then the rest of the MLP as
            // MLP.callAsFunction runs it.
            h = graph.binary(.add, h, LabelBuffer.embedding(graph, labels: labels, rows: rows, classes: k, table: labelEmbedding))
        }
        for i in 1..<layers.count {
            h = graph.activation(mlp.activation.op, h, name: "layers.\(i - 1)")
            if let tap {
                let v = h
                if let shared = tap.share(site: "layers.\(i - 1)", rows: rows, computed: { v.value.data }) {
                    h = graph.constant(Tensor(shape: v.shape, data: shared))
                }
            }
            h = layers[i](h)
        }
        return h
    }

    /// packed: [B, inputWidth] = [x_t, φ(t)] (see ``VelocityMLPConfig/pack(x:count:t:into:)``) → v: [B, d]
    public func callAsFunction(packed: Var) -> Var { mlp(packed) }

}
