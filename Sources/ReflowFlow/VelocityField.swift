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
/// Not thread-safe: build one per worker thread (the weights are shared copy-on-write, only
/// the graph and its buffers are per instance). The graph reuses its buffers, so after the
/// first evaluation of a given block size nothing is allocated.
public final class NetworkVelocityField: VelocityField {
    public let network: any VelocityNetwork
    private let graph = Graph(threads: 1, gradEnabled: false)
    private var times: [Float] = []
    /// Class labels of the rows of the next evaluations ([count]); nil for unconditional.
    public var labels: UnsafePointer<Int32>?

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

    public func velocity(_ x: UnsafePointer<Float>, count: Int, t: Float, into v: UnsafeMutablePointer<Float>) {
        guard count > 0 else { return }
        let d = dimension
        if times.count != count { times = [Float](repeating: t, count: count) } else if times[0] != t {
            for i in 0..<count { times[i] = t }
        }
        graph.reset()
        let out = times.withUnsafeBufferPointer { tp in
            network.velocity(graph, x: x, t: tp.baseAddress!, labels: labels, rows: count)   // [count, d]
        }
        graph.read(out.id) { pv in v.update(from: pv, count: count * d) }
        graph.reset()
    }
}
