public import ReflowEngine
public import ReflowAutograd
public import ReflowNN
import Foundation

// The model seam. A model kind is one type conforming to ``ModelConfig`` (its hyperparameters,
// Codable, validated, able to build its network) plus one line in ``ModelSpec/kinds``. Every
// consumer (the trainer, the ODE solvers, checkpoints, the job kinds, the API) sees only
// ``ModelSpec`` and ``VelocityNetwork``.

/// The hyperparameters of one kind of velocity model.
///
/// Wire JSON is the config's own keys next to `"kind"` and `"version"` in a ``ModelSpec``
/// object: `{"kind": "mlp", "version": 1, "width": 256, "depth": 3, ...}`.
public protocol ModelConfig: Codable, Sendable, Validatable {
    /// The `kind` tag (`"mlp"`; later `"unet"`, `"classifier"`, `"rim"`).
    static var kind: String { get }
    /// Newest config version this build reads and writes (checked when a checkpoint is read).
    static var version: Int { get }
    /// A config with every default (the partial JSON a user sends is merged over it).
    init()

    /// Shape of one data point, without the batch axis: `[d]` for points, `[C, H, W]` for images.
    var pointShape: [Int] { get }
    /// Number of scalar parameters (computed from the hyperparameters, without building).
    var parameterCount: Int { get }
    /// Class labels 0..<classes of a class-conditional model, nil for an unconditional one.
    /// Label `classes` is the null label (classifier-free guidance, label dropout).
    var classes: Int? { get }
    /// Floats of activations kept for backward per batch row (the memory estimate of a training
    /// step is about `rows × activationFloatsPerRow × 4` bytes per worker graph).
    var activationFloatsPerRow: Int { get }
    /// Multiply-adds of one forward pass per row (for throughput and time estimates).
    var forwardFlopsPerRow: Int { get }
    /// The places whose features an edit can share (``FeatureSite``), in forward order; empty
    /// for models without any.
    var featureSites: [FeatureSite] { get }
    /// A randomly initialised network.
    func makeNetwork(rng: inout Random) -> any VelocityNetwork
    /// A network holding `stateDict`; throws `StateDictError` when a tensor is missing,
    /// unexpected or mis-shaped.
    func makeNetwork(stateDict: [String: Tensor]) throws -> any VelocityNetwork
}

extension ModelConfig {
    public var featureSites: [FeatureSite] { [] }
}

/// A registered model kind: its tag, version and decoder. (A generic closure rather than an
/// `any ModelConfig.Type`: decoding through an existential metatype crashes the Swift 6.3
/// compiler.)
public struct ModelKind: Sendable {
    public let kind: String
    public let version: Int
    let decode: @Sendable (any Decoder) throws -> any ModelConfig

    public init<C: ModelConfig>(_ type: C.Type) {
        kind = C.kind
        version = C.version
        decode = { try C(from: $0) }
    }
}

/// A trainable velocity model v(x, t, condition): a ``Module`` whose parameters use PyTorch
/// `state_dict` names and whose forward pass records on a ``Graph``.
public protocol VelocityNetwork: Module {
    /// The description this network was built from.
    var spec: ModelSpec { get }

    /// Records v for `rows` points on `graph`:
    ///
    ///     x: [rows, D] (D = spec.pointSize, row-major, flattened point shape)
    ///     t: [rows]    flow time per row (see ``TimeConvention``)
    ///     labels: [rows] class indices, or nil for an unconditional evaluation
    ///     → v: [rows, D]
    ///
    /// The pointers are read during the call only (the values are copied into graph constants).
    func velocity(_ graph: Graph, x: UnsafePointer<Float>, t: UnsafePointer<Float>,
                  labels: UnsafePointer<Int32>?, rows: Int) -> Var

    /// The same pass, asking `tap` at each of the network's ``ModelConfig/featureSites`` whether
    /// to use another feature there (RF-Edit's feature sharing). A nil tap is the plain pass;
    /// networks without sites ignore the tap.
    func velocity(_ graph: Graph, x: UnsafePointer<Float>, t: UnsafePointer<Float>,
                  labels: UnsafePointer<Int32>?, rows: Int, tap: (any FeatureTap)?) -> Var
}

extension VelocityNetwork {
    public func velocity(_ graph: Graph, x: UnsafePointer<Float>, t: UnsafePointer<Float>,
                         labels: UnsafePointer<Int32>?, rows: Int, tap: (any FeatureTap)?) -> Var {
        velocity(graph, x: x, t: t, labels: labels, rows: rows)
    }

    /// v(x_r, t_r, label_r) for each row without recording gradients (tests, small tools).
    /// x: [B] + point shape, t: B times, labels: B labels or nil → [B, D].
    public func velocity(x: Tensor, t: [Float], labels: [Int32]? = nil) -> Tensor {
        let b = t.count, d = spec.pointSize
        precondition(x.count == b * d, "velocity: x must hold \(b) points of \(d) floats, got shape \(x.shape)")
        precondition(labels == nil || labels!.count == b, "velocity: labels must have \(b) entries")
        let g = Graph(threads: 1, gradEnabled: false)
        let out = x.data.withUnsafeBufferPointer { xs in
            t.withUnsafeBufferPointer { ts in
                LabelBuffer.with(labels) { velocity(g, x: xs.baseAddress!, t: ts.baseAddress!, labels: $0, rows: b) }
            }
        }
        return out.value
    }
}

/// Optional label buffers as optional pointers.
package enum LabelBuffer {
    package static func with<R>(_ labels: [Int32]?, _ body: (UnsafePointer<Int32>?) -> R) -> R {
        guard let labels else { return body(nil) }
        return labels.withUnsafeBufferPointer { body($0.baseAddress) }
    }

    /// The label embedding rows of a class-conditional network: onehot [rows, k + 1] ·
    /// table [k + 1, E]. A label outside 0..<k (or nil labels) selects the null row k.
    static func embedding(_ graph: Graph, labels: UnsafePointer<Int32>?, rows: Int, classes k: Int, table: Parameter) -> Var {
        let onehot = graph.constant(shape: [rows, k + 1]) { p in
            p.update(repeating: 0)
            for r in 0..<rows {
                let l = labels.map { Int($0[r]) } ?? k
                p[r * (k + 1) + ((0..<k).contains(l) ? l : k)] = 1
            }
        }
        return graph.matmul(onehot, graph.parameter(table))
    }
}

/// A tagged, versioned model description: which kind of network and its hyperparameters. It is
/// what a job spec's `model` holds, what a checkpoint records in its metadata (under
/// ``metadataKey``) and what every consumer builds networks from.
public struct ModelSpec: Codable, Sendable, Equatable, Validatable, CustomStringConvertible {
    /// The registered model kinds: adding one is one type and one entry here.
    public static let kinds: [ModelKind] = [ModelKind(VelocityMLPConfig.self), ModelKind(UNetConfig.self), ModelKind(AnalyticFlowConfig.self)]

    /// Checkpoint metadata key holding the spec's JSON.
    public static let metadataKey = "reflowd.model"

    public var config: any ModelConfig

    public init(_ config: any ModelConfig) { self.config = config }

    /// The default model (the 2-D MLP of `rf_torch.py`).
    public init() { config = VelocityMLPConfig() }

    public var kind: String { type(of: config).kind }
    public var pointShape: [Int] { config.pointShape }
    /// D, the flattened size of one point.
    public var pointSize: Int { config.pointShape.reduce(1, *) }
    public var parameterCount: Int { config.parameterCount }
    /// Classes of a conditional model (nil: unconditional); see ``ModelConfig/classes``.
    public var classes: Int? { config.classes }
    /// Sites whose features an edit can share; see ``ModelConfig/featureSites``.
    public var featureSites: [FeatureSite] { config.featureSites }

    public func makeNetwork(rng: inout Random) -> any VelocityNetwork { config.makeNetwork(rng: &rng) }
    public func makeNetwork(stateDict: [String: Tensor]) throws -> any VelocityNetwork {
        try config.makeNetwork(stateDict: stateDict)
    }

    public func validationError() -> FieldError? { config.validationError() }

    /// The MLP config when this is an MLP (setting a value makes this an MLP spec).
    public var mlp: VelocityMLPConfig? {
        get { config as? VelocityMLPConfig }
        set { if let newValue { config = newValue } }
    }

    public var description: String { String(decoding: canonicalJSON, as: UTF8.self) }

    /// Sorted-key JSON (what checkpoints store and what equality compares).
    public var canonicalJSON: [UInt8] {
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys]
        return (try? Array(e.encode(self))) ?? []
    }

    public static func == (a: ModelSpec, b: ModelSpec) -> Bool { a.canonicalJSON == b.canonicalJSON }

    typealias Key = AnyCodingKey

    /// Decodes `{"kind": …, "version": …, config keys…}`. An absent `kind` means `"mlp"` (specs
    /// and checkpoints written before the tag existed); an absent `version` means 1.
    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: Key.self)
        let kind = try c.decodeIfPresent(String.self, forKey: Key("kind")) ?? VelocityMLPConfig.kind
        guard let entry = ModelSpec.kinds.first(where: { $0.kind == kind }) else {
            throw DecodingError.dataCorrupted(.init(codingPath: c.codingPath + [Key("kind")],
                debugDescription: "unknown model kind \"\(kind.prefix(40))\" (one of \(ModelSpec.kinds.map(\.kind).joined(separator: ", ")))"))
        }
        let version = try c.decodeIfPresent(Int.self, forKey: Key("version")) ?? 1
        guard version >= 1 && version <= entry.version else {
            throw DecodingError.dataCorrupted(.init(codingPath: c.codingPath + [Key("version")],
                debugDescription: "model version \(version) of kind \(kind) is not readable by this build (reads 1…\(entry.version))"))
        }
        config = try entry.decode(decoder)
    }

    public func encode(to encoder: any Encoder) throws {
        try config.encode(to: encoder)
        var c = encoder.container(keyedBy: Key.self)
        try c.encode(kind, forKey: Key("kind"))
        try c.encode(type(of: config).version, forKey: Key("version"))
    }
}

extension VelocityMLPConfig: ModelConfig {
    public static var kind: String { "mlp" }
    public static var version: Int { 1 }
    public init() { self.init(dimension: 2) }

    public var pointShape: [Int] { imageShape ?? [dimension] }

    public var parameterCount: Int {
        let s = sizes
        return (0..<(s.count - 1)).reduce(0) { $0 + s[$1] * s[$1 + 1] + s[$1 + 1] } + (classes.map { ($0 + 1) * s[1] } ?? 0)
    }

    /// Input; per hidden layer the pre-activation, the activation and the activation's saved
    /// σ (SiLU and GELU keep it for backward); output and loss terms. Checked against the peak
    /// RSS of training runs in docs/JOBS.md.
    /// A conditional MLP adds its one-hot label row and the embedding product and sum (with
    /// their gradients).
    public var activationFloatsPerRow: Int {
        inputWidth + 3 * hiddenWidths.reduce(0, +) + 4 * dimension + (classes.map { $0 + 1 + 4 * hiddenWidths[0] } ?? 0)
    }

    public var forwardFlopsPerRow: Int { parameterCount }

    /// Each hidden layer after its nonlinearity (`layers.0`, `layers.1`, …).
    public var featureSites: [FeatureSite] {
        hiddenWidths.enumerated().map { FeatureSite(name: "layers.\($0.offset)", kind: .activation, floatsPerRow: $0.element) }
    }

    public func makeNetwork(rng: inout Random) -> any VelocityNetwork { VelocityMLP(self, rng: &rng) }
    public func makeNetwork(stateDict: [String: Tensor]) throws -> any VelocityNetwork {
        try VelocityMLP(self, stateDict: stateDict)
    }
}
