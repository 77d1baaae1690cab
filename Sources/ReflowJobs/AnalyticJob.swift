import ReflowEngine
import ReflowStore
public import ReflowNN
public import ReflowFlow
import Foundation

/// `analytic`: the exact rectified flow of `points` items of a data source (SlimFlow's
/// `AnalyticFlow`; ``AnalyticFlowConfig``), written as a model that other jobs reference like a
/// trained one: a teacher whose pairs need no teacher training, or an oracle to evaluate
/// against. Its velocity is closed-form; nothing is optimised.
public struct AnalyticSpec: JobInput {
    /// The data whose flow this is (items drawn without replacement for image splits and point
    /// files as their samplers draw; built-in 2-D distributions sample fresh points).
    public var data: DataSource = .distribution(.gaussianRing())
    /// N, the number of items kept.
    public var points = 500
    /// Seeds the draw of the items.
    public var seed: UInt64 = 0
    /// Preview samples in `samples.png` (Euler 100; 0 = none).
    public var previewPoints = 64
    /// The shape of one item, filled from the data when the job is submitted (a given value
    /// must match it).
    @Explicit public var pointShape: [Int]? = nil

    public init() {}

    public func validationError() -> FieldError? {
        Validation.first(
            { Validation.member("/data", data) },
            { Validation.range("/points", points, 1, AnalyticFlowConfig.maxPoints) },
            { Validation.range("/previewPoints", previewPoints, 0, 100_000) })
    }
}

public enum AnalyticJob: JobKind {
    public static let name = "analytic"
    public static let summary = "Build the exact rectified flow of a small dataset (closed-form velocity, nothing trained) as a model: a teacher or an oracle."
    public static let phases = ["analytic"]
    public static let outputs = [
        JobOutput(JobDirectory.Name.model, "the analytic model (its points as the `data` tensor)"),
        JobOutput("samples.png", "Euler-100 samples (2-D points over the data, or an image grid)"),
    ]

    /// The point shape of the data (images: their shape, nil for a folder whose shape is known
    /// only once read; 2-D distributions: [2]; point files: read).
    static func shape(_ data: DataSource, resolver: any ArtifactResolver) throws(SpecError) -> [Int]? {
        switch data {
        case .images(let ref):
            return try ImageSplits.describe(ref, pointer: "/input/data", resolver: resolver).shape
        case .points(let ref):
            let path: String
            do { path = try resolver.path(for: ref, kind: .points) } catch { throw SpecError(pointer: "/input/data" + error.pointer, message: error.message) }
            do {
                let x = try PointFiles.load(path: path)
                guard x.rank == 2, x.shape[0] > 0 else { throw SpecError(pointer: "/input/data", message: "holds no [n, d] points") }
                return [x.shape[1]]
            } catch let e as SpecError { throw e } catch {
                throw SpecError(pointer: "/input/data", message: "\(error)")
            }
        default:
            guard let d = data.knownPointSize(modelPointSize: 2) else { throw SpecError(pointer: "/input/data", message: "has no known point size") }
            return [d]
        }
    }

    static func model(_ s: AnalyticSpec, shape: [Int]) -> ModelSpec {
        ModelSpec(AnalyticFlowConfig(dimension: shape.reduce(1, *), imageShape: shape.count == 3 ? shape : nil, points: s.points))
    }

    public static func prepare(_ input: AnalyticSpec, resolver: any ArtifactResolver) throws(SpecError) -> AnalyticSpec {
        var s = input
        if case .normal = s.data { throw SpecError(pointer: "/input/data", message: "is noise: the analytic flow of noise to noise is the identity") }
        let known = try shape(s.data, resolver: resolver)
        if let given = s.pointShape, let known, given != known {
            throw SpecError(pointer: "/input/pointShape", message: "the data's items have shape \(known), not \(given)")
        }
        guard let found = known ?? s.pointShape else {
            throw SpecError(pointer: "/input/pointShape", message: "an image folder's shape is known only once read: give `pointShape` [C, H, W]")
        }
        s.pointShape = found
        if let e = model(s, shape: found).validationError() { throw SpecError(pointer: "/input/model" + e.pointer, message: e.message) }
        return s
    }

    public static func estimate(_ s: AnalyticSpec, resolver: any ArtifactResolver, threads: Int) throws(SpecError) -> ResourceEstimate {
        let d = (s.pointShape ?? [2]).reduce(1, *)
        var e = ResourceEstimate()
        // The points, their checkpoint bytes, and the preview's solver blocks.
        e.add("points (tensor and checkpoint)", floats: s.points, d, 3)
        e.add("preview blocks", floats: threads, min(1024, max(1, s.previewPoints)), s.points + 8 * d)
        if case .images(let ref) = s.data, let shape = s.pointShape, let bytes = try? checkImageData(ref, shape: shape, pointer: "", resolver: resolver) {
            e.add("image split", bytes: ResourceEstimate.multiply(bytes, 2))
        }
        return e
    }

    public static func run(_ s: AnalyticSpec, job: JobExecution) throws -> JobResult.Sections {
        guard let shape = s.pointShape else { throw JobError.invalidInput("pointShape: not filled in (the spec was not prepared)") }
        let d = shape.reduce(1, *)
        let sampler = try job.sampler(s.data, pointSize: d, what: "data")
        var rng = Random(seed: s.seed)
        let x = sampler.sample(s.points, rng: &rng)
        guard x.data.allSatisfy(\.isFinite) else { throw JobError.invalidInput("data: non-finite values") }
        var training = TrainingConfig()
        training.model = model(s, shape: shape)
        training.data = s.data
        training.source = .normal(dimension: nil, std: 1)
        training.emaDecay = nil
        training.seed = s.seed
        guard training.model.pointSize == d else { throw JobError.invalidInput("data: \(d)-D points, expected \(training.model.pointSize)") }
        var snapshot = TrainingSnapshot(model: [AnalyticFlowNetwork.dataName: Tensor(shape: [s.points, d], data: x.data)], step: 0, rng: rng.state)
        for (k, v) in try job.checkpointMetadata(training) { snapshot.metadata[k] = v }
        try Checkpoint.write(snapshot, to: job.directory.model)
        try job.preview(training, weights: snapshot.model, points: s.previewPoints)
        job.progress("analytic", 1, 1)
        return ["analytic": .object(["points": .int(s.points), "dimension": .int(d)])]
    }
}
