public import ReflowEngine
public import ReflowNN
public import ReflowFlow
import ReflowStore
import Foundation

/// `classify`: train an image classifier on a labelled dataset, for the image `evaluate` job's
/// features (and its class-balance histogram). Flat wire form:
/// `{"data": {"kind": "images", "dataset": "fashion-mnist"}, "model": {"kind": "cnn"}, "epochs": 3}`.
public struct ClassifySpec: JobInput {
    /// The labelled training images (an `images` data source).
    public var data: DataSource = .images(ImageDataRef(dataset: "builtin:shapes"))
    /// The held-out images the accuracy is measured on; null means the `test` split of `data`'s dataset.
    @Explicit public var test: ImageDataRef? = nil
    /// The architecture; `imageShape` and `classes` are filled in from the data.
    public var model = ClassifierConfig()
    public var batchSize = 128
    public var learningRate: Float = 2e-3
    /// Passes over the training images (⌊N / batchSize⌋ steps each), unless `steps` is given.
    public var epochs = 3
    /// Optimizer steps; null means `epochs` passes.
    @Explicit public var steps: Int? = nil
    /// The learning rate's decay: `"cosine"` (half-cosine to 0 over the run) or `"none"`.
    public var decay: Decay = .cosine
    public var seed: UInt64 = 0
    /// Steps between durable checkpoints (a restarted job resumes from the last one); 0 = only at the end.
    public var checkpointEvery = 500
    /// Steps between loss records in `loss.csv` and progress reports.
    public var logEvery = 50

    public enum Decay: String, Codable, Sendable { case none, cosine }

    public init() {}

    public func validationError() -> FieldError? {
        Validation.first(
            { Validation.member("/data", data) },
            { if case .images = data { return nil }; return ("/data", "must be an images data source ({\"kind\": \"images\", \"dataset\": …}); got \(data.kind)") },
            { test.flatMap { t in t.validationError().map { ("/test" + $0.pointer, $0.message) } } },
            { model.validationError().map { ("/model" + $0.pointer, $0.message) } },
            { Validation.range("/batchSize", batchSize, 1, 65_536) },
            { learningRate > 0 && learningRate.isFinite ? nil : ("/learningRate", "must be a positive number") },
            { Validation.range("/epochs", epochs, 1, 10_000) },
            { steps.flatMap { Validation.range("/steps", $0, 1, LoopSpec.maxSteps) } },
            { checkpointEvery >= 0 ? nil : ("/checkpointEvery", "must be ≥ 0 (0 = only at the end), got \(checkpointEvery)") },
            { logEvery >= 1 ? nil : ("/logEvery", "must be ≥ 1, got \(logEvery)") })
    }

    /// The training images' reference.
    var trainRef: ImageDataRef? {
        if case .images(let r) = data { return r }
        return nil
    }

    /// The held-out reference (`test`, or the data's dataset's test split).
    var testRef: ImageDataRef? { test ?? trainRef.map { ImageDataRef(dataset: $0.dataset, split: .test) } }
}

/// What a classify job trained and how well it classifies held-out images.
public struct ClassifierSummary: Codable, Sendable, Equatable {
    /// The architecture with `imageShape` and `classes` filled in.
    public var model: ClassifierConfig
    public var parameters: Int
    public var featureDimension: Int
    public var trainImages: Int
    public var testImages: Int
    public var steps: Int
    public var epochs: Double
    public var resumedFromStep: Int
    /// Mean cross-entropy of the last logged window of steps.
    public var recentMeanLoss: Double
    /// Accuracy on (up to 10,000 of) the training images and on the held-out images.
    public var trainAccuracy: Double
    public var testAccuracy: Double
    /// Held-out accuracy per class (null for a class absent from the held-out set).
    public var perClassAccuracy: [Double?]
    public var classNames: [String]?
    /// Seconds spent training in this run (after any resume), and evaluating.
    public var seconds: Double
    public var evaluationSeconds: Double
    public var stepsPerSecond: Double
    public var threads: Int
}

/// A classifier as read from a classify job's `classifier.safetensors`.
public struct ClassifierArtifact: Sendable {
    public var config: ClassifierConfig
    public var weights: [String: Tensor]
    /// The safetensors metadata (dataset, accuracy, job type, …).
    public var metadata: [String: String]

    /// Metadata keys a classify job writes besides ``ClassifierConfig/metadataKey``.
    public static let datasetKey = "reflowd.classifier_dataset"
    public static let testAccuracyKey = "reflowd.classifier_test_accuracy"

    /// Reads and checks a classifier file (config metadata present and valid, weights fitting it).
    public static func read(path: String) throws -> ClassifierArtifact {
        let s = try Checkpoint.read(path: path)
        let name = JobError.fileName(path)
        guard let json = s.metadata[ClassifierConfig.metadataKey] else {
            throw JobError.invalidInput("\(name) is not a classifier (no \(ClassifierConfig.metadataKey) metadata)")
        }
        let config: ClassifierConfig
        do { config = try JSONDecoder().decode(ClassifierConfig.self, from: Data(json.utf8)) } catch {
            throw JobError.invalidInput("\(name): unreadable classifier config: \(error)")
        }
        if let e = config.validationError() { throw JobError.invalidInput("\(name): classifier \(e.pointer): \(e.message)") }
        guard config.imageShape != nil, config.classes != nil else {
            throw JobError.invalidInput("\(name): the classifier config lacks imageShape or classes")
        }
        do { _ = try config.makeNetwork(stateDict: s.model) } catch { throw JobError.invalidInput("\(name): \(error)") }
        return ClassifierArtifact(config: config, weights: s.model, metadata: s.metadata)
    }

    /// The network holding the weights.
    public func network() throws -> ClassifierNetwork { try config.makeNetwork(stateDict: weights) }
}

public enum ClassifyJob: JobKind {
    public static let name = "classify"
    public static let summary = "Train an image classifier (MLP or small CNN) on a labelled dataset; its features drive image evaluation."
    public static let phases = ["train", "evaluate"]
    public static let outputs = [
        JobOutput(JobDirectory.Name.classifier, "the trained classifier (weights; its config, dataset and test accuracy in the metadata)"),
        JobOutput(JobDirectory.Name.lossLog, "step,loss records every logEvery steps"),
    ]
    public static let trainingPhases = ["train"]

    public static func prepare(_ input: ClassifySpec, resolver: any ArtifactResolver) throws(SpecError) -> ClassifySpec {
        do { return try checked(input, resolver: resolver) } catch let e as SpecError { throw e } catch {
            throw SpecError(pointer: "/input", message: "\(error)")
        }
    }

    // (Unoptimised: Swift 6.3.1's CopyPropagation pass crashes on this function at -O.)
    @_optimize(none)
    static func checked(_ input: ClassifySpec, resolver: any ArtifactResolver) throws -> ClassifySpec {
        var s = input
        guard let train = s.trainRef, let test = s.testRef else {
            throw SpecError(pointer: "/input/data", message: "must be an images data source ({\"kind\": \"images\", \"dataset\": …}); got \(input.data.kind)")
        }
        let a = try ImageSplits.describe(train, pointer: "/input/data", resolver: resolver)
        let b = try ImageSplits.describe(test, pointer: "/input/test", resolver: resolver)
        if a.labelled == false {
            throw SpecError(pointer: "/input/data", message: "dataset '\(train.dataset)' (\(train.split.rawValue)) has no labels; a classifier needs labelled images")
        }
        if b.labelled == false {
            throw SpecError(pointer: "/input/test", message: "dataset '\(test.dataset)' (\(test.split.rawValue)) has no labels; accuracy needs labelled images")
        }
        if let sa = a.shape, let sb = b.shape, sa != sb {
            throw SpecError(pointer: "/input/test", message: "holds \(sb.map(String.init).joined(separator: "×")) images, the training images are \(sa.map(String.init).joined(separator: "×"))")
        }
        if let sa = a.shape {
            if let given = s.model.imageShape, given != sa {
                throw SpecError(pointer: "/input/model/imageShape", message: "the data holds \(sa.map(String.init).joined(separator: "×")) images")
            }
            s.model.imageShape = sa
        }
        let classes = max(a.classes ?? 0, b.classes ?? 0)
        if classes > 0 {
            let k = classes
            if let given = s.model.classes, given < k {
                throw SpecError(pointer: "/input/model/classes", message: "the data has \(k) classes")
            }
            s.model.classes = s.model.classes ?? k
        }
        return s
    }

    public static func estimate(_ s: ClassifySpec, resolver: any ArtifactResolver, threads: Int) throws(SpecError) -> ResourceEstimate {
        var e = ResourceEstimate()
        var m = s.model
        m.imageShape = m.imageShape ?? [1, 28, 28]
        m.classes = m.classes ?? 10
        // value, grad, per-worker grads, Adam m and v, the snapshot's copies and file bytes.
        e.add("parameters, gradients, optimizer state and checkpoint copies", floats: m.parameterCount, 8 + threads)
        e.add("batch buffer", floats: s.batchSize, m.imageShape!.reduce(1, *))
        e.add("activations and their gradients", floats: s.batchSize, m.activationFloatsPerRow, 2)
        e.add("evaluation blocks (activations, features and logits)", floats: threads, 256, m.activationFloatsPerRow)
        for (ref, what) in [(s.trainRef, "training images"), (s.testRef, "held-out images")] {
            if let ref, let info = try? ImageSplits.describe(ref, pointer: "", resolver: resolver), let bytes = info.bytes {
                e.add("\(what) (and a transient copy while loading)", bytes: ResourceEstimate.multiply(bytes, 2))
                // The held-out and training-accuracy rows as floats, with their features.
                e.add("\(what) as floats for accuracy", floats: min(info.count ?? 0, 10_000), m.imageShape!.reduce(1, *) + m.featureDimension + (m.classes ?? 10))
            }
        }
        return e
    }

    public static func run(_ s: ClassifySpec, job: JobExecution) throws -> JobResult.Sections {
        guard let trainRef = s.trainRef, let testRef = s.testRef else { throw JobError.invalidInput("data: must be an images data source") }
        let locate: (String) throws -> DatasetLocation = { try job.locateDataset($0, what: "data") }
        let train: ImageSet, test: ImageSet
        do {
            train = try trainRef.load(locate: locate)
            test = try testRef.load(locate: locate)
        } catch let e as ImageDataError { throw JobError.invalidInput("data: \(e)") }
        guard train.labels != nil else { throw JobError.invalidInput("data: dataset '\(trainRef.dataset)' has no labels") }
        guard let testLabels = test.labels else { throw JobError.invalidInput("test: dataset '\(testRef.dataset)' has no labels") }
        guard train.imageShape == test.imageShape else {
            throw JobError.invalidInput("test: holds \(test.imageShape) images, the training images are \(train.imageShape)")
        }
        var config = s.model
        config.imageShape = train.imageShape
        config.classes = max(config.classes ?? 0, train.classCount ?? 0, test.classCount ?? 0, 2)
        let trainer: ClassifierTrainer
        do {
            let perEpoch = max(1, train.count / min(s.batchSize, train.count))
            let total = s.steps ?? s.epochs * perEpoch
            let schedule: LRSchedule = s.decay == .cosine ? .cosine(warmupSteps: 0, totalSteps: max(1, total)) : .constant
            trainer = try ClassifierTrainer(config, images: train, batchSize: min(s.batchSize, train.count),
                                            learningRate: s.learningRate, schedule: schedule, seed: s.seed, threads: job.threads)
        } catch let e as TrainerError { throw JobError.invalidInput(e.description) }
        let total = s.steps ?? s.epochs * trainer.stepsPerEpoch

        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys]
        let meta: [String: String] = [
            ClassifierConfig.metadataKey: String(decoding: config.canonicalJSON, as: UTF8.self),
            ClassifierArtifact.datasetKey: String(decoding: try e.encode(trainRef), as: UTF8.self),
            ArtifactMetadata.jobType: job.kindName, ArtifactMetadata.specDigest: job.digest,
            PruneJob.initSeedKey: String(s.seed),
        ]
        func owned(_ snap: TrainingSnapshot, _ name: String) throws {
            guard snap.metadata[ArtifactMetadata.specDigest] == job.digest else {
                throw JobError.invalidInput("\(name) belongs to a different job spec; use an empty directory")
            }
        }
        let final = job.directory.file(JobDirectory.Name.classifier)
        var resumed = 0, log = [(Int, Double)](), seconds = 0.0, recent = Double.nan
        func save(_ path: String, extra: [String: String] = [:]) throws {
            var snap = trainer.snapshot()
            for (k, v) in meta { snap.metadata[k] = v }
            for (k, v) in extra { snap.metadata[k] = v }
            try Checkpoint.write(snap, to: path)
            try job.write(Array((["step,loss"] + log.map { "\($0.0),\($0.1)" }).joined(separator: "\n").utf8) + [10], JobDirectory.Name.lossLog)
        }
        let finished = FileManager.default.fileExists(atPath: final)
        if finished || FileManager.default.fileExists(atPath: job.directory.checkpoint) {
            // A finished run (killed while evaluating, or run again) or an interrupted one.
            let name = finished ? JobDirectory.Name.classifier : JobDirectory.Name.checkpoint
            let snap = try Checkpoint.read(path: finished ? final : job.directory.checkpoint)
            try owned(snap, name)
            try trainer.restore(snap)
            resumed = snap.step
            log = job.readLossLog(upTo: snap.step)
            recent = log.last?.1 ?? .nan
        }
        if !finished {
            let start = monotonicSeconds()
            var windowSum = 0.0, windowCount = 0
            job.progress("train", resumed, total)
            while trainer.step < total {
                if job.context.shouldStop() {
                    try save(job.directory.checkpoint)
                    throw JobError.interrupted
                }
                let loss = Double(trainer.trainStep())
                guard loss.isFinite else {
                    throw JobError.diverged("classifier training diverged: the loss is \(loss) at step \(trainer.step) (lower learningRate)")
                }
                windowSum += loss
                windowCount += 1
                let step = trainer.step
                if step % s.logEvery == 0 || step == total {
                    recent = windowSum / Double(windowCount)
                    log.append((step, recent))
                    windowSum = 0
                    windowCount = 0
                    job.progress("train", step, total, loss: recent)
                }
                if s.checkpointEvery > 0 && step % s.checkpointEvery == 0 && step < total {
                    try save(job.directory.checkpoint)
                }
            }
            seconds = monotonicSeconds() - start
            // Trained: keep the weights before evaluating (a stop during evaluation loses no training).
            if trainer.step > resumed { try save(job.directory.checkpoint) }
        }

        // Accuracy on the held-out images and on (up to 10,000 of) the training images.
        job.progress("evaluate", 0, 2)
        let evalStart = monotonicSeconds()
        let net = trainer.network
        let testOut = net.evaluate(test.tensor(Array(0..<test.count)).data, rows: test.count, threads: job.threads)
        let acc = testOut.accuracy(testLabels)
        try job.checkStop()
        job.progress("evaluate", 1, 2)
        let trainRows = min(train.count, 10_000)
        let trainOut = net.evaluate(train.tensor(Array(0..<trainRows)).data, rows: trainRows, threads: job.threads)
        let trainAcc = trainOut.accuracy(Array(train.labels!.prefix(trainRows))).overall
        if !finished {
            try save(final, extra: [ClassifierArtifact.testAccuracyKey: String(acc.overall)])
            try? FileManager.default.removeItem(atPath: job.directory.checkpoint)
            try? FileManager.default.removeItem(atPath: job.directory.checkpoint + ".sha256")
        }
        job.progress("evaluate", 2, 2)
        let summary = ClassifierSummary(
            model: config, parameters: net.parameterCount, featureDimension: config.featureDimension,
            trainImages: train.count, testImages: test.count, steps: trainer.step,
            epochs: Double(trainer.step) / Double(trainer.stepsPerEpoch), resumedFromStep: resumed,
            recentMeanLoss: recent.isFinite ? recent : 0, trainAccuracy: trainAcc, testAccuracy: acc.overall,
            perClassAccuracy: acc.perClass, classNames: train.classNames ?? test.classNames,
            seconds: seconds, evaluationSeconds: monotonicSeconds() - evalStart,
            stepsPerSecond: seconds > 0 ? Double(trainer.step - resumed) / seconds : 0, threads: job.threads)
        return ["classifier": try ResultValue(encoding: summary)]
    }
}

extension JobResult {
    /// The classifier section of a classify job.
    public var classifier: ClassifierSummary? { section("classifier", as: ClassifierSummary.self) }
}
