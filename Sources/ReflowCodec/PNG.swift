/// Minimal PNG (ISO/IEC 15948, W3C PNG 2nd ed.) encoder for 8-bit RGB and grayscale images.
///
/// The output is a complete, valid file: signature, `IHDR`, one or more `IDAT` chunks carrying a
/// zlib stream of the scanlines (each prefixed with filter type 0, "None"), and `IEND`. Chunk CRCs
/// are CRC-32 over type + data, as the spec requires.
public enum PNG {
    /// The 8-byte PNG file signature.
    public static let signature: [UInt8] = [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A]
    /// The spec limits width, height and chunk length to 2^31 − 1.
    public static let maxDimension = Int(Int32.max)
    /// IDAT payloads are split at this size (any split is valid; decoders concatenate them).
    static let idatChunkSize = 1 << 20

    /// Encodes an 8-bit-per-channel RGB image (color type 2).
    ///
    /// - Parameters:
    ///   - width: Pixels per row, `1...2^31-1`.
    ///   - height: Rows, `1...2^31-1`.
    ///   - pixels: Row-major `R, G, B` bytes; exactly `width * height * 3` of them.
    ///   - compressionLevel: zlib level `0...9` or `-1` (default `6`).
    /// - Throws: ``CodecError`` (source `.input`) for invalid dimensions or pixel count.
    public static func encodeRGB(width: Int, height: Int, pixels: [UInt8], compressionLevel: Int = 6) throws -> [UInt8] {
        try encode(width: width, height: height, channels: 3, colorType: 2, pixels: pixels,
                   level: compressionLevel, operation: "PNG.encodeRGB")
    }

    /// Encodes an 8-bit grayscale image (color type 0).
    ///
    /// - Parameters:
    ///   - width: Pixels per row, `1...2^31-1`.
    ///   - height: Rows, `1...2^31-1`.
    ///   - pixels: Row-major luminance bytes; exactly `width * height` of them.
    ///   - compressionLevel: zlib level `0...9` or `-1` (default `6`).
    /// - Throws: ``CodecError`` (source `.input`) for invalid dimensions or pixel count.
    public static func encodeGray(width: Int, height: Int, pixels: [UInt8], compressionLevel: Int = 6) throws -> [UInt8] {
        try encode(width: width, height: height, channels: 1, colorType: 0, pixels: pixels,
                   level: compressionLevel, operation: "PNG.encodeGray")
    }

    private static func encode(width: Int, height: Int, channels: Int, colorType: UInt8, pixels: [UInt8],
                               level: Int, operation: String) throws -> [UInt8] {
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
        let compressed = try raw.withUnsafeBufferPointer {
            try ZlibStream.deflate($0, level: level, windowBits: 15, operation: operation)
        }

        var out = signature
        out.reserveCapacity(compressed.count + 64)
        var ihdr: [UInt8] = []
        appendBE32(&ihdr, UInt32(width))
        appendBE32(&ihdr, UInt32(height))
        ihdr += [8, colorType, 0, 0, 0]  // bit depth 8, compression 0, filter method 0, no interlace
        appendChunk(&out, "IHDR", ihdr[...])
        var start = 0
        repeat {
            let end = min(start + idatChunkSize, compressed.count)
            appendChunk(&out, "IDAT", compressed[start..<end])
            start = end
        } while start < compressed.count
        appendChunk(&out, "IEND", [][...])
        return out
    }

    private static func appendBE32(_ out: inout [UInt8], _ v: UInt32) {
        out += [UInt8(v >> 24), UInt8((v >> 16) & 0xff), UInt8((v >> 8) & 0xff), UInt8(v & 0xff)]
    }

    private static func appendChunk(_ out: inout [UInt8], _ type: StaticString, _ data: ArraySlice<UInt8>) {
        let typeBytes = type.withUTF8Buffer { Array($0) }
        appendBE32(&out, UInt32(data.count))  // <= idatChunkSize, far below 2^31-1
        out += typeBytes
        out += data
        var crc = typeBytes.withUnsafeBufferPointer { ZlibStream.crc32(0, $0) }
        crc = data.withUnsafeBufferPointer { ZlibStream.crc32(crc, $0) }
        appendBE32(&out, crc)
    }
}
