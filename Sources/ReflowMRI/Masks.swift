public import ReflowEngine
import Foundation

// Undersampling masks for single- and multi-coil MRI (issue #14; ../shared/design/ALGORITHMS.md
// §8; mridc `reconstruction/data/subsample.py`, sigpy `mri.poisson`, fastMRI's 1-D masks). A mask
// is a [H, W] tensor of 0/1 over centred k-space (index (H/2, W/2) is the zero frequency, as
// ``FFT2D``'s). The acceleration R is H·W over the number of sampled points.

/// How a mask samples k-space.
public enum MaskKind: String, Codable, Sendable, CaseIterable {
    /// A fully sampled ellipse at the centre plus points drawn without replacement from a
    /// separable Gaussian density (mridc's Gaussian-2D).
    case gaussian2D
    /// Variable-density Poisson-disc points (no two closer than a radius that grows away from the
    /// centre) plus a fully sampled centre square (sigpy's `poisson`).
    case poissonDisc
    /// Whole phase-encode lines (columns): the centre lines plus random others (fastMRI's random).
    case random1D
    /// The centre lines plus every R-th line from a random offset (fastMRI's equispaced).
    case equispaced1D

    /// Whether the mask samples whole columns (its acceleration is then the nearest line count).
    public var isLineMask: Bool { self == .random1D || self == .equispaced1D }
}

/// A sampling mask and how it was made.
public struct Mask: Sendable, Equatable {
    public var kind: MaskKind
    /// [H, W] of 0/1.
    public var values: Tensor
    public var seed: UInt64

    /// A mask from given 0/1 values [H, W] (an uploaded one; `kind` and `seed` then only label it).
    public init(kind: MaskKind, values: Tensor, seed: UInt64) {
        self.kind = kind
        self.values = values
        self.seed = seed
    }

    public var height: Int { values.shape[0] }
    public var width: Int { values.shape[1] }
    /// Sampled points.
    public var sampled: Int { values.data.reduce(0) { $0 + ($1 != 0 ? 1 : 0) } }
    /// H·W / sampled.
    public var acceleration: Double { Double(height * width) / Double(max(1, sampled)) }

    /// Largest side a mask is made for.
    public static let maxSide = 1024

    /// Why a mask of these parameters cannot be made (nil when it can).
    public static func problem(height: Int, width: Int, acceleration: Double, centerFraction: Double) -> String? {
        if !(2...maxSide).contains(height) || !(2...maxSide).contains(width) {
            return "height and width must be in [2, \(maxSide)], got \(height)×\(width)"
        }
        if !(acceleration >= 1 && acceleration <= 64) { return "acceleration must be in [1, 64], got \(acceleration)" }
        if !(centerFraction >= 0 && centerFraction < 1) { return "centerFraction must be in [0, 1), got \(centerFraction)" }
        if centerFraction * centerFraction * Double(height * width) > Double(height * width) / acceleration {
            return "a centre of fraction \(centerFraction) alone samples more than 1/\(acceleration) of k-space"
        }
        return nil
    }

    /// Makes a mask of `kind` for an H×W k-space at acceleration R (seeded: the same arguments
    /// give the same mask). 2-D kinds sample round(H·W/R) points (Poisson-disc within 2 %), the
    /// line kinds the nearest number of whole columns, round(W/R). `centerFraction` is the side
    /// of the fully sampled centre as a fraction of each side (2-D kinds: the ellipse's axes or
    /// the square's side; line kinds: the fraction of columns).
    /// - Throws: ``MRIError/invalid(_:)`` with ``problem(height:width:acceleration:centerFraction:)``'s message.
    public static func make(_ kind: MaskKind, height: Int, width: Int, acceleration: Double,
                            centerFraction: Double = 0.08, seed: UInt64) throws -> Mask {
        if let p = problem(height: height, width: width, acceleration: acceleration, centerFraction: centerFraction) {
            throw MRIError.invalid(p)
        }
        var rng = Random(seed: seed)
        var m = [Float](repeating: 0, count: height * width)
        let (h, w) = (height, width)
        let (ch, cw) = (h / 2, w / 2)
        switch kind {
        case .gaussian2D:
            let target = max(1, Int((Double(h * w) / acceleration).rounded()))
            // The centre ellipse, half-axes centerFraction·side/2 (at least the centre point).
            let (ay, ax) = (max(0.5, centerFraction * Double(h) / 2), max(0.5, centerFraction * Double(w) / 2))
            for r in 0..<h { for c in 0..<w {
                let (dy, dx) = (Double(r - ch) / ay, Double(c - cw) / ax)
                if dy * dy + dx * dx <= 1 { m[r * w + c] = 1 }
            } }
            // The rest without replacement, with probability ∝ a separable Gaussian on a [−1, 1]
            // grid, σ = FWHM/√(8 ln 2) with FWHM 0.7 (weighted sampling by exponential keys).
            let sigma = 0.7 / (8 * Foundation.log(2.0)).squareRoot()
            var keys = [(key: Double, index: Int)]()
            for r in 0..<h { for c in 0..<w where m[r * w + c] == 0 {
                let (y, x) = (2 * Double(r - ch) / Double(h), 2 * Double(c - cw) / Double(w))
                let density = Foundation.exp(-(x * x + y * y) / (2 * sigma * sigma))
                let u = max(rng.uniformDouble(), 1e-300)
                keys.append((Foundation.log(u) / max(density, 1e-300), r * w + c))
            } }
            keys.sort { $0.key > $1.key }
            let have = m.reduce(0) { $0 + Int($1) }
            for k in keys.prefix(max(0, target - have)) { m[k.index] = 1 }
        case .poissonDisc:
            m = poisson(h, w, acceleration: acceleration, centerFraction: centerFraction, rng: &rng)
        case .random1D, .equispaced1D:
            let lines = max(1, min(w, Int((Double(w) / acceleration).rounded())))
            let centre = min(lines, max(1, Int((centerFraction * Double(w)).rounded())))
            var chosen = Set((0..<centre).map { cw - centre / 2 + $0 })
            if kind == .random1D {
                var rest = (0..<w).filter { !chosen.contains($0) }
                for i in stride(from: rest.count - 1, to: 0, by: -1) { rest.swapAt(i, rng.int(below: i + 1)) }
                for c in rest.prefix(lines - chosen.count) { chosen.insert(c) }
            } else {
                // Every step-th column from a random offset, the step chosen so that centre plus
                // the equispaced lines make `lines` in all (the nearest spacing that does).
                let need = lines - chosen.count
                if need > 0 {
                    var best = Set<Int>()
                    var step = Double(w) / Double(need)
                    for _ in 0..<64 {
                        let offset = rng.int(below: max(1, Int(step)))
                        let extra = Set(stride(from: Double(offset), to: Double(w), by: step).map { Int($0) }).subtracting(chosen)
                        if abs(extra.count - need) < abs(best.count - need) || best.isEmpty { best = extra }
                        if extra.count == need { break }
                        step *= extra.count > need ? 1.05 : 0.95
                    }
                    for c in best.sorted().prefix(need) { chosen.insert(c) }
                }
            }
            for c in chosen { for r in 0..<h { m[r * w + c] = 1 } }
        }
        return Mask(kind: kind, values: Tensor(shape: [h, w], data: m), seed: seed)
    }

    /// Variable-density Poisson-disc sampling: points in random order are kept when no kept point
    /// lies within r(p) = r0·(1 + 2·|p|) (|p| the distance from the centre on a [−1, 1] grid), plus
    /// a fully sampled centre square; r0 is bisected until the count is within 2 % of H·W/R.
    static func poisson(_ h: Int, _ w: Int, acceleration: Double, centerFraction: Double, rng: inout Random) -> [Float] {
        let target = Double(h * w) / acceleration
        var order = Array(0..<(h * w))
        for i in stride(from: order.count - 1, to: 0, by: -1) { order.swapAt(i, rng.int(below: i + 1)) }
        let (ch, cw) = (h / 2, w / 2)
        let half = (max(0, Int((centerFraction * Double(min(h, w))).rounded())) + 1) / 2
        func build(_ r0: Double) -> [Float] {
            var m = [Float](repeating: 0, count: h * w)
            for r in max(0, ch - half)..<min(h, ch + half) { for c in max(0, cw - half)..<min(w, cw + half) { m[r * w + c] = 1 } }
            // Radius of each kept disc point (0: not a disc point); a conflicting point lies within
            // the candidate's own radius (the test uses the smaller of the two), so only that
            // window is scanned.
            var radius = [Double](repeating: 0, count: h * w)
            for idx in order {
                let (r, c) = (idx / w, idx % w)
                if m[idx] != 0 { continue }
                let (y, x) = (2 * Double(r - ch) / Double(h), 2 * Double(c - cw) / Double(w))
                let rad = r0 * (1 + 2 * (x * x + y * y).squareRoot())
                let span = Int(rad.rounded(.up))
                var free = true
                scan: for kr in max(0, r - span)...min(h - 1, r + span) {
                    for kc in max(0, c - span)...min(w - 1, c + span) where radius[kr * w + kc] > 0 {
                        let (dr, dc) = (Double(kr - r), Double(kc - c))
                        let lim = min(rad, radius[kr * w + kc])
                        if dr * dr + dc * dc < lim * lim { free = false; break scan }
                    }
                }
                if free { radius[idx] = rad; m[idx] = 1 }
            }
            return m
        }
        var (lo, hi) = (0.0, Double(max(h, w)))
        var best = [Float](), bestGap = Double.infinity
        for _ in 0..<40 {
            let mid = (lo + hi) / 2
            let m = build(mid)
            let n = Double(m.reduce(0, +))
            let gap = abs(n - target) / target
            if gap < bestGap { best = m; bestGap = gap }
            if gap <= 0.02 { break }
            if n > target { lo = mid } else { hi = mid }
        }
        return best
    }
}

/// Why an MRI operation could not run.
public enum MRIError: Error, Equatable, Sendable, CustomStringConvertible {
    case invalid(String)
    public var description: String {
        switch self { case .invalid(let m): m }
    }
}
