import Testing
import ReflowEngine
import ReflowTestSupport

/// One GEMM problem: sizes, transposes, scalars and leading dimensions (padding ≥ 0 beyond minimal).
struct GemmCase: CustomStringConvertible {
    var transA: Bool, transB: Bool
    var m: Int, n: Int, k: Int
    var alpha: Float, beta: Float
    var pad: Int
    var description: String {
        "\(transA ? "T" : "N")\(transB ? "T" : "N") m\(m) n\(n) k\(k) α\(alpha) β\(beta) pad\(pad)"
    }
}

/// Runs `BLAS.gemm` on a case with padded storage and checks it against `Oracle.gemm`:
/// elementwise within a bound proportional to Σ|α·a·b| + |β·c|, padding of A, B, C untouched/unread.
/// Returns C (the full padded buffer) so callers can compare runs bitwise.
@discardableResult
func checkGemm(_ c: GemmCase, threads: [Int] = [1], seed: UInt64 = 1,
               sourceLocation: SourceLocation = #_sourceLocation) -> [[Float]] {
    let (m, n, k) = (c.m, c.n, c.k)
    // Stored shapes: A is [M, K] or [K, M]; B is [K, N] or [N, K]; rows padded by `pad`.
    let aRows = c.transA ? k : m, aCols = c.transA ? m : k
    let bRows = c.transB ? n : k, bCols = c.transB ? k : n
    let lda = aCols + c.pad, ldb = bCols + c.pad, ldc = n + c.pad
    var rng = Random(seed: seed)
    // Padding holds NaN: reading it would poison the result.
    var a = [Float](repeating: .nan, count: max(1, aRows * lda))
    var b = [Float](repeating: .nan, count: max(1, bRows * ldb))
    for i in 0..<aRows { for j in 0..<aCols { a[i * lda + j] = Float(rng.normal()) } }
    for i in 0..<bRows { for j in 0..<bCols { b[i * ldb + j] = Float(rng.normal()) } }
    // C: NaN everywhere when beta == 0 (must not be read), else random; padding is a sentinel.
    let sentinel: Float = -12345.5
    var cInit = [Float](repeating: sentinel, count: max(1, m * ldc))
    for i in 0..<m { for j in 0..<n { cInit[i * ldc + j] = c.beta == 0 ? .nan : Float(rng.normal()) } }

    var expected = cInit
    if c.beta == 0 { for i in 0..<m { for j in 0..<n { expected[i * ldc + j] = 0 } } }
    Oracle.gemm(transA: c.transA, transB: c.transB, m: m, n: n, k: k, alpha: c.alpha, a: a, lda: lda, b: b, ldb: ldb,
                beta: c.beta, c: &expected, ldc: ldc)
    // Error bound per element: (k + 2)·2 ulp of Σ|α·a·b| + |β·c|.
    var tol = [Float](repeating: 0, count: max(1, m * ldc))
    for i in 0..<m {
        for j in 0..<n {
            var mag = 0.0
            for p in 0..<k {
                let av = c.transA ? a[p * lda + i] : a[i * lda + p]
                let bv = c.transB ? b[j * ldb + p] : b[p * ldb + j]
                mag += Swift.abs(Double(av) * Double(bv))
            }
            mag = mag * Double(Swift.abs(c.alpha)) + (c.beta == 0 ? 0 : Swift.abs(Double(c.beta) * Double(cInit[i * ldc + j])))
            tol[i * ldc + j] = Float(mag) * Float(k + 2) * 2.4e-7 + 1e-30
        }
    }
    var results = [[Float]]()
    for t in threads {
        var got = cInit
        a.withUnsafeBufferPointer { pa in
            b.withUnsafeBufferPointer { pb in
                got.withUnsafeMutableBufferPointer { pc in
                    BLAS.gemm(transA: c.transA, transB: c.transB, m: m, n: n, k: k, alpha: c.alpha,
                              a: pa.baseAddress!, lda: lda, b: pb.baseAddress!, ldb: ldb,
                              beta: c.beta, c: pc.baseAddress!, ldc: ldc, threads: t)
                }
            }
        }
        var bad = 0, first = ""
        for i in 0..<m {
            for j in 0..<n {
                let g = got[i * ldc + j], e = expected[i * ldc + j]
                if !(Swift.abs(g - e) <= tol[i * ldc + j]) {
                    bad += 1
                    if first.isEmpty { first = "C[\(i),\(j)] = \(g), oracle \(e), tol \(tol[i * ldc + j])" }
                }
            }
            for j in n..<ldc where got[i * ldc + j].bitPattern != sentinel.bitPattern {
                bad += 1
                if first.isEmpty { first = "padding C[\(i),\(j)] overwritten with \(got[i * ldc + j])" }
            }
        }
        #expect(bad == 0, "\(c) threads \(t): \(bad) bad elements; first: \(first)", sourceLocation: sourceLocation)
        results.append(got)
    }
    return results
}

@Suite("BLAS.gemm vs Oracle.gemm")
struct BLASTests {
    init() { BLAS.setLibraryThreads(1) }

    /// (m, n, k) chosen so that, for every transpose combination, each branch of `BLAS.serial`
    /// is taken by at least one shape (the branch also depends on the combination):
    static let serialShapes: [(Int, Int, Int)] = [
        (3, 4, 0),     // k == 0: C = β·C only
        (1, 1, 1),     // smallK, degenerate
        (5, 7, 3),     // smallK
        (17, 33, 8),   // smallK at the k boundary
        (64, 3, 2),    // smallK, tall (the MLP input layer shape)
        (3, 20, 17),   // m ≤ 8: NN, TN → smallM; NT, TT → cblas
        (8, 9, 33),    // m = 8 boundary: NN, TN → smallM; NT, TT → cblas
        (20, 5, 37),   // n ≤ 8: NT → smallNDot (two SIMD blocks + tail); TN → transposed smallM; NN, TT → cblas
        (20, 5, 9),    // n ≤ 8, k = 9: smallNDot tail only / transposed smallM; NN, TT → cblas
        (33, 8, 16),   // n = 8 boundary, k = 16: smallNDot one SIMD block, no tail
        (9, 9, 9),     // just above every small threshold: cblas
        (20, 24, 17),  // general: cblas
        (33, 17, 64),  // general: cblas
        (2, 3, 70),    // m, n ≤ 8, long k: NN, TN → smallM; NT → smallNDot; TT → cblas
    ]

    @Test("every serial code path, all transposes, α/β ∈ {0, 1, ½}, tight and padded leading dims",
          arguments: [(false, false), (false, true), (true, false), (true, true)])
    func serialPaths(_ trans: (Bool, Bool)) {
        for (m, n, k) in Self.serialShapes {
            for alpha: Float in [1, 0.5, 0] {
                for beta: Float in [0, 1, 0.5] {
                    for pad in [0, 3] {
                        checkGemm(GemmCase(transA: trans.0, transB: trans.1, m: m, n: n, k: k,
                                           alpha: alpha, beta: beta, pad: pad),
                                  seed: UInt64(m * 10_000 + n * 100 + k))
                    }
                }
            }
        }
    }

    /// Shapes of ≥ 2 MFLOP (the split threshold) covering both split directions, uneven splits and
    /// chunks that fall into the small-shape kernels.
    static let splitShapes: [(Int, Int, Int)] = [
        (128, 128, 128),  // m ≥ n: row split, cblas chunks
        (64, 192, 128),   // m < n: column split
        (131, 77, 100),   // uneven row split (2.02 MFLOP)
        (8, 1024, 128),   // m < n, m ≤ 8: column chunks in smallM / cblas
        (1024, 8, 128),   // m ≥ n, n ≤ 8: row chunks in smallNDot / transposed smallM
        (512, 512, 4),    // k ≤ 8: smallK chunks
    ]

    @Test("threaded split (threads 2 and 3) agrees with the oracle and is deterministic",
          arguments: [(false, false), (false, true), (true, false), (true, true)])
    func threadedSplit(_ trans: (Bool, Bool)) {
        for (m, n, k) in Self.splitShapes {
            #expect(2 * m * n * k >= BLAS.splitThresholdFlops)
            for (beta, pad) in [(Float(0), 0), (Float(0.5), 5)] {
                let c = GemmCase(transA: trans.0, transB: trans.1, m: m, n: n, k: k, alpha: 0.5, beta: beta, pad: pad)
                let runs = checkGemm(c, threads: [1, 2, 2, 3], seed: 7)
                let (one, two, twoAgain) = (runs[0], runs[1], runs[2])
                #expect(zip(two, twoAgain).allSatisfy { $0.bitPattern == $1.bitPattern },
                        "\(c): threads 2 is not reproducible")
                // Not a documented guarantee, recorded as observed: how far 1 and 2 threads differ.
                var maxDiff: Float = 0
                for (x, y) in zip(one, two) where x.isFinite && y.isFinite { maxDiff = max(maxDiff, Swift.abs(x - y)) }
                #expect(maxDiff <= 1e-4, "\(c): threads 1 vs 2 differ by \(maxDiff)")
            }
        }
    }

    @Test func matmulTensorConvenience() {
        let a = randn([5, 12], seed: 3), b = randn([12, 7], seed: 4)
        for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
            let aa = ta ? a.transposed() : a, bb = tb ? b.transposed() : b
            let c = BLAS.matmul(aa, bb, transA: ta, transB: tb)
            var ref = [Float](repeating: 0, count: 35)
            Oracle.gemm(transA: false, transB: false, m: 5, n: 7, k: 12, alpha: 1, a: a.data, lda: 12, b: b.data, ldb: 7,
                        beta: 0, c: &ref, ldc: 7)
            expectClose(c, Tensor(shape: [5, 7], data: ref), atol: 1e-5, rtol: 1e-5, "ta \(ta) tb \(tb)")
        }
    }

    @Test func emptyProblemsTouchNothing() {
        var c: [Float] = [1, 2, 3]
        let a: [Float] = [1], b: [Float] = [1]
        a.withUnsafeBufferPointer { pa in b.withUnsafeBufferPointer { pb in c.withUnsafeMutableBufferPointer { pc in
            BLAS.gemm(transA: false, transB: false, m: 0, n: 3, k: 1, a: pa.baseAddress!, lda: 1,
                      b: pb.baseAddress!, ldb: 3, beta: 0, c: pc.baseAddress!, ldc: 3)
            BLAS.gemm(transA: false, transB: false, m: 1, n: 0, k: 1, a: pa.baseAddress!, lda: 1,
                      b: pb.baseAddress!, ldb: 1, beta: 0, c: pc.baseAddress!, ldc: 3)
        } } }
        #expect(c == [1, 2, 3])
    }

    @Test func libraryIsSingleThreadedWhenAsked() {
        BLAS.setLibraryThreads(1)
        #expect(BLAS.libraryThreads == 1)
        #expect(BLAS.libraryConfig.contains("OpenBLAS"))
    }
}
