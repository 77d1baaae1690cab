public import Foundation
public import ReflowNN

/// Where a job finds a named image dataset (the server's dataset store, or `reflowd run`'s
/// resolver, answers this).
public enum DatasetLocation: Sendable, Equatable {
    /// A built-in generator, by its name without the `builtin:` prefix (`shapes`).
    case builtin(String)
    /// A directory holding the dataset's files (uploaded, or mapped by the config file).
    case directory(URL)
}

/// The images of one split of a named dataset, as a training job's `data` or `source`:
///
/// ```json
/// {"kind": "images", "dataset": "fashion-mnist", "split": "train"}
/// {"kind": "images", "dataset": "builtin:shapes", "limit": 2000}
/// ```
///
/// `limit` keeps the first `limit` images of the split (a deterministic subset, for quick runs
/// and for held-out evaluation sets of a fixed size).
public struct ImageDataRef: Codable, Sendable, Equatable, Validatable {
    /// A dataset name (`GET /v1/datasets`): uploaded, configured, or `builtin:<name>`.
    public var dataset: String
    public var split: ImageSplit
    /// Keep only the first `limit` images; nil keeps all.
    public var limit: Int?

    public init(dataset: String, split: ImageSplit = .train, limit: Int? = nil) {
        self.dataset = dataset
        self.split = split
        self.limit = limit
    }

    enum CodingKeys: String, CodingKey { case dataset, split, limit }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        dataset = try c.decode(String.self, forKey: .dataset)
        split = try c.decodeIfPresent(ImageSplit.self, forKey: .split) ?? .train
        limit = try c.decodeIfPresent(Int.self, forKey: .limit)
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(dataset, forKey: .dataset)
        try c.encode(split, forKey: .split)
        if let limit { try c.encode(limit, forKey: .limit) } else { try c.encodeNil(forKey: .limit) }
    }

    public func validationError() -> FieldError? {
        if dataset.isEmpty || dataset.utf8.count > 200 || dataset.contains("\0") {
            return ("/dataset", "must name a dataset (GET /v1/datasets lists them, e.g. \"builtin:shapes\")")
        }
        if let limit, limit < 1 || limit > ImageLimits.default.maxImages {
            return ("/limit", "must be in [1, \(ImageLimits.default.maxImages)], got \(limit)")
        }
        return nil
    }

    /// The image shape `[C, H, W]` when it is known without reading files (built-ins).
    public var knownImageShape: [Int]? {
        guard dataset.hasPrefix(BuiltinImageSets.prefix) else { return nil }
        return BuiltinImageSets.imageShape
    }

    /// Loads the images (with labels when the dataset has them).
    /// - Throws: ``ImageDataError`` for a missing split or invalid files, or what `locate` throws.
    public func load(locate: (String) throws -> DatasetLocation, limits: ImageLimits = .default) throws -> ImageSet {
        let set: ImageSet
        switch try locate(dataset) {
        case .builtin(let name): set = try BuiltinImageSets.load(name, split: split, limits: limits)
        case .directory(let url): set = try ImageDataset.load(directory: url, split: split, limits: limits)
        }
        guard let limit, limit < set.count else { return set }
        return set.subset(Array(0..<limit))
    }
}

/// The built-in image datasets (`builtin:shapes`, `builtin:strokes`): procedural 1×28×28 sets
/// so that image jobs work with nothing downloaded. Each split is a fixed seed, so the test
/// split never overlaps the training split's images.
public enum BuiltinImageSets {
    public static let prefix = "builtin:"
    public static let names = ["shapes", "strokes"]
    public static let imageShape = [1, 28, 28]
    /// Images per split.
    public static let counts: [ImageSplit: Int] = [.train: 12_000, .test: 2_000]
    static let seeds: [ImageSplit: UInt64] = [.train: 1, .test: 2]

    /// Resolves a `builtin:` name the way the server does when no store is configured.
    public static func locate(_ name: String) throws -> DatasetLocation {
        guard name.hasPrefix(prefix), names.contains(String(name.dropFirst(prefix.count))) else {
            throw ImageDataError("no dataset '\(name.prefix(80))' here (built-ins: \(names.map { prefix + $0 }.joined(separator: ", ")))")
        }
        return .builtin(String(name.dropFirst(prefix.count)))
    }

    /// One split of a built-in set.
    public static func load(_ name: String, split: ImageSplit, limits: ImageLimits = .default) throws(ImageDataError) -> ImageSet {
        let n = counts[split] ?? 2_000, seed = seeds[split] ?? 3
        switch name {
        case "shapes": return try BuiltinImages.shapes(count: n, seed: seed, limits: limits)
        case "strokes": return try BuiltinImages.strokes(count: n, seed: seed, limits: limits)
        default: throw ImageDataError("no built-in dataset '\(name.prefix(80))' (built-ins: \(names.joined(separator: ", ")))")
        }
    }
}
