import ReflowEngine
import ReflowNN
public import ReflowFlow
import ReflowCodec
import Foundation

// The image branch of the `evaluate` job: metrics on the penultimate features of a classifier
// that a `classify` job trained on the same dataset. The numbers compare reflowd runs with each
// other (same classifier, same n); they are not comparable with published FIDs, which use
// Inception-v3 features of 50,000 samples.

/// Distribution metrics of one generated (or real) set against the real reference, on classifier
/// features.
public struct ImageMetrics: Codable, Sendable, Equatable {
    /// Fréchet distance between Gaussians fitted to the features (FID's formula on reflowd's features).
    public var frechetDistance: Double
    /// KID: unbiased MMD² with the cubic polynomial kernel, mean ± std over subsets.
    public var kid: KernelDistance
    /// Improved precision / recall (k = 3) and density / coverage (k = 5).
    public var precision: Double
    public var recall: Double
    public var density: Double
    public var coverage: Double
}

/// The nearest-training-image check of a generated set (see ``MemorisationReport``), without
/// the per-sample arrays.
public struct MemorisationSummary: Codable, Sendable, Equatable {
    public var quantile: Double
    public var threshold: Double
    /// Fraction of samples closer to a training image than the `quantile` of held-out images are
    /// (≈ quantile for fresh images, → 1 for copies).
    public var fractionBelowThreshold: Double
    public var medianFakeDistance: Double
    public var medianHeldOutDistance: Double
    /// medianFakeDistance / medianHeldOutDistance (≈ 1 for fresh images, → 0 for copies).
    public var medianRatio: Double

    init(_ r: MemorisationReport) {
        quantile = r.quantile
        threshold = r.threshold
        fractionBelowThreshold = r.fractionBelowThreshold
        medianFakeDistance = r.medianFakeDistance
        medianHeldOutDistance = r.medianHeldOutDistance
        medianRatio = r.medianRatio
    }
}

/// One solver's row of an image evaluation.
public struct ImageEvaluationRow: Codable, Sendable, Equatable {
    public var solver: ODEMethod
    public var nfe: Int
    public var nfeMean: Double
    /// Seconds spent generating the samples.
    public var seconds: Double
    /// The samples against the real reference…
    public var metrics: ImageMetrics
    /// …and, next to them, the same metrics of real training images against the same reference
    /// (the real-vs-real floor: what a perfect generator would score at this n).
    public var floor: ImageMetrics
    public var memorisation: MemorisationSummary
    /// Samples per class as the classifier labels them (class balance), and the largest and
    /// smallest class fractions.
    public var labelHistogram: [Int]
    public var maxClassFraction: Double
    public var minClassFraction: Double
    /// The 8×8 sample grid written for this solver.
    public var grid: String
    /// Class-conditional models: the fraction of samples the classifier assigns to the class
    /// they were drawn under (balanced labels i mod classes).
    public var classAccuracy: Double?
}

/// The result of evaluating an image model.
public struct ImageEvaluationSummary: Codable, Sendable, Equatable {
    /// Generated samples per solver.
    public var n: Int
    /// The real reference (held-out images) and how many of its images were used.
    public var target: ImageDataRef
    public var realImages: Int
    /// Training images used for the floor (the first min(n, trainImages) of them) and the memorisation check.
    public var trainImages: Int
    public var featureDimension: Int
    public var classes: Int
    /// The classifier's held-out accuracy as its classify job measured it (when recorded).
    public var classifierTestAccuracy: Double?
    /// Real training images against the real reference: the floor of every metric.
    public var floor: ImageMetrics
    /// The reference images per class as the classifier labels them.
    public var realLabelHistogram: [Int]
    public var rows: [ImageEvaluationRow]
    /// Guidance scale of the samples (class-conditional models; nil: none).
    public var guidance: Float?
    /// Straightness S (Liu et al. 2022, Eq. 3) per pixel (S / (C·H·W), as rfpp's `utils.py`
    /// averages over pixels) of Euler trajectories with `straightnessSteps` for the first
    /// min(n, 256) noise draws.
    public var straightness: Double
    public var straightnessSteps: Int
    /// VP diffusion models: first-order-ness of the same DDIM trajectories, per pixel (see
    /// ``EvaluationSummary/firstOrderness``); null for a flow.
    public var firstOrderness: Double?
}

extension JobResult {
    /// The image evaluation section of an evaluate job on an image model.
    public var imageEvaluation: ImageEvaluationSummary? { section("imageEvaluation", as: ImageEvaluationSummary.self) }
}

enum ImageEvaluation {
    /// Fewest samples the k-NN metrics accept (k = 5 needs 6 per set) with some margin.
    static let minimumN = 10
    /// Rows per solver block (U-Net activations are large; rk45 adapts per block).
    static let blockRows = 256
    /// Trajectories the straightness is measured on (at most).
    static let straightnessRows = 256

    /// min(n, 256) trajectories, fewer when (steps + 1) frames of them would exceed half the
    /// solver's trajectory limit (large images); at least 2 (prepare refuses specs where even
    /// 2 do not fit).
    static func straightnessTrajectories(_ s: EvaluateSpec, pointSize d: Int) -> Int {
        let fit = (ODESolver.maxTrajectoryFloats / 2) / max(1, (s.straightnessSteps + 1) * d)
        return max(2, min(s.n, straightnessRows, fit))
    }

    /// Checks the classifier, the reference and the training images of an image model and fills
    /// a null `target` with the held-out (`test`) split of the training data's dataset.
    static func prepare(_ input: EvaluateSpec, model m: ModelArtifact, resolver: any ArtifactResolver) throws(SpecError) -> EvaluateSpec {
        var s = input
        let shape = m.model.pointShape
        let shapeText = shape.map(String.init).joined(separator: "×")
        guard let ref = s.classifier else {
            throw SpecError(pointer: "/input/classifier", message: "an image model is evaluated on classifier features: give {\"job\": id} of a classify job on the model's dataset")
        }
        let path: String
        do { path = try resolver.path(for: ref, kind: .classifier) } catch {
            throw SpecError(pointer: "/input/classifier" + error.pointer, message: error.message)
        }
        let art: ClassifierArtifact
        do { art = try ClassifierArtifact.read(path: path) } catch {
            throw SpecError(pointer: "/input/classifier", message: "cannot use this classifier: \(error)")
        }
        guard art.config.imageShape == shape else {
            throw SpecError(pointer: "/input/classifier", message: "classifies \((art.config.imageShape ?? []).map(String.init).joined(separator: "×")) images, the model generates \(shapeText)")
        }
        // A model trained on this classifier's features (the perceptual premetric) would be
        // scored by the network it was optimised against.
        if let p = m.training.perceptual, let used = try? resolver.path(for: p.classifier, kind: .classifier), used == path {
            throw SpecError(pointer: "/input/classifier", message: "is the feature network this model was trained against (perceptual.classifier); evaluate with another classifier")
        }
        guard case .images(let trainRef) = m.training.data else {
            throw SpecError(pointer: "/input/model", message: "an image model must have been trained on an images data source (its training images give the real-vs-real floor)")
        }
        try checkImageData(trainRef, shape: shape, pointer: "/input/model", resolver: resolver)
        if s.target == nil { s.target = .images(ImageDataRef(dataset: trainRef.dataset, split: .test)) }
        guard case .images(let targetRef)? = s.target else {
            throw SpecError(pointer: "/input/target", message: "must be an images data source for an image model ({\"kind\": \"images\", \"dataset\": …, \"split\": \"test\"})")
        }
        try checkImageData(targetRef, shape: shape, pointer: "/input/target", resolver: resolver)
        if s.n < minimumN { throw SpecError(pointer: "/input/n", message: "must be at least \(minimumN) for an image model (k-NN metrics), got \(s.n)") }
        if (s.straightnessSteps + 1) * 2 * m.model.pointSize > ODESolver.maxTrajectoryFloats / 2 {
            throw SpecError(pointer: "/input/straightnessSteps", message: "\(s.straightnessSteps) steps of \(shapeText) images exceed the trajectory limit; use fewer")
        }
        return s
    }

    static func estimate(_ s: EvaluateSpec, model: ModelSpec, resolver: any ArtifactResolver, threads: Int) -> ResourceEstimate {
        let d = model.pointSize
        var e = pointsEstimate(model, n: s.n, copies: 3, solver: s.solvers[0], blockRows: blockRows, threads: threads, trajectoryRows: 0,
                               guided: s.guidance != nil)
        e.add("straightness trajectory", floats: s.straightnessSteps + 1, straightnessTrajectories(s, pointSize: d), d)
        var c = ClassifierConfig()
        if let ref = s.classifier, let p = try? resolver.path(for: ref, kind: .classifier), let a = try? ClassifierArtifact.read(path: p) {
            c = a.config
            e.add("classifier weights", floats: c.parameterCount, 2)
        }
        c.imageShape = c.imageShape ?? model.pointShape
        c.classes = c.classes ?? 10
        let f = c.featureDimension
        // Real reference and training images as bytes and as floats while their features are computed.
        let real = s.n, train = s.trainImages
        e.add("real and training images (bytes, floats)", floats: real + train, d, 2)
        e.add("features of real, training and generated images, logits", floats: real + train + s.n, f + c.classes!)
        e.add("classifier blocks", floats: threads, 256, c.activationFloatsPerRow)
        // Fréchet: d × d Double covariances and eigenvectors; KID: per-worker subsets and Gram matrix.
        e.add("Fréchet covariances and eigenvectors", floats: f, f, 2 * 6)
        let sub = min(1000, s.n)
        e.add("KID subsets", floats: threads, sub, 2 * f + sub)
        e.add("k-NN radii and distance blocks", floats: 8 * (real + train + s.n) + threads * 128 * 1024 * 3)
        e.add("sample grid", bytes: 64 * d * 4)
        return e
    }

    /// The metrics of `fake` against the real reference (features `real`, statistics `realStats`).
    static func metrics(real: [Float], realStats: FeatureStats, fake: [Float], d: Int, kidSubsets: Int, seed: UInt64,
                        threads: Int) throws -> ImageMetrics {
        let fakeStats = try FeatureStats(features: fake, d: d, threads: threads)
        let fd = try FeatureMetrics.frechetDistance(real: realStats, fake: fakeStats, threads: threads)
        let kid = try FeatureMetrics.kid(real: real, fake: fake, d: d, subsets: kidSubsets, seed: seed, threads: threads)
        let m = try FeatureMetrics.manifold(real: real, fake: fake, d: d, threads: threads)
        return ImageMetrics(frechetDistance: fd, kid: kid, precision: m.precisionRecall.precision, recall: m.precisionRecall.recall,
                            density: m.densityCoverage.density, coverage: m.densityCoverage.coverage)
    }

    static func run(_ s: EvaluateSpec, model m: ModelArtifact, job: JobExecution) throws -> JobResult.Sections {
        let weights = m.weights(useEMA: s.useEMA)
        let shape = m.model.pointShape, d = m.model.pointSize, threads = job.threads
        guard let classifierRef = s.classifier, case .images(let trainRef) = m.training.data,
              case .images(let targetRef)? = s.target else {
            throw JobError.invalidInput("an image evaluation needs a classifier, an images target and a model trained on images")
        }
        let art = try ClassifierArtifact.read(path: job.resolve(classifierRef, kind: .classifier, what: "classifier"))
        guard art.config.imageShape == shape else { throw JobError.invalidInput("classifier: classifies \(art.config.imageShape ?? []) images, the model generates \(shape)") }
        let net = try art.network()
        let f = art.config.featureDimension
        let locate: (String) throws -> DatasetLocation = { try job.locateDataset($0, what: "target") }
        let real: ImageSet, train: ImageSet
        do {
            var r = targetRef
            r.limit = min(r.limit ?? s.n, s.n)
            real = try r.load(locate: locate)
            var t = trainRef
            t.limit = min(t.limit ?? s.trainImages, s.trainImages)
            train = try t.load(locate: locate)
        } catch let e as ImageDataError { throw JobError.invalidInput("target: \(e)") }
        let steps = s.solvers.count + 2
        job.progress("evaluate", 0, steps)
        let realOut = net.evaluate(real.tensor(Array(0..<real.count)).data, rows: real.count, threads: threads)
        let trainOut = net.evaluate(train.tensor(Array(0..<train.count)).data, rows: train.count, threads: threads)
        guard real.count >= minimumN, train.count >= minimumN else {
            throw JobError.invalidInput("target: needs at least \(minimumN) real and training images, got \(real.count) and \(train.count)")
        }
        let realStats = try FeatureStats(features: realOut.features, d: f, threads: threads)
        // The floor: the first min(n, |train|) training images against the same reference.
        let floorRows = min(s.n, train.count)
        let floor = try metrics(real: realOut.features, realStats: realStats, fake: Array(trainOut.features.prefix(floorRows * f)),
                                d: f, kidSubsets: s.kidSubsets, seed: s.seed &+ 7, threads: threads)
        try job.checkStop()
        job.progress("evaluate", 1, steps)

        let z = JobExecution.draw(try job.sampler(m.training.source, pointSize: d, what: "model source"), n: s.n, seed: s.seed &+ 1).x
        let labels = Conditioning.labels(nil, perClass: nil, n: s.n, model: m.model)
        var rows = [ImageEvaluationRow](), usedNames = Set<String>()
        for (i, method) in s.solvers.enumerated() {
            try job.checkStop()
            let start = monotonicSeconds()
            let sol = try job.solve(m.model, weights, z, method, interpolant: m.training.interpolant, blockRows: min(s.n, blockRows),
                                    labels: labels, guidance: s.guidance)
            let seconds = monotonicSeconds() - start
            // Pixels outside [−1, 1] are clipped, as when samples are saved as images.
            let x = sol.x.data.map { Swift.min(1, Swift.max(-1, $0)) }
            guard x.allSatisfy(\.isFinite) else { throw JobError.diverged("solver \(method.name): non-finite samples") }
            let out = net.evaluate(x, rows: s.n, threads: threads)
            let row = try metrics(real: realOut.features, realStats: realStats, fake: out.features, d: f,
                                  kidSubsets: s.kidSubsets, seed: s.seed &+ 7, threads: threads)
            let mem = try FeatureMetrics.memorisation(train: trainOut.features, heldOut: realOut.features, fake: out.features,
                                                      d: f, threads: threads)
            let hist = out.histogram
            var name = "samples_" + method.name + (method.steps.map { "-\($0)" } ?? "")
            if !usedNames.insert(name).inserted { name += "-\(i)" }
            name += ".png"
            try job.write(grid(x, shape: shape, text: gridText(s, method: method, model: m)), name)
            rows.append(ImageEvaluationRow(
                solver: method, nfe: sol.nfe, nfeMean: sol.nfeMean, seconds: seconds, metrics: row, floor: floor,
                memorisation: MemorisationSummary(mem), labelHistogram: hist,
                maxClassFraction: Double(hist.max() ?? 0) / Double(s.n), minClassFraction: Double(hist.min() ?? 0) / Double(s.n),
                grid: name,
                classAccuracy: labels.map { l in Double(zip(l, out.labels).filter { $0.0 == $0.1 }.count) / Double(s.n) }))
            job.progress("evaluate", i + 2, steps)
        }
        try job.checkStop()
        let trajN = straightnessTrajectories(s, pointSize: d)
        let start = Tensor(shape: [trajN, d], data: Array(z.data.prefix(trajN * d)))
        let interpolant = m.training.interpolant
        let traj = try job.solve(m.model, weights, start, interpolant.firstOrderMethod(steps: s.straightnessSteps), interpolant: interpolant,
                                 blockRows: min(trajN, blockRows), trajectory: true, labels: labels.map { Array($0.prefix(trajN)) }, guidance: s.guidance)
        // Per pixel (rfpp's utils.py averages the squared error over pixels): comparable across image sizes.
        let frames = (traj.trajectory ?? []).map(\.x)
        let straightness = try Metrics.straightness(trajectory: frames) / Double(d)
        let summary = ImageEvaluationSummary(
            n: s.n, target: targetRef, realImages: real.count, trainImages: train.count, featureDimension: f,
            classes: art.config.classes ?? 0,
            classifierTestAccuracy: art.metadata[ClassifierArtifact.testAccuracyKey].flatMap(Double.init),
            floor: floor, realLabelHistogram: realOut.histogram, rows: rows, guidance: s.guidance,
            straightness: straightness, straightnessSteps: s.straightnessSteps,
            firstOrderness: DiffusionSolvers.firstOrderness(interpolant, frames: frames))
        var sections: JobResult.Sections = ["imageEvaluation": try ResultValue(encoding: summary)]
        if let c = s.lossCurve {
            sections["lossCurve"] = try ResultValue(encoding: try LossCurve.run(c, model: m, weights: weights, target: .images(targetRef), job: job))
        }
        job.progress("evaluate", steps, steps)
        return sections
    }

    /// The first 64 samples as an 8×8 grid (2× upscaled), with the job parameters in tEXt chunks.
    static func grid(_ x: [Float], shape: [Int], text: [(String, String)]) throws -> [UInt8] {
        let per = shape.reduce(1, *), count = min(64, x.count / per)
        let images = (0..<count).map { i in x[(i * per)..<((i + 1) * per)].map(ImageSet.byte(fromUnit:)) }
        return try PNG.encodeGrid(images: images, channels: shape[0], height: shape[1], width: shape[2], columns: 8,
                                  padding: 2, upscale: 2, text: text)
    }

    static func gridText(_ s: EvaluateSpec, method: ODEMethod, model m: ModelArtifact) -> [(String, String)] {
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys]
        func json(_ v: some Encodable) -> String { (try? e.encode(v)).map { String(decoding: $0, as: UTF8.self) } ?? "" }
        return [("Software", "reflowd evaluate"), ("reflowd.solver", json(method)), ("reflowd.model_ref", json(s.model)),
                ("reflowd.guidance", s.guidance.map { String($0) } ?? "none"),
                ("reflowd.model", String(decoding: m.model.canonicalJSON, as: UTF8.self)), ("reflowd.use_ema", String(s.useEMA)),
                ("reflowd.seed", String(s.seed)), ("reflowd.n", String(s.n))]
    }
}
