public import ReflowEngine
import Foundation

/// Synthetic MRI-like images (issue #14): the modified Shepp–Logan head phantom (Toft 1996, the
/// "modified" intensities also used by MATLAB's `phantom` and scikit-image) and random ellipse
/// phantoms in its style, as [H, W] tensors in [0, 1]. Image coordinates: x from −1 (left) to 1,
/// y from 1 (top) to −1, sampled at pixel centres.
public enum Phantoms {
    /// One ellipse: intensity added inside, half-axes (a, b), centre (x0, y0), rotation φ (degrees).
    public struct Ellipse: Sendable, Equatable {
        public var intensity, a, b, x0, y0, phi: Double
        public init(_ intensity: Double, _ a: Double, _ b: Double, _ x0: Double, _ y0: Double, _ phi: Double) {
            (self.intensity, self.a, self.b, self.x0, self.y0, self.phi) = (intensity, a, b, x0, y0, phi)
        }

        func contains(_ x: Double, _ y: Double) -> Bool {
            let t = phi * .pi / 180
            let (dx, dy) = (x - x0, y - y0)
            let (u, v) = (dx * Foundation.cos(t) + dy * Foundation.sin(t), -dx * Foundation.sin(t) + dy * Foundation.cos(t))
            return (u * u) / (a * a) + (v * v) / (b * b) <= 1
        }
    }

    /// The ten ellipses of the modified Shepp–Logan phantom.
    public static let sheppLoganEllipses: [Ellipse] = [
        Ellipse(1, 0.69, 0.92, 0, 0, 0), Ellipse(-0.8, 0.6624, 0.874, 0, -0.0184, 0),
        Ellipse(-0.2, 0.11, 0.31, 0.22, 0, -18), Ellipse(-0.2, 0.16, 0.41, -0.22, 0, 18),
        Ellipse(0.1, 0.21, 0.25, 0, 0.35, 0), Ellipse(0.1, 0.046, 0.046, 0, 0.1, 0),
        Ellipse(0.1, 0.046, 0.046, 0, -0.1, 0), Ellipse(0.1, 0.046, 0.023, -0.08, -0.605, 0),
        Ellipse(0.1, 0.023, 0.023, 0, -0.606, 0), Ellipse(0.1, 0.023, 0.046, 0.06, -0.605, 0),
    ]

    /// Renders the sum of the ellipses' intensities at each pixel centre, clamped to [0, 1].
    public static func render(_ ellipses: [Ellipse], height: Int, width: Int) -> Tensor {
        var out = [Float](repeating: 0, count: height * width)
        for r in 0..<height {
            let y = 1 - (2 * Double(r) + 1) / Double(height)
            for c in 0..<width {
                let x = (2 * Double(c) + 1) / Double(width) - 1
                var v = 0.0
                for e in ellipses where e.contains(x, y) { v += e.intensity }
                out[r * width + c] = Float(min(1, max(0, v)))
            }
        }
        return Tensor(shape: [height, width], data: out)
    }

    public static func sheppLogan(height: Int, width: Int) -> Tensor { render(sheppLoganEllipses, height: height, width: width) }

    /// A random phantom in Shepp–Logan's style (seeded): an outer ellipse of intensity 0.8–1 with
    /// a darker interior, and `structures` smaller ellipses of ±0.1–0.3 inside it.
    public static func randomEllipses(height: Int, width: Int, structures: Int = 6, seed: UInt64) -> Tensor {
        var rng = Random(seed: seed)
        func u(_ lo: Double, _ hi: Double) -> Double { lo + (hi - lo) * rng.uniformDouble() }
        let (a, b, phi) = (u(0.6, 0.85), u(0.7, 0.95), u(-20, 20))
        let outer = u(0.8, 1), inner = u(0.5, 0.75)
        var es = [Ellipse(outer, a, b, 0, 0, phi), Ellipse(-inner, a * 0.92, b * 0.92, 0, 0, phi)]
        for _ in 0..<structures {
            let (sa, sb) = (u(0.04, 0.25) * a, u(0.04, 0.25) * b)
            let (r, t) = (u(0, 0.6), u(0, 2 * .pi))
            es.append(Ellipse((rng.uniformDouble() < 0.7 ? 1 : -1) * u(0.1, 0.3), sa, sb,
                              r * a * Foundation.cos(t), r * b * Foundation.sin(t), u(0, 180)))
        }
        return render(es, height: height, width: width)
    }
}

/// Reconstruction metrics of issue #14 beside ImageQuality's SSIM and PSNR.
public enum MRIMetrics {
    /// ‖x − reference‖² / ‖reference‖² (fastMRI's NMSE); NaN for a zero reference or mismatched sizes.
    public static func nmse(_ x: [Float], _ reference: [Float]) -> Double {
        guard x.count == reference.count else { return .nan }
        var num = 0.0, den = 0.0
        for (a, b) in zip(x, reference) { num += Double(a - b) * Double(a - b); den += Double(b) * Double(b) }
        return den > 0 ? num / den : .nan
    }
}

extension Phantoms {
    /// Adds `count` small bright ellipses ("lesions": half-axes 1.5–3 pixels, +0.5 intensity,
    /// clamped to 1) to a magnitude image [H·W], centred on pixels of the object (magnitude >
    /// 0.1; anywhere when there are none). Returns the image and the lesion region (1 inside).
    public static func addLesions(_ image: [Float], height h: Int, width w: Int, count: Int,
                                  rng: inout Random) -> (image: [Float], region: [Float]) {
        var out = image, region = [Float](repeating: 0, count: h * w)
        let inside = image.indices.filter { image[$0] > 0.1 }
        for _ in 0..<max(0, count) {
            let c = inside.isEmpty ? rng.int(below: h * w) : inside[rng.int(below: inside.count)]
            let (cy, cx) = (Double(c / w), Double(c % w))
            let a = 1.5 + 1.5 * rng.uniformDouble(), b = 1.5 + 1.5 * rng.uniformDouble()
            let t = rng.uniformDouble() * Double.pi
            for r in 0..<h {
                for col in 0..<w {
                    let (dx, dy) = (Double(col) - cx, Double(r) - cy)
                    let u = dx * Foundation.cos(t) + dy * Foundation.sin(t), v = -dx * Foundation.sin(t) + dy * Foundation.cos(t)
                    if u * u / (a * a) + v * v / (b * b) <= 1 {
                        let k = r * w + col
                        if region[k] == 0 { out[k] = min(1, out[k] + 0.5) }
                        region[k] = 1
                    }
                }
            }
        }
        return (out, region)
    }
}

extension MRIMetrics {
    /// NMSE over the pixels where `region` is non-zero (NaN when the region is empty or the
    /// reference is zero there).
    public static func nmse(_ x: [Float], _ reference: [Float], region: [Float]) -> Double {
        guard x.count == reference.count, region.count == x.count else { return .nan }
        let idx = region.indices.filter { region[$0] != 0 }
        return nmse(idx.map { x[$0] }, idx.map { reference[$0] })
    }
}
