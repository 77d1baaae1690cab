public import ReflowEngine

/// Why an image file or dataset could not be used: the file (a name, never a server path),
/// the byte offset when the problem is at a position, and what is wrong.
///
///     train-images-idx3-ubyte.gz (byte 16): file ends after 1200 of 60000 images
public struct ImageDataError: Error, Sendable, Equatable, CustomStringConvertible {
    public var file: String?
    public var offset: Int?
    public var message: String

    public init(file: String? = nil, offset: Int? = nil, _ message: String) {
        self.file = file
        self.offset = offset
        self.message = message
    }

    public var description: String {
        var s = file ?? "image data"
        if let offset { s += " (byte \(offset))" }
        return s + ": " + message
    }
}

/// Caps applied to every image file *before* anything proportional to its claimed size is
/// allocated (headers are checked against these first), so a hostile header cannot make the
/// server allocate gigabytes.
public struct ImageLimits: Sendable, Equatable {
    /// Most images in one set.
    public var maxImages: Int
    /// Largest width or height.
    public var maxSide: Int
    /// Most channels (1 gray, 3 RGB).
    public var maxChannels: Int
    /// Most bytes of decoded pixel storage for the whole set (float sets count 4 per value).
    public var maxTotalBytes: Int

    public init(maxImages: Int = 1_000_000, maxSide: Int = 256, maxChannels: Int = 3, maxTotalBytes: Int = 1 << 30) {
        self.maxImages = maxImages
        self.maxSide = maxSide
        self.maxChannels = maxChannels
        self.maxTotalBytes = maxTotalBytes
    }

    public static let `default` = ImageLimits()

    /// Throws when a set of `count` images of `channels`×`height`×`width` with `bytesPerValue`
    /// would exceed a cap. Call before allocating.
    public func check(count: Int, channels: Int, height: Int, width: Int, bytesPerValue: Int, file: String?) throws(ImageDataError) {
        guard count >= 1 else { throw ImageDataError(file: file, "holds no images") }
        guard count <= maxImages else { throw ImageDataError(file: file, "\(count) images exceed the limit of \(maxImages)") }
        guard (1...maxChannels).contains(channels) else {
            throw ImageDataError(file: file, "\(channels) channels (supported: 1 to \(maxChannels))")
        }
        guard (1...maxSide).contains(height), (1...maxSide).contains(width) else {
            throw ImageDataError(file: file, "image size \(height)×\(width) outside 1…\(maxSide) per side")
        }
        let (perImage, o1) = (channels * height * width).multipliedReportingOverflow(by: bytesPerValue)
        let (total, o2) = perImage.multipliedReportingOverflow(by: count)
        guard !o1, !o2, total <= maxTotalBytes else {
            throw ImageDataError(file: file, "\(count) images of \(channels)×\(height)×\(width) need more than the limit of \(maxTotalBytes) bytes")
        }
    }
}

/// A set of same-sized images in memory, N × C × H × W in row-major (NCHW) order, with optional
/// integer labels.
///
/// **Pixel convention.** Models see pixels in [−1, 1]: 8-bit values v map to v/127.5 − 1, and
/// float sets hold values already in [−1, 1] (loaders convert [0, 1] float input). ``Pixels/bytes``
/// keeps 8-bit data at one byte per value (Fashion-MNIST's 60,000 images are 47 MB, not 188).
public struct ImageSet: Sendable {
    public enum Pixels: Sendable {
        /// 8-bit values 0…255.
        case bytes([UInt8])
        /// Values in [−1, 1].
        case floats([Float])
    }

    public let channels: Int, height: Int, width: Int
    public let pixels: Pixels
    /// One label per image (0-based class index), or nil.
    public let labels: [Int32]?
    /// Class names by label (sub-folder names of a PNG folder, for example), or nil.
    public let classNames: [String]?

    /// Checks that the storage and labels match the geometry.
    public init(channels: Int, height: Int, width: Int, pixels: Pixels, labels: [Int32]? = nil,
                classNames: [String]? = nil) throws(ImageDataError) {
        guard channels >= 1, height >= 1, width >= 1 else {
            throw ImageDataError("image geometry \(channels)×\(height)×\(width) must be positive")
        }
        let per = channels * height * width
        let n: Int
        switch pixels {
        case .bytes(let b): n = b.count
        case .floats(let f): n = f.count
        }
        guard n > 0, n % per == 0 else {
            throw ImageDataError("\(n) pixel values are not a whole number of \(channels)×\(height)×\(width) images")
        }
        if let labels {
            guard labels.count == n / per else {
                throw ImageDataError("\(labels.count) labels for \(n / per) images")
            }
            guard labels.allSatisfy({ $0 >= 0 }) else { throw ImageDataError("labels must be ≥ 0") }
            if let classNames, let m = labels.max(), Int(m) >= classNames.count {
                throw ImageDataError("label \(m) but only \(classNames.count) class names")
            }
        }
        self.channels = channels
        self.height = height
        self.width = width
        self.pixels = pixels
        self.labels = labels
        self.classNames = classNames
    }

    /// Values per image (C·H·W).
    public var pixelsPerImage: Int { channels * height * width }
    /// Number of images.
    public var count: Int {
        switch pixels {
        case .bytes(let b): return b.count / pixelsPerImage
        case .floats(let f): return f.count / pixelsPerImage
        }
    }
    /// [C, H, W]
    public var imageShape: [Int] { [channels, height, width] }
    /// Number of classes (max label + 1, or the class names' count), nil without labels.
    public var classCount: Int? {
        guard let labels else { return nil }
        return max(classNames?.count ?? 0, Int(labels.max() ?? -1) + 1)
    }

    /// Writes image `i` as C·H·W floats in [−1, 1] to `dst`.
    public func copyImage(_ i: Int, into dst: UnsafeMutablePointer<Float>) {
        precondition(i >= 0 && i < count, "ImageSet.copyImage: index \(i) of \(count)")
        let per = pixelsPerImage
        switch pixels {
        case .bytes(let b):
            b.withUnsafeBufferPointer { p in
                let src = p.baseAddress! + i * per
                for k in 0..<per { dst[k] = Float(src[k]) * (1 / 127.5) - 1 }
            }
        case .floats(let f):
            f.withUnsafeBufferPointer { p in dst.update(from: p.baseAddress! + i * per, count: per) }
        }
    }

    /// The images at `indices` as a [n, C, H, W] tensor in [−1, 1].
    public func tensor(_ indices: [Int]) -> Tensor {
        let per = pixelsPerImage
        var data = [Float](repeating: 0, count: indices.count * per)
        data.withUnsafeMutableBufferPointer { d in
            for (r, i) in indices.enumerated() { copyImage(i, into: d.baseAddress! + r * per) }
        }
        return Tensor(shape: [indices.count, channels, height, width], data: data)
    }

    /// The images at `indices` (with their labels) as a new set.
    public func subset(_ indices: [Int]) -> ImageSet {
        let per = pixelsPerImage
        let px: Pixels
        switch pixels {
        case .bytes(let b):
            var out = [UInt8](); out.reserveCapacity(indices.count * per)
            for i in indices { out.append(contentsOf: b[(i * per)..<((i + 1) * per)]) }
            px = .bytes(out)
        case .floats(let f):
            var out = [Float](); out.reserveCapacity(indices.count * per)
            for i in indices { out.append(contentsOf: f[(i * per)..<((i + 1) * per)]) }
            px = .floats(out)
        }
        // Geometry and labels come from a valid set, so this cannot fail.
        return try! ImageSet(channels: channels, height: height, width: width, pixels: px,
                             labels: labels.map { l in indices.map { l[$0] } }, classNames: classNames)
    }

    /// Pixel values of image `i` as 8-bit (floats are clamped to [−1, 1] and rounded), for PNG output.
    public func bytes(ofImage i: Int) -> [UInt8] {
        let per = pixelsPerImage
        switch pixels {
        case .bytes(let b): return Array(b[(i * per)..<((i + 1) * per)])
        case .floats(let f): return f[(i * per)..<((i + 1) * per)].map(ImageSet.byte(fromUnit:))
        }
    }

    /// Maps a value in [−1, 1] to 0…255 (clamped, rounded to nearest).
    @inline(__always)
    public static func byte(fromUnit v: Float) -> UInt8 {
        let x = ((v + 1) * 127.5).rounded()
        return x.isNaN ? 0 : UInt8(Swift.max(0, Swift.min(255, x)))
    }
}
