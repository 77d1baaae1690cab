public import Foundation
import Glibc
import ReflowCodec

// Image-set file formats: IDX (MNIST, Fashion-MNIST; raw or gzip) and NPY arrays. Every reader
// checks a file's header against ``ImageLimits`` before it reads or allocates anything sized by
// that header, and reports problems as ``ImageDataError`` with the file's name (never its path)
// and, where there is one, the byte offset.

/// Shared pieces of the image loaders: the label cap and bounded file reading.
public enum ImageLoaders {
    /// Labels must lie in 0..<`maxClasses` (a larger label would make every class-conditional
    /// model allocate an embedding row per class up to it).
    public static let maxClasses = 1_000

    /// Throws unless every label is in 0..<``maxClasses``; `offsetOf(k)` gives label k's byte offset.
    static func checkLabels(_ labels: [Int64], file: String, offsetOf: (Int) -> Int) throws(ImageDataError) -> [Int32] {
        var out = [Int32](repeating: 0, count: labels.count)
        for (k, v) in labels.enumerated() {
            guard v >= 0 && v < Int64(maxClasses) else {
                throw ImageDataError(file: file, offset: offsetOf(k), "label \(k) is \(v), outside 0…\(maxClasses - 1)")
            }
            out[k] = Int32(v)
        }
        return out
    }

    /// The first bytes of a regular file: at most `maxBytes` of them, the file's size from
    /// `fstat`, and whether the end of the file was reached.
    ///
    /// Opening never blocks (a FIFO is refused as not a regular file) and nothing larger than
    /// `maxBytes` is allocated, whatever the file's size.
    static func readPrefix(_ url: URL, maxBytes: Int) throws(ImageDataError) -> (bytes: [UInt8], fileSize: Int, atEnd: Bool) {
        let name = url.lastPathComponent
        func fail(_ m: String) -> ImageDataError { ImageDataError(file: name, m) }
        guard url.isFileURL else { throw fail("not a file URL") }
        let path = url.path
        if path.utf8.contains(0) { throw fail("path contains a NUL byte") }
        guard maxBytes >= 0 else { throw fail("maxBytes must be non-negative") }
        let fd = Glibc.open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK)
        if fd < 0 { throw fail("cannot open: \(errnoText())") }
        defer { _ = Glibc.close(fd) }
        var st = stat()
        if fstat(fd, &st) != 0 { throw fail("cannot stat: \(errnoText())") }
        if (st.st_mode & S_IFMT) != S_IFREG { throw fail("not a regular file") }
        let size = Int(st.st_size)
        var out = [UInt8](repeating: 0, count: min(maxBytes, size))
        var total = 0
        // The size is only a hint (the file may change meanwhile): read until EOF or the cap.
        while true {
            if total == out.count {
                guard total < maxBytes else { break }
                out += [UInt8](repeating: 0, count: min(max(out.count, 4096), maxBytes - total))
            }
            let room = out.count - total
            let n = out.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress! + total, room) }
            if n < 0 {
                if errno == EINTR { continue }
                throw fail("read failed: \(errnoText())")
            }
            if n == 0 {
                out.removeSubrange(total...)
                return (out, total, true)
            }
            total += n
        }
        // At the cap: is there more?
        var probe: UInt8 = 0
        while true {
            let n = Glibc.read(fd, &probe, 1)
            if n < 0 && errno == EINTR { continue }
            if n < 0 { throw fail("read failed: \(errnoText())") }
            return (out, max(size, total + n), n == 0)
        }
    }

    private static func errnoText() -> String {
        let e = errno
        return "\(String(cString: strerror(e))) (errno \(e))"
    }
}

// MARK: - IDX

/// The IDX format of MNIST and Fashion-MNIST, raw or gzip-compressed (detected from the bytes,
/// not the name).
///
/// An IDX file is a 4-byte magic `00 00 tt nn` (tt the element type, nn the number of
/// dimensions), nn big-endian UInt32 dimension sizes, then the elements in row-major order.
/// Images are `00 00 08 03` (unsigned bytes; count, rows, columns) and labels `00 00 08 01`
/// (unsigned bytes; count). Other element types and ranks are refused.
///
/// **Checks.** The header is read first (for gzip: the first bytes of the decompressed stream)
/// and checked against ``ImageLimits``; only then is the file read and decompressed, with the
/// decompressed size capped at exactly what the header declares. A file shorter than its header
/// declares is an error naming how many images (or labels) are complete and the byte offset
/// where the data ends (an offset into the decompressed data for gzip); longer data, a gzip
/// stream cut off after its data, and bytes after the end are errors too. Labels must be below
/// ``ImageLoaders/maxClasses``, and a set's label count must equal its image count.
public enum IDX {
    /// The decoded header of an IDX file.
    public struct Header: Sendable, Equatable {
        /// Element type byte (0x08 unsigned byte is the only one accepted).
        public var elementType: UInt8
        /// Dimension sizes: [count, rows, columns] for images, [count] for labels.
        public var dimensions: [Int]
        /// Whether the file is gzip-compressed.
        public var isGzip: Bool
        /// Header bytes before the data: 4 + 4 · rank.
        public var size: Int { 4 + 4 * dimensions.count }
        /// The number of images or labels.
        public var count: Int { dimensions.first ?? 0 }
    }

    enum Kind {
        case images, labels
        var rank: Int { self == .images ? 3 : 1 }
        var magic: UInt32 { self == .images ? 0x0000_0803 : 0x0000_0801 }
        var noun: String { self == .images ? "images" : "labels" }
    }

    enum Source {
        case file(URL)
        case bytes([UInt8], name: String)
        var name: String {
            switch self {
            case .file(let url): return url.lastPathComponent
            case .bytes(_, let name): return name
            }
        }
    }

    /// How much of a file is read to find the header of a gzip file (the compressed header can
    /// carry a file name or comment before the data starts).
    static let headerProbeBytes = 1 << 16

    /// Loads an IDX image file: `count` images of `height`×`width` unsigned bytes, row-major.
    public static func loadImages(_ url: URL, limits: ImageLimits = .default) throws(ImageDataError)
        -> (count: Int, height: Int, width: Int, pixels: [UInt8]) {
        let (h, data) = try read(.file(url), .images, limits: limits)
        return (h.dimensions[0], h.dimensions[1], h.dimensions[2], data)
    }

    /// Decodes the bytes of an IDX image file (raw or gzip); `name` is used in errors.
    public static func loadImages(bytes: [UInt8], name: String, limits: ImageLimits = .default) throws(ImageDataError)
        -> (count: Int, height: Int, width: Int, pixels: [UInt8]) {
        let (h, data) = try read(.bytes(bytes, name: name), .images, limits: limits)
        return (h.dimensions[0], h.dimensions[1], h.dimensions[2], data)
    }

    /// Loads an IDX label file: one label per image.
    public static func loadLabels(_ url: URL, limits: ImageLimits = .default) throws(ImageDataError) -> [Int32] {
        try labels(.file(url), limits: limits)
    }

    /// Decodes the bytes of an IDX label file (raw or gzip); `name` is used in errors.
    public static func loadLabels(bytes: [UInt8], name: String, limits: ImageLimits = .default) throws(ImageDataError) -> [Int32] {
        try labels(.bytes(bytes, name: name), limits: limits)
    }

    /// Loads images and, if given, their labels as a one-channel 8-bit ``ImageSet``.
    public static func loadSet(images: URL, labels: URL?, limits: ImageLimits = .default) throws(ImageDataError) -> ImageSet {
        let im = try loadImages(images, limits: limits)
        var lab: [Int32]?
        if let labels {
            let l = try loadLabels(labels, limits: limits)
            guard l.count == im.count else {
                throw ImageDataError(file: labels.lastPathComponent, "\(l.count) labels for the \(im.count) images of \(images.lastPathComponent)")
            }
            lab = l
        }
        return try ImageSet(channels: 1, height: im.height, width: im.width, pixels: .bytes(im.pixels), labels: lab)
    }

    /// Reads only the header of an IDX image or label file (for gzip, the first bytes of the
    /// decompressed stream), to describe a dataset without loading it.
    public static func readHeader(_ url: URL) throws(ImageDataError) -> Header {
        let name = url.lastPathComponent
        let (prefix, _, atEnd) = try ImageLoaders.readPrefix(url, maxBytes: headerProbeBytes)
        let (head, isGzip) = try headerBytes(prefix, name: name, want: 16, complete: atEnd)
        guard head.count >= 4 else { throw ImageDataError(file: name, offset: head.count, "file ends inside the IDX header") }
        let kind: Kind = head[3] == 1 ? .labels : .images
        return try parseHeader(head, kind, isGzip: isGzip, name: name)
    }

    private static func labels(_ source: Source, limits: ImageLimits) throws(ImageDataError) -> [Int32] {
        let (h, data) = try read(source, .labels, limits: limits)
        return try ImageLoaders.checkLabels(data.map { Int64($0) }, file: source.name) { h.size + $0 }
    }

    /// Up to `want` leading bytes of the (decompressed) content of `prefix`, and whether it is gzip.
    private static func headerBytes(_ prefix: [UInt8], name: String, want: Int,
                                    complete: Bool) throws(ImageDataError) -> ([UInt8], Bool) {
        guard Gzip.isGzip(prefix) else { return (Array(prefix.prefix(want)), false) }
        let out: [UInt8], end: Gzip.PrefixEnd
        do {
            (out, end) = try Gzip.decompressPrefix(prefix, maxOutputBytes: want)
        } catch {
            throw ImageDataError(file: name, "gzip: \(error.detail)")
        }
        if end == .truncated && out.count < want && !complete {
            throw ImageDataError(file: name, "the IDX header is not within the first \(headerProbeBytes) bytes of the gzip file")
        }
        return (out, true)
    }

    private static func be32(_ b: [UInt8], _ at: Int) -> UInt32 {
        UInt32(b[at]) << 24 | UInt32(b[at + 1]) << 16 | UInt32(b[at + 2]) << 8 | UInt32(b[at + 3])
    }

    /// Checks the magic, element type and dimensions (against `limits` when given).
    static func parseHeader(_ b: [UInt8], _ kind: Kind, isGzip: Bool, name: String,
                            limits: ImageLimits? = nil) throws(ImageDataError) -> Header {
        func fail(_ at: Int, _ m: String) -> ImageDataError { ImageDataError(file: name, offset: at, m) }
        guard b.count >= 4 else { throw fail(b.count, "file ends inside the IDX magic (\(b.count) of 4 bytes)") }
        let magic = be32(b, 0)
        let hex = "0x" + String(repeating: "0", count: 8 - String(magic, radix: 16).count) + String(magic, radix: 16)
        guard b[0] == 0 && b[1] == 0 else {
            throw fail(0, "not an IDX file (magic \(hex); expected \(kind == .images ? "0x00000803 for images" : "0x00000801 for labels"))")
        }
        if magic != kind.magic && b[2] == 0x08 && (b[3] == 1 || b[3] == 3) {
            let other = b[3] == 1 ? "labels (0x00000801)" : "images (0x00000803)"
            throw fail(0, "an IDX file of \(other), expected \(kind.noun)")
        }
        guard b[2] == 0x08 else {
            let types: [UInt8: String] = [0x09: "signed byte", 0x0B: "int16", 0x0C: "int32", 0x0D: "float32", 0x0E: "float64"]
            throw fail(2, "unsupported IDX element type 0x\(String(b[2], radix: 16)) (\(types[b[2]] ?? "unknown")); only 0x08 (unsigned byte)")
        }
        guard Int(b[3]) == kind.rank else {
            throw fail(3, "IDX \(kind.noun) must have \(kind.rank) dimension(s), this file has \(b[3]) (magic \(hex))")
        }
        let size = 4 + 4 * kind.rank
        guard b.count >= size else { throw fail(b.count, "file ends inside the IDX header (\(b.count) of \(size) bytes)") }
        let dims = (0..<kind.rank).map { Int(be32(b, 4 + 4 * $0)) }
        if let limits {
            switch kind {
            case .images:
                try limits.check(count: dims[0], channels: 1, height: dims[1], width: dims[2], bytesPerValue: 1, file: name)
            case .labels:
                guard dims[0] >= 1 else { throw fail(4, "holds no labels") }
                guard dims[0] <= limits.maxImages else {
                    throw fail(4, "\(dims[0]) labels exceed the limit of \(limits.maxImages) images")
                }
            }
        }
        return Header(elementType: b[2], dimensions: dims, isGzip: isGzip)
    }

    /// Reads, checks and (if needed) decompresses an IDX file; returns its header and data bytes.
    static func read(_ source: Source, _ kind: Kind, limits: ImageLimits) throws(ImageDataError) -> (Header, [UInt8]) {
        let name = source.name
        let headerSize = 4 + 4 * kind.rank
        // 1. The header, checked against the limits before anything sized by it is allocated.
        let prefix: [UInt8], fileSize: Int, atEnd: Bool
        switch source {
        case .bytes(let b, _): (prefix, fileSize, atEnd) = (b, b.count, true)
        case .file(let url): (prefix, fileSize, atEnd) = try ImageLoaders.readPrefix(url, maxBytes: headerProbeBytes)
        }
        let (head, isGzip) = try headerBytes(prefix, name: name, want: headerSize, complete: atEnd)
        let header = try parseHeader(head, kind, isGzip: isGzip, name: name, limits: limits)
        let perItem = kind == .images ? header.dimensions[1] * header.dimensions[2] : 1
        let total = headerSize + header.count * perItem  // within limits.maxTotalBytes + 16: no overflow

        func truncated(_ available: Int, _ note: String) -> ImageDataError {
            let complete = max(0, available - headerSize) / perItem
            return ImageDataError(file: name, offset: available,
                                  "\(note)ends after \(complete) of \(header.count) \(kind.noun)")
        }

        // 2. The content, never more than the header declares.
        var content: [UInt8]
        if isGzip {
            let compressed: [UInt8]
            switch source {
            case .bytes(let b, _): compressed = b
            case .file(let url):
                // A deflate stream is at most a little larger than its content (stored blocks).
                let cap = total + total / 64 + (1 << 20)
                guard fileSize <= cap else {
                    throw ImageDataError(file: name, "the gzip file is \(fileSize) bytes, more than a stream of the \(total) bytes its header declares can need")
                }
                let r = try ImageLoaders.readPrefix(url, maxBytes: cap)
                guard r.atEnd else { throw ImageDataError(file: name, "the gzip file grew beyond \(cap) bytes while being read") }
                compressed = r.bytes
            }
            let end: Gzip.PrefixEnd
            do {
                (content, end) = try Gzip.decompressPrefix(compressed, maxOutputBytes: total)
            } catch {
                throw ImageDataError(file: name, "gzip: \(error.detail)")
            }
            switch end {
            case .limitReached:
                throw ImageDataError(file: name, offset: total, "decompressed data is longer than the \(total) bytes the header declares")
            case .truncated where content.count < total:
                throw truncated(content.count, "gzip stream is cut off: the decompressed data ")
            case .truncated:
                throw ImageDataError(file: name, "gzip stream is cut off after the data (its end and checksum are missing)")
            case .complete where content.count < total:
                throw truncated(content.count, "decompressed data ")
            case .complete:
                break
            }
        } else {
            switch source {
            case .bytes(let b, _): content = b
            case .file(let url):
                if fileSize > total {
                    throw ImageDataError(file: name, offset: total, "\(fileSize - total) unexpected bytes after the last of \(header.count) \(kind.noun)")
                }
                content = try ImageLoaders.readPrefix(url, maxBytes: total + 1).bytes
            }
            if content.count < total { throw truncated(content.count, "file ") }
            if content.count > total {
                throw ImageDataError(file: name, offset: total, "\(content.count - total) unexpected bytes after the last of \(header.count) \(kind.noun)")
            }
        }
        content.removeFirst(headerSize)
        return (header, content)
    }
}

// MARK: - NPY

/// Image sets stored as NumPy `.npy` arrays, with optional label arrays.
///
/// **Images.** Format versions 1.0, 2.0 and 3.0; the header dict has exactly the keys `descr`,
/// `fortran_order` and `shape`; `fortran_order` must be `False` (C order). `descr` is `'|u1'`
/// (8-bit pixels 0…255, kept as bytes) or `'<f4'` (float32, which must lie in **[0, 1]** and is
/// mapped to the model range [−1, 1] by 2v − 1; any value outside [0, 1], NaN and ±∞ included,
/// is an error naming the image, channel, row, column and byte offset). `shape` is `(N, H, W)`
/// (one channel) or `(N, C, H, W)` with C = 1 or 3 (channels first; a channels-last array is
/// refused with a hint). The shape is checked against ``ImageLimits`` before any data is read,
/// and the data must be exactly N·C·H·W·itemsize bytes.
///
/// **Labels.** A 1-D array `(N,)` of an integer dtype: `|u1`, `|i1`, `<u2`, `<i2`, `<u4`,
/// `<i4`, `<u8` or `<i8` (little-endian), every value in 0..<``ImageLoaders/maxClasses``.
public enum NPYImages {
    /// The decoded header of an NPY file.
    public struct Header: Sendable, Equatable {
        /// The dtype string, e.g. `'|u1'`.
        public var descr: String
        /// The array shape.
        public var shape: [Int]
        /// Byte offset of the first element.
        public var dataOffset: Int
        /// Byte offset of the `descr` and `shape` values (for errors).
        var descrOffset: Int, shapeOffset: Int
    }

    static var maxPreamble: Int { 12 + PointFiles.maxNPYHeaderBytes }
    static let labelTypes: [String: (size: Int, signed: Bool)] = [
        "|u1": (1, false), "<u1": (1, false), "|i1": (1, true), "<i1": (1, true),
        "<u2": (2, false), "<i2": (2, true), "<u4": (4, false), "<i4": (4, true), "<u8": (8, false), "<i8": (8, true),
    ]

    /// Loads an image array and, if given, its labels.
    public static func load(images: URL, labels: URL?, limits: ImageLimits = .default) throws(ImageDataError) -> ImageSet {
        let name = images.lastPathComponent
        let (prefix, fileSize, _) = try ImageLoaders.readPrefix(images, maxBytes: maxPreamble)
        let header = try parseHeader(prefix, name: name)
        let geometry = try imageGeometry(header, name: name, limits: limits)
        let total = header.dataOffset + geometry.dataBytes
        try checkLength(fileSize, total, header, name: name)
        let bytes = try ImageLoaders.readPrefix(images, maxBytes: total).bytes
        try checkLength(bytes.count, total, header, name: name)
        let set = try decodeImages(bytes, header, geometry, name: name)
        guard let labels else { return set }
        let l = try loadLabels(labels, limits: limits)
        guard l.count == set.count else {
            throw ImageDataError(file: labels.lastPathComponent, "\(l.count) labels for the \(set.count) images of \(name)")
        }
        return try ImageSet(channels: set.channels, height: set.height, width: set.width, pixels: set.pixels, labels: l)
    }

    /// Decodes the bytes of an image `.npy` file (no labels); `name` is used in errors.
    public static func loadImages(bytes: [UInt8], name: String, limits: ImageLimits = .default) throws(ImageDataError) -> ImageSet {
        let header = try parseHeader(bytes, name: name)
        let geometry = try imageGeometry(header, name: name, limits: limits)
        try checkLength(bytes.count, header.dataOffset + geometry.dataBytes, header, name: name)
        return try decodeImages(bytes, header, geometry, name: name)
    }

    /// Loads a label `.npy` file.
    public static func loadLabels(_ url: URL, limits: ImageLimits = .default) throws(ImageDataError) -> [Int32] {
        let name = url.lastPathComponent
        let (prefix, fileSize, _) = try ImageLoaders.readPrefix(url, maxBytes: maxPreamble)
        let header = try parseHeader(prefix, name: name)
        let (count, itemSize, _) = try labelGeometry(header, name: name, limits: limits)
        let total = header.dataOffset + count * itemSize
        try checkLength(fileSize, total, header, name: name)
        let bytes = try ImageLoaders.readPrefix(url, maxBytes: total).bytes
        return try decodeLabels(bytes, header, name: name, limits: limits)
    }

    /// Decodes the bytes of a label `.npy` file; `name` is used in errors.
    public static func loadLabels(bytes: [UInt8], name: String, limits: ImageLimits = .default) throws(ImageDataError) -> [Int32] {
        try decodeLabels(bytes, try parseHeader(bytes, name: name), name: name, limits: limits)
    }

    /// Reads only the header of an `.npy` file.
    public static func readHeader(_ url: URL) throws(ImageDataError) -> Header {
        try parseHeader(try ImageLoaders.readPrefix(url, maxBytes: maxPreamble).bytes, name: url.lastPathComponent)
    }

    /// The image geometry an `.npy` header describes, checked against `limits`.
    struct Geometry {
        var count: Int, channels: Int, height: Int, width: Int, isFloat: Bool
        var dataBytes: Int { count * channels * height * width * (isFloat ? 4 : 1) }
    }

    static func imageGeometry(_ h: Header, name: String, limits: ImageLimits) throws(ImageDataError) -> Geometry {
        func fail(_ at: Int, _ m: String) -> ImageDataError { ImageDataError(file: name, offset: at, m) }
        let isFloat: Bool
        switch h.descr {
        case "|u1", "<u1": isFloat = false
        case "<f4": isFloat = true
        default: throw fail(h.descrOffset, "unsupported image dtype '\(h.descr)' (only '|u1' and '<f4')")
        }
        let s = h.shape
        let shapeText = "(" + s.map(String.init).joined(separator: ", ") + ")"
        let g: Geometry
        switch s.count {
        case 3: g = Geometry(count: s[0], channels: 1, height: s[1], width: s[2], isFloat: isFloat)
        case 4:
            guard s[1] == 1 || s[1] == 3 else {
                if s[3] == 1 || s[3] == 3 {
                    throw fail(h.shapeOffset, "shape \(shapeText) looks channels-last (N, H, W, C); store images as (N, C, H, W) with C = 1 or 3")
                }
                throw fail(h.shapeOffset, "shape \(shapeText): \(s[1]) channels (only 1 or 3)")
            }
            g = Geometry(count: s[0], channels: s[1], height: s[2], width: s[3], isFloat: isFloat)
        default:
            throw fail(h.shapeOffset, "image arrays must have shape (N, H, W) or (N, C, H, W), got \(shapeText)")
        }
        try limits.check(count: g.count, channels: g.channels, height: g.height, width: g.width,
                         bytesPerValue: isFloat ? 4 : 1, file: name)
        return g
    }

    static func labelGeometry(_ h: Header, name: String, limits: ImageLimits) throws(ImageDataError) -> (count: Int, itemSize: Int, signed: Bool) {
        guard let t = labelTypes[h.descr] else {
            throw ImageDataError(file: name, offset: h.descrOffset,
                                 "unsupported label dtype '\(h.descr)' (an integer type: |u1, |i1, <u2, <i2, <u4, <i4, <u8, <i8)")
        }
        guard h.shape.count == 1 else {
            throw ImageDataError(file: name, offset: h.shapeOffset,
                                 "label arrays must have shape (N,), got (\(h.shape.map(String.init).joined(separator: ", ")))")
        }
        let n = h.shape[0]
        guard n >= 1 else { throw ImageDataError(file: name, offset: h.shapeOffset, "holds no labels") }
        guard n <= limits.maxImages else {
            throw ImageDataError(file: name, offset: h.shapeOffset, "\(n) labels exceed the limit of \(limits.maxImages) images")
        }
        guard n.multipliedReportingOverflow(by: t.size).overflow == false else {
            throw ImageDataError(file: name, offset: h.shapeOffset, "\(n) labels are too many")
        }
        return (n, t.size, t.signed)
    }

    static func checkLength(_ available: Int, _ total: Int, _ h: Header, name: String) throws(ImageDataError) {
        if available < total {
            throw ImageDataError(file: name, offset: available,
                                 "truncated data: shape (\(h.shape.map(String.init).joined(separator: ", "))) of '\(h.descr)' needs \(total - h.dataOffset) bytes, \(max(0, available - h.dataOffset)) present")
        }
        if available > total {
            throw ImageDataError(file: name, offset: total, "\(available - total) unexpected bytes after the data")
        }
    }

    static func decodeImages(_ bytes: [UInt8], _ h: Header, _ g: Geometry, name: String) throws(ImageDataError) -> ImageSet {
        let start = h.dataOffset
        let n = g.count * g.channels * g.height * g.width
        if !g.isFloat {
            return try ImageSet(channels: g.channels, height: g.height, width: g.width, pixels: .bytes(Array(bytes[start..<(start + n)])))
        }
        var values = [Float](repeating: 0, count: n)
        var bad: Int?
        values.withUnsafeMutableBufferPointer { out in
            bytes.withUnsafeBufferPointer { src in
                let p = src.baseAddress! + start
                for k in 0..<n {
                    let bits = UInt32(p[4 * k]) | UInt32(p[4 * k + 1]) << 8 | UInt32(p[4 * k + 2]) << 16 | UInt32(p[4 * k + 3]) << 24
                    let v = Float(bitPattern: bits)
                    guard v >= 0 && v <= 1 else { bad = k; return }
                    out[k] = 2 * v - 1
                }
            }
        }
        if let k = bad {
            let at = start + 4 * k
            let v = Float(bitPattern: UInt32(bytes[at]) | UInt32(bytes[at + 1]) << 8 | UInt32(bytes[at + 2]) << 16 | UInt32(bytes[at + 3]) << 24)
            let hw = g.height * g.width, chw = g.channels * hw
            throw ImageDataError(file: name, offset: at,
                                 "value \(v) at image \(k / chw), channel \(k % chw / hw), row \(k % hw / g.width), column \(k % g.width) (element \(k)) is outside [0, 1] (float32 images must be in [0, 1])")
        }
        return try ImageSet(channels: g.channels, height: g.height, width: g.width, pixels: .floats(values))
    }

    static func decodeLabels(_ bytes: [UInt8], _ h: Header, name: String, limits: ImageLimits) throws(ImageDataError) -> [Int32] {
        let (n, size, signed) = try labelGeometry(h, name: name, limits: limits)
        try checkLength(bytes.count, h.dataOffset + n * size, h, name: name)
        var raw = [Int64](repeating: 0, count: n)
        for k in 0..<n {
            let at = h.dataOffset + k * size
            var bits: UInt64 = 0
            for b in 0..<size { bits |= UInt64(bytes[at + b]) << (8 * UInt64(b)) }
            if signed && size < 8 && bits >> (8 * UInt64(size) - 1) & 1 == 1 { bits |= ~0 << (8 * UInt64(size)) }
            // An unsigned 64-bit value above Int64.max reads as negative and is refused as out of range.
            raw[k] = Int64(bitPattern: bits)
        }
        return try ImageLoaders.checkLabels(raw, file: name) { h.dataOffset + $0 * size }
    }

    /// Parses the preamble and header of an NPY file (the data need not be present), with the
    /// checks the point and array readers share (``PointFiles``).
    static func parseHeader(_ bytes: [UInt8], name: String) throws(ImageDataError) -> Header {
        let h: PointFiles.NPYHeader
        do { h = try PointFiles.npyHeader(bytes, name: name) } catch {
            throw ImageDataError(file: name, offset: error.byteOffset, error.message)
        }
        if h.descr.hasPrefix(">") { throw ImageDataError(file: name, offset: h.descrOffset, "big-endian dtype '\(h.descr)' is not supported") }
        return Header(descr: h.descr, shape: h.shape, dataOffset: h.dataStart, descrOffset: h.descrOffset, shapeOffset: h.shapeOffset)
    }

}
