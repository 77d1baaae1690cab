public import ReflowFlow

/// What a training phase did.
public struct TrainingSummary: Codable, Sendable, Equatable {
    public var steps: Int
    /// The step the run resumed from (0 for a fresh run).
    public var resumedFromStep: Int
    /// Loss of the last step and the mean over the last `logEvery` steps.
    public var finalLoss: Double
    public var recentMeanLoss: Double
    /// Seconds spent training in this run (after any resume) and the resulting rate.
    public var seconds: Double
    public var stepsPerSecond: Double
    public var threads: Int
}

/// The pairs a reflow or distill job trained on.
public struct PairsSummary: Codable, Sendable, Equatable {
    public var count: Int
    public var solver: ODEMethod
    /// Mean velocity evaluations per pair (exact for fixed-step solvers).
    public var nfeMean: Double
    public var seconds: Double
    /// True when the pairs came from an earlier job or from this job's directory (a resumed run).
    public var reused: Bool
    /// Transport cost E‖z1 − z0‖² of the coupling.
    public var transportCost: Double
}

/// Samples drawn by a sample job.
public struct SampleSummary: Codable, Sendable, Equatable {
    public var n: Int
    public var nfe: Int
    public var nfeMean: Double
    public var seconds: Double
    public var mean: [Double]
    public var std: [Double]
}

/// An inversion (data → noise) and its round trip.
public struct InvertSummary: Codable, Sendable, Equatable {
    public var n: Int
    public var nfe: Int
    public var seconds: Double
    /// Per-dimension mean and std of the latents (≈ 0 and 1 for a good inversion).
    public var latentMean: [Double]
    public var latentStd: [Double]
    /// Sliced W2 between the latents and a fresh N(0, I) sample of the same size, and between
    /// two N(0, I) samples (the finite-sample floor).
    public var latentSWD: Double
    public var gaussianFloorSWD: Double
    /// ‖forward(backward(x)) − x‖ over the points (nil without `reconstruct`).
    public var reconstructionMeanError: Double?
    public var reconstructionMaxError: Double?
}

/// One solver's row of an evaluation (the NFE-vs-quality table).
public struct EvaluationRow: Codable, Sendable, Equatable {
    public var solver: ODEMethod
    public var nfe: Int
    public var nfeMean: Double
    /// Sliced W2 and energy distance between the samples and a fresh target sample.
    public var swd: Double
    public var energyDistance: Double
    /// E‖z1 − z0‖² of the ODE's noise → sample coupling.
    public var transportCost: Double
    /// Share of samples near the target's support, modes (cells) covered, mean distance to it.
    public var fractionWithin: Double
    public var modesCovered: Int
    public var modeCount: Int
    public var meanDistance: Double
}

/// An evaluate job's metrics.
public struct EvaluationSummary: Codable, Sendable, Equatable {
    public var n: Int
    public var target: String
    public var rows: [EvaluationRow]
    /// Straightness S (Liu et al. 2022, Eq. 3) of Euler trajectories with `straightnessSteps`.
    public var straightness: Double
    /// Excess of the ODE coupling's transport cost over the optimal assignment of the same
    /// endpoints (first 512 points; 0 = the flow's coupling is optimal).
    public var transportExcess: Double
    /// Sliced W2 and energy distance between two independent target samples (the floor).
    public var dataFloorSWD: Double
    public var dataFloorEnergy: Double
}

/// A file a job produced.
public struct ArtifactInfo: Codable, Sendable, Equatable {
    public var name: String
    public var bytes: Int
    public var sha256: String
}

/// The outcome of a job (`result.json`; the server's job record holds the same object).
public struct JobResult: Codable, Sendable, Equatable {
    public var type: JobType
    public var seconds: Double
    public var pairs: PairsSummary?
    public var training: TrainingSummary?
    public var sample: SampleSummary?
    public var invert: InvertSummary?
    public var evaluation: EvaluationSummary?
    public var artifacts: [ArtifactInfo]

    public init(type: JobType) {
        self.type = type
        seconds = 0
        artifacts = []
    }
}

/// Progress of a running job (phase, work done of total, latest loss).
public struct JobProgress: Codable, Sendable, Equatable {
    public var phase: String
    public var done: Int
    public var total: Int
    public var loss: Double?

    public init(phase: String, done: Int, total: Int, loss: Double? = nil) {
        self.phase = phase
        self.done = done
        self.total = total
        self.loss = loss
    }
}

/// Why a job did not finish. Typed, and independent of HTTP: the server maps each case to a
/// state (``interrupted`` → queued again or canceled) and to a problem code in its API view.
public enum JobError: Error, CustomStringConvertible, Equatable, Sendable {
    /// Asked to stop (cancel or shutdown) at a safe point; the last checkpoint is on disk. The
    /// scheduler decides whether that means canceled (the user asked) or queued again (shutdown).
    case interrupted
    /// The spec or a referenced artifact cannot be used (a bad uploaded checkpoint, a missing
    /// model, pairs of another dimension). Retrying does not help.
    case invalidInput(String)
    /// The job would exceed a limit (memory budget, disk floor, solver step limit).
    case resourceLimit(String)
    /// A file could not be read or written (disk full, permissions); the message names the
    /// operation and errno, never a server-internal path.
    case io(String)
    /// Training or integration produced non-finite values.
    case diverged(String)

    /// A stable machine-readable code (the API's `problem.code` for a failed job).
    public var code: String {
        switch self {
        case .interrupted: return "interrupted"
        case .invalidInput: return "invalid_input"
        case .resourceLimit: return "resource_limit"
        case .io: return "io_error"
        case .diverged: return "diverged"
        }
    }

    public var description: String {
        switch self {
        case .interrupted: return "interrupted"
        case .invalidInput(let m), .resourceLimit(let m), .io(let m), .diverged(let m): return m
        }
    }
}
