public import ReflowNN

/// How a training pair (x0, x1) and a time t become the network's input x_t and its regression
/// target: the one place where the interpolant and the time convention are applied to batches
/// (the trainer, reflow and distillation all go through ``fill(x0:x1:t:rows:size:xt:target:)``).
///
/// Today there is the rectified flow of ``TimeConvention`` (t = 0 noise, t = 1 data,
/// x_t = t·x1 + (1 − t)·x0, target v = x1 − x0). Diffusion parameterisations (VP with ε or v
/// prediction on a discrete time grid) are further cases of this enum.
public enum Interpolant: String, Codable, Sendable, Equatable, CaseIterable {
    /// x_t = t·x1 + (1 − t)·x0, target x1 − x0 (Liu et al. 2022).
    case rectifiedFlow

    /// Writes x_t and the target for `rows` rows of `size` floats:
    ///
    ///     x0, x1: [rows, size]   t: [rows]   →   xt, target: [rows, size]
    ///
    /// `xt` and `target` may alias neither input.
    @inline(__always)
    public func fill(x0: UnsafePointer<Float>, x1: UnsafePointer<Float>, t: UnsafePointer<Float>, rows: Int, size: Int,
                     xt: UnsafeMutablePointer<Float>, target: UnsafeMutablePointer<Float>) {
        switch self {
        case .rectifiedFlow:
            for r in 0..<rows {
                let tr = t[r], o = r * size
                for c in 0..<size {
                    xt[o + c] = TimeConvention.interpolate(x0: x0[o + c], x1: x1[o + c], t: tr)
                    target[o + c] = TimeConvention.velocity(x0: x0[o + c], x1: x1[o + c])
                }
            }
        }
    }
}

// The user-facing configuration types of the flow layer, checked at the boundary.
extension TimeSampler: Validatable {}
extension TimeInput: Validatable {}
extension Distribution2D: Validatable {}
