public import ReflowNN
public import ReflowFlow
import ReflowMRI
import ReflowEngine
import Foundation

/// `train`: a 1-rectified flow from independent draws x0 ~ π0, x1 ~ π1. The input is a
/// ``TrainingConfig`` and a ``LoopSpec``, flat:
/// `{"data": {"kind": "twoMoons"}, "steps": 2000, "learningRate": 1e-3}`.
///
/// A `model` of kind `rim` makes it a RIM's training instead (``RIMTrainSpec``, issue #14): the
/// wire form is then the RIM spec's, flat in the same object.
public struct TrainSpec: JobInput {
    public var training = TrainingConfig()
    public var loop = LoopSpec()
    /// Set when the model is a RIM (then `training` and `loop` are unused defaults).
    public var rim: RIMTrainSpec?

    public init() {}

    public init(rim: RIMTrainSpec) { self.rim = rim }

    private struct ModelProbe: Decodable {
        struct Kind: Decodable { var kind: String? }
        var model: Kind?
    }

    // Flat wire form: both parts read and write the same JSON object.
    public init(from decoder: any Decoder) throws {
        if (try? ModelProbe(from: decoder))?.model?.kind == RIMConfig.kind {
            rim = try RIMTrainSpec(from: decoder)
            return
        }
        training = try TrainingConfig(from: decoder)
        loop = try LoopSpec(from: decoder)
    }

    public func encode(to encoder: any Encoder) throws {
        if let rim { try rim.encode(to: encoder); return }
        try training.encode(to: encoder)
        try loop.encode(to: encoder)
    }

    public func validationError() -> FieldError? {
        if let rim { return rim.validationError() }
        return training.validationError() ?? loop.validationError()
    }
}

public enum TrainJob: JobKind {
    public static let name = "train"
    public static let summary = "Train a 1-rectified flow on independent draws from the source (noise) and the data; or, with a `rim` model, a Recurrent Inference Machine on simulated undersampled MRI."
    public static let outputs = [
        JobOutput(JobDirectory.Name.model, "the trained model (weights, EMA, optimizer state; spec and training config in the metadata)"),
        JobOutput(JobDirectory.Name.lossLog, "step,loss records every logEvery steps"),
        JobOutput("samples.png", "Euler-100 samples over the data (2-D models)"),
    ]
    public static let phases = ["train", "check"]
    public static let trainingPhases = ["train"]

    /// A RIM model's input decodes over the RIM spec's defaults, a flow's over the flow's.
    public static func decode(_ user: Any) throws -> TrainSpec {
        if RIMTrainSpec.isRIM(user) { return TrainSpec(rim: try RIMTrainSpec.decodePartial(object: user)) }
        return try TrainSpec.decodePartial(object: user)
    }

    public static func prepare(_ input: TrainSpec, resolver: any ArtifactResolver) throws(SpecError) -> TrainSpec {
        if let rim = input.rim { return TrainSpec(rim: try rim.prepare(resolver: resolver)) }
        try checkDataReferences(input.training, resolver: resolver)
        try checkLabels(input.training, resolver: resolver)
        if input.training.annealing != nil {
            throw SpecError(pointer: "/input/annealing", message: "anneals the noise of stored pairs: use it in a reflow or distill job")
        }
        if input.training.twoStep != nil {
            throw SpecError(pointer: "/input/twoStep", message: "is a term of one-step distillation: use it in a distill job with k = 1")
        }
        if input.training.flipPairs {
            throw SpecError(pointer: "/input/flipPairs", message: "mirrors stored pairs: use it in a reflow or distill job")
        }
        if input.training.model.config is AnalyticFlowConfig {
            throw SpecError(pointer: "/input/model/kind", message: AnalyticFlowConfig.notTrainable)
        }
        if input.training.phases != nil {
            throw SpecError(pointer: "/input/phases", message: "trains on a VP teacher's phase pairs: use it in a reflow job")
        }
        return input
    }

    /// A class-conditional model needs labelled data with at most its number of classes.
    static func checkLabels(_ t: TrainingConfig, resolver: any ArtifactResolver) throws(SpecError) {
        guard let k = t.model.classes else { return }
        guard let n = try labelledClasses(t.data, pointer: "/input/data", resolver: resolver) else {
            throw SpecError(pointer: "/input/model/classes", message: "a class-conditional model needs labelled data (a built-in 2-D mixture or a labelled image dataset); /input/data has no labels")
        }
        if n > k { throw SpecError(pointer: "/input/model/classes", message: "the data has \(n) classes, the model \(k)") }
    }

    public static func estimate(_ input: TrainSpec, resolver: any ArtifactResolver, threads: Int) throws(SpecError) -> ResourceEstimate {
        if let rim = input.rim { return try rim.estimate(resolver: resolver, threads: threads) }
        var e = ResourceEstimate()
        trainingEstimate(input.training, threads: threads, into: &e)
        perceptualEstimate(input.training, resolver: resolver, into: &e)
        addDataFiles(input.training, resolver: resolver, into: &e)
        return e
    }

    public static func run(_ s: TrainSpec, job: JobExecution) throws -> JobResult.Sections {
        if let rim = s.rim { return try rim.run(job: job) }
        let threads = job.threads
        let resolve: (ArtifactRef) throws -> String = { try job.resolve($0, kind: .points, what: "data") }
        let locate: (String) throws -> DatasetLocation = { try job.locateDataset($0, what: "data") }
        let features = try job.perceptualNetwork(s.training)
        let summary = try job.trainLoop(s.training, s.loop, phase: "train") { snapshot in
            if let snapshot {
                return try FlowTrainer(s.training, threads: threads, restoring: snapshot, resolve: resolve, locate: locate, perceptualNetwork: features)
            }
            return try FlowTrainer(s.training, threads: threads, resolve: resolve, locate: locate, perceptualNetwork: features)
        }
        let final = try ModelArtifact.read(path: job.directory.model)
        try job.preview(s.training, weights: final.weights(useEMA: true), points: s.loop.previewPoints)
        return ["training": try ResultValue(encoding: summary)]
    }
}

/// The classes of a labelled data source (a built-in 2-D mixture's modes, a labelled image
/// split's classes from its headers), or nil for an unlabelled one.
func labelledClasses(_ source: DataSource, pointer: String, resolver: any ArtifactResolver) throws(SpecError) -> Int? {
    switch source {
    case .distribution(let d): return d.classCount
    case .images(let ref): return try ImageSplits.describe(ref, pointer: pointer, resolver: resolver).classes
    default: return nil
    }
}

/// Checks that point-set data and source references of a training config resolve to readable
/// point files of the model's dimension (read once here, so a mismatch is a 422, not a failed job).
func checkDataReferences(_ t: TrainingConfig, resolver: any ArtifactResolver) throws(SpecError) {
    if let p = t.perceptual {
        let path: String
        do { path = try resolver.path(for: p.classifier, kind: .classifier) } catch {
            throw SpecError(pointer: "/input/perceptual/classifier" + error.pointer, message: error.message)
        }
        let art: ClassifierArtifact
        do { art = try ClassifierArtifact.read(path: path) } catch {
            throw SpecError(pointer: "/input/perceptual/classifier", message: "cannot use this classifier: \(error)")
        }
        guard art.config.imageShape == t.model.pointShape else {
            throw SpecError(pointer: "/input/perceptual/classifier", message: "classifies \((art.config.imageShape ?? []).map(String.init).joined(separator: "×")) images, the model makes \(t.model.pointShape.map(String.init).joined(separator: "×"))")
        }
    }
    for (pointer, source) in [("/input/data", t.data), ("/input/source", t.source)] {
        switch source {
        case .points(let ref): try checkPointFile(ref, pointSize: t.model.pointSize, pointer: pointer, resolver: resolver)
        case .images(let ref): _ = try checkImageData(ref, shape: t.model.pointShape, pointer: pointer, resolver: resolver)
        default: break
        }
    }
}

/// Resolves an image dataset reference and reads its headers: a missing dataset or split and
/// images of another shape than the model's are refused at submit (422 with `pointer`).
/// Returns the bytes the split takes in memory when the headers tell (nil for PNG folders).
@discardableResult
func checkImageData(_ ref: ImageDataRef, shape: [Int], pointer: String, resolver: any ArtifactResolver) throws(SpecError) -> Int? {
    let info = try ImageSplits.describe(ref, pointer: pointer, resolver: resolver)
    guard let imageShape = info.shape else { return nil }
    guard imageShape == shape else {
        throw SpecError(pointer: pointer, message: "dataset '\(ref.dataset)' holds \(imageShape.map(String.init).joined(separator: "×")) images, the model's imageShape is \(shape.map(String.init).joined(separator: "×"))")
    }
    return info.bytes
}

/// Resolves a point-file reference and reads it once: unreadable files and points of another
/// size are refused at submit (422 with `pointer`), not when the job runs.
func checkPointFile(_ ref: ArtifactRef, pointSize: Int, pointer: String, resolver: any ArtifactResolver) throws(SpecError) {
    let path: String
    do { path = try resolver.path(for: ref, kind: .points) } catch {
        throw SpecError(pointer: pointer + error.pointer, message: error.message)
    }
    let x: Tensor
    do { x = try PointFiles.load(path: path) } catch {
        throw SpecError(pointer: pointer, message: "cannot read the points: \(error.message)")
    }
    let name: String
    switch ref {
    case .path(let p): name = p
    case .job(let id, let artifact): name = "job \(id)'s \(artifact ?? "samples")"
    }
    if x.shape[1] != pointSize {
        throw SpecError(pointer: pointer, message: "\(name) holds \(x.shape[1])-D points, the model is \(pointSize)-D")
    }
}

/// Point files held in memory by a training job (the parsed floats and the file bytes).
func addDataFiles(_ t: TrainingConfig, resolver: any ArtifactResolver, into e: inout ResourceEstimate) {
    for source in [t.data, t.source] {
        if case .points(let ref) = source, let bytes = resolver.fileSize(of: ref, kind: .points) {
            e.add("point file (bytes and parsed floats)", bytes: ResourceEstimate.multiply(bytes, 3))
        }
        // The whole split is held (one byte per 8-bit value), plus a transient copy while loading.
        if case .images(let ref) = source, let bytes = try? checkImageData(ref, shape: t.model.pointShape, pointer: "", resolver: resolver) {
            e.add("image dataset split", bytes: ResourceEstimate.multiply(bytes, 2))
        }
    }
}

extension JobResult {
    /// The training section of a train, reflow or distill job.
    public var training: TrainingSummary? { section("training", as: TrainingSummary.self) }
}
