public import ReflowAutograd
public import ReflowEngine

/// Settings of ``gradCheck(inputs:parameters:options:_:)``.
public struct GradCheckOptions: Sendable {
    /// Central-difference step (applied in Float to the perturbed element).
    public var eps: Float
    /// Absolute tolerance on |analytic − numeric|.
    public var atol: Float
    /// Relative tolerance, scaled by max(|analytic|, |numeric|).
    public var rtol: Float
    /// At most this many elements are checked per input / parameter (a seeded random subset).
    public var maxChecksPerTensor: Int
    /// Seed of the random projection R and of the element subset.
    public var seed: UInt64
    /// Elements within `kinkMargin` of one of these values (in the checked tensor) are skipped,
    /// e.g. `[0]` for relu/abs inputs.
    public var kinks: [Float]
    public var kinkMargin: Float
    /// Threads of the graphs that evaluate the function.
    public var threads: Int

    public init(eps: Float = 1e-2, atol: Float = 1e-2, rtol: Float = 1e-2, maxChecksPerTensor: Int = 48,
                seed: UInt64 = 0x5EED, kinks: [Float] = [], kinkMargin: Float? = nil, threads: Int = 1) {
        self.eps = eps
        self.atol = atol
        self.rtol = rtol
        self.maxChecksPerTensor = maxChecksPerTensor
        self.seed = seed
        self.kinks = kinks
        self.kinkMargin = kinkMargin ?? 2 * eps
        self.threads = threads
    }
}

/// Outcome of a gradient check; `passed` is what tests assert, `description` says why not.
public struct GradCheckReport: CustomStringConvertible, Sendable {
    public var checked = 0
    public var skipped = 0
    public var maxAbsError: Float = 0
    /// Largest |analytic| seen (to show that the check was not vacuous).
    public var maxAbsGradient: Float = 0
    public var failures: [String] = []
    public var passed: Bool { failures.isEmpty && checked > 0 }

    public var description: String {
        var s = "gradCheck: \(checked) checked, \(skipped) skipped, max |err| \(maxAbsError), max |grad| \(maxAbsGradient)"
        if checked == 0 { s += "\n  nothing was checked" }
        for f in failures.prefix(12) { s += "\n  " + f }
        if failures.count > 12 { s += "\n  … \(failures.count - 12) more" }
        return s
    }
}

/// Compares reverse-mode gradients with central finite differences.
///
/// `build(graph, vars)` must compute a value (any shape) from the input `Var`s (one per entry of
/// `inputs`, created with `graph.input`) and may use `parameters` through `graph.parameter`. The
/// checked scalar is L = Σ f(x) ⊙ R with a fixed random R (so every output element matters);
/// the numeric side evaluates f in Float on fresh no-grad graphs and accumulates the projection
/// in Double. Parameter gradients are zeroed before and restored to zero after the check, and
/// parameter values are restored exactly.
public func gradCheck(inputs: [Tensor], parameters: [Parameter] = [], options o: GradCheckOptions = GradCheckOptions(),
                      _ build: (Graph, [Var]) -> Var) -> GradCheckReport {
    var report = GradCheckReport()
    for p in parameters { p.zeroGrad() }

    // Analytic gradients of L = Σ f ⊙ R.
    let g = Graph(threads: o.threads)
    let vars = inputs.map { g.input($0) }
    let out = build(g, vars)
    var rng = Random(seed: o.seed)
    let r = rng.normal(out.shape)
    let loss = g.sum(g.binary(.mul, out, g.constant(r)))
    g.backward(loss)
    let analyticInputs = vars.map { g.grad($0) }
    let analyticParams = parameters.map { $0.grad }
    g.reset()
    for p in parameters { p.zeroGrad() }

    // L(x) evaluated on a fresh no-grad graph, projection in Double.
    func evaluate(_ xs: [Tensor]) -> Double {
        let h = Graph(threads: o.threads, gradEnabled: false)
        let y = build(h, xs.map { h.input($0) }).value
        precondition(y.shape == r.shape, "gradCheck: output shape changed from \(r.shape) to \(y.shape)")
        var s = 0.0
        for i in 0..<y.count { s += Double(y.data[i]) * Double(r.data[i]) }
        return s
    }

    func indices(_ count: Int) -> [Int] {
        if count <= o.maxChecksPerTensor { return Array(0..<count) }
        var all = Array(0..<count)
        for i in 0..<o.maxChecksPerTensor {  // partial Fisher–Yates
            let j = i + rng.int(below: count - i)
            all.swapAt(i, j)
        }
        return Array(all.prefix(o.maxChecksPerTensor)).sorted()
    }

    func nearKink(_ v: Float) -> Bool { o.kinks.contains { Swift.abs(v - $0) < o.kinkMargin } }

    func compare(_ label: String, _ index: Int, analytic a: Float, numeric n: Double) {
        let nf = Float(n)
        let err = Swift.abs(a - nf)
        report.checked += 1
        report.maxAbsError = max(report.maxAbsError, err)
        report.maxAbsGradient = max(report.maxAbsGradient, Swift.abs(a))
        if !(err <= o.atol + o.rtol * max(Swift.abs(a), Swift.abs(nf))) {
            report.failures.append("\(label)[\(index)]: analytic \(a), numeric \(nf), |diff| \(err)")
        }
    }

    var xs = inputs
    for (k, x) in inputs.enumerated() {
        for i in indices(x.count) {
            let v = x.data[i]
            if nearKink(v) { report.skipped += 1; continue }
            xs[k].data[i] = v + o.eps
            let plus = evaluate(xs)
            xs[k].data[i] = v - o.eps
            let minus = evaluate(xs)
            xs[k].data[i] = v
            let step = Double(v + o.eps) - Double(v - o.eps)
            compare("input \(k)", i, analytic: analyticInputs[k].data[i], numeric: (plus - minus) / step)
        }
    }
    for (k, p) in parameters.enumerated() {
        let original = p.value
        for i in indices(original.count) {
            let v = original.data[i]
            if nearKink(v) { report.skipped += 1; continue }
            p.value.data[i] = v + o.eps
            let plus = evaluate(xs)
            p.value.data[i] = v - o.eps
            let minus = evaluate(xs)
            p.value = original
            let step = Double(v + o.eps) - Double(v - o.eps)
            compare("parameter \(k)", i, analytic: analyticParams[k].data[i], numeric: (plus - minus) / step)
        }
        p.value = original
    }
    return report
}
