public import ReflowEngine
import Foundation
import ReflowNN

/// A built-in 2-D distribution: a training source or target for toy flows, with the geometry
/// that the coverage metrics need.
///
/// **Wire JSON** is the `Codable` form: an object with a `kind` discriminator and the case's
/// parameters, for example
///
/// ```json
/// {"kind": "gaussianRing", "count": 8, "radius": 4, "std": 0.1}
/// {"kind": "twoMoons"}
/// {"kind": "gaussianMixture", "centers": [[-2, 0], [2, 0]], "std": 0.2}
/// ```
///
/// Absent parameters (and `null`) take the defaults shown on each case; only `kind` and
/// ``gaussianMixture(centers:std:)``'s `centers` are required. Keys that the kind does not
/// define are rejected (a misspelt parameter would otherwise silently fall back to its default);
/// the `DecodingError`'s `codingPath` ends at the offending key. Encoding writes every parameter,
/// so `decode(encode(d)) == d`.
///
/// Decoding checks types only. Call ``validationError()`` before sampling: it returns the first
/// invalid parameter as a JSON pointer relative to this object (`"/std"`, `"/mean/1"`) and a
/// message, so the API can prefix the object's own location (`"/data" + pointer`).
///
/// **Determinism.** Sampling draws only from the given ``Random``, in a fixed order per point
/// (documented on each case), so a seed gives the same points every time. ``gaussian(mean:std:)``
/// with the default parameters draws exactly the numbers of `rng.normal([n, 2])`, and
/// ``gaussianRing(count:radius:std:)`` exactly those of ``GaussianRing``.
///
/// **Coverage cells.** Every distribution partitions its support into ``supportCellCount``
/// cells (see ``supportCell(_:_:)``), so mode coverage can be measured for every shape
/// (``Metrics/supportCoverage(samples:distribution:minShare:)``):
///
/// - Gaussian mixtures (``modeCenters`` non-nil): one cell per mode; a point belongs to the mode
///   whose centre is nearest when that distance is **< 3·std** (as `rf_torch.py`'s `mode_stats`).
/// - ``twoMoons(noise:scale:)``, ``spirals(turns:radius:noise:)``, ``rings(radii:noise:)``: each
///   curve (moon, arm, ring) is cut into ``cellsPerCurve`` pieces of equal probability
///   mass; a point belongs to the piece holding the nearest point of the noise-free curve when
///   its distance to the curve is **< 3·σ**, σ being the output noise std (at least 10⁻³ of the
///   shape's size, so noise-free shapes still have a usable tolerance).
/// - ``checkerboard(squares:extent:)``: one cell per filled square; a point belongs to the
///   (closed) square it lies in; points outside all filled squares belong to no cell.
public enum Distribution2D: Codable, Sendable, Equatable {
    /// An isotropic Gaussian N(mean, std²·I) — the standard Gaussian source by default.
    /// Per point: two normals (x, then y), `mean[i] + std·Float(rng.normal())`.
    case gaussian(mean: [Float] = [0, 0], std: Float = 1)

    /// `count` equal-weight isotropic Gaussians with centres evenly spaced on a circle, the first
    /// at angle 0 ("8 Gaussians"). The same math and the same random draws as ``GaussianRing``.
    case gaussianRing(count: Int = 8, radius: Float = 4, std: Float = 0.1)

    /// Two equal-weight isotropic Gaussians centred at (−separation/2, 0) and (+separation/2, 0).
    /// Per point: the mode (`rng.int(below: 2)`), then two normals.
    case twoGaussians(separation: Float = 8, std: Float = 0.5)

    /// The three-Gaussian source of the rectified-flow 2-D Colab (Liu et al. 2022): centres
    /// (±D√3/2, D/2) and (0, −D√3/2) with D = `distance`, covariance 0.3·I (std √0.3 ≈ 0.5477).
    /// `mirrored: true` gives the Colab's target, the mirror image in y:
    /// (±D√3/2, −D/2) and (0, D√3/2). Mode order: (+x), (−x), (0, y).
    case threeGaussians(distance: Float = 10, std: Float = Float(0.3).squareRoot(), mirrored: Bool = false)

    /// Equal-weight isotropic Gaussians at `centers` (each `[x, y]`; required in JSON).
    case gaussianMixture(centers: [[Float]], std: Float = 0.1)

    /// Two interleaving half circles as in scikit-learn's `make_moons`, centred and scaled:
    /// the upper moon (cos θ, sin θ) and the lower moon (1 − cos θ, ½ − sin θ), θ ~ U[0, π),
    /// each with probability ½; N(0, noise²) is added to both coordinates; then the point is
    /// shifted by −(½, ¼) (the centre of the unit-scale shape) and multiplied by `scale`
    /// (so the output noise std is `noise·scale`, and x spans about [−1.5, 1.5]·scale).
    /// Per point: the moon (`rng.int(below: 2)`), θ (`uniformDouble`), two normals.
    case twoMoons(noise: Float = 0.05, scale: Float = 3)

    /// A `squares` × `squares` checkerboard on [−extent, extent]²: square (i, j) (column i from
    /// the left, row j from the bottom) is filled when i + j is even, as in the common
    /// flow-matching toy code (4 × 4 on [−4, 4]² with 8 filled squares by default).
    /// Points are uniform on the filled squares. Per point: the filled square
    /// (`rng.int(below: filled)`, squares numbered row by row from the bottom left), then
    /// two uniforms (x, y) inside it.
    case checkerboard(squares: Int = 4, extent: Float = 4)

    /// Two interleaved Archimedean spirals: arm 0 is r·(−cos φ, sin φ) with r = radius·φ/Φ,
    /// Φ = 2π·turns, φ = Φ·√u (u ~ U[0, 1), so the density along the arm is roughly uniform);
    /// arm 1 is arm 0 rotated by π. N(0, noise²) is added to both coordinates.
    /// Per point: the arm (`rng.int(below: 2)`), u (`uniformDouble`), two normals.
    case spirals(turns: Float = 1.5, radius: Float = 4, noise: Float = 0.1)

    /// Concentric circles (equal weight per ring, as scikit-learn's `make_circles`) with the given
    /// radii; the angle is uniform and N(0, noise²) is added to both coordinates.
    /// Per point: the ring (`rng.int(below: radii.count)`), the angle (`uniformDouble`), two normals.
    case rings(radii: [Float] = [2, 4], noise: Float = 0.1)

    /// The `kind` strings, in declaration order.
    public static let kinds = ["gaussian", "gaussianRing", "twoGaussians", "threeGaussians", "gaussianMixture",
                               "twoMoons", "checkerboard", "spirals", "rings"]

    /// Coverage cells per curve (moon, spiral arm, ring) of the continuous shapes.
    public static let cellsPerCurve = 4

    /// Largest accepted |coordinate| or length parameter (keeps every derived quantity finite).
    public static let maxMagnitude: Float = 1e6

    /// The `kind` discriminator of this case.
    public var kind: String {
        switch self {
        case .gaussian: return "gaussian"
        case .gaussianRing: return "gaussianRing"
        case .twoGaussians: return "twoGaussians"
        case .threeGaussians: return "threeGaussians"
        case .gaussianMixture: return "gaussianMixture"
        case .twoMoons: return "twoMoons"
        case .checkerboard: return "checkerboard"
        case .spirals: return "spirals"
        case .rings: return "rings"
        }
    }

    // MARK: Validation

    /// The first invalid parameter as (JSON pointer relative to this object, message), or nil
    /// when the distribution can be sampled.
    ///
    /// Lengths and coordinates must be finite with magnitude ≤ ``maxMagnitude``; stds and noise
    /// levels non-negative; counts: ring modes 1…10000, mixture centres 1…10000, checkerboard
    /// squares 1…64 per side, rings 1…64, spiral turns in (0, 100].
    public func validationError() -> (pointer: String, message: String)? {
        func length(_ v: Float, _ p: String, positive: Bool = false) -> (pointer: String, message: String)? {
            let ok = v.isFinite && (positive ? v > 0 : v >= 0) && v <= Distribution2D.maxMagnitude
            if ok { return nil }
            return (p, "must be a \(positive ? "positive" : "non-negative") number ≤ 1e6, got \(v)")
        }
        func coordinate(_ v: Float, _ p: String) -> (pointer: String, message: String)? {
            v.isFinite && Swift.abs(v) <= Distribution2D.maxMagnitude ? nil : (p, "must be a finite number with |x| ≤ 1e6, got \(v)")
        }
        switch self {
        case .gaussian(let mean, let std):
            if mean.count != 2 { return ("/mean", "must have exactly 2 entries, got \(mean.count)") }
            for (i, m) in mean.enumerated() { if let e = coordinate(m, "/mean/\(i)") { return e } }
            return length(std, "/std")
        case .gaussianRing(let count, let radius, let std):
            if let e = GaussianRing(count: count, radius: radius, std: std).validationError() { return e }
            return length(radius, "/radius") ?? length(std, "/std")
        case .twoGaussians(let separation, let std):
            return length(separation, "/separation") ?? length(std, "/std")
        case .threeGaussians(let distance, let std, _):
            return length(distance, "/distance") ?? length(std, "/std")
        case .gaussianMixture(let centers, let std):
            if centers.isEmpty || centers.count > 10_000 {
                return ("/centers", "must hold 1 to 10000 centres, got \(centers.count)")
            }
            for (k, c) in centers.enumerated() {
                if c.count != 2 { return ("/centers/\(k)", "must be [x, y], got \(c.count) numbers") }
                for (i, v) in c.enumerated() { if let e = coordinate(v, "/centers/\(k)/\(i)") { return e } }
            }
            return length(std, "/std")
        case .twoMoons(let noise, let scale):
            return length(noise, "/noise") ?? length(scale, "/scale", positive: true)
        case .checkerboard(let squares, let extent):
            if squares < 1 || squares > 64 { return ("/squares", "must be in [1, 64], got \(squares)") }
            return length(extent, "/extent", positive: true)
        case .spirals(let turns, let radius, let noise):
            if !(turns > 0 && turns <= 100) { return ("/turns", "must be in (0, 100], got \(turns)") }
            return length(radius, "/radius", positive: true) ?? length(noise, "/noise")
        case .rings(let radii, let noise):
            if radii.isEmpty || radii.count > 64 { return ("/radii", "must hold 1 to 64 radii, got \(radii.count)") }
            for (i, r) in radii.enumerated() { if let e = length(r, "/radii/\(i)", positive: true) { return e } }
            return length(noise, "/noise")
        }
    }

    // MARK: Sampling

    /// The number of labelled modes (the mixture component, moon, spiral arm, ring or
    /// checkerboard square a sample is drawn from); nil for the single Gaussian.
    public var classCount: Int? {
        switch self {
        case .gaussian: return nil
        case .gaussianRing(let count, _, _): return count
        case .twoGaussians: return 2
        case .threeGaussians: return 3
        case .gaussianMixture(let centers, _): return centers.count
        case .twoMoons, .spirals: return 2
        case .rings(let radii, _): return radii.count
        case .checkerboard(let squares, _): return (squares * squares + 1) / 2
        }
    }

    /// Fills `out` ([n, 2] row-major) with n samples and, when given, `labels` ([n]) with each
    /// sample's mode (see ``classCount``; 0 for the single Gaussian). The random draws are the
    /// same with or without labels.
    ///
    /// Preconditions (programmer errors): `out.count` is even and ``validationError()`` is nil —
    /// validate user-supplied distributions at the boundary first.
    public func sample(into out: UnsafeMutableBufferPointer<Float>, labels: UnsafeMutablePointer<Int32>? = nil, rng: inout Random) {
        precondition(out.count % 2 == 0, "Distribution2D.sample: buffer must hold [n, 2], got \(out.count) floats")
        if let e = validationError() {
            preconditionFailure("Distribution2D.sample: invalid \(kind) at \(e.pointer): \(e.message) (validate first)")
        }
        let n = out.count / 2
        switch self {
        case .gaussian(let mean, let std):
            let (mx, my) = (mean[0], mean[1])
            for i in 0..<n {
                labels?[i] = 0
                out[2 * i] = mx + std * Float(rng.normal())
                out[2 * i + 1] = my + std * Float(rng.normal())
            }
        case .gaussianRing(let count, let radius, let std):
            GaussianRing(count: count, radius: radius, std: std).sample(into: out, labels: labels, rng: &rng)
        case .twoGaussians, .threeGaussians, .gaussianMixture:
            let centers = modeCenters!, std = modeStd!
            for i in 0..<n {
                let k = rng.int(below: centers.count)
                labels?[i] = Int32(k)
                let c = centers[k]
                out[2 * i] = c.0 + std * Float(rng.normal())
                out[2 * i + 1] = c.1 + std * Float(rng.normal())
            }
        case .twoMoons(let noise, let scale):
            let s = Double(scale), sd = Double(noise)
            for i in 0..<n {
                let moon = rng.int(below: 2)
                labels?[i] = Int32(moon)
                let theta = Double.pi * rng.uniformDouble()
                let (cx, cy) = (Foundation.cos(theta), Foundation.sin(theta))
                let (x, y) = moon == 0 ? (cx, cy) : (1 - cx, 0.5 - cy)
                let nx = sd * rng.normal(), ny = sd * rng.normal()
                out[2 * i] = Float((x + nx - 0.5) * s)
                out[2 * i + 1] = Float((y + ny - 0.25) * s)
            }
        case .checkerboard(let squares, let extent):
            let geometry = Checkerboard(squares: squares, extent: extent)
            for i in 0..<n {
                let k = rng.int(below: geometry.filledCount)
                labels?[i] = Int32(k)
                let (col, row) = geometry.square(k)
                let u = rng.uniformDouble(), v = rng.uniformDouble()
                out[2 * i] = Float(-geometry.extent + (Double(col) + u) * geometry.side)
                out[2 * i + 1] = Float(-geometry.extent + (Double(row) + v) * geometry.side)
            }
        case .spirals(let turns, let radius, let noise):
            let spiral = Spiral(turns: turns, radius: radius)
            let sd = Double(noise)
            for i in 0..<n {
                let arm = rng.int(below: 2)
                labels?[i] = Int32(arm)
                let phi = spiral.maxAngle * rng.uniformDouble().squareRoot()
                let p = spiral.point(arm: arm, phi: phi)
                let nx = sd * rng.normal(), ny = sd * rng.normal()
                out[2 * i] = Float(p.x + nx)
                out[2 * i + 1] = Float(p.y + ny)
            }
        case .rings(let radii, let noise):
            let sd = Double(noise)
            for i in 0..<n {
                let k = rng.int(below: radii.count)
                labels?[i] = Int32(k)
                let r = Double(radii[k])
                let a = 2 * Double.pi * rng.uniformDouble()
                let nx = sd * rng.normal(), ny = sd * rng.normal()
                out[2 * i] = Float(r * Foundation.cos(a) + nx)
                out[2 * i + 1] = Float(r * Foundation.sin(a) + ny)
            }
        }
    }

    /// n samples as a `[n, 2]` tensor (same preconditions as ``sample(into:rng:)``).
    public func sample(_ n: Int, rng: inout Random) -> Tensor {
        precondition(n >= 0, "Distribution2D.sample: n must be non-negative, got \(n)")
        return Tensor(shape: [n, 2]) { sample(into: $0, rng: &rng) }
    }

    // MARK: Modes and coverage cells

    /// The mode centres of a Gaussian mixture (every Gaussian case, including the single-mode
    /// ``gaussian(mean:std:)``), in mode order; nil for the continuous shapes (moons,
    /// checkerboard, spirals, rings), whose coverage uses the cell partition of
    /// ``supportCell(_:_:)`` instead. Also nil for an invalid distribution.
    public var modeCenters: [(Float, Float)]? {
        guard validationError() == nil else { return nil }
        switch self {
        case .gaussian(let mean, _):
            return [(mean[0], mean[1])]
        case .gaussianRing(let count, let radius, let std):
            let ring = GaussianRing(count: count, radius: radius, std: std)
            return (0..<count).map(ring.center)
        case .twoGaussians(let separation, _):
            return [(-separation / 2, 0), (separation / 2, 0)]
        case .threeGaussians(let distance, _, let mirrored):
            let d = Double(distance), h = d * 3.0.squareRoot() / 2
            let s: Double = mirrored ? -1 : 1
            return [(Float(h), Float(s * d / 2)), (Float(-h), Float(s * d / 2)), (0, Float(-s * h))]
        case .gaussianMixture(let centers, _):
            return centers.map { ($0[0], $0[1]) }
        case .twoMoons, .checkerboard, .spirals, .rings:
            return nil
        }
    }

    /// The per-mode standard deviation of a Gaussian mixture; nil for the continuous shapes.
    public var modeStd: Float? {
        switch self {
        case .gaussian(_, let std), .gaussianRing(_, _, let std), .twoGaussians(_, let std),
             .threeGaussians(_, let std, _), .gaussianMixture(_, let std):
            return std
        case .twoMoons, .checkerboard, .spirals, .rings:
            return nil
        }
    }

    /// Number of coverage cells: modes for mixtures, ``cellsPerCurve`` per moon, spiral arm or
    /// ring, filled squares for the checkerboard; 0 for an invalid distribution.
    public var supportCellCount: Int {
        guard validationError() == nil else { return 0 }
        switch self {
        case .gaussian: return 1
        case .gaussianRing(let count, _, _): return count
        case .twoGaussians: return 2
        case .threeGaussians: return 3
        case .gaussianMixture(let centers, _): return centers.count
        case .twoMoons, .spirals: return 2 * Distribution2D.cellsPerCurve
        case .rings(let radii, _): return radii.count * Distribution2D.cellsPerCurve
        case .checkerboard(let squares, _): return (squares * squares + 1) / 2
        }
    }

    /// The distance below which a point counts as on the support (mixtures: 3·std; curves:
    /// 3·output noise std, at least 10⁻³ of the shape's size; checkerboard: 0, i.e. inside).
    public var supportTolerance: Double {
        switch self {
        case .gaussian, .gaussianRing, .twoGaussians, .threeGaussians, .gaussianMixture:
            return 3 * Double(modeStd!)
        case .twoMoons(let noise, let scale):
            return Swift.max(3 * Double(noise) * Double(scale), 1e-3 * Double(scale))
        case .spirals(_, let radius, let noise):
            return Swift.max(3 * Double(noise), 1e-3 * Double(radius))
        case .rings(let radii, let noise):
            return Swift.max(3 * Double(noise), 1e-3 * Double(radii.max() ?? 0))
        case .checkerboard:
            return 0
        }
    }

    /// The coverage cell of the point (x, y) and its distance to the support.
    ///
    /// - Mixtures: the distance to the nearest centre (the first on ties); `cell` is that mode
    ///   when the distance is < 3·std.
    /// - Moons, spirals, rings: the distance to the nearest point of the noise-free curves;
    ///   `cell` is `curve · cellsPerCurve + piece` for the piece holding that nearest point when
    ///   the distance is < ``supportTolerance``. Pieces have equal probability mass: equal θ
    ///   ranges on a moon (upper moon first), equal angle quadrants on a ring (from angle 0,
    ///   counter-clockwise; rings in `radii` order), equal ranges of (φ/Φ)² on a spiral arm
    ///   (from the centre outwards; arm 0 first).
    /// - Checkerboard: the distance to the nearest filled square (0 inside); `cell` is the
    ///   filled square that contains the point (numbered row by row from the bottom left).
    ///
    /// For an invalid distribution (``validationError()`` non-nil) the result is
    /// `(nil, .infinity)`.
    public func supportCell(_ x: Float, _ y: Float) -> (cell: Int?, distance: Double) {
        guard let locator = SupportLocator(self) else { return (nil, .infinity) }
        return locator.locate(Double(x), Double(y))
    }

    /// Piece index in 0..<cellsPerCurve of a position u ∈ [0, 1] along a curve.
    static func piece(_ u: Double) -> Int {
        let k = Distribution2D.cellsPerCurve
        guard u.isFinite else { return 0 }
        return Swift.min(k - 1, Swift.max(0, Int((u * Double(k)).rounded(.down))))
    }

    /// Nearest point on the unit half circle of angles [startAngle, startAngle + π] around the
    /// origin to (x, y): θ ∈ [0, π] measured from `startAngle`, and the distance.
    static func halfCircle(_ x: Double, _ y: Double, startAngle: Double) -> (theta: Double, distance: Double) {
        var psi = Foundation.atan2(y, x)  // (−π, π]
        if startAngle < 0 && psi == Double.pi { psi = -Double.pi }
        let theta = psi - startAngle
        if theta >= 0 && theta <= Double.pi {
            return (theta, Swift.abs((x * x + y * y).squareRoot() - 1))
        }
        let e0 = (Foundation.cos(startAngle), Foundation.sin(startAngle))
        let e1 = (-e0.0, -e0.1)
        let d0 = ((x - e0.0) * (x - e0.0) + (y - e0.1) * (y - e0.1)).squareRoot()
        let d1 = ((x - e1.0) * (x - e1.0) + (y - e1.1) * (y - e1.1)).squareRoot()
        return d0 <= d1 ? (0, d0) : (Double.pi, d1)
    }

    // MARK: Codable

    typealias JSONKey = AnyCodingKey

    /// Parameter keys of each kind (besides `kind`).
    static let parameterKeys: [String: [String]] = [
        "gaussian": ["mean", "std"],
        "gaussianRing": ["count", "radius", "std"],
        "twoGaussians": ["separation", "std"],
        "threeGaussians": ["distance", "std", "mirrored"],
        "gaussianMixture": ["centers", "std"],
        "twoMoons": ["noise", "scale"],
        "checkerboard": ["squares", "extent"],
        "spirals": ["turns", "radius", "noise"],
        "rings": ["radii", "noise"],
    ]

    /// Decodes `{"kind": …, parameters…}`; absent or null parameters take their defaults.
    /// Throws `DecodingError` for a missing or unknown `kind`, an unknown key, a missing
    /// `centers` (gaussianMixture) or a value of the wrong type.
    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: JSONKey.self)
        let kindKey = JSONKey("kind")
        guard let kind = try c.decodeIfPresent(String.self, forKey: kindKey) else {
            throw DecodingError.keyNotFound(kindKey, .init(
                codingPath: c.codingPath,
                debugDescription: "missing \"kind\" (one of \(Distribution2D.kinds.joined(separator: ", ")))"))
        }
        guard let allowed = Distribution2D.parameterKeys[kind] else {
            throw DecodingError.dataCorrupted(.init(
                codingPath: c.codingPath + [kindKey],
                debugDescription: "unknown kind \"\(kind)\" (one of \(Distribution2D.kinds.joined(separator: ", ")))"))
        }
        for key in c.allKeys where key.stringValue != "kind" && !allowed.contains(key.stringValue) {
            throw DecodingError.dataCorrupted(.init(
                codingPath: c.codingPath + [key],
                debugDescription: "unknown key \"\(key.stringValue)\" for kind \"\(kind)\" (allowed: \(allowed.joined(separator: ", ")))"))
        }
        func value<T: Decodable>(_ name: String, _ fallback: T) throws -> T {
            try c.decodeIfPresent(T.self, forKey: JSONKey(name)) ?? fallback
        }
        switch kind {
        case "gaussian":
            self = .gaussian(mean: try value("mean", [0, 0]), std: try value("std", 1))
        case "gaussianRing":
            self = .gaussianRing(count: try value("count", 8), radius: try value("radius", 4), std: try value("std", 0.1))
        case "twoGaussians":
            self = .twoGaussians(separation: try value("separation", 8), std: try value("std", 0.5))
        case "threeGaussians":
            self = .threeGaussians(distance: try value("distance", 10), std: try value("std", Float(0.3).squareRoot()),
                                   mirrored: try value("mirrored", false))
        case "gaussianMixture":
            guard let centers = try c.decodeIfPresent([[Float]].self, forKey: JSONKey("centers")) else {
                throw DecodingError.keyNotFound(JSONKey("centers"), .init(
                    codingPath: c.codingPath, debugDescription: "gaussianMixture requires \"centers\": [[x, y], …]"))
            }
            self = .gaussianMixture(centers: centers, std: try value("std", 0.1))
        case "twoMoons":
            self = .twoMoons(noise: try value("noise", 0.05), scale: try value("scale", 3))
        case "checkerboard":
            self = .checkerboard(squares: try value("squares", 4), extent: try value("extent", 4))
        case "spirals":
            self = .spirals(turns: try value("turns", 1.5), radius: try value("radius", 4), noise: try value("noise", 0.1))
        default:  // "rings" (parameterKeys lists exactly the kinds handled here)
            self = .rings(radii: try value("radii", [2, 4]), noise: try value("noise", 0.1))
        }
    }

    /// Encodes `kind` and every parameter.
    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: JSONKey.self)
        try c.encode(kind, forKey: JSONKey("kind"))
        func put<T: Encodable>(_ name: String, _ v: T) throws { try c.encode(v, forKey: JSONKey(name)) }
        switch self {
        case .gaussian(let mean, let std): try put("mean", mean); try put("std", std)
        case .gaussianRing(let count, let radius, let std): try put("count", count); try put("radius", radius); try put("std", std)
        case .twoGaussians(let separation, let std): try put("separation", separation); try put("std", std)
        case .threeGaussians(let distance, let std, let mirrored):
            try put("distance", distance); try put("std", std); try put("mirrored", mirrored)
        case .gaussianMixture(let centers, let std): try put("centers", centers); try put("std", std)
        case .twoMoons(let noise, let scale): try put("noise", noise); try put("scale", scale)
        case .checkerboard(let squares, let extent): try put("squares", squares); try put("extent", extent)
        case .spirals(let turns, let radius, let noise): try put("turns", turns); try put("radius", radius); try put("noise", noise)
        case .rings(let radii, let noise): try put("radii", radii); try put("noise", noise)
        }
    }
}

// MARK: - Geometry helpers

/// The support geometry of a valid ``Distribution2D``, precomputed once for many points.
struct SupportLocator {
    /// Within the support: strictly closer than the tolerance, or exactly on a zero-width support.
    @inline(__always) func inside(_ d: Double) -> Bool { d < tolerance || (tolerance == 0 && d == 0) }

    enum Shape {
        case modes([(Double, Double)])
        case moons(scale: Double)
        case rings([Double])
        case spirals(Spiral)
        case board(Checkerboard)
    }
    let shape: Shape
    let tolerance: Double

    /// nil when the distribution is invalid.
    init?(_ d: Distribution2D) {
        guard d.validationError() == nil else { return nil }
        tolerance = d.supportTolerance
        switch d {
        case .gaussian, .gaussianRing, .twoGaussians, .threeGaussians, .gaussianMixture:
            shape = .modes(d.modeCenters!.map { (Double($0.0), Double($0.1)) })
        case .twoMoons(_, let scale): shape = .moons(scale: Double(scale))
        case .rings(let radii, _): shape = .rings(radii.map(Double.init))
        case .spirals(let turns, let radius, _): shape = .spirals(Spiral(turns: turns, radius: radius))
        case .checkerboard(let squares, let extent): shape = .board(Checkerboard(squares: squares, extent: extent))
        }
    }

    func locate(_ px: Double, _ py: Double) -> (cell: Int?, distance: Double) {
        guard px.isFinite && py.isFinite else { return (nil, .infinity) }
        let perCurve = Distribution2D.cellsPerCurve
        switch shape {
        case .modes(let centers):
            let (best, d) = nearestCenter(px, py, centers)
            return (inside(d) ? best : nil, d)
        case .moons(let s):
            let qx = px / s + 0.5, qy = py / s + 0.25
            let upper = Distribution2D.halfCircle(qx, qy, startAngle: 0)
            let lower = Distribution2D.halfCircle(qx - 1, qy - 0.5, startAngle: -Double.pi)
            let (moon, hit) = lower.distance < upper.distance ? (1, lower) : (0, upper)
            let d = hit.distance * s
            return (inside(d) ? moon * perCurve + Distribution2D.piece(hit.theta / Double.pi) : nil, d)
        case .rings(let radii):
            let rho = (px * px + py * py).squareRoot()
            var best = 0, bestD = Double.infinity
            for (k, r) in radii.enumerated() {
                let d = Swift.abs(rho - r)
                if d < bestD { bestD = d; best = k }
            }
            var a = Foundation.atan2(py, px)
            if a < 0 { a += 2 * Double.pi }
            return (inside(bestD) ? best * perCurve + Distribution2D.piece(a / (2 * Double.pi)) : nil, bestD)
        case .spirals(let spiral):
            let (arm, phi, d) = spiral.nearest(px, py)
            let u = phi / spiral.maxAngle
            return (inside(d) ? arm * perCurve + Distribution2D.piece(u * u) : nil, d)
        case .board(let board):
            return board.locate(px, py)
        }
    }
}

/// Checkerboard geometry: `squares` per side on [−extent, extent]²; square (i, j) is filled
/// when i + j is even; filled squares are numbered row by row (j, then i) from the bottom left.
struct Checkerboard {
    let squares: Int
    let extent: Double
    let side: Double

    init(squares: Int, extent: Float) {
        self.squares = squares
        self.extent = Double(extent)
        side = 2 * Double(extent) / Double(squares)
    }

    /// Number of filled squares.
    var filledCount: Int { (squares * squares + 1) / 2 }

    /// Filled squares in rows 0..<row (even rows hold ⌈k/2⌉, odd rows ⌊k/2⌋).
    func filledBelow(_ row: Int) -> Int { (row + 1) / 2 * ((squares + 1) / 2) + row / 2 * (squares / 2) }

    /// (column, row) of filled square `index`.
    func square(_ index: Int) -> (Int, Int) {
        // Rows come in pairs (even, odd) holding `squares` filled squares together.
        let pair = index / squares, rest = index % squares
        let evenCount = (squares + 1) / 2
        if rest < evenCount { return (2 * rest, 2 * pair) }
        return (2 * (rest - evenCount) + 1, 2 * pair + 1)
    }

    /// Index of filled square (col, row) (which must be filled).
    func index(col: Int, row: Int) -> Int { filledBelow(row) + col / 2 }

    /// The containing filled square (closed squares) and the distance to the nearest filled square.
    func locate(_ x: Double, _ y: Double) -> (cell: Int?, distance: Double) {
        let col = Int(Swift.max(-1, Swift.min(Double(squares), ((x + extent) / side).rounded(.down))))
        let row = Int(Swift.max(-1, Swift.min(Double(squares), ((y + extent) / side).rounded(.down))))
        if col >= 0 && col < squares && row >= 0 && row < squares && (col + row) % 2 == 0 {
            return (index(col: col, row: row), 0)
        }
        var best = Double.infinity, bestIndex = 0
        for k in 0..<filledCount {
            let (i, j) = square(k)
            let x0 = -extent + Double(i) * side, y0 = -extent + Double(j) * side
            let dx = Swift.max(x0 - x, 0, x - (x0 + side)), dy = Swift.max(y0 - y, 0, y - (y0 + side))
            let d = (dx * dx + dy * dy).squareRoot()
            if d < best { best = d; bestIndex = k }
        }
        return (best == 0 ? bestIndex : nil, best)
    }
}

/// Two-arm Archimedean spiral geometry (see ``Distribution2D/spirals(turns:radius:noise:)``).
struct Spiral {
    /// Φ = 2π·turns.
    let maxAngle: Double
    /// r = c·φ with c = radius/Φ.
    let c: Double

    init(turns: Float, radius: Float) {
        maxAngle = 2 * Double.pi * Double(turns)
        c = Double(radius) / maxAngle
    }

    /// Arm a's angular offset β: the point is c·φ·(cos(β − φ), sin(β − φ)), β = π for arm 0
    /// (= c·φ·(−cos φ, sin φ)) and 0 for arm 1.
    @inline(__always) func beta(_ arm: Int) -> Double { arm == 0 ? Double.pi : 0 }

    func point(arm: Int, phi: Double) -> (x: Double, y: Double) {
        let a = beta(arm) - phi
        return (c * phi * Foundation.cos(a), c * phi * Foundation.sin(a))
    }

    /// Nearest point over both arms: (arm, φ, distance). Candidates are the radial matches
    /// (φ ≡ β − angle(p) mod 2π near |p|/c) refined by Newton's method on the squared
    /// distance, and the endpoints φ = 0 and φ = Φ.
    func nearest(_ px: Double, _ py: Double) -> (arm: Int, phi: Double, distance: Double) {
        var best = (arm: 0, phi: 0.0, distance: (px * px + py * py).squareRoot())  // the centre, φ = 0
        let rho = (px * px + py * py).squareRoot()
        let alpha = Foundation.atan2(py, px)
        func consider(_ arm: Int, _ phi: Double) {
            let p = point(arm: arm, phi: phi)
            let d = ((p.x - px) * (p.x - px) + (p.y - py) * (p.y - py)).squareRoot()
            if d < best.distance { best = (arm, phi, d) }
        }
        for arm in 0..<2 {
            consider(arm, maxAngle)
            var phi0 = (beta(arm) - alpha).truncatingRemainder(dividingBy: 2 * Double.pi)
            if phi0 < 0 { phi0 += 2 * Double.pi }
            // The turn whose radius matches |p|, clamped to the turns that exist (points beyond
            // the outer end are nearest to the outermost turn or the end point).
            let jMax = Swift.max(0, ((maxAngle - phi0) / (2 * Double.pi)).rounded(.down))
            let jRadial = ((rho / c - phi0) / (2 * Double.pi)).rounded()
            guard jRadial.isFinite && jMax.isFinite else { continue }
            let jStar = Swift.min(Swift.max(jRadial, 0), jMax)
            for dj in -1...1 {
                let phi = phi0 + 2 * Double.pi * (jStar + Double(dj))
                if phi < -Double.pi || phi > maxAngle + Double.pi { continue }
                consider(arm, refine(arm: arm, phi: Swift.min(Swift.max(phi, 0), maxAngle), px, py))
            }
        }
        return best
    }

    /// Newton iterations on g(φ) = ½‖γ(φ) − p‖², clamped to [0, Φ].
    func refine(arm: Int, phi start: Double, _ px: Double, _ py: Double) -> Double {
        var phi = start
        for _ in 0..<8 {
            let a = beta(arm) - phi
            let (ca, sa) = (Foundation.cos(a), Foundation.sin(a))
            let gx = c * phi * ca - px, gy = c * phi * sa - py               // γ − p
            let d1x = c * ca + c * phi * sa, d1y = c * sa - c * phi * ca      // γ'
            let d2x = 2 * c * sa - c * phi * ca, d2y = -2 * c * ca - c * phi * sa  // γ''
            let g1 = gx * d1x + gy * d1y
            let g2 = d1x * d1x + d1y * d1y + gx * d2x + gy * d2y
            guard g2 > 0 else { break }
            let step = Swift.max(-0.5, Swift.min(0.5, g1 / g2))
            let next = Swift.min(Swift.max(phi - step, 0), maxAngle)
            if Swift.abs(next - phi) < 1e-13 { phi = next; break }
            phi = next
        }
        return phi
    }
}

/// Index of the centre nearest to (x, y) and the Euclidean distance to it (centres non-empty).
func nearestCenter(_ x: Double, _ y: Double, _ centers: [(Double, Double)]) -> (index: Int, distance: Double) {
    var best = 0, bestD2 = Double.infinity
    for (k, c) in centers.enumerated() {
        let dx = x - c.0, dy = y - c.1
        let d2 = dx * dx + dy * dy
        if d2 < bestD2 { bestD2 = d2; best = k }
    }
    return (best, bestD2.squareRoot())
}
