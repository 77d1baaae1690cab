public import ReflowEngine

/// A handle to a value recorded in a ``Graph``. Cheap to copy; valid until the graph is reset.
public struct Var {
    public let graph: Graph
    public let id: Int
    /// The forward value.
    public var value: Tensor { graph.value(self) }
    public var shape: [Int] { graph.shape(id) }
}

/// Reverse-mode automatic differentiation over a closed set of primitives (a tape).
///
/// Each operation appends a node holding its forward value and an ``Op`` describing how to
/// propagate gradients. Nodes are recorded in execution order, which is a topological order,
/// so ``backward(_:)`` is one reverse walk in which gradients accumulate (`+=`), as in
/// micrograd. Composite operations (mean, MSE, LayerNorm, …) are built from primitives in
/// `Graph+Composite.swift` and need no backward code of their own.
///
/// **Buffers are reused.** ``reset()`` returns every value and gradient buffer to a pool keyed
/// by element count, and the next step takes them back, so a training loop that records the same
/// graph every step allocates nothing after its first step (``freshAllocations`` stops growing).
///
/// **No-grad mode.** With `isGradEnabled == false`, operations compute values only (sampling).
///
/// **Threads.** Kernels of this graph split work across `threads` (GEMMs by output blocks,
/// elementwise by ranges). Results are deterministic for a given thread count.
public final class Graph {
    /// Worker threads used by this graph's kernels.
    public let threads: Int
    /// When false, nothing is recorded for backward.
    public var isGradEnabled: Bool
    /// Counts dead ReLU pre-activations of ``activation(_:_:name:)`` calls when set.
    public var probe: ActivationProbe?

    var values: [Tensor] = []
    var ops: [Op] = []
    var needsGrad: [Bool] = []
    var grads: [Tensor?] = []
    /// Leaves bound to parameters: node id → parameter (grads are accumulated into `Parameter.grad`).
    var parameterOfNode: [Int: Parameter] = [:]
    var nodeOfParameter: [ObjectIdentifier: Int] = [:]
    /// Nodes whose storage belongs to someone else (constants, parameters) and is not pooled.
    var isExternal: [Bool] = []

    private var pool: [Int: [[Float]]] = [:]
    /// Number of buffers allocated fresh (not taken from the pool) since the graph was created.
    public private(set) var freshAllocations = 0

    /// When true (the default), parameter gradients accumulate into `Parameter.grad`. When
    /// false they stay in this graph (read them with ``parameterGradient(_:)``), so several
    /// graphs can back-propagate through the same parameters concurrently (data parallelism).
    public let accumulatesIntoParameters: Bool

    public init(threads: Int = 1, gradEnabled: Bool = true, accumulatesIntoParameters: Bool = true) {
        precondition(threads >= 1, "Graph: threads must be ≥ 1")
        self.threads = threads
        self.isGradEnabled = gradEnabled
        self.accumulatesIntoParameters = accumulatesIntoParameters
    }

    /// Number of recorded nodes.
    public var nodeCount: Int { values.count }

    /// Forgets all nodes and returns their buffers to the pool. `Var`s become invalid.
    public func reset() {
        for i in values.indices where !isExternal[i] {
            recycle(&values[i].data)
        }
        // (Parameter leaves keep their gradients in `Parameter.grad`, never in `grads`.)
        for i in grads.indices where grads[i] != nil {
            recycle(&grads[i]!.data)
            grads[i] = nil
        }
        values.removeAll(keepingCapacity: true)
        ops.removeAll(keepingCapacity: true)
        needsGrad.removeAll(keepingCapacity: true)
        grads.removeAll(keepingCapacity: true)
        isExternal.removeAll(keepingCapacity: true)
        parameterOfNode.removeAll(keepingCapacity: true)
        nodeOfParameter.removeAll(keepingCapacity: true)
    }

    /// Returns a scratch buffer taken with ``takeBuffer(_:)`` to the pool.
    func pool(_ buffer: [Float]) {
        if buffer.count > 0 { pool[buffer.count, default: []].append(buffer) }
    }

    private func recycle(_ data: inout [Float]) {
        var d = [Float]()
        swap(&d, &data)
        if d.count > 0 { pool[d.count, default: []].append(d) }
    }

    /// A buffer of `count` floats with unspecified contents (from the pool when possible).
    func takeBuffer(_ count: Int) -> [Float] {
        if let b = pool[count]?.popLast() { return b }
        freshAllocations += 1
        return [Float](unsafeUninitializedCapacity: count) { _, n in n = count }
    }

    /// A zero-filled buffer of `count` floats.
    func takeZeroBuffer(_ count: Int) -> [Float] {
        var b = takeBuffer(count)
        b.withUnsafeMutableBufferPointer { $0.update(repeating: 0) }
        return b
    }

    // MARK: leaves

    /// A constant input (no gradient).
    public func constant(_ t: Tensor) -> Var {
        append(t, .leaf, needsGrad: false, external: true)
    }

    /// A constant whose storage comes from the graph's pool (no per-step allocation);
    /// `fill` must write every element.
    public func constant(shape: [Int], fill: (UnsafeMutableBufferPointer<Float>) -> Void) -> Var {
        var buf = takeBuffer(Tensor.count(of: shape))
        buf.withUnsafeMutableBufferPointer { fill($0) }
        return append(Tensor(shape: shape, data: buf), .leaf, needsGrad: false)
    }

    /// Writes into the storage of a node created by ``constant(shape:fill:)`` (before it is used).
    package func mutate(_ v: Var, _ body: (UnsafeMutableBufferPointer<Float>) -> Void) {
        precondition(!isExternal[v.id], "mutate: node \(v.id) does not own its storage")
        values[v.id].data.withUnsafeMutableBufferPointer { body($0) }
    }

    /// A scratch buffer from the pool; give it back with ``releaseScratch(_:)``.
    package func takeScratch(_ count: Int) -> [Float] { takeBuffer(count) }

    /// Returns a scratch buffer to the pool.
    package func releaseScratch(_ buffer: inout [Float]) {
        var b = [Float]()
        swap(&b, &buffer)
        pool(b)
    }

    /// A leaf that receives a gradient (read it with ``grad(_:)`` after ``backward(_:)``).
    public func input(_ t: Tensor, requiresGrad: Bool = true) -> Var {
        append(t, .leaf, needsGrad: requiresGrad && isGradEnabled, external: true)
    }

    /// The leaf for a parameter; its gradient accumulates into `p.grad`. One node per parameter.
    public func parameter(_ p: Parameter) -> Var {
        let key = ObjectIdentifier(p)
        if let id = nodeOfParameter[key] { return Var(graph: self, id: id) }
        let v = append(p.value, .leaf, needsGrad: isGradEnabled && !p.isFrozen, external: true)
        nodeOfParameter[key] = v.id
        if isGradEnabled && !p.isFrozen && accumulatesIntoParameters { parameterOfNode[v.id] = p }
        return v
    }

    // MARK: access

    public func value(_ v: Var) -> Tensor { values[v.id] }
    func shape(_ id: Int) -> [Int] { values[id].shape }

    /// With `accumulatesIntoParameters == false`: the gradient of the last ``backward(_:)`` with
    /// respect to `p`, or nil when `p` was not used or no gradient reached it. The buffer stays
    /// valid until ``reset()``; it is passed to `body` without copying.
    public func withParameterGradient<R>(_ p: Parameter, _ body: (UnsafePointer<Float>?) -> R) -> R {
        guard let id = nodeOfParameter[ObjectIdentifier(p)], let g = grads[id] else { return body(nil) }
        return g.data.withUnsafeBufferPointer { body($0.baseAddress) }
    }

    /// The gradient of the last ``backward(_:)`` with respect to `v` (zeros if it did not flow).
    public func grad(_ v: Var) -> Tensor {
        if let p = parameterOfNode[v.id] { return p.grad }
        return grads[v.id] ?? Tensor.zeros(values[v.id].shape)
    }

    @discardableResult
    func append(_ t: Tensor, _ op: Op, needsGrad: Bool, external: Bool = false) -> Var {
        values.append(t)
        ops.append(op)
        self.needsGrad.append(needsGrad)
        grads.append(nil)
        isExternal.append(external)
        return Var(graph: self, id: values.count - 1)
    }

    /// Records an op whose output has `shape`; `fill` writes every output element.
    func record(_ shape: [Int], _ op: Op, inputs: [Int],
                _ fill: (UnsafeMutablePointer<Float>) -> Void) -> Var {
        let n = Tensor.count(of: shape)
        var buf = takeBuffer(n)
        buf.withUnsafeMutableBufferPointer { fill($0.baseAddress!) }
        let ng = isGradEnabled && inputs.contains { needsGrad[$0] }
        return append(Tensor(shape: shape, data: buf), ng ? op : .leaf, needsGrad: ng)
    }

    /// Runs `body` with read access to a node's value.
    @inline(__always)
    public func read<R>(_ id: Int, _ body: (UnsafePointer<Float>) -> R) -> R {
        // Copy the (reference-counted) tensor out so no access to `values` stays open while
        // `body` appends nodes; the storage itself is not copied.
        let t = values[id]
        return t.data.withUnsafeBufferPointer { body($0.baseAddress!) }
    }

    // MARK: backward

    /// Back-propagates from `root` (a scalar, seeded with 1, or any shape seeded with ones) and
    /// accumulates gradients into every parameter reachable from it.
    public func backward(_ root: Var) {
        precondition(isGradEnabled, "backward: the graph was recorded with gradients disabled")
        guard needsGrad[root.id] else { return }
        // Start from clean node gradients: `grad(_:)` reports this pass only, and a second pass
        // must not propagate the previous pass's intermediate gradients again.
        for i in grads.indices {
            if var old = grads[i] {
                grads[i] = nil
                recycle(&old.data)
            }
        }
        var seed = takeBuffer(values[root.id].count)
        seed.withUnsafeMutableBufferPointer { $0.update(repeating: 1) }
        grads[root.id] = Tensor(shape: values[root.id].shape, data: seed)
        for id in stride(from: root.id, through: 0, by: -1) {
            guard needsGrad[id], let g = grads[id] else { continue }
            if case .leaf = ops[id] { continue }
            g.data.withUnsafeBufferPointer { gp in
                propagate(id, gp.baseAddress!)
            }
        }
        // Parameter gradients were accumulated in place into `Parameter.grad` (see withGrad).
    }

    /// Runs `body(dx, fresh)` on the gradient buffer of node `id`. When `fresh` is true the
    /// buffer holds no gradient yet and arbitrary contents: `body` must write (not add to) every
    /// element. For a parameter leaf the buffer is the parameter's own `grad`, so gradients
    /// accumulate there across backward passes until `zeroGrad()`.
    func withGrad(_ id: Int, _ body: (UnsafeMutablePointer<Float>, Bool) -> Void) {
        guard needsGrad[id] else { return }
        if let p = parameterOfNode[id] {
            let fresh = p.gradIsZero
            p.gradIsZero = false
            p.gradStorage.data.withUnsafeMutableBufferPointer { body($0.baseAddress!, fresh) }
            return
        }
        var g: Tensor
        let fresh: Bool
        if let existing = grads[id] {
            g = existing
            grads[id] = nil   // keep `g` uniquely referenced so the write does not copy
            fresh = false
        } else {
            g = Tensor(shape: values[id].shape, data: takeBuffer(values[id].count))
            fresh = true
        }
        g.data.withUnsafeMutableBufferPointer { body($0.baseAddress!, fresh) }
        grads[id] = g
    }

    /// Like ``withGrad(_:_:)`` for rules that can only add: a fresh buffer is zero-filled first.
    func accumulateGrad(_ id: Int, _ body: (UnsafeMutablePointer<Float>) -> Void) {
        let n = values[id].count
        withGrad(id) { dx, fresh in
            if fresh { dx.update(repeating: 0, count: n) }
            body(dx)
        }
    }
}
