public import ReflowNN
import ReflowFlow
import Foundation

// The job-kind seam. A job kind is one type conforming to ``JobKind`` (its input spec with
// defaults and validation, how it resolves references, what memory it needs, how it runs, what
// it writes) plus one line in ``JobKinds/all``. The parser, the runner, the server's routes and
// accepted `type` list, docs/JOBS.md and the OpenAPI enumerations all read the registry.

/// A job kind's input: decodable from a partial JSON object over its defaults
/// (``DefaultDecodable``), validated with JSON pointers, echoed back filled in.
public protocol JobInput: DefaultDecodable, Sendable, Equatable, Validatable {}

/// A file a job kind writes into its directory (`JobDirectory`), as listed in docs/JOBS.md and
/// served under `/v1/jobs/{id}/artifacts/{name}` (images also under `/images/{name}`).
public struct JobOutput: Sendable, Equatable, Codable {
    public var name: String
    public var description: String
    /// A PNG a client can fetch from the images route.
    public var isImage: Bool { name.hasSuffix(".png") }

    public init(_ name: String, _ description: String) {
        self.name = name
        self.description = description
    }
}

/// What a job needs at its peak, estimated from its prepared spec before it is queued.
public struct ResourceEstimate: Codable, Sendable, Equatable {
    /// One term of the estimate (`"parameters and optimizer state"`, `"activations"`, …).
    public struct Term: Codable, Sendable, Equatable {
        public var name: String
        public var bytes: Int
    }
    public var terms: [Term] = []

    public init() {}

    /// The sum of the terms (saturating: an absurd spec estimates to `Int.max`, never traps).
    public var peakBytes: Int { terms.reduce(0) { Self.add($0, $1.bytes) } }

    /// Adds `floats × 4` bytes (saturating) under `name`.
    public mutating func add(_ name: String, floats: Int...) {
        let n = floats.reduce(1) { Self.multiply($0, $1) }
        terms.append(Term(name: name, bytes: Self.multiply(n, 4)))
    }

    /// Adds a byte count under `name`.
    public mutating func add(_ name: String, bytes: Int) { terms.append(Term(name: name, bytes: max(0, bytes))) }

    public static func add(_ a: Int, _ b: Int) -> Int {
        let (r, o) = a.addingReportingOverflow(b)
        return o ? Int.max : r
    }

    public static func multiply(_ a: Int, _ b: Int) -> Int {
        let (r, o) = max(0, a).multipliedReportingOverflow(by: max(0, b))
        return o ? Int.max : r
    }
}

/// One kind of job.
public protocol JobKind: Sendable {
    associatedtype Input: JobInput
    /// The `type` of the wire JSON.
    static var name: String { get }
    /// One sentence for docs/JOBS.md and the OpenAPI description.
    static var summary: String { get }
    /// The files this kind may write (besides `result.json`, `spec.json` and the server's own).
    static var outputs: [JobOutput] { get }
    /// The phase names its progress reports use, in order.
    static var phases: [String] { get }
    /// The phases whose progress counts optimizer steps (the server's `steps_total` metric).
    static var trainingPhases: [String] { get }

    /// Decodes the user's `input` object (parsed, possibly partial). The default merges it over
    /// `Input()`; kinds whose defaults depend on other jobs (a reflow inherits its teacher's
    /// model) override it to note which keys were absent.
    static func decode(_ user: Any) throws -> Input
    /// Resolves references (checks that referenced artifacts exist and fit) and fills fields
    /// inherited from them. The result is what the API echoes as `input`. Errors carry the
    /// JSON pointer from the document root.
    static func prepare(_ input: Input, resolver: any ArtifactResolver) throws(SpecError) -> Input
    /// The peak memory of running the prepared `input` with `threads` compute threads.
    static func estimate(_ input: Input, resolver: any ArtifactResolver, threads: Int) throws(SpecError) -> ResourceEstimate
    /// Runs the prepared `input`; writes outputs through `job` and returns the result's sections
    /// (`"training"`, `"sample"`, …) to merge into `result.json`.
    static func run(_ input: Input, job: JobExecution) throws -> JobResult.Sections
}

extension JobKind {
    public static func decode(_ user: Any) throws -> Input { try Input.decodePartial(object: user) }
    public static func prepare(_ input: Input, resolver: any ArtifactResolver) throws(SpecError) -> Input { input }
    public static var trainingPhases: [String] { [] }
}

/// A job kind with its type erased (what the registry holds).
public struct AnyJobKind: Sendable {
    public let name: String
    public let summary: String
    public let outputs: [JobOutput]
    public let phases: [String]
    public let trainingPhases: [String]
    let decodeUser: @Sendable (Any) throws -> any JobInput
    let decodeStored: @Sendable (any Decoder) throws -> any JobInput
    let prepareInput: @Sendable (any JobInput, any ArtifactResolver) throws(SpecError) -> any JobInput
    let estimateInput: @Sendable (any JobInput, any ArtifactResolver, Int) throws(SpecError) -> ResourceEstimate
    let runInput: @Sendable (any JobInput, JobExecution) throws -> JobResult.Sections
    let equal: @Sendable (any JobInput, any JobInput) -> Bool
    /// Whether an input is this kind's input type.
    let accepts: @Sendable (any JobInput) -> Bool

    public init<K: JobKind>(_ kind: K.Type) {
        name = K.name
        summary = K.summary
        outputs = K.outputs
        phases = K.phases
        trainingPhases = K.trainingPhases
        decodeUser = { try K.decode($0) }
        // Stored inputs are decoded like user inputs (over the defaults), so records written by
        // an older release, which lack newer fields, still load.
        decodeStored = { decoder in
            let tree = try ResultValue(from: decoder)
            return try K.decode(try JSONSerialization.jsonObject(with: JSONEncoder().encode(tree), options: [.fragmentsAllowed]))
        }
        prepareInput = { (i, r) throws(SpecError) in try K.prepare(i as! K.Input, resolver: r) }
        estimateInput = { (i, r, t) throws(SpecError) in try K.estimate(i as! K.Input, resolver: r, threads: t) }
        runInput = { try K.run($0 as! K.Input, job: $1) }
        equal = { a, b in (a as? K.Input) == (b as? K.Input) }
        accepts = { $0 is K.Input }
    }
}

/// The registry of job kinds. Adding a kind is one file (its ``JobKind``) and one line here.
public enum JobKinds {
    public static let all: [AnyJobKind] = [
        AnyJobKind(TrainJob.self),
        AnyJobKind(ReflowJob.self),
        AnyJobKind(DistillJob.self),
        AnyJobKind(SampleJob.self),
        AnyJobKind(InvertJob.self),
        AnyJobKind(EvaluateJob.self),
        AnyJobKind(ClassifyJob.self),
        AnyJobKind(PruneJob.self),
        AnyJobKind(AnalyticJob.self),
        AnyJobKind(EditJob.self),
        AnyJobKind(ReconstructJob.self),
    ]

    /// The accepted `type` values, in registry order.
    public static var names: [String] { all.map(\.name) }

    public static func named(_ name: String) -> AnyJobKind? { all.first { $0.name == name } }

    /// Whether progress of `phase` counts optimizer steps for some kind.
    public static func isTrainingPhase(_ phase: String) -> Bool { all.contains { $0.trainingPhases.contains(phase) } }

    /// Every output file name any kind may write (the artifact names the API serves).
    public static var outputNames: [String] {
        var seen = Set<String>(), out = [String]()
        for k in all { for o in k.outputs where seen.insert(o.name).inserted { out.append(o.name) } }
        return out
    }
}

/// A job: its kind and its filled-in input. Wire JSON: `{"type": "train", "input": {...}}`.
public struct JobSpec: Codable, Sendable, Equatable {
    /// The kind's name (`"train"`, …); always one of ``JobKinds/names``.
    public let type: String
    public let input: any JobInput

    public var kind: AnyJobKind { JobKinds.named(type)! }

    /// A spec of a registered kind.
    public init<I: JobInput>(_ kindName: String, _ input: I) {
        precondition(JobKinds.named(kindName)?.accepts(input) == true, "JobSpec: \(I.self) is not the input of a registered kind \(kindName)")
        type = kindName
        self.input = input
    }

    init(type: String, erased input: any JobInput) {
        self.type = type
        self.input = input
    }

    /// The input as the kind's own type.
    public func input<I: JobInput>(as: I.Type) -> I? { input as? I }

    enum CodingKeys: String, CodingKey { case type, input }

    /// Decodes a stored (already prepared, complete) spec.
    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        let type = try c.decode(String.self, forKey: .type)
        self = try JobSpec(type: type, input: try c.superDecoder(forKey: .input))
    }

    /// Decodes a stored spec from its type and its `input` object.
    public init(type: String, input decoder: any Decoder) throws {
        guard let kind = JobKinds.named(type) else {
            throw DecodingError.dataCorrupted(.init(codingPath: decoder.codingPath,
                debugDescription: "unknown job type \"\(type.prefix(40))\" (one of \(JobKinds.names.joined(separator: ", ")))"))
        }
        self.type = type
        input = try kind.decodeStored(decoder)
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(type, forKey: .type)
        try encodeInput(to: c.superEncoder(forKey: .input))
    }

    /// Encodes only the `input` object.
    public func encodeInput(to encoder: any Encoder) throws { try input.encode(to: encoder) }

    public static func == (a: JobSpec, b: JobSpec) -> Bool {
        a.type == b.type && (JobKinds.named(a.type)?.equal(a.input, b.input) ?? false)
    }

    /// The first invalid field as (JSON pointer from the document root, message), or nil.
    public func validationError() -> FieldError? {
        input.validationError().map { ("/input" + $0.pointer, $0.message) }
    }
}

extension JobKinds {
    /// The registry as Markdown: the block between `<!-- registry:begin -->` and
    /// `<!-- registry:end -->` in docs/JOBS.md (`reflowd docs jobs` prints it; a test checks
    /// that the document matches).
    public static var referenceMarkdown: String {
        var out = "| `type` | what it does | files it writes | progress phases |\n|---|---|---|---|\n"
        for k in all {
            let files = k.outputs.map { "`\($0.name)`" }.joined(separator: ", ")
            let phases = k.phases.map { "`\($0)`" }.joined(separator: ", ")
            out += "| `\(k.name)` | \(k.summary) | \(files) | \(phases) |\n"
        }
        out += "\nWhat each file holds:\n\n"
        var seen = Set<String>()
        for k in all {
            for o in k.outputs where seen.insert(o.name).inserted {
                out += "- `\(o.name)` (\(k.name)\(all.filter { $0.name != k.name && $0.outputs.contains { $0.name == o.name } }.map { ", " + $0.name }.joined())): \(o.description)\n"
            }
        }
        return out
    }
}
