public import ReflowFlow
import Foundation
import ReflowNN

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
    /// The trained model's size: scalar parameters, and multiply-adds of one forward pass per
    /// sample (one network evaluation, so one Euler step or one NFE costs this much).
    public var parameters: Int?
    public var macsPerSample: Int?
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
    /// Image models with `reconstruct`: MSE, PSNR and SSIM of the round trip, per image and mean.
    public var reconstruction: ImageFidelity?
    /// With `localError`: each step's local error against RK45, in integration order.
    public var localErrors: [LocalErrorRow]?
}

/// One inversion step's local error (``InvertSpec/localError``).
public struct LocalErrorRow: Codable, Sendable, Equatable {
    /// The step's interval in integration order (tStart > tEnd: inversion runs toward t = 0).
    public var tStart: Double
    public var tEnd: Double
    /// RMS over all coordinates of the step's result minus the RK45 solution from the same state.
    public var rms: Double
    /// Velocity evaluations per point the RK45 reference took for the step.
    public var referenceNFE: Int
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
    /// Share of samples near the target's support, modes (cells) covered, mean distance to it
    /// (built-in 2-D targets only; null otherwise).
    public var fractionWithin: Double?
    public var modesCovered: Int?
    public var modeCount: Int?
    public var meanDistance: Double?
}

/// An evaluate job's metrics.
public struct EvaluationSummary: Codable, Sendable, Equatable {
    public var n: Int
    /// The target's kind (`twoMoons`, `normal`, `points`, …).
    public var target: String
    public var rows: [EvaluationRow]
    /// Straightness S (Liu et al. 2022, Eq. 3) of Euler trajectories with `straightnessSteps`.
    public var straightness: Double
    /// VP diffusion models: Rectified Diffusion's first-order-ness, the mean over the DDIM
    /// trajectory's moves and elements of (ε̂ − ε*)², ε* the constant noise joining its ends
    /// (0: one DDIM step is exact); null for a flow.
    public var firstOrderness: Double?
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

/// A JSON value of a result section (what `result.json` holds under a kind's section keys).
public indirect enum ResultValue: Codable, Sendable, Equatable {
    case null
    case bool(Bool)
    case int(Int)
    case double(Double)
    case string(String)
    case array([ResultValue])
    case object([String: ResultValue])

    public init(from decoder: any Decoder) throws {
        let c = try decoder.singleValueContainer()
        if c.decodeNil() { self = .null }
        else if let b = try? c.decode(Bool.self) { self = .bool(b) }
        else if let i = try? c.decode(Int.self) { self = .int(i) }
        else if let d = try? c.decode(Double.self) { self = .double(d) }
        else if let s = try? c.decode(String.self) { self = .string(s) }
        else if let a = try? c.decode([ResultValue].self) { self = .array(a) }
        else { self = .object(try c.decode([String: ResultValue].self)) }
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.singleValueContainer()
        switch self {
        case .null: try c.encodeNil()
        case .bool(let b): try c.encode(b)
        case .int(let i): try c.encode(i)
        case .double(let d): try c.encode(d)
        case .string(let s): try c.encode(s)
        case .array(let a): try c.encode(a)
        case .object(let o): try c.encode(o)
        }
    }

    /// The value of an `Encodable` (through its JSON form).
    public init(encoding value: some Encodable) throws {
        self = try JSONDecoder().decode(ResultValue.self, from: JSONEncoder().encode(value))
    }

    /// This value decoded as `T`.
    public func decode<T: Decodable>(_ type: T.Type) throws -> T {
        try JSONDecoder().decode(T.self, from: JSONEncoder().encode(self))
    }
}

/// The outcome of a job (`result.json`; the server's job record holds the same object):
/// `type`, `seconds` and `artifacts` for every kind, plus the kind's sections at the top level
/// (`"training"`, `"pairs"`, `"sample"`, `"invert"`, `"evaluation"`, …).
public struct JobResult: Codable, Sendable, Equatable {
    /// A kind's sections by key.
    public typealias Sections = [String: ResultValue]

    public var type: String
    public var seconds: Double
    public var artifacts: [ArtifactInfo]
    public var sections: Sections

    public init(type: String) {
        self.type = type
        seconds = 0
        artifacts = []
        sections = [:]
    }

    /// A section decoded as its kind's summary type (nil when absent or of another shape).
    public func section<T: Decodable>(_ key: String, as type: T.Type) -> T? {
        try? sections[key]?.decode(T.self)
    }

    typealias Key = AnyCodingKey
    static let fixedKeys: Set<String> = ["type", "seconds", "artifacts"]

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: Key.self)
        type = try c.decode(String.self, forKey: Key("type"))
        seconds = try c.decode(Double.self, forKey: Key("seconds"))
        artifacts = try c.decode([ArtifactInfo].self, forKey: Key("artifacts"))
        sections = [:]
        for k in c.allKeys where !JobResult.fixedKeys.contains(k.stringValue) {
            sections[k.stringValue] = try c.decode(ResultValue.self, forKey: k)
        }
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: Key.self)
        try c.encode(type, forKey: Key("type"))
        try c.encode(seconds, forKey: Key("seconds"))
        try c.encode(artifacts, forKey: Key("artifacts"))
        for (k, v) in sections where !JobResult.fixedKeys.contains(k) { try c.encode(v, forKey: Key(k)) }
    }
}

/// Progress of a running job (phase, work done of total, latest loss).
public struct JobProgress: Codable, Sendable, Equatable {
    public var phase: String
    public var done: Int
    public var total: Int
    public var loss: Double?
    /// Named measurements taken at this point (a prune job's `sparsity`, `dnr`, `dnr.<layer>`,
    /// `testAccuracy`, …); nil when the report carries none.
    public var metrics: [String: Double]?

    public init(phase: String, done: Int, total: Int, loss: Double? = nil, metrics: [String: Double]? = nil) {
        self.phase = phase
        self.done = done
        self.total = total
        self.loss = loss
        self.metrics = metrics
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
