public import ReflowNN
public import ReflowFlow

/// `distill`: a k-step student trained on a teacher's pairs with t on the grid
/// {0, 1/k, …, (k−1)/k} (`k`, default 1 = one-step). Otherwise as ``ReflowSpec``.
public struct DistillSpec: StudentInput {
    public var student = StudentSettings()
    /// Distillation steps k.
    public var k = 1
    public var training = TrainingConfig()
    public var loop = LoopSpec()
    public var inherited: Set<String> = Set(inheritableKeys)
    public var previewSteps: Int { k }
    /// InstaFlow distils pairs its 2-RF generated at guidance 1.5.
    public static var defaultGuidance: Float? { 1.5 }

    public init() {}
    public static var requiredKeys: [String] { ["teacher"] }

    enum CodingKeys: String, CodingKey { case k }

    public init(from decoder: any Decoder) throws {
        student = try StudentSettings(from: decoder)
        k = try decoder.container(keyedBy: CodingKeys.self).decode(Int.self, forKey: .k)
        training = try TrainingConfig(from: decoder)
        loop = try LoopSpec(from: decoder)
        inherited = []
    }

    public func encode(to encoder: any Encoder) throws {
        try student.encode(to: encoder)
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(k, forKey: .k)
        try training.encode(to: encoder)
        try loop.encode(to: encoder)
    }

    public func validationError() -> FieldError? {
        Validation.first(
            { student.validationError() },
            { Validation.range("/k", k, 1, 1000) },
            { training.twoStep != nil && k != 1 ? ("/twoStep", "is a term of one-step distillation (k = 1), k is \(k)") : nil },
            {
                if case .grid(let gk, _) = training.timeSampler, gk == k { return nil }
                return ("/timeSampler", "a distill job trains on the k-step grid: leave it out or use {\"kind\": \"grid\", \"k\": \(k)}")
            },
            { studentTrainingError },
            { loop.validationError() })
    }
}

public enum DistillJob: JobKind {
    public static let name = "distill"
    public static let summary = "Distill a teacher into a k-step (default one-step) student on its pairs, with t on the k-step grid."
    public static let phases = ["pairs", "distill"]
    public static let outputs = ReflowJob.outputs.map {
        $0.name == "samples.png" ? JobOutput("samples.png", "k-step Euler samples over the data (2-D models)") : $0
    }
    public static let trainingPhases = ["distill"]

    /// Without a `timeSampler`, the student trains on the k-step grid.
    public static func decode(_ user: Any) throws -> DistillSpec {
        var s: DistillSpec = try StudentTraining.decode(user)
        if s.training.phases != nil {
            throw SpecError(pointer: "/input/phases", message: "phased rectification is a reflow of a VP teacher: use it in a reflow job")
        }
        if (user as? [String: Any])?["timeSampler"] == nil { s.training.timeSampler = .grid(k: s.k, epsilon: 0) }
        return s
    }

    public static func prepare(_ input: DistillSpec, resolver: any ArtifactResolver) throws(SpecError) -> DistillSpec {
        try StudentTraining.prepare(input, resolver: resolver)
    }

    public static func estimate(_ input: DistillSpec, resolver: any ArtifactResolver, threads: Int) throws(SpecError) -> ResourceEstimate {
        try StudentTraining.estimate(input, resolver: resolver, threads: threads)
    }

    public static func run(_ s: DistillSpec, job: JobExecution) throws -> JobResult.Sections {
        try StudentTraining.run(s, job: job)
    }
}
