public import ReflowEngine

/// A metric's arguments are unusable: mismatched shapes, empty sets, non-finite values or
/// out-of-range options. Names the argument (`"trajectory[3]"`, `"b"`, `"times"`) and the problem.
public struct MetricError: Error, CustomStringConvertible, Sendable, Equatable {
    /// The offending argument, possibly with an index (`"trajectory[3]"`, `"times[2]"`).
    public var argument: String
    /// What is wrong.
    public var message: String

    /// Creates an error value.
    public init(argument: String, message: String) {
        self.argument = argument
        self.message = message
    }

    public var description: String { "\(argument): \(message)" }
}

/// Per-mode (or per-cell) coverage of a sample set; see ``Metrics/modeCoverage(samples:centers:std:radiusInStd:minShare:)``.
public struct ModeCoverage: Codable, Sendable, Equatable {
    /// Samples assigned to each mode (nearest centre, closer than the radius) or support cell.
    public var counts: [Int]
    /// `counts[k] / n` for each mode: the fraction of **all** samples that landed on mode k.
    public var fractions: [Double]
    /// Fraction of samples within the radius of some mode (on the support): Σ `fractions`.
    public var fractionWithin: Double
    /// Modes with at least one sample and a fraction ≥ `minShare / K` (K modes).
    public var modesCovered: Int
    /// Mean distance from a sample to its nearest mode centre (to the support for cell
    /// partitions; 0 inside a checkerboard square).
    public var meanDistance: Double
    /// Number of samples n.
    public var sampleCount: Int

    /// Creates a value.
    public init(counts: [Int], fractions: [Double], fractionWithin: Double, modesCovered: Int,
                meanDistance: Double, sampleCount: Int) {
        self.counts = counts
        self.fractions = fractions
        self.fractionWithin = fractionWithin
        self.modesCovered = modesCovered
        self.meanDistance = meanDistance
        self.sampleCount = sampleCount
    }
}

/// The paired transport cost of a coupling against the optimal assignment of the same points.
public struct RelativeTransportCost: Codable, Sendable, Equatable {
    /// (1/n) Σ ‖z1⁽ⁱ⁾ − z0⁽ⁱ⁾‖² for the given pairing.
    public var pairedCost: Double
    /// (1/n) Σ ‖z1^{σ*(i)} − z0⁽ⁱ⁾‖² for the optimal permutation σ* (never above `pairedCost`).
    public var optimalCost: Double
    /// `pairedCost − optimalCost` ≥ 0: the paper's relative L2 transport cost (§5.1).
    public var excess: Double
    /// σ*: z0 row i is matched to z1 row `assignment[i]`.
    public var assignment: [Int]

    /// Creates a value.
    public init(pairedCost: Double, optimalCost: Double, excess: Double, assignment: [Int]) {
        self.pairedCost = pairedCost
        self.optimalCost = optimalCost
        self.excess = excess
        self.assignment = assignment
    }
}

/// Evaluation metrics for flows and point sets.
///
/// All take tensors whose first dimension indexes points and whose remaining dimensions are
/// flattened into features (`[n, d]`; `[n]` is n points in 1-D). They accumulate in Double,
/// are deterministic (random projections and subsamples come from a seeded ``Random``) and never
/// trap on their arguments: empty sets, mismatched shapes and non-finite values throw
/// ``MetricError``.
public enum Metrics {
    /// (n, d) of a tensor of points, after checking it is non-empty and finite.
    static func points(_ t: Tensor, _ name: String) throws(MetricError) -> (n: Int, d: Int) {
        guard t.rank >= 1 else { throw MetricError(argument: name, message: "expected [n, d] points, got a scalar") }
        let n = t.shape[0]
        guard n >= 1 else { throw MetricError(argument: name, message: "holds no points (shape \(t.shape))") }
        let d = t.count / n
        guard d >= 1 else { throw MetricError(argument: name, message: "points have no features (shape \(t.shape))") }
        if let bad = t.data.firstIndex(where: { !$0.isFinite }) {
            throw MetricError(argument: name, message: "row \(bad / d) holds a non-finite value (\(t.data[bad]))")
        }
        return (n, d)
    }

    // MARK: Straightness and transport cost

    /// The straightness of a trajectory, paper Eq. 3: S(Z) = ∫ E‖(Z1 − Z0) − Ż_t‖² dt
    /// (0 for straight, constant-speed paths, for which one Euler step is exact).
    ///
    /// `trajectory` holds the states z_0 … z_N (N ≥ 1), each of the same shape `[n, …]`.
    ///
    /// - Without `times`, the states are assumed to lie on a **uniform grid** over [0, 1]
    ///   (t_i = i/N, as an N-step Euler sampler produces), and
    ///   S ≈ (1/N) Σ_i mean_points ‖N(z_{i+1} − z_i) − (z_N − z_0)‖² (ALGORITHMS.md §1(a)6,
    ///   rfpp `utils.py`). The squared norm sums over features, so on an Euler trajectory
    ///   (where N(z_{i+1} − z_i) is the velocity evaluated at step i) this is `rf_torch.py`'s
    ///   `straightness`; rfpp's code averages over features instead, i.e. divides by d.
    /// - With `times` (N + 1 strictly increasing finite values) the velocities are
    ///   (z_{i+1} − z_i)/(t_{i+1} − t_i), the reference is the mean velocity
    ///   (z_N − z_0)/(t_N − t_0), and the steps are weighted by Δt_i/(t_N − t_0). With
    ///   t_i = i/N this is the uniform formula; on any grid it is 0 exactly for straight
    ///   constant-speed paths.
    public static func straightness(trajectory: [Tensor], times: [Double]? = nil) throws(MetricError) -> Double {
        guard trajectory.count >= 2 else {
            throw MetricError(argument: "trajectory", message: "needs at least 2 states (N ≥ 1), got \(trajectory.count)")
        }
        let (n, d) = try points(trajectory[0], "trajectory[0]")
        for (i, z) in trajectory.enumerated().dropFirst() {
            guard z.shape == trajectory[0].shape else {
                throw MetricError(argument: "trajectory[\(i)]", message: "shape \(z.shape) differs from trajectory[0]'s \(trajectory[0].shape)")
            }
            _ = try points(z, "trajectory[\(i)]")
        }
        let steps = trajectory.count - 1
        var dt = [Double](repeating: 1 / Double(steps), count: steps)
        var span = 1.0
        if let times {
            guard times.count == trajectory.count else {
                throw MetricError(argument: "times", message: "needs \(trajectory.count) values (one per state), got \(times.count)")
            }
            for (i, t) in times.enumerated() where !t.isFinite {
                throw MetricError(argument: "times[\(i)]", message: "must be finite, got \(t)")
            }
            for i in 0..<steps {
                dt[i] = times[i + 1] - times[i]
                guard dt[i] > 0 else {
                    throw MetricError(argument: "times[\(i + 1)]", message: "times must increase strictly (\(times[i]) then \(times[i + 1]))")
                }
            }
            span = times[steps] - times[0]
        }
        let first = trajectory[0].data, last = trajectory[steps].data
        // reference velocity (z_N − z_0)/span
        var ref = [Double](repeating: 0, count: n * d)
        for j in 0..<(n * d) { ref[j] = (Double(last[j]) - Double(first[j])) / span }
        var total = 0.0
        for i in 0..<steps {
            let a = trajectory[i].data, b = trajectory[i + 1].data
            let inv = 1 / dt[i]
            var sum = 0.0
            for j in 0..<(n * d) {
                let e = (Double(b[j]) - Double(a[j])) * inv - ref[j]
                sum += e * e
            }
            total += (dt[i] / span) * (sum / Double(n))
        }
        return total
    }

    /// Mean squared transport distance of a coupling: (1/n) Σ ‖z1⁽ⁱ⁾ − z0⁽ⁱ⁾‖².
    public static func transportCost(z0: Tensor, z1: Tensor) throws(MetricError) -> Double {
        let (n, d) = try points(z0, "z0")
        _ = try points(z1, "z1")
        guard z0.shape == z1.shape else {
            throw MetricError(argument: "z1", message: "shape \(z1.shape) differs from z0's \(z0.shape)")
        }
        var sum = 0.0
        for j in 0..<(n * d) {
            let e = Double(z1.data[j]) - Double(z0.data[j])
            sum += e * e
        }
        return sum / Double(n)
    }

    /// The relative L2 transport cost of paper §5.1 (ALGORITHMS.md §1(a)7): the paired cost
    /// (1/n) Σ ‖z1⁽ⁱ⁾ − z0⁽ⁱ⁾‖² minus the cost of the exact optimal assignment σ* of the same
    /// points, found with the Hungarian algorithm (O(n³), Double costs).
    ///
    /// - Parameter maxPoints: n above this throws (the default 512 takes well under a second).
    public static func relativeTransportCost(z0: Tensor, z1: Tensor, maxPoints: Int = 512) throws(MetricError) -> RelativeTransportCost {
        let (n, d) = try points(z0, "z0")
        _ = try points(z1, "z1")
        guard z0.shape == z1.shape else {
            throw MetricError(argument: "z1", message: "shape \(z1.shape) differs from z0's \(z0.shape)")
        }
        guard n <= maxPoints else {
            throw MetricError(argument: "z0", message: "\(n) points exceed the assignment limit of \(maxPoints)")
        }
        var cost = [Double](repeating: 0, count: n * n)  // cost[i*n + j] = ‖z1_j − z0_i‖²
        for i in 0..<n {
            for j in 0..<n {
                var s = 0.0
                for c in 0..<d {
                    let e = Double(z1.data[j * d + c]) - Double(z0.data[i * d + c])
                    s += e * e
                }
                cost[i * n + j] = s
            }
        }
        let sigma = optimalAssignment(cost: cost, n: n)
        var paired = 0.0, optimal = 0.0
        for i in 0..<n {
            paired += cost[i * n + i]
            optimal += cost[i * n + sigma[i]]
        }
        paired /= Double(n)
        optimal = Swift.min(optimal / Double(n), paired)
        return RelativeTransportCost(pairedCost: paired, optimalCost: optimal, excess: paired - optimal, assignment: sigma)
    }

    /// The minimum-cost perfect assignment of an n × n row-major cost matrix (row i → column
    /// `result[i]`): the Hungarian algorithm with potentials (Kuhn–Munkres, Jonker–Volgenant
    /// shortest augmenting paths), O(n³). Costs must be finite.
    static func optimalAssignment(cost: [Double], n: Int) -> [Int] {
        precondition(n >= 0 && cost.count == n * n, "optimalAssignment: cost must be n × n")
        if n == 0 { return [] }
        // 1-based arrays as in the classic formulation; column 0 is a virtual column.
        var u = [Double](repeating: 0, count: n + 1), v = [Double](repeating: 0, count: n + 1)
        var p = [Int](repeating: 0, count: n + 1), way = [Int](repeating: 0, count: n + 1)
        var minv = [Double](repeating: 0, count: n + 1)
        var used = [Bool](repeating: false, count: n + 1)
        for i in 1...n {
            p[0] = i
            var j0 = 0
            for j in 0...n { minv[j] = .infinity; used[j] = false }
            repeat {
                used[j0] = true
                let i0 = p[j0]
                var delta = Double.infinity, j1 = 0
                let row = (i0 - 1) * n
                for j in 1...n where !used[j] {
                    let cur = cost[row + j - 1] - u[i0] - v[j]
                    if cur < minv[j] { minv[j] = cur; way[j] = j0 }
                    if minv[j] < delta { delta = minv[j]; j1 = j }
                }
                for j in 0...n {
                    if used[j] { u[p[j]] += delta; v[j] -= delta } else { minv[j] -= delta }
                }
                j0 = j1
            } while p[j0] != 0
            repeat {
                let j1 = way[j0]
                p[j0] = p[j1]
                j0 = j1
            } while j0 != 0
        }
        var result = [Int](repeating: 0, count: n)
        for j in 1...n { result[p[j] - 1] = j - 1 }
        return result
    }

    // MARK: Distances between point sets

    /// The sliced Wasserstein-2 distance, as `rf_torch.py`'s `sliced_w2`: `projections` random
    /// unit directions (d normals from `Random(seed:)`, normalised), both sets projected and
    /// sorted, and √(mean over directions and quantiles of the squared differences).
    ///
    /// Sets of equal size n are matched point for point after sorting (exactly `sliced_w2`).
    /// Sets of different sizes are compared through their empirical quantile functions:
    /// W₂² = ∫₀¹ (F_a⁻¹(u) − F_b⁻¹(u))² du, computed exactly by merging the two step
    /// functions (which is the same number as the equal-size formula when n = m).
    /// For a shift of the mean by a vector m between otherwise equal distributions,
    /// SW₂ → ‖m‖/√d (the average of (m·θ)² over unit directions θ is ‖m‖²/d).
    ///
    /// `threads` > 1 spreads the projections over ``ComputePool``; the result is bit-identical
    /// for every thread count (each projection is computed alone and the sum runs in order).
    public static func slicedWasserstein2(a: Tensor, b: Tensor, projections: Int = 256, seed: UInt64 = 0,
                                          threads: Int = 1) throws(MetricError) -> Double {
        let (n, d) = try points(a, "a")
        let (m, db) = try points(b, "b")
        guard d == db else { throw MetricError(argument: "b", message: "points have \(db) features, a's have \(d)") }
        guard projections >= 1 && projections <= 100_000 else {
            throw MetricError(argument: "projections", message: "must be in [1, 100000], got \(projections)")
        }
        // All directions first, from one stream, so the result does not depend on `threads`.
        var rng = Random(seed: seed)
        var directions = [Double](repeating: 0, count: projections * d)
        for k in 0..<projections {
            var norm2 = 0.0
            repeat {
                norm2 = 0
                for c in 0..<d { directions[k * d + c] = rng.normal(); norm2 += directions[k * d + c] * directions[k * d + c] }
            } while norm2 == 0
            let inv = 1 / norm2.squareRoot()
            for c in 0..<d { directions[k * d + c] *= inv }
        }
        let dirs = directions
        var perProjection = [Double](repeating: 0, count: projections)
        perProjection.withUnsafeMutableBufferPointer { out in
            let results = SendableMutablePointer(out.baseAddress)
            parallelChunks(count: projections, threads: Swift.max(1, threads)) { range in
                var pa = [Double](repeating: 0, count: n), pb = [Double](repeating: 0, count: m)
                for k in range {
                    let theta = dirs[(k * d)..<((k + 1) * d)]
                    project(a, theta, into: &pa)
                    project(b, theta, into: &pb)
                    pa.sort()
                    pb.sort()
                    results.base![k] = n == m ? meanSquaredDifference(pa, pb) : quantileW2Squared(pa, pb)
                }
            }
        }
        return (perProjection.reduce(0, +) / Double(projections)).squareRoot()
    }

    static func project(_ t: Tensor, _ theta: ArraySlice<Double>, into out: inout [Double]) {
        let d = theta.count, base = theta.startIndex
        t.data.withUnsafeBufferPointer { x in
            for i in 0..<out.count {
                var s = 0.0
                for c in 0..<d { s += Double(x[i * d + c]) * theta[base + c] }
                out[i] = s
            }
        }
    }

    static func meanSquaredDifference(_ a: [Double], _ b: [Double]) -> Double {
        var s = 0.0
        for i in 0..<a.count { let e = a[i] - b[i]; s += e * e }
        return s / Double(a.count)
    }

    /// ∫₀¹ (F_a⁻¹ − F_b⁻¹)² du for sorted samples (quantile functions are left-continuous steps).
    static func quantileW2Squared(_ a: [Double], _ b: [Double]) -> Double {
        let n = a.count, m = b.count
        // Positions in units of 1/(n·m): a's i-th step ends at (i+1)·m, b's j-th at (j+1)·n.
        var i = 0, j = 0, current = 0
        var s = 0.0
        while i < n && j < m {
            let ea = (i + 1) * m, eb = (j + 1) * n
            let next = Swift.min(ea, eb)
            let e = a[i] - b[j]
            s += Double(next - current) * e * e
            current = next
            if ea == next { i += 1 }
            if eb == next { j += 1 }
        }
        return s / (Double(n) * Double(m))
    }

    /// The energy distance 2E‖X − Y‖ − E‖X − X′‖ − E‖Y − Y′‖ between the empirical
    /// distributions of `a` and `b` (V-statistic: the expectations average over all n², n·m, m²
    /// pairs including i = j), computed exactly in O(n·m). It is ≥ 0, and 0 for identical sets.
    /// This is the squared form: scipy's `energy_distance` (1-D) returns its square root.
    ///
    /// Sets larger than `maxPoints` are first subsampled without replacement to `maxPoints`
    /// points, with a partial Fisher–Yates shuffle from `Random(seed:)` (`a` first, then `b`).
    /// `threads` > 1 splits the pair sums over ``ComputePool`` (bit-identical results).
    public static func energyDistance(a: Tensor, b: Tensor, maxPoints: Int = 2048, seed: UInt64 = 0,
                                      threads: Int = 1) throws(MetricError) -> Double {
        let (n, d) = try points(a, "a")
        let (m, db) = try points(b, "b")
        guard d == db else { throw MetricError(argument: "b", message: "points have \(db) features, a's have \(d)") }
        guard maxPoints >= 1 else { throw MetricError(argument: "maxPoints", message: "must be ≥ 1, got \(maxPoints)") }
        var rng = Random(seed: seed)
        let x = subsample(a.data, n: n, d: d, keep: maxPoints, rng: &rng)
        let y = subsample(b.data, n: m, d: d, keep: maxPoints, rng: &rng)
        let nx = x.count / d, ny = y.count / d
        let t = Swift.max(1, threads)
        let xy = meanPairDistance(x, nx, y, ny, d, symmetric: false, threads: t)
        let xx = meanPairDistance(x, nx, x, nx, d, symmetric: true, threads: t)
        let yy = meanPairDistance(y, ny, y, ny, d, symmetric: true, threads: t)
        return Swift.max(0, 2 * xy - xx - yy)
    }

    /// Rows of `data` ([n, d]), subsampled without replacement to `keep` rows (in index order).
    static func subsample(_ data: [Float], n: Int, d: Int, keep: Int, rng: inout Random) -> [Double] {
        var rows = Array(0..<n)
        if n > keep {
            for i in 0..<keep {
                let j = i + rng.int(below: n - i)
                rows.swapAt(i, j)
            }
            rows = Array(rows[0..<keep]).sorted()
        }
        var out = [Double]()
        out.reserveCapacity(rows.count * d)
        for r in rows { for c in 0..<d { out.append(Double(data[r * d + c])) } }
        return out
    }

    /// (1/(n·m)) Σ_i Σ_j ‖x_i − y_j‖; `symmetric` (x = y) sums i < j twice. Row sums are
    /// computed in parallel chunks and added in row order (bit-identical for every thread count).
    static func meanPairDistance(_ x: [Double], _ n: Int, _ y: [Double], _ m: Int, _ d: Int,
                                 symmetric: Bool, threads: Int) -> Double {
        var rowSums = [Double](repeating: 0, count: n)
        rowSums.withUnsafeMutableBufferPointer { out in
            let rows = SendableMutablePointer(out.baseAddress)
            // Work item p handles rows p and n − 1 − p: symmetric rows shrink with i, and the
            // pairs keep the chunks balanced.
            parallelChunks(count: (n + 1) / 2, threads: threads, grain: 32) { range in
                func row(_ i: Int) {
                    var sum = 0.0
                    for j in (symmetric ? i + 1 : 0)..<m {
                        var s = 0.0
                        for c in 0..<d { let e = x[i * d + c] - y[j * d + c]; s += e * e }
                        sum += s.squareRoot()
                    }
                    rows.base![i] = symmetric ? 2 * sum : sum
                }
                for p in range {
                    row(p)
                    if n - 1 - p != p { row(n - 1 - p) }
                }
            }
        }
        return rowSums.reduce(0, +) / (Double(n) * Double(m))
    }

    // MARK: Coverage

    /// Mode coverage of `samples` ([n, 2]) against a Gaussian mixture with the given centres and
    /// per-mode std, as `rf_torch.py`'s `mode_stats` plus per-mode counts.
    ///
    /// Each sample goes to its nearest centre (the first on ties) when that distance is
    /// **< `radiusInStd`·std** (3·std by default, strict as in `mode_stats`). The result holds
    /// per-mode counts and fractions (of all n samples), the fraction within the radius of any
    /// mode (`frac_within_3std`), the mean distance to the nearest centre (`mean_dist_to_mode`)
    /// and the number of covered modes: a mode is covered when it has at least one sample and at
    /// least `minShare / K` of all samples (K modes), i.e. `minShare` (default 20 %) of the share
    /// a perfectly balanced sampler would give it.
    public static func modeCoverage(samples: Tensor, centers: [(Float, Float)], std: Float,
                                    radiusInStd: Float = 3, minShare: Double = 0.2) throws(MetricError) -> ModeCoverage {
        let (n, d) = try points(samples, "samples")
        guard d == 2 else { throw MetricError(argument: "samples", message: "expected [n, 2] points, got shape \(samples.shape)") }
        guard !centers.isEmpty else { throw MetricError(argument: "centers", message: "needs at least one centre") }
        if let k = centers.firstIndex(where: { !$0.0.isFinite || !$0.1.isFinite }) {
            throw MetricError(argument: "centers[\(k)]", message: "must be finite")
        }
        guard std >= 0 && std.isFinite else { throw MetricError(argument: "std", message: "must be a non-negative number, got \(std)") }
        guard radiusInStd >= 0 && radiusInStd.isFinite else {
            throw MetricError(argument: "radiusInStd", message: "must be a non-negative number, got \(radiusInStd)")
        }
        try checkShare(minShare)
        let radius = Double(radiusInStd) * Double(std)
        let c = centers.map { (Double($0.0), Double($0.1)) }
        var counts = [Int](repeating: 0, count: c.count)
        var distanceSum = 0.0
        for i in 0..<n {
            let (best, dist) = nearestCenter(Double(samples.data[2 * i]), Double(samples.data[2 * i + 1]), c)
            distanceSum += dist
            if dist < radius || (radius == 0 && dist == 0) { counts[best] += 1 }
        }
        return summarize(counts: counts, n: n, distanceSum: distanceSum, minShare: minShare)
    }

    /// Coverage of `samples` ([n, 2]) over the support cells of a built-in distribution
    /// (``Distribution2D/supportCell(_:_:)``): modes within 3·std for the Gaussian mixtures (the
    /// same numbers as ``modeCoverage(samples:centers:std:radiusInStd:minShare:)``), equal-mass
    /// pieces of the curves for moons, spirals and rings, filled squares for the checkerboard.
    /// `meanDistance` is the mean distance to the support (nearest centre for mixtures).
    public static func supportCoverage(samples: Tensor, distribution: Distribution2D,
                                       minShare: Double = 0.2) throws(MetricError) -> ModeCoverage {
        let (n, d) = try points(samples, "samples")
        guard d == 2 else { throw MetricError(argument: "samples", message: "expected [n, 2] points, got shape \(samples.shape)") }
        if let e = distribution.validationError() {
            throw MetricError(argument: "distribution\(e.pointer)", message: e.message)
        }
        try checkShare(minShare)
        let locator = SupportLocator(distribution)!
        var counts = [Int](repeating: 0, count: distribution.supportCellCount)
        var distanceSum = 0.0
        for i in 0..<n {
            let (cell, dist) = locator.locate(Double(samples.data[2 * i]), Double(samples.data[2 * i + 1]))
            distanceSum += dist
            if let cell { counts[cell] += 1 }
        }
        return summarize(counts: counts, n: n, distanceSum: distanceSum, minShare: minShare)
    }

    static func checkShare(_ minShare: Double) throws(MetricError) {
        guard minShare >= 0 && minShare <= 1 else {
            throw MetricError(argument: "minShare", message: "must be in [0, 1], got \(minShare)")
        }
    }

    static func summarize(counts: [Int], n: Int, distanceSum: Double, minShare: Double) -> ModeCoverage {
        let fractions = counts.map { Double($0) / Double(n) }
        let threshold = minShare / Double(counts.count)
        let covered = zip(counts, fractions).filter { $0.0 > 0 && $0.1 >= threshold }.count
        return ModeCoverage(counts: counts, fractions: fractions,
                            fractionWithin: Double(counts.reduce(0, +)) / Double(n),
                            modesCovered: covered, meanDistance: distanceSum / Double(n), sampleCount: n)
    }
    /// Statistics of a noise vector: ‖z‖/√d and the lag-1 autocorrelation Σ z_k·z_{k+1} / Σ z_k²
    /// (over the flattened vector). For z ~ N(0, I): ≈ 1 and ≈ 0.
    public struct NoiseStatistics: Codable, Sendable, Equatable {
        public var normOverSqrtD: Double
        public var lag1Autocorrelation: Double
    }

    /// The intersection argument of Lee et al. 2024 (§3, Fig. 2), in reflowd's convention.
    ///
    /// Two interpolation lines x_t = t·x1 + (1 − t)·x0 of pairs (x0', x1') and (x0'', x1'')
    /// meet at time t only if x0'' = x0' + (t/(1 − t))·(x1' − x1''). For random pairs (row i and
    /// the row n/2 places on) this returns the mean statistics of such x0'' at each t, beside
    /// those of the pairs' own noise x0 (fresh draws): if x0'' is atypical for N(0, I) (norm off
    /// √d, autocorrelated), a flow trained on typical noise rarely meets it, and one reflow
    /// already gives nearly non-crossing paths.
    /// x0, x1: [n, d] with n ≥ 2 → (fresh, [x0'' statistics per t]).
    public static func intersectionNoise(x0: Tensor, x1: Tensor, times: [Double]) throws(MetricError)
        -> (fresh: NoiseStatistics, crossing: [NoiseStatistics]) {
        let (n, d) = try points(x0, "x0")
        guard x1.shape == x0.shape else { throw MetricError(argument: "x1", message: "shape \(x1.shape) differs from x0's \(x0.shape)") }
        guard n >= 2 else { throw MetricError(argument: "x0", message: "needs at least 2 pairs, got \(n)") }
        for t in times where !(t > 0 && t < 1) { throw MetricError(argument: "times", message: "must lie in (0, 1), got \(t)") }
        let a = x0.data, b = x1.data
        func stats(_ row: (Int) -> Double) -> (Double, Double) {
            var sq = 0.0, lag = 0.0, prev = 0.0
            for k in 0..<d {
                let z = row(k)
                sq += z * z
                if k > 0 { lag += prev * z }
                prev = z
            }
            return ((sq / Double(d)).squareRoot(), sq > 0 ? lag / sq : 0)
        }
        func mean(_ f: (Int) -> (Double, Double)) -> NoiseStatistics {
            var s0 = 0.0, s1 = 0.0
            for i in 0..<n { let (u, v) = f(i); s0 += u; s1 += v }
            return NoiseStatistics(normOverSqrtD: s0 / Double(n), lag1Autocorrelation: s1 / Double(n))
        }
        let fresh = mean { i in stats { Double(a[i * d + $0]) } }
        let crossing = times.map { t in
            let w = t / (1 - t)
            return mean { i in
                let j = (i + n / 2) % n
                return stats { Double(a[i * d + $0]) + w * (Double(b[i * d + $0]) - Double(b[j * d + $0])) }
            }
        }
        return (fresh, crossing)
    }
}
