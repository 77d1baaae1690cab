public import ReflowEngine

/// An n-dimensional NPY array of any of the dtypes reflowd reads besides point files: real
/// (`<f4`, `<f8`), complex (`<c8` = complex64, `<c16`), and 0/1 masks (`|b1`, `|u1`). Values are
/// Floats; a complex array's are interleaved (re, im) per element. Non-finite values are
/// rejected, and so are big-endian and every other dtype (the preamble and header rules are
/// ``PointFiles``').
public struct NPYArray: Sendable, Equatable {
    public enum DType: String, Sendable, CaseIterable {
        case float32 = "<f4", float64 = "<f8", complex64 = "<c8", complex128 = "<c16", bool = "|b1", uint8 = "|u1"

        var itemSize: Int {
            switch self {
            case .bool, .uint8: 1
            case .float32: 4
            case .float64, .complex64: 8
            case .complex128: 16
            }
        }

        public var isComplex: Bool { self == .complex64 || self == .complex128 }
    }

    public var dtype: DType
    public var shape: [Int]
    /// count(shape) values, or 2·count(shape) interleaved for complex dtypes.
    public var values: [Float]

    /// Elements (complex elements count once).
    public var count: Int { shape.reduce(1, *) }

    public init(dtype: DType, shape: [Int], values: [Float]) {
        self.dtype = dtype
        self.shape = shape
        self.values = values
    }

    /// Most dimensions and elements an array may have.
    public static let maxRank = 4
    public static let maxElements = 1 << 26

    /// Parses NPY bytes. `dtypes` limits the accepted dtypes (errors list them).
    public static func parse(_ bytes: [UInt8], name: String, dtypes: [DType] = DType.allCases) throws(PointFileError) -> NPYArray {
        func fail(_ at: Int, _ m: String) -> PointFileError { PointFileError(file: name, byteOffset: at, message: m) }
        let header = try PointFiles.npyHeader(bytes, name: name)
        let (descr, descrAt, shape, shapeAt, dataStart) = (header.descr, header.descrOffset, header.shape, header.shapeOffset, header.dataStart)
        let accepted = dtypes.map { "'\($0.rawValue)'" }.joined(separator: ", ")
        // numpy writes one-byte dtypes with '|' but accepts '<' and '>' for them too.
        let normalized = (descr == "<b1" || descr == ">b1") ? "|b1" : ((descr == "<u1" || descr == ">u1") ? "|u1" : descr)
        guard let dtype = DType(rawValue: normalized), dtypes.contains(dtype) else {
            throw fail(descrAt, "dtype '\(descr)' is not accepted here (accepted: \(accepted))")
        }
        guard (1...maxRank).contains(shape.count), shape.allSatisfy({ $0 >= 1 }) else {
            throw fail(shapeAt, "shape must have 1 to \(maxRank) positive dimensions, got (\(shape.map(String.init).joined(separator: ", ")))")
        }
        var n = 1
        for d in shape {
            let (m, o) = n.multipliedReportingOverflow(by: d)
            guard !o, m <= maxElements else { throw fail(shapeAt, "shape (\(shape.map(String.init).joined(separator: ", "))) holds more than \(maxElements) elements") }
            n = m
        }
        let needed = n * dtype.itemSize, available = bytes.count - dataStart
        if needed > available { throw fail(bytes.count, "truncated data: the shape needs \(needed) bytes, \(available) present") }
        if needed < available { throw fail(dataStart + needed, "\(available - needed) unexpected bytes after the data") }
        let scalars = dtype.isComplex ? 2 * n : n
        let scalarSize = dtype.isComplex ? dtype.itemSize / 2 : dtype.itemSize
        var values = [Float](repeating: 0, count: scalars)
        for k in 0..<scalars {
            let at = dataStart + k * scalarSize
            var bits: UInt64 = 0
            for b in 0..<scalarSize { bits |= UInt64(bytes[at + b]) << (8 * UInt64(b)) }
            let v: Float
            switch scalarSize {
            case 1:
                guard dtype == .uint8 || bits <= 1 else { throw fail(at, "element \(k): a bool must be 0 or 1, got \(bits)") }
                v = Float(bits)
            case 4: v = Float(bitPattern: UInt32(truncatingIfNeeded: bits))
            default: v = Float(Double(bitPattern: bits))
            }
            guard v.isFinite else {
                throw fail(at, "element \(dtype.isComplex ? k / 2 : k)\(dtype.isComplex ? (k % 2 == 0 ? " (real part)" : " (imaginary part)") : ""): non-finite value (NaN, ±inf, or beyond the Float range)")
            }
            values[k] = v
        }
        return NPYArray(dtype: dtype, shape: shape, values: values)
    }

    /// NPY 1.0 bytes in C order of `float32` or `complex64` data (other dtypes are read only).
    public func bytes() -> [UInt8] {
        precondition(dtype == .float32 || dtype == .complex64, "NPYArray.bytes: writes <f4 and <c8 only")
        let dims = shape.count == 1 ? "\(shape[0])," : shape.map(String.init).joined(separator: ", ")
        var header = "{'descr': '\(dtype.rawValue)', 'fortran_order': False, 'shape': (\(dims)), }"
        let unpadded = 10 + header.utf8.count + 1
        header += String(repeating: " ", count: (64 - unpadded % 64) % 64) + "\n"
        let h = Array(header.utf8)
        var out = PointFiles.npyMagic + [1, 0, UInt8(h.count & 0xFF), UInt8(h.count >> 8)] + h
        out.reserveCapacity(out.count + 4 * values.count)
        for v in values {
            let b = v.bitPattern.littleEndian
            out += [UInt8(b & 0xFF), UInt8(b >> 8 & 0xFF), UInt8(b >> 16 & 0xFF), UInt8(b >> 24)]
        }
        return out
    }
}
