import ReflowEngine
import ReflowAutograd
import ReflowNN
import ReflowFlow
import ReflowStore
import Foundation

// The model side of a prune job: what it takes to retrain, probe, score and time one kind of
// trained model. Two kinds: image classifiers (classify jobs) and velocity models (train,
// reflow and distill jobs).

/// A trainer the prune job drives through one cycle.
protocol PruneTrainer: AnyObject {
    var step: Int { get }
    func trainStep() -> Float
    func snapshot() -> TrainingSnapshot
    /// The trained weights (pruning ranks these).
    var weights: [String: Tensor] { get }
    /// The weights that are scored (the EMA when the run keeps one).
    var evaluationWeights: [String: Tensor] { get }
}

extension ClassifierTrainer: PruneTrainer {
    var weights: [String: Tensor] { network.stateDict() }
    var evaluationWeights: [String: Tensor] { weights }
}

extension FlowTrainer: PruneTrainer {
    var weights: [String: Tensor] { model.stateDict() }
    var evaluationWeights: [String: Tensor] { ema?.shadow ?? weights }
}

/// One kind of prunable model, holding its data for the job's lifetime.
protocol PruneSubject {
    /// Parameters (name, shape) in module order.
    var parameters: [(name: String, shape: [Int])] { get }
    /// Layers whose units structured pruning may remove (empty: not supported).
    var links: [UnitLink] { get }
    var activation: Activation { get }
    /// Human-readable architecture (for results and PNG text).
    var description: String { get }
    /// The output file of the pruned model.
    var outputName: String { get }
    /// The same subject with a resized architecture (structured pruning).
    func resized(_ units: [String: Int]) -> Self
    /// A trainer for one cycle: from `start` (masked) or from a mid-cycle snapshot.
    func trainer(start: [String: Tensor], masks: PruneMasks, cycle: Int, restoring: TrainingSnapshot?) throws -> any PruneTrainer
    /// Dead-neuron counts on the fixed sample.
    func probe(_ weights: [String: Tensor]) throws -> ActivationProbe
    /// Named quality figures of `weights`.
    func quality(_ weights: [String: Tensor]) throws -> [String: Double]
    /// Median seconds of one forward pass over `rows` inputs on one thread.
    func inferenceSeconds(_ weights: [String: Tensor], rows: Int, repeats: Int) throws -> Double
    /// Writes the pruned model (weights, EMA when kept, masks, configs in the metadata).
    func write(weights: [String: Tensor], ema: [String: Tensor], masks: PruneMasks, step: Int, extra: [String: String], to path: String) throws
    /// Training steps per epoch of the data (classifiers), for the default DNR schedule.
    var stepsPerEpoch: Int? { get }
}

/// Median wall time of `body` over `repeats` runs (one warm-up run first).
func medianSeconds(repeats: Int, _ body: () -> Void) -> Double {
    body()
    var t = [Double]()
    for _ in 0..<max(1, repeats) {
        let s = monotonicSeconds()
        body()
        t.append(monotonicSeconds() - s)
    }
    t.sort()
    return t[t.count / 2]
}

struct ClassifierSubject: PruneSubject {
    var config: ClassifierConfig
    let artifact: ClassifierArtifact
    let train: ImageSet, test: ImageSet, testLabels: [Int32]
    let spec: PruneSpec
    let job: JobExecution
    /// The fixed DNR sample: pixels of `dnr.samples` training images chosen with a fixed seed.
    let probeRows: [Float], probeCount: Int

    init(artifact: ClassifierArtifact, spec: PruneSpec, job: JobExecution) throws {
        self.artifact = artifact
        config = artifact.config
        self.spec = spec
        self.job = job
        let ref = try ClassifierSubject.trainingData(artifact, spec)
        let locate: (String) throws -> DatasetLocation = { try job.locateDataset($0, what: "data") }
        do {
            train = try ref.load(locate: locate)
            test = try ImageDataRef(dataset: ref.dataset, split: .test).load(locate: locate)
        } catch let e as ImageDataError { throw JobError.invalidInput("data: \(e)") }
        guard train.labels != nil, let tl = test.labels else { throw JobError.invalidInput("data: the classifier's dataset has no labels") }
        guard train.imageShape == config.imageShape, test.imageShape == config.imageShape else {
            throw JobError.invalidInput("data: images of \(train.imageShape), the classifier expects \(config.imageShape ?? [])")
        }
        testLabels = tl
        var rng = Random(seed: 0x0D_EAD0)
        var idx = Array(0..<train.count)
        for i in stride(from: idx.count - 1, to: 0, by: -1) { idx.swapAt(i, rng.int(below: i + 1)) }
        probeCount = min(spec.dnr.samples, train.count)
        probeRows = train.tensor(Array(idx.prefix(probeCount))).data
    }

    /// The images a classifier is retrained on: `data`, or the dataset recorded in its file.
    static func trainingData(_ a: ClassifierArtifact, _ spec: PruneSpec) throws -> ImageDataRef {
        if let d = spec.data { return d }
        guard let json = a.metadata[ClassifierArtifact.datasetKey],
              let r = try? JSONDecoder().decode(ImageDataRef.self, from: Data(json.utf8)) else {
            throw JobError.invalidInput("data: the classifier records no training dataset; give data")
        }
        return r
    }

    var parameters: [(name: String, shape: [Int])] {
        var rng = Random(seed: 0)
        return config.makeNetwork(rng: &rng).namedParameters().map { ($0.name, $0.parameter.shape) }
    }
    var links: [UnitLink] { config.unitLinks }
    var activation: Activation { config.activation }
    var description: String { String(decoding: config.canonicalJSON, as: UTF8.self) }
    var outputName: String { JobDirectory.Name.classifier }
    var stepsPerEpoch: Int? { max(1, train.count / batchSize) }
    var batchSize: Int { min(spec.retrain.batchSize ?? 128, train.count) }

    func resized(_ units: [String: Int]) -> ClassifierSubject {
        var s = self
        s.config = config.resized(units)
        return s
    }

    func trainer(start: [String: Tensor], masks: PruneMasks, cycle: Int, restoring: TrainingSnapshot?) throws -> any PruneTrainer {
        let steps = max(1, spec.retrain.steps)
        let t: ClassifierTrainer
        do {
            t = try ClassifierTrainer(config, images: train, batchSize: batchSize, learningRate: spec.retrain.learningRate ?? 2e-3,
                                      schedule: spec.retrain.decay == .cosine ? .cosine(warmupSteps: 0, totalSteps: steps) : .constant,
                                      seed: spec.seed &+ UInt64(cycle), threads: job.threads)
        } catch let e as TrainerError { throw JobError.invalidInput(e.description) }
        if let restoring { try t.restore(restoring) } else { try t.network.load(stateDict: start) }
        try t.optimizer.setMasks(masks)
        return t
    }

    func probe(_ weights: [String: Tensor]) throws -> ActivationProbe {
        let net = try config.makeNetwork(stateDict: weights)
        let per = train.pixelsPerImage, g = Graph(threads: 1, gradEnabled: false)
        let probe = ActivationProbe()
        g.probe = probe
        probeRows.withUnsafeBufferPointer { rows in
            var lo = 0
            while lo < probeCount {
                let n = min(256, probeCount - lo)
                g.reset()
                let x = g.constant(shape: [n, per]) { $0.baseAddress!.update(from: rows.baseAddress! + lo * per, count: n * per) }
                _ = net(x)
                lo += n
            }
        }
        return probe
    }

    func quality(_ weights: [String: Tensor]) throws -> [String: Double] {
        let net = try config.makeNetwork(stateDict: weights)
        let n = min(spec.evaluation.n, test.count)
        let out = net.evaluate(test.tensor(Array(0..<n)).data, rows: n, threads: job.threads)
        return ["testAccuracy": out.accuracy(Array(testLabels.prefix(n))).overall]
    }

    func inferenceSeconds(_ weights: [String: Tensor], rows: Int, repeats: Int) throws -> Double {
        let net = try config.makeNetwork(stateDict: weights)
        let n = min(rows, test.count)
        let x = test.tensor(Array(0..<n)).data
        return medianSeconds(repeats: repeats) { _ = net.evaluate(x, rows: n, threads: 1, blockRows: n) }
    }

    func write(weights: [String: Tensor], ema: [String: Tensor], masks: PruneMasks, step: Int, extra: [String: String], to path: String) throws {
        var meta = artifact.metadata   // without Checkpoint's own keys (Checkpoint.read strips them)
        meta[ClassifierConfig.metadataKey] = String(decoding: config.canonicalJSON, as: UTF8.self)
        meta[ArtifactMetadata.jobType] = job.kindName
        meta[ArtifactMetadata.specDigest] = job.digest
        for (k, v) in extra { meta[k] = v }
        try Checkpoint.write(TrainingSnapshot(model: weights, step: step, rng: Random(seed: spec.seed).state, metadata: meta,
                                              masks: masks.masks), to: path)
    }
}

struct FlowSubject: PruneSubject {
    var model: ModelSpec
    let artifact: ModelArtifact
    let pairs: (z0: Tensor, z1: Tensor, labels: [Int32]?)?
    let spec: PruneSpec
    let job: JobExecution
    /// The fixed DNR sample: (x_t, t) rows drawn like training batches with a fixed seed.
    let probeX: [Float], probeT: [Float], probeLabels: [Int32]?
    /// Reference points for the quality figures (held-out images when the data are images).
    let reference: Tensor
    /// Classifier features of the reference when an evaluation classifier is given.
    let classifier: ClassifierArtifact?, referenceFeatures: [Float]?

    init(artifact: ModelArtifact, pairs: (z0: Tensor, z1: Tensor, labels: [Int32]?)?, spec: PruneSpec, job: JobExecution) throws {
        self.artifact = artifact
        model = artifact.model
        self.pairs = pairs
        self.spec = spec
        self.job = job
        let d = artifact.model.pointSize
        // A trainer only to draw the fixed sample exactly as batches are drawn.
        let sampler = try FlowSubject.makeTrainer(artifact.training, model: model, pairs: pairs, spec: spec, cycle: 0, job: job)
        let sample = sampler.fixedSample(rows: spec.dnr.samples, seed: 0x0D_EAD0)
        (probeX, probeT, probeLabels) = sample
        var target = artifact.training.data
        if case .images(let r) = target { target = .images(ImageDataRef(dataset: r.dataset, split: .test, limit: r.limit)) }
        let data: DataSampler
        if let t = try? job.sampler(target, pointSize: d, what: "data") { data = t } else {
            data = try job.sampler(artifact.training.data, pointSize: d, what: "data")
        }
        var rng = Random(seed: 1_000_003)
        reference = data.sample(spec.evaluation.n, rng: &rng)
        if let c = spec.evaluation.classifier {
            let a = try ClassifierArtifact.read(path: try job.resolve(c, kind: .classifier, what: "evaluation.classifier"))
            guard a.config.imageShape == artifact.model.pointShape else {
                throw JobError.invalidInput("evaluation.classifier: takes \(a.config.imageShape ?? []) images, the model's are \(artifact.model.pointShape)")
            }
            classifier = a
            referenceFeatures = try a.network().evaluate(reference.data, rows: reference.shape[0], threads: job.threads).features
        } else {
            classifier = nil
            referenceFeatures = nil
        }
    }

    static func makeTrainer(_ base: TrainingConfig, model: ModelSpec, pairs: (z0: Tensor, z1: Tensor, labels: [Int32]?)?, spec: PruneSpec, cycle: Int,
                            job: JobExecution, restoring: TrainingSnapshot? = nil) throws -> FlowTrainer {
        var c = base
        c.model = model
        c.seed = spec.seed &+ UInt64(cycle)
        // Fine-tuning after pruning trains on the pairs as they are: no second annealing from
        // β = 1, and no two-step term (it needs the original teacher).
        c.annealing = nil
        c.twoStep = nil
        if let lr = spec.retrain.learningRate { c.learningRate = lr }
        if let b = spec.retrain.batchSize { c.batchSize = b }
        if let e = spec.retrain.emaDecay {
            c.emaDecay = e
        } else if let e = c.emaDecay {
            c.emaDecay = min(e, max(0, 1 - 10 / Float(max(1, spec.retrain.steps))))
        }
        c.schedule = spec.retrain.decay == .cosine ? .cosine(warmupSteps: 0, totalSteps: max(1, spec.retrain.steps)) : .constant
        let resolve: (ArtifactRef) throws -> String = { try job.resolve($0, kind: .points, what: "data") }
        let locate: (String) throws -> DatasetLocation = { try job.locateDataset($0, what: "data") }
        // A model trained with the perceptual premetric retrains with it (same feature network).
        let features = try job.perceptualNetwork(c)
        do {
            if let restoring {
                return try FlowTrainer(c, threads: job.threads, restoring: restoring, pairs: pairs.map { ($0.z0, $0.z1) }, labels: pairs?.labels,
                                       resolve: resolve, locate: locate, perceptualNetwork: features)
            }
            if let pairs {
                return try FlowTrainer(c, threads: job.threads, pairs: (pairs.z0, pairs.z1), labels: pairs.labels, perceptualNetwork: features)
            }
            return try FlowTrainer(c, threads: job.threads, resolve: resolve, locate: locate, perceptualNetwork: features)
        } catch let e as TrainerError { throw JobError.invalidInput(e.description) }
    }

    var parameters: [(name: String, shape: [Int])] {
        var rng = Random(seed: 0)
        return model.makeNetwork(rng: &rng).namedParameters().map { ($0.name, $0.parameter.shape) }
    }
    var links: [UnitLink] { (model.config as? any UnitPrunable)?.unitLinks ?? [] }
    var activation: Activation { (model.config as? any UnitPrunable)?.unitActivation ?? .silu }
    var description: String { model.description }
    var outputName: String { JobDirectory.Name.model }
    var stepsPerEpoch: Int? { nil }

    func resized(_ units: [String: Int]) -> FlowSubject {
        var s = self
        if let m = model.mlp { s.model = ModelSpec(m.resized(units)) }
        return s
    }

    func trainer(start: [String: Tensor], masks: PruneMasks, cycle: Int, restoring: TrainingSnapshot?) throws -> any PruneTrainer {
        let t = try FlowSubject.makeTrainer(artifact.training, model: model, pairs: pairs, spec: spec, cycle: cycle, job: job, restoring: restoring)
        if restoring == nil {
            try t.model.load(stateDict: start)
            t.ema?.resetAverage(to: t.model)
        }
        try t.optimizer.setMasks(masks)
        t.ema?.apply(masks)
        return t
    }

    func probe(_ weights: [String: Tensor]) throws -> ActivationProbe {
        let net = try model.makeNetwork(stateDict: weights)
        let d = model.pointSize, rows = probeT.count
        let g = Graph(threads: 1, gradEnabled: false)
        let probe = ActivationProbe()
        g.probe = probe
        var lo = 0
        probeX.withUnsafeBufferPointer { xb in
            probeT.withUnsafeBufferPointer { tb in
                while lo < rows {
                    let n = min(256, rows - lo)
                    g.reset()
                    let labels = probeLabels.map { Array($0[lo..<(lo + n)]) }
                    _ = LabelBuffer.with(labels) { net.velocity(g, x: xb.baseAddress! + lo * d, t: tb.baseAddress! + lo, labels: $0, rows: n) }
                    lo += n
                }
            }
        }
        return probe
    }

    func quality(_ weights: [String: Tensor]) throws -> [String: Double] {
        let d = model.pointSize, n = reference.shape[0]
        let z = JobExecution.draw(try job.sampler(artifact.training.source, pointSize: d, what: "source"), n: n, seed: 1_000_001).x
        var q = [String: Double]()
        for k in spec.evaluation.steps {
            try job.checkStop()
            // A class-conditional model is scored under balanced labels, as `evaluate` samples it.
            let labels = Conditioning.labels(nil, perClass: nil, n: n, model: model)
            let interpolant = artifact.training.interpolant, method = interpolant.firstOrderMethod(steps: k)
            let x = try job.solve(model, weights, z, method, interpolant: interpolant, blockRows: job.blockRows(model, n: n), labels: labels).x
            let key = "\(method.name)\(k)"
            q[key + ".swd"] = try Metrics.slicedWasserstein2(a: x, b: reference, projections: 256, seed: 7)
            q[key + ".energy"] = try Metrics.energyDistance(a: x, b: reference, seed: 7)
            if let classifier, let real = referenceFeatures {
                let fake = try classifier.network().evaluate(x.data, rows: n, threads: job.threads).features
                q[key + ".fd"] = try FeatureMetrics.frechetDistance(real: real, fake: fake, d: classifier.config.featureDimension, threads: job.threads)
            }
        }
        return q
    }

    func inferenceSeconds(_ weights: [String: Tensor], rows: Int, repeats: Int) throws -> Double {
        let net = try model.makeNetwork(stateDict: weights)
        let d = model.pointSize
        var rng = Random(seed: 5)
        let x = rng.normal([rows, d]).data, t = [Float](repeating: 0, count: rows)
        let g = Graph(threads: 1, gradEnabled: false)
        return x.withUnsafeBufferPointer { xb in
            t.withUnsafeBufferPointer { tb in
                medianSeconds(repeats: repeats) {
                    g.reset()
                    _ = net.velocity(g, x: xb.baseAddress!, t: tb.baseAddress!, labels: nil, rows: rows)
                }
            }
        }
    }

    func write(weights: [String: Tensor], ema: [String: Tensor], masks: PruneMasks, step: Int, extra: [String: String], to path: String) throws {
        var training = artifact.training
        training.model = model
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys]
        var meta: [String: String] = [
            ModelSpec.metadataKey: String(decoding: model.canonicalJSON, as: UTF8.self),
            ArtifactMetadata.trainingConfig: String(decoding: try e.encode(training), as: UTF8.self),
            ArtifactMetadata.jobType: job.kindName, ArtifactMetadata.specDigest: job.digest,
        ]
        // How the weights started stays true of the pruned model (a rewind of it needs to know).
        if let i = artifact.snapshot.metadata[PruneJob.initializationKey] { meta[PruneJob.initializationKey] = i }
        for (k, v) in extra { meta[k] = v }
        try Checkpoint.write(TrainingSnapshot(model: weights, ema: masks.applied(to: ema), step: step, rng: Random(seed: spec.seed).state,
                                              metadata: meta, masks: masks.masks), to: path)
    }
}
