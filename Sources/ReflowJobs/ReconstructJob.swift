public import ReflowNN
public import ReflowFlow
public import ReflowMRI
import ReflowEngine
import ReflowStore
import ReflowCodec
import Foundation
import Synchronization

// `reconstruct` (issue #14): undersampled single-coil MRI → images, by zero filling, compressed
// sensing (FISTA with a Haar-ℓ1 or TV penalty) or a trained RIM. Input is uploaded k-space
// (.npy complex64, optionally a mask and a reference) or images to acquire by simulation (PNGs,
// dataset items, phantoms) with a mask spec.

/// How a `reconstruct` job reconstructs:
/// `{"kind": "zeroFilled"}`, `{"kind": "rim", "model": {"job": "<train job id>"}}` or
/// `{"kind": "cs", "regularizer": "wavelet", "lambda": 0.01, "iterations": 100}`.
public enum ReconstructionMethod: Codable, Sendable, Equatable, Validatable {
    case zeroFilled
    case rim(model: ArtifactRef)
    case cs(CSSettings)

    public var name: String {
        switch self {
        case .zeroFilled: "zeroFilled"
        case .rim: "rim"
        case .cs: "cs"
        }
    }

    enum Key: String, CodingKey { case kind, model }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: Key.self)
        switch try c.decode(String.self, forKey: .kind) {
        case "zeroFilled":
            if let k = c.allKeys.first(where: { $0 != .kind }) {
                throw DecodingError.dataCorruptedError(forKey: k, in: c, debugDescription: "unknown key \"\(k.stringValue)\" for kind \"zeroFilled\"")
            }
            self = .zeroFilled
        case "rim":
            if let k = c.allKeys.first(where: { $0 != .kind && $0 != .model }) {
                throw DecodingError.dataCorruptedError(forKey: k, in: c, debugDescription: "unknown key \"\(k.stringValue)\" for kind \"rim\" (allowed: model)")
            }
            self = .rim(model: try c.decode(ArtifactRef.self, forKey: .model))
        case "cs": self = .cs(try CSSettings(from: decoder))
        case let k:
            throw DecodingError.dataCorruptedError(forKey: .kind, in: c, debugDescription: "unknown method \"\(k.prefix(40))\" (one of zeroFilled, cs, rim)")
        }
    }

    public func encode(to encoder: any Encoder) throws {
        switch self {
        case .zeroFilled:
            var c = encoder.container(keyedBy: Key.self)
            try c.encode("zeroFilled", forKey: .kind)
        case .rim(let m):
            var c = encoder.container(keyedBy: Key.self)
            try c.encode("rim", forKey: .kind)
            try c.encode(m, forKey: .model)
        case .cs(let s):
            try s.encode(to: encoder)
            var c = encoder.container(keyedBy: Key.self)
            try c.encode("cs", forKey: .kind)
        }
    }

    public func validationError() -> FieldError? {
        if case .cs(let s) = self { return s.validationError() }
        return nil
    }
}

/// Compressed-sensing settings: min_x ½‖M·F·x − y‖² + λ·R(x) by `algorithm` for `iterations`.
/// `sweep` lists λ values to try (images need references): the one with the best mean SSIM
/// (mean PSNR for images under SSIM's 11×11 window) reconstructs, and the result lists them
/// all. `trace` records that mean after every iteration of the chosen λ and the fewest
/// iterations within 1 % of the last one's.
public struct CSSettings: Codable, Sendable, Equatable, Validatable {
    public enum RegularizerKind: String, Codable, Sendable, CaseIterable { case wavelet, tv }

    public var regularizer: RegularizerKind = .wavelet
    public var lambda: Double = 0.01
    public var sweep: [Double] = []
    public var iterations = 100
    public var algorithm: CompressedSensing.Method = .fista
    /// Haar levels (nil: as many as the image's sides allow).
    @Explicit public var levels: Int? = nil
    /// FGP iterations per TV prox.
    public var tvIterations = 20
    public var trace = false

    public init() {}

    enum CodingKeys: String, CodingKey { case kind, regularizer, lambda, sweep, iterations, algorithm, levels, tvIterations, trace }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        let d = CSSettings()
        regularizer = try c.decodeIfPresent(RegularizerKind.self, forKey: .regularizer) ?? d.regularizer
        lambda = try c.decodeIfPresent(Double.self, forKey: .lambda) ?? d.lambda
        sweep = try c.decodeIfPresent([Double].self, forKey: .sweep) ?? d.sweep
        iterations = try c.decodeIfPresent(Int.self, forKey: .iterations) ?? d.iterations
        algorithm = try c.decodeIfPresent(CompressedSensing.Method.self, forKey: .algorithm) ?? d.algorithm
        levels = try c.decodeIfPresent(Int.self, forKey: .levels)
        tvIterations = try c.decodeIfPresent(Int.self, forKey: .tvIterations) ?? d.tvIterations
        trace = try c.decodeIfPresent(Bool.self, forKey: .trace) ?? d.trace
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(regularizer, forKey: .regularizer)
        try c.encode(lambda, forKey: .lambda)
        try c.encode(sweep, forKey: .sweep)
        try c.encode(iterations, forKey: .iterations)
        try c.encode(algorithm, forKey: .algorithm)
        if let levels { try c.encode(levels, forKey: .levels) } else { try c.encodeNil(forKey: .levels) }
        try c.encode(tvIterations, forKey: .tvIterations)
        try c.encode(trace, forKey: .trace)
    }

    public func validationError() -> FieldError? {
        func lam(_ v: Double) -> Bool { v >= 0 && v <= 1e6 }
        if !lam(lambda) { return ("/lambda", "must be in [0, 1e6], got \(lambda)") }
        if sweep.count > 32 { return ("/sweep", "lists at most 32 values, got \(sweep.count)") }
        if let i = sweep.firstIndex(where: { !lam($0) }) { return ("/sweep/\(i)", "must be in [0, 1e6], got \(sweep[i])") }
        if !(1...10_000).contains(iterations) { return ("/iterations", "must be in [1, 10000], got \(iterations)") }
        if let l = levels, !(1...10).contains(l) { return ("/levels", "must be in [1, 10], got \(l)") }
        if !(1...500).contains(tvIterations) { return ("/tvIterations", "must be in [1, 500], got \(tvIterations)") }
        return nil
    }

    func regularizerValue(height: Int, width: Int) -> CompressedSensing.Regularizer {
        switch regularizer {
        case .wavelet: return .wavelet(levels: levels.map { min($0, Haar2D.maxLevels(height: height, width: width)) })
        case .tv: return .tv(inner: tvIterations)
        }
    }
}

/// Images to acquire by simulation: `{"png": [...]}` or `{"dataset": ..., "split": ..., "indices": [...]}`
/// (one-channel images; see ``ImageInput``), `{"phantoms": {"count": 16, "height": 32, "width": 32, "seed": 1}}`
/// or `{"sheppLogan": {"height": 64, "width": 64}}`. Magnitudes are the images mapped to [0, 1].
public enum MRIImageInput: Codable, Sendable, Equatable, Validatable {
    case images(ImageInput)
    case phantoms(count: Int, height: Int, width: Int, seed: UInt64)
    case sheppLogan(height: Int, width: Int)

    enum Key: String, CodingKey { case phantoms, sheppLogan, count, height, width, seed }
    struct PhantomSpec: Codable { var count: Int?; var height: Int?; var width: Int?; var seed: UInt64? }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: Key.self)
        if c.contains(.phantoms) {
            let p = try c.decode(PhantomSpec.self, forKey: .phantoms)
            self = .phantoms(count: p.count ?? 16, height: p.height ?? 32, width: p.width ?? 32, seed: p.seed ?? 0)
        } else if c.contains(.sheppLogan) {
            let p = try c.decode(PhantomSpec.self, forKey: .sheppLogan)
            self = .sheppLogan(height: p.height ?? 64, width: p.width ?? 64)
        } else {
            self = .images(try ImageInput(from: decoder))
        }
    }

    public func encode(to encoder: any Encoder) throws {
        switch self {
        case .images(let i): try i.encode(to: encoder)
        case .phantoms(let n, let h, let w, let s):
            var c = encoder.container(keyedBy: Key.self)
            try c.encode(PhantomSpec(count: n, height: h, width: w, seed: s), forKey: .phantoms)
        case .sheppLogan(let h, let w):
            var c = encoder.container(keyedBy: Key.self)
            try c.encode(PhantomSpec(height: h, width: w), forKey: .sheppLogan)
        }
    }

    public func validationError() -> FieldError? {
        func side(_ p: String, _ v: Int) -> FieldError? { (8...MRIDataSource.maxSide).contains(v) ? nil : (p, "must be in [8, \(MRIDataSource.maxSide)], got \(v)") }
        switch self {
        case .images(let i): return i.validationError()
        case .phantoms(let n, let h, let w, _):
            if !(1...ImageInput.maxImages).contains(n) { return ("/phantoms/count", "must be in [1, \(ImageInput.maxImages)], got \(n)") }
            return side("/phantoms/height", h) ?? side("/phantoms/width", w)
        case .sheppLogan(let h, let w): return side("/sheppLogan/height", h) ?? side("/sheppLogan/width", w)
        }
    }

    var count: Int {
        switch self {
        case .images(let i): i.count
        case .phantoms(let n, _, _, _): n
        case .sheppLogan: 1
        }
    }

    /// [H, W] after checking PNGs (all one size) and dataset items (one channel, in range).
    func size(pointer: String, resolver: any ArtifactResolver) throws(SpecError) -> (height: Int, width: Int) {
        switch self {
        case .phantoms(_, let h, let w, _), .sheppLogan(let h, let w): return (h, w)
        case .images(.png(let list)):
            guard let data = Data(base64Encoded: String(ReconstructSpec.base64Body(list[0])), options: .ignoreUnknownCharacters),
                  let header = try? PNG.readHeader([UInt8](data)) else {
                throw SpecError(pointer: pointer + "/png/0", message: "is not a readable base64 PNG")
            }
            let (h, w) = (header.height, header.width)
            guard (8...MRIDataSource.maxSide).contains(h) && (8...MRIDataSource.maxSide).contains(w) else {
                throw SpecError(pointer: pointer + "/png/0", message: "is \(w)×\(h); MRI images must be 8 to \(MRIDataSource.maxSide) pixels a side")
            }
            try ImageInput.png(list).check(shape: [1, h, w], pointer: pointer, resolver: resolver)
            return (h, w)
        case .images(.dataset(let ref, let indices)):
            let (h, w) = try MRIDataSource.images(ref).size(pointer: pointer, resolver: resolver)
            try ImageInput.dataset(ref, indices: indices).check(shape: [1, h, w], pointer: pointer, resolver: resolver)
            return (h, w)
        }
    }

    /// The magnitude images [H·W] in [0, 1].
    func load(height h: Int, width w: Int, job: JobExecution) throws -> [[Float]] {
        switch self {
        case .phantoms(let n, _, _, let seed):
            var rng = Random(seed: seed)
            return (0..<n).map { _ in Phantoms.randomEllipses(height: h, width: w, seed: rng.next()).data }
        case .sheppLogan: return [Phantoms.sheppLogan(height: h, width: w).data]
        case .images(let input):
            let x = try input.load(shape: [1, h, w], job: job).x
            return (0..<x.shape[0]).map { i in x.data[(i * h * w)..<((i + 1) * h * w)].map { min(1, max(0, ($0 + 1) / 2)) } }
        }
    }
}

/// The input of a `reconstruct` job.
public struct ReconstructSpec: JobInput {
    public var method: ReconstructionMethod = .zeroFilled
    /// Uploaded k-space: base64 of a .npy complex64 (or complex128) array [H, W] or [n, H, W].
    @Explicit public var kspace: String? = nil
    /// Its mask: base64 .npy of 0/1 (bool, uint8, float32/64) [H, W] (all images) or [n, H, W];
    /// nil: the non-zero entries of each image's k-space.
    @Explicit public var mask: String? = nil
    /// The reference images for metrics: base64 .npy float32/64 (magnitudes) or complex64/128,
    /// [H, W] or [n, H, W]. Without `kspace` and `images`: the images to acquire with `mask`.
    @Explicit public var reference: String? = nil
    /// Images to acquire by simulation instead of uploaded k-space.
    @Explicit public var images: MRIImageInput? = nil
    /// How simulated images are acquired (mask seed null: each image its own mask from `seed`).
    public var acquisition = Acquisition()
    /// Seeds the phase, the noise, lesions and masks drawn per image.
    public var seed: UInt64 = 0
    /// Simulated lesions (small bright ellipses) added to each simulated image.
    public var lesions = 0
    /// Images drawn in the PNG figures (the arrays hold all).
    public var figureImages = 16

    public init() {}
    public static var requiredKeys: [String] { ["method"] }

    public func validationError() -> FieldError? {
        func sub(_ p: String, _ e: FieldError?) -> FieldError? { e.map { (p + $0.pointer, $0.message) } }
        let sources = [kspace != nil, images != nil, kspace == nil && images == nil && reference != nil].filter { $0 }.count
        return Validation.first(
            { sub("/method", method.validationError()) },
            { sub("/images", images?.validationError()) },
            { sub("/acquisition", acquisition.validationError()) },
            { sources == 1 && !(kspace != nil && images != nil) ? nil : ("/kspace", "give exactly one of kspace (uploaded .npy k-space), images (to acquire by simulation) or reference with mask (an image to acquire with that mask)") },
            { images != nil && reference != nil ? ("/images", "simulated images are their own reference: drop reference") : nil },
            { kspace == nil && images == nil && mask == nil ? ("/mask", "an uploaded reference image is acquired with an uploaded mask: give mask") : nil },
            { Validation.range("/lesions", lesions, 0, 20) },
            { lesions > 0 && images == nil ? ("/lesions", "lesions are added to simulated images; uploaded k-space has none") : nil },
            { Validation.range("/figureImages", figureImages, 0, 256) })
    }

    /// The base64 payload of a string that may be a `data:` URL.
    static func base64Body(_ text: String) -> Substring {
        if text.hasPrefix("data:"), let comma = text.firstIndex(of: ",") { return text[text.index(after: comma)...] }
        return Substring(text)
    }

    /// Decodes a base64 .npy field (errors at `pointer`).
    static func npy(_ text: String, pointer: String, dtypes: [NPYArray.DType]) throws(SpecError) -> NPYArray {
        guard let data = Data(base64Encoded: String(base64Body(text)), options: .ignoreUnknownCharacters), !data.isEmpty else {
            throw SpecError(pointer: pointer, message: "is not base64 text (send the .npy file's bytes base64-encoded, e.g. `base64 -w0 kspace.npy`)")
        }
        do { return try NPYArray.parse([UInt8](data), name: String(pointer.split(separator: "/").last ?? ""), dtypes: dtypes) } catch {
            throw SpecError(pointer: pointer, message: error.description)
        }
    }

    /// [n, H, W] of an uploaded image-shaped array ([H, W] counts as n = 1), sides and count checked.
    static func imageDims(_ a: NPYArray, pointer: String) throws(SpecError) -> (n: Int, h: Int, w: Int) {
        let dims = a.shape.count == 2 ? [1] + a.shape : a.shape
        guard dims.count == 3 else {
            throw SpecError(pointer: pointer, message: "must be [H, W] or [n, H, W] (single coil), got shape \(a.shape)")
        }
        let (n, h, w) = (dims[0], dims[1], dims[2])
        guard (8...MRIDataSource.maxSide).contains(h), (8...MRIDataSource.maxSide).contains(w) else {
            throw SpecError(pointer: pointer, message: "images must be 8 to \(MRIDataSource.maxSide) pixels a side, got \(h)×\(w)")
        }
        guard n <= ImageInput.maxImages else { throw SpecError(pointer: pointer, message: "holds \(n) images, at most \(ImageInput.maxImages)") }
        return (n, h, w)
    }

    /// Image i's slice of an array of [H, W] (shared by all) or [n, H, W] values.
    static func perImage(_ a: NPYArray, n: Int, h: Int, w: Int, pointer: String, like: String) throws(SpecError) -> (Int) -> [Float] {
        let stride = (a.dtype.isComplex ? 2 : 1) * h * w
        if a.shape == [h, w] { return { _ in Array(a.values[0..<stride]) } }
        if a.shape == [n, h, w] { return { i in Array(a.values[(i * stride)..<((i + 1) * stride)]) } }
        throw SpecError(pointer: pointer, message: "must be [\(h), \(w)] or [\(n), \(h), \(w)] like \(like), got shape \(a.shape)")
    }

    /// The uploaded masks for n images of H×W (nil without `mask`): 0/1 values, each image sampling something.
    func uploadedMasks(n: Int, h: Int, w: Int, like: String) throws(SpecError) -> ((Int) -> [Float])? {
        guard let mask else { return nil }
        let m = try Self.npy(mask, pointer: "/input/mask", dtypes: [.bool, .uint8, .float32, .float64])
        if let bad = m.values.firstIndex(where: { $0 != 0 && $0 != 1 }) {
            throw SpecError(pointer: "/input/mask", message: "must hold only 0 and 1, element \(bad) is \(m.values[bad])")
        }
        let f = try Self.perImage(m, n: n, h: h, w: w, pointer: "/input/mask", like: like)
        for i in 0..<n where !f(i).contains(1) { throw SpecError(pointer: "/input/mask", message: "image \(i) samples no k-space point") }
        return f
    }

    /// Uploaded arrays as problems, every shape and value checked: k-space [n, H, W] with its
    /// masks (or its non-zero entries) and references; or reference images acquired with the
    /// uploaded masks (y = M·F·x plus the acquisition's noise, drawn from `seed`).
    func uploadedProblems() throws(SpecError) -> [MRIProblem] {
        guard images == nil, kspace != nil || reference != nil else { return [] }
        var refs: ((Int) -> [Float])?, refComplex = false, refArray: NPYArray?
        if let reference {
            refArray = try Self.npy(reference, pointer: "/input/reference", dtypes: [.float32, .float64, .complex64, .complex128])
            try Self.checkMagnitudes(refArray!, pointer: "/input/reference")
            refComplex = refArray!.dtype.isComplex
        }
        func complexRef(_ v: [Float], _ h: Int, _ w: Int) -> ComplexTensor {
            refComplex ? ComplexTensor(shape: [h, w], data: v) : ComplexTensor(real: Tensor(shape: [h, w], data: v))
        }
        guard let kspace else {
            // An image plus a mask: acquire the reference.
            let r = refArray!
            let (n, h, w) = try Self.imageDims(r, pointer: "/input/reference")
            refs = try Self.perImage(r, n: n, h: h, w: w, pointer: "/input/reference", like: "the reference")
            let masks = try uploadedMasks(n: n, h: h, w: w, like: "the reference")!
            var rng = Random(seed: seed)
            return (0..<n).map { i in
                let mask = Mask(kind: acquisition.mask.kind, values: Tensor(shape: [h, w], data: masks(i)), seed: 0)
                // 0/1 masks of the image's size make valid forward models.
                return try! Acquisition.measure(complexRef(refs!(i), h, w), mask: mask, noise: acquisition.noise, rng: &rng)
            }
        }
        let k = try Self.npy(kspace, pointer: "/input/kspace", dtypes: [.complex64, .complex128])
        try Self.checkMagnitudes(k, pointer: "/input/kspace")
        let (n, h, w) = try Self.imageDims(k, pointer: "/input/kspace")
        let plane = h * w
        let masks = try uploadedMasks(n: n, h: h, w: w, like: "the k-space")
        if let r = refArray { refs = try Self.perImage(r, n: n, h: h, w: w, pointer: "/input/reference", like: "the k-space") }
        var out = [MRIProblem]()
        for i in 0..<n {
            var y = ComplexTensor(shape: [1, h, w], data: Array(k.values[(2 * i * plane)..<(2 * (i + 1) * plane)]))
            let m = masks?(i) ?? (0..<plane).map { y.data[2 * $0] != 0 || y.data[2 * $0 + 1] != 0 ? 1 : 0 }
            guard m.contains(1) else { throw SpecError(pointer: "/input/kspace", message: "image \(i) samples no k-space point") }
            // Values off the mask are not measurements: they are ignored (zeroed).
            for p in 0..<plane where m[p] == 0 { y.data[2 * p] = 0; y.data[2 * p + 1] = 0 }
            // The mask is [H, W] of 0/1, so the forward model accepts it.
            let model = try! ForwardModel(mask: Tensor(shape: [h, w], data: m))
            out.append(MRIProblem(model: model, measurements: y, reference: refs.map { complexRef($0(i), h, w) }, mask: nil))
        }
        return out
    }

    /// Largest magnitude an uploaded value may have: squares and FFT sums stay far inside Float.
    public static let maxUploadMagnitude: Float = 1e15

    /// The most images the 4-row bands of `comparison.png` can show for H×W images (8 columns,
    /// 2× upscale, 2-pixel padding) within the PNG writer's pixel cap.
    static func maxFigureImages(height h: Int, width w: Int) -> Int {
        let width = 8 * (2 * w + 2) + 2
        let bands = (PNG.maxGridPixels / width - 2) / (4 * (2 * h + 2))
        return max(0, bands * 8)
    }

    /// Refuses values beyond ``maxUploadMagnitude`` in an uploaded array.
    static func checkMagnitudes(_ a: NPYArray, pointer: String) throws(SpecError) {
        if let i = a.values.firstIndex(where: { abs($0) > maxUploadMagnitude }) {
            throw SpecError(pointer: pointer, message: "element \(a.dtype.isComplex ? i / 2 : i) is \(a.values[i]); values must be at most \(maxUploadMagnitude) in magnitude (rescale the data)")
        }
    }

    /// The image count and size of a spec `check` accepted, from the uploads' headers or the
    /// images' sizes (without decoding the data or simulating anything again).
    func dimensions(resolver: any ArtifactResolver) throws(SpecError) -> (n: Int, height: Int, width: Int) {
        if let images {
            let (h, w) = try images.size(pointer: "/input/images", resolver: resolver)
            return (images.count, h, w)
        }
        let (text, pointer) = kspace.map { ($0, "/input/kspace") } ?? (reference ?? "", "/input/reference")
        guard let data = Data(base64Encoded: String(Self.base64Body(text)), options: .ignoreUnknownCharacters) else {
            throw SpecError(pointer: pointer, message: "is not base64 text")
        }
        let header: PointFiles.NPYHeader
        do { header = try PointFiles.npyHeader([UInt8](data), name: String(pointer.split(separator: "/").last ?? "")) } catch {
            throw SpecError(pointer: pointer, message: error.description)
        }
        let dims = header.shape.count == 2 ? [1] + header.shape : header.shape
        guard dims.count == 3 else { throw SpecError(pointer: pointer, message: "must be [H, W] or [n, H, W] (single coil), got shape \(header.shape)") }
        return (dims[0], dims[1], dims[2])
    }

    /// The image size and count, checking everything a job can check before it runs.
    func check(resolver: any ArtifactResolver) throws(SpecError) -> (n: Int, height: Int, width: Int) {
        let size = try checkSources(resolver: resolver)
        let most = Self.maxFigureImages(height: size.height, width: size.width)
        if figureImages > most {
            throw SpecError(pointer: "/input/figureImages", message: "at most \(most) for \(size.height)×\(size.width) images (the figures' pixel limit), got \(figureImages)")
        }
        return size
    }

    func checkSources(resolver: any ArtifactResolver) throws(SpecError) -> (n: Int, height: Int, width: Int) {
        if let images {
            let (h, w) = try images.size(pointer: "/input/images", resolver: resolver)
            if mask != nil {
                _ = try uploadedMasks(n: images.count, h: h, w: w, like: "the images")
            } else if let e = acquisition.mask.problem(height: h, width: w) {
                throw SpecError(pointer: "/input/acquisition/mask" + e.pointer, message: e.message + " (for \(h)×\(w) images)")
            }
            return (images.count, h, w)
        }
        let p = try uploadedProblems()
        if case .cs(let s) = method, !s.sweep.isEmpty || s.trace, reference == nil {
            throw SpecError(pointer: "/input/method/" + (s.trace ? "trace" : "sweep"), message: "needs reference images to score (give reference, or simulate from images)")
        }
        return (p.count, p[0].height, p[0].width)
    }
}

public enum ReconstructJob: JobKind {
    public static let name = "reconstruct"
    public static let summary = "Reconstruct undersampled single-coil MRI (uploaded k-space, or images acquired by simulation with a mask) by zero filling, compressed sensing (FISTA, Haar-ℓ1 or TV) or a trained RIM; SSIM, PSNR and NMSE against references."
    public static let phases = ["load", "reconstruct", "score"]
    public static let outputs = [
        JobOutput("reconstructed.npy", "the MRI reconstructions, complex64 [n, H, W]"),
        JobOutput("reconstructed.png", "an 8-column grid of the reconstructions' magnitudes"),
        JobOutput("comparison.png", "bands of reference / zero-filled / reconstruction / 4×|error| (with references)"),
        JobOutput("mask.png", "the sampling masks (white = sampled), centred k-space"),
        JobOutput("mask.npy", "the sampling masks, float32 [n, H, W]"),
        JobOutput("metrics.csv", "image,ssim,psnr,nmse,zero_filled_ssim,zero_filled_psnr,zero_filled_nmse[,lesion_nmse] per image (with references)"),
    ]

    public static func prepare(_ input: ReconstructSpec, resolver: any ArtifactResolver) throws(SpecError) -> ReconstructSpec {
        _ = try input.check(resolver: resolver)
        if case .rim(let ref) = input.method { _ = try rimConfig(ref, pointer: "/input/method/model", resolver: resolver) }
        return input
    }

    /// The RIM config of a referenced checkpoint (422 when it is not a RIM).
    static func rimConfig(_ ref: ArtifactRef, pointer: String, resolver: any ArtifactResolver) throws(SpecError) -> RIMConfig {
        let path: String
        do { path = try resolver.path(for: ref, kind: .model) } catch { throw SpecError(pointer: pointer + error.pointer, message: error.message) }
        let meta: [String: String]
        do { meta = try Checkpoint.read(path: path).metadata } catch {
            throw SpecError(pointer: pointer, message: "cannot read the model: \(error)")
        }
        guard let text = meta[RIMConfig.metadataKey] else {
            throw SpecError(pointer: pointer, message: "is not a RIM (train one with a `train` job whose model kind is \"rim\")")
        }
        let config: RIMConfig
        do { config = try JSONDecoder().decode(RIMConfig.self, from: Data(text.utf8)) } catch {
            throw SpecError(pointer: pointer, message: "has an unreadable RIM config: \(error)")
        }
        if let e = config.validationError() { throw SpecError(pointer: pointer, message: "has an invalid RIM config: \(e.pointer): \(e.message)") }
        return config
    }

    public static func estimate(_ input: ReconstructSpec, resolver: any ArtifactResolver, threads: Int) throws(SpecError) -> ResourceEstimate {
        let (n, h, w) = try input.dimensions(resolver: resolver)
        var e = ResourceEstimate()
        e.add("uploaded arrays (base64 text, bytes, floats)", bytes: ResourceEstimate.multiply(3, [input.kspace, input.mask, input.reference].reduce(0) { $0 + ($1?.utf8.count ?? 0) }))
        e.add("images, k-space, masks, references, reconstructions", floats: n, h * w, 16)
        if case .rim(let ref) = input.method {
            let c = try rimConfig(ref, pointer: "/input/method/model", resolver: resolver)
            e.add("RIM weights", floats: c.parameterCount, 2)
            e.add("RIM inference graphs (one time step each, with its buffer pool)", floats: min(threads, n), min(RIMNetwork.inferenceChunk, n), h * w, c.inferenceFloatsPerPixel, 2)
        }
        if case .images(.dataset(let ref, _))? = input.images {
            e.add("image dataset split", bytes: MRIDataSource.images(ref).bytes(resolver: resolver))
        }
        return e
    }

    public static func run(_ s: ReconstructSpec, job: JobExecution) throws -> JobResult.Sections {
        job.progress("load", 0, 1)
        var problems: [MRIProblem]
        var regions: [[Float]]? = nil
        do { problems = try s.uploadedProblems() } catch { throw JobError.invalidInput("\(error.pointer): \(error.message)") }
        if let images = s.images {
            let (_, h, w) = try { () throws(SpecError) in try s.dimensions(resolver: job.context.resolver) }()
            var mags = try images.load(height: h, width: w, job: job)
            var rng = Random(seed: s.seed)
            if s.lesions > 0 {
                var rs = [[Float]]()
                for i in mags.indices {
                    let l = Phantoms.addLesions(mags[i], height: h, width: w, count: s.lesions, rng: &rng)
                    mags[i] = l.image
                    rs.append(l.region)
                }
                regions = rs
            }
            if let masks = try { () throws(SpecError) in try s.uploadedMasks(n: mags.count, h: h, w: w, like: "the images") }() {
                // Uploaded masks replace the acquisition's; its phase and noise still apply.
                problems = try mags.indices.map { i in
                    let x = s.acquisition.complexImage(mags[i], height: h, width: w, rng: &rng)
                    return try Acquisition.measure(x, mask: Mask(kind: s.acquisition.mask.kind, values: Tensor(shape: [h, w], data: masks(i)), seed: 0),
                                                   noise: s.acquisition.noise, rng: &rng)
                }
            } else {
                problems = try mags.map { try s.acquisition.simulate($0, height: h, width: w, rng: &rng) }
            }
        }
        job.progress("load", 1, 1)
        try job.checkStop()

        let n = problems.count, (h, w) = (problems[0].height, problems[0].width)
        let stop = job.context.shouldStop
        var csReport: CSReport? = nil
        let start: Double
        var recon: [ComplexTensor]
        switch s.method {
        case .zeroFilled:
            job.progress("reconstruct", 0, n)
            start = monotonicSeconds()
            recon = problems.map(\.zeroFilled)
        case .rim(let ref):
            let path = try job.resolve(ref, kind: .model, what: "method.model")
            let snapshot = try Checkpoint.read(path: path)
            guard let text = snapshot.metadata[RIMConfig.metadataKey] else { throw JobError.invalidInput("method.model: is not a RIM") }
            let config = try JSONDecoder().decode(RIMConfig.self, from: Data(text.utf8))
            if let e = config.validationError() { throw JobError.invalidInput("method.model: invalid RIM config: \(e.pointer): \(e.message)") }
            let net = try RIMNetwork(config, stateDict: snapshot.model)
            job.progress("reconstruct", 0, n)
            start = monotonicSeconds()
            recon = net.reconstruct(problems, threads: job.threads, shouldStop: stop)
        case .cs(let cs):
            let reg = cs.regularizerValue(height: h, width: w)
            // Sweeps and traces rank by mean SSIM; images under its 11×11 window by mean PSNR.
            let useSSIM = h >= ImageQuality.window && w >= ImageQuality.window
            let score: (MeanMetrics) -> Double = { useSSIM ? ($0.ssim ?? -1) : $0.psnr }
            var lambda = cs.lambda
            if !cs.sweep.isEmpty {
                var rows = [CSReport.SweepRow]()
                for (i, l) in cs.sweep.enumerated() {
                    job.progress("reconstruct", i, cs.sweep.count + 1)
                    try job.checkStop()
                    let out = csReconstruct(problems, cs, lambda: l, regularizer: reg, threads: job.threads, shouldStop: stop)
                    try job.checkStop()
                    let m = MeanMetrics.mean(zip(out, problems).map { ReconstructionMetrics.measure($0, reference: $1.reference!) })
                    rows.append(CSReport.SweepRow(lambda: l, metrics: m))
                }
                lambda = rows.max { score($0.metrics) < score($1.metrics) }!.lambda
                csReport = CSReport(lambda: lambda, sweep: rows)
            }
            if cs.trace {
                // SSIM after every iteration (not timed: the timed run below records nothing).
                let lambda = lambda
                let sums = Mutex([Double](repeating: 0, count: cs.iterations))
                let shared = WorkerShared(problems)
                parallelChunks(count: n, threads: job.threads) { range in
                    for i in range {
                        let p = shared.value[i]
                        var local = [Double](repeating: 0, count: cs.iterations)
                        _ = CompressedSensing.reconstruct(p.model, p.measurements, lambda: lambda, iterations: cs.iterations, method: cs.algorithm,
                                                          regularizer: reg, recordObjective: false, shouldStop: stop, onIterate: { it, x in
                            let m = ReconstructionMetrics.measure(x, reference: p.reference!)
                            local[it - 1] = useSSIM ? (m.ssim ?? 0) : m.psnr
                        })
                        sums.withLock { for k in local.indices { $0[k] += local[k] } }
                    }
                }
                try job.checkStop()
                let trace = sums.withLock { $0.map { $0 / Double(n) } }
                let last = trace.last!
                var report = csReport ?? CSReport(lambda: lambda, sweep: [])
                report.ssimByIteration = trace
                report.iterationsWithin1Percent = (trace.firstIndex { abs($0 - last) <= 0.01 * abs(last) } ?? (trace.count - 1)) + 1
                csReport = report
            }
            job.progress("reconstruct", cs.sweep.count, cs.sweep.count + 1)
            try job.checkStop()
            start = monotonicSeconds()
            recon = csReconstruct(problems, cs, lambda: lambda, regularizer: reg, threads: job.threads, shouldStop: stop)
            if csReport == nil { csReport = CSReport(lambda: lambda, sweep: []) }
        }
        let seconds = monotonicSeconds() - start
        try job.checkStop()   // a stop request ends the iterations early: nothing they made is kept
        job.progress("reconstruct", n, n)
        guard recon.allSatisfy({ $0.data.allSatisfy(\.isFinite) }) else {
            throw JobError.diverged("the reconstruction has non-finite values (a RIM trained at another scale, or CS with a huge λ)")
        }

        // Outputs.
        job.progress("score", 0, 1)
        try job.write(NPYArray(dtype: .complex64, shape: [n, h, w], values: recon.flatMap(\.data)).bytes(), "reconstructed.npy")
        let masks = problems.map(\.model.mask.data)
        try job.write(NPYArray(dtype: .float32, shape: [n, h, w], values: masks.flatMap { $0 }).bytes(), "mask.npy")
        let shape = [1, h, w], count = s.figureImages
        let text = [("reflowd.method", s.method.name)]
        if count > 0 {
            let scales = problems.indices.map { i -> Float in
                let m = (problems[i].reference ?? recon[i]).magnitude.data.max() ?? 0
                return m > 0 ? m : 1
            }
            func tiles(_ images: [ComplexTensor]) -> Tensor {
                let data = images.prefix(count).enumerated().flatMap { i, z in z.magnitude.data.map { min(1, max(-1, 2 * $0 / scales[i] - 1)) } }
                return Tensor(shape: [min(count, images.count), h * w], data: data)
            }
            let maskTiles = Tensor(shape: [min(count, n), h * w], data: masks.prefix(count).flatMap { $0.map { 2 * $0 - 1 } })
            try job.write(Figures.imageGrid(maskTiles, shape: shape, count: count, text: text), "mask.png")
            try job.write(Figures.imageGrid(tiles(recon), shape: shape, count: count, text: text), "reconstructed.png")
            if problems.allSatisfy({ $0.reference != nil }) {
                let refs = problems.map { $0.reference! }
                let errors = zip(recon, refs).map { r, ref in
                    ComplexTensor(real: Tensor(shape: [h, w], data: zip(r.magnitude.data, ref.magnitude.data).map { 4 * abs($0 - $1) }))
                }
                try job.write(Figures.imageBands([tiles(refs), tiles(problems.map(\.zeroFilled)), tiles(recon), tiles(errors)],
                                                 shape: shape, count: count, text: text), "comparison.png")
            }
        }
        var summary = ReconstructionSummary(method: s.method.name, images: n, height: h, width: w,
                                            acceleration: Double(n * h * w) / Double(max(1, masks.reduce(0) { $0 + $1.reduce(0) { $0 + Int($1) } })),
                                            seconds: seconds, secondsPerImage: seconds / Double(n), threads: job.threads, cs: csReport)
        if problems.allSatisfy({ $0.reference != nil }) {
            var rows = [ReconstructionSummary.Row]()
            var csv = "image,ssim,psnr,nmse,zero_filled_ssim,zero_filled_psnr,zero_filled_nmse" + (regions != nil ? ",lesion_nmse,zero_filled_lesion_nmse" : "") + "\n"
            for i in 0..<n {
                let ref = problems[i].reference!
                let m = ReconstructionMetrics.measure(recon[i], reference: ref)
                let z = ReconstructionMetrics.measure(problems[i].zeroFilled, reference: ref)
                var row = ReconstructionSummary.Row(metrics: m, zeroFilled: z)
                if let regions {
                    // A lesion covers at least its centre pixel and is bright, so these are finite.
                    let l = MRIMetrics.nmse(recon[i].magnitude.data, ref.magnitude.data, region: regions[i])
                    let z = MRIMetrics.nmse(problems[i].zeroFilled.magnitude.data, ref.magnitude.data, region: regions[i])
                    row.lesionNMSE = l.isFinite ? l : nil
                    row.zeroFilledLesionNMSE = z.isFinite ? z : nil
                }
                rows.append(row)
                func f(_ v: Double?) -> String { v.map { String($0) } ?? "" }
                csv += "\(i),\(f(m.ssim)),\(m.psnr),\(m.nmse),\(f(z.ssim)),\(z.psnr),\(z.nmse)" + (regions != nil ? ",\(f(row.lesionNMSE)),\(f(row.zeroFilledLesionNMSE))" : "") + "\n"
            }
            try job.write(Array(csv.utf8), "metrics.csv")
            summary.metrics = .init(rows.map(\.metrics))
            summary.zeroFilled = .init(rows.map(\.zeroFilled))
            if regions != nil {
                summary.lesionNMSE = Spread(rows.compactMap(\.lesionNMSE))
                summary.zeroFilledLesionNMSE = Spread(rows.compactMap(\.zeroFilledLesionNMSE))
            }
            summary.perImage = rows
        }
        job.progress("score", 1, 1)
        return ["reconstruction": try ResultValue(encoding: summary)]
    }

    /// CS reconstructions of every problem (split over `threads`), recording nothing.
    static func csReconstruct(_ problems: [MRIProblem], _ cs: CSSettings, lambda: Double, regularizer: CompressedSensing.Regularizer,
                              threads: Int, shouldStop: @escaping @Sendable () -> Bool) -> [ComplexTensor] {
        let out = Mutex([ComplexTensor?](repeating: nil, count: problems.count))
        let shared = WorkerShared(problems)
        parallelChunks(count: problems.count, threads: threads) { range in
            for i in range {
                let p = shared.value[i]
                let x = CompressedSensing.reconstruct(p.model, p.measurements, lambda: lambda, iterations: cs.iterations,
                                                      method: cs.algorithm, regularizer: regularizer, recordObjective: false,
                                                      shouldStop: shouldStop).x
                out.withLock { $0[i] = x }
            }
        }
        return out.withLock { $0.map { $0! } }
    }
}

/// Mean, standard deviation (population) and count of a metric over images.
public struct Spread: Codable, Sendable, Equatable {
    public var mean: Double
    public var std: Double
    public var n: Int

    public init(_ v: [Double]) {
        n = v.count
        mean = v.isEmpty ? .nan : v.reduce(0, +) / Double(v.count)
        let m = mean
        std = v.isEmpty ? .nan : (v.reduce(0) { $0 + ($1 - m) * ($1 - m) } / Double(v.count)).squareRoot()
    }
}

/// SSIM, PSNR and NMSE spreads over images.
public struct MetricSpreads: Codable, Sendable, Equatable {
    /// Nil for images under SSIM's 11×11 window.
    public var ssim: Spread?
    public var psnr: Spread
    public var nmse: Spread

    public init(_ rows: [ReconstructionMetrics]) {
        let s = rows.compactMap(\.ssim)
        ssim = s.isEmpty ? nil : Spread(s)
        psnr = Spread(rows.map(\.psnr))
        nmse = Spread(rows.map(\.nmse))
    }
}

/// What compressed sensing did: the λ used, the sweep's rows, the SSIM trace.
public struct CSReport: Codable, Sendable, Equatable {
    public struct SweepRow: Codable, Sendable, Equatable {
        public var lambda: Double
        public var metrics: MeanMetrics
    }
    public var lambda: Double
    public var sweep: [SweepRow]
    /// Mean SSIM (PSNR for images under 11 pixels a side) after each iteration of the chosen λ.
    public var ssimByIteration: [Double]? = nil
    /// The fewest iterations whose mean SSIM is within 1 % of the last iteration's (|v − last| ≤ 0.01·|last|).
    public var iterationsWithin1Percent: Int? = nil
}

/// The `reconstruction` section of a reconstruct job's result.
public struct ReconstructionSummary: Codable, Sendable, Equatable {
    public struct Row: Codable, Sendable, Equatable {
        public var metrics: ReconstructionMetrics
        public var zeroFilled: ReconstructionMetrics
        public var lesionNMSE: Double? = nil
        public var zeroFilledLesionNMSE: Double? = nil
    }
    public var method: String
    public var images: Int
    public var height: Int
    public var width: Int
    /// H·W·n over the sampled points of all masks.
    public var acceleration: Double
    /// Wall-clock of the reconstruction itself (all images; not loading, scoring or writing).
    public var seconds: Double
    public var secondsPerImage: Double
    public var threads: Int
    public var cs: CSReport?
    public var metrics: MetricSpreads? = nil
    public var zeroFilled: MetricSpreads? = nil
    public var lesionNMSE: Spread? = nil
    public var zeroFilledLesionNMSE: Spread? = nil
    public var perImage: [Row]? = nil
}

extension JobResult {
    /// The reconstruction section of a reconstruct job.
    public var reconstruction: ReconstructionSummary? { section("reconstruction", as: ReconstructionSummary.self) }
}
