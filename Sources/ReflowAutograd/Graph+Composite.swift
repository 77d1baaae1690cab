import ReflowEngine

// Composite operations: built only from the primitives in Ops.swift, so their gradients come
// for free (and are checked by finite differences in the tests like everything else).

extension Graph {
    public func relu(_ x: Var) -> Var { unary(.relu, x) }
    public func silu(_ x: Var) -> Var { unary(.silu, x) }
    public func tanh(_ x: Var) -> Var { unary(.tanh, x) }
    public func sigmoid(_ x: Var) -> Var { unary(.sigmoid, x) }
    public func gelu(_ x: Var) -> Var { unary(.gelu, x) }
    public func exp(_ x: Var) -> Var { unary(.exp, x) }
    public func log(_ x: Var) -> Var { unary(.log, x) }
    public func sqrt(_ x: Var) -> Var { unary(.sqrt, x) }
    public func square(_ x: Var) -> Var { unary(.square, x) }

    /// Mean over `axes` (everything when nil).
    public func mean(_ x: Var, axes: [Int]? = nil, keepDims: Bool = false) -> Var {
        let shape = values[x.id].shape
        let ax = (axes ?? Array(0..<shape.count)).map { $0 < 0 ? $0 + shape.count : $0 }
        let n = ax.reduce(1) { $0 * shape[$1] }
        return affine(sum(x, axes: axes, keepDims: keepDims), scale: 1 / Float(max(n, 1)))
    }

    /// Variance over `axes` (biased, as LayerNorm/GroupNorm use), dims kept.
    public func variance(_ x: Var, axes: [Int]) -> Var {
        let mu = mean(x, axes: axes, keepDims: true)
        return mean(square(binary(.sub, x, mu)), axes: axes, keepDims: true)
    }

    /// (x − mean) / sqrt(var + eps) over `axes`, dims kept.
    public func normalize(_ x: Var, axes: [Int], eps: Float) -> Var {
        let mu = mean(x, axes: axes, keepDims: true)
        let centered = binary(.sub, x, mu)
        let v = mean(square(centered), axes: axes, keepDims: true)
        let inv = unary(.sqrt, affine(v, scale: 1, shift: eps))
        return binary(.div, centered, inv)
    }

    /// Log-softmax along the last axis (as log of the softmax primitive).
    public func logSoftmax(_ x: Var) -> Var { log(softmax(x)) }

    /// 2×2 average pooling with stride 2 of x [N, C, H, W] (H, W even) → [N, C, H/2, W/2]
    /// (LeNet-5's subsampling): a reshape to [N, C, H/2, 2, W/2, 2] summed over the 2s.
    public func avgPool2x2(_ x: Var) -> Var {
        let s = x.shape
        precondition(s.count == 4 && s[2] % 2 == 0 && s[3] % 2 == 0, "avgPool2x2: NCHW with even H and W, got \(s)")
        let r = reshape(x, [s[0], s[1], s[2] / 2, 2, s[3] / 2, 2])
        return affine(sum(r, axes: [3, 5]), scale: 0.25)
    }
}

// MARK: - operator sugar

extension Var {
    public static func + (a: Var, b: Var) -> Var { a.graph.binary(.add, a, b) }
    public static func - (a: Var, b: Var) -> Var { a.graph.binary(.sub, a, b) }
    public static func * (a: Var, b: Var) -> Var { a.graph.binary(.mul, a, b) }
    public static func / (a: Var, b: Var) -> Var { a.graph.binary(.div, a, b) }
    public static func * (a: Var, s: Float) -> Var { a.graph.affine(a, scale: s) }
    public static func * (s: Float, a: Var) -> Var { a.graph.affine(a, scale: s) }
    public static func + (a: Var, s: Float) -> Var { a.graph.affine(a, scale: 1, shift: s) }
    public static func - (a: Var, s: Float) -> Var { a.graph.affine(a, scale: 1, shift: -s) }
    public static prefix func - (a: Var) -> Var { a.graph.affine(a, scale: -1) }

    /// Scalar value of a one-element variable.
    public var scalar: Float {
        let v = value
        precondition(v.count == 1, "scalar: value has shape \(v.shape)")
        return v.data[0]
    }
}
