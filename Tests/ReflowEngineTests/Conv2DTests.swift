import Testing
import ReflowEngine
import ReflowTestSupport

@Suite("Conv2D: im2col + GEMM against the direct oracle")
struct Conv2DTests {
    static let shapes: [Conv2DShape] = [
        Conv2DShape(batch: 2, inChannels: 3, outChannels: 4, height: 7, width: 6, kernelH: 3, kernelW: 3, stride: 1, padding: 1),
        Conv2DShape(batch: 1, inChannels: 2, outChannels: 3, height: 8, width: 8, kernelH: 3, kernelW: 3, stride: 2, padding: 1),
        Conv2DShape(batch: 2, inChannels: 4, outChannels: 5, height: 5, width: 5, kernelH: 1, kernelW: 1),
        Conv2DShape(batch: 1, inChannels: 1, outChannels: 2, height: 6, width: 9, kernelH: 2, kernelW: 3, stride: 2),
        Conv2DShape(batch: 3, inChannels: 2, outChannels: 2, height: 4, width: 4, kernelH: 4, kernelW: 4),
        Conv2DShape(batch: 1, inChannels: 8, outChannels: 16, height: 14, width: 14, kernelH: 3, kernelW: 3, stride: 2, padding: 1),
        // Dilated (the RIM's 3×3 with dilation 2, "same" padding), and dilation with stride and a non-square kernel.
        Conv2DShape(batch: 2, inChannels: 3, outChannels: 2, height: 9, width: 8, kernelH: 3, kernelW: 3, stride: 1, padding: 2, dilation: 2),
        Conv2DShape(batch: 1, inChannels: 2, outChannels: 3, height: 11, width: 10, kernelH: 2, kernelW: 3, stride: 2, padding: 1, dilation: 3),
    ]

    static func randoms(_ n: Int, seed: UInt64) -> [Float] {
        var rng = Random(seed: seed)
        return (0..<n).map { _ in Float(rng.normal()) }
    }

    static func close(_ a: [Float], _ b: [Float], _ what: String, sourceLocation: SourceLocation = #_sourceLocation) {
        #expect(a.count == b.count, "\(what): sizes", sourceLocation: sourceLocation)
        for i in a.indices where abs(a[i] - b[i]) > 1e-4 * (1 + abs(b[i])) {
            Issue.record("\(what)[\(i)]: \(a[i]) vs \(b[i])", sourceLocation: sourceLocation)
            return
        }
    }

    @Test("forward equals the direct convolution (strides, padding, 1×1, non-square kernels, 1×1 outputs)", arguments: shapes)
    func forward(_ s: Conv2DShape) {
        #expect(s.problem == nil)
        let x = Self.randoms(s.inputCount, seed: 1), w = Self.randoms(s.weightCount, seed: 2), b = Self.randoms(s.outChannels, seed: 3)
        var y = [Float](repeating: .nan, count: s.outputCount)
        var scratch = [Float](repeating: .nan, count: s.scratchCount)
        x.withUnsafeBufferPointer { px in w.withUnsafeBufferPointer { pw in b.withUnsafeBufferPointer { pb in
            y.withUnsafeMutableBufferPointer { py in scratch.withUnsafeMutableBufferPointer { ps in
                Conv2D.forward(x: px.baseAddress!, weight: pw.baseAddress!, bias: pb.baseAddress!, y: py.baseAddress!,
                               shape: s, scratch: ps.baseAddress)
            } }
        } } }
        Self.close(y, Oracle.conv2d(x: x, weight: w, bias: b, shape: s), "y")
    }

    @Test("backward accumulates the oracle's dx, dweight and dbias", arguments: shapes)
    func backward(_ s: Conv2DShape) {
        let x = Self.randoms(s.inputCount, seed: 4), w = Self.randoms(s.weightCount, seed: 5), dy = Self.randoms(s.outputCount, seed: 6)
        let start = (dx: Self.randoms(s.inputCount, seed: 7), dw: Self.randoms(s.weightCount, seed: 8), db: Self.randoms(s.outChannels, seed: 9))
        var dx = start.dx, dw = start.dw, db = start.db
        var scratch = [Float](repeating: .nan, count: s.scratchCount)
        x.withUnsafeBufferPointer { px in w.withUnsafeBufferPointer { pw in dy.withUnsafeBufferPointer { pdy in
            dx.withUnsafeMutableBufferPointer { pdx in dw.withUnsafeMutableBufferPointer { pdw in db.withUnsafeMutableBufferPointer { pdb in
                scratch.withUnsafeMutableBufferPointer { ps in
                    Conv2D.backward(x: px.baseAddress!, weight: pw.baseAddress!, dy: pdy.baseAddress!, dx: pdx.baseAddress!,
                                    dweight: pdw.baseAddress!, dbias: pdb.baseAddress!, shape: s, scratch: ps.baseAddress)
                }
            } } }
        } } }
        let g = Oracle.conv2dBackward(x: x, weight: w, dy: dy, shape: s)
        Self.close(dx, zip(start.dx, g.dx).map { $0 + $1 }, "dx")
        Self.close(dw, zip(start.dw, g.dweight).map { $0 + $1 }, "dweight")
        Self.close(db, zip(start.db, g.dbias).map { $0 + $1 }, "dbias")
    }

    @Test("the oracle's gradients are the central differences of L = Σ r·conv2d(x, w) (L is linear: exact up to rounding)")
    func oracleGradientsByFiniteDifferences() {
        let s = Conv2DShape(batch: 1, inChannels: 2, outChannels: 2, height: 5, width: 4, kernelH: 3, kernelW: 3, stride: 2, padding: 1)
        let x = Self.randoms(s.inputCount, seed: 10), w = Self.randoms(s.weightCount, seed: 11), r = Self.randoms(s.outputCount, seed: 12)
        func loss(_ x: [Float], _ w: [Float]) -> Double {
            zip(Oracle.conv2d(x: x, weight: w, bias: nil, shape: s), r).reduce(0) { $0 + Double($1.0) * Double($1.1) }
        }
        let g = Oracle.conv2dBackward(x: x, weight: w, dy: r, shape: s)
        let eps: Float = 0.25
        for i in x.indices {
            var a = x, b = x
            a[i] += eps; b[i] -= eps
            let fd = (loss(a, w) - loss(b, w)) / Double(2 * eps)
            #expect(abs(fd - Double(g.dx[i])) < 1e-3 * (1 + abs(fd)), "dx[\(i)]: \(fd) vs \(g.dx[i])")
        }
        for i in w.indices {
            var a = w, b = w
            a[i] += eps; b[i] -= eps
            let fd = (loss(x, a) - loss(x, b)) / Double(2 * eps)
            #expect(abs(fd - Double(g.dweight[i])) < 1e-3 * (1 + abs(fd)), "dw[\(i)]: \(fd) vs \(g.dweight[i])")
        }
    }

    @Test("col2im is the adjoint of im2col: ⟨im2col(x), c⟩ = ⟨x, col2im(c)⟩", arguments: shapes)
    func adjoint(_ s: Conv2DShape) {
        let one = Conv2DShape(batch: 1, inChannels: s.inChannels, outChannels: s.outChannels, height: s.height, width: s.width,
                              kernelH: s.kernelH, kernelW: s.kernelW, stride: s.stride, padding: s.padding)
        let x = Self.randoms(one.inputCount, seed: 13), c = Self.randoms(one.patchSize * one.positions, seed: 14)
        var cols = [Float](repeating: .nan, count: one.patchSize * one.positions)
        var back = [Float](repeating: 0, count: one.inputCount)
        x.withUnsafeBufferPointer { px in cols.withUnsafeMutableBufferPointer { Conv2D.im2col(px.baseAddress!, one, into: $0.baseAddress!) } }
        c.withUnsafeBufferPointer { pc in back.withUnsafeMutableBufferPointer { Conv2D.col2im(pc.baseAddress!, one, addingInto: $0.baseAddress!) } }
        let lhs = zip(cols, c).reduce(0.0) { $0 + Double($1.0) * Double($1.1) }
        let rhs = zip(x, back).reduce(0.0) { $0 + Double($1.0) * Double($1.1) }
        #expect(abs(lhs - rhs) < 1e-4 * (1 + abs(lhs)), "\(lhs) vs \(rhs)")
    }

    @Test("output geometry and invalid shapes")
    func geometry() {
        let s = Conv2DShape(batch: 1, inChannels: 1, outChannels: 1, height: 28, width: 28, kernelH: 3, kernelW: 3, stride: 2, padding: 1)
        #expect(s.outHeight == 14 && s.outWidth == 14 && s.patchSize == 9 && s.positions == 196)
        #expect(Conv2DShape(batch: 1, inChannels: 1, outChannels: 1, height: 2, width: 2, kernelH: 3, kernelW: 3).problem != nil)
        #expect(Conv2DShape(batch: 1, inChannels: 1, outChannels: 1, height: 4, width: 4, kernelH: 3, kernelW: 3, stride: 0).problem != nil)
    }
}
