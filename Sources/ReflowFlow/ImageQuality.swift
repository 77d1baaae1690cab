import Foundation

/// Full-reference image quality: MSE, PSNR and SSIM between a reconstruction and its
/// reference (the round-trip figures of inversion, and of MRI reconstruction).
///
/// SSIM follows Wang, Bovik, Sheikh & Simoncelli 2004 ("Image quality assessment: from error
/// visibility to structural similarity") with their reference settings: an 11×11 Gaussian window
/// with σ = 1.5 (normalised to sum 1), K1 = 0.01, K2 = 0.03, C1 = (K1·L)², C2 = (K2·L)² for the
/// data range L, local statistics over "valid" window positions only (as their MATLAB code and
/// scikit-image's `structural_similarity(gaussian_weights=True, use_sample_covariance=False)`
/// after its border crop), averaged over positions and then over channels.
public enum ImageQuality {
    /// The window's side (11) and the Gaussian's σ (1.5).
    public static let window = 11
    public static let sigma = 1.5

    /// Mean squared error over all elements (Double); NaN for inputs of different or zero size.
    public static func mse(_ a: [Float], _ b: [Float]) -> Double {
        guard a.count == b.count, !a.isEmpty else { return .nan }
        var s = 0.0
        for i in a.indices { let d = Double(a[i]) - Double(b[i]); s += d * d }
        return s / Double(a.count)
    }

    /// Peak signal-to-noise ratio in dB for data range L: 10·log10(L²/MSE); +∞ for identical inputs.
    public static func psnr(_ a: [Float], _ b: [Float], dataRange l: Double) -> Double {
        let m = mse(a, b)
        return m == 0 ? .infinity : 10 * log10(l * l / m)
    }

    /// The normalised 1-D Gaussian of the window (the 2-D window is its outer product).
    static var gaussian: [Double] {
        let r = window / 2
        let g = (0..<window).map { i -> Double in let x = Double(i - r); return exp(-x * x / (2 * sigma * sigma)) }
        let s = g.reduce(0, +)
        return g.map { $0 / s }
    }

    /// Mean SSIM of two images of `shape` [C, H, W] (row-major), data range L. Images smaller
    /// than the window in H or W return nil (no valid window position).
    ///
    ///     a, b: [C·H·W]  →  SSIM ∈ [−1, 1]
    public static func ssim(_ a: [Float], _ b: [Float], shape: [Int], dataRange l: Double) -> Double? {
        guard shape.count == 3 else { return nil }
        let (c, h, w) = (shape[0], shape[1], shape[2])
        guard a.count == c * h * w, b.count == a.count, h >= window, w >= window else { return nil }
        let g = gaussian, oh = h - window + 1, ow = w - window + 1
        let c1 = (0.01 * l) * (0.01 * l), c2 = (0.03 * l) * (0.03 * l)
        var total = 0.0
        // Separable filtering: rows then columns, for x, y, x², y², xy.
        var rowsBuf = [Double](repeating: 0, count: 5 * h * ow)
        for ch in 0..<c {
            let base = ch * h * w
            for y in 0..<h {
                for x in 0..<ow {
                    var s = (0.0, 0.0, 0.0, 0.0, 0.0)
                    for k in 0..<window {
                        let p = Double(a[base + y * w + x + k]), q = Double(b[base + y * w + x + k]), wk = g[k]
                        s.0 += wk * p; s.1 += wk * q; s.2 += wk * p * p; s.3 += wk * q * q; s.4 += wk * p * q
                    }
                    let o = y * ow + x
                    rowsBuf[o] = s.0; rowsBuf[h * ow + o] = s.1; rowsBuf[2 * h * ow + o] = s.2
                    rowsBuf[3 * h * ow + o] = s.3; rowsBuf[4 * h * ow + o] = s.4
                }
            }
            var sum = 0.0
            for y in 0..<oh {
                for x in 0..<ow {
                    var m = [0.0, 0.0, 0.0, 0.0, 0.0]
                    for k in 0..<window {
                        let o = (y + k) * ow + x, wk = g[k]
                        for f in 0..<5 { m[f] += wk * rowsBuf[f * h * ow + o] }
                    }
                    let mx = m[0], my = m[1]
                    let vx = m[2] - mx * mx, vy = m[3] - my * my, cov = m[4] - mx * my
                    sum += ((2 * mx * my + c1) * (2 * cov + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
                }
            }
            total += sum / Double(oh * ow)
        }
        return total / Double(c)
    }
}
