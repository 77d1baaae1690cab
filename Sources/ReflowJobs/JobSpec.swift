public import ReflowFlow
import Foundation

// Job specifications: the JSON a user POSTs to the server (`{"type": ..., "input": {...}}`) and
// that `reflowd run SPEC.json --out DIR` executes offline. Every field has a default (docs/JOBS.md
// lists them); ``SpecParser`` fills them in, rejects unknown fields and validates values with a
// JSON pointer before any work starts, and the filled-in spec is echoed back as `input`.

/// The kinds of job.
public enum JobType: String, Codable, Sendable, CaseIterable {
    /// Train a 1-rectified flow from independent draws x0 ~ π0, x1 ~ π1.
    case train
    /// Generate (z0, z1) pairs with a teacher ODE and train the (k+1)-rectified flow on them.
    case reflow
    /// Train a k-step student on a teacher's pairs with t on the grid {0, 1/k, …}.
    case distill
    /// Draw samples (noise → data) from a model with a chosen ODE solver.
    case sample
    /// Integrate data back to noise (inversion / encoding) and check the reconstruction.
    case invert
    /// Straightness, transport cost, SW2, energy distance, coverage and an NFE table.
    case evaluate
}

/// Where a job reads a model or a pairs file: another job's artifact or a file path.
/// Wire JSON: `{"job": "<id>"}` (optionally `"artifact": "model" | "pairs"`) or `{"path": "file"}`.
/// The server resolves `job` ids to finished jobs; `path` is accepted offline only.
public enum ArtifactRef: Codable, Sendable, Equatable {
    case job(id: String, artifact: String?)
    case path(String)

    enum CodingKeys: String, CodingKey { case job, artifact, path }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        if let id = try c.decodeIfPresent(String.self, forKey: .job) {
            if c.contains(.path) {
                throw DecodingError.dataCorruptedError(forKey: .path, in: c, debugDescription: "give either job or path, not both")
            }
            self = .job(id: id, artifact: try c.decodeIfPresent(String.self, forKey: .artifact))
        } else if let p = try c.decodeIfPresent(String.self, forKey: .path) {
            self = .path(p)
        } else {
            throw DecodingError.keyNotFound(CodingKeys.job, .init(codingPath: c.codingPath, debugDescription: "needs \"job\" (a job id) or \"path\""))
        }
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        switch self {
        case .job(let id, let a): try c.encode(id, forKey: .job); try c.encodeIfPresent(a, forKey: .artifact)
        case .path(let p): try c.encode(p, forKey: .path)
        }
    }

    /// The first invalid field as (pointer relative to this object, message).
    public func validationError() -> (pointer: String, message: String)? {
        switch self {
        case .job(let id, let artifact):
            if !JobID.isValid(id) { return ("/job", "is not a job id (1–64 characters of [A-Za-z0-9_-]), got \"\(id.prefix(80))\"") }
            if let a = artifact, !["model", "pairs"].contains(a) { return ("/artifact", "must be \"model\" or \"pairs\", got \"\(a.prefix(40))\"") }
        case .path(let p):
            if p.isEmpty || p.utf8.count > 4096 || p.contains("\0") { return ("/path", "must be a non-empty file path") }
        }
        return nil
    }
}

/// Job identifiers: 1–64 characters of `[A-Za-z0-9_-]` (safe as a directory name and in a URL).
public enum JobID {
    public static func isValid(_ s: String) -> Bool {
        !s.isEmpty && s.utf8.count <= 64 && s.utf8.allSatisfy { c in
            (c >= 48 && c <= 57) || (c >= 65 && c <= 90) || (c >= 97 && c <= 122) || c == 45 || c == 95
        }
    }
}

/// Training-loop settings shared by train, reflow and distill jobs.
public struct LoopSpec: Codable, Sendable, Equatable {
    /// Optimizer steps.
    public var steps: Int = 5000
    /// Steps between durable checkpoints (a restarted job resumes from the last one); 0 = only at the end.
    public var checkpointEvery: Int = 1000
    /// Steps between loss records in `loss.csv` and progress reports.
    public var logEvery: Int = 100
    /// Points in the `samples.png` preview rendered at the end (Euler, 100 steps); 0 = none.
    public var previewPoints: Int = 2000

    public init() {}

    enum CodingKeys: String, CodingKey { case steps, checkpointEvery, logEvery, previewPoints }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        let d = LoopSpec()
        steps = try c.decodeIfPresent(Int.self, forKey: .steps) ?? d.steps
        checkpointEvery = try c.decodeIfPresent(Int.self, forKey: .checkpointEvery) ?? d.checkpointEvery
        logEvery = try c.decodeIfPresent(Int.self, forKey: .logEvery) ?? d.logEvery
        previewPoints = try c.decodeIfPresent(Int.self, forKey: .previewPoints) ?? d.previewPoints
    }

    public func validationError() -> (pointer: String, message: String)? {
        if steps < 1 || steps > 10_000_000 { return ("/steps", "must be in [1, 10000000], got \(steps)") }
        if checkpointEvery < 0 { return ("/checkpointEvery", "must be ≥ 0 (0 = only at the end), got \(checkpointEvery)") }
        if logEvery < 1 { return ("/logEvery", "must be ≥ 1, got \(logEvery)") }
        if previewPoints < 0 || previewPoints > 100_000 { return ("/previewPoints", "must be in [0, 100000], got \(previewPoints)") }
        return nil
    }
}

/// `train`: a 1-rectified flow. The input is a ``ToyTrainingConfig`` and a ``LoopSpec``, flat:
/// `{"data": {"kind": "twoMoons"}, "steps": 2000, "learningRate": 1e-3}`.
public struct TrainSpec: Codable, Sendable, Equatable {
    public var training = ToyTrainingConfig()
    public var loop = LoopSpec()

    public init() {}

    public init(from decoder: any Decoder) throws {
        training = try ToyTrainingConfig(from: decoder)
        loop = try LoopSpec(from: decoder)
    }

    public func encode(to encoder: any Encoder) throws {
        try training.encode(to: encoder)
        try loop.encode(to: encoder)
    }

    public func validationError() -> (pointer: String, message: String)? {
        training.validationError() ?? loop.validationError()
    }
}

/// How a student's weights start.
public enum StudentInit: String, Codable, Sendable {
    /// From the teacher's weights (fresh optimizer and EMA), as the paper's image code does.
    case teacher
    /// From a fresh random initialisation (`seed`), as in the paper's 2-D experiments.
    case scratch
}

/// `reflow` and `distill`: a student trained on (z0, z1) pairs of a teacher.
///
/// The pairs are drawn from `teacher` with `solver` (z0 from the teacher's π0 with `noiseSeed`),
/// or read from another job's pairs (`pairsFrom`). The training settings are those of
/// ``ToyTrainingConfig``, flat; `model`, `data` and `source` default to the teacher's. A distill
/// job trains on the time grid {0, 1/k, …, (k−1)/k} (`k`, default 1 = one-step).
public struct StudentSpec: Codable, Sendable, Equatable {
    public var teacher: ArtifactRef = .job(id: "missing", artifact: nil)
    /// Use the teacher's EMA weights when it has them.
    public var useEMA = true
    /// Number of pairs to generate.
    public var pairs = 50_000
    /// Reuse the pairs file of an earlier reflow/distill job instead of generating.
    public var pairsFrom: ArtifactRef?
    /// The teacher ODE solver (the paper: RK45 at 1e-5).
    public var solver: ODEMethod = .rk45(rtol: 1e-5, atol: 1e-5, maxNFE: 10_000)
    /// Rows per solver block (RK45 adapts its step per block).
    public var blockRows = 1024
    /// Seed of the z0 draw.
    public var noiseSeed: UInt64 = 1
    public var initialization: StudentInit = .teacher
    /// Distillation steps k (distill only; nil for reflow).
    public var k: Int?
    public var training = ToyTrainingConfig()
    public var loop = LoopSpec()
    /// Training fields the user left out that follow the teacher (`model`, `data`, `source`).
    /// Not encoded: once resolved, the echoed spec names the teacher's values.
    public var inherited: Set<String> = []
    /// Whether the input named a time sampler (a distill job otherwise trains on the k-grid).
    var timeSamplerGiven = false

    public init(teacher: ArtifactRef) {
        self.teacher = teacher
        inherited = ["model", "data", "source"]
    }

    enum CodingKeys: String, CodingKey { case teacher, useEMA, pairs, pairsFrom, solver, blockRows, noiseSeed, initialization, k }
    enum TrainingKeys: String, CodingKey { case model, data, source, timeSampler }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        let d = StudentSpec(teacher: .path("x"))
        teacher = try c.decode(ArtifactRef.self, forKey: .teacher)
        useEMA = try c.decodeIfPresent(Bool.self, forKey: .useEMA) ?? d.useEMA
        pairs = try c.decodeIfPresent(Int.self, forKey: .pairs) ?? d.pairs
        pairsFrom = try c.decodeIfPresent(ArtifactRef.self, forKey: .pairsFrom)
        solver = try c.decodeIfPresent(ODEMethod.self, forKey: .solver) ?? d.solver
        blockRows = try c.decodeIfPresent(Int.self, forKey: .blockRows) ?? d.blockRows
        noiseSeed = try c.decodeIfPresent(UInt64.self, forKey: .noiseSeed) ?? d.noiseSeed
        initialization = try c.decodeIfPresent(StudentInit.self, forKey: .initialization) ?? d.initialization
        k = try c.decodeIfPresent(Int.self, forKey: .k)
        training = try ToyTrainingConfig(from: decoder)
        loop = try LoopSpec(from: decoder)
        let t = try decoder.container(keyedBy: TrainingKeys.self)
        inherited = Set(["model", "data", "source"].filter { !t.contains(TrainingKeys(rawValue: $0)!) })
        timeSamplerGiven = t.contains(.timeSampler)
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(teacher, forKey: .teacher)
        try c.encode(useEMA, forKey: .useEMA)
        try c.encode(pairs, forKey: .pairs)
        try c.encode(pairsFrom, forKey: .pairsFrom)
        try c.encode(solver, forKey: .solver)
        try c.encode(blockRows, forKey: .blockRows)
        try c.encode(noiseSeed, forKey: .noiseSeed)
        try c.encode(initialization, forKey: .initialization)
        try c.encodeIfPresent(k, forKey: .k)
        try training.encode(to: encoder)
        try loop.encode(to: encoder)
    }

    public static func == (a: StudentSpec, b: StudentSpec) -> Bool {
        a.teacher == b.teacher && a.useEMA == b.useEMA && a.pairs == b.pairs && a.pairsFrom == b.pairsFrom
            && a.solver == b.solver && a.blockRows == b.blockRows && a.noiseSeed == b.noiseSeed
            && a.initialization == b.initialization && a.k == b.k && a.training == b.training && a.loop == b.loop
    }

    public func validationError() -> (pointer: String, message: String)? {
        if let e = teacher.validationError() { return ("/teacher" + e.pointer, e.message) }
        if let e = pairsFrom?.validationError() { return ("/pairsFrom" + e.pointer, e.message) }
        if pairs < 1 || pairs > 5_000_000 { return ("/pairs", "must be in [1, 5000000], got \(pairs)") }
        if let e = solver.validationPointer() { return ("/solver" + e.pointer, e.message) }
        if blockRows < 1 || blockRows > 1 << 20 { return ("/blockRows", "must be in [1, 1048576], got \(blockRows)") }
        if let k {
            if k < 1 || k > 1000 { return ("/k", "must be in [1, 1000], got \(k)") }
            if case .grid(let gk, _) = training.timeSampler, gk == k {} else {
                return ("/timeSampler", "a distill job trains on the k-step grid: leave it out or use {\"kind\": \"grid\", \"k\": \(k)}")
            }
        }
        return training.validationError() ?? loop.validationError()
    }
}

/// Where the points of an `invert` job come from: a built-in distribution, a CSV/NPY file
/// (offline only), or inline rows. Wire JSON: `{"distribution": {...}, "n": 1000, "seed": 0}`,
/// `{"path": "points.csv"}` or `{"inline": [[0.5, 1.0], ...]}`.
public enum PointSource: Codable, Sendable, Equatable {
    case distribution(Distribution2D, n: Int, seed: UInt64)
    case path(String)
    case inline([[Float]])

    enum CodingKeys: String, CodingKey { case distribution, n, seed, path, inline }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        let given = [CodingKeys.distribution, .path, .inline].filter { c.contains($0) }
        guard given.count == 1 else {
            throw DecodingError.dataCorrupted(.init(codingPath: c.codingPath,
                debugDescription: "needs exactly one of \"distribution\", \"path\" or \"inline\""))
        }
        switch given[0] {
        case .distribution:
            self = .distribution(try c.decode(Distribution2D.self, forKey: .distribution),
                                 n: try c.decodeIfPresent(Int.self, forKey: .n) ?? 1000,
                                 seed: try c.decodeIfPresent(UInt64.self, forKey: .seed) ?? 0)
        case .path: self = .path(try c.decode(String.self, forKey: .path))
        default: self = .inline(try c.decode([[Float]].self, forKey: .inline))
        }
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        switch self {
        case .distribution(let d, let n, let s):
            try c.encode(d, forKey: .distribution); try c.encode(n, forKey: .n); try c.encode(s, forKey: .seed)
        case .path(let p): try c.encode(p, forKey: .path)
        case .inline(let rows): try c.encode(rows, forKey: .inline)
        }
    }

    public func validationError() -> (pointer: String, message: String)? {
        switch self {
        case .distribution(let d, let n, _):
            if let e = d.validationError() { return ("/distribution" + e.pointer, e.message) }
            if n < 1 || n > 1_000_000 { return ("/n", "must be in [1, 1000000], got \(n)") }
        case .path(let p):
            if p.isEmpty || p.utf8.count > 4096 || p.contains("\0") { return ("/path", "must be a non-empty file path") }
        case .inline(let rows):
            if rows.isEmpty || rows.count > 100_000 { return ("/inline", "must hold 1 to 100000 points, got \(rows.count)") }
            for (i, r) in rows.enumerated() {
                if r.count != 2 { return ("/inline/\(i)", "must be a point [x, y], got \(r.count) numbers") }
                if !r.allSatisfy(\.isFinite) { return ("/inline/\(i)", "must hold finite numbers") }
            }
        }
        return nil
    }
}

/// Output file format for points.
public enum PointFormat: String, Codable, Sendable { case npy, csv }

/// `sample`: n points from noise (the model's π0) through `solver`.
public struct SampleSpec: Codable, Sendable, Equatable {
    public var model: ArtifactRef = .job(id: "missing", artifact: nil)
    public var useEMA = true
    public var n = 2000
    public var seed: UInt64 = 0
    public var solver: ODEMethod = .euler(steps: 100)
    /// Trajectories drawn in `trajectories.png` (0 = no picture).
    public var trajectories = 300
    public var format: PointFormat = .npy

    public init(model: ArtifactRef) { self.model = model }

    enum CodingKeys: String, CodingKey { case model, useEMA, n, seed, solver, trajectories, format }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        let d = SampleSpec(model: .path("x"))
        model = try c.decode(ArtifactRef.self, forKey: .model)
        useEMA = try c.decodeIfPresent(Bool.self, forKey: .useEMA) ?? d.useEMA
        n = try c.decodeIfPresent(Int.self, forKey: .n) ?? d.n
        seed = try c.decodeIfPresent(UInt64.self, forKey: .seed) ?? d.seed
        solver = try c.decodeIfPresent(ODEMethod.self, forKey: .solver) ?? d.solver
        trajectories = try c.decodeIfPresent(Int.self, forKey: .trajectories) ?? d.trajectories
        format = try c.decodeIfPresent(PointFormat.self, forKey: .format) ?? d.format
    }

    public func validationError() -> (pointer: String, message: String)? {
        if let e = model.validationError() { return ("/model" + e.pointer, e.message) }
        if n < 1 || n > 1_000_000 { return ("/n", "must be in [1, 1000000], got \(n)") }
        if let e = solver.validationPointer() { return ("/solver" + e.pointer, e.message) }
        if trajectories < 0 || trajectories > min(n, 5000) { return ("/trajectories", "must be in [0, min(n, 5000)], got \(trajectories)") }
        return nil
    }
}

/// `invert`: data → noise with `solver` run backward (t from 1 to 0), then, with
/// `reconstruct`, forward again to measure how well the inversion round-trips.
public struct InvertSpec: Codable, Sendable, Equatable {
    public var model: ArtifactRef = .job(id: "missing", artifact: nil)
    public var useEMA = true
    public var points: PointSource = .distribution(.gaussianRing(), n: 1000, seed: 0)
    public var solver: ODEMethod = .rfSolver2(steps: 50)
    public var reconstruct = true
    public var format: PointFormat = .npy

    public init(model: ArtifactRef) { self.model = model }

    enum CodingKeys: String, CodingKey { case model, useEMA, points, solver, reconstruct, format }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        let d = InvertSpec(model: .path("x"))
        model = try c.decode(ArtifactRef.self, forKey: .model)
        useEMA = try c.decodeIfPresent(Bool.self, forKey: .useEMA) ?? d.useEMA
        points = try c.decodeIfPresent(PointSource.self, forKey: .points) ?? d.points
        solver = try c.decodeIfPresent(ODEMethod.self, forKey: .solver) ?? d.solver
        reconstruct = try c.decodeIfPresent(Bool.self, forKey: .reconstruct) ?? d.reconstruct
        format = try c.decodeIfPresent(PointFormat.self, forKey: .format) ?? d.format
    }

    public func validationError() -> (pointer: String, message: String)? {
        if let e = model.validationError() { return ("/model" + e.pointer, e.message) }
        if let e = points.validationError() { return ("/points" + e.pointer, e.message) }
        if let e = solver.validationPointer() { return ("/solver" + e.pointer, e.message) }
        return nil
    }
}

/// `evaluate`: metrics of a model against its data distribution (or `target`), for each solver.
public struct EvaluateSpec: Codable, Sendable, Equatable {
    public var model: ArtifactRef = .job(id: "missing", artifact: nil)
    public var useEMA = true
    public var n = 10_000
    public var seed: UInt64 = 1_000_001
    /// The reference distribution; default the model's training data.
    public var target: Distribution2D?
    public var solvers: [ODEMethod] = [.euler(steps: 1), .euler(steps: 2), .euler(steps: 100), .rk45(rtol: 1e-5, atol: 1e-5, maxNFE: 10_000)]
    /// Euler steps of the trajectory for straightness (paper Eq. 3).
    public var straightnessSteps = 100
    /// Random projections of the sliced W2 distance.
    public var projections = 256

    public init(model: ArtifactRef) { self.model = model }

    enum CodingKeys: String, CodingKey { case model, useEMA, n, seed, target, solvers, straightnessSteps, projections }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        let d = EvaluateSpec(model: .path("x"))
        model = try c.decode(ArtifactRef.self, forKey: .model)
        useEMA = try c.decodeIfPresent(Bool.self, forKey: .useEMA) ?? d.useEMA
        n = try c.decodeIfPresent(Int.self, forKey: .n) ?? d.n
        seed = try c.decodeIfPresent(UInt64.self, forKey: .seed) ?? d.seed
        target = try c.decodeIfPresent(Distribution2D.self, forKey: .target)
        solvers = try c.decodeIfPresent([ODEMethod].self, forKey: .solvers) ?? d.solvers
        straightnessSteps = try c.decodeIfPresent(Int.self, forKey: .straightnessSteps) ?? d.straightnessSteps
        projections = try c.decodeIfPresent(Int.self, forKey: .projections) ?? d.projections
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(model, forKey: .model)
        try c.encode(useEMA, forKey: .useEMA)
        try c.encode(n, forKey: .n)
        try c.encode(seed, forKey: .seed)
        try c.encode(target, forKey: .target)
        try c.encode(solvers, forKey: .solvers)
        try c.encode(straightnessSteps, forKey: .straightnessSteps)
        try c.encode(projections, forKey: .projections)
    }

    public func validationError() -> (pointer: String, message: String)? {
        if let e = model.validationError() { return ("/model" + e.pointer, e.message) }
        if n < 2 || n > 200_000 { return ("/n", "must be in [2, 200000], got \(n)") }
        if let e = target?.validationError() { return ("/target" + e.pointer, e.message) }
        if solvers.isEmpty || solvers.count > 32 { return ("/solvers", "must list 1 to 32 solvers") }
        for (i, s) in solvers.enumerated() {
            if let e = s.validationPointer() { return ("/solvers/\(i)" + e.pointer, e.message) }
        }
        if straightnessSteps < 2 || straightnessSteps > 1000 { return ("/straightnessSteps", "must be in [2, 1000], got \(straightnessSteps)") }
        if projections < 1 || projections > 4096 { return ("/projections", "must be in [1, 4096], got \(projections)") }
        return nil
    }
}

/// A job: its type and its filled-in input. Wire JSON: `{"type": "train", "input": {...}}`.
public enum JobSpec: Codable, Sendable, Equatable {
    case train(TrainSpec)
    case reflow(StudentSpec)
    case distill(StudentSpec)
    case sample(SampleSpec)
    case invert(InvertSpec)
    case evaluate(EvaluateSpec)

    public var type: JobType {
        switch self {
        case .train: .train
        case .reflow: .reflow
        case .distill: .distill
        case .sample: .sample
        case .invert: .invert
        case .evaluate: .evaluate
        }
    }

    enum CodingKeys: String, CodingKey { case type, input }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        let type = try c.decode(JobType.self, forKey: .type)
        // An absent input means "all defaults" for train; the other types need a model/teacher.
        let hasInput = c.contains(.input)
        switch type {
        case .train: self = .train(hasInput ? try c.decode(TrainSpec.self, forKey: .input) : TrainSpec())
        case .reflow:
            // A reflow keeps `k` absent; a given `k` then fails the unknown-field check.
            self = .reflow(try c.decode(StudentSpec.self, forKey: .input))
        case .distill:
            var s = try c.decode(StudentSpec.self, forKey: .input)
            let k = s.k ?? 1
            s.k = k
            if !s.timeSamplerGiven { s.training.timeSampler = .grid(k: k, epsilon: 0) }
            self = .distill(s)
        case .sample: self = .sample(try c.decode(SampleSpec.self, forKey: .input))
        case .invert: self = .invert(try c.decode(InvertSpec.self, forKey: .input))
        case .evaluate: self = .evaluate(try c.decode(EvaluateSpec.self, forKey: .input))
        }
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(type, forKey: .type)
        switch self {
        case .train(let s): try c.encode(s, forKey: .input)
        case .reflow(let s), .distill(let s): try c.encode(s, forKey: .input)
        case .sample(let s): try c.encode(s, forKey: .input)
        case .invert(let s): try c.encode(s, forKey: .input)
        case .evaluate(let s): try c.encode(s, forKey: .input)
        }
    }

    /// Decodes a stored (already prepared) spec from its type and its `input` object.
    public init(type: JobType, input decoder: any Decoder) throws {
        switch type {
        case .train: self = .train(try TrainSpec(from: decoder))
        case .reflow: self = .reflow(try StudentSpec(from: decoder))
        case .distill: self = .distill(try StudentSpec(from: decoder))
        case .sample: self = .sample(try SampleSpec(from: decoder))
        case .invert: self = .invert(try InvertSpec(from: decoder))
        case .evaluate: self = .evaluate(try EvaluateSpec(from: decoder))
        }
    }

    /// Encodes only the `input` object.
    public func encodeInput(to encoder: any Encoder) throws {
        switch self {
        case .train(let s): try s.encode(to: encoder)
        case .reflow(let s), .distill(let s): try s.encode(to: encoder)
        case .sample(let s): try s.encode(to: encoder)
        case .invert(let s): try s.encode(to: encoder)
        case .evaluate(let s): try s.encode(to: encoder)
        }
    }

    /// The first invalid field as (JSON pointer from the document root, message), or nil.
    public func validationError() -> (pointer: String, message: String)? {
        let e: (pointer: String, message: String)?
        switch self {
        case .train(let s): e = s.validationError()
        case .reflow(let s): e = s.k != nil ? ("/k", "is for distill jobs only (a reflow trains on all t)") : s.validationError()
        case .distill(let s): e = s.validationError()
        case .sample(let s): e = s.validationError()
        case .invert(let s): e = s.validationError()
        case .evaluate(let s): e = s.validationError()
        }
        return e.map { ("/input" + $0.pointer, $0.message) }
    }

    /// Every artifact reference of the spec with its pointer (for the resolver).
    public var references: [(pointer: String, ref: ArtifactRef)] {
        switch self {
        case .train: return []
        case .reflow(let s), .distill(let s):
            return [("/input/teacher", s.teacher)] + (s.pairsFrom.map { [("/input/pairsFrom", $0)] } ?? [])
        case .sample(let s): return [("/input/model", s.model)]
        case .invert(let s):
            if case .path(let p) = s.points { return [("/input/model", s.model), ("/input/points", .path(p))] }
            return [("/input/model", s.model)]
        case .evaluate(let s): return [("/input/model", s.model)]
        }
    }
}
