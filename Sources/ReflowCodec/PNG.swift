/// PNG (ISO/IEC 15948, W3C PNG 2nd ed.) for 8-bit images: an encoder (this file) and a strict
/// decoder (`PNGDecoder.swift`).
///
/// Encoded files are complete and valid: signature, `IHDR`, optional `tEXt` chunks, one or more
/// `IDAT` chunks carrying a zlib stream of the scanlines (each prefixed with filter type 0,
/// "None"), and `IEND`. Chunk CRCs are CRC-32 over type + data, as the spec requires.
public enum PNG {
    /// The 8-byte PNG file signature.
    public static let signature: [UInt8] = [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A]
    /// The spec limits width, height and chunk length to 2^31 − 1.
    public static let maxDimension = Int(Int32.max)
    /// IDAT payloads are split at this size (any split is valid; decoders concatenate them).
    static let idatChunkSize = 1 << 20
    /// Largest `tEXt` value accepted by the encoder, in bytes.
    public static let maxTextValueBytes = 1 << 20
    /// Largest picture ``encodeGrid(images:channels:height:width:columns:padding:upscale:background:text:compressionLevel:)``
    /// draws: 64 megapixels (192 MB of RGB), so a hostile request cannot allocate gigabytes.
    public static let maxGridPixels = 1 << 26

    /// An 8-bit image: `width · height` pixels of `channels` interleaved bytes, row-major.
    ///
    /// Channels: 1 gray, 2 gray + alpha, 3 RGB, 4 RGBA (the PNG color types 0, 4, 2 and 6).
    public struct Image: Sendable, Equatable {
        public var width: Int
        public var height: Int
        public var channels: Int
        /// Row-major interleaved bytes, `width · height · channels` of them.
        public var pixels: [UInt8]

        /// Checks that the geometry is positive, `channels` is 1...4 and the byte count matches.
        public init(width: Int, height: Int, channels: Int, pixels: [UInt8]) throws(CodecError) {
            guard width > 0, height > 0, width <= PNG.maxDimension, height <= PNG.maxDimension else {
                throw CodecError.input("PNG.Image", "width and height must be in 1...\(PNG.maxDimension), got \(width)x\(height)")
            }
            guard (1...4).contains(channels) else {
                throw CodecError.input("PNG.Image", "channels must be 1 (gray), 2 (gray+alpha), 3 (RGB) or 4 (RGBA), got \(channels)")
            }
            let (a, o1) = width.multipliedReportingOverflow(by: height)
            let (n, o2) = a.multipliedReportingOverflow(by: channels)
            guard !o1, !o2, pixels.count == n else {
                throw CodecError.input("PNG.Image", "\(width)x\(height)x\(channels) needs \(o1 || o2 ? "too many" : String(n)) bytes, got \(pixels.count)")
            }
            self.width = width
            self.height = height
            self.channels = channels
            self.pixels = pixels
        }

        /// Unchecked: for the decoder and converters, whose geometry is already valid.
        init(uncheckedWidth width: Int, height: Int, channels: Int, pixels: [UInt8]) {
            self.width = width
            self.height = height
            self.channels = channels
            self.pixels = pixels
        }

        /// Whether the image has an alpha channel (2 or 4 channels).
        public var hasAlpha: Bool { channels == 2 || channels == 4 }

        /// The image as gray (`channels` 1) or RGB (`channels` 3).
        ///
        /// **Alpha is dropped**, not composited: a transparent pixel keeps the colour stored under
        /// it (as PIL's `convert("RGB")` and torchvision's `ImageFolder` do). Gray becomes RGB by
        /// replication; RGB becomes gray by the ITU-R BT.601 luma in fixed point,
        /// `(19595·R + 38470·G + 7471·B + 32768) >> 16` (PIL's `convert("L")`).
        ///
        /// - Throws: ``CodecError`` (source `.input`) when `channels` is not 1 or 3.
        public func converted(toChannels target: Int) throws(CodecError) -> Image {
            guard target == 1 || target == 3 else {
                throw CodecError.input("PNG.Image.converted", "target channels must be 1 (gray) or 3 (RGB), got \(target)")
            }
            if target == channels { return self }
            let count = width * height
            var out = [UInt8](repeating: 0, count: count * target)
            let c = channels
            pixels.withUnsafeBufferPointer { src in
                out.withUnsafeMutableBufferPointer { dst in
                    for i in 0..<count {
                        let s = i * c
                        if target == 1 {
                            if c <= 2 {
                                dst[i] = src[s]
                            } else {
                                let y = 19595 * UInt32(src[s]) + 38470 * UInt32(src[s + 1]) + 7471 * UInt32(src[s + 2]) + 32768
                                dst[i] = UInt8(truncatingIfNeeded: y >> 16)
                            }
                        } else if c <= 2 {
                            let g = src[s]
                            dst[3 * i] = g; dst[3 * i + 1] = g; dst[3 * i + 2] = g
                        } else {
                            dst[3 * i] = src[s]; dst[3 * i + 1] = src[s + 1]; dst[3 * i + 2] = src[s + 2]
                        }
                    }
                }
            }
            return Image(uncheckedWidth: width, height: height, channels: target, pixels: out)
        }
    }

    // MARK: Encoding

    /// Encodes an 8-bit-per-channel RGB image (color type 2).
    ///
    /// - Parameters:
    ///   - width: Pixels per row, `1...2^31-1`.
    ///   - height: Rows, `1...2^31-1`.
    ///   - pixels: Row-major `R, G, B` bytes; exactly `width * height * 3` of them.
    ///   - compressionLevel: zlib level `0...9` or `-1` (default `6`).
    ///   - text: `tEXt` chunks as (keyword, value) pairs, written in order before the image data.
    ///     Keywords are 1–79 printable Latin-1 characters without leading, trailing or double
    ///     spaces; values are Latin-1 (no NUL, no control characters except line feed).
    /// - Throws: ``CodecError`` (source `.input`) for invalid dimensions, pixel count or text.
    public static func encodeRGB(width: Int, height: Int, pixels: [UInt8], compressionLevel: Int = 6,
                                 text: [(String, String)] = []) throws(CodecError) -> [UInt8] {
        try encode(width: width, height: height, channels: 3, pixels: pixels,
                   level: compressionLevel, text: text, operation: "PNG.encodeRGB")
    }

    /// Encodes an 8-bit grayscale image (color type 0).
    ///
    /// - Parameters:
    ///   - width: Pixels per row, `1...2^31-1`.
    ///   - height: Rows, `1...2^31-1`.
    ///   - pixels: Row-major luminance bytes; exactly `width * height` of them.
    ///   - compressionLevel: zlib level `0...9` or `-1` (default `6`).
    ///   - text: `tEXt` chunks as (keyword, value) pairs; see ``encodeRGB(width:height:pixels:compressionLevel:text:)``.
    /// - Throws: ``CodecError`` (source `.input`) for invalid dimensions, pixel count or text.
    public static func encodeGray(width: Int, height: Int, pixels: [UInt8], compressionLevel: Int = 6,
                                  text: [(String, String)] = []) throws(CodecError) -> [UInt8] {
        try encode(width: width, height: height, channels: 1, pixels: pixels,
                   level: compressionLevel, text: text, operation: "PNG.encodeGray")
    }

    /// Encodes an ``Image`` of any channel count (gray, gray + alpha, RGB, RGBA) at 8 bits.
    ///
    /// - Throws: ``CodecError`` (source `.input`) for an inconsistent image or invalid text.
    public static func encode(_ image: Image, compressionLevel: Int = 6,
                              text: [(String, String)] = []) throws(CodecError) -> [UInt8] {
        guard (1...4).contains(image.channels) else {
            throw CodecError.input("PNG.encode", "channels must be 1...4, got \(image.channels)")
        }
        return try encode(width: image.width, height: image.height, channels: image.channels, pixels: image.pixels,
                          level: compressionLevel, text: text, operation: "PNG.encode")
    }

    /// Tiles same-sized images into one picture and encodes it (gray for 1 channel, RGB for 3).
    ///
    /// Images are placed row-major, `min(columns, images.count)` per row, each upscaled by an
    /// integer nearest-neighbour factor, with `padding` background pixels between tiles and
    /// around the border. The picture is
    /// `padding + cols·(width·upscale + padding)` wide and
    /// `padding + rows·(height·upscale + padding)` tall, with `rows = ⌈count / cols⌉`;
    /// cells after the last image stay background.
    ///
    /// - Parameters:
    ///   - images: Each image as planar C×H×W bytes (one NCHW sample, as models produce them).
    ///   - channels: C, 1 or 3.
    ///   - height: H of every image.
    ///   - width: W of every image.
    ///   - columns: Tiles per row, at least 1.
    ///   - padding: Background pixels between and around tiles, `0...1024`.
    ///   - upscale: Nearest-neighbour factor, `1...64`.
    ///   - background: Value of padding and empty cells (every channel).
    ///   - text: `tEXt` chunks; see ``encodeRGB(width:height:pixels:compressionLevel:text:)``.
    ///   - compressionLevel: zlib level `0...9` or `-1`.
    /// - Throws: ``CodecError`` (source `.input`) for bad arguments, an image with the wrong byte
    ///   count, or a picture over ``maxGridPixels``.
    public static func encodeGrid(images: [[UInt8]], channels: Int, height: Int, width: Int, columns: Int,
                                  padding: Int = 2, upscale: Int = 1, background: UInt8 = 255,
                                  text: [(String, String)] = [], compressionLevel: Int = 6) throws(CodecError) -> [UInt8] {
        let op = "PNG.encodeGrid"
        guard !images.isEmpty else { throw CodecError.input(op, "no images to tile") }
        guard channels == 1 || channels == 3 else {
            throw CodecError.input(op, "channels must be 1 (gray) or 3 (RGB), got \(channels)")
        }
        guard height >= 1, width >= 1, height <= maxDimension, width <= maxDimension else {
            throw CodecError.input(op, "image size must be positive, got \(height)x\(width) (height x width)")
        }
        guard columns >= 1 else { throw CodecError.input(op, "columns must be at least 1, got \(columns)") }
        guard (0...1024).contains(padding) else { throw CodecError.input(op, "padding must be 0...1024, got \(padding)") }
        guard (1...64).contains(upscale) else { throw CodecError.input(op, "upscale must be 1...64, got \(upscale)") }

        let (plane, o0) = height.multipliedReportingOverflow(by: width)
        let (per, o1) = plane.multipliedReportingOverflow(by: channels)
        guard !o0, !o1 else { throw CodecError.input(op, "image size \(height)x\(width) is too large") }
        for (i, img) in images.enumerated() where img.count != per {
            throw CodecError.input(op, "image \(i) has \(img.count) bytes; \(channels)x\(height)x\(width) needs \(per)")
        }
        let cols = min(columns, images.count)
        let rows = (images.count + cols - 1) / cols
        // Overflow-checked geometry; the pixel cap is enforced before any allocation.
        func span(_ count: Int, _ side: Int) -> Int? {
            let (scaled, a) = side.multipliedReportingOverflow(by: upscale)
            let (cell, b) = scaled.addingReportingOverflow(padding)
            let (all, c) = cell.multipliedReportingOverflow(by: count)
            let (total, d) = all.addingReportingOverflow(padding)
            return a || b || c || d ? nil : total
        }
        guard let outW = span(cols, width), let outH = span(rows, height),
              case let (pixels, o2) = outW.multipliedReportingOverflow(by: outH), !o2, pixels <= maxGridPixels else {
            throw CodecError.input(op, "\(images.count) tiles of \(height)x\(width) upscaled \(upscale)x in \(cols) columns "
                                   + "exceed the limit of \(maxGridPixels) pixels")
        }

        var out = [UInt8](repeating: background, count: pixels * channels)
        let cellW = width * upscale + padding, cellH = height * upscale + padding
        out.withUnsafeMutableBufferPointer { dst in
            for (n, img) in images.enumerated() {
                let x0 = padding + (n % cols) * cellW
                let y0 = padding + (n / cols) * cellH
                img.withUnsafeBufferPointer { src in
                    for y in 0..<(height * upscale) {
                        let sy = y / upscale
                        var d = ((y0 + y) * outW + x0) * channels
                        for x in 0..<(width * upscale) {
                            let s = sy * width + x / upscale
                            for c in 0..<channels { dst[d + c] = src[c * plane + s] }
                            d += channels
                        }
                    }
                }
            }
        }
        return try encode(width: outW, height: outH, channels: channels, pixels: out,
                          level: compressionLevel, text: text, operation: op)
    }

    private static func colorType(channels: Int) -> UInt8 {
        switch channels {
        case 1: return 0
        case 2: return 4
        case 3: return 2
        default: return 6
        }
    }

    private static func encode(width: Int, height: Int, channels: Int, pixels: [UInt8],
                               level: Int, text: [(String, String)], operation: String) throws(CodecError) -> [UInt8] {
        guard width > 0, height > 0, width <= maxDimension, height <= maxDimension else {
            throw CodecError.input(operation, "width and height must be in 1...\(maxDimension), got \(width)x\(height)")
        }
        let (rowBytes, o1) = width.multipliedReportingOverflow(by: channels)
        let (stride, o2) = rowBytes.addingReportingOverflow(1)  // + filter-type byte
        let (rawSize, o3) = stride.multipliedReportingOverflow(by: height)
        let (expected, o4) = rowBytes.multipliedReportingOverflow(by: height)
        guard !(o1 || o2 || o3 || o4) else {
            throw CodecError.input(operation, "image \(width)x\(height) is too large")
        }
        guard pixels.count == expected else {
            throw CodecError.input(operation,
                                   "\(width)x\(height)x\(channels) needs \(expected) bytes, got \(pixels.count)")
        }
        let textChunks = try text.map { (k, v) throws(CodecError) in try textChunk(keyword: k, value: v, operation: operation) }

        // Scanlines: filter type 0 ("None") then the row's bytes.
        var raw = [UInt8](repeating: 0, count: rawSize)
        raw.withUnsafeMutableBufferPointer { dst in
            pixels.withUnsafeBufferPointer { src in
                for y in 0..<height {
                    let d = y * stride
                    dst[d] = 0
                    _ = UnsafeMutableBufferPointer(rebasing: dst[(d + 1)..<(d + stride)])
                        .update(fromContentsOf: src[(y * rowBytes)..<((y + 1) * rowBytes)])
                }
            }
        }
        let compressed: [UInt8]
        do {
            compressed = try raw.withUnsafeBufferPointer {
                try ZlibStream.deflate($0, level: level, windowBits: 15, operation: operation)
            }
        } catch let e as CodecError {
            throw e
        } catch {
            throw CodecError(operation: operation, source: .zlib, detail: "\(error)")
        }

        var out = signature
        out.reserveCapacity(compressed.count + 64 + textChunks.reduce(0) { $0 + $1.count + 12 })
        var ihdr: [UInt8] = []
        appendBE32(&ihdr, UInt32(width))
        appendBE32(&ihdr, UInt32(height))
        ihdr += [8, colorType(channels: channels), 0, 0, 0]  // depth 8, compression 0, filter method 0, no interlace
        appendChunk(&out, "IHDR", ihdr[...])
        for chunk in textChunks { appendChunk(&out, "tEXt", chunk[...]) }
        var start = 0
        repeat {
            let end = min(start + idatChunkSize, compressed.count)
            appendChunk(&out, "IDAT", compressed[start..<end])
            start = end
        } while start < compressed.count
        appendChunk(&out, "IEND", [][...])
        return out
    }

    /// The data of a `tEXt` chunk: Latin-1 keyword, NUL, Latin-1 value (PNG spec §11.3.4.3).
    static func textChunk(keyword: String, value: String, operation: String) throws(CodecError) -> [UInt8] {
        var data: [UInt8] = []
        for s in keyword.unicodeScalars {
            guard (32...126).contains(s.value) || (161...255).contains(s.value) else {
                throw CodecError.input(operation, "tEXt keyword '\(keyword)': character U+\(String(s.value, radix: 16, uppercase: true)) "
                                       + "is not printable Latin-1")
            }
            data.append(UInt8(s.value))
        }
        guard (1...79).contains(data.count) else {
            throw CodecError.input(operation, "tEXt keyword '\(keyword)' must be 1-79 bytes, got \(data.count)")
        }
        guard data.first != 32, data.last != 32, !zip(data, data.dropFirst()).contains(where: { $0 == 32 && $1 == 32 }) else {
            throw CodecError.input(operation, "tEXt keyword '\(keyword)' has leading, trailing or consecutive spaces")
        }
        data.append(0)
        var valueBytes = 0
        for s in value.unicodeScalars {
            guard s.value <= 255 else {
                throw CodecError.input(operation, "tEXt value for '\(keyword)': character U+\(String(s.value, radix: 16, uppercase: true)) "
                                       + "is not Latin-1")
            }
            guard s.value == 10 || !(s.value < 32 || (127...159).contains(s.value)) else {
                throw CodecError.input(operation, "tEXt value for '\(keyword)': control character U+\(String(s.value, radix: 16, uppercase: true)) "
                                       + "(only line feed is allowed)")
            }
            valueBytes += 1
            guard valueBytes <= maxTextValueBytes else {
                throw CodecError.input(operation, "tEXt value for '\(keyword)' is longer than \(maxTextValueBytes) bytes")
            }
            data.append(UInt8(s.value))
        }
        return data
    }

    static func appendBE32(_ out: inout [UInt8], _ v: UInt32) {
        out += [UInt8(v >> 24), UInt8((v >> 16) & 0xff), UInt8((v >> 8) & 0xff), UInt8(v & 0xff)]
    }

    private static func appendChunk(_ out: inout [UInt8], _ type: StaticString, _ data: ArraySlice<UInt8>) {
        let typeBytes = type.withUTF8Buffer { Array($0) }
        appendBE32(&out, UInt32(data.count))  // <= max(idatChunkSize, tEXt cap), far below 2^31-1
        out += typeBytes
        out += data
        var crc = typeBytes.withUnsafeBufferPointer { ZlibStream.crc32(0, $0) }
        crc = data.withUnsafeBufferPointer { ZlibStream.crc32(crc, $0) }
        appendBE32(&out, crc)
    }
}
