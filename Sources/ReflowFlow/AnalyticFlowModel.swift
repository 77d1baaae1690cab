public import ReflowEngine
public import ReflowAutograd
public import ReflowNN

/// The exact rectified flow of a small empirical dataset as a model kind (`"analytic"`;
/// SlimFlow's `AnalyticFlow`, ALGORITHMS.md §6): its "weights" are the N data points
/// (`data` [N, D], frozen), and its velocity is ``AnalyticFlow``'s closed form, so it serves as
/// a teacher (exact pairs, no teacher training) and is sampled, inverted and evaluated like any
/// model. It has nothing to train: the `analytic` job kind builds it from a data source, and
/// training jobs refuse it as a student. Wire JSON: `{"kind": "analytic", "dimension": 784,
/// "imageShape": [1, 28, 28], "points": 500}`.
public struct AnalyticFlowConfig: ModelConfig, Equatable {
    public static var kind: String { "analytic" }
    public static var version: Int { 1 }
    public var dimension = 2
    @Explicit public var imageShape: [Int]? = nil
    /// N, the dataset's size.
    public var points = 500
    /// Largest N accepted (each evaluation costs N·D multiply-adds per point).
    public static let maxPoints = 20_000
    /// Why a training job refuses this kind as the model it trains.
    public static let notTrainable = "an analytic flow is exact and has nothing to train: build one with an `analytic` job and use it as a teacher (a student names a trainable `model`, with `initialization: \"scratch\"`)"

    public init() {}

    public init(dimension: Int, imageShape: [Int]? = nil, points: Int) {
        self.dimension = dimension
        self.imageShape = imageShape
        self.points = points
    }

    enum CodingKeys: String, CodingKey { case dimension, imageShape, points }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        dimension = try c.decodeIfPresent(Int.self, forKey: .dimension) ?? 2
        imageShape = try c.decodeIfPresent([Int].self, forKey: .imageShape)
        points = try c.decodeIfPresent(Int.self, forKey: .points) ?? 500
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(dimension, forKey: .dimension)
        try c.encode(imageShape, forKey: .imageShape)
        try c.encode(points, forKey: .points)
    }

    public var pointShape: [Int] { imageShape ?? [dimension] }
    public var classes: Int? { nil }
    /// The stored points (not trained).
    public var parameterCount: Int { points * dimension }
    /// Per point: the N logits and the posterior mean (evaluation only).
    public var activationFloatsPerRow: Int { points + 4 * dimension }
    /// The squared distances to every point and the weighted mean.
    public var forwardFlopsPerRow: Int { 2 * points * dimension }

    public func validationError() -> FieldError? {
        Validation.first(
            { Validation.range("/dimension", dimension, 1, 1 << 20) },
            { Validation.range("/points", points, 1, AnalyticFlowConfig.maxPoints) },
            {
                guard let s = imageShape else { return nil }
                guard s.count == 3, s.allSatisfy({ $0 >= 1 }), s.reduce(1, *) == dimension else {
                    return ("/imageShape", "must be [C, H, W] with C·H·W = dimension (\(dimension))")
                }
                return nil
            })
    }

    /// A network over zero points (a placeholder: the `analytic` job fills the data).
    public func makeNetwork(rng: inout Random) -> any VelocityNetwork {
        AnalyticFlowNetwork(self, data: Tensor(shape: [points, dimension], data: [Float](repeating: 0, count: points * dimension)))
    }

    public func makeNetwork(stateDict: [String: Tensor]) throws -> any VelocityNetwork {
        guard let data = stateDict[AnalyticFlowNetwork.dataName] else { throw StateDictError.missing(AnalyticFlowNetwork.dataName) }
        if let extra = stateDict.keys.first(where: { $0 != AnalyticFlowNetwork.dataName }) { throw StateDictError.unexpected(extra) }
        guard data.shape == [points, dimension] else {
            throw StateDictError.shapeMismatch(name: AnalyticFlowNetwork.dataName, expected: [points, dimension], found: data.shape)
        }
        guard data.data.allSatisfy(\.isFinite) else { throw StateDictError.shapeMismatch(name: "\(AnalyticFlowNetwork.dataName) (non-finite values)", expected: [points, dimension], found: data.shape) }
        return AnalyticFlowNetwork(self, data: data)
    }
}

/// The network of an ``AnalyticFlowConfig``: v(x, t) = (E[x1 | x_t = x] − x)/(1 − t) for the
/// empirical data (``AnalyticFlow``), per row at its own t. Its output is a constant of the
/// graph: nothing back-propagates through it (it is a teacher and an oracle, never trained).
public final class AnalyticFlowNetwork: VelocityNetwork {
    public static let dataName = "data"
    public let config: AnalyticFlowConfig
    let data: Parameter
    let field: AnalyticFlow

    init(_ config: AnalyticFlowConfig, data: Tensor) {
        self.config = config
        self.data = Parameter(data)
        self.data.isFrozen = true
        // (Shape and finiteness are checked by makeNetwork(stateDict:); the placeholder is zeros.)
        field = AnalyticFlow(checked: data.data, dimension: config.dimension)
    }

    public var spec: ModelSpec { ModelSpec(config) }

    public func namedParameters() -> [(name: String, parameter: Parameter)] { [(AnalyticFlowNetwork.dataName, data)] }

    public func velocity(_ graph: Graph, x: UnsafePointer<Float>, t: UnsafePointer<Float>, labels: UnsafePointer<Int32>?, rows: Int) -> Var {
        let d = config.dimension
        return graph.constant(shape: [rows, d]) { out in
            // Rows sharing a time (every solver block) are one call.
            var r = 0
            while r < rows {
                var e = r + 1
                while e < rows && t[e] == t[r] { e += 1 }
                field.velocity(x + r * d, count: e - r, t: t[r], into: out.baseAddress! + r * d)
                r = e
            }
        }
    }
}
