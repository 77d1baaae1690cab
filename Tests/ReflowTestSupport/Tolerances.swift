public import ReflowEngine
public import Testing

/// Normalised mean squared error Σ(a − b)² / Σ b² (0 when both are zero), accumulated in Double.
public func nmse(_ a: Tensor, _ reference: Tensor) -> Double {
    precondition(a.shape == reference.shape, "nmse: \(a.shape) vs \(reference.shape)")
    var num = 0.0, den = 0.0
    for i in 0..<a.count {
        let d = Double(a.data[i]) - Double(reference.data[i])
        num += d * d
        den += Double(reference.data[i]) * Double(reference.data[i])
    }
    if den == 0 { return num == 0 ? 0 : .infinity }
    return num / den
}

/// The elements violating |a − b| ≤ atol + rtol·|b| (NaN never passes; equal infinities do).
public func closeViolations(_ a: Tensor, _ reference: Tensor, atol: Float, rtol: Float) -> [(index: Int, a: Float, b: Float)] {
    var out = [(index: Int, a: Float, b: Float)]()
    for i in 0..<min(a.count, reference.count) {
        let x = a.data[i], y = reference.data[i]
        if x == y { continue }
        if !(Swift.abs(x - y) <= atol + rtol * Swift.abs(y)) { out.append((i, x, y)) }
    }
    return out
}

/// Records a test issue unless `a` and `reference` have the same shape and every element
/// satisfies |a − b| ≤ atol + rtol·|b|.
public func expectClose(_ a: Tensor, _ reference: Tensor, atol: Float = 1e-6, rtol: Float = 1e-5,
                        _ comment: @autoclosure () -> String = "",
                        sourceLocation: SourceLocation = #_sourceLocation) {
    guard a.shape == reference.shape else {
        Issue.record("expectClose: shape \(a.shape) vs \(reference.shape) \(comment())", sourceLocation: sourceLocation)
        return
    }
    let bad = closeViolations(a, reference, atol: atol, rtol: rtol)
    if bad.isEmpty { return }
    let shown = bad.prefix(6).map { "[\($0.index)] \($0.a) vs \($0.b)" }.joined(separator: ", ")
    var maxErr: Float = 0
    for v in bad { maxErr = max(maxErr, Swift.abs(v.a - v.b)) }
    Issue.record("expectClose(atol: \(atol), rtol: \(rtol)) \(comment()): \(bad.count)/\(a.count) elements differ, max |diff| \(maxErr): \(shown)",
                 sourceLocation: sourceLocation)
}

/// Records a test issue unless the tensors are bit-for-bit equal (shape and every element's bits).
public func expectBitwiseEqual(_ a: Tensor, _ b: Tensor, _ comment: @autoclosure () -> String = "",
                               sourceLocation: SourceLocation = #_sourceLocation) {
    guard a.shape == b.shape else {
        Issue.record("expectBitwiseEqual: shape \(a.shape) vs \(b.shape) \(comment())", sourceLocation: sourceLocation)
        return
    }
    if let i = (0..<a.count).first(where: { a.data[$0].bitPattern != b.data[$0].bitPattern }) {
        Issue.record("expectBitwiseEqual \(comment()): element \(i): \(a.data[i]) vs \(b.data[i]) (max |diff| \(a.maxAbsDifference(b)))",
                     sourceLocation: sourceLocation)
    }
}

/// True when both tensors have the same shape and identical element bits.
public func bitwiseEqual(_ a: Tensor, _ b: Tensor) -> Bool {
    a.shape == b.shape && zip(a.data, b.data).allSatisfy { $0.bitPattern == $1.bitPattern }
}

/// Deterministic test data: a seeded N(0, std²) tensor.
public func randn(_ shape: [Int], seed: UInt64, std: Float = 1, mean: Float = 0) -> Tensor {
    var r = Random(seed: seed)
    return r.normal(shape, mean: mean, std: std)
}

/// Deterministic test data: a seeded U[low, high) tensor.
public func randu(_ shape: [Int], seed: UInt64, low: Float = 0, high: Float = 1) -> Tensor {
    var r = Random(seed: seed)
    return r.uniform(shape, low: low, high: high)
}
