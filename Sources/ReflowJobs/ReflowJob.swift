public import ReflowNN
public import ReflowFlow

/// `reflow`: generate (z0, z1) pairs with a teacher's ODE and train the (k+1)-rectified flow on
/// them. Flat wire form: the ``StudentSettings`` (`teacher`, `pairs`, `solver`, …), the
/// ``TrainingConfig`` and the ``LoopSpec`` in one object; `model`, `data` and `source` follow
/// the teacher unless given.
public struct ReflowSpec: StudentInput {
    public var student = StudentSettings()
    public var training = TrainingConfig()
    public var loop = LoopSpec()
    public var inherited: Set<String> = Set(inheritableKeys)
    public var previewSteps: Int { 100 }

    public init() {}
    public static var requiredKeys: [String] { ["teacher"] }

    public init(from decoder: any Decoder) throws {
        student = try StudentSettings(from: decoder)
        training = try TrainingConfig(from: decoder)
        loop = try LoopSpec(from: decoder)
        inherited = []
    }

    public func encode(to encoder: any Encoder) throws {
        try student.encode(to: encoder)
        try training.encode(to: encoder)
        try loop.encode(to: encoder)
    }

    public func validationError() -> FieldError? {
        student.validationError() ?? studentTrainingError ?? loop.validationError()
    }
}

public enum ReflowJob: JobKind {
    public static let name = "reflow"
    public static let summary = "Generate (z0, z1) pairs with a teacher's ODE and train the next rectified flow on them."
    public static let phases = ["pairs", "reflow"]
    public static let outputs = [
        JobOutput(JobDirectory.Name.pairs, "the (z0, z1) pairs (z1 and the noise generator state, or both tensors)"),
        JobOutput(JobDirectory.Name.model, "the trained student"),
        JobOutput(JobDirectory.Name.lossLog, "step,loss records"),
        JobOutput("coupling.png", "300 pairs joined by lines (2-D models)"),
        JobOutput("samples.png", "Euler-100 samples over the data (2-D models)"),
    ]
    public static let trainingPhases = ["reflow"]

    public static func decode(_ user: Any) throws -> ReflowSpec {
        if let d = user as? [String: Any], d["k"] != nil {
            throw SpecError(pointer: "/input/k", message: "is for distill jobs only (a reflow trains on all t)")
        }
        let s: ReflowSpec = try StudentTraining.decode(user)
        if s.training.twoStep != nil {
            throw SpecError(pointer: "/input/twoStep", message: "is a term of one-step distillation: use it in a distill job with k = 1")
        }
        return s
    }

    public static func prepare(_ input: ReflowSpec, resolver: any ArtifactResolver) throws(SpecError) -> ReflowSpec {
        try StudentTraining.prepare(input, resolver: resolver)
    }

    public static func estimate(_ input: ReflowSpec, resolver: any ArtifactResolver, threads: Int) throws(SpecError) -> ResourceEstimate {
        try StudentTraining.estimate(input, resolver: resolver, threads: threads)
    }

    public static func run(_ s: ReflowSpec, job: JobExecution) throws -> JobResult.Sections {
        try StudentTraining.run(s, job: job)
    }
}
