import Dispatch

/// A pointer that may cross into `DispatchQueue.concurrentPerform` workers.
///
/// Swift 6 does not let unsafe pointers cross concurrency domains. Every use in the engine hands
/// disjoint index ranges to different workers, and the caller waits for all of them before the
/// buffer's owner can observe it again; that is what makes the `@unchecked` safe. (This and
/// ``SendableMutablePointer`` are the only `@unchecked Sendable` types; see docs/ARCHITECTURE.md.)
public struct SendablePointer: @unchecked Sendable {
    public let base: UnsafePointer<Float>?
    public init(_ base: UnsafePointer<Float>?) { self.base = base }
}

/// Mutable counterpart of ``SendablePointer``; workers write disjoint ranges.
public struct SendableMutablePointer: @unchecked Sendable {
    public let base: UnsafeMutablePointer<Float>?
    public init(_ base: UnsafeMutablePointer<Float>?) { self.base = base }
}

/// Splits `0..<count` into at most `threads` contiguous chunks (each a multiple of `grain`
/// except the last) and runs `body(range)` on them in parallel; returns when all are done.
/// With one chunk, `body` runs on the calling thread with no dispatch overhead.
public func parallelChunks(count: Int, threads: Int, grain: Int = 1,
                           _ body: @Sendable (Range<Int>) -> Void) {
    guard count > 0 else { return }
    let units = (count + grain - 1) / grain
    let chunks = max(1, min(threads, units))
    if chunks == 1 {
        body(0..<count)
        return
    }
    DispatchQueue.concurrentPerform(iterations: chunks) { c in
        let lo = min(count, (units * c / chunks) * grain)
        let hi = min(count, (units * (c + 1) / chunks) * grain)
        if lo < hi { body(lo..<hi) }
    }
}

/// Hands non-Sendable state (a model's parameters, per-worker graphs) to `parallelChunks`
/// workers. Safe only under the data-parallel discipline of its users: during the parallel
/// region shared objects are only read, and each worker mutates only the objects of its own
/// index; the caller waits for all workers before touching anything again. (In the
/// `@unchecked Sendable` allowlist, docs/ARCHITECTURE.md.)
public struct WorkerShared<T>: @unchecked Sendable {
    public let value: T
    public init(_ value: T) { self.value = value }
}
