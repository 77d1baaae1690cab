public import ReflowEngine
import ReflowAutograd
import ReflowCodec
public import ReflowNN

/// Hyperparameters of a flow-matching run: the model, the coupling's data and source, and the
/// optimisation. Wire JSON is flat (`{"data": {"kind": "twoMoons"}, "model": {"width": 64},
/// "learningRate": 1e-3}`); absent keys take the defaults below (``DefaultDecodable``).
public struct TrainingConfig: DefaultDecodable, Sendable, Equatable, Validatable {
    /// π1, the target (data) distribution.
    public var data: DataSource = .distribution(.gaussianRing())
    /// π0, the source: noise for generation (N(0, I) in the model's dimension by default), or
    /// another distribution for transport between two domains (Liu et al. 2022, domain transfer).
    public var source: DataSource = .standardNormal
    public var model = ModelSpec()
    /// How (x0, x1, t) become the input x_t and the target (see ``Interpolant``).
    public var interpolant: Interpolant = .rectifiedFlow
    public var batchSize: Int = 512
    public var learningRate: Float = 1e-3
    public var optimizer: OptimizerKind = .adam()
    public var schedule: LRSchedule = .constant
    public var loss: Loss = .mse
    /// EMA decay; null keeps no EMA.
    @Explicit public var emaDecay: Float? = 0.999
    /// Global gradient-norm clip; null disables clipping.
    @Explicit public var gradClipNorm: Float? = nil
    public var seed: UInt64 = 0
    /// How flow times are drawn (default t ~ U[0, 1), as in rf_torch.py).
    public var timeSampler: TimeSampler = .uniform(epsilon: 0)
    /// For a class-conditional model: the probability that a row's label is replaced by the
    /// null label, so the same network learns v(x, t | ∅) for classifier-free guidance (Ho &
    /// Salimans 2022; InstaFlow's teacher: 10 %). Unused by unconditional models.
    public var labelDropout: Float = 0.1
    /// The perceptual premetric of 2-rectified flow++ (``PerceptualLoss``) on top of `loss`;
    /// null trains on `loss` alone.
    @Explicit public var perceptual: PerceptualLoss? = nil
    /// Stored pairs only: SlimFlow's annealing of the pairs' noise (``Annealing``); null: none.
    @Explicit public var annealing: Annealing? = nil
    /// Stored image pairs only: mirror each drawn pair (noise and data together) left to right
    /// with probability ½ (SlimFlow's flip augmentation; the teacher is flip-equivariant).
    public var flipPairs = false
    /// One-step distillation only: SlimFlow's flow-guided two-step term with the frozen teacher
    /// (``TwoStepDistillation``); null: none.
    @Explicit public var twoStep: TwoStepDistillation? = nil
    /// Where `loss` compares: `output` (the network's output against its target, the default)
    /// or `data` (the data each output predicts, ``Interpolant/dataScale(networkTime:)``;
    /// Rectified Diffusion's loss on x̂0).
    public var lossSpace: LossSpace = .output
    /// Phased Rectified Diffusion: the number of phases K of the stored pairs (phase-start
    /// points and the teacher's phase-end points, ``PhasedRectification``); needs a `vp`
    /// interpolant (ε or v prediction). null: ordinary training.
    @Explicit public var phases: Int? = nil

    public init() {}

    /// Largest batch accepted (the memory budget of a job is checked separately).
    public static let maxBatchSize = 1 << 20

    /// The first invalid setting as (JSON pointer, message), or nil when the config is usable.
    public func validationError() -> FieldError? {
        fieldError() ?? consistencyError()
    }

    /// Whether `data` and `source` give points of the model's size, and the options that need a
    /// kind of interpolant have it. Separate from ``fieldError()`` because a student spec fills
    /// `model`, `data`, `source` and `interpolant` it leaves out from its teacher after
    /// decoding: until then only the fields are checked.
    public func consistencyError() -> FieldError? {
        let d = model.pointSize
        return Validation.first(
            { data.knownPointSize(modelPointSize: d).flatMap { $0 == d ? nil : ("/data", "gives \($0)-D points, the model is \(d)-D (set model.dimension or pick other data)") } },
            { source.knownPointSize(modelPointSize: d).flatMap { $0 == d ? nil : ("/source", "gives \($0)-D points, the model is \(d)-D (use {\"kind\": \"normal\"} for N(0, I) in the model's dimension)") } },
            {
                // (With the interpolant, which a student may inherit from its teacher.)
                guard let k = phases else { return nil }
                guard let vp = interpolant.diffusion else {
                    return ("/phases", "phased rectification trains a VP model: set interpolant {\"kind\": \"vp\", …}")
                }
                return k > vp.steps ? ("/phases", "\(k) phases of a \(vp.steps)-step schedule") : nil
            },
            { twoStep != nil && interpolant != .rectifiedFlow ? ("/twoStep", "follows velocities: the student must be a rectified flow") : nil },
            { perceptual != nil && interpolant != .rectifiedFlow ? ("/perceptual", "needs the rectifiedFlow interpolant (x̂ = x_t + (1 − t)·v)") : nil })
    }

    /// The first invalid field on its own (without ``consistencyError()``).
    public func fieldError() -> FieldError? {
        Validation.first(
            { Validation.member("/data", data) },
            { Validation.member("/source", source) },
            { Validation.member("/model", model) },
            { Validation.member("/optimizer", optimizer) },
            { Validation.range("/batchSize", batchSize, 1, TrainingConfig.maxBatchSize) },
            { learningRate > 0 && learningRate.isFinite ? nil : ("/learningRate", "must be a positive number") },
            { schedule.validationPointer().map { ("/schedule" + $0.pointer, $0.message) } },
            { loss.validationError().map { ("/loss/c", $0) } },
            { emaDecay.flatMap { $0 >= 0 && $0 < 1 ? nil : ("/emaDecay", "must be in [0, 1), got \($0)") } },
            { gradClipNorm.flatMap { $0 > 0 && $0.isFinite ? nil : ("/gradClipNorm", "must be a positive number") } },
            { labelDropout >= 0 && labelDropout <= 1 ? nil : ("/labelDropout", "must be in [0, 1], got \(labelDropout)") },
            { Validation.member("/perceptual", perceptual) },
            { Validation.member("/annealing", annealing) },
            { Validation.member("/twoStep", twoStep) },
            { Validation.member("/interpolant", interpolant) },
            {
                guard let k = phases else { return nil }
                if !(1...PhasedRectification.maxPhases).contains(k) { return ("/phases", "must be in [1, \(PhasedRectification.maxPhases)], got \(k)") }
                if annealing != nil { return ("/annealing", "anneals pure noise; the pairs of phased rectification start inside the schedule") }
                return nil
            },
            { Validation.member("/timeSampler", timeSampler) })
    }
}

/// A flow-matching training loop: minimise loss(v(x_t, t), target) with t from the configured
/// ``TimeSampler`` and (x_t, target) from the configured ``Interpolant``, over a coupling of
/// (x0, x1): independent draws x0 ~ π0 (`source`), x1 ~ π1 (`data`) for a 1-RF, or stored pairs
/// for a reflow / distillation. The model is any ``VelocityNetwork`` built from `config.model`.
///
/// **Data parallel.** With `threads` = T, each step draws the whole batch on the calling
/// thread (one RNG stream, so the data does not depend on T), cuts it into T row shards and
/// runs forward and backward of each shard on its own worker and graph with single-threaded
/// GEMMs. Each shard's loss is scaled by rows/B, so the shard gradients sum exactly (in exact
/// arithmetic) to the full-batch gradient; they are summed in worker order into
/// `Parameter.grad`, then clipping, the optimizer and the EMA run once. Every kernel runs in
/// parallel this way, not just the GEMMs, and no worker waits on another inside a step.
/// Results are deterministic for a given T (different T round differently).
///
/// Each worker's graph is reused for every step, so after the first step nothing is allocated
/// (``bufferAllocations`` stops growing). All randomness comes from one ``Random`` stream that
/// is part of the snapshot, so `snapshot()` → `init(restoring:)` continues bit for bit.
public final class FlowTrainer {
    public let config: TrainingConfig
    public let model: any VelocityNetwork
    public let optimizer: Optimizer
    public let ema: EMA?
    /// Worker count (row shards per step).
    public let threads: Int
    /// One graph per worker; gradients stay in the graphs until they are summed.
    let workers: [Graph]
    public private(set) var rng: Random
    public private(set) var step = 0
    /// The independent coupling's samplers (nil with stored pairs).
    let data: DataSampler?, source: DataSampler?
    /// The current batch: x0, x1 → x_t and targets [B, D]; times [B].
    private var batchX0: [Float], batchX1: [Float], batchXt: [Float], batchTarget: [Float], batchT: [Float]
    /// Per row, the factor from output error to data error (`lossSpace: data`) [B], and the
    /// phase of each row's pair (phased rectification) [B]; empty when unused.
    private var batchScale: [Float], batchPhase: [Int32]
    /// The phases' (start, end) indices (phased rectification).
    let phaseBounds: [(start: Int, end: Int)]
    /// Class labels of the batch rows for a class-conditional model ([B]); empty otherwise.
    private var batchLabels: [Int32]
    /// The model's classes when it is class-conditional (labels then reach the network).
    var classes: Int? { config.model.classes }
    /// The optimizer step whose batch is being drawn (the annealing's k).
    private var drawStep = 0
    /// The frozen teacher of the two-step term (`config.twoStep`).
    let guideNetwork: (any VelocityNetwork)?
    /// The two-step term's fresh noise [B, D] and times [B] (empty without it).
    private var batchZ: [Float], batchU: [Float]
    /// The frozen feature network of the perceptual premetric (`config.perceptual`). Its
    /// weights are read, never updated (the optimizer holds only the model's parameters).
    let perceptualNetwork: ClassifierNetwork?
    private var shardLoss: [Float]
    /// Parameters per worker for the gradient sum and the update (balanced by size).
    private let bins: [[Int]]

    /// Fixed training pairs (z0, z1), each [N, D], for reflow and distillation; nil draws
    /// independent x0 ~ source, x1 ~ data every step (1-rectified flow).
    public let pairs: (z0: Tensor, z1: Tensor)?
    /// The class label of each pair ([N]) when the pairs were generated under labels.
    public let pairLabels: [Int32]?
    /// Hex SHA-256 of the stored pairs' float bytes (z0 then z1, then the labels when a
    /// conditional student uses them), recorded in snapshots.
    public let pairsDigest: String?

    /// A 1-RF trainer on independent draws. `resolve` maps artifact references of point-set
    /// sources to readable files (not needed for built-in sources).
    public convenience init(_ config: TrainingConfig, threads: Int,
                            resolve: (ArtifactRef) throws -> String = { _ in throw DataSourceError("no resolver for point files") },
                            locate: (String) throws -> DatasetLocation = BuiltinImageSets.locate,
                            perceptualNetwork: ClassifierNetwork? = nil) throws {
        try FlowTrainer.check(config, threads: threads, perceptualNetwork: perceptualNetwork)
        let d = config.model.pointSize
        let data: DataSampler, source: DataSampler
        do {
            data = try config.data.sampler(pointSize: d, resolve: resolve, locate: locate)
            source = try config.source.sampler(pointSize: d, resolve: resolve, locate: locate)
        } catch let e as DataSourceError {
            throw TrainerError.badConfig(pointer: "/data", message: e.description)
        }
        try FlowTrainer.checkLabels(config, available: data.classCount, what: "the data")
        if config.twoStep != nil {
            throw TrainerError.badConfig(pointer: "/twoStep", message: "needs a teacher: it is a term of one-step distillation")
        }
        if config.phases != nil {
            throw TrainerError.badConfig(pointer: "/phases", message: "trains on a teacher's phase pairs: use it in a reflow job")
        }
        self.init(config, threads: threads, data: data, source: source, pairsStorage: nil, labels: nil,
                  perceptualNetwork: perceptualNetwork, guideNetwork: nil)
    }

    /// A conditional model needs labels, and no more classes than it has.
    static func checkLabels(_ config: TrainingConfig, available: Int?, what: String) throws {
        guard let k = config.model.classes else { return }
        guard let n = available else {
            throw TrainerError.badConfig(pointer: "/model/classes", message: "a class-conditional model needs labelled training data; \(what) has no labels")
        }
        if n > k { throw TrainerError.badConfig(pointer: "/model/classes", message: "\(what) has \(n) classes, the model \(k)") }
    }

    /// A trainer on a stored coupling: batches are drawn uniformly (with replacement) from the
    /// pairs — the (k+1)-RF of a reflow, or a distillation with `.grid` times. `initialWeights`
    /// starts from a teacher's weights (fine-tuning, as the paper's image code does for reflow)
    /// with a fresh optimizer and EMA.
    /// `labels` ([N]) are the pairs' class labels (pairs a conditional teacher generated); a
    /// conditional student needs them.
    /// `guideNetwork` is the teacher of the two-step term (`config.twoStep`); its weights are
    /// frozen here.
    public convenience init(_ config: TrainingConfig, threads: Int, pairs: (z0: Tensor, z1: Tensor), labels: [Int32]? = nil,
                            initialWeights: [String: Tensor]? = nil, perceptualNetwork: ClassifierNetwork? = nil,
                            guideNetwork: (any VelocityNetwork)? = nil) throws {
        try FlowTrainer.check(config, threads: threads, perceptualNetwork: perceptualNetwork)
        if config.twoStep != nil {
            guard let guide = guideNetwork, guide.spec.pointSize == config.model.pointSize else {
                throw TrainerError.badConfig(pointer: "/twoStep", message: "needs the teacher's network (of the student's point size)")
            }
        }
        let d = config.model.pointSize
        guard pairs.z0.rank >= 2, pairs.z0.shape == pairs.z1.shape, pairs.z0.count == pairs.z0.shape[0] * d, pairs.z0.shape[0] > 0 else {
            throw TrainerError.badPairs("pairs must be two [N, \(d)] tensors with N > 0, got \(pairs.z0.shape) and \(pairs.z1.shape)")
        }
        // A diverged teacher would otherwise train the student on NaN silently.
        if let i = pairs.z0.data.firstIndex(where: { !$0.isFinite }) ?? pairs.z1.data.firstIndex(where: { !$0.isFinite }) {
            throw TrainerError.badPairs("pair row \(i / d) holds a non-finite value")
        }
        if let labels {
            guard labels.count == pairs.z0.shape[0] else { throw TrainerError.badPairs("\(labels.count) labels for \(pairs.z0.shape[0]) pairs") }
            if let bad = labels.first(where: { $0 < 0 || $0 >= Int32(config.model.classes ?? Int(Int32.max)) }) {
                throw TrainerError.badPairs("pair label \(bad) is outside the model's classes")
            }
        }
        try FlowTrainer.checkLabels(config, available: labels.map { Int($0.max() ?? 0) + 1 }, what: "the pairs")
        self.init(config, threads: threads, data: nil, source: nil, pairsStorage: pairs,
                  labels: config.model.classes == nil ? nil : labels, perceptualNetwork: perceptualNetwork, guideNetwork: guideNetwork)
        if let initialWeights {
            try model.load(stateDict: initialWeights)
            ema?.resetAverage(to: model)
        }
    }

    static func check(_ config: TrainingConfig, threads: Int, perceptualNetwork: ClassifierNetwork?) throws {
        if let (pointer, message) = config.validationError() { throw TrainerError.badConfig(pointer: pointer, message: message) }
        guard threads >= 1 && threads <= 256 else { throw TrainerError.badConfig(pointer: "/threads", message: "must be in [1, 256]") }
        if config.model.config is AnalyticFlowConfig {
            throw TrainerError.badConfig(pointer: "/model/kind", message: AnalyticFlowConfig.notTrainable)
        }
        // (Checked here and at submit, where the model is final: a student inherits its teacher's.)
        if config.flipPairs && config.model.pointShape.count != 3 {
            throw TrainerError.badConfig(pointer: "/flipPairs", message: "mirrors images: the model's points are not images")
        }
        if config.perceptual != nil {
            guard let net = perceptualNetwork else {
                throw TrainerError.badConfig(pointer: "/perceptual/classifier", message: "the feature network was not given to the trainer")
            }
            guard net.config.imageShape == config.model.pointShape else {
                throw TrainerError.badConfig(pointer: "/perceptual/classifier", message: "takes \(net.config.imageShape ?? []) images, the model makes \(config.model.pointShape)")
            }
        }
    }

    private init(_ config: TrainingConfig, threads: Int, data: DataSampler?, source: DataSampler?,
                 pairsStorage: (z0: Tensor, z1: Tensor)?, labels: [Int32]?, perceptualNetwork: ClassifierNetwork?,
                 guideNetwork: (any VelocityNetwork)?) {
        self.guideNetwork = config.twoStep == nil ? nil : guideNetwork
        for p in self.guideNetwork?.namedParameters() ?? [] { p.parameter.isFrozen = true }
        self.perceptualNetwork = config.perceptual == nil ? nil : perceptualNetwork
        // Its weights are constants of the loss: no gradient is computed for them.
        for p in self.perceptualNetwork?.namedParameters() ?? [] { p.parameter.isFrozen = true }
        self.pairs = pairsStorage
        self.pairLabels = labels
        self.data = data
        self.source = source
        pairsDigest = pairsStorage.map { p in
            var bytes = [UInt8]()
            bytes.reserveCapacity(8 * p.z0.count)
            for t in [p.z0, p.z1] { t.data.withUnsafeBytes { bytes.append(contentsOf: $0) } }
            // Labels (when a conditional student uses them) are part of the coupling.
            labels?.withUnsafeBytes { bytes.append(contentsOf: $0) }
            return SHA256.hex(of: bytes)
        }
        self.config = config
        self.threads = threads
        var initRng = Random(seed: config.seed)
        let model = config.model.makeNetwork(rng: &initRng)
        self.model = model
        optimizer = Optimizer(config.optimizer, module: model)
        ema = config.emaDecay.map { EMA(decay: $0, module: model) }
        workers = (0..<threads).map { _ in Graph(threads: 1, accumulatesIntoParameters: false) }
        rng = Random(seed: config.seed &+ 1)
        let b = config.batchSize, d = config.model.pointSize
        batchX0 = [Float](repeating: 0, count: b * d)
        batchX1 = [Float](repeating: 0, count: b * d)
        batchXt = [Float](repeating: 0, count: b * d)
        batchTarget = [Float](repeating: 0, count: b * d)
        batchT = [Float](repeating: 0, count: b)
        batchScale = [Float](repeating: 1, count: config.lossSpace == .data ? b : 0)
        batchPhase = [Int32](repeating: 0, count: config.phases != nil ? b : 0)
        phaseBounds = config.phases.flatMap { k in config.interpolant.diffusion.map { PhasedRectification.boundaries(phases: k, steps: $0.steps) } } ?? []
        batchLabels = [Int32](repeating: 0, count: config.model.classes != nil ? b : 0)
        batchZ = [Float](repeating: 0, count: config.twoStep != nil ? b * d : 0)
        batchU = [Float](repeating: 0, count: config.twoStep != nil ? b : 0)
        shardLoss = [Float](repeating: 0, count: threads)
        bins = optimizer.parallelBins(threads: threads)
    }

    /// Resumes from a snapshot taken by ``snapshot()`` of a run with the same config (and, for a
    /// reflow or distillation run, the same `pairs`: the snapshot records their SHA-256 under
    /// `reflowd.pairs_sha256` and a mismatch, or a missing coupling, is refused).
    public convenience init(_ config: TrainingConfig, threads: Int, restoring s: TrainingSnapshot,
                            pairs: (z0: Tensor, z1: Tensor)? = nil, labels: [Int32]? = nil,
                            resolve: (ArtifactRef) throws -> String = { _ in throw DataSourceError("no resolver for point files") },
                            locate: (String) throws -> DatasetLocation = BuiltinImageSets.locate,
                            perceptualNetwork: ClassifierNetwork? = nil, guideNetwork: (any VelocityNetwork)? = nil) throws {
        if let pairs {
            try self.init(config, threads: threads, pairs: pairs, labels: labels, perceptualNetwork: perceptualNetwork, guideNetwork: guideNetwork)
        } else {
            try self.init(config, threads: threads, resolve: resolve, locate: locate, perceptualNetwork: perceptualNetwork)
        }
        let recorded = s.metadata["reflowd.pairs_sha256"]
        guard recorded == pairsDigest else {
            throw TrainerError.badPairs(recorded == nil ? "the snapshot is of a 1-RF run (no stored pairs); pass no pairs"
                                        : "the pairs differ from those the snapshot was trained on (or are missing)")
        }
        try model.load(stateDict: s.model)
        try optimizer.load(stateTensors: s.optimizer, step: s.step)
        if let ema { try ema.load(s.ema) }
        rng = try Random(state: s.rng)
        step = s.step
    }

    /// Buffers the worker graphs have allocated so far (constant after the first step).
    public var bufferAllocations: Int { workers.reduce(0) { $0 + $1.freshAllocations } }

    /// One optimisation step; returns the loss before the update.
    @discardableResult
    public func trainStep() -> Float {
        drawBatch()
        let b = config.batchSize, d = config.model.pointSize, threads = self.threads
        let shared = WorkerShared((model: model, workers: workers, loss: config.loss, perceptual: config.perceptual,
                                   features: perceptualNetwork, twoStep: config.twoStep, guide: guideNetwork))
        shardLoss.withUnsafeMutableBufferPointer { lossBuffer in
        batchZ.withUnsafeBufferPointer { zb in
        batchU.withUnsafeBufferPointer { ub in
        batchX1.withUnsafeBufferPointer { x1b in
        batchXt.withUnsafeBufferPointer { xt in
        batchT.withUnsafeBufferPointer { tb in
        batchLabels.withUnsafeBufferPointer { lb in
        batchScale.withUnsafeBufferPointer { sb in
            batchTarget.withUnsafeBufferPointer { tgt in
                let losses = SendableMutablePointer(lossBuffer.baseAddress)
                let pX = SendablePointer(xt.baseAddress), pT = SendablePointer(tb.baseAddress), pTg = SendablePointer(tgt.baseAddress)
                let pL = SendablePointer(lb.isEmpty ? nil : lb.baseAddress)
                let pX1 = SendablePointer(x1b.baseAddress), pS = SendablePointer(sb.isEmpty ? nil : sb.baseAddress)
                let pZ = SendablePointer(zb.baseAddress), pU = SendablePointer(ub.baseAddress)
                parallelChunks(count: threads, threads: threads) { range in
                    for w in range {
                        let lo = b * w / threads, hi = b * (w + 1) / threads
                        let g = shared.value.workers[w]
                        g.reset()
                        guard hi > lo else { losses.base![w] = 0; continue }
                        let rows = hi - lo
                        var target = g.constant(shape: [rows, d]) {
                            $0.baseAddress!.update(from: pTg.base! + lo * d, count: rows * d)
                        }
                        var v = shared.value.model.velocity(g, x: pX.base! + lo * d, t: pT.base! + lo,
                                                            labels: pL.base.map { $0 + lo }, rows: rows)
                        if let scale = pS.base {
                            // lossSpace data: both sides times the row's factor, so the loss sees
                            // (output − target)·factor, the error of the predicted data.
                            let f = g.constant(shape: [rows, 1]) { $0.baseAddress!.update(from: scale + lo, count: rows) }
                            v = g.binary(.mul, v, f)
                            target = g.binary(.mul, target, f)
                        }
                        // Shard loss · rows/B: the shard gradients then add up to the batch gradient.
                        let raw: Var
                        if let perceptual = shared.value.perceptual, let net = shared.value.features {
                            raw = perceptual(net, loss: shared.value.loss, v: v, target: target, xt: pX.base! + lo * d,
                                             x1: pX1.base! + lo * d, t: pT.base! + lo, rows: rows)
                        } else {
                            raw = shared.value.loss(v, target)
                        }
                        var total = raw
                        if let two = shared.value.twoStep, let guide = shared.value.guide {
                            let l2 = TwoStepDistillation.loss(student: shared.value.model, teacher: guide, graph: g, z: pZ.base! + lo * d,
                                                              u: pU.base! + lo, labels: pL.base.map { $0 + lo }, rows: rows,
                                                              distance: shared.value.loss)
                            total = g.binary(.add, raw, g.affine(l2, scale: two.weight))
                        }
                        let loss = g.affine(total, scale: Float(rows) / Float(b))
                        g.backward(loss)
                        losses.base![w] = loss.scalar
                    }
                }
            }
        }
        }
        }
        }
        }
        }
        }
        }
        // Sum the shard gradients (in worker order) into Parameter.grad, each worker a balanced
        // bin of parameters; also their squared norm when clipping.
        let clip = config.gradClipNorm
        let sumsq = DataParallel.sumGradients(optimizer, workers: workers, bins: bins, threads: threads, norm: clip != nil)
        // Release the graphs' references to the weights so the update writes in place.
        for g in workers { g.reset() }
        var gradScale: Float = 1
        if let clip {
            // torch.nn.utils.clip_grad_norm_: factor max / (norm + 1e-6) when below 1.
            let norm = Float(sumsq.squareRoot())
            gradScale = min(1, clip / (norm + 1e-6))
        }
        let lr = config.schedule.learningRate(base: config.learningRate, step: step)
        DataParallel.step(optimizer, bins: bins, threads: threads, learningRate: lr, gradScale: gradScale)
        optimizer.zeroGrad()
        ema?.update(from: model)
        step += 1
        return shardLoss.reduce(0, +)
    }

    /// Draws the whole batch from the trainer's RNG: for stored pairs, per row a pair index then
    /// t; for the independent coupling, x1 for every row, then x0 for every row, then t per row
    /// (the order of every earlier release, so seeds reproduce); for a conditional model then
    /// one uniform per row for the label dropout. The interpolant then forms x_t and the target.
    private func drawBatch() {
        drawStep = step
        let b = config.batchSize
        batchX0.withUnsafeMutableBufferPointer { x0 in
        batchX1.withUnsafeMutableBufferPointer { x1 in
        batchT.withUnsafeMutableBufferPointer { t in
        batchLabels.withUnsafeMutableBufferPointer { l in
        batchXt.withUnsafeMutableBufferPointer { xt in
        batchTarget.withUnsafeMutableBufferPointer { tg in
        batchScale.withUnsafeMutableBufferPointer { sc in
        batchPhase.withUnsafeMutableBufferPointer { ph in
            draw(rows: b, rng: &rng, x0: x0.baseAddress!, x1: x1.baseAddress!, t: t.baseAddress!,
                 labels: l.isEmpty ? nil : l.baseAddress, xt: xt.baseAddress!, target: tg.baseAddress!,
                 scale: sc.isEmpty ? nil : sc.baseAddress, phase: ph.isEmpty ? nil : ph.baseAddress)
        }
        }
        }
        }
        }
        }
        }
        }
        // The two-step term's fresh noise and mid-point times, after everything else.
        if let two = config.twoStep {
            for j in 0..<batchZ.count { batchZ[j] = Float(rng.normal()) }
            for r in 0..<batchU.count { batchU[r] = two.uMin + (two.uMax - two.uMin) * rng.uniformFloat() }
        }
    }

    /// One batch of `rows` rows drawn from `rng` into the given buffers (see ``drawBatch()``).
    private func draw(rows b: Int, rng: inout Random, x0: UnsafeMutablePointer<Float>, x1: UnsafeMutablePointer<Float>,
                      t: UnsafeMutablePointer<Float>, labels: UnsafeMutablePointer<Int32>?,
                      xt: UnsafeMutablePointer<Float>, target: UnsafeMutablePointer<Float>,
                      scale: UnsafeMutablePointer<Float>?, phase: UnsafeMutablePointer<Int32>?) {
        let d = config.model.pointSize
        let sampler = config.timeSampler
        if let pairs {
            let n = pairs.z0.shape[0], nullLabel = Int32(classes ?? 0), k = Int32(phaseBounds.count)
            pairs.z0.data.withUnsafeBufferPointer { z0 in
                pairs.z1.data.withUnsafeBufferPointer { z1 in
                    for r in 0..<b {
                        let i = rng.int(below: n)
                        t[r] = sampler.sample(&rng)
                        (x0 + r * d).update(from: z0.baseAddress! + i * d, count: d)
                        (x1 + r * d).update(from: z1.baseAddress! + i * d, count: d)
                        // (checkLabels makes a conditional model take labelled pairs only.)
                        if let labels { labels[r] = pairLabels?[i] ?? nullLabel }
                        // Pair j of phased pairs belongs to phase j mod K.
                        if let phase { phase[r] = Int32(i) % k }
                    }
                }
            }
            // SlimFlow's augmentations, drawn after the rows (so without them the batches are
            // those of every earlier release): flips, one uniform per row; then the annealed
            // noise, fresh normals for every row only while β > 0.
            if config.flipPairs {
                let shape = config.model.pointShape
                for r in 0..<b where rng.uniformFloat() < 0.5 {
                    HorizontalFlip.flip(x0 + r * d, shape: shape)
                    HorizontalFlip.flip(x1 + r * d, shape: shape)
                }
            }
            if let annealing = config.annealing {
                let beta = annealing.beta(step: drawStep)
                if beta > 0 {
                    let keep = (1 - beta * beta).squareRoot()
                    for j in 0..<(b * d) { x0[j] = keep * x0[j] + beta * Float(rng.normal()) }
                }
            }
        } else {
            data!.sample(into: UnsafeMutableBufferPointer(start: x1, count: b * d), labels: labels, rng: &rng)
            source!.sample(into: UnsafeMutableBufferPointer(start: x0, count: b * d), rng: &rng)
            for r in 0..<b { t[r] = sampler.sample(&rng) }
        }
        if let labels, let k = classes {
            let p = config.labelDropout
            for r in 0..<b where rng.uniformFloat() < p { labels[r] = Int32(k) }
        }
        if let phase, let vp = config.interpolant.diffusion {
            PhasedRectification.fill(vp, bounds: phaseBounds, phase: phase, xs: x0, xe: x1, t: t, rows: b, size: d,
                                     xu: xt, target: target, scale: scale)
            return
        }
        config.interpolant.fill(x0: x0, x1: x1, t: t, rows: b, size: d, xt: xt, target: target)
        if let scale {
            for r in 0..<b { scale[r] = config.interpolant.dataScale(networkTime: t[r]) }
        }
    }

    /// `rows` training inputs (x_t, t and, for labelled data, labels) drawn exactly as batches
    /// are, but from `Random(seed: seed)`: the trainer's own RNG and buffers are untouched. The
    /// fixed sample on which the prune job measures dead-neuron rates.
    public func fixedSample(rows: Int, seed: UInt64) -> (x: [Float], t: [Float], labels: [Int32]?) {
        let b = batch(rows: rows, seed: seed, step: step)
        return (b.xt, b.t, b.labels)
    }

    /// A batch of `rows` rows drawn as the batch of optimizer step `step` is, from
    /// `Random(seed: seed)`: x0, x1 (after the pairs' flips and annealing), t, labels and x_t.
    func batch(rows: Int, seed: UInt64, step k: Int) -> (x0: [Float], x1: [Float], t: [Float], labels: [Int32]?, xt: [Float]) {
        let saved = drawStep
        drawStep = k
        defer { drawStep = saved }
        let d = config.model.pointSize
        var r = Random(seed: seed)
        var x0 = [Float](repeating: 0, count: rows * d), x1 = x0, xt = x0, tg = x0
        var t = [Float](repeating: 0, count: rows)
        var labels = [Int32](repeating: 0, count: classes != nil ? rows : 0)
        var scale = [Float](repeating: 1, count: config.lossSpace == .data ? rows : 0)
        var phase = [Int32](repeating: 0, count: config.phases != nil ? rows : 0)
        x0.withUnsafeMutableBufferPointer { a in x1.withUnsafeMutableBufferPointer { b in
        t.withUnsafeMutableBufferPointer { tb in labels.withUnsafeMutableBufferPointer { l in
        xt.withUnsafeMutableBufferPointer { xb in tg.withUnsafeMutableBufferPointer { gb in
        scale.withUnsafeMutableBufferPointer { sc in phase.withUnsafeMutableBufferPointer { ph in
            draw(rows: rows, rng: &r, x0: a.baseAddress!, x1: b.baseAddress!, t: tb.baseAddress!,
                 labels: l.isEmpty ? nil : l.baseAddress, xt: xb.baseAddress!, target: gb.baseAddress!,
                 scale: sc.isEmpty ? nil : sc.baseAddress, phase: ph.isEmpty ? nil : ph.baseAddress)
        } } } } } } } }
        return (x0, x1, t, labels.isEmpty ? nil : labels, xt)
    }

    /// The complete resumable state.
    public func snapshot() -> TrainingSnapshot {
        var opt = [String: Tensor]()
        for (n, t) in optimizer.stateTensors() { opt[n] = t }
        var meta = [String: String]()
        if let pairsDigest { meta["reflowd.pairs_sha256"] = pairsDigest }
        return TrainingSnapshot(model: model.stateDict(), ema: ema?.shadow ?? [:], optimizer: opt,
                                step: step, rng: rng.state, metadata: meta)
    }
}

/// A trainer cannot be built from the given inputs.
public enum TrainerError: Error, CustomStringConvertible, Equatable {
    case badPairs(String)
    case badConfig(pointer: String, message: String)
    public var description: String {
        switch self {
        case .badPairs(let m): return "trainer: \(m)"
        case .badConfig(let p, let m): return "trainer: \(p): \(m)"
        }
    }
}
extension FlowTrainer: SteppedTrainer {}
