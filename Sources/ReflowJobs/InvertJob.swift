import ReflowEngine
public import ReflowNN
public import ReflowFlow
import ReflowStore
import Foundation

/// Where the points of an `invert` job come from: draws from a data source, a CSV/NPY file
/// (offline only), or inline rows. Wire JSON: `{"distribution": {...}, "n": 1000, "seed": 0}`
/// (any ``DataSource``), `{"path": "points.csv"}` or `{"inline": [[0.5, 1.0], ...]}`.
public enum PointSource: Codable, Sendable, Equatable, Validatable {
    case distribution(DataSource, n: Int, seed: UInt64)
    case path(String)
    case inline([[Float]])

    enum CodingKeys: String, CodingKey { case distribution, n, seed, path, inline }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        let given = [CodingKeys.distribution, .path, .inline].filter { c.contains($0) }
        guard given.count == 1 else {
            throw DecodingError.dataCorrupted(.init(codingPath: c.codingPath,
                debugDescription: "needs exactly one of \"distribution\", \"path\" or \"inline\""))
        }
        switch given[0] {
        case .distribution:
            self = .distribution(try c.decode(DataSource.self, forKey: .distribution),
                                 n: try c.decodeIfPresent(Int.self, forKey: .n) ?? 1000,
                                 seed: try c.decodeIfPresent(UInt64.self, forKey: .seed) ?? 0)
        case .path: self = .path(try c.decode(String.self, forKey: .path))
        default: self = .inline(try c.decode([[Float]].self, forKey: .inline))
        }
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        switch self {
        case .distribution(let d, let n, let s):
            try c.encode(d, forKey: .distribution); try c.encode(n, forKey: .n); try c.encode(s, forKey: .seed)
        case .path(let p): try c.encode(p, forKey: .path)
        case .inline(let rows): try c.encode(rows, forKey: .inline)
        }
    }

    public static let maxPoints = 1_000_000

    public func validationError() -> FieldError? {
        switch self {
        case .distribution(let d, let n, _):
            return Validation.member("/distribution", d) ?? Validation.range("/n", n, 1, PointSource.maxPoints)
        case .path(let p):
            if p.isEmpty || p.utf8.count > 4096 || p.contains("\0") { return ("/path", "must be a non-empty file path") }
        case .inline(let rows):
            if rows.isEmpty || rows.count > 100_000 { return ("/inline", "must hold 1 to 100000 points, got \(rows.count)") }
            let d = rows[0].count
            for (i, r) in rows.enumerated() {
                if r.isEmpty || r.count != d { return ("/inline/\(i)", "must be a point of \(d) numbers like the first, got \(r.count)") }
                if !r.allSatisfy(\.isFinite) { return ("/inline/\(i)", "must hold finite numbers") }
            }
        }
        return nil
    }

    /// The number of points, when known without reading a file.
    var knownCount: Int? {
        switch self {
        case .distribution(_, let n, _): return n
        case .inline(let rows): return rows.count
        case .path: return nil
        }
    }
}

/// `invert`: data → noise with `solver` run backward (t from 1 to 0), then, with
/// `reconstruct`, forward again to measure how well the inversion round-trips.
public struct InvertSpec: JobInput {
    public var model: ArtifactRef = .job(id: "missing", artifact: nil)
    public var useEMA = true
    /// The points to invert; null means 1,000 draws (seed 0) of the model's training data.
    @Explicit public var points: PointSource? = nil
    /// Image models: the user's PNGs or chosen dataset items (instead of `points`).
    @Explicit public var images: ImageInput? = nil
    /// Class-conditional models: the label of each image or point the inversion is conditioned
    /// on (default: the dataset's labels for dataset images, else the null label).
    @Explicit public var labels: [Int]? = nil
    /// Class-conditional models: classifier-free guidance of the inversion (null: the
    /// conditional velocity, as RF-Edit inverts).
    @Explicit public var guidance: Float? = nil
    public var solver: ODEMethod = .rfSolver2(steps: 50)
    public var reconstruct = true
    /// Also measure each inversion step's local error: the RMS distance between the step's
    /// result and an RK45 solution (rtol = atol = 1e-6) of the same interval from the same state.
    public var localError = false
    public var format: PointFormat = .npy

    public init() {}
    public static var requiredKeys: [String] { ["model"] }

    public func validationError() -> FieldError? {
        Validation.first(
            { Validation.member("/model", model) },
            { Validation.member("/points", points) },
            { Validation.member("/images", images) },
            { points != nil && images != nil ? ("/images", "give points or images, not both") : nil },
            { Conditioning.validationError(labels: labels, perClass: nil, guidance: guidance, maxPoints: PointSource.maxPoints) },
            { solver.validationPointer().map { ("/solver" + $0.pointer, $0.message) } },
            {
                if case .remix = solver { return ("/solver/kind", "remix re-mixes the initial noise and integrates forward only; invert with euler, heun, midpoint, rk4, rk45 or rfSolver2") }
                return nil
            },
            {
                switch solver {
                case .rk45, .ddim: return localError ? ("/localError", "compares fixed steps with an RK45 reference: use euler, heun, midpoint, rk4 or rfSolver2") : nil
                default: return nil
                }
            })
    }
}

public enum InvertJob: JobKind {
    public static let name = "invert"
    public static let summary = "Integrate data back to noise (inversion / encoding) and check the round trip."
    public static let phases = ["invert"]
    public static let outputs = [
        JobOutput("latents.npy", "the inverted points (noise), [n, D] (format npy)"),
        JobOutput("latents.csv", "the inverted points as CSV (format csv)"),
        JobOutput("reconstruction.npy", "forward(backward(x)) (with reconstruct, format npy)"),
        JobOutput("reconstruction.csv", "forward(backward(x)) as CSV (with reconstruct, format csv)"),
        JobOutput("noise.safetensors", "image models: the latents as `noise` [n, C, H, W] float32 (and `labels` [n] when conditioned)"),
        JobOutput("inversion.png", "latent ↔ data pairs (2-D models); rows of images, their latents and reconstructions (image models)"),
    ]

    /// Fills `points` with the model's data and checks files and the points' dimension.
    public static func prepare(_ input: InvertSpec, resolver: any ArtifactResolver) throws(SpecError) -> InvertSpec {
        var s = input
        let m = try StudentTraining.model("/input/model", s.model, resolver: resolver)
        s.solver = try DiffusionSolvers.adapt(s.solver, kindDefault: InvertSpec().solver, interpolant: m.training.interpolant, pointer: "/input/solver")
        try Conditioning.check(labels: s.labels, perClass: nil, guidance: s.guidance, model: m.model, maxPoints: PointSource.maxPoints)
        if s.localError {
            if case .ddim = s.solver {
                throw SpecError(pointer: "/input/localError", message: "compares a flow's fixed steps with RK45; a VP diffusion model inverts with ddim only")
            }
            // The recorded inversion: (steps + 1) frames of every point.
            let n = s.images?.count ?? s.points?.knownCount ?? 1000
            if let steps = s.solver.steps, ODESolver.trajectoryTooLarge(frames: steps + 1, floatsPerFrame: n * m.model.pointSize) {
                throw SpecError(pointer: "/input/localError", message: "records the inversion's \(steps + 1) states of \(n) points, more than \(ODESolver.maxTrajectoryFloats) floats; invert fewer points or use fewer steps")
            }
        }
        if let images = s.images {
            try images.check(shape: m.model.pointShape, classes: m.model.classes, labelsGiven: s.labels != nil, pointer: "/input/images", resolver: resolver)
            if let l = s.labels, l.count != images.count {
                throw SpecError(pointer: "/input/labels", message: "has \(l.count) labels for \(images.count) images")
            }
            return s
        }
        if s.points == nil { s.points = .distribution(m.training.data, n: 1000, seed: 0) }
        if let l = s.labels, let n = s.points?.knownCount, l.count != n {
            throw SpecError(pointer: "/input/labels", message: "has \(l.count) labels for \(n) points")
        }
        let d = m.model.pointSize
        switch s.points! {
        case .path(let p):
            do { _ = try resolver.path(for: .path(p), kind: .points) } catch {
                throw SpecError(pointer: "/input/points" + error.pointer, message: error.message)
            }
        case .inline(let rows):
            if rows[0].count != d { throw SpecError(pointer: "/input/points/inline/0", message: "has \(rows[0].count) numbers, the model's points have \(d)") }
        case .distribution(let source, _, _):
            if let k = source.knownPointSize(modelPointSize: d), k != d {
                throw SpecError(pointer: "/input/points/distribution", message: "gives \(k)-D points, the model is \(d)-D")
            }
            if case .points(let ref) = source {
                try checkPointFile(ref, pointSize: d, pointer: "/input/points/distribution", resolver: resolver)
            }
        }
        return s
    }

    public static func estimate(_ s: InvertSpec, resolver: any ArtifactResolver, threads: Int) throws(SpecError) -> ResourceEstimate {
        let m = try StudentTraining.model("/input/model", s.model, resolver: resolver).model
        var n = s.images?.count ?? s.points?.knownCount ?? 1000
        if case .path(let p) = s.points, let bytes = resolver.fileSize(of: .path(p), kind: .points) {
            n = bytes / 2 / max(1, m.pointSize) + 1   // at most one float per 2 bytes ("1,2\n" in CSV)
        }
        var e = pointsEstimate(m, n: n, copies: s.localError ? 8 : 6, solver: s.solver, blockRows: JobExecution.blockRows(m, n: n, threads: threads),
                               threads: threads, trajectoryRows: s.localError ? n : 0, guided: s.guidance != nil)
        if case .dataset(let ref, _)? = s.images, let bytes = try? ImageSplits.describe(ref, pointer: "", resolver: resolver).bytes {
            e.add("dataset split (images, loaded whole)", bytes: ResourceEstimate.multiply(bytes, 2))
        }
        e.add("sliced-W2 directions and projections", floats: ResourceEstimate.add(ResourceEstimate.multiply(n, 4), ResourceEstimate.multiply(256, m.pointSize)), 2)
        if case .distribution(.points(let ref), _, _)? = s.points, let bytes = resolver.fileSize(of: ref, kind: .points) {
            e.add("point file (bytes and parsed floats)", bytes: ResourceEstimate.multiply(bytes, 3))
        }
        return e
    }

    public static func run(_ s: InvertSpec, job: JobExecution) throws -> JobResult.Sections {
        let m = try job.model(s.model)
        let weights = m.weights(useEMA: s.useEMA)
        let d = m.model.pointSize
        var x: Tensor
        var labels = s.labels.map { $0.map(Int32.init) }
        if let images = s.images {
            let loaded = try images.load(shape: m.model.pointShape, job: job)
            x = loaded.x
            if labels == nil { labels = try ImageInput.conditioningLabels(loaded.labels, classes: m.model.classes, field: "labels") }
        } else {
            switch s.points ?? .distribution(m.training.data, n: 1000, seed: 0) {
            case .distribution(let source, let n, let seed):
                var rng = Random(seed: seed)
                x = try job.sampler(source, pointSize: d, what: "points").sample(n, rng: &rng)
            case .inline(let rows):
                x = Tensor(shape: [rows.count, d], data: rows.flatMap { $0 })
            case .path(let p):
                let path = try job.resolve(.path(p), kind: .points, what: "points")
                do { x = try PointFiles.load(path: path) } catch { throw JobError.invalidInput("points: \(error.message)") }
                guard x.rank == 2, x.shape[1] == d else {
                    throw JobError.invalidInput("points: \(p) holds \(x.shape.last ?? 0)-D points, the model is \(d)-D")
                }
            }
        }
        let n = x.shape[0]
        if let l = labels, l.count != n { throw JobError.invalidInput("labels: \(l.count) labels for \(n) points") }
        job.progress("invert", 0, n)
        let start = monotonicSeconds()
        let back = try job.solve(m.model, weights, x, s.solver, interpolant: m.training.interpolant, direction: .backward,
                                 blockRows: job.blockRows(m.model, n: x.shape[0]), trajectory: s.localError, labels: labels, guidance: s.guidance)
        let seconds = monotonicSeconds() - start
        var local: [LocalErrorRow]?
        if s.localError, let frames = back.trajectory {
            local = try Self.localErrors(frames, model: m, weights: weights, labels: labels, guidance: s.guidance, job: job)
        }
        _ = try job.points(back.x, format: s.format, base: "latents")
        let imageShape = m.model.pointShape.count == 3 ? m.model.pointShape : nil
        if let imageShape {
            try job.write(try Self.noiseFile(back.x, labels: labels, shape: imageShape, solver: s.solver), "noise.safetensors")
        }
        var meanErr: Double?, maxErr: Double?
        var reconstruction: Tensor?
        if s.reconstruct {
            try job.checkStop()
            let again = try job.solve(m.model, weights, back.x, s.solver, interpolant: m.training.interpolant,
                                      blockRows: job.blockRows(m.model, n: x.shape[0]), labels: labels, guidance: s.guidance).x
            var sum = 0.0, worst = 0.0
            for r in 0..<n {
                var sq = 0.0
                for c in 0..<d { let e = Double(again.data[d * r + c] - x.data[d * r + c]); sq += e * e }
                let e = sq.squareRoot()
                sum += e
                worst = max(worst, e)
            }
            meanErr = sum / Double(n)
            maxErr = worst
            _ = try job.points(again, format: s.format, base: "reconstruction")
            reconstruction = again
        }
        var rng = Random(seed: 99)
        let g1 = rng.normal([n, d]), g2 = rng.normal([n, d])
        let (mean, std) = JobExecution.moments(back.x)
        let summary = InvertSummary(
            n: n, nfe: back.nfe, seconds: seconds, latentMean: mean, latentStd: std,
            latentSWD: try Metrics.slicedWasserstein2(a: back.x, b: g1, projections: 256, seed: 7),
            gaussianFloorSWD: try Metrics.slicedWasserstein2(a: g2, b: g1, projections: 256, seed: 7),
            reconstructionMeanError: meanErr, reconstructionMaxError: maxErr,
            reconstruction: try imageShape.flatMap { shape in try reconstruction.map { try ImageFidelity.measure(x, $0, shape: shape, what: "reconstruction") } },
            localErrors: local)
        if d == 2 { try job.write(Figures.coupling(z0: back.x, z1: x, count: min(n, 300)), "inversion.png") }
        if m.model.pointShape.count == 3 {
            // Rows of 8: the images, their latents (clamped to [−1, 1] for display), and the
            // reconstructions when computed.
            let text = [("reflowd.job", "invert"), ("reflowd.solver", s.solver.name),
                        ("reflowd.rows", reconstruction == nil ? "data, latent" : "data, latent, reconstruction")]
            try job.write(Figures.imageBands([x, back.x] + (reconstruction.map { [$0] } ?? []), shape: m.model.pointShape, text: text),
                          "inversion.png")
        }
        job.progress("invert", n, n)
        return ["invert": try ResultValue(encoding: summary)]
    }

    /// Per step of a recorded inversion (frames in integration order, t decreasing): the RMS
    /// over all coordinates of frame[i+1] − RK45(frame[i], t_i → t_{i+1}).
    static func localErrors(_ frames: [(t: Float, x: Tensor)], model m: ModelArtifact, weights: [String: Tensor],
                            labels: [Int32]?, guidance: Float?, job: JobExecution) throws -> [LocalErrorRow] {
        var rows = [LocalErrorRow]()
        let reference = ODEMethod.rk45(rtol: 1e-6, atol: 1e-6, maxNFE: 100_000)
        for i in 0..<(frames.count - 1) {
            try job.checkStop()
            let (a, b) = (frames[i], frames[i + 1])      // a.t > b.t
            let exact = try job.solve(m.model, weights, a.x, reference, interpolant: m.training.interpolant, direction: .backward,
                                      blockRows: job.blockRows(m.model, n: a.x.shape[0]), labels: labels, guidance: guidance,
                                      tStart: b.t, tEnd: a.t)
            var sq = 0.0
            for (u, v) in zip(b.x.data, exact.x.data) { let e = Double(u - v); sq += e * e }
            rows.append(LocalErrorRow(tStart: Double(a.t), tEnd: Double(b.t), rms: (sq / Double(max(1, b.x.count))).squareRoot(),
                                      referenceNFE: exact.nfe))
        }
        return rows
    }

    /// The latents of image inversions as safetensors: `noise` [n, C, H, W] (and `labels` [n]
    /// as float32 when the inversion was conditioned), with the solver in the metadata.
    static func noiseFile(_ z: Tensor, labels: [Int32]?, shape: [Int], solver: ODEMethod) throws -> [UInt8] {
        var tensors: [(name: String, tensor: Tensor)] = [("noise", Tensor(shape: [z.shape[0]] + shape, data: z.data))]
        if let labels { tensors.append(("labels", Tensor(shape: [labels.count], data: labels.map(Float.init)))) }
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys]
        return try SafeTensors.encode(tensors, metadata: ["reflowd.solver": String(decoding: try e.encode(solver), as: UTF8.self)])
    }
}

extension JobResult {
    /// The invert section of an invert job.
    public var invert: InvertSummary? { section("invert", as: InvertSummary.self) }
}
