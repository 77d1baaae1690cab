public import ReflowEngine
import ReflowAutograd
import ReflowCodec
public import ReflowNN

/// Hyperparameters of a 1-rectified-flow run on a 2-D toy distribution.
public struct ToyTrainingConfig: Codable, Sendable, Equatable {
    /// π1, the target (data) distribution.
    public var data: Distribution2D = .gaussianRing()
    /// π0, the source distribution: noise for generation, or another 2-D distribution for
    /// transport between two domains (Liu et al. 2022, domain transfer).
    public var source: Distribution2D = .gaussian()
    public var model: VelocityMLPConfig = VelocityMLPConfig()
    public var batchSize: Int = 512
    public var learningRate: Float = 1e-3
    public var optimizer: OptimizerKind = .adam()
    public var schedule: LRSchedule = .constant
    public var loss: Loss = .mse
    /// EMA decay; nil keeps no EMA.
    public var emaDecay: Float? = 0.999
    /// Global gradient-norm clip; nil disables clipping.
    public var gradClipNorm: Float? = nil
    public var seed: UInt64 = 0
    /// How flow times are drawn (default t ~ U[0, 1), as in rf_torch.py).
    public var timeSampler: TimeSampler = .uniform(epsilon: 0)

    public init() {}

    enum CodingKeys: String, CodingKey {
        case data, source, model, batchSize, learningRate, optimizer, schedule, loss, emaDecay, gradClipNorm, seed, timeSampler
    }

    /// Decodes a partial JSON object; absent keys keep their defaults.
    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        let d = ToyTrainingConfig()
        data = try c.decodeIfPresent(Distribution2D.self, forKey: .data) ?? d.data
        source = try c.decodeIfPresent(Distribution2D.self, forKey: .source) ?? d.source
        model = try c.decodeIfPresent(VelocityMLPConfig.self, forKey: .model) ?? d.model
        batchSize = try c.decodeIfPresent(Int.self, forKey: .batchSize) ?? d.batchSize
        learningRate = try c.decodeIfPresent(Float.self, forKey: .learningRate) ?? d.learningRate
        optimizer = try c.decodeIfPresent(OptimizerKind.self, forKey: .optimizer) ?? d.optimizer
        schedule = try c.decodeIfPresent(LRSchedule.self, forKey: .schedule) ?? d.schedule
        loss = try c.decodeIfPresent(Loss.self, forKey: .loss) ?? d.loss
        emaDecay = c.contains(.emaDecay) ? try c.decodeIfPresent(Float.self, forKey: .emaDecay) : d.emaDecay
        gradClipNorm = try c.decodeIfPresent(Float.self, forKey: .gradClipNorm) ?? d.gradClipNorm
        seed = try c.decodeIfPresent(UInt64.self, forKey: .seed) ?? d.seed
        timeSampler = try c.decodeIfPresent(TimeSampler.self, forKey: .timeSampler) ?? d.timeSampler
    }

    /// Encodes every field; absent optionals as `null`, so the echoed form names every key.
    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(data, forKey: .data)
        try c.encode(source, forKey: .source)
        try c.encode(model, forKey: .model)
        try c.encode(batchSize, forKey: .batchSize)
        try c.encode(learningRate, forKey: .learningRate)
        try c.encode(optimizer, forKey: .optimizer)
        try c.encode(schedule, forKey: .schedule)
        try c.encode(loss, forKey: .loss)
        try c.encode(emaDecay, forKey: .emaDecay)
        try c.encode(gradClipNorm, forKey: .gradClipNorm)
        try c.encode(seed, forKey: .seed)
        try c.encode(timeSampler, forKey: .timeSampler)
    }

    /// The first invalid setting as (JSON pointer, message), or nil when the config is usable.
    public func validationError() -> (pointer: String, message: String)? {
        if let e = data.validationError() { return ("/data" + e.pointer, e.message) }
        if let e = source.validationError() { return ("/source" + e.pointer, e.message) }
        if let e = model.validationError() { return ("/model" + e.pointer, e.message) }
        if model.dimension != 2 { return ("/model/dimension", "must be 2: the toy data is 2-D, got \(model.dimension)") }
        if let e = optimizer.validationError() { return ("/optimizer" + e.pointer, e.message) }
        if batchSize < 1 || batchSize > 1 << 20 { return ("/batchSize", "must be in [1, 1048576], got \(batchSize)") }
        if !(learningRate > 0 && learningRate.isFinite) { return ("/learningRate", "must be a positive number") }
        if let e = schedule.validationPointer() { return ("/schedule" + e.pointer, e.message) }
        if let m = loss.validationError() { return ("/loss/c", m) }
        if let e = emaDecay, !(e >= 0 && e < 1) { return ("/emaDecay", "must be in [0, 1), got \(e)") }
        if let c = gradClipNorm, !(c > 0 && c.isFinite) { return ("/gradClipNorm", "must be a positive number") }
        if let e = timeSampler.validationError() { return ("/timeSampler" + e.pointer, e.message) }
        return nil
    }
}

/// A rectified-flow training loop: minimise loss(v(x_t, t), x1 − x0) with t from the
/// configured ``TimeSampler`` (see ``TimeConvention``) over a coupling of (x0, x1): independent
/// draws x0 ~ π0 (`config.source`), x1 ~ π1 (`config.data`) for a 1-RF, or stored pairs for a
/// reflow / distillation.
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
public final class ToyTrainer {
    public let config: ToyTrainingConfig
    public let model: VelocityMLP
    public let optimizer: Optimizer
    public let ema: EMA?
    /// Worker count (row shards per step).
    public let threads: Int
    /// One graph per worker; gradients stay in the graphs until they are summed.
    let workers: [Graph]
    public private(set) var rng: Random
    public private(set) var step = 0
    /// The current batch: inputs [B, w] = [x_t, φ(t)] (w = `config.model.inputWidth`) and targets [B, d] = x1 − x0.
    private var batchInput: [Float], batchTarget: [Float]
    private var shardLoss: [Float]
    /// Parameters per worker for the gradient sum and the update (balanced by size).
    private let bins: [[Int]]
    private var partialNorm: [Double]

    /// Fixed training pairs (z0, z1), each [N, d], for reflow and distillation; nil draws
    /// independent x0 ~ `config.source`, x1 ~ `config.data` every step (1-rectified flow).
    public let pairs: (z0: Tensor, z1: Tensor)?
    /// Hex SHA-256 of the stored pairs' float bytes (z0 then z1), recorded in snapshots.
    public let pairsDigest: String?

    /// A trainer. With `pairs`, batches are drawn uniformly (with replacement) from the stored
    /// coupling instead — the (k+1)-RF of a reflow, or a distillation with `.grid` times.
    /// `initialWeights` starts from a teacher's weights (fine-tuning, as the paper's image code
    /// does for reflow) with a fresh optimizer and EMA.
    public convenience init(_ config: ToyTrainingConfig, threads: Int, pairs: (z0: Tensor, z1: Tensor),
                            initialWeights: [String: Tensor]? = nil) throws {
        if let (pointer, message) = config.validationError() { throw TrainerError.badConfig(pointer: pointer, message: message) }
        guard threads >= 1 && threads <= 256 else { throw TrainerError.badConfig(pointer: "/threads", message: "must be in [1, 256]") }
        let d = config.model.dimension
        guard pairs.z0.rank == 2, pairs.z0.shape == pairs.z1.shape, pairs.z0.shape[1] == d, pairs.z0.shape[0] > 0 else {
            throw TrainerError.badPairs("pairs must be two [N, \(d)] tensors with N > 0, got \(pairs.z0.shape) and \(pairs.z1.shape)")
        }
        // A diverged teacher would otherwise train the student on NaN silently.
        if let i = pairs.z0.data.firstIndex(where: { !$0.isFinite }) ?? pairs.z1.data.firstIndex(where: { !$0.isFinite }) {
            throw TrainerError.badPairs("pair row \(i / d) holds a non-finite value")
        }
        self.init(config, threads: threads, pairsStorage: pairs)
        if let initialWeights {
            try model.load(stateDict: initialWeights)
            ema?.resetAverage(to: model)
        }
    }

    public convenience init(_ config: ToyTrainingConfig, threads: Int) {
        self.init(config, threads: threads, pairsStorage: nil)
    }

    private init(_ config: ToyTrainingConfig, threads: Int, pairsStorage: (z0: Tensor, z1: Tensor)?) {
        precondition(threads >= 1, "ToyTrainer: threads must be ≥ 1")
        self.pairs = pairsStorage
        pairsDigest = pairsStorage.map { p in
            var bytes = [UInt8]()
            bytes.reserveCapacity(8 * p.z0.count)
            for t in [p.z0, p.z1] { t.data.withUnsafeBytes { bytes.append(contentsOf: $0) } }
            return SHA256.hex(of: bytes)
        }
        self.config = config
        self.threads = threads
        var initRng = Random(seed: config.seed)
        let model = VelocityMLP(config.model, rng: &initRng)
        self.model = model
        optimizer = Optimizer(config.optimizer, module: model)
        ema = config.emaDecay.map { EMA(decay: $0, module: model) }
        workers = (0..<threads).map { _ in Graph(threads: 1, accumulatesIntoParameters: false) }
        rng = Random(seed: config.seed &+ 1)
        let b = config.batchSize, d = config.model.dimension
        batchInput = [Float](repeating: 0, count: b * config.model.inputWidth)
        batchTarget = [Float](repeating: 0, count: b * d)
        shardLoss = [Float](repeating: 0, count: threads)
        bins = optimizer.parallelBins(threads: threads)
        partialNorm = [Double](repeating: 0, count: bins.count)
    }

    /// Resumes from a snapshot taken by ``snapshot()`` of a run with the same config (and, for a
    /// reflow or distillation run, the same `pairs`: the snapshot records their SHA-256 under
    /// `reflowd.pairs_sha256` and a mismatch, or a missing coupling, is refused).
    public convenience init(_ config: ToyTrainingConfig, threads: Int, restoring s: TrainingSnapshot,
                            pairs: (z0: Tensor, z1: Tensor)? = nil) throws {
        if let pairs {
            try self.init(config, threads: threads, pairs: pairs)
        } else {
            self.init(config, threads: threads)
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
        let b = config.batchSize, d = config.model.dimension, width = config.model.inputWidth, threads = self.threads
        let shared = WorkerShared((model: model, workers: workers, loss: config.loss))
        shardLoss.withUnsafeMutableBufferPointer { lossBuffer in
        batchInput.withUnsafeBufferPointer { inp in
            batchTarget.withUnsafeBufferPointer { tgt in
                let losses = SendableMutablePointer(lossBuffer.baseAddress)
                let pIn = SendablePointer(inp.baseAddress), pTg = SendablePointer(tgt.baseAddress)
                parallelChunks(count: threads, threads: threads) { range in
                    for w in range {
                        let lo = b * w / threads, hi = b * (w + 1) / threads
                        let g = shared.value.workers[w]
                        g.reset()
                        guard hi > lo else { losses.base![w] = 0; continue }
                        let rows = hi - lo
                        let input = g.constant(shape: [rows, width]) {
                            $0.baseAddress!.update(from: pIn.base! + lo * width, count: rows * width)
                        }
                        let target = g.constant(shape: [rows, d]) {
                            $0.baseAddress!.update(from: pTg.base! + lo * d, count: rows * d)
                        }
                        // Shard loss · rows/B: the shard gradients then add up to the batch gradient.
                        let loss = g.affine(shared.value.loss(shared.value.model(packed: input), target),
                                            scale: Float(rows) / Float(b))
                        g.backward(loss)
                        losses.base![w] = loss.scalar
                    }
                }
            }
        }
        }
        // Sum the shard gradients (in worker order) into Parameter.grad, each worker a balanced
        // bin of parameters; also their squared norms when clipping.
        let clip = config.gradClipNorm
        let named = optimizer.named
        let update = WorkerShared((named: named, workers: workers, bins: bins, optimizer: optimizer))
        partialNorm.withUnsafeMutableBufferPointer { normBuffer in
        let norms = SendableMutablePointer(normBuffer.baseAddress)
        parallelChunks(count: bins.count, threads: threads) { range in
            for w in range {
                var sumsq = 0.0
                for i in update.value.bins[w] {
                    let p = update.value.named[i].parameter
                    let n = p.value.count
                    p.grad.data.withUnsafeMutableBufferPointer { acc in
                        for g in update.value.workers {
                            g.withParameterGradient(p) { grad in
                                guard let grad else { return }
                                for j in 0..<n { acc[j] += grad[j] }
                            }
                        }
                        if clip != nil { for j in 0..<n { sumsq += Double(acc[j]) * Double(acc[j]) } }
                    }
                }
                norms.base![w] = sumsq
            }
        }
        }
        // Release the graphs' references to the weights so the update writes in place.
        for g in workers { g.reset() }
        var gradScale: Float = 1
        if let clip {
            // torch.nn.utils.clip_grad_norm_: factor max / (norm + 1e-6) when below 1.
            let norm = Float(partialNorm.reduce(0, +).squareRoot())
            gradScale = min(1, clip / (norm + 1e-6))
        }
        let lr = config.schedule.learningRate(base: config.learningRate, step: step), scale = gradScale
        optimizer.beginStep()
        parallelChunks(count: bins.count, threads: threads) { range in
            for w in range {
                for i in update.value.bins[w] {
                    update.value.optimizer.update(parameterAt: i, learningRate: lr, gradScale: scale)
                }
            }
        }
        optimizer.zeroGrad()
        ema?.update(from: model)
        step += 1
        return shardLoss.reduce(0, +)
    }

    /// Draws x1 ~ data, x0 ~ N(0, I), t ~ U[0, 1) for the whole batch from the trainer's RNG.
    private func drawBatch() {
        let b = config.batchSize, d = config.model.dimension, w = config.model.inputWidth, time = config.model.timeInput
        if let pairs {
            // Stored coupling: rows drawn with replacement; x_t on the straight line z0 → z1.
            let n = pairs.z0.shape[0]
            pairs.z0.data.withUnsafeBufferPointer { z0 in
                pairs.z1.data.withUnsafeBufferPointer { z1 in
                    batchInput.withUnsafeMutableBufferPointer { inp in
                        batchTarget.withUnsafeMutableBufferPointer { tg in
                            for r in 0..<b {
                                let i = rng.int(below: n), t = config.timeSampler.sample(&rng)
                                for c in 0..<d {
                                    let x0 = z0[i * d + c], x1 = z1[i * d + c]
                                    inp[r * w + c] = TimeConvention.interpolate(x0: x0, x1: x1, t: t)
                                    tg[r * d + c] = TimeConvention.velocity(x0: x0, x1: x1)
                                }
                                time.write(t, to: inp.baseAddress! + r * w + d)
                            }
                        }
                    }
                }
            }
            return
        }
        // Independent coupling: x1 ~ π1 (into the target buffer), x0 ~ π0 (into the input buffer,
        // [B, d] packed at its start, then spread into the [B, w] rows from the back).
        batchTarget.withUnsafeMutableBufferPointer { x1 in config.data.sample(into: x1, rng: &rng) }
        batchInput.withUnsafeMutableBufferPointer { inp in
            config.source.sample(into: UnsafeMutableBufferPointer(rebasing: inp[0..<(b * d)]), rng: &rng)
            for r in stride(from: b - 1, through: 0, by: -1) {
                for c in stride(from: d - 1, through: 0, by: -1) { inp[r * w + c] = inp[r * d + c] }
            }
            batchTarget.withUnsafeMutableBufferPointer { tg in
                for r in 0..<b {
                    let t = config.timeSampler.sample(&rng)
                    for c in 0..<d {
                        let x0 = inp[r * w + c], x1 = tg[r * d + c]
                        inp[r * w + c] = TimeConvention.interpolate(x0: x0, x1: x1, t: t)
                        tg[r * d + c] = TimeConvention.velocity(x0: x0, x1: x1)
                    }
                    time.write(t, to: inp.baseAddress! + r * w + d)
                }
            }
        }
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
