public import ReflowEngine
public import ReflowAutograd

// The RIM's data-consistency input as a differentiable graph node (issue #14): images as real
// [N, 2, H, W] (channel 0 the real part, 1 the imaginary part), each with its own forward model
// and measurements.

extension ForwardModel {
    /// [2, H, W] planes (Re, Im) → complex [H, W].
    static func complex(_ p: UnsafePointer<Float>, _ plane: Int) -> ComplexTensor {
        var z = [Float](repeating: 0, count: 2 * plane)
        for i in 0..<plane { z[2 * i] = p[i]; z[2 * i + 1] = p[plane + i] }
        return ComplexTensor(shape: [plane], data: z)
    }

    /// Complex [H, W] → [2, H, W] planes at `out`.
    static func planes(_ z: ComplexTensor, _ out: UnsafeMutablePointer<Float>, _ plane: Int) {
        for i in 0..<plane { out[i] = z.data[2 * i]; out[plane + i] = z.data[2 * i + 1] }
    }

    /// AᴴA·x for a complex image (self-adjoint).
    func normal(_ x: ComplexTensor) -> ComplexTensor { adjoint(apply(x)) }
}

extension Graph {
    /// ∇_x ½‖A_n·x_n − y_n‖² = A_nᴴA_n·x_n − A_nᴴ·y_n for every image n of x [N, 2, H, W] (the
    /// gradient the RIM reads at each step; ``ForwardModel/gradient(_:_:)``), differentiable in
    /// x: AᴴA is self-adjoint, so the backward pass applies it to the incoming gradient.
    /// `models` and `measurements` hold one entry per image.
    public func dataConsistencyGradient(_ x: Var, models: [ForwardModel], measurements: [ComplexTensor]) -> Var {
        let s = x.shape
        precondition(s.count == 4 && s[1] == 2 && models.count == s[0] && measurements.count == s[0],
                     "dataConsistencyGradient: x must be [N, 2, H, W] with N models and measurements, got \(s)")
        let (n, h, w) = (s[0], s[2], s[3]), plane = h * w
        let normal = LinearMap { src, dst, _ in
            for i in 0..<n {
                let z = models[i].normal(ForwardModel.complex(src + 2 * plane * i, plane).reshaped([h, w]))
                ForwardModel.planes(z, dst + 2 * plane * i, plane)
            }
        }
        let ahy = constant(shape: s) { p in
            for i in 0..<n { ForwardModel.planes(models[i].adjoint(measurements[i]), p.baseAddress! + 2 * plane * i, plane) }
        }
        return binary(.sub, linearMap(x, forward: normal, adjoint: normal), ahy)
    }
}

extension ComplexTensor {
    /// The same elements with another shape.
    func reshaped(_ shape: [Int]) -> ComplexTensor { ComplexTensor(shape: shape, data: data) }
}
