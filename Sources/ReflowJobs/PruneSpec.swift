public import ReflowNN
public import ReflowFlow

/// How a prune job ranks what it removes.
public enum PruneMethod: String, Codable, Sendable, CaseIterable {
    /// Smallest |w| (a global or per-layer threshold, ``PruneScope``).
    case magnitude
    /// Uniformly random surviving weights: the baseline.
    case random
    /// Whole units (neurons, channels) with the smallest L1 norm of their incoming weights,
    /// removed from the architecture: the result is a physically smaller model.
    case structured
}

/// Once, or in cycles of prune → rewind → retrain (iterative magnitude pruning, lottery-ticket style).
public enum PruneSchedule: String, Codable, Sendable, CaseIterable {
    case oneShot
    case iterative
}

/// The weights survivors are reset to after each pruning step, before retraining.
///
/// Wire JSON: `{"kind": "init"}` (the weights the model's training started from, rebuilt from
/// its recorded seed), `{"kind": "model", "model": {"job": id}}` (any stored model of the same
/// architecture: an early checkpoint, or the teacher a student started from) or
/// `{"kind": "none"}` (keep the trained weights: pruning with fine-tuning).
public enum RewindPoint: Codable, Sendable, Equatable, Validatable {
    case none
    case initialization
    case model(ArtifactRef)

    enum CodingKeys: String, CodingKey { case kind, model }
    enum Kind: String, Codable { case none, `init`, model }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        switch try c.decode(Kind.self, forKey: .kind) {
        case .none: self = .none
        case .`init`: self = .initialization
        case .model: self = .model(try c.decode(ArtifactRef.self, forKey: .model))
        }
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        switch self {
        case .none: try c.encode(Kind.none, forKey: .kind)
        case .initialization: try c.encode(Kind.`init`, forKey: .kind)
        case .model(let r): try c.encode(Kind.model, forKey: .kind); try c.encode(r, forKey: .model)
        }
    }

    public func validationError() -> FieldError? {
        if case .model(let r) = self { return r.validationError().map { ("/model" + $0.pointer, $0.message) } }
        return nil
    }
}

/// Activating-while-Pruning (Liu et al., TMLR 2023): of each cycle's pruned share, `rate` (of
/// the survivors) are chosen by `selection` instead of the base method.
public struct APSettings: Codable, Sendable, Equatable {
    public var enabled = false
    /// p_ap: fraction of the cycle's survivors AP removes (the paper: 2 % of a 20 % cycle).
    public var rate = 0.02
    public var selection: APSelection = .movement
    public init() {}
}

/// Which parameters may be pruned. By default every weight of a linear or convolution layer
/// (rank ≥ 2, named `….weight`); biases and normalisation scales only when asked; embeddings never.
public struct PrunableSpec: Codable, Sendable, Equatable {
    /// Layer names (parameter prefixes such as `layers.0`, `convs.1`, `head`); null means all
    /// linear and convolution layers.
    @Explicit public var layers: [String]? = nil
    /// Also prune the biases of the chosen layers.
    public var biases = false
    /// Also prune normalisation scales (GroupNorm/LayerNorm `weight`, rank 1).
    public var norms = false
    public init() {}
}

/// Training between pruning steps (and after a one-shot pruning).
public struct RetrainSpec: Codable, Sendable, Equatable {
    /// Optimizer steps per cycle (0: prune without retraining).
    public var steps = 500
    /// Null: the model's own learning rate (a classifier's 2e-3).
    @Explicit public var learningRate: Float? = nil
    /// Null: the model's own batch size (a classifier's 128).
    @Explicit public var batchSize: Int? = nil
    /// EMA decay of a velocity model's retraining; null: the model's own, capped at
    /// 1 − 10/steps so that the average reflects the cycle's training (an average of 0.999 over
    /// 300 steps would still be three quarters the just-pruned weights). Classifiers keep no EMA.
    @Explicit public var emaDecay: Float? = nil
    /// Half-cosine decay of the learning rate to 0 over each cycle, or a constant rate.
    public var decay: ClassifySpec.Decay = .cosine
    /// Steps between durable checkpoints within a cycle (0: only at cycle ends).
    public var checkpointEvery = 250
    public var logEvery = 50
    public init() {}
}

/// The dynamic dead-neuron rate's fixed sample and schedule.
public struct DNRSpec: Codable, Sendable, Equatable {
    /// Inputs it is measured on (drawn once, with a fixed seed, from the training data).
    public var samples = 1000
    /// Steps between measurements within a cycle; null: every epoch of a classifier's training
    /// images, and only at cycle ends for flows. Always measured at every cycle end.
    @Explicit public var every: Int? = nil
    public init() {}
}

/// How quality and speed are measured after every cycle.
public struct PruneEvaluationSpec: Codable, Sendable, Equatable {
    /// Classifiers: held-out images scored (at most); flows: samples drawn per solver.
    public var n = 2000
    /// Flows: Euler steps of each evaluation (1 and N).
    public var steps = [1, 100]
    /// Image flows: a classify job whose features give the Fréchet distance (null: pixel-space
    /// metrics only).
    @Explicit public var classifier: ArtifactRef? = nil
    /// Structured pruning: rows per timed forward pass, and repeats (the median is reported).
    public var timingRows = 256
    public var timingRepeats = 9
    public init() {}
}

/// `prune`: prune a trained model (a velocity model of a train, reflow or distill job, or a
/// classify job's classifier) once or iteratively, with rewinding, optional AP, the dead-neuron
/// rate after every cycle, and quality (and for structured pruning, speed) against sparsity.
/// Wire form: `{"model": {"job": "c1"}, "schedule": "iterative", "sparsity": 0.9, "rate": 0.2}`.
public struct PruneSpec: JobInput {
    public var model: ArtifactRef = .job(id: "missing", artifact: nil)
    public var method: PruneMethod = .magnitude
    public var scope: PruneScope = .global
    public var schedule: PruneSchedule = .iterative
    /// Target fraction of the prunable weights removed (structured: of each layer's units).
    public var sparsity = 0.8
    /// Iterative: fraction of the surviving weights removed per cycle (the last cycle removes
    /// only what the target still needs).
    public var rate = 0.2
    /// Null (filled in when the job is accepted): `init` for an iterative schedule (lottery
    /// ticket), `none` for one-shot pruning (fine-tuning).
    @Explicit public var rewind: RewindPoint? = nil
    public var ap = APSettings()
    public var prunable = PrunableSpec()
    public var retrain = RetrainSpec()
    public var dnr = DNRSpec()
    public var evaluation = PruneEvaluationSpec()
    /// Flows trained on stored pairs (reflow, distill) retrain on them; null means the model's
    /// own job's pairs when it has some, else the independent coupling of its training config.
    @Explicit public var pairs: ArtifactRef? = nil
    /// Classifiers: the training images (null: the dataset the classifier was trained on).
    @Explicit public var data: ImageDataRef? = nil
    /// Seeds the random criterion, AP's random ablation and the retraining batches (cycle c
    /// uses seed + c), so runs with and without AP see the same batches.
    public var seed: UInt64 = 0

    public init() {}
    public static var requiredKeys: [String] { ["model"] }

    public func validationError() -> FieldError? {
        Validation.first(
            { Validation.member("/model", model) },
            { sparsity >= 0 && sparsity < 1 ? nil : ("/sparsity", "must be in [0, 1), got \(sparsity)") },
            { rate > 0 && rate < 1 ? nil : ("/rate", "must be in (0, 1), got \(rate)") },
            { rewind.flatMap { r in r.validationError().map { ("/rewind" + $0.pointer, $0.message) } } },
            { ap.rate >= 0 && ap.rate < 1 ? nil : ("/ap/rate", "must be in [0, 1), got \(ap.rate)") },
            { !ap.enabled || schedule == .iterative ? nil : ("/ap/enabled", "AP works in tandem with an iterative schedule (set schedule to \"iterative\")") },
            { !ap.enabled || method != .structured ? nil : ("/ap/enabled", "AP selects single weights; it does not apply to structured pruning") },
            { !ap.enabled || ap.rate <= rate ? nil : ("/ap/rate", "must not exceed rate (\(rate)): AP's share is part of each cycle's pruning") },
            { method != .structured || schedule == .oneShot ? nil : ("/schedule", "structured pruning is one-shot (set schedule to \"oneShot\")") },
            {
                guard schedule == .iterative, sparsity >= 0, sparsity < 1, rate > 0, rate < 1 else { return nil }
                let n = Pruning.schedule(target: sparsity, rate: rate).count
                return n < 1000 ? nil : ("/rate", "reaching sparsity \(sparsity) at \(rate) per cycle takes more than 1000 cycles; raise rate")
            },
            { method != .structured || effectiveRewind == .none ? nil : ("/rewind", "structured pruning fine-tunes the smaller model; leave rewind out or set it to {\"kind\": \"none\"}") },
            {
                guard let l = prunable.layers else { return nil }
                if l.isEmpty || l.count > 4096 { return ("/prunable/layers", "must list 1 to 4096 layer names (or be null for all)") }
                for (i, n) in l.enumerated() where n.isEmpty || n.utf8.count > 200 { return ("/prunable/layers/\(i)", "must be a layer name") }
                return nil
            },
            { Validation.range("/retrain/steps", retrain.steps, 0, LoopSpec.maxSteps) },
            { retrain.learningRate.flatMap { $0 > 0 && $0.isFinite ? nil : ("/retrain/learningRate", "must be a positive number") } },
            { retrain.batchSize.flatMap { Validation.range("/retrain/batchSize", $0, 1, TrainingConfig.maxBatchSize) } },
            { retrain.emaDecay.flatMap { $0 >= 0 && $0 < 1 ? nil : ("/retrain/emaDecay", "must be in [0, 1), got \($0)") } },
            { retrain.checkpointEvery >= 0 ? nil : ("/retrain/checkpointEvery", "must be ≥ 0 (0 = only at cycle ends)") },
            { retrain.logEvery >= 1 ? nil : ("/retrain/logEvery", "must be ≥ 1") },
            { Validation.range("/dnr/samples", dnr.samples, 1, 100_000) },
            { dnr.every.flatMap { Validation.range("/dnr/every", $0, 1, LoopSpec.maxSteps) } },
            { Validation.range("/evaluation/n", evaluation.n, 2, 100_000) },
            {
                if evaluation.steps.isEmpty || evaluation.steps.count > 8 { return ("/evaluation/steps", "must list 1 to 8 step counts") }
                for (i, k) in evaluation.steps.enumerated() where !(1...1000).contains(k) { return ("/evaluation/steps/\(i)", "must be in [1, 1000], got \(k)") }
                return nil
            },
            { Validation.member("/evaluation/classifier", evaluation.classifier) },
            { Validation.range("/evaluation/timingRows", evaluation.timingRows, 1, 65_536) },
            { Validation.range("/evaluation/timingRepeats", evaluation.timingRepeats, 1, 1000) },
            { Validation.member("/pairs", pairs) },
            { data.flatMap { d in d.validationError().map { ("/data" + $0.pointer, $0.message) } } })
    }

    /// `rewind`, or its default for the schedule.
    public var effectiveRewind: RewindPoint { rewind ?? (schedule == .iterative ? .initialization : .none) }

    /// The fraction of survivors each cycle removes (one entry for a one-shot schedule).
    public var cycleFractions: [Double] {
        schedule == .oneShot ? (sparsity > 0 ? [sparsity] : [0]) : Pruning.schedule(target: sparsity, rate: rate)
    }
}
