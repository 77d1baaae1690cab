import Foundation
import Testing
import ReflowEngine
@testable import ReflowFlow

/// NPY 1.0 bytes with a given dtype string, shape and raw data (as numpy writes them).
private func npy(_ descr: String, _ shape: [Int], _ data: [UInt8], fortran: Bool = false) -> [UInt8] {
    let dims = shape.count == 1 ? "\(shape[0])," : shape.map(String.init).joined(separator: ", ")
    var header = "{'descr': '\(descr)', 'fortran_order': \(fortran ? "True" : "False"), 'shape': (\(dims)), }"
    let unpadded = 10 + header.utf8.count + 1
    header += String(repeating: " ", count: (64 - unpadded % 64) % 64) + "\n"
    let h = Array(header.utf8)
    return [0x93, 0x4E, 0x55, 0x4D, 0x50, 0x59, 1, 0, UInt8(h.count & 0xFF), UInt8(h.count >> 8)] + h + data
}

private func leBytes<T: FixedWidthInteger>(_ v: T) -> [UInt8] { withUnsafeBytes(of: v.littleEndian) { Array($0) } }
private func f32Bytes(_ v: [Float]) -> [UInt8] { v.flatMap { leBytes($0.bitPattern) } }
private func f64Bytes(_ v: [Double]) -> [UInt8] { v.flatMap { leBytes($0.bitPattern) } }

@Suite("NPY arrays")
struct NPYArrayTests {
    @Test("complex64 written by NPYArray reads back; complex128, float64, bool and uint8 read as Floats")
    func roundTrip() throws {
        let a = NPYArray(dtype: .complex64, shape: [2, 3, 4], values: (0..<48).map { Float($0) * 0.5 - 3 })
        let back = try NPYArray.parse(a.bytes(), name: "k.npy")
        #expect(back == a && back.count == 24)
        let c = try NPYArray.parse(npy("<c16", [2], f64Bytes([1, -2, 3.5, 4])), name: "c")
        #expect(c.dtype == .complex128 && c.values == [1, -2, 3.5, 4])
        #expect(try NPYArray.parse(npy("|b1", [3], [1, 0, 1]), name: "m").values == [1, 0, 1])
        #expect(try NPYArray.parse(npy("<u1", [2], [7, 0]), name: "m").values == [7, 0])
        let r = try NPYArray.parse(NPYArray(dtype: .float32, shape: [5], values: [1, 2, 3, 4, 5]).bytes(), name: "r")
        #expect(r.shape == [5] && !r.dtype.isComplex)
    }

    @Test("refusals name the problem: dtype not accepted, NaN with its element, a bool not 0/1, shapes, truncation, Fortran order")
    func refusals() {
        func message(_ bytes: [UInt8], dtypes: [NPYArray.DType] = NPYArray.DType.allCases) -> String {
            do { _ = try NPYArray.parse(bytes, name: "x.npy", dtypes: dtypes); return "" } catch { return error.description }
        }
        #expect(message(npy("<f4", [2], f32Bytes([1, 2])), dtypes: [.complex64]).contains("dtype '<f4' is not accepted here (accepted: '<c8')"))
        #expect(message(npy("<i8", [1], leBytes(Int64(3)))).contains("'<i8' is not accepted"))
        #expect(message(npy(">c8", [1], f32Bytes([1, 2]))).contains("'>c8' is not accepted"))
        #expect(message(npy("<c8", [2], f32Bytes([1, 2, .nan, 0]))).contains("element 1 (real part): non-finite"))
        #expect(message(npy("<c8", [1], f32Bytes([1, .infinity]))).contains("element 0 (imaginary part)"))
        #expect(message(npy("<f8", [1], f64Bytes([1e300]))).contains("non-finite"))
        #expect(message(npy("|b1", [2], [1, 2])).contains("a bool must be 0 or 1"))
        #expect(message(npy("<c8", [1, 1, 1, 1, 1], f32Bytes([0, 0]))).contains("1 to 4 positive dimensions"))
        #expect(message(npy("<c8", [0, 4], [])).contains("positive dimensions"))
        #expect(message(npy("<c8", [2, 2], f32Bytes([1, 2, 3]))).contains("truncated data"))
        #expect(message(npy("<c8", [1], f32Bytes([1, 2, 3]))).contains("unexpected bytes"))
        #expect(message(npy("<c8", [1], f32Bytes([1, 2]), fortran: true)).contains("fortran_order True"))
        #expect(message(npy("<c8", [100_000, 100_000], [])).contains("more than"))
        #expect(message([1, 2, 3]).contains("not an NPY file"))
    }
}
