public import ReflowEngine
import ReflowCodec

/// The contents of a safetensors file, with every tensor converted to `Float`.
public struct SafeTensorsFile: Sendable, Equatable {
    /// Tensors by name.
    public var tensors: [String: Tensor]
    /// Tensor names in file order: ascending `data_offsets`, i.e. the order their bytes appear in
    /// the buffer (for files written by ``SafeTensors`` this is name order).
    public var order: [String]
    /// The `__metadata__` string map (empty when absent).
    public var metadata: [String: String]

    /// Creates a value from its parts.
    public init(tensors: [String: Tensor], order: [String], metadata: [String: String]) {
        self.tensors = tensors
        self.order = order
        self.metadata = metadata
    }
}

/// Reader and writer for the safetensors format (huggingface/safetensors).
///
/// Layout: an 8-byte little-endian `UInt64` header length `N`; `N` bytes of UTF-8 JSON object
/// mapping each tensor name to `{"dtype", "shape", "data_offsets": [begin, end]}` (offsets relative
/// to the start of the byte buffer, `end` exclusive) plus an optional `"__metadata__"` map of
/// strings; then the byte buffer, tensors little-endian row-major.
///
/// The reader treats the bytes as hostile: every malformed input throws a ``SafeTensorsError``
/// naming the problem and the tensor; nothing on the read path can trap. Duplicate keys are
/// detected by a dedicated strict JSON parser (see `HeaderJSON`), because `JSONSerialization`
/// silently keeps only the last of duplicate keys.
///
/// ```swift
/// let hex = try SafeTensors.write([("w", w), ("b", b)], metadata: ["step": "100"], to: "ckpt.safetensors")
/// let file = try SafeTensors.read(path: "ckpt.safetensors")
/// let w2 = file.tensors["w"]
/// ```
public enum SafeTensors {
    /// Largest header accepted, as in the reference implementation (`MAX_HEADER_SIZE`).
    public static let maxHeaderBytes = 100_000_000
    /// Default cap for ``read(path:maxBytes:)``: 8 GiB.
    public static let defaultMaxFileBytes = 8 << 30
    /// The reserved header key holding the string metadata map.
    public static let metadataKey = "__metadata__"

    // MARK: - Writing

    /// Serialises tensors as F32 into a safetensors byte image.
    ///
    /// Tensors are laid out back to back in the order of their names' UTF-8 bytes (the reference
    /// writer sorts by alignment then name; with F32 only, name order is the whole rule). The
    /// header is padded with spaces so that `8 + N` is a multiple of 8, which keeps the buffer
    /// 8-byte aligned when the file is memory-mapped.
    ///
    /// - Parameters:
    ///   - tensors: Named tensors. Names must be non-empty, unique and not `__metadata__`.
    ///   - metadata: Optional string map stored under `__metadata__` (omitted when empty).
    /// - Throws: ``SafeTensorsError`` for empty, duplicate or reserved names, a tensor whose
    ///   `data.count` does not match its shape, or sizes that overflow `Int`.
    public static func encode(_ tensors: [(name: String, tensor: Tensor)],
                              metadata: [String: String] = [:]) throws -> [UInt8] {
        var seen = Set<String>()
        for (name, _) in tensors {
            guard !name.isEmpty else { throw SafeTensorsError.emptyName }
            guard name != metadataKey else { throw SafeTensorsError.reservedName(name) }
            guard seen.insert(name).inserted else { throw SafeTensorsError.duplicateName(name) }
        }
        let sorted = tensors.sorted { $0.name.utf8.lexicographicallyPrecedes($1.name.utf8) }

        var header: [UInt8] = [UInt8(ascii: "{")]
        var first = true
        func separator() { if !first { header.append(UInt8(ascii: ",")) }; first = false }
        if !metadata.isEmpty {
            separator()
            HeaderJSON.appendString(metadataKey, to: &header)
            header.append(contentsOf: ":{".utf8)
            let keys = metadata.keys.sorted { $0.utf8.lexicographicallyPrecedes($1.utf8) }
            for (i, key) in keys.enumerated() {
                if i > 0 { header.append(UInt8(ascii: ",")) }
                HeaderJSON.appendString(key, to: &header)
                header.append(UInt8(ascii: ":"))
                HeaderJSON.appendString(metadata[key] ?? "", to: &header)
            }
            header.append(UInt8(ascii: "}"))
        }
        var offset = 0
        for (name, tensor) in sorted {
            var elements = 1
            for (i, d) in tensor.shape.enumerated() {
                guard d >= 0 else { throw SafeTensorsError.invalidDimension(tensor: name, index: i, value: String(d)) }
                let (p, o) = elements.multipliedReportingOverflow(by: d)
                guard !o else { throw SafeTensorsError.shapeOverflow(tensor: name, shape: tensor.shape) }
                elements = p
            }
            // `data` is publicly settable, so the shape/count invariant is re-checked here.
            guard elements == tensor.data.count else {
                throw SafeTensorsError.elementCountMismatch(tensor: name, shape: tensor.shape, count: tensor.data.count)
            }
            let (size, o1) = elements.multipliedReportingOverflow(by: 4)
            let (end, o2) = offset.addingReportingOverflow(size)
            guard !o1, !o2 else { throw SafeTensorsError.fileSizeOverflow }
            separator()
            HeaderJSON.appendString(name, to: &header)
            header.append(contentsOf: ":{\"dtype\":\"F32\",\"shape\":[".utf8)
            header.append(contentsOf: tensor.shape.map(String.init).joined(separator: ",").utf8)
            header.append(contentsOf: "],\"data_offsets\":[\(offset),\(end)]}".utf8)
            offset = end
        }
        header.append(UInt8(ascii: "}"))
        // Pad with spaces (valid trailing JSON whitespace) so 8 + N ≡ 0 (mod 8).
        while header.count % 8 != 0 { header.append(0x20) }

        let (total, o) = (8 + header.count).addingReportingOverflow(offset)
        guard !o else { throw SafeTensorsError.fileSizeOverflow }
        var out = [UInt8]()
        out.reserveCapacity(total)
        let n = UInt64(header.count)
        for i in 0..<8 { out.append(UInt8(truncatingIfNeeded: n >> (8 * UInt64(i)))) }
        out += header
        for (_, tensor) in sorted {
            #if _endian(little)
            tensor.data.withUnsafeBytes { out.append(contentsOf: $0) }
            #else
            for v in tensor.data {
                let bits = v.bitPattern
                for i in 0..<4 { out.append(UInt8(truncatingIfNeeded: bits >> (8 * UInt32(i)))) }
            }
            #endif
        }
        return out
    }

    /// Serialises a dictionary of tensors; see the array overload.
    public static func encode(_ tensors: [String: Tensor], metadata: [String: String] = [:]) throws -> [UInt8] {
        try encode(tensors.map { (name: $0.key, tensor: $0.value) }, metadata: metadata)
    }

    /// Encodes tensors and atomically writes them to `path` (see ``AtomicFile``).
    ///
    /// - Returns: The SHA-256 hex digest of exactly the bytes written.
    /// - Throws: ``SafeTensorsError`` from encoding, or ``StoreError`` from the file system.
    @discardableResult
    public static func write(_ tensors: [(name: String, tensor: Tensor)], metadata: [String: String] = [:],
                             to path: String) throws -> String {
        let bytes = try encode(tensors, metadata: metadata)
        let digest = SHA256.hex(of: bytes)
        try AtomicFile.write(bytes, to: path)
        return digest
    }

    /// Dictionary form of the array overload of `write(_:metadata:to:)`.
    @discardableResult
    public static func write(_ tensors: [String: Tensor], metadata: [String: String] = [:],
                             to path: String) throws -> String {
        try write(tensors.map { (name: $0.key, tensor: $0.value) }, metadata: metadata, to: path)
    }

    // MARK: - Reading

    /// Reads and validates a safetensors file.
    ///
    /// - Parameters:
    ///   - path: File to read.
    ///   - maxBytes: Largest file accepted (default 8 GiB), checked before allocating.
    /// - Throws: ``StoreError`` for I/O failures or an oversized file (call `"size"`),
    ///   ``SafeTensorsError`` for malformed content.
    public static func read(path: String, maxBytes: Int = defaultMaxFileBytes) throws -> SafeTensorsFile {
        try decode(try AtomicFile.read(path: path, maxBytes: maxBytes))
    }

    /// Parses and validates a safetensors byte image, converting F32, F64, F16 and BF16 to `Float`.
    ///
    /// Validation (each a distinct ``SafeTensorsError``): length prefix present; header within
    /// 100 MB and the file; header valid UTF-8, valid JSON, an object, starting with `{`;
    /// `__metadata__` an object of strings; every entry an object with a known, convertible
    /// `dtype`, a `shape` of non-negative integers whose size does not overflow, and
    /// `data_offsets` of two ascending non-negative integers spanning exactly
    /// count × dtype-size bytes; no empty or duplicate names; and, sorted by offset, the entries
    /// tile the byte buffer from 0 to its end with no gap or overlap. Shape `[]` (scalar) and
    /// zero-size dimensions are allowed. Unknown extra fields in an entry are ignored, as the
    /// reference implementation does.
    public static func decode(_ bytes: [UInt8]) throws -> SafeTensorsFile {
        guard bytes.count >= 8 else { throw SafeTensorsError.fileTooShort(size: bytes.count) }
        var declared: UInt64 = 0
        for i in 0..<8 { declared |= UInt64(bytes[i]) << (8 * UInt64(i)) }
        guard declared <= UInt64(maxHeaderBytes) else {
            throw SafeTensorsError.headerTooLarge(declared: declared, limit: maxHeaderBytes)
        }
        let headerLength = Int(declared)  // <= 100 MB, fits
        guard headerLength <= bytes.count - 8 else {
            throw SafeTensorsError.headerExceedsFile(declared: declared, available: bytes.count - 8)
        }
        let headerBytes = Array(bytes[8..<(8 + headerLength)])
        let bufferStart = 8 + headerLength
        let bufferLength = bytes.count - bufferStart

        guard String(validating: headerBytes, as: UTF8.self) != nil else { throw SafeTensorsError.headerNotUTF8 }
        let root: HeaderJSON.Value
        do {
            root = try HeaderJSON.parse(headerBytes)
        } catch {
            throw SafeTensorsError.headerNotJSON(offset: error.offset, reason: error.reason)
        }
        guard case .object(let members) = root else { throw SafeTensorsError.headerNotObject(found: root.kindName) }
        guard headerBytes.first == UInt8(ascii: "{") else {
            throw SafeTensorsError.headerInvalidStart(firstByte: headerBytes.first)
        }

        var metadata: [String: String] = [:]
        var entries: [Entry] = []
        var names = Set<String>()
        for (index, (name, value)) in members.enumerated() {
            // Swift `String` equality is canonical-equivalence, so names that differ only in
            // Unicode normalisation count as duplicates: they could not both be dictionary keys.
            guard names.insert(name).inserted else { throw SafeTensorsError.duplicateName(name) }
            if name == metadataKey {
                metadata = try parseMetadata(value)
                continue
            }
            guard !name.isEmpty else { throw SafeTensorsError.emptyName }
            entries.append(try parseEntry(name: name, index: index, value: value, bufferLength: bufferLength))
        }

        // The entries must tile the buffer exactly (reference: `Metadata::validate`).
        entries.sort { ($0.begin, $0.end, $0.index) < ($1.begin, $1.end, $1.index) }  // ties: header order
        var expected = 0
        var previous: Entry?
        for entry in entries {
            if entry.begin < expected, let previous {
                throw SafeTensorsError.overlap(tensor: entry.name, previous: previous.name,
                                               begin: entry.begin, previousEnd: previous.end)
            }
            if entry.begin > expected {
                throw SafeTensorsError.gap(tensor: entry.name, begin: entry.begin, expectedBegin: expected)
            }
            expected = entry.end
            previous = entry
        }
        guard expected == bufferLength else {
            throw SafeTensorsError.bufferLengthMismatch(dataEnd: expected, bufferLength: bufferLength)
        }

        var tensors: [String: Tensor] = [:]
        tensors.reserveCapacity(entries.count)
        bytes.withUnsafeBytes { raw in
            let buffer = UnsafeRawBufferPointer(rebasing: raw[bufferStart...])
            for entry in entries {
                tensors[entry.name] = convert(entry, UnsafeRawBufferPointer(rebasing: buffer[entry.begin..<entry.end]))
            }
        }
        return SafeTensorsFile(tensors: tensors, order: entries.map(\.name), metadata: metadata)
    }

    // MARK: - Internals

    /// Element types the format defines (reference: `safetensors::Dtype`).
    enum DType: String {
        case f32 = "F32", f64 = "F64", f16 = "F16", bf16 = "BF16"

        var byteSize: Int {
            switch self {
            case .f32: return 4
            case .f64: return 8
            case .f16, .bf16: return 2
            }
        }

        /// Defined by the format but not convertible to `Float` here.
        static let unsupported: Set<String> = [
            "BOOL", "U8", "I8", "I16", "U16", "I32", "U32", "I64", "U64", "C64",
            "F8_E5M2", "F8_E4M3", "F8_E8M0", "F4", "F6_E2M3", "F6_E3M2",
        ]
    }

    struct Entry {
        var name: String
        var index: Int  // position in the header, to break offset ties deterministically
        var dtype: DType
        var shape: [Int]
        var begin: Int
        var end: Int
    }

    private static func parseMetadata(_ value: HeaderJSON.Value) throws -> [String: String] {
        guard case .object(let members) = value else { throw SafeTensorsError.metadataNotObject(found: value.kindName) }
        var out: [String: String] = [:]
        for (key, v) in members {
            guard case .string(let s) = v else {
                throw SafeTensorsError.metadataValueNotString(key: key, found: v.kindName)
            }
            guard out.updateValue(s, forKey: key) == nil else { throw SafeTensorsError.duplicateMetadataKey(key) }
        }
        return out
    }

    private static func parseEntry(name: String, index: Int, value: HeaderJSON.Value, bufferLength: Int) throws -> Entry {
        guard case .object(let members) = value else {
            throw SafeTensorsError.entryNotObject(tensor: name, found: value.kindName)
        }
        var fields: [String: HeaderJSON.Value] = [:]
        for (key, v) in members where key == "dtype" || key == "shape" || key == "data_offsets" {
            guard fields.updateValue(v, forKey: key) == nil else {
                throw SafeTensorsError.duplicateField(tensor: name, field: key)
            }
        }
        func field(_ key: String) throws -> HeaderJSON.Value {
            guard let v = fields[key] else { throw SafeTensorsError.missingField(tensor: name, field: key) }
            return v
        }

        // dtype
        let dtypeValue = try field("dtype")
        guard case .string(let dtypeName) = dtypeValue else {
            throw SafeTensorsError.wrongFieldType(tensor: name, field: "dtype", expected: "a string",
                                                  found: dtypeValue.kindName)
        }
        guard let dtype = DType(rawValue: dtypeName) else {
            if DType.unsupported.contains(dtypeName) {
                throw SafeTensorsError.unsupportedDtype(tensor: name, dtype: dtypeName)
            }
            throw SafeTensorsError.unknownDtype(tensor: name, dtype: dtypeName)
        }

        // shape
        let shapeValue = try field("shape")
        guard case .array(let dims) = shapeValue else {
            throw SafeTensorsError.wrongFieldType(tensor: name, field: "shape", expected: "an array of integers",
                                                  found: shapeValue.kindName)
        }
        var shape: [Int] = []
        shape.reserveCapacity(dims.count)
        for (i, d) in dims.enumerated() {
            guard case .number(let literal) = d else {
                throw SafeTensorsError.invalidDimension(tensor: name, index: i, value: d.kindName)
            }
            guard case .value(let v) = HeaderJSON.integer(literal), v >= 0 else {
                throw SafeTensorsError.invalidDimension(tensor: name, index: i, value: literal)
            }
            shape.append(v)
        }
        var count = 1
        for d in shape {
            let (p, o) = count.multipliedReportingOverflow(by: d)
            guard !o else { throw SafeTensorsError.shapeOverflow(tensor: name, shape: shape) }
            count = p
        }
        let (byteCount, o) = count.multipliedReportingOverflow(by: dtype.byteSize)
        guard !o else { throw SafeTensorsError.shapeOverflow(tensor: name, shape: shape) }

        // data_offsets
        let offsetsValue = try field("data_offsets")
        guard case .array(let offsets) = offsetsValue else {
            throw SafeTensorsError.wrongFieldType(tensor: name, field: "data_offsets",
                                                  expected: "an array of two integers", found: offsetsValue.kindName)
        }
        guard offsets.count == 2 else {
            throw SafeTensorsError.invalidDataOffsets(tensor: name, reason: "expected 2 integers, found \(offsets.count) elements")
        }
        var bounds: [Int] = []
        for o in offsets {
            guard case .number(let literal) = o else {
                throw SafeTensorsError.invalidDataOffsets(tensor: name, reason: "expected integers, found \(o.kindName)")
            }
            switch HeaderJSON.integer(literal) {
            case .value(let v) where v >= 0: bounds.append(v)
            case .value: throw SafeTensorsError.invalidDataOffsets(tensor: name, reason: "\(literal) is negative")
            case .tooLarge: throw SafeTensorsError.invalidDataOffsets(tensor: name, reason: "\(literal) is too large")
            case .notInteger: throw SafeTensorsError.invalidDataOffsets(tensor: name, reason: "\(literal) is not an integer")
            }
        }
        let (begin, end) = (bounds[0], bounds[1])
        guard begin <= end else {
            throw SafeTensorsError.invalidDataOffsets(tensor: name, reason: "begin \(begin) is after end \(end)")
        }
        guard end - begin == byteCount else {
            throw SafeTensorsError.byteSizeMismatch(tensor: name, expected: byteCount, actual: end - begin)
        }
        guard end <= bufferLength else {
            throw SafeTensorsError.offsetsBeyondBuffer(tensor: name, end: end, bufferLength: bufferLength)
        }
        return Entry(name: name, index: index, dtype: dtype, shape: shape, begin: begin, end: end)
    }

    /// Converts one validated entry's little-endian bytes to a `Float` tensor.
    private static func convert(_ entry: Entry, _ bytes: UnsafeRawBufferPointer) -> Tensor {
        let size = entry.dtype.byteSize
        return Tensor(shape: entry.shape) { out in
            switch entry.dtype {
            case .f32:
                for i in 0..<out.count {
                    out[i] = Float(bitPattern: UInt32(littleEndian: bytes.loadUnaligned(fromByteOffset: i * size, as: UInt32.self)))
                }
            case .f64:
                for i in 0..<out.count {
                    out[i] = Float(Double(bitPattern: UInt64(littleEndian: bytes.loadUnaligned(fromByteOffset: i * size, as: UInt64.self))))
                }
            case .f16:
                for i in 0..<out.count {
                    out[i] = halfToFloat(UInt16(littleEndian: bytes.loadUnaligned(fromByteOffset: i * size, as: UInt16.self)))
                }
            case .bf16:
                // bfloat16 is the top half of an IEEE binary32.
                for i in 0..<out.count {
                    out[i] = Float(bitPattern: UInt32(UInt16(littleEndian: bytes.loadUnaligned(fromByteOffset: i * size, as: UInt16.self))) << 16)
                }
            }
        }
    }

    /// IEEE 754 binary16 → binary32 (exact; every half value is representable as a float).
    static func halfToFloat(_ h: UInt16) -> Float {
        let sign: UInt32 = UInt32(h & 0x8000) << 16
        let exponent = UInt32((h >> 10) & 0x1F)
        let mantissa = UInt32(h & 0x3FF)
        if exponent == 0 {
            // Zero or subnormal: mantissa × 2^-24.
            let magnitude = Float(mantissa) * 0x1p-24
            return sign != 0 ? -magnitude : magnitude
        }
        if exponent == 0x1F {
            return Float(bitPattern: sign | 0x7F80_0000 | (mantissa << 13))  // inf / NaN (payload kept)
        }
        return Float(bitPattern: sign | ((exponent + 112) << 23) | (mantissa << 13))  // rebias 15 → 127
    }
}
