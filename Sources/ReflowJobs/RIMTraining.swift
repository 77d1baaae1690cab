public import ReflowNN
public import ReflowFlow
public import ReflowMRI
import ReflowEngine
import ReflowStore
import Foundation

// `train` on a `rim` model (issue #14): the RIM has its own trainer (``RIMTrainer``) and its own
// data (magnitude images made into simulated acquisitions), but the job kind, the directory, the
// checkpoint/resume loop and the loss log are the train job's.

/// Where a RIM's training (or a reconstruct job's test) images come from:
/// `{"kind": "phantoms", "height": 32, "width": 32}`,
/// `{"kind": "images", "dataset": "fashion-mnist", "split": "train"}` (one-channel images),
/// `{"kind": "mixed", "parts": [<source>, <source>]}` (each draw picks a part uniformly; the parts
/// must have one size).
public indirect enum MRIDataSource: Codable, Sendable, Equatable, Validatable {
    case phantoms(height: Int, width: Int)
    case images(ImageDataRef)
    case mixed([MRIDataSource])

    public static let maxSide = 256

    enum Key: String, CodingKey { case kind, height, width, parts, dataset, split, limit }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: Key.self)
        let kind = try c.decode(String.self, forKey: .kind)
        func only(_ allowed: [Key]) throws {
            for k in c.allKeys where k != .kind && !allowed.contains(k) {
                throw DecodingError.dataCorruptedError(forKey: k, in: c, debugDescription: "unknown key \"\(k.stringValue)\" for kind \"\(kind)\" (allowed: \(allowed.map(\.rawValue).joined(separator: ", ")))")
            }
        }
        switch kind {
        case "phantoms":
            try only([.height, .width])
            self = .phantoms(height: try c.decodeIfPresent(Int.self, forKey: .height) ?? 32,
                             width: try c.decodeIfPresent(Int.self, forKey: .width) ?? 32)
        case "images":
            try only([.dataset, .split, .limit])
            self = .images(try ImageDataRef(from: decoder))
        case "mixed":
            try only([.parts])
            self = .mixed(try c.decode([MRIDataSource].self, forKey: .parts))
        default:
            throw DecodingError.dataCorruptedError(forKey: .kind, in: c, debugDescription: "unknown MRI data kind \"\(kind.prefix(40))\" (one of phantoms, images, mixed)")
        }
    }

    public func encode(to encoder: any Encoder) throws {
        switch self {
        case .phantoms(let h, let w):
            var c = encoder.container(keyedBy: Key.self)
            try c.encode("phantoms", forKey: .kind)
            try c.encode(h, forKey: .height)
            try c.encode(w, forKey: .width)
        case .images(let ref):
            try ref.encode(to: encoder)
            var c = encoder.container(keyedBy: Key.self)
            try c.encode("images", forKey: .kind)
        case .mixed(let parts):
            var c = encoder.container(keyedBy: Key.self)
            try c.encode("mixed", forKey: .kind)
            try c.encode(parts, forKey: .parts)
        }
    }

    public func validationError() -> FieldError? {
        switch self {
        case .phantoms(let h, let w):
            if !(8...Self.maxSide).contains(h) { return ("/height", "must be in [8, \(Self.maxSide)], got \(h)") }
            if !(8...Self.maxSide).contains(w) { return ("/width", "must be in [8, \(Self.maxSide)], got \(w)") }
            return nil
        case .images(let ref): return ref.validationError()
        case .mixed(let parts):
            if !(1...8).contains(parts.count) { return ("/parts", "must hold 1 to 8 sources, got \(parts.count)") }
            for (i, p) in parts.enumerated() {
                if let e = p.validationError() { return ("/parts/\(i)" + e.pointer, e.message) }
            }
            return nil
        }
    }

    /// The image size [H, W] after checking datasets (one channel, resolvable) and that mixed
    /// parts agree; errors carry `pointer`.
    func size(pointer: String, resolver: any ArtifactResolver) throws(SpecError) -> (height: Int, width: Int) {
        switch self {
        case .phantoms(let h, let w): return (h, w)
        case .images(let ref):
            let info = try ImageSplits.describe(ref, pointer: pointer, resolver: resolver)
            guard let s = info.shape else {
                throw SpecError(pointer: pointer, message: "dataset '\(ref.dataset)' does not state its image size (PNG folders need a manifest)")
            }
            guard s[0] == 1 else {
                throw SpecError(pointer: pointer, message: "dataset '\(ref.dataset)' holds \(s[0])-channel images; MRI magnitude images have one channel")
            }
            guard (8...Self.maxSide).contains(s[1]) && (8...Self.maxSide).contains(s[2]) else {
                throw SpecError(pointer: pointer, message: "dataset '\(ref.dataset)' holds \(s[1])×\(s[2]) images; MRI images must be 8 to \(Self.maxSide) pixels a side")
            }
            return (s[1], s[2])
        case .mixed(let parts):
            var first: (height: Int, width: Int)?
            for (i, p) in parts.enumerated() {
                let s = try p.size(pointer: pointer + "/parts/\(i)", resolver: resolver)
                if let f = first, f != s {
                    throw SpecError(pointer: pointer + "/parts/\(i)", message: "is \(s.height)×\(s.width), part 0 is \(f.height)×\(f.width)")
                }
                first = first ?? s
            }
            return first!
        }
    }

    /// Bytes of the dataset splits held in memory (with a transient copy while loading).
    func bytes(resolver: any ArtifactResolver) -> Int {
        switch self {
        case .phantoms: return 0
        case .images(let ref): return 2 * ((try? ImageSplits.describe(ref, pointer: "", resolver: resolver).bytes) ?? 0)
        case .mixed(let parts): return parts.reduce(0) { ResourceEstimate.add($0, $1.bytes(resolver: resolver)) }
        }
    }

    /// The images (datasets loaded through `locate`).
    func load(locate: (String) throws -> DatasetLocation) throws -> MRIImages {
        switch self {
        case .phantoms(let h, let w): return .phantoms(height: h, width: w)
        case .images(let ref):
            do { return .dataset(try ref.load(locate: locate)) } catch let e as ImageDataError { throw JobError.invalidInput("data: \(e)") }
        case .mixed(let parts): return .mixed(try parts.map { try $0.load(locate: locate) })
        }
    }
}

/// The input of a `train` job on a `rim` model (flat, like a flow's):
/// `{"model": {"kind": "rim", "cell": "indrnn"}, "data": {"kind": "phantoms"},
///   "acquisition": {"mask": {"kind": "gaussian2D", "acceleration": 4}}, "steps": 2000}`.
public struct RIMTrainSpec: Codable, Sendable, Equatable, Validatable, DefaultDecodable {
    public var model = RIMConfig()
    public var data: MRIDataSource = .phantoms(height: 32, width: 32)
    /// How each training image is acquired; without a mask seed every image gets a fresh mask.
    public var acquisition = Acquisition()
    public var batchSize = 8
    public var learningRate: Float = 1e-3
    public var optimizer: OptimizerKind = .adam()
    public var schedule: LRSchedule = .constant
    /// Compared on every intermediate estimate (mridc's default: L1).
    public var loss: Loss = .l1
    public var seed: UInt64 = 0
    public var steps = 2000
    public var checkpointEvery = 500
    public var logEvery = 50
    /// Fresh simulated images (a seed of their own) reconstructed after training for the result's check.
    public var checkImages = 32

    public init() {}

    public func validationError() -> FieldError? {
        func sub(_ p: String, _ e: FieldError?) -> FieldError? { e.map { (p + $0.pointer, $0.message) } }
        return Validation.first(
            { sub("/model", model.validationError()) },
            { sub("/data", data.validationError()) },
            { sub("/acquisition", acquisition.validationError()) },
            { Validation.range("/batchSize", batchSize, 1, 4096) },
            { learningRate > 0 && learningRate.isFinite && learningRate < 1 ? nil : ("/learningRate", "must be in (0, 1), got \(learningRate)") },
            { sub("/optimizer", optimizer.validationError()) },
            { loss.validationError().map { ("/loss", $0) } },
            { schedule.validationError().map { ("/schedule", $0) } },
            { Validation.range("/steps", steps, 1, LoopSpec.maxSteps) },
            { checkpointEvery >= 0 ? nil : ("/checkpointEvery", "must be ≥ 0 (0 = only at the end), got \(checkpointEvery)") },
            { logEvery >= 1 ? nil : ("/logEvery", "must be ≥ 1, got \(logEvery)") },
            { Validation.range("/checkImages", checkImages, 0, 1000) })
    }

    var loop: LoopSpec {
        var l = LoopSpec()
        l.steps = steps
        l.checkpointEvery = checkpointEvery
        l.logEvery = logEvery
        l.previewPoints = 0
        return l
    }

    /// Whether a user's `train` input names a RIM model.
    static func isRIM(_ user: Any) -> Bool {
        ((user as? [String: Any])?["model"] as? [String: Any])?["kind"] as? String == RIMConfig.kind
    }

    func prepare(resolver: any ArtifactResolver) throws(SpecError) -> RIMTrainSpec {
        let (h, w) = try data.size(pointer: "/input/data", resolver: resolver)
        if let e = acquisition.mask.problem(height: h, width: w) {
            throw SpecError(pointer: "/input/acquisition/mask" + e.pointer, message: e.message + " (for \(h)×\(w) images)")
        }
        return self
    }

    func estimate(resolver: any ArtifactResolver, threads: Int) throws(SpecError) -> ResourceEstimate {
        let (h, w) = try data.size(pointer: "/input/data", resolver: resolver)
        var e = ResourceEstimate()
        e.add("parameters, gradients, optimizer state and checkpoint copies", floats: model.parameterCount, 10 + threads)
        e.add("activations and their gradients", floats: batchSize, h * w, model.activationFloatsPerPixel, 2)
        e.add("simulated batch (references, k-space, masks, scaled copies)", floats: batchSize, h * w, 12)
        e.add("image datasets", bytes: data.bytes(resolver: resolver))
        if checkImages > 0 {
            // The check after training: up to `threads` inference graphs of 16 images each.
            let perGraph = min(RIMNetwork.inferenceChunk, checkImages)
            let graphs = min(threads, (checkImages + perGraph - 1) / perGraph)
            e.add("check inference graphs", floats: graphs, perGraph, h * w, model.inferenceFloatsPerPixel, 2)
            e.add("check images (references, k-space, reconstructions)", floats: checkImages, h * w, 16)
        }
        return e
    }

    func run(job: JobExecution) throws -> JobResult.Sections {
        let images = try data.load(locate: { try job.locateDataset($0, what: "data") })
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys]
        let meta = [RIMConfig.metadataKey: String(decoding: model.canonicalJSON, as: UTF8.self),
                    ArtifactMetadata.trainingConfig: String(decoding: try e.encode(self), as: UTF8.self),
                    ArtifactMetadata.jobType: job.kindName, ArtifactMetadata.specDigest: job.digest]
        let schedule = self.schedule
        let summary = try job.trainLoop(metadata: meta, loop, phase: "train", divergenceHint: "lower learningRate", parameters: model.parameterCount,
                                        macsPerSample: model.macsPerPixelStep * images.height * images.width * model.steps * model.cascades) { snapshot in
            let t = try RIMTrainer(model, images: images, acquisition: acquisition, batchSize: batchSize, learningRate: learningRate,
                                   schedule: schedule, optimizer: optimizer, loss: loss, seed: seed, threads: job.threads)
            if let snapshot { try t.restore(snapshot) }
            return t
        }
        var sections: JobResult.Sections = ["training": try ResultValue(encoding: summary)]
        if checkImages > 0 {
            job.progress("check", 0, 1)
            let weights = try Checkpoint.read(path: job.directory.model).model
            let net = try RIMNetwork(model, stateDict: weights)
            var rng = Random(seed: seed ^ 0x4348_4543_4B21_2121)
            var problems = [MRIProblem]()
            var checkAcquisition = acquisition
            checkAcquisition.mask.seed = checkAcquisition.mask.seed ?? (rng.next() >> 33)
            for _ in 0..<checkImages {
                problems.append(try checkAcquisition.simulate(images.draw(rng: &rng), height: images.height, width: images.width, rng: &rng))
            }
            let start = monotonicSeconds()
            let out = net.reconstruct(problems, threads: job.threads)
            let seconds = monotonicSeconds() - start
            let check = RIMCheck(images: checkImages, maskSeed: checkAcquisition.mask.seed!,
                                 zeroFilled: .mean(problems.map { ReconstructionMetrics.measure($0.zeroFilled, reference: $0.reference!) }),
                                 rim: .mean(zip(out, problems).map { ReconstructionMetrics.measure($0, reference: $1.reference!) }),
                                 secondsPerImage: seconds / Double(checkImages))
            sections["check"] = try ResultValue(encoding: check)
            job.progress("check", 1, 1)
        }
        return sections
    }
}

/// A RIM's quick check after training: fresh simulated images from the training source (drawn
/// with a seed of their own, one mask for all) — not held-out data, a sanity figure.
public struct RIMCheck: Codable, Sendable, Equatable {
    public var images: Int
    public var maskSeed: UInt64
    public var zeroFilled: MeanMetrics
    public var rim: MeanMetrics
    public var secondsPerImage: Double
}

/// Means of ``ReconstructionMetrics`` over images (SSIM over the images that have one).
public struct MeanMetrics: Codable, Sendable, Equatable {
    public var ssim: Double?
    public var psnr: Double
    public var nmse: Double

    public static func mean(_ rows: [ReconstructionMetrics]) -> MeanMetrics {
        let s = rows.compactMap(\.ssim)
        let n = Double(max(1, rows.count))
        return MeanMetrics(ssim: s.isEmpty ? nil : s.reduce(0, +) / Double(s.count),
                           psnr: rows.reduce(0) { $0 + $1.psnr } / n, nmse: rows.reduce(0) { $0 + $1.nmse } / n)
    }
}
