public import ReflowEngine
public import ReflowAutograd

/// Optimizer algorithms and their hyperparameters (wire JSON is the Codable form).
///
/// Updates follow PyTorch's `torch.optim` formulas exactly (SGD with dampening 0, Adam with
/// bias correction and ε outside the square root, AdamW with decoupled decay applied first),
/// so a reflowd run and a PyTorch run from the same weights take the same steps.
public enum OptimizerKind: Codable, Sendable, Equatable {
    case sgd(momentum: Float = 0, nesterov: Bool = false, weightDecay: Float = 0)
    case adam(beta1: Float = 0.9, beta2: Float = 0.999, eps: Float = 1e-8, weightDecay: Float = 0)
    case adamW(beta1: Float = 0.9, beta2: Float = 0.999, eps: Float = 1e-8, weightDecay: Float = 0.01)

    /// Slot names of per-parameter state tensors (PyTorch's names).
    var slots: [String] {
        switch self {
        case .sgd(let m, _, _): return m != 0 ? ["momentum_buffer"] : []
        case .adam, .adamW: return ["exp_avg", "exp_avg_sq"]
        }
    }
}

/// Why optimizer state cannot be restored.
public enum OptimizerStateError: Error, CustomStringConvertible {
    case missing(String), shapeMismatch(String, expected: [Int], found: [Int]), badStep(Int)
    public var description: String {
        switch self {
        case .missing(let n): return "optimizer state: missing tensor '\(n)'"
        case .shapeMismatch(let n, let e, let f): return "optimizer state: '\(n)' has shape \(f), expected \(e)"
        case .badStep(let s): return "optimizer state: invalid step \(s)"
        }
    }
}

/// First-order optimizer over a module's named parameters.
public final class Optimizer {
    public let kind: OptimizerKind
    public private(set) var named: [(name: String, parameter: Parameter)]
    /// Per-parameter state tensors, in `named` order, one array per slot.
    var state: [[Tensor]]
    /// Number of completed steps.
    public private(set) var step: Int = 0

    public init(_ kind: OptimizerKind, parameters: [(name: String, parameter: Parameter)]) {
        self.kind = kind
        self.named = parameters
        state = parameters.map { p in kind.slots.map { _ in Tensor.zeros(p.parameter.shape) } }
    }

    public convenience init(_ kind: OptimizerKind, module: some Module) {
        self.init(kind, parameters: module.namedParameters())
    }

    public func zeroGrad() { for (_, p) in named { p.zeroGrad() } }

    /// One update with learning rate `lr` from the accumulated gradients.
    public func step(learningRate lr: Float) {
        step += 1
        for i in named.indices {
            let p = named[i].parameter
            switch kind {
            case .sgd(let momentum, let nesterov, let wd):
                sgdUpdate(p, &state[i], lr: lr, momentum: momentum, nesterov: nesterov, wd: wd)
            case .adam(let b1, let b2, let eps, let wd):
                adamUpdate(p, &state[i], lr: lr, b1: b1, b2: b2, eps: eps, l2: wd, decoupled: 0)
            case .adamW(let b1, let b2, let eps, let wd):
                adamUpdate(p, &state[i], lr: lr, b1: b1, b2: b2, eps: eps, l2: 0, decoupled: wd)
            }
        }
    }

    private func sgdUpdate(_ p: Parameter, _ st: inout [Tensor], lr: Float, momentum: Float, nesterov: Bool, wd: Float) {
        let n = p.value.count
        p.grad.data.withUnsafeBufferPointer { g in
            p.value.data.withUnsafeMutableBufferPointer { w in
                if momentum == 0 {
                    for j in 0..<n { w[j] -= lr * (g[j] + wd * w[j]) }
                    return
                }
                st[0].data.withUnsafeMutableBufferPointer { buf in
                    let first = step == 1
                    for j in 0..<n {
                        let d = g[j] + wd * w[j]
                        buf[j] = first ? d : momentum * buf[j] + d
                        w[j] -= lr * (nesterov ? d + momentum * buf[j] : buf[j])
                    }
                }
            }
        }
    }

    private func adamUpdate(_ p: Parameter, _ st: inout [Tensor], lr: Float, b1: Float, b2: Float, eps: Float,
                            l2: Float, decoupled: Float) {
        let n = p.value.count
        let t = Double(step)
        let bc1 = 1 - Foundation_pow(Double(b1), t), bc2 = 1 - Foundation_pow(Double(b2), t)
        let stepSize = Float(Double(lr) / bc1)
        let bc2Sqrt = Float(bc2.squareRoot())
        var m = st[0], v = st[1]
        st = []  // keep m and v uniquely referenced while we write them
        p.grad.data.withUnsafeBufferPointer { g in
            p.value.data.withUnsafeMutableBufferPointer { w in
                m.data.withUnsafeMutableBufferPointer { m in
                    v.data.withUnsafeMutableBufferPointer { v in
                        let decay = 1 - lr * decoupled
                        for j in 0..<n {
                            var wj = w[j]
                            if decoupled != 0 { wj *= decay }
                            let gj = l2 != 0 ? g[j] + l2 * wj : g[j]
                            let mj = m[j] + (1 - b1) * (gj - m[j])
                            let vj = b2 * v[j] + (1 - b2) * gj * gj
                            m[j] = mj
                            v[j] = vj
                            w[j] = wj - stepSize * (mj / (vj.squareRoot() / bc2Sqrt + eps))
                        }
                    }
                }
            }
        }
        st = [m, v]
    }

    /// Optimizer state as named tensors (`<param>.<slot>`) plus the step count, for checkpoints.
    public func stateTensors() -> [(name: String, tensor: Tensor)] {
        var out = [(name: String, tensor: Tensor)]()
        for (i, (name, _)) in named.enumerated() {
            for (s, slot) in kind.slots.enumerated() { out.append((name + "." + slot, state[i][s])) }
        }
        return out
    }

    /// Restores state written by ``stateTensors()``; nothing changes unless all of it fits.
    public func load(stateTensors: [String: Tensor], step: Int) throws {
        guard step >= 0 else { throw OptimizerStateError.badStep(step) }
        var newState = state
        for (i, (name, p)) in named.enumerated() {
            for (s, slot) in kind.slots.enumerated() {
                let key = name + "." + slot
                guard let t = stateTensors[key] else { throw OptimizerStateError.missing(key) }
                guard t.shape == p.shape else { throw OptimizerStateError.shapeMismatch(key, expected: p.shape, found: t.shape) }
                newState[i][s] = t
            }
        }
        state = newState
        self.step = step
    }
}

/// Scales all gradients so that their global L2 norm is at most `maxNorm` (PyTorch
/// `clip_grad_norm_`: factor maxNorm / (norm + 1e-6) when norm exceeds it). Returns the norm
/// before clipping.
@discardableResult
public func clipGradNorm(_ parameters: [Parameter], maxNorm: Float) -> Float {
    var total = 0.0
    for p in parameters { for g in p.grad.data { total += Double(g) * Double(g) } }
    let norm = Float(total.squareRoot())
    let factor = maxNorm / (norm + 1e-6)
    if factor < 1 {
        for p in parameters {
            p.grad.data.withUnsafeMutableBufferPointer { g in for j in g.indices { g[j] *= factor } }
        }
    }
    return norm
}
