public import ReflowEngine
public import ReflowNN
public import ReflowFlow
import ReflowStore
import Foundation

/// File names inside a job directory. A job owns its directory; these are the names the
/// API serves under `/v1/jobs/{id}/artifacts/{name}`.
public enum ArtifactName {
    /// The final model (a checkpoint: weights, EMA, optimizer state, configs in the metadata).
    public static let model = "model.safetensors"
    /// The latest periodic checkpoint of a running job (removed once `model` is written).
    public static let checkpoint = "checkpoint.safetensors"
    /// Reflow / distillation pairs (``PairStore`` format).
    public static let pairs = "pairs.safetensors"
    /// `step,loss` records of a training job.
    public static let lossLog = "loss.csv"
    /// The filled-in spec.
    public static let spec = "spec.json"
    /// The job's result.
    public static let result = "result.json"
}

/// Checkpoint metadata keys written by jobs (besides those of ``Checkpoint``).
public enum ArtifactMetadata {
    public static let modelConfig = "reflowd.model_config"
    public static let trainingConfig = "reflowd.training_config"
    public static let jobType = "reflowd.job_type"
    public static let specDigest = "reflowd.spec_sha256"
}

/// A trained model as read from a checkpoint, with the configs it was trained with.
public struct ModelArtifact: Sendable {
    public var snapshot: TrainingSnapshot
    public var model: VelocityMLPConfig
    public var training: ToyTrainingConfig
    /// Hex SHA-256 of the checkpoint's tensor bytes (identifies the weights).
    public var digest: String

    /// The EMA weights when asked for and present, else the raw weights.
    public func weights(useEMA: Bool) -> [String: Tensor] {
        useEMA && !snapshot.ema.isEmpty ? snapshot.ema : snapshot.model
    }

    /// Reads a model checkpoint written by a train, reflow or distill job.
    public static func read(path: String) throws -> ModelArtifact {
        let s = try Checkpoint.read(path: path)
        guard let m = s.metadata[ArtifactMetadata.modelConfig], let t = s.metadata[ArtifactMetadata.trainingConfig] else {
            throw JobError.invalidInput("\(path) is a checkpoint without reflowd job metadata (\(ArtifactMetadata.modelConfig))")
        }
        let model: VelocityMLPConfig, training: ToyTrainingConfig
        do {
            model = try JSONDecoder().decode(VelocityMLPConfig.self, from: Data(m.utf8))
            training = try JSONDecoder().decode(ToyTrainingConfig.self, from: Data(t.utf8))
        } catch {
            throw JobError.invalidInput("\(path): unreadable model metadata: \(error)")
        }
        if let e = model.validationError() { throw JobError.invalidInput("\(path): model config \(e.pointer): \(e.message)") }
        // An uploaded file's training config is user input too (its data and source drive sampling).
        if let e = training.validationError() { throw JobError.invalidInput("\(path): training config \(e.pointer): \(e.message)") }
        guard training.model == model else { throw JobError.invalidInput("\(path): the model and training configs disagree") }
        // Fail here, with the file named, rather than in the solver.
        _ = try VelocityMLP(model, stateDict: s.model)
        if !s.ema.isEmpty { _ = try VelocityMLP(model, stateDict: s.ema) }
        return ModelArtifact(snapshot: s, model: model, training: training, digest: s.metadata["reflowd.data_sha256"] ?? "")
    }
}

/// Which file an ``ArtifactRef`` names.
public enum ArtifactKind: String, Sendable {
    case model, pairs, points
}

/// Turns artifact references into readable file paths. The server's resolver checks that a
/// referenced job exists and has finished; the offline one maps job ids to sibling directories.
public protocol ArtifactResolver: Sendable {
    /// The path of the file `ref` names, or a ``SpecError`` message (the caller adds the pointer).
    func path(for ref: ArtifactRef, kind: ArtifactKind) throws(SpecError) -> String
}

/// Resolves `{"job": id}` to `<jobsDirectory>/<id>/<artifact>` and, when `allowPaths`, `{"path": p}`
/// to `p` (relative paths against `baseDirectory`). `reflowd run` uses it with the parent of `--out`.
public struct DirectoryResolver: ArtifactResolver {
    public var jobsDirectory: String
    public var allowPaths: Bool
    public var baseDirectory: String

    /// `baseDirectory` nil means the current directory.
    public init(jobsDirectory: String, allowPaths: Bool, baseDirectory: String? = nil) {
        self.jobsDirectory = jobsDirectory
        self.allowPaths = allowPaths
        self.baseDirectory = baseDirectory ?? FileManager.default.currentDirectoryPath
    }

    public func path(for ref: ArtifactRef, kind: ArtifactKind) throws(SpecError) -> String {
        let path: String
        switch ref {
        case .job(let id, let artifact):
            guard JobID.isValid(id) else { throw SpecError(pointer: "/job", message: "is not a job id") }
            let name = (artifact ?? kind.rawValue) == "pairs" ? ArtifactName.pairs : ArtifactName.model
            path = jobsDirectory + "/" + id + "/" + name
            guard FileManager.default.fileExists(atPath: path) else {
                throw SpecError(pointer: "/job", message: "job '\(id)' has no \(name) (not found, not finished, or not a \(kind.rawValue)-producing job)")
            }
        case .path(let p):
            guard allowPaths else { throw SpecError(pointer: "/path", message: "file paths are not accepted here; refer to a job with {\"job\": id}") }
            path = p.hasPrefix("/") ? p : baseDirectory + "/" + p
            guard FileManager.default.fileExists(atPath: path) else { throw SpecError(pointer: "/path", message: "no such file: \(p)") }
        }
        return path
    }
}
