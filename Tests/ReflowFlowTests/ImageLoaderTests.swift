import Foundation
import Testing
import ReflowCodec
import ReflowEngine
@testable import ReflowFlow

// MARK: - Fixtures

/// A fresh temporary directory (removed by the caller).
private func scratchDirectory() throws -> URL {
    let url = FileManager.default.temporaryDirectory.appendingPathComponent("reflowd-images-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    return url
}

private func write(_ bytes: [UInt8], _ dir: URL, _ name: String) throws -> URL {
    let url = dir.appendingPathComponent(name)
    try Data(bytes).write(to: url)
    return url
}

private func be32(_ v: UInt32) -> [UInt8] { [UInt8(v >> 24), UInt8(v >> 16 & 0xFF), UInt8(v >> 8 & 0xFF), UInt8(v & 0xFF)] }

/// An IDX file: magic 00 00 08 rank, the dimensions, then `data`.
private func idx(rank: UInt8, _ dims: [UInt32], _ data: [UInt8], type: UInt8 = 0x08) -> [UInt8] {
    [0, 0, type, rank] + dims.flatMap(be32) + data
}

/// `n` images of h×w with pixel (k, y, x) = (k·31 + y·7 + x) mod 256, and labels k mod 10.
private func idxFixture(n: Int, h: Int, w: Int) -> (images: [UInt8], labels: [UInt8], pixels: [UInt8]) {
    var pixels = [UInt8]()
    for k in 0..<n { for y in 0..<h { for x in 0..<w { pixels.append(UInt8((k * 31 + y * 7 + x) % 256)) } } }
    let labels = (0..<n).map { UInt8($0 % 10) }
    return (idx(rank: 3, [UInt32(n), UInt32(h), UInt32(w)], pixels), idx(rank: 1, [UInt32(n)], labels), pixels)
}

/// An NPY v1.0 (or v2.0) file with the given header dict text and data.
private func npy(_ dict: String, _ data: [UInt8], version: UInt8 = 1) -> [UInt8] {
    let pre = version == 1 ? 10 : 12
    var header = dict
    header += String(repeating: " ", count: (64 - (pre + header.utf8.count + 1) % 64) % 64) + "\n"
    let h = Array(header.utf8)
    let len: [UInt8] = version == 1 ? [UInt8(h.count & 0xFF), UInt8(h.count >> 8)]
                                    : [UInt8(h.count & 0xFF), UInt8(h.count >> 8 & 0xFF), 0, 0]
    return [0x93, 0x4E, 0x55, 0x4D, 0x50, 0x59, version, 0] + len + h + data
}

private func npyDict(_ descr: String, _ shape: [Int], fortran: Bool = false) -> String {
    let s = shape.count == 1 ? "(\(shape[0]),)" : "(" + shape.map(String.init).joined(separator: ", ") + ")"
    return "{'descr': '\(descr)', 'fortran_order': \(fortran ? "True" : "False"), 'shape': \(s), }"
}

private func f32(_ values: [Float]) -> [UInt8] {
    values.flatMap { v -> [UInt8] in let b = v.bitPattern; return [UInt8(b & 0xFF), UInt8(b >> 8 & 0xFF), UInt8(b >> 16 & 0xFF), UInt8(b >> 24)] }
}

private func le(_ v: Int64, _ size: Int) -> [UInt8] { (0..<size).map { UInt8(truncatingIfNeeded: v >> (8 * Int64($0))) } }

/// The error thrown by `body`, or a recorded failure.
private func imageError<T>(_ body: () throws(ImageDataError) -> T, sourceLocation: SourceLocation = #_sourceLocation) -> ImageDataError? {
    do {
        _ = try body()
        Issue.record("expected an ImageDataError", sourceLocation: sourceLocation)
        return nil
    } catch {
        return error
    }
}

private func bytes(_ set: ImageSet) -> [UInt8] {
    if case .bytes(let b) = set.pixels { return b }
    return []
}

// MARK: - Gzip

@Suite("Gzip for image files")
struct GzipImageTests {
    @Test("isGzip, and decompressPrefix keeps a prefix, reports a cap, a cut stream and completion")
    func prefix() throws {
        let data = (0..<100_000).map { UInt8($0 % 251) }
        let gz = try Gzip.compress(data)
        #expect(Gzip.isGzip(gz) && Gzip.isGzip([0x1f, 0x8b]))
        #expect(!Gzip.isGzip([0x1f]) && !Gzip.isGzip([0, 0, 8, 3]) && !Gzip.isGzip([0x1f, 0x8b, 7]) && !Gzip.isGzip([]))
        let head = try Gzip.decompressPrefix(gz, maxOutputBytes: 16)
        #expect(head.bytes == Array(data.prefix(16)) && head.end == .limitReached)
        let all = try Gzip.decompressPrefix(gz, maxOutputBytes: data.count)
        #expect(all.bytes == data && all.end == .complete)
        let cut = try Gzip.decompressPrefix(Array(gz.prefix(gz.count / 2)), maxOutputBytes: 1 << 20)
        #expect(cut.end == .truncated && cut.bytes.count < data.count && cut.bytes == Array(data.prefix(cut.bytes.count)))
        #expect(try Gzip.decompressPrefix([], maxOutputBytes: 10).end == .truncated)
        #expect(throws: CodecError.self) { try Gzip.decompressPrefix(Array("not gzip at all".utf8), maxOutputBytes: 10) }
        #expect(throws: CodecError.self) { try Gzip.decompressPrefix(gz + [1, 2, 3], maxOutputBytes: 1 << 20) }
        #expect(try Gzip.decompressPrefix(gz + gz, maxOutputBytes: 1 << 20).bytes == data + data)
        #expect(try Gzip.decompressPrefix(gz, maxOutputBytes: Int.max).end == .complete)
    }

    @Test("a gzip bomb (16 MiB of zeros in a few KiB) is refused at the cap, by Gzip and by the IDX reader")
    func bomb() throws {
        let zeros = [UInt8](repeating: 0, count: 16 << 20)
        let bomb = try Gzip.compress(idx(rank: 3, [10, 28, 28], []) + zeros, level: 9)
        #expect(bomb.count < 100_000)
        let error = #expect(throws: CodecError.self) { try Gzip.decompress(bomb, maxOutputBytes: 1 << 20) }
        #expect(error?.detail.contains("exceeds the limit") == true)
        let p = try Gzip.decompressPrefix(bomb, maxOutputBytes: 1 << 20)
        #expect(p.end == .limitReached && p.bytes.count == 1 << 20)
        // The header declares 10 images: decompression stops just after 16 + 7840 bytes.
        let e = imageError { () throws(ImageDataError) in try IDX.loadImages(bytes: bomb, name: "bomb.gz") }
        #expect(e?.message.contains("longer than the 7856 bytes the header declares") == true, "\(String(describing: e))")
    }
}

// MARK: - IDX

@Suite("IDX image and label files")
struct IDXTests {
    @Test("raw and gzip IDX files load to the same images and labels")
    func rawAndGzip() throws {
        let dir = try scratchDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let f = idxFixture(n: 5, h: 4, w: 3)
        let fromBytes = try IDX.loadImages(bytes: f.images, name: "x")
        #expect(fromBytes.count == 5 && fromBytes.height == 4 && fromBytes.width == 3 && fromBytes.pixels == f.pixels)
        for gz in [false, true] {
            let images = try write(gz ? Gzip.compress(f.images) : f.images, dir, "i\(gz)")
            let labels = try write(gz ? Gzip.compress(f.labels) : f.labels, dir, "l\(gz)")
            let set = try IDX.loadSet(images: images, labels: labels)
            #expect(set.count == 5 && set.imageShape == [1, 4, 3])
            #expect(bytes(set) == f.pixels)
            #expect(set.labels == [0, 1, 2, 3, 4])
            #expect(try IDX.loadLabels(labels) == [0, 1, 2, 3, 4])
            let h = try IDX.readHeader(images)
            #expect(h.dimensions == [5, 4, 3] && h.isGzip == gz && h.elementType == 8)
            #expect(try IDX.readHeader(labels).dimensions == [5])
            #expect(try IDX.loadSet(images: images, labels: nil).labels == nil)
        }
    }

    @Test("truncated files name how many images are complete and the byte offset")
    func truncated() throws {
        let dir = try scratchDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let f = idxFixture(n: 5, h: 4, w: 3)
        let cut = Array(f.images.prefix(16 + 12 * 2 + 5))
        let raw = try write(cut, dir, "cut")
        let e1 = imageError { () throws(ImageDataError) in try IDX.loadImages(raw) }
        #expect(e1?.offset == cut.count && e1?.message == "file ends after 2 of 5 images" && e1?.file == "cut", "\(String(describing: e1))")
        // Gzip of truncated content: the offset is into the decompressed data.
        let gz = try write(Gzip.compress(cut), dir, "cut.gz")
        let e2 = imageError { () throws(ImageDataError) in try IDX.loadImages(gz) }
        #expect(e2?.offset == cut.count && e2?.message.contains("ends after 2 of 5 images") == true, "\(String(describing: e2))")
        // A cut gzip stream.
        let full = try Gzip.compress(f.images, level: 0)
        let cutStream = try write(Array(full.prefix(60)), dir, "stream.gz")
        let e3 = imageError { () throws(ImageDataError) in try IDX.loadImages(cutStream) }
        #expect(e3?.message.contains("cut off") == true, "\(String(describing: e3))")
        // A cut header, and a gzip stream missing only its trailer.
        #expect(imageError { () throws(ImageDataError) in try IDX.loadImages(bytes: Array(f.images.prefix(10)), name: "h") }?.message.contains("inside the IDX header") == true)
        let noTrailer = Array(full.dropLast(8))
        #expect(imageError { () throws(ImageDataError) in try IDX.loadImages(bytes: noTrailer, name: "t") }?.message.contains("checksum") == true)
        // Labels.
        let e4 = imageError { () throws(ImageDataError) in try IDX.loadLabels(bytes: Array(f.labels.prefix(11)), name: "l") }
        #expect(e4?.message == "file ends after 3 of 5 labels" && e4?.offset == 11)
    }

    @Test("wrong magic, element type, rank, trailing bytes and label mismatches are refused")
    func malformed() throws {
        let dir = try scratchDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let f = idxFixture(n: 5, h: 4, w: 3)
        func images(_ b: [UInt8]) -> ImageDataError? { imageError { () throws(ImageDataError) in try IDX.loadImages(bytes: b, name: "f") } }
        #expect(images(f.labels)?.message.contains("labels (0x00000801), expected images") == true)
        #expect(imageError { () throws(ImageDataError) in try IDX.loadLabels(bytes: f.images, name: "f") }?.message.contains("expected labels") == true)
        #expect(images([0x50, 0x4B, 3, 4] + f.images.dropFirst(4))?.message.contains("not an IDX file (magic 0x504b0304") == true)
        #expect(images(idx(rank: 3, [5, 4, 3], f.pixels.flatMap { [$0, 0, 0, 0] }, type: 0x0D))?.message.contains("float32") == true)
        #expect(images(idx(rank: 2, [5, 12], f.pixels))?.message.contains("3 dimension(s)") == true)
        let trailing = images(f.images + [1, 2])
        #expect(trailing?.offset == f.images.count && trailing?.message.contains("2 unexpected bytes") == true)
        let longGz = try Gzip.compress(f.images + [9])
        let gzTrailing = imageError { () throws(ImageDataError) in try IDX.loadImages(bytes: longGz, name: "g") }
        #expect(gzTrailing?.message.contains("longer than") == true)
        let rawFile = try write(f.images + [7], dir, "long")
        #expect(imageError { () throws(ImageDataError) in try IDX.loadImages(rawFile) }?.message.contains("1 unexpected bytes") == true)
        #expect(images(idx(rank: 3, [0, 4, 3], []))?.message.contains("no images") == true)

        let im = try write(f.images, dir, "im")
        let fewer = try write(idx(rank: 1, [4], [0, 1, 2, 3]), dir, "fewer")
        let e = imageError { () throws(ImageDataError) in try IDX.loadSet(images: im, labels: fewer) }
        #expect(e?.message == "4 labels for the 5 images of im" && e?.file == "fewer")
        let missing = imageError { () throws(ImageDataError) in try IDX.loadImages(dir.appendingPathComponent("nope")) }
        #expect(missing?.message.contains("cannot open") == true && missing?.file == "nope")
        #expect(imageError { () throws(ImageDataError) in try IDX.loadImages(dir) }?.message == "not a regular file")
    }

    @Test("huge declared dimensions are refused from the header, before allocating")
    func hugeHeaders() throws {
        let dir = try scratchDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let start = ContinuousClock.now
        let huge = idx(rank: 3, [1 << 31, 28, 28], [1, 2, 3, 4])  // a 20-byte file
        let hugeFile = try write(huge, dir, "huge")
        let e1 = imageError { () throws(ImageDataError) in try IDX.loadImages(hugeFile) }
        #expect(e1?.message.contains("exceed the limit") == true, "\(String(describing: e1))")
        let e2 = imageError { () throws(ImageDataError) in try IDX.loadImages(bytes: idx(rank: 3, [10, 65_535, 65_535], [0]), name: "wide") }
        #expect(e2?.message.contains("outside 1…256") == true)
        let gz = try Gzip.compress(idx(rank: 3, [100_000, 256, 256], []))
        let gzFile = try write(gz, dir, "big.gz")
        let e3 = imageError { () throws(ImageDataError) in try IDX.loadImages(gzFile) }
        #expect(e3?.message.contains("need more than the limit") == true, "\(String(describing: e3))")
        let e4 = imageError { () throws(ImageDataError) in try IDX.loadLabels(bytes: idx(rank: 1, [UInt32.max], []), name: "l") }
        #expect(e4?.message.contains("exceed the limit") == true)
        let tight = ImageLimits(maxImages: 4)
        #expect(imageError { () throws(ImageDataError) in try IDX.loadImages(bytes: idxFixture(n: 5, h: 2, w: 2).images, name: "x", limits: tight) } != nil)
        #expect(ContinuousClock.now - start < .seconds(2))
    }
}

// MARK: - NPY

@Suite("NPY image and label arrays")
struct NPYImageTests {
    @Test("uint8 N×H×W loads as one-channel bytes with integer labels of several dtypes")
    func uint8NHW() throws {
        let dir = try scratchDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let pixels = (0..<(4 * 3 * 2)).map { UInt8($0 * 10) }
        let images = try write(npy(npyDict("|u1", [4, 3, 2]), pixels), dir, "train_images.npy")
        for (descr, size) in [("|u1", 1), ("<i4", 4), ("<i8", 8), ("<u2", 2)] {
            let labels = try write(npy(npyDict(descr, [4]), [3, 0, 2, 1].flatMap { le($0, size) }), dir, "l.npy")
            let set = try NPYImages.load(images: images, labels: labels)
            #expect(set.imageShape == [1, 3, 2] && set.count == 4 && bytes(set) == pixels && set.labels == [3, 0, 2, 1], "\(descr)")
        }
        // Version 2.0 header.
        let v2 = try NPYImages.loadImages(bytes: npy(npyDict("|u1", [4, 3, 2]), pixels, version: 2), name: "v2")
        #expect(bytes(v2) == pixels)
        #expect(try NPYImages.readHeader(images).shape == [4, 3, 2])
    }

    @Test("float32 N×C×H×W in [0, 1] maps to [−1, 1]; values outside, NaN included, are named by index")
    func float32NCHW() throws {
        let values: [Float] = (0..<(2 * 3 * 2 * 2)).map { Float($0) / 23 }
        let set = try NPYImages.loadImages(bytes: npy(npyDict("<f4", [2, 3, 2, 2]), f32(values)), name: "f.npy")
        #expect(set.imageShape == [3, 2, 2] && set.count == 2)
        guard case .floats(let f) = set.pixels else { Issue.record("expected floats"); return }
        #expect(f == values.map { 2 * $0 - 1 })
        #expect(f.first == -1 && f.last == 1)
        for bad: Float in [1.5, -0.25, .nan, .infinity] {
            var v = values
            v[17] = bad  // image 1, channel 1, row 0, column 1
            let data = npy(npyDict("<f4", [2, 3, 2, 2]), f32(v))
            let e = imageError { () throws(ImageDataError) in try NPYImages.loadImages(bytes: data, name: "f.npy") }
            #expect(e?.message.contains("at image 1, channel 1, row 0, column 1 (element 17) is outside [0, 1]") == true, "\(String(describing: e))")
            #expect(e?.offset == data.count - 4 * 7)
        }
    }

    @Test("fortran order, truncation, trailing bytes, bad dtypes and shapes, big headers are refused")
    func malformed() throws {
        func load(_ b: [UInt8]) -> ImageDataError? { imageError { () throws(ImageDataError) in try NPYImages.loadImages(bytes: b, name: "a.npy") } }
        let px = [UInt8](repeating: 7, count: 2 * 3 * 3)
        #expect(load(npy(npyDict("|u1", [2, 3, 3], fortran: true), px))?.message.contains("fortran_order True") == true)
        let cutFile = npy(npyDict("|u1", [2, 3, 3]), Array(px.prefix(10)))
        let cut = load(cutFile)
        #expect(cut?.message.contains("needs 18 bytes, 10 present") == true && cut?.offset == cutFile.count)
        #expect(load(npy(npyDict("|u1", [2, 3, 3]), px + [0]))?.message.contains("1 unexpected bytes") == true)
        #expect(load(npy(npyDict("<f8", [2, 3, 3]), px))?.message.contains("unsupported image dtype '<f8'") == true)
        #expect(load(npy(npyDict(">f4", [2, 3, 3]), px))?.message.contains("big-endian") == true)
        #expect(load(npy(npyDict("|u1", [18]), px))?.message.contains("(N, H, W) or (N, C, H, W)") == true)
        #expect(load(npy(npyDict("|u1", [1, 6, 3, 1]), px))?.message.contains("channels-last") == true)
        #expect(load(npy(npyDict("|u1", [1, 2, 1, 9]), px))?.message.contains("2 channels") == true)
        #expect(load(npy(npyDict("|u1", [0, 3, 3]), []))?.message.contains("no images") == true)
        #expect(load(Array("just text".utf8))?.message.contains("not an NPY file") == true)
        #expect(load(npy("{'descr': '|u1', 'shape': (2, 3, 3), }", px))?.message.contains("fortran_order") == true)
        let start = ContinuousClock.now
        #expect(load(npy(npyDict("<f4", [1 << 40, 256, 256]), [1, 2]))?.message.contains("exceed the limit") == true)
        #expect(load(npy(npyDict("|u1", [1000, 3, 4096, 4096]), []))?.message.contains("outside 1…256") == true)
        #expect(ContinuousClock.now - start < .seconds(1))

        func labels(_ b: [UInt8]) -> ImageDataError? { imageError { () throws(ImageDataError) in try NPYImages.loadLabels(bytes: b, name: "l.npy") } }
        #expect(labels(npy(npyDict("<f4", [2]), f32([0, 1])))?.message.contains("unsupported label dtype") == true)
        #expect(labels(npy(npyDict("|u1", [2, 1]), [0, 1]))?.message.contains("shape (N,)") == true)
        let negativeFile = npy(npyDict("<i4", [3]), [0, 1, -1].flatMap { le($0, 4) })
        let negative = labels(negativeFile)
        #expect(negative?.message == "label 2 is -1, outside 0…999" && negative?.offset == negativeFile.count - 4)
        #expect(labels(npy(npyDict("<i8", [1]), le(1 << 40, 8)))?.message.contains("outside") == true)
        #expect(labels(npy(npyDict("<u8", [1]), le(-1, 8)))?.message.contains("outside") == true)
    }
}

// MARK: - Built-in sets

@Suite("Built-in procedural image sets")
struct BuiltinImageTests {
    @Test("shapes are deterministic, any image regenerates alone, and different seeds differ")
    func determinism() throws {
        let a = try BuiltinImages.shapes(count: 200, seed: 42)
        let b = try BuiltinImages.shapes(count: 200, seed: 42)
        #expect(bytes(a) == bytes(b) && a.labels == b.labels)
        let c = try BuiltinImages.shapes(count: 200, seed: 43)
        #expect(bytes(a) != bytes(c))
        for i in [0, 7, 123, 199] {
            let one = try BuiltinImages.shapeImage(index: i, seed: 42)
            #expect(one.pixels == a.bytes(ofImage: i) && one.label == a.labels?[i], "image \(i)")
        }
        let longer = try BuiltinImages.shapes(count: 300, seed: 42)
        #expect(Array(bytes(longer).prefix(200 * 784)) == bytes(a))
        #expect(a.classNames == BuiltinImages.classNames && a.classCount == 10 && a.imageShape == [1, 28, 28])
        // A fingerprint of the exact pixels (FNV-1a), so the generator cannot drift silently.
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        for v in bytes(a) { h = (h ^ UInt64(v)) &* 0x100_0000_01b3 }
        print("shapes(count: 200, seed: 42) FNV-1a: 0x\(String(h, radix: 16))")
    }

    @Test("10k shapes: balanced classes, every image drawn inside the frame, class means distinct")
    func classes() throws {
        let start = ContinuousClock.now
        let set = try BuiltinImages.shapes(count: 10_000, seed: 7)
        print("BuiltinImages.shapes(count: 10000): \(ContinuousClock.now - start)")
        let labels = try #require(set.labels)
        var counts = [Int](repeating: 0, count: 10)
        for l in labels { counts[Int(l)] += 1 }
        #expect(counts == [Int](repeating: 1000, count: 10))
        let px = bytes(set)
        var means = [[Double]](repeating: [Double](repeating: 0, count: 784), count: 10)
        for i in 0..<set.count {
            let img = Array(px[(i * 784)..<((i + 1) * 784)])
            if img.max()! < 120 { Issue.record("image \(i) is nearly empty") }
            var border = 0
            for j in 0..<28 {
                border += Int(img[j]) + Int(img[27 * 28 + j]) + Int(img[j * 28]) + Int(img[j * 28 + 27])
            }
            if border != 0 { Issue.record("image \(i) (class \(labels[i])) touches the border") }
            for k in 0..<784 { means[Int(labels[i])][k] += Double(img[k]) / 1000 }
        }
        var closest = Double.infinity
        for a in 0..<10 {
            for b in (a + 1)..<10 {
                let d = zip(means[a], means[b]).map { ($0 - $1) * ($0 - $1) }.reduce(0, +).squareRoot()
                closest = min(closest, d)
                #expect(d > 150, "classes \(BuiltinImages.classNames[a]) and \(BuiltinImages.classNames[b]) have close mean images (\(d))")
            }
        }
        print("closest class means: \(closest)")
    }

    @Test("strokes are deterministic, regenerate alone, unlabelled; bad arguments throw")
    func strokes() throws {
        let a = try BuiltinImages.strokes(count: 50, seed: 3)
        #expect(bytes(a) == bytes(try BuiltinImages.strokes(count: 50, seed: 3)))
        #expect(a.labels == nil && a.imageShape == [1, 28, 28])
        #expect(try BuiltinImages.strokeImage(index: 31, seed: 3) == a.bytes(ofImage: 31))
        #expect(bytes(a).max() == 255)
        #expect(try BuiltinImages.shapes(count: 3, seed: 1, size: 64).imageShape == [1, 64, 64])
        #expect(throws: ImageDataError.self) { try BuiltinImages.shapes(count: 0, seed: 1) }
        #expect(throws: ImageDataError.self) { try BuiltinImages.shapes(count: 10, seed: 1, size: 4) }
        #expect(throws: ImageDataError.self) { try BuiltinImages.strokes(count: 2_000_000, seed: 1) }
        #expect(throws: ImageDataError.self) { try BuiltinImages.shapeImage(index: -1, seed: 1) }
    }
}

// MARK: - Dataset detection

@Suite("Image dataset detection")
struct ImageDatasetTests {
    @Test("IDX layout: gzip train and raw t10k load by split; describe reads headers and labels")
    func idxLayout() throws {
        let dir = try scratchDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let train = idxFixture(n: 20, h: 5, w: 6), test = idxFixture(n: 10, h: 5, w: 6)
        _ = try write(Gzip.compress(train.images), dir, "train-images-idx3-ubyte.gz")
        _ = try write(Gzip.compress(train.labels), dir, "train-labels-idx1-ubyte.gz")
        _ = try write(test.images, dir, "t10k-images-idx3-ubyte")
        _ = try write(test.labels, dir, "t10k-labels-idx1-ubyte")
        _ = try write([1, 2, 3], dir, "train_images.npy")  // IDX wins over NPY
        let tr = try ImageDataset.load(directory: dir, split: .train)
        #expect(tr.count == 20 && bytes(tr) == train.pixels && tr.labels?.count == 20)
        let te = try ImageDataset.load(directory: dir, split: .test)
        #expect(te.count == 10 && bytes(te) == test.pixels)
        let d = try ImageDataset.describe(directory: dir)
        #expect(d.format == .idx && d.classCount == 10)
        #expect(d.splits.map(\.split) == [.train, .test])
        #expect(d.splits[0].files == ["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"])
        #expect(d.splits[0].count == 20 && d.splits[0].imageShape == [1, 5, 6] && d.splits[0].pixelType == "uint8" && d.splits[0].labelled == true)
        #expect(d.splits[1].count == 10 && d.splits[1].classCount == 10)
    }

    @Test("NPY layouts (train_/test_ and images.npy), missing splits, single files, the PNG hook and nothing recognised")
    func npyAndErrors() throws {
        let dir = try scratchDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let px = [UInt8](repeating: 9, count: 6 * 2 * 2)
        _ = try write(npy(npyDict("|u1", [6, 2, 2]), px), dir, "images.npy")
        _ = try write(npy(npyDict("<i8", [6]), (0..<6).flatMap { le(Int64($0 % 3), 8) }), dir, "labels.npy")
        let tr = try ImageDataset.load(directory: dir, split: .train)
        #expect(tr.count == 6 && tr.labels == [0, 1, 2, 0, 1, 2])
        let noTest = imageError { () throws(ImageDataError) in try ImageDataset.load(directory: dir, split: .test) }
        #expect(noTest?.message == "no test split (found npy: train)")
        _ = try write(npy(npyDict("<f4", [3, 3, 2, 2]), f32([Float](repeating: 0.5, count: 36))), dir, "test_images.npy")
        let te = try ImageDataset.load(directory: dir, split: .test)
        #expect(te.imageShape == [3, 2, 2] && te.labels == nil)
        let d = try ImageDataset.describe(directory: dir)
        #expect(d.format == .npy && d.splits.count == 2 && d.splits[1].pixelType == "float32" && d.splits[1].labelled == false)
        #expect(d.splits[0].classCount == 3 && d.splits[0].files == ["images.npy", "labels.npy"])

        // A single file is a train split.
        let single = try ImageDataset.load(directory: dir.appendingPathComponent("images.npy"), split: .train)
        #expect(single.count == 6 && single.labels == nil)

        // Label count mismatch through detection.
        _ = try write(npy(npyDict("|u1", [5]), [0, 1, 2, 3, 4]), dir, "labels.npy")
        #expect(imageError { () throws(ImageDataError) in try ImageDataset.load(directory: dir, split: .train) }?.message == "5 labels for the 6 images of images.npy")
        #expect(throws: ImageDataError.self) { try ImageDataset.describe(directory: dir) }

        // PNG folders: recognised and handed to ImageFolder (which refuses an empty class folder
        // and a one-byte tar, naming them).
        let png = try scratchDirectory()
        defer { try? FileManager.default.removeItem(at: png) }
        try FileManager.default.createDirectory(at: png.appendingPathComponent("train/0"), withIntermediateDirectories: true)
        _ = try write([0], png, "test.tar")
        let hook = imageError { () throws(ImageDataError) in try ImageDataset.load(directory: png, split: .train) }
        #expect(hook != nil && hook?.message.contains("not wired") == false)
        let tarError = imageError { () throws(ImageDataError) in try ImageDataset.load(directory: png, split: .test) }
        #expect(tarError != nil && tarError?.message.contains("not wired") == false)
        let dp = try ImageDataset.describe(directory: png)
        #expect(dp.format == .png && dp.splits.map(\.files) == [["train/"], ["test.tar"]] && dp.splits[0].count == nil)

        // Nothing recognised: the error says what was looked for.
        let empty = try scratchDirectory()
        defer { try? FileManager.default.removeItem(at: empty) }
        _ = try write([1], empty, "readme.txt")
        let none = imageError { () throws(ImageDataError) in try ImageDataset.load(directory: empty, split: .train) }
        #expect(none?.message.hasPrefix("no image dataset recognised; looked for IDX (train-images-idx3-ubyte[.gz]") == true)
        #expect(none?.message.contains("train_images.npy") == true && none?.message.contains("train.tar") == true)
        #expect(imageError { () throws(ImageDataError) in try ImageDataset.load(directory: empty.appendingPathComponent("nope"), split: .train) }?.message == "does not exist")
        #expect(imageError { () throws(ImageDataError) in try ImageDataset.load(directory: empty.appendingPathComponent("readme.txt"), split: .train) }?.message.contains("not a recognised image file") == true)
    }

    static let fashion = "/usr/share/datasets/fashion-mnist"

    @Test("Fashion-MNIST t10k: 10,000 images of 28×28 in 10 balanced classes",
          .enabled(if: FileManager.default.fileExists(atPath: ImageDatasetTests.fashion + "/t10k-images-idx3-ubyte.gz")))
    func fashionMNIST() throws {
        let dir = URL(fileURLWithPath: Self.fashion)
        let set = try ImageDataset.load(directory: dir, split: .test)
        #expect(set.count == 10_000 && set.imageShape == [1, 28, 28] && set.classCount == 10)
        var counts = [Int](repeating: 0, count: 10)
        for l in set.labels ?? [] { counts[Int(l)] += 1 }
        #expect(counts == [Int](repeating: 1000, count: 10))
        let d = try ImageDataset.describe(directory: dir)
        #expect(d.format == .idx && d.splits.map(\.count) == [60_000, 10_000] && d.classCount == 10)
    }
}
