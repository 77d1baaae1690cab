import ReflowEngine
public import ReflowNN
public import ReflowFlow
import ReflowCodec
import Foundation
import Synchronization

/// The `lossCurve` of an evaluate job: the model's flow-matching loss on held-out pairs, per
/// bin of t. Lee et al. 2024 (§4.1, Fig. 3) argue that for a 2-rectified flow the loss is
/// U-shaped, high at both ends of t, unlike a 1-RF's, which is why they sample t U-shaped.
///
/// Held-out pairs (x0, x1) are either fresh pairs of a `teacher` (noise drawn from `seed`
/// through the teacher's ODE, as a reflow makes them; for a reflowed or distilled model) or,
/// without a teacher, the independent coupling of the model's noise and the evaluation's
/// target data (for a 1-RF; images: the held-out split). At the centre t_b of each of `bins`
/// bins every pair gives the loss mean_j (v(x_t, t_b | label) − (x1 − x0))_j², x_t = t_b·x1 +
/// (1 − t_b)·x0 (t = 0 noise, t = 1 data); the curve reports each bin's mean and standard error.
public struct LossCurveSpec: Codable, Sendable, Equatable, Validatable {
    /// The teacher whose ODE makes held-out pairs; null: the independent coupling.
    @Explicit public var teacher: ArtifactRef? = nil
    /// The teacher's solver.
    public var solver: ODEMethod = .euler(steps: 50)
    /// The teacher's guidance scale (class-conditional teachers; null: none).
    @Explicit public var guidance: Float? = nil
    /// Pairs per bin (the same pairs in every bin).
    public var n = 1000
    public var bins = 20
    /// Seed of the noise (and of the teacher's labels or the data draw).
    public var seed: UInt64 = 77

    public init() {}

    enum CodingKeys: String, CodingKey { case teacher, solver, guidance, n, bins, seed }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        let d = LossCurveSpec()
        _teacher = Explicit(wrappedValue: try c.decodeIfPresent(ArtifactRef.self, forKey: .teacher))
        solver = try c.decodeIfPresent(ODEMethod.self, forKey: .solver) ?? d.solver
        _guidance = Explicit(wrappedValue: try c.decodeIfPresent(Float.self, forKey: .guidance))
        n = try c.decodeIfPresent(Int.self, forKey: .n) ?? d.n
        bins = try c.decodeIfPresent(Int.self, forKey: .bins) ?? d.bins
        seed = try c.decodeIfPresent(UInt64.self, forKey: .seed) ?? d.seed
    }

    public func validationError() -> FieldError? {
        Validation.first(
            { Validation.member("/teacher", teacher) },
            { solver.validationPointer().map { ("/solver" + $0.pointer, $0.message) } },
            { guidance.flatMap { $0.isFinite && abs($0) <= Conditioning.maxGuidance ? nil : ("/guidance", "must be a number in [-100, 100], got \($0)") } },
            { Validation.range("/n", n, 2, 100_000) },
            { Validation.range("/bins", bins, 1, 1000) })
    }

    /// Checks the teacher against the model (same point size; guidance only for a conditional teacher).
    func check(model m: ModelArtifact, resolver: any ArtifactResolver) throws(SpecError) {
        if m.training.interpolant != .rectifiedFlow {
            throw SpecError(pointer: "/input/lossCurve", message: "measures a rectified flow's velocity loss; this model is a VP diffusion model")
        }
        guard let ref = teacher else {
            if guidance != nil { throw SpecError(pointer: "/input/lossCurve/guidance", message: "applies to a teacher's pairs; give a teacher") }
            return
        }
        let t = try StudentTraining.model("/input/lossCurve/teacher", ref, resolver: resolver)
        _ = try DiffusionSolvers.adapt(solver, kindDefault: nil, interpolant: t.training.interpolant, pointer: "/input/lossCurve/solver")
        if t.model.pointSize != m.model.pointSize {
            throw SpecError(pointer: "/input/lossCurve/teacher", message: "makes points of size \(t.model.pointSize), the model's are \(m.model.pointSize)")
        }
        if guidance != nil && t.model.classes == nil {
            throw SpecError(pointer: "/input/lossCurve/guidance", message: "needs a class-conditional teacher; this teacher is unconditional")
        }
        if let k = m.model.classes, let tk = t.model.classes, tk > k {
            throw SpecError(pointer: "/input/lossCurve/teacher", message: "labels its pairs with \(tk) classes, the model has \(k)")
        }
    }

    /// Memory: the pairs, their labels and x_t / v per worker, the model's activations of one
    /// block per worker, and the teacher's checkpoint and (guided: doubled) solver blocks.
    func estimate(model: ModelSpec, threads: Int, resolver: any ArtifactResolver, into e: inout ResourceEstimate) {
        let d = model.pointSize
        e.add("loss-curve pairs and per-worker x_t, v", floats: n, d, 3 + 2 * threads)
        e.add("loss-curve blocks", floats: threads, min(n, LossCurve.blockRows), model.config.activationFloatsPerRow)
        if let ref = teacher, let path = try? resolver.path(for: ref, kind: .model), let t = try? ModelArtifact.read(path: path) {
            e.add("loss-curve teacher checkpoint", floats: t.model.parameterCount, 4)
            let rows = min(n, JobExecution.blockRows(t.model, n: n, threads: threads)) * (guidance == nil ? 1 : 2)
            e.add("loss-curve teacher solver blocks", floats: threads, rows, t.model.config.activationFloatsPerRow + 8 * d)
        }
    }
}

/// One bin of a loss curve.
public struct LossCurveBin: Codable, Sendable, Equatable {
    /// The bin's centre, where the loss is measured.
    public var t: Double
    public var mean: Double
    /// Standard error of the mean over the pairs.
    public var standardError: Double
}

/// The loss curve of an evaluate job (section `lossCurve`; also `loss_curve.png`).
public struct LossCurveSummary: Codable, Sendable, Equatable {
    /// "teacher" (fresh teacher pairs) or "independent" (noise × target data).
    public var coupling: String
    public var pairs: Int
    public var bins: [LossCurveBin]
    /// Mean over the bins (the loss under t ~ U[0, 1], binned).
    public var mean: Double
    /// Mean of the outer fifths of the bins over the mean of the middle fifth: > 1 is a U shape.
    public var endsOverMiddle: Double
    /// The intersection argument on the same pairs (``Metrics/intersectionNoise(x0:x1:times:)``):
    /// the noise that would make two random pairs' lines cross at each t, against the pairs' own.
    public var intersection: IntersectionSummary?
}

/// Statistics of the noise x0'' at which random pairs' interpolation lines would cross.
public struct IntersectionSummary: Codable, Sendable, Equatable {
    public var times: [Double]
    public var fresh: Metrics.NoiseStatistics
    public var crossing: [Metrics.NoiseStatistics]
}

extension JobResult {
    /// The per-t loss curve of an evaluate job.
    public var lossCurve: LossCurveSummary? { section("lossCurve", as: LossCurveSummary.self) }
}

enum LossCurve {
    static let plotName = "loss_curve.png"
    /// Rows per network evaluation.
    static let blockRows = 512

    /// Draws the held-out pairs and measures the curve; writes `loss_curve.png`.
    static func run(_ spec: LossCurveSpec, model m: ModelArtifact, weights: [String: Tensor], target: DataSource,
                    job: JobExecution) throws -> LossCurveSummary {
        let d = m.model.pointSize, n = spec.n
        let x0: Tensor, x1: Tensor
        var labels: [Int32]?
        let coupling: String
        if let ref = spec.teacher {
            let teacher = try job.model(ref)
            x0 = JobExecution.draw(try job.sampler(teacher.training.source, pointSize: d, what: "teacher source"), n: n, seed: spec.seed).x
            labels = teacher.model.classes.map { JobExecution.uniformLabels(n: n, classes: $0, seed: spec.seed) }
            x1 = try job.solve(teacher.model, teacher.weights(useEMA: true), x0, spec.solver, interpolant: teacher.training.interpolant,
                               blockRows: job.blockRows(teacher.model, n: n), labels: labels, guidance: spec.guidance).x
            coupling = "teacher"
        } else {
            let data = try job.sampler(target, pointSize: d, what: "target")
            var rng = Random(seed: spec.seed)
            var drawn = [Float](repeating: 0, count: n * d)
            var l = [Int32](repeating: 0, count: n)
            drawn.withUnsafeMutableBufferPointer { b in l.withUnsafeMutableBufferPointer { lb in
                data.sample(into: b, labels: lb.baseAddress, rng: &rng)
            } }
            x1 = Tensor(shape: [n, d], data: drawn)
            if data.classCount != nil { labels = l }
            x0 = JobExecution.draw(try job.sampler(m.training.source, pointSize: d, what: "model source"), n: n, seed: spec.seed &+ 1).x
            coupling = "independent"
        }
        if let k = m.model.classes, let l = labels, l.contains(where: { Int($0) >= k }) {
            throw JobError.invalidInput("lossCurve: the pairs have labels outside the model's \(k) classes")
        }
        let bins = measure(model: m.model, weights: weights, x0: x0, x1: x1, labels: m.model.classes == nil ? nil : labels,
                           bins: spec.bins, threads: job.threads)
        let means = bins.map(\.mean)
        let fifth = max(1, spec.bins / 5)
        let ends = (Array(means.prefix(fifth)) + Array(means.suffix(fifth)))
        let mid = Array(means[max(0, spec.bins / 2 - fifth / 2)..<min(spec.bins, spec.bins / 2 - fifth / 2 + fifth)])
        let times = [0.1, 0.25, 0.5, 0.75, 0.9]
        let noise = try Metrics.intersectionNoise(x0: x0, x1: x1, times: times)
        let summary = LossCurveSummary(coupling: coupling, pairs: n, bins: bins, mean: means.reduce(0, +) / Double(means.count),
                                       endsOverMiddle: (ends.reduce(0, +) / Double(ends.count)) / max(1e-30, mid.reduce(0, +) / Double(mid.count)),
                                       intersection: IntersectionSummary(times: times, fresh: noise.fresh, crossing: noise.crossing))
        try job.write(try plot(summary, title: m.model.description), plotName)
        return summary
    }

    /// The loss per bin: bins are spread over `threads` workers, each with its own field.
    /// x0, x1: [n, d]; labels: [n] or nil.
    static func measure(model: ModelSpec, weights: [String: Tensor], x0: Tensor, x1: Tensor, labels: [Int32]?,
                        bins: Int, threads: Int) -> [LossCurveBin] {
        let n = x0.shape[0], d = model.pointSize
        let out = Mutex([LossCurveBin?](repeating: nil, count: bins))
        let shared = WorkerShared((x0: x0, x1: x1, labels: labels))
        parallelChunks(count: bins, threads: threads) { range in
            guard let field = try? NetworkVelocityField(model: model, stateDict: weights) else { return }
            var xt = [Float](repeating: 0, count: n * d), v = xt
            let a = shared.value.x0.data, b = shared.value.x1.data
            for bin in range {
                let t = (Float(bin) + 0.5) / Float(bins)
                for j in 0..<(n * d) { xt[j] = t * b[j] + (1 - t) * a[j] }
                // Blocks of `blockRows` rows bound the network's activations.
                xt.withUnsafeBufferPointer { xp in v.withUnsafeMutableBufferPointer { vp in
                    LabelBuffer.with(shared.value.labels) { lp in
                        for lo in stride(from: 0, to: n, by: blockRows) {
                            field.labels = lp.map { $0 + lo }
                            field.velocity(xp.baseAddress! + lo * d, count: min(blockRows, n - lo), t: t, into: vp.baseAddress! + lo * d)
                        }
                        field.labels = nil
                    }
                } }
                var sum = 0.0, sumSq = 0.0
                for r in 0..<n {
                    var l = 0.0
                    for c in 0..<d {
                        let e = Double(v[r * d + c]) - Double(b[r * d + c] - a[r * d + c])
                        l += e * e
                    }
                    l /= Double(d)
                    sum += l
                    sumSq += l * l
                }
                let mean = sum / Double(n)
                let variance = max(0, sumSq / Double(n) - mean * mean) * Double(n) / Double(max(1, n - 1))
                out.withLock { $0[bin] = LossCurveBin(t: Double(t), mean: mean, standardError: (variance / Double(n)).squareRoot()) }
            }
        }
        return out.withLock { $0 }.enumerated().map { $0.element ?? LossCurveBin(t: (Double($0.offset) + 0.5) / Double(bins), mean: .nan, standardError: .nan) }
    }

    /// `loss_curve.png`: the mean loss per bin (dots and line) with ± 2 standard errors (bars),
    /// t on x from 0 (noise) to 1 (data), y from 0 to the largest upper bar.
    static func plot(_ s: LossCurveSummary, title: String) throws -> [UInt8] {
        let yMax = Float(max(1e-12, s.bins.map { $0.mean + 2 * $0.standardError }.filter(\.isFinite).max() ?? 1))
        var c = Canvas(width: 640, height: 400, window: (xMin: -0.14, xMax: 1.06, yMin: -0.14 * yMax, yMax: 1.12 * yMax))
        c.line(from: (0, 0), to: (1, 0), color: .gray, alpha: 0.8)
        c.line(from: (0, 0), to: (0, yMax), color: .gray, alpha: 0.8)
        for v in [Float(0.25), 0.5, 0.75, 1] { c.line(from: (0, v * yMax), to: (1, v * yMax), color: .gray, alpha: 0.2) }
        for v in [Float(0), 0.5, 1] {
            let (px, py) = c.pixel(0, v * yMax)
            c.text(String(format: "%.2g", Double(v * yMax)), x: px - 62, y: py - 5, color: .black)
            let (qx, qy) = c.pixel(v, 0)
            c.text(v == 0.5 ? "0.5" : String(Int(v)), x: qx - 4, y: qy + 10, color: .black)
        }
        let (ox, oy) = c.pixel(0.5, -0.1 * yMax)
        c.text("T (0 NOISE, 1 DATA)", x: ox - 50, y: oy, color: .black)
        let (tx, ty) = c.pixel(0, 1.08 * yMax)
        c.text("HELD-OUT LOSS PER T BIN (\(s.coupling.uppercased()) PAIRS)", x: tx, y: ty, color: .black)
        let pts = s.bins.filter { $0.mean.isFinite }.map { (Float($0.t), Float($0.mean)) }
        for bin in s.bins where bin.mean.isFinite {
            c.line(from: (Float(bin.t), Float(bin.mean - 2 * bin.standardError)), to: (Float(bin.t), Float(bin.mean + 2 * bin.standardError)),
                   color: .orange, alpha: 0.9)
        }
        for i in 1..<max(1, pts.count) { c.line(from: pts[i - 1], to: pts[i], color: .blue, alpha: 0.9) }
        c.scatter(pts.flatMap { [$0.0, $0.1] }, color: .blue, alpha: 1, radius: 2)
        let values = s.bins.map { String(format: "%.4f:%.6g", $0.t, $0.mean) }.joined(separator: " ")
        let text: [(String, String)] = [
            ("reflowd.plot", "held-out flow-matching loss (y) per t bin (x, bin centres), ±2 standard errors"),
            ("reflowd.coupling", s.coupling), ("reflowd.bins", values), ("reflowd.model", String(title.prefix(1000))),
        ]
        return try PNG.encodeRGB(width: c.width, height: c.height, pixels: c.pixels, text: text)
    }
}
