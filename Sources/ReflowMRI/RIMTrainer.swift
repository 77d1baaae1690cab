public import ReflowEngine
public import ReflowNN
public import ReflowFlow
import ReflowAutograd

/// Trains a ``RIMNetwork`` on simulated acquisitions (issue #14).
///
/// **Batches.** Every step draws `batchSize` magnitude images from ``MRIImages`` and simulates
/// each one's acquisition (phase, mask, noise) with `Random(seed: seed + (step + 1)·φ)`, so a
/// step's batch depends on the seed and the step alone and a snapshot resumes bit for bit.
///
/// **Loss.** Every intermediate estimate x_τ (τ = 1…cascades·T) is compared with the reference
/// by `loss` on the scaled complex image [2, H, W] (each image divided by its zero-filled
/// image's largest magnitude, as at inference), weighted by ``RIMNetwork/lossWeights(_:)`` and
/// averaged over the batch — the loss "on every intermediate estimate" of mridc's RIM.
///
/// **Data parallel**, as the flow and classifier trainers: row shards on single-threaded worker
/// graphs, gradients summed in worker order, one Adam step.
public final class RIMTrainer: SteppedTrainer {
    public let config: RIMConfig
    public let network: RIMNetwork
    public let optimizer: Optimizer
    public let batchSize: Int
    public let learningRate: Float
    public let schedule: LRSchedule
    public let loss: Loss
    public let seed: UInt64
    public let threads: Int
    public let images: MRIImages
    public let acquisition: Acquisition
    public private(set) var step = 0
    let workers: [Graph]
    private let bins: [[Int]]

    /// - Throws: ``TrainerError`` for settings that cannot train.
    public init(_ config: RIMConfig, images: MRIImages, acquisition: Acquisition, batchSize: Int, learningRate: Float,
                schedule: LRSchedule = .constant, optimizer kind: OptimizerKind = .adam(), loss: Loss = .l1,
                seed: UInt64, threads: Int) throws {
        if let e = config.validationError() { throw TrainerError.badConfig(pointer: "/model" + e.pointer, message: e.message) }
        if let e = acquisition.validationError() { throw TrainerError.badConfig(pointer: "/acquisition" + e.pointer, message: e.message) }
        if let e = acquisition.mask.problem(height: images.height, width: images.width) {
            throw TrainerError.badConfig(pointer: "/acquisition/mask" + e.pointer, message: e.message)
        }
        guard (1...4096).contains(batchSize) else { throw TrainerError.badConfig(pointer: "/batchSize", message: "must be in [1, 4096], got \(batchSize)") }
        guard threads >= 1 && threads <= 256 else { throw TrainerError.badConfig(pointer: "/threads", message: "must be in [1, 256]") }
        self.config = config
        self.images = images
        self.acquisition = acquisition
        self.batchSize = batchSize
        self.learningRate = learningRate
        self.schedule = schedule
        self.loss = loss
        self.seed = seed
        self.threads = threads
        var rng = Random(seed: seed)
        network = RIMNetwork(config, rng: &rng)
        optimizer = Optimizer(kind, module: network)
        workers = (0..<threads).map { _ in Graph(threads: 1, accumulatesIntoParameters: false) }
        bins = optimizer.parallelBins(threads: threads)
    }

    /// Continues from a snapshot of ``snapshot()`` (weights, Adam moments, step).
    public func restore(_ s: TrainingSnapshot) throws {
        try s.restore(into: network, optimizer: optimizer)
        step = s.step
    }

    /// The resumable state (the RNG field holds the seed's generator: batches depend on the step only).
    public func snapshot() -> TrainingSnapshot {
        TrainingSnapshot(module: network, optimizer: optimizer, step: step, rng: Random(seed: seed).state)
    }

    /// The simulated problems of step `step`'s batch.
    public func batch(step: Int) -> [MRIProblem] {
        var rng = Random(seed: seed &+ UInt64(step + 1) &* 0x9E37_79B9_7F4A_7C15)
        let (h, w) = (images.height, images.width)
        return (0..<batchSize).map { _ in
            let m = images.draw(rng: &rng)
            // Parameters were validated in init, so the mask can be made.
            return try! acquisition.simulate(m, height: h, width: w, rng: &rng)
        }
    }

    /// One optimisation step; returns the batch's weighted loss before the update.
    @discardableResult
    public func trainStep() -> Float {
        let problems = batch(step: step)
        let b = batchSize
        let shared = WorkerShared((net: network, problems: problems, loss: loss,
                                   weights: RIMNetwork.lossWeights(config.cascades * config.steps)))
        let total = DataParallel.trainStep(optimizer, workers: workers, bins: bins, rows: b,
                                           learningRate: schedule.learningRate(base: learningRate, step: step)) { g, rows in
            RIMTrainer.loss(shared.value.net, Array(shared.value.problems[rows]), graph: g, loss: shared.value.loss,
                            weights: shared.value.weights, batchSize: b)
        }
        step += 1
        return total
    }


    /// Σ_τ w_τ · Σ_rows loss(x_τ, reference) / batchSize for problems with references, on `graph`.
    static func loss(_ net: RIMNetwork, _ problems: [MRIProblem], graph g: Graph, loss: Loss, weights: [Float], batchSize: Int) -> Var {
        let (h, w) = (problems[0].height, problems[0].width), plane = h * w, n = problems.count
        let scaled = problems.map { RIMNetwork.scaled($0) }
        let x0 = g.constant(shape: [n, 2, h, w]) { p in
            for (i, s) in scaled.enumerated() { ForwardModel.planes(s.x0, p.baseAddress! + i * 2 * plane, plane) }
        }
        let target = g.constant(shape: [n, 2, h, w]) { p in
            for (i, pr) in problems.enumerated() {
                var r = pr.reference!
                for k in 0..<r.data.count { r.data[k] /= scaled[i].scale }
                ForwardModel.planes(r, p.baseAddress! + i * 2 * plane, plane)
            }
        }
        let xs = net.estimates(x0, models: problems.map(\.model), measurements: scaled.map(\.y))
        var total: Var?
        for (t, x) in xs.enumerated() {
            let term = g.affine(g.sum(loss.perSample(x, target)), scale: weights[t] / Float(batchSize))
            total = total.map { g.binary(.add, $0, term) } ?? term
        }
        return total!
    }
}
