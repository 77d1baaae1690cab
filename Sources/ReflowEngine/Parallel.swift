import Dispatch
import Foundation
import Synchronization
internal import COpenBLAS  // reflowd_spin_hint (PAUSE), see shim.h
#if canImport(Glibc)
import Glibc
#endif

/// A pointer that may cross into `parallelChunks` workers.
///
/// Swift 6 does not let unsafe pointers cross concurrency domains. Every use in the engine hands
/// disjoint index ranges to different workers, and the caller waits for all of them before the
/// buffer's owner can observe it again; that is what makes the `@unchecked` safe. (The
/// `@unchecked Sendable` allowlist is in docs/ARCHITECTURE.md.)
package struct SendablePointer<Element>: @unchecked Sendable {
    package let base: UnsafePointer<Element>?
    package init(_ base: UnsafePointer<Element>?) { self.base = base }
}

/// Mutable counterpart of ``SendablePointer``; workers write disjoint ranges.
package struct SendableMutablePointer<Element>: @unchecked Sendable {
    package let base: UnsafeMutablePointer<Element>?
    package init(_ base: UnsafeMutablePointer<Element>?) { self.base = base }
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
/// sleeping, so that the thousands of short parallel regions of a training run (a step's
/// shards, a GEMM split) start within microseconds instead of waking a Dispatch thread each
/// time (measured: 2.9 → 2.6 ms per toy training step). The calling thread always takes part.
///
/// One region runs at a time: a region started while another is running (from another thread,
/// or nested inside a task) runs serially on its caller — correct, not parallel. The job
/// scheduler (#4) runs one compute job per pool for that reason.
///
/// Protocol: each region is its own object (task counter, pending count, holders), so a
/// worker that arrives late can only ever touch the region it joined. A region's closure is
/// cleared once no worker holds it, which is what lets `run` take a non-escaping closure.
/// Sleeping uses one flag and one semaphore per worker; waker and sleeper settle the flag with a
/// compare-and-swap, so every signal is matched by exactly one wait. The caller waiting for the
/// workers' last tasks sleeps the same way, on a flag and semaphore of the region.
///
/// **Spinning backs off under contention.** Spinning is free while the machine has an idle core
/// and costly when another process wants it: on 2 cores with one busy process, a spinning thread
/// takes a third of the CPU time from the threads doing the work, and a caller spinning for a
/// preempted worker keeps that worker off the core. So every spin (a worker waiting for the next
/// region, the caller waiting for the workers) is bounded by time, not iterations, and each
/// thread adapts its bound: the bound halves whenever the thread was preempted involuntarily
/// during a spin (`ru_nivcsw` of `getrusage(RUSAGE_THREAD)` went up: another runnable thread
/// wanted this core) and doubles back, up to ``maxSpinNanos``, when it was not. Under contention
/// the threads therefore sleep almost at once and leave the cores to the work; on a quiet machine
/// they spin as before. Spins use the PAUSE hint.
public final class ComputePool: Sendable {
    /// The process-wide pool, with one worker per core beyond the first.
    public static let shared = ComputePool(workers: max(0, ProcessInfo.processInfo.activeProcessorCount - 1))

    public let workerCount: Int
    private let busy = Atomic<Bool>(false)
    private let generation = Atomic<Int>(0)
    private let current = Mutex<Region?>(nil)
    private let slots: [Slot]
    /// The caller's adaptive spin bound before it sleeps (ns). One region runs at a time, so one
    /// value serves whichever thread is the caller.
    private let callerSpin = Atomic<Int>(ComputePool.maxSpinNanos)

    private final class Region: Sendable {
        let count: Int
        let next = Atomic<Int>(0)
        let remaining: Atomic<Int>
        let holders = Atomic<Int>(0)
        let body: Mutex<(@Sendable (Int) -> Void)?>
        /// Set by the caller before it sleeps; the thread that finishes the last task claims it
        /// with a compare-and-swap and signals `done`.
        let callerSleeping = Atomic<Bool>(false)
        let done = DispatchSemaphore(value: 0)

        init(count: Int, body: @escaping @Sendable (Int) -> Void) {
            self.count = count
            remaining = Atomic(count)
            self.body = Mutex(body)
        }

        /// Claims and runs tasks until none are left.
        func drain(_ f: @Sendable (Int) -> Void) {
            while true {
                let i = next.add(1, ordering: .relaxed).oldValue
                if i >= count { return }
                f(i)
                if remaining.subtract(1, ordering: .sequentiallyConsistent).newValue == 0,
                   callerSleeping.compareExchange(expected: true, desired: false, ordering: .sequentiallyConsistent).exchanged {
                    done.signal()
                }
            }
        }
    }

    private final class Slot: Sendable {
        let sleeping = Atomic<Bool>(false)
        let wake = DispatchSemaphore(value: 0)
    }

    /// Upper bound of a spin (ns). It covers the gaps between the parallel regions of a training
    /// step (the batch draw, ~70 µs, is the longest) so that workers are awake when a step's
    /// first region starts.
    static let maxSpinNanos = 100_000
    /// What a bound grows by at least when it doubles, so that a bound of 0 probes again.
    static let spinGrowNanos = 2_000

    public init(workers: Int) {
        workerCount = max(0, workers)
        slots = (0..<max(0, workers)).map { _ in Slot() }
        for slot in slots {
            let t = Thread { [self] in workerLoop(slot) }
            t.name = "reflowd.compute"
            t.start()
        }
    }

    /// Runs `body(i)` for every i in 0..<count, on the workers and the calling thread.
    public func run(_ count: Int, _ body: @Sendable (Int) -> Void) {
        guard count > 1, workerCount > 0,
              busy.compareExchange(expected: false, desired: true, ordering: .acquiring).exchanged else {
            for i in 0..<count { body(i) }
            return
        }
        withoutActuallyEscaping(body) { body in
            let region = Region(count: count, body: body)
            current.withLock { $0 = region }
            generation.add(1, ordering: .sequentiallyConsistent)
            var toWake = count - 1
            for slot in slots where toWake > 0 {
                if slot.sleeping.compareExchange(expected: true, desired: false, ordering: .sequentiallyConsistent).exchanged {
                    slot.wake.signal()
                }
                toWake -= 1
            }
            region.drain(body)
            if region.remaining.load(ordering: .acquiring) > 0 { waitForWorkers(region) }
            // No worker can join from now on; wait for those that did to let go of the closure.
            // (They are past their last task, a few instructions from done.)
            current.withLock { $0 = nil }
            while region.holders.load(ordering: .acquiring) > 0 { sched_yield() }
            region.body.withLock { $0 = nil }
        }
        busy.store(false, ordering: .releasing)
    }

    /// The caller has run out of tasks while workers still run theirs: spin within the adaptive
    /// bound, then sleep until the last task's thread signals.
    private func waitForWorkers(_ region: Region) {
        let bound = callerSpin.load(ordering: .relaxed)
        let switches = involuntarySwitches()
        let finished = spin(nanos: bound) { region.remaining.load(ordering: .acquiring) == 0 }
        if !finished {
            region.callerSleeping.store(true, ordering: .sequentiallyConsistent)
            if region.remaining.load(ordering: .sequentiallyConsistent) > 0 {
                region.done.wait()
            } else if !region.callerSleeping.compareExchange(expected: true, desired: false,
                                                              ordering: .sequentiallyConsistent).exchanged {
                region.done.wait()  // the last task's thread claimed the flag and signalled: consume it
            }
        }
        callerSpin.store(Self.adapted(bound, preempted: involuntarySwitches() > switches), ordering: .relaxed)
    }

    private func workerLoop(_ slot: Slot) {
        var seen = 0  // not the current generation: a region started before this thread ran is still joined
        var bound = ComputePool.maxSpinNanos
        while true {
            if generation.load(ordering: .acquiring) == seen {
                let switches = involuntarySwitches()
                let found = spin(nanos: bound) { generation.load(ordering: .acquiring) != seen }
                bound = Self.adapted(bound, preempted: involuntarySwitches() > switches)
                while !found && generation.load(ordering: .acquiring) == seen {
                    slot.sleeping.store(true, ordering: .sequentiallyConsistent)
                    if generation.load(ordering: .sequentiallyConsistent) == seen {
                        slot.wake.wait()
                    } else if !slot.sleeping.compareExchange(expected: true, desired: false,
                                                             ordering: .sequentiallyConsistent).exchanged {
                        slot.wake.wait()  // a waker claimed the flag first and signalled: consume it
                    }
                }
            }
            seen = generation.load(ordering: .acquiring)
            joinCurrentRegion()
        }
    }

    /// Spins until `done()` or until `nanos` have passed (checked every 16 PAUSEs, ~1 µs).
    /// Returns whether `done()` became true.
    @inline(__always)
    private func spin(nanos: Int, _ done: () -> Bool) -> Bool {
        if done() { return true }
        guard nanos > 0 else { return false }
        let deadline = monotonicNanos() + nanos
        var i = 0
        while !done() {
            i &+= 1
            if i & 15 == 0 && monotonicNanos() >= deadline { return false }
            reflowd_spin_hint()
        }
        return true
    }

    /// The next spin bound: halved after an involuntary preemption (another thread wanted the
    /// core), otherwise doubled (at least ``spinGrowNanos`` more), capped at ``maxSpinNanos``.
    static func adapted(_ bound: Int, preempted: Bool) -> Int {
        preempted ? bound / 2 : min(maxSpinNanos, max(bound * 2, bound + spinGrowNanos))
    }

    /// Joins the current region, if any, and leaves it again.
    @inline(never)
    private func joinCurrentRegion() {
        let region = current.withLock { r -> Region? in
            r?.holders.add(1, ordering: .relaxed)
            return r
        }
        guard let region else { return }
        runTasks(of: region)
        region.holders.subtract(1, ordering: .releasing)
    }

    /// Runs tasks of `region` with a copy of its closure that dies when this returns.
    @inline(never)
    private func runTasks(of region: Region) {
        guard let f = region.body.withLock({ $0 }) else { return }
        region.drain(f)
    }
}

/// Involuntary context switches of the calling thread so far (`ru_nivcsw`): the kernel took the
/// core away because another runnable thread wanted it.
@inline(__always)
func involuntarySwitches() -> Int {
    var u = rusage()
    getrusage(1 /* RUSAGE_THREAD; Glibc's Swift overlay does not name it */, &u)
    return u.ru_nivcsw
}

@inline(__always)
func monotonicNanos() -> Int {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return ts.tv_sec * 1_000_000_000 + ts.tv_nsec
}

/// Hands non-Sendable state (a model's parameters, per-worker graphs) to `parallelChunks`
/// workers. Safe only under the data-parallel discipline of its users: during the parallel
/// region shared objects are only read, and each worker mutates only the objects of its own
/// index; the caller waits for all workers before touching anything again. (In the
/// `@unchecked Sendable` allowlist, docs/ARCHITECTURE.md.)
package struct WorkerShared<T>: @unchecked Sendable {
    package let value: T
    package init(_ value: T) { self.value = value }
}
