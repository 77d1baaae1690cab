public import ReflowEngine
public import ReflowNN
public import ReflowFlow
import ReflowStore
import Foundation

/// Checkpoint metadata keys written by jobs (besides those of ``Checkpoint`` and
/// ``ModelSpec/metadataKey``).
public enum ArtifactMetadata {
    /// The MLP config of checkpoints written before the tagged ``ModelSpec`` (read only).
    public static let legacyModelConfig = "reflowd.model_config"
    public static let trainingConfig = "reflowd.training_config"
    public static let jobType = "reflowd.job_type"
    public static let specDigest = "reflowd.spec_sha256"
}

/// A trained model as read from a checkpoint, with the spec and training config it records.
public struct ModelArtifact: Sendable {
    public var snapshot: TrainingSnapshot
    public var model: ModelSpec
    public var training: TrainingConfig
    /// Hex SHA-256 of the checkpoint's tensor bytes (identifies the weights).
    public var digest: String

    /// The EMA weights when asked for and present, else the raw weights.
    public func weights(useEMA: Bool) -> [String: Tensor] {
        useEMA && !snapshot.ema.isEmpty ? snapshot.ema : snapshot.model
    }

    /// Reads a model checkpoint written by a train, reflow or distill job (or uploaded). The
    /// model spec comes from ``ModelSpec/metadataKey`` (or, for older files, the untagged MLP
    /// config), the training config from ``ArtifactMetadata/trainingConfig``; both are
    /// validated like user input and the weights are checked against the spec.
    public static func read(path: String) throws -> ModelArtifact {
        let s = try Checkpoint.read(path: path)
        let name = JobError.fileName(path)
        guard let m = s.metadata[ModelSpec.metadataKey] ?? s.metadata[ArtifactMetadata.legacyModelConfig],
              let t = s.metadata[ArtifactMetadata.trainingConfig] else {
            throw JobError.invalidInput("\(name) is a checkpoint without reflowd job metadata (\(ModelSpec.metadataKey))")
        }
        let model: ModelSpec, training: TrainingConfig
        do {
            model = try JSONDecoder().decode(ModelSpec.self, from: Data(m.utf8))
            // Partial decoding: configs written by older releases lack newer keys (interpolant).
            training = try TrainingConfig.decodePartial(from: Array(t.utf8))
        } catch {
            throw JobError.invalidInput("\(name): unreadable model metadata: \(error)")
        }
        if let e = model.validationError() { throw JobError.invalidInput("\(name): model \(e.pointer): \(e.message)") }
        // An uploaded file's training config is user input too (its data and source drive sampling).
        if let e = training.validationError() { throw JobError.invalidInput("\(name): training config \(e.pointer): \(e.message)") }
        guard training.model == model else { throw JobError.invalidInput("\(name): the model and training configs disagree") }
        // Fail here, with the file named, rather than in the solver.
        do {
            _ = try model.makeNetwork(stateDict: s.model)
            if !s.ema.isEmpty { _ = try model.makeNetwork(stateDict: s.ema) }
        } catch {
            throw JobError.invalidInput("\(name): \(error)")
        }
        return ModelArtifact(snapshot: s, model: model, training: training, digest: s.metadata["reflowd.data_sha256"] ?? "")
    }
}

/// Which file an ``ArtifactRef`` names by default.
public enum ArtifactKind: String, Sendable {
    case model, pairs, points
    /// A classify job's `classifier.safetensors`.
    case classifier

    /// The artifact a `{"job": id}` reference without `artifact` selects.
    var defaultArtifact: String { self == .points ? "samples" : rawValue }
}

/// Turns artifact references into readable file paths. The server's resolver checks that a
/// referenced job exists and has finished; the offline one maps job ids to sibling directories.
public protocol ArtifactResolver: Sendable {
    /// The path of the file `ref` names, or a ``SpecError`` message (the caller adds the pointer).
    func path(for ref: ArtifactRef, kind: ArtifactKind) throws(SpecError) -> String
    /// Where the image dataset `name` is, or a ``SpecError`` message (the caller adds the
    /// pointer). The default knows only the built-ins (`builtin:shapes`).
    func dataset(_ name: String) throws(SpecError) -> DatasetLocation
}

extension ArtifactResolver {
    public func dataset(_ name: String) throws(SpecError) -> DatasetLocation {
        do { return try BuiltinImageSets.locate(name) } catch {
            throw SpecError(pointer: "/dataset", message: "\(error)")
        }
    }
}

extension ArtifactResolver {
    /// The size in bytes of the file `ref` names (for memory estimates), or nil.
    public func fileSize(of ref: ArtifactRef, kind: ArtifactKind) -> Int? {
        guard let p = try? path(for: ref, kind: kind) else { return nil }
        return (try? FileManager.default.attributesOfItem(atPath: p)[.size] as? Int) ?? nil
    }
}

/// Resolves `{"job": id}` to `<jobsDirectory>/<id>/<artifact file>` and, when `allowPaths`,
/// `{"path": p}` to `p` (relative paths against `baseDirectory`). `reflowd run` uses it with the
/// parent of `--out`.
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
        switch ref {
        case .job(let id, let artifact):
            guard JobID.isValid(id) else { throw SpecError(pointer: "/job", message: "is not a job id") }
            let wanted = artifact ?? kind.defaultArtifact
            guard let path = JobDirectory(jobsRoot: jobsDirectory, id: id).artifactFile(wanted),
                  FileManager.default.fileExists(atPath: path) else {
                throw SpecError(pointer: "/job", message: "job '\(id)' has no \(wanted) (not found, not finished, or not a job that writes one)")
            }
            return path
        case .path(let p):
            guard allowPaths else { throw SpecError(pointer: "/path", message: "file paths are not accepted here; refer to a job with {\"job\": id}") }
            let path = p.hasPrefix("/") ? p : baseDirectory + "/" + p
            guard FileManager.default.fileExists(atPath: path) else { throw SpecError(pointer: "/path", message: "no such file: \(p)") }
            return path
        }
    }

    /// Built-ins by name; with `allowPaths`, any other name is a dataset directory (relative to
    /// `baseDirectory`), so `reflowd run` trains on `"dataset": "/usr/share/datasets/fashion-mnist"`.
    public func dataset(_ name: String) throws(SpecError) -> DatasetLocation {
        if name.hasPrefix(BuiltinImageSets.prefix) || !allowPaths {
            do { return try BuiltinImageSets.locate(name) } catch {
                throw SpecError(pointer: "/dataset", message: "\(error)")
            }
        }
        let path = name.hasPrefix("/") ? name : baseDirectory + "/" + name
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDir), isDir.boolValue else {
            throw SpecError(pointer: "/dataset", message: "no dataset directory \(name)")
        }
        return .directory(URL(fileURLWithPath: path, isDirectory: true))
    }
}
