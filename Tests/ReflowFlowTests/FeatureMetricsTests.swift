import Foundation
import Testing
import ReflowEngine
@testable import ReflowFlow

// Oracles used here are independent of the implementation: closed forms (Gaussians with
// commuting covariances, 2 × 2 matrices), reconstruction identities, and brute-force Double loops.

/// Asserts that `body` throws a MetricError for `argument`.
private func expectError(_ argument: String, _ fragment: String = "",
                         sourceLocation: SourceLocation = #_sourceLocation, _ body: () throws -> Any) {
    do {
        let v = try body()
        Issue.record("expected a MetricError for \(argument), got \(v)", sourceLocation: sourceLocation)
    } catch let error as MetricError {
        #expect(error.argument == argument, "\(error)", sourceLocation: sourceLocation)
        #expect(fragment.isEmpty || error.message.contains(fragment), "\(error)", sourceLocation: sourceLocation)
    } catch {
        Issue.record("expected a MetricError, got \(error)", sourceLocation: sourceLocation)
    }
}

/// n rows of independent N(mean[j], std[j]²) features.
private func gaussianRows(_ n: Int, mean: [Double], std: [Double], seed: UInt64) -> [Float] {
    var rng = Random(seed: seed)
    var x = [Float](repeating: 0, count: n * mean.count)
    for i in 0..<n {
        for j in 0..<mean.count { x[i * mean.count + j] = Float(mean[j] + std[j] * rng.normal()) }
    }
    return x
}

private func standardRows(_ n: Int, _ d: Int, seed: UInt64, shift: Double = 0) -> [Float] {
    gaussianRows(n, mean: [Double](repeating: shift, count: d), std: [Double](repeating: 1, count: d), seed: seed)
}

/// A random orthogonal n × n matrix (Gram–Schmidt on Gaussian columns, twice for accuracy).
private func randomOrthogonal(_ n: Int, seed: UInt64) -> [Double] {
    var rng = Random(seed: seed)
    var cols = (0..<n).map { _ in (0..<n).map { _ in rng.normal() } }
    for i in 0..<n {
        for _ in 0..<2 {
            for j in 0..<i {
                let dot = zip(cols[i], cols[j]).reduce(0) { $0 + $1.0 * $1.1 }
                for r in 0..<n { cols[i][r] -= dot * cols[j][r] }
            }
        }
        let norm = cols[i].reduce(0) { $0 + $1 * $1 }.squareRoot()
        for r in 0..<n { cols[i][r] /= norm }
    }
    var q = [Double](repeating: 0, count: n * n)
    for r in 0..<n { for c in 0..<n { q[r * n + c] = cols[c][r] } }
    return q
}

/// Q·diag(spectrum)·Qᵀ.
private func withSpectrum(_ spectrum: [Double], _ q: [Double]) -> [Double] {
    let n = spectrum.count
    var a = [Double](repeating: 0, count: n * n)
    for i in 0..<n {
        for j in 0..<n {
            var s = 0.0
            for k in 0..<n { s += q[i * n + k] * spectrum[k] * q[j * n + k] }
            a[i * n + j] = s
        }
    }
    // exact symmetry
    for i in 0..<n { for j in 0..<i { a[j * n + i] = a[i * n + j] } }
    return a
}

private func maxAbs(_ x: [Double]) -> Double { x.reduce(0) { max($0, abs($1)) } }

/// max |V Λ Vᵀ − A| and max |V Vᵀ − I| (V stored with eigenvectors as rows).
private func residuals(_ a: [Double], _ e: SymmetricEigen) -> (reconstruction: Double, orthogonality: Double) {
    let n = e.order, v = e.vectors
    var rec = 0.0, orth = 0.0
    for i in 0..<n {
        for j in 0..<n {
            var s = 0.0, o = 0.0
            for k in 0..<n {
                s += v[k * n + i] * e.values[k] * v[k * n + j]
                o += v[i * n + k] * v[j * n + k]
            }
            rec = max(rec, abs(s - a[i * n + j]))
            orth = max(orth, abs(o - (i == j ? 1 : 0)))
        }
    }
    return (rec, orth)
}

@Suite("FeatureMetrics: symmetric eigensolver")
struct FeatureMetricsEigenTests {
    @Test("random SPD and indefinite matrices: V Λ Vᵀ = A, VᵀV = I, ascending values")
    func randomMatrices() throws {
        for (n, seed) in [(1, 1), (2, 2), (3, 3), (17, 4), (60, 5)] {
            var rng = Random(seed: UInt64(seed))
            let b = (0..<(n * n)).map { _ in rng.normal() }
            var spd = [Double](repeating: 0, count: n * n), sym = spd
            for i in 0..<n {
                for j in 0..<n {
                    var s = 0.0
                    for k in 0..<n { s += b[k * n + i] * b[k * n + j] }
                    spd[i * n + j] = s + (i == j ? 0.1 : 0)
                    sym[i * n + j] = b[i * n + j] + b[j * n + i]
                }
            }
            for a in [spd, sym] {
                let e = try SymmetricEigen(matrix: a, order: n)
                let (rec, orth) = residuals(a, e)
                #expect(rec < 1e-12 * Double(n) * maxAbs(a), "n = \(n): reconstruction \(rec)")
                #expect(orth < 1e-13 * Double(n), "n = \(n): orthogonality \(orth)")
                #expect(zip(e.values, e.values.dropFirst()).allSatisfy { $0 <= $1 })
                let trace = (0..<n).reduce(0.0) { $0 + a[$1 * n + $1] }
                #expect(abs(e.values.reduce(0, +) - trace) < 1e-12 * Double(n) * maxAbs(a))
                let valuesOnly = try SymmetricEigen(matrix: a, order: n, computeVectors: false)
                #expect(valuesOnly.vectors.isEmpty)
                for (x, y) in zip(valuesOnly.values, e.values) { #expect(abs(x - y) < 1e-12 * maxAbs(a) * Double(n)) }
            }
        }
    }

    @Test("known spectra with repeated and zero eigenvalues")
    func repeatedAndZero() throws {
        let spectra: [[Double]] = [
            [0, 0, 0, 1, 1, 1, 2, 2, 5, 5, 5, 5],
            [Double](repeating: 3, count: 9),
            [0, 0, 0, 0, 0, 0, 0, 4],  // rank one
            [-2, -2, 0, 0, 7, 7, 7],
            [1e-12, 1e-6, 1, 1e6],
        ]
        for (t, spectrum) in spectra.enumerated() {
            let n = spectrum.count
            let a = withSpectrum(spectrum, randomOrthogonal(n, seed: UInt64(10 + t)))
            let e = try SymmetricEigen(matrix: a, order: n)
            let scale = maxAbs(spectrum)
            for (got, want) in zip(e.values, spectrum.sorted()) {
                #expect(abs(got - want) < 1e-13 * Double(n) * scale, "spectrum \(t): \(got) vs \(want)")
            }
            let (rec, orth) = residuals(a, e)
            #expect(rec < 1e-13 * Double(n) * scale, "spectrum \(t): reconstruction \(rec)")
            #expect(orth < 1e-13 * Double(n), "spectrum \(t): orthogonality \(orth)")
        }
    }

    @Test("diagonal, zero, already tridiagonal and 2 × 2 closed form")
    func specialMatrices() throws {
        let zero = try SymmetricEigen(matrix: [Double](repeating: 0, count: 16), order: 4)
        #expect(zero.values == [0, 0, 0, 0])
        #expect(residuals([Double](repeating: 0, count: 16), zero).orthogonality == 0)

        let diag: [Double] = [3, 0, 0, 0, -1, 0, 0, 0, 2]
        let e = try SymmetricEigen(matrix: diag, order: 3)
        #expect(e.values == [-1, 2, 3])
        #expect(residuals(diag, e).reconstruction == 0)

        // Tridiagonal Toeplitz (2, −1): eigenvalues 2 − 2cos(kπ/(n+1)).
        let n = 30
        var t = [Double](repeating: 0, count: n * n)
        for i in 0..<n {
            t[i * n + i] = 2
            if i + 1 < n { t[i * n + i + 1] = -1; t[(i + 1) * n + i] = -1 }
        }
        let te = try SymmetricEigen(matrix: t, order: n)
        for k in 1...n {
            #expect(abs(te.values[k - 1] - (2 - 2 * cos(Double(k) * Double.pi / Double(n + 1)))) < 1e-13)
        }

        // 2 × 2: (a+c)/2 ± √(((a−c)/2)² + b²).
        let (a, b, c) = (1.5, -0.7, 0.2)
        let m = (a + c) / 2, r = (((a - c) / 2) * ((a - c) / 2) + b * b).squareRoot()
        let two = try SymmetricEigen(matrix: [a, b, b, c], order: 2)
        #expect(abs(two.values[0] - (m - r)) < 1e-15 && abs(two.values[1] - (m + r)) < 1e-15)
    }

    @Test("order 256 with vectors is well under a second")
    func speed() throws {
        let n = 256
        var rng = Random(seed: 9)
        let b = (0..<(n * n)).map { _ in rng.normal() }
        var a = [Double](repeating: 0, count: n * n)
        for i in 0..<n { for j in 0...i { a[i * n + j] = b[i * n + j]; a[j * n + i] = b[i * n + j] } }
        let start = Date()
        let e = try SymmetricEigen(matrix: a, order: n)
        let seconds = Date().timeIntervalSince(start)
        #expect(seconds < 1, "took \(seconds) s")
        // Spot-check A v = λ v for a few pairs.
        for k in [0, 100, 255] {
            var worst = 0.0
            for i in 0..<n {
                var s = 0.0
                for j in 0..<n { s += a[i * n + j] * e.vectors[k * n + j] }
                worst = max(worst, abs(s - e.values[k] * e.vectors[k * n + i]))
            }
            #expect(worst < 1e-11 * maxAbs(e.values))
        }
    }

    @Test("bad input throws")
    func validation() {
        expectError("order") { try SymmetricEigen(matrix: [], order: 0) }
        expectError("matrix", "expected") { try SymmetricEigen(matrix: [1, 2, 3], order: 2) }
        expectError("matrix", "not finite") { try SymmetricEigen(matrix: [1, .nan, .nan, 1], order: 2) }
    }
}

@Suite("FeatureMetrics: Fréchet distance")
struct FeatureMetricsFrechetTests {
    @Test("exact diagonal Gaussians: ‖Δμ‖² + Σ(σ1 − σ2)²")
    func diagonalClosedForm() throws {
        let mu1: [Double] = [0, 1, -2, 0.5, 3], mu2: [Double] = [0.3, 1, -1, 0, 3]
        let s1: [Double] = [1, 2, 0.5, 0, 3], s2: [Double] = [2, 2, 0.1, 1, 0.2]
        func stats(_ mu: [Double], _ s: [Double]) throws -> FeatureStats {
            var cov = [Double](repeating: 0, count: 25)
            for i in 0..<5 { cov[i * 5 + i] = s[i] * s[i] }
            return try FeatureStats(count: 1000, mean: mu, covariance: cov)
        }
        var expected = 0.0
        for i in 0..<5 { expected += (mu1[i] - mu2[i]) * (mu1[i] - mu2[i]) + (s1[i] - s2[i]) * (s1[i] - s2[i]) }
        let fd = try FeatureMetrics.frechetDistance(real: stats(mu1, s1), fake: stats(mu2, s2))
        #expect(abs(fd - expected) < 1e-12 * expected, "\(fd) vs \(expected)")
    }

    @Test("exact rotated Gaussians with a common eigenbasis: Σ(√a − √b)²")
    func commutingClosedForm() throws {
        let d = 40
        var rng = Random(seed: 21)
        let a = (0..<d).map { _ in 0.1 + 4 * rng.uniformDouble() }
        let b = (0..<d).map { _ in 0.1 + 4 * rng.uniformDouble() }
        let bSingular = b.enumerated().map { $0.offset % 5 == 0 ? 0 : $0.element }
        let q = randomOrthogonal(d, seed: 22)
        let mu1 = (0..<d).map { _ in rng.normal() }, mu2 = (0..<d).map { _ in rng.normal() }
        // The matrix square root is not Lipschitz at a singular matrix: rounding-level
        // perturbations δ of zero eigenvalues become √δ ≈ 1e-8 in the trace. So the singular
        // case gets a tolerance of 1e-7 relative, the regular one 1e-10.
        for (spectrum, tolerance) in [(b, 1e-10), (bSingular, 1e-7)] {
            let r = try FeatureStats(count: 10, mean: mu1, covariance: withSpectrum(a, q))
            let f = try FeatureStats(count: 10, mean: mu2, covariance: withSpectrum(spectrum, q))
            var expected = 0.0
            for i in 0..<d {
                expected += (mu1[i] - mu2[i]) * (mu1[i] - mu2[i])
                let e = a[i].squareRoot() - spectrum[i].squareRoot()
                expected += e * e
            }
            for threads in [1, 2] {
                let fd = try FeatureMetrics.frechetDistance(real: r, fake: f, threads: threads)
                #expect(abs(fd - expected) < tolerance * expected, "\(fd) vs \(expected)")
                let back = try FeatureMetrics.frechetDistance(real: f, fake: r, threads: threads)
                #expect(abs(back - expected) < tolerance * expected, "\(back) vs \(expected)")
            }
        }
    }

    @Test("exact non-commuting 2 × 2: tr √(Σ1^½Σ2Σ1^½) = √(tr Σ1Σ2 + 2√(det Σ1 det Σ2))")
    func twoByTwoClosedForm() throws {
        var rng = Random(seed: 31)
        for _ in 0..<20 {
            func spd() -> [Double] {
                let p = rng.normal(), q = rng.normal(), r = rng.normal(), s = rng.normal()
                return [p * p + q * q + 0.01, p * r + q * s, p * r + q * s, r * r + s * s + 0.01]
            }
            let c1 = spd(), c2 = spd()
            let mu1 = [rng.normal(), rng.normal()], mu2 = [rng.normal(), rng.normal()]
            let trProd = c1[0] * c2[0] + c1[1] * c2[2] + c1[2] * c2[1] + c1[3] * c2[3]
            let det1 = c1[0] * c1[3] - c1[1] * c1[2], det2 = c2[0] * c2[3] - c2[1] * c2[2]
            let trRoot = (trProd + 2 * (det1 * det2).squareRoot()).squareRoot()
            let dmu = (mu1[0] - mu2[0]) * (mu1[0] - mu2[0]) + (mu1[1] - mu2[1]) * (mu1[1] - mu2[1])
            let expected = dmu + c1[0] + c1[3] + c2[0] + c2[3] - 2 * trRoot
            let fd = try FeatureMetrics.frechetDistance(real: FeatureStats(count: 5, mean: mu1, covariance: c1),
                                                        fake: FeatureStats(count: 5, mean: mu2, covariance: c2))
            #expect(abs(fd - expected) < 1e-10 * (1 + expected), "\(fd) vs \(expected)")
        }
    }

    @Test("from samples: close to the population value; FD(x, x) ≈ 0; symmetric")
    func fromSamples() throws {
        let mu1: [Double] = [0, 1, -1, 2], mu2: [Double] = [0.5, 1, -1, 1.5]
        let s1: [Double] = [1, 0.5, 2, 1], s2: [Double] = [1.5, 0.5, 1, 1]
        let x = gaussianRows(20_000, mean: mu1, std: s1, seed: 41)
        let y = gaussianRows(20_000, mean: mu2, std: s2, seed: 42)
        var expected = 0.0
        for i in 0..<4 { expected += (mu1[i] - mu2[i]) * (mu1[i] - mu2[i]) + (s1[i] - s2[i]) * (s1[i] - s2[i]) }
        let fd = try FeatureMetrics.frechetDistance(real: x, fake: y, d: 4)
        #expect(abs(fd - expected) < 0.03 * expected, "\(fd) vs \(expected)")
        let back = try FeatureMetrics.frechetDistance(real: y, fake: x, d: 4)
        #expect(abs(fd - back) < 1e-9 * fd)
        #expect(try FeatureMetrics.frechetDistance(real: x, fake: x, d: 4) < 1e-9)

        // The sample covariance itself, against a direct Double two-pass computation.
        let stats = try FeatureStats(features: x, d: 4, threads: 2)
        for a in 0..<4 {
            for b in 0..<4 {
                var s = 0.0
                for i in 0..<20_000 {
                    s += (Double(x[i * 4 + a]) - stats.mean[a]) * (Double(x[i * 4 + b]) - stats.mean[b])
                }
                #expect(abs(stats.covariance[a * 4 + b] - s / 19_999) < 1e-12)
            }
        }
    }

    @Test("statistics: Double two-pass oracle, bitwise independent of threads (odd d, partial blocks)")
    func statistics() throws {
        let (n, d) = (203, 7)  // 3 blocks of 64 and 11 rows; 203 = 4·50 + 3 leftover rows
        let x = gaussianRows(n, mean: (0..<d).map { Double($0) * 10 }, std: (0..<d).map { 1 + Double($0) }, seed: 43)
        let one = try FeatureStats(features: x, d: d, threads: 1)
        let two = try FeatureStats(features: x, d: d, threads: 2)
        #expect(one == two)
        #expect(one.count == n && one.dimension == d)
        for a in 0..<d {
            let mean = (0..<n).reduce(0.0) { $0 + Double(x[$1 * d + a]) } / Double(n)
            #expect(abs(one.mean[a] - mean) < 1e-12 * (1 + abs(mean)))
            for b in 0..<d {
                var s = 0.0
                for i in 0..<n { s += (Double(x[i * d + a]) - one.mean[a]) * (Double(x[i * d + b]) - one.mean[b]) }
                #expect(abs(one.covariance[a * d + b] - s / Double(n - 1)) < 1e-12 * (1 + abs(s) / Double(n)))
                #expect(one.covariance[a * d + b] == one.covariance[b * d + a])
            }
        }
    }

    @Test("fewer samples than dimensions (singular covariance): FD(x, x) ≈ 0")
    func singular() throws {
        let x = standardRows(20, 50, seed: 51)
        let fd = try FeatureMetrics.frechetDistance(real: x, fake: x, d: 50)
        let trace = try FeatureStats(features: x, d: 50).covariance.enumerated().filter { $0.offset % 51 == 0 }
            .reduce(0) { $0 + $1.element }
        #expect(fd < 1e-6 * trace, "\(fd)")
    }

    @Test("statistics round-trip through JSON; damaged caches are refused")
    func codable() throws {
        let stats = try FeatureStats(features: standardRows(50, 3, seed: 61), d: 3)
        let data = try JSONEncoder().encode(stats)
        #expect(try JSONDecoder().decode(FeatureStats.self, from: data) == stats)
        var object = try #require(JSONSerialization.jsonObject(with: data) as? [String: Any])
        object["covariance"] = [1, 2, 3]
        let bad = try JSONSerialization.data(withJSONObject: object)
        #expect(throws: DecodingError.self) { try JSONDecoder().decode(FeatureStats.self, from: bad) }
    }

    @Test("bad shapes throw")
    func validation() throws {
        let x = standardRows(10, 3, seed: 1)
        expectError("real", "at least 2") { try FeatureMetrics.frechetDistance(real: [1, 2, 3], fake: x, d: 3) }
        expectError("fake", "whole number") { try FeatureMetrics.frechetDistance(real: x, fake: [1, 2, 3, 4], d: 3) }
        expectError("d") { try FeatureMetrics.frechetDistance(real: x, fake: x, d: 0) }
        expectError("d", "outside") { try FeatureStats(features: [Float](repeating: 0, count: 2 * 4096), d: 4096) }
        expectError("threads") { try FeatureMetrics.frechetDistance(real: x, fake: x, d: 3, threads: 0) }
        var nanRows = x
        nanRows[7] = .nan
        expectError("fake", "row 2") { try FeatureMetrics.frechetDistance(real: x, fake: nanRows, d: 3) }
        let s3 = try FeatureStats(features: x, d: 3), s2 = try FeatureStats(features: Array(x.prefix(20)), d: 2)
        expectError("fake", "dimension") { try FeatureMetrics.frechetDistance(real: s3, fake: s2) }
        expectError("count") { try FeatureStats(count: 1, mean: [0], covariance: [1]) }
        expectError("covariance", "symmetric") { try FeatureStats(count: 3, mean: [0, 0], covariance: [1, 0.5, 0, 1]) }
        expectError("covariance", "expected") { try FeatureStats(count: 3, mean: [0, 0], covariance: [1]) }
    }
}

// MARK: - Monotonicity on images

/// n smooth 16 × 16 images: sums of 2–5 Gaussian blobs with random centres, widths and amplitudes.
private func blobImages(_ n: Int, seed: UInt64) -> [Float] {
    var rng = Random(seed: seed)
    var out = [Float](repeating: 0, count: n * 256)
    for i in 0..<n {
        let blobs = 2 + rng.int(below: 4)
        for _ in 0..<blobs {
            let cx = 16 * rng.uniformDouble(), cy = 16 * rng.uniformDouble()
            let w = 0.8 + 2 * rng.uniformDouble(), amp = 0.3 + 0.7 * rng.uniformDouble()
            for y in 0..<16 {
                for x in 0..<16 {
                    let r2 = (Double(x) - cx) * (Double(x) - cx) + (Double(y) - cy) * (Double(y) - cy)
                    out[i * 256 + y * 16 + x] += Float(amp * exp(-r2 / (2 * w * w)))
                }
            }
        }
    }
    return out
}

private func addNoise(_ x: [Float], std: Double, seed: UInt64) -> [Float] {
    var rng = Random(seed: seed)
    return x.map { $0 + Float(std * rng.normal()) }
}

/// (2r+1)² box blur with edge clamping, per 16 × 16 image.
private func boxBlur(_ x: [Float], radius r: Int) -> [Float] {
    var out = x
    for i in 0..<(x.count / 256) {
        for y in 0..<16 {
            for xx in 0..<16 {
                var s: Float = 0
                for dy in -r...r {
                    for dx in -r...r {
                        let yy = min(15, max(0, y + dy)), xc = min(15, max(0, xx + dx))
                        s += x[i * 256 + yy * 16 + xc]
                    }
                }
                out[i * 256 + y * 16 + xx] = s / Float((2 * r + 1) * (2 * r + 1))
            }
        }
    }
    return out
}

@Suite("FeatureMetrics: monotone in corruption (raw pixels of blob images)")
struct FeatureMetricsMonotoneTests {
    @Test("FD grows with Gaussian noise and with box blur; KID follows")
    func monotone() throws {
        let real = blobImages(700, seed: 71), held = blobImages(700, seed: 72)
        let stats = try FeatureStats(features: real, d: 256, threads: 2)
        func fd(_ x: [Float]) throws -> Double {
            try FeatureMetrics.frechetDistance(real: stats, fake: FeatureStats(features: x, d: 256), threads: 2)
        }
        let clean = try fd(held)
        let noisy = try [0.03, 0.1, 0.3].map { try fd(addNoise(held, std: $0, seed: 73)) }
        let blurred = try [1, 2, 3].map { try fd(boxBlur(held, radius: $0)) }
        #expect(clean < noisy[0] && noisy[0] < noisy[1] && noisy[1] < noisy[2], "\(clean) \(noisy)")
        #expect(clean < blurred[0] && blurred[0] < blurred[1] && blurred[1] < blurred[2], "\(clean) \(blurred)")

        let kidClean = try FeatureMetrics.kid(real: real, fake: held, d: 256, subsets: 10, subsetSize: 300, threads: 2)
        let kidNoisy = try FeatureMetrics.kid(real: real, fake: addNoise(held, std: 0.3, seed: 74), d: 256,
                                              subsets: 10, subsetSize: 300, threads: 2)
        #expect(kidClean.mean < kidNoisy.mean, "\(kidClean) \(kidNoisy)")
    }
}

// MARK: - KID

/// Brute-force unbiased MMD² of the full sets in Double.
private func naiveMMD(_ x: [Float], _ y: [Float], _ d: Int) -> Double {
    let n = x.count / d, m = y.count / d
    func k(_ a: [Float], _ i: Int, _ b: [Float], _ j: Int) -> Double {
        var s = 0.0
        for c in 0..<d { s += Double(a[i * d + c]) * Double(b[j * d + c]) }
        let t = s / Double(d) + 1
        return t * t * t
    }
    var xx = 0.0, yy = 0.0, xy = 0.0
    for i in 0..<n { for j in 0..<n where i != j { xx += k(x, i, x, j) } }
    for i in 0..<m { for j in 0..<m where i != j { yy += k(y, i, y, j) } }
    for i in 0..<n { for j in 0..<m { xy += k(x, i, y, j) } }
    return xx / Double(n * (n - 1)) + yy / Double(m * (m - 1)) - 2 * xy / Double(n * m)
}

@Suite("FeatureMetrics: KID")
struct FeatureMetricsKIDTests {
    @Test("subsets holding whole sets give exactly the full unbiased MMD² (any seed)")
    func matchesBruteForce() throws {
        let x = standardRows(120, 7, seed: 81), y = standardRows(120, 7, seed: 82, shift: 0.3)
        let oracle = naiveMMD(x, y, 7)
        for seed: UInt64 in [0, 5] {
            let k = try FeatureMetrics.kid(real: x, fake: y, d: 7, subsets: 4, subsetSize: 120, seed: seed)
            #expect(abs(k.mean - oracle) < 1e-5 * abs(oracle) + 1e-9, "\(k.mean) vs \(oracle)")
            #expect(k.std < 1e-6 * abs(oracle) + 1e-9)
            #expect(k.subsetSize == 120 && k.subsets == 4)
        }
    }

    @Test("≈ 0 for the same distribution, clearly positive for a shift; seeded and thread-independent")
    func sameAndShifted() throws {
        let x = standardRows(1500, 16, seed: 83), y = standardRows(1500, 16, seed: 84)
        let z = standardRows(1500, 16, seed: 85, shift: 0.5)
        let same = try FeatureMetrics.kid(real: x, fake: y, d: 16, subsets: 20, subsetSize: 500, seed: 1)
        let shifted = try FeatureMetrics.kid(real: x, fake: z, d: 16, subsets: 20, subsetSize: 500, seed: 1)
        #expect(abs(same.mean) < 3 * same.std + 1e-4, "\(same)")
        #expect(shifted.mean > 10 * (abs(same.mean) + same.std), "\(shifted) vs \(same)")
        let again = try FeatureMetrics.kid(real: x, fake: z, d: 16, subsets: 20, subsetSize: 500, seed: 1, threads: 2)
        #expect(again == shifted)
        let other = try FeatureMetrics.kid(real: x, fake: z, d: 16, subsets: 20, subsetSize: 500, seed: 2)
        #expect(other != shifted)
        // Default subset size is min(1000, n, m).
        let small = try FeatureMetrics.kid(real: Array(x.prefix(16 * 40)), fake: y, d: 16, subsets: 2)
        #expect(small.subsetSize == 40)
    }

    @Test("bad arguments throw")
    func validation() {
        let x = standardRows(10, 2, seed: 1)
        expectError("subsetSize") { try FeatureMetrics.kid(real: x, fake: x, d: 2, subsetSize: 11) }
        expectError("subsetSize") { try FeatureMetrics.kid(real: x, fake: x, d: 2, subsetSize: 1) }
        expectError("subsets") { try FeatureMetrics.kid(real: x, fake: x, d: 2, subsets: 0) }
        expectError("fake", "at least 2") { try FeatureMetrics.kid(real: x, fake: [1, 2], d: 2) }
        expectError("real", "whole number") { try FeatureMetrics.kid(real: [1, 2, 3], fake: x, d: 2) }
    }
}

// MARK: - Precision / recall, density / coverage

/// Brute-force Double oracle of all four manifold metrics (closed balls, self excluded).
private func naiveManifold(_ real: [Float], _ fake: [Float], _ d: Int, kPR: Int, kDC: Int)
    -> (precision: Double, recall: Double, density: Double, coverage: Double) {
    let n = real.count / d, m = fake.count / d
    func dist(_ a: [Float], _ i: Int, _ b: [Float], _ j: Int) -> Double {
        var s = 0.0
        for c in 0..<d { let e = Double(a[i * d + c]) - Double(b[j * d + c]); s += e * e }
        return s.squareRoot()
    }
    func radii(_ x: [Float], _ count: Int, _ k: Int) -> [Double] {
        (0..<count).map { i in (0..<count).filter { $0 != i }.map { dist(x, i, x, $0) }.sorted()[k - 1] }
    }
    let rPR = radii(real, n, kPR), rDC = radii(real, n, kDC), fPR = radii(fake, m, kPR)
    var precision = 0, recall = 0, balls = 0, coverage = 0
    for j in 0..<m where (0..<n).contains(where: { dist(fake, j, real, $0) <= rPR[$0] }) { precision += 1 }
    for i in 0..<n where (0..<m).contains(where: { dist(real, i, fake, $0) <= fPR[$0] }) { recall += 1 }
    for j in 0..<m { balls += (0..<n).filter { dist(fake, j, real, $0) <= rDC[$0] }.count }
    for i in 0..<n where (0..<m).contains(where: { dist(real, i, fake, $0) <= rDC[i] }) { coverage += 1 }
    return (Double(precision) / Double(m), Double(recall) / Double(n), Double(balls) / Double(kDC * m),
            Double(coverage) / Double(n))
}

/// n points of an equal mixture over `modes` of 8 well-separated clusters in d = 8: cluster c
/// is 30·e_c plus unit Gaussian noise in two coordinates (intrinsic dimension 2, so that 250
/// points per cluster sample it densely).
private func clusters(_ n: Int, modes: [Int], seed: UInt64) -> [Float] {
    var rng = Random(seed: seed)
    var out = [Float](repeating: 0, count: n * 8)
    for i in 0..<n {
        let mode = modes[i % modes.count]
        out[i * 8 + mode] = 30
        out[i * 8 + (mode + 1) % 8] += Float(rng.normal())
        out[i * 8 + (mode + 2) % 8] += Float(rng.normal())
    }
    return out
}

@Suite("FeatureMetrics: precision, recall, density, coverage")
struct FeatureMetricsManifoldTests {
    @Test("blocked GEMM passes agree with brute force across block boundaries, for any thread count")
    func matchesBruteForce() throws {
        // 1100 real rows cross the 1024-column and 128-row blocks; the fake set is shifted so
        // that every metric is strictly between 0 and 1.
        let real = standardRows(1100, 3, seed: 91), fake = standardRows(300, 3, seed: 92, shift: 0.7)
        let oracle = naiveManifold(real, fake, 3, kPR: 3, kDC: 5)
        for threads in [1, 2] {
            let m = try FeatureMetrics.manifold(real: real, fake: fake, d: 3, threads: threads)
            #expect(abs(m.precisionRecall.precision - oracle.precision) < 1e-12, "\(m) vs \(oracle)")
            #expect(abs(m.precisionRecall.recall - oracle.recall) < 1e-12, "\(m) vs \(oracle)")
            #expect(abs(m.densityCoverage.density - oracle.density) < 1e-12, "\(m) vs \(oracle)")
            #expect(abs(m.densityCoverage.coverage - oracle.coverage) < 1e-12, "\(m) vs \(oracle)")
            #expect(m.precisionRecall.k == 3 && m.densityCoverage.k == 5)
            #expect(oracle.precision > 0.05 && oracle.precision < 0.95 && oracle.recall > 0.05 && oracle.recall < 0.95)
            // The single-metric functions give the same numbers.
            #expect(try FeatureMetrics.precisionRecall(real: real, fake: fake, d: 3, threads: threads) == m.precisionRecall)
            #expect(try FeatureMetrics.densityCoverage(real: real, fake: fake, d: 3, threads: threads) == m.densityCoverage)
        }
    }

    @Test("identical sets → 1/1, far sets → 0/0")
    func extremes() throws {
        let x = standardRows(400, 6, seed: 93)
        let same = try FeatureMetrics.manifold(real: x, fake: x, d: 6)
        #expect(same.precisionRecall.precision == 1 && same.precisionRecall.recall == 1)
        #expect(same.densityCoverage.coverage == 1)
        let far = try FeatureMetrics.manifold(real: x, fake: standardRows(300, 6, seed: 94, shift: 50), d: 6)
        #expect(far.precisionRecall.precision == 0 && far.precisionRecall.recall == 0)
        #expect(far.densityCoverage.density == 0 && far.densityCoverage.coverage == 0)
    }

    @Test("fresh draw of the same distribution: precision and recall ≈ 1, density ≈ 1, coverage ≈ 1 − 2⁻ᵏ")
    func sameDistribution() throws {
        let real = clusters(2000, modes: Array(0..<8), seed: 95), fake = clusters(2000, modes: Array(0..<8), seed: 96)
        let m = try FeatureMetrics.manifold(real: real, fake: fake, d: 8, threads: 2)
        #expect(m.precisionRecall.precision > 0.95 && m.precisionRecall.recall > 0.95, "\(m)")
        #expect(abs(m.densityCoverage.density - 1) < 0.1, "\(m)")
        #expect(abs(m.densityCoverage.coverage - (1 - 1.0 / 32)) < 0.03, "\(m)")
    }

    @Test("a fake set on half of the real modes: precision ≈ 1, recall ≈ 0.5; density ≈ 1, coverage ≈ 0.5")
    func halfTheModes() throws {
        let real = clusters(2000, modes: Array(0..<8), seed: 97), fake = clusters(2000, modes: [0, 2, 4, 6], seed: 98)
        let m = try FeatureMetrics.manifold(real: real, fake: fake, d: 8, threads: 2)
        #expect(m.precisionRecall.precision > 0.95, "\(m)")
        #expect(abs(m.precisionRecall.recall - 0.5) < 0.04, "\(m)")
        #expect(m.precisionRecall.recall <= 0.5, "\(m)")  // no real point of the missing modes is reached
        #expect(abs(m.densityCoverage.density - 1) < 0.15, "\(m)")
        #expect(abs(m.densityCoverage.coverage - 0.5) < 0.03, "\(m)")
    }

    @Test("bad arguments throw")
    func validation() {
        let x = standardRows(5, 2, seed: 1), y = standardRows(3, 2, seed: 2)
        expectError("k", "1...2") { try FeatureMetrics.precisionRecall(real: x, fake: y, d: 2, k: 3) }
        expectError("k") { try FeatureMetrics.precisionRecall(real: x, fake: y, d: 2, k: 0) }
        expectError("k", "1...4") { try FeatureMetrics.densityCoverage(real: x, fake: y, d: 2, k: 5) }
        expectError("precisionRecallK") { try FeatureMetrics.manifold(real: x, fake: y, d: 2, precisionRecallK: 3, densityCoverageK: 1) }
        expectError("k", "1...100") { try FeatureMetrics.densityCoverage(real: standardRows(200, 1, seed: 3), fake: y, d: 1, k: 101) }
        expectError("densityCoverageK") { try FeatureMetrics.manifold(real: x, fake: y, d: 2, precisionRecallK: 1, densityCoverageK: 5) }
        expectError("fake", "at least 2") { try FeatureMetrics.precisionRecall(real: x, fake: [1, 1], d: 2, k: 1) }
        expectError("real", "whole number") { try FeatureMetrics.densityCoverage(real: [1, 2, 3], fake: y, d: 2) }
        expectError("threads") { try FeatureMetrics.densityCoverage(real: x, fake: y, d: 2, k: 1, threads: -1) }
        // Density/coverage accept a single fake vector.
        #expect(throws: Never.self) { try FeatureMetrics.densityCoverage(real: x, fake: [0, 0], d: 2, k: 2) }
    }
}

// MARK: - Memorisation

@Suite("FeatureMetrics: memorisation")
struct FeatureMetricsMemorisationTests {
    @Test("hand-computed 1-D example: linear quantile, strict threshold, median ratio")
    func handExample() throws {
        // Nearest-train distances: held-out 1, 2, 3, 4, 5; fake 1.5, 3, 10.
        let r = try FeatureMetrics.memorisation(train: [0, 100], heldOut: [1, 2, 3, 4, 5], fake: [1.5, 3, -10], d: 1,
                                                quantile: 0.25)
        #expect(r.threshold == 2)
        #expect(r.fractionBelowThreshold == 1.0 / 3)
        #expect(r.medianHeldOutDistance == 3 && r.medianFakeDistance == 3 && r.medianRatio == 1)
        #expect(r.nearestTrainIndex == [0, 0, 0])
        #expect(r.nearestTrainDistance == [1.5, 3, 10])
        let near = try FeatureMetrics.memorisation(train: [0, 100], heldOut: [1, 2, 3, 4, 5], fake: [99], d: 1)
        #expect(near.nearestTrainIndex == [1] && near.fractionBelowThreshold == 1)
    }

    @Test("copies of training vectors → fraction 1, ratio ≈ 0; a fresh draw → fraction ≈ q, ratio ≈ 1")
    func copiesAndFresh() throws {
        let d = 8
        let train = standardRows(2000, d, seed: 101), held = standardRows(1000, d, seed: 102)
        var rng = Random(seed: 103)
        let picks = (0..<500).map { _ in rng.int(below: 2000) }
        let copies = picks.flatMap { Array(train[($0 * d)..<($0 * d + d)]) }
        let c = try FeatureMetrics.memorisation(train: train, heldOut: held, fake: copies, d: d, threads: 2)
        #expect(c.fractionBelowThreshold == 1)
        #expect(c.medianRatio < 1e-3, "\(c.medianRatio)")
        #expect(c.nearestTrainIndex == picks)

        let fresh = standardRows(3000, d, seed: 104)
        let f = try FeatureMetrics.memorisation(train: train, heldOut: held, fake: fresh, d: d, threads: 2)
        #expect(f.fractionBelowThreshold > 0.002 && f.fractionBelowThreshold < 0.025, "\(f.fractionBelowThreshold)")
        #expect(abs(f.medianRatio - 1) < 0.1, "\(f.medianRatio)")
        #expect(f.quantile == 0.01 && f.nearestTrainDistance.count == 3000)
    }

    @Test("bad arguments throw")
    func validation() {
        expectError("quantile") { try FeatureMetrics.memorisation(train: [0], heldOut: [1, 2], fake: [3], d: 1, quantile: 1) }
        expectError("heldOut", "at least 2") { try FeatureMetrics.memorisation(train: [0], heldOut: [1], fake: [3], d: 1) }
        expectError("train", "at least 1") { try FeatureMetrics.memorisation(train: [], heldOut: [1, 2], fake: [3], d: 1) }
        expectError("heldOut", "duplicate") {
            try FeatureMetrics.memorisation(train: [0, 1], heldOut: [0, 1, 5], fake: [3], d: 1)
        }
    }
}
