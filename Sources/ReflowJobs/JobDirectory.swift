import Foundation

/// The one owner of a job directory's layout: every path and file name of a job comes from
/// here (the runner, the artifact resolvers, the server's store and its routes).
///
///     <root>/jobs/<id>/            (server; `reflowd run --out DIR` uses DIR directly)
///         job.json                 the server's durable record
///         log.txt                  the server's log lines for the job
///         spec.json                the filled-in spec
///         result.json              the job's result
///         checkpoint.safetensors   latest periodic checkpoint of a running job
///         model.safetensors        the final model (train, reflow, distill, uploads)
///         …                        the kind's outputs (``JobKind/outputs``)
public struct JobDirectory: Sendable, Equatable {
    /// File names inside a job directory.
    public enum Name {
        /// The final model (a checkpoint: weights, EMA, optimizer state, configs in the metadata).
        public static let model = "model.safetensors"
        /// The latest periodic checkpoint of a running job (removed once `model` is written).
        public static let checkpoint = "checkpoint.safetensors"
        /// Reflow / distillation pairs (``PairStore`` format).
        public static let pairs = "pairs.safetensors"
        /// A trained image classifier (classify jobs: weights and its config in the metadata).
        public static let classifier = "classifier.safetensors"
        /// `step,loss` records of a training job.
        public static let lossLog = "loss.csv"
        /// The filled-in spec.
        public static let spec = "spec.json"
        /// The job's result.
        public static let result = "result.json"
        /// The server's record of the job (not a job output).
        public static let record = "job.json"
        /// The server's log of the job (not a job output).
        public static let log = "log.txt"
    }

    /// The directory itself.
    public let path: String

    public init(path: String) { self.path = path }

    /// `<jobsRoot>/<id>` (the id must be a valid ``JobID``; callers check it at the boundary).
    public init(jobsRoot: String, id: String) { path = jobsRoot + "/" + id }

    /// The path of `name` in this directory (`name` is one of ``Name`` or a kind's output).
    public func file(_ name: String) -> String { path + "/" + name }

    public var model: String { file(Name.model) }
    public var checkpoint: String { file(Name.checkpoint) }
    public var pairs: String { file(Name.pairs) }
    public var lossLog: String { file(Name.lossLog) }
    public var spec: String { file(Name.spec) }
    public var result: String { file(Name.result) }
    public var record: String { file(Name.record) }
    public var log: String { file(Name.log) }

    /// Names that belong to the server or are bookkeeping, not outputs of the job.
    public static let bookkeeping: Set<String> = [Name.record, Name.log, Name.result]

    /// Whether a directory entry is one of the job's outputs (listed in its result): not
    /// bookkeeping, not hidden, not a digest sidecar, not an atomic-write temporary.
    public static func isOutput(_ name: String) -> Bool {
        !bookkeeping.contains(name) && !name.hasPrefix(".") && !name.hasSuffix(".sha256") && !name.contains(".tmp-")
    }

    /// Every name a client may download from a job: the registered kinds' outputs plus the
    /// model, checkpoint, pairs, loss log, spec and result (a fixed list: no user string
    /// becomes a path).
    public static var servableNames: [String] {
        var names = [Name.model, Name.checkpoint, Name.pairs, Name.lossLog, Name.spec, Name.result]
        for n in JobKinds.outputNames where !names.contains(n) { names.append(n) }
        return names
    }

    /// The file name an artifact reference selects: `"model"`, `"pairs"`, `"classifier"`,
    /// `"samples"`, … → `model.safetensors`, `pairs.safetensors`, `classifier.safetensors`,
    /// `samples.npy`, … (point sets: the first of
    /// `.npy`, `.csv` present in the directory).
    public func artifactFile(_ artifact: String) -> String? {
        switch artifact {
        case "model": return model
        case "pairs": return pairs
        case "classifier": return file(Name.classifier)
        case "samples", "latents", "reconstruction":
            for ext in ["npy", "csv"] where FileManager.default.fileExists(atPath: file(artifact + "." + ext)) {
                return file(artifact + "." + ext)
            }
            return nil
        default: return nil
        }
    }

    /// Whether `name` is a temporary file of `AtomicFile` (`.<name>.tmp-<pid>-<hex>`) or an
    /// upload staging file of earlier releases: what a kill can leave behind.
    public static func isLeftover(_ name: String) -> Bool {
        (name.hasPrefix(".") && name.contains(".tmp-")) || (name.hasPrefix("upload-") && name.hasSuffix(".safetensors"))
    }

    /// Removes what a kill left behind (``isLeftover(_:)``); returns the names removed. The
    /// server runs it on every job directory and on the data directory at startup.
    @discardableResult
    public func removeTemporaries() -> [String] {
        guard let names = try? FileManager.default.contentsOfDirectory(atPath: path) else { return [] }
        var removed = [String]()
        for n in names.sorted() where JobDirectory.isLeftover(n) {
            if (try? FileManager.default.removeItem(atPath: file(n))) != nil { removed.append(n) }
        }
        return removed
    }
}
