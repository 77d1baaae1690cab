import ReflowFlow
import Foundation

/// What the headers of an image dataset split tell before anything is loaded, for the submit-time
/// checks and memory estimates of every job kind that reads images (train, classify, prune, …).
enum ImageSplits {
    /// What the headers of an image split tell: shape, count, labels, classes and bytes in memory
    /// (nil where they are not known without loading, as for PNG folders).
    struct SplitInfo {
        var shape: [Int]?
        var count: Int?
        var labelled: Bool?
        var classes: Int?
        var bytes: Int?
    }

    static func describe(_ ref: ImageDataRef, pointer: String, resolver: any ArtifactResolver) throws(SpecError) -> SplitInfo {
        let location: DatasetLocation
        do { location = try resolver.dataset(ref.dataset) } catch {
            throw SpecError(pointer: pointer + error.pointer, message: error.message)
        }
        switch location {
        case .builtin(let name):
            let n = min(BuiltinImageSets.counts[ref.split] ?? 0, ref.limit ?? Int.max)
            let labelled = name == "shapes"
            return SplitInfo(shape: BuiltinImageSets.imageShape, count: n, labelled: labelled,
                             classes: labelled ? BuiltinImages.classNames.count : nil, bytes: n * BuiltinImageSets.imageShape.reduce(1, *))
        case .directory(let url):
            let summary: ImageDatasetSummary
            do { summary = try ImageDataset.describe(directory: url) } catch {
                throw SpecError(pointer: pointer + "/dataset", message: "dataset '\(ref.dataset)': \(error)")
            }
            guard let split = summary.splits.first(where: { $0.split == ref.split }) else {
                throw SpecError(pointer: pointer + "/split", message: "dataset '\(ref.dataset)' has no \(ref.split.rawValue) split (it has \(summary.splits.map(\.split.rawValue).joined(separator: ", ")))")
            }
            let n = split.count.map { min($0, ref.limit ?? $0) }
            var bytes: Int?
            if let n, let shape = split.imageShape { bytes = n * shape.reduce(1, *) * (split.pixelType == "float32" ? 4 : 1) }
            return SplitInfo(shape: split.imageShape, count: n, labelled: split.labelled,
                             classes: summary.classCount ?? split.classCount, bytes: bytes)
        }
    }
}
