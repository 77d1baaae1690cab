public import ReflowEngine
public import ReflowAutograd
public import ReflowNN

/// Hyperparameters of a 1-rectified-flow run on a 2-D toy distribution.
public struct ToyTrainingConfig: Codable, Sendable, Equatable {
    public var data: GaussianRing = GaussianRing()
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

    public init() {}

    enum CodingKeys: String, CodingKey {
        case data, model, batchSize, learningRate, optimizer, schedule, loss, emaDecay, gradClipNorm, seed
    }

    /// Decodes a partial JSON object; absent keys keep their defaults.
    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        let d = ToyTrainingConfig()
        data = try c.decodeIfPresent(GaussianRing.self, forKey: .data) ?? d.data
        model = try c.decodeIfPresent(VelocityMLPConfig.self, forKey: .model) ?? d.model
        batchSize = try c.decodeIfPresent(Int.self, forKey: .batchSize) ?? d.batchSize
        learningRate = try c.decodeIfPresent(Float.self, forKey: .learningRate) ?? d.learningRate
        optimizer = try c.decodeIfPresent(OptimizerKind.self, forKey: .optimizer) ?? d.optimizer
        schedule = try c.decodeIfPresent(LRSchedule.self, forKey: .schedule) ?? d.schedule
        loss = try c.decodeIfPresent(Loss.self, forKey: .loss) ?? d.loss
        emaDecay = c.contains(.emaDecay) ? try c.decodeIfPresent(Float.self, forKey: .emaDecay) : d.emaDecay
        gradClipNorm = try c.decodeIfPresent(Float.self, forKey: .gradClipNorm) ?? d.gradClipNorm
        seed = try c.decodeIfPresent(UInt64.self, forKey: .seed) ?? d.seed
    }

    /// The first invalid setting as (JSON pointer, message), or nil when the config is usable.
    public func validationError() -> (pointer: String, message: String)? {
        if let e = data.validationError() { return ("/data" + e.pointer, e.message) }
        if let e = model.validationError() { return ("/model" + e.pointer, e.message) }
        if batchSize < 1 || batchSize > 1 << 20 { return ("/batchSize", "must be in [1, 1048576], got \(batchSize)") }
        if !(learningRate > 0 && learningRate.isFinite) { return ("/learningRate", "must be a positive number") }
        if let m = schedule.validationError() { return ("/schedule", m) }
        if let m = loss.validationError() { return ("/loss", m) }
        if let e = emaDecay, !(e >= 0 && e < 1) { return ("/emaDecay", "must be in [0, 1), got \(e)") }
        if let c = gradClipNorm, !(c > 0 && c.isFinite) { return ("/gradClipNorm", "must be a positive number") }
        return nil
    }
}

/// A 1-rectified-flow training loop: x0 ~ N(0, I), x1 ~ data, t ~ U[0, 1),
/// minimise loss(v(x_t, t), x1 − x0) (see ``TimeConvention``).
///
/// One graph is reused for every step, so after the first step no buffers are allocated.
/// All randomness (data, noise, t) comes from one ``Random`` stream that is part of the
/// snapshot, so `snapshot()` → `init(restoring:)` continues bit-for-bit.
public final class ToyTrainer {
    public let config: ToyTrainingConfig
    public let model: VelocityMLP
    public let optimizer: Optimizer
    public let ema: EMA?
    public let graph: Graph
    public private(set) var rng: Random
    public private(set) var step = 0

    public init(_ config: ToyTrainingConfig, threads: Int) {
        self.config = config
        var initRng = Random(seed: config.seed)
        let model = VelocityMLP(config.model, rng: &initRng)
        self.model = model
        optimizer = Optimizer(config.optimizer, module: model)
        ema = config.emaDecay.map { EMA(decay: $0, module: model) }
        graph = Graph(threads: threads)
        rng = Random(seed: config.seed &+ 1)
    }

    /// Resumes from a snapshot taken by ``snapshot()`` of a run with the same config.
    public convenience init(_ config: ToyTrainingConfig, threads: Int, restoring s: TrainingSnapshot) throws {
        self.init(config, threads: threads)
        try model.load(stateDict: s.model)
        try optimizer.load(stateTensors: s.optimizer, step: s.step)
        if let ema { try ema.load(s.ema) }
        rng = try Random(state: s.rng)
        step = s.step
    }

    /// One optimisation step; returns the loss before the update.
    @discardableResult
    public func trainStep() -> Float {
        graph.reset()
        let b = config.batchSize, d = config.model.dimension
        // input: [B, d + 1] = [x_t, t];  target: [B, d] = x1 − x0
        var x1 = graph.takeScratch(b * d), x0 = graph.takeScratch(b * d)
        x1.withUnsafeMutableBufferPointer { config.data.sample(into: $0, rng: &rng) }
        let input = graph.constant(shape: [b, d + 1]) { inp in
            x0.withUnsafeMutableBufferPointer { x0 in
                for r in 0..<b {
                    let t = rng.uniformFloat()
                    for c in 0..<d {
                        x0[r * d + c] = Float(rng.normal())
                        inp[r * (d + 1) + c] = TimeConvention.interpolate(x0: x0[r * d + c], x1: x1[r * d + c], t: t)
                    }
                    inp[r * (d + 1) + d] = t
                }
            }
        }
        let target = graph.constant(shape: [b, d]) { tg in
            for j in 0..<(b * d) { tg[j] = TimeConvention.velocity(x0: x0[j], x1: x1[j]) }
        }
        graph.releaseScratch(&x0)
        graph.releaseScratch(&x1)
        let loss = config.loss(model(packed: input), target)
        graph.backward(loss)
        let lossValue = loss.scalar
        // Drop the graph's references to the weights before updating them, so the optimizer
        // writes in place instead of copying every parameter (copy-on-write).
        graph.reset()
        if let c = config.gradClipNorm { clipGradNorm(model.parameters, maxNorm: c) }
        optimizer.step(learningRate: config.schedule.learningRate(base: config.learningRate, step: step))
        optimizer.zeroGrad()
        ema?.update(from: model)
        step += 1
        return lossValue
    }

    /// The complete resumable state.
    public func snapshot() -> TrainingSnapshot {
        var opt = [String: Tensor]()
        for (n, t) in optimizer.stateTensors() { opt[n] = t }
        return TrainingSnapshot(model: model.stateDict(), ema: ema?.shadow ?? [:], optimizer: opt,
                                step: step, rng: rng.state)
    }
}
