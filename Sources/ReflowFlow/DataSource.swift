public import ReflowEngine
public import ReflowNN
import Foundation

/// Where training points come from: a training job's `data` (π1) and `source` (π0).
///
/// Wire JSON is an object with a `kind`:
///
/// ```json
/// {"kind": "twoMoons"}                                 // a built-in 2-D distribution (Distribution2D)
/// {"kind": "normal", "std": 1}                          // N(0, std²·I) in the model's dimension
/// {"kind": "normal", "dimension": 8, "std": 1}          // … in an explicit dimension
/// {"kind": "points", "job": "job_…", "artifact": "samples"}   // a point set another job wrote
/// {"kind": "points", "path": "data.npy"}                // a CSV/NPY file (reflowd run only)
/// {"kind": "images", "dataset": "builtin:shapes", "split": "train"}  // an image dataset (ImageDataRef)
/// ```
///
/// A source is a description; ``sampler(pointSize:resolve:)`` turns it into a ``DataSampler``
/// that draws batches (reading a point file or an image split once).
public enum DataSource: Codable, Sendable, Equatable, Validatable {
    case distribution(Distribution2D)
    /// N(0, std²·I); `dimension` nil means the model's point size.
    case normal(dimension: Int?, std: Float)
    case points(ArtifactRef)
    /// One split of an image dataset: images in [−1, 1] as flattened C·H·W points, with labels.
    case images(ImageDataRef)

    /// The standard Gaussian in the model's dimension (the default π0).
    public static let standardNormal = DataSource.normal(dimension: nil, std: 1)

    public static let kinds = ["normal", "points", "images"] + Distribution2D.kinds

    public var kind: String {
        switch self {
        case .distribution(let d): return d.kind
        case .normal: return "normal"
        case .points: return "points"
        case .images: return "images"
        }
    }

    /// The point size this source produces when it is known without reading a file.
    public func knownPointSize(modelPointSize: Int) -> Int? {
        switch self {
        case .distribution: return 2
        case .normal(let d, _): return d ?? modelPointSize
        case .points: return nil
        case .images(let ref): return ref.knownImageShape.map { $0.reduce(1, *) }
        }
    }

    /// The built-in 2-D distribution, when this is one (coverage metrics need its geometry).
    public var distribution: Distribution2D? {
        if case .distribution(let d) = self { return d }
        return nil
    }

    public func validationError() -> FieldError? {
        switch self {
        case .distribution(let d): return d.validationError()
        case .normal(let d, let std):
            if let d, d < 1 || d > PointFiles.maxColumns { return ("/dimension", "must be in [1, \(PointFiles.maxColumns)], got \(d)") }
            if !(std > 0 && std <= Distribution2D.maxMagnitude) { return ("/std", "must be a positive number ≤ 1e6, got \(std)") }
            return nil
        case .points(let ref): return ref.validationError()
        case .images(let ref): return ref.validationError()
        }
    }

    typealias Key = AnyCodingKey

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: Key.self)
        let kind = try c.decodeIfPresent(String.self, forKey: Key("kind"))
        switch kind {
        case "normal":
            for k in c.allKeys where !["kind", "dimension", "std"].contains(k.stringValue) {
                throw DecodingError.dataCorrupted(.init(codingPath: c.codingPath + [k],
                    debugDescription: "unknown key \"\(k.stringValue)\" for kind \"normal\" (allowed: dimension, std)"))
            }
            self = .normal(dimension: try c.decodeIfPresent(Int.self, forKey: Key("dimension")),
                           std: try c.decodeIfPresent(Float.self, forKey: Key("std")) ?? 1)
        case "points":
            for k in c.allKeys where !["kind", "job", "artifact", "path"].contains(k.stringValue) {
                throw DecodingError.dataCorrupted(.init(codingPath: c.codingPath + [k],
                    debugDescription: "unknown key \"\(k.stringValue)\" for kind \"points\" (allowed: job, artifact, path)"))
            }
            self = .points(try ArtifactRef(from: decoder))
        case "images":
            for k in c.allKeys where !["kind", "dataset", "split", "limit"].contains(k.stringValue) {
                throw DecodingError.dataCorrupted(.init(codingPath: c.codingPath + [k],
                    debugDescription: "unknown key \"\(k.stringValue)\" for kind \"images\" (allowed: dataset, split, limit)"))
            }
            self = .images(try ImageDataRef(from: decoder))
        default:
            self = .distribution(try Distribution2D(from: decoder))
        }
    }

    public func encode(to encoder: any Encoder) throws {
        switch self {
        case .distribution(let d): try d.encode(to: encoder)
        case .normal(let d, let std):
            var c = encoder.container(keyedBy: Key.self)
            try c.encode("normal", forKey: Key("kind"))
            // Explicit null: the echoed spec names every key it accepted.
            if let d { try c.encode(d, forKey: Key("dimension")) } else { try c.encodeNil(forKey: Key("dimension")) }
            try c.encode(std, forKey: Key("std"))
        case .points(let ref):
            try ref.encode(to: encoder)
            var c = encoder.container(keyedBy: Key.self)
            try c.encode("points", forKey: Key("kind"))
        case .images(let ref):
            try ref.encode(to: encoder)
            var c = encoder.container(keyedBy: Key.self)
            try c.encode("images", forKey: Key("kind"))
        }
    }

    /// The sampler of this source for a model whose points have `pointSize` floats. `resolve`
    /// turns an artifact reference into a readable path (the job layer's resolver). Throws
    /// ``DataSourceError`` when a file cannot be read or its points have another size.
    /// `locate` finds named image datasets (by default only the built-ins).
    public func sampler(pointSize: Int, resolve: (ArtifactRef) throws -> String,
                        locate: (String) throws -> DatasetLocation = BuiltinImageSets.locate) throws -> DataSampler {
        let s: DataSampler
        switch self {
        case .distribution(let d): s = DataSampler(storage: .distribution(d), pointShape: [2])
        case .normal(let d, let std): s = DataSampler(storage: .normal(std: std), pointShape: [d ?? pointSize])
        case .points(let ref):
            let path = try resolve(ref)
            let x: Tensor
            do { x = try PointFiles.load(path: path) } catch {
                throw DataSourceError("points: \(error.message)")
            }
            s = DataSampler(storage: .points(x), pointShape: [x.shape[1]])
        case .images(let ref):
            let set: ImageSet
            do { set = try ref.load(locate: locate) } catch {
                throw DataSourceError("images of '\(ref.dataset.prefix(80))' (\(ref.split.rawValue)): \(error)")
            }
            s = DataSampler(storage: .images(set), pointShape: set.imageShape)
        }
        guard s.pointSize == pointSize else {
            throw DataSourceError("\(kind) gives points of size \(s.pointSize), the model needs \(pointSize)")
        }
        return s
    }
}

/// A data source that cannot be used (the message says why; no server paths).
public struct DataSourceError: Error, CustomStringConvertible, Sendable, Equatable {
    public let description: String
    public init(_ d: String) { description = d }
}

/// Draws batches of points (and, for labelled sources, their class labels) from a
/// ``DataSource``. A value: point files are held once, shared copy-on-write.
public struct DataSampler: Sendable {
    enum Storage: Sendable {
        case distribution(Distribution2D)
        case normal(std: Float)
        case points(Tensor)
        case images(ImageSet)
    }
    let storage: Storage
    /// Shape of one point (`[d]` for points).
    public let pointShape: [Int]
    /// Floats per point.
    public var pointSize: Int { pointShape.reduce(1, *) }
    /// Number of classes of a labelled source (the modes of a built-in 2-D distribution); nil
    /// when the source has no labels (normal noise, point files).
    public var classCount: Int? {
        if case .distribution(let d) = storage { return d.classCount }
        if case .images(let set) = storage { return set.classCount }
        return nil
    }

    /// The image set of an image source (its held images, labels and class names), or nil.
    public var images: ImageSet? {
        if case .images(let set) = storage { return set }
        return nil
    }

    /// True when draws are exactly `rng.normal([n, d])` (pairs can then store the generator
    /// state instead of z0).
    public var isStandardNormal: Bool {
        switch storage {
        case .normal(let std): return std == 1
        case .distribution(.gaussian(let mean, let std)): return mean == [0, 0] && std == 1
        default: return false
        }
    }

    /// Fills `x` ([rows, pointSize], rows = x.count / pointSize) with independent draws and,
    /// when given and the source is labelled, `labels` ([rows]) with their classes. Point sets
    /// are drawn uniformly with replacement. The draws do not depend on `labels`.
    public func sample(into x: UnsafeMutableBufferPointer<Float>, labels: UnsafeMutablePointer<Int32>? = nil, rng: inout Random) {
        let d = pointSize
        switch storage {
        case .distribution(let dist): dist.sample(into: x, labels: labels, rng: &rng)
        case .normal(let std):
            rng.fillNormal(x, mean: 0, std: std)
        case .points(let p):
            let n = p.shape[0]
            p.data.withUnsafeBufferPointer { src in
                for r in 0..<(x.count / d) {
                    let i = rng.int(below: n)
                    for c in 0..<d { x[r * d + c] = src[i * d + c] }
                }
            }
        case .images(let set):
            let n = set.count
            for r in 0..<(x.count / d) {
                let i = rng.int(below: n)
                set.copyImage(i, into: x.baseAddress! + r * d)
                if let labels { labels[r] = set.labels?[i] ?? 0 }
            }
        }
    }

    /// n draws as rows of an `[n, pointSize]` tensor (images flattened NCHW, as the solvers and
    /// the trainer take them).
    public func sample(_ n: Int, rng: inout Random) -> Tensor {
        Tensor(shape: [n, pointSize]) { sample(into: $0, rng: &rng) }
    }
}
