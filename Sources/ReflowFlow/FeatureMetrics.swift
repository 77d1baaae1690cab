import Foundation
import ReflowEngine

// Sample-quality metrics on feature vectors (issue #9): Fréchet distance, KID, precision/recall,
// density/coverage and a memorisation check. reflowd computes the features with a classifier it
// trains itself, so these functions know nothing about networks: every set is a row-major
// `[Float]` matrix of `count / d` rows of `d` features.

/// Mean and unbiased covariance of a feature set: what the Fréchet distance needs of one side.
///
/// Compute it once for the real set and reuse it for every generated set (it is `Codable`, so
/// it can be cached on disk; decoding re-validates it).
public struct FeatureStats: Sendable, Equatable, Codable {
    /// Number of feature vectors n the statistics were computed from (≥ 2).
    public let count: Int
    /// Feature dimension d.
    public let dimension: Int
    /// μ = (1/n) Σ xᵢ, length d.
    public let mean: [Double]
    /// Σ = (1/(n−1)) Σ (xᵢ − μ)(xᵢ − μ)ᵀ, row-major d × d, symmetric.
    public let covariance: [Double]

    /// Statistics of the `n = features.count / d` rows of `features`.
    ///
    /// Everything is Double: the mean, the centring and the Gram matrix Σ (xᵢ − μ)(xᵢ − μ)ᵀ
    /// (a blocked upper-triangle kernel; n = 10 000, d = 512 takes ≈ 0.35 s on 2 threads, 0.45 s on 1).
    /// Results match a float64 NumPy `np.cov` to rounding, whatever `threads` is.
    ///
    /// - Parameters:
    ///   - features: n·d values, row-major, all finite.
    ///   - d: feature dimension, 1...``FeatureMetrics/maxCovarianceDimension``.
    ///   - threads: worker threads for the GEMMs (≥ 1).
    /// - Throws: ``MetricError`` for n < 2, a count that is not a multiple of d, d out of range,
    ///   a non-finite value or threads < 1.
    public init(features: [Float], d: Int, threads: Int = 1) throws(MetricError) {
        try FeatureMetrics.checkThreads(threads)
        try FeatureMetrics.checkCovarianceDimension(d, "d")
        let n = try FeatureMetrics.rows(features, d: d, "features", atLeast: 2)
        count = n
        dimension = d
        var mu = [Double](repeating: 0, count: d)
        features.withUnsafeBufferPointer { xb in
            for i in 0..<n {
                let row = xb.baseAddress! + i * d
                for j in 0..<d { mu[j] += Double(row[j]) }
            }
        }
        for j in 0..<d { mu[j] /= Double(n) }
        mean = mu

        let inv = 1 / Double(n - 1)
        covariance = FeatureMetrics.centredGram(features, n, d, mu, threads: threads).map { $0 * inv }
    }

    /// Statistics given directly (exact population values in tests, or a cache).
    ///
    /// - Throws: ``MetricError`` for count < 2, a dimension out of range, lengths that do not
    ///   match, non-finite values or a covariance that is not symmetric (to 1e-9 relative).
    public init(count: Int, mean: [Double], covariance: [Double]) throws(MetricError) {
        guard count >= 2 else {
            throw MetricError(argument: "count", message: "needs at least 2 samples, got \(count)")
        }
        let d = mean.count
        try FeatureMetrics.checkCovarianceDimension(d, "mean")
        guard covariance.count == d * d else {
            throw MetricError(argument: "covariance", message: "holds \(covariance.count) values, expected \(d)² for \(d) means")
        }
        if let bad = mean.firstIndex(where: { !$0.isFinite }) {
            throw MetricError(argument: "mean[\(bad)]", message: "must be finite, got \(mean[bad])")
        }
        if let bad = covariance.firstIndex(where: { !$0.isFinite }) {
            throw MetricError(argument: "covariance", message: "entry (\(bad / d), \(bad % d)) is not finite")
        }
        let scale = covariance.reduce(0) { max($0, abs($1)) }
        for i in 0..<d {
            for j in (i + 1)..<d where abs(covariance[i * d + j] - covariance[j * d + i]) > 1e-9 * scale {
                throw MetricError(argument: "covariance", message: "is not symmetric at (\(i), \(j))")
            }
        }
        self.count = count
        dimension = d
        self.mean = mean
        self.covariance = covariance
    }

    private enum CodingKeys: String, CodingKey { case count, dimension, mean, covariance }

    /// Decodes and re-validates (a cached file may be stale or damaged).
    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        let count = try c.decode(Int.self, forKey: .count)
        let dimension = try c.decode(Int.self, forKey: .dimension)
        let mean = try c.decode([Double].self, forKey: .mean)
        let covariance = try c.decode([Double].self, forKey: .covariance)
        guard dimension == mean.count else {
            throw DecodingError.dataCorruptedError(forKey: .dimension, in: c,
                                                   debugDescription: "dimension \(dimension) but \(mean.count) means")
        }
        do {
            try self.init(count: count, mean: mean, covariance: covariance)
        } catch {
            throw DecodingError.dataCorruptedError(forKey: .covariance, in: c, debugDescription: error.description)
        }
    }
}

/// Kernel Inception Distance, here on reflowd's own features: the unbiased MMD² estimate with
/// the cubic polynomial kernel, over random subsets. See ``FeatureMetrics/kid(real:fake:d:subsets:subsetSize:seed:threads:)``.
public struct KernelDistance: Sendable, Equatable, Codable {
    /// Mean of the per-subset MMD² estimates (can be slightly negative: the estimator is unbiased).
    public var mean: Double
    /// Standard deviation of the per-subset estimates (population form, divisor = subsets).
    public var std: Double
    /// Number of subsets drawn.
    public var subsets: Int
    /// Rows per subset, from each set.
    public var subsetSize: Int

    public init(mean: Double, std: Double, subsets: Int, subsetSize: Int) {
        self.mean = mean
        self.std = std
        self.subsets = subsets
        self.subsetSize = subsetSize
    }
}

/// Improved precision and recall (Kynkäänniemi et al. 2019). See ``FeatureMetrics/precisionRecall(real:fake:d:k:threads:)``.
public struct PrecisionRecall: Sendable, Equatable, Codable {
    /// Fraction of generated vectors inside the real k-NN manifold.
    public var precision: Double
    /// Fraction of real vectors inside the generated k-NN manifold.
    public var recall: Double
    /// The k of the k-NN radii.
    public var k: Int

    public init(precision: Double, recall: Double, k: Int) {
        self.precision = precision
        self.recall = recall
        self.k = k
    }
}

/// Density and coverage (Naeem et al. 2020). See ``FeatureMetrics/densityCoverage(real:fake:d:k:threads:)``.
public struct DensityCoverage: Sendable, Equatable, Codable {
    /// (1/(k·m)) Σⱼ #{i : fⱼ ∈ B(rᵢ, NNDₖ(rᵢ))}: ≈ 1 when fake matches real, above 1 when fake
    /// crowds dense real regions, 0 when it is off the real manifold.
    public var density: Double
    /// Fraction of real vectors whose k-NN ball holds at least one generated vector.
    public var coverage: Double
    /// The k of the k-NN radii.
    public var k: Int

    public init(density: Double, coverage: Double, k: Int) {
        self.density = density
        self.coverage = coverage
        self.k = k
    }
}

/// Both manifold metrics from one set of distance passes. See ``FeatureMetrics/manifold(real:fake:d:precisionRecallK:densityCoverageK:threads:)``.
public struct ManifoldMetrics: Sendable, Equatable, Codable {
    public var precisionRecall: PrecisionRecall
    public var densityCoverage: DensityCoverage

    public init(precisionRecall: PrecisionRecall, densityCoverage: DensityCoverage) {
        self.precisionRecall = precisionRecall
        self.densityCoverage = densityCoverage
    }
}

/// How close generated samples sit to the training set, calibrated by held-out real data.
/// See ``FeatureMetrics/memorisation(train:heldOut:fake:d:quantile:threads:)`` for the definitions.
public struct MemorisationReport: Sendable, Equatable, Codable {
    /// The quantile q of held-out nearest-train distances used as the threshold (default 0.01).
    public var quantile: Double
    /// τ: the q-quantile of the held-out vectors' nearest-train distances.
    public var threshold: Double
    /// Fraction of generated vectors whose nearest-train distance is < τ. About q when the
    /// generator is as far from the training set as fresh data; near 1 when it copies.
    public var fractionBelowThreshold: Double
    /// Median of the generated vectors' nearest-train distances.
    public var medianFakeDistance: Double
    /// Median of the held-out vectors' nearest-train distances.
    public var medianHeldOutDistance: Double
    /// `medianFakeDistance / medianHeldOutDistance`: ≈ 1 for fresh data, → 0 for copies.
    public var medianRatio: Double
    /// For each generated vector, the row of its nearest training vector (lowest row on ties).
    public var nearestTrainIndex: [Int]
    /// For each generated vector, the Euclidean distance to that training vector.
    public var nearestTrainDistance: [Double]

    public init(quantile: Double, threshold: Double, fractionBelowThreshold: Double, medianFakeDistance: Double,
                medianHeldOutDistance: Double, medianRatio: Double, nearestTrainIndex: [Int],
                nearestTrainDistance: [Double]) {
        self.quantile = quantile
        self.threshold = threshold
        self.fractionBelowThreshold = fractionBelowThreshold
        self.medianFakeDistance = medianFakeDistance
        self.medianHeldOutDistance = medianHeldOutDistance
        self.medianRatio = medianRatio
        self.nearestTrainIndex = nearestTrainIndex
        self.nearestTrainDistance = nearestTrainDistance
    }
}

/// Distribution metrics between a real and a generated feature set.
///
/// **Inputs.** Every set is a row-major `[Float]` of `count / d` vectors of dimension `d`. Sets
/// are validated (finite, a whole number of rows, enough rows) and bad input throws
/// ``MetricError`` naming the argument; nothing here traps on caller data.
///
/// **Precision.** The Fréchet distance is Double end to end (means, covariances, matrix
/// products, eigendecompositions); it matches a float64 NumPy/SciPy computation on the same
/// Float features to ~1e-13 relative. KID and the k-NN metrics take their dot products from
/// single-precision `BLAS.gemm` (≈ 1e-7 relative per dot product); kernel values, sums, squared
/// distances ‖a‖² + ‖b‖² − 2·a·b (norms in Double, clamped at 0) and quantiles are Double.
///
/// **Threads.** Every function takes `threads` (≥ 1) for its heavy loops on ``ComputePool``:
/// the covariance kernel, the Double matrix products of the Fréchet distance, KID subsets (one subset
/// per worker) and the pairwise-distance passes (query rows split across workers at block
/// boundaries). Every number is computed by the same operations whatever `threads` is, so the
/// results do not depend on it.
///
/// **Cost** (n real, m fake, dimension d): Fréchet O((n + m)·d² + d³); KID
/// O(subsets · subsetSize² · d); precision/recall and density/coverage O((n² + m² + n·m)·d) with
/// O(block) memory (distances are never stored whole); memorisation O((h + m)·t·d).
public enum FeatureMetrics {
    /// Largest feature dimension for covariance-based metrics (a d × d Double matrix and an
    /// O(d³) eigendecomposition: d = 2048 is 32 MiB and a few seconds).
    public static let maxCovarianceDimension = 2048
    /// Largest k for k-NN radii (the papers use 3 and 5).
    public static let maxNeighbours = 100
    /// Most KID subsets.
    public static let maxSubsets = 10_000

    // MARK: Fréchet distance

    /// The Fréchet distance between Gaussians fitted to the two sets (FID on reflowd's features):
    ///
    ///     FD = ‖μr − μf‖² + tr(Σr + Σf − 2 (Σr^{1/2} Σf Σr^{1/2})^{1/2})
    ///
    /// Computed with symmetric eigendecompositions only: A = Σr^{1/2} from Σr = V Λ Vᵀ (negative
    /// rounding-level eigenvalues clamped to 0), then the eigenvalues μᵢ of M = A Σf A, and
    /// tr M^{1/2} = Σ √max(μᵢ, 0). The result is clamped at 0 (it is a squared distance).
    public static func frechetDistance(real: FeatureStats, fake: FeatureStats, threads: Int = 1) throws(MetricError) -> Double {
        try checkThreads(threads)
        guard real.dimension == fake.dimension else {
            throw MetricError(argument: "fake", message: "dimension \(fake.dimension) differs from real's \(real.dimension)")
        }
        let d = real.dimension
        var meanTerm = 0.0
        for j in 0..<d {
            let e = real.mean[j] - fake.mean[j]
            meanTerm += e * e
        }
        var traces = 0.0
        for j in 0..<d { traces += real.covariance[j * d + j] + fake.covariance[j * d + j] }

        let eig = try SymmetricEigen(matrix: real.covariance, order: d)
        var scaled = eig.vectors  // row k: √λk · vkᵀ
        for k in 0..<d {
            let s = max(eig.values[k], 0).squareRoot()
            for j in 0..<d { scaled[k * d + j] *= s }
        }
        let root = multiply(eig.vectors, transposeA: true, scaled, d, threads: threads)  // V √Λ Vᵀ
        let m = multiply(multiply(root, transposeA: false, fake.covariance, d, threads: threads),
                         transposeA: false, root, d, threads: threads)
        let mu = try SymmetricEigen(matrix: m, order: d, computeVectors: false)
        var traceRoot = 0.0
        for v in mu.values { traceRoot += max(v, 0).squareRoot() }
        return max(0, meanTerm + traces - 2 * traceRoot)
    }

    /// ``frechetDistance(real:fake:threads:)`` of the statistics of two feature sets.
    /// - Throws: ``MetricError`` as ``FeatureStats/init(features:d:threads:)``.
    public static func frechetDistance(real: [Float], fake: [Float], d: Int, threads: Int = 1) throws(MetricError) -> Double {
        let r: FeatureStats, f: FeatureStats
        do { r = try FeatureStats(features: real, d: d, threads: threads) } catch { throw renamed(error, "real") }
        do { f = try FeatureStats(features: fake, d: d, threads: threads) } catch { throw renamed(error, "fake") }
        return try frechetDistance(real: r, fake: f, threads: threads)
    }

    // MARK: KID

    /// KID: the unbiased MMD² between the sets with the kernel k(x, y) = (xᵀy/d + 1)³, averaged
    /// over random subsets.
    ///
    /// Each subset draws `subsetSize` = s rows from each set without replacement, independently
    /// per subset (subset t uses the t-th number of `Random(seed:)` as its own seed, so the
    /// result depends on the seed, not on `threads`), and gives
    ///
    ///     MMD²ᵤ = Σ_{i≠j} k(xᵢ,xⱼ)/(s(s−1)) + Σ_{i≠j} k(yᵢ,yⱼ)/(s(s−1)) − 2 Σ_{i,j} k(xᵢ,yⱼ)/s²
    ///
    /// The report is the mean and the (population) standard deviation of these estimates.
    /// Dot products are Float GEMMs; kernel values and sums are Double.
    ///
    /// - Parameters:
    ///   - subsets: number of subsets, 1...``maxSubsets`` (default 100).
    ///   - subsetSize: rows per subset, 2...min(n, m); nil means min(1000, n, m).
    ///   - seed: seed of the subset draws.
    ///   - threads: subsets run in parallel, one per worker.
    public static func kid(real: [Float], fake: [Float], d: Int, subsets: Int = 100, subsetSize: Int? = nil,
                           seed: UInt64 = 0, threads: Int = 1) throws(MetricError) -> KernelDistance {
        try checkThreads(threads)
        let n = try rows(real, d: d, "real", atLeast: 2)
        let m = try rows(fake, d: d, "fake", atLeast: 2)
        guard (1...maxSubsets).contains(subsets) else {
            throw MetricError(argument: "subsets", message: "must be in 1...\(maxSubsets), got \(subsets)")
        }
        let s = subsetSize ?? min(1000, n, m)
        guard s >= 2, s <= min(n, m) else {
            throw MetricError(argument: "subsetSize", message: "must be in 2...\(min(n, m)) (the smaller set), got \(s)")
        }
        // One seed per subset from the master stream: subset t's rows do not depend on `threads`.
        var master = Random(seed: seed)
        let subsetSeeds = (0..<subsets).map { _ in master.next() }
        var estimates = [Double](repeating: 0, count: subsets)
        estimates.withUnsafeMutableBufferPointer { eb in
            let out = SendableMutablePointer(eb.baseAddress)
            parallelChunks(count: subsets, threads: threads) { range in
                var x = [Float](repeating: 0, count: s * d), y = [Float](repeating: 0, count: s * d)
                var g = [Float](repeating: 0, count: s * s)
                var permR = [Int](repeating: 0, count: n), permF = [Int](repeating: 0, count: m)
                for t in range {
                    var rng = Random(seed: subsetSeeds[t])
                    for i in 0..<n { permR[i] = i }
                    for i in 0..<m { permF[i] = i }
                    partialShuffle(&permR, s, &rng)
                    partialShuffle(&permF, s, &rng)
                    for i in 0..<s {
                        let ri = permR[i], fi = permF[i]
                        for j in 0..<d {
                            x[i * d + j] = real[ri * d + j]
                            y[i * d + j] = fake[fi * d + j]
                        }
                    }
                    let kxx = kernelSum(x, x, s, d, &g, skipDiagonal: true)
                    let kyy = kernelSum(y, y, s, d, &g, skipDiagonal: true)
                    let kxy = kernelSum(x, y, s, d, &g, skipDiagonal: false)
                    let ds = Double(s)
                    out.base![t] = (kxx + kyy) / (ds * (ds - 1)) - 2 * kxy / (ds * ds)
                }
            }
        }
        let mean = estimates.reduce(0, +) / Double(subsets)
        let variance = estimates.reduce(0) { $0 + ($1 - mean) * ($1 - mean) } / Double(subsets)
        return KernelDistance(mean: mean, std: variance.squareRoot(), subsets: subsets, subsetSize: s)
    }

    /// Σ k(aᵢ, bⱼ) over all s × s pairs (i ≠ j with `skipDiagonal`), k = (aᵀb/d + 1)³.
    private static func kernelSum(_ a: [Float], _ b: [Float], _ s: Int, _ d: Int, _ g: inout [Float],
                                  skipDiagonal: Bool) -> Double {
        a.withUnsafeBufferPointer { ab in
            b.withUnsafeBufferPointer { bb in
                g.withUnsafeMutableBufferPointer { gb in
                    BLAS.gemm(transA: false, transB: true, m: s, n: s, k: d, a: ab.baseAddress!, lda: d,
                              b: bb.baseAddress!, ldb: d, c: gb.baseAddress!, ldc: s, threads: 1)
                }
            }
        }
        let invD = 1 / Double(d)
        var total = 0.0
        for i in 0..<s {
            var row = 0.0
            for j in 0..<s where !(skipDiagonal && i == j) {
                let t = Double(g[i * s + j]) * invD + 1
                row += t * t * t
            }
            total += row
        }
        return total
    }

    /// Moves a uniform random s-subset of `perm` (without replacement) to its front.
    private static func partialShuffle(_ perm: inout [Int], _ s: Int, _ rng: inout Random) {
        let n = perm.count
        for i in 0..<s {
            let j = i + rng.int(below: n - i)
            perm.swapAt(i, j)
        }
    }

    // MARK: Precision / recall, density / coverage

    /// Improved precision and recall (Kynkäänniemi et al. 2019).
    ///
    /// Each set's manifold is the union of closed balls B(x, NNDₖ(x)) around its vectors, where
    /// NNDₖ(x) is the Euclidean distance from x to its k-th nearest *other* vector of the same
    /// set (the vector itself is excluded by index, so duplicates count as neighbours).
    /// Precision = fraction of fake vectors inside the real manifold; recall = fraction of real
    /// vectors inside the fake manifold.
    ///
    /// - Parameter k: 1...min(n − 1, m − 1, ``maxNeighbours``) (default 3).
    /// - Throws: ``MetricError`` for fewer than k + 1 vectors in either set, a dimension mismatch
    ///   (a count that is not a multiple of d), non-finite values, or k or threads out of range.
    public static func precisionRecall(real: [Float], fake: [Float], d: Int, k: Int = 3,
                                       threads: Int = 1) throws(MetricError) -> PrecisionRecall {
        try manifoldPasses(real: real, fake: fake, d: d, prK: k, dcK: nil, threads: threads).pr!
    }

    /// Density and coverage (Naeem et al. 2020), on the real set's k-NN balls
    /// B(rᵢ, NNDₖ(rᵢ)) (closed; the vector itself excluded as in
    /// ``precisionRecall(real:fake:d:k:threads:)``):
    ///
    ///     density  = (1/(k·m)) Σⱼ Σᵢ 1[fⱼ ∈ B(rᵢ, NNDₖ(rᵢ))]
    ///     coverage = (1/n) Σᵢ 1[∃ j: fⱼ ∈ B(rᵢ, NNDₖ(rᵢ))]
    ///
    /// - Parameter k: 1...min(n − 1, ``maxNeighbours``) (default 5); m ≥ 1.
    public static func densityCoverage(real: [Float], fake: [Float], d: Int, k: Int = 5,
                                       threads: Int = 1) throws(MetricError) -> DensityCoverage {
        try manifoldPasses(real: real, fake: fake, d: d, prK: nil, dcK: k, threads: threads).dc!
    }

    /// Precision/recall and density/coverage together: three distance passes (real–real,
    /// fake–fake, fake–real) instead of five. Same definitions and limits as the two functions.
    public static func manifold(real: [Float], fake: [Float], d: Int, precisionRecallK: Int = 3,
                                densityCoverageK: Int = 5, threads: Int = 1) throws(MetricError) -> ManifoldMetrics {
        let r = try manifoldPasses(real: real, fake: fake, d: d, prK: precisionRecallK, dcK: densityCoverageK,
                                   threads: threads)
        return ManifoldMetrics(precisionRecall: r.pr!, densityCoverage: r.dc!)
    }

    private static func manifoldPasses(real: [Float], fake: [Float], d: Int, prK: Int?, dcK: Int?,
                                       threads: Int) throws(MetricError) -> (pr: PrecisionRecall?, dc: DensityCoverage?) {
        try checkThreads(threads)
        let n = try rows(real, d: d, "real", atLeast: 2)
        let m = try rows(fake, d: d, "fake", atLeast: prK == nil ? 1 : 2)
        if let k = prK {
            try checkNeighbours(k, dcK == nil ? "k" : "precisionRecallK", n: n, m: m)
        }
        if let k = dcK {
            try checkNeighbours(k, prK == nil ? "k" : "densityCoverageK", n: n, m: nil)
        }
        let realNorms = rowNorms(real, n, d), fakeNorms = rowNorms(fake, m, d)
        let kReal = max(prK ?? 0, dcK ?? 0)
        let realKNN = kNearest(query: real, queryNorms: realNorms, reference: real, referenceNorms: realNorms,
                               d: d, k: kReal, excludeSelf: true, threads: threads).distances
        func radii(_ knn: [Double], _ kStride: Int, _ k: Int, _ count: Int) -> [Double] {
            (0..<count).map { knn[$0 * kStride + k - 1] }
        }
        let realPR = prK.map { radii(realKNN, kReal, $0, n) }
        let realDC = dcK.map { radii(realKNN, kReal, $0, n) }
        let fakePR = prK.map { k in
            radii(kNearest(query: fake, queryNorms: fakeNorms, reference: fake, referenceNorms: fakeNorms,
                           d: d, k: k, excludeSelf: true, threads: threads).distances, k, k, m)
        }
        let cross = crossPass(fake: fake, fakeNorms: fakeNorms, real: real, realNorms: realNorms, d: d,
                              realPR: realPR, realDC: realDC, fakePR: fakePR, threads: threads)
        var pr: PrecisionRecall?, dc: DensityCoverage?
        if let k = prK {
            pr = PrecisionRecall(precision: Double(cross.precisionHits) / Double(m),
                                 recall: Double(cross.recallHits) / Double(n), k: k)
        }
        if let k = dcK {
            dc = DensityCoverage(density: Double(cross.densityCount) / Double(k * m),
                                 coverage: Double(cross.coverageHits) / Double(n), k: k)
        }
        return (pr, dc)
    }

    /// One pass over all (fake, real) pairs. Squared radii; nil skips that statistic.
    private static func crossPass(fake: [Float], fakeNorms: [Double], real: [Float], realNorms: [Double], d: Int,
                                  realPR: [Double]?, realDC: [Double]?, fakePR: [Double]?, threads: Int)
        -> (precisionHits: Int, recallHits: Int, densityCount: Int, coverageHits: Int) {
        let m = fakeNorms.count, n = realNorms.count
        let blocks = (m + queryBlock - 1) / queryBlock
        let parts = max(1, min(threads, blocks))
        let doPR = realPR != nil, doDC = realDC != nil
        let rPR = realPR ?? [], rDC = realDC ?? [], fPR = fakePR ?? []
        // Per fake row: inside the real PR manifold; number of real DC balls holding it.
        var inReal = [UInt8](repeating: 0, count: m)
        var ballCount = [Int](repeating: 0, count: m)
        // Per part and real row: covered by some fake PR ball; nearest fake (squared).
        var covered = [UInt8](repeating: 0, count: doPR ? parts * n : 0)
        var nearest = [Double](repeating: .infinity, count: doDC ? parts * n : 0)
        inReal.withUnsafeMutableBufferPointer { ib in
          ballCount.withUnsafeMutableBufferPointer { bb in
            covered.withUnsafeMutableBufferPointer { cb in
              nearest.withUnsafeMutableBufferPointer { nb in
                let pIn = SendableMutablePointer(ib.baseAddress), pBall = SendableMutablePointer(bb.baseAddress)
                let pCov = SendableMutablePointer(cb.baseAddress), pNear = SendableMutablePointer(nb.baseAddress)
                parallelChunks(count: parts, threads: parts) { partRange in
                    for part in partRange {
                        // Whole query blocks per part: the GEMM blocks do not depend on `parts`.
                        let lo = min(m, blocks * part / parts * queryBlock)
                        let hi = min(m, blocks * (part + 1) / parts * queryBlock)
                        let cov = doPR ? pCov.base! + part * n : nil
                        let near = doDC ? pNear.base! + part * n : nil
                        scanDistances(query: fake, queryNorms: fakeNorms, rows: lo..<hi,
                                      reference: real, referenceNorms: realNorms, d: d) { qr, rr, dist in
                            for q in qr {
                                let row = dist + (q - qr.lowerBound) * rr.count
                                var hit = false
                                var balls = 0
                                let fr = doPR ? fPR[q] : 0
                                for (c, r) in rr.enumerated() {
                                    let v = row[c]
                                    if doPR {
                                        if v <= rPR[r] { hit = true }
                                        if v <= fr { cov![r] = 1 }
                                    }
                                    if doDC {
                                        if v <= rDC[r] { balls += 1 }
                                        if v < near![r] { near![r] = v }
                                    }
                                }
                                if hit { pIn.base![q] = 1 }
                                pBall.base![q] += balls
                            }
                        }
                    }
                }
              }
            }
          }
        }
        var recallHits = 0, coverageHits = 0
        for r in 0..<n {
            if doPR, (0..<parts).contains(where: { covered[$0 * n + r] != 0 }) { recallHits += 1 }
            if doDC {
                var best = Double.infinity
                for p in 0..<parts { best = min(best, nearest[p * n + r]) }
                if best <= rDC[r] { coverageHits += 1 }
            }
        }
        return (inReal.reduce(0) { $0 + Int($1) }, recallHits, ballCount.reduce(0, +), coverageHits)
    }

    // MARK: Memorisation

    /// A memorisation check against the training set, calibrated with held-out real data.
    ///
    /// With dist(x, T) = minₜ ‖x − t‖ (Euclidean) the distance of x to its nearest training
    /// vector, hᵢ = dist(heldOutᵢ, T) and fⱼ = dist(fakeⱼ, T):
    ///
    /// - `threshold` τ = the `quantile`-quantile of {hᵢ}, interpolated linearly between order
    ///   statistics at position q·(H − 1) (the common "linear" definition);
    /// - `fractionBelowThreshold` = (1/m) #{j : fⱼ < τ} (strict);
    /// - `medianRatio` = median{fⱼ} / median{hᵢ} (medians by the same interpolation).
    ///
    /// A generator that produces fresh samples of the data distribution gives a fraction ≈ q and
    /// a ratio ≈ 1; one that copies training vectors gives a fraction → 1 and a ratio → 0.
    /// The vectors can be classifier features or raw pixels; the function only sees vectors.
    ///
    /// - Parameters:
    ///   - train: the training vectors (≥ 1).
    ///   - heldOut: real vectors not used for training (≥ 2).
    ///   - fake: generated vectors (≥ 1).
    ///   - quantile: q in (0, 1), default 0.01.
    /// - Throws: ``MetricError`` for bad shapes or values, q out of range, or a held-out median
    ///   distance of 0 (at least half of the held-out vectors duplicate training vectors; the
    ///   ratio is undefined).
    public static func memorisation(train: [Float], heldOut: [Float], fake: [Float], d: Int,
                                    quantile: Double = 0.01, threads: Int = 1) throws(MetricError) -> MemorisationReport {
        try checkThreads(threads)
        let t = try rows(train, d: d, "train", atLeast: 1)
        let h = try rows(heldOut, d: d, "heldOut", atLeast: 2)
        let m = try rows(fake, d: d, "fake", atLeast: 1)
        guard quantile > 0, quantile < 1 else {
            throw MetricError(argument: "quantile", message: "must be in (0, 1), got \(quantile)")
        }
        let trainNorms = rowNorms(train, t, d)
        let held = kNearest(query: heldOut, queryNorms: rowNorms(heldOut, h, d), reference: train,
                            referenceNorms: trainNorms, d: d, k: 1, excludeSelf: false, threads: threads)
        let gen = kNearest(query: fake, queryNorms: rowNorms(fake, m, d), reference: train,
                           referenceNorms: trainNorms, d: d, k: 1, excludeSelf: false, threads: threads)
        let heldDist = held.distances.map { $0.squareRoot() }
        let fakeDist = gen.distances.map { $0.squareRoot() }
        let sortedHeld = heldDist.sorted(), sortedFake = fakeDist.sorted()
        let tau = interpolatedQuantile(sortedHeld, quantile)
        let medHeld = interpolatedQuantile(sortedHeld, 0.5), medFake = interpolatedQuantile(sortedFake, 0.5)
        guard medHeld > 0 else {
            throw MetricError(argument: "heldOut", message: "at least half of the held-out vectors duplicate a training vector (median nearest distance 0)")
        }
        let below = fakeDist.reduce(0) { $0 + ($1 < tau ? 1 : 0) }
        return MemorisationReport(quantile: quantile, threshold: tau, fractionBelowThreshold: Double(below) / Double(m),
                                  medianFakeDistance: medFake, medianHeldOutDistance: medHeld,
                                  medianRatio: medFake / medHeld, nearestTrainIndex: gen.indices,
                                  nearestTrainDistance: fakeDist)
    }

    /// The q-quantile of ascending `sorted` (non-empty), linear between order statistics at q·(N − 1).
    static func interpolatedQuantile(_ sorted: [Double], _ q: Double) -> Double {
        let pos = q * Double(sorted.count - 1)
        let lo = Int(pos.rounded(.down)), hi = min(lo + 1, sorted.count - 1)
        let w = pos - Double(lo)
        return sorted[lo] + w * (sorted[hi] - sorted[lo])
    }

    // MARK: Validation

    /// Number of rows of `x` as an [n, d] matrix; throws unless it has ≥ `atLeast` finite rows.
    static func rows(_ x: [Float], d: Int, _ name: String, atLeast minRows: Int) throws(MetricError) -> Int {
        guard d >= 1 else { throw MetricError(argument: "d", message: "must be at least 1, got \(d)") }
        guard x.count % d == 0 else {
            throw MetricError(argument: name, message: "holds \(x.count) values, not a whole number of rows of d = \(d)")
        }
        let n = x.count / d
        guard n >= minRows else {
            throw MetricError(argument: name, message: "needs at least \(minRows) vectors, got \(n)")
        }
        if let bad = x.firstIndex(where: { !$0.isFinite }) {
            throw MetricError(argument: name, message: "row \(bad / d) holds a non-finite value (\(x[bad]))")
        }
        return n
    }

    static func checkThreads(_ threads: Int) throws(MetricError) {
        guard threads >= 1 else { throw MetricError(argument: "threads", message: "must be at least 1, got \(threads)") }
    }

    static func checkCovarianceDimension(_ d: Int, _ name: String) throws(MetricError) {
        guard (1...maxCovarianceDimension).contains(d) else {
            throw MetricError(argument: name, message: "dimension \(d) is outside 1...\(maxCovarianceDimension)")
        }
    }

    /// k-NN radii within a set need k other vectors: k ≤ n − 1 (and ≤ m − 1 when given).
    static func checkNeighbours(_ k: Int, _ name: String, n: Int, m: Int?) throws(MetricError) {
        let limit = min(maxNeighbours, n - 1, (m ?? n) - 1)
        guard k >= 1, k <= limit else {
            throw MetricError(argument: name, message: "must be in 1...\(limit) (each set needs more than k vectors), got \(k)")
        }
    }

    static func renamed(_ e: MetricError, _ argument: String) -> MetricError {
        e.argument == "features" ? MetricError(argument: argument, message: e.message) : e
    }

    // MARK: Kernels

    /// Rows of each GEMM block of query vectors, and columns (reference vectors) per block.
    static let queryBlock = 128
    static let referenceBlock = 1024

    /// ‖xᵢ‖² in Double for each row.
    static func rowNorms(_ x: [Float], _ n: Int, _ d: Int) -> [Double] {
        x.withUnsafeBufferPointer { xb in
            (0..<n).map { i in
                let row = xb.baseAddress! + i * d
                var s = 0.0
                for j in 0..<d { s += Double(row[j]) * Double(row[j]) }
                return s
            }
        }
    }

    /// Calls `body(queryRows, referenceRows, dist)` for consecutive blocks covering
    /// `rows` × all reference rows, `dist` holding squared distances row-major with row stride
    /// `referenceRows.count`. Serial; callers split `rows` across workers.
    static func scanDistances(query: [Float], queryNorms: [Double], rows: Range<Int>, reference: [Float],
                              referenceNorms: [Double], d: Int,
                              _ body: (Range<Int>, Range<Int>, UnsafePointer<Double>) -> Void) {
        let nr = referenceNorms.count
        guard !rows.isEmpty, nr > 0 else { return }
        let qbMax = min(queryBlock, rows.count), rbMax = min(referenceBlock, nr)
        let dots = UnsafeMutablePointer<Float>.allocate(capacity: qbMax * rbMax)
        let dist = UnsafeMutablePointer<Double>.allocate(capacity: qbMax * rbMax)
        defer { dots.deallocate(); dist.deallocate() }
        query.withUnsafeBufferPointer { qb in
            reference.withUnsafeBufferPointer { rb in
                for q0 in stride(from: rows.lowerBound, to: rows.upperBound, by: qbMax) {
                    let qr = q0..<min(q0 + qbMax, rows.upperBound)
                    for r0 in stride(from: 0, to: nr, by: rbMax) {
                        let rr = r0..<min(r0 + rbMax, nr)
                        BLAS.gemm(transA: false, transB: true, m: qr.count, n: rr.count, k: d,
                                  a: qb.baseAddress! + q0 * d, lda: d, b: rb.baseAddress! + r0 * d, ldb: d,
                                  c: dots, ldc: rr.count, threads: 1)
                        for (i, q) in qr.enumerated() {
                            let nq = queryNorms[q]
                            let dr = dots + i * rr.count, out = dist + i * rr.count
                            for (j, r) in rr.enumerated() {
                                out[j] = max(0, nq + referenceNorms[r] - 2 * Double(dr[j]))
                            }
                        }
                        body(qr, rr, dist)
                    }
                }
            }
        }
    }

    /// For each query row the `k` smallest squared distances to reference rows, ascending, and
    /// their rows (lowest row first on ties). `excludeSelf`: query and reference are the same
    /// set and row q is not its own neighbour. Requires k ≤ reference rows (− 1 with excludeSelf).
    static func kNearest(query: [Float], queryNorms: [Double], reference: [Float], referenceNorms: [Double],
                         d: Int, k: Int, excludeSelf: Bool, threads: Int) -> (distances: [Double], indices: [Int]) {
        let nq = queryNorms.count
        var dist = [Double](repeating: .infinity, count: nq * k)
        var index = [Int](repeating: -1, count: nq * k)
        dist.withUnsafeMutableBufferPointer { db in
            index.withUnsafeMutableBufferPointer { ib in
                let pd = SendableMutablePointer(db.baseAddress), pi = SendableMutablePointer(ib.baseAddress)
                parallelChunks(count: nq, threads: threads, grain: queryBlock) { rows in
                    scanDistances(query: query, queryNorms: queryNorms, rows: rows, reference: reference,
                                  referenceNorms: referenceNorms, d: d) { qr, rr, block in
                        for q in qr {
                            let bestD = pd.base! + q * k, bestI = pi.base! + q * k
                            let row = block + (q - qr.lowerBound) * rr.count
                            var worst = bestD[k - 1]
                            for (c, r) in rr.enumerated() {
                                let v = row[c]
                                guard v < worst, !(excludeSelf && r == q) else { continue }
                                var pos = k - 1
                                while pos > 0 && bestD[pos - 1] > v {
                                    bestD[pos] = bestD[pos - 1]
                                    bestI[pos] = bestI[pos - 1]
                                    pos -= 1
                                }
                                bestD[pos] = v
                                bestI[pos] = r
                                worst = bestD[k - 1]
                            }
                        }
                    }
                }
            }
        }
        return (dist, index)
    }

    /// Σᵢ (xᵢ − μ)(xᵢ − μ)ᵀ over the n rows of `x`, in Double (row-major d × d, symmetric).
    ///
    /// Rows are centred into Double blocks of 64; each block adds its upper triangle, four rows
    /// at a time, into the accumulator. Accumulator row i and row d−1−i go to the same worker so
    /// that the triangle's work is balanced; each accumulator entry always sums the same terms
    /// in the same order, so the result does not depend on `threads`.
    static func centredGram(_ x: [Float], _ n: Int, _ d: Int, _ mu: [Double], threads: Int) -> [Double] {
        let block = 64
        var acc = [Double](repeating: 0, count: d * d)
        var rowsBuf = [Double](repeating: 0, count: block * d)   // centred block, row-major
        var colsBuf = [Double](repeating: 0, count: d * block)   // its transpose
        x.withUnsafeBufferPointer { xb in
            acc.withUnsafeMutableBufferPointer { ab in
                rowsBuf.withUnsafeMutableBufferPointer { rb in
                    colsBuf.withUnsafeMutableBufferPointer { cb in
                        let pAcc = SendableMutablePointer(ab.baseAddress)
                        let pRows = SendablePointer(UnsafePointer(rb.baseAddress)), pCols = SendablePointer(UnsafePointer(cb.baseAddress))
                        for start in stride(from: 0, to: n, by: block) {
                            let b = min(block, n - start)
                            for r in 0..<b {
                                let src = xb.baseAddress! + (start + r) * d, dst = rb.baseAddress! + r * d
                                for j in 0..<d {
                                    let v = Double(src[j]) - mu[j]
                                    dst[j] = v
                                    cb[j * block + r] = v
                                }
                            }
                            parallelChunks(count: (d + 1) / 2, threads: threads) { pairs in
                                for p in pairs {
                                    gramRow(p, pAcc.base!, pRows.base!, pCols.base!, b, d, block)
                                    if d - 1 - p != p { gramRow(d - 1 - p, pAcc.base!, pRows.base!, pCols.base!, b, d, block) }
                                }
                            }
                        }
                    }
                }
            }
        }
        for i in 0..<d { for j in 0..<i { acc[i * d + j] = acc[j * d + i] } }
        return acc
    }

    /// acc[i, i..<d] += Σ_r cols[i, r] · rows[r, i..<d] over the b rows of a block.
    @inline(__always)
    private static func gramRow(_ i: Int, _ acc: UnsafeMutablePointer<Double>, _ rows: UnsafePointer<Double>,
                                _ cols: UnsafePointer<Double>, _ b: Int, _ d: Int, _ stride: Int) {
        let out = acc + i * d, coef = cols + i * stride
        var r = 0
        while r + 4 <= b {
            let c0 = coef[r], c1 = coef[r + 1], c2 = coef[r + 2], c3 = coef[r + 3]
            let x0 = rows + r * d, x1 = x0 + d, x2 = x1 + d, x3 = x2 + d
            for j in i..<d { out[j] += c0 * x0[j] + c1 * x1[j] + c2 * x2[j] + c3 * x3[j] }
            r += 4
        }
        while r < b {
            let c = coef[r], xr = rows + r * d
            for j in i..<d { out[j] += c * xr[j] }
            r += 1
        }
    }

    /// C = op(A)·B for square n × n row-major Double matrices (op(A) = Aᵀ with `transposeA`),
    /// rows of C split across workers.
    static func multiply(_ a: [Double], transposeA: Bool, _ b: [Double], _ n: Int, threads: Int) -> [Double] {
        var c = [Double](repeating: 0, count: n * n)
        c.withUnsafeMutableBufferPointer { cb in
            a.withUnsafeBufferPointer { ab in
                b.withUnsafeBufferPointer { bb in
                    let pa = SendablePointer(ab.baseAddress), pb = SendablePointer(bb.baseAddress)
                    let pc = SendableMutablePointer(cb.baseAddress)
                    parallelChunks(count: n, threads: threads, grain: 8) { rows in
                        let a = pa.base!, b = pb.base!
                        for i in rows {
                            let ci = pc.base! + i * n
                            for k in 0..<n {
                                let aik = transposeA ? a[k * n + i] : a[i * n + k]
                                if aik == 0 { continue }
                                let bk = b + k * n
                                for j in 0..<n { ci[j] += aik * bk[j] }
                            }
                        }
                    }
                }
            }
        }
        return c
    }
}
