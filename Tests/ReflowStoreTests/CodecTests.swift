import Testing
import ReflowCodec
import Glibc

@Suite struct SHA256Tests {
    @Test func knownDigests() {
        // FIPS 180-2 Appendix B test vectors.
        #expect(SHA256.hex(of: Array("abc".utf8)) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        #expect(SHA256.hex(of: [UInt8]()) == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
        #expect(SHA256.hex(of: "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq".utf8)
                == "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1")
    }

    @Test func streamingInOddChunksMatchesOneShot() throws {
        var rng = XorShift(seed: 42)
        let data = rng.bytes(100_003)
        let expected = SHA256.hex(of: data)
        for chunk in [1, 3, 7, 64, 65, 1000, 4093, 100_003, 200_000] {
            var hasher = try SHA256.Hasher()
            var i = 0
            while i < data.count {
                let end = min(i + chunk, data.count)
                hasher.update(data[i..<end])
                i = end
            }
            #expect(try hasher.finalizeHex() == expected, "chunk size \(chunk)")
        }
        var empty = try SHA256.Hasher()
        empty.update([UInt8]())
        #expect(try empty.finalizeHex() == SHA256.hex(of: [UInt8]()))
    }

    @Test func fileDigestMatchesInMemory() throws {
        let dir = try TempDir()
        defer { dir.remove() }
        var rng = XorShift(seed: 7)
        let data = rng.bytes(3 * (1 << 20) + 17)  // spans several 1 MiB chunks
        let path = dir.file("blob")
        let f = try #require(fopen(path, "wb"))
        #expect(fwrite(data, 1, data.count, f) == data.count)
        fclose(f)
        #expect(try SHA256.hexOfFile(path: path) == SHA256.hex(of: data))

        let missing = dir.file("nope")
        let error = #expect(throws: CodecError.self) { try SHA256.hexOfFile(path: missing) }
        #expect(error?.operation == "open")
        #expect(error?.code == ENOENT)
        #expect(error?.description.contains(missing) == true)
    }
}

/// Table-driven CRC-32 (reflected, polynomial 0xEDB88320), independent of zlib.
func referenceCRC32(_ bytes: some Sequence<UInt8>) -> UInt32 {
    var table = [UInt32](repeating: 0, count: 256)
    for n in 0..<256 {
        var c = UInt32(n)
        for _ in 0..<8 { c = (c & 1) != 0 ? 0xEDB8_8320 ^ (c >> 1) : c >> 1 }
        table[n] = c
    }
    var crc: UInt32 = 0xFFFF_FFFF
    for b in bytes { crc = table[Int((crc ^ UInt32(b)) & 0xFF)] ^ (crc >> 8) }
    return crc ^ 0xFFFF_FFFF
}

func be32(_ b: [UInt8], _ at: Int) -> UInt32 {
    UInt32(b[at]) << 24 | UInt32(b[at + 1]) << 16 | UInt32(b[at + 2]) << 8 | UInt32(b[at + 3])
}

struct PNGChunk { var type: String; var data: [UInt8] }

/// Splits a PNG into chunks, checking every CRC with the reference implementation.
func parsePNGChunks(_ png: [UInt8]) throws -> [PNGChunk] {
    #expect(Array(png[0..<8]) == [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A])
    var chunks: [PNGChunk] = []
    var i = 8
    while i < png.count {
        try #require(i + 12 <= png.count)
        let length = Int(be32(png, i))
        try #require(i + 12 + length <= png.count)
        let typeAndData = Array(png[(i + 4)..<(i + 8 + length)])
        let crc = be32(png, i + 8 + length)
        #expect(crc == referenceCRC32(typeAndData), "CRC of chunk at \(i)")
        chunks.append(PNGChunk(type: String(decoding: typeAndData[0..<4], as: UTF8.self),
                               data: Array(typeAndData[4...])))
        i += 12 + length
    }
    #expect(i == png.count)
    return chunks
}

@Suite struct PNGTests {
    @Test func rgbStructure() throws {
        let pixels: [UInt8] = [
            255, 0, 0,   0, 255, 0,   0, 0, 255,
            10, 20, 30,  40, 50, 60,  70, 80, 90,
        ]
        let png = try PNG.encodeRGB(width: 3, height: 2, pixels: pixels)
        let chunks = try parsePNGChunks(png)
        #expect(chunks.map(\.type) == ["IHDR", "IDAT", "IEND"])
        let ihdr = chunks[0].data
        #expect(ihdr.count == 13)
        #expect(be32(ihdr, 0) == 3)
        #expect(be32(ihdr, 4) == 2)
        #expect(Array(ihdr[8...]) == [8, 2, 0, 0, 0])  // depth 8, truecolour, deflate, filter 0, no interlace
        #expect(chunks[2].data.isEmpty)

        let idat = chunks.filter { $0.type == "IDAT" }.flatMap(\.data)
        #expect(idat[0] & 0x0F == 8)  // zlib header: CM = deflate
        #expect((UInt16(idat[0]) << 8 | UInt16(idat[1])) % 31 == 0)
        let raw = try Gzip.decompress(idat)
        let rows: [UInt8] = [0] + Array(pixels[0..<9]) + [0] + Array(pixels[9..<18])
        #expect(raw == rows)
    }

    @Test func grayStructure() throws {
        let pixels: [UInt8] = (0..<20).map { UInt8($0 * 12) }
        let png = try PNG.encodeGray(width: 5, height: 4, pixels: pixels, compressionLevel: 9)
        let chunks = try parsePNGChunks(png)
        #expect(chunks.first?.type == "IHDR" && chunks.last?.type == "IEND")
        #expect(Array(chunks[0].data[8...]) == [8, 0, 0, 0, 0])
        let raw = try Gzip.decompress(chunks.filter { $0.type == "IDAT" }.flatMap(\.data))
        var expected: [UInt8] = []
        for y in 0..<4 {
            expected.append(0)
            expected += pixels[(y * 5)..<(y * 5 + 5)]
        }
        #expect(raw == expected)
    }

    @Test func rejectsBadArguments() {
        #expect(throws: CodecError.self) { try PNG.encodeRGB(width: 0, height: 1, pixels: []) }
        #expect(throws: CodecError.self) { try PNG.encodeRGB(width: 1, height: -1, pixels: []) }
        #expect(throws: CodecError.self) { try PNG.encodeRGB(width: 2, height: 2, pixels: [1, 2, 3]) }
        #expect(throws: CodecError.self) { try PNG.encodeGray(width: Int.max, height: Int.max, pixels: [1]) }
        #expect(throws: CodecError.self) { try PNG.encodeGray(width: 1 << 31, height: 1, pixels: [1]) }
        #expect(throws: CodecError.self) { try PNG.encodeGray(width: 1, height: 1, pixels: [1], compressionLevel: 12) }
    }
}

@Suite struct GzipTests {
    @Test func roundTripRandomAndEmpty() throws {
        var rng = XorShift(seed: 1234)
        for size in [0, 1, 100, 65_536, 300_001] {
            let data = rng.bytes(size)
            let gz = try Gzip.compress(data)
            #expect(Array(gz.prefix(3)) == [0x1F, 0x8B, 0x08], "gzip magic + deflate")
            #expect(try Gzip.decompress(gz) == data)
        }
        let text = [UInt8](repeating: UInt8(ascii: "a"), count: 1 << 20)
        for level in [-1, 0, 1, 9] {
            #expect(try Gzip.decompress(Gzip.compress(text, level: level)) == text)
        }
        #expect(try Gzip.compress(text).count < 10_000)
    }

    @Test func concatenatedMembers() throws {
        let a = Array("hello ".utf8), b = Array("world".utf8)
        #expect(try Gzip.decompress(Gzip.compress(a) + Gzip.compress(b)) == a + b)
    }

    @Test func garbageTruncatedAndTrailingThrow() throws {
        #expect(throws: CodecError.self) { try Gzip.decompress([]) }
        #expect(throws: CodecError.self) { try Gzip.decompress(Array("definitely not gzip".utf8)) }
        var rng = XorShift(seed: 99)
        for _ in 0..<50 {
            let junk = rng.bytes(Int(rng.next() % 200) + 1)
            // Random bytes are almost never a valid stream; what matters is no trap.
            _ = try? Gzip.decompress(junk)
        }
        let gz = try Gzip.compress(rng.bytes(5000))
        for cut in [1, 10, gz.count / 2, gz.count - 1] {
            #expect(throws: CodecError.self, "cut at \(cut)") { try Gzip.decompress(Array(gz[0..<cut])) }
        }
        #expect(throws: CodecError.self) { try Gzip.decompress(gz + [1, 2, 3]) }
        #expect(throws: CodecError.self) { try Gzip.compress([1], level: 10) }
    }

    @Test func maxOutputBytesEnforced() throws {
        let data = [UInt8](repeating: 0, count: 1 << 20)
        let gz = try Gzip.compress(data, level: 9)
        #expect(gz.count < 5_000)  // a tiny input that expands ~1000x
        let error = #expect(throws: CodecError.self) { try Gzip.decompress(gz, maxOutputBytes: 100_000) }
        #expect(error?.description.contains("100000") == true)
        #expect(try Gzip.decompress(gz, maxOutputBytes: data.count) == data)
        #expect(throws: CodecError.self) { try Gzip.decompress(gz, maxOutputBytes: data.count - 1) }
    }
}
