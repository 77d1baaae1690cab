public import ReflowEngine
public import ReflowAutograd
public import ReflowNN
import Foundation

// The recurrent cells of the RIM (issue #14; ../shared/design/ALGORITHMS.md §8.4; mridc
// `nn/rim/rnn_cells.py`), on feature maps x: [N, Cin, H, W], h: [N, C, H, W] → h': [N, C, H, W],
// with k×k convolutions (mridc uses 1×1 inside the cells). ∗ is a convolution, ⊙ a product.

/// Which recurrent cell a RIM uses.
public enum RecurrentCellKind: String, Codable, Sendable, CaseIterable {
    /// r = σ(W_r∗x + U_r∗h), z = σ(W_z∗x + U_z∗h), n = tanh(W_n∗x + r ⊙ (U_n∗h)),
    /// h' = (1 − z) ⊙ n + z ⊙ h. Weights orthogonal, biases zero.
    case gru
    /// f = σ(W_f∗x + U_f∗h), c = tanh(W_c∗x + f ⊙ (U_c∗h)), h' = f ⊙ h + (1 − f) ⊙ c.
    /// Weights Xavier-uniform, biases zero.
    case mgu
    /// h' = ReLU(W∗x + b + u ⊙ h), u a per-channel vector. W and u ~ N(0, std = 1/(C·(1 + k²))).
    case indrnn

    /// Convolutions per step (the multiply count is about 3 : 2 : 1).
    public var gates: Int {
        switch self { case .gru: 3; case .mgu: 2; case .indrnn: 1 }
    }

    public func make(input: Int, hidden: Int, kernel: Int = 1, rng: inout Random) -> RecurrentCell {
        RecurrentCell(kind: self, input: input, hidden: hidden, kernel: kernel, rng: &rng)
    }
}

/// One recurrent cell of ``RecurrentCellKind``. Parameter names: `w<gate>`/`u<gate>` convolutions
/// (`wr`, `ur`, `wz`, `uz`, `wn`, `un` for the GRU; `wf`, `uf`, `wc`, `uc` for the MGU; `w` and
/// the vector `u` for the IndRNN).
public final class RecurrentCell: Module {
    public let kind: RecurrentCellKind
    public let hidden: Int
    let w: [Conv2d], u: [Conv2d]
    /// IndRNN's recurrent vector [1, C, 1, 1].
    let recurrent: Parameter?
    let names: [String]

    init(kind: RecurrentCellKind, input: Int, hidden: Int, kernel: Int, rng: inout Random) {
        self.kind = kind
        self.hidden = hidden
        let pad = kernel / 2
        names = switch kind { case .gru: ["r", "z", "n"]; case .mgu: ["f", "c"]; case .indrnn: [""] }
        w = names.map { _ in Conv2d(input, hidden, kernel: kernel, padding: pad, rng: &rng) }
        u = kind == .indrnn ? [] : names.map { _ in Conv2d(hidden, hidden, kernel: kernel, padding: pad, bias: false, rng: &rng) }
        recurrent = kind == .indrnn ? Parameter(Tensor(shape: [1, hidden, 1, 1], data: [Float](repeating: 0, count: hidden))) : nil
        // The initialisations of mridc's cells.
        switch kind {
        case .gru:
            for c in w + u { c.weight.value = RecurrentCell.orthogonal(c.weight.value.shape, rng: &rng) }
        case .mgu:
            for c in w + u {
                let s = c.weight.value.shape, fanIn = s[1] * s[2] * s[3], fanOut = s[0] * s[2] * s[3]
                let bound = Float((6.0 / Double(fanIn + fanOut)).squareRoot())
                c.weight.value = rng.uniform(s, low: -bound, high: bound)
            }
        case .indrnn:
            let std = Float(1 / (Double(hidden) * Double(1 + kernel * kernel)))
            w[0].weight.value = rng.normal(w[0].weight.value.shape, std: std)
            recurrent!.value = rng.normal([1, hidden, 1, 1], std: std)
        }
        for c in w { c.bias?.value = Tensor(shape: [hidden], data: [Float](repeating: 0, count: hidden)) }
    }

    /// A matrix with orthonormal rows or columns (whichever are fewer), from a QR of a Gaussian
    /// matrix (torch.nn.init.orthogonal_), shaped [out, in, k, k].
    static func orthogonal(_ shape: [Int], rng: inout Random) -> Tensor {
        let rows = shape[0], cols = shape[1...].reduce(1, *)
        let tall = rows > cols
        let (n, m) = tall ? (cols, rows) : (rows, cols)       // n vectors of length m, n ≤ m
        var v = (0..<(n * m)).map { _ in rng.normal() }
        for i in 0..<n {                                       // modified Gram–Schmidt
            for j in 0..<i {
                var d = 0.0
                for k in 0..<m { d += v[i * m + k] * v[j * m + k] }
                for k in 0..<m { v[i * m + k] -= d * v[j * m + k] }
            }
            var norm = 0.0
            for k in 0..<m { norm += v[i * m + k] * v[i * m + k] }
            norm = max(norm.squareRoot(), 1e-12)
            for k in 0..<m { v[i * m + k] /= norm }
        }
        var out = [Float](repeating: 0, count: rows * cols)
        for r in 0..<rows { for c in 0..<cols { out[r * cols + c] = Float(tall ? v[c * m + r] : v[r * m + c]) } }
        return Tensor(shape: shape, data: out)
    }

    public func namedParameters() -> [(name: String, parameter: Parameter)] {
        var p = [(name: String, parameter: Parameter)]()
        for (i, name) in names.enumerated() {
            p += prefixed("w" + name, w[i].namedParameters())
            if !u.isEmpty { p += prefixed("u" + name, u[i].namedParameters()) }
        }
        if let recurrent { p.append(("u", recurrent)) }
        return p
    }

    /// x: [N, Cin, H, W], h: [N, C, H, W] → h'.
    public func callAsFunction(_ x: Var, _ h: Var) -> Var {
        let g = x.graph
        switch kind {
        case .gru:
            let r = g.sigmoid(g.binary(.add, w[0](x), u[0](h)))
            let z = g.sigmoid(g.binary(.add, w[1](x), u[1](h)))
            let n = g.tanh(g.binary(.add, w[2](x), g.binary(.mul, r, u[2](h))))
            return g.binary(.add, g.binary(.mul, g.affine(z, scale: -1, shift: 1), n), g.binary(.mul, z, h))
        case .mgu:
            let f = g.sigmoid(g.binary(.add, w[0](x), u[0](h)))
            let c = g.tanh(g.binary(.add, w[1](x), g.binary(.mul, f, u[1](h))))
            return g.binary(.add, g.binary(.mul, f, h), g.binary(.mul, g.affine(f, scale: -1, shift: 1), c))
        case .indrnn:
            return g.relu(g.binary(.add, w[0](x), g.binary(.mul, g.parameter(recurrent!), h)))
        }
    }
}
