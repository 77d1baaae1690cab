internal import COpenBLAS

/// Matrix products. This is the only file that imports OpenBLAS.
///
/// Every GEMM in reflowd goes through ``BLAS/gemm(transA:transB:m:n:k:alpha:a:lda:b:ldb:beta:c:ldc:threads:)``.
/// Two layers of speed work sit on top of `cblas_sgemm`:
///
/// 1. **Engine-level threading.** OpenBLAS's own threads are slow on the skinny shapes of an MLP
///    step (measured here on 512×256×256: 2 OpenBLAS threads 116 GFLOP/s, two independent
///    single-thread halves 175 GFLOP/s). So OpenBLAS runs single-threaded and `gemm` splits the
///    output into `threads` row (or column) blocks, each a single-threaded `cblas_sgemm`. The
///    split is deterministic: the same `threads` gives bit-identical results.
/// 2. **Degenerate shapes** (any of M, N, K ≤ 8: the `[x, t] → hidden` input layer, the
///    `hidden → 2` output layer) run in hand-written loops; OpenBLAS spends microseconds of
///    overhead on them and gets slower with threads (RESULTS.md: 3 GFLOP/s).
public enum BLAS {
    /// Sets OpenBLAS's process-wide thread count (`openblas_set_num_threads`).
    /// reflowd keeps it at 1 and threads GEMMs itself; see the type's documentation.
    public static func setLibraryThreads(_ n: Int) {
        openblas_set_num_threads(Int32(max(1, n)))
    }

    /// OpenBLAS's current thread count.
    public static var libraryThreads: Int { Int(openblas_get_num_threads()) }

    /// The OpenBLAS build string, e.g. `OpenBLAS 0.3.21 NO_LAPACKE DYNAMIC_ARCH NO_AFFINITY Zen MAX_THREADS=64`.
    public static var libraryConfig: String { String(cString: openblas_get_config()) }

    /// FLOPs below which a GEMM is not split across threads (dispatch costs ~10 µs).
    public static let splitThresholdFlops = 2_000_000

    /// Row-major `C[M,N] = alpha · op(A)[M,K] · op(B)[K,N] + beta · C`.
    ///
    /// `op(A) = A` (A is `[M, K]`, `lda ≥ K`) or `Aᵀ` (A is `[K, M]`, `lda ≥ M`); likewise B.
    /// With `beta == 0`, C need not be initialised.
    public static func gemm(transA: Bool, transB: Bool, m: Int, n: Int, k: Int,
                            alpha: Float = 1, a: UnsafePointer<Float>, lda: Int,
                            b: UnsafePointer<Float>, ldb: Int,
                            beta: Float = 0, c: UnsafeMutablePointer<Float>, ldc: Int,
                            threads: Int = 1) {
        precondition(m >= 0 && n >= 0 && k >= 0, "gemm: negative size \(m)x\(n)x\(k)")
        if m == 0 || n == 0 { return }
        let flops = 2 * m * n * k
        let parts = (threads > 1 && flops >= splitThresholdFlops) ? threads : 1
        if parts == 1 {
            serial(transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
            return
        }
        let pa = SendablePointer(a), pb = SendablePointer(b), pc = SendableMutablePointer(c)
        if m >= n {
            // Split rows of C and of op(A).
            parallelChunks(count: m, threads: parts, grain: 8) { r in
                let aOff = transA ? r.lowerBound : r.lowerBound * lda
                serial(transA, transB, r.count, n, k, alpha, pa.base! + aOff, lda, pb.base!, ldb,
                       beta, pc.base! + r.lowerBound * ldc, ldc)
            }
        } else {
            // Split columns of C and of op(B).
            parallelChunks(count: n, threads: parts, grain: 16) { r in
                let bOff = transB ? r.lowerBound * ldb : r.lowerBound
                serial(transA, transB, m, r.count, k, alpha, pa.base!, lda, pb.base! + bOff, ldb,
                       beta, pc.base! + r.lowerBound, ldc)
            }
        }
    }

    /// Tensor convenience: `op(A) · op(B)` for rank-2 tensors.
    public static func matmul(_ a: Tensor, _ b: Tensor, transA: Bool = false, transB: Bool = false,
                              threads: Int = 1) -> Tensor {
        precondition(a.rank == 2 && b.rank == 2, "matmul: rank-2 operands, got \(a.shape) and \(b.shape)")
        let m = transA ? a.shape[1] : a.shape[0], k = transA ? a.shape[0] : a.shape[1]
        let k2 = transB ? b.shape[1] : b.shape[0], n = transB ? b.shape[0] : b.shape[1]
        precondition(k == k2, "matmul: op(A) [\(m), \(k)] × op(B) [\(k2), \(n)]")
        var out = Tensor.zeros([m, n])
        a.data.withUnsafeBufferPointer { pa in
            b.data.withUnsafeBufferPointer { pb in
                out.data.withUnsafeMutableBufferPointer { pc in
                    gemm(transA: transA, transB: transB, m: m, n: n, k: k,
                         a: pa.baseAddress!, lda: a.shape[1], b: pb.baseAddress!, ldb: b.shape[1],
                         c: pc.baseAddress!, ldc: n, threads: threads)
                }
            }
        }
        return out
    }

    // MARK: - single-threaded dispatch

    static func serial(_ transA: Bool, _ transB: Bool, _ m: Int, _ n: Int, _ k: Int, _ alpha: Float,
                       _ a: UnsafePointer<Float>, _ lda: Int, _ b: UnsafePointer<Float>, _ ldb: Int,
                       _ beta: Float, _ c: UnsafeMutablePointer<Float>, _ ldc: Int) {
        if k == 0 {
            scaleC(m, n, beta, c, ldc)
            return
        }
        let small = 8
        if k <= small {
            smallK(transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
        } else if m <= small && !transB {
            smallM(transA, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
        } else if n <= small && !transA && transB {
            smallNDot(m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
        } else if n <= small && transA && !transB {
            // Cᵀ[N,M] = Bᵀ·A: a small-M problem; compute it into scratch and transpose back.
            var ct = [Float](repeating: 0, count: n * m)
            ct.withUnsafeMutableBufferPointer { t in
                smallM(true, n, m, k, alpha, b, ldb, a, lda, 0, t.baseAddress!, m)
            }
            for i in 0..<m {
                let row = c + i * ldc
                for j in 0..<n {
                    row[j] = (beta == 0 ? 0 : beta * row[j]) + ct[j * m + i]
                }
            }
        } else {
            cblas_sgemm(CblasRowMajor, transA ? CblasTrans : CblasNoTrans, transB ? CblasTrans : CblasNoTrans,
                        Int32(m), Int32(n), Int32(k), alpha, a, Int32(lda), b, Int32(ldb), beta, c, Int32(ldc))
        }
    }

    @inline(__always)
    static func scaleC(_ m: Int, _ n: Int, _ beta: Float, _ c: UnsafeMutablePointer<Float>, _ ldc: Int) {
        for i in 0..<m {
            let row = c + i * ldc
            if beta == 0 { row.update(repeating: 0, count: n) } else { for j in 0..<n { row[j] *= beta } }
        }
    }

    /// K ≤ 8: C[i,:] = beta·C[i,:] + Σ_p alpha·op(A)[i,p] · op(B)[p,:] (vectorised over j).
    static func smallK(_ transA: Bool, _ transB: Bool, _ m: Int, _ n: Int, _ k: Int, _ alpha: Float,
                       _ a: UnsafePointer<Float>, _ lda: Int, _ b: UnsafePointer<Float>, _ ldb: Int,
                       _ beta: Float, _ c: UnsafeMutablePointer<Float>, _ ldc: Int) {
        // bt: op(B) as contiguous rows [K, N].
        var bt = [Float](repeating: 0, count: k * n)
        bt.withUnsafeMutableBufferPointer { bt in
            for p in 0..<k {
                for j in 0..<n { bt[p * n + j] = transB ? b[j * ldb + p] : b[p * ldb + j] }
            }
            let brows = UnsafePointer(bt.baseAddress!)
            var coef = [Float](repeating: 0, count: k)
            for i in 0..<m {
                for p in 0..<k { coef[p] = alpha * (transA ? a[p * lda + i] : a[i * lda + p]) }
                let row = c + i * ldc
                if beta == 0 {
                    let c0 = coef[0]
                    for j in 0..<n { row[j] = c0 * brows[j] }
                } else if beta == 1 {
                    let c0 = coef[0]
                    for j in 0..<n { row[j] += c0 * brows[j] }
                } else {
                    let c0 = coef[0]
                    for j in 0..<n { row[j] = beta * row[j] + c0 * brows[j] }
                }
                for p in 1..<k {
                    let cp = coef[p], bp = brows + p * n
                    for j in 0..<n { row[j] += cp * bp[j] }
                }
            }
        }
    }

    /// M ≤ 8, op(B) = B (rows contiguous): C[i,:] = beta·C[i,:] + Σ_p alpha·op(A)[i,p]·B[p,:].
    static func smallM(_ transA: Bool, _ m: Int, _ n: Int, _ k: Int, _ alpha: Float,
                       _ a: UnsafePointer<Float>, _ lda: Int, _ b: UnsafePointer<Float>, _ ldb: Int,
                       _ beta: Float, _ c: UnsafeMutablePointer<Float>, _ ldc: Int) {
        scaleC(m, n, beta, c, ldc)
        for i in 0..<m {
            let row = c + i * ldc
            for p in 0..<k {
                let coef = alpha * (transA ? a[p * lda + i] : a[i * lda + p])
                let bp = b + p * ldb
                for j in 0..<n { row[j] += coef * bp[j] }
            }
        }
    }

    /// N ≤ 8 with A rows and Bᵀ rows contiguous: C[i,j] = beta·C[i,j] + alpha·⟨A[i,:], B[j,:]⟩.
    static func smallNDot(_ m: Int, _ n: Int, _ k: Int, _ alpha: Float,
                          _ a: UnsafePointer<Float>, _ lda: Int, _ b: UnsafePointer<Float>, _ ldb: Int,
                          _ beta: Float, _ c: UnsafeMutablePointer<Float>, _ ldc: Int) {
        for i in 0..<m {
            let ai = a + i * lda
            for j in 0..<n {
                let s = dot(ai, b + j * ldb, k)
                let old = beta == 0 ? 0 : beta * c[i * ldc + j]
                c[i * ldc + j] = old + alpha * s
            }
        }
    }

    @inline(__always)
    static func dot(_ x: UnsafePointer<Float>, _ y: UnsafePointer<Float>, _ n: Int) -> Float {
        var acc0 = SIMD8<Float>(), acc1 = SIMD8<Float>()
        var p = 0
        let rx = UnsafeRawPointer(x), ry = UnsafeRawPointer(y)
        while p + 16 <= n {
            acc0 += rx.loadUnaligned(fromByteOffset: p * 4, as: SIMD8<Float>.self)
                * ry.loadUnaligned(fromByteOffset: p * 4, as: SIMD8<Float>.self)
            acc1 += rx.loadUnaligned(fromByteOffset: p * 4 + 32, as: SIMD8<Float>.self)
                * ry.loadUnaligned(fromByteOffset: p * 4 + 32, as: SIMD8<Float>.self)
            p += 16
        }
        var s = (acc0 + acc1).sum()
        while p < n { s += x[p] * y[p]; p += 1 }
        return s
    }
}

/// Naive reference implementations, the oracles the fast kernels are tested against.
public enum Oracle {
    /// Triple-loop GEMM in Double accumulation. Same contract as ``BLAS/gemm``.
    public static func gemm(transA: Bool, transB: Bool, m: Int, n: Int, k: Int, alpha: Float,
                            a: [Float], lda: Int, b: [Float], ldb: Int, beta: Float,
                            c: inout [Float], ldc: Int) {
        for i in 0..<m {
            for j in 0..<n {
                var s = 0.0
                for p in 0..<k {
                    let av = transA ? a[p * lda + i] : a[i * lda + p]
                    let bv = transB ? b[j * ldb + p] : b[p * ldb + j]
                    s += Double(av) * Double(bv)
                }
                let old = beta == 0 ? 0 : Double(beta) * Double(c[i * ldc + j])
                c[i * ldc + j] = Float(old + Double(alpha) * s)
            }
        }
    }
}
