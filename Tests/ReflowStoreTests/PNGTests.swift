import Testing
import Foundation
@testable import ReflowCodec
import ReflowFlow

// MARK: Helpers (independent of the code under test, except zlib's deflate)

/// A chunk with its length and CRC (computed with the reference CRC in CodecTests.swift).
private func chunk(_ type: String, _ data: [UInt8]) -> [UInt8] {
    var out: [UInt8] = []
    let n = UInt32(data.count)
    out += [UInt8(n >> 24), UInt8((n >> 16) & 0xff), UInt8((n >> 8) & 0xff), UInt8(n & 0xff)]
    let typeAndData = Array(type.utf8) + data
    out += typeAndData
    let crc = referenceCRC32(typeAndData)
    out += [UInt8(crc >> 24), UInt8((crc >> 16) & 0xff), UInt8((crc >> 8) & 0xff), UInt8(crc & 0xff)]
    return out
}

private func ihdr(width: UInt32, height: UInt32, depth: UInt8 = 8, colorType: UInt8, interlace: UInt8 = 0) -> [UInt8] {
    var d: [UInt8] = []
    for v in [width, height] { d += [UInt8(v >> 24), UInt8((v >> 16) & 0xff), UInt8((v >> 8) & 0xff), UInt8(v & 0xff)] }
    d += [depth, colorType, 0, 0, interlace]
    return chunk("IHDR", d)
}

private func zlib(_ raw: [UInt8], level: Int = 9) throws -> [UInt8] {
    try raw.withUnsafeBufferPointer { try ZlibStream.deflate($0, level: level, windowBits: 15, operation: "test") }
}

private let signature: [UInt8] = [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A]

/// signature + IHDR + `middle` chunks + IEND.
private func png(_ header: [UInt8], _ middle: [[UInt8]], iend: Bool = true) -> [UInt8] {
    signature + header + middle.flatMap { $0 } + (iend ? chunk("IEND", []) : [])
}

/// The `detail` of the error `PNG.decode` throws, or nil when it succeeds.
private func decodeError(_ bytes: [UInt8], limits: PNG.DecodeLimits = .default) -> String? {
    do {
        _ = try PNG.decode(bytes, limits: limits)
        return nil
    } catch {
        return error.detail
    }
}

private func paethRef(_ a: Int, _ b: Int, _ c: Int) -> Int {
    let p = a + b - c
    let pa = abs(p - a), pb = abs(p - b), pc = abs(p - c)
    return pa <= pb && pa <= pc ? a : (pb <= pc ? b : c)
}

/// Applies PNG filter `types[y]` to each row (the forward direction, written from the spec).
private func filterRows(_ pixels: [UInt8], width: Int, height: Int, bpp: Int, types: [UInt8]) -> [UInt8] {
    let rowBytes = width * bpp
    var out: [UInt8] = []
    for y in 0..<height {
        out.append(types[y])
        for i in 0..<rowBytes {
            let x = Int(pixels[y * rowBytes + i])
            let a = i >= bpp ? Int(pixels[y * rowBytes + i - bpp]) : 0
            let b = y > 0 ? Int(pixels[(y - 1) * rowBytes + i]) : 0
            let c = (i >= bpp && y > 0) ? Int(pixels[(y - 1) * rowBytes + i - bpp]) : 0
            let predictor: Int
            switch types[y] {
            case 0: predictor = 0
            case 1: predictor = a
            case 2: predictor = b
            case 3: predictor = (a + b) / 2
            default: predictor = paethRef(a, b, c)
            }
            out.append(UInt8((x - predictor) & 0xff))
        }
    }
    return out
}

private func colorType(channels: Int) -> UInt8 { [1: 0, 2: 4, 3: 2, 4: 6][channels]! }

// MARK: Decoder

@Suite struct PNGDecoderTests {
    @Test func roundTripGrayAndRGBAtOddSizes() throws {
        var rng = XorShift(seed: 11)
        for (w, h) in [(1, 1), (7, 5), (13, 3), (3, 17)] {
            let gray = rng.bytes(w * h)
            let g = try PNG.decode(PNG.encodeGray(width: w, height: h, pixels: gray))
            #expect(g == (try PNG.Image(width: w, height: h, channels: 1, pixels: gray)))
            let rgb = rng.bytes(w * h * 3)
            let c = try PNG.decode(PNG.encodeRGB(width: w, height: h, pixels: rgb, compressionLevel: 0))
            #expect(c.width == w && c.height == h && c.channels == 3 && c.pixels == rgb)
        }
        // Gray + alpha and RGBA through the general encoder.
        for channels in [2, 4] {
            let image = try PNG.Image(width: 9, height: 4, channels: channels, pixels: rng.bytes(9 * 4 * channels))
            let bytes = try PNG.encode(image)
            #expect(try PNG.decode(bytes) == image)
            let header = try PNG.readHeader(bytes)
            #expect(header == PNG.Header(width: 9, height: 4, bitDepth: 8, colorType: Int(colorType(channels: channels)),
                                         channels: channels))
        }
    }

    @Test("each filter type decodes exactly", arguments: [UInt8(0), 1, 2, 3, 4])
    func filterType(_ type: UInt8) throws {
        var rng = XorShift(seed: 100 + UInt64(type))
        for bpp in [1, 2, 3, 4] {
            let (w, h) = (6, 5)
            let pixels = rng.bytes(w * h * bpp)
            let raw = filterRows(pixels, width: w, height: h, bpp: bpp, types: [UInt8](repeating: type, count: h))
            let file = png(ihdr(width: UInt32(w), height: UInt32(h), colorType: colorType(channels: bpp)),
                           [chunk("IDAT", try zlib(raw))])
            let image = try PNG.decode(file)
            #expect(image.pixels == pixels, "filter \(type), \(bpp) bytes per pixel")
            #expect(image.channels == bpp)
        }
    }

    @Test func mixedFiltersAndSplitIDAT() throws {
        var rng = XorShift(seed: 5)
        let (w, h) = (11, 10)
        let pixels = rng.bytes(w * h * 3)
        let types: [UInt8] = [4, 3, 2, 1, 0, 4, 4, 3, 1, 2]
        let z = try zlib(filterRows(pixels, width: w, height: h, bpp: 3, types: types))
        // IDAT split in three pieces, with an ancillary chunk before them.
        let cut1 = z.count / 3, cut2 = 2 * z.count / 3
        let file = png(ihdr(width: UInt32(w), height: UInt32(h), colorType: 2),
                       [chunk("gAMA", [0, 0, 0xB1, 0x8F]), chunk("IDAT", Array(z[..<cut1])),
                        chunk("IDAT", Array(z[cut1..<cut2])), chunk("IDAT", Array(z[cut2...])), chunk("teXt", [1, 2])])
        #expect(try PNG.decode(file).pixels == pixels)
    }

    @Test("a hand-worked example: Sub, Paeth, Average, Up, None")
    func handWorkedFilters() throws {
        let raw: [UInt8] = [
            1, 10, 5, 250,  // Sub: 10, 15, 265 mod 256 = 9
            4, 1, 2, 3,  // Paeth: predictors above (10, 15, 9) → 11, 17, 12
            3, 0, 100, 200,  // Average: 0+5, 100+(5+17)/2, 200+(111+12)/2 → 5, 111, 5
            2, 255, 1, 0,  // Up: 260 mod 256 = 4, 112, 5
            0, 7, 8, 9,  // None
        ]
        let file = png(ihdr(width: 3, height: 5, colorType: 0), [chunk("IDAT", try zlib(raw))])
        #expect(try PNG.decode(file).pixels == [10, 15, 9, 11, 17, 12, 5, 111, 5, 4, 112, 5, 7, 8, 9])
    }

    @Test func conversions() throws {
        let rgba = try PNG.Image(width: 3, height: 1, channels: 4,
                                 pixels: [255, 0, 0, 0, 0, 255, 0, 128, 0, 0, 255, 255])
        let rgb = try rgba.converted(toChannels: 3)
        #expect(rgb.pixels == [255, 0, 0, 0, 255, 0, 0, 0, 255])  // alpha dropped, not composited
        #expect(try rgba.converted(toChannels: 1).pixels == [76, 150, 29])  // BT.601 luma, as PIL's "L"
        let ga = try PNG.Image(width: 2, height: 1, channels: 2, pixels: [9, 0, 200, 255])
        #expect(try ga.converted(toChannels: 1).pixels == [9, 200])
        #expect(try ga.converted(toChannels: 3).pixels == [9, 9, 9, 200, 200, 200])
        #expect(throws: CodecError.self) { try ga.converted(toChannels: 2) }
        #expect(throws: CodecError.self) { try PNG.Image(width: 2, height: 2, channels: 5, pixels: [UInt8](repeating: 0, count: 20)) }
        #expect(throws: CodecError.self) { try PNG.Image(width: 2, height: 2, channels: 1, pixels: [1, 2, 3]) }
    }

    // MARK: Hostile input

    private func validGray(_ w: Int = 5, _ h: Int = 4) throws -> [UInt8] {
        try PNG.encodeGray(width: w, height: h, pixels: (0..<(w * h)).map { UInt8($0 % 256) })
    }

    @Test func badCRC() throws {
        var file = try validGray()
        #expect(decodeError(file) == nil)
        file[33 + 8] ^= 0x01  // first data byte of the IDAT chunk, which starts at byte 33
        #expect(decodeError(file) == "bad CRC in chunk 'IDAT' at byte 33")
        var header = try validGray()
        header[16] ^= 0x01  // IHDR width
        #expect(decodeError(header) == "bad CRC in chunk 'IHDR' at byte 8")
        // An ancillary chunk's CRC is checked too.
        var anc = png(ihdr(width: 1, height: 1, colorType: 0), [chunk("tIME", [7, 0xE8, 1, 1, 0, 0, 0]),
                                                              chunk("IDAT", try zlib([0, 42]))])
        #expect(try PNG.decode(anc).pixels == [42])
        anc[33 + 8] ^= 0xFF
        #expect(decodeError(anc) == "bad CRC in chunk 'tIME' at byte 33")
    }

    @Test func truncatedImageData() throws {
        let header = ihdr(width: 4, height: 3, colorType: 0)  // needs 3 · (1 + 4) = 15 bytes
        let full = try zlib([UInt8](repeating: 0, count: 15))
        #expect(decodeError(png(header, [chunk("IDAT", full)])) == nil)
        // A complete zlib stream with too few scanline bytes.
        let short = decodeError(png(header, [chunk("IDAT", try zlib([UInt8](repeating: 0, count: 10)))]))
        #expect(short == "image data inflates to 10 bytes, but a 4x3 gray image needs 15 (truncated image data)")
        // A zlib stream cut short.
        let cut = try #require(decodeError(png(header, [chunk("IDAT", Array(full.dropLast(5)))])))
        #expect(cut.contains("image data") && cut.contains("truncated"), "\(cut)")
    }

    @Test func truncatedFilesAlwaysThrow() throws {
        let file = try validGray(9, 7)
        for n in 0..<file.count {
            #expect(decodeError(Array(file[..<n])) != nil, "cut at \(n)")
        }
        #expect(decodeError(Array(file[..<20])) == "file is truncated: 20 bytes, too short for the signature and IHDR")
        let midIDAT = try #require(decodeError(Array(file[..<45])))
        #expect(midIDAT.hasPrefix("file is truncated: chunk 'IDAT' at byte 33 declares"), "\(midIDAT)")
        #expect(decodeError([]) == "not a PNG file (the first 8 bytes are not the PNG signature)")
    }

    @Test func missingIENDAndTrailingBytes() throws {
        let file = try validGray()
        #expect(decodeError(Array(file.dropLast(12))) == "file ends at byte \(file.count - 12) without an IEND chunk")
        #expect(decodeError(file + [0]) == "1 byte(s) after the IEND chunk (at byte \(file.count))")
        #expect(decodeError(png(ihdr(width: 1, height: 1, colorType: 0), [])) == "no IDAT chunk before IEND at byte 33")
    }

    @Test func hugeDimensionsRefusedBeforeAllocating() throws {
        // 100000 x 100000 RGBA would be 40 GB; the IDAT is a tiny valid stream.
        let file = png(ihdr(width: 100_000, height: 100_000, colorType: 6), [chunk("IDAT", try zlib([0, 1, 2, 3, 4]))])
        #expect(decodeError(file) == "image is 100000x100000, over the limit of 16384 pixels per side")
        let wide = PNG.DecodeLimits(maxSide: 1 << 20, maxPixels: 1 << 26)
        #expect(decodeError(file, limits: wide) == "image is 100000x100000, over the limit of 67108864 pixels")
        // Even the largest legal header is refused by the limits, without overflow.
        let max = png(ihdr(width: UInt32(Int32.max), height: UInt32(Int32.max), colorType: 6), [])
        #expect(decodeError(max, limits: PNG.DecodeLimits(maxSide: Int.max, maxPixels: Int.max))
                == "image is 2147483647x2147483647, too large")
        #expect(decodeError(png(ihdr(width: 0, height: 5, colorType: 0), [])) != nil)
    }

    @Test func zlibBombFailsAtTheExpectedSize() throws {
        let bomb = try zlib([UInt8](repeating: 0, count: 16 << 20))  // 16 MiB of zeros in ~16 KB
        #expect(bomb.count < 40_000)
        let file = png(ihdr(width: 4, height: 4, colorType: 0), [chunk("IDAT", bomb)])
        let error = try #require(decodeError(file))
        #expect(error.contains("exceeds the limit of 20 bytes"), "\(error)")
        #expect(error.contains("a 4x4 gray image needs exactly 20 bytes"), "\(error)")
    }

    @Test func unsupportedFormatsAreNamed() throws {
        let idat = chunk("IDAT", try zlib([0, 0, 0]))
        #expect(decodeError(png(ihdr(width: 1, height: 1, depth: 16, colorType: 2), [idat]))
                == "bit depth 16 is not supported (only 8-bit PNGs); re-save with 8 bits per channel")
        #expect(decodeError(png(ihdr(width: 1, height: 1, depth: 1, colorType: 0), [idat]))
                == "bit depth 1 is not supported (only 8-bit PNGs); re-save with 8 bits per channel")
        #expect(decodeError(png(ihdr(width: 1, height: 1, colorType: 2, interlace: 1), [idat]))
                == "interlaced (Adam7) PNGs are not supported; re-save without interlacing")
        #expect(decodeError(png(ihdr(width: 1, height: 1, colorType: 3), [chunk("PLTE", [0, 0, 0]), idat]))
                == "palette (color type 3) PNGs are not supported; re-save as RGB or grayscale")
        #expect(decodeError(png(ihdr(width: 1, height: 1, colorType: 5), [idat])) == "invalid color type 5 (valid: 0, 2, 3, 4, 6)")
        #expect(decodeError(png(ihdr(width: 1, height: 1, depth: 16, colorType: 3), [idat]))
                == "invalid bit depth 16 for color type 3")
    }

    @Test func chunkRules() throws {
        let h = ihdr(width: 2, height: 1, colorType: 0)
        let idat = chunk("IDAT", try zlib([0, 1, 2]))
        #expect(try PNG.decode(png(h, [chunk("zzZz", [1, 2, 3]), idat])).pixels == [1, 2])  // ancillary: skipped
        #expect(decodeError(png(h, [chunk("ZZZZ", [1]), idat])) == "unknown critical chunk 'ZZZZ' at byte 33")
        #expect(decodeError(png(h, [idat, chunk("tEXt", Array("a\u{0}b".utf8)), idat]))
                == "IDAT chunks are not consecutive (another IDAT at byte \(33 + idat.count + 15))")
        #expect(decodeError(png(h, [chunk("PLTE", [1, 2, 3]), idat])) == "PLTE chunk at byte 33 is not allowed in a grayscale image")
        #expect(decodeError(png(h, [idat, h])) == "second IHDR chunk at byte \(33 + idat.count)")
        #expect(decodeError(signature + idat + h) == "the first chunk is 'IDAT', expected IHDR")
        #expect(decodeError(png(h, [chunk("IDAT", try zlib([5, 1, 2]))])) == "unknown filter type 5 on row 0 (valid: 0...4)")
        #expect(decodeError(png(h, [chunk("ID@T", [])])) != nil)
        // A suggested palette in an RGB image is allowed.
        let rgb = png(ihdr(width: 1, height: 1, colorType: 2), [chunk("PLTE", [9, 9, 9]), chunk("IDAT", try zlib([0, 1, 2, 3]))])
        #expect(try PNG.decode(rgb).pixels == [1, 2, 3])
    }

    @Test func randomCorruptionNeverTraps() throws {
        var rng = XorShift(seed: 2024)
        let pixels = rng.bytes(8 * 6 * 3)
        let file = try PNG.encodeRGB(width: 8, height: 6, pixels: pixels)
        var failures = 0
        for _ in 0..<400 {
            var bad = file
            for _ in 0..<(1 + Int(rng.next() % 3)) {
                bad[Int(rng.next() % UInt64(bad.count))] = UInt8(truncatingIfNeeded: rng.next())
            }
            if decodeError(bad) != nil { failures += 1 }
        }
        #expect(failures > 350)  // CRCs catch nearly every change; the point is no crash
    }
}

// MARK: Encoder additions

@Suite struct PNGEncoderExtrasTests {
    @Test func textChunks() throws {
        let file = try PNG.encodeRGB(width: 2, height: 1, pixels: [1, 2, 3, 4, 5, 6],
                                     text: [("Title", "samples, step 1"), ("Comment", "caf\u{E9}\nline 2")])
        let chunks = try parsePNGChunks(file)
        #expect(chunks.map(\.type) == ["IHDR", "tEXt", "tEXt", "IDAT", "IEND"])
        #expect(chunks[1].data == Array("Title".utf8) + [0] + Array("samples, step 1".utf8))
        #expect(chunks[2].data == Array("Comment".utf8) + [0, 0x63, 0x61, 0x66, 0xE9, 0x0A] + Array("line 2".utf8))
        #expect(try PNG.decode(file).pixels == [1, 2, 3, 4, 5, 6])

        let bad: [(String, String)] = [("", "x"), (String(repeating: "k", count: 80), "x"), (" lead", "x"),
                                       ("a  b", "x"), ("emoji\u{1F600}", "x"), ("ok", "nul\u{0}"), ("ok", "\u{263A}"),
                                       ("ok", "tab\t")]
        for (k, v) in bad {
            #expect(throws: CodecError.self, "\(k)=\(v)") { try PNG.encodeGray(width: 1, height: 1, pixels: [0], text: [(k, v)]) }
        }
        _ = try PNG.encodeGray(width: 1, height: 1, pixels: [0], text: [(String(repeating: "k", count: 79), "")])
    }

    @Test func gridGeometryAndPixels() throws {
        // Five 2x3 (H x W) RGB images, planar; image n has value 10n + c in channel c, except
        // pixel (y 1, x 2), which is 200 + n.
        let (h, w) = (2, 3)
        var images: [[UInt8]] = []
        for n in 0..<5 {
            var img = [UInt8](repeating: 0, count: 3 * h * w)
            for c in 0..<3 {
                for i in 0..<(h * w) { img[c * h * w + i] = UInt8(10 * n + c) }
                img[c * h * w + 1 * w + 2] = UInt8(200 + n)
            }
            images.append(img)
        }
        let (columns, padding, upscale) = (3, 2, 2)
        let file = try PNG.encodeGrid(images: images, channels: 3, height: h, width: w, columns: columns,
                                      padding: padding, upscale: upscale, background: 255, text: [("Software", "reflowd")])
        let image = try PNG.decode(file)
        #expect(image.width == padding + columns * (w * upscale + padding))  // 26
        #expect(image.height == padding + 2 * (h * upscale + padding))  // 14
        #expect(image.channels == 3)
        #expect(try parsePNGChunks(file).map(\.type).contains("tEXt"))
        func px(_ x: Int, _ y: Int) -> [UInt8] {
            let i = (y * image.width + x) * 3
            return Array(image.pixels[i..<(i + 3)])
        }
        #expect(px(0, 0) == [255, 255, 255])
        for n in 0..<5 {
            let x0 = padding + (n % columns) * (w * upscale + padding)
            let y0 = padding + (n / columns) * (h * upscale + padding)
            #expect(px(x0, y0) == [UInt8(10 * n), UInt8(10 * n + 1), UInt8(10 * n + 2)])
            #expect(px(x0 + 1, y0 + 1) == [UInt8(10 * n), UInt8(10 * n + 1), UInt8(10 * n + 2)])
            // Source pixel (1, 2) covers the upscaled block x 4...5, y 2...3.
            for (dx, dy) in [(4, 2), (5, 2), (4, 3), (5, 3)] {
                #expect(px(x0 + dx, y0 + dy) == [UInt8(200 + n), UInt8(200 + n), UInt8(200 + n)])
            }
            #expect(px(x0 + w * upscale, y0) == [255, 255, 255])  // padding right of the tile
        }
        // The sixth cell is empty.
        #expect(px(padding + 2 * (w * upscale + padding), padding + (h * upscale + padding)) == [255, 255, 255])

        // Gray, fewer images than columns: the grid shrinks to the images.
        let gray = try PNG.decode(PNG.encodeGrid(images: [[1, 2], [3, 4]], channels: 1, height: 1, width: 2,
                                                 columns: 8, padding: 1, background: 0))
        #expect(gray.channels == 1 && gray.width == 1 + 2 * (2 + 1) && gray.height == 3)
        #expect(gray.pixels == [0, 0, 0, 0, 0, 0, 0,
                                0, 1, 2, 0, 3, 4, 0,
                                0, 0, 0, 0, 0, 0, 0])
    }

    @Test func gridRefusesBadRequests() throws {
        let one: [[UInt8]] = [[0, 0, 0]]
        #expect(throws: CodecError.self) { try PNG.encodeGrid(images: [], channels: 1, height: 1, width: 1, columns: 1) }
        #expect(throws: CodecError.self) { try PNG.encodeGrid(images: one, channels: 2, height: 1, width: 1, columns: 1) }
        #expect(throws: CodecError.self) { try PNG.encodeGrid(images: one, channels: 3, height: 1, width: 2, columns: 1) }
        #expect(throws: CodecError.self) { try PNG.encodeGrid(images: one, channels: 3, height: 1, width: 1, columns: 0) }
        #expect(throws: CodecError.self) { try PNG.encodeGrid(images: one, channels: 3, height: 1, width: 1, columns: 1, upscale: 0) }
        #expect(throws: CodecError.self) { try PNG.encodeGrid(images: one, channels: 3, height: 1, width: 1, columns: 1, padding: -1) }
        // 2048 tiles of 64x64 upscaled 8x would be 268 megapixels: refused before allocating.
        let tile = [UInt8](repeating: 0, count: 64 * 64)
        let error = #expect(throws: CodecError.self) {
            try PNG.encodeGrid(images: [[UInt8]](repeating: tile, count: 2048), channels: 1, height: 64, width: 64,
                               columns: 64, upscale: 8)
        }
        #expect(error?.detail.contains("exceed the limit of 67108864 pixels") == true)
    }
}

// MARK: Tar

/// A 512-byte ustar header with a correct checksum (unless `checksumDelta` is non-zero).
private func tarHeader(_ name: String, size: Int, type: UInt8 = UInt8(ascii: "0"), prefix: String = "",
                       gnu: Bool = false, checksumDelta: Int = 0, edit: (inout [UInt8]) -> Void = { _ in }) -> [UInt8] {
    var h = [UInt8](repeating: 0, count: 512)
    func put(_ s: String, _ at: Int) { for (i, b) in s.utf8.enumerated() { h[at + i] = b } }
    func octal(_ v: Int, _ digits: Int) -> String {
        let s = String(v, radix: 8)
        return String(repeating: "0", count: max(0, digits - s.count)) + s
    }
    put(name, 0)
    put("0000644", 100); put("0001750", 108); put("0001750", 116)
    put(octal(size, 11), 124)
    put("14770000000", 136)
    h[156] = type
    if gnu { put("ustar  ", 257) } else { put("ustar", 257); put("00", 263) }
    put(prefix, 345)
    edit(&h)
    for i in 148..<156 { h[i] = 32 }
    put(octal(h.reduce(0) { $0 + Int($1) } + checksumDelta, 6), 148)
    h[154] = 0
    return h
}

private func padded(_ data: [UInt8]) -> [UInt8] {
    data + [UInt8](repeating: 0, count: (512 - data.count % 512) % 512)
}

/// A tar of (name, data) files; names ending in "/" are directories.
private func makeTar(_ entries: [(String, [UInt8])], end: Bool = true) -> [UInt8] {
    var out: [UInt8] = []
    for (name, data) in entries {
        if name.hasSuffix("/") {
            out += tarHeader(name, size: 0, type: UInt8(ascii: "5"))
        } else {
            out += tarHeader(name, size: data.count) + padded(data)
        }
    }
    return end ? out + [UInt8](repeating: 0, count: 1024) : out
}

private func tarError(_ archive: [UInt8], limits: Tar.Limits = .default) -> String? {
    do {
        _ = try Tar.entries(archive, limits: limits)
        return nil
    } catch {
        return error.detail
    }
}

@Suite struct TarReaderTests {
    @Test func readsFilesDirectoriesAndOffsets() throws {
        let a = Array("hello".utf8), b = [UInt8](repeating: 7, count: 600)
        let archive = makeTar([("./", []), ("./data/", []), ("./data/a.txt", a), ("data//b.bin", b)])
            + [UInt8](repeating: 0, count: 8192)  // record padding after the end marker
        let entries = try Tar.entries(archive)
        #expect(entries.map(\.path) == ["data", "data/a.txt", "data/b.bin"])
        #expect(entries.map(\.kind) == [.directory, .file, .file])
        #expect(entries[1].offset == 3 * 512 && entries[1].size == 5 && Array(entries[1].bytes) == a)
        #expect(entries[2].offset == 5 * 512 && Array(entries[2].bytes) == b)
    }

    @Test func longNamesPrefixAndPax() throws {
        let long = String(repeating: "d", count: 120) + "/file.png"
        var archive = tarHeader("././@LongLink", size: long.utf8.count + 1, type: UInt8(ascii: "L"), gnu: true)
            + padded(Array(long.utf8) + [0])
        archive += tarHeader("truncated-name", size: 3, gnu: true) + padded([1, 2, 3])
        archive += tarHeader("name.txt", size: 2, prefix: "some/prefix") + padded([4, 5])
        let pathRecord = "path=pax/über.png\n"
        let record = "\(pathRecord.utf8.count + 3) \(pathRecord)"  // length counts its own two digits and the space
        let mtime = "20 mtime=1700000000\n"
        archive += tarHeader("PaxHeaders/x", size: (record + mtime).utf8.count, type: UInt8(ascii: "x"))
            + padded(Array((record + mtime).utf8))
        archive += tarHeader("short", size: 1) + padded([9])
        archive += [UInt8](repeating: 0, count: 1024)
        let entries = try Tar.entries(archive)
        #expect(entries.map(\.path) == [long, "some/prefix/name.txt", "pax/über.png"])
        #expect(entries.map { Array($0.bytes) } == [[1, 2, 3], [4, 5], [9]])
    }

    @Test func badChecksumAndUnsafePaths() throws {
        let good = makeTar([("a.txt", [1])])
        #expect(tarError(good) == nil)
        var bad = good
        bad[0] = UInt8(ascii: "b")
        #expect(tarError(bad) == "header at byte 0 ('b.txt'): bad header checksum (stored \(tarChecksum(good)), computed \(tarChecksum(good) + 1))")
        #expect(tarError(tarHeader("x", size: 0, checksumDelta: 1) + [UInt8](repeating: 0, count: 1024))?
                .contains("bad header checksum") == true)
        #expect(tarError(makeTar([("ok/", []), ("../evil.png", [1])])) == "entry '../evil.png' (header at byte 512) has a '..' component")
        #expect(tarError(makeTar([("a/../../b", [1])])) == "entry 'a/../../b' (header at byte 0) has a '..' component")
        #expect(tarError(makeTar([("/etc/passwd", [1])])) == "entry '/etc/passwd' (header at byte 0) has an absolute path")
        #expect(tarError(tarHeader("link", size: 0, type: UInt8(ascii: "2")) + [UInt8](repeating: 0, count: 1024))
                == "entry 'link' (header at byte 0) is a symbolic link; only regular files and directories are read")
        #expect(tarError(makeTar([("a", [1]), ("a", [2])])) == "duplicate entry 'a' (header at byte 1024)")
        #expect(tarError(makeTar([("a", [1]), ("a/b", [2])])) == "entry 'a/b' (header at byte 1024) is inside 'a', which is a file")
    }

    @Test func structuralErrors() throws {
        let archive = makeTar([("a.bin", [UInt8](repeating: 1, count: 1000))])
        #expect(tarError(Array(archive[..<1200]))?.hasPrefix("archive is truncated: entry 'a.bin'") == true)
        #expect(tarError(Array(archive[..<1536])) == "archive ends at byte 1536 without its end-of-archive marker (a zero block); it is probably truncated")
        #expect(tarError(Array(archive[..<100]))?.hasPrefix("archive is truncated") == true)
        #expect(tarError(archive + [0, 0, 1]) == "non-zero byte at \(archive.count + 2), after the end-of-archive marker at byte 1536")
        var v7 = archive
        for i in 257..<265 { v7[i] = 0 }
        #expect(tarError(v7)?.contains("has no ustar magic") == true)
        let notOctal = tarHeader("n", size: 0) { $0[124] = UInt8(ascii: "9") }
        #expect(tarError(notOctal + [UInt8](repeating: 0, count: 1024)) == "header at byte 0 ('n'): size field is not an octal number")
        let base256 = tarHeader("n", size: 0) { $0[124] = 0x80 }
        #expect(tarError(base256 + [UInt8](repeating: 0, count: 1024)) == "header at byte 0 ('n'): base-256 size fields are not supported")
        #expect(tarError(archive, limits: Tar.Limits(maxEntries: 10, maxEntryBytes: 999)) == "entry 'a.bin' (header at byte 0) is 1000 bytes, over the limit of 999")
        #expect(tarError(makeTar([("a", []), ("b", []), ("c", [])]), limits: Tar.Limits(maxEntries: 2)) == "more than 2 entries (header at byte 1024)")
        #expect(tarError([UInt8](repeating: 0, count: 1024)) == nil)  // an empty archive
        #expect(tarError([]) != nil)
        var rng = XorShift(seed: 77)
        for _ in 0..<200 {  // corrupted archives throw or read, never trap
            var bad = archive
            bad[Int(rng.next() % UInt64(bad.count))] = UInt8(truncatingIfNeeded: rng.next())
            _ = tarError(bad)
        }
    }

    @Test func readsWhatGNUTarWrites() throws {
        guard FileManager.default.isExecutableFile(atPath: "/usr/bin/tar") else { return }
        let dir = try TempDir()
        defer { try? FileManager.default.removeItem(atPath: dir.path) }
        // Over 100 bytes: a GNU long name, a pax path, or a ustar prefix + name, by format.
        let long = String(repeating: "x", count: 60) + "/" + String(repeating: "y", count: 60)
        try FileManager.default.createDirectory(atPath: dir.file("src/\(long)"), withIntermediateDirectories: true)
        try Data([1, 2, 3]).write(to: URL(fileURLWithPath: dir.file("src/\(long)/f.bin")))
        try Data(repeating: 5, count: 700).write(to: URL(fileURLWithPath: dir.file("src/g.bin")))
        for format in ["gnu", "posix", "ustar"] {
            let out = dir.file("t-\(format).tar")
            let p = Process()
            p.executableURL = URL(fileURLWithPath: "/usr/bin/tar")
            p.arguments = ["--format=\(format)", "-C", dir.file("src"), "-cf", out, "."]
            try p.run()
            p.waitUntilExit()
            try #require(p.terminationStatus == 0)
            let entries = try Tar.entries(try #require(readFileBytes(out)))
            let files = entries.filter { $0.kind == .file }.sorted { $0.path < $1.path }
            #expect(files.map(\.path) == ["g.bin", "\(long)/f.bin"], "\(format)")
            #expect(files.map(\.size) == [700, 3])
            #expect(Array(files[1].bytes) == [1, 2, 3])
        }
    }
}

/// The unsigned header checksum of the first header in `archive`.
private func tarChecksum(_ archive: [UInt8]) -> Int {
    archive[0..<512].enumerated().reduce(0) { $0 + ((148..<156).contains($1.offset) ? 32 : Int($1.element)) }
}

// MARK: ImageFolder

@Suite struct ImageFolderTests {
    private func write(_ bytes: [UInt8], _ path: String) throws {
        try FileManager.default.createDirectory(atPath: (path as NSString).deletingLastPathComponent,
                                                withIntermediateDirectories: true)
        try Data(bytes).write(to: URL(fileURLWithPath: path))
    }

    /// cat/a.png, cat/b.png: gray 4x3 (pixel value = 10·k + i); dog/x.png: RGB 4x3.
    private func files() throws -> [(String, [UInt8])] {
        let (w, h) = (4, 3)
        let a = try PNG.encodeGray(width: w, height: h, pixels: (0..<12).map { UInt8($0) })
        let b = try PNG.encodeGray(width: w, height: h, pixels: (0..<12).map { UInt8(10 + $0) })
        let x = try PNG.encodeRGB(width: w, height: h, pixels: (0..<12).flatMap { [UInt8(100 + $0), 150, 200] })
        return [("dog/x.png", x), ("cat/b.png", b), ("cat/a.png", a)]
    }

    private func checkCatsAndDogs(_ set: ImageSet) throws {
        #expect(set.channels == 3 && set.height == 3 && set.width == 4 && set.count == 3)
        #expect(set.labels == [0, 0, 1])
        #expect(set.classNames == ["cat", "dog"])
        let plane = 12
        let first = set.bytes(ofImage: 0)  // cat/a.png, gray replicated in R, G, B
        #expect(Array(first[0..<plane]) == (0..<12).map { UInt8($0) })
        #expect(Array(first[plane..<(2 * plane)]) == (0..<12).map { UInt8($0) })
        #expect(set.bytes(ofImage: 1)[5] == 15)  // cat/b.png
        let dog = set.bytes(ofImage: 2)
        #expect(Array(dog[0..<plane]) == (0..<12).map { UInt8(100 + $0) })  // planar R
        #expect(Array(dog[plane..<(2 * plane)]) == [UInt8](repeating: 150, count: 12))
        #expect(Array(dog[(2 * plane)...]) == [UInt8](repeating: 200, count: 12))
    }

    @Test func directoryWithClassFolders() throws {
        let dir = try TempDir()
        defer { try? FileManager.default.removeItem(atPath: dir.path) }
        for (name, bytes) in try files() { try write(bytes, dir.file("set/" + name)) }
        try write([1, 2, 3], dir.file("set/.DS_Store"))
        try write([1, 2, 3], dir.file("set/cat/._a.png"))
        try write([1, 2, 3], dir.file("set/.hidden/junk.txt"))
        try checkCatsAndDogs(ImageFolder.load(directory: URL(fileURLWithPath: dir.file("set"))))

        // Unlabelled, gray only.
        try write(try files()[2].1, dir.file("flat/1.png"))
        try write(try files()[1].1, dir.file("flat/0.png"))
        let flat = try ImageFolder.load(directory: URL(fileURLWithPath: dir.file("flat")))
        #expect(flat.channels == 1 && flat.count == 2 && flat.labels == nil && flat.classNames == nil)
        #expect(flat.bytes(ofImage: 0)[0] == 10)  // 0.png first
    }

    @Test func tarArchivesPlainAndGzipped() throws {
        let entries = try files()
        // Class folders at the top level.
        try checkCatsAndDogs(ImageFolder.load(tarBytes: makeTar(entries)))
        // Wrapped in one top-level folder (tar -cf data.tar data/), with directory entries; gzip.
        let wrapped = makeTar([("data/", []), ("data/cat/", [])] + entries.map { ("data/" + $0.0, $0.1) }
                              + [("data/._x.png", [0])])
        try checkCatsAndDogs(ImageFolder.load(tarBytes: try Gzip.compress(wrapped), name: "data.tar.gz"))
        try checkCatsAndDogs(ImageFolder.load(tarBytes: wrapped, root: "data"))
        // From a file.
        let dir = try TempDir()
        defer { try? FileManager.default.removeItem(atPath: dir.path) }
        try write(wrapped, dir.file("data.tar"))
        try checkCatsAndDogs(ImageFolder.load(tar: URL(fileURLWithPath: dir.file("data.tar"))))
        // root "" takes the top level: "data" is then one class folder with nested folders.
        let error = #expect(throws: ImageDataError.self) { try ImageFolder.load(tarBytes: wrapped, root: "") }
        #expect(error?.file == "data/cat")
        // A bad archive names the archive.
        var bad = wrapped
        bad[0] ^= 1
        let tarErr = #expect(throws: ImageDataError.self) { try ImageFolder.load(tarBytes: bad, name: "d.tar") }
        #expect(tarErr?.file == "d.tar" && tarErr?.message.contains("bad header checksum") == true)
    }

    @Test func mismatchedSizeNamesTheFile() throws {
        var entries = try files()
        entries.append(("cat/c.png", try PNG.encodeGray(width: 5, height: 3, pixels: [UInt8](repeating: 0, count: 15))))
        let dir = try TempDir()
        defer { try? FileManager.default.removeItem(atPath: dir.path) }
        for (name, bytes) in entries { try write(bytes, dir.file(name)) }
        let error = #expect(throws: ImageDataError.self) { try ImageFolder.load(directory: URL(fileURLWithPath: dir.path)) }
        #expect(error?.file == "cat/c.png")
        #expect(error?.message == "image is 5x3 (width x height), but 'cat/a.png' is 4x3; all images must have the same size")
        let tarError = #expect(throws: ImageDataError.self) { try ImageFolder.load(tarBytes: makeTar(entries)) }
        #expect(tarError?.file == "cat/c.png")
    }

    @Test func layoutErrors() throws {
        let entries = try files()
        func message(_ extra: [(String, [UInt8])]) -> ImageDataError? {
            #expect(throws: ImageDataError.self) { try ImageFolder.load(tarBytes: makeTar(entries + extra), name: "t.tar") }
        }
        let notPNG = message([("cat/notes.txt", [1])])
        #expect(notPNG?.file == "cat/notes.txt")
        #expect(notPNG?.message == "not a PNG file (only .png files are read; hidden files are ignored)")
        let mixed = message([("loose.png", entries[0].1)])
        #expect(mixed?.file == "t.tar" && mixed?.message.contains("mixes PNG files") == true)
        #expect(message([("cat/deeper/x.png", entries[0].1)])?.file == "cat/deeper")
        #expect(message([("empty/", [])])?.message == "class folder holds no PNG files")
        let corrupt = message([("cat/z.png", Array(entries[0].1.dropLast(12)))])
        #expect(corrupt?.file == "cat/z.png")
        #expect(corrupt?.message.contains("without an IEND chunk") == true)
        #expect(message([("cat/p.png", [1, 2, 3])])?.message == "not a PNG file (the first 8 bytes are not the PNG signature)")
        let none = #expect(throws: ImageDataError.self) { try ImageFolder.load(tarBytes: makeTar([("a/", [])]), name: "t.tar") }
        #expect(none?.message == "class folder holds no PNG files")
    }

    @Test func limitsAreCheckedBeforeDecoding() throws {
        // A header claiming 100000 x 100000 whose image data is garbage: the limit is reported,
        // not the data (nothing was decoded).
        let huge = signature + ihdr(width: 100_000, height: 100_000, colorType: 2) + chunk("IDAT", [1, 2, 3]) + chunk("IEND", [])
        let error = #expect(throws: ImageDataError.self) { try ImageFolder.load(tarBytes: makeTar([("big.png", huge)])) }
        #expect(error?.file == "big.png")
        #expect(error?.message == "image is 100000x100000 (width x height), over the limit of 256 pixels per side")
        // Count and total bytes: 3 images of 3x3x4 bytes = 108.
        let entries = try files()
        let few = #expect(throws: ImageDataError.self) {
            try ImageFolder.load(tarBytes: makeTar(entries), limits: ImageLimits(maxImages: 2))
        }
        #expect(few?.message == "3 images exceed the limit of 2")
        let small = #expect(throws: ImageDataError.self) {
            try ImageFolder.load(tarBytes: makeTar(entries), limits: ImageLimits(maxTotalBytes: 107))
        }
        #expect(small?.message.contains("limit of 107 bytes") == true)
        #expect(try ImageFolder.load(tarBytes: makeTar(entries), limits: ImageLimits(maxTotalBytes: 108)).count == 3)
        let gray = #expect(throws: ImageDataError.self) {
            try ImageFolder.load(tarBytes: makeTar(entries), limits: ImageLimits(maxChannels: 1))
        }
        #expect(gray?.message == "3 channels (supported: 1 to 1)")
    }
}

@Suite("Canvas text")
struct CanvasTextTests {
    @Test("glyphs draw their pixels at the scale asked, lower case as upper case, unknown characters as blanks")
    func text() {
        var c = Canvas(width: 40, height: 12, window: (xMin: 0, xMax: 1, yMin: 0, yMax: 1))
        let end = c.text("1a?", x: 0, y: 0, color: .black, scale: 1)
        #expect(end == 12, "three cells of 4 pixels")
        func dark(_ x: Int, _ y: Int) -> Bool { c.pixels[3 * (y * 40 + x)] == 0 }
        // "1": 010 / 110 / 010 / 010 / 111.
        #expect(dark(1, 0) && !dark(0, 0) && dark(0, 1) && dark(0, 4) && dark(2, 4) && !dark(2, 2))
        // "a" is "A": 010 / 101 / 111 / 101 / 101 at x = 4.
        #expect(dark(5, 0) && dark(4, 2) && dark(6, 2) && !dark(5, 1))
        // "?" has no glyph: its cell stays white.
        #expect((8..<11).allSatisfy { x in (0..<5).allSatisfy { !dark(x, $0) } })
        var big = Canvas(width: 20, height: 20, window: (xMin: 0, xMax: 1, yMin: 0, yMax: 1))
        big.text("-", x: 0, y: 0, color: .black, scale: 2)
        #expect(big.pixels[3 * (4 * 20 + 0)] == 0 && big.pixels[3 * (5 * 20 + 5)] == 0 && big.pixels[3 * (3 * 20 + 0)] == 255)
    }
}
