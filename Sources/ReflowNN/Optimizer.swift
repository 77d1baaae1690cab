public import ReflowEngine
public import ReflowAutograd
import Foundation

/// Optimizer algorithms and their hyperparameters. Wire JSON: `{"kind": "adam", "beta1": 0.9}`;
/// absent fields take the defaults below (PyTorch's).
///
/// Updates follow PyTorch's `torch.optim` formulas exactly (SGD with dampening 0, Adam with
/// bias correction and ε outside the square root, AdamW with decoupled decay applied first),
/// so a reflowd run and a PyTorch run from the same weights take the same steps.
public enum OptimizerKind: Codable, Sendable, Equatable {
    case sgd(momentum: Float = 0, nesterov: Bool = false, weightDecay: Float = 0)
    case adam(beta1: Float = 0.9, beta2: Float = 0.999, eps: Float = 1e-8, weightDecay: Float = 0)
    case adamW(beta1: Float = 0.9, beta2: Float = 0.999, eps: Float = 1e-8, weightDecay: Float = 0.01)

    /// The first invalid hyperparameter as (JSON pointer, message), or nil.
    public func validationError() -> (pointer: String, message: String)? {
        func unit(_ v: Float) -> Bool { v >= 0 && v < 1 }
        func nonNegative(_ v: Float) -> Bool { v >= 0 && v.isFinite }
        switch self {
        case .sgd(let m, _, let wd):
            if !unit(m) { return ("/momentum", "must be in [0, 1), got \(m)") }
            if !nonNegative(wd) { return ("/weightDecay", "must be a non-negative number") }
        case .adam(let b1, let b2, let eps, let wd), .adamW(let b1, let b2, let eps, let wd):
            if !unit(b1) { return ("/beta1", "must be in [0, 1), got \(b1)") }
            if !unit(b2) { return ("/beta2", "must be in [0, 1), got \(b2)") }
            if !(eps > 0 && eps.isFinite) { return ("/eps", "must be a positive number, got \(eps)") }
            if !nonNegative(wd) { return ("/weightDecay", "must be a non-negative number") }
        }
        return nil
    }

    enum CodingKeys: String, CodingKey { case kind, momentum, nesterov, weightDecay, beta1, beta2, eps }
    enum Kind: String, Codable { case sgd, adam, adamW }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        func f(_ k: CodingKeys, _ d: Float) throws -> Float { try c.decodeIfPresent(Float.self, forKey: k) ?? d }
        switch try c.decode(Kind.self, forKey: .kind) {
        case .sgd:
            self = .sgd(momentum: try f(.momentum, 0), nesterov: try c.decodeIfPresent(Bool.self, forKey: .nesterov) ?? false,
                        weightDecay: try f(.weightDecay, 0))
        case .adam:
            self = .adam(beta1: try f(.beta1, 0.9), beta2: try f(.beta2, 0.999), eps: try f(.eps, 1e-8), weightDecay: try f(.weightDecay, 0))
        case .adamW:
            self = .adamW(beta1: try f(.beta1, 0.9), beta2: try f(.beta2, 0.999), eps: try f(.eps, 1e-8), weightDecay: try f(.weightDecay, 0.01))
        }
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        switch self {
        case .sgd(let m, let n, let wd):
            try c.encode(Kind.sgd, forKey: .kind); try c.encode(m, forKey: .momentum); try c.encode(n, forKey: .nesterov)
            try c.encode(wd, forKey: .weightDecay)
        case .adam(let b1, let b2, let eps, let wd), .adamW(let b1, let b2, let eps, let wd):
            if case .adam = self { try c.encode(Kind.adam, forKey: .kind) } else { try c.encode(Kind.adamW, forKey: .kind) }
            try c.encode(b1, forKey: .beta1); try c.encode(b2, forKey: .beta2); try c.encode(eps, forKey: .eps)
            try c.encode(wd, forKey: .weightDecay)
        }
    }

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

/// The state slots of one parameter. A class, so that updates of different parameters can run
/// on different threads without touching a shared array.
final class SlotState {
    var tensors: [Tensor]
    init(_ tensors: [Tensor]) { self.tensors = tensors }
}

/// First-order optimizer over a module's named parameters.
///
/// `step(learningRate:)` updates every parameter. For data-parallel training the same update can
/// be split: ``beginStep()`` once, then ``update(parameterAt:learningRate:gradScale:)`` for each
/// parameter, in any order and concurrently for different parameters (each touches only its own
/// weights, gradient and state). ``parallelBins(threads:)`` balances parameters over workers.
public final class Optimizer {
    public let kind: OptimizerKind
    public private(set) var named: [(name: String, parameter: Parameter)]
    /// Per-parameter state tensors, in `named` order.
    let state: [SlotState]
    /// Number of completed (begun) steps.
    public private(set) var step: Int = 0
    /// Pruning masks in `named` order (nil: dense); see ``setMasks(_:)``.
    public private(set) var masks: [Tensor?]

    public init(_ kind: OptimizerKind, parameters: [(name: String, parameter: Parameter)]) {
        self.kind = kind
        self.named = parameters
        state = parameters.map { p in SlotState(kind.slots.map { _ in Tensor.zeros(p.parameter.shape) }) }
        masks = Array(repeating: nil, count: parameters.count)
    }

    /// Holds pruned weights at exactly zero from now on: the masked entries of each named
    /// parameter and of its optimizer state (Adam's moments, the momentum buffer) are zeroed
    /// now and after every update, so neither weight decay nor stale moments revive them.
    /// Replaces earlier masks; parameters not named become dense. Throws when a mask names no
    /// parameter or has another shape (nothing changes then).
    public func setMasks(_ m: PruneMasks) throws {
        var out = [Tensor?](repeating: nil, count: named.count)
        let index = Dictionary(uniqueKeysWithValues: named.enumerated().map { ($1.name, $0) })
        for (name, mask) in m.masks {
            guard let i = index[name] else { throw StateDictError.unexpected("mask " + name) }
            guard mask.shape == named[i].parameter.shape else {
                throw StateDictError.shapeMismatch(name: "mask " + name, expected: named[i].parameter.shape, found: mask.shape)
            }
            out[i] = mask
        }
        masks = out
        for i in named.indices { applyMask(at: i) }
    }

    /// Zeroes the masked entries of parameter `i` and of its state.
    private func applyMask(at i: Int) {
        guard let mask = masks[i] else { return }
        let p = named[i].parameter
        mask.data.withUnsafeBufferPointer { m in
            p.value.data.withUnsafeMutableBufferPointer { w in for j in w.indices where m[j] == 0 { w[j] = 0 } }
            let st = state[i]
            for s in st.tensors.indices {
                st.tensors[s].data.withUnsafeMutableBufferPointer { v in for j in v.indices where m[j] == 0 { v[j] = 0 } }
            }
        }
    }

    public convenience init(_ kind: OptimizerKind, module: some Module) {
        self.init(kind, parameters: module.namedParameters())
    }

    public func zeroGrad() { for (_, p) in named { p.zeroGrad() } }

    /// One update with learning rate `lr` from the accumulated gradients.
    public func step(learningRate lr: Float) {
        beginStep()
        for i in named.indices { update(parameterAt: i, learningRate: lr) }
    }

    /// Advances the step counter (bias corrections use it); call once before the updates.
    public func beginStep() { step += 1 }

    /// Updates parameter `i` from `gradScale · grad` (the scale carries gradient clipping).
    public func update(parameterAt i: Int, learningRate lr: Float, gradScale: Float = 1) {
        let p = named[i].parameter
        let st = state[i]
        switch kind {
        case .sgd(let momentum, let nesterov, let wd):
            sgdUpdate(p, &st.tensors, lr: lr, momentum: momentum, nesterov: nesterov, wd: wd, scale: gradScale)
        case .adam(let b1, let b2, let eps, let wd):
            adamUpdate(p, &st.tensors, lr: lr, b1: b1, b2: b2, eps: eps, l2: wd, decoupled: 0, scale: gradScale)
        case .adamW(let b1, let b2, let eps, let wd):
            adamUpdate(p, &st.tensors, lr: lr, b1: b1, b2: b2, eps: eps, l2: 0, decoupled: wd, scale: gradScale)
        }
        applyMask(at: i)
    }

    /// Parameter indices split into `threads` bins of about equal element count (largest first,
    /// each into the lightest bin). Deterministic.
    public func parallelBins(threads: Int) -> [[Int]] {
        var bins = [[Int]](repeating: [], count: max(1, threads))
        var load = [Int](repeating: 0, count: bins.count)
        let order = named.indices.sorted { (named[$0].parameter.value.count, $1) > (named[$1].parameter.value.count, $0) }
        for i in order {
            let b = load.indices.min { (load[$0], $0) < (load[$1], $1) }!
            bins[b].append(i)
            load[b] += named[i].parameter.value.count
        }
        return bins
    }

    private func sgdUpdate(_ p: Parameter, _ st: inout [Tensor], lr: Float, momentum: Float, nesterov: Bool, wd: Float,
                           scale: Float) {
        let n = p.value.count
        p.grad.data.withUnsafeBufferPointer { g in
            p.value.data.withUnsafeMutableBufferPointer { w in
                if momentum == 0 {
                    for j in 0..<n { w[j] -= lr * (scale * g[j] + wd * w[j]) }
                    return
                }
                st[0].data.withUnsafeMutableBufferPointer { buf in
                    let first = step == 1
                    for j in 0..<n {
                        let d = scale * g[j] + wd * w[j]
                        buf[j] = first ? d : momentum * buf[j] + d
                        w[j] -= lr * (nesterov ? d + momentum * buf[j] : buf[j])
                    }
                }
            }
        }
    }

    private func adamUpdate(_ p: Parameter, _ st: inout [Tensor], lr: Float, b1: Float, b2: Float, eps: Float,
                            l2: Float, decoupled: Float, scale: Float) {
        let n = p.value.count
        let t = Double(step)
        let bc1 = 1 - Foundation.pow(Double(b1), t), bc2 = 1 - Foundation.pow(Double(b2), t)
        let stepSize = Float(Double(lr) / bc1)
        let bc2Sqrt = Float(bc2.squareRoot())
        var m = st[0], v = st[1]
        st = []  // keep m and v uniquely referenced while we write them
        p.grad.data.withUnsafeBufferPointer { g in
            p.value.data.withUnsafeMutableBufferPointer { w in
                m.data.withUnsafeMutableBufferPointer { m in
                    v.data.withUnsafeMutableBufferPointer { v in
                        adamKernel(w.baseAddress!, g.baseAddress!, m.baseAddress!, v.baseAddress!, n,
                                   lr: lr, b1: b1, b2: b2, eps: eps, l2: l2, decoupled: decoupled,
                                   stepSize: stepSize, bc2Sqrt: bc2Sqrt, scale: scale)
                    }
                }
            }
        }
        st = [m, v]
    }

    /// The Adam/AdamW update of `n` weights, 8 lanes at a time (same arithmetic as the scalar
    /// tail, so results do not depend on alignment).
    private func adamKernel(_ w: UnsafeMutablePointer<Float>, _ g: UnsafePointer<Float>,
                            _ m: UnsafeMutablePointer<Float>, _ v: UnsafeMutablePointer<Float>, _ n: Int,
                            lr: Float, b1: Float, b2: Float, eps: Float, l2: Float, decoupled: Float,
                            stepSize: Float, bc2Sqrt: Float, scale: Float) {
        typealias F8 = SIMD8<Float>
        let decay = 1 - lr * decoupled
        @inline(__always) func lane(_ wj: F8, _ gj0: F8, _ mj0: F8, _ vj0: F8) -> (F8, F8, F8) {
            var wj = wj
            if decoupled != 0 { wj *= decay }
            let gs = scale == 1 ? gj0 : gj0 * scale
            let gj = l2 != 0 ? gs + l2 * wj : gs
            let mj = mj0 + (1 - b1) * (gj - mj0)
            let vj = b2 * vj0 + (1 - b2) * gj * gj
            let wNew = wj - stepSize * (mj / (VectorMath.sqrt(vj) / bc2Sqrt + eps))
            return (wNew, mj, vj)
        }
        let rw = UnsafeMutableRawPointer(w), rg = UnsafeRawPointer(g)
        let rm = UnsafeMutableRawPointer(m), rv = UnsafeMutableRawPointer(v)
        var j = 0
        while j + 8 <= n {
            let o = j * 4
            let (wn, mn, vn) = lane(rw.loadUnaligned(fromByteOffset: o, as: F8.self), rg.loadUnaligned(fromByteOffset: o, as: F8.self),
                                    rm.loadUnaligned(fromByteOffset: o, as: F8.self), rv.loadUnaligned(fromByteOffset: o, as: F8.self))
            rw.storeBytes(of: wn, toByteOffset: o, as: F8.self)
            rm.storeBytes(of: mn, toByteOffset: o, as: F8.self)
            rv.storeBytes(of: vn, toByteOffset: o, as: F8.self)
            j += 8
        }
        while j < n {
            let (wn, mn, vn) = lane(F8(repeating: w[j]), F8(repeating: g[j]), F8(repeating: m[j]), F8(repeating: v[j]))
            w[j] = wn[0]; m[j] = mn[0]; v[j] = vn[0]
            j += 1
        }
    }

    /// Optimizer state as named tensors (`<param>.<slot>`) plus the step count, for checkpoints.
    public func stateTensors() -> [(name: String, tensor: Tensor)] {
        var out = [(name: String, tensor: Tensor)]()
        for (i, (name, _)) in named.enumerated() {
            for (s, slot) in kind.slots.enumerated() { out.append((name + "." + slot, state[i].tensors[s])) }
        }
        return out
    }

    /// Restores state written by ``stateTensors()``; nothing changes unless all of it fits.
    public func load(stateTensors: [String: Tensor], step: Int) throws {
        guard step >= 0 && step <= 1 << 53 else { throw OptimizerStateError.badStep(step) }
        var newState = state.map(\.tensors)
        for (i, (name, p)) in named.enumerated() {
            for (s, slot) in kind.slots.enumerated() {
                let key = name + "." + slot
                guard let t = stateTensors[key] else { throw OptimizerStateError.missing(key) }
                guard t.shape == p.shape else { throw OptimizerStateError.shapeMismatch(key, expected: p.shape, found: t.shape) }
                newState[i][s] = t
            }
        }
        for (i, t) in newState.enumerated() { state[i].tensors = t }
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
