public import ReflowEngine
public import ReflowNN
public import ReflowFlow
import ReflowStore
import ReflowCodec
import Foundation

/// Everything a job needs from its host (the server's scheduler or `reflowd run`).
public struct JobContext: Sendable {
    /// The job's own directory: outputs go here, and a rerun in the same directory resumes.
    public var directory: String
    /// Worker threads for training (data-parallel shards) and sampling (row blocks).
    public var threads: Int
    public var resolver: any ArtifactResolver
    /// Called from the job's thread after each logged step / phase change.
    public var progress: @Sendable (JobProgress) -> Void
    /// Polled between steps and solver blocks; true makes the job checkpoint and throw
    /// ``JobError/interrupted``.
    public var shouldStop: @Sendable () -> Bool
    /// Path prefixes never shown in error messages (the server's data directory): they are
    /// replaced by the job-relative file name.
    public var hiddenPaths: [String]

    public init(directory: String, threads: Int, resolver: any ArtifactResolver,
                progress: @escaping @Sendable (JobProgress) -> Void = { _ in },
                shouldStop: @escaping @Sendable () -> Bool = { false },
                hiddenPaths: [String] = []) {
        self.directory = directory
        self.threads = threads
        self.resolver = resolver
        self.progress = progress
        self.shouldStop = shouldStop
        self.hiddenPaths = hiddenPaths
    }
}

/// Prepares, estimates and runs jobs through the kind registry (``JobKinds``).
///
/// `prepare` resolves a parsed spec against existing artifacts (a reflow's `model`, `data` and
/// `source` follow its teacher unless given) and is what the API echoes as `input`; `estimate`
/// bounds its peak memory before it is queued; `run` executes it. A run is idempotent in its
/// directory: finished phases are found on disk (pairs, final model) and an interrupted training
/// continues from `checkpoint.safetensors`, checked against the SHA-256 of the prepared spec so
/// a directory never mixes two jobs.
public enum JobRunner {
    /// Resolves references and fills inherited fields; errors carry the pointer from the root.
    public static func prepare(_ spec: JobSpec, resolver: any ArtifactResolver) throws(SpecError) -> JobSpec {
        let input = try spec.kind.prepareInput(spec.input, resolver)
        let prepared = JobSpec(type: spec.type, erased: input)
        if let (pointer, message) = prepared.validationError() { throw SpecError(pointer: pointer, message: message) }
        return prepared
    }

    /// The peak memory of running a prepared spec with `threads` compute threads: the kind's
    /// own terms plus ``processBaseline``.
    public static func estimate(_ spec: JobSpec, resolver: any ArtifactResolver, threads: Int) throws(SpecError) -> ResourceEstimate {
        var e = try spec.kind.estimateInput(spec.input, resolver, max(1, threads))
        e.add("process baseline (code, libraries, BLAS buffers)", bytes: processBaseline)
        return e
    }

    /// Resident memory of a job process before its data (measured: 31 MiB for a tiny training
    /// job; rounded up for the server's own buffers).
    public static let processBaseline = 64 << 20

    /// SHA-256 of the canonical JSON of a prepared spec (recorded in checkpoints).
    public static func digest(_ spec: JobSpec) -> String { SHA256.hex(of: SpecParser.canonicalJSON(spec)) }

    /// Keys issue #11 added to job inputs, with the value that means "as before" (an input that
    /// sets any of them otherwise has no earlier form).
    static let addedForConditioning: [String: ResultValue] = [
        "labelDropout": .double(0.1), "perceptual": .null, "guidance": .null, "initFrom": .null,
        "labels": .null, "perClass": .null, "lossCurve": .null, "inversionData": .null, "annealing": .null, "flipPairs": .bool(false), "twoStep": .null,
    ]

    /// Keys the diffusion models of issue #12 added, with their neutral values (the release
    /// before them already had the keys of ``addedForConditioning``).
    static let addedForDiffusion: [String: ResultValue] = ["lossSpace": .string("output"), "phases": .null]

    /// The digests the same spec had under earlier releases, newest first: before class
    /// conditioning (without the keys of ``addedForConditioning`` at their neutral values), and
    /// before the tagged model and the interpolant existed (also without `model.kind`/
    /// `model.version` of a version-1 MLP and without a `rectifiedFlow` interpolant). Empty when
    /// the spec uses anything newer. Checkpoints of a job interrupted under an earlier release
    /// carry one of them; accepting it lets such a job resume after an upgrade.
    public static func legacyDigests(_ spec: JobSpec) -> [String] {
        guard case .object(var root)? = try? JSONDecoder().decode(ResultValue.self, from: Data(SpecParser.canonicalJSON(spec))),
              case .object(var input)? = root["input"] else { return [] }
        func hash(_ input: [String: ResultValue]) -> String? {
            root["input"] = .object(input)
            let e = JSONEncoder()
            e.outputFormatting = [.sortedKeys, .prettyPrinted, .withoutEscapingSlashes]
            return (try? e.encode(ResultValue.object(root))).map { SHA256.hex(of: Array($0)) }
        }
        var out = [String]()
        // Before the diffusion models: without their keys at neutral values.
        var strippedDiffusion = false
        for (key, neutral) in addedForDiffusion {
            guard let v = input[key] else { continue }
            if v != neutral { return [] }
            input[key] = nil
            strippedDiffusion = true
        }
        if strippedDiffusion, let d = hash(input) { out.append(d) }
        var stripped = false
        // Conditional U-Nets existed before: they trained on their data's labels without
        // dropout, so for a conditional model the earlier behaviour is labelDropout 0.
        var conditional = false
        if case .object(let model)? = input["model"], let c = model["classes"], c != .null { conditional = true }
        for (key, neutralValue) in addedForConditioning {
            guard let v = input[key] else { continue }
            let neutral = key == "labelDropout" && conditional ? ResultValue.int(0) : neutralValue
            if v != neutral && !(key == "labelDropout" && conditional && v == .double(0)) { return out }
            input[key] = nil
            stripped = true
        }
        if stripped, let d = hash(input) { out.append(d) }
        var changed = false
        if case .object(var model)? = input["model"] {
            guard model["kind"] == .string("mlp"), model["version"] == .int(1) else { return out }
            model["kind"] = nil
            model["version"] = nil
            input["model"] = .object(model)
            changed = true
        }
        if let i = input["interpolant"] {
            guard i == .string("rectifiedFlow") else { return out }
            input["interpolant"] = nil
            changed = true
        }
        if changed, let d = hash(input) { out.append(d) }
        return out
    }

    /// Runs a prepared spec; writes its artifacts and `result.json` into `context.directory`.
    /// Every failure is a ``JobError`` whose message names no hidden path.
    public static func run(_ spec: JobSpec, context: JobContext) throws -> JobResult {
        guard context.threads >= 1 && context.threads <= 256 else { throw JobError.invalidInput("threads must be in [1, 256]") }
        let dir = JobDirectory(path: context.directory)
        do {
            try FileManager.default.createDirectory(atPath: dir.path, withIntermediateDirectories: true)
            let start = monotonicSeconds()
            var result = JobResult(type: spec.type)
            let job = JobExecution(context: context, directory: dir, digest: digest(spec), legacyDigests: legacyDigests(spec),
                                   kindName: spec.type)
            result.sections = try spec.kind.runInput(spec.input, job)
            result.seconds = monotonicSeconds() - start
            result.artifacts = try listArtifacts(dir)
            let e = JSONEncoder()
            e.outputFormatting = [.sortedKeys, .prettyPrinted]
            try AtomicFile.write(Array(try e.encode(result)), to: dir.result)
            return result
        } catch {
            throw JobError.wrapping(error, hiding: context.hiddenPaths + [dir.path + "/"])
        }
    }

    /// The job's output files (see ``JobDirectory/isOutput(_:)``) with sizes and digests.
    static func listArtifacts(_ dir: JobDirectory) throws -> [ArtifactInfo] {
        let names = try FileManager.default.contentsOfDirectory(atPath: dir.path).sorted()
        var out = [ArtifactInfo]()
        for name in names where JobDirectory.isOutput(name) {
            // Streamed in 1 MiB chunks: a pairs or model file is never held in memory just to hash it.
            let path = dir.file(name)
            let size = (try FileManager.default.attributesOfItem(atPath: path)[.size] as? Int) ?? 0
            out.append(ArtifactInfo(name: name, bytes: size, sha256: try SHA256.hexOfFile(path: path)))
        }
        return out
    }
}

extension JobError {
    /// `error` as a ``JobError`` whose message shows none of `hidden` (path prefixes): store
    /// errors become ``io(_:)`` naming the call, the file's name and errno; solver errors keep
    /// their kind (an interrupted solve is ``interrupted``, non-finite values ``diverged``).
    static func wrapping(_ error: any Error, hiding hidden: [String]) -> JobError {
        func clean(_ s: String) -> String {
            var s = s
            for p in hidden where !p.isEmpty && p != "/" { s = s.replacingOccurrences(of: p, with: "") }
            return s
        }
        switch error {
        case let e as JobError:
            switch e {
            case .interrupted: return e
            case .invalidInput(let m): return .invalidInput(clean(m))
            case .resourceLimit(let m): return .resourceLimit(clean(m))
            case .io(let m): return .io(clean(m))
            case .diverged(let m): return .diverged(clean(m))
            }
        case let e as StoreError:
            let name = JobError.fileName(e.path)
            if e.errno == ENOSPC || e.errno == EDQUOT {
                return .io("disk full: \(e.call) of \(name) failed (\(e.message), errno \(e.errno)); free space and resubmit")
            }
            return .io(e.errno != 0 ? "\(e.call) of \(name) failed: \(e.message) (errno \(e.errno))" : "\(e.call) of \(name): \(e.message)")
        case ODEError.interrupted: return .interrupted
        case let e as ODEError:
            if case .nonFinite = e { return .diverged(clean(e.description)) }
            return .resourceLimit(clean(e.description))
        case let e as CocoaError where e.code == .fileWriteOutOfSpace:
            return .io("disk full (\(clean(e.localizedDescription)))")
        // Files and values that do not fit the job (a corrupt or mismatched checkpoint or pairs
        // file, weights of another shape, a trainer refusing its inputs): the input is at fault.
        case is PairStoreError, is CheckpointError, is SafeTensorsError, is StateDictError, is TrainerError,
             is MetricError, is DataSourceError, is PointFileError:
            return .invalidInput(clean("\(error)"))
        default:
            return .io(clean("\(error)"))
        }
    }

    /// The user-visible name of a job file: its last path component without an atomic-write
    /// temporary's decoration (`.samples.npy.tmp-123-ab` → `samples.npy`).
    static func fileName(_ path: String) -> String {
        var name = path.split(separator: "/").last.map(String.init) ?? path
        if let r = name.range(of: ".tmp-") {
            name = String(name[..<r.lowerBound])
            if name.hasPrefix(".") { name.removeFirst() }
        }
        return name
    }
}

/// One execution of a prepared spec: the job's directory, context and the helpers every kind
/// shares (artifacts, solvers, the resumable training loop, previews).
public struct JobExecution: Sendable {
    public let context: JobContext
    public let directory: JobDirectory
    /// SHA-256 of the prepared spec (owner of checkpoints in this directory).
    public let digest: String
    /// The spec's digests under earlier releases (``JobRunner/legacyDigests(_:)``): their
    /// checkpoints are this job's too.
    public let legacyDigests: [String]
    public let kindName: String

    public var threads: Int { context.threads }

    public func write(_ bytes: [UInt8], _ name: String) throws { try AtomicFile.write(bytes, to: directory.file(name)) }

    public func checkStop() throws { if context.shouldStop() { throw JobError.interrupted } }

    public func progress(_ phase: String, _ done: Int, _ total: Int, loss: Double? = nil, metrics: [String: Double]? = nil) {
        context.progress(JobProgress(phase: phase, done: done, total: total, loss: loss, metrics: metrics))
    }

    /// The path of a referenced artifact (`what` names the reference in errors).
    public func resolve(_ ref: ArtifactRef, kind: ArtifactKind, what: String) throws -> String {
        do { return try context.resolver.path(for: ref, kind: kind) } catch {
            throw JobError.invalidInput("\(what): \(error.message)")
        }
    }

    /// Where a named image dataset is (`what` names the reference in errors).
    public func locateDataset(_ name: String, what: String) throws -> DatasetLocation {
        do { return try context.resolver.dataset(name) } catch {
            throw JobError.invalidInput("\(what): \(error.message)")
        }
    }

    public func model(_ ref: ArtifactRef) throws -> ModelArtifact {
        try ModelArtifact.read(path: resolve(ref, kind: .model, what: "model reference"))
    }

    /// The sampler of a data source of the model's point size.
    public func sampler(_ source: DataSource, pointSize: Int, what: String) throws -> DataSampler {
        do {
            return try source.sampler(pointSize: pointSize, resolve: { ref in try resolve(ref, kind: .points, what: what) },
                                      locate: { name in try locateDataset(name, what: what) })
        } catch let e as DataSourceError {
            throw JobError.invalidInput("\(what): \(e.description)")
        }
    }

    /// Integrates x through a model (see ``ODESolver/solve(model:stateDict:x:labels:guidance:method:direction:threads:blockRows:tStart:tEnd:recordTrajectory:shouldStop:)``):
    /// `labels` and `guidance` condition a class-conditional model; `interpolant` is the one the
    /// model was trained with (a VP diffusion model samples with `ddim`).
    public func solve(_ model: ModelSpec, _ weights: [String: Tensor], _ x: Tensor, _ method: ODEMethod,
                      interpolant: Interpolant,
                      direction: ODEDirection = .forward, blockRows: Int = 1024, trajectory: Bool = false,
                      labels: [Int32]? = nil, guidance: Float? = nil, features: FeatureSharing? = nil,
                      tStart: Float = 0, tEnd: Float = 1) throws -> ODESolution {
        let stop = context.shouldStop
        do {
            return try ODESolver.solve(model: model, stateDict: weights, x: x, labels: labels, guidance: guidance,
                                       method: method, interpolant: interpolant, direction: direction,
                                       threads: context.threads, blockRows: blockRows, tStart: tStart, tEnd: tEnd, recordTrajectory: trajectory,
                                       features: features, shouldStop: stop)
        } catch ODEError.interrupted {
            throw JobError.interrupted
        } catch let e as ODEError {
            if case .nonFinite = e { throw JobError.diverged("solver \(method.name): \(e)") }
            throw JobError.resourceLimit("solver \(method.name): \(e)")
        }
    }

    /// DDIM through a VP diffusion model along `plan` (``ODESolver/solve(model:stateDict:x:labels:guidance:plan:direction:threads:blockRows:recordTrajectory:shouldStop:)``).
    public func solve(_ model: ModelSpec, _ weights: [String: Tensor], _ x: Tensor, plan: DDIMPlan, blockRows: Int = 1024,
                      labels: [Int32]? = nil, guidance: Float? = nil) throws -> ODESolution {
        let stop = context.shouldStop
        do {
            return try ODESolver.solve(model: model, stateDict: weights, x: x, labels: labels, guidance: guidance, plan: plan,
                                       direction: .forward, threads: context.threads, blockRows: blockRows, shouldStop: stop)
        } catch ODEError.interrupted {
            throw JobError.interrupted
        } catch let e as ODEError {
            if case .nonFinite = e { throw JobError.diverged("solver ddim: \(e)") }
            throw JobError.resourceLimit("solver ddim: \(e)")
        }
    }

    /// The frozen feature network of a training config's perceptual premetric (nil without one).
    public func perceptualNetwork(_ training: TrainingConfig) throws -> ClassifierNetwork? {
        guard let p = training.perceptual else { return nil }
        let art = try ClassifierArtifact.read(path: resolve(p.classifier, kind: .classifier, what: "perceptual.classifier"))
        guard art.config.imageShape == training.model.pointShape else {
            throw JobError.invalidInput("perceptual.classifier: classifies \(art.config.imageShape ?? []) images, the model makes \(training.model.pointShape)")
        }
        return try art.network()
    }

    /// n class labels drawn uniformly from 0..<classes, from their own stream of `seed` (so
    /// the noise drawn with the same seed does not change).
    public static func uniformLabels(n: Int, classes: Int, seed: UInt64) -> [Int32] {
        var rng = Random(seed: seed ^ 0x4C41_4245_4C53_2121)
        return (0..<n).map { _ in Int32(rng.int(below: classes)) }
    }

    /// n draws from a source: `Random(seed).normal` for the standard Gaussian (so pairs can store
    /// the generator state instead of z0), the sampler's own draws otherwise.
    public static func draw(_ source: DataSampler, n: Int, seed: UInt64) -> (x: Tensor, noise: Random.State?) {
        var rng = Random(seed: seed)
        let state = rng.state
        let x = source.sample(n, rng: &rng)
        return (x, source.isStandardNormal ? state : nil)
    }

    /// Writes points as `base.npy` or `base.csv`; returns the file name.
    public func points(_ x: Tensor, format: PointFormat, base: String) throws -> String {
        let flat = Tensor(shape: [x.shape[0], x.count / max(1, x.shape[0])], data: x.data)
        switch format {
        case .npy: try write(PointFiles.npyBytes(flat), base + ".npy"); return base + ".npy"
        case .csv:
            let header = flat.shape[1] == 2 ? "x,y" : (0..<flat.shape[1]).map { "x\($0)" }.joined(separator: ",")
            try write(Array(PointFiles.csvText(flat, header: header).utf8), base + ".csv"); return base + ".csv"
        }
    }

    // MARK: training

    func checkpointMetadata(_ training: TrainingConfig) throws -> [String: String] {
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys]
        return [ModelSpec.metadataKey: String(decoding: training.model.canonicalJSON, as: UTF8.self),
                ArtifactMetadata.trainingConfig: String(decoding: try e.encode(training), as: UTF8.self),
                ArtifactMetadata.jobType: kindName, ArtifactMetadata.specDigest: digest]
    }

    /// Trains to `loop.steps`, resuming from this directory's checkpoint, checkpointing every
    /// `loop.checkpointEvery` steps and on a stop request; writes `model.safetensors` and `loss.csv`.
    /// `metadata` is added to every checkpoint's (how the weights started, for pruning's rewind).
    public func trainLoop(_ training: TrainingConfig, _ loop: LoopSpec, phase: String, metadata extra: [String: String] = [:],
                          make: (TrainingSnapshot?) throws -> FlowTrainer) throws -> TrainingSummary {
        var meta = try checkpointMetadata(training)
        for (k, v) in extra { meta[k] = v }
        return try trainLoop(metadata: meta, loop, phase: phase, divergenceHint: "lower learningRate or set gradClipNorm",
                             parameters: training.model.parameterCount,
                             macsPerSample: training.model.config.forwardFlopsPerRow, make: make)
    }

    /// The loop of ``trainLoop(_:_:phase:metadata:make:)`` for any ``SteppedTrainer`` (a RIM's):
    /// `metadata` goes into every checkpoint, `parameters` and `macsPerSample` into the summary,
    /// `divergenceHint` into the error of a non-finite loss.
    public func trainLoop<T: SteppedTrainer>(metadata meta: [String: String], _ loop: LoopSpec, phase: String,
                                             divergenceHint: String, parameters: Int, macsPerSample: Int,
                                             make: (TrainingSnapshot?) throws -> T) throws -> TrainingSummary {
        func owned(_ s: TrainingSnapshot, _ name: String) throws {
            let owner = s.metadata[ArtifactMetadata.specDigest]
            guard owner == digest || (owner.map { legacyDigests.contains($0) } ?? false) else {
                throw JobError.invalidInput("\(name) belongs to a different job spec; use an empty directory")
            }
        }
        if FileManager.default.fileExists(atPath: directory.model) {
            // Finished in an earlier run (e.g. killed while rendering the preview).
            let s = try Checkpoint.read(path: directory.model)
            try owned(s, JobDirectory.Name.model)
            let log = readLossLog(upTo: s.step)
            return TrainingSummary(steps: s.step, resumedFromStep: s.step, finalLoss: log.last?.1 ?? 0,
                                   recentMeanLoss: log.last?.1 ?? 0, seconds: 0, stepsPerSecond: 0, threads: threads,
                                   parameters: parameters, macsPerSample: macsPerSample)
        }
        var snapshot: TrainingSnapshot?
        if FileManager.default.fileExists(atPath: directory.checkpoint) {
            let s = try Checkpoint.read(path: directory.checkpoint)
            try owned(s, JobDirectory.Name.checkpoint)
            snapshot = s
        }
        let trainer: T
        do { trainer = try make(snapshot) } catch let e as TrainerError {
            throw JobError.invalidInput(e.description)
        }
        let resumed = trainer.step
        var log = resumed > 0 ? readLossLog(upTo: resumed) : []
        func save(_ path: String) throws {
            var s = trainer.snapshot()
            for (k, v) in meta { s.metadata[k] = v }
            try Checkpoint.write(s, to: path)
            try write(Array((["step,loss"] + log.map { "\($0.0),\($0.1)" }).joined(separator: "\n").utf8) + [10], JobDirectory.Name.lossLog)
        }
        let start = monotonicSeconds()
        var windowSum = 0.0, windowCount = 0, last = Double.nan, recent = Double.nan
        progress(phase, resumed, loop.steps)
        while trainer.step < loop.steps {
            if context.shouldStop() {
                try save(directory.checkpoint)
                throw JobError.interrupted
            }
            let loss = Double(trainer.trainStep())
            guard loss.isFinite else {
                throw JobError.diverged("training diverged: the loss is \(loss) at step \(trainer.step) (\(divergenceHint))")
            }
            last = loss
            windowSum += loss
            windowCount += 1
            let step = trainer.step
            if step % loop.logEvery == 0 || step == loop.steps {
                recent = windowSum / Double(windowCount)
                log.append((step, recent))
                windowSum = 0
                windowCount = 0
                progress(phase, step, loop.steps, loss: recent)
            }
            if loop.checkpointEvery > 0 && step % loop.checkpointEvery == 0 && step < loop.steps {
                try save(directory.checkpoint)
            }
        }
        let seconds = monotonicSeconds() - start
        try save(directory.model)
        try? FileManager.default.removeItem(atPath: directory.checkpoint)
        try? FileManager.default.removeItem(atPath: directory.checkpoint + ".sha256")
        let done = trainer.step - resumed
        return TrainingSummary(steps: trainer.step, resumedFromStep: resumed, finalLoss: last.isFinite ? last : 0,
                               recentMeanLoss: recent.isFinite ? recent : last,
                               seconds: seconds, stepsPerSecond: seconds > 0 ? Double(done) / seconds : 0, threads: threads,
                               parameters: parameters, macsPerSample: macsPerSample)
    }

    /// `(step, loss)` records of `loss.csv` up to `step` (empty when absent or unreadable).
    func readLossLog(upTo step: Int) -> [(Int, Double)] {
        guard let bytes = try? AtomicFile.read(path: directory.lossLog, maxBytes: 64 << 20) else { return [] }
        return String(decoding: bytes, as: UTF8.self).split(separator: "\n").dropFirst().compactMap { line in
            let f = line.split(separator: ",")
            guard f.count == 2, let s = Int(f[0]), let l = Double(f[1]), s <= step else { return nil }
            return (s, l)
        }
    }

    /// `samples.png`: Euler samples (DDIM for a diffusion model; `steps`: 100, or k for a k-step student) of the trained
    /// model over its data (2-D points only: a scatter plot needs two coordinates). A
    /// class-conditional model samples row i under label i mod classes (no guidance).
    public func preview(_ training: TrainingConfig, weights: [String: Tensor], points: Int, steps: Int = 100) throws {
        let labels: (Int) -> [Int32]? = { n in Conditioning.labels(nil, perClass: nil, n: n, model: training.model) }
        if points > 0, training.model.pointShape.count == 3 {
            // Image models: an 8×8 grid of Euler samples from a fixed noise seed.
            let n = min(points, 64)
            let d = training.model.pointSize
            let z = JobExecution.draw(try sampler(training.source, pointSize: d, what: "source"), n: n, seed: 424_242).x
            let method = training.interpolant.firstOrderMethod(steps: steps)
            let x = try solve(training.model, weights, z, method, interpolant: training.interpolant,
                              blockRows: max(1, (n + threads - 1) / threads), labels: labels(n)).x
            let text = [("reflowd.job", kindName), ("reflowd.solver", "\(method.name) \(steps)"), ("reflowd.noise_seed", "424242"),
                        ("reflowd.model", training.model.description)]
            try write(Figures.imageGrid(x, shape: training.model.pointShape, text: text), "samples.png")
            return
        }
        guard points > 0, training.model.pointSize == 2 else { return }
        let d = training.model.pointSize
        let z = JobExecution.draw(try sampler(training.source, pointSize: d, what: "source"), n: points, seed: 424_242).x
        let x = try solve(training.model, weights, z, training.interpolant.firstOrderMethod(steps: steps), interpolant: training.interpolant,
                          labels: labels(points)).x
        var rng = Random(seed: 424_243)
        let reference = try sampler(training.data, pointSize: d, what: "data").sample(points, rng: &rng)
        try write(Figures.scatter(x, reference: reference), "samples.png")
    }

    /// Rows per solver block for `n` points of `model`: 1024 for small points (GEMM-friendly
    /// blocks), and for images an equal share per compute thread, at most 256 images (a conv
    /// network's activations grow with the block, and a 64-image sample should use every thread).
    public func blockRows(_ model: ModelSpec, n: Int) -> Int { Self.blockRows(model, n: n, threads: threads) }

    public static func blockRows(_ model: ModelSpec, n: Int, threads: Int) -> Int {
        guard model.pointShape.count == 3 else { return 1024 }
        return max(1, min(256, (n + threads - 1) / max(1, threads)))
    }

    /// Per-coordinate mean and standard deviation of x: [n, D].
    public static func moments(_ x: Tensor) -> (mean: [Double], std: [Double]) {
        let n = x.shape[0], d = x.count / max(1, n)
        var mean = [Double](repeating: 0, count: d), sq = [Double](repeating: 0, count: d)
        for r in 0..<n { for c in 0..<d { let v = Double(x.data[r * d + c]); mean[c] += v; sq[c] += v * v } }
        for c in 0..<d { mean[c] /= Double(max(1, n)); sq[c] = max(0, sq[c] / Double(max(1, n)) - mean[c] * mean[c]).squareRoot() }
        return (mean, sq)
    }
}

/// Training-loop settings shared by train, reflow and distill jobs.
public struct LoopSpec: Codable, Sendable, Equatable, Validatable {
    /// Optimizer steps.
    public var steps: Int = 5000
    /// Steps between durable checkpoints (a restarted job resumes from the last one); 0 = only at the end.
    public var checkpointEvery: Int = 1000
    /// Steps between loss records in `loss.csv` and progress reports.
    public var logEvery: Int = 100
    /// Points in the `samples.png` preview rendered at the end (Euler, 100 steps); 0 = none.
    public var previewPoints: Int = 2000

    public init() {}

    public static let maxSteps = 10_000_000

    public func validationError() -> FieldError? {
        Validation.first(
            { Validation.range("/steps", steps, 1, LoopSpec.maxSteps) },
            { checkpointEvery >= 0 ? nil : ("/checkpointEvery", "must be ≥ 0 (0 = only at the end), got \(checkpointEvery)") },
            { logEvery >= 1 ? nil : ("/logEvery", "must be ≥ 1, got \(logEvery)") },
            { Validation.range("/previewPoints", previewPoints, 0, 100_000) })
    }
}

/// Output file format for points.
public enum PointFormat: String, Codable, Sendable { case npy, csv }

/// The memory of training `config` with `threads` workers (parameters with gradients, Adam
/// moments, EMA and checkpoint copies; the batch buffers; every worker graph's activations and
/// their gradients). Shared by the training kinds' estimates.
func trainingEstimate(_ config: TrainingConfig, threads: Int, into e: inout ResourceEstimate) {
    let p = config.model.parameterCount, b = config.batchSize, d = config.model.pointSize
    // value + grad + per-worker grad + Adam m, v + EMA, the snapshot's copies of weights, EMA
    // and moments while a checkpoint is written, and the file's bytes.
    e.add("parameters, gradients, optimizer state, EMA and checkpoint copies", floats: p, 12 + threads)
    e.add("batch buffers (x0, x1, x_t, target, t)", floats: b, d + 1, 4)
    // Values and gradients of every recorded node, across all worker shards (they sum to B rows).
    e.add("activations and their gradients", floats: b, config.model.config.activationFloatsPerRow, 2)
}

/// The frozen feature network of a perceptual premetric: its weights (and the loaded copy) and
/// its activations for x̂ and x1 with their gradients, per batch row. Sized from the
/// classifier's own config (a default CNN when the reference does not resolve yet).
func perceptualEstimate(_ config: TrainingConfig, resolver: any ArtifactResolver, into e: inout ResourceEstimate) {
    guard let p = config.perceptual else { return }
    var c = ClassifierConfig()
    if let path = try? resolver.path(for: p.classifier, kind: .classifier), let a = try? ClassifierArtifact.read(path: path) { c = a.config }
    c.imageShape = c.imageShape ?? (config.model.pointShape.count == 3 ? config.model.pointShape : [1, 28, 28])
    c.classes = c.classes ?? 10
    e.add("perceptual feature network (weights, activations of x̂ and x1)", floats: ResourceEstimate.add(
        ResourceEstimate.multiply(c.parameterCount, 2), ResourceEstimate.multiply(config.batchSize, ResourceEstimate.multiply(c.activationFloatsPerRow, 4))))
}
