/// A strict decoder for 8-bit, non-interlaced PNG files.
///
/// **Accepted:** bit depth 8; color types 0 (gray), 2 (RGB), 4 (gray + alpha) and 6 (RGBA);
/// compression and filter method 0; no interlacing; all five scanline filters (None, Sub, Up,
/// Average, Paeth).
///
/// **Refused, each with an error that says what is wrong and where:** a bad signature; a first
/// chunk other than a 13-byte `IHDR`; a wrong CRC on *any* chunk; other bit depths (1, 2, 4, 16);
/// palette images (color type 3: re-save as RGB or gray); Adam7 interlacing; a width or height
/// over ``PNG/DecodeLimits`` (checked before anything proportional to the image is allocated);
/// unknown *critical* chunks (ancillary chunks such as `tEXt`, `gAMA`, `pHYs` are skipped after
/// their CRC is checked); a `PLTE` in a gray image; non-consecutive `IDAT` chunks; image data that
/// is not a zlib stream, inflates to more or fewer bytes than the scanlines need (a zlib bomb
/// fails as soon as its output passes the expected size), or has bytes after its end; an
/// unknown filter type on a row; a missing `IEND`; and **any bytes after `IEND`** (trailing data is
/// refused, not ignored, like every other codec in reflowd).
extension PNG {
    /// Caps on the images ``decode(_:limits:)`` accepts, checked against `IHDR` before any
    /// allocation proportional to the image.
    public struct DecodeLimits: Sendable, Equatable {
        /// Largest width or height.
        public var maxSide: Int
        /// Largest `width · height`.
        public var maxPixels: Int

        /// Defaults: 16384 pixels per side, 64 megapixels (256 MB of RGBA).
        public init(maxSide: Int = 16_384, maxPixels: Int = 1 << 26) {
            self.maxSide = maxSide
            self.maxPixels = maxPixels
        }

        public static let `default` = DecodeLimits()
    }

    /// The fields of a PNG's `IHDR` chunk, as ``readHeader(_:)`` found and validated them.
    public struct Header: Sendable, Equatable {
        public var width: Int
        public var height: Int
        /// Always 8 for a header ``readHeader(_:)`` accepts.
        public var bitDepth: Int
        /// 0 gray, 2 RGB, 4 gray + alpha, 6 RGBA.
        public var colorType: Int
        /// Interleaved bytes per pixel: 1, 3, 2 or 4 for color types 0, 2, 4, 6.
        public var channels: Int
    }

    /// Reads and validates the signature and `IHDR` (with its CRC) without touching the rest of
    /// the file, so callers can check dimensions before reading or decoding the image data.
    /// The first 33 bytes of a file are enough.
    ///
    /// - Throws: ``CodecError`` (source `.input`) for anything ``decode(_:limits:)`` would refuse
    ///   in the header (not a PNG, bad CRC, unsupported depth, palette, interlacing...).
    public static func readHeader(_ bytes: [UInt8]) throws(CodecError) -> Header {
        try readHeader(bytes[...], operation: "PNG.readHeader")
    }

    /// ``readHeader(_:)`` on a slice (a tar entry, for example); offsets count from its start.
    public static func readHeader(_ bytes: ArraySlice<UInt8>) throws(CodecError) -> Header {
        try readHeader(bytes, operation: "PNG.readHeader")
    }

    /// Decodes an 8-bit gray, gray + alpha, RGB or RGBA PNG (see the type's documentation for
    /// exactly what is accepted).
    ///
    /// - Returns: The pixels, row-major and interleaved, with `channels` 1, 2, 3 or 4. Use
    ///   ``Image/converted(toChannels:)`` for gray or RGB without alpha.
    /// - Throws: ``CodecError`` whose `detail` names the problem and, where it has one, the byte
    ///   offset: `bad CRC in chunk 'IDAT' at byte 57`.
    public static func decode(_ bytes: [UInt8], limits: DecodeLimits = .default) throws(CodecError) -> Image {
        try decode(bytes[...], limits: limits)
    }

    /// ``decode(_:limits:)`` on a slice (a tar entry, for example); offsets count from its start.
    public static func decode(_ bytes: ArraySlice<UInt8>, limits: DecodeLimits = .default) throws(CodecError) -> Image {
        let op = "PNG.decode"
        func fail(_ m: String) -> CodecError { CodecError.input(op, m) }
        let header = try readHeader(bytes, operation: op)
        let (w, h, bpp) = (header.width, header.height, header.channels)
        guard w <= limits.maxSide, h <= limits.maxSide else {
            throw fail("image is \(w)x\(h), over the limit of \(limits.maxSide) pixels per side")
        }
        let (pixelCount, o0) = w.multipliedReportingOverflow(by: h)
        guard !o0, pixelCount <= limits.maxPixels else {
            throw fail("image is \(w)x\(h), over the limit of \(limits.maxPixels) pixels")
        }
        let (rowBytes, o1) = w.multipliedReportingOverflow(by: bpp)
        let (stride, o2) = rowBytes.addingReportingOverflow(1)
        let (expected, o3) = stride.multipliedReportingOverflow(by: h)
        guard !o1, !o2, !o3 else { throw fail("image is \(w)x\(h), too large") }

        // Walk the chunks after IHDR, checking every CRC and collecting the IDAT payloads.
        let base = bytes.startIndex
        let total = bytes.count
        var at = 8 + 25
        var compressed: [UInt8] = []
        var sawIDAT = false, idatClosed = false, sawIEND = false
        while !sawIEND {
            let remaining = total - at
            guard remaining > 0 else { throw fail("file ends at byte \(at) without an IEND chunk") }
            guard remaining >= 12 else {
                throw fail("file is truncated: \(remaining) byte(s) at byte \(at) are not a whole chunk")
            }
            let length = Int(be32(bytes, base + at))
            guard length <= maxDimension else {
                throw fail("chunk at byte \(at) declares length \(length), over 2^31-1")
            }
            let typeBytes = Array(bytes[(base + at + 4)..<(base + at + 8)])
            guard typeBytes.allSatisfy({ (65...90).contains($0) || (97...122).contains($0) }) else {
                throw fail("invalid chunk type \(typeBytes) at byte \(at) (not four ASCII letters)")
            }
            let type = String(decoding: typeBytes, as: UTF8.self)
            guard length <= remaining - 12 else {
                throw fail("file is truncated: chunk '\(type)' at byte \(at) declares \(length) data bytes, "
                           + "but only \(remaining - 12) remain")
            }
            let data = bytes[(base + at + 8)..<(base + at + 8 + length)]
            try checkCRC(bytes, chunkAt: at, length: length, type: type, operation: op)
            switch type {
            case "IHDR":
                throw fail("second IHDR chunk at byte \(at)")
            case "IDAT":
                guard !idatClosed else { throw fail("IDAT chunks are not consecutive (another IDAT at byte \(at))") }
                sawIDAT = true
                compressed.append(contentsOf: data)
            case "IEND":
                guard length == 0 else { throw fail("IEND chunk at byte \(at) has \(length) data bytes, expected 0") }
                guard sawIDAT else { throw fail("no IDAT chunk before IEND at byte \(at)") }
                sawIEND = true
            case "PLTE":
                guard header.colorType == 2 || header.colorType == 6 else {
                    throw fail("PLTE chunk at byte \(at) is not allowed in a grayscale image")
                }
                guard !sawIDAT else { throw fail("PLTE chunk at byte \(at) comes after the image data") }
                // A suggested palette for a truecolor image: not needed to decode.
            default:
                guard typeBytes[0] & 0x20 != 0 else {
                    throw fail("unknown critical chunk '\(type)' at byte \(at)")
                }
                // Ancillary: safe to ignore.
            }
            if sawIDAT && type != "IDAT" { idatClosed = true }
            at += 12 + length
        }
        guard at == total else {
            throw fail("\(total - at) byte(s) after the IEND chunk (at byte \(at))")
        }

        // Inflate with a hard cap at the exact scanline size: a bomb fails after `expected` bytes.
        let raw: [UInt8]
        let kind = colorName(header.colorType)
        do {
            raw = try compressed.withUnsafeBufferPointer {
                try ZlibStream.inflate($0, windowBits: 15, maxOutputBytes: expected, operation: op)
            }
        } catch let e as CodecError {
            let need = "a \(w)x\(h) \(kind) image needs exactly \(expected) bytes of scanlines"
            if e.source == .input {
                throw fail("image data: \(e.detail) (\(need))")
            }
            throw CodecError(operation: op, source: e.source, code: e.code,
                             detail: "image data is not a valid zlib stream: \(e.detail) (\(need))")
        } catch {
            throw fail("image data: \(error)")
        }
        guard raw.count == expected else {
            throw fail("image data inflates to \(raw.count) bytes, but a \(w)x\(h) \(kind) image needs \(expected) "
                       + "(truncated image data)")
        }

        // Undo the per-row filters (PNG spec §9). Bytes to the left of the row and the row above
        // the first row count as 0.
        var pixels = [UInt8](repeating: 0, count: rowBytes * h)
        let zeroRow = [UInt8](repeating: 0, count: rowBytes)
        var badFilter: (row: Int, type: UInt8)?
        raw.withUnsafeBufferPointer { r in
            pixels.withUnsafeMutableBufferPointer { p in
                zeroRow.withUnsafeBufferPointer { z in
                    guard let rBase = r.baseAddress, let pBase = p.baseAddress, let zBase = z.baseAddress else { return }
                    for y in 0..<h {
                        let filter = rBase[y * stride]
                        let src = rBase + y * stride + 1
                        let dst = pBase + y * rowBytes
                        let up: UnsafePointer<UInt8> = y > 0 ? UnsafePointer(dst - rowBytes) : zBase
                        switch filter {
                        case 0:  // None
                            dst.update(from: src, count: rowBytes)
                        case 1:  // Sub
                            for i in 0..<min(bpp, rowBytes) { dst[i] = src[i] }
                            for i in bpp..<max(bpp, rowBytes) { dst[i] = src[i] &+ dst[i - bpp] }
                        case 2:  // Up
                            for i in 0..<rowBytes { dst[i] = src[i] &+ up[i] }
                        case 3:  // Average: floor((left + above) / 2)
                            for i in 0..<min(bpp, rowBytes) { dst[i] = src[i] &+ (up[i] >> 1) }
                            for i in bpp..<max(bpp, rowBytes) {
                                dst[i] = src[i] &+ UInt8((Int(dst[i - bpp]) + Int(up[i])) >> 1)
                            }
                        case 4:  // Paeth (with left = upper-left = 0 it picks above)
                            for i in 0..<min(bpp, rowBytes) { dst[i] = src[i] &+ up[i] }
                            for i in bpp..<max(bpp, rowBytes) {
                                let p = paeth(Int(dst[i - bpp]), Int(up[i]), Int(up[i - bpp]))
                                dst[i] = src[i] &+ UInt8(truncatingIfNeeded: p)
                            }
                        default:
                            badFilter = (y, filter)
                            return
                        }
                    }
                }
            }
        }
        if let badFilter {
            throw fail("unknown filter type \(badFilter.type) on row \(badFilter.row) (valid: 0...4)")
        }
        return Image(uncheckedWidth: w, height: h, channels: bpp, pixels: pixels)
    }

    /// The Paeth predictor (PNG spec §9.4): whichever of left, above, upper-left is closest to
    /// `left + above − upper-left`, ties broken in that order.
    @inline(__always)
    static func paeth(_ a: Int, _ b: Int, _ c: Int) -> Int {
        let p = a + b - c
        let pa = abs(p - a), pb = abs(p - b), pc = abs(p - c)
        if pa <= pb && pa <= pc { return a }
        return pb <= pc ? b : c
    }

    private static func colorName(_ colorType: Int) -> String {
        switch colorType {
        case 0: return "gray"
        case 2: return "RGB"
        case 4: return "gray+alpha"
        default: return "RGBA"
        }
    }

    private static func be32(_ b: ArraySlice<UInt8>, _ i: Int) -> UInt32 {
        UInt32(b[i]) << 24 | UInt32(b[i + 1]) << 16 | UInt32(b[i + 2]) << 8 | UInt32(b[i + 3])
    }

    /// Checks the CRC of the chunk at offset `at` (relative to the slice start).
    private static func checkCRC(_ bytes: ArraySlice<UInt8>, chunkAt at: Int, length: Int, type: String,
                                 operation: String) throws(CodecError) {
        let base = bytes.startIndex
        let covered = bytes[(base + at + 4)..<(base + at + 8 + length)]  // type + data
        let computed = covered.withUnsafeBufferPointer { ZlibStream.crc32(0, $0) }
        let stored = be32(bytes, base + at + 8 + length)
        guard computed == stored else {
            throw CodecError.input(operation, "bad CRC in chunk '\(type)' at byte \(at)")
        }
    }

    static func readHeader(_ bytes: ArraySlice<UInt8>, operation op: String) throws(CodecError) -> Header {
        func fail(_ m: String) -> CodecError { CodecError.input(op, m) }
        let base = bytes.startIndex
        guard bytes.count >= 8, bytes[base..<(base + 8)].elementsEqual(signature) else {
            throw fail("not a PNG file (the first 8 bytes are not the PNG signature)")
        }
        guard bytes.count >= 8 + 25 else {
            throw fail("file is truncated: \(bytes.count) bytes, too short for the signature and IHDR")
        }
        let typeBytes = Array(bytes[(base + 12)..<(base + 16)])
        guard typeBytes == Array("IHDR".utf8) else {
            let shown = typeBytes.allSatisfy({ (32...126).contains($0) }) ? "'\(String(decoding: typeBytes, as: UTF8.self))'" : "\(typeBytes)"
            throw fail("the first chunk is \(shown), expected IHDR")
        }
        let length = be32(bytes, base + 8)
        guard length == 13 else { throw fail("IHDR at byte 8 has length \(length), expected 13") }
        try checkCRC(bytes, chunkAt: 8, length: 13, type: "IHDR", operation: op)
        let width = Int(be32(bytes, base + 16)), height = Int(be32(bytes, base + 20))
        let depth = Int(bytes[base + 24]), colorType = Int(bytes[base + 25])
        let compression = bytes[base + 26], filter = bytes[base + 27], interlace = bytes[base + 28]
        guard (1...maxDimension).contains(width), (1...maxDimension).contains(height) else {
            throw fail("IHDR size \(width)x\(height) is invalid (each side must be 1...2^31-1)")
        }
        let allowedDepths: [Int]
        switch colorType {
        case 0: allowedDepths = [1, 2, 4, 8, 16]
        case 3: allowedDepths = [1, 2, 4, 8]
        case 2, 4, 6: allowedDepths = [8, 16]
        default: throw fail("invalid color type \(colorType) (valid: 0, 2, 3, 4, 6)")
        }
        guard allowedDepths.contains(depth) else {
            throw fail("invalid bit depth \(depth) for color type \(colorType)")
        }
        guard colorType != 3 else {
            throw fail("palette (color type 3) PNGs are not supported; re-save as RGB or grayscale")
        }
        guard depth == 8 else {
            throw fail("bit depth \(depth) is not supported (only 8-bit PNGs); re-save with 8 bits per channel")
        }
        guard compression == 0 else { throw fail("unknown compression method \(compression) (only 0, deflate)") }
        guard filter == 0 else { throw fail("unknown filter method \(filter) (only 0)") }
        guard interlace != 1 else {
            throw fail("interlaced (Adam7) PNGs are not supported; re-save without interlacing")
        }
        guard interlace == 0 else { throw fail("invalid interlace method \(interlace)") }
        let channels = [0: 1, 2: 3, 4: 2, 6: 4][colorType] ?? 1
        return Header(width: width, height: height, bitDepth: depth, colorType: colorType, channels: channels)
    }
}
