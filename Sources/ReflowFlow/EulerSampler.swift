public import ReflowEngine

/// Euler integration of dx/dt = v(x, t) from t = 0 to 1 in `steps` uniform steps (see
/// ``TimeConvention``): x ← x + v(x, t_i)/steps at t_i = i/steps.
///
/// A thin wrapper over ``ODESolver/solve(model:stateDict:x:labels:method:direction:threads:blockRows:tStart:tEnd:recordTrajectory:shouldStop:)``
/// with `.euler(steps:)`, `.forward`. Points are independent, so the batch is cut into blocks of
/// `blockRows` that are spread over `threads` workers; each worker runs whole trajectories for its
/// blocks on its own no-grad graph with single-threaded GEMMs, keeping a block's activations in
/// cache. Results do not depend on `threads` (every row sees the same arithmetic).
public enum EulerSampler {
    /// z0: [N, d] → x1: [N, d]
    ///
    /// Throws ``ODEError`` for invalid arguments (steps outside [1, ``ODEMethod/maxSteps``], a
    /// z0 that is not [N, d] or not finite, threads or blockRows < 1) and `StateDictError` for
    /// weights that do not fit `model`.
    public static func sample(model: ModelSpec, stateDict: [String: Tensor], z0: Tensor,
                              steps: Int, threads: Int, blockRows: Int = 1024) throws -> Tensor {
        try ODESolver.solve(model: model, stateDict: stateDict, x: z0, method: .euler(steps: steps),
                            direction: .forward, threads: threads, blockRows: blockRows).x
    }
}
