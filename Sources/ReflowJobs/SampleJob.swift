import ReflowEngine
public import ReflowNN
public import ReflowFlow
import Foundation

/// `sample`: n points from noise (the model's π0) through `solver`; a class-conditional model
/// samples under `labels` (or `perClass` of each class) with optional classifier-free `guidance`.
public struct SampleSpec: JobInput {
    public var model: ArtifactRef = .job(id: "missing", artifact: nil)
    public var useEMA = true
    /// Samples to draw; set from `labels` or `perClass` when one is given.
    public var n = 2000
    /// Class-conditional models: one class label per sample (n becomes their count).
    @Explicit public var labels: [Int]? = nil
    /// Class-conditional models: this many samples of every class, in class order.
    @Explicit public var perClass: Int? = nil
    /// Class-conditional models: the guidance scale α (null: the conditional velocity alone).
    @Explicit public var guidance: Float? = nil
    public var seed: UInt64 = 0
    public var solver: ODEMethod = .euler(steps: 100)
    /// Trajectories drawn in `trajectories.png` (0 = no picture; 2-D models only).
    public var trajectories = 300
    public var format: PointFormat = .npy

    public init() {}
    public static var requiredKeys: [String] { ["model"] }
    public static let maxPoints = 1_000_000

    public func validationError() -> FieldError? {
        Validation.first(
            { Validation.member("/model", model) },
            { Validation.range("/n", n, 1, SampleSpec.maxPoints) },
            { Conditioning.validationError(labels: labels, perClass: perClass, guidance: guidance, maxPoints: SampleSpec.maxPoints) },
            { solver.validationPointer().map { ("/solver" + $0.pointer, $0.message) } },
            // At most n are drawn (the default 300 with n = 64 draws 64).
            { Validation.range("/trajectories", trajectories, 0, 5000) })
    }
}

public enum SampleJob: JobKind {
    public static let name = "sample"
    public static let summary = "Draw samples (noise → data) from a model with a chosen ODE solver."
    public static let phases = ["sample"]
    public static let outputs = [
        JobOutput("samples.npy", "the samples, [n, D] float32 (format npy)"),
        JobOutput("samples.csv", "the samples as CSV (format csv)"),
        JobOutput("labels.npy", "the class label of each sample, [n, 1] float32 (class-conditional models, format npy)"),
        JobOutput("labels.csv", "the labels as CSV (class-conditional models, format csv)"),
        JobOutput("samples.png", "scatter of the samples over the model's data (2-D models); an 8×8 grid of the first 64 samples (image models)"),
        JobOutput("trajectories.png", "ODE trajectories of the first points (2-D models)"),
        JobOutput("translation.png", "source images above their translations (image models trained from an image source)"),
    ]

    public static func prepare(_ input: SampleSpec, resolver: any ArtifactResolver) throws(SpecError) -> SampleSpec {
        var s = input
        let art = try StudentTraining.model("/input/model", input.model, resolver: resolver), m = art.model
        s.solver = try DiffusionSolvers.adapt(s.solver, kindDefault: SampleSpec().solver, interpolant: art.training.interpolant, pointer: "/input/solver")
        try Conditioning.check(labels: s.labels, perClass: s.perClass, guidance: s.guidance, model: m, maxPoints: SampleSpec.maxPoints)
        if let labels = s.labels { s.n = labels.count }
        if let p = s.perClass, let k = m.classes { s.n = p * k }
        return s
    }

    public static func estimate(_ s: SampleSpec, resolver: any ArtifactResolver, threads: Int) throws(SpecError) -> ResourceEstimate {
        let m = try StudentTraining.model("/input/model", s.model, resolver: resolver).model
        return pointsEstimate(m, n: s.n, copies: 4, solver: s.solver, blockRows: JobExecution.blockRows(m, n: s.n, threads: threads), threads: threads,
                              trajectoryRows: m.pointSize == 2 ? min(s.trajectories, s.n) : 0, guided: s.guidance != nil)
    }

    public static func run(_ s: SampleSpec, job: JobExecution) throws -> JobResult.Sections {
        let m = try job.model(s.model)
        let weights = m.weights(useEMA: s.useEMA)
        let d = m.model.pointSize
        let z = JobExecution.draw(try job.sampler(m.training.source, pointSize: d, what: "model source"), n: s.n, seed: s.seed).x
        job.progress("sample", 0, s.n)
        let start = monotonicSeconds()
        let labels = Conditioning.labels(s.labels, perClass: s.perClass, n: s.n, model: m.model)
        let sol = try job.solve(m.model, weights, z, s.solver, interpolant: m.training.interpolant, blockRows: job.blockRows(m.model, n: s.n),
                                labels: labels, guidance: s.guidance)
        let seconds = monotonicSeconds() - start
        _ = try job.points(sol.x, format: s.format, base: "samples")
        if let labels { _ = try job.points(Tensor(shape: [s.n, 1], data: labels.map(Float.init)), format: s.format, base: "labels") }
        if d == 2 {
            var rng = Random(seed: s.seed &+ 1)
            let reference = try job.sampler(m.training.data, pointSize: d, what: "model data").sample(min(s.n, 4000), rng: &rng)
            try job.write(Figures.scatter(sol.x, reference: reference), "samples.png")
            let drawn = min(s.trajectories, s.n)
            if drawn > 0 {
                try job.checkStop()
                let start = Tensor(shape: [drawn, d], data: Array(z.data.prefix(d * drawn)))
                // One block, so rk45 records one common time grid for all drawn trajectories.
                let t = try job.solve(m.model, weights, start, s.solver, interpolant: m.training.interpolant, blockRows: drawn, trajectory: true,
                                      labels: labels.map { Array($0.prefix(drawn)) }, guidance: s.guidance)
                let picture = try Figures.trajectories((t.trajectory ?? []).map(\.x), reference: reference)
                if !picture.isEmpty { try job.write(picture, "trajectories.png") }
            }
        }
        if m.model.pointShape.count == 3 {
            let text = [("reflowd.job", "sample"), ("reflowd.solver", s.solver.name), ("reflowd.seed", String(s.seed)),
                        ("reflowd.model", m.model.description)] + (s.guidance.map { [("reflowd.guidance", String($0))] } ?? [])
            try job.write(Figures.imageGrid(sol.x, shape: m.model.pointShape, text: text), "samples.png")
            // A model trained from another image domain (transfer): each source image above its
            // translation.
            if case .images = m.training.source {
                try job.write(Figures.imageBands([z, sol.x], shape: m.model.pointShape, text: text + [("reflowd.rows", "source, translation")]),
                              "translation.png")
            }
        }
        let (mean, std) = JobExecution.moments(sol.x)
        job.progress("sample", s.n, s.n)
        return ["sample": try ResultValue(encoding: SampleSummary(n: s.n, nfe: sol.nfe, nfeMean: sol.nfeMean, seconds: seconds, mean: mean, std: std))]
    }
}

/// Memory of a job that holds `copies` [n, D] point sets and integrates them: the solver's
/// per-worker blocks (activations and up to 8 Dormand–Prince stages), the model (weights, EMA,
/// optimizer state of its checkpoint) and a recorded trajectory of `trajectoryRows` rows.
/// A guided solve evaluates every block twice over (labelled and null rows in one pass).
func pointsEstimate(_ m: ModelSpec, n: Int, copies: Int, solver: ODEMethod, blockRows: Int, threads: Int,
                    trajectoryRows: Int, guided: Bool = false) -> ResourceEstimate {
    var e = ResourceEstimate()
    let d = m.pointSize
    e.add("model checkpoint (weights, EMA, optimizer state)", floats: m.parameterCount, 4)
    e.add("points (inputs, outputs, file bytes)", floats: n, d, copies)
    e.add("solver blocks", floats: threads, min(blockRows, n) * (guided ? 2 : 1), m.config.activationFloatsPerRow + 8 * d)
    if trajectoryRows > 0 {
        // Fixed-step: steps + 1 frames; rk45: at most one accepted step per 6 evaluations.
        let frames: Int
        if case .rk45(_, _, let maxNFE) = solver { frames = maxNFE / 6 + 2 } else { frames = (solver.steps ?? 1) + 1 }
        e.add("recorded trajectory", floats: frames, trajectoryRows, d)
    }
    return e
}

extension JobResult {
    /// The sample section of a sample job.
    public var sample: SampleSummary? { section("sample", as: SampleSummary.self) }
}
