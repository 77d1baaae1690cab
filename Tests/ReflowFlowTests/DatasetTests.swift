import Foundation
import Testing
import ReflowEngine
@testable import ReflowFlow
import ReflowTestSupport

// MARK: - Helpers

/// Mean and (population) std of column c of an [n, 2] tensor, in Double.
private func columnStats(_ t: Tensor, _ c: Int, rows: [Int]? = nil) -> (mean: Double, std: Double) {
    let idx = rows ?? Array(0..<t.shape[0])
    var s = 0.0, s2 = 0.0
    for r in idx { let v = Double(t.data[2 * r + c]); s += v; s2 += v * v }
    let m = s / Double(idx.count)
    return (m, (s2 / Double(idx.count) - m * m).squareRoot())
}

/// Rows grouped by nearest centre.
private func groupByNearest(_ t: Tensor, _ centers: [(Float, Float)]) -> [[Int]] {
    var groups = [[Int]](repeating: [], count: centers.count)
    for r in 0..<t.shape[0] {
        let x = t.data[2 * r], y = t.data[2 * r + 1]
        var best = 0, bd = Float.infinity
        for (k, c) in centers.enumerated() {
            let d = (x - c.0) * (x - c.0) + (y - c.1) * (y - c.1)
            if d < bd { bd = d; best = k }
        }
        groups[best].append(r)
    }
    return groups
}

private func cellCounts(_ d: Distribution2D, _ t: Tensor) -> (counts: [Int], off: Int, maxDistance: Double) {
    var counts = [Int](repeating: 0, count: d.supportCellCount), off = 0, maxD = 0.0
    for r in 0..<t.shape[0] {
        let (cell, dist) = d.supportCell(t.data[2 * r], t.data[2 * r + 1])
        maxD = max(maxD, dist)
        if let cell { counts[cell] += 1 } else { off += 1 }
    }
    return (counts, off, maxD)
}

private func decode(_ json: String) throws -> Distribution2D {
    try JSONDecoder().decode(Distribution2D.self, from: Data(json.utf8))
}

private func encodeDecode(_ d: Distribution2D) throws -> Distribution2D {
    try JSONDecoder().decode(Distribution2D.self, from: JSONEncoder().encode(d))
}

/// Every kind with its defaults (gaussianMixture with explicit centres).
private let defaultDistributions: [Distribution2D] = [
    .gaussian(), .gaussianRing(), .twoGaussians(), .threeGaussians(), .gaussianMixture(centers: [[-2, 0], [2, 1]]),
    .twoMoons(), .checkerboard(), .spirals(), .rings(),
]

/// A fresh temporary directory (removed by the caller).
private func temporaryDirectory() throws -> URL {
    let url = FileManager.default.temporaryDirectory.appendingPathComponent("reflowd-datasets-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    return url
}

// MARK: - Distributions

@Suite("Distribution2D")
struct DistributionTests {
    @Test("every default distribution is valid, and kinds list every case")
    func defaultsValid() {
        for d in defaultDistributions { #expect(d.validationError() == nil, "\(d)") }
        #expect(defaultDistributions.map(\.kind) == Distribution2D.kinds)
    }

    @Test("default gaussian draws exactly rng.normal([n, 2]); shifted gaussian has the right moments")
    func gaussian() {
        var r1 = Random(seed: 11), r2 = Random(seed: 11)
        expectBitwiseEqual(Distribution2D.gaussian().sample(1000, rng: &r1), r2.normal([1000, 2]))
        var rng = Random(seed: 12)
        let t = Distribution2D.gaussian(mean: [3, -2], std: 0.5).sample(40_000, rng: &rng)
        let (mx, sx) = columnStats(t, 0), (my, sy) = columnStats(t, 1)
        #expect(abs(mx - 3) < 0.01 && abs(my + 2) < 0.01, "mean \(mx), \(my)")
        #expect(abs(sx - 0.5) < 0.01 && abs(sy - 0.5) < 0.01, "std \(sx), \(sy)")
    }

    @Test("gaussianRing draws exactly what GaussianRing draws")
    func ringMatchesGaussianRing() {
        for (count, radius, std) in [(8, Float(4), Float(0.1)), (5, 2, 0.3)] {
            var r1 = Random(seed: 5), r2 = Random(seed: 5)
            let a = Distribution2D.gaussianRing(count: count, radius: radius, std: std).sample(777, rng: &r1)
            let b = GaussianRing(count: count, radius: radius, std: std).sample(777, rng: &r2)
            expectBitwiseEqual(a, b)
            let centers = Distribution2D.gaussianRing(count: count, radius: radius, std: std).modeCenters!
            for k in 0..<count {
                let c = GaussianRing(count: count, radius: radius, std: std).center(k)
                #expect(centers[k].0 == c.0 && centers[k].1 == c.1)
            }
        }
    }

    @Test("mixtures: balanced modes at the documented centres with the documented std",
          arguments: [Distribution2D.gaussianRing(), .twoGaussians(), .twoGaussians(separation: 3, std: 0.2),
                      .threeGaussians(), .threeGaussians(mirrored: true),
                      .gaussianMixture(centers: [[-5, -5], [0, 6], [7, 1], [2, -3]], std: 0.3), .gaussian(mean: [1, 1], std: 2)])
    func mixtureStatistics(_ d: Distribution2D) {
        var rng = Random(seed: 21)
        let n = 40_000
        let t = d.sample(n, rng: &rng)
        let centers = d.modeCenters!, std = Double(d.modeStd!)
        #expect(centers.count == d.supportCellCount)
        let groups = groupByNearest(t, centers)
        for (k, rows) in groups.enumerated() {
            let share = Double(rows.count) / Double(n)
            #expect(abs(share - 1 / Double(centers.count)) < 0.015, "\(d.kind) mode \(k) share \(share)")
            let (mx, sx) = columnStats(t, 0, rows: rows), (my, sy) = columnStats(t, 1, rows: rows)
            let tol = 0.05 * std + 1e-3
            #expect(abs(mx - Double(centers[k].0)) < tol && abs(my - Double(centers[k].1)) < tol,
                    "\(d.kind) mode \(k) mean (\(mx), \(my)) vs \(centers[k])")
            #expect(abs(sx / std - 1) < 0.05 && abs(sy / std - 1) < 0.05, "\(d.kind) mode \(k) std \(sx), \(sy) vs \(std)")
        }
    }

    @Test("threeGaussians has the Colab's centres and variance 0.3")
    func colabCentres() {
        let h = Float(5 * 3.0.squareRoot())
        let up = Distribution2D.threeGaussians().modeCenters!, down = Distribution2D.threeGaussians(mirrored: true).modeCenters!
        let expectedUp: [(Float, Float)] = [(h, 5), (-h, 5), (0, -h)], expectedDown: [(Float, Float)] = [(h, -5), (-h, -5), (0, h)]
        for k in 0..<3 {
            #expect(abs(up[k].0 - expectedUp[k].0) < 1e-5 && abs(up[k].1 - expectedUp[k].1) < 1e-5)
            #expect(abs(down[k].0 - expectedDown[k].0) < 1e-5 && abs(down[k].1 - expectedDown[k].1) < 1e-5)
        }
        let s = Distribution2D.threeGaussians().modeStd!
        #expect(abs(s * s - 0.3) < 1e-6)
    }

    @Test("twoMoons: centred, sklearn geometry, balanced moons and pieces, within 3σ of the arcs")
    func twoMoons() {
        var rng = Random(seed: 31)
        let n = 40_000
        let d = Distribution2D.twoMoons()
        let t = d.sample(n, rng: &rng)
        let (mx, _) = columnStats(t, 0), (my, _) = columnStats(t, 1)
        #expect(abs(mx) < 0.03 && abs(my) < 0.03, "mean \(mx), \(my)")
        // Noise 0.05 · scale 3 = 0.15; the noise-free shape spans x ∈ [−4.5, 4.5], y ∈ [−2.25, 2.25].
        for r in 0..<n {
            #expect(abs(t.data[2 * r]) < 4.5 + 6 * 0.15 && abs(t.data[2 * r + 1]) < 2.25 + 6 * 0.15)
        }
        let (counts, off, _) = cellCounts(d, t)
        #expect(Double(off) / Double(n) < 0.01, "off support \(off)")
        for (k, c) in counts.enumerated() { #expect(abs(Double(c) / Double(n) - 0.125) < 0.01, "cell \(k): \(c)") }
        // Noise-free moons lie on the arcs.
        var r2 = Random(seed: 32)
        let clean = Distribution2D.twoMoons(noise: 0, scale: 2)
        let c = clean.sample(5000, rng: &r2)
        let (cc, coff, maxD) = cellCounts(clean, c)
        #expect(coff == 0 && maxD < 1e-5, "max distance \(maxD)")
        #expect(cc.allSatisfy { $0 > 500 })
        // Hand-placed points: the tips and tops of both moons (unit shape shifted by −(½, ¼), scaled by 2).
        func at(_ ux: Double, _ uy: Double) -> (Int?, Double) {
            let r = clean.supportCell(Float((ux - 0.5) * 2), Float((uy - 0.25) * 2))
            return (r.cell, r.distance)
        }
        #expect(at(1, 0).0 == 0 && at(0.5403023058681398, 0.8414709848078965).0 == 1 && at(0, 1).0 == 2 && at(-1, 0).0 == 3)  // upper moon
        #expect(at(0, 0.5).0 == 4 && at(1, -0.5).0 == 6 && at(2, 0.5).0 == 7)                  // lower moon
        #expect(abs(at(0.5, 0.25).1 - 2 * (1 - (0.25 * 0.25 + 0.5 * 0.5).squareRoot())) < 1e-6)  // centre → upper arc
    }

    @Test("checkerboard: uniform on the filled squares of [−4, 4]², balanced squares")
    func checkerboard() {
        var rng = Random(seed: 41)
        let n = 40_000
        let d = Distribution2D.checkerboard()
        let t = d.sample(n, rng: &rng)
        #expect(d.supportCellCount == 8)
        for r in 0..<n {
            let x = t.data[2 * r], y = t.data[2 * r + 1]
            #expect(x >= -4 && x <= 4 && y >= -4 && y <= 4)
            let i = Int(((x + 4) / 2).rounded(.down)), j = Int(((y + 4) / 2).rounded(.down))
            #expect((i + j) % 2 == 0, "point (\(x), \(y)) in an empty square")
        }
        let (counts, off, maxD) = cellCounts(d, t)
        #expect(off == 0 && maxD == 0)
        for c in counts { #expect(abs(Double(c) / Double(n) - 0.125) < 0.01) }
        let (mx, sx) = columnStats(t, 0), (my, _) = columnStats(t, 1)
        #expect(abs(mx) < 0.05 && abs(my) < 0.05)
        #expect(abs(sx - (64.0 / 12).squareRoot()) < 0.03, "x std \(sx) vs uniform on [−4, 4]")
        // Empty squares and the outside are off the support, with the right distances.
        #expect(d.supportCell(-1, -3).cell == nil && d.supportCell(-1, -3).distance == 1)
        #expect(d.supportCell(-1.5, -3).cell == nil && abs(d.supportCell(-1.5, -3).distance - 0.5) < 1e-12)
        #expect(d.supportCell(5, -1).cell == nil && abs(d.supportCell(5, -1).distance - 1) < 1e-12)
        #expect(d.supportCell(5, -3.5).cell == nil && abs(d.supportCell(5, -3.5).distance - (3.25 as Double).squareRoot()) < 1e-6)
        #expect(d.supportCell(-3, -3).cell == 0 && d.supportCell(3, 3).cell == 7 && d.supportCell(1, -3).cell == 1)
        // Index ↔ square mapping for odd and even boards.
        for k in 1...9 {
            let b = Checkerboard(squares: k, extent: 1)
            #expect(b.filledCount == Distribution2D.checkerboard(squares: k).supportCellCount)
            var seen = Set<Int>()
            for idx in 0..<b.filledCount {
                let (i, j) = b.square(idx)
                #expect(i >= 0 && i < k && j >= 0 && j < k && (i + j) % 2 == 0)
                #expect(b.index(col: i, row: j) == idx)
                seen.insert(j * k + i)
            }
            #expect(seen.count == b.filledCount)
        }
    }

    @Test("spirals: two arms of the documented radius, equal-mass pieces, near the curve")
    func spirals() {
        var rng = Random(seed: 51)
        let n = 40_000
        let clean = Distribution2D.spirals(noise: 0)
        let t = clean.sample(n, rng: &rng)
        let (counts, off, maxD) = cellCounts(clean, t)
        #expect(off == 0 && maxD < 1e-4, "max distance to the curve \(maxD)")
        for (k, c) in counts.enumerated() { #expect(abs(Double(c) / Double(n) - 0.125) < 0.01, "cell \(k): \(c)") }
        for r in 0..<n {
            let x = Double(t.data[2 * r]), y = Double(t.data[2 * r + 1])
            #expect((x * x + y * y).squareRoot() <= 4 + 1e-5)
        }
        // The arms are point reflections of each other: the mean is ≈ 0.
        let (mx, _) = columnStats(t, 0), (my, _) = columnStats(t, 1)
        #expect(abs(mx) < 0.05 && abs(my) < 0.05)
        var r2 = Random(seed: 52)
        let noisy = Distribution2D.spirals()
        let (_, noff, _) = cellCounts(noisy, noisy.sample(20_000, rng: &r2))
        #expect(Double(noff) / 20_000 < 0.02, "off support \(noff)")
    }

    @Test("Spiral.nearest agrees with a dense polyline", arguments: [(Float(1.5), Float(4)), (3, 2), (0.4, 1)])
    func spiralNearest(_ turns: Float, _ radius: Float) {
        let s = Spiral(turns: turns, radius: radius)
        let m = 20_000
        var poly = [(Double, Double)]()
        for arm in 0..<2 { for k in 0...m { poly.append(s.point(arm: arm, phi: s.maxAngle * Double(k) / Double(m))) } }
        let spacing = s.c * s.maxAngle * s.maxAngle / Double(m) * 1.1 + 1e-9  // ≥ the longest polyline edge
        var rng = Random(seed: 53)
        for _ in 0..<300 {
            let px = Double(rng.uniformFloat() * 2 - 1) * Double(radius) * 1.3
            let py = Double(rng.uniformFloat() * 2 - 1) * Double(radius) * 1.3
            let got = s.nearest(px, py)
            var brute = Double.infinity
            for p in poly { brute = min(brute, ((p.0 - px) * (p.0 - px) + (p.1 - py) * (p.1 - py)).squareRoot()) }
            #expect(got.distance <= brute + 1e-9, "(\(px), \(py)): \(got.distance) > polyline \(brute)")
            #expect(got.distance >= brute - spacing, "(\(px), \(py)): \(got.distance) ≪ polyline \(brute)")
            let q = s.point(arm: got.arm, phi: got.phi)
            #expect(abs(((q.0 - px) * (q.0 - px) + (q.1 - py) * (q.1 - py)).squareRoot() - got.distance) < 1e-9)
        }
    }

    @Test("rings: points on the radii, balanced rings and quadrants")
    func rings() {
        var rng = Random(seed: 61)
        let n = 40_000
        let clean = Distribution2D.rings(radii: [1, 2.5, 4], noise: 0)
        let t = clean.sample(n, rng: &rng)
        var perRing = [0, 0, 0]
        for r in 0..<n {
            let x = Double(t.data[2 * r]), y = Double(t.data[2 * r + 1])
            let rho = (x * x + y * y).squareRoot()
            let k = [1.0, 2.5, 4].firstIndex { abs($0 - rho) < 1e-5 }
            #expect(k != nil, "radius \(rho)")
            if let k { perRing[k] += 1 }
        }
        for c in perRing { #expect(abs(Double(c) / Double(n) - 1.0 / 3) < 0.015) }
        let (counts, off, _) = cellCounts(clean, t)
        #expect(off == 0 && counts.count == 12)
        for c in counts { #expect(abs(Double(c) / Double(n) - 1.0 / 12) < 0.008) }
        #expect(clean.supportCell(0, 2.5).cell == 5 && clean.supportCell(-4, -0.001).cell == 10)
        var r2 = Random(seed: 62)
        let noisy = Distribution2D.rings()
        let s = noisy.sample(n, rng: &r2)
        let (mx, _) = columnStats(s, 0), (my, _) = columnStats(s, 1)
        #expect(abs(mx) < 0.05 && abs(my) < 0.05)
        let (_, noff, _) = cellCounts(noisy, s)
        #expect(Double(noff) / Double(n) < 0.01)
    }

    @Test("sampling is deterministic given the RNG, and sample(into:) equals sample(_:)")
    func deterministic() {
        for d in defaultDistributions {
            var r1 = Random(seed: 71), r2 = Random(seed: 71), r3 = Random(seed: 72), r4 = Random(seed: 71)
            let a = d.sample(300, rng: &r1), b = d.sample(300, rng: &r2), c = d.sample(300, rng: &r3)
            expectBitwiseEqual(a, b, d.kind)
            #expect(!bitwiseEqual(a, c), "\(d.kind): different seeds")
            var buffer = [Float](repeating: 0, count: 600)
            buffer.withUnsafeMutableBufferPointer { d.sample(into: $0, rng: &r4) }
            #expect(buffer == a.data, "\(d.kind)")
            #expect(r1.state == r4.state)
            #expect(a.data.allSatisfy { $0.isFinite })
        }
    }

    @Test("mixture support cells are nearest modes within 3 std; continuous shapes have no modeCenters")
    func modesAndCells() {
        let d = Distribution2D.twoGaussians(separation: 10, std: 1)
        #expect(d.supportCell(-5, 0).cell == 0 && d.supportCell(5, 2.9).cell == 1)
        #expect(d.supportCell(5, 3).cell == nil && d.supportCell(5, 3).distance == 3)
        #expect(d.supportCell(0, 0).cell == nil)
        for c in [Distribution2D.twoMoons(), .checkerboard(), .spirals(), .rings()] {
            #expect(c.modeCenters == nil && c.modeStd == nil)
        }
        // Invalid distributions and non-finite points never trap.
        #expect(Distribution2D.rings(radii: []).supportCell(0, 0).cell == nil)
        #expect(Distribution2D.gaussianRing(count: -3).supportCell(1, 1).distance == .infinity)
        #expect(Distribution2D.twoMoons().supportCell(.nan, 0).cell == nil)
        #expect(Distribution2D.gaussianRing(count: 1 << 40).modeCenters == nil)
        #expect(Distribution2D.checkerboard(squares: 1 << 40).supportCellCount == 0)
        #expect(Distribution2D.gaussian(mean: [1]).modeCenters == nil)
    }
}

// MARK: - JSON

@Suite("Distribution2D JSON")
struct DistributionJSONTests {
    @Test("round trip of every kind, with defaults and with custom parameters")
    func roundTrip() throws {
        let custom: [Distribution2D] = [
            .gaussian(mean: [1.5, -2], std: 0.25), .gaussianRing(count: 5, radius: 2.5, std: 0.2),
            .twoGaussians(separation: 3, std: 0.1), .threeGaussians(distance: 6, std: 0.7, mirrored: true),
            .gaussianMixture(centers: [[0, 0], [1, 2], [-3, 0.5]], std: 0.05), .twoMoons(noise: 0.2, scale: 1),
            .checkerboard(squares: 6, extent: 3), .spirals(turns: 2.25, radius: 5, noise: 0),
            .rings(radii: [1, 3, 5.5], noise: 0.02),
        ]
        for d in defaultDistributions + custom { #expect(try encodeDecode(d) == d, "\(d)") }
        let json = String(decoding: try JSONEncoder().encode(Distribution2D.twoMoons()), as: UTF8.self)
        #expect(json.contains("\"kind\":\"twoMoons\"") && json.contains("\"noise\"") && json.contains("\"scale\""))
    }

    @Test("{\"kind\": k} alone decodes to the case's documented defaults")
    func defaultsFromKindOnly() throws {
        for d in defaultDistributions where d.kind != "gaussianMixture" {
            #expect(try decode("{\"kind\": \"\(d.kind)\"}") == d, "\(d.kind)")
        }
        #expect(try decode(#"{"kind": "gaussianMixture", "centers": [[-2, 0], [2, 1]]}"#)
                == .gaussianMixture(centers: [[-2, 0], [2, 1]], std: 0.1))
    }

    @Test("partial objects keep the other defaults; null means default")
    func partial() throws {
        #expect(try decode(#"{"kind": "gaussianRing", "radius": 2}"#) == .gaussianRing(count: 8, radius: 2, std: 0.1))
        #expect(try decode(#"{"kind": "twoMoons", "scale": 1, "noise": null}"#) == .twoMoons(noise: 0.05, scale: 1))
        #expect(try decode(#"{"kind": "threeGaussians", "mirrored": true}"#) == .threeGaussians(mirrored: true))
        #expect(try decode(#"{"kind": "rings", "radii": [1]}"#) == .rings(radii: [1], noise: 0.1))
        #expect(try decode(#"{"kind": "gaussian", "std": 2}"#) == .gaussian(mean: [0, 0], std: 2))
        #expect(try decode(#"{"squares": 8, "kind": "checkerboard"}"#) == .checkerboard(squares: 8, extent: 4))
    }

    @Test("decoding errors name the key: missing kind, unknown kind, unknown key, wrong type, missing centres")
    func decodingErrors() {
        func path(_ json: String) -> (String, [String])? {
            do { _ = try decode(json); return nil } catch let e as DecodingError {
                switch e {
                case .keyNotFound(let k, let ctx): return ("keyNotFound", (ctx.codingPath + [k]).map(\.stringValue))
                case .dataCorrupted(let ctx): return ("dataCorrupted", ctx.codingPath.map(\.stringValue))
                case .typeMismatch(_, let ctx): return ("typeMismatch", ctx.codingPath.map(\.stringValue))
                case .valueNotFound(_, let ctx): return ("valueNotFound", ctx.codingPath.map(\.stringValue))
                @unknown default: return ("other", [])
                }
            } catch { return ("other", []) }
        }
        #expect(path(#"{}"#)! == ("keyNotFound", ["kind"]))
        #expect(path(#"{"radius": 3}"#)! == ("keyNotFound", ["kind"]))
        #expect(path(#"{"kind": "banana"}"#)! == ("dataCorrupted", ["kind"]))
        #expect(path(#"{"kind": "gaussianRing", "radious": 3}"#)! == ("dataCorrupted", ["radious"]))
        #expect(path(#"{"kind": "twoMoons", "std": 3}"#)! == ("dataCorrupted", ["std"]))
        #expect(path(#"{"kind": "gaussianRing", "count": "eight"}"#)! == ("typeMismatch", ["count"]))
        #expect(path(#"{"kind": "gaussian", "mean": [0, "x"]}"#)?.1.first == "mean")
        #expect(path(#"{"kind": "gaussianMixture", "std": 1}"#)! == ("keyNotFound", ["centers"]))
        #expect(path(#"{"kind": 3}"#)!.0 == "typeMismatch")
        #expect(path(#"[1, 2]"#) != nil)
        #expect(path(#"{"data": {"kind": "spirals", "turns": true}}"#) != nil)
    }
}

// MARK: - Validation

@Suite("Distribution2D validation")
struct DistributionValidationTests {
    static let cases: [(Distribution2D, String)] = [
        (.gaussian(mean: [0]), "/mean"),
        (.gaussian(mean: [0, 1, 2]), "/mean"),
        (.gaussian(mean: [0, .nan]), "/mean/1"),
        (.gaussian(mean: [2e6, 0]), "/mean/0"),
        (.gaussian(std: -1), "/std"),
        (.gaussian(std: .infinity), "/std"),
        (.gaussianRing(count: 0), "/count"),
        (.gaussianRing(count: 10_001), "/count"),
        (.gaussianRing(radius: -1), "/radius"),
        (.gaussianRing(radius: 1e7), "/radius"),
        (.gaussianRing(std: .nan), "/std"),
        (.twoGaussians(separation: .infinity), "/separation"),
        (.twoGaussians(std: -0.5), "/std"),
        (.threeGaussians(distance: -1), "/distance"),
        (.threeGaussians(std: -0.1), "/std"),
        (.gaussianMixture(centers: []), "/centers"),
        (.gaussianMixture(centers: [[0, 0], [1]]), "/centers/1"),
        (.gaussianMixture(centers: [[0, 0], [1, 2e7]]), "/centers/1/1"),
        (.gaussianMixture(centers: [[0, 0]], std: -2), "/std"),
        (.twoMoons(noise: -1), "/noise"),
        (.twoMoons(scale: 0), "/scale"),
        (.checkerboard(squares: 0), "/squares"),
        (.checkerboard(squares: 65), "/squares"),
        (.checkerboard(extent: 0), "/extent"),
        (.spirals(turns: 0), "/turns"),
        (.spirals(turns: 101), "/turns"),
        (.spirals(radius: -1), "/radius"),
        (.spirals(noise: .nan), "/noise"),
        (.rings(radii: []), "/radii"),
        (.rings(radii: [1, 0]), "/radii/1"),
        (.rings(noise: -0.1), "/noise"),
    ]

    @Test("invalid parameters give the right pointer and a message")
    func pointers() {
        for (d, pointer) in Self.cases {
            let e = d.validationError()
            #expect(e?.pointer == pointer, "\(d): \(String(describing: e))")
            #expect(e.map { !$0.message.isEmpty } ?? false)
        }
    }

    @Test("decoded but invalid JSON is caught by validation, not by a trap")
    func decodedThenValidated() throws {
        #expect(try decode(#"{"kind": "gaussian", "mean": [1, 2, 3]}"#).validationError()?.pointer == "/mean")
        #expect(try decode(#"{"kind": "gaussianRing", "count": -4}"#).validationError()?.pointer == "/count")
        #expect(try decode(#"{"kind": "checkerboard", "squares": 100000000}"#).validationError()?.pointer == "/squares")
        #expect(try decode(#"{"kind": "rings", "radii": [2, -1]}"#).validationError()?.pointer == "/radii/1")
        #expect(try decode(#"{"kind": "gaussianMixture", "centers": [[1, 2, 3]]}"#).validationError()?.pointer == "/centers/0")
    }
}

// MARK: - Point files

/// Asserts that `body` throws a PointFileError whose message contains `fragment` (and, if given,
/// at `line` / `byte`).
private func expectPointError(_ fragment: String, line: Int? = nil, byte: Int? = nil,
                              sourceLocation: SourceLocation = #_sourceLocation,
                              _ body: () throws -> Tensor) {
    do {
        let t = try body()
        Issue.record("expected an error containing '\(fragment)', got \(t)", sourceLocation: sourceLocation)
    } catch let error as PointFileError {
        #expect(error.message.contains(fragment), "message: \(error)", sourceLocation: sourceLocation)
        if let line { #expect(error.line == line, "line: \(error)", sourceLocation: sourceLocation) }
        if let byte { #expect(error.byteOffset == byte, "byte: \(error)", sourceLocation: sourceLocation) }
        #expect(error.description.hasPrefix(error.file), sourceLocation: sourceLocation)
    } catch {
        Issue.record("expected a PointFileError, got \(error)", sourceLocation: sourceLocation)
    }
}

private func csv(_ text: String) throws(PointFileError) -> Tensor {
    try PointFiles.parseCSV(Array(text.utf8), name: "t.csv")
}

/// An NPY file with the given header dict text (padded as numpy does) and raw data bytes.
private func npy(header: String, data: [UInt8], major: UInt8 = 1) -> [UInt8] {
    var h = header
    let pre = major == 1 ? 10 : 12
    h += String(repeating: " ", count: (64 - (pre + h.utf8.count + 1) % 64) % 64) + "\n"
    let len = h.utf8.count
    var out: [UInt8] = [0x93, 0x4E, 0x55, 0x4D, 0x50, 0x59, major, 0]
    out += major == 1 ? [UInt8(len & 0xFF), UInt8(len >> 8)] : [UInt8(len & 0xFF), UInt8(len >> 8 & 0xFF), UInt8(len >> 16 & 0xFF), UInt8(len >> 24)]
    return out + Array(h.utf8) + data
}

private func f4(_ values: [Float]) -> [UInt8] {
    values.flatMap { v -> [UInt8] in let b = v.bitPattern; return (0..<4).map { UInt8(truncatingIfNeeded: b >> (8 * $0)) } }
}

private func f8(_ values: [Double]) -> [UInt8] {
    values.flatMap { v -> [UInt8] in let b = v.bitPattern; return (0..<8).map { UInt8(truncatingIfNeeded: b >> (8 * UInt64($0))) } }
}

private func npyParse(_ bytes: [UInt8]) throws(PointFileError) -> Tensor {
    try PointFiles.parseNPY(bytes, name: "t.npy")
}

@Suite("PointFiles")
struct PointFileTests {
    @Test("CSV: header, comments, blank lines, CRLF, BOM, comma and whitespace separators, exponents")
    func csvHappy() throws {
        let text = "\u{FEFF}# generated points\r\nx, y\r\n\r\n1,2\r\n  -3.5 ,\t4e-1  # trailing comment\n5\t6\n  .5   -7.  \n+1E2,-0.0\n# end"
        let t = try csv(text)
        #expect(t.shape == [5, 2])
        #expect(t.data == [1, 2, -3.5, 0.4, 5, 6, 0.5, -7, 100, -0.0])
        #expect(try csv("1 2\n3 4").data == [1, 2, 3, 4])
        #expect(try csv("\"x\",\"y\"\n1,2\n").data == [1, 2])
        // Float parsing rounds once: the shortest form of every Float reads back bit for bit.
        let pts = randn([500, 2], seed: 3, std: 1e3)
        expectBitwiseEqual(try csv(PointFiles.csvText(pts)), pts)
        expectBitwiseEqual(try csv(PointFiles.csvText(pts, header: nil)), pts)
    }

    @Test("CSV rejections name the line and the problem")
    func csvRejections() {
        expectPointError("expected 2 columns, got 3", line: 2) { try csv("1,2\n1,2,3\n") }
        expectPointError("expected 2 columns, got 1", line: 3) { try csv("x,y\n1,2\n5\n") }
        // Any dimension d: the first row fixes it (here d = 3); every row must agree.
        #expect((try? csv("1 2 3"))?.shape == [1, 3])
        #expect((try? csv("a,b,c\n1,2,3\n4,5,6"))?.shape == [2, 3])
        expectPointError("expected 3 columns, got 2", line: 2) { try csv("1,2,3\n1,2\n") }
        expectPointError("column 2: 'abc' is not a number", line: 4) { try csv("# c\n\n1,2\n3,abc\n") }
        expectPointError("'nan' is not a number", line: 1) { try csv("nan,1") }
        expectPointError("'nan' is not a number", line: 1) { try csv("nan,nan\n1,2") }  // not a header
        expectPointError("'Infinity' is not a number", line: 1) { try csv("Infinity x") }
        expectPointError("'inf' is not a number", line: 2) { try csv("1,1\n1,inf") }
        expectPointError("'0x10' is not a number", line: 1) { try csv("0x10,1") }
        expectPointError("is not a number", line: 1) { try csv("1.2.3,1") }
        expectPointError("is not a number", line: 1) { try csv("--1,1") }
        expectPointError("is not a number", line: 1) { try csv("1e,1") }
        expectPointError("is not a number", line: 1) { try csv(".,1") }
        expectPointError("outside the Float range", line: 1) { try csv("1e39,1") }
        expectPointError("column 2 is empty", line: 1) { try csv("1,") }
        expectPointError("column 2 is empty", line: 1) { try csv("1,,2") }
        expectPointError("expected 3 columns, got 2", line: 2) { try csv("a,b,c\n1,2") }
        expectPointError("header column 1 is empty", line: 2) { try csv("\n,y\n1,2") }
        expectPointError("column 1: 'x' is not a number", line: 3) { try csv("x,y\n1,2\nx,y\n") }
        expectPointError("column 1: 'x' is not a number", line: 1) { try csv("x,1.0\n1,2") }
        expectPointError("no data rows") { try csv("") }
        expectPointError("no data rows") { try csv("x,y\n# nothing\n\n") }
        expectPointError("no data rows") { try csv("   \n\t\n") }
        expectPointError("is not a number", line: 1) { try PointFiles.parseCSV([0x31, 0x2C, 0xFF, 0x00], name: "bin.csv") }
        // A very long field is shown truncated.
        do {
            _ = try csv("1," + String(repeating: "z", count: 500))
            Issue.record("expected an error")
        } catch { #expect(error.message.count < 120 && error.message.contains("…")) }
    }

    @Test("NPY: npyBytes round trip, <f8, version 2.0, Python-2 ints, double quotes, any key order")
    func npyHappy() throws {
        let pts = randn([37, 2], seed: 9)
        let bytes = PointFiles.npyBytes(pts)
        #expect((bytes.count - 37 * 8) % 64 == 0)
        expectBitwiseEqual(try npyParse(bytes), pts)
        let doubles: [Double] = [1, -2, 3.25, 1e-3, -1e30, 0]
        let t8 = try npyParse(npy(header: "{'descr': '<f8', 'fortran_order': False, 'shape': (3, 2), }", data: f8(doubles)))
        #expect(t8.shape == [3, 2] && t8.data == doubles.map { Float($0) })
        let v2 = try npyParse(npy(header: "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 2), }",
                                  data: f4([1, 2, 3, 4]), major: 2))
        #expect(v2.data == [1, 2, 3, 4])
        let odd = try npyParse(npy(header: "{\"shape\": (2L, 2L), \"fortran_order\": False, \"descr\": \"<f4\"}",
                                   data: f4([5, 6, 7, 8])))
        #expect(odd.data == [5, 6, 7, 8])
        #expect(try PointFiles.parse(bytes, name: "points.dat").shape == [37, 2])   // detected by magic
        #expect(PointFiles.detectFormat(name: "A.NPY", bytes: []) == .npy)
        #expect(PointFiles.detectFormat(name: "a.csv", bytes: Array("1,2".utf8)) == .csv)
    }

    @Test("NPY rejections name the byte and the problem")
    func npyRejections() {
        let good4 = f4([1, 2, 3, 4])
        func h(_ dict: String, _ data: [UInt8]? = nil, major: UInt8 = 1) -> [UInt8] { npy(header: dict, data: data ?? good4, major: major) }
        let std = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 2), }"
        expectPointError("not an NPY file", byte: 0) { try npyParse(Array("1,2\n".utf8)) }
        expectPointError("not an NPY file", byte: 0) { try npyParse([]) }
        expectPointError("truncated NPY preamble", byte: 8) { try npyParse(Array(h(std).prefix(8))) }
        expectPointError("truncated NPY preamble") { try npyParse(Array(h(std, major: 2).prefix(11))) }
        var v4 = h(std); v4[6] = 4
        expectPointError("unsupported NPY format version 4.0", byte: 6) { try npyParse(v4) }
        var v11 = h(std); v11[7] = 1
        expectPointError("unsupported NPY format version 1.1", byte: 6) { try npyParse(v11) }
        expectPointError("truncated header") { try npyParse(Array(h(std).prefix(40))) }
        var long = h(std, major: 2); long[10] = 0x10  // header length 0x10xxxx
        expectPointError("exceeds 65536 bytes", byte: 8) { try npyParse(long) }
        expectPointError("fortran_order True is not supported") {
            try npyParse(h("{'descr': '<f4', 'fortran_order': True, 'shape': (2, 2), }"))
        }
        expectPointError("big-endian dtype '>f4'") { try npyParse(h("{'descr': '>f4', 'fortran_order': False, 'shape': (2, 2), }")) }
        expectPointError("big-endian dtype '>f8'") { try npyParse(h("{'descr': '>f8', 'fortran_order': False, 'shape': (2, 2), }")) }
        for dtype in ["<i8", "<f2", "|u1", "<i4", "<c8", "=f4", "float32"] {
            expectPointError("unsupported dtype '\(dtype)'") {
                try npyParse(h("{'descr': '\(dtype)', 'fortran_order': False, 'shape': (2, 2), }"))
            }
        }
        expectPointError("descr must be a dtype string") {
            try npyParse(h("{'descr': [('x', '<f4'), ('y', '<f4')], 'fortran_order': False, 'shape': (2,), }"))
        }
        expectPointError("shape must be (n, d) with 1 ≤ d ≤ 65536, got (4)") { try npyParse(h("{'descr': '<f4', 'fortran_order': False, 'shape': (4,), }")) }
        expectPointError("shape must be (n, d) with 1 ≤ d ≤ 65536, got (2, 1, 2)") {
            try npyParse(h("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 1, 2), }"))
        }
        expectPointError("shape must be (n, d) with 1 ≤ d ≤ 65536, got (1, 0)") { try npyParse(h("{'descr': '<f4', 'fortran_order': False, 'shape': (1, 0), }")) }
        expectPointError("shape must be (n, d) with 1 ≤ d ≤ 65536, got ()") { try npyParse(h("{'descr': '<f4', 'fortran_order': False, 'shape': (), }")) }
        expectPointError("holds no points") { try npyParse(h("{'descr': '<f4', 'fortran_order': False, 'shape': (0, 2), }", [])) }
        expectPointError("negative dimension") { try npyParse(h("{'descr': '<f4', 'fortran_order': False, 'shape': (-1, 2), }")) }
        expectPointError("integer too large") {
            try npyParse(h("{'descr': '<f4', 'fortran_order': False, 'shape': (1000000000000000000000000000000, 2), }"))
        }
        expectPointError("too large") { try npyParse(h("{'descr': '<f8', 'fortran_order': False, 'shape': (2305843009213693952, 2), }")) }
        expectPointError("truncated data: shape (1000, 2) of '<f4' needs 8000 bytes, 16 present") {
            try npyParse(h("{'descr': '<f4', 'fortran_order': False, 'shape': (1000, 2), }"))
        }
        expectPointError("truncated data") { try npyParse(Array(h(std).dropLast(1))) }
        expectPointError("4 unexpected bytes after the data") { try npyParse(h(std) + [0, 0, 0, 0]) }
        expectPointError("header lacks the key 'shape'") { try npyParse(h("{'descr': '<f4', 'fortran_order': False}")) }
        expectPointError("unexpected header key 'extra'") {
            try npyParse(h("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 2), 'extra': 'x'}"))
        }
        expectPointError("duplicate key 'descr'") {
            try npyParse(h("{'descr': '<f4', 'descr': '<f4', 'fortran_order': False, 'shape': (2, 2)}"))
        }
        expectPointError("unterminated string") { try npyParse(h("{'descr': '<f4")) }
        expectPointError("expected '}'") { try npyParse(h("{'descr': '<f4, 'fortran_order': False}")) }
        expectPointError("unexpected bytes after the dict") { try npyParse(h(std + " junk")) }
        expectPointError("expected '{'") { try npyParse(h("['descr']")) }
        expectPointError("fortran_order must be True or False") {
            try npyParse(h("{'descr': '<f4', 'fortran_order': 'no', 'shape': (2, 2), }"))
        }
        expectPointError("unexpected value") { try npyParse(h("{'descr': '<f4', 'fortran_order': 0, 'shape': (2, 2), }")) }
        expectPointError("escape sequences") { try npyParse(h("{'descr': '<f\\4', 'fortran_order': False, 'shape': (2, 2), }")) }
        let nanAt = h(std, f4([1, 2, .nan, 4]))
        expectPointError("row 1, column 0: non-finite value", byte: nanAt.count - 8) { try npyParse(nanAt) }
        expectPointError("row 0, column 1: 1e+300 is outside the Float range") {
            try npyParse(h("{'descr': '<f8', 'fortran_order': False, 'shape': (1, 2), }", f8([0, 1e300])))
        }
        expectPointError("non-finite value") {
            try npyParse(h("{'descr': '<f8', 'fortran_order': False, 'shape': (1, 2), }", f8([.infinity, 1])))
        }
    }

    @Test("fuzz: hundreds of random mutations of valid CSV and NPY files never trap")
    func fuzz() {
        let pts = randn([12, 2], seed: 4)
        let seeds: [(PointFileFormat, [UInt8])] = [
            (.csv, Array(("# pts\nx,y\n" + PointFiles.csvText(pts, header: nil) + "1 2\n").utf8)),
            (.npy, PointFiles.npyBytes(pts)),
            (.npy, npy(header: "{'descr': '<f8', 'fortran_order': False, 'shape': (3, 2), }", data: f8([1, 2, 3, 4, 5, 6]), major: 2)),
        ]
        var rng = Random(seed: 99)
        var outcomes = [0, 0]
        let interesting = Array("0123456789,.-+eE#\n\r\t ()'\":{}<>fTLu".utf8) + [0x00, 0x93, 0xFF]
        for (format, original) in seeds {
            for _ in 0..<400 {
                var b = original
                for _ in 0..<(1 + rng.int(below: 4)) {
                    let pos = b.isEmpty ? 0 : rng.int(below: b.count)
                    let byte = rng.int(below: 2) == 0 ? interesting[rng.int(below: interesting.count)] : UInt8(rng.int(below: 256))
                    switch rng.int(below: 6) {
                    case 0: if !b.isEmpty { b[pos] = byte }
                    case 1: b.insert(byte, at: pos)
                    case 2: if !b.isEmpty { b.remove(at: pos) }
                    case 3: b = Array(b.prefix(pos))
                    case 4: if !b.isEmpty { b[pos] ^= UInt8(1 << rng.int(below: 8)) }
                    default:
                        let len = min(8, b.count - pos)
                        if len > 0 { b.insert(contentsOf: b[pos..<(pos + len)], at: pos) }
                    }
                }
                do {
                    let t = try PointFiles.parse(b, name: "fuzz", format: format)
                    #expect(t.rank == 2 && t.shape[1] == 2 && t.shape[0] >= 1 && t.data.allSatisfy { $0.isFinite })
                    outcomes[0] += 1
                } catch {
                    #expect(!error.message.isEmpty && error.file == "fuzz")
                    outcomes[1] += 1
                }
            }
        }
        #expect(outcomes[0] > 20 && outcomes[1] > 200, "accepted \(outcomes[0]), rejected \(outcomes[1])")
    }

    @Test("load from disk: both formats; missing file, directory, size limit and bad paths are errors")
    func load() throws {
        let dir = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let pts = randn([100, 2], seed: 8)
        let npyPath = dir.appendingPathComponent("p.npy").path, csvPath = dir.appendingPathComponent("p.csv").path
        let oddPath = dir.appendingPathComponent("p.bin").path
        try Data(PointFiles.npyBytes(pts)).write(to: URL(fileURLWithPath: npyPath))
        try Data(PointFiles.npyBytes(pts)).write(to: URL(fileURLWithPath: oddPath))
        try PointFiles.csvText(pts).write(toFile: csvPath, atomically: true, encoding: .utf8)
        expectBitwiseEqual(try PointFiles.load(path: npyPath), pts)
        expectBitwiseEqual(try PointFiles.load(path: oddPath), pts)
        expectBitwiseEqual(try PointFiles.load(path: csvPath), pts)
        expectBitwiseEqual(try PointFiles.load(path: csvPath, format: .csv), pts)
        expectPointError("not an NPY file") { try PointFiles.load(path: csvPath, format: .npy) }
        expectPointError("cannot open: No such file") { try PointFiles.load(path: dir.appendingPathComponent("none.csv").path) }
        expectPointError("not a regular file") { try PointFiles.load(path: dir.path) }
        expectPointError("more than the limit of 100") { try PointFiles.load(path: npyPath, maxBytes: 100) }
        expectPointError("empty path") { try PointFiles.load(path: "") }
        expectPointError("NUL byte") { try PointFiles.load(path: csvPath + "\0x") }
        expectPointError("maxBytes must be non-negative") { try PointFiles.load(path: csvPath, maxBytes: -1) }
        // Regular files whose size fstat reports as 0 are still read to the end.
        if FileManager.default.fileExists(atPath: "/proc/self/status") {
            let status = try PointFiles.readFile(path: "/proc/self/status")
            #expect(status.count > 100 && String(decoding: status, as: UTF8.self).contains("Pid:"))
            expectPointError("larger than the limit of 10 bytes") { try PointFiles.load(path: "/proc/self/status", maxBytes: 10) }
        }
        let size = PointFiles.npyBytes(pts).count
        #expect(try PointFiles.load(path: npyPath, maxBytes: size).shape == [100, 2])
        expectPointError("more than the limit") { try PointFiles.load(path: npyPath, maxBytes: size - 1) }
        do {
            _ = try PointFiles.load(path: dir.appendingPathComponent("none.csv").path)
        } catch {
            #expect(error.description.contains("none.csv") && error.description.contains("errno 2"))
        }
    }
}
