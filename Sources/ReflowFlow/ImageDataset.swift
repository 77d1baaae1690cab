public import Foundation

/// Which part of a dataset: the training images or the held-out test images.
public enum ImageSplit: String, Sendable, Codable, CaseIterable {
    case train, test
}

/// The on-disk layout an image dataset was recognised as.
public enum ImageDatasetFormat: String, Sendable, Codable, CaseIterable {
    /// IDX files (MNIST / Fashion-MNIST), raw or gzip. See ``IDX``.
    case idx
    /// NumPy arrays. See ``NPYImages``.
    case npy
    /// PNG images in class sub-folders, as a folder or a tar file per split.
    case png
}

/// What ``ImageDataset/describe(directory:limits:)`` found, read from headers (and the small
/// label files) without decoding any pixels.
public struct ImageDatasetSummary: Sendable, Equatable {
    /// One split of the dataset.
    public struct Split: Sendable, Equatable {
        public var split: ImageSplit
        /// The files (or folder) holding it, by name relative to the dataset directory.
        public var files: [String]
        /// Number of images, nil when it is not known without loading (PNG).
        public var count: Int?
        /// [C, H, W], nil when not known without loading (PNG).
        public var imageShape: [Int]?
        /// `"uint8"` or `"float32"`, nil when not known without loading (PNG).
        public var pixelType: String?
        /// Whether the split has labels (nil: not known without loading).
        public var labelled: Bool?
        /// Max label + 1, for a labelled split.
        public var classCount: Int?
    }

    public var format: ImageDatasetFormat
    /// The splits present, train first.
    public var splits: [Split]
    /// The largest class count over the splits, nil when no split is known to be labelled.
    public var classCount: Int? { splits.compactMap(\.classCount).max() }
}

/// Finds and loads the image dataset in a directory (or a single file), by its files' names.
///
/// **Recognised layouts**, tried in this order (the first that has either split wins):
///
/// 1. **IDX** (``IDX``): `train-images-idx3-ubyte` with `train-labels-idx1-ubyte` for train and
///    `t10k-images-idx3-ubyte` with `t10k-labels-idx1-ubyte` for test, each also with a `.gz`
///    suffix (the uncompressed file is preferred when both exist), with `.idx3-ubyte` for
///    `-idx3-ubyte` (the original MNIST names), and `test-` for `t10k-`. Labels are optional.
/// 2. **NPY** (``NPYImages``): `train_images.npy` [+ `train_labels.npy`] and `test_images.npy`
///    [+ `test_labels.npy`]; `images.npy` [+ `labels.npy`] is the train split; Keras-style
///    `x_train.npy` [+ `y_train.npy`] and `x_test.npy` [+ `y_test.npy`] are accepted too.
/// 3. **PNG**: `train/` and `test/` sub-folders, or `train.tar` and `test.tar`.
///
/// A single file is a dataset with only a train split: an `.npy` image array, an IDX image
/// file (without labels) or a `.tar` of PNG folders.
public enum ImageDataset {
    /// Where a split's images come from.
    enum Source: Equatable {
        case idx(images: URL, labels: URL?)
        case npy(images: URL, labels: URL?)
        case pngFolder(URL)
        case pngTar(URL)

        var format: ImageDatasetFormat {
            switch self {
            case .idx: return .idx
            case .npy: return .npy
            case .pngFolder, .pngTar: return .png
            }
        }

        /// File names relative to the dataset directory.
        var files: [String] {
            switch self {
            case .idx(let i, let l), .npy(let i, let l): return [i.lastPathComponent] + (l.map { [$0.lastPathComponent] } ?? [])
            case .pngFolder(let u): return [u.lastPathComponent + "/"]
            case .pngTar(let u): return [u.lastPathComponent]
            }
        }
    }

    /// What was looked for, for the "nothing recognised" error.
    static let lookedFor = """
        IDX (train-images-idx3-ubyte[.gz] [+ train-labels-idx1-ubyte[.gz]], t10k-images-idx3-ubyte[.gz] \
        [+ t10k-labels-idx1-ubyte[.gz]]), NPY (train_images.npy [+ train_labels.npy], test_images.npy \
        [+ test_labels.npy], images.npy [+ labels.npy], x_train.npy/x_test.npy [+ y_…]), \
        PNG (train/ and test/ folders, or train.tar and test.tar)
        """

    /// Loads one split of the dataset at `directory` (see ``ImageDataset`` for the layouts).
    ///
    /// - Throws: ``ImageDataError`` when no layout is recognised (listing what was looked for),
    ///   when the split is absent (naming the splits found), or when its files are invalid.
    public static func load(directory: URL, split: ImageSplit, limits: ImageLimits = .default) throws(ImageDataError) -> ImageSet {
        let splits = try detect(directory)
        guard let source = splits[split] else {
            let found = ImageSplit.allCases.filter { splits[$0] != nil }.map(\.rawValue).joined(separator: ", ")
            let format = splits.values.first?.format.rawValue ?? "?"
            throw ImageDataError(file: directory.lastPathComponent, "no \(split.rawValue) split (found \(format): \(found))")
        }
        switch source {
        case .idx(let images, let labels): return try IDX.loadSet(images: images, labels: labels, limits: limits)
        case .npy(let images, let labels): return try NPYImages.load(images: images, labels: labels, limits: limits)
        case .pngFolder(let url): return try loadPNGFolder(url, limits: limits)
        case .pngTar(let url): return try loadPNGTar(url, limits: limits)
        }
    }

    /// Describes the dataset at `directory` from file headers and label files, without
    /// decoding pixels: the format, and per split its files, image count, shape, pixel type and
    /// class count. Headers are checked against `limits` like ``load(directory:split:limits:)``
    /// does, so a dataset that describes cleanly passes those checks when loaded.
    public static func describe(directory: URL, limits: ImageLimits = .default) throws(ImageDataError) -> ImageDatasetSummary {
        let splits = try detect(directory)
        var out: [ImageDatasetSummary.Split] = []
        var format = ImageDatasetFormat.idx
        for split in ImageSplit.allCases {
            guard let source = splits[split] else { continue }
            format = source.format
            var s = ImageDatasetSummary.Split(split: split, files: source.files)
            switch source {
            case .idx(let images, let labels):
                let h = try IDX.readHeader(images)
                let name = images.lastPathComponent
                guard h.dimensions.count == 3 else {
                    throw ImageDataError(file: name, "an IDX file of labels, expected images")
                }
                try limits.check(count: h.count, channels: 1, height: h.dimensions[1], width: h.dimensions[2],
                                 bytesPerValue: 1, file: name)
                s.count = h.count
                s.imageShape = [1, h.dimensions[1], h.dimensions[2]]
                s.pixelType = "uint8"
                s.labelled = labels != nil
                if let labels {
                    let l = try IDX.loadLabels(labels, limits: limits)
                    try checkLabelCount(l.count, h.count, labels: labels, images: images)
                    s.classCount = Int(l.max() ?? -1) + 1
                }
            case .npy(let images, let labels):
                let h = try NPYImages.readHeader(images)
                let g = try NPYImages.imageGeometry(h, name: images.lastPathComponent, limits: limits)
                s.count = g.count
                s.imageShape = [g.channels, g.height, g.width]
                s.pixelType = g.isFloat ? "float32" : "uint8"
                s.labelled = labels != nil
                if let labels {
                    let l = try NPYImages.loadLabels(labels, limits: limits)
                    try checkLabelCount(l.count, g.count, labels: labels, images: images)
                    s.classCount = Int(l.max() ?? -1) + 1
                }
            case .pngFolder, .pngTar:
                break  // counts, shape and classes are only known by loading (ImageFolder).
            }
            out.append(s)
        }
        return ImageDatasetSummary(format: format, splits: out)
    }

    private static func checkLabelCount(_ labels: Int, _ images: Int, labels l: URL, images i: URL) throws(ImageDataError) {
        guard labels == images else {
            throw ImageDataError(file: l.lastPathComponent, "\(labels) labels for the \(images) images of \(i.lastPathComponent)")
        }
    }

    // MARK: Detection

    /// The sources of the splits present at `url` (a directory or a single file).
    static func detect(_ url: URL) throws(ImageDataError) -> [ImageSplit: Source] {
        let name = url.lastPathComponent
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: url.path, isDirectory: &isDirectory) else {
            throw ImageDataError(file: name, "does not exist")
        }
        if !isDirectory.boolValue { return try detectFile(url) }
        let entries: Set<String>
        do {
            entries = Set(try FileManager.default.contentsOfDirectory(atPath: url.path))
        } catch {
            throw ImageDataError(file: name, "cannot list the directory")
        }
        func file(_ candidates: [String]) -> URL? {
            for c in candidates where entries.contains(c) {
                let u = url.appendingPathComponent(c)
                var dir: ObjCBool = false
                if FileManager.default.fileExists(atPath: u.path, isDirectory: &dir), !dir.boolValue { return u }
            }
            return nil
        }
        func folder(_ c: String) -> URL? {
            guard entries.contains(c) else { return nil }
            let u = url.appendingPathComponent(c, isDirectory: true)
            var dir: ObjCBool = false
            return FileManager.default.fileExists(atPath: u.path, isDirectory: &dir) && dir.boolValue ? u : nil
        }

        // 1. IDX
        func idxNames(_ prefixes: [String], _ kind: String, _ rank: Int) -> [String] {
            var out: [String] = []
            for p in prefixes {
                for sep in ["-", "."] {
                    let base = "\(p)-\(kind)\(sep)idx\(rank)-ubyte"
                    out += [base, base + ".gz"]
                }
            }
            return out
        }
        var result: [ImageSplit: Source] = [:]
        for (split, prefixes) in [(ImageSplit.train, ["train"]), (.test, ["t10k", "test"])] {
            if let images = file(idxNames(prefixes, "images", 3)) {
                result[split] = .idx(images: images, labels: file(idxNames(prefixes, "labels", 1)))
            }
        }
        if !result.isEmpty { return result }

        // 2. NPY: (images, labels) name pairs per split, in order of preference.
        let npyPairs: [(ImageSplit, String, String)] = [
            (.train, "train_images.npy", "train_labels.npy"), (.train, "images.npy", "labels.npy"),
            (.train, "x_train.npy", "y_train.npy"),
            (.test, "test_images.npy", "test_labels.npy"), (.test, "x_test.npy", "y_test.npy"),
        ]
        for (split, imageName, labelName) in npyPairs where result[split] == nil {
            if let images = file([imageName]) { result[split] = .npy(images: images, labels: file([labelName])) }
        }
        if !result.isEmpty { return result }

        // 3. PNG folders or tar files.
        for split in ImageSplit.allCases {
            if let dir = folder(split.rawValue) {
                result[split] = .pngFolder(dir)
            } else if let tar = file([split.rawValue + ".tar"]) {
                result[split] = .pngTar(tar)
            }
        }
        if !result.isEmpty { return result }
        throw ImageDataError(file: name, "no image dataset recognised; looked for \(lookedFor)")
    }

    /// A single file as a train-only dataset.
    private static func detectFile(_ url: URL) throws(ImageDataError) -> [ImageSplit: Source] {
        let name = url.lastPathComponent
        let lower = name.lowercased()
        if lower.hasSuffix(".npy") { return [.train: .npy(images: url, labels: nil)] }
        if lower.hasSuffix(".tar") { return [.train: .pngTar(url)] }
        if lower.contains("idx3") { return [.train: .idx(images: url, labels: nil)] }
        throw ImageDataError(file: name, "not a recognised image file (an .npy array, an IDX image file named …idx3-ubyte[.gz], or a .tar of PNG folders)")
    }

    // MARK: PNG hook
    //
    /// Loads a split stored as PNG class sub-folders (labels from the sub-folder names).
    static func loadPNGFolder(_ url: URL, limits: ImageLimits) throws(ImageDataError) -> ImageSet {
        try ImageFolder.load(directory: url, limits: limits)
    }

    /// Loads a split stored as a tar of PNG class sub-folders.
    static func loadPNGTar(_ url: URL, limits: ImageLimits) throws(ImageDataError) -> ImageSet {
        try ImageFolder.load(tar: url, limits: limits)
    }
}
