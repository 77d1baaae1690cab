public import ReflowEngine
import ReflowAutograd

/// A time-dependent velocity field v(x, t) for the flow ODE dx/dt = v(x, t) (see
/// ``TimeConvention``: t = 0 is noise, t = 1 is data).
///
/// A field is evaluated on a block of points that all share one time:
///
///     x: [count, dimension] row-major  →  v: [count, dimension] row-major
///
/// Implementations need not be thread-safe: the solvers of ``ODESolver`` use one field per
/// worker thread. `x` and `v` never alias.
public protocol VelocityField {
    /// Number of coordinates of one point (d).
    var dimension: Int { get }

    /// Writes v(x_r, t) for every row r of `x` (`count` rows of ``dimension`` floats) into `v`.
    func velocity(_ x: UnsafePointer<Float>, count: Int, t: Float, into v: UnsafeMutablePointer<Float>)

    /// Called by the fixed-step solvers before each evaluation with its step (0-based, in
    /// integration order) and its evaluation within the step (0 for the first). Fields that
    /// share features between passes (``FeatureSharing``) key them by it; others ignore it.
    func willEvaluate(step: Int, evaluation: Int)
}

extension VelocityField {
    public func willEvaluate(step: Int, evaluation: Int) {}
}

/// A velocity field given by a closure, for tests and for users with closed-form fields.
///
/// ```swift
/// // dx/dt = −x·cos t, solved by x(t) = x(0)·exp(−sin t)
/// let f = AnalyticVelocity(dimension: 1, pointwise: { x, t, v in v[0] = -x[0] * cos(t) })
/// let sol = try ODESolver.solve(field: f, x: x0, method: .rk4(steps: 16), direction: .forward)
/// ```
public struct AnalyticVelocity: VelocityField, Sendable {
    public let dimension: Int
    private let block: @Sendable (UnsafePointer<Float>, Int, Float, UnsafeMutablePointer<Float>) -> Void

    /// A field that evaluates a whole block at once: `block(x, count, t, v)` with
    /// x, v: [count, dimension].
    public init(dimension: Int,
                block: @escaping @Sendable (_ x: UnsafePointer<Float>, _ count: Int, _ t: Float,
                                            _ v: UnsafeMutablePointer<Float>) -> Void) {
        self.dimension = dimension
        self.block = block
    }

    /// A field given one point at a time: `pointwise(x, t, v)` with x, v: [dimension].
    public init(dimension: Int,
                pointwise: @escaping @Sendable (_ x: UnsafeBufferPointer<Float>, _ t: Float,
                                                _ v: UnsafeMutableBufferPointer<Float>) -> Void) {
        self.init(dimension: dimension, block: { x, count, t, v in
            for r in 0..<count {
                pointwise(UnsafeBufferPointer(start: x + r * dimension, count: dimension), t,
                          UnsafeMutableBufferPointer(start: v + r * dimension, count: dimension))
            }
        })
    }

    public func velocity(_ x: UnsafePointer<Float>, count: Int, t: Float, into v: UnsafeMutablePointer<Float>) {
        block(x, count, t, v)
    }

    /// The exact rectified flow between π0 = N(0, I) and π1 = N(μ, σ²I).
    ///
    /// The straight coupling X1 = μ + σ·X0 is already the rectified coupling (it is the optimal
    /// transport map and its interpolation paths do not cross), so its flow map is the
    /// straight line x_t = (1 − t + tσ)·x0 + t·μ and the velocity is
    ///
    ///     v(x, t) = μ + (σ − 1)·(x − t·μ) / (1 − t + t·σ).
    ///
    /// Every trajectory is straight with constant speed x1 − x0, so one Euler step is exact
    /// (Liu et al. 2022, arXiv:2209.03003, §2). Useful as a ground truth for solvers.
    /// Throws when `mean` is empty or `std` is not a positive finite number.
    public static func gaussianRectifiedFlow(mean: [Float], std: Float) throws -> AnalyticVelocity {
        guard !mean.isEmpty, mean.allSatisfy(\.isFinite) else {
            throw ODEError.invalidArgument("gaussianRectifiedFlow: mean must be a non-empty list of finite numbers")
        }
        guard std > 0 && std.isFinite else {
            throw ODEError.invalidArgument("gaussianRectifiedFlow: std must be a positive finite number, got \(std)")
        }
        let d = mean.count
        return AnalyticVelocity(dimension: d, block: { x, count, t, v in
            let a = 1 - t + t * std          // > 0 for t ∈ [0, 1] and σ > 0
            let k = (std - 1) / a
            for r in 0..<count {
                for c in 0..<d {
                    let mu = mean[c]
                    v[r * d + c] = mu + k * (x[r * d + c] - t * mu)
                }
            }
        })
    }
}

/// A ``VelocityNetwork`` as a ``VelocityField``: each evaluation hands the block and its time
/// to the network's ``VelocityNetwork/velocity(_:x:t:labels:rows:)`` on a private no-grad graph
/// with single-threaded kernels, exactly as the network was trained.
///
/// With ``guidance`` α set (a class-conditional network), each evaluation is classifier-free
/// guidance (Ho & Salimans 2022; InstaFlow Eq. 7):
///
///     v = (1 − α)·v(x, t | ∅) + α·v(x, t | label) = v_∅ + α·(v_label − v_∅)
///
/// evaluated as one forward pass of 2·count rows (the labelled rows, then the same points
/// with the null label). α = 1 gives the conditional velocity and α = 0 the unconditional one
/// (exactly, in this form, up to the BLAS rounding of the larger block).
///
/// Not thread-safe: build one per worker thread (the weights are shared copy-on-write, only
/// the graph and its buffers are per instance). The graph reuses its buffers, so after the
/// first evaluation of a given block size nothing is allocated.
public final class NetworkVelocityField: VelocityField {
    public let network: any VelocityNetwork
    private let graph = Graph(threads: 1, gradEnabled: false)
    private var times: [Float] = []
    /// Class labels of the rows of the next evaluations ([count]); nil for unconditional (or,
    /// for a conditional network, the null label).
    public var labels: UnsafePointer<Int32>?
    /// Classifier-free guidance scale α; nil evaluates the network once with ``labels``.
    /// Ignored by an unconditional network (its classes are nil).
    public var guidance: Float?
    /// Doubled inputs and labels of a guided evaluation.
    private var guidedX: [Float] = [], guidedLabels: [Int32] = []
    /// RF-Edit feature sharing of the current block (set by ``ODESolver``'s block driver).
    var tap: FeatureSharingTap?

    public var dimension: Int { network.spec.pointSize }

    /// Wraps an existing network (its weights are read, never written).
    public init(network: any VelocityNetwork) {
        self.network = network
    }

    /// Builds the network for `model` and loads `stateDict`. Throws ``ODEError/invalidArgument(_:)``
    /// for an invalid spec and `StateDictError` for missing or mis-shaped tensors.
    public convenience init(model: ModelSpec, stateDict: [String: Tensor]) throws {
        if let e = model.validationError() {
            throw ODEError.invalidArgument("model \(e.pointer): \(e.message)")
        }
        self.init(network: try model.makeNetwork(stateDict: stateDict))
    }

    public func willEvaluate(step: Int, evaluation: Int) {
        tap?.position(step: step, evaluation: evaluation)
    }

    public func velocity(_ x: UnsafePointer<Float>, count: Int, t: Float, into v: UnsafeMutablePointer<Float>) {
        guard count > 0 else { return }
        let d = dimension
        guard let alpha = guidance, let k = network.spec.classes else {
            evaluate(x, labels: labels, rows: count, t: t) { v.update(from: $0, count: count * d) }
            return
        }
        // Rows 0..<count: the points with their labels; rows count..<2count: with the null label.
        if guidedX.count != 2 * count * d { guidedX = [Float](repeating: 0, count: 2 * count * d) }
        if guidedLabels.count != 2 * count { guidedLabels = [Int32](repeating: Int32(k), count: 2 * count) }
        for r in 0..<count { guidedLabels[r] = labels?[r] ?? Int32(k) }
        guidedX.withUnsafeMutableBufferPointer { gx in
            gx.baseAddress!.update(from: x, count: count * d)
            (gx.baseAddress! + count * d).update(from: x, count: count * d)
        }
        guidedX.withUnsafeBufferPointer { gx in
            guidedLabels.withUnsafeBufferPointer { gl in
                evaluate(gx.baseAddress!, labels: gl.baseAddress!, rows: 2 * count, t: t) { out in
                    let m = count * d, a = alpha, b = 1 - alpha
                    for j in 0..<m { v[j] = b * out[m + j] + a * out[j] }
                }
            }
        }
    }

    /// One forward pass of `rows` rows at time t; `body` reads the [rows, d] output.
    private func evaluate(_ x: UnsafePointer<Float>, labels: UnsafePointer<Int32>?, rows: Int, t: Float,
                          _ body: (UnsafePointer<Float>) -> Void) {
        if times.count != rows { times = [Float](repeating: t, count: rows) } else if times[0] != t {
            for i in 0..<rows { times[i] = t }
        }
        graph.reset()
        let out = times.withUnsafeBufferPointer { tp in
            network.velocity(graph, x: x, t: tp.baseAddress!, labels: labels, rows: rows, tap: tap)   // [rows, d]
        }
        graph.read(out.id) { body($0) }
        graph.reset()
    }
}
