public import ReflowAutograd

/// Regression losses for velocity matching (wire JSON: `{"kind": "mse"}` / `{"kind": "pseudoHuber", "c": 0.03}`).
public enum Loss: Codable, Sendable, Equatable {
    /// Mean over batch and features of (pred − target)².
    case mse
    /// Pseudo-Huber (Lee et al. 2024, "Improving the Training of Rectified Flows", rfpp):
    /// per sample √(‖pred − target‖² + c²) − c over all non-batch dims, averaged over the batch.
    case pseudoHuber(c: Float)

    /// pred, target: [B, …] → scalar
    public func callAsFunction(_ pred: Var, _ target: Var) -> Var {
        let g = pred.graph
        let d = g.binary(.sub, pred, target)
        switch self {
        case .mse:
            return g.mean(g.square(d))
        case .pseudoHuber(let c):
            let s = d.shape
            let flat = g.reshape(d, [s[0], s.count > 1 ? s[1...].reduce(1, *) : 1])
            let sq = g.sum(g.square(flat), axes: [1])  // [B]
            return g.mean(g.affine(g.sqrt(g.affine(sq, scale: 1, shift: c * c)), scale: 1, shift: -c))
        }
    }

    /// Checks the loss parameters; returns a message for invalid ones.
    public func validationError() -> String? {
        if case .pseudoHuber(let c) = self, !(c > 0 && c.isFinite) { return "pseudoHuber c must be a positive number, got \(c)" }
        return nil
    }

    enum CodingKeys: String, CodingKey { case kind, c }
    enum Kind: String, Codable { case mse, pseudoHuber }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        switch try c.decode(Kind.self, forKey: .kind) {
        case .mse: self = .mse
        // rfpp's default c = 0.00054·√d for d-dimensional data; callers should set it per data size.
        case .pseudoHuber: self = .pseudoHuber(c: try c.decode(Float.self, forKey: .c))
        }
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        switch self {
        case .mse: try c.encode(Kind.mse, forKey: .kind)
        case .pseudoHuber(let v): try c.encode(Kind.pseudoHuber, forKey: .kind); try c.encode(v, forKey: .c)
        }
    }
}
