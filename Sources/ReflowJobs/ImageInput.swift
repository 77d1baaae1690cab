import ReflowEngine
public import ReflowNN
public import ReflowFlow
import ReflowCodec
import Foundation

/// The images an `invert` or `edit` job works on: the user's own PNGs, sent base64-encoded in
/// the spec, or chosen items of a dataset split.
///
/// ```json
/// {"png": ["iVBORw0KGgo…", "data:image/png;base64,iVBORw0KGgo…"]}
/// {"dataset": "fashion-mnist", "split": "test", "indices": [0, 1, 2]}
/// ```
///
/// A PNG must have the model's height and width (no resampling: a resized image is a different
/// image, and the caller knows best how to make it). Its colours are converted to the model's
/// channels as the dataset loaders convert theirs (``PNG/Image/converted(toChannels:)``: RGB to
/// gray by PIL's fixed-point BT.601 luma, gray to RGB by repetition, alpha dropped). Pixels map
/// to [−1, 1] as every dataset's do.
public enum ImageInput: Codable, Sendable, Equatable, Validatable {
    case png([String])
    case dataset(ImageDataRef, indices: [Int])

    /// Most images one job takes.
    public static let maxImages = 1_000
    /// Largest base64 text of one PNG (4 MiB of text: a 3 MiB PNG; a whole spec is at most
    /// ``SpecParser/maxBytes``).
    public static let maxPNGText = 4 << 20

    enum CodingKeys: String, CodingKey { case png, dataset, split, indices }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        switch (c.contains(.png), c.contains(.dataset)) {
        case (true, false):
            for k in [CodingKeys.split, .indices] where c.contains(k) {
                throw DecodingError.dataCorrupted(.init(codingPath: c.codingPath + [k], debugDescription: "\"\(k.rawValue)\" belongs to a dataset, not to \"png\""))
            }
            self = .png(try c.decode([String].self, forKey: .png))
        case (false, true):
            self = .dataset(try ImageDataRef(from: decoder), indices: try c.decode([Int].self, forKey: .indices))
        default:
            throw DecodingError.dataCorrupted(.init(codingPath: c.codingPath,
                debugDescription: "needs exactly one of \"png\" (a list of base64 PNGs) or \"dataset\" (with \"indices\")"))
        }
    }

    public func encode(to encoder: any Encoder) throws {
        switch self {
        case .png(let list):
            var c = encoder.container(keyedBy: CodingKeys.self)
            try c.encode(list, forKey: .png)
        case .dataset(let ref, let indices):
            var c = encoder.container(keyedBy: CodingKeys.self)
            try c.encode(ref.dataset, forKey: .dataset)
            try c.encode(ref.split, forKey: .split)
            try c.encode(indices, forKey: .indices)
        }
    }

    public func validationError() -> FieldError? {
        switch self {
        case .png(let list):
            if list.isEmpty || list.count > ImageInput.maxImages { return ("/png", "must list 1 to \(ImageInput.maxImages) images, got \(list.count)") }
            if let i = list.firstIndex(where: { $0.utf8.count > ImageInput.maxPNGText }) {
                return ("/png/\(i)", "is \(list[i].utf8.count) characters of base64; the limit is \(ImageInput.maxPNGText) (a 3 MiB PNG)")
            }
        case .dataset(let ref, let indices):
            if let e = ref.validationError() { return e }
            if indices.isEmpty || indices.count > ImageInput.maxImages { return ("/indices", "must list 1 to \(ImageInput.maxImages) image indices, got \(indices.count)") }
            if let i = indices.firstIndex(where: { $0 < 0 }) { return ("/indices/\(i)", "must be an image index ≥ 0, got \(indices[i])") }
        }
        return nil
    }

    public var count: Int {
        switch self {
        case .png(let l): l.count
        case .dataset(_, let i): i.count
        }
    }

    /// Decodes PNG `i` (base64, optionally as a `data:` URL) into [C·H·W] floats in [−1, 1] of
    /// `shape` = [C, H, W]. The PNG header is checked against the shape before anything is
    /// inflated, so an oversized or mis-sized image costs nothing. Errors name what is wrong.
    static func decodePNG(_ text: String, shape: [Int]) throws(SpecError) -> [Float] {
        var body = Substring(text)
        if body.hasPrefix("data:") {
            guard let comma = body.firstIndex(of: ",") else { throw SpecError(pointer: "", message: "is a data: URL without a comma") }
            guard body[..<comma].hasSuffix(";base64") else { throw SpecError(pointer: "", message: "is a data: URL that is not base64") }
            body = body[body.index(after: comma)...]
        }
        guard let data = Data(base64Encoded: String(body), options: .ignoreUnknownCharacters), !data.isEmpty else {
            throw SpecError(pointer: "", message: "is not base64 text (send the PNG file's bytes base64-encoded, e.g. `base64 -w0 image.png`)")
        }
        let bytes = [UInt8](data)
        let (c, h, w) = (shape[0], shape[1], shape[2])
        let header: PNG.Header
        do { header = try PNG.readHeader(bytes) } catch { throw SpecError(pointer: "", message: "is not a readable PNG: \(error)") }
        guard header.width == w && header.height == h else {
            throw SpecError(pointer: "", message: "is a \(header.width)×\(header.height) PNG; the model takes \(w)×\(h) images (resize it first)")
        }
        let image: PNG.Image
        do { image = try PNG.decode(bytes, limits: PNG.DecodeLimits(maxSide: max(w, h), maxPixels: w * h)) } catch {
            throw SpecError(pointer: "", message: "is not a readable PNG: \(error)")
        }
        // Gray or RGB as the model's channels (PIL's fixed-point BT.601 luma, as the dataset
        // loaders), then interleaved [H, W, c] bytes → planar [C, H, W] floats in [−1, 1].
        let converted: PNG.Image
        do { converted = try image.converted(toChannels: c == 1 ? 1 : 3) } catch {
            throw SpecError(pointer: "", message: "cannot be converted to \(c) channels: \(error)")
        }
        let k = converted.channels
        var out = [Float](repeating: 0, count: c * h * w)
        for p in 0..<(h * w) {
            for ch in 0..<c { out[ch * h * w + p] = Float(converted.pixels[p * k + min(ch, k - 1)]) * (1 / 127.5) - 1 }
        }
        return out
    }

    /// Checks the images against a model's image shape at submit: every PNG decodes to the
    /// shape, dataset indices exist and the split's images have the shape. For a conditional
    /// model whose labels come from the dataset (`labelsGiven` false), the dataset must not
    /// have more classes than the model. Returns whether the images carry labels.
    @discardableResult
    func check(shape: [Int], classes: Int? = nil, labelsGiven: Bool = true, labelsKey: String = "labels",
               pointer: String, resolver: any ArtifactResolver) throws(SpecError) -> Bool {
        guard shape.count == 3 else { throw SpecError(pointer: pointer, message: "images need an image model; this model's points are \(shape)") }
        switch self {
        case .png(let list):
            for (i, text) in list.enumerated() {
                do { _ = try ImageInput.decodePNG(text, shape: shape) } catch {
                    throw SpecError(pointer: pointer + "/png/\(i)", message: error.message)
                }
            }
            return false
        case .dataset(let ref, let indices):
            let info = try ImageSplits.describe(ref, pointer: pointer, resolver: resolver)
            if let s = info.shape, s != shape {
                throw SpecError(pointer: pointer + "/dataset", message: "holds \(s) images, the model takes \(shape)")
            }
            if let n = info.count, let i = indices.firstIndex(where: { $0 >= n }) {
                throw SpecError(pointer: pointer + "/indices/\(i)", message: "image \(indices[i]) does not exist: the \(ref.split.rawValue) split has \(n)")
            }
            if let k = classes, !labelsGiven, info.labelled == true, let dk = info.classes, dk > k {
                throw SpecError(pointer: pointer + "/dataset", message: "has \(dk) classes, the model \(k): its labels cannot condition the model; give \(labelsKey)")
            }
            return info.labelled ?? false
        }
    }

    /// The dataset's labels as a class-conditional model's labels (nil for an unconditional
    /// model or an unlabelled source); a label the model does not have is an error naming
    /// `field`, the spec key that overrides them.
    static func conditioningLabels(_ labels: [Int32]?, classes: Int?, field: String) throws -> [Int32]? {
        guard let labels, let k = classes else { return nil }
        if let bad = labels.first(where: { $0 < 0 || Int($0) >= k }) {
            throw JobError.invalidInput("images: dataset label \(bad) is not a class of the model (0…\(k - 1)); give \(field)")
        }
        return labels
    }

    /// Loads the images as [n, C·H·W] floats in [−1, 1], with the dataset's labels when it has them.
    func load(shape: [Int], job: JobExecution) throws -> (x: Tensor, labels: [Int32]?) {
        let d = shape.reduce(1, *)
        switch self {
        case .png(let list):
            var data = [Float](); data.reserveCapacity(list.count * d)
            for (i, text) in list.enumerated() {
                do { data += try ImageInput.decodePNG(text, shape: shape) } catch {
                    throw JobError.invalidInput("images/png/\(i): \(error.message)")
                }
            }
            return (Tensor(shape: [list.count, d], data: data), nil)
        case .dataset(let ref, let indices):
            let set = try ref.load(locate: { try job.locateDataset($0, what: "images") })
            guard set.imageShape == shape else { throw JobError.invalidInput("images: the dataset holds \(set.imageShape) images, the model takes \(shape)") }
            if let i = indices.first(where: { $0 >= set.count }) {
                throw JobError.invalidInput("images: image \(i) does not exist (the split has \(set.count))")
            }
            let x = set.tensor(indices)
            return (Tensor(shape: [indices.count, d], data: x.data), set.labels.map { l in indices.map { l[$0] } })
        }
    }
}

/// Round-trip quality of images (MSE, PSNR in dB with the [−1, 1] range, i.e. data range 2,
/// and SSIM with Wang et al. 2004's window): means over the images and per image.
public struct ImageFidelity: Codable, Sendable, Equatable {
    public var mse: Double
    /// Mean of the per-image PSNRs (identical images count as 100 dB).
    public var psnr: Double
    public var ssim: Double?
    public var perImage: [Row]

    public struct Row: Codable, Sendable, Equatable {
        public var mse: Double
        public var psnr: Double
        public var ssim: Double?
    }

    /// Compares the rows of a and b ([n, C·H·W]) as images of `shape`. Identical images count
    /// as 100 dB; a result with non-finite values (a diverged solve) is an error, not a score.
    static func measure(_ a: Tensor, _ b: Tensor, shape: [Int], what: String) throws -> ImageFidelity {
        let n = a.shape[0], d = shape.reduce(1, *)
        if let i = b.data.firstIndex(where: { !$0.isFinite }) {
            throw JobError.diverged("\(what): image \(i / d) holds non-finite values (the solve diverged; lower the guidance or use more steps)")
        }
        var rows = [Row]()
        for r in 0..<n {
            let x = Array(a.data[(r * d)..<((r + 1) * d)]), y = Array(b.data[(r * d)..<((r + 1) * d)])
            let mse = ImageQuality.mse(x, y)
            rows.append(Row(mse: mse, psnr: mse == 0 ? 100 : ImageQuality.psnr(x, y, dataRange: 2),
                            ssim: ImageQuality.ssim(x, y, shape: shape, dataRange: 2)))
        }
        let ssims = rows.compactMap(\.ssim)
        return ImageFidelity(mse: rows.map(\.mse).reduce(0, +) / Double(n), psnr: rows.map(\.psnr).reduce(0, +) / Double(n),
                             ssim: ssims.count == n ? ssims.reduce(0, +) / Double(n) : nil, perImage: rows)
    }
}
