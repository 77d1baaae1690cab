public import ReflowEngine
import Glibc

/// A point file could not be read or is malformed. Names the file, where the problem is
/// (1-based line for CSV, byte offset for NPY) and what it is.
///
/// ```
/// data.csv:7: column 2: 'abc' is not a number
/// pts.npy (byte 10): unsupported dtype '<i8' (only '<f4' and '<f8')
/// ```
public struct PointFileError: Error, CustomStringConvertible, Sendable, Equatable {
    /// The file name or path as given by the caller.
    public var file: String
    /// 1-based line number (CSV), when the problem is on a line.
    public var line: Int?
    /// Byte offset from the start of the file (NPY), when the problem is at a position.
    public var byteOffset: Int?
    /// What is wrong.
    public var message: String

    /// Creates an error value.
    public init(file: String, line: Int? = nil, byteOffset: Int? = nil, message: String) {
        self.file = file
        self.line = line
        self.byteOffset = byteOffset
        self.message = message
    }

    public var description: String {
        if let line { return "\(file):\(line): \(message)" }
        if let byteOffset { return "\(file) (byte \(byteOffset)): \(message)" }
        return "\(file): \(message)"
    }
}

/// The two supported point-file formats.
public enum PointFileFormat: String, Codable, Sendable, CaseIterable {
    /// Text: one point per line, d numbers separated by commas or by whitespace.
    case csv
    /// NumPy `.npy`: a `(n, d)` array of `<f4` or `<f8` in C order.
    case npy
}

/// Loads point sets of any dimension d ≥ 1 (for example a target distribution given as data)
/// into `[n, d]` tensors. Every row must have the same number of columns.
///
/// Both readers are strict and never trap on malformed input: every problem is a thrown
/// ``PointFileError``. A successful load has n ≥ 1 rows and only finite Float values
/// (values beyond the Float range are rejected, not rounded to infinity).
///
/// **CSV.** UTF-8 or ASCII text; an optional byte-order mark; `\n` or `\r\n` line ends.
/// `#` starts a comment that runs to the end of the line; blank lines are ignored. A line holds
/// d numbers (the same d on every line, at most ``maxColumns``) separated by commas (spaces around it allowed) or by spaces/tabs.
/// The first non-blank line may be a header instead: it is one when none of its fields reads as
/// a number (e.g. `x,y`; `nan,1` is a data row and is rejected), and it then fixes d. Numbers follow the JSON-like grammar
/// `[+-]?(digits[.digits?]|.digits)([eE][+-]?digits)?`; `nan`, `inf` and hex floats are not
/// numbers here.
///
/// **NPY** (format versions 1.0, 2.0 and 3.0): magic `\x93NUMPY`, the header dict with exactly
/// the keys `descr`, `fortran_order` and `shape`; `descr` must be `'<f4'` or `'<f8'`
/// (big-endian and every other dtype are rejected), `fortran_order` must be `False`, `shape`
/// must be `(n, d)` with 1 ≤ d ≤ ``maxColumns``, and the data must be exactly n·d·itemsize bytes (truncated data and
/// trailing bytes are errors). Headers longer than 64 KiB are rejected.
public enum PointFiles {
    /// Default cap on the file size: 64 MiB (about 8M points in `<f4` NPY).
    public static let defaultMaxBytes = 64 << 20
    /// Most columns (the dimension d) a point file may have.
    public static let maxColumns = 65_536

    /// Reads and parses a point file. The format is `format` if given, else NPY when the file
    /// starts with the NPY magic or its name ends in `.npy`, else CSV.
    ///
    /// - Parameter maxBytes: files larger than this are rejected before they are read.
    public static func load(path: String, format: PointFileFormat? = nil,
                            maxBytes: Int = defaultMaxBytes) throws(PointFileError) -> Tensor {
        let bytes = try readFile(path: path, maxBytes: maxBytes)
        return try parse(bytes, name: path, format: format)
    }

    /// Parses the bytes of a point file; `name` is used in errors and for format detection.
    public static func parse(_ bytes: [UInt8], name: String, format: PointFileFormat? = nil) throws(PointFileError) -> Tensor {
        switch format ?? detectFormat(name: name, bytes: bytes) {
        case .csv: return try parseCSV(bytes, name: name)
        case .npy: return try parseNPY(bytes, name: name)
        }
    }

    /// NPY when the bytes start with `\x93NUMPY` or the name ends in `.npy` (any case); else CSV.
    public static func detectFormat(name: String, bytes: [UInt8]) -> PointFileFormat {
        if bytes.starts(with: npyMagic) { return .npy }
        return name.lowercased().hasSuffix(".npy") ? .npy : .csv
    }

    /// Reads a whole regular file of at most `maxBytes` bytes.
    public static func readFile(path: String, maxBytes: Int = defaultMaxBytes) throws(PointFileError) -> [UInt8] {
        func fail(_ m: String) -> PointFileError { PointFileError(file: path, message: m) }
        if path.isEmpty { throw fail("empty path") }
        if path.utf8.contains(0) { throw fail("path contains a NUL byte") }
        if maxBytes < 0 { throw fail("maxBytes must be non-negative, got \(maxBytes)") }
        // O_NONBLOCK: opening a FIFO must not block; it is then rejected as not a regular file.
        let fd = Glibc.open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK)
        if fd < 0 { throw fail("cannot open: \(errnoText())") }
        defer { _ = Glibc.close(fd) }
        var st = stat()
        if fstat(fd, &st) != 0 { throw fail("cannot stat: \(errnoText())") }
        if (st.st_mode & S_IFMT) != S_IFREG { throw fail("not a regular file") }
        if Int(st.st_size) > maxBytes {
            throw fail("file is \(st.st_size) bytes, more than the limit of \(maxBytes)")
        }
        // Read to EOF, never more than maxBytes + 1 bytes: the size from fstat is only a hint
        // (the file may grow meanwhile, and some files report size 0).
        var out = [UInt8](repeating: 0, count: Swift.min(maxBytes, Int(st.st_size)) + 1)
        var total = 0
        while true {
            if total == out.count {
                if total > maxBytes { throw fail("file is larger than the limit of \(maxBytes) bytes") }
                out += [UInt8](repeating: 0, count: Swift.min(Swift.max(out.count, 4096), (maxBytes - total) + 1))
            }
            let room = out.count - total
            let n = out.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress! + total, room) }
            if n < 0 {
                if errno == EINTR { continue }
                throw fail("read failed: \(errnoText())")
            }
            if n == 0 { break }
            total += n
        }
        if total > maxBytes { throw fail("file is larger than the limit of \(maxBytes) bytes") }
        out.removeSubrange(total...)
        return out
    }

    private static func errnoText() -> String {
        let e = errno
        return "\(String(cString: strerror(e))) (errno \(e))"
    }

    // MARK: CSV

    /// Parses CSV / whitespace-separated text (see ``PointFiles``) into `[n, d]`.
    public static func parseCSV(_ bytes: [UInt8], name: String) throws(PointFileError) -> Tensor {
        var values = [Float]()
        var columns: Int?
        var i = 0
        if bytes.starts(with: [0xEF, 0xBB, 0xBF]) { i = 3 }
        var line = 0
        var sawContent = false
        let end = bytes.count
        while i < end {
            line += 1
            var lineEnd = i
            while lineEnd < end && bytes[lineEnd] != UInt8(ascii: "\n") { lineEnd += 1 }
            defer { i = lineEnd + 1 }
            var contentEnd = i
            while contentEnd < lineEnd && bytes[contentEnd] != UInt8(ascii: "#") { contentEnd += 1 }
            let fields = splitFields(bytes, i, contentEnd)
            if fields.isEmpty { continue }
            func fail(_ m: String) -> PointFileError { PointFileError(file: name, line: line, message: m) }
            let isNumber = fields.map { isNumberToken(bytes, $0) }
            // A header has no field that reads as a number, not even `nan`, `inf` or hex.
            if !sawContent && !fields.contains(where: { Float(String(decoding: bytes[$0], as: UTF8.self)) != nil }) {
                sawContent = true
                if fields.count > maxColumns { throw fail("header has \(fields.count) columns (at most \(maxColumns))") }
                columns = fields.count
                if let k = fields.firstIndex(where: { $0.isEmpty }) { throw fail("header column \(k + 1) is empty") }
                continue  // a header line
            }
            sawContent = true
            if let c = columns, fields.count != c { throw fail("expected \(c) columns, got \(fields.count)") }
            if fields.count > maxColumns { throw fail("\(fields.count) columns (at most \(maxColumns))") }
            columns = fields.count
            for (col, range) in fields.enumerated() {
                if range.isEmpty { throw fail("column \(col + 1) is empty") }
                guard isNumber[col] else { throw fail("column \(col + 1): '\(excerpt(bytes, range))' is not a number") }
                // Float(String) rounds the decimal once, correctly (no Double → Float double rounding).
                guard let f = Float(String(decoding: bytes[range], as: UTF8.self)) else {
                    throw fail("column \(col + 1): '\(excerpt(bytes, range))' is not a number")
                }
                guard f.isFinite else { throw fail("column \(col + 1): \(excerpt(bytes, range)) is outside the Float range") }
                values.append(f)
            }
        }
        guard let d = columns, !values.isEmpty else { throw PointFileError(file: name, message: "no data rows") }
        return Tensor(shape: [values.count / d, d], data: values)
    }

    @inline(__always) private static func isSpace(_ b: UInt8) -> Bool {
        b == 0x20 || b == 0x09 || b == 0x0D || b == 0x0B || b == 0x0C
    }

    /// Fields of bytes[start..<end]: comma-separated (trimmed) when the line has a comma, else
    /// whitespace-separated. Empty for a blank line.
    private static func splitFields(_ b: [UInt8], _ start: Int, _ end: Int) -> [Range<Int>] {
        var s = start, e = end
        while s < e && isSpace(b[s]) { s += 1 }
        while e > s && isSpace(b[e - 1]) { e -= 1 }
        if s == e { return [] }
        var fields = [Range<Int>]()
        if b[s..<e].contains(UInt8(ascii: ",")) {
            var f = s
            while true {
                var g = f
                while g < e && b[g] != UInt8(ascii: ",") { g += 1 }
                var a = f, z = g
                while a < z && isSpace(b[a]) { a += 1 }
                while z > a && isSpace(b[z - 1]) { z -= 1 }
                fields.append(a..<z)
                if g == e { break }
                f = g + 1
            }
        } else {
            var f = s
            while f < e {
                var g = f
                while g < e && !isSpace(b[g]) { g += 1 }
                fields.append(f..<g)
                f = g
                while f < e && isSpace(b[f]) { f += 1 }
            }
        }
        return fields
    }

    /// `[+-]?(digits[.digits?]|.digits)([eE][+-]?digits)?`
    private static func isNumberToken(_ b: [UInt8], _ r: Range<Int>) -> Bool {
        var i = r.lowerBound
        let e = r.upperBound
        func digits() -> Int {
            let s = i
            while i < e && b[i] >= 0x30 && b[i] <= 0x39 { i += 1 }
            return i - s
        }
        if i < e && (b[i] == UInt8(ascii: "+") || b[i] == UInt8(ascii: "-")) { i += 1 }
        var mantissa = digits()
        if i < e && b[i] == UInt8(ascii: ".") { i += 1; mantissa += digits() }
        if mantissa == 0 { return false }
        if i < e && (b[i] == UInt8(ascii: "e") || b[i] == UInt8(ascii: "E")) {
            i += 1
            if i < e && (b[i] == UInt8(ascii: "+") || b[i] == UInt8(ascii: "-")) { i += 1 }
            if digits() == 0 { return false }
        }
        return i == e
    }

    /// A printable excerpt of a field for error messages (at most 40 characters).
    private static func excerpt(_ b: [UInt8], _ r: Range<Int>) -> String {
        let s = String(decoding: b[r.lowerBound..<Swift.min(r.upperBound, r.lowerBound + 40)], as: UTF8.self)
        let cleaned = String(String.UnicodeScalarView(s.unicodeScalars.map { $0.value < 0x20 || $0.value == 0x7F ? "?" : $0 }))
        return r.count > 40 ? cleaned + "…" : cleaned
    }

    /// CSV text of an `[n, d]` tensor: one row per line, comma-separated, shortest round-trip
    /// decimal form (so ``parseCSV(_:name:)`` reads back the same bits for any d).
    public static func csvText(_ points: Tensor, header: String? = "x,y") -> String {
        precondition(points.rank == 2, "csvText: expected [n, d], got \(points.shape)")
        let d = points.shape[1]
        var out = header.map { $0 + "\n" } ?? ""
        for r in 0..<points.shape[0] {
            out += (0..<d).map { "\(points.data[r * d + $0])" }.joined(separator: ",")
            out += "\n"
        }
        return out
    }

    // MARK: NPY

    static let npyMagic: [UInt8] = [0x93, 0x4E, 0x55, 0x4D, 0x50, 0x59]  // \x93NUMPY
    /// Headers longer than this are rejected.
    public static let maxNPYHeaderBytes = 65_536

    /// Parses an NPY file (see ``PointFiles``) into `[n, d]`.
    public static func parseNPY(_ bytes: [UInt8], name: String) throws(PointFileError) -> Tensor {
        func fail(_ at: Int, _ m: String) -> PointFileError { PointFileError(file: name, byteOffset: at, message: m) }
        let header = try npyHeader(bytes, name: name)
        let (descr, descrAt, shape, shapeAt, dataStart) = (header.descr, header.descrOffset, header.shape, header.shapeOffset, header.dataStart)
        let itemSize: Int
        switch descr {
        case "<f4": itemSize = 4
        case "<f8": itemSize = 8
        case ">f4", ">f8": throw fail(descrAt, "big-endian dtype '\(descr)' is not supported (only '<f4' and '<f8')")
        default: throw fail(descrAt, "unsupported dtype '\(descr)' (only '<f4' and '<f8')")
        }
        guard shape.count == 2, shape[1] >= 1, shape[1] <= maxColumns else {
            throw fail(shapeAt, "shape must be (n, d) with 1 ≤ d ≤ \(maxColumns), got (\(shape.map(String.init).joined(separator: ", ")))")
        }
        let n = shape[0], d = shape[1]
        if n == 0 { throw fail(shapeAt, "shape (0, \(d)) holds no points") }
        let available = bytes.count - dataStart
        let (elements, o1) = n.multipliedReportingOverflow(by: d)
        let (needed, o2) = elements.multipliedReportingOverflow(by: itemSize)
        if o1 || o2 { throw fail(shapeAt, "shape (\(n), \(d)) is too large") }
        if needed > available {
            throw fail(bytes.count, "truncated data: shape (\(n), \(d)) of '\(descr)' needs \(needed) bytes, \(available) present")
        }
        if needed < available {
            throw fail(dataStart + needed, "\(available - needed) unexpected bytes after the data of shape (\(n), \(d))")
        }
        var values = [Float](repeating: 0, count: elements)
        for k in 0..<elements {
            let at = dataStart + k * itemSize
            var bits: UInt64 = 0
            for b in 0..<itemSize { bits |= UInt64(bytes[at + b]) << (8 * UInt64(b)) }
            let v: Float
            if itemSize == 4 {
                v = Float(bitPattern: UInt32(truncatingIfNeeded: bits))
                guard v.isFinite else { throw fail(at, "row \(k / d), column \(k % d): non-finite value \(v)") }
            } else {
                let x = Double(bitPattern: bits)
                guard x.isFinite else { throw fail(at, "row \(k / d), column \(k % d): non-finite value \(x)") }
                v = Float(x)
                guard v.isFinite else { throw fail(at, "row \(k / d), column \(k % d): \(x) is outside the Float range") }
            }
            values[k] = v
        }
        return Tensor(shape: [n, d], data: values)
    }

    /// The header of an NPY file, checked for what every reader needs (the magic, a supported
    /// version, exactly the keys descr, fortran_order and shape, a dtype string, C order, a
    /// shape tuple), with byte offsets for errors. The point, image and array readers share it.
    package struct NPYHeader {
        package var descr: String, descrOffset: Int
        package var shape: [Int], shapeOffset: Int
        package var dataStart: Int
    }

    /// Parses and checks an NPY file's preamble and header (the data need not be present).
    package static func npyHeader(_ bytes: [UInt8], name: String) throws(PointFileError) -> NPYHeader {
        func fail(_ at: Int, _ m: String) -> PointFileError { PointFileError(file: name, byteOffset: at, message: m) }
        guard bytes.count >= 6, bytes.starts(with: npyMagic) else {
            throw fail(0, "not an NPY file (missing the \\x93NUMPY magic)")
        }
        guard bytes.count >= 10 else { throw fail(bytes.count, "truncated NPY preamble") }
        let major = bytes[6], minor = bytes[7]
        guard (1...3).contains(major) && minor == 0 else {
            throw fail(6, "unsupported NPY format version \(major).\(minor) (1.0, 2.0 and 3.0 are supported)")
        }
        let headerStart: Int, headerLength: Int
        if major == 1 {
            headerStart = 10
            headerLength = Int(bytes[8]) | Int(bytes[9]) << 8
        } else {
            guard bytes.count >= 12 else { throw fail(bytes.count, "truncated NPY preamble") }
            headerStart = 12
            headerLength = Int(bytes[8]) | Int(bytes[9]) << 8 | Int(bytes[10]) << 16 | Int(bytes[11]) << 24
        }
        guard headerLength <= maxNPYHeaderBytes else {
            throw fail(8, "header length \(headerLength) exceeds \(maxNPYHeaderBytes) bytes")
        }
        let dataStart = headerStart + headerLength
        guard dataStart <= bytes.count else {
            throw fail(bytes.count, "truncated header: declared \(headerLength) bytes, \(bytes.count - headerStart) present")
        }
        var parser = NPYHeaderParser(bytes: bytes, position: headerStart, end: dataStart, file: name)
        let dict = try parser.parseDict()

        let required = ["descr", "fortran_order", "shape"]
        for (key, offset) in dict.order where !required.contains(key) {
            throw fail(offset, "unexpected header key '\(key)' (expected exactly descr, fortran_order, shape)")
        }
        for key in required where dict.values[key] == nil {
            throw fail(headerStart, "header lacks the key '\(key)'")
        }
        guard case .bool(let fortran, let fortranAt) = dict.values["fortran_order"]! else {
            throw fail(dict.offset("fortran_order"), "fortran_order must be True or False")
        }
        if fortran { throw fail(fortranAt, "fortran_order True is not supported (C order only)") }
        guard case .string(let descr, let descrAt) = dict.values["descr"]! else {
            throw fail(dict.offset("descr"), "descr must be a dtype string such as '<f4'")
        }
        guard case .tuple(let shape, let shapeAt) = dict.values["shape"]! else {
            throw fail(dict.offset("shape"), "shape must be a tuple")
        }
        return NPYHeader(descr: descr, descrOffset: descrAt, shape: shape, shapeOffset: shapeAt, dataStart: dataStart)
    }

    /// NPY (format 1.0, `<f4`, C order) bytes of a tensor of any rank ≥ 1 (`[n, d]` for points,
    /// `[N, C, H, W]` for images), as `numpy.save` writes them: the header is padded with spaces
    /// and a newline to a multiple of 64 bytes.
    public static func npyBytes(_ points: Tensor) -> [UInt8] {
        precondition(points.rank >= 1, "npyBytes: expected rank ≥ 1, got \(points.shape)")
        let dims = points.rank == 1 ? "\(points.shape[0])," : points.shape.map(String.init).joined(separator: ", ")
        var header = "{'descr': '<f4', 'fortran_order': False, 'shape': (\(dims)), }"
        let unpadded = 10 + header.utf8.count + 1
        header += String(repeating: " ", count: (64 - unpadded % 64) % 64) + "\n"
        let h = Array(header.utf8)
        var out = npyMagic + [1, 0, UInt8(h.count & 0xFF), UInt8(h.count >> 8)] + h
        out.reserveCapacity(out.count + 4 * points.count)
        for v in points.data {
            let b = v.bitPattern.littleEndian
            out += [UInt8(b & 0xFF), UInt8(b >> 8 & 0xFF), UInt8(b >> 16 & 0xFF), UInt8(b >> 24)]
        }
        return out
    }
}

/// A value in an NPY header dict, with the byte offset where it starts.
enum NPYHeaderValue {
    case string(String, Int)
    case bool(Bool, Int)
    case tuple([Int], Int)
    case other(Int)
}

/// The parsed header dict: values by key, keys in file order with their offsets.
struct NPYHeaderDict {
    var values: [String: NPYHeaderValue] = [:]
    var order: [(String, Int)] = []
    func offset(_ key: String) -> Int { order.first { $0.0 == key }?.1 ?? 0 }
}

/// A parser for the Python-literal subset numpy writes in NPY headers:
/// `{'key': value, …}` with string, `True`/`False` and integer-tuple values (ints may carry
/// Python 2's `L` suffix). Lists and nested dicts (structured dtypes) parse as `.other`.
struct NPYHeaderParser {
    let bytes: [UInt8]
    var position: Int
    let end: Int
    let file: String

    func fail(_ m: String, at: Int? = nil) -> PointFileError {
        PointFileError(file: file, byteOffset: at ?? position, message: "malformed NPY header: \(m)")
    }

    mutating func skipSpace() {
        while position < end && (bytes[position] == 0x20 || bytes[position] == 0x0A || bytes[position] == 0x09
                                 || bytes[position] == 0x0D) { position += 1 }
    }

    mutating func expect(_ c: UInt8) throws(PointFileError) {
        skipSpace()
        guard position < end && bytes[position] == c else {
            throw fail("expected '\(Character(Unicode.Scalar(c)))'")
        }
        position += 1
    }

    /// Consumes `c` (after spaces) when it is next.
    mutating func take(_ c: UInt8) -> Bool {
        skipSpace()
        if position < end && bytes[position] == c { position += 1; return true }
        return false
    }

    mutating func parseDict() throws(PointFileError) -> NPYHeaderDict {
        var dict = NPYHeaderDict()
        try expect(UInt8(ascii: "{"))
        while true {
            if take(UInt8(ascii: "}")) { break }
            skipSpace()
            let keyAt = position
            let key = try parseString()
            if dict.values[key] != nil { throw fail("duplicate key '\(key)'", at: keyAt) }
            try expect(UInt8(ascii: ":"))
            dict.values[key] = try parseValue()
            dict.order.append((key, keyAt))
            if take(UInt8(ascii: ",")) { continue }
            try expect(UInt8(ascii: "}"))
            break
        }
        skipSpace()
        guard position == end else { throw fail("unexpected bytes after the dict") }
        return dict
    }

    mutating func parseString() throws(PointFileError) -> String {
        guard position < end, bytes[position] == UInt8(ascii: "'") || bytes[position] == UInt8(ascii: "\"") else {
            throw fail("expected a quoted string")
        }
        let quote = bytes[position]
        let start = position + 1
        var i = start
        while i < end && bytes[i] != quote {
            if bytes[i] == UInt8(ascii: "\\") { throw fail("escape sequences are not supported", at: i) }
            if i - start > 256 { throw fail("string longer than 256 bytes", at: start) }
            i += 1
        }
        guard i < end else { throw fail("unterminated string", at: start - 1) }
        position = i + 1
        return String(decoding: bytes[start..<i], as: UTF8.self)
    }

    mutating func parseValue() throws(PointFileError) -> NPYHeaderValue {
        skipSpace()
        let at = position
        guard position < end else { throw fail("expected a value") }
        switch bytes[position] {
        case UInt8(ascii: "'"), UInt8(ascii: "\""):
            return .string(try parseString(), at)
        case UInt8(ascii: "("):
            position += 1
            var items = [Int]()
            while true {
                if take(UInt8(ascii: ")")) { break }
                skipSpace()
                items.append(try parseInt())
                if items.count > 32 { throw fail("tuple longer than 32 entries", at: at) }
                if take(UInt8(ascii: ",")) { continue }
                try expect(UInt8(ascii: ")"))
                break
            }
            return .tuple(items, at)
        case UInt8(ascii: "["), UInt8(ascii: "{"):
            // Structured dtypes and other nested values: skip to the matching bracket.
            var depth = 0
            while position < end {
                let c = bytes[position]
                if c == UInt8(ascii: "'") || c == UInt8(ascii: "\"") { _ = try parseString(); continue }
                if c == UInt8(ascii: "[") || c == UInt8(ascii: "{") || c == UInt8(ascii: "(") { depth += 1 }
                if c == UInt8(ascii: "]") || c == UInt8(ascii: "}") || c == UInt8(ascii: ")") {
                    depth -= 1
                    if depth == 0 { position += 1; return .other(at) }
                }
                position += 1
            }
            throw fail("unterminated value", at: at)
        default:
            var i = position
            while i < end, (bytes[i] >= UInt8(ascii: "A") && bytes[i] <= UInt8(ascii: "Z"))
                    || (bytes[i] >= UInt8(ascii: "a") && bytes[i] <= UInt8(ascii: "z")) { i += 1 }
            let word = String(decoding: bytes[position..<i], as: UTF8.self)
            if word == "True" || word == "False" {
                position = i
                return .bool(word == "True", at)
            }
            throw fail("unexpected value (expected a string, True, False or a tuple)")
        }
    }

    /// A non-negative decimal integer, optionally followed by `L`.
    mutating func parseInt() throws(PointFileError) -> Int {
        let start = position
        if position < end && bytes[position] == UInt8(ascii: "-") { throw fail("negative dimension") }
        var v = 0
        while position < end && bytes[position] >= 0x30 && bytes[position] <= 0x39 {
            let (m, o1) = v.multipliedReportingOverflow(by: 10)
            let (s, o2) = m.addingReportingOverflow(Int(bytes[position] - 0x30))
            if o1 || o2 { throw fail("integer too large", at: start) }
            v = s
            position += 1
        }
        guard position > start else { throw fail("expected an integer") }
        if position < end && bytes[position] == UInt8(ascii: "L") { position += 1 }
        return v
    }
}
