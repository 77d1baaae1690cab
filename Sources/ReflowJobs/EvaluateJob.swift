import ReflowEngine
public import ReflowNN
public import ReflowFlow
import Foundation

/// `evaluate`: metrics of a model against its data distribution (or `target`), for each solver.
/// Image models (point shape [C, H, W]) are evaluated on the features of a `classifier`
/// (ImageEvaluation.swift); 2-D and other point models as before.
public struct EvaluateSpec: JobInput {
    public var model: ArtifactRef = .job(id: "missing", artifact: nil)
    public var useEMA = true
    public var n = 10_000
    public var seed: UInt64 = 1_000_001
    /// The reference data; null means the model's training data.
    @Explicit public var target: DataSource? = nil
    public var solvers: [ODEMethod] = [.euler(steps: 1), .euler(steps: 2), .euler(steps: 100), .rk45(rtol: 1e-5, atol: 1e-5, maxNFE: 10_000)]
    /// Euler steps of the trajectory for straightness (paper Eq. 3).
    public var straightnessSteps = 100
    /// Random projections of the sliced W2 distance.
    public var projections = 256
    /// Image models: a classify job's classifier (`{"job": id}`), whose penultimate features
    /// the image metrics compare. Required for image models, ignored otherwise.
    @Explicit public var classifier: ArtifactRef? = nil
    /// Image models: training images read for the real-vs-real floor and the memorisation check.
    public var trainImages = 10_000
    /// Image models: KID subsets (each of min(1000, n) images).
    public var kidSubsets = 100
    /// Class-conditional models: the guidance scale α of every solver's samples (null: the
    /// conditional velocity alone). Samples are drawn under the balanced labels i mod classes.
    @Explicit public var guidance: Float? = nil
    /// The per-t loss curve (nil: not measured).
    @Explicit public var lossCurve: LossCurveSpec? = nil

    public init() {}
    public static var requiredKeys: [String] { ["model"] }

    public func validationError() -> FieldError? {
        Validation.first(
            { Validation.member("/model", model) },
            { Validation.range("/n", n, 2, 200_000) },
            { Validation.member("/target", target) },
            { solvers.isEmpty || solvers.count > 32 ? ("/solvers", "must list 1 to 32 solvers") : nil },
            {
                for (i, s) in solvers.enumerated() {
                    if let e = s.validationPointer() { return ("/solvers/\(i)" + e.pointer, e.message) }
                }
                return nil
            },
            { Validation.range("/straightnessSteps", straightnessSteps, 2, 1000) },
            { Validation.range("/projections", projections, 1, 4096) },
            { Validation.member("/classifier", classifier) },
            { Validation.range("/trainImages", trainImages, 10, 200_000) },
            { Validation.range("/kidSubsets", kidSubsets, 1, FeatureMetrics.maxSubsets) },
            { Conditioning.validationError(labels: nil, perClass: nil, guidance: guidance, maxPoints: n) },
            { Validation.member("/lossCurve", lossCurve) })
    }
}

public enum EvaluateJob: JobKind {
    public static let name = "evaluate"
    public static let summary = "Straightness, transport cost, sliced W2, energy distance, coverage and an NFE table of a model; for image models FD, KID, precision/recall, density/coverage and memorisation on a classifier's features, next to the real-vs-real floor."
    public static let phases = ["evaluate"]
    // Image models also write `samples_<solver>.png` grids (one per solver, names from the
    // solver list, so not a fixed output name; see docs/JOBS.md).
    public static let outputs = [JobOutput("trajectories.png", "Euler trajectories over the target (2-D models)"),
                                 JobOutput(LossCurve.plotName, "the held-out loss per t bin (with lossCurve)")]

    /// Fills a null `target` with the model's training data (the echo names what is compared
    /// against) and checks a given one.
    public static func prepare(_ input: EvaluateSpec, resolver: any ArtifactResolver) throws(SpecError) -> EvaluateSpec {
        var input = input
        let m = try StudentTraining.model("/input/model", input.model, resolver: resolver)
        input.solvers = try DiffusionSolvers.adapt(input.solvers, kindDefault: EvaluateSpec().solvers, interpolant: m.training.interpolant, pointer: "/input/solvers")
        if let vp = m.training.interpolant.diffusion, input.straightnessSteps > vp.steps {
            throw SpecError(pointer: "/input/straightnessSteps", message: "the DDIM trajectory takes at most the schedule's \(vp.steps) steps")
        }
        try Conditioning.check(labels: nil, perClass: nil, guidance: input.guidance, model: m.model, maxPoints: input.n)
        if let c = input.lossCurve { try c.check(model: m, resolver: resolver) }
        if m.model.pointShape.count == 3 { return try ImageEvaluation.prepare(input, model: m, resolver: resolver) }
        if input.target == nil { input.target = m.training.data }
        if let t = input.target {
            let d = m.model.pointSize
            if let k = t.knownPointSize(modelPointSize: d), k != d {
                throw SpecError(pointer: "/input/target", message: "gives \(k)-D points, the model is \(d)-D")
            }
            if case .points(let ref) = t { try checkPointFile(ref, pointSize: d, pointer: "/input/target", resolver: resolver) }
        }
        return input
    }

    public static func estimate(_ s: EvaluateSpec, resolver: any ArtifactResolver, threads: Int) throws(SpecError) -> ResourceEstimate {
        let m = try StudentTraining.model("/input/model", s.model, resolver: resolver).model
        if m.pointShape.count == 3 {
            var e = ImageEvaluation.estimate(s, model: m, resolver: resolver, threads: threads)
            s.lossCurve?.estimate(model: m, threads: threads, resolver: resolver, into: &e)
            return e
        }
        // reference, second reference, z, one solution at a time, and the metrics' projections;
        // rk45 integrates all n rows as one block, fixed-step solvers 1,024 at a time.
        let block = s.solvers.contains { $0.steps == nil } ? s.n : min(s.n, 1024)
        var e = pointsEstimate(m, n: s.n, copies: 6, solver: .euler(steps: s.straightnessSteps), blockRows: block,
                               threads: threads, trajectoryRows: min(s.n, 2000), guided: s.guidance != nil)
        // Sliced W2: the projections of both sets (Doubles) and the random directions
        // (projections × D Doubles); energy distance: subsamples of at most 2,048 points.
        e.add("sliced-W2 projections and directions", floats: ResourceEstimate.add(ResourceEstimate.multiply(s.n, 4), ResourceEstimate.multiply(s.projections, m.pointSize)), 2)
        e.add("energy-distance subsamples", floats: min(s.n, 2048), m.pointSize, 4)
        if case .points(let ref)? = s.target, let bytes = resolver.fileSize(of: ref, kind: .points) {
            e.add("target point file (bytes and parsed floats)", bytes: ResourceEstimate.multiply(bytes, 3))
        }
        s.lossCurve?.estimate(model: m, threads: threads, resolver: resolver, into: &e)
        return e
    }

    public static func run(_ s: EvaluateSpec, job: JobExecution) throws -> JobResult.Sections {
        let m = try job.model(s.model)
        if m.model.pointShape.count == 3 { return try ImageEvaluation.run(s, model: m, job: job) }
        let weights = m.weights(useEMA: s.useEMA)
        let d = m.model.pointSize
        let target = s.target ?? m.training.data
        let data = try job.sampler(target, pointSize: d, what: "target")
        var rng = Random(seed: s.seed)
        let reference = data.sample(s.n, rng: &rng)
        let second = data.sample(s.n, rng: &rng)
        let z = JobExecution.draw(try job.sampler(m.training.source, pointSize: d, what: "model source"), n: s.n, seed: s.seed &+ 1).x
        let labels = Conditioning.labels(nil, perClass: nil, n: s.n, model: m.model)
        var rows = [EvaluationRow]()
        for (i, method) in s.solvers.enumerated() {
            try job.checkStop()
            job.progress("evaluate", i, s.solvers.count + 1)
            let sol = try job.solve(m.model, weights, z, method, interpolant: m.training.interpolant, blockRows: method.steps == nil ? s.n : 1024,
                                    labels: labels, guidance: s.guidance)
            let cov = try target.distribution.map { try Metrics.supportCoverage(samples: sol.x, distribution: $0) }
            rows.append(EvaluationRow(
                solver: method, nfe: sol.nfe, nfeMean: sol.nfeMean,
                swd: try Metrics.slicedWasserstein2(a: sol.x, b: reference, projections: s.projections, seed: 7),
                energyDistance: try Metrics.energyDistance(a: sol.x, b: reference, seed: 7),
                transportCost: try Metrics.transportCost(z0: z, z1: sol.x),
                fractionWithin: cov?.fractionWithin, modesCovered: cov?.modesCovered, modeCount: cov?.counts.count,
                meanDistance: cov?.meanDistance))
        }
        try job.checkStop()
        let trajN = min(s.n, 2000)
        let start = Tensor(shape: [trajN, d], data: Array(z.data.prefix(d * trajN)))
        let interpolant = m.training.interpolant
        let traj = try job.solve(m.model, weights, start, interpolant.firstOrderMethod(steps: s.straightnessSteps), interpolant: interpolant,
                                 trajectory: true, labels: labels.map { Array($0.prefix(trajN)) }, guidance: s.guidance)
        let frames = (traj.trajectory ?? []).map(\.x)
        let m512 = min(trajN, 512)
        let excess = try Metrics.relativeTransportCost(z0: Tensor(shape: [m512, d], data: Array(start.data.prefix(d * m512))),
                                                       z1: Tensor(shape: [m512, d], data: Array(traj.x.data.prefix(d * m512)))).excess
        let summary = EvaluationSummary(
            n: s.n, target: target.kind, rows: rows,
            straightness: try Metrics.straightness(trajectory: frames), firstOrderness: DiffusionSolvers.firstOrderness(interpolant, frames: frames),
            transportExcess: excess,
            dataFloorSWD: try Metrics.slicedWasserstein2(a: second, b: reference, projections: s.projections, seed: 7),
            dataFloorEnergy: try Metrics.energyDistance(a: second, b: reference, seed: 7))
        if d == 2 {
            let shown = min(trajN, 300)
            try job.write(Figures.trajectories(frames.map { Tensor(shape: [shown, 2], data: Array($0.data.prefix(2 * shown))) },
                                               reference: reference), "trajectories.png")
        }
        job.progress("evaluate", s.solvers.count + 1, s.solvers.count + 1)
        var sections: JobResult.Sections = ["evaluation": try ResultValue(encoding: summary)]
        if let c = s.lossCurve {
            sections["lossCurve"] = try ResultValue(encoding: try LossCurve.run(c, model: m, weights: weights, target: target, job: job))
        }
        return sections
    }
}

extension JobResult {
    /// The evaluation section of an evaluate job.
    public var evaluation: EvaluationSummary? { section("evaluation", as: EvaluationSummary.self) }
}
