public import ReflowNN

/// How a training pair (x0, x1) and a time t become the network's input x_t and its regression
/// target: the one place where the interpolant and the time convention are applied to batches
/// (the trainer, reflow and distillation all go through ``fill(x0:x1:t:rows:size:xt:target:)``).
///
/// - ``rectifiedFlow``: reflowd's flow (``TimeConvention``: t = 0 noise, t = 1 data,
///   x_t = t·x1 + (1 − t)·x0, target v = x1 − x0). Wire JSON: `"rectifiedFlow"`.
/// - ``diffusion(_:)``: a discrete VP (DDPM) model (``VPDiffusion``): t picks the DDPM index
///   i = T − 1 − ⌊t·T⌋, x_i = √ᾱ_i·x1 + √(1 − ᾱ_i)·x0 with x0 the noise, and the network predicts
///   ε = x0 or v = √ᾱ_i·x0 − √(1 − ᾱ_i)·x1. Wire JSON: `{"kind": "vp", "prediction": "epsilon",
///   "schedule": {"kind": "linear"}}`. Such a model samples with DDIM (``ODEMethod/ddim(steps:)``).
public enum Interpolant: Codable, Sendable, Equatable, Validatable {
    /// x_t = t·x1 + (1 − t)·x0, target x1 − x0 (Liu et al. 2022).
    case rectifiedFlow
    /// A VP diffusion model on a discrete schedule (Ho et al. 2020; Salimans & Ho 2022 for v).
    case diffusion(VPDiffusion)

    /// The diffusion parameterisation, nil for the rectified flow.
    public var diffusion: VPDiffusion? {
        if case .diffusion(let d) = self { return d }
        return nil
    }

    /// The wire name of the kind (`rectifiedFlow` or `vp`).
    public var name: String { diffusion == nil ? "rectifiedFlow" : "vp" }

    /// Writes x_t and the target for `rows` rows of `size` floats; a diffusion interpolant also
    /// replaces each t by the network time of its DDPM index (``VPDiffusion/networkTime(index:)``),
    /// which is what the network then sees:
    ///
    ///     x0, x1: [rows, size]   t: [rows] (in, out)   →   xt, target: [rows, size]
    ///
    /// `xt` and `target` may alias neither input.
    @inline(__always)
    public func fill(x0: UnsafePointer<Float>, x1: UnsafePointer<Float>, t: UnsafeMutablePointer<Float>, rows: Int, size: Int,
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
        case .diffusion(let vp):
            let bars = vp.alphaBars
            for r in 0..<rows {
                let i = vp.index(flowTime: t[r])
                t[r] = vp.networkTime(index: i)
                let a = Float(bars[i].squareRoot()), s = Float((1 - bars[i]).squareRoot()), o = r * size
                for c in 0..<size {
                    let e = x0[o + c], d = x1[o + c]
                    xt[o + c] = a * d + s * e
                    target[o + c] = vp.prediction == .epsilon ? e : a * e - s * d
                }
            }
        }
    }

    /// Per row, how an error in the network's output becomes an error in the predicted data
    /// (the factor of `lossSpace: "data"`), given the network times ``fill(x0:x1:t:rows:size:xt:target:)``
    /// wrote: rectified flow x̂1 = x_t + (1 − t)·v̂ → 1 − t; ε-prediction
    /// x̂ = (x_i − σ_i·ε̂)/α_i → σ_i/α_i; v-prediction x̂ = α_i·x_i − σ_i·v̂ → σ_i.
    public func dataScale(networkTime t: Float) -> Float {
        switch self {
        case .rectifiedFlow: return 1 - t
        case .diffusion(let vp):
            let b = vp.alphaBars[vp.index(networkTime: t)]
            let s = (1 - b).squareRoot()
            return Float(vp.prediction == .epsilon ? s / b.squareRoot() : s)
        }
    }

    public func validationError() -> (pointer: String, message: String)? {
        diffusion?.validationError()
    }

    enum CodingKeys: String, CodingKey { case kind }

    public init(from decoder: any Decoder) throws {
        if let single = try? decoder.singleValueContainer(), let s = try? single.decode(String.self) {
            guard s == "rectifiedFlow" else {
                throw DecodingError.dataCorruptedError(in: single, debugDescription: "unknown interpolant \"\(s)\" (use \"rectifiedFlow\" or {\"kind\": \"vp\", …})")
            }
            self = .rectifiedFlow
            return
        }
        let c = try decoder.container(keyedBy: CodingKeys.self)
        switch try c.decode(String.self, forKey: .kind) {
        case "rectifiedFlow": self = .rectifiedFlow
        case "vp": self = .diffusion(try VPDiffusion(from: decoder))
        case let k: throw DecodingError.dataCorruptedError(forKey: .kind, in: c, debugDescription: "unknown interpolant kind \"\(k)\" (rectifiedFlow, vp)")
        }
    }

    /// The rectified flow encodes as the string of every earlier release (digests of stored
    /// specs stay valid); a diffusion as an object with `"kind": "vp"`.
    public func encode(to encoder: any Encoder) throws {
        switch self {
        case .rectifiedFlow:
            var c = encoder.singleValueContainer()
            try c.encode("rectifiedFlow")
        case .diffusion(let vp):
            var c = encoder.container(keyedBy: CodingKeys.self)
            try c.encode("vp", forKey: .kind)
            try vp.encode(to: encoder)
        }
    }
}

/// What a VP diffusion network predicts.
public enum DiffusionPrediction: String, Codable, Sendable, CaseIterable {
    /// The noise ε (Ho et al. 2020).
    case epsilon
    /// v = α·ε − σ·x (Salimans & Ho 2022, "Progressive Distillation").
    case v
}

/// A discrete VP diffusion parameterisation: the noise schedule (T steps, 1000 by default) and
/// the prediction target.
///
/// Time. A DDPM index i (0 least noisy, T − 1 noisiest; −1 is clean data) corresponds to flow
/// time ``flowTime(index:)`` = (T − 1 − i)/T, so the noise end is t = 0 and clean data t = 1 as
/// everywhere in reflowd, and N-step DDIM with trailing spacing visits t = k/N when N divides
/// T. The network sees ``networkTime(index:)`` = 1 − (i + ½)/T, the middle of the index's cell.
public struct VPDiffusion: Codable, Sendable, Equatable {
    public var schedule: NoiseSchedule = .linear()
    public var prediction: DiffusionPrediction = .epsilon

    /// ᾱ_i of the schedule (computed once per value).
    public let alphaBars: [Double]

    public init(schedule: NoiseSchedule = .linear(), prediction: DiffusionPrediction = .epsilon) {
        self.schedule = schedule
        self.prediction = prediction
        alphaBars = schedule.validationError() == nil ? schedule.alphaBars : []
    }

    public var steps: Int { schedule.steps }

    /// The DDPM index a training time t ∈ [0, 1] falls in: T − 1 − ⌊t·T⌋, clamped to [0, T − 1]
    /// (the inverse of ``flowTime(index:)`` on its grid, so a k-step grid t = j/k trains
    /// exactly the indices that k-step DDIM with trailing spacing visits; uniform t gives
    /// uniform indices).
    @inline(__always)
    public func index(flowTime t: Float) -> Int {
        let n = steps
        return n - 1 - min(n - 1, max(0, Int((Double(t) * Double(n)).rounded(.down))))
    }

    /// The index whose network time is `t` (inverse of ``networkTime(index:)``).
    @inline(__always)
    public func index(networkTime t: Float) -> Int { index(flowTime: t) }

    /// 1 − (i + ½)/T.
    @inline(__always)
    public func networkTime(index i: Int) -> Float { Float(1 - (Double(i) + 0.5) / Double(steps)) }

    /// (T − 1 − i)/T: 0 at the noisiest index, 1 at clean data (i = −1).
    public func flowTime(index i: Int) -> Float { Float(Double(steps - 1 - i) / Double(steps)) }

    /// ᾱ at index i (1 at i = −1).
    public func alphaBar(_ i: Int) -> Double { i < 0 ? 1 : alphaBars[i] }

    /// Converts a [count] block of network outputs at index i into ε̂ in place, given the
    /// points x_i: ε̂ = σ·x + α·v̂ for v-prediction (α² + σ² = 1), unchanged for ε-prediction.
    public func epsilon(from out: UnsafeMutablePointer<Float>, x: UnsafePointer<Float>, count m: Int, index i: Int) {
        guard prediction == .v else { return }
        let b = alphaBar(i), a = Float(b.squareRoot()), s = Float((1 - b).squareRoot())
        for j in 0..<m { out[j] = s * x[j] + a * out[j] }
    }

    public func validationError() -> (pointer: String, message: String)? {
        if let e = schedule.validationError() { return ("/schedule" + e.pointer, e.message) }
        return nil
    }

    enum CodingKeys: String, CodingKey { case schedule, prediction }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        self.init(schedule: try c.decodeIfPresent(NoiseSchedule.self, forKey: .schedule) ?? .linear(),
                  prediction: try c.decodeIfPresent(DiffusionPrediction.self, forKey: .prediction) ?? .epsilon)
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(schedule, forKey: .schedule)
        try c.encode(prediction, forKey: .prediction)
    }

    public static func == (a: VPDiffusion, b: VPDiffusion) -> Bool { a.schedule == b.schedule && a.prediction == b.prediction }
}

// The user-facing configuration types of the flow layer, checked at the boundary.
extension TimeSampler: Validatable {}
extension TimeInput: Validatable {}
extension Distribution2D: Validatable {}
