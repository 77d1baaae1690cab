import Dispatch
import Foundation
import Synchronization

/// A pointer that may cross into `parallelChunks` workers.
///
/// Swift 6 does not let unsafe pointers cross concurrency domains. Every use in the engine hands
/// disjoint index ranges to different workers, and the caller waits for all of them before the
/// buffer's owner can observe it again; that is what makes the `@unchecked` safe. (The
/// `@unchecked Sendable` allowlist is in docs/ARCHITECTURE.md.)
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
/// except the last) and runs `body(range)` on them in parallel on ``ComputePool/shared``;
/// returns when all are done. With one chunk, `body` runs on the calling thread with no
/// dispatch overhead. Chunk boundaries depend only on (count, threads, grain), never on timing.
public func parallelChunks(count: Int, threads: Int, grain: Int = 1,
                           _ body: @Sendable (Range<Int>) -> Void) {
    guard count > 0 else { return }
    let units = (count + grain - 1) / grain
    let chunks = max(1, min(threads, units))
    if chunks == 1 {
        body(0..<count)
        return
    }
    ComputePool.shared.run(chunks) { c in
        let lo = min(count, (units * c / chunks) * grain)
        let hi = min(count, (units * (c + 1) / chunks) * grain)
        if lo < hi { body(lo..<hi) }
    }
}

/// The engine's worker threads: a few long-lived threads that spin briefly for work before
/// sleeping, so that the thousands of short parallel regions of a training run (a GEMM split,
/// a shard of a step) start in well under a microsecond instead of waking a Dispatch thread
/// (tens of microseconds, measured). The calling thread always takes part.
///
/// One region runs at a time: a region started while another is running (from another thread,
/// or nested inside a task) runs serially on its caller, which is correct but not parallel —
/// the job scheduler gives each job a thread budget so this does not happen in practice.
public final class ComputePool: Sendable {
    /// The process-wide pool, with one worker per core beyond the first.
    public static let shared = ComputePool(workers: max(0, ProcessInfo.processInfo.activeProcessorCount - 1))

    public let workerCount: Int
    private let busy = Atomic<Bool>(false)
    private let generation = Atomic<Int>(0)
    private let nextTask = Atomic<Int>(0)
    private let remaining = Atomic<Int>(0)
    private let sleepers = Atomic<Int>(0)
    private let active = Atomic<Int>(0)
    private let wake = DispatchSemaphore(value: 0)
    private let job = Mutex<Job?>(nil)

    private struct Job: Sendable {
        let count: Int
        let body: @Sendable (Int) -> Void
    }

    /// Spin iterations (each a pause-free atomic load, ~10–50 ns) before a worker sleeps.
    static let spinLimit = 20_000

    public init(workers: Int) {
        workerCount = workers
        for _ in 0..<workers {
            let t = Thread { [self] in workerLoop() }
            t.name = "reflowd.compute"
            t.start()
        }
    }

    /// Runs `body(i)` for every i in 0..<count, on the workers and the calling thread.
    public func run(_ count: Int, _ body: @Sendable (Int) -> Void) {
        guard count > 1, workerCount > 0, busy.compareExchange(expected: false, desired: true, ordering: .acquiring).exchanged else {
            for i in 0..<count { body(i) }
            return
        }
        withoutActuallyEscaping(body) { body in
            job.withLock { $0 = Job(count: count, body: body) }
            nextTask.store(0, ordering: .relaxed)
            remaining.store(count, ordering: .relaxed)
            generation.add(1, ordering: .releasing)
            let s = sleepers.exchange(0, ordering: .acquiringAndReleasing)
            for _ in 0..<s { wake.signal() }
            drain(Job(count: count, body: body))
            while remaining.load(ordering: .acquiring) > 0 {}
            // No worker may pick the job up from now on; wait for those that did to drop it
            // (withoutActuallyEscaping checks that nothing still holds `body`).
            job.withLock { $0 = nil }
            while active.load(ordering: .acquiring) > 0 {}
        }
        busy.store(false, ordering: .releasing)
    }

    /// Claims and runs tasks of `job` until none are left.
    private func drain(_ job: Job) {
        while true {
            let i = nextTask.add(1, ordering: .relaxed).oldValue
            if i >= job.count { return }
            job.body(i)
            remaining.subtract(1, ordering: .releasing)
        }
    }

    private func workerLoop() {
        var seen = 0
        while true {
            var spins = 0
            while generation.load(ordering: .acquiring) == seen {
                spins += 1
                if spins >= ComputePool.spinLimit {
                    sleepers.add(1, ordering: .acquiringAndReleasing)
                    // Re-check after registering: a region started in between is not missed
                    // (its signal, if any, only causes one spurious wake-up later).
                    if generation.load(ordering: .acquiring) == seen { wake.wait() }
                    spins = 0
                }
            }
            seen = generation.load(ordering: .acquiring)
            if joinCurrentJob() { active.subtract(1, ordering: .releasing) }
        }
    }

    /// Runs the current job's remaining tasks, if there is a job; returns whether it joined
    /// (and so must leave `active`). The job copy dies when this returns.
    @inline(never)
    private func joinCurrentJob() -> Bool {
        let current = job.withLock { j -> Job? in
            if j != nil { active.add(1, ordering: .acquiringAndReleasing) }
            return j
        }
        guard let current else { return false }
        drain(current)
        return true
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
