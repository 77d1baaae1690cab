import Foundation
import Testing
import ReflowEngine
@testable import ReflowFlow
import ReflowTestSupport

/// MSE, PSNR and SSIM (Wang et al. 2004 settings) against hand values and a direct 2-D oracle.
@Suite("Image quality: MSE, PSNR, SSIM")
struct ImageQualityTests {
    /// SSIM by direct 2-D weighted sums over each valid 11×11 window (no separable filtering).
    static func oracle(_ a: [Float], _ b: [Float], c: Int, h: Int, w: Int, l: Double) -> Double {
        var weights = [Double](repeating: 0, count: 121)
        for dy in 0..<11 { for dx in 0..<11 {
            let y = Double(dy - 5), x = Double(dx - 5)
            weights[dy * 11 + dx] = exp(-(x * x + y * y) / (2 * 1.5 * 1.5))
        } }
        let norm = weights.reduce(0, +)
        let c1 = pow(0.01 * l, 2), c2 = pow(0.03 * l, 2)
        var total = 0.0
        for ch in 0..<c {
            var sum = 0.0, n = 0
            for y in 0...(h - 11) { for x in 0...(w - 11) {
                var mx = 0.0, my = 0.0, xx = 0.0, yy = 0.0, xy = 0.0
                for dy in 0..<11 { for dx in 0..<11 {
                    let i = ch * h * w + (y + dy) * w + x + dx, wt = weights[dy * 11 + dx] / norm
                    let p = Double(a[i]), q = Double(b[i])
                    mx += wt * p; my += wt * q; xx += wt * p * p; yy += wt * q * q; xy += wt * p * q
                } }
                let vx = xx - mx * mx, vy = yy - my * my, cv = xy - mx * my
                sum += (2 * mx * my + c1) * (2 * cv + c2) / ((mx * mx + my * my + c1) * (vx + vy + c2))
                n += 1
            } }
            total += sum / Double(n)
        }
        return total / Double(c)
    }

    @Test("identical images: MSE 0, PSNR +∞, SSIM 1; a constant shift: PSNR 10·log10(L²/c²) and SSIM the luminance term")
    func knownValues() throws {
        let x = randu([1, 16, 16], seed: 1, low: -1, high: 1).data
        #expect(ImageQuality.mse(x, x) == 0 && ImageQuality.psnr(x, x, dataRange: 2) == .infinity)
        let same = try #require(ImageQuality.ssim(x, x, shape: [1, 16, 16], dataRange: 2))
        #expect(abs(same - 1) < 1e-12)
        let shift: Float = 0.25
        let y = x.map { $0 + shift }
        let p = ImageQuality.psnr(x, y, dataRange: 2)
        #expect(abs(p - 10 * log10(4 / Double(shift * shift))) < 1e-4)
        let s = try #require(ImageQuality.ssim(x, y, shape: [1, 16, 16], dataRange: 2))
        #expect(s < 1 && abs(s - Self.oracle(x, y, c: 1, h: 16, w: 16, l: 2)) < 1e-9)
        // More noise, lower SSIM (the same noise draw, scaled).
        let noise = randn([1, 16, 16], seed: 4).data
        let mild = try #require(ImageQuality.ssim(x, zip(x, noise).map { $0 + 0.05 * $1 }, shape: [1, 16, 16], dataRange: 2))
        let strong = try #require(ImageQuality.ssim(x, zip(x, noise).map { $0 + 0.5 * $1 }, shape: [1, 16, 16], dataRange: 2))
        #expect(1 > mild && mild > strong)
    }

    @Test("SSIM of random images equals the direct 2-D oracle, per channel averaged; too small images give nil")
    func oracleAgreement() throws {
        let a = randu([3, 20, 23], seed: 2, low: -1, high: 1).data
        let b = zip(a, randn([3, 20, 23], seed: 3, std: 0.3).data).map { $0 + $1 }
        let s = try #require(ImageQuality.ssim(a, b, shape: [3, 20, 23], dataRange: 2))
        #expect(abs(s - Self.oracle(a, b, c: 3, h: 20, w: 23, l: 2)) < 1e-9)
        #expect(s > 0 && s < 1)
        #expect(ImageQuality.ssim(Array(a.prefix(100)), Array(b.prefix(100)), shape: [1, 10, 10], dataRange: 2) == nil)
        #expect(ImageQuality.ssim(a, b, shape: [3, 20], dataRange: 2) == nil)
    }
}

extension ImageQualityTests {
    @Test("mismatched sizes give NaN, not a trap")
    func mismatched() {
        #expect(ImageQuality.mse([1, 2], [1]).isNaN && ImageQuality.psnr([], [], dataRange: 2).isNaN)
    }
}
