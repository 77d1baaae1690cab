public import ReflowEngine
public import ReflowNN
public import ReflowFlow
import Foundation

// Simulated single-coil acquisitions (issue #14): a magnitude image in [0, 1] becomes a complex
// image (zero or smooth random phase), is sampled by a mask and gets complex Gaussian noise on the
// sampled points. Training draws a fresh acquisition per image; `reconstruct` jobs simulate one
// from uploaded images or phantoms.

/// The phase given to a magnitude image.
public enum PhaseKind: String, Codable, Sendable, CaseIterable {
    /// x = m (real images, the usual toy setting).
    case zero
    /// x = m·e^{iφ} with φ a smooth random field: three random plane-wave cosines of at most one
    /// cycle per image and amplitude up to π/3 each (B0-like low-order phase).
    case smooth
}

/// How masks are made: `{"kind": "gaussian2D", "acceleration": 4, "centerFraction": 0.08, "seed": 7}`.
/// Without a seed (null, the default) every image draws its own mask from the job's random
/// stream; with one, every image uses that seed's mask.
public struct MaskSpec: Codable, Sendable, Equatable, Validatable {
    public var kind: MaskKind = .gaussian2D
    public var acceleration: Double = 4
    public var centerFraction: Double = 0.08
    public var seed: UInt64? = nil

    public init(kind: MaskKind = .gaussian2D, acceleration: Double = 4, centerFraction: Double = 0.08, seed: UInt64? = nil) {
        self.kind = kind
        self.acceleration = acceleration
        self.centerFraction = centerFraction
        self.seed = seed
    }

    enum CodingKeys: String, CodingKey { case kind, acceleration, centerFraction, seed }

    // Absent keys take the defaults whatever the kind (a `{"kind": "poissonDisc"}` replaces the
    // default object whole in a partial spec, so the defaults must live here).
    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        let d = MaskSpec()
        kind = try c.decodeIfPresent(MaskKind.self, forKey: .kind) ?? d.kind
        acceleration = try c.decodeIfPresent(Double.self, forKey: .acceleration) ?? d.acceleration
        centerFraction = try c.decodeIfPresent(Double.self, forKey: .centerFraction) ?? d.centerFraction
        seed = try c.decodeIfPresent(UInt64.self, forKey: .seed)
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(kind, forKey: .kind)
        try c.encode(acceleration, forKey: .acceleration)
        try c.encode(centerFraction, forKey: .centerFraction)
        if let seed { try c.encode(seed, forKey: .seed) } else { try c.encodeNil(forKey: .seed) }
    }

    public func validationError() -> FieldError? {
        if !(acceleration >= 1 && acceleration <= 64) { return ("/acceleration", "must be in [1, 64], got \(acceleration)") }
        if !(centerFraction >= 0 && centerFraction < 1) { return ("/centerFraction", "must be in [0, 1), got \(centerFraction)") }
        return nil
    }

    /// Why masks of this spec cannot be made for H×W images, with the pointer below the spec.
    public func problem(height: Int, width: Int) -> FieldError? {
        guard let p = Mask.problem(height: height, width: width, acceleration: acceleration, centerFraction: centerFraction) else { return nil }
        return (p.hasPrefix("centerFraction") || p.hasPrefix("a centre") ? "/centerFraction" : "/acceleration", p)
    }

    /// The mask for an image: the fixed seed's, or one drawn with a seed from `rng`.
    public func make(height: Int, width: Int, rng: inout Random) throws -> Mask {
        let s = seed ?? (rng.next() >> 33)   // 31-bit: exact in any JSON reader
        return try Mask.make(kind, height: height, width: width, acceleration: acceleration, centerFraction: centerFraction, seed: s)
    }
}

/// A simulated acquisition: `{"mask": {...}, "phase": "zero", "noise": 0}`. `noise` is the
/// standard deviation of the complex Gaussian noise per sampled k-space point (each of the real
/// and imaginary parts has σ/√2), for images of magnitude ≤ 1 under the orthonormal FFT.
public struct Acquisition: Codable, Sendable, Equatable, Validatable {
    public var mask = MaskSpec()
    public var phase: PhaseKind = .zero
    public var noise: Double = 0

    public init(mask: MaskSpec = MaskSpec(), phase: PhaseKind = .zero, noise: Double = 0) {
        self.mask = mask
        self.phase = phase
        self.noise = noise
    }

    public func validationError() -> FieldError? {
        if let e = mask.validationError() { return ("/mask" + e.pointer, e.message) }
        if !(noise >= 0 && noise <= 10) { return ("/noise", "must be in [0, 10], got \(noise)") }
        return nil
    }
}

/// One simulated (or uploaded) single-coil problem: the measurements, the forward model and,
/// when known, the reference image.
public struct MRIProblem: Sendable {
    public var model: ForwardModel
    /// k-space [1, H, W], zero off the mask.
    public var measurements: ComplexTensor
    /// The complex reference image [H, W] (nil for uploaded k-space without one).
    public var reference: ComplexTensor?
    public var mask: Mask?

    public init(model: ForwardModel, measurements: ComplexTensor, reference: ComplexTensor? = nil, mask: Mask? = nil) {
        self.model = model
        self.measurements = measurements
        self.reference = reference
        self.mask = mask
    }

    public var height: Int { model.mask.shape[0] }
    public var width: Int { model.mask.shape[1] }

    /// The zero-filled estimate Aᴴy [H, W].
    public var zeroFilled: ComplexTensor { model.adjoint(measurements) }
}

extension Acquisition {
    /// A smooth random phase field [H·W] (see ``PhaseKind/smooth``).
    public static func smoothPhase(height h: Int, width w: Int, rng: inout Random) -> [Float] {
        var terms = [(Double, Double, Double, Double)]()
        for _ in 0..<3 {
            let amp = rng.uniformDouble() * Double.pi / 3
            let theta = rng.uniformDouble() * 2 * Double.pi
            let angle = rng.uniformDouble() * 2 * Double.pi, freq = rng.uniformDouble()   // cycles per image
            terms.append((amp, theta, freq * Foundation.cos(angle), freq * Foundation.sin(angle)))
        }
        var out = [Float](repeating: 0, count: h * w)
        for r in 0..<h {
            for c in 0..<w {
                let (u, v) = (Double(c) / Double(w), Double(r) / Double(h))
                var p = 0.0
                for (a, t, fx, fy) in terms { p += a * Foundation.cos(2 * .pi * (fx * u + fy * v) + t) }
                out[r * w + c] = Float(p)
            }
        }
        return out
    }

    /// The complex image of a magnitude image [H·W] under this acquisition's phase.
    public func complexImage(_ magnitude: [Float], height h: Int, width w: Int, rng: inout Random) -> ComplexTensor {
        var z = ComplexTensor(zeros: [h, w])
        let phi = phase == .smooth ? Acquisition.smoothPhase(height: h, width: w, rng: &rng) : nil
        for i in 0..<(h * w) {
            let m = magnitude[i]
            if let phi {
                z.data[2 * i] = m * Foundation.cos(phi[i])
                z.data[2 * i + 1] = m * Foundation.sin(phi[i])
            } else {
                z.data[2 * i] = m
            }
        }
        return z
    }

    /// Simulates the acquisition of a magnitude image [H·W]: phase, mask (fixed or drawn), y = M·F·x + n.
    public func simulate(_ magnitude: [Float], height h: Int, width w: Int, rng: inout Random) throws -> MRIProblem {
        let x = complexImage(magnitude, height: h, width: w, rng: &rng)
        let mask = try self.mask.make(height: h, width: w, rng: &rng)
        return try Acquisition.measure(x, mask: mask, noise: noise, rng: &rng)
    }

    /// y = M·F·x + n for a complex image and a mask (noise only on sampled points).
    public static func measure(_ x: ComplexTensor, mask: Mask, noise: Double, rng: inout Random) throws -> MRIProblem {
        let model = try ForwardModel(mask: mask.values)
        var y = model.apply(x)
        if noise > 0 {
            let s = Float(noise / 2.0.squareRoot())
            for k in 0..<(y.count) where mask.values.data[k] != 0 {
                y.data[2 * k] += s * Float(rng.normal())
                y.data[2 * k + 1] += s * Float(rng.normal())
            }
        }
        return MRIProblem(model: model, measurements: y, reference: x, mask: mask)
    }
}

/// Where training and test images for MRI come from: magnitude images in [0, 1].
public enum MRIImages: Sendable {
    /// Images of a dataset split (one channel; values mapped from [−1, 1] to [0, 1]).
    case dataset(ImageSet)
    /// Random ellipse phantoms (``Phantoms/randomEllipses(height:width:structures:seed:)``).
    case phantoms(height: Int, width: Int)
    /// Each draw picks one of the parts uniformly.
    indirect case mixed([MRIImages])

    public var height: Int {
        switch self {
        case .dataset(let s): return s.height
        case .phantoms(let h, _): return h
        case .mixed(let parts): return parts[0].height
        }
    }

    public var width: Int {
        switch self {
        case .dataset(let s): return s.width
        case .phantoms(_, let w): return w
        case .mixed(let parts): return parts[0].width
        }
    }

    /// One magnitude image [H·W] drawn with `rng`.
    public func draw(rng: inout Random) -> [Float] {
        switch self {
        case .dataset(let s): return MRIImages.magnitude(s, rng.int(below: s.count))
        case .phantoms(let h, let w): return Phantoms.randomEllipses(height: h, width: w, seed: rng.next()).data
        case .mixed(let parts): return parts[rng.int(below: parts.count)].draw(rng: &rng)
        }
    }

    /// Image i of a one-channel set as a magnitude image in [0, 1].
    public static func magnitude(_ s: ImageSet, _ i: Int) -> [Float] {
        var x = [Float](repeating: 0, count: s.pixelsPerImage)
        x.withUnsafeMutableBufferPointer { s.copyImage(i, into: $0.baseAddress!) }
        return x.map { min(1, max(0, ($0 + 1) / 2)) }
    }
}

/// Full-reference metrics of a reconstruction, on magnitude images with the reference's maximum
/// as the data range (fastMRI's convention): SSIM (``ImageQuality``'s 11×11 Gaussian window,
/// σ = 1.5; nil for images under 11 pixels a side), PSNR (at most 100 dB) and NMSE.
public struct ReconstructionMetrics: Codable, Sendable, Equatable {
    public var ssim: Double?
    public var psnr: Double
    public var nmse: Double

    public init(ssim: Double?, psnr: Double, nmse: Double) {
        self.ssim = ssim
        self.psnr = psnr
        self.nmse = nmse
    }

    /// Metrics of `x` against `reference` (both [H, W] complex) on their magnitudes.
    public static func measure(_ x: ComplexTensor, reference: ComplexTensor) -> ReconstructionMetrics {
        let a = x.magnitude.data, b = reference.magnitude.data
        let h = reference.shape[0], w = reference.shape[1]
        let range = Double(b.max() ?? 0) > 0 ? Double(b.max()!) : 1
        // An exact reconstruction reports 100 dB (JSON has no infinity); a zero reference an NMSE of 0 or ∞ → 1e9.
        let p = ImageQuality.psnr(a, b, dataRange: range)
        let psnr = p.isNaN ? 0 : min(100, p)
        let nmse = MRIMetrics.nmse(a, b)
        return ReconstructionMetrics(ssim: ImageQuality.ssim(a, b, shape: [1, h, w], dataRange: range),
                                     psnr: psnr, nmse: nmse.isFinite ? nmse : (a == b ? 0 : 1e9))
    }
}
