import ReflowEngine
import ReflowAutograd
public import ReflowNN
import ReflowFlow
import ReflowStore
import ReflowCodec
import Foundation

/// The dead-neuron rate of one measurement (``ActivationProbe``), per ReLU layer and overall.
public struct DNRRecord: Codable, Sendable, Equatable {
    /// Dead (≤ 0) pre-activations over all counted ones, all ReLU layers together.
    public var overall: Double
    /// Per layer (named after the layer the ReLU follows).
    public var layers: [String: Double]
    /// Per layer: units never positive on the whole fixed sample, and the layer's units.
    public var deadUnits: [String: Int]
    public var units: [String: Int]
    /// Training step within the cycle when it was measured.
    public var step: Int

    init?(_ p: ActivationProbe, step: Int) {
        guard !p.order.isEmpty else { return nil }
        overall = p.overallRate
        layers = p.layers.mapValues(\.rate)
        deadUnits = p.layers.mapValues(\.deadUnits)
        units = p.layers.mapValues(\.everPositive.count)
        self.step = step
    }
}

/// One cycle of a prune job (cycle 0 is the dense model as given).
public struct PruneCycleRecord: Codable, Sendable, Equatable {
    public var cycle: Int
    /// Fraction of the survivors this cycle removed.
    public var fraction: Double
    /// Fraction of the prunable weights that are pruned (structured: of the original model's parameters removed).
    public var sparsity: Double
    /// Pruned fraction per prunable tensor.
    public var layerSparsity: [String: Double]
    /// Surviving prunable weights, and the model's nonzero parameters of all kinds.
    public var remainingPrunable: Int
    public var nonzeroParameters: Int
    /// Weights removed by the base method and by AP in this cycle.
    public var removedBase: Int
    public var removedAP: Int
    public var trainSteps: Int
    /// Mean training loss of the cycle's last logged window (null without retraining).
    public var finalLoss: Double?
    /// DNR after the cycle's training (null for a model without ReLU layers).
    public var dnr: DNRRecord?
    /// DNR measurements during the cycle's training (every `dnr.every` steps).
    public var dnrCurve: [DNRRecord]
    /// Named quality figures: `testAccuracy` (classifiers); `euler<k>.swd`, `euler<k>.energy`
    /// and with a classifier `euler<k>.fd` (flows).
    public var quality: [String: Double]
    public var seconds: Double
}

/// What structured pruning removed and what it bought.
public struct StructuredSummary: Codable, Sendable, Equatable {
    /// Units per pruned layer before and after.
    public var unitsBefore: [String: Int]
    public var unitsAfter: [String: Int]
    public var parametersBefore: Int
    public var parametersAfter: Int
    /// Median seconds of one forward pass over `timingRows` inputs on one thread.
    public var denseSeconds: Double
    public var prunedSeconds: Double
    public var speedup: Double
    public var timingRows: Int
    /// The smaller model's architecture.
    public var model: ResultValue
}

/// The `pruning` section of a prune job's result.
public struct PruneSummary: Codable, Sendable, Equatable {
    /// `classifier` or `flow`.
    public var subject: String
    public var method: PruneMethod
    public var scope: PruneScope
    public var schedule: PruneSchedule
    public var rewind: RewindPoint
    public var ap: APSettings
    /// The prunable tensors (their names) and their total size.
    public var prunable: [String]
    public var prunableWeights: Int
    public var parameters: Int
    /// Cycle 0 (dense) first.
    public var cycles: [PruneCycleRecord]
    public var structured: StructuredSummary?
    /// Whether every cycle finished (the state `pruning.json` keeps between restarts).
    public var complete: Bool
}

public enum PruneJob: JobKind {
    public static let name = "prune"
    public static let summary = "Prune a trained model (velocity model or classifier): magnitude, random or structured, one-shot or iterative with rewinding, optionally with AP; dead-neuron rate and quality after every cycle."
    public static let phases = ["measure", "retrain"]
    public static let trainingPhases = ["retrain"]
    public static let outputs = [
        JobOutput(JobDirectory.Name.model, "the pruned velocity model after the latest finished cycle (masks under mask.<name>)"),
        JobOutput(JobDirectory.Name.classifier, "the pruned classifier after the latest finished cycle (masks under mask.<name>)"),
        JobOutput(Name.state, "the prune job's record: every finished cycle's sparsity, DNR and quality (its result section)"),
        JobOutput(Name.table, "one row per cycle: sparsity, removed weights, DNR overall and per layer, quality figures"),
        JobOutput(Name.plot, "the dead-neuron rate against the cycles, overall (black) and per ReLU layer (colours), with labelled axes and a legend"),
    ]

    enum Name {
        static let state = "pruning.json"
        static let table = "pruning.csv"
        static let plot = "dnr.png"
        /// The last finished cycle: trained weights, its start weights (under `ema.`) and masks.
        static let cycle = "cycle.safetensors"
    }

    static let cycleKey = "reflowd.prune_cycle"
    static let curveKey = "reflowd.prune_dnr_curve"
    /// Metadata a classify job writes: the seed of the classifier's initial weights (rewind to init).
    public static let initSeedKey = "reflowd.init_seed"
    /// Metadata a reflow/distill job writes: `teacher` when the student started from its teacher.
    public static let initializationKey = "reflowd.initialization"

    // MARK: prepare

    /// The referenced model: a velocity model or a classifier.
    enum Loaded {
        case flow(ModelArtifact)
        case classifier(ClassifierArtifact)

        var parameters: [(name: String, shape: [Int])] {
            var rng = Random(seed: 0)
            switch self {
            case .flow(let m): return m.model.makeNetwork(rng: &rng).namedParameters().map { ($0.name, $0.parameter.shape) }
            case .classifier(let c): return c.config.makeNetwork(rng: &rng).namedParameters().map { ($0.name, $0.parameter.shape) }
            }
        }

        var links: [UnitLink] {
            switch self {
            case .flow(let m): return (m.model.config as? any UnitPrunable)?.unitLinks ?? []
            case .classifier(let c): return c.config.unitLinks
            }
        }

        var kindName: String {
            switch self {
            case .flow(let m): return "the \(m.model.kind) velocity model"
            case .classifier(let c): return "the \(c.config.kind.rawValue) classifier"
            }
        }
    }

    static func modelPath(_ ref: ArtifactRef, resolver: any ArtifactResolver) throws(SpecError) -> String {
        do { return try resolver.path(for: ref, kind: .model) } catch {
            if case .job(let id, nil) = ref, let p = try? resolver.path(for: .job(id: id, artifact: "classifier"), kind: .classifier) { return p }
            throw SpecError(pointer: "/input/model" + error.pointer, message: error.message)
        }
    }

    static func load(path: String) throws -> Loaded {
        let s = try Checkpoint.read(path: path)
        if s.metadata[ClassifierConfig.metadataKey] != nil { return .classifier(try ClassifierArtifact.read(path: path)) }
        return .flow(try ModelArtifact.read(path: path))
    }

    static func loaded(_ ref: ArtifactRef, pointer: String, resolver: any ArtifactResolver) throws(SpecError) -> Loaded {
        let path = try modelPath(ref, resolver: resolver)
        do { return try load(path: path) } catch {
            throw SpecError(pointer: pointer, message: "cannot use this model: \(error)")
        }
    }

    /// The prunable tensors of a model under `spec`, or the index of an unknown layer name.
    static func prunableNames(_ params: [(name: String, shape: [Int])], _ spec: PrunableSpec) -> (names: [String], unknown: Int?) {
        func layer(_ n: String) -> String { n.split(separator: ".").dropLast().joined(separator: ".") }
        func isEmbedding(_ n: String) -> Bool { n.lowercased().contains("embedding") }
        func isWeight(_ p: (name: String, shape: [Int])) -> Bool { p.name.hasSuffix(".weight") && p.shape.count >= 2 && !isEmbedding(p.name) }
        func isNorm(_ p: (name: String, shape: [Int])) -> Bool { p.name.hasSuffix(".weight") && p.shape.count == 1 }
        let wanted = spec.layers.map(Set.init)
        if let list = spec.layers {
            let known = Set(params.filter { isWeight($0) || (spec.norms && isNorm($0)) }.map { layer($0.name) })
            if let i = list.firstIndex(where: { !known.contains($0) }) { return ([], i) }
        }
        let names = params.filter { p in
            guard wanted?.contains(layer(p.name)) ?? true else { return false }
            if isWeight(p) { return true }
            if spec.norms && isNorm(p) { return true }
            // A bias is prunable with its layer's weight (not a norm's shift unless norms too).
            if spec.biases && p.name.hasSuffix(".bias") {
                let w = params.first { $0.name == layer(p.name) + ".weight" }
                return w.map { isWeight($0) || (spec.norms && isNorm($0)) } ?? false
            }
            return false
        }.map(\.name)
        return (names, nil)
    }

    public static func prepare(_ input: PruneSpec, resolver: any ArtifactResolver) throws(SpecError) -> PruneSpec {
        var s = input
        let m = try loaded(s.model, pointer: "/input/model", resolver: resolver)
        let params = m.parameters
        let (names, unknown) = prunableNames(params, s.prunable)
        if let i = unknown {
            let layers = Array(Set(params.filter { $0.shape.count >= 2 && $0.name.hasSuffix(".weight") }
                .map { $0.name.split(separator: ".").dropLast().joined(separator: ".") })).sorted()
            throw SpecError(pointer: "/input/prunable/layers/\(i)",
                            message: "\(m.kindName) has no prunable layer \"\(s.prunable.layers![i].prefix(80))\" (its layers: \(layers.prefix(40).joined(separator: ", ")))")
        }
        if names.isEmpty { throw SpecError(pointer: "/input/prunable", message: "selects no parameters of \(m.kindName)") }
        if s.method == .structured {
            let links = m.links
            if links.isEmpty {
                throw SpecError(pointer: "/input/method", message: "structured pruning removes hidden units of MLP and LeNet classifiers and MLP velocity models; \(m.kindName) has no such layers")
            }
            if let l = s.prunable.layers {
                let ok = Set(links.map(\.layer))
                if let i = l.firstIndex(where: { !ok.contains($0) }) {
                    throw SpecError(pointer: "/input/prunable/layers/\(i)", message: "structured pruning can remove units of \(links.map(\.layer).joined(separator: ", ")) only")
                }
            }
        }
        s.rewind = s.effectiveRewind
        switch s.effectiveRewind {
        case .none: break
        case .initialization:
            switch m {
            case .classifier(let c):
                if c.metadata[initSeedKey] == nil {
                    throw SpecError(pointer: "/input/rewind", message: "the classifier file records no initial seed (written before pruning existed); retrain it, or rewind to {\"kind\": \"model\", …} or {\"kind\": \"none\"}")
                }
            case .flow(let f):
                let start = f.snapshot.metadata[initializationKey]
                if start != nil && start != StudentInit.scratch.rawValue {
                    throw SpecError(pointer: "/input/rewind", message: "this model started from another model's weights (its teacher's or initFrom's), so that model is its initialisation: rewind to {\"kind\": \"model\", \"model\": <that model>}")
                }
            }
        case .model(let ref):
            let r = try loaded(ref, pointer: "/input/rewind/model", resolver: resolver)
            let a = r.parameters, b = params
            guard a.count == b.count, zip(a, b).allSatisfy({ $0.name == $1.name && $0.shape == $1.shape }) else {
                throw SpecError(pointer: "/input/rewind/model", message: "has another architecture than the model being pruned")
            }
        }
        switch m {
        case .classifier(let c):
            if s.pairs != nil { throw SpecError(pointer: "/input/pairs", message: "is for velocity models (a classifier retrains on its images)") }
            if s.evaluation.classifier != nil { throw SpecError(pointer: "/input/evaluation/classifier", message: "is for image velocity models") }
            let ref: ImageDataRef
            do { ref = try ClassifierSubject.trainingData(c, s) } catch {
                throw SpecError(pointer: "/input/data", message: "the classifier records no training dataset; give data")
            }
            let info = try ImageSplits.describe(ref, pointer: "/input/data", resolver: resolver)
            if let shape = info.shape, shape != c.config.imageShape {
                throw SpecError(pointer: "/input/data", message: "holds \(shape.map(String.init).joined(separator: "×")) images, the classifier takes \((c.config.imageShape ?? []).map(String.init).joined(separator: "×"))")
            }
            _ = try ImageSplits.describe(ImageDataRef(dataset: ref.dataset, split: .test), pointer: "/input/data", resolver: resolver)
            // Named in the echoed input (and so protected from deletion while the job runs).
            s.data = ref
        case .flow(let f):
            if s.data != nil { throw SpecError(pointer: "/input/data", message: "is for classifiers (a velocity model retrains on its own coupling)") }
            if s.pairs == nil, case .job(let id, _) = s.model, (try? resolver.path(for: .job(id: id, artifact: "pairs"), kind: .pairs)) != nil {
                s.pairs = .job(id: id, artifact: "pairs")
            }
            if let p = s.pairs {
                do { _ = try resolver.path(for: p, kind: .pairs) } catch {
                    throw SpecError(pointer: "/input/pairs" + error.pointer, message: error.message)
                }
            } else if f.snapshot.metadata["reflowd.pairs_sha256"] != nil {
                // A reflow/distill student that reused another job's pairs (pairsFrom) has none of
                // its own; retraining it on the independent coupling would change its objective.
                throw SpecError(pointer: "/input/pairs", message: "this model was trained on stored pairs that its job does not hold (it reused them with pairsFrom); give pairs: {\"job\": <the job that made them>}")
            }
            if let c = s.evaluation.classifier {
                guard f.model.pointShape.count == 3 else {
                    throw SpecError(pointer: "/input/evaluation/classifier", message: "scores images; this model's points are \(f.model.pointSize)-D")
                }
                do { _ = try resolver.path(for: c, kind: .classifier) } catch {
                    throw SpecError(pointer: "/input/evaluation/classifier" + error.pointer, message: error.message)
                }
            }
            try checkDataReferences(f.training, resolver: resolver)
        }
        return s
    }

    public static func estimate(_ s: PruneSpec, resolver: any ArtifactResolver, threads: Int) throws(SpecError) -> ResourceEstimate {
        var e = ResourceEstimate()
        let m = try loaded(s.model, pointer: "/input/model", resolver: resolver)
        switch m {
        case .classifier(let c):
            let p = c.config.parameterCount, batch = s.retrain.batchSize ?? 128
            // Trained, rewind and start weights, masks, the trainer (value, grad, per-worker
            // grads, Adam m and v), snapshot copies and the evaluation networks.
            e.add("weights, masks, rewind point, trainer state and checkpoint copies", floats: p, 16 + threads)
            e.add("activations and their gradients", floats: batch, c.config.activationFloatsPerRow, 2)
            e.add("fixed DNR sample and evaluation blocks", floats: s.dnr.samples + threads * 256, c.config.activationFloatsPerRow)
            if let ref = try? ClassifierSubject.trainingData(c, s) {
                for split in [ImageSplit.train, .test] {
                    if let info = try? ImageSplits.describe(ImageDataRef(dataset: ref.dataset, split: split, limit: ref.limit), pointer: "", resolver: resolver),
                       let bytes = info.bytes {
                        e.add("\(split.rawValue) images (and a transient copy) with a float copy for scoring", bytes: ResourceEstimate.multiply(bytes, 7))
                    }
                }
            }
            // Ranking holds per weight an (index, index) pair, a key and a sort index (28 bytes).
            e.add("pruning ranks", floats: p, 7)
        case .flow(let f):
            var t = f.training
            if let b = s.retrain.batchSize { t.batchSize = b }
            trainingEstimate(t, threads: threads, into: &e)
            perceptualEstimate(t, resolver: resolver, into: &e)
            let p = f.model.parameterCount, d = f.model.pointSize
            // Ranking holds per weight an (index, index) pair, a key and a sort index (28 bytes).
            e.add("trained, rewind and start weights, masks and pruning ranks", floats: p, 12)
            if let ref = s.pairs, let bytes = resolver.fileSize(of: ref, kind: .pairs) {
                e.add("pairs (file bytes and tensors)", bytes: ResourceEstimate.multiply(bytes, 3))
            }
            e.add("fixed DNR sample (x_t, t) and its forward blocks", floats: s.dnr.samples, d + 1 + f.model.config.activationFloatsPerRow)
            e.add("evaluation (reference, noise, samples, solver blocks)", floats: s.evaluation.n, d, 8)
            addDataFiles(f.training, resolver: resolver, into: &e)
        }
        return e
    }

    // MARK: run

    public static func run(_ s: PruneSpec, job: JobExecution) throws -> JobResult.Sections {
        let path: String
        do { path = try modelPath(s.model, resolver: job.context.resolver) } catch { throw JobError.invalidInput("model: \(error.message)") }
        return try run(s, loaded: try load(path: path), job: job)
    }

    static func run(_ s: PruneSpec, loaded: Loaded, job: JobExecution) throws -> JobResult.Sections {
        switch loaded {
        case .classifier(let a):
            let subject = try ClassifierSubject(artifact: a, spec: s, job: job)
            var initial: [String: Tensor]?
            if let seed = a.metadata[initSeedKey].flatMap(UInt64.init) {
                var rng = Random(seed: seed)
                initial = a.config.makeNetwork(rng: &rng).stateDict()
            }
            return try PruneRun(spec: s, subject: subject, dense: a.weights, denseEvaluation: a.weights, initial: initial, job: job,
                                subjectName: "classifier").run()
        case .flow(let m):
            var pairs: (z0: Tensor, z1: Tensor, labels: [Int32]?)?
            if let ref = s.pairs {
                let p = try PairStore.read(path: try job.resolve(ref, kind: .pairs, what: "pairs"))
                guard p.z0.rank == 2, p.z0.shape[1] == m.model.pointSize else {
                    throw JobError.invalidInput("pairs: of dimension \(p.z0.shape.last ?? 0), the model needs \(m.model.pointSize)")
                }
                pairs = (p.z0, p.z1, p.labels)
            }
            let subject = try FlowSubject(artifact: m, pairs: pairs, spec: s, job: job)
            var initial: [String: Tensor]?
            // Random initialisations are reproducible from the seed (train jobs, scratch students);
            // a student started from a teacher or another model has no seed initialisation.
            let start = m.snapshot.metadata[initializationKey]
            if start == nil || start == StudentInit.scratch.rawValue {
                var rng = Random(seed: m.training.seed)
                initial = m.model.makeNetwork(rng: &rng).stateDict()
            }
            return try PruneRun(spec: s, subject: subject, dense: m.snapshot.model, denseEvaluation: m.weights(useEMA: true), initial: initial,
                                job: job, subjectName: "flow").run()
        }
    }

    /// Reads a rewind model's weights: a velocity model's EMA weights when it has them (what a
    /// student initialised from it started from, and what sampling uses), a classifier's weights.
    static func rewindWeights(_ ref: ArtifactRef, job: JobExecution) throws -> [String: Tensor] {
        let path: String
        do { path = try modelPath(ref, resolver: job.context.resolver) } catch { throw JobError.invalidInput("rewind.model: \(error.message)") }
        switch try load(path: path) {
        case .flow(let m): return m.weights(useEMA: true)
        case .classifier(let c): return c.weights
        }
    }
}

/// One execution of a prune job over a subject (see ``PruneJob``).
struct PruneRun<Subject: PruneSubject> {
    let spec: PruneSpec
    var subject: Subject
    /// The trained model's raw weights (what pruning ranks) and the weights it is scored with
    /// (its EMA when it has one).
    let dense: [String: Tensor]
    let denseEvaluation: [String: Tensor]
    /// Its initial weights when they can be rebuilt (recorded seed).
    let initial: [String: Tensor]?
    let job: JobExecution
    let subjectName: String

    var statePath: String { job.directory.file(PruneJob.Name.state) }

    func run() throws -> JobResult.Sections {
        let params = subject.parameters
        let names = PruneJob.prunableNames(params, spec.prunable).names
        var summary = PruneSummary(
            subject: subjectName, method: spec.method, scope: spec.scope, schedule: spec.schedule, rewind: spec.effectiveRewind,
            ap: spec.ap, prunable: names, prunableWeights: names.reduce(0) { $0 + (dense[$1]?.count ?? 0) },
            parameters: dense.values.reduce(0) { $0 + $1.count }, cycles: [], structured: nil, complete: false)
        // Finished cycles from an earlier run of this spec in this directory.
        if let bytes = try? AtomicFile.read(path: statePath, maxBytes: 64 << 20),
           let saved = try? JSONDecoder().decode(Stored.self, from: Data(bytes)), saved.digest == job.digest {
            summary = saved.summary
        }
        if !summary.complete {
            if spec.method == .structured { try structured(&summary, names: names) } else { try unstructured(&summary, names: names) }
            summary.complete = true
            try save(summary)
        }
        try job.write(Array(table(summary).utf8), PruneJob.Name.table)
        try job.write(try PruneRun.plot(summary, title: subject.description), PruneJob.Name.plot)
        try? FileManager.default.removeItem(atPath: job.directory.file(PruneJob.Name.cycle))
        try? FileManager.default.removeItem(atPath: job.directory.file(PruneJob.Name.cycle) + ".sha256")
        return ["pruning": try ResultValue(encoding: summary)]
    }

    struct Stored: Codable {
        var digest: String
        var summary: PruneSummary
    }

    func save(_ summary: PruneSummary) throws {
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys, .prettyPrinted]
        try job.write(Array(try e.encode(Stored(digest: job.digest, summary: summary))), PruneJob.Name.state)
    }

    /// Sparsity figures of `masks` over the prunable tensors, and the nonzero parameters of `w`.
    func record(cycle: Int, fraction: Double, masks: PruneMasks, weights w: [String: Tensor], removed: PruneStepReport,
                steps: Int, loss: Double?, dnr: DNRRecord?, curve: [DNRRecord], quality: [String: Double], seconds: Double) -> PruneCycleRecord {
        let nonzero = w.values.reduce(0) { $0 + $1.data.reduce(0) { $0 + ($1 != 0 ? 1 : 0) } }
        return PruneCycleRecord(
            cycle: cycle, fraction: fraction, sparsity: masks.sparsity,
            layerSparsity: Dictionary(uniqueKeysWithValues: masks.masks.keys.map { ($0, masks.sparsity($0)) }),
            remainingPrunable: masks.aliveCount, nonzeroParameters: nonzero, removedBase: removed.base, removedAP: removed.ap,
            trainSteps: steps, finalLoss: loss, dnr: dnr, dnrCurve: curve, quality: quality, seconds: seconds)
    }

    func metrics(_ r: PruneCycleRecord) -> [String: Double] {
        var m: [String: Double] = ["cycle": Double(r.cycle), "sparsity": r.sparsity]
        if let d = r.dnr {
            m["dnr"] = d.overall
            for (k, v) in d.layers { m["dnr." + k] = v }
        }
        for (k, v) in r.quality { m[k] = v }
        return m
    }

    /// DNR and quality of `weights` of `on` (the run's subject unless given: structured pruning
    /// measures the smaller model).
    func measure(_ weights: [String: Tensor], step: Int, on other: Subject? = nil) throws -> (DNRRecord?, [String: Double]) {
        try job.checkStop()
        let s = other ?? subject
        let d = DNRRecord(try s.probe(weights), step: step)
        return (d, try s.quality(weights))
    }

    // MARK: unstructured

    func unstructured(_ summary: inout PruneSummary, names: [String]) throws {
        let fractions = spec.cycleFractions
        let rewind: [String: Tensor]?
        switch spec.effectiveRewind {
        case .none: rewind = nil
        case .initialization:
            guard let initial else { throw JobError.invalidInput("rewind: the model's initial weights cannot be rebuilt") }
            rewind = initial
        case .model(let ref): rewind = try PruneJob.rewindWeights(ref, job: job)
        }
        // The weights the dense training started from: AP's movement reference of cycle 1.
        let origin = rewind ?? initial
        var masks = PruneMasks(dense: names, weights: dense)
        var trained = dense, start = origin ?? [:]
        var done = 0
        let cyclePath = job.directory.file(PruneJob.Name.cycle)
        if summary.cycles.isEmpty {
            job.progress("measure", 0, 1)
            let t0 = monotonicSeconds()
            let (d, q) = try measure(denseEvaluation, step: 0)
            let r = record(cycle: 0, fraction: 0, masks: masks, weights: dense, removed: .init(base: 0, ap: 0), steps: 0, loss: nil,
                           dnr: d, curve: [], quality: q, seconds: monotonicSeconds() - t0)
            summary.cycles = [r]
            try save(summary)
            job.progress("measure", 1, 1, metrics: metrics(r))
        } else if summary.cycles.count > 1 {
            let c = try Checkpoint.read(path: cyclePath)
            guard c.metadata[ArtifactMetadata.specDigest] == job.digest, Int(c.metadata[PruneJob.cycleKey] ?? "") == summary.cycles.count - 1 else {
                throw JobError.invalidInput("\(PruneJob.Name.cycle) does not match \(PruneJob.Name.state); use an empty directory")
            }
            trained = c.model
            start = c.ema
            masks = PruneMasks(c.masks)
            done = summary.cycles.count - 1
        }
        let steps = spec.retrain.steps, total = steps * fractions.count
        var cycle = done + 1
        while cycle <= fractions.count {
            let t0 = monotonicSeconds()
            // Each cycle's random draws have their own seed, so a resumed job selects the same weights.
            var cycleRng = Random(seed: spec.seed &+ 0x5EED &+ UInt64(cycle))
            var snapshot: TrainingSnapshot?
            if FileManager.default.fileExists(atPath: job.directory.checkpoint) {
                let s = try Checkpoint.read(path: job.directory.checkpoint)
                if s.metadata[ArtifactMetadata.specDigest] == job.digest, Int(s.metadata[PruneJob.cycleKey] ?? "") == cycle { snapshot = s }
            }
            var removed = PruneStepReport(base: 0, ap: 0)
            if let snapshot {
                masks = PruneMasks(snapshot.masks)
            } else {
                removed = Pruning.prune(&masks, names: names, weights: trained, start: start.isEmpty ? nil : start,
                                        fraction: fractions[cycle - 1], apFraction: apShare(fractions[cycle - 1]),
                                        criterion: spec.method == .random ? .random : .magnitude, scope: spec.scope,
                                        ap: spec.ap.selection, rng: &cycleRng)
            }
            let from = masks.applied(to: rewind ?? trained)
            var curve = snapshot.flatMap { s in s.metadata[PruneJob.curveKey].flatMap { try? JSONDecoder().decode([DNRRecord].self, from: Data($0.utf8)) } } ?? []
            if let snapshot, let r = snapshot.metadata["reflowd.prune_removed"]?.split(separator: ","), r.count == 2 {
                removed = PruneStepReport(base: Int(r[0]) ?? 0, ap: Int(r[1]) ?? 0)
            }
            let trainer = try subject.trainer(start: from, masks: masks, cycle: cycle, restoring: snapshot)
            let every = spec.dnr.every ?? subject.stepsPerEpoch ?? 0
            func checkpoint() throws -> TrainingSnapshot {
                var s = trainer.snapshot()
                s.masks = masks.masks
                s.metadata[PruneJob.cycleKey] = String(cycle)
                s.metadata["reflowd.prune_removed"] = "\(removed.base),\(removed.ap)"
                s.metadata[PruneJob.curveKey] = String(decoding: try JSONEncoder().encode(curve), as: UTF8.self)
                return s
            }
            let last = try train(trainer, done: (cycle - 1) * steps, total: total, what: "retraining in cycle \(cycle)",
                                 snapshot: checkpoint) { step in
                if every > 0 && step % every == 0 && step < steps, let d = DNRRecord(try subject.probe(trainer.evaluationWeights), step: step) {
                    curve.append(d)
                }
            }
            trained = trainer.weights
            let evaluated = trainer.evaluationWeights
            let (d, q) = try measure(evaluated, step: trainer.step)
            let r = record(cycle: cycle, fraction: fractions[cycle - 1], masks: masks, weights: trained, removed: removed,
                           steps: trainer.step, loss: last, dnr: d, curve: curve, quality: q, seconds: monotonicSeconds() - t0)
            // Durable order: the model and the cycle state first, then the record that points at them.
            try subject.write(weights: trained, ema: evaluated, masks: masks, step: trainer.step,
                              extra: outputMetadata(q, [PruneJob.cycleKey: String(cycle), "reflowd.sparsity": String(masks.sparsity)]),
                              to: job.directory.file(subject.outputName))
            try Checkpoint.write(TrainingSnapshot(model: trained, ema: from, step: trainer.step, rng: Random(seed: 0).state,
                                                  metadata: [ArtifactMetadata.specDigest: job.digest, PruneJob.cycleKey: String(cycle)],
                                                  masks: masks.masks), to: cyclePath)
            summary.cycles.append(r)
            try save(summary)
            try? FileManager.default.removeItem(atPath: job.directory.checkpoint)
            try? FileManager.default.removeItem(atPath: job.directory.checkpoint + ".sha256")
            job.progress("retrain", cycle * steps, total, loss: last, metrics: metrics(r))
            start = from
            cycle += 1
        }
        if fractions.isEmpty {
            // Nothing to prune (sparsity 0 on an iterative schedule): the dense model is the output.
            try subject.write(weights: dense, ema: [:], masks: masks, step: 0, extra: [:], to: job.directory.file(subject.outputName))
        }
    }

    /// Trains `trainer` to `retrain.steps`: progress reports (`done` + step of `total`) with the
    /// mean loss every `logEvery` steps, `afterStep` after each step, and `snapshot()` (stamped
    /// with the spec's digest) written as `checkpoint.safetensors` every `checkpointEvery` steps
    /// and on a stop request. Returns the last logged mean loss.
    func train(_ trainer: any PruneTrainer, done: Int, total: Int, what: String, snapshot: () throws -> TrainingSnapshot,
               afterStep: (Int) throws -> Void) throws -> Double? {
        let steps = spec.retrain.steps
        func checkpoint() throws {
            var s = try snapshot()
            s.metadata[ArtifactMetadata.specDigest] = job.digest
            try Checkpoint.write(s, to: job.directory.checkpoint)
        }
        var window = 0.0, count = 0, last: Double?
        job.progress("retrain", done + trainer.step, total)
        while trainer.step < steps {
            if job.context.shouldStop() {
                try checkpoint()
                throw JobError.interrupted
            }
            let loss = Double(trainer.trainStep())
            guard loss.isFinite else {
                throw JobError.diverged("\(what) diverged: the loss is \(loss) at step \(trainer.step) (lower retrain.learningRate)")
            }
            window += loss
            count += 1
            let step = trainer.step
            try afterStep(step)
            if step % spec.retrain.logEvery == 0 || step == steps {
                last = window / Double(count)
                window = 0
                count = 0
                job.progress("retrain", done + step, total, loss: last)
            }
            if spec.retrain.checkpointEvery > 0 && step % spec.retrain.checkpointEvery == 0 && step < steps { try checkpoint() }
        }
        return last
    }

    /// Metadata of a written pruned model: `extra`, and a classifier's held-out accuracy (the
    /// dense model's would be stale).
    func outputMetadata(_ quality: [String: Double], _ extra: [String: String]) -> [String: String] {
        var m = extra
        if let a = quality["testAccuracy"] { m[ClassifierArtifact.testAccuracyKey] = String(a) }
        return m
    }

    /// AP's share of a cycle that removes `fraction`: `ap.rate`, scaled down with a last cycle
    /// that removes less than `rate` (so AP keeps its proportion, 2 of every 20 pruned).
    func apShare(_ fraction: Double) -> Double {
        guard spec.ap.enabled else { return 0 }
        return spec.ap.rate * min(1, fraction / spec.rate)
    }

    // MARK: structured

    func structured(_ summary: inout PruneSummary, names: [String]) throws {
        let links = subject.links
        let chosen = spec.prunable.layers.map(Set.init)
        let outcome = StructuredPruning.prune(weights: dense, links: links, layers: chosen, fraction: spec.sparsity, activation: subject.activation)
        var unitsBefore = [String: Int](), unitsAfter = [String: Int]()
        for l in links where outcome.kept[l.layer] != nil {
            unitsBefore[l.layer] = dense[l.layer + ".weight"]?.shape[0] ?? 0
            unitsAfter[l.layer] = outcome.kept[l.layer]!.count
        }
        let small = subject.resized(unitsAfter)
        let rows = spec.evaluation.timingRows, repeats = spec.evaluation.timingRepeats
        let before = dense.values.reduce(0) { $0 + $1.count }
        if summary.cycles.isEmpty {
            job.progress("measure", 0, 2)
            let t0 = monotonicSeconds()
            let (d, q) = try measure(denseEvaluation, step: 0)
            let masks = PruneMasks(dense: names, weights: dense)
            summary.cycles = [record(cycle: 0, fraction: 0, masks: masks, weights: dense, removed: .init(base: 0, ap: 0), steps: 0,
                                     loss: nil, dnr: d, curve: [], quality: q, seconds: monotonicSeconds() - t0)]
            try save(summary)
            job.progress("measure", 1, 2, metrics: metrics(summary.cycles[0]))
        }
        let t0 = monotonicSeconds()
        var snapshot: TrainingSnapshot?
        if FileManager.default.fileExists(atPath: job.directory.checkpoint) {
            let s = try Checkpoint.read(path: job.directory.checkpoint)
            if s.metadata[ArtifactMetadata.specDigest] == job.digest { snapshot = s }
        }
        let trainer = try small.trainer(start: outcome.weights, masks: PruneMasks(), cycle: 1, restoring: snapshot)
        let steps = spec.retrain.steps
        let last = try train(trainer, done: 0, total: steps, what: "fine-tuning", snapshot: { trainer.snapshot() }) { _ in }
        let weights = trainer.weights, evaluated = trainer.evaluationWeights
        let (d, q) = try measure(evaluated, step: trainer.step, on: small)
        let after = weights.values.reduce(0) { $0 + $1.count }
        try job.checkStop()
        let denseSeconds = try subject.inferenceSeconds(denseEvaluation, rows: rows, repeats: repeats)
        let prunedSeconds = try small.inferenceSeconds(weights, rows: rows, repeats: repeats)
        var r = record(cycle: 1, fraction: spec.sparsity, masks: PruneMasks(), weights: weights, removed: .init(base: before - after, ap: 0),
                       steps: trainer.step, loss: last, dnr: d, curve: [], quality: q, seconds: monotonicSeconds() - t0)
        r.sparsity = 1 - Double(after) / Double(max(1, before))
        r.remainingPrunable = after
        try small.write(weights: weights, ema: evaluated, masks: PruneMasks(), step: trainer.step,
                        extra: outputMetadata(q, ["reflowd.sparsity": String(r.sparsity)]), to: job.directory.file(subject.outputName))
        let modelJSON: ResultValue = (try? JSONDecoder().decode(ResultValue.self, from: Data(small.description.utf8))) ?? .string(small.description)
        summary.structured = StructuredSummary(
            unitsBefore: unitsBefore, unitsAfter: unitsAfter, parametersBefore: before, parametersAfter: after,
            denseSeconds: denseSeconds, prunedSeconds: prunedSeconds, speedup: prunedSeconds > 0 ? denseSeconds / prunedSeconds : 0,
            timingRows: rows, model: modelJSON)
        summary.cycles.append(r)
        try? FileManager.default.removeItem(atPath: job.directory.checkpoint)
        try? FileManager.default.removeItem(atPath: job.directory.checkpoint + ".sha256")
        job.progress("retrain", steps, steps, loss: last, metrics: metrics(r))
    }

    // MARK: outputs

    /// `pruning.csv`: one row per cycle.
    func table(_ s: PruneSummary) -> String {
        let layers = Array(Set(s.cycles.flatMap { $0.dnr.map { Array($0.layers.keys) } ?? [] })).sorted()
        let qualities = Array(Set(s.cycles.flatMap { Array($0.quality.keys) })).sorted()
        var out = (["cycle", "fraction", "sparsity", "remaining_prunable", "nonzero_parameters", "removed_base", "removed_ap",
                    "train_steps", "final_loss", "dnr"] + layers.map { "dnr." + $0 } + qualities).joined(separator: ",") + "\n"
        for r in s.cycles {
            var f = ["\(r.cycle)", "\(r.fraction)", "\(r.sparsity)", "\(r.remainingPrunable)", "\(r.nonzeroParameters)",
                     "\(r.removedBase)", "\(r.removedAP)", "\(r.trainSteps)", r.finalLoss.map { "\($0)" } ?? "",
                     r.dnr.map { "\($0.overall)" } ?? ""]
            f += layers.map { l in r.dnr?.layers[l].map { "\($0)" } ?? "" }
            f += qualities.map { k in r.quality[k].map { "\($0)" } ?? "" }
            out += f.joined(separator: ",") + "\n"
        }
        return out
    }

    /// `dnr.png`: DNR against training progress (x: cycles, each cycle's measurements spread
    /// over it), overall in black, layers in colours, with axis labels and a legend.
    static func plot(_ s: PruneSummary, title: String) throws -> [UInt8] {
        let layers = Array(Set(s.cycles.flatMap { $0.dnr.map { Array($0.layers.keys) } ?? [] })).sorted()
        let palette: [Canvas.Color] = [.blue, .orange, .green, .red, Canvas.Color(148, 103, 189), Canvas.Color(140, 86, 75),
                                       Canvas.Color(227, 119, 194), Canvas.Color(188, 189, 34), Canvas.Color(23, 190, 207)]
        // (x, record) points: cycle c's curve at c − 1 + step/steps, its end at c.
        var points = [(Float, DNRRecord)]()
        for r in s.cycles {
            for d in r.dnrCurve where r.trainSteps > 0 { points.append((Float(r.cycle - 1) + Float(d.step) / Float(r.trainSteps), d)) }
            if let d = r.dnr { points.append((Float(r.cycle), d)) }
        }
        let xMax = Float(max(1, s.cycles.last?.cycle ?? 1))
        // The data window leaves margins for the labels: left for the y axis, below for the
        // cycle numbers, above for the title, right for the legend.
        var c = Canvas(width: 760, height: 420, window: (xMin: -0.1 * xMax, xMax: 1.45 * xMax, yMin: -0.14, yMax: 1.12))
        c.line(from: (0, 0), to: (xMax, 0), color: .gray, alpha: 0.8)
        c.line(from: (0, 0), to: (0, 1), color: .gray, alpha: 0.8)
        for v in [Float(0.25), 0.5, 0.75, 1] { c.line(from: (0, v), to: (xMax, v), color: .gray, alpha: 0.2) }
        for v in [Float(0), 0.5, 1] {
            let (px, py) = c.pixel(0, v)
            c.text(v == 0.5 ? "0.5" : String(Int(v)), x: px - 30, y: py - 5, color: .black)
        }
        let step = max(1, Int((xMax / 15).rounded(.up)))
        for k in stride(from: 0, through: Int(xMax), by: step) {
            c.line(from: (Float(k), 0), to: (Float(k), -0.02), color: .gray, alpha: 0.8)
            let (px, py) = c.pixel(Float(k), 0)
            c.text(String(k), x: px - 3, y: py + 10, color: .black)
        }
        let (ox, oy) = c.pixel(xMax / 2, -0.1)
        c.text("CYCLE", x: ox - 20, y: oy, color: .black)
        let (tx, ty) = c.pixel(0, 1.1)
        c.text("DEAD-NEURON RATE (DNR) AFTER EACH CYCLE", x: tx, y: ty, color: .black)
        for (li, l) in layers.enumerated() {
            let pts = points.compactMap { p in p.1.layers[l].map { (p.0, Float($0)) } }
            for i in 1..<max(1, pts.count) { c.line(from: pts[i - 1], to: pts[i], color: palette[li % palette.count], alpha: 0.8) }
            c.scatter(pts.flatMap { [$0.0, $0.1] }, color: palette[li % palette.count], alpha: 0.9, radius: 1)
        }
        let overall = points.map { ($0.0, Float($0.1.overall)) }
        for i in 1..<max(1, overall.count) { c.line(from: overall[i - 1], to: overall[i], color: .black, alpha: 1) }
        c.scatter(overall.flatMap { [$0.0, $0.1] }, color: .black, alpha: 1, radius: 2)
        let (lx, ly) = c.pixel(1.05 * xMax, 1)
        for (i, name) in (["overall"] + layers).enumerated() {
            let color = i == 0 ? Canvas.Color.black : palette[(i - 1) % palette.count]
            for dy in 0..<8 { for dx in 0..<8 { c.blend(lx + dx, ly + 16 * i + dy, color, alpha: 1) } }
            c.text(String(name.prefix(18)), x: lx + 14, y: ly + 16 * i - 1, color: .black)
        }
        let legend = ["overall: black"] + layers.enumerated().map { "\($0.element): colour \($0.offset % palette.count)" }
        let sparsities = s.cycles.map { String(format: "%d:%.3f", $0.cycle, $0.sparsity) }.joined(separator: " ")
        let text: [(String, String)] = [
            ("reflowd.plot", "dead-neuron rate (y, 0 to 1) against cycles (x; measurements within a cycle spread over it)"),
            ("reflowd.legend", legend.joined(separator: "; ")),
            ("reflowd.palette", "blue, orange, green, red, purple, brown, pink, olive, cyan"),
            ("reflowd.sparsity", sparsities),
            ("reflowd.model", String(title.prefix(1000))),
        ]
        return try PNG.encodeRGB(width: c.width, height: c.height, pixels: c.pixels, text: text)
    }
}

extension JobResult {
    /// The pruning section of a prune job.
    public var pruning: PruneSummary? { section("pruning", as: PruneSummary.self) }
}
