import ReflowEngine
import ReflowNN
import ReflowFlow
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
    /// Polled between steps; true makes the job checkpoint and throw ``JobError/interrupted``.
    public var shouldStop: @Sendable () -> Bool

    public init(directory: String, threads: Int, resolver: any ArtifactResolver,
                progress: @escaping @Sendable (JobProgress) -> Void = { _ in },
                shouldStop: @escaping @Sendable () -> Bool = { false }) {
        self.directory = directory
        self.threads = threads
        self.resolver = resolver
        self.progress = progress
        self.shouldStop = shouldStop
    }
}

/// Prepares and runs jobs.
///
/// `prepare` resolves a parsed spec against existing artifacts (a reflow's `model`, `data` and
/// `source` follow its teacher unless given) and is what the API echoes as `input`; `run`
/// executes it. A run is idempotent in its directory: finished phases are found on disk (pairs,
/// final model) and an interrupted training continues from `checkpoint.safetensors`, checked
/// against the SHA-256 of the prepared spec so a directory never mixes two jobs.
public enum JobRunner {
    // MARK: prepare

    /// Resolves references and fills inherited fields; errors carry the pointer of the reference.
    public static func prepare(_ spec: JobSpec, resolver: any ArtifactResolver) throws(SpecError) -> JobSpec {
        func resolve(_ pointer: String, _ ref: ArtifactRef, _ kind: ArtifactKind) throws(SpecError) -> String {
            do { return try resolver.path(for: ref, kind: kind) } catch {
                throw SpecError(pointer: pointer + error.pointer, message: error.message)
            }
        }
        func model(_ pointer: String, _ ref: ArtifactRef) throws(SpecError) -> ModelArtifact {
            let path = try resolve(pointer, ref, .model)
            do { return try ModelArtifact.read(path: path) } catch {
                throw SpecError(pointer: pointer, message: "cannot use this model: \(error)")
            }
        }
        switch spec {
        case .train: return spec
        case .reflow(var s), .distill(var s):
            let teacher = try model("/input/teacher", s.teacher)
            if let p = s.pairsFrom { _ = try resolve("/input/pairsFrom", p, .pairs) }
            if s.inherited.contains("model") { s.training.model = teacher.model }
            if s.inherited.contains("data") { s.training.data = teacher.training.data }
            if s.inherited.contains("source") { s.training.source = teacher.training.source }
            s.inherited = []
            if s.initialization == .teacher && s.training.model != teacher.model {
                throw SpecError(pointer: "/input/model", message: "must equal the teacher's architecture when initialization is \"teacher\" (leave it out to inherit it)")
            }
            if let e = s.training.validationError() { throw SpecError(pointer: "/input" + e.pointer, message: e.message) }
            if case .reflow = spec { return .reflow(s) } else { return .distill(s) }
        case .sample(let s):
            _ = try model("/input/model", s.model)
            return spec
        case .invert(let s):
            _ = try model("/input/model", s.model)
            if case .path(let p) = s.points { _ = try resolve("/input/points", .path(p), .points) }
            return spec
        case .evaluate(let s):
            _ = try model("/input/model", s.model)
            return spec
        }
    }

    /// SHA-256 of the canonical JSON of a prepared spec (recorded in checkpoints).
    public static func digest(_ spec: JobSpec) -> String { SHA256.hex(of: SpecParser.canonicalJSON(spec)) }

    // MARK: run

    /// Runs a prepared spec; writes its artifacts and `result.json` into `context.directory`.
    public static func run(_ spec: JobSpec, context: JobContext) throws -> JobResult {
        guard context.threads >= 1 && context.threads <= 256 else { throw JobError.invalidInput("threads must be in [1, 256]") }
        try FileManager.default.createDirectory(atPath: context.directory, withIntermediateDirectories: true)
        let start = monotonicSeconds()
        var result = JobResult(type: spec.type)
        let job = Job(spec: spec, context: context, digest: digest(spec))
        switch spec {
        case .train(let s): try job.train(s, into: &result)
        case .reflow(let s), .distill(let s): try job.student(s, into: &result)
        case .sample(let s): try job.sample(s, into: &result)
        case .invert(let s): try job.invert(s, into: &result)
        case .evaluate(let s): try job.evaluate(s, into: &result)
        }
        result.seconds = monotonicSeconds() - start
        result.artifacts = try listArtifacts(context.directory)
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys, .prettyPrinted]
        try AtomicFile.write(Array(try e.encode(result)), to: context.directory + "/" + ArtifactName.result)
        return result
    }

    /// The job's files (excluding the result itself and temporaries) with sizes and digests.
    static func listArtifacts(_ dir: String) throws -> [ArtifactInfo] {
        let names = try FileManager.default.contentsOfDirectory(atPath: dir).sorted()
        var out = [ArtifactInfo]()
        // job.json and log.txt belong to the server, not to the job's outputs.
        for name in names where name != ArtifactName.result && name != "job.json" && name != "log.txt"
            && !name.hasPrefix(".") && !name.hasSuffix(".sha256") {
            // Streamed in 1 MiB chunks: a pairs or model file is never held in memory just to hash it.
            let path = dir + "/" + name
            let size = (try FileManager.default.attributesOfItem(atPath: path)[.size] as? Int) ?? 0
            out.append(ArtifactInfo(name: name, bytes: size, sha256: try SHA256.hexOfFile(path: path)))
        }
        return out
    }
}

/// One execution of a prepared spec.
struct Job {
    let spec: JobSpec
    let context: JobContext
    let digest: String
    var dir: String { context.directory }

    func file(_ name: String) -> String { dir + "/" + name }

    func write(_ bytes: [UInt8], _ name: String) throws { try AtomicFile.write(bytes, to: file(name)) }

    func checkStop() throws { if context.shouldStop() { throw JobError.interrupted } }

    func model(_ ref: ArtifactRef, kind: ArtifactKind = .model) throws -> ModelArtifact {
        do { return try ModelArtifact.read(path: try context.resolver.path(for: ref, kind: kind)) } catch let e as SpecError {
            throw JobError.invalidInput("model reference: \(e.message)")
        }
    }

    func solve(_ config: VelocityMLPConfig, _ weights: [String: Tensor], _ x: Tensor, _ method: ODEMethod,
               direction: ODEDirection = .forward, blockRows: Int = 1024, trajectory: Bool = false) throws -> ODESolution {
        do {
            return try ODESolver.solve(config: config, stateDict: weights, x: x, method: method, direction: direction,
                                       threads: context.threads, blockRows: blockRows, recordTrajectory: trajectory)
        } catch let e as ODEError {
            throw JobError.resourceLimit("solver \(method.name): \(e)")
        }
    }

    /// n draws from π0: `Random(seed).normal` for the standard Gaussian (so pairs can store the
    /// generator state instead of z0), the distribution's own sampler otherwise.
    static func draw(_ source: Distribution2D, n: Int, seed: UInt64) -> (x: Tensor, noise: Random.State?) {
        var rng = Random(seed: seed)
        if case .gaussian(let mean, let std) = source, mean == [0, 0], std == 1 {
            let state = rng.state
            return (rng.normal([n, 2]), state)
        }
        return (source.sample(n, rng: &rng), nil)
    }

    func points(_ x: Tensor, format: PointFormat, base: String) throws -> String {
        switch format {
        case .npy: try write(PointFiles.npyBytes(x), base + ".npy"); return base + ".npy"
        case .csv: try write(Array(PointFiles.csvText(x).utf8), base + ".csv"); return base + ".csv"
        }
    }

    // MARK: training

    func checkpointMetadata(_ training: ToyTrainingConfig) throws -> [String: String] {
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys]
        return [ArtifactMetadata.modelConfig: String(decoding: try e.encode(training.model), as: UTF8.self),
                ArtifactMetadata.trainingConfig: String(decoding: try e.encode(training), as: UTF8.self),
                ArtifactMetadata.jobType: spec.type.rawValue, ArtifactMetadata.specDigest: digest]
    }

    /// Trains to `loop.steps`, resuming from this directory's checkpoint, checkpointing every
    /// `loop.checkpointEvery` steps and on a stop request; writes `model.safetensors` and `loss.csv`.
    func trainLoop(_ training: ToyTrainingConfig, _ loop: LoopSpec, phase: String,
                   make: (TrainingSnapshot?) throws -> ToyTrainer) throws -> TrainingSummary {
        let meta = try checkpointMetadata(training)
        func owned(_ s: TrainingSnapshot, _ path: String) throws {
            guard s.metadata[ArtifactMetadata.specDigest] == digest else {
                throw JobError.invalidInput("\(path) belongs to a different job spec; use an empty directory")
            }
        }
        if FileManager.default.fileExists(atPath: file(ArtifactName.model)) {
            // Finished in an earlier run (e.g. killed while rendering the preview).
            let s = try Checkpoint.read(path: file(ArtifactName.model))
            try owned(s, ArtifactName.model)
            let log = readLossLog(upTo: s.step)
            return TrainingSummary(steps: s.step, resumedFromStep: s.step, finalLoss: log.last?.1 ?? .nan,
                                   recentMeanLoss: log.last?.1 ?? .nan, seconds: 0, stepsPerSecond: 0, threads: context.threads)
        }
        var snapshot: TrainingSnapshot?
        if FileManager.default.fileExists(atPath: file(ArtifactName.checkpoint)) {
            let s = try Checkpoint.read(path: file(ArtifactName.checkpoint))
            try owned(s, ArtifactName.checkpoint)
            snapshot = s
        }
        let trainer = try make(snapshot)
        let resumed = trainer.step
        var log = resumed > 0 ? readLossLog(upTo: resumed) : []
        func save(_ name: String) throws {
            var s = trainer.snapshot()
            for (k, v) in meta { s.metadata[k] = v }
            try Checkpoint.write(s, to: file(name))
            try write(Array((["step,loss"] + log.map { "\($0.0),\($0.1)" }).joined(separator: "\n").utf8) + [10], ArtifactName.lossLog)
        }
        let start = monotonicSeconds()
        var windowSum = 0.0, windowCount = 0, last = Double.nan, recent = Double.nan
        context.progress(JobProgress(phase: phase, done: resumed, total: loop.steps))
        while trainer.step < loop.steps {
            if context.shouldStop() {
                try save(ArtifactName.checkpoint)
                throw JobError.interrupted
            }
            let loss = Double(trainer.trainStep())
            guard loss.isFinite else {
                throw JobError.diverged("training diverged: the loss is \(loss) at step \(trainer.step) (lower learningRate or set gradClipNorm)")
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
                context.progress(JobProgress(phase: phase, done: step, total: loop.steps, loss: recent))
            }
            if loop.checkpointEvery > 0 && step % loop.checkpointEvery == 0 && step < loop.steps {
                try save(ArtifactName.checkpoint)
            }
        }
        let seconds = monotonicSeconds() - start
        try save(ArtifactName.model)
        try? FileManager.default.removeItem(atPath: file(ArtifactName.checkpoint))
        try? FileManager.default.removeItem(atPath: file(ArtifactName.checkpoint + ".sha256"))
        let done = trainer.step - resumed
        return TrainingSummary(steps: trainer.step, resumedFromStep: resumed, finalLoss: last, recentMeanLoss: recent,
                               seconds: seconds, stepsPerSecond: seconds > 0 ? Double(done) / seconds : 0, threads: context.threads)
    }

    /// `(step, loss)` records of `loss.csv` up to `step` (empty when absent or unreadable).
    func readLossLog(upTo step: Int) -> [(Int, Double)] {
        guard let bytes = try? AtomicFile.read(path: file(ArtifactName.lossLog), maxBytes: 64 << 20) else { return [] }
        return String(decoding: bytes, as: UTF8.self).split(separator: "\n").dropFirst().compactMap { line in
            let f = line.split(separator: ",")
            guard f.count == 2, let s = Int(f[0]), let l = Double(f[1]), s <= step else { return nil }
            return (s, l)
        }
    }

    /// `samples.png`: Euler samples (`steps`: 100, or k for a k-step student) of the trained
    /// model over its data.
    func preview(_ training: ToyTrainingConfig, weights: [String: Tensor], points: Int, steps: Int = 100) throws {
        guard points > 0 else { return }
        let z = Job.draw(training.source, n: points, seed: 424_242).x
        let x = try solve(training.model, weights, z, .euler(steps: steps)).x
        var rng = Random(seed: 424_243)
        try write(Figures.scatter(x, reference: training.data.sample(points, rng: &rng)), "samples.png")
    }

    func train(_ s: TrainSpec, into result: inout JobResult) throws {
        let threads = context.threads
        let summary = try trainLoop(s.training, s.loop, phase: "train") { snapshot in
            if let snapshot { return try ToyTrainer(s.training, threads: threads, restoring: snapshot) }
            return ToyTrainer(s.training, threads: threads)
        }
        result.training = summary
        let final = try ModelArtifact.read(path: file(ArtifactName.model))
        try preview(s.training, weights: final.weights(useEMA: true), points: s.loop.previewPoints)
    }

    // MARK: reflow / distill

    /// Pairs for a student: reused from `pairsFrom` or this directory, else generated from the
    /// teacher in chunks (stop requests are honoured between chunks) and stored with ``PairStore``.
    func pairs(_ s: StudentSpec, teacher: ModelArtifact) throws -> (z0: Tensor, z1: Tensor, summary: PairsSummary) {
        let solverJSON = String(decoding: try JSONEncoder().encode(s.solver), as: UTF8.self)
        func summary(_ z0: Tensor, _ z1: Tensor, _ meta: [String: String], seconds: Double, reused: Bool) throws -> PairsSummary {
            let solver = (try? JSONDecoder().decode(ODEMethod.self, from: Data((meta["reflowd.solver"] ?? "").utf8))) ?? s.solver
            return PairsSummary(count: z0.shape[0], solver: solver, nfeMean: Double(meta["reflowd.nfe_mean"] ?? "") ?? .nan,
                                seconds: seconds, reused: reused, transportCost: try Metrics.transportCost(z0: z0, z1: z1))
        }
        func check(_ p: (z0: Tensor, z1: Tensor, metadata: [String: String]), _ path: String) throws {
            guard p.z0.rank == 2, p.z0.shape[1] == s.training.model.dimension else {
                throw JobError.invalidInput("\(path): pairs of dimension \(p.z0.shape.last ?? 0), the model needs \(s.training.model.dimension)")
            }
        }
        if let ref = s.pairsFrom {
            let path: String
            do { path = try context.resolver.path(for: ref, kind: .pairs) } catch { throw JobError.invalidInput("pairsFrom: \(error.message)") }
            let p = try PairStore.read(path: path)
            try check(p, path)
            return (p.z0, p.z1, try summary(p.z0, p.z1, p.metadata, seconds: 0, reused: true))
        }
        let own = file(ArtifactName.pairs)
        var meta = ["reflowd.teacher_sha256": teacher.digest, "reflowd.solver": solverJSON,
                    "reflowd.noise_seed": String(s.noiseSeed), "reflowd.use_ema": String(s.useEMA),
                    "reflowd.block_rows": String(s.blockRows)]
        if FileManager.default.fileExists(atPath: own) {
            let p = try PairStore.read(path: own)
            let same = meta.allSatisfy { p.metadata[$0.key] == $0.value } && p.z0.shape[0] == s.pairs
            guard same else { throw JobError.invalidInput("\(ArtifactName.pairs) in the job directory was made with other settings; use an empty directory") }
            try check(p, own)
            return (p.z0, p.z1, try summary(p.z0, p.z1, p.metadata, seconds: 0, reused: true))
        }
        let weights = teacher.weights(useEMA: s.useEMA)
        let (z0, noise) = Job.draw(teacher.training.source, n: s.pairs, seed: s.noiseSeed)
        var z1 = [Float]()
        z1.reserveCapacity(z0.count)
        let d = 2, chunk = s.blockRows * max(1, 8192 / s.blockRows)
        var nfeSum = 0.0
        let start = monotonicSeconds()
        var row = 0
        context.progress(JobProgress(phase: "pairs", done: 0, total: s.pairs))
        while row < s.pairs {
            try checkStop()
            let hi = min(s.pairs, row + chunk)
            let x = Tensor(shape: [hi - row, d], data: Array(z0.data[(row * d)..<(hi * d)]))
            let sol = try solve(teacher.model, weights, x, s.solver, blockRows: s.blockRows)
            z1.append(contentsOf: sol.x.data)
            nfeSum += sol.nfeMean * Double(hi - row)
            row = hi
            context.progress(JobProgress(phase: "pairs", done: row, total: s.pairs))
        }
        let seconds = monotonicSeconds() - start
        let z1t = Tensor(shape: [s.pairs, d], data: z1)
        meta["reflowd.nfe_mean"] = String(nfeSum / Double(s.pairs))
        if let noise {
            try PairStore.write(z1: z1t, noise: noise, z0: z0, metadata: meta, to: own)
        } else {
            try PairStore.write(z0: z0, z1: z1t, metadata: meta, to: own)
        }
        try? FileManager.default.removeItem(atPath: own + ".sha256")
        try write(Figures.coupling(z0: z0, z1: z1t, count: 300), "coupling.png")
        return (z0, z1t, try summary(z0, z1t, meta, seconds: seconds, reused: false))
    }

    func student(_ s: StudentSpec, into result: inout JobResult) throws {
        let teacher = try model(s.teacher)
        let (z0, z1, pairsSummary) = try pairs(s, teacher: teacher)
        result.pairs = pairsSummary
        let threads = context.threads
        let initial = s.initialization == .teacher ? teacher.weights(useEMA: s.useEMA) : nil
        let summary = try trainLoop(s.training, s.loop, phase: spec.type.rawValue) { snapshot in
            if let snapshot { return try ToyTrainer(s.training, threads: threads, restoring: snapshot, pairs: (z0, z1)) }
            return try ToyTrainer(s.training, threads: threads, pairs: (z0, z1), initialWeights: initial)
        }
        result.training = summary
        let final = try ModelArtifact.read(path: file(ArtifactName.model))
        // A k-step student samples with k Euler steps.
        try preview(s.training, weights: final.weights(useEMA: true), points: s.loop.previewPoints, steps: s.k ?? 100)
    }

    // MARK: sample / invert / evaluate

    func sample(_ s: SampleSpec, into result: inout JobResult) throws {
        let m = try model(s.model)
        let weights = m.weights(useEMA: s.useEMA)
        let z = Job.draw(m.training.source, n: s.n, seed: s.seed).x
        context.progress(JobProgress(phase: "sample", done: 0, total: s.n))
        let start = monotonicSeconds()
        let sol = try solve(m.model, weights, z, s.solver)
        let seconds = monotonicSeconds() - start
        _ = try points(sol.x, format: s.format, base: "samples")
        var rng = Random(seed: s.seed &+ 1)
        let reference = m.training.data.sample(min(s.n, 4000), rng: &rng)
        try write(Figures.scatter(sol.x, reference: reference), "samples.png")
        if s.trajectories > 0 {
            try checkStop()
            let start = Tensor(shape: [s.trajectories, 2], data: Array(z.data.prefix(2 * s.trajectories)))
            // One block, so rk45 records one common time grid for all drawn trajectories.
            let t = try solve(m.model, weights, start, s.solver, blockRows: s.trajectories, trajectory: true)
            try write(Figures.trajectories((t.trajectory ?? []).map(\.x), reference: reference), "trajectories.png")
        }
        let (mean, std) = Job.moments(sol.x)
        result.sample = SampleSummary(n: s.n, nfe: sol.nfe, nfeMean: sol.nfeMean, seconds: seconds, mean: mean, std: std)
        context.progress(JobProgress(phase: "sample", done: s.n, total: s.n))
    }

    static func moments(_ x: Tensor) -> (mean: [Double], std: [Double]) {
        let n = x.shape[0], d = x.shape[1]
        var mean = [Double](repeating: 0, count: d), sq = [Double](repeating: 0, count: d)
        for r in 0..<n { for c in 0..<d { let v = Double(x.data[r * d + c]); mean[c] += v; sq[c] += v * v } }
        for c in 0..<d { mean[c] /= Double(n); sq[c] = (sq[c] / Double(n) - mean[c] * mean[c]).squareRoot() }
        return (mean, sq)
    }

    func invert(_ s: InvertSpec, into result: inout JobResult) throws {
        let m = try model(s.model)
        let weights = m.weights(useEMA: s.useEMA)
        let x: Tensor
        switch s.points {
        case .distribution(let dist, let n, let seed):
            var rng = Random(seed: seed)
            x = dist.sample(n, rng: &rng)
        case .inline(let rows):
            x = Tensor(shape: [rows.count, 2], data: rows.flatMap { $0 })
        case .path(let p):
            let path: String
            do { path = try context.resolver.path(for: .path(p), kind: .points) } catch { throw JobError.invalidInput("points: \(error.message)") }
            do { x = try PointFiles.load(path: path) } catch { throw JobError.invalidInput("points: \(error)") }
            guard x.rank == 2, x.shape[1] == m.model.dimension else {
                throw JobError.invalidInput("points: \(path) holds \(x.shape.last ?? 0)-D points, the model is \(m.model.dimension)-D")
            }
        }
        let n = x.shape[0]
        context.progress(JobProgress(phase: "invert", done: 0, total: n))
        let start = monotonicSeconds()
        let back = try solve(m.model, weights, x, s.solver, direction: .backward)
        let seconds = monotonicSeconds() - start
        _ = try points(back.x, format: s.format, base: "latents")
        var meanErr: Double?, maxErr: Double?
        if s.reconstruct {
            try checkStop()
            let again = try solve(m.model, weights, back.x, s.solver).x
            var sum = 0.0, worst = 0.0
            for r in 0..<n {
                let dx = Double(again.data[2 * r] - x.data[2 * r]), dy = Double(again.data[2 * r + 1] - x.data[2 * r + 1])
                let e = (dx * dx + dy * dy).squareRoot()
                sum += e
                worst = max(worst, e)
            }
            meanErr = sum / Double(n)
            maxErr = worst
            _ = try points(again, format: s.format, base: "reconstruction")
        }
        var rng = Random(seed: 99)
        let g1 = rng.normal([n, 2]), g2 = rng.normal([n, 2])
        let (mean, std) = Job.moments(back.x)
        result.invert = InvertSummary(
            n: n, nfe: back.nfe, seconds: seconds, latentMean: mean, latentStd: std,
            latentSWD: try Metrics.slicedWasserstein2(a: back.x, b: g1, projections: 256, seed: 7),
            gaussianFloorSWD: try Metrics.slicedWasserstein2(a: g2, b: g1, projections: 256, seed: 7),
            reconstructionMeanError: meanErr, reconstructionMaxError: maxErr)
        try write(Figures.coupling(z0: back.x, z1: x, count: min(n, 300)), "inversion.png")
        context.progress(JobProgress(phase: "invert", done: n, total: n))
    }

    func evaluate(_ s: EvaluateSpec, into result: inout JobResult) throws {
        let m = try model(s.model)
        let weights = m.weights(useEMA: s.useEMA)
        let target = s.target ?? m.training.data
        var rng = Random(seed: s.seed)
        let reference = target.sample(s.n, rng: &rng)
        let second = target.sample(s.n, rng: &rng)
        let z = Job.draw(m.training.source, n: s.n, seed: s.seed &+ 1).x
        var rows = [EvaluationRow]()
        for (i, method) in s.solvers.enumerated() {
            try checkStop()
            context.progress(JobProgress(phase: "evaluate", done: i, total: s.solvers.count + 1))
            let sol = try solve(m.model, weights, z, method, blockRows: method.steps == nil ? s.n : 1024)
            let cov = try Metrics.supportCoverage(samples: sol.x, distribution: target)
            rows.append(EvaluationRow(
                solver: method, nfe: sol.nfe, nfeMean: sol.nfeMean,
                swd: try Metrics.slicedWasserstein2(a: sol.x, b: reference, projections: s.projections, seed: 7),
                energyDistance: try Metrics.energyDistance(a: sol.x, b: reference, seed: 7),
                transportCost: try Metrics.transportCost(z0: z, z1: sol.x),
                fractionWithin: cov.fractionWithin, modesCovered: cov.modesCovered, modeCount: cov.counts.count,
                meanDistance: cov.meanDistance))
        }
        try checkStop()
        let trajN = min(s.n, 2000)
        let start = Tensor(shape: [trajN, 2], data: Array(z.data.prefix(2 * trajN)))
        let traj = try solve(m.model, weights, start, .euler(steps: s.straightnessSteps), trajectory: true)
        let frames = (traj.trajectory ?? []).map(\.x)
        let m512 = min(trajN, 512)
        let excess = try Metrics.relativeTransportCost(z0: Tensor(shape: [m512, 2], data: Array(start.data.prefix(2 * m512))),
                                                       z1: Tensor(shape: [m512, 2], data: Array(traj.x.data.prefix(2 * m512)))).excess
        result.evaluation = EvaluationSummary(
            n: s.n, target: target.kind, rows: rows,
            straightness: try Metrics.straightness(trajectory: frames), transportExcess: excess,
            dataFloorSWD: try Metrics.slicedWasserstein2(a: second, b: reference, projections: s.projections, seed: 7),
            dataFloorEnergy: try Metrics.energyDistance(a: second, b: reference, seed: 7))
        let shown = Array(frames.map { Tensor(shape: [min(trajN, 300), 2], data: Array($0.data.prefix(2 * min(trajN, 300)))) })
        try write(Figures.trajectories(shown, reference: reference), "trajectories.png")
        context.progress(JobProgress(phase: "evaluate", done: s.solvers.count + 1, total: s.solvers.count + 1))
    }
}
