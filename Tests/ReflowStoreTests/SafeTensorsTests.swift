import Testing
import ReflowStore
import ReflowCodec
import ReflowEngine

// Fixtures are built byte by byte from the format description (huggingface/safetensors):
// u64 little-endian header length N, N bytes of JSON, then the data buffer.

func le64(_ v: UInt64) -> [UInt8] { (0..<8).map { UInt8(truncatingIfNeeded: v >> (8 * UInt64($0))) } }
func le32(_ v: UInt32) -> [UInt8] { (0..<4).map { UInt8(truncatingIfNeeded: v >> (8 * UInt32($0))) } }
func le16(_ v: UInt16) -> [UInt8] { [UInt8(v & 0xFF), UInt8(v >> 8)] }
func f32(_ values: Float...) -> [UInt8] { values.flatMap { le32($0.bitPattern) } }

/// A file with the given header text (no padding) and buffer.
func file(_ header: String, _ buffer: [UInt8] = []) -> [UInt8] {
    let h = Array(header.utf8)
    return le64(UInt64(h.count)) + h + buffer
}

/// A header entry.
func entry(_ name: String, _ dtype: String = "F32", _ shape: String, _ begin: Int, _ end: Int) -> String {
    "\"\(name)\":{\"dtype\":\"\(dtype)\",\"shape\":\(shape),\"data_offsets\":[\(begin),\(end)]}"
}

func rejects(_ bytes: [UInt8], _ expected: SafeTensorsError, sourceLocation: SourceLocation = #_sourceLocation) {
    #expect(throws: expected, sourceLocation: sourceLocation) { try SafeTensors.decode(bytes) }
}

func bitsEqual(_ a: Tensor?, _ b: Tensor) -> Bool {
    guard let a, a.shape == b.shape, a.data.count == b.data.count else { return false }
    return zip(a.data, b.data).allSatisfy { $0.bitPattern == $1.bitPattern }
}

@Suite struct SafeTensorsRoundTripTests {
    static let tensors: [(name: String, tensor: Tensor)] = [
        ("weight", Tensor(shape: [2, 3], data: [1, -2.5, Float(bitPattern: 0x0003_0000), .infinity, -0.0, Float(bitPattern: 0x7FC0_1234)])),
        ("bias", Tensor(shape: [3], data: [0.1, 0.2, 0.3])),
        ("scalar", Tensor(scalar: 42)),
        ("empty", Tensor(shape: [0, 4], data: [])),
        ("zero-mid", Tensor(shape: [3, 0, 2], data: [])),
        ("ünïcode \"quoted\" \\ name", Tensor(shape: [1], data: [7])),
    ]
    static let metadata = ["format": "pt", "step": "100", "tricky": "a\"b\\c\nd\u{1}e é 🚀", "": "empty key"]

    @Test func roundTripIsBitExact() throws {
        let bytes = try SafeTensors.encode(Self.tensors, metadata: Self.metadata)
        let decoded = try SafeTensors.decode(bytes)
        #expect(decoded.metadata == Self.metadata)
        #expect(decoded.tensors.count == Self.tensors.count)
        for (name, tensor) in Self.tensors {
            #expect(bitsEqual(decoded.tensors[name], tensor), "\(name)")
        }
        // Zero-size tensors sit at the same offset as their successor; ties keep name order.
        let byName = Self.tensors.map(\.name).sorted { $0.utf8.lexicographicallyPrecedes($1.utf8) }
        #expect(Set(decoded.order) == Set(byName))
        #expect(decoded.order.filter { decoded.tensors[$0]!.count > 0 }
                == byName.filter { decoded.tensors[$0]!.count > 0 })
        // Deterministic output.
        #expect(try SafeTensors.encode(Self.tensors.reversed(), metadata: Self.metadata) == bytes)
    }

    @Test func headerIsPaddedToMultipleOf8() throws {
        for extra in 0..<17 {
            let meta = ["k": String(repeating: "x", count: extra)]
            let bytes = try SafeTensors.encode([("t", Tensor(shape: [1], data: [1]))], metadata: meta)
            let n = Int(bytes[0..<8].enumerated().reduce(UInt64(0)) { $0 | UInt64($1.element) << (8 * UInt64($1.offset)) })
            #expect((8 + n) % 8 == 0)
            #expect(bytes[8] == UInt8(ascii: "{"))
            let header = bytes[8..<(8 + n)]
            let close = try #require(header.lastIndex(of: UInt8(ascii: "}")))
            #expect(header[(close + 1)...].allSatisfy { $0 == 0x20 })
            #expect(try SafeTensors.decode(bytes).metadata == meta)
        }
    }

    @Test func encoderProducesTheExpectedBytes() throws {
        let bytes = try SafeTensors.encode([("b", Tensor(shape: [1], data: [-2])), ("a", Tensor(shape: [2], data: [1, 0.5]))],
                                           metadata: ["k": "v"])
        var header = Array(#"{"__metadata__":{"k":"v"},"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}}"#.utf8)
        while (8 + header.count) % 8 != 0 { header.append(0x20) }
        let expected = le64(UInt64(header.count)) + header
            + [0x00, 0x00, 0x80, 0x3F] + [0x00, 0x00, 0x00, 0x3F] + [0x00, 0x00, 0x00, 0xC0]
        #expect(bytes == expected)
    }

    @Test func handBuiltFixtureDecodes() throws {
        let header = "{\"__metadata__\":{\"note\":\"hi\"}, "
            + entry("b", "F32", "[2]", 8, 16) + " , "
            + entry("a", "F32", "[2]", 0, 8) + ","
            + entry("s", "F32", "[]", 16, 20) + "}\n  "
        let buffer: [UInt8] = [0x00, 0x00, 0x80, 0x3F,  0x00, 0x00, 0x00, 0xC0,   // a = [1, -2]
                               0x00, 0x00, 0x40, 0x40,  0x00, 0x00, 0x80, 0xBF,   // b = [3, -1]
                               0x00, 0x00, 0x28, 0x42]                            // s = 42
        let decoded = try SafeTensors.decode(file(header, buffer))
        #expect(decoded.order == ["a", "b", "s"])
        #expect(decoded.metadata == ["note": "hi"])
        #expect(decoded.tensors["a"] == Tensor(shape: [2], data: [1, -2]))
        #expect(decoded.tensors["b"] == Tensor(shape: [2], data: [3, -1]))
        #expect(decoded.tensors["s"] == Tensor(scalar: 42))
    }

    @Test func emptyFileAndIgnoredExtraFields() throws {
        let empty = try SafeTensors.decode(file("{}"))
        #expect(empty.tensors.isEmpty && empty.order.isEmpty && empty.metadata.isEmpty)
        #expect(try SafeTensors.decode(SafeTensors.encode([])).tensors.isEmpty)
        let extra = "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4],\"extra\":{\"x\":[1,2]}}}"
        #expect(try SafeTensors.decode(file(extra, f32(5))).tensors["a"] == Tensor(shape: [1], data: [5]))
        // JSON escapes in names are decoded.
        let escaped = "{\"\\u00e9\\ud83d\\ude80\\n\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[0,4]}}"
        #expect(try SafeTensors.decode(file(escaped, f32(1))).order == ["é🚀\n"])
    }

    @Test func halfBFloatAndDoubleDecode() throws {
        let halves: [(UInt16, Float)] = [
            (0x3C00, 1), (0xC000, -2), (0x7BFF, 65504), (0x0001, 0x1p-24), (0x03FF, 0x1.ff8p-15),
            (0x8000, -0.0), (0x7C00, .infinity), (0xFC00, -.infinity), (0x3555, 0.333251953125),
        ]
        let bf16: [(UInt16, Float)] = [(0x3F80, 1), (0xC040, -3), (0x4049, 3.140625), (0x0000, 0), (0xFF80, -.infinity)]
        let doubles: [(Double, Float)] = [(1.5, 1.5), (-0.1, Float(-0.1)), (1e300, .infinity), (-1e-300, -0.0)]

        var buffer: [UInt8] = []
        buffer += halves.flatMap { le16($0.0) } + le16(0x7E00)               // + a NaN
        let bStart = buffer.count
        buffer += bf16.flatMap { le16($0.0) }
        let dStart = buffer.count
        buffer += doubles.flatMap { le64($0.0.bitPattern) }
        let header = "{" + entry("h", "F16", "[\(halves.count + 1)]", 0, bStart) + ","
            + entry("b", "BF16", "[\(bf16.count)]", bStart, dStart) + ","
            + entry("d", "F64", "[2,2]", dStart, buffer.count) + "}"
        let decoded = try SafeTensors.decode(file(header, buffer))
        let h = try #require(decoded.tensors["h"])
        for (i, (_, v)) in halves.enumerated() { #expect(h.data[i].bitPattern == v.bitPattern, "half \(i)") }
        #expect(h.data[halves.count].isNaN)
        #expect(try #require(decoded.tensors["b"]).data.map(\.bitPattern) == bf16.map(\.1.bitPattern))
        let d = try #require(decoded.tensors["d"])
        #expect(d.shape == [2, 2])
        #expect(d.data.map(\.bitPattern) == doubles.map(\.1.bitPattern))
    }

    @Test func writeAndReadFile() throws {
        let dir = try TempDir()
        defer { dir.remove() }
        let path = dir.file("model.safetensors")
        let digest = try SafeTensors.write(Self.tensors, metadata: Self.metadata, to: path)
        #expect(digest == (try SHA256.hexOfFile(path: path)))
        #expect(digest == SHA256.hex(of: try SafeTensors.encode(Self.tensors, metadata: Self.metadata)))
        let decoded = try SafeTensors.read(path: path)
        for (name, tensor) in Self.tensors { #expect(bitsEqual(decoded.tensors[name], tensor)) }
        #expect(dir.entries() == ["model.safetensors"])
        let error = #expect(throws: StoreError.self) { try SafeTensors.read(path: path, maxBytes: 16) }
        #expect(error?.call == "size")
        #expect(throws: StoreError.self) { try SafeTensors.read(path: dir.file("missing")) }
        let dictDigest = try SafeTensors.write(["x": Tensor(scalar: 1)], to: dir.file("d.safetensors"))
        #expect(dictDigest.count == 64)
    }
}

@Suite struct SafeTensorsWriterRejectionTests {
    @Test func rejectsBadNamesAndTensors() {
        let t = Tensor(shape: [1], data: [1])
        #expect(throws: SafeTensorsError.emptyName) { try SafeTensors.encode([("", t)]) }
        #expect(throws: SafeTensorsError.duplicateName("a")) { try SafeTensors.encode([("a", t), ("b", t), ("a", t)]) }
        #expect(throws: SafeTensorsError.reservedName("__metadata__")) { try SafeTensors.encode([("__metadata__", t)]) }
        var bad = Tensor(shape: [2, 2], data: [1, 2, 3, 4])
        bad.data = [1]  // `data` is publicly settable, breaking the shape invariant
        #expect(throws: SafeTensorsError.elementCountMismatch(tensor: "bad", shape: [2, 2], count: 1)) {
            try SafeTensors.encode([("bad", bad)])
        }
        let negative = t.reshaped([-1, -1])  // element count 1, but negative dimensions
        #expect(throws: SafeTensorsError.invalidDimension(tensor: "neg", index: 0, value: "-1")) {
            try SafeTensors.encode([("neg", negative)])
        }
    }
}

@Suite struct SafeTensorsReaderRejectionTests {
    @Test func tooShortForPrefix() {
        for n in 0..<8 { rejects([UInt8](repeating: 0, count: n), .fileTooShort(size: n)) }
    }

    @Test func headerLengthHostile() {
        rejects(le64(.max) + Array("{}".utf8), .headerTooLarge(declared: .max, limit: 100_000_000))
        rejects(le64(100_000_001), .headerTooLarge(declared: 100_000_001, limit: 100_000_000))
        rejects(le64(100) + Array("{}".utf8), .headerExceedsFile(declared: 100, available: 2))
        rejects(le64(3) + Array("{}".utf8), .headerExceedsFile(declared: 3, available: 2))
    }

    @Test func headerNotUTF8() {
        rejects(le64(3) + [0x7B, 0xFF, 0x7D], .headerNotUTF8)
        rejects(le64(4) + [0x7B, 0xC3, 0x28, 0x7D], .headerNotUTF8)
    }

    @Test func headerNotJSON() throws {
        for text in ["{", "{\"a\":", "{\"a\" 1}", "{a:1}", "{\"a\":1,}", "{\"a\":01}", "{\"a\":\"\\x\"}",
                     "{\"a\":\"\\ud800\"}", "{\"a\":\"tab\there\"}", "{} x", "{\"a\":tru}", ""] {
            let error = #expect(throws: SafeTensorsError.self, "\(text)") { try SafeTensors.decode(file(text)) }
            if text.isEmpty {
                #expect(error == .headerNotJSON(offset: 0, reason: "unexpected end of header"))
            } else if case .headerNotJSON = error {} else {
                Issue.record("\(text): expected headerNotJSON, got \(String(describing: error))")
            }
        }
        // Deep nesting must be rejected, not overflow the stack.
        let deep = "{\"a\":" + String(repeating: "[", count: 200_000) + String(repeating: "]", count: 200_000) + "}"
        let error = #expect(throws: SafeTensorsError.self) { try SafeTensors.decode(file(deep)) }
        #expect(error.map { "\($0)" }?.contains("nesting") == true)
    }

    @Test func headerNotObjectOrBadStart() {
        rejects(file("[]"), .headerNotObject(found: "an array"))
        rejects(file("\"x\""), .headerNotObject(found: "a string"))
        rejects(file("12"), .headerNotObject(found: "a number"))
        rejects(file(" {}"), .headerInvalidStart(firstByte: 0x20))
        rejects(file("\n{}"), .headerInvalidStart(firstByte: 0x0A))
    }

    @Test func badMetadata() {
        rejects(file("{\"__metadata__\":[]}"), .metadataNotObject(found: "an array"))
        rejects(file("{\"__metadata__\":\"x\"}"), .metadataNotObject(found: "a string"))
        rejects(file("{\"__metadata__\":{\"a\":{\"b\":\"c\"}}}"), .metadataValueNotString(key: "a", found: "an object"))
        rejects(file("{\"__metadata__\":{\"a\":1}}"), .metadataValueNotString(key: "a", found: "a number"))
        rejects(file("{\"__metadata__\":{\"a\":\"1\",\"a\":\"2\"}}"), .duplicateMetadataKey("a"))
        rejects(file("{\"__metadata__\":{},\"__metadata__\":{}}"), .duplicateName("__metadata__"))
    }

    @Test func duplicateAndEmptyNames() {
        // Both declarations are individually valid; JSONSerialization would keep only one.
        rejects(file("{" + entry("a", "F32", "[1]", 0, 4) + "," + entry("a", "F32", "[1]", 4, 8) + "}", f32(1, 2)),
                .duplicateName("a"))
        rejects(file("{" + entry("", "F32", "[1]", 0, 4) + "}", f32(1)), .emptyName)
        rejects(file("{\"a\":{\"dtype\":\"F32\",\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", f32(1)),
                .duplicateField(tensor: "a", field: "dtype"))
    }

    @Test func malformedEntries() {
        rejects(file("{\"a\":[1]}"), .entryNotObject(tensor: "a", found: "an array"))
        rejects(file("{\"a\":null}"), .entryNotObject(tensor: "a", found: "null"))
        rejects(file("{\"a\":{\"shape\":[1],\"data_offsets\":[0,4]}}", f32(1)), .missingField(tensor: "a", field: "dtype"))
        rejects(file("{\"a\":{\"dtype\":\"F32\",\"data_offsets\":[0,4]}}", f32(1)), .missingField(tensor: "a", field: "shape"))
        rejects(file("{\"a\":{\"dtype\":\"F32\",\"shape\":[1]}}", f32(1)), .missingField(tensor: "a", field: "data_offsets"))
        rejects(file("{\"a\":{\"dtype\":32,\"shape\":[1],\"data_offsets\":[0,4]}}", f32(1)),
                .wrongFieldType(tensor: "a", field: "dtype", expected: "a string", found: "a number"))
        rejects(file("{\"a\":{\"dtype\":\"F32\",\"shape\":\"1\",\"data_offsets\":[0,4]}}", f32(1)),
                .wrongFieldType(tensor: "a", field: "shape", expected: "an array of integers", found: "a string"))
        rejects(file("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":{}}}", f32(1)),
                .wrongFieldType(tensor: "a", field: "data_offsets", expected: "an array of two integers", found: "an object"))
    }

    @Test func dtypes() {
        rejects(file("{" + entry("a", "F33", "[1]", 0, 4) + "}", f32(1)), .unknownDtype(tensor: "a", dtype: "F33"))
        rejects(file("{" + entry("a", "f32", "[1]", 0, 4) + "}", f32(1)), .unknownDtype(tensor: "a", dtype: "f32"))
        rejects(file("{" + entry("a", "I64", "[1]", 0, 8) + "}", le64(5)), .unsupportedDtype(tensor: "a", dtype: "I64"))
        rejects(file("{" + entry("a", "U8", "[4]", 0, 4) + "}", [1, 2, 3, 4]), .unsupportedDtype(tensor: "a", dtype: "U8"))
    }

    @Test func badDimensions() {
        for (dim, text) in [("-1", "-1"), ("1.5", "1.5"), ("1e0", "1e0"), ("\"2\"", "a string"), ("null", "null"),
                            ("99999999999999999999", "99999999999999999999")] {
            rejects(file("{" + entry("a", "F32", "[1,\(dim)]", 0, 4) + "}", f32(1)),
                    .invalidDimension(tensor: "a", index: 1, value: text))
        }
    }

    @Test func shapeOverflow() {
        let big = 1 << 40
        rejects(file("{" + entry("a", "F32", "[\(big),\(big)]", 0, 4) + "}", f32(1)),
                .shapeOverflow(tensor: "a", shape: [big, big]))
        // Element count fits, byte size (× 8) does not.
        rejects(file("{" + entry("a", "F64", "[\(1 << 31),\(1 << 31)]", 0, 4) + "}", f32(1)),
                .shapeOverflow(tensor: "a", shape: [1 << 31, 1 << 31]))
        // Element count ok but the claimed span is absurd: size mismatch, not an allocation.
        rejects(file("{" + entry("a", "F32", "[\(1 << 40)]", 0, 4) + "}", f32(1)),
                .byteSizeMismatch(tensor: "a", expected: 1 << 42, actual: 4))
    }

    @Test func badDataOffsets() {
        func offsets(_ o: String) -> [UInt8] {
            file("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":\(o)}}", f32(1))
        }
        let cases: [(String, String)] = [
            ("[0]", "expected 2 integers, found 1 elements"),
            ("[0,4,8]", "expected 2 integers, found 3 elements"),
            ("[-4,0]", "-4 is negative"),
            ("[4,0]", "begin 4 is after end 0"),
            ("[0.0,4]", "0.0 is not an integer"),
            ("[0,4e0]", "4e0 is not an integer"),
            ("[\"0\",4]", "expected integers, found a string"),
            ("[0,99999999999999999999]", "99999999999999999999 is too large"),
        ]
        for (o, reason) in cases { rejects(offsets(o), .invalidDataOffsets(tensor: "a", reason: reason)) }
        rejects(offsets("[0,8]"), .byteSizeMismatch(tensor: "a", expected: 4, actual: 8))
    }

    @Test func tilingRules() {
        // Beyond the buffer.
        rejects(file("{" + entry("a", "F32", "[2]", 0, 8) + "}", f32(1)),
                .offsetsBeyondBuffer(tensor: "a", end: 8, bufferLength: 4))
        rejects(file("{" + entry("a", "F32", "[1]", 1 << 50, (1 << 50) + 4) + "}", f32(1)),
                .offsetsBeyondBuffer(tensor: "a", end: (1 << 50) + 4, bufferLength: 4))
        // Overlap.
        rejects(file("{" + entry("a", "F32", "[2]", 0, 8) + "," + entry("b", "F32", "[2]", 4, 12) + "}", f32(1, 2, 3)),
                .overlap(tensor: "b", previous: "a", begin: 4, previousEnd: 8))
        // Two tensors claiming the same bytes.
        rejects(file("{" + entry("a", "F32", "[1]", 0, 4) + "," + entry("b", "F32", "[1]", 0, 4) + "}", f32(1)),
                .overlap(tensor: "b", previous: "a", begin: 0, previousEnd: 4))
        // Gap (including a gap at the start).
        rejects(file("{" + entry("a", "F32", "[1]", 0, 4) + "," + entry("b", "F32", "[1]", 8, 12) + "}", f32(1, 2, 3)),
                .gap(tensor: "b", begin: 8, expectedBegin: 4))
        rejects(file("{" + entry("a", "F32", "[1]", 4, 8) + "}", f32(1, 2)), .gap(tensor: "a", begin: 4, expectedBegin: 0))
        // Trailing bytes not covered by any tensor.
        rejects(file("{" + entry("a", "F32", "[1]", 0, 4) + "}", f32(1, 2)), .bufferLengthMismatch(dataEnd: 4, bufferLength: 8))
        rejects(file("{}", [0]), .bufferLengthMismatch(dataEnd: 0, bufferLength: 1))
    }

    @Test func everyTruncationThrows() throws {
        let bytes = try SafeTensors.encode([("a", Tensor(shape: [2, 2], data: [1, 2, 3, 4])),
                                            ("b", Tensor(scalar: 5)), ("c", Tensor(shape: [0], data: []))],
                                           metadata: ["k": "v"])
        #expect(try SafeTensors.decode(bytes).tensors.count == 3)
        for length in 0..<bytes.count {
            #expect(throws: SafeTensorsError.self, "length \(length)") { try SafeTensors.decode(Array(bytes[0..<length])) }
        }
    }

    @Test func corruptedHeaderBytesNeverTrap() throws {
        let bytes = try SafeTensors.encode([("a", Tensor(shape: [2], data: [1, 2])), ("b", Tensor(scalar: 3))],
                                           metadata: ["k": "v"])
        let headerEnd = 8 + Int(bytes[0])  // small header: low byte suffices
        var outcomes = (ok: 0, threw: 0)
        for i in 0..<headerEnd {
            for value: UInt8 in [0x00, 0x20, 0x22, 0x2C, 0x2D, 0x30, 0x39, 0x5B, 0x5D, 0x7B, 0x7D, 0x80, 0xFF, bytes[i] ^ 0x01] {
                var corrupted = bytes
                corrupted[i] = value
                do { _ = try SafeTensors.decode(corrupted); outcomes.ok += 1 } catch { outcomes.threw += 1 }
            }
        }
        #expect(outcomes.threw > 0)
    }

    @Test func randomMutationsNeverTrap() throws {
        let valid = try SafeTensors.encode([("w", Tensor(shape: [3, 2], data: [1, 2, 3, 4, 5, 6])),
                                            ("b", Tensor(shape: [2], data: [0.5, -0.5])),
                                            ("s", Tensor(scalar: 9)), ("e", Tensor(shape: [2, 0], data: []))],
                                           metadata: ["epoch": "3"])
        var rng = XorShift(seed: 0xC0FFEE)
        var succeeded = 0, failed = 0
        for _ in 0..<2_000 {
            var m = valid
            for _ in 0..<(1 + Int(rng.next() % 4)) {
                let i = Int(rng.next() % UInt64(m.count))
                switch rng.next() % 6 {
                case 0: m[i] = UInt8(truncatingIfNeeded: rng.next())                 // replace a byte
                case 1: m[i] ^= UInt8(1) << (rng.next() % 8)                          // flip a bit
                case 2: m.remove(at: i)                                              // delete
                case 3: m.insert(UInt8(truncatingIfNeeded: rng.next()), at: i)      // insert
                case 4: m = Array(m[0..<i])                                          // truncate
                default:                                                             // overwrite a digit
                    let digits = m.indices.filter { m[$0] >= 0x30 && m[$0] <= 0x39 && $0 >= 8 }
                    if let d = digits.randomElement(using: &rng) { m[d] = 0x30 + UInt8(rng.next() % 10) }
                }
                if m.isEmpty { break }
            }
            do { _ = try SafeTensors.decode(m); succeeded += 1 } catch is SafeTensorsError { failed += 1 }
        }
        #expect(succeeded + failed == 2_000)
        #expect(failed > 0)
    }
}
