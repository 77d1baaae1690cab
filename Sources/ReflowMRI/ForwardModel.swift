public import ReflowEngine

/// The MRI forward model y_c = M·F·S_c·x (issue #14; ../shared/design/ALGORITHMS.md §8): x a
/// complex image [H, W], S_c the coil sensitivities (none: single coil, S = 1), F the centred
/// orthonormal 2-D FFT (``FFT2D``), M a 0/1 mask over k-space. Measurements y are [C, H, W]
/// (C = 1 for single coil), zero off the mask.
public struct ForwardModel: Sendable {
    /// [H, W] of 0/1.
    public let mask: Tensor
    /// Coil sensitivities [C, H, W], or nil for a single coil with S = 1.
    public let sensitivities: ComplexTensor?

    public init(mask: Tensor, sensitivities: ComplexTensor? = nil) throws {
        guard mask.rank == 2 else { throw MRIError.invalid("the mask must be [H, W], got \(mask.shape)") }
        if let s = sensitivities, s.shape.count != 3 || Array(s.shape[1...]) != mask.shape {
            throw MRIError.invalid("sensitivities must be [coils, \(mask.shape[0]), \(mask.shape[1])], got \(s.shape)")
        }
        self.mask = mask
        self.sensitivities = sensitivities
    }

    var shape: [Int] { mask.shape }

    /// S·x for every coil: [C, H, W].
    func coilImages(_ x: ComplexTensor) -> ComplexTensor {
        let n = x.count
        guard let s = sensitivities else { return ComplexTensor(shape: [1] + x.shape, data: x.data) }
        var out = ComplexTensor(zeros: s.shape)
        for c in 0..<s.shape[0] {
            for i in 0..<n {
                let (sr, si) = (s.data[2 * (c * n + i)], s.data[2 * (c * n + i) + 1])
                let (xr, xi) = (x.data[2 * i], x.data[2 * i + 1])
                out.data[2 * (c * n + i)] = sr * xr - si * xi
                out.data[2 * (c * n + i) + 1] = sr * xi + si * xr
            }
        }
        return out
    }

    /// Σ_c conj(S_c)·z_c: [C, H, W] → [H, W].
    func combine(_ z: ComplexTensor) -> ComplexTensor {
        let n = shape.reduce(1, *)
        guard let s = sensitivities else { return ComplexTensor(shape: shape, data: z.data) }
        var out = ComplexTensor(zeros: shape)
        for c in 0..<s.shape[0] {
            for i in 0..<n {
                let (sr, si) = (s.data[2 * (c * n + i)], s.data[2 * (c * n + i) + 1])
                let (zr, zi) = (z.data[2 * (c * n + i)], z.data[2 * (c * n + i) + 1])
                out.data[2 * i] += sr * zr + si * zi
                out.data[2 * i + 1] += sr * zi - si * zr
            }
        }
        return out
    }

    /// M·z per coil (in place on a copy).
    func masked(_ z: ComplexTensor) -> ComplexTensor {
        var out = z
        let n = shape.reduce(1, *)
        for k in 0..<(out.count) where mask.data[k % n] == 0 {
            out.data[2 * k] = 0
            out.data[2 * k + 1] = 0
        }
        return out
    }

    /// A = M·F·S: image [H, W] → measurements [C, H, W].
    public func apply(_ x: ComplexTensor) -> ComplexTensor { masked(FFT2D.forward(coilImages(x))) }

    /// Aᴴ = Sᴴ·F⁻¹·M: measurements [C, H, W] → image [H, W]. Applied to y it is the zero-filled
    /// (SENSE-combined) initial estimate.
    public func adjoint(_ y: ComplexTensor) -> ComplexTensor { combine(FFT2D.inverse(masked(y))) }

    /// ∇ of ½‖A·x − y‖² with respect to x (as a real vector of [Re, Im]): Aᴴ(A·x − y), the
    /// data-consistency gradient the RIM reads at every step.
    public func gradient(_ x: ComplexTensor, _ y: ComplexTensor) -> ComplexTensor {
        var r = apply(x)
        for i in 0..<r.data.count { r.data[i] -= y.data[i] }
        return adjoint(r)
    }

    /// ½‖A·x − y‖² in Double.
    public func misfit(_ x: ComplexTensor, _ y: ComplexTensor) -> Double {
        let r = apply(x)
        var s = 0.0
        for i in 0..<r.data.count { let d = Double(r.data[i] - y.data[i]); s += d * d }
        return s / 2
    }
}
