import ReflowEngine
public import ReflowNN
public import ReflowFlow
import Foundation

/// `edit`: RF-Edit (Wang et al., "Taming Rectified Flow for Inversion and Editing", ICML 2025,
/// arXiv:2411.04746) on a class-conditional image model. Each image is inverted to noise under
/// its source label, then denoised under the target label with classifier-free guidance; during
/// the last `inject` inversion steps the features of `sites` (self-attention values V by default)
/// are cached for every solver evaluation, and the first `inject` denoising steps use them in
/// place of their own (Q and K, and everything else, come from the current pass).
public struct EditSpec: JobInput {
    public var model: ArtifactRef = .job(id: "missing", artifact: nil)
    public var useEMA = true
    /// The images to edit (PNGs or dataset items).
    public var images: ImageInput = .png([])
    /// The label each image is inverted under (default: the dataset's labels; PNGs without
    /// labels invert under the null label).
    @Explicit public var sourceLabels: [Int]? = nil
    /// The label to edit towards: one for every image, or one per image.
    public var targetLabels: [Int] = []
    /// Classifier-free guidance of the denoising (null: the conditional velocity).
    @Explicit public var guidance: Float? = 2
    /// Guidance of the inversion (null: the conditional velocity under the source label, as
    /// RF-Edit inverts with guidance 1).
    @Explicit public var inversionGuidance: Float? = nil
    /// A fixed-step flow solver (RF-Solver-2 by default, as the paper).
    public var solver: ODEMethod = .rfSolver2(steps: 25)
    /// k: the denoising steps that use the inversion's features (0: a plain invert-then-sample).
    public var inject = 5
    /// The shared feature sites (`GET`-able from the error of an unknown name); null: every
    /// self-attention block of the model.
    @Explicit public var sites: [String]? = nil
    /// Feature caches above this many MiB live in a file in the job's directory (mapped, so
    /// the kernel keeps only the pages in use resident) instead of in memory.
    public var featureMemoryMB = 256
    /// A classify job's classifier: reports the edit success (its probability of the target
    /// label) and the source's own score.
    @Explicit public var classifier: ArtifactRef? = nil
    public var format: PointFormat = .npy

    public init() {}
    public static var requiredKeys: [String] { ["model", "images", "targetLabels"] }

    public func validationError() -> FieldError? {
        Validation.first(
            { Validation.member("/model", model) },
            { Validation.member("/images", images) },
            {
                guard let l = sourceLabels else { return nil }
                if l.count != images.count { return ("/sourceLabels", "has \(l.count) labels for \(images.count) images") }
                return l.firstIndex { $0 < 0 }.map { ("/sourceLabels/\($0)", "must be a class index ≥ 0, got \(l[$0])") }
            },
            {
                if targetLabels.count != 1 && targetLabels.count != images.count {
                    return ("/targetLabels", "must hold one label (for every image) or one per image (\(images.count)), got \(targetLabels.count)")
                }
                return targetLabels.firstIndex { $0 < 0 }.map { ("/targetLabels/\($0)", "must be a class index ≥ 0, got \(targetLabels[$0])") }
            },
            { Conditioning.validationError(labels: nil, perClass: nil, guidance: guidance, maxPoints: 1) },
            {
                Conditioning.validationError(labels: nil, perClass: nil, guidance: inversionGuidance, maxPoints: 1)
                    .map { ("/inversionGuidance", $0.message) }
            },
            { solver.validationPointer().map { ("/solver" + $0.pointer, $0.message) } },
            {
                switch solver {
                case .euler, .heun, .midpoint, .rk4, .rfSolver2: return nil
                default: return ("/solver/kind", "an edit pairs inversion and denoising steps: use euler, heun, midpoint, rk4 or rfSolver2")
                }
            },
            { Validation.range("/inject", inject, 0, solver.steps ?? 0) },
            {
                guard let sites else { return nil }
                if sites.isEmpty || sites.count > 256 { return ("/sites", "must name 1 to 256 feature sites") }
                return sites.firstIndex { $0.isEmpty || $0.utf8.count > 100 }.map { ("/sites/\($0)", "must be a site name") }
            },
            { Validation.range("/featureMemoryMB", featureMemoryMB, 0, 1 << 20) },
            { Validation.member("/classifier", classifier) })
    }

    /// The target label of image i.
    func target(_ i: Int) -> Int { targetLabels.count == 1 ? targetLabels[0] : targetLabels[i] }
}

public enum EditJob: JobKind {
    public static let name = "edit"
    public static let summary = "Edit images toward another class: invert, then denoise under the target label, sharing attention features (RF-Edit)."
    public static let phases = ["invert", "edit"]
    public static let outputs = [
        JobOutput("edited.npy", "the edited images, [n, C·H·W] float32 in [−1, 1] (format npy)"),
        JobOutput("edited.csv", "the edited images as CSV (format csv)"),
        JobOutput("edited.png", "an 8-column grid of the edited images"),
        JobOutput("edit.png", "rows of 8: the sources, their edits, and |edit − source| (white = 2)"),
    ]

    /// Largest feature cache an edit may keep (memory plus disk).
    public static let maxCacheBytes = 64 << 30

    /// The sites an edit shares: the named ones, or every attention block of the model.
    static func sites(_ s: EditSpec, model: ModelSpec) throws(SpecError) -> [FeatureSite] {
        let all = model.featureSites
        guard let names = s.sites else {
            let attention = all.filter { $0.kind == .attentionValue }
            if all.isEmpty && s.inject > 0 {
                throw SpecError(pointer: "/input/inject", message: "this model offers no features to share; use inject 0")
            }
            if attention.isEmpty && s.inject > 0 {
                throw SpecError(pointer: "/input/sites", message: "the model has no self-attention; name hidden activations to share (one of \(all.map(\.name).joined(separator: ", ")))")
            }
            return attention
        }
        var out = [FeatureSite]()
        for (i, n) in names.enumerated() {
            guard let site = all.first(where: { $0.name == n }) else {
                throw SpecError(pointer: "/input/sites/\(i)", message: "\"\(n)\" is not a feature site of this model (\(all.map(\.name).joined(separator: ", ")))")
            }
            if out.contains(site) { throw SpecError(pointer: "/input/sites/\(i)", message: "\"\(n)\" is listed twice") }
            out.append(site)
        }
        return out
    }

    public static func prepare(_ input: EditSpec, resolver: any ArtifactResolver) throws(SpecError) -> EditSpec {
        var s = input
        let m = try StudentTraining.model("/input/model", s.model, resolver: resolver)
        guard let k = m.model.classes else {
            throw SpecError(pointer: "/input/model", message: "an edit changes the class: it needs a class-conditional model (its spec has no classes)")
        }
        if m.training.interpolant.diffusion != nil {
            throw SpecError(pointer: "/input/model", message: "an edit pairs the steps of a rectified flow's solver; this is a VP diffusion model")
        }
        for (key, l) in [("sourceLabels", s.sourceLabels ?? []), ("targetLabels", s.targetLabels)] {
            if let i = l.firstIndex(where: { $0 >= k }) {
                throw SpecError(pointer: "/input/\(key)/\(i)", message: "class \(l[i]) is out of range: the model has \(k) classes (0…\(k - 1))")
            }
        }
        try s.images.check(shape: m.model.pointShape, classes: k, labelsGiven: s.sourceLabels != nil, labelsKey: "sourceLabels",
                           pointer: "/input/images", resolver: resolver)
        let names = try sites(s, model: m.model).map(\.name)
        s.sites = names.isEmpty ? nil : names
        let bytes = cacheBytes(s, model: m.model)
        if bytes > EditJob.maxCacheBytes {
            throw SpecError(pointer: "/input/inject", message: "the shared features would take \(bytes == Int.max ? "more than 2^63" : String(bytes >> 30)) GiB (limit \(EditJob.maxCacheBytes >> 30) GiB, on disk); lower inject, the number of images or the sites")
        }
        if let ref = s.classifier {
            let art: ClassifierArtifact
            do { art = try ClassifierArtifact.read(path: try resolver.path(for: ref, kind: .classifier)) } catch let e as SpecError {
                throw SpecError(pointer: "/input/classifier" + e.pointer, message: e.message)
            } catch {
                throw SpecError(pointer: "/input/classifier", message: "cannot use this classifier: \(error)")
            }
            guard art.config.imageShape == m.model.pointShape else {
                throw SpecError(pointer: "/input/classifier", message: "classifies \(art.config.imageShape ?? []) images, the model makes \(m.model.pointShape)")
            }
            guard let c = art.config.classes, c >= k else {
                throw SpecError(pointer: "/input/classifier", message: "tells \(art.config.classes ?? 0) classes apart, the model has \(k)")
            }
        }
        return s
    }

    /// Bytes of the feature cache of a prepared spec.
    static func cacheBytes(_ s: EditSpec, model: ModelSpec) -> Int {
        guard s.inject > 0, let e = s.solver.evaluationsPerStep, let sites = try? sites(s, model: model) else { return 0 }
        return FeatureCache.bytes(sites: sites, steps: s.inject, evaluations: e, rows: s.images.count) ?? Int.max
    }

    public static func estimate(_ s: EditSpec, resolver: any ArtifactResolver, threads: Int) throws(SpecError) -> ResourceEstimate {
        let m = try StudentTraining.model("/input/model", s.model, resolver: resolver).model
        let n = s.images.count
        var e = pointsEstimate(m, n: n, copies: 8, solver: s.solver, blockRows: JobExecution.blockRows(m, n: n, threads: threads),
                               threads: threads, trajectoryRows: 0, guided: true)
        let cache = cacheBytes(s, model: m)
        if cache <= ResourceEstimate.multiply(s.featureMemoryMB, 1 << 20) {
            e.add("shared features (in memory)", bytes: cache)
        } else {
            // Mapped from a file: pages are written back and dropped under pressure; count the
            // features of one (interval, evaluation) slot as the working set.
            e.add("shared features (on disk; one step resident)", bytes: cache / max(1, s.inject * (s.solver.evaluationsPerStep ?? 1)))
        }
        if case .dataset(let ref, _) = s.images, let bytes = try? ImageSplits.describe(ref, pointer: "", resolver: resolver).bytes {
            e.add("dataset split (images, loaded whole)", bytes: ResourceEstimate.multiply(bytes, 2))
        }
        if let ref = s.classifier, let p = try? resolver.path(for: ref, kind: .classifier), let a = try? ClassifierArtifact.read(path: p) {
            e.add("classifier weights and blocks", floats: ResourceEstimate.add(a.config.parameterCount, ResourceEstimate.multiply(threads * 256, a.config.activationFloatsPerRow)))
        }
        return e
    }

    public static func run(_ s: EditSpec, job: JobExecution) throws -> JobResult.Sections {
        let m = try job.model(s.model)
        let weights = m.weights(useEMA: s.useEMA)
        let shape = m.model.pointShape
        let loaded = try s.images.load(shape: shape, job: job)
        let x = loaded.x, n = x.shape[0]
        let source = try s.sourceLabels.map { $0.map(Int32.init) }
            ?? ImageInput.conditioningLabels(loaded.labels, classes: m.model.classes, field: "sourceLabels")
        let target = (0..<n).map { Int32(s.target($0)) }
        let blockRows = job.blockRows(m.model, n: n)

        // The feature cache (in memory, or a mapped file in the job's directory when it exceeds
        // the budget; the file name is a temporary's, so a killed job's copy is swept at start).
        var sharing: (record: FeatureSharing, inject: FeatureSharing)?
        var cacheInfo: EditSummary.Cache?
        if s.inject > 0 {
            let sites = try sites(s, model: m.model)
            let bytes = cacheBytes(s, model: m.model)
            let onDisk = bytes > s.featureMemoryMB << 20
            let file = onDisk ? job.directory.file(".features.tmp-edit") : nil
            if let file { unlink(file) }
            let cache: FeatureCache
            do {
                cache = try FeatureCache(sites: sites, steps: s.inject, evaluations: s.solver.evaluationsPerStep!, rows: n, file: file)
            } catch let e as FeatureCacheError { throw JobError.resourceLimit(e.description) }
            sharing = (FeatureSharing(cache: cache, mode: .record), FeatureSharing(cache: cache, mode: .inject))
            cacheInfo = .init(bytes: bytes, onDisk: onDisk, sites: sites.map(\.name))
        }

        job.progress("invert", 0, n)
        let start = monotonicSeconds()
        let back = try job.solve(m.model, weights, x, s.solver, interpolant: m.training.interpolant, direction: .backward,
                                 blockRows: blockRows, labels: source, guidance: s.inversionGuidance, features: sharing?.record)
        job.progress("invert", n, n)
        try job.checkStop()
        job.progress("edit", 0, n)
        let edited = try job.solve(m.model, weights, back.x, s.solver, interpolant: m.training.interpolant,
                                   blockRows: blockRows, labels: target, guidance: s.guidance, features: sharing?.inject).x
        let seconds = monotonicSeconds() - start
        _ = try job.points(edited, format: s.format, base: "edited")
        let text = [("reflowd.job", "edit"), ("reflowd.solver", s.solver.name), ("reflowd.inject", String(s.inject)),
                    ("reflowd.rows", "source, edited, |edited - source|")]
        var diff = Tensor(shape: x.shape, data: zip(edited.data, x.data).map { abs($0 - $1) - 1 })   // 0 → black, 2 → white
        diff.data = diff.data.map { min(1, $0) }
        try job.write(Figures.imageBands([x, edited, diff], shape: shape, text: text), "edit.png")
        try job.write(Figures.imageGrid(edited, shape: shape, text: text), "edited.png")

        let structure = try ImageFidelity.measure(x, edited, shape: shape, what: "edit")
        var success: EditSummary.Success?
        if let ref = s.classifier {
            let art = try ClassifierArtifact.read(path: job.resolve(ref, kind: .classifier, what: "classifier"))
            let net = try art.network()
            let after = net.evaluate(edited.data, rows: n, threads: job.threads), before = net.evaluate(x.data, rows: n, threads: job.threads)
            success = .init(targetProbability: meanProbability(after, target), targetAccuracy: after.accuracy(target).overall,
                            sourceTargetProbability: meanProbability(before, target),
                            perImage: (0..<n).map { probability(after, row: $0, label: Int(target[$0])) })
        }
        job.progress("edit", n, n)
        let summary = EditSummary(n: n, nfe: back.nfe + s.solver.fixedNFE!, seconds: seconds, inject: s.inject, cache: cacheInfo,
                                  structure: structure, success: success)
        return ["edit": try ResultValue(encoding: summary)]
    }

    /// softmax(logits)[label] of one row.
    static func probability(_ out: ClassifierOutput, row r: Int, label: Int) -> Double {
        let k = out.classes
        let l = out.logits[(r * k)..<((r + 1) * k)].map(Double.init)
        let top = l.max() ?? 0
        let z = l.reduce(0) { $0 + Foundation.exp($1 - top) }
        return Foundation.exp(l[label] - top) / z
    }

    static func meanProbability(_ out: ClassifierOutput, _ labels: [Int32]) -> Double {
        labels.indices.reduce(0) { $0 + probability(out, row: $1, label: Int(labels[$1])) } / Double(max(1, labels.count))
    }
}

/// The result section of an `edit` job.
public struct EditSummary: Codable, Sendable, Equatable {
    public var n: Int
    /// Velocity evaluations per image (inversion plus denoising).
    public var nfe: Int
    public var seconds: Double
    public var inject: Int
    public var cache: Cache?
    /// "Structure preserved": the edits against their sources (MSE, PSNR, SSIM).
    public var structure: ImageFidelity
    /// "Edit success" (with a classifier).
    public var success: Success?

    public struct Cache: Codable, Sendable, Equatable {
        public var bytes: Int
        public var onDisk: Bool
        public var sites: [String]
    }

    public struct Success: Codable, Sendable, Equatable {
        /// Mean classifier probability of the target label on the edits.
        public var targetProbability: Double
        /// Share of edits the classifier assigns to the target label.
        public var targetAccuracy: Double
        /// The same probability on the unedited sources (the baseline).
        public var sourceTargetProbability: Double
        public var perImage: [Double]
    }
}

extension JobResult {
    /// The edit section of an edit job.
    public var edit: EditSummary? { section("edit", as: EditSummary.self) }
}
