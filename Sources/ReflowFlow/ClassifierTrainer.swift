import ReflowEngine
import ReflowAutograd
public import ReflowNN

/// Trains a ``ClassifierNetwork`` on labelled images with softmax cross-entropy and Adam.
///
/// **Batches.** Epochs of shuffled images without replacement: step s uses rows
/// `(s mod S)·B ..< (s mod S + 1)·B` of epoch ⌊s / S⌋'s permutation (S = ⌊N / B⌋ steps per
/// epoch; the last partial batch is dropped), and epoch e's permutation is drawn from
/// `Random(seed: seed + 1 + e)`. The batch of a step is therefore a function of the step alone,
/// so a snapshot needs no RNG state to resume bit for bit.
///
/// **Data parallel**, as ``FlowTrainer``: the batch is cut into `threads` row shards, each
/// shard runs forward and backward on its own graph with single-threaded kernels, its summed
/// loss scaled by 1/B, and the shard gradients are summed in worker order before one Adam step.
public final class ClassifierTrainer {
    public let config: ClassifierConfig
    public let network: ClassifierNetwork
    public let optimizer: Optimizer
    public let batchSize: Int
    public let learningRate: Float
    public let schedule: LRSchedule
    public let seed: UInt64
    public let threads: Int
    public private(set) var step = 0
    let images: ImageSet
    let labels: [Int32]
    let workers: [Graph]
    private let bins: [[Int]]
    private var permutation: [Int] = []
    private var permutationEpoch = -1
    private var batchX: [Float]
    private var batchY: [Int32]

    /// Steps per epoch (⌊N / B⌋, at least 1).
    public var stepsPerEpoch: Int { max(1, images.count / batchSize) }

    /// - Throws: ``TrainerError`` for unlabelled images, a config that does not match them, or
    ///   bad settings.
    public init(_ config: ClassifierConfig, images: ImageSet, batchSize: Int, learningRate: Float,
                schedule: LRSchedule = .constant, optimizer kind: OptimizerKind = .adam(), seed: UInt64, threads: Int) throws {
        guard let labels = images.labels, let k = config.classes else {
            throw TrainerError.badConfig(pointer: "/data", message: "the images have no labels")
        }
        if let e = config.validationError() { throw TrainerError.badConfig(pointer: "/model" + e.pointer, message: e.message) }
        guard config.imageShape == images.imageShape else {
            throw TrainerError.badConfig(pointer: "/model/imageShape", message: "the images are \(images.imageShape), the model expects \(config.imageShape ?? [])")
        }
        guard let m = labels.max(), Int(m) < k else {
            throw TrainerError.badConfig(pointer: "/model/classes", message: "labels reach \(labels.max() ?? -1), the model has \(k) classes")
        }
        guard batchSize >= 1, batchSize <= images.count else {
            throw TrainerError.badConfig(pointer: "/batchSize", message: "must be in [1, \(images.count)] (the training images), got \(batchSize)")
        }
        guard threads >= 1 && threads <= 256 else { throw TrainerError.badConfig(pointer: "/threads", message: "must be in [1, 256]") }
        self.config = config
        self.images = images
        self.labels = labels
        self.batchSize = batchSize
        self.learningRate = learningRate
        self.schedule = schedule
        self.seed = seed
        self.threads = threads
        var rng = Random(seed: seed)
        network = config.makeNetwork(rng: &rng)
        optimizer = Optimizer(kind, module: network)
        workers = (0..<threads).map { _ in Graph(threads: 1, accumulatesIntoParameters: false) }
        bins = optimizer.parallelBins(threads: threads)
        batchX = [Float](repeating: 0, count: batchSize * images.pixelsPerImage)
        batchY = [Int32](repeating: 0, count: batchSize)
    }

    /// Continues from a snapshot of ``snapshot()`` (weights, Adam moments, step).
    public func restore(_ s: TrainingSnapshot) throws {
        try s.restore(into: network, optimizer: optimizer)
        step = s.step
    }

    /// The resumable state (the RNG field holds the seed's generator; batches depend on the step only).
    public func snapshot() -> TrainingSnapshot {
        TrainingSnapshot(module: network, optimizer: optimizer, step: step, rng: Random(seed: seed).state)
    }

    private func fillBatch() {
        let spe = stepsPerEpoch, epoch = step / spe, offset = (step % spe) * batchSize
        if epoch != permutationEpoch {
            var rng = Random(seed: seed &+ 1 &+ UInt64(epoch))
            permutation = Array(0..<images.count)
            for i in stride(from: permutation.count - 1, to: 0, by: -1) { permutation.swapAt(i, rng.int(below: i + 1)) }
            permutationEpoch = epoch
        }
        let per = images.pixelsPerImage
        batchX.withUnsafeMutableBufferPointer { xb in
            for r in 0..<batchSize {
                let i = permutation[(offset + r) % permutation.count]
                images.copyImage(i, into: xb.baseAddress! + r * per)
                batchY[r] = labels[i]
            }
        }
    }

    /// One optimisation step; returns the batch's mean cross-entropy before the update.
    @discardableResult
    public func trainStep() -> Float {
        fillBatch()
        let b = batchSize, per = images.pixelsPerImage
        let shared = WorkerShared((net: network, labels: batchY, x: batchX))
        let loss = DataParallel.trainStep(optimizer, workers: workers, bins: bins, rows: b,
                                          learningRate: schedule.learningRate(base: learningRate, step: step)) { g, rows in
            let x = g.constant(shape: [rows.count, per]) { dst in
                shared.value.x.withUnsafeBufferPointer { dst.baseAddress!.update(from: $0.baseAddress! + rows.lowerBound * per, count: rows.count * per) }
            }
            let ce = g.softmaxCrossEntropy(shared.value.net(x).logits, labels: Array(shared.value.labels[rows]))
            return g.affine(g.sum(ce), scale: 1 / Float(b))
        }
        step += 1
        return loss
    }

}
