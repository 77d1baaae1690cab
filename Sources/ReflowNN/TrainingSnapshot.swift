public import ReflowEngine

/// Everything a training run needs to resume exactly, as plain values (Sendable): weights, EMA
/// weights, optimizer moments, the step, the RNG state, pruning masks and free-form metadata. ReflowStore
/// writes it as one safetensors file (docs/CHECKPOINT_FORMAT.md).
public struct TrainingSnapshot: Sendable, Equatable {
    /// Model weights by PyTorch-style name.
    public var model: [String: Tensor]
    /// EMA weights by the same names (empty when the run keeps no EMA).
    public var ema: [String: Tensor]
    /// Optimizer state by `<param>.<slot>` name.
    public var optimizer: [String: Tensor]
    /// Completed optimizer steps.
    public var step: Int
    /// The data/noise RNG, positioned after `step` steps.
    public var rng: Random.State
    /// String metadata (architecture, optimizer kind, job id, …).
    public var metadata: [String: String]
    /// Pruning masks (0/1, the shapes of their parameters) by parameter name; empty when dense.
    public var masks: [String: Tensor]

    public init(model: [String: Tensor], ema: [String: Tensor] = [:], optimizer: [String: Tensor] = [:],
                step: Int, rng: Random.State, metadata: [String: String] = [:], masks: [String: Tensor] = [:]) {
        self.model = model
        self.ema = ema
        self.optimizer = optimizer
        self.step = step
        self.rng = rng
        self.metadata = metadata
        self.masks = masks
    }
}

/// A model trainer that advances one optimizer step at a time and can be snapshotted: what the
/// job layer's training loop (checkpoints, resumption, loss log, progress) drives, whatever the
/// model (a velocity field, a RIM).
public protocol SteppedTrainer: AnyObject {
    /// Completed optimizer steps.
    var step: Int { get }
    /// One optimizer step; returns the batch's loss before the update.
    func trainStep() -> Float
    /// The resumable state after ``step`` steps.
    func snapshot() -> TrainingSnapshot
}

extension TrainingSnapshot {
    /// The snapshot of a trainer without EMA: the module's weights and the optimizer's slots.
    public init(module: any Module, optimizer: Optimizer, step: Int, rng: Random.State, metadata: [String: String] = [:]) {
        var opt = [String: Tensor]()
        for (n, t) in optimizer.stateTensors() { opt[n] = t }
        self.init(model: module.stateDict(), optimizer: opt, step: step, rng: rng, metadata: metadata)
    }

    /// Loads the weights into `module` and the slots into `optimizer` (throws when they do not fit).
    public func restore(into module: any Module, optimizer: Optimizer) throws {
        try module.load(stateDict: model)
        try optimizer.load(stateTensors: self.optimizer, step: step)
    }
}
