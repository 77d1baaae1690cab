import Foundation
import Testing
import Synchronization
@testable import ReflowEngine

/// The centred orthonormal 2-D DFT by its definition, in Double: X[k, l] = Σ_{m,n} x[m, n] ·
/// e^{∓2πi((k − c_H)(m − c_H)/H + (l − c_W)(n − c_W)/W)} / √(HW), with the centre c = ⌊n/2⌋ on
/// both sides (what fftshift ∘ F ∘ ifftshift computes).
private func naiveDFT(_ x: ComplexTensor, inverse: Bool) -> ComplexTensor {
    let h = x.shape[x.shape.count - 2], w = x.shape[x.shape.count - 1], planes = x.count / (h * w)
    var out = ComplexTensor(zeros: x.shape)
    let sign = inverse ? 1.0 : -1.0, norm = 1 / Double(h * w).squareRoot()
    for p in 0..<planes {
        for k in 0..<h { for l in 0..<w {
            var re = 0.0, im = 0.0
            for m in 0..<h { for n in 0..<w {
                let a = sign * 2 * Double.pi * (Double((k - h / 2) * (m - h / 2)) / Double(h) + Double((l - w / 2) * (n - w / 2)) / Double(w))
                let i = 2 * (p * h * w + m * w + n)
                let (xr, xi) = (Double(x.data[i]), Double(x.data[i + 1]))
                re += xr * cos(a) - xi * sin(a)
                im += xr * sin(a) + xi * cos(a)
            } }
            let o = 2 * (p * h * w + k * w + l)
            out.data[o] = Float(re * norm)
            out.data[o + 1] = Float(im * norm)
        } }
    }
    return out
}

private func random(_ shape: [Int], seed: UInt64) -> ComplexTensor {
    var rng = Random(seed: seed)
    return ComplexTensor(real: rng.normal(shape), imag: rng.normal(shape))
}

private func maxDiff(_ a: ComplexTensor, _ b: ComplexTensor) -> Float {
    zip(a.data, b.data).reduce(0) { max($0, abs($1.0 - $1.1)) }
}

@Suite("Centred orthonormal 2-D FFT")
struct FFTTests {
    @Test("forward and inverse equal the naive centred DFT at odd and even sizes, per plane", arguments: [[4, 6], [5, 7], [1, 3], [2, 5, 4], [3, 8, 8], [9, 1]])
    func naive(_ shape: [Int]) {
        let x = random(shape, seed: UInt64(shape.reduce(0, +)))
        #expect(maxDiff(FFT2D.forward(x), naiveDFT(x, inverse: false)) < 1e-5, "\(shape)")
        #expect(maxDiff(FFT2D.inverse(x), naiveDFT(x, inverse: true)) < 1e-5, "\(shape)")
    }

    @Test("adjoint: ⟨Fx, y⟩ = ⟨x, Fᴴy⟩ with Fᴴ = inverse; inverse ∘ forward = identity; Parseval", arguments: [[28, 28], [7, 9], [2, 16, 12]])
    func adjoint(_ shape: [Int]) {
        let x = random(shape, seed: 1), y = random(shape, seed: 2)
        let lhs = ComplexTensor.inner(FFT2D.forward(x), y), rhs = ComplexTensor.inner(x, FFT2D.inverse(y))
        let scale = ComplexTensor.inner(x, x).re.squareRoot() * ComplexTensor.inner(y, y).re.squareRoot()
        #expect(abs(lhs.re - rhs.re) < 1e-5 * scale && abs(lhs.im - rhs.im) < 1e-5 * scale)
        #expect(maxDiff(FFT2D.inverse(FFT2D.forward(x)), x) < 1e-5)
        #expect(maxDiff(FFT2D.forward(FFT2D.inverse(x)), x) < 1e-5)
        let e0 = ComplexTensor.inner(x, x).re, e1 = ComplexTensor.inner(FFT2D.forward(x), FFT2D.forward(x)).re
        #expect(abs(e0 - e1) < 1e-5 * e0)
    }

    @Test("centred: a constant image puts all its energy at k-space index (H/2, W/2); a centred impulse is flat")
    func centring() {
        for (h, w) in [(8, 8), (7, 5)] {
            let x = ComplexTensor(real: Tensor(shape: [h, w], data: [Float](repeating: 1, count: h * w)))
            let k = FFT2D.forward(x)
            let centre = 2 * ((h / 2) * w + w / 2)
            #expect(abs(k.data[centre] - Float(Double(h * w).squareRoot())) < 1e-4)
            #expect(k.magnitude.data.enumerated().allSatisfy { $0.offset == centre / 2 || $0.element < 1e-4 })
            var impulse = ComplexTensor(zeros: [h, w])
            impulse.data[centre] = 1
            #expect(FFT2D.forward(impulse).data.enumerated().allSatisfy { abs($0.element - ($0.offset % 2 == 0 ? Float(1 / Double(h * w).squareRoot()) : 0)) < 1e-6 })
        }
    }

    @Test("concurrent transforms from several threads give the serial results (plans are shared)")
    func concurrent() {
        let xs = (0..<8).map { random([12, 10], seed: UInt64($0)) }
        let serial = xs.map(FFT2D.forward)
        let results = Mutex([ComplexTensor?](repeating: nil, count: 8))
        DispatchQueue.concurrentPerform(iterations: 8) { i in
            let r = FFT2D.forward(xs[i])
            results.withLock { $0[i] = r }
        }
        let got = results.withLock { $0 }
        #expect(got.enumerated().allSatisfy { $0.element == serial[$0.offset] })
    }
}
