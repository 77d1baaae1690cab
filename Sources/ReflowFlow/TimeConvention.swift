/// The one time convention of reflowd (Liu et al. 2022, "Flow Straight and Fast"):
///
///     x_t = t·x1 + (1 − t)·x0,   x0 ~ π0 (noise / source),   x1 ~ π1 (data / target),
///     v(x_t, t) ≈ x1 − x0,       integrate dx/dt = v from t = 0 (noise) to t = 1 (data).
///
/// Code ported from repositories with the opposite convention (rfpp, diffusers' flow-matching
/// schedulers, where t = 0 is data) must be converted with t → 1 − t and v → −v.
/// docs/NUMERICS.md repeats this paragraph; every sampler and loss refers here.
public enum TimeConvention {
    /// x_t for one coordinate.
    @inline(__always)
    public static func interpolate(x0: Float, x1: Float, t: Float) -> Float { t * x1 + (1 - t) * x0 }

    /// The regression target for one coordinate: v = x1 − x0.
    @inline(__always)
    public static func velocity(x0: Float, x1: Float) -> Float { x1 - x0 }
}
