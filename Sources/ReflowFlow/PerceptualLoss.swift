public import ReflowAutograd
public import ReflowNN

/// The perceptual premetric of 2-rectified flow++ (Lee et al. 2024, rfpp `--loss_type
/// lpips-huber`, `--lpips_divt`) on reflowd's own feature network.
///
/// rfpp adds LPIPS (VGG16 features) between the predicted data x̂ and the pair's data x to a
/// t-weighted pseudo-Huber on the velocity. Written with rfpp's time s = 1 − t (s = 1 noise)
/// the per-sample loss is (1 − s)·Huber(v, v*) + LPIPS(x̂, x), and with `--lpips_divt` the
/// LPIPS term is divided by s. In reflowd's convention (t = 0 noise, t = 1 data,
/// x̂ = x_t + (1 − t)·v) that is
///
///     lpipsHuber:          t·base(v, v*) + w·LPIPS(x̂, x1)
///     lpipsHuberInverseT:  t·base(v, v*) + w·LPIPS(x̂, x1)/(1 − t)
///
/// where `base` is the training config's `loss` (pseudo-Huber in rfpp) per sample and w is
/// ``weight``. LPIPS here is the unweighted ("baseline") form of Zhang et al. 2018 on the
/// activations of a classifier that a reflowd `classify` job trained: each activation map is
/// unit-normalised over channels at every position, and the squared difference is summed over
/// channels, averaged over positions and summed over layers.
///
/// The classifier must not be the one the evaluation scores with, or training would optimise
/// the metric itself; reflowd's results use a LeNet-5 here and a CNN for evaluation, and the
/// evaluate job refuses a model trained against its own classifier.
public struct PerceptualLoss: Codable, Sendable, Equatable, Validatable {
    public enum Form: String, Codable, Sendable, CaseIterable {
        case lpipsHuber
        case lpipsHuberInverseT
    }

    /// A classify job's classifier (`{"job": id}`) on images of the model's shape.
    public var classifier: ArtifactRef
    public var form: Form
    /// Multiplier of the LPIPS term.
    public var weight: Float

    public init(classifier: ArtifactRef, form: Form = .lpipsHuber, weight: Float = 1) {
        self.classifier = classifier
        self.form = form
        self.weight = weight
    }

    enum CodingKeys: String, CodingKey { case classifier, form, weight }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        classifier = try c.decode(ArtifactRef.self, forKey: .classifier)
        form = try c.decodeIfPresent(Form.self, forKey: .form) ?? .lpipsHuber
        weight = try c.decodeIfPresent(Float.self, forKey: .weight) ?? 1
    }

    public func validationError() -> FieldError? {
        Validation.first(
            { Validation.member("/classifier", classifier) },
            { weight > 0 && weight <= 1e6 ? nil : ("/weight", "must be in (0, 1e6], got \(weight)") })
    }

    /// LPIPS per sample between image batches a and b ([B, C·H·W] or [B, C, H, W]) on `net`'s
    /// activations → [B].
    public static func lpips(_ net: ClassifierNetwork, _ a: Var, _ b: Var) -> Var {
        let g = a.graph
        // Every classifier kind has at least one hidden layer (ClassifierConfig's validation).
        var total = g.constant(shape: [a.shape[0]]) { $0.update(repeating: 0) }
        for (fa, fb) in zip(net.activations(a), net.activations(b)) {
            let d = g.binary(.sub, unitNormalised(fa), unitNormalised(fb))
            var per = g.sum(g.square(d), axes: [1])                       // [B] or [B, H, W]
            if per.shape.count > 1 { per = g.mean(per, axes: Array(1..<per.shape.count)) }
            total = g.binary(.add, total, per)
        }
        return total
    }

    /// f / √(Σ_channels f² + ε) at every position (channels: axis 1).
    static func unitNormalised(_ f: Var) -> Var {
        let g = f.graph
        let norm = g.sqrt(g.affine(g.sum(g.square(f), axes: [1], keepDims: true), scale: 1, shift: 1e-8))
        return g.binary(.div, f, norm)
    }

    /// The whole loss of `rows` samples (scalar, averaged over them): `base` per sample from
    /// `loss`, the LPIPS term between x̂ = x_t + (1 − t)·v and x1.
    /// v, target: [rows, D]; xt, x1: [rows·D] floats; t: [rows].
    public func callAsFunction(_ net: ClassifierNetwork, loss: Loss, v: Var, target: Var, xt: UnsafePointer<Float>,
                               x1: UnsafePointer<Float>, t: UnsafePointer<Float>, rows: Int) -> Var {
        let g = v.graph, d = v.shape[1]
        let base = loss.perSample(v, target)                                          // [rows]
        let tw = g.constant(shape: [rows]) { for r in 0..<rows { $0[r] = t[r] } }
        let toData = g.constant(shape: [rows, 1]) { for r in 0..<rows { $0[r] = 1 - t[r] } }
        let xtc = g.constant(shape: [rows, d]) { $0.baseAddress!.update(from: xt, count: rows * d) }
        let x1c = g.constant(shape: [rows, d]) { $0.baseAddress!.update(from: x1, count: rows * d) }
        let xhat = g.binary(.add, xtc, g.binary(.mul, toData, v))                      // [rows, D]
        var p = PerceptualLoss.lpips(net, xhat, x1c)                                  // [rows]
        if form == .lpipsHuberInverseT {
            let inv = g.constant(shape: [rows]) { for r in 0..<rows { $0[r] = 1 / max(1 - t[r], 1e-5) } }
            p = g.binary(.mul, p, inv)
        }
        return g.mean(g.binary(.add, g.binary(.mul, tw, base), g.affine(p, scale: weight)))
    }
}
