import Glibc

/// Seconds on CLOCK_MONOTONIC (for durations: benchmarks, job progress, server timing).
/// ReflowHTTP keeps its own copy because it depends on nothing numeric.
public func monotonicSeconds() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) * 1e-9
}
