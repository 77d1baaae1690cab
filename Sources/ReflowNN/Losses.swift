public import ReflowAutograd

/// How rfpp's pseudo-Huber constant c grows with the data dimension d = C·H·W.
public enum HuberScaling: String, Codable, Sendable, CaseIterable {
    /// c = 0.00054·d: what sangyun884/rfpp's code runs (and what produced its results).
    case d
    /// c = 0.00054·√d: the constant of iCT (Song & Dhariwal 2023), which rfpp's paper cites.
    case sqrtD

    /// c for `dimension` features.
    public func c(dimension: Int) -> Float {
        switch self {
        case .d: return 0.00054 * Float(dimension)
        case .sqrtD: return 0.00054 * Float(dimension).squareRoot()
        }
    }
}

/// Regression losses for velocity matching. Wire JSON: `{"kind": "mse"}`,
/// `{"kind": "pseudoHuber", "c": 0.03}`, `{"kind": "pseudoHuber", "scaling": "d"}` (or `"sqrtD"`).
public enum Loss: Codable, Sendable, Equatable {
    /// Mean over batch and features of (pred − target)².
    case mse
    /// Pseudo-Huber with a fixed c: per sample √(‖pred − target‖² + c²) − c over all non-batch
    /// dims, averaged over the batch.
    case pseudoHuber(c: Float)
    /// The pseudo-Huber premetric of Lee et al. 2024 ("Improving the Training of Rectified
    /// Flows", rfpp `--loss_type huber`): per sample (√(‖pred − target‖² + c²) − c)/d with
    /// d = the features per sample and c from `scaling` (c = 0.00054·d in rfpp's code).
    case scaledPseudoHuber(scaling: HuberScaling)
    /// Element-wise pseudo-Huber (Rectified Diffusion's train.py): per sample the mean over its
    /// elements of √((pred − target)² + c²) − c. Wire: `{"kind": "elementwisePseudoHuber", "c": 0.001}`.
    case elementwisePseudoHuber(c: Float)
    /// Mean absolute error over batch and features (SlimFlow's L1 distillation distance).
    /// Wire: `{"kind": "l1"}`.
    case l1

    /// pred, target: [B, …] → scalar
    public func callAsFunction(_ pred: Var, _ target: Var) -> Var {
        let g = pred.graph
        if case .mse = self { return g.mean(g.square(g.binary(.sub, pred, target))) }
        return g.mean(perSample(pred, target))
    }

    /// The loss of each sample: pred, target: [B, …] → [B] (mse: the mean over its features).
    public func perSample(_ pred: Var, _ target: Var) -> Var {
        let g = pred.graph
        let s = pred.shape, d = s.count > 1 ? s[1...].reduce(1, *) : 1
        let flat = g.reshape(g.binary(.sub, pred, target), [s[0], d])
        func squaredNorm() -> Var { g.sum(g.square(flat), axes: [1]) }  // [B]
        switch self {
        case .mse:
            return g.affine(squaredNorm(), scale: 1 / Float(d))
        case .pseudoHuber(let c):
            return g.affine(g.sqrt(g.affine(squaredNorm(), scale: 1, shift: c * c)), scale: 1, shift: -c)
        case .scaledPseudoHuber(let scaling):
            let c = scaling.c(dimension: d)
            return g.affine(g.sqrt(g.affine(squaredNorm(), scale: 1, shift: c * c)), scale: 1 / Float(d), shift: -c / Float(d))
        case .elementwisePseudoHuber(let c):
            let h = g.affine(g.sqrt(g.affine(g.square(flat), scale: 1, shift: c * c)), scale: 1, shift: -c)   // [B, d]
            return g.affine(g.sum(h, axes: [1]), scale: 1 / Float(d))
        case .l1:
            return g.affine(g.sum(g.unary(.abs, flat), axes: [1]), scale: 1 / Float(d))
        }
    }

    /// Checks the loss parameters; returns a message for invalid ones.
    public func validationError() -> String? {
        if case .pseudoHuber(let c) = self, !(c > 0 && c.isFinite) { return "pseudoHuber c must be a positive number, got \(c)" }
        if case .elementwisePseudoHuber(let c) = self, !(c > 0 && c.isFinite) { return "elementwisePseudoHuber c must be a positive number, got \(c)" }
        return nil
    }

    enum CodingKeys: String, CodingKey { case kind, c, scaling }
    enum Kind: String, Codable { case mse, pseudoHuber, elementwisePseudoHuber, l1 }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        switch try c.decode(Kind.self, forKey: .kind) {
        case .mse: self = .mse
        case .l1: self = .l1
        case .elementwisePseudoHuber: self = .elementwisePseudoHuber(c: try c.decodeIfPresent(Float.self, forKey: .c) ?? 1e-3)
        case .pseudoHuber:
            if let scaling = try c.decodeIfPresent(HuberScaling.self, forKey: .scaling) {
                if c.contains(.c) {
                    throw DecodingError.dataCorruptedError(forKey: .c, in: c, debugDescription: "give either c or scaling, not both")
                }
                self = .scaledPseudoHuber(scaling: scaling)
            } else {
                self = .pseudoHuber(c: try c.decode(Float.self, forKey: .c))
            }
        }
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        switch self {
        case .mse: try c.encode(Kind.mse, forKey: .kind)
        case .l1: try c.encode(Kind.l1, forKey: .kind)
        case .pseudoHuber(let v): try c.encode(Kind.pseudoHuber, forKey: .kind); try c.encode(v, forKey: .c)
        case .scaledPseudoHuber(let s): try c.encode(Kind.pseudoHuber, forKey: .kind); try c.encode(s, forKey: .scaling)
        case .elementwisePseudoHuber(let v): try c.encode(Kind.elementwisePseudoHuber, forKey: .kind); try c.encode(v, forKey: .c)
        }
    }
}
